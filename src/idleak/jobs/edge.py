"""Validation at the edge of every job, before any work: paths made absolute, ranges checked, exclusion
lists read (``Exclusions``: matched by path and by content hash)."""

from __future__ import annotations

import csv
import os
from dataclasses import dataclass, field
from pathlib import Path

from idleak.errors import IdleakError
from idleak.sources import Record


def absolute(path: str | os.PathLike[str]) -> Path:
    """``path`` made absolute against the working folder (no symlink resolution)."""
    return Path(os.path.abspath(path))


def at_least(name: str, value: int | float | None, minimum: int | float) -> None:
    """One-line error unless ``value`` (when given) is at least ``minimum``."""
    if value is not None and value < minimum:
        raise IdleakError(f"{name} must be at least {minimum}, got {value}")


def fraction(name: str, value: float | None) -> None:
    """One-line error unless ``value`` (when given) is strictly between 0 and 1."""
    if value is not None and not 0 < value < 1:
        raise IdleakError(f"{name} must be between 0 and 1 (exclusive), got {value}")


def port(value: int) -> None:
    if not 0 <= value <= 65535:
        raise IdleakError(f"--port must be between 0 and 65535, got {value}")


def input_warnings(sources: list) -> list[str]:
    """The layout warnings of every input (``Source.warnings``), in order."""
    return [w for s in sources if s is not None for w in s.warnings]


def norm(path: str | os.PathLike[str]) -> str:
    return os.path.normcase(os.path.realpath(path))


@dataclass
class Exclusions:
    """An ``--exclude`` CSV (columns path, reason; optional hash): images to leave out, matched by path and by
    content, so a list still applies after the files are moved or the command runs from elsewhere."""

    file: str | None = None
    by_path: dict[str, int] = field(default_factory=dict)  # normalised path -> entry
    by_hash: dict[str, int] = field(default_factory=dict)  # content hash -> entry
    reasons: list[str] = field(default_factory=list)  # per entry
    matched: set[int] = field(default_factory=set)  # entries that matched an input

    def __bool__(self) -> bool:
        return bool(self.reasons)

    @property
    def n_entries(self) -> int:
        return len(self.reasons)

    def apply(self, records: list[Record],
              hashes: list[str | None] | None = None) -> tuple[list[int], list[tuple[str, str, str]]]:
        """Indices of ``records`` kept, and the dropped ones as (path, reason, detail)."""
        if not self:
            return list(range(len(records))), []
        kept, dropped = [], []
        for i, record in enumerate(records):
            entry = self.by_path.get(norm(record.path))
            how = "path"
            if entry is None and hashes is not None and hashes[i] is not None:
                entry, how = self.by_hash.get(hashes[i]), "content"
            if entry is None:
                kept.append(i)
            else:
                self.matched.add(entry)
                dropped.append((record.path, self.reasons[entry], f"listed in --exclude (matched by {how})"))
        return kept, dropped

    def check(self) -> dict | None:
        """After every input was prepared: the summary record; a list that matched nothing is an error."""
        if not self:
            return None
        if not self.matched:
            raise IdleakError(f"--exclude {self.file}: none of its {self.n_entries} entries matched an input image "
                              f"(by path or by content); check that it belongs to these inputs")
        return {"file": self.file, "n_entries": self.n_entries, "n_matched": len(self.matched),
                "text": f"{len(self.matched)} of {self.n_entries} exclusions matched"}


def read_exclusions(path: str | os.PathLike[str] | None) -> Exclusions:
    """``--exclude`` CSV (columns path, reason; optional hash). Relative paths are relative to the CSV's folder."""
    if not path:
        return Exclusions()
    path = absolute(path)
    if not path.is_file():
        raise IdleakError(f"--exclude file not found: {path}")
    from idleak.store.read import file_hash

    found = Exclusions(file=str(path))
    with open(path, newline="", encoding="utf-8-sig") as handle:
        reader = csv.DictReader(handle)
        if "path" not in (reader.fieldnames or []):
            raise IdleakError(f"{path}: --exclude CSV needs columns path,reason")
        for row in reader:
            raw = (row.get("path") or "").strip()
            if not raw:
                continue
            candidate = Path(raw) if Path(raw).is_absolute() else path.parent / raw
            entry = len(found.reasons)
            found.reasons.append((row.get("reason") or "excluded").strip() or "excluded")
            found.by_path[norm(candidate)] = entry
            content = (row.get("hash") or "").strip()
            if not content and candidate.is_file():
                try:
                    content = file_hash(str(candidate))
                except OSError:
                    content = ""
            if content:
                found.by_hash.setdefault(content, entry)
    return found
