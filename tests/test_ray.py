"""The Ray engine on a local 2-node cluster: the same audit as the local engine, a cluster that does
not answer is one line, and a worker node killed mid-job costs retries, not results. Needs the ``ray``
extra (a missing Ray fails the test with a message)."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest


@pytest.fixture(scope="module")
def cluster():
    try:
        from ray.cluster_utils import Cluster
    except ImportError:
        pytest.fail("Ray is not installed: pip install 'idleak[ray]'")
    # a dead node is noticed after 3 failed health checks 1 s apart (Ray's default: 5 x 3 s)
    nodes = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "_system_config": {
        "health_check_period_ms": 1000, "health_check_failure_threshold": 3}})
    nodes.add_node(num_cpus=1)
    nodes.wait_for_nodes()
    yield nodes
    nodes.shutdown()


def run(*args: object) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "idleak", *map(str, args)], capture_output=True, text=True,
                          timeout=600)


def test_ray_audit_on_two_nodes_equals_the_local_engine(cluster, planted: dict, cache_dir: Path,
                                                        tmp_path: Path) -> None:
    import ray

    local = run("audit", "-s", planted["syn"], "-r", planted["real"], "-o", tmp_path / "local", "--cache", cache_dir,
                "-j", "2")
    assert local.returncode in (0, 1), local.stderr
    remote = run("audit", "-s", planted["syn"], "-r", planted["real"], "-o", tmp_path / "ray",
                 "--cache", tmp_path / "ray-cache", "--engine", "ray", "--ray-address", cluster.address)
    assert remote.returncode == local.returncode, remote.stderr[-2000:]
    a, b = (json.loads((tmp_path / x / "summary.json").read_text()) for x in ("local", "ray"))
    assert b["search"]["engine"] == "ray" and b["embedding"]["synthetic"]["n_new"] > 0  # really embedded on Ray
    for key in ("verdict", "n_flagged", "n_synthetic_faces", "n_real_faces", "threshold"):
        assert a[key] == b[key], key
    pa_, pb = (pq.read_table(tmp_path / x / "pairs.parquet").to_pylist() for x in ("local", "ray"))
    assert [(r["synthetic_path"], r["rank"], r["real_path"]) for r in pa_] == \
        [(r["synthetic_path"], r["rank"], r["real_path"]) for r in pb]
    np.testing.assert_allclose([r["similarity"] for r in pa_], [r["similarity"] for r in pb], atol=1e-6)
    ray.init(address=cluster.address)
    try:
        assert len([n for n in ray.nodes() if n["Alive"]]) == 2
    finally:
        ray.shutdown()


def test_ray_search_shards_merge_to_the_exact_result(cluster) -> None:
    import ray

    from idleak.ray_engine import connect, ray_topk
    from idleak.search import topk

    rng = np.random.default_rng(4)
    g = rng.standard_normal((6000, 32)).astype(np.float32)
    g /= np.linalg.norm(g, axis=1, keepdims=True)
    groups = np.arange(6000) % 60
    connect(cluster.address)
    try:
        result = ray_topk(g[:300], g, 4, groups[:300], groups, shards=5)
    finally:
        ray.shutdown()
    exact = topk(g[:300], g, 4, query_groups=groups[:300], gallery_groups=groups)
    assert np.array_equal(result.indices, exact.indices) and np.allclose(result.scores, exact.scores)


def test_a_ray_address_that_does_not_answer_is_one_line(planted: dict, tmp_path: Path) -> None:
    result = run("audit", "-s", planted["syn"], "-r", planted["real"], "-o", tmp_path / "o", "--engine", "ray",
                 "--ray-address", "127.0.0.1:9")
    assert result.returncode == 2 and "no Ray cluster answers" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def kill_worker_node_mid_job(cluster, job):
    """Run ``job(hold)`` while the worker node is killed; ``hold`` (the engine's fault-test hook) blocks
    a task that runs on the worker node until that node is gone. Returns the job's result."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    from idleak.ray_engine import connect

    class Gate:
        """A Ray actor pinned to the head node: a task on the doomed node says it has started, then waits."""

        def __init__(self) -> None:
            self.arrived, self.released = asyncio.Event(), asyncio.Event()

        async def arrive(self) -> None:
            self.arrived.set()

        async def wait_arrival(self) -> None:
            await self.arrived.wait()

        async def release(self) -> None:
            self.released.set()

        async def wait_release(self) -> None:
            await self.released.wait()

    connect(cluster.address)
    head = ray.get_runtime_context().get_node_id()
    assert head == cluster.head_node.node_id  # the driver is on the head node, the victim is not
    victim = next(iter(cluster.worker_nodes))
    gate = ray.remote(num_cpus=0)(Gate).options(
        scheduling_strategy=NodeAffinitySchedulingStrategy(head, soft=False)).remote()
    doomed = victim.node_id

    def hold(*_: object) -> None:
        if ray.get_runtime_context().get_node_id() == doomed:
            ray.get(gate.arrive.remote())
            ray.get(gate.wait_release.remote())  # never returns: the node dies first
        else:  # the head's work waits until the worker node has work, so that the worker gets some
            ray.get(gate.wait_arrival.remote())

    pool = ThreadPoolExecutor(1)
    try:
        running = pool.submit(job, hold)
        arrived = gate.wait_arrival.remote().future()
        wait([running, arrived], timeout=300, return_when=FIRST_COMPLETED)
        assert arrived.done() and not running.done(), "no work ran on the worker node"
        cluster.remove_node(victim, allow_graceful=False)
        ray.get(gate.release.remote())
        return running.result(timeout=300)  # the held task only ends with its node: it was retried
    finally:
        ray.shutdown()  # also ends a job that hangs, before its thread is let go
        pool.shutdown(wait=False, cancel_futures=True)
        cluster.add_node(num_cpus=1)  # the next test has two nodes again
        cluster.wait_for_nodes()


def test_ray_search_survives_a_worker_node_killed_mid_job(cluster) -> None:
    from idleak.ray_engine import ray_topk
    from idleak.search import topk

    rng = np.random.default_rng(7)
    g = rng.standard_normal((8000, 32)).astype(np.float32)
    g /= np.linalg.norm(g, axis=1, keepdims=True)
    result = kill_worker_node_mid_job(cluster, lambda hold: ray_topk(g[:400], g, 5, shards=6, on_shard=hold))
    exact = topk(g[:400], g, 5)
    assert np.array_equal(result.indices, exact.indices) and np.allclose(result.scores, exact.scores)


def test_ray_embedding_survives_a_worker_node_killed_mid_job(cluster, faces_root: Path) -> None:
    from idleak.embedding import image_rows
    from idleak.faces import load_embedder
    from idleak.ray_engine import ray_embed_rows

    photos = [p for s in (1, 2) for p in sorted((faces_root / "orl" / f"s{s}").glob("*.pgm"))[:4]]
    items = [(str(p), f"h{i}", p.parent.name) for i, p in enumerate(photos)]
    rows = kill_worker_node_mid_job(cluster, lambda hold: [r for rs in ray_embed_rows(
        items, "dlib", False, actors=2, batch_size=2, on_batch=hold) for r in rs])
    local = load_embedder("dlib")
    expected = [r for p, h, i in items for r in image_rows(local, p, h, i, False)]
    assert sorted(r["hash"] for r in rows) == [r["hash"] for r in expected]  # each image once, none lost
    got = {r["hash"]: r for r in rows}
    assert all("vector" in r for r in expected)  # every photo has a face
    for want in expected:
        np.testing.assert_allclose(got[want["hash"]]["vector"], want["vector"], atol=1e-5)
