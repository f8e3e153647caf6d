"""Exact top-k search: throughput vs a bare numpy matmul of the same shapes, and peak memory.

    python bench/bench_search.py                 # throughput ratio + peak memory of a 1M x 1M search (partial)
    python bench/bench_search.py --full-1m       # run the whole 1M x 1M search (about an hour on 2 cores)

Throughput: ``idleak.search.topk`` (FAISS IndexFlatIP per gallery block, merged top-k) against
numpy computing the same query-by-gallery products block by block, without even selecting the
top k; ratio = numpy seconds / topk seconds (>= 1.0 means search costs no more than the matmul).

Peak memory: a child process holds 1M query and 1M gallery unit vectors (d=128, 1 GB together)
and runs ``topk``; its peak RSS is read from the kernel. Without ``--full-1m`` only the first
query chunks are searched against the whole 1M gallery: memory is bounded per chunk, so the peak
is reached in the first chunk, and the full run's time is extrapolated.
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import time

import numpy as np

from idleak.search import DEFAULT_BLOCK, topk


def unit_vectors(n: int, d: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    out = np.empty((n, d), np.float32)
    for start in range(0, n, 262_144):
        block = rng.standard_normal((min(262_144, n - start), d), dtype=np.float32)
        out[start:start + len(block)] = block / np.linalg.norm(block, axis=1, keepdims=True)
    return out


def numpy_blocked_matmul(queries: np.ndarray, gallery: np.ndarray, block: int, chunk: int) -> float:
    buffer = np.empty((chunk, block), np.float32)
    start = time.perf_counter()
    for g in range(0, len(gallery), block):
        gb = gallery[g:g + block]
        for q in range(0, len(queries), chunk):
            qb = queries[q:q + chunk]
            np.matmul(qb, gb.T, out=buffer[: len(qb), : len(gb)])
    return time.perf_counter() - start


def throughput(n_query: int, n_gallery: int, d: int, k: int) -> None:
    queries, gallery = unit_vectors(n_query, d, 1), unit_vectors(n_gallery, d, 2)
    chunk = 4096
    topk(queries[:1000], gallery[:10_000], k)  # warm-up
    numpy_blocked_matmul(queries[:1000], gallery[:10_000], DEFAULT_BLOCK, chunk)
    start = time.perf_counter()
    topk(queries, gallery, k, query_chunk=chunk)
    ours = time.perf_counter() - start
    base = numpy_blocked_matmul(queries, gallery, DEFAULT_BLOCK, chunk)
    pairs = n_query * n_gallery
    print(f"shapes: {n_query} queries x {n_gallery} gallery, d={d}, k={k}")
    print(f"numpy matmul (blocked, no top-k): {base:6.2f} s  {pairs / base / 1e9:6.2f} G pairs/s (baseline)")
    print(f"idleak topk (FAISS blocks+merge): {ours:6.2f} s  {pairs / ours / 1e9:6.2f} G pairs/s  ratio x{base / ours:.2f}")


def peak_memory_child(n: int, d: int, k: int, chunks: int | None) -> None:
    queries, gallery = unit_vectors(n, d, 3), unit_vectors(n, d, 4)
    chunk = 16_384
    limit = n if chunks is None else min(n, chunks * chunk)
    start = time.perf_counter()
    result = topk(queries[:limit], gallery, k, query_chunk=chunk)
    seconds = time.perf_counter() - start
    assert result.indices.shape == (limit, k)
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"{n} x {n} at d={d}, k={k}: searched {limit} queries in {seconds:.1f} s; "
          f"peak RSS {peak_mb / 1024:.2f} GB (vectors alone: {2 * n * d * 4 / 2**30:.2f} GB)")
    if limit < n:
        print(f"  extrapolated full search time: {seconds * n / limit / 60:.0f} min")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--queries", type=int, default=16_384)
    parser.add_argument("--gallery", type=int, default=262_144)
    parser.add_argument("--dim", type=int, default=128)
    parser.add_argument("--k", type=int, default=5)
    parser.add_argument("--full-1m", action="store_true")
    parser.add_argument("--child", choices=["memory"], help=argparse.SUPPRESS)
    parser.add_argument("--chunks", type=int, default=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child == "memory":
        peak_memory_child(1_000_000, args.dim, args.k, None if args.full_1m else args.chunks)
        return
    print(f"machine: {os.cpu_count()} cores")
    throughput(args.queries, args.gallery, args.dim, args.k)
    command = [sys.executable, __file__, "--child", "memory", "--dim", str(args.dim), "--k", str(args.k)]
    if args.full_1m:
        command.append("--full-1m")
    subprocess.run(command, check=True)


if __name__ == "__main__":
    main()
