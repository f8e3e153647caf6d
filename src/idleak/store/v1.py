"""Convert a format-1 store (``parts/part-*.parquet`` with vectors inside) to the current format."""

from __future__ import annotations

import json
import shutil
import warnings
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from idleak.errors import StoreError
from idleak.sources import STORE_MARKER, Record
from idleak.store.core import EmbeddingStore, _atomic_write, meta_schema


def upgrade(root: str | Path) -> EmbeddingStore:
    """Rewrite a format-1 store in place (its parts move to ``parts.v1/``); all its images become
    the dataset ``default``. Safe to rerun after a kill: the old parts are kept until the end."""
    root = Path(root).absolute()
    marker = root / STORE_MARKER
    try:
        meta = json.loads(marker.read_text())
        model_id, dim, version = meta["model_id"], int(meta["dim"]), int(meta.get("format", 1))
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise StoreError(f"{marker}: not a readable idleak store ({exc})") from None
    if version != 1:
        raise StoreError(f"store {root} has format {version}, nothing to upgrade")
    old = root / "parts"
    staging = root / "v2.tmp"
    shutil.rmtree(staging, ignore_errors=True)
    store = EmbeddingStore.create(staging, model_id, dim)
    seen: dict[str, Record] = {}
    hashes: dict[str, str] = {}
    aligned_modes: set[bool] = set()
    for part in sorted(old.glob("part-*.parquet")):
        try:
            table = pq.read_table(part)
        except Exception as exc:  # noqa: BLE001 - a damaged part is skipped, its images redone
            warnings.warn(f"{part}: unreadable store part skipped ({exc})", stacklevel=2)
            continue
        vec = table.column("vector").combine_chunks()
        valid = np.asarray(vec.is_valid().to_numpy(zero_copy_only=False), bool)
        vectors = np.zeros((table.num_rows, dim), np.float32)
        if valid.any():
            vectors[valid] = vec.filter(pa.array(valid)).flatten().to_numpy().reshape(-1, dim)
        store.append(table.select(meta_schema().names), vectors)
        for p, i, h, a in zip(*(table.column(c).to_pylist() for c in ("path", "identity", "hash", "aligned"))):
            seen.setdefault(p, Record(p, i))
            hashes.setdefault(p, h)
            aligned_modes.add(bool(a))
    if seen:
        store.write_dataset("default", list(seen.values()), [hashes[p] for p in seen],
                            aligned_modes == {True})
    # swap: the new layout moves in, the old parts are kept aside
    for name in ("meta", "keys", "datasets", "vectors.f32"):
        if (root / name).is_dir():
            shutil.rmtree(root / name)
        (staging / name).replace(root / name)
    if old.exists():
        old.rename(root / "parts.v1")
    _atomic_write(marker, (staging / STORE_MARKER).read_bytes())
    shutil.rmtree(staging, ignore_errors=True)
    return EmbeddingStore.open(root, model_id)
