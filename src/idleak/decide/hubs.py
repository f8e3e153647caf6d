"""Hubs: real faces that are the nearest neighbour of more synthetic identities than their own hubness explains.

Some faces are close to many others by nature (a frontal, average-looking face; a young child). The
real-vs-real null measures that: how often each real face is the nearest other-identity face of a
real query. A real face is a hub when more synthetic *clusters* (identities, not faces: one
identity's 20 images count once) pick it as nearest than that rate predicts: the two counts are
compared by the exact conditional binomial test of two Poisson rates, Bonferroni over the gallery
(without a real-vs-real null, against a uniform rate). Hubs are evidence to look at; they are never
dropped from a decision.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import stats


@dataclass
class Hub:
    row: int
    count: int  # synthetic clusters whose nearest real face this is
    expected: float
    p_value: float
    baseline: str  # "real_vs_real" or "uniform"


def find_hubs(nearest: np.ndarray, clusters: np.ndarray, null: object, n_gallery: int, alpha: float = 0.01,
              min_count: int = 3) -> list[Hub]:
    """Hubs among gallery rows, most extreme first (``null.nearest``: the real-vs-real nearest rows, if any)."""
    nearest = np.asarray(nearest, np.int64)
    ok = nearest >= 0
    if not ok.any() or n_gallery == 0:
        return []
    pairs = np.unique(np.stack([np.asarray(clusters)[ok], nearest[ok]], 1), axis=0)
    n_clusters = len(np.unique(np.asarray(clusters)[ok]))
    counts = np.bincount(pairs[:, 1], minlength=n_gallery)
    baseline_rows = np.asarray(getattr(null, "nearest", np.zeros(0, np.int64)), np.int64)
    sizes = np.bincount(np.asarray(clusters)[ok])
    exposure = n_clusters * float(sizes[sizes > 0].mean())  # synthetic faces' chances to pick each row
    hubs = []
    if len(baseline_rows):
        # two Poisson counts, the synthetic clusters' and the real-vs-real null's, compared exactly:
        # given their sum, the synthetic count is binomial with the share of the exposures
        base = np.bincount(baseline_rows, minlength=n_gallery)
        share = exposure / (exposure + len(baseline_rows))
        for row in np.flatnonzero(counts >= max(min_count, 2)):
            total = int(counts[row] + base[row])
            p = float(stats.binom.sf(counts[row] - 1, total, share)) * n_gallery
            if p < alpha:
                expected = base[row] * exposure / len(baseline_rows)
                hubs.append(Hub(int(row), int(counts[row]), float(expected), min(1.0, p), "real_vs_real"))
    else:
        for row in np.flatnonzero(counts >= max(min_count, 2)):
            expected = n_clusters * (1 - (1 - 1.0 / n_gallery) ** float(sizes[sizes > 0].mean()))
            p = float(stats.poisson.sf(counts[row] - 1, expected)) * n_gallery
            if p < alpha:
                hubs.append(Hub(int(row), int(counts[row]), float(expected), min(1.0, p), "uniform"))
    hubs.sort(key=lambda h: (h.p_value, -h.count, h.row))
    return hubs
