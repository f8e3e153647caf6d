"""Turn what the user points at (a folder, a CSV manifest, or an embedding store) into records.

A folder is searched recursively; the first-level sub-folder name is the identity label (the
LFW / ImageFolder layout) and files directly in the folder are unlabelled. A manifest is a CSV
with columns ``path,identity`` (relative paths are relative to the CSV's folder).
"""

from __future__ import annotations

import csv
import os
from dataclasses import dataclass
from pathlib import Path

from idleak.errors import IdleakError

STORE_MARKER = "store.json"


@dataclass(frozen=True)
class Record:
    """One input file and its identity label (None when unlabelled)."""

    path: str
    identity: str | None = None


@dataclass
class Source:
    """What a user argument resolved to: ``kind`` is folder, manifest, store (one named dataset of
    a store, read-only) or table (a Parquet table of precomputed embeddings)."""

    spec: str
    kind: str
    records: list[Record]
    store_path: str | None = None
    #: a store source: the dataset read, its content hashes (never re-read from files) and mode
    dataset: str | None = None
    hashes: list[str | None] | None = None
    aligned: bool | None = None

    @property
    def labelled_fraction(self) -> float:
        if not self.records:
            return 0.0
        return sum(r.identity is not None for r in self.records) / len(self.records)


def is_store(path: str | os.PathLike[str]) -> bool:
    """True if ``path`` is a folder made by ``idleak embed``."""
    return (Path(path) / STORE_MARKER).is_file()


def open_source(spec: str | os.PathLike[str], role: str = "input") -> Source:
    """Resolve a folder, manifest CSV, store (``STORE`` or ``STORE::DATASET``) or Parquet embedding table
    into a ``Source``; one-line ``IdleakError`` if unusable."""
    path = Path(spec)
    name = None
    if not path.exists() and "::" in str(spec):
        base, name = str(spec).rsplit("::", 1)
        path = Path(base)
        if not is_store(path):
            raise IdleakError(f"{role}: {base} is not an idleak store (STORE::DATASET reads a store's dataset)")
    if not path.exists():
        raise IdleakError(f"{role} not found: {spec}")
    if path.is_dir() and is_store(path):
        return _store_source(str(spec), path, name, role)
    if path.is_file() and path.suffix.lower() == ".parquet":
        from idleak.store.tables import table_records

        return Source(str(spec), "table", table_records(path, role), store_path=str(path.absolute()))
    if path.is_dir():
        records = scan_folder(path)
        if not records:
            raise IdleakError(f"{role} folder has no files: {spec}")
        return Source(str(spec), "folder", records)
    if path.suffix.lower() == ".csv":
        records = read_manifest(path)
        if not records:
            raise IdleakError(f"{role} manifest lists no images: {spec}")
        return Source(str(spec), "manifest", records)
    raise IdleakError(f"{role} must be a folder, a CSV manifest or an idleak store: {spec}")


def _store_source(spec: str, path: Path, name: str | None, role: str) -> Source:
    """Exactly one named dataset of a store: its records and hashes, read-only (a run's --cache never
    adds to it, and the original files are not needed)."""
    from idleak.store import EmbeddingStore

    store = EmbeddingStore.open(path)
    names = store.datasets()
    if name is None:
        if len(names) != 1:
            hint = (f"it has {len(names)} ({', '.join(names)}); pick one with {path}::NAME" if names else
                    "it holds no named dataset (a cache?); make one with `idleak embed FOLDER --store "
                    f"{path} --name NAME`")
            raise IdleakError(f"{role} store {path}: {hint}")
        name = names[0]
    dataset = store.dataset(name)
    if not dataset.records:
        raise IdleakError(f"{role} store {path}: dataset {name!r} is empty")
    return Source(spec, "store", dataset.records, store_path=str(store.root), dataset=name,
                  hashes=dataset.hashes, aligned=dataset.aligned)


def scan_folder(root: str | os.PathLike[str]) -> list[Record]:
    """All non-hidden files under ``root`` in a stable order, labelled by first-level sub-folder."""
    root = Path(root)
    records: list[Record] = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        rel = Path(dirpath).relative_to(root)
        identity = rel.parts[0] if rel.parts else None
        for name in sorted(filenames):
            if name.startswith("."):
                continue
            records.append(Record(str(Path(dirpath) / name), identity))
    return records


def read_manifest(csv_path: str | os.PathLike[str]) -> list[Record]:
    """Records from a CSV with a ``path`` column and an optional ``identity`` column."""
    csv_path = Path(csv_path)
    base = csv_path.parent
    with open(csv_path, newline="", encoding="utf-8-sig") as handle:
        reader = csv.DictReader(handle)
        fields = [f.strip() for f in (reader.fieldnames or [])]
        if "path" not in fields:
            raise IdleakError(f"{csv_path}: manifest needs a 'path' column (found: {', '.join(fields) or 'none'})")
        records = []
        for row in reader:
            row = {(k or "").strip(): (v or "").strip() for k, v in row.items()}
            if not row.get("path"):
                continue
            p = Path(row["path"])
            if not p.is_absolute():
                p = base / p
            records.append(Record(str(p), row.get("identity") or None))
    return records
