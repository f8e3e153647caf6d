"""Turn what the user points at (a folder, a CSV manifest, or an embedding store) into records.

A folder is searched recursively, following symbolic links (a link back into its own ancestors is
``symlink_loop``); the sub-folder name at ``identity_level`` (1: the first level, the LFW /
ImageFolder layout) is the identity label, and files above that level are unlabelled. A manifest is
a CSV with columns ``path,identity`` (relative paths are relative to the CSV's folder). Every record
path is absolute. What cannot be used (unreadable folders and files, FIFOs, sockets, devices, link
loops) is listed in ``Source.excluded`` with its reason, never silently dropped.
"""

from __future__ import annotations

import csv
import errno
import os
import stat
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from idleak.errors import IdleakError

STORE_MARKER = "store.json"
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".pgm", ".ppm", ".pnm"}
#: Folder names that are dataset structure, not people.
STRUCTURE_NAMES = {"train", "training", "val", "valid", "validation", "test", "testing", "images", "imgs", "img",
                   "data", "dataset", "faces", "photos", "pictures", "real", "synthetic", "all", "raw", "aligned"}
#: One identity holding more than this share of the faces (with at least 5 identities) is implausible.
LARGE_IDENTITY_SHARE = 0.5


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
    #: what could not be used, as (path, reason, detail), and warnings about the layout
    excluded: list[tuple[str, str, str]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def labelled_fraction(self) -> float:
        if not self.records:
            return 0.0
        return sum(r.identity is not None for r in self.records) / len(self.records)


def is_store(path: str | os.PathLike[str]) -> bool:
    """True if ``path`` is a folder made by ``idleak embed``."""
    return (Path(path) / STORE_MARKER).is_file()


def open_source(spec: str | os.PathLike[str], role: str = "input", identity_level: int = 1) -> Source:
    """Resolve a folder, manifest CSV, store (``STORE`` or ``STORE::DATASET``) or Parquet embedding table
    into a ``Source`` (paths absolute); one-line ``IdleakError`` if unusable."""
    check_identity_level(identity_level)
    path = Path(os.path.abspath(spec))
    name = None
    if not path.exists() and "::" in str(spec):
        base, name = str(spec).rsplit("::", 1)
        path = Path(os.path.abspath(base))
        if not is_store(path):
            raise IdleakError(f"{role}: {base} is not an idleak store (STORE::DATASET reads a store's dataset)")
    if not path.exists():
        raise IdleakError(f"{role} not found: {spec}")
    full = str(path) + (f"::{name}" if name else "")
    if path.is_dir() and is_store(path):
        return _store_source(full, path, name, role)
    if path.is_file() and path.suffix.lower() == ".parquet":
        from idleak.store.tables import table_records

        return Source(full, "table", table_records(path, role), store_path=str(path))
    if path.is_dir():
        records, excluded = walk_folder(path, identity_level)
        if not records:
            why = f" ({describe(excluded)}; see excluded.csv)" if excluded else ""
            raise IdleakError(f"{role} folder has no files: {spec}{why}")
        return Source(full, "folder", records, excluded=excluded,
                      warnings=structure_warnings(records, role, path, identity_level))
    if path.suffix.lower() == ".csv":
        records, excluded = regular_files(read_manifest(path))
        if not records:
            raise IdleakError(f"{role} manifest lists no images: {spec}")
        return Source(full, "manifest", records, excluded=excluded, warnings=structure_warnings(records, role))
    raise IdleakError(f"{role} must be a folder, a CSV manifest or an idleak store: {spec}")


def check_identity_level(level: int) -> None:
    if not isinstance(level, int) or level < 0:
        raise IdleakError(f"--identity-level must be 0 (no labels) or more, got {level!r}")


def describe(excluded: list[tuple[str, str, str]]) -> str:
    """'3 unreadable, 1 symlink_loop'."""
    return ", ".join(f"{n} {reason}" for reason, n in Counter(r for _, r, _ in excluded).most_common())


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


def scan_folder(root: str | os.PathLike[str], identity_level: int = 1) -> list[Record]:
    """All usable non-hidden files under ``root`` in a stable order (see ``walk_folder``)."""
    return walk_folder(root, identity_level)[0]


def walk_folder(root: str | os.PathLike[str],
                identity_level: int = 1) -> tuple[list[Record], list[tuple[str, str, str]]]:
    """Records (absolute paths, labelled by the sub-folder at ``identity_level``) and what was left out.

    Symbolic links are followed; a link to a folder already on the current path is ``symlink_loop``.
    Unreadable folders and files are ``unreadable``; FIFOs, sockets and devices are ``not_a_file``
    (never opened); broken links are ``missing``.
    """
    from idleak.images import file_kind

    root = Path(os.path.abspath(root))
    records: list[Record] = []
    excluded: list[tuple[str, str, str]] = []

    def visit(folder: Path, parts: tuple[str, ...], ancestors: frozenset[tuple[int, int]]) -> None:
        try:
            entries = sorted(os.scandir(folder), key=lambda e: e.name)
        except OSError as exc:
            excluded.append((str(folder), "unreadable", f"folder: {exc.strerror or exc}"))
            return
        identity = parts[identity_level - 1] if identity_level and len(parts) >= identity_level else None
        for entry in entries:
            if entry.name.startswith("."):
                continue
            path = folder / entry.name
            try:
                info = entry.stat(follow_symlinks=True)
            except OSError as exc:
                if exc.errno == errno.ELOOP:
                    excluded.append((str(path), "symlink_loop", "a symbolic link that points back to itself"))
                elif isinstance(exc, FileNotFoundError):
                    excluded.append((str(path), "missing", f"broken link to {os.readlink(path)}"
                                     if entry.is_symlink() else "vanished while scanning"))
                else:
                    excluded.append((str(path), "unreadable", exc.strerror or str(exc)))
                continue
            if stat.S_ISDIR(info.st_mode):
                key = (info.st_dev, info.st_ino)
                if key in ancestors:
                    excluded.append((str(path), "symlink_loop", f"links back to {os.path.realpath(path)}"))
                    continue
                visit(path, parts + (entry.name,), ancestors | {key})
            elif stat.S_ISREG(info.st_mode):
                if not os.access(path, os.R_OK):
                    excluded.append((str(path), "unreadable", "permission denied"))
                    continue
                records.append(Record(str(path), identity))
            else:
                excluded.append((str(path), "not_a_file", file_kind(info.st_mode)))

    top = root.stat()
    visit(root, (), frozenset({(top.st_dev, top.st_ino)}))
    return records, excluded


def regular_files(records: list[Record]) -> tuple[list[Record], list[tuple[str, str, str]]]:
    """``records`` without FIFOs, sockets and devices (``not_a_file``, never opened); missing files stay
    (hashing reports them)."""
    from idleak.images import file_kind

    kept, excluded = [], []
    for record in records:
        try:
            mode = os.stat(record.path).st_mode
        except OSError:
            kept.append(record)
            continue
        if stat.S_ISREG(mode):
            kept.append(record)
        else:
            excluded.append((record.path, "not_a_file", file_kind(mode)))
    return kept, excluded


def structure_warnings(records: list[Record], role: str, root: Path | None = None,
                       identity_level: int = 1) -> list[str]:
    """Warnings about a layout that is probably not one folder per person."""
    counts = Counter(r.identity for r in records if r.identity is not None)
    warnings = []
    level = f" (--identity-level {identity_level})" if root is not None else ""
    named = sorted(i for i in counts if i.lower() in STRUCTURE_NAMES)
    if named:
        warnings.append(f"{role}: identity {', '.join(map(repr, named))}{level} looks like a dataset split or "
                        f"folder, not a person; if people are one level deeper, use --identity-level "
                        f"{identity_level + 1}")
    imagey = sorted(i for i in counts if Path(i).suffix.lower() in IMAGE_SUFFIXES)
    if imagey:
        warnings.append(f"{role}: folder {', '.join(map(repr, imagey[:3]))} is named like an image but is a folder; "
                        f"it was scanned as an identity")
    total = sum(counts.values())
    if len(counts) >= 5 and total:
        identity, n = counts.most_common(1)[0]
        if n / total > LARGE_IDENTITY_SHARE:
            warnings.append(f"{role}: identity {identity!r} holds {n} of {total} labelled faces ({n / total:.0%}); "
                            f"check that sub-folders are people{level}")
    if len(counts) == 1 and total > 1 and root is not None:
        warnings.append(f"{role}: all {total} labelled files are one identity {next(iter(counts))!r}; "
                        f"if people are one level deeper, use --identity-level {identity_level + 1}")
    return warnings


def read_manifest(csv_path: str | os.PathLike[str]) -> list[Record]:
    """Records from a CSV with a ``path`` column and an optional ``identity`` column."""
    csv_path = Path(os.path.abspath(csv_path))
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
