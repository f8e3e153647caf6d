"""Presentation: plots and self-contained HTML reports (images embedded as data URIs).

Every analysis writes ``summary.json`` with an ``"analysis"`` key and has a report writer that
works from its OUT folder alone: ``writer(out: Path, review: dict | None) -> Path``. ``rebuild``
dispatches on that key (``idleak report OUT``).
"""

from __future__ import annotations

import importlib
import json
import os
from pathlib import Path

#: analysis name -> "module:function" of its report writer.
REPORT_WRITERS = {
    "audit": "idleak.report.html:write_audit_report",
    "mia": "idleak.report.mia:write_mia_report",
    "invert": "idleak.report.invert:write_invert_report",
    "gate": "idleak.report.release:write_gate_report",
    "lookup": "idleak.report.release:write_lookup_report",
}


def analysis_of(out: str | os.PathLike[str]) -> str:
    """The ``analysis`` named in ``out/summary.json``."""
    from idleak.errors import IdleakError

    path = Path(out) / "summary.json"
    if not path.is_file():
        raise IdleakError(f"no summary.json in {out}: not an idleak output folder")
    try:
        return json.loads(path.read_text(encoding="utf-8"))["analysis"]
    except (ValueError, KeyError) as exc:
        raise IdleakError(f"{path}: unreadable summary ({exc})") from None


def rebuild(out: str | os.PathLike[str], review: dict | None = None) -> Path:
    """Re-render ``out/report.html`` from the files in ``out`` (with review counts when given)."""
    from idleak.errors import IdleakError

    name = analysis_of(out)
    if name not in REPORT_WRITERS:
        raise IdleakError(f"{out}: no report for analysis {name!r}")
    module, function = REPORT_WRITERS[name].split(":")
    from idleak.report.html import evidence

    out = Path(os.path.abspath(out))
    allowed = json.loads((out / "summary.json").read_text(encoding="utf-8")).get("evidence_unavailable", [])
    with evidence(out, strict=True, allowed=allowed):
        return getattr(importlib.import_module(module), function)(out, review)
