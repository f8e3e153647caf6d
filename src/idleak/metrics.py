"""Membership-attack metrics from per-identity scores: ROC, AUC, TPR at low FPR, bootstrap intervals,
and distribution separations (d', Kolmogorov-Smirnov).

Conventions: higher score = "member"; members are the positives. The empirical ROC is the one of
scikit-learn's ``roc_curve`` with every threshold kept. TPR at FPR ``f`` is read exactly from it:
the largest TPR among its points with FPR <= f. With n non-members the smallest non-zero FPR is
1/n, so an ``f`` below that cannot be resolved (only the FPR = 0 point qualifies) and is flagged.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy import stats
from sklearn.metrics import roc_auc_score, roc_curve

from idleak.errors import IdleakError

#: The FPRs every membership result reports TPR at (summary keys are their ``str``).
FPR_LEVELS = (0.1, 0.01, 0.001)


@dataclass
class RocResult:
    """An empirical ROC with its summary numbers and bootstrap intervals."""

    fpr: np.ndarray
    tpr: np.ndarray
    thresholds: np.ndarray
    auc: float
    auc_ci: tuple[float, float]
    tpr_at_fpr: dict[str, float]
    tpr_at_fpr_ci: dict[str, tuple[float, float]]
    resolvable: dict[str, bool]
    n_members: int
    n_nonmembers: int
    n_bootstrap: int
    details: dict = field(default_factory=dict)

    def summary(self) -> dict:
        """The JSON-ready numbers (no curve arrays)."""
        return {
            "auc": self.auc,
            "auc_ci": list(self.auc_ci),
            "tpr_at_fpr": dict(self.tpr_at_fpr),
            "tpr_at_fpr_ci": {k: list(v) for k, v in self.tpr_at_fpr_ci.items()},
            "tpr_at_fpr_resolvable": dict(self.resolvable),
            "min_resolvable_fpr": 1.0 / self.n_nonmembers,
            "n_bootstrap": self.n_bootstrap,
        }


def fpr_key(level: float) -> str:
    """The summary key of an FPR level: 0.1 -> "0.1", 0.001 -> "0.001"."""
    return repr(float(level))


def _split(scores: np.ndarray, members: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    scores = np.asarray(scores, dtype=np.float64)
    members = np.asarray(members, dtype=bool)
    if scores.shape != members.shape or scores.ndim != 1:
        raise IdleakError("scores and member labels must be 1-d arrays of the same length")
    if not np.all(np.isfinite(scores)):
        raise IdleakError("membership scores must be finite")
    positives, negatives = scores[members], scores[~members]
    if len(positives) == 0 or len(negatives) == 0:
        raise IdleakError(f"need at least one member and one non-member identity "
                          f"(got {len(positives)} members, {len(negatives)} non-members)")
    return positives, negatives


def empirical_roc(scores: np.ndarray, members: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(fpr, tpr, thresholds) with every threshold kept, starting at (0, 0)."""
    _split(scores, members)
    fpr, tpr, thresholds = roc_curve(np.asarray(members, bool), np.asarray(scores, np.float64),
                                     drop_intermediate=False)
    return fpr, tpr, thresholds


def tpr_at_fpr_from_curve(fpr: np.ndarray, tpr: np.ndarray, level: float) -> float:
    """The largest TPR among ROC points with FPR <= ``level`` (exact, no interpolation)."""
    ok = fpr <= level + 1e-12
    return float(np.max(tpr[ok])) if ok.any() else 0.0


def auc_mann_whitney(positives: np.ndarray, negatives: np.ndarray) -> float:
    """P(member score > non-member score) + 0.5 P(tie): the area under the empirical ROC."""
    ranks = stats.rankdata(np.concatenate([positives, negatives]))
    n1, n0 = len(positives), len(negatives)
    return float((ranks[:n1].sum() - n1 * (n1 + 1) / 2) / (n1 * n0))


def tpr_at_fpr_direct(positives: np.ndarray, negatives: np.ndarray, level: float) -> float:
    """Same value as reading the curve: with m = floor(level * n0) non-members allowed above the
    threshold, it is the share of members strictly above the (m+1)-th highest non-member score."""
    allowed = int(np.floor(level * len(negatives) + 1e-9))
    if allowed >= len(negatives):
        return 1.0
    cut = np.sort(negatives)[::-1][allowed]
    return float(np.mean(positives > cut))


def _batched_tpr(pos: np.ndarray, neg_sorted_desc: np.ndarray, level: float) -> np.ndarray:
    """``tpr_at_fpr_direct`` for each row of (reps, n1) / (reps, n0) arrays."""
    n0 = neg_sorted_desc.shape[1]
    allowed = int(np.floor(level * n0 + 1e-9))
    if allowed >= n0:
        return np.ones(len(pos))
    return np.mean(pos > neg_sorted_desc[:, allowed:allowed + 1], axis=1)


def _batched_auc(pos: np.ndarray, neg: np.ndarray) -> np.ndarray:
    """Mann-Whitney AUC for each row of (reps, n1) / (reps, n0) arrays."""
    n1, n0 = pos.shape[1], neg.shape[1]
    ranks = stats.rankdata(np.concatenate([pos, neg], axis=1), axis=1)
    return (ranks[:, :n1].sum(axis=1) - n1 * (n1 + 1) / 2) / (n1 * n0)


def bootstrap(positives: np.ndarray, negatives: np.ndarray, n_boot: int = 1000, seed: int = 0,
              levels: tuple[float, ...] = FPR_LEVELS, chunk: int = 200) -> dict[str, np.ndarray]:
    """Stratified bootstrap over identities: members and non-members resampled separately.

    Returns the AUC and each TPR-at-FPR level per replicate (arrays of length ``n_boot``).
    """
    rng = np.random.default_rng(seed)
    chunk = max(1, min(chunk, 10_000_000 // (len(positives) + len(negatives))))  # bounded memory
    out: dict[str, list[np.ndarray]] = {"auc": []} | {fpr_key(level): [] for level in levels}
    for start in range(0, n_boot, chunk):
        reps = min(chunk, n_boot - start)
        pos = positives[rng.integers(0, len(positives), size=(reps, len(positives)))]
        neg = negatives[rng.integers(0, len(negatives), size=(reps, len(negatives)))]
        out["auc"].append(_batched_auc(pos, neg))
        neg_desc = -np.sort(-neg, axis=1)
        for level in levels:
            out[fpr_key(level)].append(_batched_tpr(pos, neg_desc, level))
    return {k: np.concatenate(v) if v else np.zeros(0) for k, v in out.items()}


def percentile_interval(values: np.ndarray, confidence: float = 0.95) -> tuple[float, float]:
    """The two-sided percentile interval of bootstrap replicates."""
    tail = (1 - confidence) / 2 * 100
    low, high = np.percentile(values, [tail, 100 - tail])
    return float(low), float(high)


def roc_metrics(scores: np.ndarray, members: np.ndarray, n_boot: int = 1000, seed: int = 0,
                levels: tuple[float, ...] = FPR_LEVELS, confidence: float = 0.95) -> RocResult:
    """ROC, AUC, TPR at each FPR level, and stratified bootstrap intervals over identities."""
    positives, negatives = _split(scores, members)
    fpr, tpr, thresholds = empirical_roc(scores, members)
    auc = float(roc_auc_score(np.asarray(members, bool), np.asarray(scores, np.float64)))
    tpr_at = {fpr_key(level): tpr_at_fpr_from_curve(fpr, tpr, level) for level in levels}
    resolvable = {fpr_key(level): bool(level * len(negatives) >= 1 - 1e-9) for level in levels}
    reps = bootstrap(positives, negatives, n_boot, seed, levels) if n_boot > 0 else {}
    auc_ci = percentile_interval(reps["auc"], confidence) if n_boot > 0 else (auc, auc)
    tpr_ci = {k: percentile_interval(reps[k], confidence) if n_boot > 0 else (v, v) for k, v in tpr_at.items()}
    return RocResult(fpr, tpr, thresholds, auc, auc_ci, tpr_at, tpr_ci, resolvable, len(positives),
                     len(negatives), int(n_boot), {"confidence": confidence, "bootstrap_seed": seed})


def d_prime(a: np.ndarray, b: np.ndarray) -> float:
    """Decidability index (mean(a) - mean(b)) / sqrt((var(a) + var(b)) / 2); NaN with too few values."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if len(a) < 2 or len(b) < 2:
        return float("nan")
    pooled = np.sqrt((a.var(ddof=1) + b.var(ddof=1)) / 2)
    return float((a.mean() - b.mean()) / pooled) if pooled > 0 else float("nan")


def ks_statistic(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    """Two-sample Kolmogorov-Smirnov statistic and its p-value; NaN when a side is empty."""
    if len(a) == 0 or len(b) == 0:
        return float("nan"), float("nan")
    result = stats.ks_2samp(np.asarray(a, np.float64), np.asarray(b, np.float64))
    return float(result.statistic), float(result.pvalue)
