"""Benchmark of the data-free attack on the reference target (ORL): per split, the time to synthesise the
inputs from the BatchNorm statistics and to train the chained inverters on them, against the time to train
the AUX-based learned decoder in the same run (the baseline).

    python bench/bench_datafree.py [--target OUT/target.pt] [--faces ../shared/data/faces/orl]
                                   [--epochs 30] [--synth-images 128] [--synth-steps 200] [--threads 2]

``--target``: a reference target saved by ``idleak invert --train-target`` (else one is trained, 30 epochs).
No face embedding is involved; only torch work.
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from pathlib import Path

import torch

from idleak.attacks.datafree import train_datafree
from idleak.attacks.inversion import AttackSettings, train_decoder
from idleak.attacks.reference_target import (
    REFERENCE_INPUT,
    REFERENCE_LAYERS,
    load_reference_target,
    make_split,
    train_reference_target,
)
from idleak.attacks.split import SplitModel, load_images

REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--faces", default=str(REPO.parent / "shared" / "data" / "faces" / "orl"))
    parser.add_argument("--target", default="")
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--synth-images", type=int, default=128)
    parser.add_argument("--synth-steps", type=int, default=200)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    data = make_split(args.faces)
    aux, _, _ = load_images(data.aux, REFERENCE_INPUT)
    if args.target:
        model = load_reference_target(args.target)
    else:
        train, kept, _ = load_images(data.target_train, REFERENCE_INPUT)
        model = train_reference_target(train, [r.identity for r in kept], train[:0], [], epochs=30).model
    split = SplitModel.create(model, list(REFERENCE_LAYERS))
    settings = AttackSettings(epochs=args.epochs, synth_images=args.synth_images, synth_steps=args.synth_steps)
    aux_t = torch.from_numpy(aux)
    lines = [
        f"Reference target on ORL ({len(aux)} AUX images for `learned`; `datafree`: {args.synth_images} images x "
        f"{args.synth_steps} steps synthesised per split), {args.epochs} epochs; torch {torch.__version__}, "
        f"Python {platform.python_version()}, {os.cpu_count()} CPU cores, {args.threads} torch threads.",
        "",
        "| split | BatchNorm layers | learned: train (baseline) | datafree: synthesise | datafree: train inverters "
        "| datafree total | ratio to learned | statistic mismatch noise -> synthesised |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for layer, point in split.points.items():
        start = time.perf_counter()
        train_decoder(split, layer, aux_t, settings)
        learned = time.perf_counter() - start
        decoder, facts = train_datafree(split, layer, settings)
        total = decoder.seconds
        synth = facts["synth_seconds"]
        lines.append(f"| {layer} (depth {point.depth}) | {len(facts['bn_layers'])} | {learned:.1f} s | {synth:.1f} s "
                     f"| {total - synth:.1f} s | {total:.1f} s | {total / learned:.2f} "
                     f"| {facts['bn_mismatch_noise']:.3f} -> {facts['bn_mismatch_synthetic']:.4f} |")
        print(lines[-1], flush=True)
    print("\n".join(lines))


if __name__ == "__main__":
    main()
