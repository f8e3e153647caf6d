"""The importable API: the same jobs the CLI runs, as functions.

    import idleak.api as idleak
    result = idleak.audit("synthetic/", "real/", out="audit-out")
"""

from __future__ import annotations

import csv
import os
import platform
import re
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from idleak import __version__, scale
from idleak.analyses.audit import AuditOptions, AuditResult, audit_fields, run_audit
from idleak.embedding import EmbedStats, FaceSet, default_workers, embed_records, hash_records, load_faces
from idleak.errors import IdleakError
from idleak.faces import Embedder, EmbedderSpec, load_embedder, parse_model
from idleak.outputs import write_excluded, write_pairs, write_summary_and_report
from idleak.sources import Record, Source, open_source
from idleak.store import EmbeddingStore
from idleak.store.tables import tables_model

ProgressFactory = Callable[[str], Callable[[int, int], None]]


def default_cache_root() -> Path:
    """Where embedding stores live unless ``--cache`` says otherwise: $IDLEAK_CACHE, else
    $XDG_CACHE_HOME/idleak, else ~/.cache/idleak."""
    if os.environ.get("IDLEAK_CACHE"):
        return Path(os.environ["IDLEAK_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "idleak"


def store_for(model_id: str, cache: str | os.PathLike[str] | None, dim: int) -> EmbeddingStore:
    """The cache store for ``model_id``: ``cache`` itself if it is a store, else a per-model sub-folder."""
    root = Path(cache) if cache else default_cache_root()
    if (root / "store.json").is_file():
        return EmbeddingStore.open(root, model_id)
    slug = re.sub(r"[^A-Za-z0-9._-]+", "_", model_id).strip("_")
    return EmbeddingStore.create(root / slug, model_id, dim)


@dataclass
class Prepared:
    """One side of an analysis, embedded: its source, faces and what it cost."""

    source: Source
    faces: FaceSet
    stats: EmbedStats
    seconds: float


class Workspace:
    """A loaded face model and its store; embeds sources once and hands back face sets."""

    def __init__(self, model: str | EmbedderSpec = "dlib", cache: str | os.PathLike[str] | None = None,
                 workers: int | None = None, progress: ProgressFactory | None = None,
                 faces: str = "largest", engine: str = "local", ray_address: str | None = None,
                 **model_options: object) -> None:
        self.spec = model if isinstance(model, EmbedderSpec) else parse_model(model, **model_options)
        self.embedder: Embedder = load_embedder(self.spec)
        self.cache = cache
        self.store = store_for(self.embedder.model_id, cache, self.embedder.dim)
        self.workers = workers
        self.engine, self.ray_address = engine, ray_address  # where embedding runs: local processes or Ray
        self.tables_model: str | None = None  # set when every input is an embedding table of that model
        if engine == "ray":  # a cluster that does not answer is an error before any work
            from idleak.ray_engine import connect

            connect(ray_address)
        self.progress = progress
        if faces not in ("largest", "all"):
            raise IdleakError(f"--faces must be 'largest' or 'all', not {faces!r}")
        self.faces = faces

    @property
    def model_id(self) -> str:
        return self.embedder.model_id

    def prepare(self, spec: str | os.PathLike[str] | Source, role: str, aligned: bool = False,
                exclude: dict[str, str] | None = None, faces: str | None = None, quiet: bool = False) -> Prepared:
        """Resolve, embed (only what the store lacks) and load one input.

        ``faces`` overrides the workspace's choice ("largest" or "all") for this input; ``quiet``
        shows no progress bar for it (callers that draw their own).
        """
        start = time.perf_counter()
        faces = faces or self.faces
        source = spec if isinstance(spec, Source) else open_source(spec, role)
        records, dropped = apply_exclusions(source.records, exclude or {})
        if source.kind == "store":  # read-only: its dataset's hashes, in the mode it was embedded in
            store = EmbeddingStore.open(source.store_path, self.model_id)
            hash_of = dict(zip((r.path for r in source.records), source.hashes or []))
            found = load_faces(records, store, aligned=bool(source.aligned), faces=faces,
                               hashes=[hash_of.get(r.path) for r in records])
            stats = EmbedStats(n_records=len(records), n_cached=len(records))
        elif source.kind == "table":
            from idleak.store.tables import table_faces

            own = self.tables_model is not None  # every input is a table: its model, not --model, is the run's
            found = table_faces(source.store_path, role, self.tables_model or self.model_id,
                                None if own else self.embedder.dim)
            stats = EmbedStats(n_records=len(records), n_cached=len(records))
        else:
            progress = self.progress(f"embedding {role}") if self.progress and not quiet else None
            hashes = hash_records(records, cache=self.store.file_hashes)
            stats = embed_records(records, self.store, self.spec, aligned=aligned, workers=self.workers,
                                  progress=progress, embedder=self.embedder, hashes=hashes, engine=self.engine,
                                  ray_address=self.ray_address)
            found = load_faces(records, self.store, aligned=aligned, faces=faces, hashes=hashes)
        found.excluded = dropped + found.excluded
        return Prepared(source, found, stats, time.perf_counter() - start)

    def embed_images(self, images: list[np.ndarray], aligned: bool = False) -> FaceSet:
        """Embed in-memory images (e.g. reconstructions) without the store; largest face each."""
        found = self.embedder.analyze(images, aligned=aligned)
        keep = [(i, max(f, key=lambda face: face.area)) for i, f in enumerate(found) if f]
        vectors = np.stack([f.vector for _, f in keep]) if keep else np.zeros((0, self.embedder.dim), np.float32)
        n = len(keep)
        return FaceSet(vectors, np.array([f"image[{i}]" for i, _ in keep], dtype=object),
                       np.array([None] * n, dtype=object), np.array([""] * n), np.array([f.box for _, f in keep]),
                       np.array([f.score for _, f in keep], np.float32), np.ones(n, np.int64),
                       [(f"image[{i}]", "no_face", "") for i, f in enumerate(found) if not f])


def read_exclusions(path: str | os.PathLike[str] | None) -> dict[str, str]:
    """``--exclude`` CSV (columns path, reason) as resolved path -> reason."""
    if not path:
        return {}
    path = Path(path)
    if not path.is_file():
        raise IdleakError(f"--exclude file not found: {path}")
    out: dict[str, str] = {}
    with open(path, newline="", encoding="utf-8-sig") as handle:
        reader = csv.DictReader(handle)
        if "path" not in (reader.fieldnames or []):
            raise IdleakError(f"{path}: --exclude CSV needs columns path,reason")
        for row in reader:
            raw = (row.get("path") or "").strip()
            if not raw:
                continue
            candidate = Path(raw)
            if not candidate.is_absolute() and not candidate.exists():
                candidate = path.parent / candidate
            out[_norm(candidate)] = (row.get("reason") or "excluded").strip() or "excluded"
    return out


def apply_exclusions(records: list[Record], exclude: dict[str, str]) -> tuple[list[Record], list[tuple[str, str, str]]]:
    if not exclude:
        return list(records), []
    kept, dropped = [], []
    for record in records:
        reason = exclude.get(_norm(record.path))
        if reason is None:
            kept.append(record)
        else:
            dropped.append((record.path, reason, "listed in --exclude"))
    return kept, dropped


def _norm(path: str | os.PathLike[str]) -> str:
    return os.path.normcase(os.path.realpath(path))


def embed(path: str | os.PathLike[str], store: str | os.PathLike[str], model: str = "dlib", aligned: bool = False,
          workers: int | None = None, progress: ProgressFactory | None = None, flush_every: int = 256,
          name: str | None = None, engine: str = "local", ray_address: str | None = None,
          **model_options: object) -> tuple[EmbedStats, EmbeddingStore]:
    """Embed a folder or manifest into ``store`` (created if needed), skipping what it holds, and record
    it as the store's dataset ``name`` (default: the folder or manifest name)."""
    spec = parse_model(model, **model_options)
    embedder = load_embedder(spec)
    source = open_source(path, "input")
    if source.kind in ("store", "table"):
        raise IdleakError(f"{path} is already embedded (a {source.kind})")
    name = name or re.sub(r"[^A-Za-z0-9._-]+", "_", Path(os.path.abspath(path)).stem).strip("_.-") or "dataset"
    target = EmbeddingStore.create(store, embedder.model_id, embedder.dim)
    hashes = hash_records(source.records, cache=target.file_hashes)
    stats = embed_records(source.records, target, spec, aligned=aligned, workers=workers,
                          progress=progress("embedding") if progress else None, flush_every=flush_every,
                          embedder=embedder, hashes=hashes, engine=engine, ray_address=ray_address)
    target.write_dataset(name, source.records, hashes, aligned)
    return stats, target


def audit(synthetic: str | os.PathLike[str], real: str | os.PathLike[str], out: str | os.PathLike[str],
          model: str = "dlib", cache: str | os.PathLike[str] | None = None, options: AuditOptions | None = None,
          exclude: str | os.PathLike[str] | None = None, faces: str = "largest", aligned_synthetic: bool = False,
          aligned_real: bool = False, workers: int | None = None, progress: ProgressFactory | None = None,
          report: bool = True, workspace: Workspace | None = None, holdout: str | os.PathLike[str] | None = None,
          aligned_holdout: bool = False, on_plan: Callable[[scale.Plan], object] | None = None,
          **model_options: object) -> AuditResult:
    """Run the leakage audit and write summary.json, pairs.csv/.parquet, excluded.csv and report.html to ``out``."""
    started = time.perf_counter()
    options = options or AuditOptions()
    options.validate()
    out = Path(out)
    exclusions = read_exclusions(exclude)
    # validate every input before spending time on any
    syn_source, real_source = open_source(synthetic, "SYN"), open_source(real, "REAL")
    hold_source = open_source(holdout, "HOLDOUT") if holdout is not None else None
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
    np.savez_compressed(out / "scores.npz", nearest=result.nearest.astype(np.float32),
                        statistic=result.decision.statistic.astype(np.float32),
                        p_value=result.decision.p_values.astype(np.float32),
                        null=np.asarray(result.decision.null.values, np.float32),
                        null_similarity=np.asarray(result.decision.null.raw, np.float32))
    summary = audit_summary(result, options, ws, syn, ref, reasons, hold)
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


def versions() -> dict[str, str]:
    import dlib
    import faiss

    return {"idleak": __version__, "python": platform.python_version(), "numpy": np.__version__,
            "dlib": dlib.__version__, "faiss": faiss.__version__}


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
