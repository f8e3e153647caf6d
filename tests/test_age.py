"""Apparent age from the embedding (idleak.age), checked on photos the classifier was not trained on."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from idleak.age import child_probability, is_child, load_age_model, utk_train_part
from idleak.errors import IdleakError
from idleak.sources import Record, Source

MODEL = "dlib_face_recognition_resnet_model_v1/sp5/hog/v2"


def utk_held_out(faces_root: Path, low: int, high: int, count: int) -> list[Record]:
    utk = faces_root.parent / "ages" / "utkface"
    assert utk.is_dir(), f"UTKFace not found at {utk}"
    chosen = [p for p in sorted(utk.glob("*.jpg"))
              if low <= int(p.name.split("_", 1)[0]) <= high and not utk_train_part(str(p))]
    return [Record(str(p), None) for p in chosen[:count]]


@pytest.fixture(scope="module")
def faces(faces_root: Path, workspace):
    """Held-out UTKFace photos: 20 children aged 0-5, 20 adults aged 26-60; and 20 ORL adults."""
    def embed(records: list[Record], name: str):
        return workspace.prepare(Source(name, "manifest", records), name).faces.vectors

    orl = [Record(str(p), None) for s in range(1, 11) for p in sorted((faces_root / "orl" / f"s{s}").glob("*.pgm"))[:2]]
    return {"children": embed(utk_held_out(faces_root, 0, 5, 20), "utk children"),
            "adults": embed(utk_held_out(faces_root, 26, 60, 20), "utk adults"),
            "orl": embed(orl, "orl")}


def test_children_and_adults_told_apart(faces):
    assert len(faces["children"]) >= 18 and len(faces["adults"]) >= 18 and len(faces["orl"]) >= 18
    assert is_child(faces["children"], MODEL).mean() >= 0.85
    assert is_child(faces["adults"], MODEL).mean() <= 0.1
    assert is_child(faces["orl"], MODEL).sum() <= 1
    p = child_probability(faces["children"], MODEL)
    assert ((0 <= p) & (p <= 1)).all() and np.median(p) > np.median(child_probability(faces["adults"], MODEL))


def test_children_sit_closer_together_than_adults(faces):
    """The dense region --exclude-children is for: a young child's nearest other child is closer than an adult's."""
    def nearest(v: np.ndarray) -> np.ndarray:
        sims = v @ v.T
        np.fill_diagonal(sims, -np.inf)
        return sims.max(1)

    children, adults = nearest(faces["children"]), nearest(faces["adults"])
    assert np.median(children) > np.median(adults) + 0.01, (np.median(children), np.median(adults))


def test_minor_cut_flags_at_least_the_young_children(faces):
    assert is_child(faces["children"], MODEL, under=18).mean() >= 0.85
    assert is_child(faces["adults"], MODEL, under=18).mean() <= 0.15


def test_shipped_model_states_terms_and_accuracy():
    model = load_age_model(MODEL)
    assert "non-commercial" in model.info["terms"]
    bands = model.info and load_age_model(MODEL, 18)
    assert bands.threshold == model.threshold == 0.5


def test_bad_input_is_a_one_line_error(faces):
    with pytest.raises(IdleakError, match="no shipped age model") as err:
        is_child(faces["adults"], "some-other-model")
    assert "\n" not in str(err.value)
    with pytest.raises(IdleakError, match="dimension"):
        is_child(np.zeros((2, 64), np.float32), MODEL)
    with pytest.raises(IdleakError, match="under 15"):
        is_child(faces["adults"], MODEL, under=15)
    bad = faces["adults"].copy()
    bad[0, 0] = np.nan
    with pytest.raises(IdleakError, match="NaN"):
        child_probability(bad, MODEL)
