"""Precomputed embeddings in and out: a Parquet table per dataset.

Columns: ``path`` (string), ``identity`` (string, nullable), ``vector`` (fixed-size list of float32,
normalised on read); optional ``face`` (int) and ``box`` (4 floats); table metadata key ``model``
(the embedding model's id) when known. ``export_table`` writes the same from a store.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from idleak.errors import IdleakError
from idleak.sources import Record
from idleak.store.core import EmbeddingStore
from idleak.store.read import FaceSet

REQUIRED = ("path", "vector")
#: rows per batch when reading or writing tables
BATCH = 65_536


def table_model(path: str | os.PathLike[str]) -> str | None:
    """The ``model`` metadata key of a table, if any."""
    meta = pq.read_schema(path).metadata or {}
    value = meta.get(b"model")
    return value.decode() if value else None


def tables_model(sources: list) -> str | None:
    """When every source is an embedding table: their common ``model`` (``"table"`` if none says), which
    then is the run's model; ``IdleakError`` if two tables name different models. Else None."""
    if not sources or any(s.kind != "table" for s in sources):
        return None
    models = {s.spec: table_model(s.store_path) for s in sources}
    named = {m for m in models.values() if m}
    if len(named) > 1:
        raise IdleakError("embedding tables of different models: " + ", ".join(f"{k} ({v or 'no model'})"
                                                                              for k, v in models.items()))
    dims = {}
    for s in sources:
        kind = _open(Path(s.store_path), "input").schema_arrow.field("vector").type
        if pa.types.is_fixed_size_list(kind):
            dims[s.spec] = kind.list_size
    if len(set(dims.values())) > 1:
        listed = ", ".join(f"{k} ({v})" for k, v in dims.items())
        raise IdleakError(f"embedding tables of different dimensions: {listed}")
    return named.pop() if named else "table"


def _open(path: Path, role: str) -> pq.ParquetFile:
    try:
        handle = pq.ParquetFile(path)
    except Exception as exc:  # noqa: BLE001 - any unreadable file is one line
        raise IdleakError(f"{role} {path}: not a readable Parquet table ({exc})") from None
    names = handle.schema_arrow.names
    missing = [c for c in REQUIRED if c not in names]
    if missing:
        raise IdleakError(f"{role} {path}: embedding table lacks column(s) {', '.join(missing)} "
                          f"(has: {', '.join(names)}); needs path, vector and optionally identity")
    return handle


def table_records(path: str | os.PathLike[str], role: str = "input") -> list[Record]:
    """Records (path, identity) of an embedding table, relative paths resolved against its folder."""
    path = Path(path)
    handle = _open(path, role)
    columns = ["path"] + (["identity"] if "identity" in handle.schema_arrow.names else [])
    table = handle.read(columns=columns)
    paths = table.column("path").to_pylist()
    ids = table.column("identity").to_pylist() if "identity" in columns else [None] * len(paths)
    base = path.absolute().parent
    return [Record(p if p is None or os.path.isabs(p) else str(base / p), None if i is None else str(i))
            for p, i in zip(paths, ids)]


def table_faces(path: str | os.PathLike[str], role: str = "input", model_id: str | None = None,
                dim: int | None = None) -> FaceSet:
    """A ``FaceSet`` from an embedding table; one-line ``IdleakError`` for a wrong or mixed dimension,
    NaN or zero vectors, missing columns or a ``model`` that differs from ``model_id``."""
    path = Path(path)
    handle = _open(path, role)
    model = table_model(path)
    if model and model_id and model != model_id:
        raise IdleakError(f"{role} {path}: embeddings of model {model!r}, but this run uses {model_id!r}")
    records = table_records(path, role)
    names = handle.schema_arrow.names
    vectors: list[np.ndarray] = []
    boxes: list[np.ndarray] = []
    row = 0
    for batch in handle.iter_batches(batch_size=BATCH, columns=["vector"] + (["box"] if "box" in names else [])):
        vectors.append(_vectors(batch.column("vector"), path, role, row, dim))
        dim = vectors[-1].shape[1]
        if "box" in names:
            boxes.append(_boxes(batch.column("box")))
        row += batch.num_rows
    if None in (r.path for r in records):
        raise IdleakError(f"{role} {path}: column path has empty values")
    n = len(records)
    vec = np.concatenate(vectors) if vectors else np.zeros((0, dim or 0), np.float32)
    box = np.concatenate(boxes) if boxes else np.full((n, 4), np.nan, np.float32)
    hashes = np.array([hashlib.blake2b(v.tobytes(), digest_size=16).hexdigest() for v in vec], dtype=str)
    return FaceSet(vec, np.array([r.path for r in records], dtype=object),
                   np.array([r.identity for r in records], dtype=object), hashes, box,
                   np.full(n, np.nan, np.float32), np.ones(n, np.int64), [])


def _vectors(column: pa.Array, path: Path, role: str, first_row: int, dim: int | None) -> np.ndarray:
    kind = column.type
    if not (pa.types.is_fixed_size_list(kind) or pa.types.is_list(kind) or pa.types.is_large_list(kind)) or \
            not (pa.types.is_floating(kind.value_type)):
        raise IdleakError(f"{role} {path}: column vector must be a list of float32, not {kind}")
    if column.null_count:
        bad = first_row + int(np.flatnonzero(~np.asarray(column.is_valid().to_numpy(zero_copy_only=False)))[0])
        raise IdleakError(f"{role} {path}: row {bad} has no vector")
    if pa.types.is_fixed_size_list(kind):
        width = kind.list_size
    else:
        lengths = np.diff(np.asarray(column.offsets.to_numpy()))
        if len(lengths) and (lengths != lengths[0]).any():
            bad = first_row + int(np.flatnonzero(lengths != lengths[0])[0])
            raise IdleakError(f"{role} {path}: mixed vector dimensions ({lengths[0]} and "
                              f"{lengths[bad - first_row]} at row {bad})")
        width = int(lengths[0]) if len(lengths) else (dim or 0)
    if dim is not None and width != dim:
        raise IdleakError(f"{role} {path}: vectors have dimension {width}, expected {dim}")
    flat = np.asarray(column.flatten().to_numpy(zero_copy_only=False), np.float32)
    vec = flat.reshape(-1, width) if width else np.zeros((len(column), 0), np.float32)
    finite = np.isfinite(vec).all(axis=1)
    if not finite.all():
        raise IdleakError(f"{role} {path}: row {first_row + int(np.flatnonzero(~finite)[0])} has NaN or "
                          "infinite values in its vector")
    norms = np.linalg.norm(vec, axis=1)
    if (norms == 0).any():
        raise IdleakError(f"{role} {path}: row {first_row + int(np.flatnonzero(norms == 0)[0])} has a zero vector")
    return vec / norms[:, None]


def _boxes(column: pa.Array) -> np.ndarray:
    out = np.full((len(column), 4), np.nan, np.float32)
    valid = np.asarray(column.is_valid().to_numpy(zero_copy_only=False), bool)
    if valid.any():
        out[valid] = np.asarray(column.filter(pa.array(valid)).flatten().to_numpy(zero_copy_only=False),
                                np.float32).reshape(-1, 4)
    return out


def table_schema(dim: int, model: str | None) -> pa.Schema:
    schema = pa.schema([("path", pa.string()), ("identity", pa.string()), ("face", pa.int16()),
                        ("box", pa.list_(pa.float32(), 4)), ("vector", pa.list_(pa.float32(), dim))])
    return schema.with_metadata({"model": model}) if model else schema


def export_table(store: EmbeddingStore, out: str | os.PathLike[str], dataset: str | None = None) -> int:
    """Write the faces of one dataset of ``store`` (or every face when it has no datasets) as an
    embedding table; written batch by batch to a temporary name, then renamed. Returns the row count."""
    from idleak.store.read import load_faces

    out = Path(out)
    names = store.datasets()
    if dataset is None and len(names) > 1:
        raise IdleakError(f"store {store.root} has {len(names)} datasets ({', '.join(names)}); choose one with --name")
    dataset = dataset or (names[0] if names else None)
    schema = table_schema(store.dim, store.model_id)
    tmp = out.with_name(out.name + ".tmp")
    written = 0
    try:
        with pq.ParquetWriter(tmp, schema) as writer:
            if dataset is not None:
                member = store.dataset(dataset)
                for start in range(0, len(member.records), BATCH):
                    faces = load_faces(member.records[start:start + BATCH], store, member.aligned, "all",
                                       member.hashes[start:start + BATCH])
                    face_no = _face_numbers(faces.paths)
                    writer.write_table(_batch(schema, faces.paths, faces.identities, face_no, faces.boxes,
                                              faces.vectors))
                    written += len(faces)
            else:
                for seg in store.segments():
                    rows = np.arange(seg.first, seg.end)
                    meta = store.meta(rows, ["path", "identity", "face", "box", "reason"])
                    ok = np.array([not r for r in meta["reason"]], bool)
                    writer.write_table(_batch(schema, meta["path"][ok], meta["identity"][ok], meta["face"][ok],
                                              meta["box"][ok], store.vectors(rows[ok])))
                    written += int(ok.sum())
        os.replace(tmp, out)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise IdleakError(f"cannot write {out}: {exc.strerror or exc}") from None
    return written


def _face_numbers(paths: np.ndarray) -> np.ndarray:
    out = np.zeros(len(paths), np.int64)
    for i in range(1, len(paths)):
        out[i] = out[i - 1] + 1 if paths[i] == paths[i - 1] else 0
    return out


def _batch(schema: pa.Schema, paths: np.ndarray, identities: np.ndarray, face: np.ndarray, boxes: np.ndarray,
           vectors: np.ndarray) -> pa.Table:
    dim = vectors.shape[1]
    box_ok = np.isfinite(boxes).all(axis=1)
    box = pa.FixedSizeListArray.from_arrays(pa.array(np.nan_to_num(boxes).ravel(), pa.float32()), 4)
    box = pa.array([b if ok else None for b, ok in zip(box.to_pylist(), box_ok)], pa.list_(pa.float32(), 4))
    return pa.table({
        "path": pa.array([str(p) for p in paths], pa.string()),
        "identity": pa.array([None if i is None else str(i) for i in identities], pa.string()),
        "face": pa.array(np.asarray(face, np.int16)),
        "box": box,
        "vector": pa.FixedSizeListArray.from_arrays(pa.array(np.ascontiguousarray(vectors, np.float32).ravel()), dim),
    }, schema=schema)
