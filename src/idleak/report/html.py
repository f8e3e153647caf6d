"""Self-contained HTML reports (templates are files in ``report/templates``)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
from jinja2 import Environment, PackageLoader, select_autoescape

from idleak.outputs import top_pairs as read_top_pairs
from idleak.report.plots import similarity_histogram
from idleak.report.thumbs import data_uri, thumbnail

MAX_FLAGGED_SHOWN = 120


def environment() -> Environment:
    return Environment(loader=PackageLoader("idleak", "report/templates"), autoescape=select_autoescape(["j2", "html"]))


def render(template: str, path: str | os.PathLike[str], **context: object) -> Path:
    """Render ``template`` with ``context`` to ``path`` (written atomically)."""
    html = environment().get_template(template).render(**context)
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(html, encoding="utf-8")
    os.replace(tmp, path)
    return path


class ThumbCache:
    """Thumbnails by (path, box), so an image in many pairs is read once."""

    def __init__(self, size: int = 128) -> None:
        self.size = size
        self._cache: dict[tuple, str | None] = {}

    def get(self, path: str, box: np.ndarray | None = None) -> str:
        key = (path, None if box is None else tuple(np.round(np.asarray(box, float), 1)))
        if key not in self._cache:
            self._cache[key] = thumbnail(path, box, self.size)
        return self._cache[key] or ""


def write_audit_report(out: str | os.PathLike[str], review: dict | None = None) -> Path:
    """report.html for a leakage audit, from the files in ``out`` alone (so it can be rebuilt).

    Verdict first, then the similarity histogram against the null, flagged pairs grouped by real
    identity, the most similar pairs overall, hubs, and how the threshold was set.
    """
    out = Path(out)
    summary = json.loads((out / "summary.json").read_text(encoding="utf-8"))
    scores = np.load(out / "scores.npz")
    thumbs = ThumbCache()
    histogram = data_uri(similarity_histogram(scores["statistic"] if "statistic" in scores else scores["nearest"],
                                                scores["null"], summary["threshold"]))

    def with_thumbs(row: dict) -> dict:
        return {**row, "syn_thumb": thumbs.get(row["synthetic_path"], _box(row.get("synthetic_box"))),
                "real_thumb": thumbs.get(row["real_path"], _box(row.get("real_box")))}

    flagged, n_flagged = read_top_pairs(out, MAX_FLAGGED_SHOWN, flagged_only=True)  # never the whole table
    groups: dict[str, list[dict]] = {}
    for row in flagged:
        name = row["real_identity"] or f"unlabelled: {os.path.basename(row['real_path'])}"
        groups.setdefault(str(name), []).append(with_thumbs(row))
    flagged_groups = sorted(({"identity": k, "count": len(v), "pairs": v} for k, v in groups.items()),
                            key=lambda g: (-g["count"], -g["pairs"][0]["similarity"]))
    top_pairs = [with_thumbs(r) for r in summary.get("top_pairs", [])[:24]]
    return render("audit.html.j2", out / "report.html", s=summary, histogram=histogram,
                  flagged_groups=flagged_groups, flagged_hidden=max(0, n_flagged - MAX_FLAGGED_SHOWN),
                  top_pairs=top_pairs, review=review, versions=summary.get("versions"),
                  created=summary.get("created"))


def _box(box: list | None) -> np.ndarray | None:
    return None if box is None else np.asarray(box, dtype=np.float32)
