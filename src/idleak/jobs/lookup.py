"""``idleak lookup``: is this person's face in these datasets?

    from idleak.jobs.lookup import lookup
    found = lookup("me/", ["dataset-a/", "dataset-b/"], "lookup-out")
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path

from idleak.analyses.lookup import DatasetLookup, LookupOptions, check_person, lookup_dataset, statement
from idleak.decide import METHOD_TEXT
from idleak.errors import IdleakError
from idleak.jobs.edge import absolute, input_warnings
from idleak.jobs.gate import count_values
from idleak.jobs.workspace import ProgressFactory, Workspace, versions
from idleak.outputs import write_excluded, write_summary_and_report, write_table
from idleak.sources import Source, open_source

MATCH_COLUMNS = ["dataset", "dataset_path", "dataset_identity", "person_path", "similarity", "identical_file"]


@dataclass
class LookupRun:
    """What ``lookup`` found and wrote."""

    datasets: list[DatasetLookup]
    summary: dict = field(default_factory=dict)

    @property
    def found(self) -> bool:
        return any(d.found for d in self.datasets)


def lookup(person: str | os.PathLike[str], datasets: list[str | os.PathLike[str]], out: str | os.PathLike[str],
           options: LookupOptions | None = None, model: str = "dlib", cache: str | os.PathLike[str] | None = None,
           aligned_person: bool = False, aligned_datasets: bool = False, workers: int | None = None,
           progress: ProgressFactory | None = None, report: bool = True, workspace: Workspace | None = None,
           identity_level: int = 1, **model_options: object) -> LookupRun:
    """Search one person's photos in each dataset (folder, manifest or store) against its calibrated threshold.

    Writes matches.csv (+ .parquet with face boxes), excluded.csv, summary.json (with a plain-language
    statement of what the result does and does not prove) and report.html.
    """
    started = time.perf_counter()
    options = options or LookupOptions()
    if not datasets:
        raise IdleakError("give at least one dataset with --in")
    options.validate()
    out = absolute(out)
    person_source = open_source(person, "--person", identity_level)
    sources = [open_source(d, "--in", identity_level) for d in datasets]
    ws = workspace or Workspace(model, cache, workers, progress, "largest", **model_options)
    out.mkdir(parents=True, exist_ok=True)
    # the person's photos: their own (largest) face; the datasets: every face (group photos)
    who = ws.prepare(person_source, "person", aligned_person, faces="largest")
    check_person(who.faces)
    names = _dataset_names([s.spec for s in sources])
    results, excluded, prepared = [], list(who.faces.excluded), []
    for name, source in zip(names, sources):
        data = ws.prepare(source, f"dataset {name}", aligned_datasets, faces="all")
        excluded += data.faces.excluded
        prepared.append(data)
        results.append(lookup_dataset(who.faces, data.faces, ws.model_id, name, options))
    rows = sorted((m for r in results for m in r.matches), key=lambda m: -m["similarity"])
    write_table(rows, MATCH_COLUMNS + ["dataset_box", "person_box"], out / "matches.csv", csv_columns=MATCH_COLUMNS)
    reasons = write_excluded(out / "excluded.csv", excluded)
    said = statement(results, options.alpha, len(who.faces), len(who.faces.excluded))
    summary = {
        "analysis": "lookup",
        "found": said["found"],
        "verdict_text": said["headline"],
        "statement": said,
        "n_matches": len(rows),
        "person": {"spec": person_source.spec, "n_images": len(person_source.records), "n_faces": len(who.faces),
                   "n_excluded": len(who.faces.excluded)},
        "datasets": [_dataset_summary(r, s, p) for r, s, p in zip(results, sources, prepared)],
        "alpha": options.alpha,
        "excluded": reasons,
        "n_excluded": int(sum(reasons.values())),
        "model": ws.model_id,
        "inputs": {"person": person_source.spec, "datasets": [s.spec for s in sources], "store": str(ws.store.root)},
        "versions": versions(),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "warnings": input_warnings(sources),
        "timings": {"embed_person_s": who.seconds, "embed_datasets_s": sum(p.seconds for p in prepared)},
    }
    from idleak.report.release import write_lookup_report

    write_summary_and_report(out, summary, started, write_lookup_report if report else None)
    return LookupRun(results, summary)


def _dataset_names(specs: list[str]) -> list[str]:
    """Short unique names for the datasets (folder or file name; numbered if two are the same)."""
    names: list[str] = []
    for spec in specs:
        base = Path(spec).name or str(spec)
        name, k = base, 2
        while name in names:
            name, k = f"{base} ({k})", k + 1
        names.append(name)
    return names


def _dataset_summary(result: DatasetLookup, source: Source, prepared) -> dict:
    ids = count_values(m["dataset_identity"] for m in result.matches if m["dataset_identity"] is not None)
    return {
        "name": result.name, "spec": source.spec, "n_images": len(source.records), "n_faces": result.n_faces,
        "n_excluded": len(prepared.faces.excluded), "found": result.found, "n_matches": len(result.matches),
        "matched_identities": ids, "decided": result.found or result.decidable,
        "threshold": result.value if result.threshold else None,
        "method": result.threshold.method if result.threshold else "none",
        "method_text": METHOD_TEXT[result.threshold.method] if result.threshold else "no faces to compare with",
        "alpha_per_photo": result.alpha_per_photo,
        "n_photos_undecided": result.n_photos_undecided,
        "threshold_details": result.threshold.details if result.threshold else {},
        "closest": result.closest,
    }
