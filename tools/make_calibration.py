"""Rebuild src/idleak/data/calibration.json: the shipped impostor calibration (see idleak/decide/shipped.py).

Built from LFW (in-the-wild colour photos, 5,749 people): identities are split by a hash of the name
(``idleak.decide.shipped.lfw_build_part``, 70% build / 30% held out). On the build part, every pair of
faces of different people is scored; each pair of *identities* weighs 1 (a face pair weighs
1 / (m_a m_b)), giving the per-comparison impostor rate q(t) on a grid; its upper 95% bound comes
from an identity-level bootstrap (identities resampled with replacement). Then it is validated on
people it was not built from: random galleries of held-out LFW identities, each face searched
against the gallery without its own identity (leave-one-identity-out), flagged at the shipped
threshold; and the same per population (ORL, Extended Yale B, johns, fr, UTKFace adults/children).

    python tools/make_calibration.py [--faces ../shared/data/faces] [--ages ../shared/data/ages/utkface]
                                     [--stores /tmp/idleak-calibration]

``--stores`` holds one embedding store per data set (``store-lfw``, ``store-orl``, ...): images already
in a store are not embedded again, so a rebuild on a warm store takes a minute.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

from idleak.decide.shipped import MIN_PAIRS, ShippedCalibration, lfw_build_part
from idleak.embedding import FaceSet, embed_records, load_faces
from idleak.faces import load_embedder, parse_model
from idleak.sources import scan_folder
from idleak.store import EmbeddingStore

ROOT = Path(__file__).resolve().parents[1]
GRID = np.round(np.arange(0.5, 1.0 + 1e-9, 0.0005), 4)
CONFIDENCE = 0.95
N_BOOT = 200
#: Face pairs kept for the bootstrap: those above the score where q falls below this.
BOOT_FROM_RATE = 0.02
POPULATIONS = [  # name, folder under --faces (or "utk"), aligned input, labelled
    ("orl", "orl", False), ("yaleb", "yaleb", True), ("johns", "johns", False), ("fr", "fr", False)]
GALLERY_SIZES = [30, 100, 300, 1000, 2000]
ALPHAS = [0.01, 0.05]


def embedded_faces(folder: Path, store_path: Path, aligned: bool = False, labelled: bool = True) -> FaceSet:
    """The largest face of every image under ``folder``, embedded through idleak's pipeline into ``store_path``."""
    spec = parse_model("dlib")
    embedder = load_embedder(spec)
    store = EmbeddingStore.create(store_path, embedder.model_id, embedder.dim)
    records = [r for r in scan_folder(folder) if r.identity or not labelled]
    embed_records(records, store, spec, aligned=aligned, embedder=embedder)
    return load_faces(records, store, aligned=aligned)


def utk_age(path: str) -> int:
    """UTKFace's age: the first number of the file name (``AGE_GENDER_RACE_DATE.jpg``)."""
    return int(Path(path).name.split("_", 1)[0])


def group_ids(identities: np.ndarray) -> np.ndarray:
    """Integer identity per face; an unlabelled face is its own identity."""
    names = [f"\0{i}" if x is None else str(x) for i, x in enumerate(identities)]
    return np.unique(np.array(names), return_inverse=True)[1]


# -- fit ---------------------------------------------------------------------------------------------
def fit(vectors: np.ndarray, groups: np.ndarray, seed: int = 0, block: int = 1000) -> dict:
    """Identity-pair-weighted impostor survival on GRID, its bootstrap upper bound, and its resolution."""
    _, gi, m = np.unique(groups, return_inverse=True, return_counts=True)
    n_ids = len(m)
    weight = 1.0 / m[gi]
    n_id_pairs = n_ids * (n_ids - 1) / 2
    hist = np.zeros(len(GRID) + 1)
    floor = 0.88  # pairs kept for the bootstrap (at least those above the BOOT_FROM_RATE score)
    passes = []
    for start in range(0, len(vectors), block):
        rows = np.arange(start, min(start + block, len(vectors)))
        sims = vectors[rows] @ vectors.T
        mask = (gi[rows][:, None] != gi[None, :]) & (rows[:, None] < np.arange(len(vectors))[None, :])
        r, c = np.nonzero(mask)
        s = sims[r, c]
        w = weight[rows][r] * weight[c]
        hist += np.bincount(np.searchsorted(GRID, s, side="left"), weights=w, minlength=len(GRID) + 1)
        high = s > floor
        passes.append((s[high].astype(np.float32), gi[rows][r[high]].astype(np.int32),
                       gi[c[high]].astype(np.int32), w[high]))
    # rate[k] = weight of pairs with score > GRID[k]
    rate = hist[::-1].cumsum()[::-1][1:] / n_id_pairs
    boot_from = max(floor, float(GRID[np.argmax(rate <= BOOT_FROM_RATE)]))
    s, a, b, w = (np.concatenate(x) for x in zip(*passes))
    keep = s > boot_from
    s, a, b, w = s[keep], a[keep], b[keep], w[keep]
    order = np.argsort(-s, kind="stable")
    s, a, b, w = s[order], a[order], b[order], w[order]
    # bootstrap over identities: a pair (a, b) weighs c_a c_b;
    # the pairs of distinct copies number ((sum c)^2 - sum c^2)/2
    tail = GRID >= boot_from
    n_above = np.searchsorted(-s, -GRID[tail], side="left")  # pairs with score > grid point
    rng = np.random.default_rng(seed)
    boots = np.empty((N_BOOT, tail.sum()))
    for i in range(N_BOOT):
        c = rng.multinomial(n_ids, np.full(n_ids, 1.0 / n_ids)).astype(np.float64)
        denom = (n_ids ** 2 - np.sum(c ** 2)) / 2
        cum = np.r_[0.0, np.cumsum(w * c[a] * c[b])]
        boots[i] = cum[n_above] / denom
    upper = rate.copy()
    upper[tail] = np.maximum(np.quantile(boots, CONFIDENCE, axis=0), rate[tail])
    first = int(np.argmax(tail))
    ratio = upper[first] / rate[first] if rate[first] > 0 else 1.0
    upper[~tail] = np.minimum(1.0, rate[~tail] * ratio)
    # resolution: distinct identity pairs with some face pair above each grid point
    pair_key = np.minimum(a, b).astype(np.int64) * n_ids + np.maximum(a, b)
    uniq, first_seen = np.unique(pair_key, return_index=True)
    pair_max = s[first_seen]  # s is sorted descending, so the first occurrence is the pair's maximum
    n_pairs_above = (pair_max[None, :] > GRID[:, None]).sum(1)
    resolved = np.flatnonzero(n_pairs_above >= MIN_PAIRS)
    resolution = float(GRID[resolved[-1]])
    upper = np.minimum.accumulate(np.maximum.accumulate(upper[::-1])[::-1])  # keep it non-increasing
    return {
        "grid": {"score": GRID.tolist(), "rate": [float(f"{x:.6g}") for x in rate],
                 "upper": [float(f"{x:.6g}") for x in upper],
                 "identity_pairs_above": n_pairs_above.tolist()},
        "confidence": CONFIDENCE,
        "resolution_score": resolution,
        "n_faces": int(len(vectors)),
        "n_identities": int(n_ids),
        "n_identity_pairs": int(n_id_pairs),
        "n_face_pairs": int(mask_pairs(m)),
        "method": (f"per-comparison impostor rate q(t), each identity pair weighted 1 (face pairs 1/(m_a m_b)); "
                   f"upper bound: {CONFIDENCE:.0%} quantile of {N_BOOT} identity-level bootstrap replicates "
                   f"(scores above {boot_from}; below, the same relative margin); resolved while at least "
                   f"{MIN_PAIRS} distinct identity pairs exceed the score; 1:N by the union bound N*q(t)"),
    }


def mask_pairs(m: np.ndarray) -> int:
    n = int(m.sum())
    return n * (n - 1) // 2 - int((m * (m - 1) // 2).sum())


# -- validation ---------------------------------------------------------------------------------------
def best_other(vectors: np.ndarray, groups: np.ndarray) -> np.ndarray:
    """Each face's best similarity to the faces of other identities (leave-one-identity-out)."""
    sims = vectors @ vectors.T
    sims[groups[:, None] == groups[None, :]] = -np.inf
    return sims.max(1)


def validate_lfw(cal: ShippedCalibration, vectors: np.ndarray, groups: np.ndarray, seed: int = 0) -> list[dict]:
    """LOIO false-flag rate at the shipped threshold on random galleries of held-out identities."""
    rng = np.random.default_rng(seed)
    ids, gi, counts = np.unique(groups, return_inverse=True, return_counts=True)
    sims = vectors @ vectors.T
    sims[gi[:, None] == gi[None, :]] = -np.inf
    rows = []
    for size in GALLERY_SIZES:
        if size > 0.6 * len(vectors):
            continue
        reps = 200 if size < 1000 else 50
        thresholds = {a: cal.threshold(a, size) for a in ALPHAS}
        flags = {a: [] for a in ALPHAS}
        for _ in range(reps):
            perm = rng.permutation(len(ids))
            take = perm[: int(np.searchsorted(np.cumsum(counts[perm]), size)) + 1]
            idx = np.flatnonzero(np.isin(gi, take))
            best = sims[np.ix_(idx, idx)].max(1)
            for a in ALPHAS:
                flags[a].append(float(np.mean(best > thresholds[a].value)))
        for a in ALPHAS:
            f = np.array(flags[a])
            rows.append({"population": "lfw_held_out", "gallery_faces": size, "alpha": a, "repetitions": reps,
                         "threshold": thresholds[a].value,
                         "expected_rate": thresholds[a].details.get("expected_false_flag_rate"),
                         "loio_rate": round(float(f.mean()), 5),
                         "loio_rate_se": round(float(f.std(ddof=1) / np.sqrt(len(f))), 5)})
    return rows


def validate_population(cal: ShippedCalibration, name: str, vectors: np.ndarray, groups: np.ndarray) -> list[dict]:
    """LOIO false-flag rate of a whole population at the shipped threshold for its own size."""
    best = best_other(vectors, groups)
    rows = []
    for a in ALPHAS:
        t = cal.threshold(a, len(vectors))
        flagged = best > t.value
        rate = float(flagged.mean())
        rows.append({"population": name, "gallery_faces": int(len(vectors)),
                     "identities": int(len(np.unique(groups))), "alpha": a, "threshold": t.value,
                     "resolvable": t.resolvable, "loio_rate": round(rate, 5),
                     "loio_rate_se": round(float(np.sqrt(max(rate * (1 - rate), 1e-12) / len(vectors))), 5),
                     "ratio_to_alpha": round(rate / a, 2),
                     "loio_threshold": float(np.quantile(best, 1 - a, method="higher"))})
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--faces", type=Path, default=ROOT.parent / "shared/data/faces")
    parser.add_argument("--ages", type=Path, default=ROOT.parent / "shared/data/ages/utkface")
    parser.add_argument("--stores", type=Path, default=Path("/tmp/idleak-calibration"))
    parser.add_argument("--out", type=Path, default=ROOT / "src/idleak/data/calibration.json")
    args = parser.parse_args()
    started = time.time()
    lfw = embedded_faces(args.faces / "lfw", args.stores / "store-lfw")
    names = lfw.identities.astype(str)
    build = np.array([lfw_build_part(x) for x in names])
    groups = group_ids(lfw.identities)
    model_id = load_embedder(parse_model("dlib")).model_id
    entry = {"model_id": model_id}
    entry.update(fit(lfw.vectors[build], groups[build]))
    entry["provenance"] = (
        f"idleak tools/make_calibration.py on LFW ({args.faces / 'lfw'}; labelled faces in the wild, "
        f"University of Massachusetts), identities of the build part only, built {time.strftime('%Y-%m-%d')}")
    entry["datasets"] = {"lfw": {"images": int(len(lfw) + len(lfw.excluded)), "faces": int(len(lfw)),
                                 "identities": int(len(set(names)))}}
    entry["split"] = {"rule": "identity in build part iff BLAKE2b(name utf-8, digest_size=4) as big-endian "
                              "integer % 10 < 7 (idleak.decide.shipped.lfw_build_part)",
                      "build_faces": int(build.sum()), "build_identities": int(len(set(names[build]))),
                      "held_out_faces": int((~build).sum()), "held_out_identities": int(len(set(names[~build])))}
    cal = ShippedCalibration.from_entry(entry)
    validation = validate_lfw(cal, lfw.vectors[~build], groups[~build])
    for name, folder, aligned in POPULATIONS:
        faces = embedded_faces(args.faces / folder, args.stores / f"store-{name}{'-aligned' if aligned else ''}",
                               aligned=aligned)
        validation += validate_population(cal, name, faces.vectors, group_ids(faces.identities))
    utk = embedded_faces(args.ages, args.stores / "store-utk", labelled=False)
    ages = np.array([utk_age(p) for p in utk.paths])
    for name, keep in [("utk_adults_18plus", ages >= 18), ("utk_children_0_12", ages <= 12),
                       ("utk_minors_13_17", (ages >= 13) & (ages <= 17))]:
        validation += validate_population(cal, name, utk.vectors[keep], group_ids(utk.identities[keep]))
    entry["validation"] = {
        "note": "leave-one-identity-out false-flag rate at the shipped threshold on people the calibration was "
                "not built from; UTKFace has no identity labels (each photo is its own identity)",
        "rows": validation}
    table = json.loads(args.out.read_text()) if args.out.exists() else {"models": []}
    table["models"] = [m for m in table.get("models", []) if m["model_id"] != model_id and "grid" in m] + [entry]
    args.out.write_text(json.dumps(table, indent=1) + "\n")
    for row in validation:
        print(json.dumps(row))
    print(f"resolution {entry['resolution_score']}, built in {time.time() - started:.0f} s -> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
