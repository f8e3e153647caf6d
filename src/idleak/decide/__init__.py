"""One decision module for the audit, the gate and the lookup: nulls, statistics, tests, verdicts.

A decision answers "is this face (this synthetic identity, this dataset) a real person of the
gallery?" at a stated error rate. Its parts:

* **Null** — what a stranger's score looks like against this gallery:
  ``leave_one_identity_out`` (every labelled gallery face searched against the gallery without its
  own identity), ``holdout`` (the synthetic faces themselves searched against real people who were
  *not* in the training set, size-matched), ``shipped`` (the model's false-match rate measured on
  public labelled faces, for unlabelled galleries) or ``manual`` (a threshold given by hand: no test).
* **Statistic** — the nearest-neighbour similarity, raw or scaled by local density (CSLS, :mod:`.scores`).
* **Tests** — conformal per-face p-values, a count test that accounts for the finite null, and a
  cluster-level test (synthetic identities, or clusters of near-identical faces) that stays valid
  when faces of one identity are correlated (:mod:`.stats`).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from idleak.decide import stats
from idleak.decide.scores import gallery_density, neighbours_needed, statistic
from idleak.errors import IdleakError
from idleak.search import ProgressFn, TopK, topk

METHODS = ("auto", "loio", "holdout", "shipped", "manual")
SCORES = ("auto", "csls", "raw")
#: Below this share of labelled gallery faces (or with fewer than 2 identities) LOIO is not used.
MIN_LABELLED_FRACTION = 0.5
#: Similarity level at which two synthetic faces are treated as one person when SYN has no labels.
CLUSTER_LEVEL = 0.001


@dataclass
class DecisionOptions:
    """How faces are decided; shared by audit, gate and lookup. Defaults are the CLI's."""

    alpha: float = 0.01
    method: str = "auto"  # auto | loio | holdout | shipped | manual
    score: str = "auto"  # auto (= raw) | raw | csls (experimental: see bench/RESULTS.md)
    cohort: int = 20
    threshold: float | None = None  # manual similarity threshold: flags only, no test
    fmr: float | None = None  # shipped: per-comparison false-match rate given by hand
    null_queries: int | None = 50_000
    block_size: int = 65_536
    seed: int = 0
    search: str = "exact"  # exact | ivf | auto (idleak.search.topk engines)
    device: str | None = None  # cpu | cuda | auto: exact search as torch matrix products on a GPU
    search_margin: float = 0.05  # ivf: queries whose raw score is within this of a flag are searched exactly
    engine: str = "local"  # local | ray
    ray_address: str | None = None

    def validate(self) -> None:
        if not 0 < self.alpha < 1:
            raise IdleakError(f"--alpha must be between 0 and 1 (exclusive), got {self.alpha}")
        if self.method not in METHODS:
            raise IdleakError(f"--method must be one of {', '.join(METHODS)}, got {self.method!r}")
        if self.score not in SCORES:
            raise IdleakError(f"--score must be one of {', '.join(SCORES)}, got {self.score!r}")
        if self.threshold is not None and not -1 <= self.threshold <= 1:
            raise IdleakError(f"--threshold is a cosine similarity in [-1, 1], got {self.threshold}")
        if self.fmr is not None and not 0 < self.fmr < 1:
            raise IdleakError(f"--fmr must be between 0 and 1 (exclusive), got {self.fmr}")
        if self.cohort < 3:
            raise IdleakError(f"--cohort must be at least 3, got {self.cohort}")


@dataclass
class Null:
    """A stranger's statistic against this gallery, and how to turn statistics into p-values."""

    kind: str  # leave_one_identity_out | holdout | shipped | manual
    score: str  # raw | csls
    gallery_size: int
    values: np.ndarray = field(default_factory=lambda: np.zeros(0))  # empirical null statistics
    raw: np.ndarray = field(default_factory=lambda: np.zeros(0))  # the same nulls' raw similarities
    nearest: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))  # their nearest gallery rows
    size_ratio: float = 1.0  # holdout: gallery size / holdout size (> 1: p-values corrected upwards)
    density: np.ndarray | None = None  # csls: the REAL gallery's local density per face
    groups: np.ndarray | None = None  # identity of each null value: the null's sample size is its people
    shipped: object | None = None
    details: dict = field(default_factory=dict)

    @property
    def empirical(self) -> bool:
        return self.kind in ("leave_one_identity_out", "holdout")

    @property
    def m(self) -> int | None:
        """Size of the finite null, in independent units (identities when grouped); None when not finite."""
        return stats.null_size(self.values, self.groups) if self.empirical else None

    def level_on_null(self, level: float) -> float:
        """The level on the null's own scale that gives ``level`` on the gallery (holdout size correction)."""
        return -np.expm1(np.log1p(-level) / self.size_ratio) if self.size_ratio != 1 else level

    def p_values(self, values: np.ndarray) -> np.ndarray:
        if self.kind == "manual":
            return np.full(len(values), np.nan)
        if self.kind == "shipped":
            return np.asarray(self.shipped.p_value(np.asarray(values), self.gallery_size), np.float64)
        p = stats.conformal_p_values(values, self.values, self.groups)
        return -np.expm1(self.size_ratio * np.log1p(-np.minimum(p, 1 - 1e-16))) if self.size_ratio != 1 else p

    def threshold(self, level: float) -> float:
        """The statistic above which a face is flagged at ``level`` (+inf: not resolvable)."""
        if self.kind == "manual":
            return float(self.details["threshold"])
        if self.kind == "shipped":
            return float(self.shipped.threshold(level, self.gallery_size).value)
        return stats.threshold_at(self.values, self.level_on_null(level), self.groups)

    def resolution(self) -> float:
        """The smallest level this null resolves (0 for a threshold given by hand)."""
        if self.kind == "shipped":  # union bound over the gallery at the calibration's smallest resolved rate
            return self.shipped.resolution(self.gallery_size)
        if not self.empirical:
            return 0.0
        return 1 - (1 - stats.smallest_level(self.m)) ** self.size_ratio


def group_ids(labels: np.ndarray) -> np.ndarray:
    """Integer ids for labels; -1 for None (unlabelled)."""
    ids = np.full(len(labels), -1, dtype=np.int64)
    lookup: dict[str, int] = {}
    for i, label in enumerate(labels):
        if label is not None:
            ids[i] = lookup.setdefault(str(label), len(lookup))
    return ids


def choose_method(gallery_identities: np.ndarray, options: DecisionOptions, holdout: bool) -> str:
    if options.method != "auto":
        return options.method
    if options.threshold is not None:
        return "manual"
    if holdout:
        return "holdout"
    groups = group_ids(gallery_identities)
    labelled = groups >= 0
    if len(groups) and labelled.mean() >= MIN_LABELLED_FRACTION and len(np.unique(groups[labelled])) >= 2:
        return "loio"
    return "shipped"


def choose_score(method: str, options: DecisionOptions, gallery_size: int) -> str:
    if method in ("shipped", "manual"):
        if options.score == "csls":
            raise IdleakError(f"--score csls needs an empirical null (loio or holdout), not {method}")
        return "raw"
    if options.score in ("raw", "auto"):
        # raw by default: csls held alpha in simulations of a dense population but not on real faces (LFW,
        # leave-one-identity-out: 4.5% false verdicts at alpha 0.01; bench/RESULTS.md)
        return "raw"
    if gallery_size < options.cohort + 5:
        raise IdleakError(f"--score csls needs a gallery of at least {options.cohort + 5} faces")
    return "csls"


def search_gallery(queries: np.ndarray, gallery: np.ndarray, k: int, options: DecisionOptions,
                   query_groups: np.ndarray | None = None, gallery_groups: np.ndarray | None = None,
                   progress: ProgressFn | None = None) -> TopK:
    return topk(queries, gallery, max(1, min(k, len(gallery))), query_groups=query_groups,
                gallery_groups=gallery_groups, block_size=options.block_size, progress=progress)


def build_null(gallery: np.ndarray, gallery_identities: np.ndarray, model_id: str, options: DecisionOptions,
               method: str, score: str, queries: np.ndarray | None = None, holdout: np.ndarray | None = None,
               holdout_identities: np.ndarray | None = None, progress: ProgressFn | None = None) -> Null:
    """The null for ``gallery`` under ``method`` (``queries``: the synthetic faces, for a holdout null)."""
    n = len(gallery)
    groups = group_ids(gallery_identities)
    if method == "manual":
        if options.threshold is None:
            raise IdleakError("--method manual needs --threshold")
        return Null("manual", "raw", n, details={"threshold": float(options.threshold)})
    if method == "shipped":
        from idleak.decide.shipped import load_shipped

        calibration = load_shipped(model_id)
        null = Null("shipped", "raw", n, shipped=calibration)
        null.details = {"provenance": getattr(calibration, "provenance", None)}
        return null
    k = neighbours_needed(score, options.cohort)
    density = gallery_density(gallery, groups, options.cohort, options.block_size) if score == "csls" else None
    if method == "loio":
        labelled = np.flatnonzero(groups >= 0)
        if len(np.unique(groups[labelled])) < 2:
            raise IdleakError("leave-one-identity-out needs REAL with at least 2 labelled identities "
                              "(sub-folders or a manifest's identity column), or use --holdout")
        # unlabelled gallery faces never enter the labelled null: they could be the query's own person
        sample = labelled
        if options.null_queries is not None and len(sample) > options.null_queries:
            rng = np.random.default_rng(options.seed)
            sample = np.sort(rng.choice(labelled, options.null_queries, replace=False))
        lab_gallery = gallery[labelled]
        lab_groups = groups[labelled]
        top = search_gallery(gallery[sample], lab_gallery, k, options, query_groups=groups[sample],
                             gallery_groups=lab_groups, progress=progress)
        ok = np.isfinite(top.scores[:, 0])
        top = TopK(top.scores[ok], np.where(top.indices[ok] >= 0, labelled[np.maximum(top.indices[ok], 0)], -1))
        values = statistic(top, score, options.cohort, groups, density)
        nearest = top.indices[:, 0]
        details = {"null_queries": int(len(values)), "null_sampled_from": int(len(labelled)),
                   "null_identities": int(len(np.unique(lab_groups))), "gallery_labelled": int(len(labelled)),
                   "gallery_unlabelled": int(n - len(labelled))}
        return Null("leave_one_identity_out", score, n, values, top.scores[:, 0].astype(np.float64), nearest,
                    density=density, groups=groups[sample][ok], details=details)
    if method == "holdout":
        if holdout is None or len(holdout) == 0:
            raise IdleakError("--method holdout needs --holdout with usable faces")
        if queries is None:
            raise IdleakError("a holdout null needs the query faces")
        hold = holdout
        hold_ids = holdout_identities
        rng = np.random.default_rng(options.seed)
        if len(hold) > n:  # size-match: a bigger holdout gallery would give higher maxima
            keep = np.sort(rng.choice(len(hold), n, replace=False))
            hold = hold[keep]
            hold_ids = None if hold_ids is None else hold_ids[keep]
        hold_groups = group_ids(hold_ids) if hold_ids is not None else None
        top = search_gallery(queries, hold, k, options, gallery_groups=None, progress=progress)
        hold_density = (gallery_density(hold, hold_groups, options.cohort, options.block_size)
                        if score == "csls" else None)
        values = statistic(top, score, options.cohort, hold_groups, hold_density)
        details = {"holdout_faces": int(len(holdout)), "holdout_gallery_used": int(len(hold)),
                   "gallery_size": int(n), "size_ratio": n / len(hold)}
        return Null("holdout", score, n, values, top.scores[:, 0].astype(np.float64), size_ratio=n / len(hold),
                    density=density, details=details)
    raise IdleakError(f"unknown method {method!r}: use {', '.join(METHODS)}")


def synthetic_clusters(vectors: np.ndarray, identities: np.ndarray, link: float,
                       options: DecisionOptions) -> tuple[np.ndarray, str]:
    """Cluster id per synthetic face: its identity label, or near-identical faces linked at ``link``.

    Labelled faces are grouped by label; unlabelled ones by connected components of the graph whose
    edges join faces more similar than ``link`` (what a stranger's best match rarely reaches).
    """
    groups = group_ids(identities)
    unl = np.flatnonzero(groups < 0)
    cluster = groups.copy()
    next_id = int(groups.max()) + 1 if (groups >= 0).any() else 0
    if len(unl):
        if len(unl) == 1 or not np.isfinite(link):
            cluster[unl] = next_id + np.arange(len(unl))
        else:
            top = topk(vectors[unl], vectors[unl], min(len(unl), 11), block_size=options.block_size)
            rows = np.repeat(np.arange(len(unl)), top.indices.shape[1])
            cols = top.indices.ravel()
            keep = (cols >= 0) & (top.scores.ravel() > link) & (cols != rows)
            graph = coo_matrix((np.ones(keep.sum()), (rows[keep], cols[keep])), shape=(len(unl), len(unl)))
            _, comp = connected_components(graph, directed=False)
            cluster[unl] = next_id + comp
    _, cluster = np.unique(cluster, return_inverse=True)
    how = "identity" if len(unl) == 0 else ("cluster" if len(unl) == len(groups) else "identity+cluster")
    return cluster.ravel().astype(np.int64), how


@dataclass
class Decision:
    """Everything decided about a set of query faces against one gallery."""

    method: str
    null: Null
    statistic: np.ndarray  # per query face
    p_values: np.ndarray  # per query face (nan for manual)
    flagged: np.ndarray  # per query face, bool
    threshold: float  # on the statistic
    alpha: float
    alpha_effective: float  # the level the flags hold (>= alpha when the null cannot resolve alpha)
    face_test: dict
    cluster_test: dict
    clusters: np.ndarray
    verdict: str  # leak | no_evidence_of_leak | too_few_to_decide | not_tested
    limits: str
    details: dict = field(default_factory=dict)


def decide_queries(queries: np.ndarray, query_identities: np.ndarray, top: TopK, null: Null,
                   gallery_identities: np.ndarray, options: DecisionOptions) -> Decision:
    """Flag query faces whose statistic passes the null at alpha, and test face and cluster counts."""
    alpha = options.alpha
    gallery_groups = group_ids(gallery_identities)
    values = statistic(top, null.score, options.cohort, gallery_groups, null.density)
    n = len(values)
    if null.kind == "manual":
        flagged = top.scores[:, 0] > null.details["threshold"]
        clusters, how = synthetic_clusters(queries, query_identities, float(null.details["threshold"]), options)
        return Decision("manual", null, values, np.full(n, np.nan), flagged, float(null.details["threshold"]),
                        alpha, float("nan"), {"n": n, "n_flagged": int(flagged.sum())},
                        {"level": how, "n": int(clusters.max() + 1) if n else 0,
                         "n_flagged": int(len(np.unique(clusters[flagged])))},
                        clusters, "not_tested",
                        "A threshold given by hand has no stated error rate: flags are listed, nothing is tested.")
    link = _link_similarity(null, options)
    clusters, how = synthetic_clusters(queries, query_identities, link, options)
    if null.kind == "holdout":  # the holdout null is the synthetic faces' own scores: grouped by their clusters
        null = replace(null, groups=clusters)
    face_level = None
    if options.fmr is not None:
        if null.kind != "shipped":
            raise IdleakError("--fmr sets the shipped calibration's per-comparison rate: use it with --method shipped")
        # a stranger's best match among N faces passes with probability at most N * fmr (union bound)
        face_level = min(1.0, null.gallery_size * options.fmr)
    return judge(values, null, clusters, how, alpha, options.seed, face_level)


def judge(values: np.ndarray, null: Null, clusters: np.ndarray, how: str, alpha: float, seed: int = 0,
          face_level: float | None = None) -> Decision:
    """The tests on per-face statistics: flags, face-level count test, cluster-level test, verdict."""
    n = len(values)
    resolution = null.resolution()
    alpha_eff = max(face_level if face_level is not None else alpha, resolution)
    p = null.p_values(values)
    threshold = null.threshold(alpha_eff)
    flagged = p <= alpha_eff * (1 + 1e-9)  # the level itself may come from the same float arithmetic
    k = int(flagged.sum())
    m = null.m
    if null.empirical:
        face_p = stats.count_p_value_finite_null(k, n, m, null.level_on_null(alpha_eff))
    else:
        face_p = stats.count_p_value_exact_rate(k, n, alpha_eff)
    low, high = stats.proportion_interval(k, n)
    face_test = {"n": n, "n_flagged": k, "expected_by_chance": alpha_eff * n, "p_value": face_p,
                 "flagged_fraction_ci95": [low, high],
                 "test": "beta-binomial (finite null)" if null.empirical else "binomial (exact rate)",
                 "assumes": "independent faces; see the cluster test for faces of one identity"}
    # cluster p-values on the null's own scale (the holdout size correction is monotone)
    own_p = (stats.conformal_p_values(values, null.values, null.groups)
             if null.empirical and null.size_ratio != 1 else p)
    level = null.level_on_null(alpha_eff)
    ct = stats.cluster_test(own_p, clusters, level, m, seed=seed)
    n_c = len(ct.flagged)
    kc = int(ct.flagged.sum())
    c_low, c_high = stats.proportion_interval(kc, n_c)
    # two tests, alpha split between them (Bonferroni): the count of flagged clusters (many moderate
    # matches) and the strongest cluster (a few near-certain ones)
    p_max = stats.strongest_cluster_p(p, clusters)
    p_verdict = min(1.0, 2 * min(ct.p_value, p_max))
    cluster_test = {"level": how, "n": n_c, "n_flagged": kc, "expected_by_chance": ct.expected,
                    "p_value": p_verdict, "p_value_count": ct.p_value, "p_value_strongest": p_max,
                    "flagged_fraction_ci95": [c_low, c_high], "unresolvable_clusters": ct.n_unresolvable,
                    "test": "flagged clusters counted against the null (Bonferroni within a cluster, clusters "
                            "independent given the null" + (", finite-null mixture" if null.empirical else "")
                            + ") and the strongest cluster (Bonferroni over clusters); alpha split between the two"}
    smallest = 1.0 / (m + 1) if m is not None else 0.0  # no face can have a smaller p-value
    best_count = stats.cluster_test(np.full(n, smallest), clusters, level, m, draws=500, seed=seed).p_value \
        if n else 1.0
    best_max = stats.strongest_cluster_p(np.full(n, max(smallest, null.resolution())), clusters) if n else 1.0
    best_possible = min(1.0, 2 * min(best_count, best_max))
    if resolution > alpha or best_possible >= alpha:
        verdict = "too_few_to_decide"
    else:
        verdict = "leak" if p_verdict < alpha else "no_evidence_of_leak"
    limits = _limits(null, how, alpha, alpha_eff, verdict)
    return Decision(null.kind, null, values, p, flagged, threshold, alpha, alpha_eff, face_test, cluster_test,
                    clusters, verdict, limits, {"resolution": resolution, "best_possible_p": best_possible})


def _link_similarity(null: Null, options: DecisionOptions) -> float:
    level = min(CLUSTER_LEVEL, options.alpha)
    if null.kind == "shipped":
        try:
            return float(null.shipped.threshold(level, 1).value)
        except IdleakError:
            return float("inf")
    raw = np.asarray(null.raw, np.float64)
    if len(raw) == 0:
        return float("inf")
    return float(np.quantile(raw, 1 - level, method="higher"))


def _limits(null: Null, how: str, alpha: float, alpha_eff: float, verdict: str) -> str:
    unit = {"identity": "synthetic identity", "cluster": "cluster of near-identical synthetic faces",
            "identity+cluster": "synthetic identity (or cluster of unlabelled near-identical faces)"}[how]
    source = {
        "leave_one_identity_out": "real faces searched against the other real identities, so it holds for "
                                  "synthetic faces of REAL's population; measured on real faces it also held for "
                                  "grey studio strangers against in-the-wild photos, but not for young children "
                                  "(use --exclude-children, or a holdout that holds children)",
        "holdout": "the same synthetic faces searched against real people who were not in training, so it holds "
                   "as far as the holdout is drawn from the same population as REAL",
        "shipped": "the model's false-match rate on in-the-wild public photos (LFW), so it holds for galleries of "
                   "that population and is not a guarantee for others",
    }[null.kind]
    text = (f"Each {unit} is wrongly flagged with probability at most {alpha_eff:.3g}, and a 'leak' verdict on "
            f"leak-free data has probability at most {alpha:.3g}; the null is {source}.")
    if alpha_eff > alpha:
        text += f" The null is too small to resolve {alpha:.3g}: flags hold only at {alpha_eff:.3g}."
    if null.score == "csls":
        text += (" The csls statistic is experimental: on real faces (LFW) its leave-one-identity-out verdicts "
                 "exceeded alpha (bench/RESULTS.md); the default raw similarity held it.")
    if verdict == "too_few_to_decide":
        text += " Too few faces or null values to reach the stated level: no verdict."
    return text


# -- one gallery, many queries: the gate and the lookup ---------------------------------------------
@dataclass
class GalleryDecider:
    """A decision calibrated once on a gallery and applied to any batch of query faces.

    The gate uses it at ``alpha`` per face (statistic as the audit's); the lookup at ``alpha / P``
    for P photos of one person, on raw similarity (so that every dataset face above it is listed).
    """

    null: Null
    gallery: np.ndarray
    gallery_identities: np.ndarray
    options: DecisionOptions
    level: float

    @classmethod
    def build(cls, gallery: np.ndarray, gallery_identities: np.ndarray, model_id: str, options: DecisionOptions,
              level: float | None = None, score: str | None = None, progress: ProgressFn | None = None
              ) -> GalleryDecider:
        options.validate()
        if len(gallery) == 0:
            raise IdleakError("the gallery (REAL or the dataset) has no usable faces")
        method = choose_method(gallery_identities, options, holdout=False)
        if method == "holdout":
            raise IdleakError("--method holdout compares a whole synthetic set with a holdout: use it with "
                              "`idleak audit`; the gate and the lookup use loio, shipped or manual")
        chosen = score or choose_score(method, options, len(gallery))
        null = build_null(gallery, gallery_identities, model_id, options, method, chosen, progress=progress)
        return cls(null, gallery, gallery_identities, options, options.alpha if level is None else level)

    @property
    def method(self) -> str:
        return self.null.kind

    @property
    def alpha(self) -> float:
        return self.options.alpha

    @property
    def resolvable(self) -> bool:
        return self.null.kind == "manual" or self.null.resolution() <= self.level

    @property
    def value(self) -> float:
        """The threshold on the statistic at this decider's level (+inf when the null cannot resolve it)."""
        return self.null.threshold(self.level)

    @property
    def details(self) -> dict:
        out = dict(self.null.details)
        out.update({"score": self.null.score, "level": self.level, "resolution": self.null.resolution(),
                    "null_size": self.null.m})
        if not self.resolvable:
            out["warning"] = (f"the null ({self.null.m} values) resolves levels down to "
                              f"{self.null.resolution():.3g}, not {self.level:.3g}: nothing can be flagged at that "
                              "rate; give a larger labelled gallery")
        return out

    def search(self, queries: np.ndarray) -> TopK:
        k = neighbours_needed(self.null.score, self.options.cohort)
        return search_gallery(queries, self.gallery, k, self.options)

    def decide(self, queries: np.ndarray) -> tuple[TopK, np.ndarray, np.ndarray, np.ndarray]:
        """(neighbours, statistic, p-value, flagged) for each query face."""
        top = self.search(queries)
        if len(queries) == 0:
            empty = np.zeros(0)
            return top, empty, empty, np.zeros(0, bool)
        values = statistic(top, self.null.score, self.options.cohort, group_ids(self.gallery_identities),
                           self.null.density)
        if self.null.kind == "manual":
            return top, values, np.full(len(values), np.nan), top.scores[:, 0] > self.value
        p = self.null.p_values(values)
        return top, values, p, p <= self.level


# -- thresholds for the other analyses (membership attack, inversion) ---------------------------------
@dataclass
class Threshold:
    """A similarity threshold and how it was obtained (used by mia and invert)."""

    value: float
    method: str
    alpha: float
    null: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float32))
    details: dict = field(default_factory=dict)


def leave_one_identity_out_null(vectors: np.ndarray, identities: np.ndarray, max_queries: int | None = None,
                                seed: int = 0, **search: object) -> np.ndarray:
    """Raw nearest similarity of labelled faces to the other labelled identities (a random sample of
    ``max_queries`` of them, each against the whole labelled gallery)."""
    groups = group_ids(identities)
    labelled = np.flatnonzero(groups >= 0)
    if len(labelled) == 0 or len(np.unique(groups[labelled])) < 2:
        return np.zeros(0, np.float32)
    sample = labelled
    if max_queries is not None and len(labelled) > max_queries:
        sample = np.sort(np.random.default_rng(seed).choice(labelled, max_queries, replace=False))
    result = topk(vectors[sample], vectors[labelled], 1, query_groups=groups[sample],
                  gallery_groups=groups[labelled], **search)
    scores = result.scores[:, 0]
    return scores[np.isfinite(scores)].astype(np.float32)


def loio_threshold(vectors: np.ndarray, identities: np.ndarray, alpha: float, max_queries: int | None = None,
                   **search: object) -> Threshold:
    """The conformal leave-one-identity-out threshold for a labelled gallery (+inf if unresolvable)."""
    null = leave_one_identity_out_null(vectors, identities, max_queries=max_queries, **search)
    if len(null) == 0:
        raise IdleakError("leave-one-identity-out needs at least 2 labelled identities")
    value = stats.threshold_at(null, alpha)
    details = {"null_size": int(len(null)), "resolution": stats.smallest_level(len(null))}
    if not np.isfinite(value):
        details["warning"] = (f"only {len(null)} null values: a level of {alpha:g} is not resolvable "
                              f"(smallest: {stats.smallest_level(len(null)):.3g}); nothing passes")
    return Threshold(value, "leave_one_identity_out", alpha, null, details)


METHOD_TEXT = {
    "leave_one_identity_out": "leave-one-identity-out null: labelled REAL faces searched against the other REAL "
                              "identities",
    "holdout": "holdout null: the synthetic faces searched against real people who were not in training "
               "(size-matched to REAL)",
    "shipped": "shipped null: the model's false-match rate on in-the-wild public photos, for this gallery size",
    "manual": "threshold given by hand: flags only, no test",
}


def decision_summary(decision: Decision) -> dict:
    """The decision as summary.json states it: which null, which test, which level, the rates it holds."""
    null = decision.null
    return {
        "verdict": decision.verdict,
        "method": decision.method,
        "method_text": METHOD_TEXT[decision.method],
        "score": null.score,
        "threshold": decision.threshold,
        "threshold_scale": "cosine similarity" if null.score == "raw" else "density-scaled similarity (csls)",
        "alpha": decision.alpha,
        "alpha_effective": decision.alpha_effective,
        "null": {"kind": null.kind, "size": null.m, "gallery_size": null.gallery_size,
                 "smallest_resolvable_level": null.resolution(), **null.details},
        "decision_level": decision.cluster_test.get("level"),
        "face_level": decision.face_test,
        "identity_level": decision.cluster_test,
        "p_value": decision.cluster_test.get("p_value"),
        "error_rates": {"per_face_false_flag": decision.alpha_effective,
                        "per_identity_false_flag": decision.alpha_effective,
                        "false_leak_verdict": decision.alpha if decision.verdict != "not_tested" else None},
        "limits": decision.limits,
    }
