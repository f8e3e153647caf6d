"""The ported MMOD CNN face detector against dlib's own: same boxes? how much faster? recall per detector.

    python bench/bench_mmod_port.py [--faces ../shared/data/faces] [--sample 40] [--seed 0] [--threads 1]
    python bench/bench_mmod_port.py --sample 0 --no-dlib     # recall of hog, cnn (port), auto on every photo

On a seeded random sample of ``--sample`` photos per folder of the shared faces (all of a folder
when it is smaller), each photo goes through ``detect.detect`` as ``idleak embed`` runs it
(shrunk to 1600 px, upsampled while small) with ``--detector cnn`` on both runtimes:

* faithfulness: photos where both find the same number of faces, and for every port box matched
  to dlib's (greedy, best IoU first) the IoU and the confidence difference (worst and median);
* speed: seconds per photo of the port (onnxruntime, ``--threads`` intra-op threads) and of
  dlib's ``cnn_face_detection_model_v1``, in the same run, on the same photos;
* recall per detector (every shared photo shows a face, so recall = share of photos with at least
  one detection): hog, cnn (port), cnn (dlib), auto (HOG, then the port where HOG finds nothing).

``--sample 0`` takes every photo of each folder; ``--no-dlib`` leaves dlib's detector out (recall
only, fast enough for whole folders).
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import time
from pathlib import Path

import numpy as np

from idleak.faces import detect as det
from idleak.images import load_rgb
from idleak.sources import scan_folder

DEFAULT_FACES = Path(__file__).resolve().parents[2] / "shared" / "data" / "faces"
FOLDERS = ["orl", "yaleb", "johns", "lfw", "fr", "misc"]


def iou(a, b) -> float:
    inner_w = min(a.right(), b.right()) - max(a.left(), b.left()) + 1
    inner_h = min(a.bottom(), b.bottom()) - max(a.top(), b.top()) + 1
    if inner_w <= 0 or inner_h <= 0:
        return 0.0
    inner = inner_w * inner_h
    return inner / ((a.width() * a.height()) + (b.width() * b.height()) - inner)


def match(port: list, own: list) -> list[tuple[float, float]]:
    """(IoU, |confidence difference|) for greedy best-IoU pairs of port and dlib detections."""
    pairs = sorted(((iou(p[0], o[0]), i, j) for i, p in enumerate(port) for j, o in enumerate(own)), reverse=True)
    used_p, used_o, out = set(), set(), []
    for value, i, j in pairs:
        if i in used_p or j in used_o:
            continue
        used_p.add(i)
        used_o.add(j)
        out.append((value, abs(port[i][1] - own[j][1])))
    return out


def sample_photos(folder: Path, n: int, seed: int) -> list[Path]:
    paths = sorted(r.path for r in scan_folder(folder))
    if 0 < n < len(paths):
        paths = random.Random(seed).sample(paths, n)
    return [Path(p) for p in paths]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--faces", type=Path, default=DEFAULT_FACES)
    parser.add_argument("--sample", type=int, default=40)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1, help="onnxruntime intra-op threads for the port")
    parser.add_argument("--folders", nargs="*", default=FOLDERS)
    parser.add_argument("--no-dlib", action="store_true", help="recall of hog, cnn (port), auto only")
    args = parser.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))
    det.warm_up("auto", "dlib")
    det.warm_up("cnn", "onnx")
    det.cnn_port().threads = args.threads  # before its session is made (first use)
    blank = np.zeros((120, 120, 3), np.uint8)
    det.detect(blank, "cnn", "onnx"), det.detect(blank, "cnn", "dlib")  # sessions and buffers made, untimed

    all_pairs: list[tuple[float, float]] = []
    totals = {"photos": 0, "same": 0, "port_s": 0.0, "dlib_s": 0.0}
    rows = []
    for name in args.folders:
        found = {"hog": 0, "port": 0, "dlib": 0, "auto": 0}
        same, pairs, seconds, n = 0, [], {"port": 0.0, "dlib": 0.0}, 0
        for path in sample_photos(args.faces / name, args.sample, args.seed):
            try:
                image = load_rgb(path)
            except Exception:  # noqa: BLE001 - e.g. the README kept in the ORL folder
                continue
            n += 1
            hog = det.detect(image, "hog")
            start = time.perf_counter()
            port = det.detect(image, "cnn", "onnx")
            middle = time.perf_counter()
            own = port if args.no_dlib else det.detect(image, "cnn", "dlib")
            seconds["dlib"] += time.perf_counter() - middle
            seconds["port"] += middle - start
            same += len(port) == len(own)
            if len(port) != len(own):
                print(f"  count differs: {path}: port {len(port)}, dlib {len(own)}")
            pairs += match(port, own)
            found["hog"] += bool(hog)
            found["port"] += bool(port)
            found["dlib"] += bool(own)
            found["auto"] += bool(hog or port)
        if not n:
            continue
        ious = [p[0] for p in pairs]
        diffs = [p[1] for p in pairs]
        rows.append((name, n, same, len(pairs), min(ious, default=float("nan")),
                     statistics.median(ious) if ious else float("nan"), max(diffs, default=float("nan")),
                     seconds["port"] / n, seconds["dlib"] / n, found))
        all_pairs += pairs
        totals["photos"] += n
        totals["same"] += same
        totals["port_s"] += seconds["port"]
        totals["dlib_s"] += seconds["dlib"]
        print(f"{name}: done ({n} photos)", flush=True)

    print()
    if args.no_dlib:
        print("| folder | photos | hog | cnn (port) | auto |\n|---|---|---|---|---|")
        for name, n, *_, found in rows:
            print(f"| {name} | {n} | " + " | ".join(f"{found[k]} ({100 * found[k] / n:.1f}%)"
                                                 for k in ("hog", "port", "auto")) + " |")
        return
    print("| folder | photos | same count | boxes | worst IoU | median IoU | max conf diff | port s/photo | "
          "dlib s/photo | dlib/port | recall hog | cnn port | cnn dlib | auto |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for name, n, same, boxes, worst, median, diff, port_s, dlib_s, found in rows:
        recall = " | ".join(f"{found[k]}/{n} ({100 * found[k] / n:.1f}%)" for k in ("hog", "port", "dlib", "auto"))
        print(f"| {name} | {n} | {same}/{n} | {boxes} | {worst:.4f} | {median:.4f} | {diff:.2e} | {port_s:.3f} | "
              f"{dlib_s:.3f} | {dlib_s / port_s:.1f}x | {recall} |")
    ious = [p[0] for p in all_pairs]
    diffs = [p[1] for p in all_pairs]
    print(f"\nall: {totals['photos']} photos, same count on {totals['same']}, {len(all_pairs)} matched boxes, "
          f"IoU worst {min(ious):.4f} median {statistics.median(ious):.4f}, confidence diff max {max(diffs):.2e} "
          f"median {statistics.median(diffs):.2e}; port {totals['port_s'] / totals['photos']:.3f} s/photo, "
          f"dlib {totals['dlib_s'] / totals['photos']:.3f} s/photo ({totals['dlib_s'] / totals['port_s']:.1f}x)")


if __name__ == "__main__":
    main()
