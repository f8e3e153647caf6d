"""The Ray engine (optional extra ``ray``): the same search and embedding as the local engine, spread
over a Ray cluster.

- ``connect(address)``: joins an existing cluster (``ray://HOST:10001`` or ``HOST:6379``), or starts a
  local one when ``address`` is None; a cluster that does not answer is a one-line ``IdleakError``.
- ``ray_topk``: the gallery is cut into shards, each searched exactly by a Ray task (FAISS, as the
  local exact engine) spread over the nodes, and the shards' top-k are merged: the result equals
  ``idleak.search.topk``. A task whose worker or node dies is retried on a node that is alive
  (``max_retries``), so a lost node costs time, not results.
- ``ray_embed_rows``: Ray Data batch inference, one face model per actor (a GPU per actor with
  ``gpus_per_actor``); the driver writes the rows to the store as they come, so a killed job keeps
  what was written and a rerun embeds only the rest. An actor whose node dies is restarted and its
  batches run again.
"""

from __future__ import annotations

import os
import pickle
import socket
from collections.abc import Callable, Iterator

import numpy as np

from idleak.errors import IdleakError
from idleak.search import DEFAULT_BLOCK, TopK, exact_topk, merge_topk

ProgressFn = Callable[[int, int], None]
#: retries of a search task, and restarts of an embedding actor, whose worker or node died. An embedding
#: batch is retried without limit while it waits for its actor's restart (a bounded count is spent in a
#: second against the dead address, before the cluster notices the death); only a dying worker makes a
#: batch run again, never an error raised by the code.
MAX_RETRIES = 3


def _ray():
    try:
        import ray
    except ImportError:
        raise IdleakError("--engine ray needs Ray: pip install 'idleak[ray]'") from None
    return ray


def connect(address: str | None = None, timeout_s: float = 30.0) -> None:
    """Join the cluster at ``address`` (None: start or reuse a local one); one line if it does not answer."""
    ray = _ray()
    if ray.is_initialized():
        return
    if address and address != "auto":
        _probe(address, timeout_s)
    try:
        import idleak

        # ship this idleak to the workers (they need its dependencies installed, not idleak itself)
        ray.init(address=address, include_dashboard=False, log_to_driver=False, logging_level="ERROR",
                 runtime_env={"py_modules": [os.path.dirname(idleak.__file__)]})
    except Exception as exc:  # noqa: BLE001 - ConnectionError, RuntimeError, ValueError ... all one line
        text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise IdleakError(f"--ray-address {address}: no Ray cluster answers ({text[:200]})") from None


def _probe(address: str, timeout_s: float) -> None:
    """Fail fast (Ray itself retries for minutes) when nothing listens at HOST:PORT."""
    hostport = address.split("://", 1)[-1]
    host, _, port = hostport.rpartition(":")
    try:
        with socket.create_connection((host or "127.0.0.1", int(port)), timeout=timeout_s):
            pass
    except (OSError, ValueError) as exc:
        raise IdleakError(f"--ray-address {address}: no Ray cluster answers ({exc})") from None


def _search_shard(queries, shard, k, query_groups, shard_groups, offset, block_size, on_shard):  # on a worker
    if on_shard is not None:
        on_shard(offset)
    found = exact_topk(queries, shard, k, query_groups, shard_groups, block_size=block_size)
    return found.scores, np.where(found.indices >= 0, found.indices + offset, -1)


def ray_topk(
    queries: np.ndarray,
    gallery: np.ndarray,
    k: int,
    query_groups: np.ndarray | None = None,
    gallery_groups: np.ndarray | None = None,
    shards: int | None = None,
    block_size: int = DEFAULT_BLOCK,
    progress: ProgressFn | None = None,
    address: str | None = None,
    on_shard: Callable[[int], None] | None = None,
) -> TopK:
    """Exact top-k with the gallery sharded over the cluster's CPUs; equal to the local exact engine.

    ``on_shard`` is for fault tests only: called on the worker with the shard's first gallery row
    before the shard is searched (e.g. to hold a task while its node is killed).
    """
    ray = _ray()
    connect(address)
    queries = np.ascontiguousarray(queries, np.float32)
    gallery = np.ascontiguousarray(gallery, np.float32)
    k = max(1, int(k))
    shards = shards or max(1, int(ray.cluster_resources().get("CPU", 1)))
    bounds = np.linspace(0, len(gallery), shards + 1).astype(int)
    remote = ray.remote(num_cpus=1, max_retries=MAX_RETRIES, scheduling_strategy="SPREAD")(_search_shard)
    query_ref = ray.put(queries)
    groups_ref = ray.put(query_groups) if query_groups is not None else None
    pending = [remote.remote(query_ref, gallery[lo:hi], k, groups_ref,
                             None if gallery_groups is None else gallery_groups[lo:hi], lo, block_size, on_shard)
               for lo, hi in zip(bounds[:-1], bounds[1:]) if hi > lo]
    best_scores = np.full((len(queries), k), -np.inf, np.float32)
    best_index = np.full((len(queries), k), -1, np.int64)
    done = 0
    while pending:
        ready, pending = ray.wait(pending, num_returns=1)
        scores, found = ray.get(ready[0])
        merge_topk(best_scores, best_index, scores, found, k)
        done += 1
        if progress:
            progress(done, done + len(pending))
    return TopK(best_scores, best_index, engine="ray")


class _EmbedActor:
    """One face model per actor; turns a batch of (path, hash, identity) into pickled store rows."""

    def __init__(self, spec, aligned: bool, on_batch: Callable[[str], None] | None = None) -> None:
        from idleak.faces import load_embedder

        self.embedder = load_embedder(spec)
        self.aligned = aligned
        self.on_batch = on_batch

    def __call__(self, batch: dict) -> dict:
        from idleak.embedding import image_rows

        if self.on_batch is not None:
            self.on_batch(str(batch["path"][0]))

        out = [pickle.dumps(image_rows(self.embedder, str(p), str(h), None if i is None else str(i), self.aligned))
               for p, h, i in zip(batch["path"], batch["hash"], batch["identity"])]
        return {"rows": np.array(out, dtype=object)}


def ray_embed_rows(items: list[tuple[str, str, str | None]], spec, aligned: bool, actors: int | None = None,
                   gpus_per_actor: float = 0.0, batch_size: int = 8, address: str | None = None,
                   on_batch: Callable[[str], None] | None = None) -> Iterator[list[dict]]:
    """Store rows of each image of ``items`` (path, hash, identity), embedded by Ray Data actors, as they come.

    An actor whose node dies is restarted elsewhere and its batches run again (``max_restarts``,
    ``max_task_retries``). ``on_batch`` is for fault tests only: called in the actor with the batch's
    first path before the batch is embedded.
    """
    ray = _ray()
    connect(address)
    from ray import data as ray_data

    if not items:
        return
    actors = actors or max(1, int(ray.cluster_resources().get("CPU", 1)))
    ds = ray_data.from_items([{"path": p, "hash": h, "identity": i} for p, h, i in items])
    # two batches in flight per actor: each actor is kept busy, batches are spread over the actors
    # (not queued behind the actor next to the data), and a lost node holds few of them
    pool = ray_data.ActorPoolStrategy(size=actors, max_tasks_in_flight_per_actor=2)
    ds = ds.map_batches(_EmbedActor, fn_constructor_args=(spec, aligned, on_batch), batch_size=batch_size,
                        compute=pool, num_gpus=gpus_per_actor or None, num_cpus=1,
                        max_restarts=MAX_RETRIES, max_task_retries=-1, batch_format="numpy")
    for batch in ds.iter_batches(batch_size=batch_size, batch_format="numpy"):
        for payload in batch["rows"]:
            yield pickle.loads(payload)
