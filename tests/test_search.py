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
