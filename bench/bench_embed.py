"""Embedding throughput: idleak end to end vs the bare dlib calls, and 1 vs all worker processes.

    python bench/bench_embed.py [--images 200] [--faces ../shared/data/faces/orl]

Baseline (same process, same images): dlib's own detect + landmarks + descriptor calls on arrays
decoded beforehand. idleak: ``embed_records`` into a fresh store (hashing, safe decoding,
detection, alignment, embedding, Parquet writes). Prints images/s and the ratios.
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np

from idleak.embedding import default_workers, embed_records
from idleak.faces import load_embedder, parse_model
from idleak.images import load_rgb
from idleak.sources import scan_folder
from idleak.store import EmbeddingStore

DEFAULT_FACES = Path(__file__).resolve().parents[2] / "shared" / "data" / "faces" / "orl"


def bare_dlib_seconds(images: list[np.ndarray]) -> float:
    """dlib's own calls, nothing else: the floor idleak's single-process path is compared to."""
    import dlib

    from idleak.faces import detect as det

    detector = dlib.get_frontal_face_detector()
    predictor = det.shape_predictor(5)
    net = dlib.face_recognition_model_v1(det.model_file("dlib_face_recognition_resnet_model_v1.dat"))
    start = time.perf_counter()
    for image in images:
        rects, _, _ = detector.run(image, det.upsample_for(*image.shape[:2]), 0.0)
        for rect in rects:
            net.compute_face_descriptor(image, predictor(image, rect))
    return time.perf_counter() - start


def idleak_seconds(records, workers: int) -> float:
    spec = parse_model("dlib")
    embedder = load_embedder(spec)
    with tempfile.TemporaryDirectory() as folder:
        store = EmbeddingStore.create(folder, embedder.model_id, embedder.dim)
        start = time.perf_counter()
        stats = embed_records(records, store, spec, workers=workers, embedder=embedder)
        seconds = time.perf_counter() - start
        assert stats.n_new == len(records)
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--faces", default=str(DEFAULT_FACES))
    parser.add_argument("--images", type=int, default=200)
    args = parser.parse_args()
    records = [r for r in scan_folder(args.faces) if r.identity][: args.images]
    images = [load_rgb(r.path) for r in records]
    n = len(records)
    cores = default_workers()
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, {n} images from {args.faces}")
    bare_dlib_seconds(images[:5])  # warm-up
    base = bare_dlib_seconds(images)
    one = idleak_seconds(records, 1)
    many = idleak_seconds(records, cores)
    print(f"bare dlib detect+embed, 1 process : {n / base:7.2f} images/s  (baseline)")
    print(f"idleak end to end, 1 worker       : {n / one:7.2f} images/s  overhead {100 * (one / base - 1):+.1f}%")
    print(f"idleak end to end, {cores} workers      : {n / many:7.2f} images/s  speed-up x{one / many:.2f} vs 1 worker")


if __name__ == "__main__":
    main()
