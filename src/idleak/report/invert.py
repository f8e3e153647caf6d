"""report.html for ``idleak invert``, rendered from the files in OUT alone (summary.json and the PNGs)."""

from __future__ import annotations

import json
import os
from pathlib import Path

from idleak.errors import IdleakError
from idleak.report.html import render
from idleak.report.thumbs import data_uri


def write_invert_report(out: str | os.PathLike[str], review: dict | None = None) -> Path:
    """Verdict, the per-split table, the depth chart, originals next to reconstructions, the class attack."""
    out = Path(out)
    path = out / "summary.json"
    if not path.is_file():
        raise IdleakError(f"no summary.json in {out}: not an idleak output folder")
    summary = json.loads(path.read_text(encoding="utf-8"))
    if summary.get("analysis") != "invert":
        raise IdleakError(f"{path}: not an inversion summary (analysis {summary.get('analysis')!r})")
    chart = _png(out / summary["depth_chart"]) if summary.get("depth_chart") else None
    grids = []
    for layer, name in (summary.get("grids") or {}).items():
        uri = _png(out / name)
        if uri:
            grids.append({"layer": layer, "uri": uri, "file": name})
    return render("invert.html.j2", out / "report.html", s=summary, chart=chart, grids=grids, review=review,
                  versions=summary.get("versions"), created=summary.get("created"))


def _png(path: Path) -> str | None:
    return data_uri(path.read_bytes()) if path.is_file() else None
