"""``idleak mia`` as a function: paths in, OUT written (summary.json, identities.csv/.parquet, scores.npz,
excluded.csv, plots, report.html), the result back.

    from idleak.jobs.mia import mia
    result = mia(members="mem/", nonmembers="non/", out="mia-out", generated="samples/")
    result = mia(members="mem/", nonmembers="non/", out="mia-out", generator="my_pkg.gen:sample", n=20000)
    result = mia(members="mem/", nonmembers="non/", out="mia-out", generator_module="my_pkg.gen:build",
                 latent_recovery=True)
"""

from __future__ import annotations

import csv
import math
import os
import time
from collections import Counter
from pathlib import Path

import numpy as np

from idleak.analyses.mia import MiaOptions, MiaResult, combine_photos, run_mia, run_photo_scores
from idleak.embedding import FaceSet
from idleak.errors import IdleakError
from idleak.jobs.edge import absolute, at_least, fraction, input_warnings
from idleak.jobs.workspace import Prepared, ProgressFactory, Workspace, versions
from idleak.outputs import write_excluded, write_json, write_table
from idleak.sources import Record, Source, open_source, scan_folder

#: identities.csv columns (the Parquet file beside it also has the face boxes).
IDENTITY_COLUMNS = ["identity", "member", "score", "n_over_threshold", "best_generated_path", "best_photo_path",
                    "n_photos", "n_train"]
IDENTITY_EXTRA_COLUMNS = ["best_generated_box", "best_photo_box", "pixel_mse"]
#: Column names accepted for the count in a --train-counts CSV.
COUNT_COLUMNS = ("n_train", "count", "n_images", "images", "n")
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".pgm", ".ppm", ".bmp", ".webp", ".tif", ".tiff", ".gif"}


def read_train_counts(path: str | os.PathLike[str]) -> dict[str, int]:
    """``--train-counts`` CSV: columns ``identity`` and a count (n_train, count, n_images or images)."""
    path = Path(path)
    if not path.is_file():
        raise IdleakError(f"--train-counts file not found: {path}")
    with open(path, newline="", encoding="utf-8-sig") as handle:
        reader = csv.DictReader(handle)
        fields = [f.strip() for f in (reader.fieldnames or [])]
        column = next((c for c in COUNT_COLUMNS if c in fields), None)
        if "identity" not in fields or column is None:
            raise IdleakError(f"{path}: --train-counts CSV needs columns identity,n_train (found: "
                              f"{', '.join(fields) or 'none'})")
        counts: dict[str, int] = {}
        for line, row in enumerate(reader, start=2):
            row = {(k or "").strip(): (v or "").strip() for k, v in row.items()}
            if not row.get("identity"):
                continue
            try:
                counts[row["identity"]] = int(float(row[column]))
            except (TypeError, ValueError):
                raise IdleakError(f"{path}:{line}: {column} must be a number, got {row.get(column)!r}") from None
    if not counts:
        raise IdleakError(f"{path}: --train-counts CSV lists no identities")
    return counts


def count_training_folder(path: str | os.PathLike[str]) -> dict[str, int]:
    """``--train-folder``: image files per first-level sub-folder (one per person)."""
    path = Path(path)
    if not path.is_dir():
        raise IdleakError(f"--train-folder not found or not a folder: {path}")
    counts = Counter(r.identity for r in scan_folder(path)
                     if r.identity is not None and Path(r.path).suffix.lower() in IMAGE_SUFFIXES)
    if not counts:
        raise IdleakError(f"--train-folder has no images in per-person sub-folders: {path}")
    return dict(counts)


def _check_form(generated: object, generator: object, generator_module: object, latent_recovery: bool) -> str:
    given = [name for name, value in (("--generated", generated), ("--generator", generator),
                                      ("--generator-module", generator_module)) if value]
    if len(given) != 1:
        raise IdleakError("give exactly one of --generated FOLDER, --generator module:function or "
                          f"--generator-module module:build (got {', '.join(given) or 'none'})")
    if latent_recovery and not generator_module:
        raise IdleakError("--latent-recovery needs --generator-module module:build (a white-box torch generator)")
    return "latent_recovery" if latent_recovery else "generated_faces"


def mia(members: str | os.PathLike[str], nonmembers: str | os.PathLike[str], out: str | os.PathLike[str],
        generated: str | os.PathLike[str] | None = None, generator: str | None = None,
        generator_module: str | None = None, latent_recovery: bool = False, n: int = 1000, batch_size: int = 64,
        seed: int = 0, train_counts: str | os.PathLike[str] | None = None,
        train_folder: str | os.PathLike[str] | None = None, options: MiaOptions | None = None,
        recovery: object | None = None, targets_per_identity: int | None = None, model: str = "dlib",
        cache: str | os.PathLike[str] | None = None, faces: str = "largest", aligned_generated: bool = False,
        aligned_photos: bool = False, workers: int | None = None, progress: ProgressFactory | None = None,
        report: bool = True, workspace: Workspace | None = None, identity_level: int = 1,
        **model_options: object) -> MiaResult:
    """Run the identity membership attack and write its outputs to ``out``.

    One of ``generated`` (a folder of generated faces), ``generator`` (``module:function`` with
    ``sample(n, seed)``, sampled ``n`` times into ``out/generated``) or ``generator_module``
    (``module:build`` returning a torch module; sampled from standard-normal latents, or attacked by
    latent recovery with ``latent_recovery=True``). ``recovery``: ``RecoveryOptions`` for that attack.
    """
    started = time.perf_counter()
    attack = _check_form(generated, generator, generator_module, latent_recovery)
    options = options or MiaOptions()
    fraction("--alpha", options.alpha)
    at_least("--n", n, 1)
    at_least("--batch-size", batch_size, 1)
    at_least("--bootstrap", options.n_bootstrap, 0)
    if train_counts and train_folder:
        raise IdleakError("give --train-counts or --train-folder, not both")
    if targets_per_identity is not None and targets_per_identity < 1:
        raise IdleakError(f"--targets-per-identity must be at least 1, got {targets_per_identity}")
    counts = read_train_counts(train_counts) if train_counts else (
        count_training_folder(train_folder) if train_folder else None)
    out = absolute(out)
    # validate the inputs before spending time on sampling or embedding
    mem_source = open_source(members, "members", identity_level)
    non_source = open_source(nonmembers, "non-members", identity_level)
    gen_source = None
    if generated:
        from idleak.generators import without_sample_list

        gen_source = without_sample_list(open_source(generated, "generated"))
    module = None
    if generator_module:
        from idleak.attacks.latent_recovery import load_generator_module

        module = load_generator_module(generator_module)
    sample_fn = None
    if generator:
        from idleak.generators import load_callable

        sample_fn = load_callable(generator)
    ws = workspace or Workspace(model, cache, workers, progress, faces, **model_options)
    out.mkdir(parents=True, exist_ok=True)
    timings: dict[str, float] = {}
    generator_info: dict = {}
    if sample_fn is not None or (module is not None and attack == "generated_faces"):
        from idleak.generators import sample_to_folder

        if sample_fn is None:
            from idleak.attacks.latent_recovery import module_sampler

            sample_fn = module_sampler(module)
        t0 = time.perf_counter()
        samples = sample_to_folder(sample_fn, n, out / "generated", batch_size, seed,
                                   progress("sampling") if progress else None)
        timings["sampling_s"] = time.perf_counter() - t0
        generator_info = {"spec": generator or generator_module, "n": n, "batch_size": batch_size, "seed": seed,
                          "folder": str(out / "generated"), "samples_csv": str(out / "generated" / "samples.csv"),
                          "regenerate": "sample(batch_size, seed)[index] with seed and index from samples.csv",
                          "samples_per_second": len(samples) / max(timings["sampling_s"], 1e-9)}
        gen_source = Source(str(out / "generated" / "samples.csv"), "manifest",
                            [Record(str(path)) for path, _ in samples])
    mem = ws.prepare(mem_source, "members", aligned_photos)
    non = ws.prepare(non_source, "non-members", aligned_photos)
    timings["embed_members_s"], timings["embed_nonmembers_s"] = mem.seconds, non.seconds
    excluded = list(mem.faces.excluded) + list(non.faces.excluded)
    extra_rows: dict[str, list] = {}
    if attack == "generated_faces":
        gen = ws.prepare(gen_source, "generated", aligned_generated)
        timings["embed_generated_s"] = gen.seconds
        excluded += gen.faces.excluded
        t0 = time.perf_counter()
        result = run_mia(gen.faces, mem.faces, non.faces, options, counts)
        timings["score_s"] = time.perf_counter() - t0
        generated_paths = gen.faces.paths
        generated_boxes = gen.faces.boxes
        n_generated, n_generated_images = len(gen.faces), len(gen.source.records)
    else:
        t0 = time.perf_counter()
        result, generated_paths, recon_info = _latent_recovery(ws, module, mem, non, options, recovery,
                                                               targets_per_identity, counts, out, progress)
        timings["latent_recovery_s"] = time.perf_counter() - t0
        generated_boxes = None
        n_generated = n_generated_images = len(generated_paths)
        extra_rows["pixel_mse"] = recon_info.pop("identity_pixel_mse")
        generator_info = {"spec": generator_module, **recon_info}
    excluded += result.photos.excluded  # unlabelled member / non-member photos
    by_side = {"excluded_members": _reasons(mem.faces.excluded),
               "excluded_nonmembers": _reasons(non.faces.excluded),
               "excluded_generated": _reasons(gen.faces.excluded) if attack == "generated_faces" else {}}
    reasons = write_excluded(out / "excluded.csv", excluded)
    write_table(identity_rows(result, generated_paths, generated_boxes, counts, extra_rows),
                IDENTITY_COLUMNS + IDENTITY_EXTRA_COLUMNS, out / "identities.csv", csv_columns=IDENTITY_COLUMNS)
    write_scores(out / "scores.npz", result)
    summary = mia_summary(result, options, ws, mem, non, n_generated, n_generated_images, reasons, counts)
    summary.update(by_side)
    summary["generator"] = generator_info
    summary["inputs"] = {"members": mem.source.spec, "nonmembers": non.source.spec,
                         "generated": gen_source.spec if gen_source else None, "generator": generator,
                         "generator_module": generator_module, "store": str(ws.store.root), "faces": ws.faces,
                         "train_counts": str(train_counts) if train_counts else None,
                         "train_folder": str(train_folder) if train_folder else None}
    summary["timings"] = timings
    summary["warnings"] = input_warnings([mem_source, non_source])
    write_json(out / "summary.json", summary)
    from idleak.report.mia import write_mia_plots, write_mia_report

    t0 = time.perf_counter()
    write_mia_plots(out)
    if report:
        from idleak.report.html import evidence

        with evidence(out) as seen:
            write_mia_report(out)
        summary["evidence_unavailable"] = sorted(seen.missing)
    timings["plots_and_report_s"] = time.perf_counter() - t0
    timings["total_s"] = time.perf_counter() - started
    write_json(out / "summary.json", summary)
    result.summary = summary
    return result


def _latent_recovery(ws: Workspace, module: object, mem: Prepared, non: Prepared, options: MiaOptions,
                     recovery: object | None, per_identity: int | None, counts: dict[str, int] | None, out: Path,
                     progress: ProgressFactory | None) -> tuple[MiaResult, np.ndarray, dict]:
    """Reconstruct every (or the first ``per_identity``) photo of each person; score = identity similarity."""
    from idleak.attacks.latent_recovery import (
        RecoveryOptions,
        output_size,
        prepare_target,
        recover,
        save_reconstructions,
    )

    recovery = recovery or RecoveryOptions()
    photos, photo_member = combine_photos(mem.faces, non.faces)
    if per_identity:
        seen: Counter = Counter()
        keep = np.zeros(len(photos), bool)
        for row, identity in enumerate(photos.identities):
            seen[identity] += 1
            keep[row] = seen[identity] <= per_identity
        excluded = photos.excluded
        photos, photo_member = photos.subset(keep), photo_member[keep]
        photos.excluded = excluded
    _, height, width = output_size(module)
    prepared = [prepare_target(str(p), height, width) for p in photos.paths]
    targets = np.stack([image for image, _ in prepared])
    t0 = time.perf_counter()
    rec = recover(module, targets, recovery, progress("latent recovery") if progress else None)
    optimise_s = time.perf_counter() - t0
    names = [f"{photos.identities[i]}_{Path(str(photos.paths[i])).stem}" for i in range(len(photos))]
    recon_paths = save_reconstructions(rec, [_safe(n) for n in names], out / "reconstructions")
    t0 = time.perf_counter()
    similarity, n_detected, n_unscored = reconstruction_similarity(ws, rec.reconstructions, photos,
                                                                   [t for _, t in prepared])
    embed_s = time.perf_counter() - t0
    result = run_photo_scores("latent_recovery", photos, photo_member, similarity, options, counts)
    # pixel score: lower MSE = member; per identity the best (lowest) reconstruction error
    pixel = run_photo_scores("latent_recovery_pixel", photos, photo_member, -rec.mse, options, None)
    result.extra.update({
        "auc_pixel": pixel.roc.auc, "auc_pixel_ci": list(pixel.roc.auc_ci),
        "tpr_at_fpr_pixel": pixel.roc.tpr_at_fpr, "n_reconstructions_face_detected": n_detected,
        "n_reconstructions_face_from_photo_box": len(photos) - n_detected - n_unscored,
        "n_reconstructions_unscored": n_unscored,
        "mean_mse_members": float(rec.mse[photo_member].mean()),
        "mean_mse_nonmembers": float(rec.mse[~photo_member].mean()),
    })
    identity_mse = {str(i): float(-s) for i, s in zip(pixel.identities, pixel.score)}
    info = {"steps": recovery.steps, "restarts": recovery.restarts, "lr": recovery.lr, "seed": recovery.seed,
            "targets": len(photos), "targets_per_identity": per_identity, "output_size": [height, width],
            "reconstructions": str(out / "reconstructions"), "optimise_s": optimise_s,
            "embed_reconstructions_s": embed_s,
            "identity_pixel_mse": [identity_mse[str(i)] for i in result.identities]}
    return result, np.array(recon_paths, dtype=object), info


def reconstruction_similarity(ws: Workspace, reconstructions: np.ndarray, photos: FaceSet,
                              transforms: list[tuple[float, float, float]]) -> tuple[np.ndarray, int, int]:
    """Identity similarity of each reconstruction to its photo. The face is detected in the reconstruction;
    where none is found, the region where the photo's face lies (the reconstruction is pixel-aligned with
    the target) is embedded as a face crop. Returns similarities (-1 where neither works), the number
    detected and the number left unscored."""
    from idleak.attacks.latent_recovery import face_crop

    similarity = np.full(len(photos), -1.0)
    found = ws.embed_images(list(reconstructions))
    rows = np.array([int(str(p)[6:-1]) for p in found.paths], dtype=np.int64)  # paths are "image[i]"
    if len(rows):
        similarity[rows] = np.sum(found.vectors * photos.vectors[rows], axis=1)
    missing = np.setdiff1d(np.arange(len(photos)), rows)
    crops = [(i, face_crop(reconstructions[i], photos.boxes[i], transforms[i])) for i in missing]
    crops = [(i, c) for i, c in crops if c is not None]
    if crops:
        vectors = ws.embedder.embed_aligned([c for _, c in crops])
        for (i, _), vector in zip(crops, vectors):
            similarity[i] = float(vector @ photos.vectors[i])
    return similarity, int(len(rows)), int(len(missing) - len(crops))


def _reasons(excluded: list[tuple[str, str, str]]) -> dict[str, int]:
    return dict(Counter(reason for _, reason, _ in excluded).most_common())


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)[:80]


def _box(box: np.ndarray | None) -> list[float] | None:
    if box is None:
        return None
    box = np.asarray(box, dtype=float)
    return [float(v) for v in box] if box.shape == (4,) and np.all(np.isfinite(box)) else None


def identity_rows(result: MiaResult, generated_paths: np.ndarray, generated_boxes: np.ndarray | None,
                  counts: dict[str, int] | None, extra: dict[str, list] | None = None) -> list[dict]:
    """One row per identity, highest score first."""
    photos = result.photos
    rows = []
    for i in np.lexsort((result.identities.astype(str), -result.score)):
        g, p = int(result.best_generated[i]), int(result.best_photo[i])
        row = {
            "identity": str(result.identities[i]), "member": bool(result.member[i]), "score": float(result.score[i]),
            "n_over_threshold": int(result.n_over[i]),
            "best_generated_path": str(generated_paths[g]) if g >= 0 else None,
            "best_photo_path": str(photos.paths[p]) if p >= 0 else None,
            "n_photos": int(result.n_photos[i]),
            "n_train": counts.get(str(result.identities[i])) if counts else None,
            "best_generated_box": _box(generated_boxes[g]) if generated_boxes is not None and g >= 0 else None,
            "best_photo_box": _box(photos.boxes[p]) if p >= 0 else None,
        }
        for name, values in (extra or {}).items():
            row[name] = values[i]
        rows.append(row)
    return rows


def write_scores(path: Path, result: MiaResult) -> None:
    """scores.npz: the ROC curve, per-identity scores and the nearest-neighbour distributions."""
    d = result.distributions
    np.savez_compressed(
        path, fpr=result.roc.fpr, tpr=result.roc.tpr, score=result.score.astype(np.float64), member=result.member,
        genuine=d.get("genuine", np.zeros(0)), impostor=d.get("impostor", np.zeros(0)),
        generated=d.get("generated", np.zeros(0)), photo_best=d.get("photo_best", np.zeros(0)),
        photo_member=d.get("photo_member", np.zeros(0, bool)), null=np.asarray(result.threshold.null, np.float32),
        n_train=result.over_representation.get("n_train", np.zeros(0, np.int64)))


ATTACK_TEXT = {
    "generated_faces": "score = highest similarity of any generated face to any of the person's photos",
    "latent_recovery": "score = best identity similarity between a photo and its latent-recovered reconstruction",
}


def smallest_rank_p(n_members: int, n_nonmembers: int) -> float:
    """The smallest one-sided p-value a rank test (AUC) of these group sizes can give: every member ranked
    above every non-member, 1 / C(m + n, m). Above alpha, no sample of this size can show a leak."""
    if n_members < 1 or n_nonmembers < 1:
        return 1.0
    return 1.0 / math.comb(n_members + n_nonmembers, n_members)


def honest_roc(roc: dict, n_nonmembers: int) -> dict:
    """``roc`` with no TPR quoted at an FPR the non-members cannot resolve (fewer than 1 / FPR of them):
    null, with the reason."""
    roc = dict(roc, tpr_at_fpr=dict(roc["tpr_at_fpr"]), tpr_at_fpr_ci=dict(roc["tpr_at_fpr_ci"]))
    reasons = {}
    for key, ok in roc["tpr_at_fpr_resolvable"].items():
        if not ok:
            roc["tpr_at_fpr"][key] = None
            roc["tpr_at_fpr_ci"][key] = None
            reasons[key] = (f"not resolvable: {n_nonmembers} non-members resolve FPRs down to "
                            f"{1 / max(n_nonmembers, 1):.3g} only (needs at least {math.ceil(1 / float(key))})")
    roc["tpr_at_fpr_null_reason"] = reasons
    return roc


def mia_summary(result: MiaResult, options: MiaOptions, ws: Workspace, mem: Prepared, non: Prepared,
                n_generated: int, n_generated_images: int, reasons: dict[str, int],
                counts: dict[str, int] | None) -> dict:
    roc = honest_roc(result.roc.summary(), result.n_nonmembers)
    low, high = roc["auc_ci"]
    over = {k: v for k, v in result.over_representation.items() if k != "n_train"}
    resolved = [k for k in ("0.01", "0.1") if roc["tpr_at_fpr"].get(k) is not None]
    tpr_text = f"; TPR {roc['tpr_at_fpr'][resolved[0]]:.2f} at FPR {resolved[0]}" if resolved else ""
    counts_text = (f"AUC {roc['auc']:.3f} (95% CI {low:.3f}-{high:.3f}) over {result.n_members} members and "
                   f"{result.n_nonmembers} non-members{tpr_text}")
    smallest_p = smallest_rank_p(result.n_members, result.n_nonmembers)
    if smallest_p > options.alpha:
        verdict = "too_few_to_decide"
        verdict_text = (f"too few to decide: {result.n_members} members and {result.n_nonmembers} non-members cannot "
                        f"reach alpha {options.alpha:g} (the smallest p-value any ranking of them can give is "
                        f"{smallest_p:.3g}); add people on both sides. {counts_text}.")
    elif low > 0.5:
        verdict = "membership_leak"
        verdict_text = (counts_text + "; members are told apart from non-members: the generator leaks who it was "
                        "trained on.")
    else:
        verdict = "no_evidence_of_membership_leak"
        verdict_text = counts_text + "; members are not told apart from non-members beyond chance."
    return {
        "analysis": "mia",
        "attack": result.attack,
        "attack_text": ATTACK_TEXT[result.attack],
        "verdict": verdict,
        "smallest_possible_p_value": smallest_p,
        "verdict_text": verdict_text,
        **roc,
        "n_members": result.n_members,
        "n_nonmembers": result.n_nonmembers,
        "n_member_photos": int(np.sum(result.n_photos[result.member])),
        "n_nonmember_photos": int(np.sum(result.n_photos[~result.member])),
        "n_generated": int(n_generated),
        "n_generated_images": int(n_generated_images),
        "threshold": result.threshold.value,
        "alpha": options.alpha,
        "threshold_method": result.threshold.method,
        "threshold_text": ("(1 - alpha) quantile of the non-members' per-photo scores: a stranger's photo "
                           "passes it with probability alpha"),
        "threshold_details": result.threshold.details,
        "separation": result.separation,
        "over_representation": over if counts else None,
        **result.extra,
        "excluded": reasons,
        "n_excluded": int(sum(reasons.values())),
        "model": ws.model_id,
        "embedding": {"members": vars(mem.stats) | {"reasons": dict(mem.stats.reasons)},
                      "nonmembers": vars(non.stats) | {"reasons": dict(non.stats.reasons)}},
        "versions": versions(),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
