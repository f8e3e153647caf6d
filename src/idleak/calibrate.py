"""Turn similarities into decisions that hold statistically: nulls, thresholds, p-values, hubs.

* Labelled gallery: the null of the 1:N nearest-neighbour similarity comes from
  leave-one-identity-out search (each real face against the gallery without its own identity);
  the threshold is its (1 - alpha) quantile.
* Unlabelled gallery: a shipped impostor-score calibration of the model (with provenance) gives
  the per-comparison false-match rate, adjusted to the gallery size: 1 - (1 - alpha)^(1/N).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources

import numpy as np
from scipy import stats

from idleak.errors import IdleakError
from idleak.search import topk


@dataclass
class Threshold:
    """A similarity threshold and how it was obtained."""

    value: float
    method: str  # "leave_one_identity_out", "shipped_fmr", "manual"
    alpha: float
    null: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float32))
    details: dict = field(default_factory=dict)


def group_ids(labels: np.ndarray) -> np.ndarray:
    """Integer ids for labels; -1 for None (unlabelled)."""
    ids = np.full(len(labels), -1, dtype=np.int64)
    lookup: dict[str, int] = {}
    for i, label in enumerate(labels):
        if label is not None:
            ids[i] = lookup.setdefault(str(label), len(lookup))
    return ids


def leave_one_identity_out_null(vectors: np.ndarray, identities: np.ndarray, max_queries: int | None = None,
                                seed: int = 0, **search: object) -> np.ndarray:
    """Nearest-neighbour similarity of labelled faces to the gallery without their own identity.

    With ``max_queries``, a uniform random sample of that many labelled faces is searched (each
    still against the whole gallery): the (1 - alpha) quantile needs thousands of null values,
    not millions, and this keeps calibration linear in the gallery size.
    """
    groups = group_ids(identities)
    labelled = np.flatnonzero(groups >= 0)
    if len(labelled) == 0:
        return np.zeros(0, np.float32)
    if max_queries is not None and len(labelled) > max_queries:
        labelled = np.sort(np.random.default_rng(seed).choice(labelled, max_queries, replace=False))
    result = topk(vectors[labelled], vectors, 1, query_groups=groups[labelled], gallery_groups=groups, **search)
    scores = result.scores[:, 0]
    return scores[np.isfinite(scores)].astype(np.float32)


def quantile_threshold(null: np.ndarray, alpha: float) -> float:
    """Smallest null value t with at most alpha of the null strictly above it."""
    if len(null) == 0:
        raise IdleakError("cannot calibrate a threshold: the null distribution is empty")
    return float(np.quantile(np.asarray(null, np.float64), 1.0 - alpha, method="higher"))


def loio_threshold(vectors: np.ndarray, identities: np.ndarray, alpha: float, max_queries: int | None = None,
                   **search: object) -> Threshold:
    """The leave-one-identity-out threshold for a labelled gallery."""
    null = leave_one_identity_out_null(vectors, identities, max_queries=max_queries, **search)
    n_ids = len({i for i in identities if i is not None})
    value = quantile_threshold(null, alpha)
    n_labelled = int(sum(i is not None for i in identities))
    details = {
        "null_size": int(len(null)),
        "null_sampled_from": n_labelled if len(null) < n_labelled else None,
        "null_identities": n_ids,
        "null_false_flag_rate": float(np.mean(null > value)) if len(null) else None,
    }
    if len(null) * alpha < 1:
        details["warning"] = (f"only {len(null)} null values: the {1 - alpha:.3g} quantile is the null's maximum; "
                              "the false-flag rate is resolved only to about 1/null_size")
    return Threshold(value, "leave_one_identity_out", alpha, null, details)


# -- shipped calibration for unlabelled galleries ------------------------------------------------
@lru_cache(maxsize=8)
def shipped_calibration(model_id: str) -> dict:
    """The impostor-score calibration shipped for ``model_id``; ``IdleakError`` if there is none."""
    text = resources.files("idleak").joinpath("data/calibration.json").read_text()
    table = json.loads(text)
    for entry in table["models"]:
        if entry["model_id"] == model_id:
            return entry
    raise IdleakError(
        f"no shipped calibration for model {model_id}: give REAL identity labels "
        "(sub-folders or a manifest) or a --threshold"
    )


def impostor_survival(calibration: dict, score: float) -> float:
    """P(impostor similarity > score) under the shipped calibration (EVT tail beyond the data)."""
    tail = calibration["tail"]
    if score >= tail["threshold"]:
        excess = score - tail["threshold"]
        return float(tail["rate"] * stats.genpareto.sf(excess, tail["shape"], loc=0, scale=tail["scale"]))
    grid = np.asarray(calibration["quantiles"]["score"])
    survival = np.asarray(calibration["quantiles"]["survival"])
    return float(np.interp(score, grid, survival))


def impostor_score_at(calibration: dict, fmr: float) -> tuple[float, bool]:
    """The similarity at which the impostor false-match rate is ``fmr``; and whether it was extrapolated."""
    tail = calibration["tail"]
    if fmr >= tail["rate"]:
        grid = np.asarray(calibration["quantiles"]["score"])
        survival = np.asarray(calibration["quantiles"]["survival"])
        # survival decreases with score; interpolate on the reversed arrays
        return float(np.interp(fmr, survival[::-1], grid[::-1])), False
    excess = stats.genpareto.isf(fmr / tail["rate"], tail["shape"], loc=0, scale=tail["scale"])
    extrapolated = fmr < 1.0 / max(1, calibration["n_impostor_pairs"])
    return float(tail["threshold"] + excess), extrapolated


def fmr_threshold(model_id: str, alpha: float, gallery_size: int, fmr: float | None = None) -> Threshold:
    """Threshold for an unlabelled gallery from the shipped calibration.

    Without ``fmr``, the per-comparison rate is chosen so that a stranger's best match among
    ``gallery_size`` faces passes with probability ``alpha``: fmr = 1 - (1 - alpha)^(1/N).
    """
    calibration = shipped_calibration(model_id)
    per_comparison = fmr if fmr is not None else -np.expm1(np.log1p(-alpha) / max(1, gallery_size))
    value, extrapolated = impostor_score_at(calibration, per_comparison)
    details = {
        "fmr_per_comparison": float(per_comparison),
        "gallery_size": int(gallery_size),
        "extrapolated_tail": bool(extrapolated),
        "calibration_source": calibration["provenance"],
        "calibration_pairs": calibration["n_impostor_pairs"],
    }
    return Threshold(value, "shipped_fmr", alpha, np.zeros(0, np.float32), details)


# -- tests on counts ---------------------------------------------------------------------------------
def binomial_p_value(n_flagged: int, n: int, alpha: float) -> float:
    """One-sided P(X >= n_flagged) for X ~ Binomial(n, alpha): "more flagged than chance"."""
    if n == 0:
        return 1.0
    return float(stats.binom.sf(n_flagged - 1, n, alpha))


def find_hubs(
    nearest: np.ndarray, n_gallery: int, alpha: float = 0.01, min_count: int = 3
) -> list[tuple[int, int, float]]:
    """Gallery rows that are the nearest neighbour of unusually many queries.

    Under uniform assignment a gallery face is the nearest neighbour of Poisson(n_q / N) queries;
    rows whose count has a Bonferroni-corrected tail probability below ``alpha`` (and at least
    ``min_count``) are hubs. Returns (gallery row, count, p-value), most extreme first.
    """
    nearest = nearest[nearest >= 0]
    if len(nearest) == 0 or n_gallery == 0:
        return []
    counts = np.bincount(nearest, minlength=n_gallery)
    rate = len(nearest) / n_gallery
    candidates = np.flatnonzero(counts >= max(min_count, 2))
    hubs = []
    for row in candidates:
        p = float(stats.poisson.sf(counts[row] - 1, rate)) * n_gallery
        if p < alpha:
            hubs.append((int(row), int(counts[row]), min(1.0, p)))
    hubs.sort(key=lambda h: (-h[1], h[0]))
    return hubs
