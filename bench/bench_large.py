"""Large datasets: the store at 10^7 rows and the audit-scale search at 10^6 x 10^6, on random unit
vectors with planted near-duplicates (precomputed embeddings: this measures the system, not the model).

    python bench/bench_large.py store  --rows 10000000 --dim 128 --fetch 1000000 --dir /tmp/idleak-bench
    python bench/bench_large.py search --n 1000000 --dim 128 --dups 1000 --sample 100000
    python bench/bench_large.py ray    --n 100000 --dim 128

``store``: builds a store of ROWS rows (segments of 10^6 rows, as ``EmbeddingStore.append`` writes
them), then a fresh process opens it, looks up FETCH random keys and reads their vectors and
metadata; it prints seconds and the process's peak RSS (VmHWM) against the bare interpreter's.
``search``: SYN and REAL of N faces each; the first DUPS SYN faces are noisy copies of REAL faces
(cosine about 0.96). The ivf engine runs on all of SYN with ``bound = threshold - 0.05``; exact
search runs on a SAMPLE of SYN (all planted faces included) against all of REAL, and the flags,
recall@1 and the extrapolated time of a full exact search are compared in the same run.
``ray``: the search of an N x N audit (k=5, exact) on a local 2-node Ray cluster (1 CPU per node)
against the local exact engine on the same 2 cores, in the same run; results must be identical.
"""

from __future__ import annotations

import argparse
import binascii
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa

SEGMENT = 1_000_000


def peak_rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def reset_peak_rss() -> float:
    """Reset VmHWM to the current RSS (Linux: write 5 to clear_refs); returns the current RSS in MB."""
    Path("/proc/self/clear_refs").write_text("5")
    return peak_rss_mb()


def unit(rng: np.random.Generator, n: int, d: int) -> np.ndarray:
    out = rng.standard_normal((n, d), dtype=np.float32)
    out /= np.linalg.norm(out, axis=1, keepdims=True)
    return out


def segment_hashes(seg: int, n: int) -> np.ndarray:
    raw = np.random.default_rng(10_000 + seg).bytes(16 * n)
    return np.frombuffer(binascii.hexlify(raw), dtype="S32").astype("U32")


def segment_vectors(seg: int, n: int, d: int) -> np.ndarray:
    return unit(np.random.default_rng(seg), n, d)


def build_store(root: Path, rows: int, dim: int) -> dict:
    from idleak.store import EmbeddingStore, meta_schema

    store = EmbeddingStore.create(root, "bench-random", dim)
    schema = meta_schema()
    start = time.perf_counter()
    for seg, first in enumerate(range(0, rows, SEGMENT)):
        n = min(SEGMENT, rows - first)
        hashes = segment_hashes(seg, n)
        table = pa.table({
            "hash": pa.array(hashes.tolist(), pa.string()), "aligned": pa.array(np.ones(n, bool)),
            "path": pa.array([f"/data/img/{first + i:09d}.jpg" for i in range(n)], pa.string()),
            "identity": pa.array([f"id{(first + i) // 20}" for i in range(n)], pa.string()),
            "face": pa.array(np.zeros(n, np.int16)), "n_faces": pa.array(np.ones(n, np.int16)),
            **{c: pa.nulls(n, schema.field(c).type) for c in ("reason", "detail", "width", "height", "box",
                                                              "det_score", "landmarks")},
        }, schema=schema)
        store.append(table, segment_vectors(seg, n, dim))
        print(f"  segment {seg}: {first + n} rows, {time.perf_counter() - start:.0f} s", flush=True)
    seconds = time.perf_counter() - start
    size = sum(f.stat().st_size for f in root.rglob("*") if f.is_file())
    return {"rows": rows, "dim": dim, "build_s": seconds, "rows_per_s": rows / seconds, "disk_gb": size / 1e9}


def fetch(root: Path, n_fetch: int, seed: int = 1) -> dict:
    base = peak_rss_mb()
    t0 = time.perf_counter()
    from idleak.store import EmbeddingStore

    store = EmbeddingStore.open(root)
    rows_total = store.n_rows
    t_open = time.perf_counter() - t0
    rng = np.random.default_rng(seed)
    want = np.sort(rng.choice(rows_total, n_fetch, replace=False))
    segs = want // SEGMENT
    hashes = np.empty(n_fetch, "U32")
    for seg in np.unique(segs):  # regenerate the keys of the chosen rows (not timed as store work)
        sel = segs == seg
        n = min(SEGMENT, rows_total - int(seg) * SEGMENT)
        hashes[sel] = segment_hashes(int(seg), n)[want[sel] - int(seg) * SEGMENT]
    perm = rng.permutation(n_fetch)
    hashes, want = hashes[perm], want[perm]
    before = reset_peak_rss()  # the store's own work is measured from here
    t1 = time.perf_counter()
    first, count = store.lookup(hashes, True)
    t_lookup = time.perf_counter() - t1
    t2 = time.perf_counter()
    vectors = store.vectors(first)
    t_vectors = time.perf_counter() - t2
    t3 = time.perf_counter()
    meta = store.meta(first, ["path", "identity"])
    t_meta = time.perf_counter() - t3
    peak = peak_rss_mb()
    check = rng.choice(n_fetch, 1000, replace=False)
    ok = all(np.array_equal(vectors[i], segment_vectors(int(want[i] // SEGMENT), min(SEGMENT, rows_total - int(
        want[i] // SEGMENT) * SEGMENT), store.dim)[want[i] % SEGMENT]) for i in check[:5])
    return {"rows": rows_total, "fetched": n_fetch, "found": int((first == want).sum()), "vectors_checked": ok,
            "paths_ok": bool(meta["path"][0] == f"/data/img/{want[0]:09d}.jpg"),
            "open_s": t_open, "lookup_s": t_lookup, "vectors_s": t_vectors, "meta_s": t_meta,
            "total_s": t_open + t_lookup + t_vectors + t_meta, "peak_rss_mb": peak,
            "rss_before_lookup_mb": before, "baseline_rss_mb": base}


def search(n: int, dim: int, dups: int, sample: int, threshold: float, nprobe: int | None) -> dict:
    from idleak.search import topk
    from idleak.search_ivf import build_ivf, ivf_topk

    base = peak_rss_mb()
    rng = np.random.default_rng(3)
    real = np.concatenate([unit(rng, min(262_144, n - s), dim) for s in range(0, n, 262_144)])
    syn = np.concatenate([unit(rng, min(262_144, n - s), dim) for s in range(0, n, 262_144)])
    planted = rng.choice(n, dups, replace=False)
    syn[:dups] = real[planted] + 0.28 / np.sqrt(dim) * rng.standard_normal((dups, dim), dtype=np.float32)
    syn[:dups] /= np.linalg.norm(syn[:dups], axis=1, keepdims=True)
    t0 = time.perf_counter()
    ivf = build_ivf(real)
    t_build = time.perf_counter() - t0
    t1 = time.perf_counter()
    result = ivf_topk(syn, real, 5, bound=threshold - 0.05, ivf=ivf, nprobe=nprobe)
    t_search = time.perf_counter() - t1
    rss_ivf = peak_rss_mb()
    flagged = result.scores[:, 0] > threshold
    planted_found = float(np.mean(flagged[:dups] & (result.indices[:dups, 0] == planted)))
    sub = np.r_[np.arange(dups), dups + rng.choice(n - dups, sample - dups, replace=False)]
    t2 = time.perf_counter()
    exact = topk(syn[sub], real, 5)
    t_exact = time.perf_counter() - t2
    exact_flags = exact.scores[:, 0] > threshold
    same = flagged[sub] == exact_flags
    strong = exact.scores[:, 0] >= 0.5
    return {
        "n_syn": n, "n_real": n, "dim": dim, "planted": dups, "threshold": threshold,
        "nlist": len(ivf.centroids), "nprobe": int(ivf.index.nprobe),
        "ivf_build_s": t_build, "ivf_search_s": t_search, "ivf_total_s": t_build + t_search,
        "n_rescored_exactly": result.n_rescored, "n_certified": int(result.exact.sum()),
        "n_flagged": int(flagged.sum()), "planted_flagged_with_right_match": planted_found,
        "sample": sample, "flags_identical_on_sample": bool(same.all()),
        "recall_flagged_pairs": float(np.mean(result.indices[sub][exact_flags, 0] == exact.indices[exact_flags, 0])),
        "recall_at_1_all": float(np.mean(result.indices[sub, 0] == exact.indices[:, 0])),
        "recall_at_1_score_ge_0.5": float(np.mean(result.indices[sub][strong, 0] == exact.indices[strong, 0])),
        "exact_sample_s": t_exact, "exact_full_extrapolated_s": t_exact * n / sample,
        "speedup_vs_exact": (t_exact * n / sample) / (t_build + t_search),
        "peak_rss_mb_after_ivf": rss_ivf, "peak_rss_mb": peak_rss_mb(), "baseline_rss_mb": base,
    }


def ray_overhead(n: int, dim: int) -> dict:
    import ray
    from ray.cluster_utils import Cluster

    from idleak.ray_engine import connect, ray_topk
    from idleak.search import exact_topk

    rng = np.random.default_rng(5)
    real, syn = unit(rng, n, dim), unit(rng, n, dim)
    t0 = time.perf_counter()
    local = exact_topk(syn, real, 5)
    t_local = time.perf_counter() - t0
    t_start = time.perf_counter()
    nodes = Cluster(initialize_head=True, head_node_args={"num_cpus": 1})
    nodes.add_node(num_cpus=1)
    nodes.wait_for_nodes()
    t_cluster = time.perf_counter() - t_start
    try:
        t1 = time.perf_counter()
        connect(nodes.address)
        t_connect = time.perf_counter() - t1
        t2 = time.perf_counter()
        remote = ray_topk(syn, real, 5, shards=8)
        t_ray = time.perf_counter() - t2
    finally:
        ray.shutdown()
        nodes.shutdown()
    return {"n": n, "dim": dim, "local_s": t_local, "cluster_start_s": t_cluster, "ray_connect_s": t_connect, "ray_search_s": t_ray,
            "overhead_search": t_ray / t_local - 1, "overhead_with_connect": (t_ray + t_connect) / t_local - 1,
            "identical": bool(np.array_equal(local.indices, remote.indices))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="what", required=True)
    s = sub.add_parser("store")
    s.add_argument("--rows", type=int, default=10_000_000)
    s.add_argument("--dim", type=int, default=128)
    s.add_argument("--fetch", type=int, default=1_000_000)
    s.add_argument("--dir", type=Path, default=Path("/tmp/idleak-bench"))
    s.add_argument("--reuse", action="store_true", help="keep an existing store of the same size")
    f = sub.add_parser("fetch")  # the child of `store`
    f.add_argument("root", type=Path)
    f.add_argument("--fetch", type=int)
    q = sub.add_parser("search")
    q.add_argument("--n", type=int, default=1_000_000)
    q.add_argument("--dim", type=int, default=128)
    q.add_argument("--dups", type=int, default=1000)
    q.add_argument("--sample", type=int, default=100_000)
    q.add_argument("--threshold", type=float, default=0.8)
    q.add_argument("--nprobe", type=int, default=None)
    r = sub.add_parser("ray")
    r.add_argument("--n", type=int, default=100_000)
    r.add_argument("--dim", type=int, default=128)
    args = parser.parse_args()
    if args.what == "store":
        root = args.dir / f"store-{args.rows}-{args.dim}"
        built = None
        if not (args.reuse and (root / "store.json").is_file()):
            import shutil

            shutil.rmtree(root, ignore_errors=True)
            built = build_store(root, args.rows, args.dim)
            print(json.dumps({"build": built}), flush=True)
        child = subprocess.run([sys.executable, __file__, "fetch", str(root), "--fetch", str(args.fetch)],
                               capture_output=True, text=True, check=True)
        print(child.stdout.strip())
    elif args.what == "fetch":
        print(json.dumps({"fetch": fetch(args.root, args.fetch)}))
    elif args.what == "ray":
        print(json.dumps({"ray": ray_overhead(args.n, args.dim)}))
    else:
        print(json.dumps({"search": search(args.n, args.dim, args.dups, args.sample, args.threshold, args.nprobe)}))


if __name__ == "__main__":
    main()
