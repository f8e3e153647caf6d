"""``idleak audit``: is a real training identity inside a synthetic face dataset?"""

from __future__ import annotations

import os
import time
from collections import Counter
from collections.abc import Callable

import numpy as np

from idleak import scale
from idleak.analyses.audit import AuditOptions, AuditResult, audit_fields, run_audit
from idleak.decide import CHILDREN_ASIDE
from idleak.embedding import default_workers
from idleak.errors import IdleakError
from idleak.jobs.edge import absolute, input_warnings, read_exclusions
from idleak.jobs.workspace import Prepared, ProgressFactory, Workspace, versions
from idleak.outputs import write_excluded, write_pairs, write_summary_and_report
from idleak.sources import open_source
from idleak.store.tables import tables_model


def audit(synthetic: str | os.PathLike[str], real: str | os.PathLike[str], out: str | os.PathLike[str],
          model: str = "dlib", cache: str | os.PathLike[str] | None = None, options: AuditOptions | None = None,
          exclude: str | os.PathLike[str] | None = None, faces: str = "largest", aligned_synthetic: bool = False,
          aligned_real: bool = False, workers: int | None = None, progress: ProgressFactory | None = None,
          report: bool = True, workspace: Workspace | None = None, holdout: str | os.PathLike[str] | None = None,
          aligned_holdout: bool = False, on_plan: Callable[[scale.Plan], object] | None = None,
          identity_level: int = 1, **model_options: object) -> AuditResult:
    """Run the leakage audit and write summary.json, pairs.csv/.parquet, excluded.csv and report.html to ``out``."""
    started = time.perf_counter()
    options = options or AuditOptions()
    options.validate()
    out = absolute(out)
    exclusions = read_exclusions(exclude)
    # validate every input before spending time on any
    syn_source = open_source(synthetic, "SYN", identity_level)
    real_source = open_source(real, "REAL", identity_level)
    hold_source = open_source(holdout, "HOLDOUT", identity_level) if holdout is not None else None
    ws = workspace or Workspace(model, cache, workers, progress, faces, options.engine, options.ray_address,
                                **model_options)
    sources = [syn_source, real_source] + ([hold_source] if hold_source else [])
    ws.tables_model = tables_model(sources)
    plan = scale.plan_audit(len(syn_source.records), len(real_source.records), ws.embedder.dim, options.search,
                            options.top_k, sum(scale.pending_images(len(s.records), s.kind) for s in sources),
                            ws.workers or default_workers(), options.null_queries)
    if on_plan:
        on_plan(plan)
    scale.check_memory(plan)
    out.mkdir(parents=True, exist_ok=True)
    syn = ws.prepare(syn_source, "SYN", aligned_synthetic, exclusions)
    ref = ws.prepare(real_source, "REAL", aligned_real, exclusions)
    hold = ws.prepare(hold_source, "HOLDOUT", aligned_holdout, exclusions) if hold_source else None
    excluded_by_list = exclusions.check()
    t0 = time.perf_counter()
    try:
        result = run_audit(syn.faces, ref.faces, ws.tables_model or ws.model_id, options, progress=ws.progress,
                           holdout=hold.faces if hold else None)
    except IdleakError:
        write_excluded(out / "excluded.csv", syn.faces.excluded + ref.faces.excluded
                       + (hold.faces.excluded if hold else []))
        raise
    search_seconds = time.perf_counter() - t0
    excluded = result.synthetic.excluded + result.real.excluded + (result.holdout.excluded if result.holdout else [])
    reasons = write_excluded(out / "excluded.csv", excluded)
    write_pairs(out / "pairs.csv", result.synthetic, result.real, result.scores, result.indices,
                result.decision.flagged)
    aside = result.decision.set_aside
    if aside.any():  # faces no null could decide (a young child's face against a gallery of adults)
        write_excluded(out / "set_aside.csv", [(str(p), "set_aside_child", CHILDREN_ASIDE)
                                               for p in result.synthetic.paths[aside]])
    else:
        (out / "set_aside.csv").unlink(missing_ok=True)
    np.savez_compressed(out / "scores.npz", nearest=result.nearest.astype(np.float32),
                        statistic=result.decision.statistic.astype(np.float32),
                        p_value=result.decision.p_values.astype(np.float32),
                        null=np.asarray(result.decision.null.values, np.float32),
                        null_similarity=np.asarray(result.decision.null.raw, np.float32),
                        **({} if result.decision.null.weights is None else
                           {"null_weights": np.asarray(result.decision.null.weights, np.float32)}))
    summary = audit_summary(result, options, ws, syn, ref, reasons, hold)
    summary["exclusions"] = excluded_by_list
    summary["warnings"] = input_warnings(sources) + list(summary.get("warnings") or [])
    summary["timings"] = {"embed_synthetic_s": syn.seconds, "embed_real_s": ref.seconds,
                          "search_and_calibrate_s": search_seconds}
    from idleak.report.html import write_audit_report

    result.summary = write_summary_and_report(out, summary, started, write_audit_report if report else None)
    return result


def _box(box: np.ndarray) -> list[float] | None:
    return [float(v) for v in box] if np.all(np.isfinite(box)) else None


def top_pair_rows(result: AuditResult) -> list[dict]:
    """The global most similar pairs, for summary.json and the report."""
    syn, real = result.synthetic, result.real
    flagged = result.decision.flagged
    return [{"synthetic_path": str(syn.paths[q]), "real_path": str(real.paths[j]), "real_identity": real.identities[j],
             "similarity": s, "leak": bool(flagged[q] and result.indices[q, 0] == j),
             "synthetic_box": _box(syn.boxes[q]),
             "real_box": _box(real.boxes[j])} for q, j, s in result.top_pairs]


def audit_summary(result: AuditResult, options: AuditOptions, ws: Workspace, syn: Prepared, ref: Prepared,
                  reasons: dict[str, int], hold: Prepared | None = None) -> dict:
    return {
        "analysis": "audit",
        **audit_fields(result),
        "n_synthetic_images": len(syn.source.records),
        "n_real_images": len(ref.source.records),
        "n_holdout_images": len(hold.source.records) if hold else None,
        "top_pairs": top_pair_rows(result),
        "excluded": reasons,
        "excluded_synthetic": dict(Counter(r for _, r, _ in result.synthetic.excluded)),
        "excluded_real": dict(Counter(r for _, r, _ in result.real.excluded)),
        "excluded_holdout": dict(Counter(r for _, r, _ in result.holdout.excluded)) if result.holdout else None,
        "n_excluded": int(sum(reasons.values())),
        "model": ws.tables_model or ws.model_id,
        "inputs": {"synthetic": syn.source.spec, "real": ref.source.spec,
                   "holdout": hold.source.spec if hold else None, "store": str(ws.store.root),
                   "faces": ws.faces},
        "embedding": {"synthetic": vars(syn.stats) | {"reasons": dict(syn.stats.reasons)},
                      "real": vars(ref.stats) | {"reasons": dict(ref.stats.reasons)}},
        "versions": versions(),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
