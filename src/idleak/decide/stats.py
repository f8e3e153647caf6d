"""Tests that stay valid with a finite null and with clustered faces.

Everything here is a pure function on arrays of scores; nothing knows about faces or files.

* **Conformal p-values.** With ``m`` null scores exchangeable with a stranger's score,
  ``p = (1 + #{null >= s}) / (m + 1)`` satisfies ``P(p <= a) <= a`` for every ``a`` exactly, for any
  finite ``m``. A level ``a`` is *resolvable* only when ``(m + 1) a >= 1``.
* **Count of flags.** Flagging ``s > t`` with ``t`` the ``j``-th largest null value (``j =
  floor((m + 1) a)``) gives each stranger the same random flag probability ``F ~ Beta(j, m - j + 1)``;
  ``n`` independent strangers then give ``K ~ BetaBinomial(n, j, m - j + 1)``, not ``Binomial(n, a)``:
  the threshold's own sampling error is part of the test.
* **Clusters.** Faces of one identity are not independent. A cluster of ``n_c`` faces is flagged
  when its smallest p-value is below ``a / n_c`` (Bonferroni: valid under any dependence inside the
  cluster); clusters of different people are independent given the null, and the count of flagged
  clusters is tested against the mixture over the null's order statistics (Monte Carlo on the
  exact joint law of the top order statistics of ``m`` uniforms).
* **Strata.** A null split into strata (Mondrian conformal: young children and adults) gives each
  face a p-value from its own stratum's null. The strata's nulls are disjoint, hence independent:
  the count tests convolve one finite-null law per stratum.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import stats
from scipy.signal import fftconvolve


# -- per-face ---------------------------------------------------------------------------------------
def conformal_p_values(scores: np.ndarray, null: np.ndarray, groups: np.ndarray | None = None,
                       weights: np.ndarray | None = None, test_weights: np.ndarray | None = None) -> np.ndarray:
    """``(1 + #{null >= s}) / (m + 1)`` for each score ``s``.

    With ``groups`` (the identity of each null value) each identity counts once: a value weighs
    1 / (its identity's number of values) and ``m`` is the number of identities. Faces of one person
    are not independent, so the null's real sample size is its number of people.

    With ``weights`` (covariate-shift likelihood ratios, one per null value) and ``test_weights`` (the
    same ratio at each scored face) this is the weighted conformal p-value (Tibshirani et al. 2019),
    ``(w_s + sum_{null >= s} w_i) / (w_s + sum_i w_i)``, on the scale where the null weighs its
    effective number of identities ``m`` (:func:`unit_weights`): a face from a region that REAL
    covers thinly (a large ``w_s``) needs a stronger match.
    """
    null = np.asarray(null, np.float64)
    scores = np.asarray(scores, np.float64)
    if groups is None and weights is None:
        ordered = np.sort(null)
        at_least = len(null) - np.searchsorted(ordered, scores, side="left")
        return (1.0 + at_least) / (len(null) + 1.0)
    value_weights, m = unit_weights(len(null), groups, weights)
    order = np.argsort(null)
    ordered, tail = null[order], np.cumsum(value_weights[order][::-1])[::-1]  # tail[i]: weight of values >= ordered[i]
    first = np.searchsorted(ordered, scores, side="left")
    at_least = np.where(first < len(ordered), tail[np.minimum(first, len(ordered) - 1)], 0.0)
    own = 1.0
    if weights is not None and test_weights is not None:
        raw, _ = unit_weights(len(null), groups, None)
        total = float(np.sum(raw * np.asarray(weights, np.float64)))
        own = np.asarray(test_weights, np.float64) * (m / total if total > 0 else 0.0)
    return np.minimum(1.0, (own + at_least) / (own + m))


def null_size(null: np.ndarray, groups: np.ndarray | None = None, weights: np.ndarray | None = None) -> int:
    """The null's sample size: values, or identities when grouped, or their effective number when weighted."""
    if weights is None:
        return len(null) if groups is None else int(len(np.unique(groups)))
    return unit_weights(len(null), groups, weights)[1]


def rank_of_level(m: int, level: float) -> int:
    """``j = floor((m + 1) level)``: flag above the j-th largest of m null values (0: not resolvable)."""
    return int(np.floor((m + 1) * level + 1e-9))


def threshold_at(null: np.ndarray, level: float, groups: np.ndarray | None = None,
                 weights: np.ndarray | None = None) -> float:
    """The score above which ``p <= level`` (``+inf`` if no score can reach it)."""
    null = np.asarray(null, np.float64)
    if groups is None and weights is None:
        j = rank_of_level(len(null), level)
        return float(np.sort(null)[len(null) - j]) if j >= 1 else float("inf")
    weights, m = unit_weights(len(null), groups, weights)
    budget = level * (m + 1) - 1.0 + 1e-9  # flag s when the weight of null values >= s is at most this
    if budget < 0:
        return float("inf")
    order = np.argsort(-null, kind="stable")
    above = np.concatenate([[0.0], np.cumsum(weights[order])])  # weight of the k largest values
    k = int(np.searchsorted(above, budget, side="right")) - 1  # largest k with weight(k largest) <= budget
    return float(null[order[k]]) if k < len(null) else float("-inf")


def smallest_level(m: int) -> float:
    """The smallest level a null of ``m`` values (or identities) resolves: 1 / (m + 1)."""
    return 1.0 / (m + 1)


def unit_weights(n: int, groups: np.ndarray | None, weights: np.ndarray | None) -> tuple[np.ndarray, int]:
    """Per null value the weight it counts with, and the null's size ``m`` (the weights sum to ``m``).

    Each identity (each value, without ``groups``) is one unit, spread evenly over its values. With
    ``weights`` (one per value) a unit weighs its values' mean weight and ``m`` is the effective
    number of units, ``floor((sum W)^2 / sum W^2)`` (Kish): unequal weights make a smaller null.
    """
    if groups is None:
        inverse, counts = np.arange(n), np.ones(n, np.int64)
    else:
        _, inverse, counts = np.unique(np.asarray(groups), return_inverse=True, return_counts=True)
        inverse = inverse.ravel()
    share = 1.0 / counts[inverse]
    if weights is None:
        return share, len(counts)
    value = share * np.asarray(weights, np.float64)
    unit = np.bincount(inverse, weights=value, minlength=len(counts))
    total = unit.sum()
    if total <= 0:
        return np.zeros(n), 0
    m = int(np.floor(total ** 2 / np.sum(unit ** 2) + 1e-9))
    return value * (m / total), m


# -- counts ---------------------------------------------------------------------------------------
def count_p_value_finite_null(n_flagged: int, n: int, m: int, level: float) -> float:
    """P(K >= n_flagged) for K ~ BetaBinomial(n, j, m - j + 1): flags at ``level`` with a null of ``m``."""
    if n == 0 or n_flagged <= 0:
        return 1.0
    j = rank_of_level(m, level)
    if j < 1:
        return 1.0
    return float(stats.betabinom.sf(n_flagged - 1, n, j, m - j + 1))


def count_p_value_strata(n_flagged: int, ns: list[int], ms: list[int | None], level: float) -> float:
    """P(sum_s K_s >= n_flagged), K_s the flags of ``ns[s]`` faces against stratum s's null of ``ms[s]``.

    Each stratum's K_s is beta-binomial (finite null) or binomial (``ms[s]`` None: an exact rate); the
    strata's nulls are disjoint, so the K_s are independent. The largest stratum enters through its
    survival function, the others through their convolved pmf (no cost quadratic in the largest).
    """
    if n_flagged <= 0:
        return 1.0

    def law(n: int, m: int | None):
        if m is None:
            return stats.binom(n, min(1.0, level))
        j = rank_of_level(m, level)
        return stats.betabinom(n, j, m - j + 1) if j >= 1 else None  # None: never flagged

    parts = sorted([(n, m) for n, m in zip(ns, ms) if n > 0], key=lambda nm: -nm[0])
    if not parts:
        return 1.0
    rest = np.ones(1)
    for n, m in parts[1:]:
        dist = law(n, m)
        pmf = dist.pmf(np.arange(n + 1)) if dist is not None else np.eye(1, n + 1).ravel()
        rest = np.clip(fftconvolve(rest, pmf), 0.0, 1.0) if len(rest) > 1 and n > 1 else np.convolve(rest, pmf)
    largest = law(*parts[0])
    t = np.arange(len(rest))
    need = n_flagged - t  # the largest stratum must give at least this many
    tail = np.where(need <= 0, 1.0, largest.sf(need - 1) if largest is not None else 0.0)
    return float(np.clip(np.sum(rest * tail), 0.0, 1.0))


def count_p_value_exact_rate(n_flagged: int, n: int, rate: float) -> float:
    """P(K >= n_flagged) for K ~ Binomial(n, rate): a per-face false-flag rate known without error."""
    if n == 0 or n_flagged <= 0:
        return 1.0
    return float(stats.binom.sf(n_flagged - 1, n, min(1.0, rate)))


@dataclass
class ClusterTest:
    """Cluster-level decision: which clusters are flagged and how surprising their number is."""

    flagged: np.ndarray  # (n_clusters,) bool
    p_value: float
    expected: float  # expected number of flagged clusters under the null (upper bound)
    n_unresolvable: int  # clusters so large that a / n_c is below the null's resolution
    needed: int | None = None  # fewest flagged clusters whose count p-value is below ``needed_below`` (None: none)


def cluster_test(p_values: np.ndarray, clusters: np.ndarray, level: float, m: int | None,
                 draws: int = 2000, seed: int = 0, strata: np.ndarray | None = None,
                 stratum_sizes: dict[int, int | None] | None = None,
                 needed_below: float | None = None) -> ClusterTest:
    """Flag clusters whose smallest p-value is <= level / size, and test their count.

    ``clusters`` gives each face's cluster id (0..C-1). ``m`` is the size of a finite empirical null
    (conformal p-values); ``None`` means the p-values are exact (a shipped calibration): each cluster
    is then flagged with probability at most ``level`` independently. With ``strata`` (each face's
    stratum) and ``stratum_sizes`` (each stratum's null size, None for an exact rate) a face's p-value
    comes from its stratum's null: a cluster of n_s faces per stratum is flagged with probability at most
    sum_s n_s F_s, the F_s drawn independently per stratum (disjoint nulls).

    With ``needed_below`` the result also says how many flagged clusters the count test needs for a
    p-value below it: the detection limit of this null and these clusters. With a finite null it is
    computed with a Poisson of the same mean per draw (cheap at any size; slightly wider than the
    test's own law, so it may say one or two flags more than the test needs).
    """
    clusters = np.asarray(clusters, np.int64)
    n_clusters = int(clusters.max()) + 1 if len(clusters) else 0
    if n_clusters == 0:
        return ClusterTest(np.zeros(0, bool), 1.0, 0.0, 0)
    sizes = np.bincount(clusters, minlength=n_clusters)
    min_p = np.full(n_clusters, np.inf)
    np.minimum.at(min_p, clusters, np.asarray(p_values, np.float64))
    flagged = min_p <= level / sizes
    k = int(flagged.sum())
    if strata is None:
        strata = np.zeros(len(clusters), np.int64)
        stratum_sizes = {0: m}
    strata = np.asarray(strata, np.int64)
    names = sorted(stratum_sizes)
    # faces per (cluster, stratum); clusters with the same composition share a flag probability
    composition = np.zeros((n_clusters, len(names)), np.int64)
    for col, s in enumerate(names):
        composition[:, col] = np.bincount(clusters[strata == s], minlength=n_clusters)
    keys, group_of = np.unique(composition, axis=0, return_inverse=True)
    counts = np.bincount(group_of.ravel(), minlength=len(keys))
    g_size = keys.sum(1)
    finite = [s for s in names if stratum_sizes[s] is not None]
    j = {s: np.array([rank_of_level(stratum_sizes[s], level / max(n, 1)) for n in g_size]) for s in finite}
    resolvable = np.zeros(len(keys), bool)
    for col, s in enumerate(names):
        resolvable |= (keys[:, col] > 0) & ((j[s] >= 1) if s in j else True)
    unresolvable = int(counts[~resolvable].sum())
    expected = 0.0
    for g in range(len(keys)):
        bound = sum(keys[g, col] * (level / g_size[g] if stratum_sizes[s] is None
                                    else j[s][g] / (stratum_sizes[s] + 1)) for col, s in enumerate(names))
        expected += counts[g] * min(1.0, bound)
    if k == 0 and needed_below is None:
        return ClusterTest(flagged, 1.0, expected, unresolvable)
    probs = np.zeros((draws, len(keys)))
    for col, s in enumerate(names):
        if not keys[:, col].any():
            continue
        if stratum_sizes[s] is None:
            probs += keys[None, :, col] * (level / g_size)[None, :]
            continue
        js = j[s]
        f = _top_uniform_tails(stratum_sizes[s], int(max(js.max(), 1)), draws, seed + 7919 * col)  # F_j per draw
        probs += keys[None, :, col] * np.where(js >= 1, f[:, np.minimum(js, f.shape[1] - 1)], 0.0)
    probs = np.minimum(1.0, probs)

    def count_p(count: int) -> float:
        if count <= 0:
            return 1.0
        if not finite:
            return count_p_value_exact_rate(count, n_clusters, level)
        return min(1.0, float(np.mean(_sum_of_binomials_sf(count, counts, probs))))

    needed = None
    if needed_below is not None:
        if finite:  # per draw a Poisson of the same mean (a little wider than the sum of binomials): cheap
            mean = (counts[None, :] * probs).sum(1)

            def tail(count: int) -> float:
                return float(stats.poisson.sf(count - 1, mean).mean())
        else:
            def tail(count: int) -> float:
                return float(stats.binom.sf(count - 1, n_clusters, min(1.0, level)))
        if tail(n_clusters) < needed_below:
            low, high = 0, n_clusters  # tail(low) >= needed_below > tail(high): the tail falls with the count
            while high - low > 1:
                mid = (low + high) // 2
                low, high = (low, mid) if tail(mid) < needed_below else (mid, high)
            needed = high
    return ClusterTest(flagged, count_p(k), expected, 0 if not finite else unresolvable, needed)


def strongest_cluster_p(p_values: np.ndarray, clusters: np.ndarray) -> float:
    """P-value of "at least one cluster is not a stranger": min over clusters of C x size x min p (Bonferroni)."""
    clusters = np.asarray(clusters, np.int64)
    if len(clusters) == 0:
        return 1.0
    n_clusters = int(clusters.max()) + 1
    sizes = np.bincount(clusters, minlength=n_clusters)
    min_p = np.full(n_clusters, np.inf)
    np.minimum.at(min_p, clusters, np.asarray(p_values, np.float64))
    return float(min(1.0, np.min(n_clusters * sizes * min_p)))


def _top_uniform_tails(m: int, jmax: int, draws: int, seed: int) -> np.ndarray:
    """Draws of F_j = P(U > j-th largest of m uniforms), j = 0..jmax, jointly (exponential spacings)."""
    rng = np.random.default_rng(seed)
    jmax = max(1, min(jmax, m))
    spacings = rng.standard_exponential((draws, jmax))
    rest = rng.gamma(m + 1 - jmax, size=(draws, 1))
    head = np.cumsum(spacings, axis=1)
    total = head[:, -1:] + rest
    return np.concatenate([np.zeros((draws, 1)), head / total], axis=1)


def _sum_of_binomials_sf(k: int, counts: np.ndarray, probs: np.ndarray) -> np.ndarray:
    """P(sum_g Binomial(counts[g], probs[d, g]) >= k) for each draw d (exact up to k <= 512)."""
    draws = probs.shape[0]
    if k > 512:
        mean = (counts[None, :] * probs).sum(1)
        var = (counts[None, :] * probs * (1 - probs)).sum(1)
        return stats.norm.sf((k - 0.5 - mean) / np.sqrt(np.maximum(var, 1e-12)))
    pmf = np.zeros((draws, k))
    pmf[:, 0] = 1.0
    support = np.arange(k)
    size = 1 << int(np.ceil(np.log2(2 * k)))
    for g, n_g in enumerate(counts):
        comp = stats.binom.pmf(support[None, :], int(n_g), probs[:, g:g + 1])  # (draws, k)
        # truncated convolution (only P(sum < k) is needed), by FFT
        pmf = np.fft.irfft(np.fft.rfft(pmf, size, axis=1) * np.fft.rfft(comp, size, axis=1), size, axis=1)[:, :k]
        pmf = np.clip(pmf, 0.0, 1.0)
    return np.clip(1.0 - pmf.sum(1), 0.0, 1.0)


# -- paired comparison (holdout) --------------------------------------------------------------------
def sign_flip_test(differences: np.ndarray, clusters: np.ndarray, flips: int = 10_000, seed: int = 0) -> float:
    """One-sided p that cluster means of ``differences`` are > 0, by random sign flips of whole clusters.

    Valid when, under the null, each cluster's differences are symmetric about 0 (e.g. a synthetic
    face's similarity to a training gallery vs to an equally large holdout gallery of the same population).
    """
    clusters = np.asarray(clusters, np.int64)
    n_clusters = int(clusters.max()) + 1 if len(clusters) else 0
    if n_clusters == 0:
        return 1.0
    sums = np.bincount(clusters, weights=np.asarray(differences, np.float64), minlength=n_clusters)
    sizes = np.bincount(clusters, minlength=n_clusters)
    means = sums / np.maximum(sizes, 1)
    observed = means.mean()
    rng = np.random.default_rng(seed)
    exceed = 0
    for start in range(0, flips, 1000):
        signs = rng.choice((-1.0, 1.0), size=(min(1000, flips - start), n_clusters))
        exceed += int(((signs * means).mean(1) >= observed - 1e-12).sum())
    return (1 + exceed) / (1 + flips)


def proportion_interval(k: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Clopper-Pearson interval for a proportion k / n."""
    if n == 0:
        return (0.0, 1.0)
    a = 1 - confidence
    low = 0.0 if k == 0 else float(stats.beta.ppf(a / 2, k, n - k + 1))
    high = 1.0 if k == n else float(stats.beta.ppf(1 - a / 2, k + 1, n - k))
    return (low, high)
