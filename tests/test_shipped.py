"""The shipped calibration (idleak.decide.shipped), checked only on people it was not built from."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from idleak.decide.shipped import lfw_build_part, load_shipped
from idleak.errors import IdleakError
from idleak.sources import Record, Source

MODEL = "dlib_face_recognition_resnet_model_v1/sp5/hog/v2"


@pytest.fixture(scope="module")
def cal():
    return load_shipped(MODEL)


@pytest.fixture(scope="module")
def held_out_lfw(faces_root: Path, workspace):
    """Photos (at most 3 each) of the first 170 LFW people, in name order, that the calibration was NOT built from."""
    lfw = faces_root / "lfw"
    assert lfw.is_dir(), f"LFW not found at {lfw}"
    people = [p for p in sorted(lfw.iterdir()) if p.is_dir() and not lfw_build_part(p.name)][:170]
    records = [Record(str(f), p.name) for p in people for f in sorted(p.glob("*.jpg"))[:3]]
    faces = workspace.prepare(Source(str(lfw), "manifest", records), "held-out LFW").faces
    assert len(faces) > 200
    return faces


def test_held_out_people_are_not_in_the_build(cal, held_out_lfw):
    names = set(held_out_lfw.identities.tolist())
    assert not any(cal.built_from(n) for n in names)
    assert cal.info["split"]["held_out_identities"] > 1000


def test_p_values_hold_on_held_out_lfw(cal, held_out_lfw):
    """Leave-one-identity-out on held-out people: the shipped p-values are valid and not uselessly conservative."""
    v, ids = held_out_lfw.vectors, held_out_lfw.identities.astype(str)
    sims = v @ v.T
    other = ids[:, None] != ids[None, :]
    best = np.where(other, sims, -np.inf).max(1)
    gallery = int(other.sum(1).min())
    p = cal.p_value(best, gallery)
    assert ((0 <= p) & (p <= 1)).all()
    n = len(p)
    for level in (0.05, 0.2, 0.5):
        share = float(np.mean(p <= level))
        # valid: at most the level plus three binomial standard errors
        assert share <= level + 3 * np.sqrt(level * (1 - level) / n), (level, share)
    # informative: at the median a valid-but-useless calibration (everything p = 1) would give 0
    assert np.mean(p <= 0.5) >= 0.25
    t = cal.threshold(0.05, gallery)
    assert t.resolvable and np.mean(best > t.value) <= 0.05 + 3 * np.sqrt(0.05 * 0.95 / n)


def test_threshold_and_p_value_agree(cal):
    for n in (1, 10, 100, 1000):
        for alpha in (0.01, 0.05):
            t = cal.threshold(alpha, n)
            assert t.resolvable and t.details["false_flag_rate_upper"] <= alpha
            assert cal.p_value(np.array([t.value + 1e-3]), n)[0] <= alpha < cal.p_value(np.array([t.value - 1e-3]), n)[0]
    values = [cal.threshold(0.01, n).value for n in (1, 10, 100, 1000)]
    assert values == sorted(values) and len(set(values)) == 4
    assert cal.threshold(0.05, 100).value < cal.threshold(0.01, 100).value
    p = cal.p_value(np.array([-np.inf, 0.5, 0.9, 0.93, 0.95, 0.99, 1.0]), 100)
    assert p[0] == 1 and p[1] == 1 and (np.diff(p) <= 0).all()


def test_beyond_the_data_it_refuses_rather_than_extrapolates(cal):
    most = cal.max_gallery_size(0.01)
    assert 1000 <= most < 10**5
    assert cal.threshold(0.01, most).resolvable
    t = cal.threshold(0.01, 10**6)
    assert not t.resolvable and t.value == np.inf
    assert "--holdout" in t.details["reason"] and "\n" not in t.details["reason"]
    # no p-value is smaller than what the data resolves, however high the score
    floor = cal.p_value(np.array([cal.resolution_score]), 10**6)[0]
    assert cal.p_value(np.array([1.0]), 10**6)[0] == floor == cal.resolution(10**6) > 0.01
    assert cal.resolution(most) <= 0.01 < cal.resolution(most + 1)
    assert cal.smallest_rate == cal.resolution(1) < 1e-4


def test_bad_input_is_a_one_line_error(cal):
    with pytest.raises(IdleakError, match="--holdout") as err:
        load_shipped("no-such-model")
    assert "\n" not in str(err.value)
    with pytest.raises(IdleakError, match="alpha"):
        cal.threshold(0.0, 10)
    with pytest.raises(IdleakError, match="gallery size"):
        cal.threshold(0.01, 0)
    with pytest.raises(IdleakError, match="NaN"):
        cal.p_value(np.array([0.9, np.nan]), 10)
