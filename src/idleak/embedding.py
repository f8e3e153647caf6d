"""Fill a store from records (decode -> detect -> align -> embed on all cores) and read faces back.

``embed_records`` hashes every file (cached by file identity), skips those the store already holds,
and embeds the rest: worker processes decode, detect and align, the parent runs the model on batches
of aligned chips, and results are written as they come. The read path (``FaceSet``, ``hash_records``,
``load_faces``) lives in ``idleak.store.read`` and is re-exported here.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import sys
import threading
import time
import warnings
from collections import Counter
from collections.abc import Callable, Iterable
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import dataclass, field

import numpy as np

from idleak.errors import IdleakError, ImageError
from idleak.faces import Embedder, EmbedderSpec, load_embedder
from idleak.images import load_rgb
from idleak.sources import Record
from idleak.store import EmbeddingStore
from idleak.store.read import FaceSet, file_hash, hash_records, load_faces

__all__ = ["NO_FACE", "EmbedStats", "FaceSet", "embed_records", "file_hash", "hash_records", "image_rows",
           "load_faces"]

ProgressFn = Callable[[int, int], None]

#: Reason given to an image in which the detector found no face.
NO_FACE = "no_face"


@dataclass
class EmbedStats:
    """What one ``embed_records`` call did."""

    n_records: int = 0
    n_unique: int = 0
    n_new: int = 0
    n_cached: int = 0
    n_missing: int = 0
    seconds: float = 0.0
    reasons: Counter = field(default_factory=Counter)


def image_rows(embedder: Embedder, path: str, content_hash: str, identity: str | None, aligned: bool,
               embed: bool = True) -> list[dict]:
    """Store rows for one file: a row per face, or one row with the reason it has none.

    With ``embed=False`` (batched models) face rows carry their aligned ``chip`` instead of a
    vector; ``embed_pending`` fills the vectors in.
    """
    base = {"hash": content_hash, "aligned": aligned, "path": path, "identity": identity}
    try:
        image = load_rgb(path)
    except ImageError as exc:
        return [{**base, "face": -1, "n_faces": 0, "reason": exc.reason, "detail": exc.detail}]
    height, width = image.shape[:2]
    base.update(width=width, height=height)
    try:
        faces = embedder.prepare(image, aligned=aligned)
        vectors = embedder.embed_chips([f.chip for f in faces]) if embed else [None] * len(faces)
    except Exception as exc:  # noqa: BLE001 - one bad image must not stop a long run
        return [model_error(base, str(exc))]
    if not faces:
        return [{**base, "face": -1, "n_faces": 0, "reason": NO_FACE, "detail": ""}]
    failed = next((v for v in vectors if isinstance(v, str)), None)
    if failed is not None:
        return [model_error(base, failed)]
    return [
        {**base, "face": i, "n_faces": len(faces), "reason": None, "detail": None, "box": list(f.box),
         "det_score": None if np.isnan(f.score) else f.score, "landmarks": f.landmarks.ravel().tolist(),
         "vector": vector, "chip": None if embed else f.chip}
        for i, (f, vector) in enumerate(zip(faces, vectors))
    ]


def model_error(base: dict, detail: str) -> dict:
    """The one row of an image the model could not embed."""
    keep = {k: base[k] for k in ("hash", "aligned", "path", "identity", "width", "height") if k in base}
    return {**keep, "face": -1, "n_faces": 0, "reason": "model_error", "detail": detail[:200]}


def embed_pending(embedder: Embedder, images: list[list[dict]]) -> list[list[dict]]:
    """Fill the vectors of images whose face rows hold chips, in one batched call.

    An image with a face the model could not run becomes one ``model_error`` row.
    """
    chips = [row["chip"] for rows in images for row in rows if row.get("chip") is not None]
    try:
        vectors = iter(embedder.embed_chips(chips) if chips else [])
    except Exception as exc:  # noqa: BLE001 - e.g. a provider that fails to run at all
        vectors = iter([str(exc)] * len(chips))
    done = []
    for rows in images:
        if rows[0].get("chip") is None:
            done.append(rows)
            continue
        for row in rows:
            row["vector"] = next(vectors)
            row.pop("chip")
        failed = next((r["vector"] for r in rows if isinstance(r["vector"], str)), None)
        done.append([model_error(rows[0], failed)] if failed is not None else rows)
    return done


_WORKER_EMBEDDER: Embedder | None = None


def file_timeout() -> float:
    """Seconds one file may take in a worker before it is given up as ``timeout``: $IDLEAK_FILE_TIMEOUT [60]."""
    value = os.environ.get("IDLEAK_FILE_TIMEOUT", "60")
    try:
        seconds = float(value)
    except ValueError:
        raise IdleakError(f"IDLEAK_FILE_TIMEOUT must be a number of seconds, not {value!r}") from None
    if seconds <= 0:
        raise IdleakError(f"IDLEAK_FILE_TIMEOUT must be more than 0 seconds, got {value}")
    return seconds


_PARENT: int | None = None  # the process that started this worker


class _FileTimeout(Exception):
    pass


def _on_alarm(signum: int, frame: object) -> None:
    raise _FileTimeout


def timed_rows(embedder: Embedder, path: str, content_hash: str, identity: str | None, aligned: bool,
               embed: bool, seconds: float) -> list[dict]:
    """``image_rows`` under a time limit (SIGALRM, main thread only): a hung decode becomes a ``timeout`` row."""
    if threading.current_thread() is not threading.main_thread():
        return image_rows(embedder, path, content_hash, identity, aligned, embed=embed)
    previous = signal.signal(signal.SIGALRM, _on_alarm)
    try:
        # armed inside the try: a one-shot alarm that fires at once (a tiny limit) is still caught
        signal.setitimer(signal.ITIMER_REAL, seconds)
        return image_rows(embedder, path, content_hash, identity, aligned, embed=embed)
    except _FileTimeout:
        return [{"hash": content_hash, "aligned": aligned, "path": path, "identity": identity, "face": -1,
                 "n_faces": 0, "reason": "timeout", "detail": f"gave up after {seconds:g} s (IDLEAK_FILE_TIMEOUT)"}]
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def _die_with_parent(parent: int) -> None:
    """A worker exits when the process that started it dies, whatever the signal (kill -9 included):
    Linux's PR_SET_PDEATHSIG, plus a check for a parent that died before it was set."""
    if sys.platform.startswith("linux"):
        import ctypes

        try:
            ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG = 1
        except (OSError, AttributeError):
            pass
    global _PARENT
    _PARENT = parent
    if os.getppid() != parent:
        os._exit(1)


def _start_worker(parent: int) -> None:
    """Initializer of forked workers (they inherit the loaded model)."""
    _die_with_parent(parent)


def _init_worker(spec: EmbedderSpec, parent: int | None = None) -> None:
    global _WORKER_EMBEDDER
    if parent is not None:
        _die_with_parent(parent)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    _WORKER_EMBEDDER = load_embedder(spec)


def _work_chunk(items: list[tuple[str, str, str | None]], aligned: bool,
                seconds: float | None = None) -> list[list[dict]]:
    """In a worker: decode, detect, align, and embed too unless the model is batched in the parent;
    each file within ``seconds`` (default $IDLEAK_FILE_TIMEOUT)."""
    assert _WORKER_EMBEDDER is not None
    if _PARENT is not None and os.getppid() != _PARENT:  # orphaned (no PDEATHSIG here): stop, nobody waits
        os._exit(1)
    embed = not _WORKER_EMBEDDER.batched
    seconds = seconds or file_timeout()
    return [timed_rows(_WORKER_EMBEDDER, p, h, i, aligned, embed, seconds) for p, h, i in items]


def start_method() -> str:
    """How worker processes start: IDLEAK_START_METHOD, else "fork" on Linux (workers inherit the
    loaded model, no start-up cost), else "spawn" (each worker loads its own copy)."""
    method = os.environ.get("IDLEAK_START_METHOD")
    if method:
        return method
    return "fork" if sys.platform.startswith("linux") else "spawn"


def _worker_pool(workers: int, spec: EmbedderSpec, embedder: Embedder | None) -> ProcessPoolExecutor:
    global _WORKER_EMBEDDER
    method = start_method()
    if method == "fork":
        _WORKER_EMBEDDER = embedder or load_embedder(spec)  # inherited by the forked workers
        with warnings.catch_warnings():  # Python 3.12+ warns about fork with threads; workers use none
            warnings.simplefilter("ignore", DeprecationWarning)
            return ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("fork"),
                                       initializer=_start_worker, initargs=(os.getpid(),))
    return ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context(method),
                               initializer=_init_worker, initargs=(spec, os.getpid()))


def default_workers() -> int:
    """Worker processes to use: IDLEAK_WORKERS or the number of usable cores."""
    env = os.environ.get("IDLEAK_WORKERS")
    if env:
        return max(1, int(env))
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


def embed_records(
    records: Iterable[Record],
    store: EmbeddingStore,
    spec: EmbedderSpec,
    aligned: bool = False,
    workers: int | None = None,
    progress: ProgressFn | None = None,
    flush_every: int = 256,
    chunk_size: int = 8,
    embedder: Embedder | None = None,
    hashes: list[str | None] | None = None,
    engine: str = "local",
    ray_address: str | None = None,
) -> EmbedStats:
    """Embed every record the store lacks, on ``workers`` processes, and write them to ``store``.

    ``hashes`` (from ``hash_records``) saves reading the files twice when the caller has them.
    ``engine="ray"`` embeds on a Ray cluster (``ray_address``; None: a local one), one model per actor.
    """
    if engine not in ("local", "ray"):
        raise IdleakError(f"--engine must be local or ray, not {engine!r}")
    start = time.perf_counter()
    records = list(records)
    stats = EmbedStats(n_records=len(records))
    if hashes is None:
        hashes = hash_records(records, cache=store.file_hashes)
    known = [h for h in hashes if h is not None]
    held = dict(zip(known, store.contains(known, aligned).tolist())) if known else {}
    todo: dict[str, Record] = {}
    for record, content_hash in zip(records, hashes):
        if content_hash is None:
            stats.n_missing += 1
            continue
        if content_hash in todo or held[content_hash]:
            continue
        todo[content_hash] = record
    stats.n_unique = len({h for h in hashes if h is not None})
    stats.n_cached = stats.n_unique - len(todo)
    items = [(r.path, h, r.identity) for h, r in todo.items()]
    workers_given = workers
    workers = default_workers() if workers is None else max(1, workers)
    done = 0
    total = len(items)
    if progress:
        progress(0, total)
    local = embedder or load_embedder(spec)
    batch_faces = max(1, int(getattr(local, "batch_size", 64) or 64))
    with store.writer(flush_rows=flush_every, flush_seconds=10.0) as writer:
        pending: list[list[dict]] = []  # images whose chips wait for the next batch

        def write(rows_per_image: list[list[dict]]) -> None:
            nonlocal done
            for rows in rows_per_image:
                writer.add_image(rows)
                stats.n_new += 1
                if rows[0]["reason"]:
                    stats.reasons[rows[0]["reason"]] += 1
            done += len(rows_per_image)
            if progress:
                progress(done, total)

        def take(rows_per_image: list[list[dict]], final: bool = False) -> None:
            pending.extend(rows_per_image)
            n_chips = sum(1 for rows in pending for row in rows if row.get("chip") is not None)
            if n_chips >= batch_faces or final or not local.batched:
                batch = list(pending)
                pending.clear()
                write(embed_pending(local, batch))

        try:
            if engine == "ray":
                from idleak.ray_engine import ray_embed_rows

                for rows in ray_embed_rows(items, spec, aligned, actors=None if workers_given is None else workers,
                                           address=ray_address):
                    write([rows])
            elif workers == 1 or total < 2 * chunk_size:
                seconds = file_timeout()
                for path, content_hash, identity in items:
                    take([timed_rows(local, path, content_hash, identity, aligned, not local.batched, seconds)])
            else:
                seconds = file_timeout()
                chunks = [items[i:i + chunk_size] for i in range(0, total, chunk_size)]
                with _worker_pool(workers, spec, local) as pool:
                    futures: set[Future] = set()
                    queue = iter(chunks)
                    for chunk in queue:
                        futures.add(pool.submit(_work_chunk, chunk, aligned, seconds))
                        if len(futures) >= 3 * workers:
                            break
                    while futures:
                        finished, futures = wait(futures, return_when=FIRST_COMPLETED)
                        for future in finished:
                            nxt = next(queue, None)
                            if nxt is not None:  # keep the workers busy while the parent runs a batch
                                futures.add(pool.submit(_work_chunk, nxt, aligned, seconds))
                            take(future.result())
        finally:
            if pending:  # also on Ctrl-C / SIGTERM: what was prepared is embedded and kept
                take([], final=True)
    stats.seconds = time.perf_counter() - start
    return stats
