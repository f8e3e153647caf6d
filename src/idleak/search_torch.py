"""The torch engine of ``idleak.search.topk``: blocked matrix products and ``torch.topk`` on a device
("cuda" for a GPU; "cpu" runs the same code, which is what the tests check here)."""

from __future__ import annotations

import numpy as np

from idleak.errors import IdleakError
from idleak.search import (
    DEFAULT_BLOCK,
    DEFAULT_QUERY_CHUNK,
    ProgressFn,
    TopK,
    _as_float32,
    exclude_same_group,
    group_slack,
    merge_topk,
)


def torch_topk(
    queries: np.ndarray,
    gallery: np.ndarray,
    k: int,
    query_groups: np.ndarray | None = None,
    gallery_groups: np.ndarray | None = None,
    block_size: int = DEFAULT_BLOCK,
    query_chunk: int = DEFAULT_QUERY_CHUNK,
    progress: ProgressFn | None = None,
    device: str = "cpu",
) -> TopK:
    try:
        import torch
    except ImportError:
        raise IdleakError("--device needs torch (pip install 'idleak[torch]')") from None
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise IdleakError(f"--device {device}: no CUDA GPU is visible to torch")
    queries = _as_float32(queries)
    gallery = _as_float32(gallery)
    n_query = len(queries)
    k = max(1, int(k))
    exclude = query_groups is not None and gallery_groups is not None
    if exclude:
        query_groups = np.asarray(query_groups, np.int64)
        gallery_groups = np.asarray(gallery_groups, np.int64)
    slack = group_slack(gallery_groups) if exclude else 0
    best_scores = np.full((n_query, k), -np.inf, np.float32)
    best_index = np.full((n_query, k), -1, np.int64)
    steps = max(1, -(-len(gallery) // block_size)) * max(1, -(-n_query // query_chunk))
    step = 0
    with torch.inference_mode():
        for g_start in range(0, len(gallery), block_size):
            block = torch.from_numpy(gallery[g_start:g_start + block_size]).to(device)
            fetch = min(len(block), k + slack)
            for q_start in range(0, n_query, query_chunk):
                q = torch.from_numpy(queries[q_start:q_start + query_chunk]).to(device)
                scores, found = torch.topk(q @ block.T, fetch, dim=1)
                scores = scores.float().cpu().numpy()
                found = found.cpu().numpy().astype(np.int64) + g_start
                if exclude:
                    scores, found = exclude_same_group(scores, found, query_groups[q_start:q_start + len(q)],
                                                       gallery_groups)
                merge_topk(best_scores[q_start:q_start + len(q)], best_index[q_start:q_start + len(q)],
                           scores, found, k)
                step += 1
                if progress:
                    progress(step, steps)
    return TopK(best_scores, best_index, engine="torch")
