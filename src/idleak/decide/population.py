"""Population weights: a leave-one-identity-out null reweighted towards the synthetic faces' population.

The leave-one-identity-out null is REAL's faces searched against REAL's other identities. A face's
nearest-neighbour similarity depends on *where* it sits in the face space: in a region where the
model is less discriminative (one ethnicity, one age band, one camera) every face has close
neighbours. When REAL mixes populations and SYN resembles one of them, the pooled null's tail is
set by the others and strangers are flagged more often than alpha (measured: 41.5% false verdicts at
alpha 0.05 for UTKFace strangers against LFW + UTKFace; 2.0% weighted, bench/RESULTS.md).

Given a face's place, a stranger's score and a REAL face's leave-one-identity-out score have about
the same law (both are its best match among REAL's people); only how often each place occurs
differs. That is a covariate shift, and the conformal p-value stays valid when each null value is
weighted by the likelihood ratio ``w(x) = p_SYN(x) / p_REAL(x)`` at its face (weighted conformal
prediction: Tibshirani, Barber, Candes, Ramdas, NeurIPS 2019).

``w`` comes from a probabilistic classifier telling SYN's faces from the null's: candidates are an
L2 logistic regression (several strengths) and a k-nearest-neighbour vote (several k), each
cross-fitted by identity (a face's probability comes from a fit that never saw its person); the best
of each family by cross-fitted log-loss are stacked by a logistic regression on their log-odds (which
also undoes the shrinkage of a regularised fit, as Platt scaling does). When no candidate beats the
constant (one population), nothing is reweighted. Each synthetic face gets the same ratio at its own
place, for its side of the weighted p-value. Identities are the units on both sides. The price is a
smaller null: its effective size is Kish's ``(sum W)^2 / sum W^2`` over identities, and when SYN
looks like nobody in REAL the null shrinks until the verdict is "too few to decide".
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from idleak.decide.stats import unit_weights

#: Cross-fitting folds (by identity).
FOLDS = 5
#: Inverse L2 strengths of the logistic regression candidates (standardised coordinates).
CS = (1e-4, 1e-3, 1e-2, 1e-1)
#: Neighbourhood sizes of the k-nearest-neighbour candidates.
KS = (30, 100)
#: Synthetic faces and null faces used to fit at most, each (a random sample beyond that).
MAX_FIT = 10_000
#: Class probabilities are clipped to [CLIP, 1 - CLIP]: weights within a ratio of ((1 - CLIP) / CLIP)^2.
CLIP = 0.01


@dataclass
class PopulationWeights:
    weights: np.ndarray  # per null face, mean 1 over the null
    query_weights: np.ndarray  # per query face, on the same scale
    auc: float  # cross-fitted AUC of SYN's faces against the null's (0.5: one population)
    estimator: str  # which candidate was kept ("none": no candidate beat the constant)


def population_weights(null_vectors: np.ndarray, queries: np.ndarray, null_groups: np.ndarray | None = None,
                       query_groups: np.ndarray | None = None, seed: int = 0,
                       max_fit: int = MAX_FIT) -> PopulationWeights:
    """Per null face ``p_SYN(x) / p_REAL(x)`` (normalised to mean 1 over the null); at most ``max_fit``
    faces per side are fitted, the others predicted."""
    from sklearn.metrics import roc_auc_score

    m, n_queries = len(null_vectors), len(queries)
    none = PopulationWeights(np.ones(m), np.ones(n_queries), 0.5, "none")
    if m == 0 or n_queries == 0:
        return none
    rng = np.random.default_rng(seed)
    all_queries = queries
    query_groups = np.arange(n_queries) if query_groups is None else np.asarray(query_groups)
    null_groups = np.arange(m) if null_groups is None else np.asarray(null_groups)
    fit_queries = np.arange(n_queries)
    if n_queries > max_fit:
        fit_queries = np.sort(rng.choice(n_queries, max_fit, replace=False))
        queries, query_groups = queries[fit_queries], query_groups[fit_queries]
    fit_null = np.arange(m) if m <= max_fit else np.sort(rng.choice(m, max_fit, replace=False))
    x = np.concatenate([null_vectors[fit_null], queries]).astype(np.float32)
    y = np.concatenate([np.zeros(len(fit_null)), np.ones(len(queries))])
    unit = np.concatenate([unit_weights(len(fit_null), null_groups[fit_null], None)[0],
                           unit_weights(len(query_groups), query_groups, None)[0]])
    n = len(y)
    for side in (0, 1):  # classes balanced: each weighs half of the points
        unit[y == side] *= (n / 2) / unit[y == side].sum()
    keys = np.concatenate([np.unique(null_groups[fit_null], return_inverse=True)[1].ravel(),
                           len(fit_null) + np.unique(query_groups, return_inverse=True)[1].ravel()])
    fold = rng.permutation(int(keys.max()) + 1)[keys] % FOLDS

    def loss(prob: np.ndarray) -> float:
        return -float(np.sum(unit * (y * np.log(prob) + (1 - y) * np.log1p(-prob)))) / n

    # the best candidate of each family, then the two stacked (a logistic regression on their log-odds)
    family_best: dict[str, tuple[float, str, np.ndarray]] = {}
    for name, prob in _candidates(x, y, unit, keys, fold):
        prob = np.clip(prob, CLIP, 1 - CLIP)
        family, value = name.split()[0], loss(prob)
        if value < family_best.get(family, (np.inf,))[0]:
            family_best[family] = (value, name, prob)
    if min(v[0] for v in family_best.values()) >= np.log(2.0):  # no candidate beats the constant
        return none
    z = np.stack([_logit(v[2]) for v in family_best.values()], axis=1)
    stack = _platt(z, y, unit)
    best = np.clip(stack(z), CLIP, 1 - CLIP)
    if loss(best) >= np.log(2.0):
        return none
    auc = float(roc_auc_score(y, best, sample_weight=unit))
    chosen = {family: v[1] for family, v in family_best.items()}

    # the faces outside the fitting sample (large sets): predicted together, by one refit
    prob_null, prob_queries = np.empty(m), np.empty(n_queries)
    prob_null[fit_null], prob_queries[fit_queries] = best[:len(fit_null)], best[len(fit_null):]
    rest_null = np.setdiff1d(np.arange(m), fit_null)
    rest_queries = np.setdiff1d(np.arange(n_queries), fit_queries)
    if len(rest_null) + len(rest_queries):
        rest = _predict(chosen, x, y, unit, stack, np.concatenate([null_vectors[rest_null], all_queries[rest_queries]]))
        prob_null[rest_null], prob_queries[rest_queries] = rest[:len(rest_null)], rest[len(rest_null):]
    odds_null, odds_queries = prob_null / (1 - prob_null), prob_queries / (1 - prob_queries)
    scale = odds_null.mean()
    return PopulationWeights(odds_null / scale, odds_queries / scale, auc, " + ".join(chosen.values()))


def _candidates(x, y, unit, keys, fold):
    """(name, cross-fitted P(SYN | face)) of every candidate."""
    from sklearn.linear_model import LogisticRegression

    from idleak.search import topk

    xs = (x - x.mean(0)) / (x.std(0) + 1e-6)
    for c in CS:
        prob = np.full(len(y), 0.5)
        for f in range(FOLDS):
            held = fold == f
            if held.any() and len(np.unique(y[~held])) == 2:
                model = LogisticRegression(C=c, max_iter=1000).fit(xs[~held], y[~held], sample_weight=unit[~held])
                prob[held] = model.predict_proba(xs[held])[:, 1]
        yield f"logistic C={c:g}", prob
    kmax = min(max(KS), len(y) - 1)
    if kmax < 1:
        return
    top = topk(x, x, kmax, query_groups=keys, gallery_groups=keys)  # a face's own person left out
    idx = np.maximum(top.indices, 0)
    u = np.where(top.indices >= 0, unit[idx], 0.0)
    cu, cuy = np.cumsum(u, axis=1), np.cumsum(u * y[idx], axis=1)
    for k in KS:
        k = min(k, kmax)
        yield f"knn k={k}", (cuy[:, k - 1] + 0.5) / (cu[:, k - 1] + 1.0)


def _predict(chosen: dict[str, str], x: np.ndarray, y: np.ndarray, unit: np.ndarray, stack,
             vectors: np.ndarray) -> np.ndarray:
    """P(SYN | face) for faces that were not among the fitting faces: each kept candidate refitted on
    all of them (the k-nearest-neighbour vote among them), then stacked as fitted."""
    from sklearn.linear_model import LogisticRegression

    from idleak.search import topk

    mean, scale = x.mean(0), x.std(0) + 1e-6
    z = []
    for family, name in chosen.items():
        value = float(name.split("=")[1])
        if family == "logistic":
            model = LogisticRegression(C=value, max_iter=1000).fit((x - mean) / scale, y, sample_weight=unit)
            prob = model.predict_proba((vectors - mean) / scale)[:, 1]
        else:
            top = topk(vectors.astype(np.float32), x, int(value))
            u = unit[top.indices]
            prob = ((u * y[top.indices]).sum(1) + 0.5) / (u.sum(1) + 1.0)
        z.append(_logit(np.clip(prob, CLIP, 1 - CLIP)))
    return np.clip(stack(np.stack(z, axis=1)), CLIP, 1 - CLIP)


def _logit(p: np.ndarray) -> np.ndarray:
    return np.log(p / (1 - p))


def _platt(z: np.ndarray, y: np.ndarray, unit: np.ndarray):
    """Platt scaling of cross-fitted log-odds: a regularised classifier's are shrunk towards 0."""
    from sklearn.linear_model import LogisticRegression

    z = z.reshape(len(z), -1)
    model = LogisticRegression(C=1e6, max_iter=1000).fit(z, y, sample_weight=unit)
    return lambda zz: model.predict_proba(np.asarray(zz).reshape(len(zz), -1))[:, 1]
