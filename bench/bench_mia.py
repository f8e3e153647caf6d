"""Membership attack: identities scored per second, and the cost of sampling through ``--generator``.

    python bench/bench_mia.py [--quick] [--rounds 3]

Scoring: ``idleak.analyses.mia.run_mia`` (exact search both ways, per-identity max, threshold, ROC,
1000 stratified bootstrap resamples, genuine / impostor distributions) on random unit vectors
(d=128) with 5 photos per identity; embedding is not included (see bench_embed.py).

Sampling: a torch decoder (the tests' GLO architecture, random weights) as ``sample(n, seed)``.
Direct = calling it in batches and keeping the uint8 images it returns. Wrapper =
``idleak.generators.sample_to_folder`` (the same calls, output checks, PNG files with their seeds in
a temporary folder, samples.csv). Three decoder sizes, from the tests' toy (a fraction of a
millisecond per sample) to a heavier one, because the wrapper's cost per sample (PNG encoding and
creating the file) is fixed while the generator's is not. Rounds interleave direct and wrapper; the
best round of each is compared (least disturbed by other jobs on the cores), the median is shown
beside it. Overhead = 1 - wrapper throughput / direct throughput (target: under 10%).
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import tempfile
import time

import numpy as np

from idleak.analyses.mia import MiaOptions, run_mia
from idleak.embedding import FaceSet
from idleak.generators import sample_to_folder


def unit(rows: np.ndarray) -> np.ndarray:
    return (rows / np.linalg.norm(rows, axis=1, keepdims=True)).astype(np.float32)


def faces(vectors: np.ndarray, identities: list[str | None]) -> FaceSet:
    n = len(vectors)
    return FaceSet(vectors, np.array([f"f{i}.png" for i in range(n)], dtype=object), np.array(identities, dtype=object),
                   np.array([""] * n), np.zeros((n, 4), np.float32), np.ones(n, np.float32), np.ones(n, np.int64))


def scoring_rate(n_identities: int, n_generated: int, photos: int = 5, seed: int = 0) -> tuple[float, float]:
    """(identities per second, seconds) of run_mia with half the identities members."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(n_identities, 128))
    vectors = unit(np.repeat(centres, photos, axis=0) + 0.4 * rng.normal(size=(n_identities * photos, 128)))
    ids = [f"p{i}" for i in range(n_identities) for _ in range(photos)]
    half = (n_identities // 2) * photos
    members, nonmembers = faces(vectors[:half], ids[:half]), faces(vectors[half:], ids[half:])
    gen = unit(np.r_[centres[: n_identities // 4] + 0.3 * rng.normal(size=(n_identities // 4, 128)),
                     rng.normal(size=(max(0, n_generated - n_identities // 4), 128))])
    generated = faces(gen, [None] * len(gen))
    start = time.perf_counter()
    run_mia(generated, members, nonmembers, MiaOptions(n_bootstrap=1000))
    seconds = time.perf_counter() - start
    return n_identities / seconds, seconds


def decoder_sampler(size: int, width: int = 128):  # noqa: ANN201 - returns sample(n, seed)
    """sample(n, seed) of a GLO-style torch decoder with random weights at ``size`` px (``width`` channels
    at 4x4, halving per upsampling, at least 8); width 128 at 64 px is the tests' decoder."""
    import torch
    from torch import nn

    torch.manual_seed(0)
    torch.set_num_threads(2)
    steps = int(np.log2(size // 4))
    channels = [max(8, width >> i) for i in range(steps + 1)]
    layers: list[nn.Module] = []
    for c_in, c_out in zip(channels[:-1], channels[1:]):
        layers += [nn.ConvTranspose2d(c_in, c_out, 4, stride=2, padding=1), nn.LeakyReLU(0.2)]
    layers += [nn.Conv2d(channels[-1], 3, 3, padding=1), nn.Sigmoid()]
    project, body = nn.Linear(32, channels[0] * 16), nn.Sequential(*layers).eval()

    def sample(n: int, seed: int) -> list[np.ndarray]:
        z = torch.randn(n, 32, generator=torch.Generator().manual_seed(seed))
        with torch.no_grad():
            images = body(project(z).view(n, channels[0], 4, 4))
        return list((images.permute(0, 2, 3, 1).numpy() * 255).round().astype(np.uint8))

    return sample


def direct_rate(sample, n: int, batch: int) -> float:  # noqa: ANN001
    start = time.perf_counter()
    kept = []
    for done in range(0, n, batch):
        kept.extend(sample(min(batch, n - done), done))
    return n / (time.perf_counter() - start)


def wrapper_rate(sample, n: int, batch: int, writers: int) -> float:  # noqa: ANN001
    with tempfile.TemporaryDirectory() as folder:
        start = time.perf_counter()
        sample_to_folder(sample, n, folder, batch=batch, writers=writers)
        return n / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller sizes")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
          f"python {platform.python_version()}")
    sizes = [(100, 1_000), (1_000, 10_000)] if args.quick else [(100, 1_000), (1_000, 10_000), (10_000, 50_000)]
    print("\nscoring (run_mia incl. 1000 bootstrap resamples; no embedding)")
    print(f"{'identities':>10} {'generated':>10} {'seconds':>8} {'identities/s':>13}")
    for n_ids, n_gen in sizes:
        rate, seconds = scoring_rate(n_ids, n_gen)
        print(f"{n_ids:>10} {n_gen:>10} {seconds:>8.2f} {rate:>13.0f}")
    print("\nsampling through --generator (sample_to_folder, 2 PNG writer threads) vs calling the generator "
          f"directly; best of {args.rounds} interleaved rounds (median in brackets)")
    print(f"{'generator':>22} {'n':>5} {'direct ms/sample':>17} {'wrapper ms/sample':>18} {'extra ms':>9} "
          f"{'ratio':>6} {'overhead':>9}")
    configs = [("64 px, tests' decoder", 64, 128, 2048), ("128 px, width 512", 128, 512, 512),
               ("256 px, width 1024", 256, 1024, 128)]
    for label, size, width, n in configs:
        n = max(64, n // 4) if args.quick else n
        sample = decoder_sampler(size, width)
        direct_rate(sample, 64, 64)  # warm-up
        direct, wrapped = [], []
        for _ in range(args.rounds):
            direct.append(direct_rate(sample, n, 64))
            wrapped.append(wrapper_rate(sample, n, 64, 2))
        d, w = max(direct), max(wrapped)
        print(f"{label:>22} {n:>5} {1e3 / d:>8.2f} ({1e3 / statistics.median(direct):>6.2f}) "
              f"{1e3 / w:>9.2f} ({1e3 / statistics.median(wrapped):>6.2f}) {1e3 / w - 1e3 / d:>9.2f} "
              f"{w / d:>6.3f} {1 - w / d:>8.1%}")

if __name__ == "__main__":
    main()
