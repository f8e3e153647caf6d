"""Rebuild src/idleak/data/calibration.json: the impostor-score calibration shipped for dlib.

Embeds every labelled face under ../shared/data/faces (orl, johns, fr) with the default pipeline,
collects all genuine and impostor cosine similarities, and stores the impostor survival curve
plus a generalised-Pareto fit of its upper 1% tail (used below the data's resolution).

    python tools/make_calibration.py [--faces ../shared/data/faces] [--store /tmp/calib-store]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
from scipy import stats

from idleak.embedding import embed_records, load_faces
from idleak.faces import load_embedder, parse_model
from idleak.sources import scan_folder
from idleak.store import EmbeddingStore

SETS = ["orl", "johns", "fr"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--faces", default=str(Path(__file__).resolve().parents[1].parent / "shared/data/faces"))
    parser.add_argument("--store", default="/tmp/idleak-calibration-store")
    parser.add_argument("--out", default=str(Path(__file__).resolve().parents[1] / "src/idleak/data/calibration.json"))
    args = parser.parse_args()
    spec = parse_model("dlib")
    embedder = load_embedder(spec)
    store = EmbeddingStore.create(args.store, embedder.model_id, embedder.dim)
    vectors, labels = [], []
    counts = {}
    for name in SETS:
        records = [r for r in scan_folder(Path(args.faces) / name) if r.identity]
        embed_records(records, store, spec)
        faces = load_faces(records, store)
        vectors.append(faces.vectors)
        labels.extend(f"{name}/{i}" for i in faces.identities)
        counts[name] = {"images": len(records), "faces": len(faces), "identities": len(set(faces.identities))}
    v = np.concatenate(vectors)
    lab = np.array(labels)
    sims = v @ v.T
    iu = np.triu_indices(len(v), 1)
    same = (lab[:, None] == lab[None, :])[iu]
    scores = sims[iu]
    impostor = np.sort(scores[~same])
    genuine = scores[same]
    n = len(impostor)
    survival_levels = np.unique(np.concatenate([np.linspace(0.0, 1.0, 101), np.logspace(-5, -1, 41)]))
    survival_levels = survival_levels[survival_levels >= 1.0 / n]
    score_at = np.quantile(impostor, 1 - survival_levels)
    order = np.argsort(score_at)
    u = float(np.quantile(impostor, 0.99))
    excess = impostor[impostor > u] - u
    shape, _, scale = stats.genpareto.fit(excess, floc=0)
    entry = {
        "model_id": embedder.model_id,
        "provenance": (
            "idleak tools/make_calibration.py on the labelled faces of shared/data/faces "
            f"({', '.join(SETS)}: ORL database, dlib examples/johns, face_recognition examples), "
            f"built {time.strftime('%Y-%m-%d')}"
        ),
        "datasets": counts,
        "n_faces": int(len(v)),
        "n_identities": int(len(set(labels))),
        "n_impostor_pairs": int(n),
        "n_genuine_pairs": int(len(genuine)),
        "impostor_mean": float(impostor.mean()),
        "impostor_std": float(impostor.std()),
        "genuine_mean": float(genuine.mean()),
        "genuine_std": float(genuine.std()),
        "quantiles": {"score": score_at[order].round(6).tolist(), "survival": survival_levels[order].tolist()},
        "tail": {"threshold": u, "rate": 0.01, "shape": float(shape), "scale": float(scale)},
    }
    out = Path(args.out)
    table = json.loads(out.read_text()) if out.exists() else {"models": []}
    table["models"] = [m for m in table["models"] if m["model_id"] != entry["model_id"]] + [entry]
    out.write_text(json.dumps(table, indent=1) + "\n")
    print(json.dumps({k: entry[k] for k in ("n_faces", "n_identities", "n_impostor_pairs", "impostor_mean",
                                            "genuine_mean", "tail")}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
