"""The Ray engine on a local 2-node cluster: the same audit as the local engine, and a cluster that
does not answer is one line. Needs the ``ray`` extra (a missing Ray fails the test with a message)."""

from __future__ import annotations

import json
import subprocess
import sys
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
    nodes = Cluster(initialize_head=True, head_node_args={"num_cpus": 1})
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
