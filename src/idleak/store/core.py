"""An append-only embedding store on disk, keyed by file content hash and tied to one model.

Layout (format 2)::

    STORE/store.json                       format, model id, dimension
    STORE/vectors.f32                      float32 rows (n x dim), append-only, memory-mapped
    STORE/meta/SSSSSSSS-FIRST-COUNT.parquet  metadata of rows FIRST..FIRST+COUNT (no vectors)
    STORE/keys/SSSSSSSS.{key,val}.npy       sorted key index of that segment
    STORE/keys/merged-SSSSSSSS.{key,val}.npy  merged index of segments <= SSSSSSSS
    STORE/datasets/NAME.parquet            named datasets: path, identity, hash, aligned
    STORE/filehash.sqlite                  file hashes by (path, size, mtime_ns, inode)
    STORE/lock                             appends hold an exclusive lock on it

A commit (under the lock) drops rows whose key the store already holds, appends the vectors,
fsyncs, writes the segment's key run, then its metadata file (atomic rename): the metadata file is
the commit point, so a kill at any instant leaves the store readable, and the next open cleans
what a killed writer left (temporary files, vectors past the last commit).
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import time
import uuid
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from idleak.errors import IdleakError, StoreError
from idleak.sources import STORE_MARKER, Record
from idleak.store import keys as keyindex
from idleak.store.hashcache import HashCache

FORMAT_VERSION = 2
_SEGMENT = re.compile(r"^(\d{8})-(\d+)-(\d+)\.parquet$")
#: merge recent segment key runs into one when there are more than this many
MERGE_SEGMENTS = 16
#: rows read per memory-mapped window when fetching vectors
FETCH_WINDOW = 1 << 18


def meta_schema() -> pa.Schema:
    return pa.schema([
        ("hash", pa.string()),
        ("aligned", pa.bool_()),
        ("path", pa.string()),
        ("identity", pa.string()),
        ("face", pa.int16()),
        ("n_faces", pa.int16()),
        ("reason", pa.string()),
        ("detail", pa.string()),
        ("width", pa.int32()),
        ("height", pa.int32()),
        ("box", pa.list_(pa.float32(), 4)),
        ("det_score", pa.float32()),
        ("landmarks", pa.list_(pa.float32())),
    ])


DATASET_SCHEMA = pa.schema([("path", pa.string()), ("identity", pa.string()), ("hash", pa.string()),
                            ("aligned", pa.bool_())])


@dataclass(frozen=True)
class Segment:
    number: int
    first: int
    count: int
    path: Path

    @property
    def end(self) -> int:
        return self.first + self.count


@dataclass
class Dataset:
    """A named member of a store: the records of one source, with their content hashes."""

    name: str
    records: list[Record]
    hashes: list[str | None]
    aligned: bool


@dataclass
class FaceRows:
    """Rows of a store as column arrays; ``vectors`` are zeros where ``reason`` is set."""

    hash: np.ndarray
    aligned: np.ndarray
    path: np.ndarray
    identity: np.ndarray
    face: np.ndarray
    n_faces: np.ndarray
    reason: np.ndarray
    detail: np.ndarray
    box: np.ndarray
    det_score: np.ndarray
    landmarks: list
    vectors: np.ndarray
    extra: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.hash)


class EmbeddingStore:
    """Open with ``EmbeddingStore.open`` (existing) or ``EmbeddingStore.create`` (new or existing)."""

    def __init__(self, root: Path, model_id: str, dim: int) -> None:
        self.root = root
        self.model_id = model_id
        self.dim = dim
        self.file_hashes = HashCache(root / "filehash.sqlite")
        self._view: tuple[list[Segment], list[tuple[np.ndarray, np.ndarray]]] | None = None

    # -- opening ---------------------------------------------------------------------------
    @classmethod
    def open(cls, root: str | os.PathLike[str], model_id: str | None = None) -> EmbeddingStore:
        """Open an existing store; ``StoreError`` if it is not one, is damaged or was made by another model."""
        root = Path(root).absolute()
        marker = root / STORE_MARKER
        if not marker.is_file():
            raise StoreError(f"not an idleak store (no {STORE_MARKER}): {root}")
        try:
            meta = json.loads(marker.read_text())
            stored_model, dim, version = meta["model_id"], int(meta["dim"]), int(meta.get("format", 1))
        except (ValueError, KeyError, TypeError) as exc:
            raise StoreError(f"{marker}: unreadable store manifest ({exc})") from None
        if version == 1:
            raise StoreError(f"store {root} has format 1 (idleak < 0.3); convert it once with "
                             f"`idleak upgrade-store {root}`")
        if version != FORMAT_VERSION:
            raise StoreError(f"store {root} has format {version}; this idleak reads format {FORMAT_VERSION}")
        if model_id is not None and stored_model != model_id:
            raise StoreError(f"store {root} holds embeddings of model {stored_model!r}, not {model_id!r}; "
                             "use another --cache/--store for this model")
        store = cls(root, stored_model, dim)
        store._recover()
        return store

    @classmethod
    def create(cls, root: str | os.PathLike[str], model_id: str, dim: int) -> EmbeddingStore:
        """Open the store at ``root`` for ``model_id``, creating it if the folder has none."""
        root = Path(root).absolute()
        if (root / STORE_MARKER).is_file():
            return cls.open(root, model_id)
        if root.exists() and not root.is_dir():
            raise StoreError(f"store path exists and is not a folder: {root}")
        for sub in ("meta", "keys", "datasets"):
            (root / sub).mkdir(parents=True, exist_ok=True)
        (root / "vectors.f32").touch()
        meta = {"format": FORMAT_VERSION, "model_id": model_id, "dim": int(dim), "created": time.time()}
        _atomic_write(root / STORE_MARKER, json.dumps(meta, indent=2).encode())
        return cls(root, model_id, int(dim))

    @contextmanager
    def lock(self, blocking: bool = True) -> Iterator[bool]:
        """Exclusive append lock; yields False (not held) when ``blocking`` is off and it is taken."""
        try:
            handle = open(self.root / "lock", "a+b")
        except OSError:  # read-only store: readers need no lock
            yield False
            return
        with handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
            except BlockingIOError:
                yield False
                return
            try:
                yield True
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def _recover(self) -> None:
        """Clean what a killed writer left; drop segments whose vectors were lost (they are redone)."""
        with self.lock(blocking=False) as held:
            segments = self._scan_segments()
            need = segments[-1].end * self._row_bytes if segments else 0
            size = self._vectors_size()
            if size < need:
                self._drop_truncated(segments, size, held)
            if not held:
                return
            for folder in (self.root / "meta", self.root / "keys", self.root / "datasets", self.root):
                for tmp in folder.glob("*.tmp"):
                    tmp.unlink(missing_ok=True)
            committed = {f"{s.number:08d}" for s in self._scan_segments()}
            for run in (self.root / "keys").glob("*.key.npy"):
                name = run.name[:-len(".key.npy")]
                number = name.removeprefix("merged-")
                if number not in committed:
                    for suffix in (".key.npy", ".val.npy"):
                        (run.parent / f"{name}{suffix}").unlink(missing_ok=True)
            segments = self._scan_segments()
            end = segments[-1].end * self._row_bytes if segments else 0
            if self._vectors_size() > end:
                os.truncate(self.root / "vectors.f32", end)

    def _drop_truncated(self, segments: list[Segment], size: int, held: bool) -> None:
        complete = size // self._row_bytes
        lost = [s for s in segments if s.end > complete]
        text = (f"{self.root / 'vectors.f32'} is truncated: it holds {complete} of {segments[-1].end} rows")
        if not held or not os.access(self.root, os.W_OK):
            raise StoreError(f"{text}; open it once with write access (and no other run using it) to recover")
        for seg in lost:
            seg.path.unlink(missing_ok=True)
            for name in (f"{seg.number:08d}", ):
                for suffix in (".key.npy", ".val.npy"):
                    (self.root / "keys" / f"{name}{suffix}").unlink(missing_ok=True)
        for run in (self.root / "keys").glob("merged-*.key.npy"):  # rebuilt from the segment runs
            base = run.name[:-len(".key.npy")]
            if int(base.removeprefix("merged-")) >= lost[0].number:
                run.unlink(missing_ok=True)
                (run.parent / f"{base}.val.npy").unlink(missing_ok=True)
        self._rebuild_segment_runs()
        warnings.warn(f"{text}; dropped {sum(s.count for s in lost)} rows of {len(lost)} segment(s), "
                      "their images will be embedded again", stacklevel=3)

    def _rebuild_segment_runs(self) -> None:
        """Re-create missing per-segment key runs from the metadata (after a merged run was dropped)."""
        covered = self._merged_upto()
        for seg in self._scan_segments():
            if seg.number <= covered or (self.root / "keys" / f"{seg.number:08d}.key.npy").is_file():
                continue
            table = pq.read_table(seg.path, columns=["hash", "aligned", "n_faces"])
            keys, values = _group_keys(table, seg.first)
            keyindex.write_run(self.root / "keys", f"{seg.number:08d}", keys, values, _atomic_save)

    # -- the committed view ----------------------------------------------------------------
    @property
    def _row_bytes(self) -> int:
        return 4 * self.dim

    def _vectors_size(self) -> int:
        try:
            return (self.root / "vectors.f32").stat().st_size
        except FileNotFoundError:
            return 0

    def _scan_segments(self) -> list[Segment]:
        found = []
        for path in (self.root / "meta").glob("*.parquet"):
            match = _SEGMENT.match(path.name)
            if match:
                found.append(Segment(int(match[1]), int(match[2]), int(match[3]), path))
        found.sort(key=lambda s: s.number)
        end = 0
        for seg in found:
            if seg.first != end:
                raise StoreError(f"store {self.root}: segment {seg.path.name} does not follow row {end}; "
                                 "the store was changed by hand")
            end = seg.end
        return found

    def _merged_upto(self) -> int:
        merged = sorted((self.root / "keys").glob("merged-*.key.npy"))
        return int(merged[-1].name[len("merged-"):-len(".key.npy")]) if merged else -1

    def _load_view(self) -> tuple[list[Segment], list[tuple[np.ndarray, np.ndarray]]]:
        if self._view is None:
            segments = self._scan_segments()
            if segments and self._vectors_size() < segments[-1].end * self._row_bytes:
                raise StoreError(f"{self.root / 'vectors.f32'} is truncated (holds "
                                 f"{self._vectors_size() // self._row_bytes} of {segments[-1].end} rows)")
            covered = self._merged_upto()
            runs = []
            try:
                if covered >= 0:
                    runs.append(keyindex.read_run(self.root / "keys", f"merged-{covered:08d}"))
                runs += [keyindex.read_run(self.root / "keys", f"{s.number:08d}")
                         for s in segments if s.number > covered]
            except (OSError, ValueError) as exc:
                raise StoreError(f"store {self.root}: damaged key index ({exc})") from None
            self._view = (segments, runs)
        return self._view

    def invalidate(self) -> None:
        self._view = None

    @property
    def n_rows(self) -> int:
        segments, _ = self._load_view()
        return segments[-1].end if segments else 0

    def __len__(self) -> int:
        return self.n_rows

    # -- reading ---------------------------------------------------------------------------
    def lookup(self, hashes: Sequence[str] | np.ndarray, aligned: bool | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """For each content hash: the first store row of that image and its number of rows (-1, 0: absent)."""
        _, runs = self._load_view()
        found = keyindex.search(runs, keyindex.make_keys(hashes, aligned))
        first, count = keyindex.unpack(np.maximum(found, 0))
        return np.where(found < 0, -1, first), np.where(found < 0, 0, count)

    def contains(self, hashes: Sequence[str], aligned: bool | np.ndarray) -> np.ndarray:
        return self.lookup(hashes, aligned)[0] >= 0

    def has(self, content_hash: str, aligned: bool) -> bool:
        return bool(self.contains([content_hash], aligned)[0])

    def vectors(self, rows: np.ndarray) -> np.ndarray:
        """Vectors of store ``rows`` (any order), read window by window: memory bounded by the result."""
        rows = np.asarray(rows, np.int64)
        out = np.empty((len(rows), self.dim), np.float32)
        if not len(rows):
            return out
        n = self.n_rows
        if rows.min() < 0 or rows.max() >= n:
            raise IndexError(f"store rows out of range 0..{n - 1}")
        order = np.argsort(rows, kind="stable")
        sorted_rows = rows[order]
        with open(self.root / "vectors.f32", "rb") as handle:
            start = 0
            while start < len(sorted_rows):
                lo = int(sorted_rows[start])
                stop = int(np.searchsorted(sorted_rows, lo + FETCH_WINDOW, side="left"))
                hi = int(sorted_rows[stop - 1]) + 1
                window = np.memmap(handle, np.float32, "r", offset=lo * self._row_bytes, shape=(hi - lo, self.dim))
                out[order[start:stop]] = window[sorted_rows[start:stop] - lo]
                del window
                start = stop
        return out

    def meta(self, rows: np.ndarray, columns: Sequence[str]) -> dict[str, np.ndarray | list]:
        """Metadata ``columns`` of store ``rows`` (in the given order), read only from the segments holding them."""
        rows = np.asarray(rows, np.int64)
        segments, _ = self._load_view()
        firsts = np.array([s.first for s in segments], np.int64)
        which = np.searchsorted(firsts, rows, side="right") - 1
        parts: dict[str, list] = {c: [] for c in columns}
        positions = []
        for s in np.unique(which):
            seg = segments[int(s)]
            sel = np.flatnonzero(which == s)
            table = pq.read_table(seg.path, columns=list(columns)).take(pa.array(rows[sel] - seg.first))
            for c in columns:
                parts[c].append(table.column(c))
            positions.append(sel)
        out: dict[str, np.ndarray | list] = {}
        back = np.argsort(np.concatenate(positions)) if positions else np.zeros(0, np.int64)
        schema = meta_schema()
        for c in columns:
            kind = schema.field(c).type  # Parquet names list items "element": cast back to the schema's type
            chunks = [chunk.cast(kind) for part in parts[c] for chunk in part.chunks]
            col = pa.chunked_array(chunks, type=kind)
            out[c] = _column(col, back)
        return out

    def rows(self) -> FaceRows:
        """Every row with its vector (loads the whole store: for small stores and tests)."""
        n = self.n_rows
        every = np.arange(n, dtype=np.int64)
        names = meta_schema().names
        m = self.meta(every, names) if n else {c: np.array([], dtype=object) for c in names}
        return FaceRows(
            np.asarray(m["hash"], dtype=str), np.asarray(m["aligned"], dtype=bool), m["path"], m["identity"],
            np.asarray(m["face"], np.int64), np.asarray(m["n_faces"], np.int64), m["reason"], m["detail"],
            np.asarray(m["box"], np.float32).reshape(-1, 4) if n else np.zeros((0, 4), np.float32),
            np.asarray(m["det_score"], np.float32), list(m["landmarks"]), self.vectors(every))

    def segments(self) -> list[Segment]:
        return list(self._load_view()[0])

    # -- datasets --------------------------------------------------------------------------
    def datasets(self) -> list[str]:
        return sorted(p.stem for p in (self.root / "datasets").glob("*.parquet"))

    def dataset(self, name: str) -> Dataset:
        path = self.root / "datasets" / f"{name}.parquet"
        if not path.is_file():
            known = ", ".join(self.datasets()) or "none"
            raise StoreError(f"store {self.root} has no dataset {name!r} (datasets: {known})")
        try:
            table = pq.read_table(path)
            columns = {c: table.column(c).to_pylist() for c in DATASET_SCHEMA.names}
        except Exception as exc:  # noqa: BLE001 - any damage is one line
            raise StoreError(f"{path}: unreadable dataset ({exc})") from None
        records = [Record(str(self.root / p) if not os.path.isabs(p) else p, i)
                   for p, i in zip(columns["path"], columns["identity"])]
        aligned = bool(columns["aligned"][0]) if columns["aligned"] else False
        return Dataset(name, records, columns["hash"], aligned)

    def write_dataset(self, name: str, records: Sequence[Record], hashes: Sequence[str | None], aligned: bool) -> Path:
        """Record (or replace) the named dataset: the source's records, paths absolute or inside the store."""
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}", name):
            raise IdleakError(f"--name must be letters, digits, '.', '_' or '-' (got {name!r})")
        paths = []
        for r in records:
            full = Path(os.path.abspath(r.path))
            paths.append(str(full.relative_to(self.root)) if full.is_relative_to(self.root) else str(full))
        table = pa.table({"path": paths, "identity": [r.identity for r in records], "hash": list(hashes),
                          "aligned": [bool(aligned)] * len(records)}, schema=DATASET_SCHEMA)
        target = self.root / "datasets" / f"{name}.parquet"
        target.parent.mkdir(exist_ok=True)
        tmp = target.with_name(f"{target.name}.{uuid.uuid4().hex[:6]}.tmp")
        pq.write_table(table, tmp)
        _fsync_file(tmp)
        os.replace(tmp, target)
        _fsync_dir(target.parent)
        return target

    # -- writing ---------------------------------------------------------------------------
    def writer(self, flush_rows: int = 2048, flush_seconds: float = 30.0) -> StoreWriter:
        return StoreWriter(self, flush_rows, flush_seconds)

    def append(self, meta: pa.Table, vectors: np.ndarray) -> int:
        """Commit rows (all rows of an image together, consecutive); rows whose image the store already
        holds are dropped. Returns the number of rows written."""
        vectors = np.ascontiguousarray(vectors, np.float32)
        if vectors.shape != (meta.num_rows, self.dim):
            raise ValueError(f"vectors {vectors.shape} do not match {meta.num_rows} rows of dim {self.dim}")
        meta = meta.select(meta_schema().names).cast(meta_schema())
        with self.lock():
            self.invalidate()
            segments, _ = self._load_view()
            first = segments[-1].end if segments else 0
            number = segments[-1].number + 1 if segments else 0
            keep = self._new_rows(meta)
            if not keep.all():
                meta, vectors = meta.filter(pa.array(keep)), vectors[keep]
            if meta.num_rows == 0:
                return 0
            path = self.root / "vectors.f32"
            final = self.root / "meta" / f"{number:08d}-{first}-{meta.num_rows}.parquet"
            tmp = final.with_name(final.name + ".tmp")
            try:
                with open(path, "r+b") as handle:
                    handle.truncate(first * self._row_bytes)  # a killed writer's tail
                    handle.seek(first * self._row_bytes)
                    handle.write(vectors.tobytes())
                    handle.flush()
                    os.fsync(handle.fileno())
                keys, values = _group_keys(meta, first)
                keyindex.write_run(self.root / "keys", f"{number:08d}", keys, values, _atomic_save)
                pq.write_table(meta, tmp)
                _fsync_file(tmp)
                os.replace(tmp, final)  # the commit point
            except OSError as exc:  # disk full, quota, read-only: the committed store stays as it was
                tmp.unlink(missing_ok=True)
                for suffix in (".key.npy", ".val.npy", ".key.npy.tmp", ".val.npy.tmp"):
                    (self.root / "keys" / f"{number:08d}{suffix}").unlink(missing_ok=True)
                try:
                    os.truncate(path, first * self._row_bytes)
                except OSError:
                    pass  # cleaned on the next open
                raise StoreError(f"cannot write to store {self.root}: {exc.strerror or exc}") from None
            _fsync_dir(final.parent)
            self.invalidate()
            self._maybe_merge()
            self.invalidate()
        return meta.num_rows

    def _new_rows(self, meta: pa.Table) -> np.ndarray:
        """Rows of images not yet in the store, each image once (its first group in ``meta``)."""
        hashes = np.asarray(meta.column("hash").to_numpy(zero_copy_only=False), dtype="U32")
        aligned = meta.column("aligned").to_numpy(zero_copy_only=False).astype(bool)
        if not len(hashes):
            return np.zeros(0, bool)
        keys = keyindex.make_keys(hashes, aligned)
        start = np.r_[True, keys[1:] != keys[:-1]]
        group = np.cumsum(start) - 1
        group_keys = keys[start]
        _, first_seen = np.unique(group_keys, return_index=True)
        fresh = np.zeros(len(group_keys), bool)
        fresh[first_seen] = True
        fresh &= keyindex.search(self._load_view()[1], group_keys) < 0
        return fresh[group]

    def _maybe_merge(self) -> None:
        segments, _ = self._load_view()
        covered = self._merged_upto()
        recent = [s for s in segments if s.number > covered]
        merged_rows = sum(s.count for s in segments if s.number <= covered)
        if len(recent) <= MERGE_SEGMENTS and sum(s.count for s in recent) <= max(merged_rows, 1 << 16):
            return
        _, runs = self._load_view()
        keys, values = keyindex.merge(runs)
        upto = recent[-1].number
        keyindex.write_run(self.root / "keys", f"merged-{upto:08d}", keys, values, _atomic_save)
        del runs, keys, values
        self._view = None
        for seg in recent:
            for suffix in (".key.npy", ".val.npy"):
                (self.root / "keys" / f"{seg.number:08d}{suffix}").unlink(missing_ok=True)
        if covered >= 0:
            for suffix in (".key.npy", ".val.npy"):
                (self.root / "keys" / f"merged-{covered:08d}{suffix}").unlink(missing_ok=True)


class StoreWriter:
    """Buffers rows of embedded images and commits them in segments; use as a context manager."""

    def __init__(self, store: EmbeddingStore, flush_rows: int, flush_seconds: float) -> None:
        self.store = store
        self.flush_rows = flush_rows
        self.flush_seconds = flush_seconds
        self._buffer: list[dict] = []
        self._images_in_buffer = 0
        self._last_flush = time.monotonic()
        self.parts_written = 0

    def add_image(self, rows: list[dict]) -> None:
        """Add all rows of one image; flushes by count of images or by time."""
        self._buffer.extend(rows)
        self._images_in_buffer += 1
        if self._images_in_buffer >= self.flush_rows or time.monotonic() - self._last_flush > self.flush_seconds:
            self.flush()

    def flush(self) -> None:
        if not self._buffer:
            return
        dim = self.store.dim
        schema = meta_schema()
        table = pa.table({name: [row.get(name) for row in self._buffer] for name in schema.names}, schema=schema)
        vectors = np.zeros((len(self._buffer), dim), np.float32)
        for i, row in enumerate(self._buffer):
            if row.get("vector") is not None:
                vectors[i] = row["vector"]
        if self.store.append(table, vectors):
            self.parts_written += 1
        self._buffer = []
        self._images_in_buffer = 0
        self._last_flush = time.monotonic()

    def __enter__(self) -> StoreWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        # also on KeyboardInterrupt: what was computed is kept
        self.flush()


def _group_keys(meta: pa.Table, first_row: int) -> tuple[np.ndarray, np.ndarray]:
    """Key and packed (row, count) of each image in a segment (rows of one image are consecutive)."""
    hashes = np.asarray(meta.column("hash").to_numpy(zero_copy_only=False), dtype="U32")
    aligned = meta.column("aligned").to_numpy(zero_copy_only=False).astype(bool)
    keys = keyindex.make_keys(hashes, aligned)
    if not len(keys):
        return keys, np.zeros(0, np.int64)
    start = np.flatnonzero(np.r_[True, keys[1:] != keys[:-1]])
    counts = np.diff(np.r_[start, len(keys)])
    return keys[start], keyindex.pack(first_row + start, counts)


def _column(col: pa.ChunkedArray, back: np.ndarray) -> np.ndarray | list:
    kind = col.type
    if pa.types.is_fixed_size_list(kind):
        flat = col.combine_chunks()
        out = np.full((len(flat), kind.list_size), np.nan, np.float32)
        valid = np.asarray(flat.is_valid().to_numpy(zero_copy_only=False), bool)
        if valid.any():
            out[valid] = flat.filter(pa.array(valid)).flatten().to_numpy().reshape(-1, kind.list_size)
        return out[back]
    if pa.types.is_list(kind):
        values = col.to_pylist()
        return [values[i] for i in back]
    if pa.types.is_string(kind):
        return np.asarray(col.to_pylist(), dtype=object)[back]
    values = col.to_numpy()
    if pa.types.is_floating(kind):
        return np.asarray(values, np.float32)[back]
    return np.asarray(values)[back]


def _atomic_save(path: Path, array: np.ndarray) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as handle:
        np.save(handle, array)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


def _atomic_write(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + f".{uuid.uuid4().hex[:6]}.tmp")
    with open(tmp, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)
    _fsync_dir(path.parent)


def _fsync_file(path: Path) -> None:
    with open(path, "rb+") as handle:
        os.fsync(handle.fileno())


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
