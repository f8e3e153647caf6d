"""Faithfulness of the ONNX port of dlib's face ResNet: cosine(dlib descriptor, port) on every face.

    python bench/bench_port_faithfulness.py [--faces ../shared/data/faces]
        [--lfw-dlib-store S1 --lfw-onnx-store S2]

Every face HOG finds in every image under ``--faces`` (except ``lfw/``): dlib's chip
(``get_face_chip``, 150x150, padding 0.25) goes to both dlib's ``compute_face_descriptor`` (no
jitter) and the port; aligned chip folders (``johns``) are also run through the ``--aligned`` path.
LFW's 13,233 images are compared through two stores of the same images made by
``idleak embed --runtime dlib`` and ``--runtime onnx`` (same chips, same model id), face by face.
Prints the number of faces, the worst cosine and low percentiles.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np

from idleak.faces.dlib_backend import DlibEmbedder
from idleak.images import load_rgb
from idleak.sources import scan_folder
from idleak.store import EmbeddingStore

DEFAULT_FACES = Path(__file__).resolve().parents[2] / "shared" / "data" / "faces"
MODEL_ID = "dlib_face_recognition_resnet_model_v1/sp5/hog/v2"


def report(name: str, cosine: np.ndarray) -> None:
    if not len(cosine):
        print(f"{name:10s} no faces")
        return
    print(f"{name:10s} {len(cosine):6d} faces  worst {cosine.min():.7f}  0.1% {np.quantile(cosine, 0.001):.7f}  "
          f"median {np.median(cosine):.7f}  below 0.9999: {int((cosine < 0.9999).sum())}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--faces", type=Path, default=DEFAULT_FACES)
    parser.add_argument("--lfw-dlib-store", type=Path)
    parser.add_argument("--lfw-onnx-store", type=Path)
    args = parser.parse_args()
    own = DlibEmbedder(runtime="dlib")
    port = DlibEmbedder(runtime="onnx", cache_root=tempfile.mkdtemp(prefix="idleak-models-"))
    everything = []
    for folder in sorted(p for p in args.faces.iterdir() if p.is_dir() and p.name != "lfw"):
        modes = (False, True) if folder.name == "johns" else (False,)
        for aligned in modes:
            chips = []
            for record in scan_folder(folder):
                try:
                    image = load_rgb(record.path)
                except Exception:  # noqa: BLE001 - the folders hold deliberately broken files
                    continue
                chips += [face.chip for face in own.prepare(image, aligned=aligned)]
            if not chips:
                continue
            theirs, ours = np.stack(own.embed_chips(chips)), np.stack(port.embed_chips(chips))
            cosine = (theirs * ours).sum(axis=1)
            report(folder.name + (" aligned" if aligned else ""), cosine)
            everything.append(cosine)
    if args.lfw_dlib_store and args.lfw_onnx_store:
        a = EmbeddingStore.open(args.lfw_dlib_store, MODEL_ID).rows()
        b = EmbeddingStore.open(args.lfw_onnx_store, MODEL_ID).rows()
        left = {(h, f): v for h, f, v, r in zip(a.hash, a.face, a.vectors, a.reason) if not r}
        right = {(h, f): v for h, f, v, r in zip(b.hash, b.face, b.vectors, b.reason) if not r}
        keys = sorted(left.keys() & right.keys())
        only = len(left.keys() ^ right.keys())
        cosine = np.array([float(left[k] @ right[k]) for k in keys])
        report("lfw", cosine)
        print(f"{'':10s} faces found by only one of the two runs: {only}")
        everything.append(cosine)
    report("all", np.concatenate(everything))


if __name__ == "__main__":
    main()
