"""Release gate: keep only the synthetic images that pass the audit's calibrated test.

An image is **rejected** when any of its faces is closer to a real face than the audit's
threshold (reason ``leak``), and also when it could not be checked at all: no face found,
unreadable, or excluded by the user (reason ``no_face``, ``corrupt``, ``child`` ...), or
its face could not be decided (reason ``undecidable``: a young child's face when REAL holds too few
children to calibrate a child's false-match rate). A gate must not release what it could not check.
Everything else is **accepted**.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from idleak.decide import CHILDREN_ASIDE, DecisionOptions, GalleryDecider
from idleak.embedding import FaceSet
from idleak.errors import IdleakError

#: Reason of an image whose face matches a real face above the threshold.
LEAK = "leak"
#: Reason of an image with a face no null could decide (its apparent-age stratum was set aside).
UNDECIDABLE = "undecidable"


@dataclass
class GateOptions(DecisionOptions):
    """How faces are decided: the audit's settings (``--method holdout`` is the audit's alone)."""


@dataclass
class GateDecision:
    """One row per synthetic image, in input order: accepted ones and rejected ones with the reason."""

    accepted: list[dict] = field(default_factory=list)  # path, similarity, real_path, real_identity, box
    rejected: list[dict] = field(default_factory=list)  # + reason, detail

    def extend(self, other: GateDecision) -> None:
        self.accepted.extend(other.accepted)
        self.rejected.extend(other.rejected)

    @property
    def n_images(self) -> int:
        return len(self.accepted) + len(self.rejected)

    def reasons(self) -> dict[str, int]:
        """Rejections by reason, most common first."""
        counts: dict[str, int] = {}
        for row in self.rejected:
            counts[row["reason"]] = counts.get(row["reason"], 0) + 1
        return dict(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))


@dataclass
class GateResult:
    """The threshold used and the decision on every synthetic image."""

    threshold: GalleryDecider
    decision: GateDecision
    real: FaceSet


def calibrate_gate(real: FaceSet, model_id: str, options: GateOptions) -> GalleryDecider:
    """The audit's decision for gallery ``real`` (LOIO when labelled, else shipped), built once."""
    if len(real) == 0:
        raise IdleakError("REAL has no usable faces")
    return GalleryDecider.build(real.vectors, real.identities, model_id, options)


def gate_faces(synthetic: FaceSet, real: FaceSet, threshold: GalleryDecider, block_size: int = 65_536) -> GateDecision:
    """Decide every synthetic image: rejected if any face is flagged by the audit's test at alpha.

    Images listed in ``synthetic.excluded`` (no face, unreadable, excluded by the user) are rejected
    with that reason, as they could not be checked.
    """
    decision = GateDecision()
    best: dict[str, dict] = {}
    order: list[str] = []
    if len(synthetic) and len(real):
        found, values, p_values, flagged, decided = threshold.decide(synthetic.vectors)
        for q in range(len(synthetic)):
            path = str(synthetic.paths[q])
            j, score = int(found.indices[q, 0]), float(found.scores[q, 0])
            row = {"path": path, "similarity": score, "real_path": str(real.paths[j]),
                   "real_identity": real.identities[j], "box": _box(synthetic.boxes[q]),
                   "real_box": _box(real.boxes[j]), "statistic": float(values[q]),
                   "p_value": float(p_values[q]) if decided[q] else None,
                   "flagged": bool(flagged[q]), "undecided": not decided[q]}
            if path not in best:
                order.append(path)
                best[path] = row
            elif (row["flagged"], row["undecided"], score) > (best[path]["flagged"], best[path]["undecided"],
                                                              best[path]["similarity"]):
                best[path] = row  # several faces in one image: a flagged face decides, then an undecided one
    for path in order:
        row = best.pop(path)
        flagged_row, undecided = row.pop("flagged"), row.pop("undecided")
        if flagged_row:
            decision.rejected.append({**row, "reason": LEAK, "detail": ""})
        elif undecided:
            decision.rejected.append({**row, "reason": UNDECIDABLE,
                                      "detail": CHILDREN_ASIDE})
        else:
            decision.accepted.append(row)
    for path, reason, detail in synthetic.excluded:
        decision.rejected.append({"path": str(path), "reason": reason, "detail": detail, "similarity": None,
                                  "real_path": None, "real_identity": None, "box": None, "real_box": None,
                                  "statistic": None, "p_value": None})
    return decision


def run_gate(synthetic: FaceSet, real: FaceSet, model_id: str, options: GateOptions | None = None) -> GateResult:
    """Calibrate on ``real`` and decide every synthetic image."""
    options = options or GateOptions()
    threshold = calibrate_gate(real, model_id, options)
    return GateResult(threshold, gate_faces(synthetic, real, threshold, options.block_size), real)


def _box(box: np.ndarray) -> list[float] | None:
    return [float(v) for v in box] if np.all(np.isfinite(box)) else None
