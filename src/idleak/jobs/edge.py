"""Validation at the edge of every job: inputs resolved, ranges checked, exclusions read, before any work."""

from __future__ import annotations

import csv
import os
from pathlib import Path

from idleak.errors import IdleakError
from idleak.sources import Record


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
