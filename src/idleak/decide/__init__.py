"""One decision module for the audit, the gate and the lookup: nulls, statistics, tests, verdicts.

A decision answers "is this face (this synthetic identity, this dataset) a real person of the
gallery?" at a stated error rate. Its parts:

* **Null** — what a stranger's score looks like against this gallery:
  ``leave_one_identity_out`` (every labelled gallery face searched against the gallery without its
  own identity), ``holdout`` (the synthetic faces themselves searched against real people who were
  *not* in the training set, size-matched), ``shipped`` (the model's false-match rate measured on
  public labelled faces, for unlabelled galleries) or ``manual`` (a threshold given by hand: no test).
  In the audit a leave-one-identity-out null is weighted towards the synthetic faces' population
  (``reweight="population"``, :mod:`.population`): weighted conformal p-values, for a REAL that mixes
  populations.
* **Statistic** — the nearest-neighbour similarity, raw or scaled by local density (CSLS, :mod:`.scores`).
* **Tests** — conformal per-face p-values, a count test that accounts for the finite null, and a
  cluster-level test (synthetic identities, or clusters of near-identical faces) that stays valid
  when faces of one identity are correlated (:mod:`.stats`).
* **Strata** — young children match strangers far more often than adults (face models place them
  close together), so a null made of adults does not hold for them. With ``strata="age"`` (the
  default where the face model has a shipped age model, :mod:`idleak.age`) each face is compared with
  the null of its own apparent-age stratum (Mondrian conformal p-values). Children are decided only
  against a holdout's children; otherwise (and when the holdout holds too few to resolve the level)
  they are *set aside*: listed, counted and never decided. The audit widens the child stratum when
  many synthetic faces fall in it (``CHILD_SHARE_WIDENS``), so that fewer missed children are decided.
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
STRATA = ("age", "none")
REWEIGHT = ("population", "none")
#: Stratum ids of the age strata.
STRATUM_NAMES = {0: "adult", 1: "child"}
#: A face joins the child stratum when P(apparent age < 13) is at least this. Lower than the age
#: model's own 0.5 on purpose: a child taken for an adult is tested against adults' null (unsafe), an
#: adult taken for a child against children's (conservative) or set aside. Held-out UTKFace children:
#: 95.8% caught (93.8% at 0.5, 98.4% at 0.1); adults sent to the child stratum: LFW 1.2%, ORL 1.3%
#: (3.6% and 7.1% at 0.1) (bench/RESULTS.md).
CHILD_STRATUM_PROBABILITY = 0.3
#: When more than this share of the synthetic faces falls in the child stratum, the audit widens the
#: stratum to P(under 13) >= ``WIDE_CHILD_STRATUM_PROBABILITY``: the children the age model misses are
#: then a share of many, decided against adults and flagged far more often than alpha (measured: LFW +
#: UTKFace children in REAL, UTKFace children as SYN, 9.0% false verdicts at alpha 0.05; 1.0% widened).
#: Below the share they are too few to move a verdict, and the narrower stratum sets fewer adults aside.
CHILD_SHARE_WIDENS = 0.05
WIDE_CHILD_STRATUM_PROBABILITY = 0.1
#: Why a face of the child stratum was not decided (summary.json, set_aside.csv, the gate's detail).
CHILDREN_ASIDE = ("a face that may be a young child's is decided only against a holdout's children (a null of "
                  "adults, or of REAL's own children, did not hold alpha for child strangers: bench/RESULTS.md); give "
                  "a --holdout with children of REAL's population to decide them")
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
    strata: str = "age"  # age: children against a null of children (where an age model exists) | none
    reweight: str = "population"  # population: the loio null weighted towards the synthetic faces' population | none

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
        if self.strata not in STRATA:
            raise IdleakError(f"--strata must be one of {', '.join(STRATA)}, got {self.strata!r}")
        if self.reweight not in REWEIGHT:
            raise IdleakError(f"--reweight must be one of {', '.join(REWEIGHT)}, got {self.reweight!r}")
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
    strata: np.ndarray | None = None  # stratum of each null value (empirical nulls)
    covered: tuple[int, ...] | None = None  # strata this null can calibrate; None: not stratified
    stratifier: str | None = None  # model id whose age model assigns strata
    weights: np.ndarray | None = None  # per null value: its population weight (None: all equal)
    query_weights: np.ndarray | None = None  # per query face the null was built for: the same ratio
    child_cut: float = CHILD_STRATUM_PROBABILITY  # P(under 13) from which a face is in the child stratum

    def stratum_of(self, vectors: np.ndarray) -> np.ndarray | None:
        """Each face's stratum (0 adult, 1 possibly a young child), or None when the null is not stratified."""
        if self.covered is None:
            return None
        from idleak.age import child_probability

        if len(vectors) == 0:
            return np.zeros(0, np.int64)
        return (child_probability(vectors, self.stratifier) >= self.child_cut).astype(np.int64)

    @property
    def main(self) -> Null:
        """The null adults are decided against: the adult stratum's, or the whole null when not stratified.
        Its size, resolution and threshold are the ones to report (the child stratum has its own)."""
        return self if self.covered is None else (self.part(0) or self)

    def part(self, stratum: int) -> Null | None:
        """The null restricted to one stratum (None: this null holds nothing of it)."""
        if self.covered is None:
            return self
        if stratum not in self.covered:
            return None
        plain = {"strata": None, "covered": None}
        if not self.empirical:
            return replace(self, **plain)
        keep = self.strata == stratum
        return replace(self, values=self.values[keep], raw=self.raw[keep],
                       nearest=self.nearest[keep] if len(self.nearest) == len(keep) else self.nearest,
                       groups=None if self.groups is None else self.groups[keep],
                       weights=None if self.weights is None else self.weights[keep], **plain)

    @property
    def empirical(self) -> bool:
        return self.kind in ("leave_one_identity_out", "holdout")

    @property
    def m(self) -> int | None:
        """Size of the finite null, in independent units (identities when grouped); None when not finite."""
        return stats.null_size(self.values, self.groups, self.weights) if self.empirical else None

    def level_on_null(self, level: float) -> float:
        """The level on the null's own scale that gives ``level`` on the gallery (holdout size correction)."""
        return -np.expm1(np.log1p(-level) / self.size_ratio) if self.size_ratio != 1 else level

    def p_values(self, values: np.ndarray, test_weights: np.ndarray | None = None) -> np.ndarray:
        """P-values of statistics (``test_weights``: the faces' population weights, with a weighted null)."""
        if self.kind == "manual":
            return np.full(len(values), np.nan)
        if self.kind == "shipped":
            return np.asarray(self.shipped.p_value(np.asarray(values), self.gallery_size), np.float64)
        p = stats.conformal_p_values(values, self.values, self.groups, self.weights, test_weights)
        return -np.expm1(self.size_ratio * np.log1p(-np.minimum(p, 1 - 1e-16))) if self.size_ratio != 1 else p

    def threshold(self, level: float) -> float:
        """The statistic above which a face is flagged at ``level`` (+inf: not resolvable)."""
        if self.kind == "manual":
            return float(self.details["threshold"])
        if self.kind == "shipped":
            return float(self.shipped.threshold(level, self.gallery_size).value)
        return stats.threshold_at(self.values, self.level_on_null(level), self.groups, self.weights)

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
               holdout_identities: np.ndarray | None = None, progress: ProgressFn | None = None,
               query_identities: np.ndarray | None = None) -> Null:
    """The null for ``gallery`` under ``method``.

    ``queries`` (the synthetic faces, and their ``query_identities`` if known) make a holdout null, and
    the population weights of a leave-one-identity-out null (``options.reweight``).
    """
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
        return _stratified(null, None, model_id, options, queries)
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
        null = Null("leave_one_identity_out", score, n, values, top.scores[:, 0].astype(np.float64), nearest,
                    density=density, groups=groups[sample][ok], details=details)
        null = _stratified(null, gallery[sample[ok]], model_id, options, queries)
        if options.reweight == "population" and queries is not None and len(queries):
            _weigh_population(null, gallery[sample[ok]], queries, query_identities, options.seed)
        return null
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
        null = Null("holdout", score, n, values, top.scores[:, 0].astype(np.float64), size_ratio=n / len(hold),
                    density=density, details=details)
        return _stratified(null, queries, model_id, options, queries)
    raise IdleakError(f"unknown method {method!r}: use {', '.join(METHODS)}")


def _stratified(null: Null, null_vectors: np.ndarray | None, model_id: str, options: DecisionOptions,
                queries: np.ndarray | None = None) -> Null:
    """``null`` split into apparent-age strata (``options.strata == "age"`` and an age model for the model).

    With ``queries`` (the audit's synthetic faces) the child stratum widens when they hold many children
    (``CHILD_SHARE_WIDENS``). The gate and the lookup keep the narrower stratum: a batch or one person's
    photos say nothing about the rest.

    An empirical null's values are assigned the stratum of the face they were measured on. Only a holdout
    null covers children: the shipped calibration is made of adults, and a leave-one-identity-out null of
    REAL's own children did not hold alpha for child strangers on real faces (UTKFace: 11.5% false verdicts
    at alpha 0.05; infants sit closer together still than older children), so children are set aside there.
    """
    if options.strata != "age":
        return null
    from idleak.age import load_age_model

    try:
        load_age_model(model_id)
    except IdleakError:  # no age model for this face model: one stratum, said in the summary
        null.details["strata"] = f"none (no shipped age model for {model_id})"
        return null
    null.stratifier = model_id
    if queries is not None and len(queries):
        from idleak.age import child_probability

        share = float(np.mean(child_probability(queries, model_id) >= CHILD_STRATUM_PROBABILITY))
        if share > CHILD_SHARE_WIDENS:
            null.child_cut = WIDE_CHILD_STRATUM_PROBABILITY
            null.details["child_stratum_widened"] = {
                "synthetic_share_in_child_stratum": share,
                "reason": f"{share:.0%} of the synthetic faces may be young children's (more than "
                          f"{CHILD_SHARE_WIDENS:.0%}), so the child stratum starts at P(under 13) >= "
                          f"{WIDE_CHILD_STRATUM_PROBABILITY} instead of {CHILD_STRATUM_PROBABILITY}: fewer of "
                          "the children the age model misses are decided as adults"}
    if null_vectors is None:
        null.covered = (0,)
        return null
    null.covered = tuple(STRATUM_NAMES) if null.kind == "holdout" else (0,)
    null.strata = null.stratum_of(null_vectors)
    return null


def _weigh_population(null: Null, null_vectors: np.ndarray, queries: np.ndarray,
                      query_identities: np.ndarray | None, seed: int) -> None:
    """Weight ``null`` towards the queries' population (:mod:`.population`).

    One classifier for all strata, although faces are tested within their stratum: fitted per stratum it
    did worse (children the age model takes for adults, mixed into REAL: 17% false verdicts at alpha
    0.05 against 9% with one fit; bench/RESULTS.md), because a stratum may hold few synthetic faces
    while the shift (here: towards children) is learnt from all of them.
    """
    from idleak.decide.population import population_weights

    query_groups = None
    if query_identities is not None:  # an unlabelled synthetic face is its own unit
        query_groups = group_ids(query_identities)
        query_groups = np.where(query_groups >= 0, query_groups, -1 - np.arange(len(query_groups)))
    pw = population_weights(null_vectors, queries, null.groups, query_groups, seed)
    null.weights, null.query_weights = pw.weights, pw.query_weights
    main = null.main
    null.details["population_weights"] = {
        "auc": pw.auc, "estimator": pw.estimator,
        "effective_null_size": main.m,  # of the stratum adults are decided in (the one reported)
        "null_size_unweighted": stats.null_size(main.values, main.groups)}


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
    strata: np.ndarray | None = None  # per query face: its stratum (None: not stratified)
    decided: np.ndarray | None = None  # per query face: False when its stratum was set aside

    @property
    def set_aside(self) -> np.ndarray:
        """Per query face: True when no null of its stratum could decide it."""
        return np.zeros(len(self.flagged), bool) if self.decided is None else ~self.decided


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
    test_weights = null.query_weights
    if test_weights is not None and len(test_weights) != n:
        raise ValueError("the null was weighted for other query faces than the ones decided")
    return judge(values, null, clusters, how, alpha, options.seed, face_level, null.stratum_of(queries), test_weights)


def judge(values: np.ndarray, null: Null, clusters: np.ndarray, how: str, alpha: float, seed: int = 0,
          face_level: float | None = None, strata: np.ndarray | None = None,
          test_weights: np.ndarray | None = None) -> Decision:
    """The tests on per-face statistics: flags, face-level count test, cluster-level test, verdict.

    With ``strata`` (each face's stratum, for a stratified null) a face is tested against its own
    stratum's null; strata the null cannot resolve at the decision's level are set aside. With
    ``test_weights`` (each face's population weight, for a weighted null) the p-values are weighted
    conformal ones.
    """
    n = len(values)
    values = np.asarray(values, np.float64)
    if strata is None or null.covered is None:
        strata = np.zeros(n, np.int64)
        parts = {0: null}
    else:
        strata = np.asarray(strata, np.int64)
        parts = {int(s): null.part(int(s)) for s in sorted(set(np.unique(strata).tolist()) | set(null.covered))}
    usable = {s: part for s, part in parts.items() if part is not None and (part.m is None or part.m > 0)}
    # the main stratum (the one that resolves the smallest level) sets the level the flags hold at
    main = min(usable, key=lambda s: usable[s].resolution(), default=None)
    resolution = usable[main].resolution() if main is not None else 1.0
    alpha_eff = max(face_level if face_level is not None else alpha, resolution)
    kept = {s: part for s, part in usable.items() if part.resolution() <= alpha_eff}
    decided = np.isin(strata, list(kept))
    p = np.ones(n)
    own_p = np.ones(n)  # on the null's own scale (the holdout size correction is monotone)
    for s, part in usable.items():
        rows = strata == s
        if rows.any():
            tw = None if test_weights is None else np.asarray(test_weights)[rows]
            p[rows] = part.p_values(values[rows], tw)
            own_p[rows] = (stats.conformal_p_values(values[rows], part.values, part.groups, part.weights, tw)
                           if part.empirical and part.size_ratio != 1 else p[rows])
    threshold = usable[main].threshold(alpha_eff) if main is not None else float("inf")
    flagged = decided & (p <= alpha_eff * (1 + 1e-9))  # the level itself may come from the same float arithmetic
    k = int(flagged.sum())
    level = null.level_on_null(alpha_eff)
    sizes = {s: part.m for s, part in kept.items()}
    n_by = [int((decided & (strata == s)).sum()) for s in kept]
    face_p = stats.count_p_value_strata(k, n_by, list(sizes.values()), level) if kept else 1.0
    n_decided = int(decided.sum())
    low, high = stats.proportion_interval(k, n_decided)
    face_test = {"n": n_decided, "n_flagged": k, "expected_by_chance": alpha_eff * n_decided, "p_value": face_p,
                 "flagged_fraction_ci95": [low, high],
                 "test": ("beta-binomial (finite null)" if null.empirical else "binomial (exact rate)")
                 + (", one per apparent-age stratum, convolved" if len(kept) > 1 else ""),
                 "assumes": "independent faces; see the cluster test for faces of one identity"}
    # the cluster tests run on the decided faces; a cluster of set-aside faces only is not counted
    _, sub_clusters = np.unique(clusters[decided], return_inverse=True)
    sub_clusters = sub_clusters.ravel().astype(np.int64)
    sub_strata = strata[decided]
    m_main = sizes.get(main) if main in sizes else None
    # the count test has half of alpha (Bonferroni with the strongest-cluster test): how many flags reach it?
    ct = stats.cluster_test(own_p[decided], sub_clusters, level, m_main, seed=seed, strata=sub_strata,
                            stratum_sizes=sizes or {0: m_main}, needed_below=alpha / 2)
    n_c = len(ct.flagged)
    kc = int(ct.flagged.sum())
    c_low, c_high = stats.proportion_interval(kc, n_c)
    # two tests, alpha split between them (Bonferroni): the count of flagged clusters (many moderate
    # matches) and the strongest cluster (a few near-certain ones)
    p_max = stats.strongest_cluster_p(p[decided], sub_clusters)
    p_verdict = min(1.0, 2 * min(ct.p_value, p_max))
    cluster_test = {"level": how, "n": n_c, "n_flagged": kc, "expected_by_chance": ct.expected,
                    "p_value": p_verdict, "p_value_count": ct.p_value, "p_value_strongest": p_max,
                    "flagged_fraction_ci95": [c_low, c_high], "unresolvable_clusters": ct.n_unresolvable,
                    "flagged_needed_for_leak": ct.needed,
                    "test": "flagged clusters counted against the null (Bonferroni within a cluster, clusters "
                            "independent given the null" + (", finite-null mixture" if null.empirical else "")
                            + ") and the strongest cluster (Bonferroni over clusters); alpha split between the two"}
    # the smallest p-value each face could reach: can the tests reach alpha at all?
    floor = {s: 1.0 / (m + 1) if m is not None else 0.0 for s, m in sizes.items()}  # per stratum
    smallest = np.array([floor.get(s, 0.0) for s in range(max(floor, default=0) + 1)])[sub_strata] \
        if n_decided else np.zeros(0)
    best_count = stats.cluster_test(smallest, sub_clusters, level, m_main, draws=500, seed=seed,
                                    strata=sub_strata, stratum_sizes=sizes or {0: m_main}).p_value \
        if n_decided else 1.0
    best_max = stats.strongest_cluster_p(np.maximum(smallest, resolution), sub_clusters) if n_decided else 1.0
    best_possible = min(1.0, 2 * min(best_count, best_max))
    if resolution > alpha or best_possible >= alpha:
        verdict = "too_few_to_decide"
    else:
        verdict = "leak" if p_verdict < alpha else "no_evidence_of_leak"
    strata_info = _strata_info(null, parts, kept, strata, decided, alpha_eff) if null.covered is not None else None
    limits = _limits(null, how, alpha, alpha_eff, verdict, strata_info, (ct.needed, kc, n_c, best_max < alpha / 2))
    details = {"resolution": resolution, "best_possible_p": best_possible,
               "median_p": float(np.median(p[decided])) if n_decided and null.kind != "manual" else None}
    if strata_info is not None:
        details["strata"] = strata_info
        details["thresholds"] = {STRATUM_NAMES.get(s, f"stratum {s}"): part.threshold(alpha_eff)
                                 for s, part in kept.items()}
    return Decision(null.kind, null, values, p, flagged, threshold, alpha, alpha_eff, face_test, cluster_test,
                    clusters, verdict, limits, details, strata if null.covered is not None else None, decided)


def _strata_info(null: Null, parts: dict, kept: dict, strata: np.ndarray, decided: np.ndarray,
                 level: float) -> dict:
    """Per stratum: faces, null size, and whether it was decided or set aside (and why)."""
    out = {"by": f"apparent age from the face embedding (idleak.age): child when P(under 13) >= {null.child_cut}"
                 + (" (widened: many synthetic faces may be children's)" if "child_stratum_widened" in null.details
                    else ""), "strata": {}}
    for s, part in parts.items():
        entry = {"faces": int((strata == s).sum()), "null_size": None if part is None else part.m,
                 "decided": s in kept}
        if s not in kept:
            entry["reason"] = (CHILDREN_ASIDE if part is None or part.m == 0 else
                               f"the null's {part.m} value(s) of this stratum resolve {part.resolution():.3g}, "
                               f"not {level:.3g}")
        out["strata"][STRATUM_NAMES.get(s, f"stratum {s}")] = entry
    out["set_aside_faces"] = int((~decided).sum())
    return out


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


def _limits(null: Null, how: str, alpha: float, alpha_eff: float, verdict: str, strata: dict | None = None,
            detection: tuple[int | None, int, int, bool] | None = None) -> str:
    unit = {"identity": "synthetic identity", "cluster": "cluster of near-identical synthetic faces",
            "identity+cluster": "synthetic identity (or cluster of unlabelled near-identical faces)"}[how]
    units = {"identity": "synthetic identities", "cluster": "clusters of near-identical synthetic faces",
             "identity+cluster": "synthetic identities (or clusters of unlabelled near-identical faces)"}[how]
    pw = null.details.get("population_weights")
    weighted = bool(pw) and pw["estimator"] != "none"
    source = {
        "leave_one_identity_out": ("real faces searched against the other real identities, each weighted by how much "
                                   "more often faces like it occur in SYN than in REAL (population weights: "
                                   f"{pw['effective_null_size']} of {pw['null_size_unweighted']} people effectively), "
                                   "so it holds for synthetic faces of the populations REAL holds, in SYN's "
                                   "proportions; the weights are estimated (on real faces mixing two populations, "
                                   "LFW and UTKFace, false verdicts stayed within alpha at 0.05 and 0.01: "
                                   "bench/RESULTS.md)"
                                   if weighted else
                                   "real faces searched against the other real identities, so it holds for synthetic "
                                   "faces of REAL's population; measured on real faces it also held for grey studio "
                                   "strangers against in-the-wild photos, but not when REAL mixes populations and "
                                   "the synthetic faces resemble its denser part (there population weights, the "
                                   "default, or a holdout of the same mix are needed)"),
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
    if strata is None and null.kind != "manual":
        text += (" Apparent-age strata are off: a null of adults does not hold for young children "
                 "(measured: 27% false verdicts at alpha 0.01), so children in SYN can be flagged wrongly.")
    elif strata is not None and strata["set_aside_faces"]:
        aside = [name for name, e in strata["strata"].items() if not e["decided"] and e["faces"]]
        text += (f" {strata['set_aside_faces']} synthetic face(s) of the {', '.join(aside)} stratum were set aside, "
                 f"not decided: {CHILDREN_ASIDE}.")
    if verdict == "too_few_to_decide":
        text += " Too few faces or null values to reach the stated level: no verdict."
    elif verdict == "no_evidence_of_leak" and detection is not None and detection[0] is not None:
        needed, flagged, n, strongest = detection
        text += (f" 'No evidence' is not 'no leak': the count test says 'leak' from {needed} flagged {units} of "
                 f"{n} on ({flagged} were)" + (f", the strongest-identity test when one {unit} is flagged beyond "
                                               "Bonferroni over all of them" if strongest else "")
                 + "; fewer leaked people, or people the model cannot tell from strangers, are listed but do not "
                   "make the verdict.")
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
        return self.null.kind == "manual" or self.null.main.resolution() <= self.level

    @property
    def value(self) -> float:
        """The threshold on the statistic at this decider's level (+inf when the null cannot resolve it)."""
        return self.null.main.threshold(self.level)

    @property
    def details(self) -> dict:
        out = dict(self.null.details)
        main = self.null.main
        out.update({"score": self.null.score, "level": self.level, "resolution": main.resolution(),
                    "null_size": main.m})
        if not self.resolvable:
            out["warning"] = (f"the null ({main.m} values) resolves levels down to "
                              f"{main.resolution():.3g}, not {self.level:.3g}: nothing can be flagged at that "
                              "rate; give a larger labelled gallery")
        return out

    def thresholds_for(self, queries: np.ndarray) -> np.ndarray:
        """Per query face, the threshold of its apparent-age stratum at this decider's level (+inf when
        the null cannot resolve it, e.g. a child's photo against a dataset of adults)."""
        out = np.full(len(queries), self.value, np.float64)
        strata = self.null.stratum_of(queries) if self.null.kind != "manual" else None
        if strata is None:
            return out
        for s in np.unique(strata):
            part = self.null.part(int(s))
            resolvable = part is not None and part.m != 0 and part.resolution() <= self.level
            out[strata == s] = part.threshold(self.level) if resolvable else np.inf
        return out

    def search(self, queries: np.ndarray) -> TopK:
        k = neighbours_needed(self.null.score, self.options.cohort)
        return search_gallery(queries, self.gallery, k, self.options)

    def decide(self, queries: np.ndarray) -> tuple[TopK, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(neighbours, statistic, p-value, flagged, decided) for each query face.

        ``decided`` is False for a face whose apparent-age stratum the null cannot calibrate at this
        level (a young child against a gallery of adults): its p-value is NaN and it is not flagged.
        """
        top = self.search(queries)
        if len(queries) == 0:
            empty = np.zeros(0)
            return top, empty, empty, np.zeros(0, bool), np.zeros(0, bool)
        values = statistic(top, self.null.score, self.options.cohort, group_ids(self.gallery_identities),
                           self.null.density)
        if self.null.kind == "manual":
            return top, values, np.full(len(values), np.nan), top.scores[:, 0] > self.value, np.ones(len(values), bool)
        strata = self.null.stratum_of(queries)
        if strata is None:
            p = self.null.p_values(values)
            return top, values, p, p <= self.level, np.ones(len(values), bool)
        p = np.full(len(values), np.nan)
        decided = np.zeros(len(values), bool)
        for s in np.unique(strata):
            part = self.null.part(int(s))
            if part is None or (part.m is not None and part.m == 0) or part.resolution() > self.level:
                continue
            rows = strata == s
            p[rows] = part.p_values(values[rows])
            decided[rows] = True
        return top, values, p, decided & (np.nan_to_num(p, nan=1.0) <= self.level), decided


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
        "null": {"kind": null.kind, "size": null.main.m, "gallery_size": null.gallery_size,
                 "smallest_resolvable_level": null.main.resolution(), **null.details},
        "decision_level": decision.cluster_test.get("level"),
        "face_level": decision.face_test,
        "identity_level": decision.cluster_test,
        "p_value": decision.cluster_test.get("p_value"),
        "error_rates": {"per_face_false_flag": decision.alpha_effective,
                        "per_identity_false_flag": decision.alpha_effective,
                        "false_leak_verdict": decision.alpha if decision.verdict != "not_tested" else None},
        "strata": decision.details.get("strata", {"by": "none", "set_aside_faces": 0}),
        "thresholds_by_stratum": decision.details.get("thresholds"),
        "limits": decision.limits,
    }
