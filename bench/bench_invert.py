"""Benchmark of ``idleak invert`` on the reference target (ORL): per split, the time to train the learned
decoder, to invert one image with it, and to invert one image with the white-box ``optimize`` attack;
each with torch's default number of threads and with one thread, and their ratio.

    python bench/bench_invert.py [--faces ../shared/data/faces/orl] [--epochs 30] [--steps 300]
                                 [--out FILE.md] [--note "..."]

No face embedding is involved (that is the dlib cost, measured elsewhere); only torch work.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
from pathlib import Path

import torch

from idleak.attacks.inversion import AttackSettings, optimize_attack, train_decoder
from idleak.attacks.reference_target import REFERENCE_INPUT, REFERENCE_LAYERS, make_split, train_reference_target
from idleak.attacks.split import SplitModel, load_images

REPO = Path(__file__).resolve().parents[1]


def measure(split: SplitModel, aux: torch.Tensor, private: torch.Tensor, layer: str, settings: AttackSettings,
            threads: int, repeats: int) -> dict:
    """Seconds to train the decoder, to decode one image (median), to optimise one image."""
    torch.set_num_threads(threads)
    decoder = train_decoder(split, layer, aux, settings)
    one = split.batched_features(private[:1], layer)
    decode = []
    for _ in range(repeats):
        start = time.perf_counter()
        decoder.invert(one)
        decode.append(time.perf_counter() - start)
    prior = aux.mean(0, keepdim=True)
    start = time.perf_counter()
    optimize_attack(split, layer, one, prior, settings)
    optimize = time.perf_counter() - start
    return {"train": decoder.seconds, "decode": statistics.median(decode), "optimize": optimize}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--faces", default=str(REPO.parent / "shared" / "data" / "faces" / "orl"))
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--repeats", type=int, default=50)
    parser.add_argument("--out", default="", help="also write the table to this Markdown file")
    parser.add_argument("--note", default="")
    args = parser.parse_args()

    default_threads = torch.get_num_threads()
    data = make_split(args.faces)
    train, train_kept, _ = load_images(data.target_train, REFERENCE_INPUT)
    private, private_kept, _ = load_images(data.private, REFERENCE_INPUT)
    aux, _, _ = load_images(data.aux, REFERENCE_INPUT)
    start = time.perf_counter()
    target = train_reference_target(train, [r.identity for r in train_kept], private,
                                    [r.identity for r in private_kept], epochs=30)
    target_seconds = time.perf_counter() - start
    split = SplitModel.create(target.model, list(REFERENCE_LAYERS))
    settings = AttackSettings(epochs=args.epochs, steps=args.steps)
    aux_t, private_t = torch.from_numpy(aux), torch.from_numpy(private)
    rows = []
    for layer, point in split.points.items():
        many = measure(split, aux_t, private_t, layer, settings, default_threads, args.repeats)
        single = measure(split, aux_t, private_t, layer, settings, 1, args.repeats)
        rows.append((layer, point, many, single))
        print(layer, many, single, flush=True)
    torch.set_num_threads(default_threads)

    lines = [
        "# Benchmark: split-computing inversion (`idleak invert`)",
        "",
        f"Reference target on ORL ({len(data.aux)} AUX images, {REFERENCE_INPUT[1]}x{REFERENCE_INPUT[2]} grey), "
        f"decoder {args.epochs} epochs, optimize {args.steps} steps; torch {torch.__version__}, "
        f"Python {platform.python_version()}, {os.cpu_count()} CPU cores, torch default threads {default_threads}. "
        f"Training the target itself: {target_seconds:.1f} s.",
        "",
    ]
    if args.note:
        lines += [args.note, ""]
    lines += [
        f"| split | depth | features | train decoder ({default_threads} thr) | 1 thread | ratio | "
        f"decode 1 image ({default_threads} thr) | 1 thread | ratio | optimize 1 image ({default_threads} thr) "
        "| 1 thread | ratio |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for layer, point, many, single in rows:
        lines.append(
            f"| {layer} | {point.depth} | {'x'.join(map(str, point.feature_shape))} "
            f"| {many['train']:.1f} s | {single['train']:.1f} s | {single['train'] / many['train']:.2f} "
            f"| {1000 * many['decode']:.2f} ms | {1000 * single['decode']:.2f} ms "
            f"| {single['decode'] / many['decode']:.2f} "
            f"| {many['optimize']:.2f} s | {single['optimize']:.2f} s | {single['optimize'] / many['optimize']:.2f} |")
    lines += ["", "Ratio = time with one thread / time with torch's default threads (above 1: the threads help).", ""]
    print("\n".join(lines))
    if args.out:
        Path(args.out).write_text("\n".join(lines), encoding="utf-8")


if __name__ == "__main__":
    main()
