"""Leakage audit: which synthetic faces are real training identities, and is that more than chance.

A pure function on face sets: duplicates and identical files are set apart, children optionally
excluded, every synthetic face searched among the real ones, and the decision taken by
:mod:`idleak.decide` (null, statistic, per-face and per-identity tests).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from idleak.decide import (
    Decision,
    DecisionOptions,
    Null,
    build_null,
    choose_method,
    choose_score,
    decide_queries,
    decision_summary,
    group_ids,
)
from idleak.decide import stats as dstats
from idleak.decide.hubs import find_hubs
from idleak.decide.scores import neighbours_needed
from idleak.embedding import FaceSet
from idleak.errors import IdleakError
from idleak.search import RECALL_TARGET, ProgressFn, TopK, global_top_pairs, search_device, topk

ProgressFactory = Callable[[str], ProgressFn]


@dataclass
class AuditOptions(DecisionOptions):
    """Settings of the audit; defaults are the CLI's."""

    top_k: int = 5
    top_pairs: int = 50
    exclude_children: bool = False
    search_recall: float = RECALL_TARGET  # ivf: recall@1 the top-k table must reach on the check sample (0: none)

    def validate(self) -> None:
        super().validate()
        if not 0 <= self.search_recall <= 1:
            raise IdleakError(f"--search-recall must be between 0 and 1, got {self.search_recall}")
        if self.top_k < 1:
            raise IdleakError(f"--top-k must be at least 1, got {self.top_k}")
        if self.top_pairs < 0:
            raise IdleakError(f"--top-pairs must be 0 or more, got {self.top_pairs}")


@dataclass
class AuditResult:
    """Everything the report and outputs need."""

    decision: Decision
    synthetic: FaceSet
    real: FaceSet
    scores: np.ndarray  # (n_syn, k) similarities, best first
    indices: np.ndarray  # (n_syn, k) rows into ``real``
    hubs: list[dict] = field(default_factory=list)
    top_pairs: list[tuple[int, int, float]] = field(default_factory=list)
    counts: dict = field(default_factory=dict)
    identical_files: list[dict] = field(default_factory=list)
    dcr: dict | None = None
    holdout: FaceSet | None = None
    warnings: list[str] = field(default_factory=list)
    summary: dict = field(default_factory=dict)

    @property
    def leak(self) -> np.ndarray:
        return self.decision.flagged

    @property
    def nearest(self) -> np.ndarray:
        return self.scores[:, 0] if self.scores.size else np.zeros(0, np.float32)

    @property
    def threshold(self) -> Null:
        return self.decision.null


def drop_duplicates(faces: FaceSet, side: str) -> FaceSet:
    """Keep one face per (file content, face box): the same file twice (even under two labels) counts once."""
    if len(faces) == 0:
        return faces
    keys = [f"{h}|{b[0]:.1f},{b[1]:.1f}" for h, b in zip(faces.hashes, np.nan_to_num(faces.boxes))]
    seen: dict[str, int] = {}
    keep = np.ones(len(faces), bool)
    dropped = []
    for i, key in enumerate(keys):
        if key in seen:
            keep[i] = False
            first = seen[key]
            dropped.append((str(faces.paths[i]), "duplicate", f"same file as {faces.paths[first]} in {side}"))
        else:
            seen[key] = i
    if keep.all():
        return faces
    out = faces.subset(keep)
    out.excluded = faces.excluded + dropped
    return out


def split_identical(synthetic: FaceSet, real: FaceSet) -> tuple[FaceSet, list[dict]]:
    """Synthetic faces whose file is byte-identical to a REAL file: reported apart, not tested."""
    real_hash = {}
    for j, h in enumerate(real.hashes):
        real_hash.setdefault(str(h), j)
    same = np.array([str(h) in real_hash for h in synthetic.hashes], bool)
    if not same.any():
        return synthetic, []
    pairs = []
    for i in np.flatnonzero(same):
        j = real_hash[str(synthetic.hashes[i])]
        pairs.append({"synthetic_path": str(synthetic.paths[i]), "real_path": str(real.paths[j]),
                      "real_identity": real.identities[j]})
    kept = synthetic.subset(~same)
    kept.excluded = synthetic.excluded + [(p["synthetic_path"], "identical_file", f"same file as {p['real_path']}")
                                          for p in pairs]
    return kept, pairs


def exclude_children(faces: FaceSet, model_id: str) -> FaceSet:
    """Drop faces whose apparent age (estimated from the embedding) is a child's."""
    from idleak.age import is_child

    if len(faces) == 0:
        return faces
    child = is_child(faces.vectors, model_id)
    if not child.any():
        return faces
    out = faces.subset(~child)
    out.excluded = faces.excluded + [(str(p), "child", "apparent age from the face embedding")
                                     for p in faces.paths[child]]
    return out


#: Share of synthetic faces that look like children above which the audit warns.
CHILD_SHARE_WARNING = 0.05


def children_warning(faces: FaceSet, model_id: str) -> list[str]:
    """A warning when many synthetic faces look like children (their matches are not trustworthy)."""
    from idleak.age import is_child

    if len(faces) == 0:
        return []
    try:
        share = float(np.mean(is_child(faces.vectors, model_id)))
    except IdleakError:  # no age model for this face model
        return []
    if share <= CHILD_SHARE_WARNING:
        return []
    return [f"{share:.0%} of the synthetic faces look like young children: face models place children close "
            "together, so they match strangers far more often than adults (measured: bench/RESULTS.md). Run with "
            "--exclude-children, or give a --holdout that holds children."]


#: Median p-value of the decided synthetic faces below which the audit warns of a population mismatch
#: (strangers of the null's population give about 0.5; measured on real faces: 0.35-0.74 where the null
#: held, 0.07-0.26 for children in a REAL that mixes LFW adults and UTKFace children; bench/RESULTS.md).
MEDIAN_P_WARNING = 0.25


def population_warning(decision: Decision) -> list[str]:
    """A warning when most synthetic faces sit closer to REAL than the null's strangers do."""
    median = decision.details.get("median_p")
    if median is None or median >= MEDIAN_P_WARNING:
        return []
    return [f"The synthetic faces' median p-value is {median:.2f} (about 0.5 for strangers of the null's population): "
            "most of them sit closer to REAL than REAL's own people sit to each other. Either most of SYN leaks, or "
            "SYN resembles a denser population than the null holds (children, one source of a mixed REAL) and the "
            "verdict's error rate is not guaranteed: give a --holdout of REAL's population."]


#: Population weights that leave less than this share of the null's people, or a classifier of SYN vs
#: REAL faces with at least this AUC, are worth a warning.
WEIGHTED_SHARE_WARNING = 0.5
SEPARABLE_AUC_WARNING = 0.8


def reweighting_warning(decision: Decision) -> list[str]:
    """A warning when SYN's population is one that REAL holds little of (the reweighted null is small)."""
    pw = decision.null.details.get("population_weights")
    if not pw or pw["estimator"] == "none":
        return []
    share = pw["effective_null_size"] / max(pw["null_size_unweighted"], 1)
    if share >= WEIGHTED_SHARE_WARNING and pw["auc"] < SEPARABLE_AUC_WARNING:
        return []
    text = (f"SYN's faces are told apart from REAL's with AUC {pw['auc']:.2f} (0.5: one population): reweighted to "
            f"SYN's population, the null counts as {pw['effective_null_size']} of REAL's "
            f"{pw['null_size_unweighted']} people.")
    if decision.verdict == "too_few_to_decide":
        text += (" That is too few to decide at this alpha. Give a --holdout of real people like SYN's, a larger REAL, "
                 "or --reweight none (the pooled null: its error rate then holds only if SYN's population is no "
                 "denser than REAL's).")
    return [text]


def run_audit(synthetic: FaceSet, real: FaceSet, model_id: str, options: AuditOptions | None = None,
              progress: ProgressFactory | None = None, holdout: FaceSet | None = None) -> AuditResult:
    """Search each synthetic face among the real ones, decide at the stated error rate, count identities."""
    options = options or AuditOptions()
    options.validate()
    synthetic = drop_duplicates(synthetic, "SYN")
    real = drop_duplicates(real, "REAL")
    if holdout is not None:
        holdout = drop_duplicates(holdout, "HOLDOUT")
        check_holdout(real, holdout)
    warnings = []
    if options.exclude_children:
        synthetic, real = exclude_children(synthetic, model_id), exclude_children(real, model_id)
        holdout = exclude_children(holdout, model_id) if holdout is not None else None
    elif options.strata == "none":
        warnings += children_warning(synthetic, model_id)
    synthetic, identical = split_identical(synthetic, real)
    if len(real) == 0:
        raise IdleakError("REAL has no usable faces" + _see(real))
    if len(synthetic) == 0 and not identical:
        raise IdleakError("SYN has no usable faces" + _see(synthetic))
    method = choose_method(real.identities, options, holdout is not None)
    score = choose_score(method, options, len(real))
    k = min(len(real), max(options.top_k, neighbours_needed(score, options.cohort)))
    null = build_null(real.vectors, real.identities, model_id, options, method, score, queries=synthetic.vectors,
                      holdout=None if holdout is None else holdout.vectors,
                      holdout_identities=None if holdout is None else holdout.identities,
                      progress=progress("calibrating") if progress and method in ("loio", "holdout") else None,
                      query_identities=synthetic.identities)
    result = topk(synthetic.vectors, real.vectors, k, block_size=options.block_size,
                  progress=progress("searching") if progress else None, **search_options(options, null))
    decision = decide_queries(synthetic.vectors, synthetic.identities, result, null, real.identities, options)
    warnings += population_warning(decision) + reweighting_warning(decision)
    top_k = min(options.top_k, k)
    scores, indices = result.scores[:, :top_k], result.indices[:, :top_k]
    hubs = find_hubs(indices[:, 0] if len(indices) else np.zeros(0, np.int64), decision.clusters, null,
                     len(real), options.alpha)
    hub_rows = [{"real_path": str(real.paths[h.row]), "real_identity": real.identities[h.row],
                 "synthetic_clusters": h.count, "expected": h.expected, "p_value": h.p_value,
                 "baseline": h.baseline} for h in hubs]
    pairs = global_top_pairs(synthetic.vectors, real.vectors, options.top_pairs, result=TopK(scores, indices),
                             block_size=options.block_size) if options.top_pairs and len(synthetic) else []
    dcr = holdout_comparison(synthetic, real, holdout, result, decision, options) if holdout is not None else None
    out = AuditResult(decision, synthetic, real, scores, indices, hub_rows, pairs, {}, identical, dcr, holdout,
                      warnings)
    out.counts = identity_counts(out)
    out.counts["search"] = {"engine": result.engine, "device": options.device, "n_rescored_exactly": result.n_rescored,
                            "n_queries_exact": int(result.exact.sum()) if result.exact is not None else len(synthetic),
                            "n_queries": len(synthetic), "rescore_bound": result.bound_used, **result.details}
    if "fallback" in result.details:
        out.warnings.append(f"--search {options.search}: {result.details['fallback']}")
    return out


def search_options(options: AuditOptions, null: Null) -> dict:
    """Engine, device and, for ivf, the raw similarity above which a query is searched again exactly.

    The bound is the lowest raw similarity of a null value whose statistic reaches the threshold, less
    ``search_margin``: a face below it is far from being flagged, so its approximate neighbours suffice.
    """
    if options.engine == "ray":
        if options.search not in ("exact", "auto"):
            raise IdleakError(f"--engine ray runs exact search; --search {options.search} is local only")
        return {"engine": "ray", "ray_address": options.ray_address}
    if options.engine != "local":
        raise IdleakError(f"--engine must be local or ray, not {options.engine!r}")
    bound = None
    if options.search != "exact":
        raws = []
        for stratum in (0,) if null.covered is None else null.covered:  # the lowest threshold of any stratum
            part = null.part(stratum)
            if part.m == 0:  # nothing of this stratum can be flagged: its faces need no exactness
                continue
            t = part.threshold(max(options.alpha, part.resolution()))  # the loosest level it may flag at
            close = part.raw[part.values >= t] if part.empirical else np.zeros(0)
            raws.append(float(close.min()) if len(close) else (t if part.score == "raw" else -1.0))
        bound = (min(raws) if raws else -1.0) - options.search_margin
    return {"engine": options.search, "device": search_device(options.device), "bound": bound,
            "recall": options.search_recall or None}


def check_holdout(real: FaceSet, holdout: FaceSet) -> None:
    """A holdout must not share files or identities with REAL (else it is not a control)."""
    shared_files = set(map(str, real.hashes)) & set(map(str, holdout.hashes))
    if shared_files:
        h = next(iter(shared_files))
        path = holdout.paths[list(map(str, holdout.hashes)).index(h)]
        raise IdleakError(f"--holdout shares {len(shared_files)} file(s) with REAL (e.g. {path}): "
                          "a holdout must hold people who were not in the training set")
    real_ids = {i for i in real.identities if i is not None}
    shared_ids = sorted(real_ids & {i for i in holdout.identities if i is not None})
    if shared_ids:
        raise IdleakError(f"--holdout shares {len(shared_ids)} identit{'y' if len(shared_ids) == 1 else 'ies'} "
                          f"with REAL (e.g. {shared_ids[0]!r}): a holdout must hold other people")


def holdout_comparison(synthetic: FaceSet, real: FaceSet, holdout: FaceSet, result: TopK, decision: Decision,
                       options: AuditOptions) -> dict:
    """Distance to closest record, training vs holdout (size-matched): how often a synthetic face is
    closer to the training people than to the non-members, and a cluster sign-flip test of it."""
    rng = np.random.default_rng(options.seed)
    n = min(len(real), len(holdout))
    real_rows = np.sort(rng.choice(len(real), n, replace=False)) if len(real) > n else np.arange(len(real))
    hold_rows = np.sort(rng.choice(len(holdout), n, replace=False)) if len(holdout) > n else np.arange(len(holdout))
    to_real = topk(synthetic.vectors, real.vectors[real_rows], 1, block_size=options.block_size).scores[:, 0]
    to_hold = topk(synthetic.vectors, holdout.vectors[hold_rows], 1, block_size=options.block_size).scores[:, 0]
    closer = np.sign(to_real - to_hold) / 2.0
    share = float(np.mean(to_real > to_hold)) if len(closer) else float("nan")
    p = dstats.sign_flip_test(closer, decision.clusters, seed=options.seed)
    return {"gallery_size_each": int(n), "share_closer_to_training": share, "expected_share": 0.5,
            "p_value": p, "test": "cluster sign-flip (synthetic identities as units)",
            "mean_similarity_training": float(np.mean(to_real)) if len(to_real) else None,
            "mean_similarity_holdout": float(np.mean(to_hold)) if len(to_hold) else None}


def identity_counts(result: AuditResult) -> dict:
    """Sample- and identity-level counts: flagged faces, synthetic identities/clusters, matched real people."""
    syn, real, decision = result.synthetic, result.real, result.decision
    flagged = np.flatnonzero(decision.flagged)
    nearest = result.indices[:, 0] if result.indices.size else np.zeros(0, np.int64)
    matched = Counter(real.identities[nearest[i]] for i in flagged if real.identities[nearest[i]] is not None)
    unlabelled_matched = {int(nearest[i]) for i in flagged if real.identities[nearest[i]] is None}
    syn_groups = group_ids(syn.identities)
    return {
        "n_flagged_faces": int(len(flagged)),
        "n_leaked_real_identities": len(matched),
        "leaked_real_identities": dict(matched.most_common()),
        "n_unlabelled_real_faces_matched": len(unlabelled_matched),
        "n_real_identities": len({i for i in real.identities if i is not None}),
        "n_synthetic_identities": int(len(np.unique(syn_groups[syn_groups >= 0]))) if (syn_groups >= 0).any() else None,
        "n_leaking_synthetic_identities": len({syn.identities[i] for i in flagged if syn.identities[i] is not None})
        if (syn_groups >= 0).any() else None,
        "n_identical_files": len(result.identical_files),
    }


def _see(faces: FaceSet) -> str:
    if not faces.excluded:
        return ""
    reasons = Counter(reason for _, reason, _ in faces.excluded)
    return f" ({len(faces.excluded)} excluded: " + ", ".join(f"{r} {c}" for r, c in reasons.most_common()) + ")"


def audit_fields(result: AuditResult) -> dict:
    """The audit's findings for summary.json: the decision, counts, identical files, hubs, holdout comparison."""
    decision = result.decision
    fields = decision_summary(decision)
    n_syn = len(result.synthetic)
    unit = {"identity": "synthetic identities", "cluster": "clusters of near-identical synthetic faces",
            "identity+cluster": "synthetic identities/clusters"}[decision.cluster_test["level"]]
    ct, ft = decision.cluster_test, decision.face_test
    if decision.verdict == "not_tested":
        text = (f"{ft['n_flagged']} of {n_syn} synthetic faces are above the threshold given by hand; "
                "no error rate is stated and nothing is tested.")
    else:
        text = (f"{ct['n_flagged']} of {ct['n']} {unit} ({ft['n_flagged']} of {n_syn} faces) match a real face "
                f"beyond the {decision.method.replace('_', '-')} null, {ct['expected_by_chance']:.1f} expected by "
                f"chance (p = {ct['p_value']:.3g})")
        text += {"leak": "; the synthetic set contains real identities.",
                 "no_evidence_of_leak": "; no evidence of leakage beyond chance.",
                 "too_few_to_decide": "; too few faces or null values to decide at this error rate."}[decision.verdict]
    aside = int(decision.set_aside.sum())
    if aside:
        text += (f" {aside} synthetic face(s) that may be young children's were set aside, not decided (listed in "
                 "set_aside.csv): children are decided only against a holdout's children.")
    if result.identical_files:
        text += (f" {len(result.identical_files)} synthetic file(s) are byte-identical to REAL files "
                 "(listed apart as identical files).")
    verdict = decision.verdict
    if result.identical_files and verdict != "leak":
        verdict = "leak"
    fields.update({
        "verdict": verdict,
        "statistical_verdict": decision.verdict,
        "verdict_text": text,
        "n_synthetic_faces": n_syn,
        "n_real_faces": len(result.real),
        "n_flagged": ft["n_flagged"],
        "n_set_aside": aside,
        "expected_by_chance": ft.get("expected_by_chance"),
        **result.counts,
        "identical_files": result.identical_files,
        "top_k": int(result.indices.shape[1]) if result.indices.ndim == 2 else 0,
        "hubs": result.hubs,
        "holdout": result.dcr,
        "warnings": result.warnings,
    })
    return fields
