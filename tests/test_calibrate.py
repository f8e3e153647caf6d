"""Thresholds, p-values, shipped calibration and hubs."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from idleak.calibrate import (
    binomial_p_value,
    find_hubs,
    fmr_threshold,
    impostor_score_at,
    impostor_survival,
    quantile_threshold,
    shipped_calibration,
)
from idleak.errors import IdleakError
from idleak.faces.dlib_backend import DlibEmbedder


def test_quantile_threshold_leaves_at_most_alpha_above() -> None:
    null = np.random.default_rng(0).normal(0.8, 0.05, 10_000)
    t = quantile_threshold(null, 0.01)
    assert 0.005 < np.mean(null > t) <= 0.01


def test_binomial_p_value_matches_scipy() -> None:
    assert binomial_p_value(0, 100, 0.01) == 1.0
    assert binomial_p_value(5, 100, 0.01) == pytest.approx(stats.binom.sf(4, 100, 0.01))
    assert binomial_p_value(1, 100, 0.01) == pytest.approx(1 - 0.99**100)


def test_shipped_calibration_for_dlib_has_provenance_and_is_consistent() -> None:
    calibration = shipped_calibration(DlibEmbedder.model_id)
    assert "shared/data/faces" in calibration["provenance"] and calibration["n_impostor_pairs"] > 10_000
    assert calibration["genuine_mean"] > calibration["impostor_mean"]
    for fmr in (0.1, 0.01, 1e-3, 1e-4):
        score, _ = impostor_score_at(calibration, fmr)
        assert impostor_survival(calibration, score) == pytest.approx(fmr, rel=0.15)
    with pytest.raises(IdleakError, match="no shipped calibration"):
        shipped_calibration("onnx:unknown")


def test_fmr_threshold_rises_with_gallery_size_and_flags_extrapolation() -> None:
    small = fmr_threshold(DlibEmbedder.model_id, 0.01, 10)
    large = fmr_threshold(DlibEmbedder.model_id, 0.01, 1_000_000)
    assert small.value < large.value
    assert small.details["fmr_per_comparison"] == pytest.approx(0.001, rel=0.01)
    assert not small.details["extrapolated_tail"] and large.details["extrapolated_tail"]
    assert small.method == "shipped_fmr"


def test_hubs_found_only_where_counts_are_extreme() -> None:
    rng = np.random.default_rng(1)
    nearest = rng.integers(0, 1000, 500)
    assert find_hubs(nearest, 1000) == []
    nearest[:40] = 7
    hubs = find_hubs(nearest, 1000)
    assert [h[0] for h in hubs] == [7] and hubs[0][1] >= 40


def test_loio_null_can_be_sampled_and_never_matches_own_identity() -> None:
    from idleak.calibrate import leave_one_identity_out_null, loio_threshold
    from idleak.faces import l2_normalize

    rng = np.random.default_rng(2)
    centres = l2_normalize(rng.standard_normal((50, 32)))
    labels = np.repeat(np.arange(50), 6)
    vectors = l2_normalize(centres[labels] + 0.2 * rng.standard_normal((300, 32)))
    identities = np.array([f"id{i}" for i in labels], dtype=object)
    full = leave_one_identity_out_null(vectors, identities)
    sims = vectors @ vectors.T
    sims[labels[:, None] == labels[None, :]] = -np.inf
    np.testing.assert_allclose(np.sort(full), np.sort(sims.max(axis=1)), atol=1e-5)
    sampled = loio_threshold(vectors, identities, 0.05, max_queries=120)
    assert sampled.details["null_size"] == 120 and sampled.details["null_sampled_from"] == 300
    assert set(np.round(sampled.null, 5)) <= set(np.round(full, 5))
    small = loio_threshold(vectors[:60], identities[:60], 0.01)
    assert "warning" in small.details  # 60 null values cannot resolve alpha = 0.01
