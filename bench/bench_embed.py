"""Embedding throughput: dlib's ResNet on its ONNX port vs dlib's own runtime, per stage and end to end.

    python bench/bench_embed.py [--images 200] [--faces ../shared/data/faces/orl] [--workers 2]

Three measurements, all in one run on the same images:

1. Aligned chips only (the network): dlib's ``compute_face_descriptor`` on 150x150 chips in
   ``--workers`` processes (dlib computes one face at a time) vs the ONNX port in one onnxruntime
   session (intra-op threads = ``--workers``) in batches of 64. Also the worst cosine between them.
2. Per-stage breakdown, one process, ms per image: decode, detect (HOG), landmarks (5 points),
   align (dlib's chip), embed (each runtime; the port in batches), store (Parquet part writes).
3. End to end (``embed_records`` into a fresh store, ``--workers`` processes): today's pipeline
   (``--runtime dlib``: each worker embeds its faces) vs the batched one (``--runtime onnx``:
   workers send chips, the parent embeds batches).
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np

from idleak.embedding import embed_records
from idleak.faces import detect as det
from idleak.faces import parse_model
from idleak.faces.dlib_backend import CHIP_PADDING, CHIP_SIZE, RESNET_FILE, DlibEmbedder
from idleak.images import load_rgb
from idleak.sources import scan_folder
from idleak.store import EmbeddingStore

DEFAULT_FACES = Path(__file__).resolve().parents[2] / "shared" / "data" / "faces" / "orl"
_NET = None


def _dlib_descriptors(chips: list[np.ndarray]) -> list[np.ndarray]:
    return [np.asarray(_NET.compute_face_descriptor(chip), np.float32) for chip in chips]


def dlib_chip_rate(chips: list[np.ndarray], workers: int) -> tuple[float, np.ndarray]:
    """Chips per second of dlib's own descriptor in ``workers`` forked processes."""
    import dlib

    global _NET
    _NET = dlib.face_recognition_model_v1(det.model_file(RESNET_FILE))
    _dlib_descriptors(chips[:2])  # warm-up
    parts = [chips[i::workers] for i in range(workers)]
    with multiprocessing.get_context("fork").Pool(workers) as pool:
        start = time.perf_counter()
        results = pool.map(_dlib_descriptors, parts)
        seconds = time.perf_counter() - start
    out = np.zeros((len(chips), 128), np.float32)
    for i, part in enumerate(results):
        out[i::workers] = np.stack(part)
    return len(chips) / seconds, out


def port_chip_rate(chips: list[np.ndarray], workers: int, cache: str) -> tuple[float, np.ndarray]:
    port = DlibEmbedder(runtime="onnx", threads=workers, batch_size=64, cache_root=cache)
    port.embed_chips(chips[:64])  # warm-up
    start = time.perf_counter()
    vectors = port.embed_chips(chips)
    seconds = time.perf_counter() - start
    return len(chips) / seconds, np.stack(vectors)


def stages(records, cache: str) -> dict[str, float]:
    """Seconds per stage over ``records`` in one process (embed: both runtimes)."""
    import dlib

    predictor = det.shape_predictor(5)
    det.hog_detector()
    times = dict.fromkeys(["decode", "detect", "landmarks", "align"], 0.0)
    chips, rows = [], []
    for record in records:
        t0 = time.perf_counter()
        image = load_rgb(record.path)
        t1 = time.perf_counter()
        found = det.detect(image)
        t2 = time.perf_counter()
        shapes = [predictor(image, rect) for rect, _ in found]
        t3 = time.perf_counter()
        chips += [np.asarray(dlib.get_face_chip(image, shape, CHIP_SIZE, CHIP_PADDING)) for shape in shapes]
        t4 = time.perf_counter()
        for key, seconds in zip(times, (t1 - t0, t2 - t1, t3 - t2, t4 - t3)):
            times[key] += seconds
        rows.append(len(shapes))
    own = DlibEmbedder(runtime="dlib")
    start = time.perf_counter()
    vectors = own.embed_chips(chips)
    times["embed (dlib)"] = time.perf_counter() - start
    port = DlibEmbedder(runtime="onnx", threads=1, batch_size=64, cache_root=cache)
    port.embed_chips(chips[:8])
    start = time.perf_counter()
    port.embed_chips(chips)
    times["embed (onnx port, 1 thread)"] = time.perf_counter() - start
    with tempfile.TemporaryDirectory() as folder:
        store = EmbeddingStore.create(folder, own.model_id, 128)
        start = time.perf_counter()
        with store.writer(flush_rows=256) as writer:
            vec = iter(vectors)
            for record, n in zip(records, rows):
                base = {"hash": record.path, "aligned": False, "path": record.path, "identity": record.identity}
                if n == 0:
                    writer.add_image([{**base, "face": -1, "n_faces": 0, "reason": "no_face", "detail": ""}])
                else:
                    writer.add_image([{**base, "face": i, "n_faces": n, "vector": next(vec)} for i in range(n)])
        times["store"] = time.perf_counter() - start
    return times


def end_to_end(records, runtime: str, workers: int, cache: str) -> float:
    spec = parse_model("dlib", runtime=runtime, cache_root=cache)
    embedder = DlibEmbedder(runtime=runtime, cache_root=cache)
    with tempfile.TemporaryDirectory() as folder:
        store = EmbeddingStore.create(folder, embedder.model_id, embedder.dim)
        start = time.perf_counter()
        stats = embed_records(records, store, spec, workers=workers, embedder=embedder)
        seconds = time.perf_counter() - start
        assert stats.n_new == len(records)
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--faces", default=str(DEFAULT_FACES))
    parser.add_argument("--images", type=int, default=200)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    records = [r for r in scan_folder(args.faces) if r.identity][: args.images]
    n, workers = len(records), args.workers
    cache = tempfile.mkdtemp(prefix="idleak-bench-models-")
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, load {os.getloadavg()[0]:.1f}; "
          f"{n} images from {args.faces}; {workers} workers")

    times = stages(records, cache)
    print("\nper stage, 1 process (ms per image):")
    for key, seconds in times.items():
        print(f"  {key:28s} {1000 * seconds / n:8.2f}")
    common = sum(times[k] for k in ("decode", "detect", "landmarks", "align", "store"))
    print(f"  {'total with dlib runtime':28s} {1000 * (common + times['embed (dlib)']) / n:8.2f}")
    print(f"  {'total with onnx port':28s} {1000 * (common + times['embed (onnx port, 1 thread)']) / n:8.2f}")

    predictor = det.shape_predictor(5)
    import dlib

    chips = []
    for record in records:
        image = load_rgb(record.path)
        for rect, _ in det.detect(image)[:1]:
            chips.append(np.asarray(dlib.get_face_chip(image, predictor(image, rect), CHIP_SIZE, CHIP_PADDING)))
    dlib_rate, theirs = dlib_chip_rate(chips, workers)
    port_rate, ours = port_chip_rate(chips, workers, cache)
    cosine = (ours * theirs).sum(1) / np.linalg.norm(ours, axis=1) / np.linalg.norm(theirs, axis=1)
    print(f"\naligned chips ({len(chips)}), {workers} cores:")
    print(f"  dlib descriptor, {workers} processes   {dlib_rate:8.1f} chips/s  (baseline)")
    print(f"  onnx port, {workers} threads, batch 64 {port_rate:8.1f} chips/s  x{port_rate / dlib_rate:.2f}"
          f"  (worst cosine {cosine.min():.7f})")

    old = end_to_end(records, "dlib", workers, cache)
    new = end_to_end(records, "onnx", workers, cache)
    print(f"\nend to end, embed_records, {workers} workers:")
    print(f"  today's pipeline (runtime dlib)  {n / old:8.1f} images/s  (baseline)")
    print(f"  batched pipeline (onnx port)     {n / new:8.1f} images/s  x{old / new:.2f}")


if __name__ == "__main__":
    main()
