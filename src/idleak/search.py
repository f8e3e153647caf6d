"""Top-k cosine search over unit vectors in bounded memory: exact, IVF with exact scores, or torch.

``topk(queries, gallery, k, engine=...)`` is the one entry point.

- ``exact`` (FAISS, CPU): the gallery is cut into blocks of ``block_size`` rows; each block goes into an
  ``IndexFlatIP`` searched by every query chunk, and the per-block results are merged into a running
  top-k. Memory is bounded by the block and chunk sizes, not by the dataset sizes.
- ``torch``: the same blocked search as matrix products and ``torch.topk`` on ``device`` ("cuda" for
  a GPU, "cpu" otherwise); results equal ``exact`` (ties aside).
- ``ray``: the exact engine on gallery shards spread over a Ray cluster, merged (``idleak.ray_engine``).
- ``ivf``: a FAISS ``IndexIVFFlat`` (inner product) finds candidates in the ``nprobe`` nearest of
  ``nlist`` clusters; stored vectors are full precision, so every score returned is exact.

The contract of ``TopK.exact`` (per query): True where the returned top-k is proven to be the
exhaustive top-k. The exact and torch engines set it everywhere. The ivf engine sets it where every
unprobed cluster's upper bound (query . centroid + cluster radius) is below the k-th score found,
and for every query it re-searched exhaustively: with ``bound=b``, each query whose best IVF score
is >= b (pass ``b = threshold - margin``) is searched again exhaustively, so every flag at a
threshold >= b and every near miss within the margin carries the exact score and neighbours.

How far below its true best a query's IVF best can fall depends on the data, so ``b`` is first
checked on an exact sample of ``check`` queries: if a sampled query whose true best reaches ``b``
has an IVF best below it, the bound used is lowered to that IVF best minus 0.02 (``bound_used``).
On data with structure (near-duplicates far above the stranger scores) few queries are searched
again; on data whose threshold sits in the bulk of nearest-neighbour scores (random vectors) most
are, and ivf costs about what exact search costs: decisions stay exact, the speed-up goes. A query
left ``exact=False`` had an IVF best below ``bound_used``; the bench measures how often its true
nearest is above the threshold (recall of flagged pairs vs exact search: 1.0 required).

The same check sample sets ``nprobe`` for the top-k table: starting from the default (or the nprobe
given), nprobe doubles until the sample's recall@1 reaches ``recall`` (default 0.99). When the nprobe
needed would make ivf cost as much as exact search (``search_ivf.relative_cost`` >= 1: random vectors,
whose "nearest" neighbour is one of many equally far points), exact search runs instead, and
``TopK.details["fallback"]`` says why; ``recall=None`` keeps the nprobe given.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import faiss
import numpy as np

from idleak.errors import IdleakError

DEFAULT_BLOCK = 65_536
DEFAULT_QUERY_CHUNK = 16_384
#: ivf: default recall@1 target, measured on the exact check sample (None or 0: no target, nprobe as given)
RECALL_TARGET = 0.99

ProgressFn = Callable[[int, int], None]


ENGINES = ("exact", "ivf", "torch", "ray", "auto")
#: ``auto`` picks ivf above this many query x gallery products (and a gallery of at least IVF_MIN_GALLERY)
AUTO_IVF_PRODUCTS = 5e10
IVF_MIN_GALLERY = 200_000


@dataclass
class TopK:
    """Per query: ``scores`` (n, k) best first and gallery row ``indices`` (n, k); -1 where fewer exist.

    ``exact`` (n,) is True where the row is proven to be the exhaustive top-k (see the module doc);
    ``engine`` is the engine that ran and ``n_rescored`` how many queries ivf searched again exactly;
    ``details`` (ivf): nlist, the nprobe used, the recall@1 target and what the check sample reached,
    and ``fallback`` when ivf gave way to exact search.
    """

    scores: np.ndarray
    indices: np.ndarray
    exact: np.ndarray | None = None
    engine: str = "exact"
    n_rescored: int = 0
    bound_used: float | None = None
    details: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.exact is None:
            self.exact = np.ones(len(self.scores), bool)

    @property
    def guaranteed(self) -> bool:
        """Every query's top-k is exact."""
        return bool(np.all(self.exact))


def choose_engine(engine: str, n_query: int, n_gallery: int) -> str:
    """Resolve ``auto``: exact unless the search is large enough for ivf to pay (see AUTO_IVF_PRODUCTS)."""
    if engine not in ENGINES:
        raise IdleakError(f"--search must be one of {', '.join(ENGINES)}, not {engine!r}")
    if engine != "auto":
        return engine
    return "ivf" if n_gallery >= IVF_MIN_GALLERY and n_query * n_gallery >= AUTO_IVF_PRODUCTS else "exact"


def set_threads(n: int | None) -> None:
    """Threads FAISS may use (None: all cores)."""
    if n:
        faiss.omp_set_num_threads(int(n))


def search_device(device: str | None) -> str:
    """The search device for ``--device``: cpu (also for None), cuda[:N], or auto (cuda if torch sees a GPU)."""
    if device in (None, "cpu"):
        return "cpu"
    if device == "auto":
        try:
            import torch
        except ImportError:
            return "cpu"
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


def topk(
    queries: np.ndarray,
    gallery: np.ndarray,
    k: int,
    query_groups: np.ndarray | None = None,
    gallery_groups: np.ndarray | None = None,
    block_size: int = DEFAULT_BLOCK,
    query_chunk: int = DEFAULT_QUERY_CHUNK,
    progress: ProgressFn | None = None,
    engine: str = "exact",
    bound: float | None = None,
    device: str = "cpu",
    nlist: int | None = None,
    nprobe: int | None = None,
    ray_address: str | None = None,
    recall: float | None = RECALL_TARGET,
) -> TopK:
    """Top-``k`` gallery rows by inner product for every query (see the module doc for the engines).

    With ``query_groups``/``gallery_groups`` (integer group ids, -1 = no group), a gallery row is
    never returned for a query of the same group: leave-one-identity-out search, still exact.
    ``bound`` (ivf): queries whose best score reaches it are re-searched exhaustively.
    ``recall`` (ivf): nprobe is raised until recall@1 on the exact check sample reaches it, else exact search.
    ``device`` (torch): "cpu" or "cuda"; "cuda" with engine exact or auto runs the torch engine.
    """
    engine = choose_engine(engine, len(queries), len(gallery))
    if device != "cpu" and not device.startswith("cuda"):
        raise IdleakError(f"--device must be cpu or cuda[:N], not {device!r}")
    if device != "cpu" and engine == "exact":
        engine = "torch"
    kwargs = dict(query_groups=query_groups, gallery_groups=gallery_groups, block_size=block_size,
                  query_chunk=query_chunk, progress=progress)
    if engine == "ivf":
        from idleak.search_ivf import ivf_topk

        return ivf_topk(queries, gallery, k, bound=bound, nlist=nlist, nprobe=nprobe, recall=recall, **kwargs)
    if engine == "ray":
        from idleak.ray_engine import ray_topk

        return ray_topk(queries, gallery, k, query_groups, gallery_groups, block_size=block_size, progress=progress,
                        address=ray_address)
    if engine == "torch":
        from idleak.search_torch import torch_topk

        return torch_topk(queries, gallery, k, device=device, **kwargs)
    return exact_topk(queries, gallery, k, **kwargs)


def exact_topk(
    queries: np.ndarray,
    gallery: np.ndarray,
    k: int,
    query_groups: np.ndarray | None = None,
    gallery_groups: np.ndarray | None = None,
    block_size: int = DEFAULT_BLOCK,
    query_chunk: int = DEFAULT_QUERY_CHUNK,
    progress: ProgressFn | None = None,
) -> TopK:
    """The exact engine: FAISS flat inner product per gallery block, merged top-k."""
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
                scores, found = exclude_same_group(scores, found, query_groups[q_start:q_end], gallery_groups)
            merge_topk(best_scores[q_start:q_end], best_index[q_start:q_end], scores, found, k)
            step += 1
            if progress:
                progress(step, steps)
    return TopK(best_scores, best_index)


def exclude_same_group(scores: np.ndarray, found: np.ndarray, query_groups: np.ndarray,
                       gallery_groups: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Drop candidates (gallery rows ``found``) of the query's own group (-1 = no group)."""
    same = gallery_groups[np.maximum(found, 0)] == query_groups[:, None]
    same &= query_groups[:, None] >= 0
    return np.where(same | (found < 0), -np.inf, scores), np.where(same, -1, found)


def group_slack(gallery_groups: np.ndarray | None) -> int:
    """Extra candidates to fetch so that k remain after dropping a query's own group."""
    if gallery_groups is None:
        return 0
    grouped = np.asarray(gallery_groups)[np.asarray(gallery_groups) >= 0]
    return int(np.bincount(grouped).max()) if len(grouped) else 0


def merge_topk(best_scores: np.ndarray, best_index: np.ndarray, scores: np.ndarray, found: np.ndarray,
               k: int) -> None:
    """Merge a block's candidates into the running top-k, in place (indices of -1 are empty)."""
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
