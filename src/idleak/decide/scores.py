"""The statistic a decision is taken on: a face's nearest-neighbour similarity, raw or density-scaled.

Raw: the cosine similarity of a face to its nearest gallery face. In a dense region of the face
space (young children, one camera and lighting, a look-alike population) every face has close
neighbours, and a stranger's raw score is high. **Local scaling** (cross-domain similarity local
scaling, CSLS, as used against hubness in nearest-neighbour retrieval) discounts the density around
both faces of the pair::

    csls = s1 - (r_query + r_gallery) / 2

``r_query`` is the mean similarity of the query to its next ``cohort`` gallery faces after the nearest
one (leaving out the nearest face's identity when the gallery is labelled); ``r_gallery`` is the
mean similarity of the matched gallery face to its ``cohort`` nearest faces of other identities in
the gallery. A real person stands out from the faces around them; a stranger in a dense region
does not. The null is computed with the same statistic, so the threshold is on the same scale.
"""

from __future__ import annotations

import numpy as np

from idleak.search import TopK, topk

#: Neighbours fetched beyond the cohort, so that photos of the nearest identity can be left out.
COHORT_MARGIN = 32
#: Fewer cohort scores than this: the query's cohort mean is replaced by the median of the others.
MIN_COHORT = 3


def neighbours_needed(score: str, cohort: int) -> int:
    """How many nearest gallery faces the statistic needs per query."""
    return 1 if score == "raw" else 1 + cohort + COHORT_MARGIN


def gallery_density(gallery: np.ndarray, groups: np.ndarray | None, cohort: int,
                    block_size: int = 65_536) -> np.ndarray:
    """Per gallery face: mean similarity to its ``cohort`` nearest gallery faces of other identities
    (of other rows, when unlabelled)."""
    n = len(gallery)
    if n < 2:
        return np.zeros(n)
    k = min(cohort + 1, n)
    if groups is not None and (np.asarray(groups) >= 0).any():
        g = np.asarray(groups, np.int64).copy()
        unl = g < 0
        g[unl] = g.max() + 1 + np.arange(unl.sum())  # an unlabelled face is its own group
        top = topk(gallery, gallery, k, query_groups=g, gallery_groups=g, block_size=block_size)
    else:
        top = topk(gallery, gallery, k, block_size=block_size)
        self_hit = top.indices == np.arange(n)[:, None]
        top = TopK(np.where(self_hit, -np.inf, top.scores), top.indices)
    scores = np.where(np.isfinite(top.scores), top.scores, np.nan)[:, :cohort]
    return np.nan_to_num(np.nanmean(scores, axis=1), nan=0.0)


def statistic(top: TopK, score: str, cohort: int, gallery_groups: np.ndarray | None,
              density: np.ndarray | None = None) -> np.ndarray:
    """Per query the decision statistic from its sorted neighbours (``top``) and the gallery's density."""
    s1 = top.scores[:, 0].astype(np.float64)
    if score == "raw":
        return s1
    if score != "csls":
        raise ValueError(f"unknown score {score!r}")
    scores, index = top.scores.astype(np.float64), top.indices
    valid = (index >= 0) & np.isfinite(scores)
    mask = valid.copy()
    mask[:, 0] = False
    if gallery_groups is not None:
        groups = np.where(valid, np.asarray(gallery_groups)[np.maximum(index, 0)], -1)
        first = groups[:, :1]
        mask &= ~((groups == first) & (first >= 0))
    mask &= np.cumsum(mask, axis=1) <= cohort
    count = mask.sum(1)
    r_query = np.where(mask, scores, 0.0).sum(1) / np.maximum(count, 1)
    ok = count >= MIN_COHORT
    if not ok.all():
        r_query[~ok] = np.median(r_query[ok]) if ok.any() else 0.0
    r_gallery = np.asarray(density)[np.maximum(index[:, 0], 0)] if density is not None else r_query
    return s1 - (r_query + r_gallery) / 2.0
