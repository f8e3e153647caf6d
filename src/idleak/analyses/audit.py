"""Leakage audit: which synthetic faces are real training identities, and is that more than chance."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from idleak.calibrate import Threshold, binomial_p_value, find_hubs, fmr_threshold, loio_threshold
from idleak.embedding import FaceSet
from idleak.errors import IdleakError
from idleak.search import ProgressFn, global_top_pairs, topk

ProgressFactory = Callable[[str], ProgressFn]

#: Below this share of labelled REAL faces (or with fewer than 2 identities) LOIO is not used.
MIN_LABELLED_FRACTION = 0.5


@dataclass
class ThresholdOptions:
    """How the calibrated threshold is set; shared by the audit, the gate and the lookup."""

    alpha: float = 0.01
    method: str = "auto"  # auto | loio | fmr | manual
    fmr: float | None = None
    threshold: float | None = None
    block_size: int = 65_536
    null_queries: int | None = 50_000  # LOIO null from at most this many real faces (random sample)
    search: str = "exact"  # exact | ivf | auto (idleak.search.topk engines)
    device: str = "cpu"  # cpu | cuda (exact search as torch matrix products on that device)
    search_margin: float = 0.05  # ivf: queries scoring above threshold - margin are re-searched exactly
    engine: str = "local"  # local | ray (exact search sharded over a Ray cluster)
    ray_address: str | None = None


@dataclass
class AuditOptions(ThresholdOptions):
    """Settings of the audit's decision; defaults are the CLI's."""

    top_k: int = 5
    exclude_hubs: bool = False
    top_pairs: int = 50


@dataclass
class AuditResult:
    """Everything the report and outputs need."""

    threshold: Threshold
    synthetic: FaceSet
    real: FaceSet
    scores: np.ndarray  # (n_syn, k)
    indices: np.ndarray  # (n_syn, k) rows into ``real``
    leak: np.ndarray  # (n_syn,) bool, rank-1 score > threshold
    p_value: float
    hubs: list[dict] = field(default_factory=list)
    top_pairs: list[tuple[int, int, float]] = field(default_factory=list)
    counts: dict = field(default_factory=dict)
    summary: dict = field(default_factory=dict)

    @property
    def nearest(self) -> np.ndarray:
        return self.scores[:, 0] if self.scores.size else np.zeros(0, np.float32)


def choose_method(real: FaceSet, options: ThresholdOptions) -> str:
    if options.method != "auto":
        return options.method
    if options.threshold is not None:
        return "manual"
    labelled = real.labelled
    n_ids = len({i for i in real.identities[labelled]})
    if len(real) and labelled.mean() >= MIN_LABELLED_FRACTION and n_ids >= 2:
        return "loio"
    return "fmr"


def calibrate(real: FaceSet, model_id: str, options: ThresholdOptions,
              progress: ProgressFactory | None = None) -> Threshold:
    """The threshold for this gallery under the chosen method (``progress`` shows the null's search)."""
    method = choose_method(real, options)
    if method == "manual":
        if options.threshold is None:
            raise IdleakError("--method manual needs --threshold")
        return Threshold(float(options.threshold), "manual", options.alpha)
    if method == "loio":
        n_ids = len({i for i in real.identities if i is not None})
        if n_ids < 2:
            raise IdleakError("leave-one-identity-out needs REAL with at least 2 labelled identities")
        return loio_threshold(real.vectors, real.identities, options.alpha, max_queries=options.null_queries,
                              block_size=options.block_size, progress=progress("calibrating") if progress else None)
    if method == "fmr":
        return fmr_threshold(model_id, options.alpha, len(real), options.fmr)
    raise IdleakError(f"unknown method {method!r}: use auto, loio, fmr or manual")


def run_audit(synthetic: FaceSet, real: FaceSet, model_id: str, options: AuditOptions | None = None,
              progress: ProgressFactory | None = None) -> AuditResult:
    """Search each synthetic face among the real ones, calibrate, flag, and test against chance."""
    options = options or AuditOptions()
    if len(real) == 0:
        raise IdleakError("REAL has no usable faces (see excluded.csv)")
    if len(synthetic) == 0:
        raise IdleakError("SYN has no usable faces (see excluded.csv)")
    k = min(options.top_k, len(real))
    threshold = calibrate(real, model_id, options, progress)
    result = topk(synthetic.vectors, real.vectors, k, block_size=options.block_size,
                  progress=progress("searching") if progress else None, **search_options(options, threshold))
    hub_rows = find_hubs(result.indices[:, 0], len(real), options.alpha)
    hubs = [
        {"real_path": str(real.paths[row]), "real_identity": real.identities[row], "count": count, "p_value": p}
        for row, count, p in hub_rows
    ]
    if options.exclude_hubs and hub_rows:
        keep = np.ones(len(real), bool)
        keep[[row for row, _, _ in hub_rows]] = False
        real = real.subset(keep)
        real.excluded = real.excluded + [(h["real_path"], "hub", f"nearest neighbour of {h['count']} synthetic faces")
                                         for h in hubs]
        k = min(options.top_k, len(real))
        threshold = calibrate(real, model_id, options, progress)
        result = topk(synthetic.vectors, real.vectors, k, block_size=options.block_size,
                      **search_options(options, threshold))
    nearest = result.scores[:, 0]
    leak = nearest > threshold.value
    n_flagged = int(leak.sum())
    p_value = binomial_p_value(n_flagged, len(synthetic), options.alpha)
    pairs = global_top_pairs(synthetic.vectors, real.vectors, options.top_pairs, result=result,
                             block_size=options.block_size)
    counts = identity_counts(synthetic, real, result.indices[:, 0], leak)
    counts["search"] = {"engine": result.engine, "device": options.device, "n_rescored_exactly": result.n_rescored,
                        "n_queries_exact": int(result.exact.sum()), "n_queries": len(synthetic),
                        "rescore_bound": result.bound_used}
    return AuditResult(threshold, synthetic, real, result.scores, result.indices, leak, p_value, hubs, pairs, counts)


def search_options(options: ThresholdOptions, threshold: Threshold) -> dict:
    """Engine, device and, for ivf, the bound above which queries are re-searched exactly."""
    if options.engine == "ray":
        if options.search not in ("exact", "auto"):
            raise IdleakError(f"--engine ray runs exact search; --search {options.search} is local only")
        return {"engine": "ray", "ray_address": options.ray_address}
    if options.engine != "local":
        raise IdleakError(f"--engine must be local or ray, not {options.engine!r}")
    return {"engine": options.search, "device": options.device,
            "bound": threshold.value - options.search_margin}


def identity_counts(synthetic: FaceSet, real: FaceSet, nearest: np.ndarray, leak: np.ndarray) -> dict:
    """Identity-level counts: distinct real identities matched, distinct synthetic identities leaking."""
    flagged = np.flatnonzero(leak)
    matched = [real.identities[nearest[i]] for i in flagged]
    real_ids = Counter(m if m is not None else f"(unlabelled) {real.paths[nearest[i]]}"
                       for i, m in zip(flagged, matched))
    syn_labelled = any(i is not None for i in synthetic.identities)
    syn_ids = {synthetic.identities[i] for i in flagged if synthetic.identities[i] is not None}
    return {
        "n_leaked_real_identities": len(real_ids),
        "leaked_real_identities": dict(real_ids.most_common()),
        "n_real_identities": len({i for i in real.identities if i is not None}),
        "n_leaking_synthetic_identities": len(syn_ids) if syn_labelled else None,
        "n_synthetic_identities": len({i for i in synthetic.identities if i is not None}) if syn_labelled else None,
    }
