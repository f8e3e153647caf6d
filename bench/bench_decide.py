"""What the decision costs next to the search it follows (random unit vectors, labelled REAL).

    python bench/bench_decide.py --n 100000 --dim 128

One run, same data: the audit's search (SYN x REAL, k=5, exact) as the baseline; then the
leave-one-identity-out null (at most 50,000 REAL faces searched against REAL without their identity)
and the decision on SYN with identity labels (20 faces each) and without (near-identical faces
clustered by a SYN x SYN search). ``--model-id`` names the model whose age classifier assigns the
apparent-age strata (the dlib model's id at d=128, the product's default); "none" runs unstratified.

The null is built twice: pooled (``--reweight none``) and population-weighted (the audit's default),
which fits a classifier of SYN vs REAL faces. With ``--shift`` half of SYN comes from a dense
population around one face, so the classifier finds a shift and the weights take their full path;
without it SYN and REAL are one population and the weighting stops at the cross-fitted check.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import replace

import numpy as np

from idleak.decide import DecisionOptions, build_null, decide_queries, stats
from idleak.search import topk


def unit(rng: np.random.Generator, n: int, dim: int) -> np.ndarray:
    x = rng.standard_normal((n, dim)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=100_000)
    parser.add_argument("--dim", type=int, default=128)
    parser.add_argument("--model-id", default="none", help="age strata from this model's age classifier")
    parser.add_argument("--shift", action="store_true", help="half of SYN from a dense population")
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    real, syn = unit(rng, args.n, args.dim), unit(rng, args.n, args.dim)
    if args.shift:
        dense = syn[: args.n // 2] * 0.5 + unit(rng, 1, args.dim)
        syn[: args.n // 2] = dense / np.linalg.norm(dense, axis=1, keepdims=True)
    real_ids = np.array([f"r{i // 5}" for i in range(args.n)], dtype=object)
    syn_ids = np.array([f"s{i // 20}" for i in range(args.n)], dtype=object)
    options = DecisionOptions(reweight="none")
    t0 = time.perf_counter()
    top = topk(syn, real, 5)
    search = time.perf_counter() - t0
    t0 = time.perf_counter()
    null = build_null(real, real_ids, args.model_id, options, "loio", "raw")
    null_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    weighted = build_null(real, real_ids, args.model_id, replace(options, reweight="population"), "loio", "raw",
                          queries=syn, query_identities=syn_ids)
    weighted_s = time.perf_counter() - t0
    pw = weighted.details["population_weights"]
    print(f"population-weighted null: {weighted_s:.1f} s ({weighted_s / search:.2f} x search; the weights "
          f"{weighted_s - null_s:.1f} s), estimator {pw['estimator']}, AUC {pw['auc']:.3f}, effective size "
          f"{pw['effective_null_size']:,} of {pw['null_size_unweighted']:,}")
    t0 = time.perf_counter()
    decision = decide_queries(syn, syn_ids, top, weighted, real_ids, options)
    print(f"decide on the weighted null, labelled SYN: {time.perf_counter() - t0:.1f} s, verdict {decision.verdict}")
    timings = {}
    for label, ids in (("labelled SYN", syn_ids), ("unlabelled SYN", np.array([None] * args.n, dtype=object))):
        t0 = time.perf_counter()
        decision = decide_queries(syn, ids, top, null, real_ids, options)
        timings[label] = time.perf_counter() - t0
        print(f"decide, {label}: {timings[label]:.1f} s ({timings[label] / search:.2f} x search), "
              f"verdict {decision.verdict}, {decision.cluster_test['n']} clusters")
    # the count test's detection limit (identity_level.flagged_needed_for_leak) against the same test without it
    decided = ~decision.set_aside  # as judge does: the decided faces, in the strata the null covers
    _, clusters = np.unique(decision.clusters[decided], return_inverse=True)
    strata = np.zeros(int(decided.sum()), np.int64) if decision.strata is None else decision.strata[decided]
    sizes = {int(s): null.part(int(s)).m for s in np.unique(strata)}
    for needed_below in (None, options.alpha / 2):
        t0 = time.perf_counter()
        ct = stats.cluster_test(decision.p_values[decided], clusters.ravel(), options.alpha, null.main.m,
                                strata=strata, stratum_sizes=sizes, needed_below=needed_below)
        print(f"cluster test on unlabelled SYN, {'with' if needed_below else 'without'} the detection limit: "
              f"{time.perf_counter() - t0:.2f} s (needs {ct.needed})")
    print(f"search {args.n:,} x {args.n:,} (k=5): {search:.1f} s; loio null "
          f"({min(args.n, options.null_queries):,} queries): {null_s:.1f} s ({null_s / search:.2f} x search)")


if __name__ == "__main__":
    main()
