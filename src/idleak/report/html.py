"""Self-contained HTML reports (templates are files in ``report/templates``)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from jinja2 import Environment, PackageLoader, select_autoescape

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


def write_audit_report(result, summary: dict, out: str | os.PathLike[str], review: dict | None = None) -> Path:
    """report.html for a leakage audit: verdict, histogram, flagged pairs by identity, top pairs, hubs."""
    syn, real = result.synthetic, result.real
    thumbs = ThumbCache()
    histogram = data_uri(similarity_histogram(result.nearest, result.threshold.null, result.threshold.value))

    def pair(q: int, j: int, score: float) -> dict:
        return {
            "synthetic_path": str(syn.paths[q]), "real_path": str(real.paths[j]),
            "real_identity": real.identities[j], "similarity": score, "leak": bool(score > result.threshold.value),
            "syn_thumb": thumbs.get(str(syn.paths[q]), syn.boxes[q]),
            "real_thumb": thumbs.get(str(real.paths[j]), real.boxes[j]),
        }

    flagged = np.flatnonzero(result.leak)
    flagged = flagged[np.argsort(-result.scores[flagged, 0])]
    shown = flagged[:MAX_FLAGGED_SHOWN]
    groups: dict[str, list[dict]] = {}
    for q in shown:
        j = int(result.indices[q, 0])
        name = real.identities[j] or f"unlabelled: {os.path.basename(str(real.paths[j]))}"
        groups.setdefault(str(name), []).append(pair(int(q), j, float(result.scores[q, 0])))
    flagged_groups = sorted(({"identity": k, "count": len(v), "pairs": v} for k, v in groups.items()),
                            key=lambda g: (-g["count"], -g["pairs"][0]["similarity"]))
    top_pairs = [pair(q, j, s) for q, j, s in result.top_pairs[:24]]
    return render("audit.html.j2", Path(out) / "report.html", s=summary, histogram=histogram,
                  flagged_groups=flagged_groups, flagged_hidden=max(0, len(flagged) - len(shown)),
                  top_pairs=top_pairs, review=review, versions=summary.get("versions"),
                  created=summary.get("created"))
