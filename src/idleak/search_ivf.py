"""The ivf engine of ``idleak.search.topk``: FAISS IndexIVFFlat candidates with exact scores, a
per-query exactness certificate, and exhaustive re-search of every query near the threshold."""

from __future__ import annotations

from dataclasses import dataclass

import faiss
import numpy as np

from idleak.search import (
    DEFAULT_BLOCK,
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
) -> TopK:
    """IVF top-k with exact scores; see ``idleak.search`` for the contract of ``exact`` and ``bound``."""
    queries = _as_float32(queries)
    gallery = _as_float32(gallery)
    n_query = len(queries)
    k = max(1, int(k))
    ivf = ivf or build_ivf(gallery, nlist)
    n_lists = len(ivf.centroids)
    probe = min(n_lists, nprobe or default_nprobe(n_lists))
    ivf.index.nprobe = probe
    exclude = query_groups is not None and gallery_groups is not None
    if exclude:
        query_groups = np.asarray(query_groups, np.int64)
        gallery_groups = np.asarray(gallery_groups, np.int64)
    fetch = min(len(gallery), k + (group_slack(gallery_groups) if exclude else 0))
    best_scores = np.full((n_query, k), -np.inf, np.float32)
    best_index = np.full((n_query, k), -1, np.int64)
    exact = np.zeros(n_query, bool)
    chunk = min(query_chunk, IVF_QUERY_CHUNK)
    steps = max(1, -(-n_query // chunk))
    for step, start in enumerate(range(0, n_query, chunk), 1):
        q = queries[start:start + chunk]
        coarse = q @ ivf.centroids.T
        assign = np.argpartition(-coarse, probe - 1, axis=1)[:, :probe] if probe < n_lists else \
            np.tile(np.arange(n_lists), (len(q), 1))
        scores, found = ivf.index.search_preassigned(q, fetch, assign.astype(np.int64),
                                                     np.take_along_axis(coarse, assign, 1).astype(np.float32))
        if exclude:
            scores, found = exclude_same_group(scores, found, query_groups[start:start + len(q)], gallery_groups)
        merge_topk(best_scores[start:start + len(q)], best_index[start:start + len(q)], scores, found, k)
        # certificate: no unprobed cluster can hold a row above the k-th score found
        upper = coarse + ivf.radii[None, :]
        np.put_along_axis(upper, assign, -np.inf, axis=1)
        kth = best_scores[start:start + len(q), -1]
        exact[start:start + len(q)] = (upper.max(axis=1) < kth) & (best_index[start:start + len(q), -1] >= 0)
        if progress:
            progress(step, steps)
    rescored = 0
    if bound is not None and n_query:
        # calibrate the re-search bound on an exact sample: every sampled query whose true best reaches
        # ``bound`` must have an IVF best at or above the bound used (minus a safety margin)
        sample = np.sort(np.random.default_rng(0).choice(n_query, min(check, n_query), replace=False))
        truth = exact_topk(queries[sample], gallery, k, query_groups[sample] if exclude else None,
                           gallery_groups if exclude else None, block_size=block_size)
        reach = truth.scores[:, 0] >= bound
        if reach.any():
            bound = min(bound, float(best_scores[sample[reach], 0].min()) - CHECK_SAFETY)
        best_scores[sample], best_index[sample] = truth.scores, truth.indices
        exact[sample] = True
        rescored = len(sample)
        again = np.flatnonzero(~exact & (best_scores[:, 0] >= bound))
        if len(again):
            sub = exact_topk(queries[again], gallery, k,
                             query_groups[again] if exclude else None, gallery_groups if exclude else None,
                             block_size=block_size)
            best_scores[again], best_index[again] = sub.scores, sub.indices
            exact[again] = True
            rescored += len(again)
    return TopK(best_scores, best_index, exact, "ivf", rescored, bound)
