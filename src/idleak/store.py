"""An append-only embedding store on disk, keyed by file content hash and tied to one model.

Layout::

    STORE/store.json                  model id, dimension, format
    STORE/parts/part-*.parquet        rows: one per face (or one per image with a reason)

Each part is written to a temporary name, fsynced and renamed, so a kill at any instant leaves a
readable store; a rerun only embeds images whose (hash, aligned) key is not in any part.
"""

from __future__ import annotations

import json
import os
import time
import uuid
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from idleak.errors import StoreError
from idleak.sources import STORE_MARKER, Record

FORMAT_VERSION = 1


def schema(dim: int) -> pa.Schema:
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
        ("vector", pa.list_(pa.float32(), dim)),
    ])


@dataclass
class FaceRows:
    """Rows of a store (or of a query against it) as column arrays; ``vectors`` has no missing rows."""

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
    vectors: np.ndarray  # (n, dim) float32; zeros where reason is set
    extra: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.hash)

    def take(self, index: np.ndarray) -> FaceRows:
        index = np.asarray(index, dtype=np.int64)
        return FaceRows(
            self.hash[index], self.aligned[index], self.path[index], self.identity[index],
            self.face[index], self.n_faces[index], self.reason[index], self.detail[index],
            self.box[index], self.det_score[index], [self.landmarks[i] for i in index],
            self.vectors[index], {k: v[index] for k, v in self.extra.items()},
        )


class EmbeddingStore:
    """Open with ``EmbeddingStore.open`` (existing) or ``EmbeddingStore.create`` (new or existing)."""

    def __init__(self, root: Path, model_id: str, dim: int) -> None:
        self.root = root
        self.model_id = model_id
        self.dim = dim
        self._rows: FaceRows | None = None
        self._key_index: dict[tuple[str, bool], np.ndarray] | None = None

    # -- opening ---------------------------------------------------------------------------
    @classmethod
    def open(cls, root: str | os.PathLike[str], model_id: str | None = None) -> EmbeddingStore:
        """Open an existing store; ``StoreError`` if it is not one or was made by another model."""
        root = Path(root)
        marker = root / STORE_MARKER
        if not marker.is_file():
            raise StoreError(f"not an idleak store (no {STORE_MARKER}): {root}")
        try:
            meta = json.loads(marker.read_text())
            stored_model, dim = meta["model_id"], int(meta["dim"])
        except (ValueError, KeyError, TypeError) as exc:
            raise StoreError(f"{marker}: unreadable store manifest ({exc})") from None
        if model_id is not None and stored_model != model_id:
            raise StoreError(f"store {root} holds embeddings of model {stored_model!r}, not {model_id!r}; "
                             "use another --cache/--store for this model")
        return cls(root, stored_model, dim)

    @classmethod
    def create(cls, root: str | os.PathLike[str], model_id: str, dim: int) -> EmbeddingStore:
        """Open the store at ``root`` for ``model_id``, creating it if the folder has none."""
        root = Path(root)
        if (root / STORE_MARKER).is_file():
            return cls.open(root, model_id)
        if root.exists() and not root.is_dir():
            raise StoreError(f"store path exists and is not a folder: {root}")
        (root / "parts").mkdir(parents=True, exist_ok=True)
        meta = {"format": FORMAT_VERSION, "model_id": model_id, "dim": dim, "created": time.time()}
        _atomic_write(root / STORE_MARKER, json.dumps(meta, indent=2).encode())
        return cls(root, model_id, dim)

    # -- reading ---------------------------------------------------------------------------
    def part_files(self) -> list[Path]:
        return sorted((self.root / "parts").glob("part-*.parquet"))

    def rows(self) -> FaceRows:
        """All rows, with duplicate keys (from concurrent or repeated runs) kept once."""
        if self._rows is None:
            self._rows = self._read_rows()
        return self._rows

    def _read_rows(self) -> FaceRows:
        tables = []
        for number, part in enumerate(self.part_files()):
            try:
                table = pq.read_table(part)
            except Exception as exc:  # noqa: BLE001 - a damaged part is skipped, its images redone
                warnings.warn(f"{part}: unreadable store part skipped ({exc})", stacklevel=2)
                continue
            tables.append(table.append_column("part", pa.array(np.full(table.num_rows, number, np.int32))))
        if not tables:
            return _empty_rows(self.dim)
        table = pa.concat_tables(tables)
        hashes = np.asarray(table.column("hash").to_numpy(zero_copy_only=False)).astype(str)
        aligned = table.column("aligned").to_numpy(zero_copy_only=False).astype(bool)
        parts = table.column("part").to_numpy()
        keys = np.char.add(hashes, np.where(aligned, "a", "d"))
        # keep each key's rows from the first part that holds it
        order = np.lexsort((parts, keys))
        sorted_keys = keys[order]
        first = np.r_[True, sorted_keys[1:] != sorted_keys[:-1]]
        first_part = np.maximum.accumulate(np.where(first, np.arange(len(order)), 0))
        keep_sorted = parts[order] == parts[order][first_part]
        keep = np.sort(order[keep_sorted])
        table = table.take(pa.array(keep))
        return _rows_from_table(table, self.dim)

    def records(self) -> list[Record]:
        """The images the store holds, as records (path and identity as they were embedded)."""
        rows = self.rows()
        seen: dict[str, Record] = {}
        for path, identity in zip(rows.path, rows.identity):
            if path not in seen:
                seen[path] = Record(str(path), None if identity is None else str(identity))
        return list(seen.values())

    def key_index(self) -> dict[tuple[str, bool], np.ndarray]:
        """Map (hash, aligned) -> row numbers."""
        if self._key_index is None:
            rows = self.rows()
            index: dict[tuple[str, bool], list[int]] = {}
            for i, (h, a) in enumerate(zip(rows.hash, rows.aligned)):
                index.setdefault((str(h), bool(a)), []).append(i)
            self._key_index = {k: np.array(v, dtype=np.int64) for k, v in index.items()}
        return self._key_index

    def has(self, content_hash: str, aligned: bool) -> bool:
        return (content_hash, aligned) in self.key_index()

    def invalidate(self) -> None:
        self._rows = None
        self._key_index = None

    # -- writing ---------------------------------------------------------------------------
    def writer(self, flush_rows: int = 2048, flush_seconds: float = 30.0) -> StoreWriter:
        return StoreWriter(self, flush_rows, flush_seconds)


class StoreWriter:
    """Buffers rows and writes them as atomic parquet parts; use as a context manager."""

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
        columns = {name: [row.get(name) for row in self._buffer] for name in schema(dim).names}
        columns["vector"] = [None if v is None else np.asarray(v, np.float32) for v in columns["vector"]]
        table = pa.table(columns, schema=schema(dim))
        name = f"part-{time.time_ns():020d}-{uuid.uuid4().hex[:8]}.parquet"
        final = self.store.root / "parts" / name
        tmp = final.with_suffix(".parquet.tmp")
        pq.write_table(table, tmp)
        with open(tmp, "rb+") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, final)
        _fsync_dir(final.parent)
        self._buffer = []
        self._images_in_buffer = 0
        self._last_flush = time.monotonic()
        self.parts_written += 1
        self.store.invalidate()

    def __enter__(self) -> StoreWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        # also on KeyboardInterrupt: what was computed is kept
        self.flush()


def _rows_from_table(table: pa.Table, dim: int) -> FaceRows:
    n = table.num_rows

    def col(name: str) -> np.ndarray:
        return np.asarray(table.column(name).to_pylist(), dtype=object)

    vec_col = table.column("vector").combine_chunks()
    valid = np.asarray(vec_col.is_valid().to_numpy(zero_copy_only=False), dtype=bool)
    vectors = np.zeros((n, dim), np.float32)
    if valid.any():
        filled = vec_col.filter(pa.array(valid))
        vectors[valid] = filled.flatten().to_numpy().reshape(-1, dim)
    box_col = table.column("box").combine_chunks()
    box = np.full((n, 4), np.nan, np.float32)
    box_valid = np.asarray(box_col.is_valid().to_numpy(zero_copy_only=False), dtype=bool)
    if box_valid.any():
        box[box_valid] = box_col.filter(pa.array(box_valid)).flatten().to_numpy().reshape(-1, 4)
    score = table.column("det_score").to_numpy(zero_copy_only=False)
    return FaceRows(
        hash=col("hash").astype(str),
        aligned=table.column("aligned").to_numpy(zero_copy_only=False).astype(bool),
        path=col("path"),
        identity=col("identity"),
        face=table.column("face").to_numpy(zero_copy_only=False).astype(np.int64),
        n_faces=table.column("n_faces").to_numpy(zero_copy_only=False).astype(np.int64),
        reason=col("reason"),
        detail=col("detail"),
        box=box,
        det_score=np.asarray(score, dtype=np.float32),
        landmarks=table.column("landmarks").to_pylist(),
        vectors=vectors,
    )


def _empty_rows(dim: int) -> FaceRows:
    empty = np.array([], dtype=object)
    return FaceRows(
        np.array([], dtype=str), np.array([], dtype=bool), empty, empty, np.array([], np.int64),
        np.array([], np.int64), empty, empty, np.zeros((0, 4), np.float32), np.array([], np.float32), [],
        np.zeros((0, dim), np.float32),
    )


def _atomic_write(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + f".{uuid.uuid4().hex[:6]}.tmp")
    with open(tmp, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)
    _fsync_dir(path.parent)


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
