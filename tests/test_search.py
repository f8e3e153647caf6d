"""Blocked exact search against brute force on the same vectors."""

from __future__ import annotations

import numpy as np

from idleak.faces import l2_normalize
from idleak.search import global_top_pairs, topk


def unit(n: int, d: int, seed: int) -> np.ndarray:
    return l2_normalize(np.random.default_rng(seed).standard_normal((n, d)))


def brute(queries: np.ndarray, gallery: np.ndarray, k: int, mask: np.ndarray | None = None):
    sims = queries @ gallery.T
    if mask is not None:
        sims = np.where(mask, -np.inf, sims)
    order = np.argsort(-sims, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(sims, order, axis=1), order


def test_blocked_topk_equals_brute_force() -> None:
    q, g = unit(300, 32, 1), unit(1000, 32, 2)
    result = topk(q, g, 7, block_size=97, query_chunk=64)
    scores, order = brute(q, g, 7)
    np.testing.assert_allclose(result.scores, scores, atol=1e-5)
    assert (result.indices == order).mean() > 0.999  # ties aside, the same rows


def test_leave_one_group_out_is_exact_even_for_big_groups() -> None:
    g = unit(600, 16, 3)
    groups = np.repeat(np.arange(30), 20)  # 30 identities x 20 faces
    groups[:200] = 0  # one identity larger than k and than a block
    result = topk(g, g, 3, query_groups=groups, gallery_groups=groups, block_size=128)
    mask = groups[:, None] == groups[None, :]
    scores, _ = brute(g, g, 3, mask)
    np.testing.assert_allclose(result.scores, scores, atol=1e-5)
    assert not np.any(groups[result.indices] == groups[:, None])


def test_ungrouped_rows_are_never_excluded() -> None:
    g = unit(50, 8, 4)
    groups = np.full(50, -1)
    result = topk(g, g, 1, query_groups=groups, gallery_groups=groups)
    assert np.array_equal(result.indices[:, 0], np.arange(50))  # itself, since nothing is excluded


def test_k_larger_than_gallery_pads_with_minus_one() -> None:
    result = topk(unit(4, 8, 5), unit(3, 8, 6), 5)
    assert (result.indices[:, 3:] == -1).all() and np.isinf(result.scores[:, 3:]).all()


def test_global_top_pairs_exact_when_one_query_dominates() -> None:
    g = unit(400, 16, 7)
    q = unit(50, 16, 8)
    g[:30] = l2_normalize(q[0] + 0.1 * np.random.default_rng(9).standard_normal((30, 16)))  # 30 rows near q[0]
    pairs = global_top_pairs(q, g, 20, k=3, block_size=64)
    sims = q @ g.T
    flat = np.sort(sims.ravel())[::-1][:20]
    np.testing.assert_allclose([s for _, _, s in pairs], flat, atol=1e-5)
    assert sum(1 for qi, _, _ in pairs if qi == 0) > 3  # more than k pairs from the dominating query


def planted(n_gallery: int, n_query: int, d: int, n_dup: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Random unit vectors; the first ``n_dup`` queries are noisy copies of gallery rows 0..n_dup-1."""
    g, q = unit(n_gallery, d, seed), unit(n_query, d, seed + 1)
    q[:n_dup] = l2_normalize(g[:n_dup] + 0.04 * unit(n_dup, d, seed + 2))
    return q, g


def test_ivf_scores_are_exact_and_every_face_near_the_threshold_is_searched_exhaustively() -> None:
    q, g = planted(20_000, 2_000, 32, 50, 7)
    exact = topk(q, g, 5)
    threshold = 0.9
    result = topk(q, g, 5, engine="ivf", bound=threshold - 0.05, nlist=64, nprobe=4, recall=None)
    assert result.engine == "ivf" and not result.guaranteed  # random data: most queries uncertified
    certified = result.exact
    assert result.n_rescored >= 50 and certified[:50].all()
    np.testing.assert_allclose(result.scores[certified], exact.scores[certified], atol=1e-5)
    assert (result.indices[certified] == exact.indices[certified]).mean() > 0.999
    # every score returned is an exact inner product of the pair it names
    rows = np.repeat(np.arange(len(q)), 5)
    np.testing.assert_allclose(result.scores.ravel(), (q[rows] * g[result.indices.ravel()]).sum(1), atol=1e-5)
    # the decision at the threshold is the exact one
    assert np.array_equal(result.scores[:, 0] > threshold, exact.scores[:, 0] > threshold)


def test_ivf_certificate_holds_on_clustered_data_with_groups() -> None:
    rng = np.random.default_rng(5)
    centres = unit(40, 16, 11)
    g = l2_normalize(np.repeat(centres, 100, axis=0) + 0.05 * rng.standard_normal((4000, 16)))
    groups = np.repeat(np.arange(40), 100)
    result = topk(g, g, 3, query_groups=groups, gallery_groups=groups, engine="ivf", nlist=40, nprobe=2,
                  recall=None)
    exact = topk(g, g, 3, query_groups=groups, gallery_groups=groups)
    assert result.exact.any()  # tight clusters: the bound proves some queries exact without re-search
    np.testing.assert_allclose(result.scores[result.exact], exact.scores[result.exact], atol=1e-5)
    found = result.indices >= 0
    assert not np.any((groups[result.indices] == groups[:, None]) & found)
    assert found[result.exact].all()  # a query short of k candidates is never called exact


def test_ivf_raises_nprobe_until_the_recall_target_is_met_on_the_check_sample() -> None:
    from idleak.search import TopK
    from idleak.search_ivf import recall_at_1

    rng = np.random.default_rng(3)
    centres = unit(1000, 64, 4)  # 1,000 people, 20 gallery and 3 query faces each
    g = l2_normalize(np.repeat(centres, 20, axis=0) + 0.1 * rng.standard_normal((20_000, 64)))
    q = l2_normalize(np.repeat(centres, 3, axis=0) + 0.1 * rng.standard_normal((3_000, 64)))
    exact = topk(q, g, 5)
    assert recall_at_1(topk(q, g, 5, engine="ivf", nprobe=1, recall=None), exact) < 0.98  # nprobe 1 falls short
    result = topk(q, g, 5, engine="ivf", nprobe=1, recall=0.99)
    d = result.details
    assert result.engine == "ivf" and "fallback" not in d and d["check_sample"] == 1000
    assert d["nprobe"] > 1 and d["sample_recall_at_1"] >= 0.99
    rest = np.flatnonzero(~result.exact)  # neither in the exactly searched sample nor certified by the bound
    assert len(rest) >= 1000
    assert recall_at_1(TopK(result.scores[rest], result.indices[rest]), TopK(exact.scores[rest], exact.indices[rest])) \
        >= 0.98  # the sample's recall holds for the faces it did not see


def test_ivf_gives_way_to_exact_search_when_the_recall_target_costs_as_much() -> None:
    q, g = planted(20_000, 1_000, 32, 20, 9)  # random vectors: the nearest is one of many equally far points
    exact = topk(q, g, 5)
    result = topk(q, g, 5, engine="ivf", recall=0.99)
    assert result.engine == "exact" and result.guaranteed and "recall@1" in result.details["fallback"]
    assert result.details["sample_recall_at_1"] < 0.99
    assert np.array_equal(result.indices, exact.indices)
    asked = topk(q, g, 5, engine="ivf", nlist=64, nprobe=64, recall=0.99)  # an nprobe that scans everything
    assert asked.engine == "exact" and "costs as much as exact search" in asked.details["fallback"]


def test_torch_engine_on_cpu_equals_exact_search() -> None:
    q, g = planted(3000, 500, 32, 20, 3)
    groups = np.arange(3000) % 50
    exact = topk(q, g, 4, query_groups=np.arange(500) % 50, gallery_groups=groups)
    result = topk(q, g, 4, query_groups=np.arange(500) % 50, gallery_groups=groups, engine="torch",
                  block_size=1000, query_chunk=128)
    np.testing.assert_allclose(result.scores, exact.scores, atol=1e-5)
    assert (result.indices == exact.indices).mean() > 0.999 and result.guaranteed


def test_engine_and_device_are_validated() -> None:
    import pytest

    from idleak.errors import IdleakError
    from idleak.search import choose_engine

    q, g = planted(100, 10, 8, 1, 1)
    with pytest.raises(IdleakError, match="--search must be one of"):
        topk(q, g, 1, engine="hnsw")
    with pytest.raises(IdleakError, match="--device must be"):
        topk(q, g, 1, device="tpu")
    assert choose_engine("auto", 1000, 1000) == "exact" and choose_engine("auto", 10**6, 10**6) == "ivf"
