"""``idleak invert``: how much a split point of a face model leaks, measured by rebuilding the faces.

``run_invert`` takes a target model (``module:function`` or a module), split layers, AUX and PRIVATE
images, runs the attacks of ``idleak.attacks.inversion`` at every split, scores them with
``idleak.analyses.invert`` and writes OUT:

* ``summary.json`` (``"analysis": "invert"``): ``layers`` = one row per (split, attack) with
  ``layer, depth, attack, psnr, ssim, identity_similarity, reid_top1, reid_over_threshold, ...``,
  the baseline (the AUX mean face as a "reconstruction"), the gallery threshold, the class attack's
  per-identity results, timings and settings;
* ``images.csv``: the same metrics per private image;
* ``grid_<layer>.png``: originals above their reconstructions, one row per attack;
  ``grid_class.png`` for the class attack; ``depth.png``: quality and re-identification vs depth;
* ``report.html`` (``idleak.report.invert``).

``run_reference`` trains idleak's reference target on an identity-labelled folder first (see
``idleak.attacks.reference_target`` for the data split) and runs the same.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from idleak import __version__
from idleak.analyses.invert import ReidGallery, aggregate, cosine_rows, image_quality, make_gallery, reidentify
from idleak.errors import IdleakError
from idleak.outputs import write_json, write_table
from idleak.sources import Record, Source, open_source

ProgressFactory = Callable[[str], Callable[[int, int], None]]
ATTACKS = ("learned", "optimize", "datafree", "class")
IMAGE_COLUMNS = ["layer", "depth", "attack", "path", "identity", "psnr", "ssim", "identity_similarity",
                 "reid_identity", "reid_score", "reid_top1", "reid_over_threshold"]


def torch_missing_message() -> str:
    return ('idleak invert needs torch: pip install torch==2.13.0 (CPU wheel), or pip install -e ".[torch]"')


def require_torch() -> None:
    """``IdleakError`` with install instructions when torch is not importable."""
    try:
        import torch  # noqa: F401
    except ImportError:
        raise IdleakError(torch_missing_message()) from None


@dataclass
class InvertSettings:
    """Everything that changes numbers besides the inputs; recorded in summary.json."""

    attack: object = None  # idleak.attacks.inversion.AttackSettings (default made on use)
    alpha: float = 0.01  # re-identification threshold: false-match rate of a stranger
    threads: int | None = None  # torch threads (None: torch's default)
    grid_columns: int = 10
    target_epochs: int = 30  # reference target training
    seed: int = 0

    def attack_settings(self):  # -> AttackSettings
        from idleak.attacks.inversion import AttackSettings

        if self.attack is None:
            self.attack = AttackSettings(seed=self.seed)
        return self.attack


def parse_attacks(text: str | Sequence[str] | None, has_classes: bool) -> list[str]:
    """``learned,optimize,datafree,class`` -> list; None: learned and optimize, plus class when the model names
    classes."""
    if text is None:
        return ["learned", "optimize"] + (["class"] if has_classes else [])
    items = text.split(",") if isinstance(text, str) else list(text)
    attacks = list(dict.fromkeys(a.strip().lower() for a in items if a.strip()))
    unknown = [a for a in attacks if a not in ATTACKS]
    if unknown or not attacks:
        raise IdleakError(f"--attack: unknown attack {unknown[0] if unknown else ''!r}; use {', '.join(ATTACKS)}")
    return attacks


def _records(spec: str | os.PathLike[str] | Sequence[Record], role: str) -> tuple[list[Record], str]:
    if isinstance(spec, str | os.PathLike):
        source = open_source(spec, role)
        if source.kind == "store":
            raise IdleakError(f"{role} must be a folder or manifest of images (an embedding store has no pixels)")
        return source.records, str(spec)
    return list(spec), f"{len(spec)} records"


def run_invert(model: object, layers: str | Sequence[str], aux: str | os.PathLike[str] | Sequence[Record],
               private: str | os.PathLike[str] | Sequence[Record], out: str | os.PathLike[str],
               attacks: str | Sequence[str] | None = None, blockwise: bool = False,
               defense: str | Callable | None = None, gallery: str | os.PathLike[str] | Sequence[Record] | None = None,
               input_shape: Sequence[int] | None = None, settings: InvertSettings | None = None,
               workspace: object = None, cache: str | os.PathLike[str] | None = None, workers: int | None = None,
               progress: ProgressFactory | None = None, extra: dict | None = None, report: bool = True) -> dict:
    """Attack ``model`` split at ``layers``; write OUT (see the module docstring); return the summary.

    ``model``: ``"module:function"`` or a ``torch.nn.Module``. ``gallery``: other photos of the
    private identities for re-identification (default: PRIVATE itself, a query never matching its
    own file). ``defense``: ``"module:function"`` or a callable on feature tensors.
    """
    require_torch()
    import torch

    from idleak.attacks import inversion
    from idleak.attacks.split import (
        SplitModel,
        apply_defense,
        build_model,
        load_defense,
        load_images,
        parse_layers,
        to_uint8_rgb,
    )

    started = time.perf_counter()
    settings = settings or InvertSettings()
    attack_settings = settings.attack_settings()
    if not 0 < settings.alpha < 1:
        raise IdleakError(f"--alpha must be between 0 and 1, got {settings.alpha}")
    if settings.threads:
        torch.set_num_threads(int(settings.threads))
    layer_names = parse_layers(layers)
    model_label = model if isinstance(model, str) else type(model).__name__
    net = build_model(model) if isinstance(model, str) else model
    if not isinstance(net, torch.nn.Module):
        raise IdleakError(f"model must be a 'module:function' spec or a torch.nn.Module, not {type(net).__name__}")
    defense_fn = load_defense(defense) if isinstance(defense, str) else defense
    defense_label = defense if isinstance(defense, str) or defense is None else getattr(defense, "__name__", "callable")
    split = SplitModel.create(net, layer_names, input_shape)
    classes = [str(c) for c in getattr(net, "classes", None) or []]
    attack_list = parse_attacks(attacks, bool(classes))
    if "class" in attack_list and not classes:
        raise IdleakError("the class attack needs the model to name its outputs: a `classes` list attribute")
    circular = [name for name in split.points if name.split(".")[0] in getattr(net, "circular_layers", ())]
    if circular:
        raise IdleakError(f"--layers {circular[0]}: {net.circularity_note}")
    caveats = list(getattr(net, "caveats", ()))
    if "datafree" in attack_list:
        from idleak.attacks.datafree import statistics_layers

        for layer in split.points:
            statistics_layers(split, layer)  # IdleakError before any work when a split has no BatchNorm statistics

    aux_records, aux_label = _records(aux, "AUX")
    private_records, private_label = _records(private, "PRIVATE")
    chips = getattr(net, "input_kind", None) == "dlib_chip"  # dlib's target: aligned face chips, not whole images
    aux_images, _, aux_excluded = load_images(aux_records, split.input_shape, chips)
    private_images, private_records, private_excluded = load_images(private_records, split.input_shape, chips)
    if len(aux_images) < 2:
        raise IdleakError(f"AUX {aux_label}: needs at least 2 readable images, found {len(aux_images)}")
    if len(private_images) == 0:
        raise IdleakError(f"PRIVATE {private_label}: no readable images")
    identities = [r.identity for r in private_records]
    if any(i is None for i in identities):
        raise IdleakError("PRIVATE images need identity labels (sub-folders or a manifest with identity) "
                          "for re-identification")
    out = Path(os.path.abspath(out))
    out.mkdir(parents=True, exist_ok=True)

    ws = workspace
    if ws is None:
        from idleak.jobs.workspace import Workspace

        ws = Workspace("dlib", cache=cache, workers=workers, progress=progress)
    gallery_records, gallery_label = (private_records, "PRIVATE (own image excluded)") if gallery is None \
        else _records(gallery, "GALLERY")
    t0 = time.perf_counter()
    prepared = ws.prepare(Source(gallery_label, "manifest", list(gallery_records)), "gallery", aligned=True)
    reid_gallery = make_gallery(prepared.faces, settings.alpha)
    original_vectors = ws.embedder.embed_aligned(to_uint8_rgb(private_images))
    embed_seconds = time.perf_counter() - t0
    paths = [r.path for r in private_records]
    n_without = _without_gallery_photo(private_records, prepared.faces)

    aux_t = torch.from_numpy(aux_images)
    private_t = torch.from_numpy(private_images)
    prior = aux_t.mean(0, keepdim=True)
    baseline = _baseline(private_images, prior.numpy(), original_vectors, ws, identities, reid_gallery, paths)
    originals_reid = reidentify(original_vectors, identities, reid_gallery, paths)
    grid_index = _grid_indices(identities, settings.grid_columns)

    rows: list[dict] = []
    image_rows: list[dict] = []
    grids: dict[str, list[tuple[str, np.ndarray]]] = {}
    blockwise_trainer = None
    if "learned" in attack_list and blockwise:
        blockwise_trainer = inversion.BlockwiseTrainer(split, aux_t, attack_settings, defense_fn)

    def score(layer: str, depth: int, attack: str, recon: np.ndarray, timing: dict) -> dict:
        psnr, ssim = image_quality(private_images, recon)
        vectors = ws.embedder.embed_aligned(to_uint8_rgb(recon))
        similarity = cosine_rows(vectors, original_vectors)
        reid = reidentify(vectors, identities, reid_gallery, paths)
        for i, path in enumerate(paths):
            image_rows.append({"layer": layer, "depth": depth, "attack": attack, "path": path,
                               "identity": identities[i], "psnr": psnr[i], "ssim": ssim[i],
                               "identity_similarity": similarity[i], "reid_identity": reid.matched_identity[i],
                               "reid_score": reid.score[i], "reid_top1": bool(reid.correct[i]),
                               "reid_over_threshold": bool(reid.over_threshold[i])})
        return aggregate(psnr, ssim, similarity, reid) | timing

    for layer, point in split.points.items():
        observed = apply_defense(defense_fn, split.batched_features(private_t, layer))
        grids[layer] = [("original", private_images[grid_index])]
        for attack in [a for a in attack_list if a != "class"]:
            label = f"{attack} {layer}"
            callback = progress(label) if progress else None
            timing: dict = {}
            synthetic = None
            if attack == "learned":
                if blockwise_trainer is not None:
                    decoder = blockwise_trainer.train(layer, callback)
                else:
                    decoder = inversion.train_decoder(split, layer, aux_t, attack_settings, defense_fn, callback)
                t1 = time.perf_counter()
                recon = decoder.invert(observed).numpy()
                timing = {"train_seconds": decoder.seconds, "attack_seconds": time.perf_counter() - t1}
            elif attack == "datafree":
                from idleak.attacks.datafree import train_datafree

                decoder, facts = train_datafree(split, layer, attack_settings, defense_fn, callback)
                synthetic = facts.pop("synthetic").numpy()
                t1 = time.perf_counter()
                recon = decoder.invert(observed).numpy()
                timing = {"train_seconds": decoder.seconds, "attack_seconds": time.perf_counter() - t1} | facts
            else:
                t1 = time.perf_counter()
                recon = inversion.optimize_attack(split, layer, observed, prior, attack_settings, callback).numpy()
                timing = {"train_seconds": 0.0, "attack_seconds": time.perf_counter() - t1}
            timing["seconds_per_image"] = timing["attack_seconds"] / len(recon)
            name = f"{attack} (blockwise)" if attack == "learned" and blockwise else attack
            row = {"layer": layer, "depth": point.depth, "attack": name, "feature_shape": list(point.feature_shape),
                   "feature_size": point.feature_size}
            row |= score(layer, point.depth, name, recon, timing)
            rows.append(row)
            grids[layer].append((name, recon[grid_index]))
            if synthetic is not None:  # what the data-free attacker trained on
                grids[layer].append(("datafree: synthesised", synthetic[:len(grid_index)]))
        _save_grid(out / grid_file(layer), grids[layer], [identities[i] for i in grid_index],
                   f"split at {layer} (depth {point.depth}, {point.feature_size} features)")

    class_rows: list[dict] = []
    if "class" in attack_list:
        row, class_rows = _class_attack(split, classes, identities, private_images, original_vectors, prior,
                                        attack_settings, ws, reid_gallery, out, progress)
        if row:
            rows.append(row)

    reasons: dict[str, int] = {}
    for _, reason, _ in aux_excluded + private_excluded:
        reasons[reason] = reasons.get(reason, 0) + 1
    write_table(image_rows, IMAGE_COLUMNS, out / "images.csv", parquet=False)
    summary = {
        "analysis": "invert",
        "mode": "model",
        "model": model_label,
        "input_shape": list(split.input_shape),
        "n_leaves": split.n_leaves,
        "split_layers": [{"layer": p.layer, "depth": p.depth, "feature_shape": list(p.feature_shape),
                          "feature_size": p.feature_size} for p in split.points.values()],
        "attacks": attack_list,
        "blockwise": bool(blockwise),
        "defense": defense_label,
        "layers": rows,
        "baseline": baseline,
        "originals": {"reid_top1": originals_reid.top1_rate, "reid_over_threshold": originals_reid.over_threshold_rate},
        "chance_reid": 1.0 / reid_gallery.n_identities,
        "threshold": reid_gallery.threshold.value,
        "threshold_method": reid_gallery.threshold.method,
        "threshold_details": reid_gallery.threshold.details,
        "alpha": settings.alpha,
        "class_attack": class_rows,
        "caveats": caveats,
        "n_aux_images": int(len(aux_images)),
        "n_private_images": int(len(private_images)),
        "n_private_identities": len(set(identities)),
        "n_gallery_faces": int(len(reid_gallery.vectors)),
        "n_gallery_identities": reid_gallery.n_identities,
        "n_private_without_gallery_photo": int(n_without),
        "excluded": reasons,
        "inputs": {"aux": aux_label, "private": private_label, "gallery": gallery_label},
        "face_model": ws.model_id,
        "settings": {"alpha": settings.alpha, "threads": settings.threads or torch.get_num_threads(),
                     "seed": settings.seed, **{k: v for k, v in asdict(attack_settings).items()}},
        "grids": {layer: grid_file(layer) for layer in grids} | ({"class": "grid_class.png"} if class_rows else {}),
        "versions": {"idleak": __version__, "torch": torch.__version__, "numpy": np.__version__},
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    summary["verdict"], summary["verdict_text"] = verdict(summary)
    summary.update(extra or {})
    depth_rows = [r for r in rows if r["attack"] != "class"]
    if depth_rows:
        (out / "depth.png").write_bytes(depth_chart(depth_rows, summary))
        summary["depth_chart"] = "depth.png"
    summary["timings"] = {"embed_gallery_and_originals_s": embed_seconds, "total_s": time.perf_counter() - started}
    write_json(out / "summary.json", summary)
    if report:
        from idleak.report.invert import write_invert_report

        write_invert_report(out)
    return summary


def _without_gallery_photo(private: list[Record], faces: object) -> int:
    """Private images whose identity has no gallery photo other than the image itself."""
    by_identity: dict[str, set[str]] = {}
    for path, identity in zip(faces.paths, faces.identities):
        if identity is not None:
            by_identity.setdefault(str(identity), set()).add(os.path.realpath(str(path)))
    return sum(1 for r in private if not (by_identity.get(str(r.identity), set()) - {os.path.realpath(r.path)}))


def grid_file(layer: str) -> str:
    return "grid_" + re.sub(r"[^A-Za-z0-9._-]+", "_", layer) + ".png"


def _grid_indices(identities: list[str], columns: int) -> np.ndarray:
    """Up to ``columns`` private images, one per identity first (in order of appearance)."""
    chosen, seen = [], set()
    for rounds in range(2):
        for i, identity in enumerate(identities):
            if len(chosen) >= columns:
                break
            if (rounds == 0 and identity not in seen) or (rounds == 1 and i not in chosen):
                chosen.append(i)
                seen.add(identity)
    return np.array(chosen[:columns], dtype=np.int64)


def _baseline(private: np.ndarray, prior: np.ndarray, originals: np.ndarray, ws: object, identities: list[str],
              gallery: ReidGallery, paths: list[str]) -> dict:
    """The AUX mean face offered as every reconstruction: what an attacker gets without the features."""
    from idleak.attacks.split import to_uint8_rgb

    guess = np.repeat(prior, len(private), axis=0)
    psnr, ssim = image_quality(private, guess)
    vector = ws.embedder.embed_aligned(to_uint8_rgb(prior))
    similarity = cosine_rows(np.repeat(vector, len(private), axis=0), originals)
    reid = reidentify(np.repeat(vector, len(private), axis=0), identities, gallery, paths)
    return {"what": "the AUX mean face as every reconstruction", "psnr": float(psnr.mean()),
            "ssim": float(ssim.mean()), "identity_similarity": float(similarity.mean()), "reid_top1": reid.top1_rate}


def _class_attack(split: object, classes: list[str], identities: list[str], private_images: np.ndarray,
                  original_vectors: np.ndarray, prior: object, attack_settings: object, ws: object,
                  gallery: ReidGallery, out: Path, progress: ProgressFactory | None) -> tuple[dict | None, list[dict]]:
    """Fredrikson et al.'s attack on every private identity that is a class of the model."""
    from idleak.attacks import inversion
    from idleak.attacks.split import to_uint8_rgb

    targets = [c for c in dict.fromkeys(identities) if c in classes]
    if not targets:
        raise IdleakError("class attack: no PRIVATE identity is one of the model's classes")
    indices = [classes.index(c) for c in targets]
    t1 = time.perf_counter()
    recovered = inversion.class_attack(split, indices, prior, attack_settings,
                                       progress("class attack") if progress else None)
    seconds = time.perf_counter() - t1
    probabilities = inversion.class_probabilities(split, recovered, indices)
    recovered = recovered.numpy()
    vectors = ws.embedder.embed_aligned(to_uint8_rgb(recovered))
    reid = reidentify(vectors, targets, gallery)
    rows, psnrs, ssims, sims = [], [], [], []
    identity_array = np.array(identities, dtype=object)
    for k, identity in enumerate(targets):
        mine = np.flatnonzero(identity_array == identity)
        psnr, ssim = image_quality(private_images[mine], np.repeat(recovered[k:k + 1], len(mine), axis=0))
        similarity = float(np.mean(original_vectors[mine] @ vectors[k]))
        psnrs.append(psnr.mean())
        ssims.append(ssim.mean())
        sims.append(similarity)
        rows.append({"identity": identity, "class_index": indices[k], "class_probability": probabilities[k],
                     "identified_as": reid.matched_identity[k], "score": float(reid.score[k]),
                     "identified": bool(reid.correct[k]), "over_threshold": bool(reid.over_threshold[k]),
                     "psnr": float(psnr.mean()), "ssim": float(ssim.mean()), "identity_similarity": similarity})
    shown = min(len(targets), 10)
    first = [int(np.flatnonzero(identity_array == t)[0]) for t in targets[:shown]]
    _save_grid(out / "grid_class.png", [("recovered (class)", recovered[:shown]),
                                        ("a private photo", private_images[first])],
               targets[:shown], "class attack: representative face of each identity")
    row = {"layer": "output", "depth": split.n_leaves, "attack": "class", "feature_shape": [len(classes)],
           "feature_size": len(classes)}
    row |= aggregate(np.array(psnrs), np.array(ssims), np.array(sims), reid)
    row |= {"train_seconds": 0.0, "attack_seconds": seconds, "seconds_per_image": seconds / len(targets),
            "identified": int(np.sum(reid.correct)), "n_classes_attacked": len(targets)}
    return row, rows


def verdict(summary: dict) -> tuple[str, str]:
    """Which splits let an attacker re-identify private people more often than chance (binomial, alpha)."""
    alpha, chance = summary["alpha"], summary["chance_reid"]
    split_rows = [r for r in summary["layers"] if r["attack"] != "class"]
    if not split_rows:
        return "neutral", "only the class attack was run."
    best: dict[str, dict] = {}
    for row in split_rows:
        if row["layer"] not in best or row["reid_top1"] > best[row["layer"]]["reid_top1"]:
            best[row["layer"]] = row
    leaking = [r for r in best.values() if r["reid_p_value"] < alpha]
    parts = [f"{r['layer']} (depth {r['depth']}): {r['reid_top1']:.0%} re-identified by {r['attack']}"
             for r in best.values()]
    text = "; ".join(parts) + f" (chance {chance:.0%})."
    if leaking:
        names = ", ".join(r["layer"] for r in leaking)
        return "leak", f"Features at {names} identify private people more often than chance. " + text
    return "clean", "No split re-identifies private people more often than chance. " + text


# -- pictures ------------------------------------------------------------------------------------------
def _save_grid(path: Path, rows: list[tuple[str, np.ndarray]], column_titles: list[str], title: str) -> None:
    from idleak.report.plots import figure_png, plt

    n_rows, n_cols = len(rows), max(1, len(rows[0][1]))
    fig, axes = plt.subplots(n_rows, n_cols, figsize=(0.95 * n_cols + 1.1, 1.15 * n_rows + 0.5), squeeze=False)
    for r, (label, images) in enumerate(rows):
        for c in range(n_cols):
            ax = axes[r, c]
            ax.set_xticks([])
            ax.set_yticks([])
            for spine in ax.spines.values():
                spine.set_visible(False)
            if c < len(images):
                image = np.clip(images[c], 0, 1)
                if image.shape[0] == 1:
                    ax.imshow(image[0], cmap="gray", vmin=0, vmax=1)
                else:
                    ax.imshow(image.transpose(1, 2, 0))
            if c == 0:
                ax.set_ylabel(label, fontsize=8)
            if r == 0 and c < len(column_titles):
                ax.set_title(str(column_titles[c]), fontsize=7)
    fig.suptitle(title, fontsize=9)
    path.write_bytes(figure_png(fig))


def depth_chart(rows: list[dict], summary: dict) -> bytes:
    """PSNR, identity similarity and re-identification against split depth, one line per attack."""
    from idleak.report.plots import figure_png, plt

    order = sorted({(r["depth"], r["layer"]) for r in rows})
    x_of = {layer: i for i, (_, layer) in enumerate(order)}
    labels = [f"{layer}\n(depth {depth})" for depth, layer in order]
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.6))
    panels = [("psnr", "PSNR (dB)", summary["baseline"]["psnr"], "mean face"),
              ("identity_similarity", "identity similarity (cosine)", summary["threshold"], "re-id threshold"),
              ("reid_top1", "re-identified (top-1 rate)", summary["chance_reid"], "chance")]
    colours = {"learned": "#c0392b", "optimize": "#2471a3", "datafree": "#8e44ad"}
    for ax, (key, ylabel, reference, ref_label) in zip(axes, panels):
        for attack in dict.fromkeys(r["attack"] for r in rows):
            points = sorted((x_of[r["layer"]], r[key]) for r in rows if r["attack"] == attack)
            colour = colours.get(attack.split()[0], None)
            ax.plot([p[0] for p in points], [p[1] for p in points], marker="o", label=attack, color=colour)
        ax.axhline(reference, color="#7f8c8d", linestyle="--", linewidth=1, label=ref_label)
        if key == "reid_top1":
            ax.axhline(summary["originals"]["reid_top1"], color="#27ae60", linestyle=":", linewidth=1,
                       label="original images")
            ax.set_ylim(-0.02, 1.02)
        ax.set_xticks(range(len(order)))
        ax.set_xticklabels(labels, fontsize=8)
        ax.set_ylabel(ylabel)
        ax.spines[["top", "right"]].set_visible(False)
        ax.legend(fontsize=7)
    fig.suptitle("What the features at each split give away (deeper = more layers on the device)", fontsize=10)
    fig.tight_layout()
    return figure_png(fig)


# -- the reference target -----------------------------------------------------------------------------
@dataclass
class ReferenceOptions:
    """What ``run_reference`` varies: split layers and attacks (defaults: all four blocks, all attacks)."""

    layers: Sequence[str] | None = None
    attacks: str | Sequence[str] | None = None
    target_fraction: float = 0.5
    private_per_identity: int = 2
    extra: dict = field(default_factory=dict)


def run_reference(folder: str | os.PathLike[str], out: str | os.PathLike[str], options: ReferenceOptions | None = None,
                  blockwise: bool = False, defense: str | Callable | None = None,
                  settings: InvertSettings | None = None, workspace: object = None,
                  cache: str | os.PathLike[str] | None = None, workers: int | None = None,
                  progress: ProgressFactory | None = None, report: bool = True) -> dict:
    """Train the reference target on ``folder`` (split as in ``reference_target``), save it, attack it."""
    require_torch()
    import torch

    from idleak.attacks.reference_target import (
        REFERENCE_INPUT,
        REFERENCE_LAYERS,
        make_split,
        save_reference_target,
        train_reference_target,
    )
    from idleak.attacks.split import load_images

    options = options or ReferenceOptions()
    settings = settings or InvertSettings()
    if settings.threads:
        torch.set_num_threads(int(settings.threads))
    split = make_split(folder, settings.seed, options.target_fraction, options.private_per_identity)
    out = Path(os.path.abspath(out))
    out.mkdir(parents=True, exist_ok=True)
    train_images, train_records, _ = load_images(split.target_train, REFERENCE_INPUT)
    private_images, private_records, _ = load_images(split.private, REFERENCE_INPUT)
    trained = train_reference_target(train_images, [r.identity for r in train_records], private_images,
                                     [r.identity for r in private_records], settings.target_epochs, settings.seed)
    save_reference_target(trained.model, out / "target.pt")
    description = split.describe()
    write_json(out / "split.json", description)
    reference = {
        "folder": str(folder), "weights": "target.pt", "split": "split.json",
        "n_target_identities": len(split.target_identities), "n_aux_identities": len(split.aux_identities),
        "n_target_train_images": description["n_target_train_images"],
        "n_private_images": description["n_private_images"], "n_gallery_images": description["n_gallery_images"],
        "n_aux_images": description["n_aux_images"], "design": description["design"],
        "train_accuracy": trained.train_accuracy, "private_accuracy": trained.private_accuracy,
        "epochs": trained.epochs, "train_seconds": trained.seconds,
    }
    return run_invert(trained.model, list(options.layers or REFERENCE_LAYERS), split.aux, split.private, out,
                      attacks=options.attacks or list(ATTACKS), blockwise=blockwise, defense=defense,
                      gallery=split.gallery, settings=settings, workspace=workspace, cache=cache, workers=workers,
                      progress=progress, extra={"mode": "reference", "reference": reference} | options.extra,
                      report=report)
