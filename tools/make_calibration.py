"""Rebuild src/idleak/data/calibration.json: the shipped impostor calibration (see idleak/decide/shipped.py).

Built from LFW (in-the-wild colour photos, 5,749 people): identities are split by a hash of the name
(``idleak.decide.shipped.lfw_build_part``, 70% build / 30% held out). On the build part, every face is a
stranger (each person weighs 1, shared by their photos) searched against everyone else: per grid score
t, how many other people beat t (a photo of a person with m photos counts 1/m); from that, the
probability that its best match among N people beats t (unbiased, N = 1 ... 2,000); its upper 95%
bound comes from an identity-level bootstrap (people resampled with replacement, as strangers and as
gallery together). Then it is validated on people it was not built from: random galleries of held-out
LFW people, each face searched against the gallery without its own identity (leave-one-identity-out),
flagged at the shipped threshold; and the same per population (ORL, Extended Yale B, johns, fr,
UTKFace adults/minors/children).

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
from scipy.special import gammaln

from idleak.decide.shipped import MIN_PAIRS, ShippedCalibration, lfw_build_part
from idleak.embedding import FaceSet, embed_records, load_faces
from idleak.faces import load_embedder, parse_model
from idleak.sources import scan_folder
from idleak.store import EmbeddingStore

ROOT = Path(__file__).resolve().parents[1]
GRID = np.round(np.arange(0.8, 1.0 + 1e-9, 0.0005), 4)
#: Gallery sizes whose best-of-N rate is measured directly (at most about half the build identities).
SIZES = [1, 2, 3, 5, 10, 20, 30, 50, 100, 200, 300, 500, 1000, 2000]
CONFIDENCE = 0.95
N_BOOT = 200
#: The bootstrap covers scores above this (per-comparison rate about 1.5%); below, relative margins are small.
BOOT_FROM = 0.9
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
def no_match(k: np.ndarray, n: int, others: int) -> np.ndarray:
    """Unbiased estimate of (1 - q)^n from k exceeding identities out of ``others``: C(others - k, n) / C(others, n)."""
    k = np.minimum(k, others - n)
    return np.exp(gammaln(others - k + 1) - gammaln(others - k - n + 1) - gammaln(others + 1) + gammaln(others - n + 1))


def best_of_n(k: np.ndarray, weights: np.ndarray, others: int) -> np.ndarray:
    """P(a stranger's best of N > t) per (size in SIZES, grid point) from per-stranger exceedance counts ``k``."""
    out = np.zeros((len(SIZES), k.shape[1]))
    hit = k > 0
    rows, cols = np.nonzero(hit)
    for j, n in enumerate(SIZES):
        p = 1.0 - no_match(k[rows, cols], n, others)
        out[j] = np.bincount(cols, weights=p * weights[rows], minlength=k.shape[1])
    return out / weights.sum()


def fit(vectors: np.ndarray, groups: np.ndarray, seed: int = 0, block: int = 500) -> dict:
    """Best-of-N false-match rates on GRID x SIZES, their identity-bootstrap upper bound, and the resolution.

    Per stranger face i and grid point t, ``k_i(t)`` = the number of *other identities* whose random photo
    beats t (a face j of identity b counts 1/m_b). A gallery of N people drawn from the population misses
    t with probability (1 - q_i)^N, estimated without bias by C(G - 1 - k_i, N) / C(G - 1, N).
    """
    _, gi, m = np.unique(groups, return_inverse=True, return_counts=True)
    n_ids, n = len(m), len(vectors)
    col_weight = 1.0 / m[gi]
    bins = len(GRID) + 1
    k = np.zeros((n, len(GRID)))
    boot_bin = int(np.searchsorted(GRID, BOOT_FROM))
    entries = []
    for start in range(0, n, block):
        rows = np.arange(start, min(start + block, n))
        sims = vectors[rows] @ vectors.T
        sims[gi[rows][:, None] == gi[None, :]] = -2.0  # own identity never counts
        b = np.minimum(np.searchsorted(GRID, sims, side="left"), len(GRID) - 1)  # s > GRID[t] <=> b > t
        hist = np.bincount((np.arange(len(rows))[:, None] * bins + b).ravel(),
                           weights=np.broadcast_to(col_weight, b.shape).ravel(), minlength=len(rows) * bins)
        k[rows] = np.cumsum(hist.reshape(len(rows), bins)[:, ::-1], axis=1)[:, ::-1][:, 1:]
        r, c = np.nonzero(b > boot_bin)
        entries.append((rows[r], gi[c], b[r, c] - boot_bin - 1))
    others = n_ids - 1
    weights = col_weight  # each stranger identity weighs 1, shared by its photos
    rate = best_of_n(k, weights, others)
    # identity bootstrap on the tail: strangers and gallery identities resampled together
    face, ident, tbin = (np.concatenate(x) for x in zip(*entries))
    tail = len(GRID) - boot_bin  # bootstrap columns: grid points boot_bin, boot_bin + 1, ...
    rng = np.random.default_rng(seed)
    boots = np.empty((N_BOOT, len(SIZES), tail))
    for rep in range(N_BOOT):
        c = rng.multinomial(n_ids, np.full(n_ids, 1.0 / n_ids)).astype(np.float64)
        hist = np.bincount(face * tail + tbin, weights=c[ident] / m[ident], minlength=n * tail).reshape(n, tail)
        kb = np.cumsum(hist[:, ::-1], axis=1)[:, ::-1]
        boots[rep] = best_of_n(kb, c[gi] * col_weight, others)
    upper = rate.copy()
    upper[:, boot_bin:] = np.maximum(np.quantile(boots, CONFIDENCE, axis=0), rate[:, boot_bin:])
    first = boot_bin
    ratio = np.where(rate[:, first] > 0, upper[:, first] / np.maximum(rate[:, first], 1e-300), 1.0)
    upper[:, :first] = np.minimum(1.0, rate[:, :first] * ratio[:, None])
    upper = np.maximum.accumulate(upper[:, ::-1], axis=1)[:, ::-1]  # non-increasing in t
    upper = np.maximum.accumulate(upper, axis=0)  # non-decreasing in N
    # resolution: distinct identity pairs with a face pair above each grid point
    pair_max: dict[tuple[int, int], int] = {}
    for i, b, t in zip(gi[face].tolist(), ident.tolist(), tbin.tolist()):
        key = (min(i, b), max(i, b))
        pair_max[key] = max(pair_max.get(key, -1), t)
    top_bins = np.array(sorted(pair_max.values()))
    pairs_above = np.array([int(np.sum(top_bins >= t - boot_bin)) if t >= boot_bin else MIN_PAIRS
                            for t in range(len(GRID))])
    resolution = float(GRID[np.flatnonzero(pairs_above >= MIN_PAIRS)[-1]])

    def fmt(a: np.ndarray) -> list:
        return [[float(f"{x:.6g}") for x in row] for row in a]

    return {
        "grid": {"score": GRID.tolist(), "sizes": SIZES, "rate": fmt(rate), "upper": fmt(upper)},
        "confidence": CONFIDENCE,
        "resolution_score": resolution,
        "n_faces": int(n),
        "n_identities": int(n_ids),
        "n_identity_pairs": int(n_ids * (n_ids - 1) // 2),
        "method": (f"per stranger face (each identity weighs 1, shared by its photos), the share of other "
                   f"identities whose random photo beats the score (photos weigh 1/m); a gallery of N distinct people "
                   f"misses it with probability estimated without bias by C(G-1-k, N)/C(G-1, N); "
                   f"rates for N in {SIZES}; upper bound: "
                   f"{CONFIDENCE:.0%} quantile of {N_BOOT} identity-level bootstrap replicates (strangers and "
                   f"gallery resampled together; scores above {BOOT_FROM}, below it the same relative margin); "
                   f"other N by monotonicity and the union bound over blocks; resolved while at least {MIN_PAIRS} "
                   f"distinct identity pairs exceed the score"),
    }


# -- validation ---------------------------------------------------------------------------------------
def best_other(vectors: np.ndarray, groups: np.ndarray) -> np.ndarray:
    """Each face's best similarity to the faces of other identities (leave-one-identity-out)."""
    sims = vectors @ vectors.T
    sims[groups[:, None] == groups[None, :]] = -np.inf
    return sims.max(1)


def validate_lfw(cal: ShippedCalibration, vectors: np.ndarray, groups: np.ndarray, seed: int = 0) -> list[dict]:
    """LOIO false-flag rate at the shipped threshold on random galleries of held-out people.

    ``one_photo``: N distinct people, one random photo each (what the calibration estimates without bias);
    ``all_photos``: people with all their photos until N faces (several photos per person: conservative).
    """
    rng = np.random.default_rng(seed)
    ids, gi, counts = np.unique(groups, return_inverse=True, return_counts=True)
    sims = vectors @ vectors.T
    sims[gi[:, None] == gi[None, :]] = -np.inf
    by_id = np.split(np.argsort(gi, kind="stable"), np.cumsum(counts)[:-1])
    rows = []
    for layout in ("one_photo", "all_photos"):
        for size in GALLERY_SIZES:
            if size > 0.6 * (len(ids) if layout == "one_photo" else len(vectors)):
                continue
            reps = 200 if size < 1000 else 50
            thresholds = {a: cal.threshold(a, size) for a in ALPHAS}
            flags = {a: [] for a in ALPHAS}
            for _ in range(reps):
                perm = rng.permutation(len(ids))
                if layout == "one_photo":
                    idx = np.array([rng.choice(by_id[i]) for i in perm[:size]])
                else:
                    idx = np.flatnonzero(np.isin(gi, perm[: int(np.searchsorted(np.cumsum(counts[perm]), size)) + 1]))
                best = sims[np.ix_(idx, idx)].max(1)
                inverse = np.unique(gi[idx], return_inverse=True)[1]
                for a in ALPHAS:
                    hit = best > thresholds[a].value  # each person weighs 1 (shared by their photos)
                    flags[a].append(float(np.mean(np.bincount(inverse, hit) / np.bincount(inverse))))
            for a in ALPHAS:
                f = np.array(flags[a])
                rows.append({"population": f"lfw_held_out_{layout}", "gallery_faces": size, "alpha": a,
                             "repetitions": reps, "threshold": thresholds[a].value,
                             "estimated_rate": round(thresholds[a].details["false_flag_rate_estimate"], 5),
                             "stated_bound": round(thresholds[a].details["false_flag_rate_upper"], 5),
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
