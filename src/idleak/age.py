"""Apparent age from the face embedding: is this face a child's? (``--exclude-children``)

Face models place young children close together, so a generated child matches a real child it has
never seen (on UTKFace, 78% of children aged 0-12 have another child above the shipped 1:N threshold
at alpha 0.01, against 8% of adults). Faces predicted to be children can be left out of a leak
decision, counted by reason.

The classifier is a logistic regression on the unit embedding, trained offline by
``tools/make_age_model.py`` on UTKFace (faces of known age; **non-commercial research use only**)
and shipped as coefficients in ``data/age_model.json`` with its provenance, terms and held-out
accuracy per age band. Two operating points ship: ``under=13`` (young children, the default: what
the Idiap audit excluded by hand and where the face space is densest) and ``under=18`` (minors,
for privacy reviews). A face is a child when its probability is at least the documented threshold
(0.5 with class-balanced training: children's recall and adults' specificity are weighed equally).
Only numpy runs here.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources
from pathlib import Path

import numpy as np

from idleak.errors import IdleakError

#: The default age cut: a face is a child when its apparent age is below this.
DEFAULT_UNDER = 13


def utk_train_part(path: str) -> bool:
    """True if this UTKFace photo trained the shipped classifier (BLAKE2b-32 of the file name % 10 < 7)."""
    return int.from_bytes(hashlib.blake2b(Path(path).name.encode(), digest_size=4).digest(), "big") % 10 < 7


@dataclass
class AgeClassifier:
    """P(apparent age < ``under``) = sigmoid(vector . coef + intercept); a child when >= ``threshold``."""

    model_id: str
    under: int
    coef: np.ndarray
    intercept: float
    threshold: float
    info: dict = field(default_factory=dict)

    def probability(self, vectors: np.ndarray) -> np.ndarray:
        v = np.asarray(vectors, np.float64)
        if v.ndim != 2 or v.shape[1] != len(self.coef):
            raise IdleakError(f"age model for {self.model_id} needs vectors of dimension {len(self.coef)}, "
                              f"got shape {tuple(v.shape)}")
        if not np.isfinite(v).all():
            raise IdleakError("age model: embedding vectors contain NaN or infinite values")
        return 1.0 / (1.0 + np.exp(-(v @ self.coef + self.intercept)))


@lru_cache(maxsize=16)
def load_age_model(model_id: str, under: int = DEFAULT_UNDER) -> AgeClassifier:
    """The shipped classifier for ``model_id`` at the age cut ``under``; one-line ``IdleakError`` if none."""
    table = json.loads(resources.files("idleak").joinpath("data/age_model.json").read_text())
    for entry in table["models"]:
        if entry["model_id"] != model_id:
            continue
        cuts = entry["classifiers"]
        if str(under) not in cuts:
            raise IdleakError(f"no shipped age model for 'under {under}' (available: {', '.join(sorted(cuts))})")
        c = cuts[str(under)]
        return AgeClassifier(model_id, int(under), np.asarray(c["coef"], np.float64), float(c["intercept"]),
                             float(c["threshold"]), {k: v for k, v in entry.items() if k != "classifiers"})
    raise IdleakError(f"no shipped age model for model {model_id}: --exclude-children needs the dlib model "
                      "(or an age model built with tools/make_age_model.py)")


def child_probability(vectors: np.ndarray, model_id: str, under: int = DEFAULT_UNDER) -> np.ndarray:
    """Per face, the probability that its apparent age is below ``under`` (13 or 18)."""
    return load_age_model(model_id, under).probability(vectors)


def is_child(vectors: np.ndarray, model_id: str, under: int = DEFAULT_UNDER) -> np.ndarray:
    """Per face, True when the face looks younger than ``under`` at the shipped operating point."""
    model = load_age_model(model_id, under)
    return model.probability(vectors) >= model.threshold
