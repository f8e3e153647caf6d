"""Large datasets: the store at 10^7 rows and the audit-scale search at 10^6 x 10^6, on random unit
vectors with planted near-duplicates (precomputed embeddings: this measures the system, not the model).

    python bench/bench_large.py store  --rows 10000000 --dim 128 --fetch 1000000 --dir /tmp/idleak-bench
    python bench/bench_large.py search --n 1000000 --dim 128 --dups 1000 --sample 100000
    python bench/bench_large.py ray    --n 100000 --dim 128
    python bench/bench_large.py embed  --images 320 --faces ../shared/data/faces/orl
    python bench/bench_large.py real   --store /work/cache/store-lfw --store /work/cache/store-utk

``store``: builds a store of ROWS rows (segments of 10^6 rows, as ``EmbeddingStore.append`` writes
them), then a fresh process opens it, looks up FETCH random keys and reads their vectors and
metadata; it prints seconds and the process's peak RSS (VmHWM) against the bare interpreter's.
``search``: SYN and REAL of N faces each; the first DUPS SYN faces are noisy copies of REAL faces
(cosine about 0.96). The ivf engine runs on all of SYN with ``bound = threshold - 0.05``; exact
search runs on a SAMPLE of SYN (all planted faces included) against all of REAL, and the flags,
recall@1 and the extrapolated time of a full exact search are compared in the same run.
``ray``: the search of an N x N audit (k=5, exact) on a local 2-node Ray cluster (1 CPU per node)
against the local exact engine on the same 2 cores, in the same run; results must be identical.
``embed``: IMAGES photos embedded into a fresh store by the local engine (2 worker processes, the
parent embeds batches) and by Ray Data (2 actors on the 2-node cluster), in the same run: start-up
(until the first image is written) and steady-state images per second after it; vectors must agree.
``search`` and ``real`` also report the recall@1 target's outcome (``--recall``, default 0.99): the
nprobe chosen on the check sample, the sample's recall@1, or the fallback to exact search.
``real``: recall@1 of ivf on real face embeddings read from existing stores (read only): one face of
each person with 2 or more is a query, every other face (all stores together) the gallery.
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


def search(n: int, dim: int, dups: int, sample: int, threshold: float, nprobe: int | None,
           recall: float | None) -> dict:
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
    result = ivf_topk(syn, real, 5, bound=threshold - 0.05, ivf=ivf, nprobe=nprobe, recall=recall or None)
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
        "nlist": len(ivf.centroids), "nprobe": int(ivf.index.nprobe), "engine": result.engine,
        "details": result.details,
        "ivf_build_s": t_build, "ivf_search_s": t_search, "ivf_total_s": t_build + t_search,
        "n_rescored_exactly": result.n_rescored, "n_certified": int(result.exact.sum()),
        "n_flagged": int(flagged.sum()), "planted_flagged_with_right_match": planted_found,
        "sample": sample, "flags_identical_on_sample": bool(same.all()),
        "recall_flagged_pairs": float(np.mean(result.indices[sub][exact_flags, 0] == exact.indices[exact_flags, 0])),
        "recall_at_1_all": float(np.mean(result.indices[sub, 0] == exact.indices[:, 0])),
        "recall_at_1_score_ge_0.5": float(np.mean(result.indices[sub][strong, 0] == exact.indices[strong, 0])),
        "exact_sample_s": t_exact, "exact_full_extrapolated_s": t_exact * n / sample,
        "speedup_vs_exact": (t_exact * n / sample) / (t_build + t_search),
        "recall_at_1_outside_check_sample": held_out_recall(result, exact, sub, n),
        "peak_rss_mb_after_ivf": rss_ivf, "peak_rss_mb": peak_rss_mb(), "baseline_rss_mb": base,
    }


def held_out_recall(result, exact, rows: np.ndarray, n: int, check: int = 1000) -> float:
    """recall@1 on ``rows`` that the engine's check sample (searched exactly) did not cover."""
    from idleak.search import TopK
    from idleak.search_ivf import recall_at_1

    checked = np.sort(np.random.default_rng(0).choice(n, min(check, n), replace=False))  # as ivf_topk draws it
    keep = ~np.isin(rows, checked)
    return recall_at_1(TopK(result.scores[rows[keep]], result.indices[rows[keep]]),
                       TopK(exact.scores[keep], exact.indices[keep]))


def real_recall(stores: list[Path], recall: float | None) -> dict:
    """ivf vs exact on real embeddings: one face per person (2+ faces) queries all the other faces."""
    from idleak.search import topk
    from idleak.search_ivf import build_ivf, ivf_topk, recall_at_1
    from idleak.store import EmbeddingStore

    vectors, people = [], []
    for root in stores:
        store = EmbeddingStore.open(root)
        rows = np.arange(store.n_rows)
        meta = store.meta(rows, ["identity", "reason"])
        face = np.array([r is None for r in meta["reason"]])
        vectors.append(store.vectors(rows[face]))
        people += [f"{root.name}/{i}" if i is not None else None for i, f in zip(meta["identity"], face) if f]
    allv = np.concatenate(vectors)
    first: dict[str, int] = {}
    counts: dict[str, int] = {}
    for row, who in enumerate(people):
        if who is not None:
            counts[who] = counts.get(who, 0) + 1
            first.setdefault(who, row)
    q_rows = np.array(sorted(r for who, r in first.items() if counts[who] >= 2))
    g_rows = np.setdiff1d(np.arange(len(allv)), q_rows)
    q, g = allv[q_rows], allv[g_rows]
    t0 = time.perf_counter()
    exact = topk(q, g, 5)
    t_exact = time.perf_counter() - t0
    ivf = build_ivf(g)
    plain = ivf_topk(q, g, 5, ivf=ivf, recall=None)
    curve = {}  # recall@1 per nprobe, and the share of the lists it scans
    probe = 1
    while probe <= len(ivf.centroids):
        curve[probe] = round(recall_at_1(ivf_topk(q, g, 5, ivf=ivf, nprobe=probe, recall=None), exact), 4)
        probe *= 2
    t1 = time.perf_counter()
    target = ivf_topk(q, g, 5, ivf=ivf, recall=recall)
    t_target = time.perf_counter() - t1
    same_person = np.array([people[g_rows[i]] == people[r] for i, r in zip(exact.indices[:, 0], q_rows)])

    return {"stores": [str(r) for r in stores], "n_queries": len(q), "n_gallery": len(g),
            "true_best_is_same_person": float(same_person.mean()),
            "true_best_score_percentiles_1_50_99": np.percentile(exact.scores[:, 0], [1, 50, 99]).round(3).tolist(),
            "nlist": len(ivf.centroids), "default_nprobe": int(plain.details["nprobe"]),
            "recall_at_1_default_nprobe": recall_at_1(plain, exact), "recall_at_1_by_nprobe": curve,
            "with_target": {"engine": target.engine, **target.details,
                            "recall_at_1_all": recall_at_1(target, exact),
                            "recall_at_1_outside_check_sample": held_out_recall(target, exact, np.arange(len(q)),
                                                                                len(q))},
            "exact_s": t_exact, "ivf_with_target_s": t_target}


def embed_engines(images: int, faces: Path) -> dict:
    """Local engine vs Ray Data on the same photos: start-up and steady-state images per second."""
    import tempfile

    import ray
    from ray.cluster_utils import Cluster

    from idleak.embedding import embed_records
    from idleak.faces import parse_model
    from idleak.sources import scan_folder
    from idleak.store import EmbeddingStore

    records = scan_folder(faces)[:images]
    spec = parse_model("dlib")
    out: dict = {"images": len(records), "faces": str(faces)}
    nodes = Cluster(initialize_head=True, head_node_args={"num_cpus": 1})
    nodes.add_node(num_cpus=1)
    nodes.wait_for_nodes()
    vectors = {}
    try:
        for engine in ("local", "ray"):
            with tempfile.TemporaryDirectory() as tmp:
                store = EmbeddingStore.create(tmp, "bench", 128)
                times: list[tuple[int, float]] = []
                t0 = time.perf_counter()
                def note(done: int, total: int, times: list = times, t0: float = t0) -> None:
                    times.append((done, time.perf_counter() - t0))

                embed_records(records, store, spec, workers=2, engine=engine, ray_address=nodes.address,
                              progress=note)
                total = time.perf_counter() - t0
                first = next((d, t) for d, t in times if d > 0)
                last = times[-1]
                out[engine] = {"total_s": total, "startup_s": first[1], "first_images": first[0],
                               "steady_images_per_s": (last[0] - first[0]) / max(last[1] - first[1], 1e-9)}
                rows = np.arange(store.n_rows)
                meta = store.meta(rows, ["hash", "face", "reason"])
                face = np.array([r is None for r in meta["reason"]])
                keys = [(h, int(f)) for h, f, ok in zip(meta["hash"], meta["face"], face) if ok]
                vectors[engine] = dict(zip(keys, store.vectors(rows[face])))
                out[engine]["faces"] = len(keys)
            if engine == "ray":
                ray.shutdown()
    finally:
        nodes.shutdown()
    out["ray_vs_local_total"] = out["ray"]["total_s"] / out["local"]["total_s"]
    out["ray_vs_local_steady_rate"] = out["ray"]["steady_images_per_s"] / out["local"]["steady_images_per_s"]
    a, b = vectors["local"], vectors["ray"]  # rows are written in another order: match them by (file, face)
    out["same_faces"] = a.keys() == b.keys()
    out["worst_cosine_local_vs_ray"] = min(float(a[key] @ b[key]) for key in a.keys() & b.keys())
    return out


def tree_cpu_s() -> float:
    """CPU seconds used so far by this process and every process it started (Ray's included)."""
    import psutil

    me = psutil.Process()
    total = 0.0
    for proc in [me, *me.children(recursive=True)]:
        try:
            t = proc.cpu_times()
        except psutil.Error:
            continue
        total += t.user + t.system
    return total


def ray_overhead(n: int, dim: int, shards: int | None) -> dict:
    import ray
    from ray.cluster_utils import Cluster

    from idleak.ray_engine import connect, ray_topk
    from idleak.search import exact_topk

    rng = np.random.default_rng(5)
    real, syn = unit(rng, n, dim), unit(rng, n, dim)
    t0, c0 = time.perf_counter(), tree_cpu_s()
    local = exact_topk(syn, real, 5)
    t_local, cpu_local = time.perf_counter() - t0, tree_cpu_s() - c0
    t_start = time.perf_counter()
    nodes = Cluster(initialize_head=True, head_node_args={"num_cpus": 1})
    nodes.add_node(num_cpus=1)
    nodes.wait_for_nodes()
    t_cluster = time.perf_counter() - t_start
    try:
        t1 = time.perf_counter()
        connect(nodes.address)
        t_connect = time.perf_counter() - t1
        t2, c2 = time.perf_counter(), tree_cpu_s()
        remote = ray_topk(syn, real, 5, shards=shards)
        t_ray, cpu_ray = time.perf_counter() - t2, tree_cpu_s() - c2
        t3, c3 = time.perf_counter(), tree_cpu_s()  # again, with the workers started (processes, imports)
        again = ray_topk(syn, real, 5, shards=shards)
        t_warm, cpu_warm = time.perf_counter() - t3, tree_cpu_s() - c3
    finally:
        ray.shutdown()
        nodes.shutdown()
    return {"n": n, "dim": dim, "shards": shards or "one per CPU", "local_s": t_local, "cluster_start_s": t_cluster, "ray_connect_s": t_connect, "ray_search_s": t_ray,
            "overhead_search": t_ray / t_local - 1, "overhead_with_connect": (t_ray + t_connect) / t_local - 1,
            "ray_search_warm_s": t_warm, "overhead_search_warm": t_warm / t_local - 1,
            # CPU seconds of every process involved (less sensitive than wall time to other jobs' load)
            "cpu_local_s": cpu_local, "cpu_ray_s": cpu_ray, "cpu_ray_warm_s": cpu_warm,
            "cpu_overhead": cpu_ray / cpu_local - 1, "cpu_overhead_warm": cpu_warm / cpu_local - 1,
            "identical": bool(np.array_equal(local.indices, remote.indices)
                              and np.array_equal(local.indices, again.indices))}


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
    q.add_argument("--recall", type=float, default=0.99, help="recall@1 target (0: none, the nprobe given)")
    r = sub.add_parser("ray")
    r.add_argument("--n", type=int, default=100_000)
    r.add_argument("--dim", type=int, default=128)
    r.add_argument("--shards", type=int, default=None, help="gallery shards (default: the engine's, one per CPU)")
    e = sub.add_parser("embed")
    e.add_argument("--images", type=int, default=320)
    e.add_argument("--faces", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "data" / "faces" / "orl")
    rr = sub.add_parser("real")
    rr.add_argument("--store", type=Path, action="append", required=True)
    rr.add_argument("--recall", type=float, default=0.99)
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
        print(json.dumps({"ray": ray_overhead(args.n, args.dim, args.shards)}))
    elif args.what == "embed":
        print(json.dumps({"embed": embed_engines(args.images, args.faces)}))
    elif args.what == "real":
        print(json.dumps({"real": real_recall(args.store, args.recall or None)}))
    else:
        print(json.dumps({"search": search(args.n, args.dim, args.dups, args.sample, args.threshold, args.nprobe,
                                           args.recall)}))


if __name__ == "__main__":
    main()
