"""Exact top-k cosine search over unit vectors in bounded memory.

The gallery is cut into blocks of ``block_size`` rows; each block goes into a FAISS
``IndexFlatIP`` and is searched by every query chunk, and the per-block results are merged into a
running top-k. Memory is bounded by the block and chunk sizes, not by the dataset sizes.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import faiss
import numpy as np

DEFAULT_BLOCK = 65_536
DEFAULT_QUERY_CHUNK = 16_384

ProgressFn = Callable[[int, int], None]


@dataclass
class TopK:
    """Per query: ``scores`` (n, k) best first and gallery row ``indices`` (n, k); -1 where fewer exist."""

    scores: np.ndarray
    indices: np.ndarray


def set_threads(n: int | None) -> None:
    """Threads FAISS may use (None: all cores)."""
    if n:
        faiss.omp_set_num_threads(int(n))


def topk(
    queries: np.ndarray,
    gallery: np.ndarray,
    k: int,
    query_groups: np.ndarray | None = None,
    gallery_groups: np.ndarray | None = None,
    block_size: int = DEFAULT_BLOCK,
    query_chunk: int = DEFAULT_QUERY_CHUNK,
    progress: ProgressFn | None = None,
) -> TopK:
    """Exact top-``k`` gallery rows by inner product for every query.

    With ``query_groups``/``gallery_groups`` (integer group ids, -1 = no group), a gallery row is
    never returned for a query of the same group: leave-one-identity-out search, still exact.
    """
    queries = _as_float32(queries)
    gallery = _as_float32(gallery)
    n_query, dim = queries.shape
    if gallery.shape[1] != dim:
        raise ValueError(f"dimension mismatch: queries {dim}, gallery {gallery.shape[1]}")
    k = max(1, int(k))
    exclude = query_groups is not None and gallery_groups is not None
    if exclude:
        query_groups = np.asarray(query_groups, dtype=np.int64)
        gallery_groups = np.asarray(gallery_groups, dtype=np.int64)
    best_scores = np.full((n_query, k), -np.inf, dtype=np.float32)
    best_index = np.full((n_query, k), -1, dtype=np.int64)
    n_blocks = max(1, -(-len(gallery) // block_size))
    steps = n_blocks * max(1, -(-n_query // query_chunk))
    step = 0
    for block_start in range(0, max(len(gallery), 1), block_size):
        block = gallery[block_start:block_start + block_size]
        if len(block) == 0:
            break
        index = faiss.IndexFlatIP(dim)
        index.add(block)
        extra = 0
        if exclude:
            block_groups = gallery_groups[block_start:block_start + len(block)]
            grouped = block_groups[block_groups >= 0]
            extra = int(np.bincount(grouped).max()) if len(grouped) else 0
        fetch = min(len(block), k + extra)
        for q_start in range(0, n_query, query_chunk):
            q_end = min(n_query, q_start + query_chunk)
            scores, found = index.search(queries[q_start:q_end], fetch)
            found = np.where(found >= 0, found + block_start, -1)
            if exclude:
                same = (gallery_groups[np.maximum(found, 0)] == query_groups[q_start:q_end, None])
                same &= query_groups[q_start:q_end, None] >= 0
                scores = np.where(same | (found < 0), -np.inf, scores)
                found = np.where(same, -1, found)
            _merge(best_scores[q_start:q_end], best_index[q_start:q_end], scores, found, k)
            step += 1
            if progress:
                progress(step, steps)
    return TopK(best_scores, best_index)


def _merge(best_scores: np.ndarray, best_index: np.ndarray, scores: np.ndarray, found: np.ndarray, k: int) -> None:
    """Merge a block's candidates into the running top-k, in place."""
    all_scores = np.concatenate([best_scores, scores.astype(np.float32)], axis=1)
    all_index = np.concatenate([best_index, found], axis=1)
    all_scores = np.where(all_index < 0, -np.inf, all_scores)
    if all_scores.shape[1] > k:
        part = np.argpartition(-all_scores, k - 1, axis=1)[:, :k]
        all_scores = np.take_along_axis(all_scores, part, axis=1)
        all_index = np.take_along_axis(all_index, part, axis=1)
    order = np.argsort(-all_scores, axis=1, kind="stable")
    best_scores[:] = np.take_along_axis(all_scores, order, axis=1)
    best_index[:] = np.take_along_axis(all_index, order, axis=1)


def global_top_pairs(
    queries: np.ndarray, gallery: np.ndarray, n: int, result: TopK | None = None, k: int = 5, **kwargs: object
) -> list[tuple[int, int, float]]:
    """The ``n`` most similar (query, gallery, score) pairs over all pairs, exactly.

    Starts from each query's top-k; a query whose k-th score still beats the n-th best pair may
    hold more pairs above it, so only those queries are searched again with a larger k.
    """
    result = result or topk(queries, gallery, k, **kwargs)
    scores, indices = result.scores, result.indices
    width = scores.shape[1]
    while True:
        flat = scores[indices >= 0]
        if len(flat) == 0:
            return []
        cut = np.sort(flat)[::-1][min(n, len(flat)) - 1]
        full = (indices[:, -1] >= 0) & (scores[:, -1] >= cut)
        if not full.any() or width >= len(gallery):
            break
        width = min(len(gallery), width * 2)
        rows = np.flatnonzero(full)
        sub = topk(queries[rows], gallery, width, **kwargs)
        pad = width - scores.shape[1]
        scores = np.pad(scores, ((0, 0), (0, pad)), constant_values=-np.inf)
        indices = np.pad(indices, ((0, 0), (0, pad)), constant_values=-1)
        scores[rows], indices[rows] = sub.scores, sub.indices
    q, r = np.nonzero(indices >= 0)
    s = scores[q, r]
    order = np.lexsort((r, q, -s))[:n]
    return [(int(q[i]), int(indices[q[i], r[i]]), float(s[i])) for i in order]


def _as_float32(array: np.ndarray) -> np.ndarray:
    array = np.ascontiguousarray(array, dtype=np.float32)
    if array.ndim != 2:
        raise ValueError(f"expected a 2-d array of vectors, got shape {array.shape}")
    return array
