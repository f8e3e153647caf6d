"""What the decision costs next to the search it follows (random unit vectors, labelled REAL).

    python bench/bench_decide.py --n 100000 --dim 128

One run, same data: the audit's search (SYN x REAL, k=5, exact) as the baseline; then the
leave-one-identity-out null (at most 50,000 REAL faces searched against REAL without their identity)
and the decision on SYN with identity labels (20 faces each) and without (near-identical faces
clustered by a SYN x SYN search). ``--model-id`` names the model whose age classifier assigns the
apparent-age strata (the dlib model's id at d=128, the product's default); "none" runs unstratified.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from idleak.decide import DecisionOptions, build_null, decide_queries
from idleak.search import topk


def unit(rng: np.random.Generator, n: int, dim: int) -> np.ndarray:
    x = rng.standard_normal((n, dim)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=100_000)
    parser.add_argument("--dim", type=int, default=128)
    parser.add_argument("--model-id", default="none", help="age strata from this model's age classifier")
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    real, syn = unit(rng, args.n, args.dim), unit(rng, args.n, args.dim)
    real_ids = np.array([f"r{i // 5}" for i in range(args.n)], dtype=object)
    syn_ids = np.array([f"s{i // 20}" for i in range(args.n)], dtype=object)
    options = DecisionOptions()
    t0 = time.perf_counter()
    top = topk(syn, real, 5)
    search = time.perf_counter() - t0
    t0 = time.perf_counter()
    null = build_null(real, real_ids, args.model_id, options, "loio", "raw")
    null_s = time.perf_counter() - t0
    timings = {}
    for label, ids in (("labelled SYN", syn_ids), ("unlabelled SYN", np.array([None] * args.n, dtype=object))):
        t0 = time.perf_counter()
        decision = decide_queries(syn, ids, top, null, real_ids, options)
        timings[label] = time.perf_counter() - t0
        print(f"decide, {label}: {timings[label]:.1f} s ({timings[label] / search:.2f} x search), "
              f"verdict {decision.verdict}, {decision.cluster_test['n']} clusters")
    print(f"search {args.n:,} x {args.n:,} (k=5): {search:.1f} s; loio null "
          f"({min(args.n, options.null_queries):,} queries): {null_s:.1f} s ({null_s / search:.2f} x search)")


if __name__ == "__main__":
    main()
