"""Rebuild src/idleak/data/age_model.json: the apparent-age classifier used by ``--exclude-children``.

Trains a class-balanced logistic regression on the dlib embeddings of UTKFace (age = the first number of
the file name) for two cuts, under 13 (young children) and under 18 (minors). Photos are split by a
hash of the file name: 70% train (C chosen by 5-fold cross-validation there), 30% held out for the
accuracy per age band. Also measures the false "child" rate on LFW and ORL (adults), and how children
sit in the face space (nearest-neighbour similarity to strangers, children vs adults).

UTKFace is for non-commercial research only; so are these coefficients.

    python tools/make_age_model.py [--faces ../shared/data/faces] [--ages ../shared/data/ages/utkface]
                                   [--stores /tmp/idleak-calibration]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
from make_calibration import ROOT, embedded_faces, utk_age
from sklearn.linear_model import LogisticRegressionCV

from idleak.age import utk_train_part
from idleak.decide.shipped import load_shipped

CUTS = [13, 18]
BANDS = [(0, 5), (6, 12), (13, 17), (18, 25), (26, 60), (61, 200)]
THRESHOLD = 0.5
TERMS = ("UTKFace (Zhang, Song, Qi: 'Age Progression/Regression by Conditional Adversarial Autoencoder', "
         "CVPR 2017; https://susanqq.github.io/UTKFace/) is available for non-commercial research purposes "
         "only; the copyright of the images belongs to their owners. These coefficients are derived from it "
         "and carry the same restriction.")


def band_name(lo: int, hi: int) -> str:
    return f"{lo}+" if hi >= 200 else f"{lo}-{hi}"


def nn_summary(scores: np.ndarray, above: float) -> dict:
    q = np.quantile(scores, [0.5, 0.9, 0.99])
    return {"n": int(len(scores)), "median": round(float(q[0]), 4), "p90": round(float(q[1]), 4),
            "p99": round(float(q[2]), 4), f"share_above_{above}": round(float(np.mean(scores > above)), 4)}


def face_space(utk_v: np.ndarray, ages: np.ndarray, lfw_v: np.ndarray, above: float, seed: int = 0) -> dict:
    """Nearest-neighbour similarity of children vs adults: to LFW strangers, and inside size-matched groups."""
    rng = np.random.default_rng(seed)
    groups = {"children_0_12": ages <= 12, "minors_13_17": (ages >= 13) & (ages <= 17),
              "adults_18_60": (ages >= 18) & (ages <= 60)}
    size = min(int(m.sum()) for m in groups.values())
    out = {"threshold_used": above,
           "note": f"nearest LFW face (13k photos of adults, other people) and nearest face inside a random "
                   f"{size}-face sample of the same group (UTKFace has no identity labels: a person photographed "
                   "twice counts as two strangers, which inflates the within-group figures for all groups)"}
    for name, mask in groups.items():
        v = utk_v[mask]
        to_lfw = (v @ lfw_v.T).max(1)
        sample = v[rng.choice(len(v), size, replace=False)]
        sims = sample @ sample.T
        np.fill_diagonal(sims, -np.inf)
        out[name] = {"to_lfw": nn_summary(to_lfw, above), "within_group": nn_summary(sims.max(1), above)}
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--faces", type=Path, default=ROOT.parent / "shared/data/faces")
    parser.add_argument("--ages", type=Path, default=ROOT.parent / "shared/data/ages/utkface")
    parser.add_argument("--stores", type=Path, default=Path("/tmp/idleak-calibration"))
    parser.add_argument("--out", type=Path, default=ROOT / "src/idleak/data/age_model.json")
    args = parser.parse_args()
    utk = embedded_faces(args.ages, args.stores / "store-utk", labelled=False)
    lfw = embedded_faces(args.faces / "lfw", args.stores / "store-lfw")
    orl = embedded_faces(args.faces / "orl", args.stores / "store-orl")
    from idleak.faces import load_embedder, parse_model

    model_id = load_embedder(parse_model("dlib")).model_id
    ages = np.array([utk_age(p) for p in utk.paths])
    train = np.array([utk_train_part(p) for p in utk.paths])
    classifiers = {}
    for cut in CUTS:
        y = ages < cut
        fit = LogisticRegressionCV(Cs=[0.1, 1.0, 10.0, 100.0], cv=5, class_weight="balanced", max_iter=5000,
                                   scoring="balanced_accuracy").fit(utk.vectors[train], y[train])
        coef, intercept = fit.coef_[0], float(fit.intercept_[0])

        def child(v: np.ndarray, coef: np.ndarray = coef, intercept: float = intercept) -> np.ndarray:
            return 1 / (1 + np.exp(-(v.astype(np.float64) @ coef + intercept))) >= THRESHOLD

        test_v, test_age = utk.vectors[~train], ages[~train]
        pred = child(test_v)
        bands = {}
        for lo, hi in BANDS:
            m = (test_age >= lo) & (test_age <= hi)
            correct = pred[m] == (cut > lo) if hi < cut or lo >= cut else None
            bands[band_name(lo, hi)] = {"n": int(m.sum()), "predicted_child": round(float(pred[m].mean()), 4),
                                        "accuracy": None if correct is None else round(float(correct.mean()), 4)}
        classifiers[str(cut)] = {
            "under": cut, "threshold": THRESHOLD, "C": float(fit.C_[0]),
            "coef": [float(f"{x:.7g}") for x in coef], "intercept": float(f"{intercept:.7g}"),
            "held_out": {"n": int((~train).sum()), "accuracy": round(float(np.mean(pred == (test_age < cut))), 4),
                         "by_age_band": bands},
            "false_child_rate": {"lfw": round(float(child(lfw.vectors).mean()), 4), "lfw_faces": int(len(lfw)),
                                 "orl": round(float(child(orl.vectors).mean()), 4), "orl_faces": int(len(orl))},
        }
    above = load_shipped(model_id).threshold(0.01, 1000).value
    entry = {
        "model_id": model_id,
        "provenance": (f"idleak tools/make_age_model.py on UTKFace ({args.ages}; {len(utk)} faces, age from the "
                       "file name), class-balanced logistic regression on the unit embedding, "
                       f"built {time.strftime('%Y-%m-%d')}"),
        "terms": TERMS,
        "split": "photo in the training part iff BLAKE2b(file name, digest_size=4) % 10 < 7; accuracy on the rest "
                 "(UTKFace has no identity labels: a person photographed twice may sit on both sides)",
        "operating_point": f"child when P(age < under) >= {THRESHOLD} (class-balanced training)",
        "classifiers": classifiers,
        "face_space": face_space(utk.vectors, ages, lfw.vectors, above),
    }
    table = json.loads(args.out.read_text()) if args.out.exists() else {"models": []}
    table["models"] = [m for m in table["models"] if m["model_id"] != model_id] + [entry]
    args.out.write_text(json.dumps(table, indent=1) + "\n")
    summary = {c: {k: v for k, v in d.items() if k not in ("coef",)} for c, d in classifiers.items()}
    print(json.dumps({"classifiers": summary, "face_space": entry["face_space"]}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
