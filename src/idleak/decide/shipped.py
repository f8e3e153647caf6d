"""The shipped impostor calibration: a stranger's false-flag rate against an unlabelled gallery.

When REAL has no identity labels and no holdout is given, the only null available is the model's
false-match behaviour measured elsewhere. ``data/calibration.json`` holds, per model, the rate at which
a stranger's *best* match among ``N`` people beats a similarity ``t``, measured by
``tools/make_calibration.py`` on part of LFW (in-the-wild colour photos of adults; identities split by
name, the rest validate it), for ``N`` in 1 ... 2,000 and ``t`` on a grid, with an upper 95% bound from
an identity-level bootstrap.

* **Measured at the 1:N level, per stranger.** For each build face, ``k`` = how many other people's
  photos beat ``t``; a random gallery of ``N`` people misses ``t`` with probability estimated without
  bias by C(G-1-k, N) / C(G-1, N). Averaging over strangers keeps what a per-comparison rate loses:
  a stranger in a dense region of the face space matches many people at once. (A per-comparison
  rate ``q`` turned into ``1 - (1 - q)^N`` assumes independent scores and is optimistic for such
  strangers; ``N q``, the union bound, is valid but about 2x conservative on held-out LFW at alpha 0.05.)
* **Other gallery sizes** only by valid bounds: monotonicity in ``N`` and the union bound over blocks,
  ``P(best of N) <= ceil(N / n) P(best of n)`` (holds under any dependence).
* **Several photos per identity** in the gallery: treated as that many people, which is conservative
  (photos of one person are positively associated).
* **What the data resolves.** Above ``resolution_score`` fewer than ``MIN_PAIRS`` distinct identity pairs
  exceed the score, so smaller rates are not measured. A threshold beyond it is *not extrapolated*:
  ``threshold`` returns ``resolvable=False`` with the reason and an infinite value (nothing is flagged),
  and ``p_value`` never goes below the bound at ``resolution_score``. It does not raise, because a
  decision asks for thresholds at several levels (per-cluster Bonferroni, linking) and must report
  "cannot resolve this level" rather than abort the audit.

The rate holds for in-the-wild photos like LFW's; populations whose faces are all alike (one camera
and lighting, young children) have higher impostor similarity: give REAL labels or a holdout.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources

import numpy as np

from idleak.errors import IdleakError

#: Fewer distinct identity pairs than this above a score: its rate is not resolved.
MIN_PAIRS = 20
#: Tenths of LFW identities the calibration is built from (the rest validate it).
BUILD_SHARE = 7


def lfw_build_part(identity: str) -> bool:
    """True if ``identity`` belongs to the part of LFW the calibration is built from.

    The split is by identity (never by photo): BLAKE2b-32 of the name, modulo 10, below 7.
    """
    digest = hashlib.blake2b(str(identity).encode("utf-8"), digest_size=4).digest()
    return int.from_bytes(digest, "big") % 10 < BUILD_SHARE


@dataclass
class ShippedThreshold:
    """A similarity threshold (flag ``score > value``) for a stranger's best match among ``gallery_size`` faces."""

    value: float
    alpha: float
    gallery_size: int
    resolvable: bool
    details: dict = field(default_factory=dict)


@dataclass
class ShippedCalibration:
    """Best-of-N false-match rates of one model on a grid of similarities and gallery sizes (see the module doc)."""

    model_id: str
    scores: np.ndarray  # increasing grid of similarities t
    sizes: np.ndarray  # increasing gallery sizes N, starting at 1
    rate: np.ndarray  # (sizes, scores): point estimate of P(a stranger's best of N > t)
    upper: np.ndarray  # the same, upper confidence bound
    confidence: float
    resolution_score: float
    provenance: str
    n_faces: int
    n_identities: int
    n_identity_pairs: int
    info: dict = field(default_factory=dict)

    @classmethod
    def from_entry(cls, entry: dict) -> ShippedCalibration:
        grid = entry["grid"]
        return cls(
            model_id=entry["model_id"], scores=np.asarray(grid["score"], np.float64),
            sizes=np.asarray(grid["sizes"], np.int64), rate=np.asarray(grid["rate"], np.float64),
            upper=np.asarray(grid["upper"], np.float64), confidence=float(entry["confidence"]),
            resolution_score=float(entry["resolution_score"]), provenance=entry["provenance"],
            n_faces=int(entry["n_faces"]), n_identities=int(entry["n_identities"]),
            n_identity_pairs=int(entry["n_identity_pairs"]),
            info={k: entry[k] for k in ("datasets", "split", "method", "validation") if k in entry},
        )

    def false_flag_rate(self, scores: np.ndarray, gallery_size: int, upper: bool = True) -> np.ndarray:
        """P(a stranger's best match among ``gallery_size`` faces > score): the upper bound by default.

        Scores above ``resolution_score`` are taken at it (never below what the data resolves).
        """
        n = _check_size(gallery_size)
        s = np.minimum(np.asarray(scores, np.float64), self.resolution_score)
        # the rate is a decreasing step function of t: the grid point at or below s bounds it from above
        idx = np.searchsorted(self.scores, s, side="right") - 1
        table = self.upper if upper else self.rate
        bounds = [np.ceil(n / size) * table[j] for j, size in enumerate(self.sizes) if size <= n]
        above = np.flatnonzero(self.sizes >= n)
        if len(above):
            bounds.append(table[above[0]])
        curve = np.minimum(1.0, np.min(bounds, axis=0))  # per grid point
        return np.where(idx < 0, 1.0, curve[np.clip(idx, 0, len(self.scores) - 1)])

    def resolution(self, gallery_size: int) -> float:
        """The smallest false-flag rate resolved for a gallery of this size (no p-value goes below it)."""
        return float(self.false_flag_rate(self.resolution_score, gallery_size)[()])

    @property
    def smallest_rate(self) -> float:
        """The smallest per-comparison (1:1) false-match rate resolved; ``resolution(N)`` is the 1:N one."""
        return self.resolution(1)

    def max_gallery_size(self, alpha: float) -> int:
        """The largest gallery for which a threshold at ``alpha`` is resolved (0: none)."""
        alpha = _check_alpha(alpha)
        lo, hi = 0, 1
        while self.resolution(hi) <= alpha:
            lo, hi = hi, hi * 2
        while hi - lo > 1:
            mid = (lo + hi) // 2
            lo, hi = (mid, hi) if self.resolution(mid) <= alpha else (lo, mid)
        return lo

    def threshold(self, alpha: float, gallery_size: int) -> ShippedThreshold:
        """The smallest grid similarity ``t`` whose best-of-N rate bound is at most ``alpha``; flag ``score > t``."""
        alpha = _check_alpha(alpha)
        n = _check_size(gallery_size)
        grid = self.scores[self.scores <= self.resolution_score]
        bound = self.false_flag_rate(grid, n)
        ok = np.flatnonzero(bound <= alpha)
        details = {
            "method": "best-of-N rate measured per stranger on LFW (identity bootstrap upper bound); "
                      "other sizes by the union bound over blocks",
            "confidence": self.confidence,
            "resolution_score": self.resolution_score,
            "max_gallery_size": self.max_gallery_size(alpha),
            "n_identities": self.n_identities,
            "n_faces": self.n_faces,
            "n_identity_pairs": self.n_identity_pairs,
            "provenance": self.provenance,
            "population": "in-the-wild colour photos of adults (LFW)",
        }
        if len(ok) == 0:
            floor = self.resolution(n)
            details["reason"] = (
                f"a stranger's best match among {n} faces cannot be held at alpha {alpha:g}: the shipped calibration "
                f"resolves false-flag rates only down to {floor:.2g} "
                f"at this size (at most {details['max_gallery_size']} faces at this alpha); give REAL identity labels "
                "or --holdout")
            return ShippedThreshold(float("inf"), alpha, n, False, details)
        t = float(grid[ok[0]])
        details["false_flag_rate_upper"] = float(bound[ok[0]])
        details["false_flag_rate_estimate"] = float(self.false_flag_rate(t, n, upper=False)[()])
        details["per_comparison_rate"] = float(self.false_flag_rate(t, 1, upper=False)[()])
        return ShippedThreshold(t, alpha, n, True, details)

    def p_value(self, scores: np.ndarray, gallery_size: int) -> np.ndarray:
        """Per face: an upper bound of P(a stranger's best match among ``gallery_size`` faces >= score).

        Never smaller than the calibration resolves; ``-inf`` (no match) gives 1.
        """
        s = np.asarray(scores, np.float64)
        if np.isnan(s).any():
            raise IdleakError("shipped calibration: similarity scores contain NaN")
        return self.false_flag_rate(s, gallery_size)

    def built_from(self, identity: str) -> bool:
        """True if an LFW identity of this name was part of the data the calibration was built from."""
        return lfw_build_part(identity)


@lru_cache(maxsize=8)
def load_shipped(model_id: str) -> ShippedCalibration:
    """The calibration shipped for ``model_id``; one-line ``IdleakError`` if there is none."""
    table = json.loads(resources.files("idleak").joinpath("data/calibration.json").read_text())
    for entry in table["models"]:
        if entry["model_id"] == model_id:
            return ShippedCalibration.from_entry(entry)
    raise IdleakError(f"no shipped calibration for model {model_id}: give REAL identity labels "
                      "(sub-folders or a manifest) or --holdout")


def _check_alpha(alpha: float) -> float:
    if not 0 < float(alpha) < 1:
        raise IdleakError(f"alpha must be between 0 and 1 (exclusive), got {alpha}")
    return float(alpha)


def _check_size(gallery_size: int) -> int:
    if int(gallery_size) < 1 or int(gallery_size) != gallery_size:
        raise IdleakError(f"gallery size must be a positive whole number, got {gallery_size}")
    return int(gallery_size)
