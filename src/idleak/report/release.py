"""report.html for the release gate and the personal lookup, from their OUT folders alone."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from idleak.report.html import ThumbCache, render
from idleak.report.plots import similarity_histogram
from idleak.report.thumbs import data_uri

MAX_PAIRS_SHOWN = 60


def _read(out: Path, name: str) -> list[dict]:
    path = out / name
    return pq.read_table(path).to_pylist() if path.is_file() else []


def _box(box: list | None) -> np.ndarray | None:
    return None if box is None else np.asarray(box, dtype=np.float32)


def write_gate_report(out: str | os.PathLike[str], review: dict | None = None) -> Path:
    """report.html of a release gate: what was released, what was held back and why, the closest rejects."""
    out = Path(out)
    summary = json.loads((out / "summary.json").read_text(encoding="utf-8"))
    rejected = _read(out, "rejected.parquet")
    thumbs = ThumbCache()
    leaks = [r for r in rejected if r["reason"] == "leak"]
    leaks.sort(key=lambda r: -(r["similarity"] or 0.0))
    shown = [{**r, "syn_thumb": thumbs.get(r["path"], _box(r.get("box"))),
              "real_thumb": thumbs.get(r["real_path"], _box(r.get("real_box")))} for r in leaks[:MAX_PAIRS_SHOWN]]
    unchecked = [r for r in rejected if r["reason"] != "leak"]
    histogram = None
    scores_path = out / "scores.npz"
    if scores_path.is_file():
        scores = np.load(scores_path)
        if len(scores["nearest"]) or len(scores["null"]):
            histogram = data_uri(similarity_histogram(scores["nearest"], scores["null"], summary["threshold"]))
    return render("gate.html.j2", out / "report.html", s=summary, leaks=shown,
                  leaks_hidden=max(0, len(leaks) - MAX_PAIRS_SHOWN), unchecked=unchecked[:200],
                  unchecked_hidden=max(0, len(unchecked) - 200), histogram=histogram, review=review,
                  versions=summary.get("versions"), created=summary.get("created"))


def write_lookup_report(out: str | os.PathLike[str], review: dict | None = None) -> Path:
    """report.html of a personal lookup: the answer, the evidence pairs, and what it does not prove."""
    out = Path(out)
    summary = json.loads((out / "summary.json").read_text(encoding="utf-8"))
    matches = _read(out, "matches.parquet")
    thumbs = ThumbCache()

    def with_thumbs(row: dict) -> dict:
        return {**row, "data_thumb": thumbs.get(row["dataset_path"], _box(row.get("dataset_box"))),
                "person_thumb": thumbs.get(row["person_path"], _box(row.get("person_box")))}

    datasets = []
    for d in summary["datasets"]:
        rows = [m for m in matches if m["dataset"] == d["name"]]
        closest = with_thumbs(d["closest"]) if d.get("closest") and not rows else None
        datasets.append({**d, "pairs": [with_thumbs(m) for m in rows[:MAX_PAIRS_SHOWN]],
                         "hidden": max(0, len(rows) - MAX_PAIRS_SHOWN), "closest_pair": closest})
    return render("lookup.html.j2", out / "report.html", s=summary, datasets=datasets, review=review,
                  versions=summary.get("versions"), created=summary.get("created"))
