"""The ivf engine of ``idleak.search.topk``: FAISS IndexIVFFlat candidates with exact scores, a
per-query exactness certificate, exhaustive re-search of every query near the threshold, and an
nprobe raised until a recall@1 target is met on an exact sample (or exact search when that costs
as much as exact search)."""

from __future__ import annotations

from dataclasses import dataclass

import faiss
import numpy as np

from idleak.search import (
    DEFAULT_BLOCK,
    RECALL_TARGET,
    ProgressFn,
    TopK,
    _as_float32,
    exact_topk,
    exclude_same_group,
    group_slack,
    merge_topk,
)

#: queries per coarse-assignment chunk (a chunk x nlist score matrix lives in memory)
IVF_QUERY_CHUNK = 4096
#: lowered re-search bound = lowest IVF best of a sampled query that reaches the bound, minus this
CHECK_SAFETY = 0.02
#: k-means sees at most this many training vectors per cluster
TRAIN_PER_LIST = 64
#: cost of scanning one vector in an inverted list, in products of the blocked exact search (which runs
#: as BLAS): 10^6 x 10^6 at d=128 on 2 cores, ivf 461 s scanning 15,625 vectors per query against
#: exact 1,494 s (bench/RESULTS.md) gives about 19; 2x10^5 gave 14
IVF_SCAN_COST = 16.0


@dataclass
class IvfGallery:
    """A trained and filled IVF index with its centroids and each cluster's radius."""

    index: faiss.IndexIVFFlat
    centroids: np.ndarray  # (nlist, d)
    radii: np.ndarray  # (nlist,) max distance of a member from its centroid


def default_nlist(n_gallery: int) -> int:
    """About 4 sqrt(n) clusters, a power of two between 16 and 16384."""
    target = 4 * np.sqrt(max(n_gallery, 1))
    return int(min(16384, max(16, 2 ** int(np.round(np.log2(target))))))


def default_nprobe(nlist: int) -> int:
    return max(8, nlist // 64)


def relative_cost(nprobe: int, nlist: int, n_gallery: int) -> float:
    """Work of an ivf query (centroids + scanned lists) over the work of an exact one."""
    return nlist / max(n_gallery, 1) + IVF_SCAN_COST * nprobe / max(nlist, 1)


def build_ivf(gallery: np.ndarray, nlist: int | None = None, seed: int = 0) -> IvfGallery:
    gallery = _as_float32(gallery)
    n, dim = gallery.shape
    nlist = min(nlist or default_nlist(n), max(1, n // 39))
    quantizer = faiss.IndexFlatIP(dim)
    index = faiss.IndexIVFFlat(quantizer, dim, nlist, faiss.METRIC_INNER_PRODUCT)
    index.cp.spherical = True
    index.cp.seed = seed
    rng = np.random.default_rng(seed)
    n_train = nlist * TRAIN_PER_LIST
    sample = gallery if n <= n_train else gallery[np.sort(rng.choice(n, n_train, replace=False))]
    index.train(sample)
    centroids = faiss.rev_swig_ptr(quantizer.get_xb(), nlist * dim).reshape(nlist, dim).copy()
    radii = np.zeros(nlist, np.float32)
    for start in range(0, n, DEFAULT_BLOCK):
        block = gallery[start:start + DEFAULT_BLOCK]
        sims, labels = quantizer.search(block, 1)
        labels = labels[:, 0]
        dist = np.sqrt(np.maximum(0.0, (block * block).sum(1) - 2 * sims[:, 0] + (centroids[labels] ** 2).sum(1)))
        np.maximum.at(radii, labels, dist.astype(np.float32))
        labels = np.ascontiguousarray(labels, np.int64)
        index.add_core(len(block), faiss.swig_ptr(block), None, faiss.swig_ptr(labels))  # the same assignment
    return IvfGallery(index, centroids, radii * (1 + 1e-5) + 1e-6)  # float rounding stays on the safe side


def ivf_topk(
    queries: np.ndarray,
    gallery: np.ndarray,
    k: int,
    query_groups: np.ndarray | None = None,
    gallery_groups: np.ndarray | None = None,
    block_size: int = DEFAULT_BLOCK,
    query_chunk: int = IVF_QUERY_CHUNK,
    progress: ProgressFn | None = None,
    bound: float | None = None,
    nlist: int | None = None,
    nprobe: int | None = None,
    ivf: IvfGallery | None = None,
    check: int = 1000,
    recall: float | None = RECALL_TARGET,
) -> TopK:
    """IVF top-k with exact scores; see ``idleak.search`` for the contract of ``exact`` and ``bound``.

    ``recall``: nprobe is doubled from ``nprobe`` until recall@1 on the ``check`` sampled queries
    (searched exactly anyway) reaches it; if that needs as much work as exact search
    (``relative_cost`` >= 1), the result is exact search's, with the reason in ``details["fallback"]``.
    """
    queries = _as_float32(queries)
    gallery = _as_float32(gallery)
    n_query = len(queries)
    k = max(1, int(k))
    ivf = ivf or build_ivf(gallery, nlist)
    n_lists = len(ivf.centroids)
    probe = min(n_lists, nprobe or default_nprobe(n_lists))
    exclude = query_groups is not None and gallery_groups is not None
    if exclude:
        query_groups = np.asarray(query_groups, np.int64)
        gallery_groups = np.asarray(gallery_groups, np.int64)
    fetch = min(len(gallery), k + (group_slack(gallery_groups) if exclude else 0))
    details = {"nlist": n_lists, "nprobe": probe, "recall_target": recall or None}
    sample = truth = None
    if (bound is not None or recall) and n_query:
        sample = np.sort(np.random.default_rng(0).choice(n_query, min(check, n_query), replace=False))
        truth = exact_topk(queries[sample], gallery, k, query_groups[sample] if exclude else None,
                           gallery_groups if exclude else None, block_size=block_size)
        details["check_sample"] = len(sample)
    if recall and sample is not None:
        probe, achieved = _probe_for_recall(ivf, queries[sample], truth, recall, probe, k, fetch,
                                            query_groups[sample] if exclude else None, gallery_groups)
        details.update(nprobe=probe, sample_recall_at_1=achieved)
        cost = relative_cost(probe, n_lists, len(gallery))
        if achieved < recall or cost >= 1:
            why = (f"recall@1 {achieved:.3f} < {recall} on {len(sample)} sampled faces at nprobe {probe} of "
                   f"{n_lists}, and more probes cost as much as exact search" if achieved < recall else
                   f"recall@1 {recall} needs nprobe {probe} of {n_lists}, which costs as much as exact search")
            found = exact_topk(queries, gallery, k, query_groups, gallery_groups, block_size=block_size,
                               query_chunk=query_chunk, progress=progress)
            found.details = {**details, "fallback": f"ivf gave way to exact search: {why}"}
            return found
    best_scores = np.full((n_query, k), -np.inf, np.float32)
    best_index = np.full((n_query, k), -1, np.int64)
    exact = np.zeros(n_query, bool)
    chunk = min(query_chunk, IVF_QUERY_CHUNK)
    steps = max(1, -(-n_query // chunk))
    for step, start in enumerate(range(0, n_query, chunk), 1):
        part = slice(start, start + chunk)
        scores, found, exact[part] = _probe(ivf, queries[part], probe, k, fetch,
                                            query_groups[part] if exclude else None, gallery_groups)
        best_scores[part], best_index[part] = scores, found
        if progress:
            progress(step, steps)
    rescored = 0
    if sample is not None:  # the check sample's exact results replace its ivf ones
        if bound is not None:
            # calibrate the re-search bound on the sample: every sampled query whose true best reaches
            # ``bound`` must have an IVF best at or above the bound used (minus a safety margin)
            reach = truth.scores[:, 0] >= bound
            if reach.any():
                bound = min(bound, float(best_scores[sample[reach], 0].min()) - CHECK_SAFETY)
        best_scores[sample], best_index[sample] = truth.scores, truth.indices
        exact[sample] = True
        rescored = len(sample)
    if bound is not None and n_query:
        again = np.flatnonzero(~exact & (best_scores[:, 0] >= bound))
        if len(again):
            sub = exact_topk(queries[again], gallery, k,
                             query_groups[again] if exclude else None, gallery_groups if exclude else None,
                             block_size=block_size)
            best_scores[again], best_index[again] = sub.scores, sub.indices
            exact[again] = True
            rescored += len(again)
    return TopK(best_scores, best_index, exact, "ivf", rescored, bound, details)


def _probe(ivf: IvfGallery, q: np.ndarray, probe: int, k: int, fetch: int, query_groups: np.ndarray | None,
           gallery_groups: np.ndarray | None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """IVF top-k of the queries ``q`` in their ``probe`` nearest lists, and which are certified exact."""
    n_lists = len(ivf.centroids)
    ivf.index.nprobe = probe  # search_preassigned reads this many columns of ``assign``
    coarse = q @ ivf.centroids.T
    assign = np.argpartition(-coarse, probe - 1, axis=1)[:, :probe] if probe < n_lists else \
        np.tile(np.arange(n_lists), (len(q), 1))
    scores, found = ivf.index.search_preassigned(q, fetch, assign.astype(np.int64),
                                                 np.take_along_axis(coarse, assign, 1).astype(np.float32))
    if query_groups is not None:
        scores, found = exclude_same_group(scores, found, query_groups, gallery_groups)
    best_scores = np.full((len(q), k), -np.inf, np.float32)
    best_index = np.full((len(q), k), -1, np.int64)
    merge_topk(best_scores, best_index, scores, found, k)
    # certificate: no unprobed cluster can hold a row above the k-th score found
    upper = coarse + ivf.radii[None, :]
    np.put_along_axis(upper, assign, -np.inf, axis=1)
    certified = (upper.max(axis=1) < best_scores[:, -1]) & (best_index[:, -1] >= 0)
    return best_scores, best_index, certified


def recall_at_1(found: TopK | tuple[np.ndarray, np.ndarray], truth: TopK) -> float:
    """Share of queries (with a true nearest) whose first result is the true nearest, or ties its score."""
    scores, indices = (found.scores, found.indices) if isinstance(found, TopK) else found
    has = truth.indices[:, 0] >= 0
    hit = (indices[:, 0] == truth.indices[:, 0]) | (scores[:, 0] >= truth.scores[:, 0] - 1e-5)
    return float(hit[has].mean()) if has.any() else 1.0


def _probe_for_recall(ivf: IvfGallery, q: np.ndarray, truth: TopK, recall: float, probe: int, k: int, fetch: int,
                      query_groups: np.ndarray | None, gallery_groups: np.ndarray | None) -> tuple[int, float]:
    """Double nprobe from ``probe`` until recall@1 on the sample ``q`` reaches ``recall``, or until the
    next doubling would cost as much as exact search; returns the last nprobe and its recall."""
    n_lists, n_gallery = len(ivf.centroids), ivf.index.ntotal
    while True:
        scores, found, _ = _probe(ivf, q, probe, k, fetch, query_groups, gallery_groups)
        achieved = recall_at_1((scores, found), truth)
        if achieved >= recall or probe >= n_lists or relative_cost(min(n_lists, 2 * probe), n_lists, n_gallery) >= 1:
            return probe, achieved
        probe = min(n_lists, 2 * probe)
