"""The shared part of every job: a loaded face model, its embedding store, and face sets prepared through it."""

from __future__ import annotations

import os
import platform
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from idleak import __version__
from idleak.embedding import EmbedStats, FaceSet, embed_records, hash_records, load_faces
from idleak.errors import IdleakError
from idleak.faces import Embedder, EmbedderSpec, load_embedder, parse_model
from idleak.jobs.edge import Exclusions, absolute, at_least
from idleak.sources import Source, open_source
from idleak.store import EmbeddingStore

ProgressFactory = Callable[[str], Callable[[int, int], None]]


def default_cache_root() -> Path:
    """Where embedding stores live unless ``--cache`` says otherwise: $IDLEAK_CACHE, else
    $XDG_CACHE_HOME/idleak, else ~/.cache/idleak."""
    if os.environ.get("IDLEAK_CACHE"):
        return Path(os.environ["IDLEAK_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "idleak"


def store_for(model_id: str, cache: str | os.PathLike[str] | None, dim: int) -> EmbeddingStore:
    """The cache store for ``model_id``: ``cache`` itself if it is a store, else a per-model sub-folder."""
    root = absolute(cache) if cache else absolute(default_cache_root())
    if (root / "store.json").is_file():
        return EmbeddingStore.open(root, model_id)
    slug = re.sub(r"[^A-Za-z0-9._-]+", "_", model_id).strip("_")
    return EmbeddingStore.create(root / slug, model_id, dim)


@dataclass
class Prepared:
    """One side of an analysis, embedded: its source, faces and what it cost."""

    source: Source
    faces: FaceSet
    stats: EmbedStats
    seconds: float


class Workspace:
    """A loaded face model and its store; embeds sources once and hands back face sets."""

    def __init__(self, model: str | EmbedderSpec = "dlib", cache: str | os.PathLike[str] | None = None,
                 workers: int | None = None, progress: ProgressFactory | None = None,
                 faces: str = "largest", engine: str = "local", ray_address: str | None = None,
                 **model_options: object) -> None:
        at_least("--workers", workers, 1)
        self.spec = model if isinstance(model, EmbedderSpec) else parse_model(model, **model_options)
        self.embedder: Embedder = load_embedder(self.spec)
        self.cache = cache
        self.store = store_for(self.embedder.model_id, cache, self.embedder.dim)
        self.workers = workers
        self.engine, self.ray_address = engine, ray_address  # where embedding runs: local processes or Ray
        self.tables_model: str | None = None  # set when every input is an embedding table of that model
        if engine == "ray":  # a cluster that does not answer is an error before any work
            from idleak.ray_engine import connect

            connect(ray_address)
        self.progress = progress
        if faces not in ("largest", "all"):
            raise IdleakError(f"--faces must be 'largest' or 'all', not {faces!r}")
        self.faces = faces

    @property
    def model_id(self) -> str:
        return self.embedder.model_id

    def prepare(self, spec: str | os.PathLike[str] | Source, role: str, aligned: bool = False,
                exclude: Exclusions | None = None, faces: str | None = None, quiet: bool = False) -> Prepared:
        """Resolve, embed (only what the store lacks) and load one input.

        ``exclude`` drops listed images (by path or content hash); ``faces`` overrides the workspace's
        choice ("largest" or "all") for this input; ``quiet`` shows no progress bar for it.
        """
        start = time.perf_counter()
        faces = faces or self.faces
        exclude = exclude or Exclusions()
        source = spec if isinstance(spec, Source) else open_source(spec, role)
        if source.kind == "store":  # read-only: its dataset's hashes, in the mode it was embedded in
            store = EmbeddingStore.open(source.store_path, self.model_id)
            kept, dropped = exclude.apply(source.records, source.hashes)
            records = [source.records[i] for i in kept]
            found = load_faces(records, store, aligned=bool(source.aligned), faces=faces,
                               hashes=[source.hashes[i] for i in kept] if source.hashes else None)
            stats = EmbedStats(n_records=len(records), n_cached=len(records))
        elif source.kind == "table":
            from idleak.store.tables import table_faces

            kept, dropped = exclude.apply(source.records)
            own = self.tables_model is not None  # every input is a table: its model, not --model, is the run's
            found = table_faces(source.store_path, role, self.tables_model or self.model_id,
                                None if own else self.embedder.dim)
            if dropped:
                found = found.subset(np.array([p not in {d for d, _, _ in dropped} for p in found.paths], bool))
            stats = EmbedStats(n_records=len(kept), n_cached=len(kept))
        else:
            progress = self.progress(f"embedding {role}") if self.progress and not quiet else None
            hashes = hash_records(source.records, cache=self.store.file_hashes)
            kept, dropped = exclude.apply(source.records, hashes)
            records, hashes = [source.records[i] for i in kept], [hashes[i] for i in kept]
            stats = embed_records(records, self.store, self.spec, aligned=aligned, workers=self.workers,
                                  progress=progress, embedder=self.embedder, hashes=hashes, engine=self.engine,
                                  ray_address=self.ray_address)
            found = load_faces(records, self.store, aligned=aligned, faces=faces, hashes=hashes)
        found.excluded = list(source.excluded) + dropped + found.excluded
        return Prepared(source, found, stats, time.perf_counter() - start)

    def embed_images(self, images: list[np.ndarray], aligned: bool = False) -> FaceSet:
        """Embed in-memory images (e.g. reconstructions) without the store; largest face each."""
        found = self.embedder.analyze(images, aligned=aligned)
        keep = [(i, max(f, key=lambda face: face.area)) for i, f in enumerate(found) if f]
        vectors = np.stack([f.vector for _, f in keep]) if keep else np.zeros((0, self.embedder.dim), np.float32)
        n = len(keep)
        return FaceSet(vectors, np.array([f"image[{i}]" for i, _ in keep], dtype=object),
                       np.array([None] * n, dtype=object), np.array([""] * n), np.array([f.box for _, f in keep]),
                       np.array([f.score for _, f in keep], np.float32), np.ones(n, np.int64),
                       [(f"image[{i}]", "no_face", "") for i, f in enumerate(found) if not f])


def versions() -> dict[str, str]:
    import dlib
    import faiss

    return {"idleak": __version__, "python": platform.python_version(), "numpy": np.__version__,
            "dlib": dlib.__version__, "faiss": faiss.__version__}


