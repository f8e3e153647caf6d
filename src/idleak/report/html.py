"""Self-contained HTML reports (templates are files in ``report/templates``)."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from jinja2 import Environment, PackageLoader, select_autoescape

from idleak.errors import IdleakError, ImageError
from idleak.images import load_rgb
from idleak.outputs import top_pairs as read_top_pairs
from idleak.report.plots import similarity_histogram
from idleak.report.thumbs import array_thumbnail, data_uri

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


@dataclass
class Evidence:
    """Where the report's evidence images are looked for and what happens when one cannot be read.

    Paths are absolute, or relative to OUT (files idleak wrote there). A first run records the images it
    could not read (``missing``); a rebuild (``strict``) fails on any other unreadable image instead of
    drawing a blank.
    """

    out: Path | None = None
    strict: bool = False
    allowed: frozenset[str] = frozenset()
    missing: dict[str, str] = field(default_factory=dict)  # path -> reason

    def resolve(self, path: str) -> str:
        if self.out is not None and not os.path.isabs(path):
            return str(self.out / path)
        return path


_EVIDENCE: ContextVar[Evidence | None] = ContextVar("idleak_evidence", default=None)


@contextmanager
def evidence(out: str | os.PathLike[str], strict: bool = False, allowed: list[str] | None = None) -> Iterator[Evidence]:
    """Reports rendered inside read their images relative to ``out``; see ``Evidence``."""
    state = Evidence(Path(os.path.abspath(out)), strict, frozenset(allowed or []))
    token = _EVIDENCE.set(state)
    try:
        yield state
    finally:
        _EVIDENCE.reset(token)
    if strict:
        lost = {p: r for p, r in state.missing.items() if p not in state.allowed}
        if lost:
            first, reason = next(iter(lost.items()))
            more = f" and {len(lost) - 1} more" if len(lost) > 1 else ""
            raise IdleakError(f"evidence image cannot be read: {first} ({reason}){more}; the report would show "
                              f"blanks. Restore the images (or move OUT back) and run idleak report again")


class ThumbCache:
    """Thumbnails by (path, box), so an image in many pairs is read once."""

    def __init__(self, size: int = 128) -> None:
        self.size = size
        self._cache: dict[tuple, str | None] = {}

    def get(self, path: str, box: np.ndarray | None = None) -> str:
        key = (path, None if box is None else tuple(np.round(np.asarray(box, float), 1)))
        if key not in self._cache:
            state = _EVIDENCE.get() or Evidence()
            try:
                self._cache[key] = array_thumbnail(load_rgb(state.resolve(path)), box, self.size)
            except ImageError as exc:
                state.missing[path] = exc.reason
                self._cache[key] = None
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
                                                scores["null"], summary["threshold"],
                                                null_weights=scores["null_weights"] if "null_weights" in scores
                                                else None))

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
