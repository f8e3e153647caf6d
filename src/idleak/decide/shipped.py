"""The shipped impostor calibration: a stranger's false-match rate for an unlabelled gallery.

When REAL has no identity labels and no holdout is given, the only null available is the model's
false-match rate measured elsewhere. ``data/calibration.json`` holds, per model, the per-comparison
impostor rate ``q(t)`` = P(similarity of two faces of *different* people > t), measured by
``tools/make_calibration.py`` on part of LFW (in-the-wild colour photos) and weighted so that each
*pair of identities* counts once (George W. Bush's 530 photos weigh as much as a one-photo person),
with an upper 95% confidence bound from an identity-level bootstrap.

From one comparison to a gallery of ``N`` faces: the union bound ``P(best of N > t) <= N q(t)``.
It holds under any dependence between a stranger's scores (several photos of one person, a stranger
in a dense region of the face space matching many people at once), so it is never optimistic; on
held-out LFW people its false-flag rate is 60-95% of the stated one (tools/make_calibration.py
``validation``). The independence formula ``1 - (1 - q)^N`` is not used: it claims nothing more
at alpha <= 0.05 and is not valid when a stranger's scores are dependent.

What the data resolves: above ``resolution_score`` fewer than ``MIN_PAIRS`` distinct identity pairs
exceed the score, so smaller rates are not measured. A threshold beyond it is *not extrapolated*:
``threshold`` returns ``resolvable=False`` with the reason and an infinite value (nothing is flagged),
and ``p_value`` never goes below ``N q(resolution_score)``. It does not raise, because a decision
asks for thresholds at several levels (per-cluster Bonferroni, linking) and must report "cannot
resolve this level" rather than abort the audit.

The rate holds for in-the-wild photos like LFW's; populations whose faces are all alike (one
camera and lighting, young children) have higher impostor similarity: give REAL labels or a holdout.
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
#: Share of LFW identities the calibration is built from (the rest validate it).
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
    """Per-comparison impostor rates of one model on a grid of similarities (see the module doc)."""

    model_id: str
    scores: np.ndarray  # increasing grid of similarities
    rate: np.ndarray  # point estimate of q(t) = P(impostor similarity > t), identity-pair weighted
    upper: np.ndarray  # upper confidence bound of q(t)
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
            rate=np.asarray(grid["rate"], np.float64), upper=np.asarray(grid["upper"], np.float64),
            confidence=float(entry["confidence"]), resolution_score=float(entry["resolution_score"]),
            provenance=entry["provenance"], n_faces=int(entry["n_faces"]),
            n_identities=int(entry["n_identities"]), n_identity_pairs=int(entry["n_identity_pairs"]),
            info={k: entry[k] for k in ("datasets", "split", "method", "validation") if k in entry},
        )

    @property
    def smallest_rate(self) -> float:
        """The smallest per-comparison rate the data resolves (the upper bound at ``resolution_score``)."""
        return float(self._at(np.array([self.resolution_score]), self.upper)[0])

    def max_gallery_size(self, alpha: float) -> int:
        """The largest gallery for which a threshold at ``alpha`` is resolved."""
        return int(np.floor(_check_alpha(alpha) / self.smallest_rate))

    def per_comparison(self, scores: np.ndarray, upper: bool = True) -> np.ndarray:
        """q at each score (the upper bound by default), never below the resolved range."""
        s = np.minimum(np.asarray(scores, np.float64), self.resolution_score)
        return self._at(s, self.upper if upper else self.rate)

    def threshold(self, alpha: float, gallery_size: int) -> ShippedThreshold:
        """The smallest similarity ``t`` with ``gallery_size * upper_q(t) <= alpha`` (see the module doc)."""
        alpha = _check_alpha(alpha)
        n = _check_size(gallery_size)
        target = alpha / n
        ok = np.flatnonzero((self.upper <= target) & (self.scores <= self.resolution_score))
        details = {
            "bound": "union: P(best of N > t) <= N * q(t), valid under any dependence",
            "per_comparison_target": target,
            "confidence": self.confidence,
            "resolution_score": self.resolution_score,
            "smallest_resolved_rate": self.smallest_rate,
            "max_gallery_size": self.max_gallery_size(alpha),
            "n_identities": self.n_identities,
            "n_faces": self.n_faces,
            "n_identity_pairs": self.n_identity_pairs,
            "provenance": self.provenance,
            "population": "in-the-wild colour photos of adults (LFW)",
        }
        if len(ok) == 0:
            details["reason"] = (
                f"a stranger's best match among {n} faces at alpha {alpha:g} needs a per-comparison false-match "
                f"rate of {target:.2g}, below the {self.smallest_rate:.2g} the shipped calibration resolves "
                f"(at most {details['max_gallery_size']} faces at this alpha): give REAL identity labels or --holdout"
            )
            return ShippedThreshold(float("inf"), alpha, n, False, details)
        i = int(ok[0])
        details["per_comparison_rate"] = float(self.rate[i])
        details["per_comparison_upper"] = float(self.upper[i])
        details["expected_false_flag_rate"] = min(1.0, n * float(self.rate[i]))
        return ShippedThreshold(float(self.scores[i]), alpha, n, True, details)

    def p_value(self, scores: np.ndarray, gallery_size: int) -> np.ndarray:
        """Per face: an upper bound of P(a stranger's best match among ``gallery_size`` faces >= score).

        ``min(1, N * upper_q(score))``, with the score taken no higher than ``resolution_score``:
        no p-value is smaller than the calibration resolves. ``-inf`` (no match) gives 1.
        """
        n = _check_size(gallery_size)
        s = np.asarray(scores, np.float64)
        if np.isnan(s).any():
            raise IdleakError("shipped calibration: similarity scores contain NaN")
        return np.minimum(1.0, n * self.per_comparison(s))

    def built_from(self, identity: str) -> bool:
        """True if an LFW identity of this name was part of the data the calibration was built from."""
        return lfw_build_part(identity)

    def _at(self, s: np.ndarray, curve: np.ndarray) -> np.ndarray:
        # q is a decreasing step function: the value at the grid point at or below s bounds q(s) from above
        idx = np.searchsorted(self.scores, s, side="right") - 1
        return np.where(idx < 0, 1.0, curve[np.clip(idx, 0, len(curve) - 1)])


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
