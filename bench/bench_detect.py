"""Detection recall per detector (hog, cnn, auto) on the shared face photos.

    python bench/bench_detect.py [--faces ../shared/data/faces] [--sample 120] [--seed 0]

Every photo in these folders shows a face, so recall = share of photos where the detector finds
at least one. dlib's CNN is slow on a CPU (about 0.3-2 s per photo here), so each folder is
measured on a seeded random sample of ``--sample`` photos (all of them when the folder is
smaller); ``auto`` runs the CNN only where HOG finds nothing. ``misc`` (edge cases, including a
photo of dogs) and ``lfw`` (13,233 photos; see bench/lfw_verification.py for its HOG misses) are
left out.
"""

from __future__ import annotations

import argparse
import random
import time
from pathlib import Path

from idleak.faces import detect as det
from idleak.images import load_rgb
from idleak.sources import scan_folder

DEFAULT_FACES = Path(__file__).resolve().parents[2] / "shared" / "data" / "faces"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--faces", type=Path, default=DEFAULT_FACES)
    parser.add_argument("--sample", type=int, default=120)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--folders", nargs="*", default=["orl", "yaleb", "johns", "fr"])
    args = parser.parse_args()
    det.warm_up("auto")
    print(f"{'folder':8s} {'photos':>6s} {'hog':>14s} {'cnn':>14s} {'auto':>14s}   s/photo hog, cnn")
    for name in args.folders:
        records = [r for r in scan_folder(args.faces / name)]
        images = []
        for record in records:
            try:
                images.append(load_rgb(record.path))
            except Exception:  # noqa: BLE001 - e.g. the README kept in the ORL folder
                continue
        if len(images) > args.sample:
            images = random.Random(args.seed).sample(images, args.sample)
        found = {"hog": 0, "cnn": 0, "auto": 0}
        seconds = {"hog": 0.0, "cnn": 0.0}
        for image in images:
            start = time.perf_counter()
            hog = bool(det.detect(image, "hog"))
            middle = time.perf_counter()
            cnn = bool(det.detect(image, "cnn"))
            seconds["hog"] += middle - start
            seconds["cnn"] += time.perf_counter() - middle
            found["hog"] += hog
            found["cnn"] += cnn
            found["auto"] += hog or cnn  # auto = HOG, then the CNN where HOG found nothing
        n = len(images)
        cells = "".join(f" {found[k]:>5d} ({100 * found[k] / n:5.1f}%)" for k in ("hog", "cnn", "auto"))
        print(f"{name:8s} {n:6d}{cells}   {seconds['hog'] / n:.2f}, {seconds['cnn'] / n:.2f}")


if __name__ == "__main__":
    main()
