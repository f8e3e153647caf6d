"""LFW 10-fold face verification through idleak's pipeline, for dlib's own runtime and the ONNX port.

    python bench/lfw_verification.py --runtime onnx --store STORE [--tta none|flip|flip68] [--lfw DIR] [--workers 2]

The standard protocol ("unrestricted, labeled outside data" with ``pairs.txt``): 10 folds of 300
same-person and 300 different-person pairs; for each fold the cosine threshold that is most
accurate on the other 9 folds is applied to it. Reported: mean accuracy over the folds +/- its
standard error (sample standard deviation / sqrt(10)).

Images go through the pipeline a user runs: ``idleak embed`` (HOG detection, 5-point landmarks,
dlib's 150x150 chip, largest face), into ``--store`` (reused when it already holds them, e.g. a
store made earlier by ``idleak embed LFW --store S``; a missing one is created). Images where HOG
finds no face are handled as users of the protocol do, and counted:

1. ``--detector cnn`` (what ``--detector auto`` does after HOG finds nothing): dlib's MMOD CNN;
2. where the CNN finds nothing either, the ``--aligned`` path on the image's central 150x150 crop
   (LFW deep-funneled images are centred on the face), so every pair gets a score.

An LFW photo can show several people; the labelled one is at the centre of the (funneled) photo, so
the face nearest the centre is used, as users of the protocol do; idleak's own default, the
largest face, is reported too. Accuracy is also given with the no-face pairs counted as errors,
and on the pairs HOG found.

``--tta`` runs the pipeline with that test-time augmentation (``idleak embed --tta``): its vectors
have their own model id, so ``--store`` must be a store of that model (or a new folder).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
from PIL import Image

from idleak.embedding import embed_records, load_faces
from idleak.faces import parse_model
from idleak.faces.dlib_backend import DlibEmbedder
from idleak.images import load_rgb
from idleak.sources import Record
from idleak.store import EmbeddingStore

DEFAULT_LFW = Path(__file__).resolve().parents[2] / "shared" / "data" / "faces" / "lfw"


def read_pairs(lfw: Path) -> list[tuple[int, str, str, bool]]:
    """(fold, path a, path b, same person) for every line of pairs.txt."""
    lines = (lfw / "pairs.txt").read_text().split("\n")
    folds, per = (int(v) for v in lines[0].split())
    pairs = []
    rows = [line.split("\t") for line in lines[1:] if line.strip()]
    assert len(rows) == folds * 2 * per, f"pairs.txt: expected {folds * 2 * per} pairs, found {len(rows)}"

    def image(name: str, number: str) -> str:
        return str(lfw / name / f"{name}_{int(number):04d}.jpg")

    for index, row in enumerate(rows):
        fold = index // (2 * per)
        if len(row) == 3:
            pairs.append((fold, image(row[0], row[1]), image(row[0], row[2]), True))
        else:
            pairs.append((fold, image(row[0], row[1]), image(row[2], row[3]), False))
    return pairs


def ten_fold(scores: np.ndarray, same: np.ndarray, folds: np.ndarray) -> np.ndarray:
    """Accuracy of each fold with the threshold that is best on the other folds."""
    accuracies = []
    for fold in np.unique(folds):
        train, test = folds != fold, folds == fold
        candidates = np.unique(scores[train])
        best = max(candidates, key=lambda t: ((scores[train] >= t) == same[train]).mean())
        accuracies.append(((scores[test] >= best) == same[test]).mean())
    return np.array(accuracies)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runtime", choices=["onnx", "dlib"], default="onnx")
    parser.add_argument("--store", type=Path, required=True, help="store to read (and fill with what it lacks)")
    parser.add_argument("--lfw", type=Path, default=DEFAULT_LFW)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--tta", choices=["none", "flip", "flip68"], default="none",
                        help="test-time augmentation of the dlib model (idleak embed --tta)")
    args = parser.parse_args()

    pairs = read_pairs(args.lfw)
    paths = sorted({p for _, a, b, _ in pairs for p in (a, b)})
    records = [Record(p, Path(p).parent.name) for p in paths]
    embedder = DlibEmbedder(runtime=args.runtime, tta=args.tta)
    if (args.store / "store.json").is_file():
        store = EmbeddingStore.open(args.store, embedder.model_id)
    else:
        store = EmbeddingStore.create(args.store, embedder.model_id, embedder.dim)
    start = time.perf_counter()
    if any(not store.has(h, False) for h in (_hashes(records))):
        embed_records(records, store, parse_model("dlib", runtime=args.runtime, tta=args.tta), workers=args.workers,
                      embedder=embedder)
        store = EmbeddingStore.open(args.store, embedder.model_id)
    faces = load_faces(records, store, faces="all")
    reasons = {p: reason for p, reason, _ in faces.excluded}
    assert "not_embedded" not in reasons.values(), "the store lacks some LFW images"
    missing = set(reasons)
    print(f"{len(pairs)} pairs, {len(paths)} images; HOG found a face in {len(paths) - len(missing)}, "
          f"not in {len(missing)} ({time.perf_counter() - start:.0f} s)")
    by_cnn, by_crop = _fallbacks(sorted(missing), args.runtime, args.tta)
    print(f"fallbacks: CNN detector found {len(by_cnn)}, central aligned crop used for {len(by_crop)}")

    folds = np.array([f for f, _, _, _ in pairs])
    same = np.array([s for _, _, _, s in pairs])
    hog_found = np.array([a not in missing and b not in missing for _, a, b, _ in pairs])
    print(f"pairs with an image HOG missed: {int((~hog_found).sum())}")
    for choice in ("central", "largest"):
        vectors = _pick(faces, choice)
        vectors.update({p: v[choice] for p, v in by_cnn.items()})
        vectors.update(by_crop)
        scores = np.array([float(vectors[a] @ vectors[b]) for _, a, b, _ in pairs])
        every = ten_fold(scores, same, folds)
        as_errors = []
        for fold in np.unique(folds):  # thresholds from the HOG pairs of the other folds, misses are errors
            train, test = (folds != fold) & hog_found, folds == fold
            best = max(np.unique(scores[train]), key=lambda t: ((scores[train] >= t) == same[train]).mean())
            as_errors.append((((scores[test] >= best) == same[test]) & hog_found[test]).mean())
        found = ten_fold(scores[hog_found], same[hog_found], folds[hog_found])
        for label, acc in (("every pair (fallbacks)", every), ("misses counted as errors", np.array(as_errors)),
                           ("pairs where HOG found both", found)):
            print(f"[{args.runtime}, tta {args.tta}, {choice} face] {label:28s} {100 * acc.mean():.2f}% +/- "
                  f"{100 * acc.std(ddof=1) / np.sqrt(len(acc)):.2f}")


def _pick(faces, choice: str) -> dict:
    """One vector per image: the face nearest the image centre (LFW's subject) or the largest face."""
    best: dict = {}
    for path, vector, box in zip(faces.paths, faces.vectors, faces.boxes):
        width, height = Image.open(path).size if choice == "central" else (0, 0)
        key = (((box[0] + box[2]) / 2 - width / 2) ** 2 + ((box[1] + box[3]) / 2 - height / 2) ** 2
               if choice == "central" else -(box[2] - box[0]) * (box[3] - box[1]))
        if path not in best or key < best[path][0]:
            best[path] = (key, vector)
    return {path: vector for path, (_, vector) in best.items()}


def _hashes(records: list[Record]) -> list[str]:
    from idleak.embedding import hash_records

    return [h for h in hash_records(records) if h]


def _fallbacks(missing: list[str], runtime: str, tta: str) -> tuple[dict, dict]:
    """Vectors for images HOG missed: CNN detection (central and largest face), else the central
    150x150 crop as an aligned face."""
    cnn = DlibEmbedder(runtime=runtime, detector="cnn", tta=tta)
    by_cnn, by_crop = {}, {}
    for path in missing:
        image = load_rgb(path)
        h, w = image.shape[:2]
        faces = cnn.analyze([image])[0]
        if faces:
            offsets = [((f.box[0] + f.box[2] - w) / 2) ** 2 + ((f.box[1] + f.box[3] - h) / 2) ** 2 for f in faces]
            by_cnn[path] = {"central": faces[int(np.argmin(offsets))].vector,
                            "largest": max(faces, key=lambda f: f.area).vector}
            continue
        top, left = (h - 150) // 2, (w - 150) // 2
        by_crop[path] = cnn.analyze([image[top:top + 150, left:left + 150]], aligned=True)[0][0].vector
    return by_cnn, by_crop


if __name__ == "__main__":
    main()
