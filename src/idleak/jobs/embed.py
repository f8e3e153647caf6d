"""``idleak embed``: embed a folder or manifest once into a store."""

from __future__ import annotations

import os
import re
from pathlib import Path

from idleak.embedding import EmbedStats, embed_records, hash_records
from idleak.errors import IdleakError
from idleak.faces import load_embedder, parse_model
from idleak.jobs.edge import absolute, at_least
from idleak.jobs.workspace import ProgressFactory
from idleak.sources import open_source
from idleak.store import EmbeddingStore


def embed(path: str | os.PathLike[str], store: str | os.PathLike[str], model: str = "dlib", aligned: bool = False,
          workers: int | None = None, progress: ProgressFactory | None = None, flush_every: int = 256,
          name: str | None = None, engine: str = "local", ray_address: str | None = None,
          identity_level: int = 1, **model_options: object) -> tuple[EmbedStats, EmbeddingStore]:
    """Embed a folder or manifest into ``store`` (created if needed), skipping what it holds, and record
    it as the store's dataset ``name`` (default: the folder or manifest name)."""
    at_least("--workers", workers, 1)
    at_least("--flush-every", flush_every, 1)
    source = open_source(path, "input", identity_level)
    spec = parse_model(model, **model_options)
    embedder = load_embedder(spec)
    if source.kind in ("store", "table"):
        raise IdleakError(f"{path} is already embedded (a {source.kind})")
    name = name or re.sub(r"[^A-Za-z0-9._-]+", "_", Path(os.path.abspath(path)).stem).strip("_.-") or "dataset"
    target = EmbeddingStore.create(absolute(store), embedder.model_id, embedder.dim)
    hashes = hash_records(source.records, cache=target.file_hashes)
    stats = embed_records(source.records, target, spec, aligned=aligned, workers=workers,
                          progress=progress("embedding") if progress else None, flush_every=flush_every,
                          embedder=embedder, hashes=hashes, engine=engine, ray_address=ray_address)
    target.write_dataset(name, source.records, hashes, aligned)
    stats.reasons.update(reason for _, reason, _ in source.excluded)  # what the folder scan could not use
    return stats, target
