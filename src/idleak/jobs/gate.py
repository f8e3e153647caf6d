"""``idleak gate``: release only the synthetic images that pass the audit's calibrated test.

    from idleak.jobs.gate import gate
    result = gate("real/", "gate-out", synthetic="synthetic/", mode="copy")
"""

from __future__ import annotations

import math
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from idleak.analyses.gate import GateDecision, GateOptions, calibrate_gate, gate_faces
from idleak.decide import METHOD_TEXT, GalleryDecider
from idleak.errors import IdleakError
from idleak.generators import load_callable, to_uint8_rgb
from idleak.jobs.edge import Exclusions, absolute, at_least, input_warnings, read_exclusions
from idleak.jobs.workspace import ProgressFactory, Workspace, versions
from idleak.outputs import write_excluded, write_summary_and_report, write_table
from idleak.sources import Record, Source, open_source

MODES = ("list", "copy", "link")
#: File that marks a folder idleak made (and may therefore delete and rebuild).
MARKER = ".idleak-made"
ACCEPTED_COLUMNS = ["path", "similarity", "real_path", "real_identity", "statistic", "p_value"]
REJECTED_COLUMNS = ["path", "reason", "real_path", "real_identity", "similarity", "detail", "statistic", "p_value"]
SAMPLE_COLUMNS = ["seed", "index", "batch_n"]
BOX_COLUMNS = ["box", "real_box"]


@dataclass
class GateRun:
    """What ``gate`` decided and wrote."""

    threshold: GalleryDecider
    decision: GateDecision
    summary: dict = field(default_factory=dict)


Sampler = Callable[[int, int], list]


def gate(real: str | os.PathLike[str], out: str | os.PathLike[str], synthetic: str | os.PathLike[str] | None = None,
         generator: str | Sampler | None = None, n: int | None = None, mode: str = "list",
         options: GateOptions | None = None, model: str = "dlib", cache: str | os.PathLike[str] | None = None,
         exclude: str | os.PathLike[str] | None = None, faces: str = "all", aligned_synthetic: bool = False,
         aligned_real: bool = False, workers: int | None = None, progress: ProgressFactory | None = None,
         seed: int = 0, sample_batch: int = 256, max_draws: int | None = None, report: bool = True,
         workspace: Workspace | None = None, identity_level: int = 1, **model_options: object) -> GateRun:
    """Release only the synthetic images that pass the audit's calibrated test.

    Either ``synthetic`` (folder, manifest or store; never modified) or ``generator`` (a callable
    ``sample(n, seed)`` or its ``module:function`` name, sampled until ``n`` images are accepted).
    Writes accepted.csv, rejected.csv (+ .parquet with face boxes), excluded.csv (REAL side),
    scores.npz, summary.json, report.html, OUT/samples/ (generator) and OUT/released/ (copy, link).
    """
    started = time.perf_counter()
    options = options or GateOptions()
    options.validate()
    out = absolute(out)
    if mode not in MODES:
        raise IdleakError(f"--mode must be one of {', '.join(MODES)}, not {mode!r}")
    if (synthetic is None) == (generator is None):
        raise IdleakError("give either --synthetic SYN or --generator module:function (with --n)")
    real_source = open_source(real, "REAL", identity_level)
    syn_source = open_source(synthetic, "SYN", identity_level) if synthetic is not None else None
    if syn_source is not None:
        _check_out_outside(out, Path(synthetic))
    sampler = None
    if generator is not None:
        if not n or n < 1:
            raise IdleakError("--generator needs --n, the number of images to accept (at least 1)")
        at_least("--sample-batch", sample_batch, 1)
        max_draws = 10 * n if max_draws is None else max_draws
        if max_draws < n:
            raise IdleakError(f"--max-draws ({max_draws}) is smaller than --n ({n})")
        sampler = load_callable(generator, "--generator") if isinstance(generator, str) else generator
    exclusions = read_exclusions(exclude)
    ws = workspace or Workspace(model, cache, workers, progress, faces, **model_options)
    out.mkdir(parents=True, exist_ok=True)
    ref = ws.prepare(real_source, "REAL", aligned_real, exclusions)
    threshold = calibrate_gate(ref.faces, ws.model_id, options)
    samples: dict[str, dict] = {}
    generation: dict | None = None
    if syn_source is not None:
        syn = ws.prepare(syn_source, "SYN", aligned_synthetic, exclusions)
        excluded_by_list = exclusions.check()
        decision = gate_faces(syn.faces, ref.faces, threshold, options.block_size)
        n_input = len(syn_source.records)
        syn_seconds = syn.seconds
        syn_new = syn.stats.n_new
    else:
        decision, samples, generation = _sample_until(sampler, n, max_draws, seed, sample_batch, ws, ref.faces,
                                                      threshold, options, out, aligned_synthetic, exclusions,
                                                      progress, str(generator))
        n_input = generation["n_drawn"]
        excluded_by_list = exclusions.check()
        syn_seconds = generation["seconds_sampling"] + generation["seconds_embedding"]
        syn_new = generation.pop("n_embedded_new")
    _write_decision(out, decision, samples)
    nearest = np.array([r["similarity"] for r in decision.accepted + decision.rejected
                        if r["similarity"] is not None], np.float32)
    np.savez_compressed(out / "scores.npz", nearest=nearest, null=np.asarray(threshold.null.values, np.float32))
    released = _release(out, decision, mode, syn_source, Path(synthetic) if synthetic is not None else None)
    reasons = write_excluded(out / "excluded.csv", ref.faces.excluded)
    summary = _gate_summary(decision, threshold, options, ws, ref, real_source, syn_source, n_input, mode,
                            released, reasons, generation)
    summary["n_embedded_new"] = {"real": ref.stats.n_new, "synthetic": syn_new}
    summary["exclusions"] = excluded_by_list
    summary["warnings"] = input_warnings([real_source, syn_source])
    summary["timings"] = {"embed_real_s": ref.seconds, "synthetic_s": syn_seconds}
    from idleak.report.release import write_gate_report

    write_summary_and_report(out, summary, started, write_gate_report if report else None)
    if generation is not None and generation["n_accepted"] < n:
        raise IdleakError(f"reached --max-draws {max_draws} with only {generation['n_accepted']} of {n} samples "
                          f"accepted (rejection rate {generation['rejection_rate']:.1%}); outputs so far are in {out}")
    return GateRun(threshold, decision, summary)


def _sample_until(sampler: Sampler, n: int, max_draws: int, seed: int, sample_batch: int, ws: Workspace,
                  real, threshold: GalleryDecider, options: GateOptions, out: Path, aligned: bool,
                  exclusions: Exclusions, progress: ProgressFactory | None,
                  spec: str) -> tuple[GateDecision, dict[str, dict], dict]:
    """Call ``sampler(batch, seed)`` with seeds seed, seed+1, ... until ``n`` samples are accepted.

    Each sample is saved as OUT/samples/seed{SEED}_{INDEX}.png and embedded through the store, so a
    rerun with the same seeds embeds nothing again. Batches shrink to what is still needed, given the
    acceptance rate so far; accepted samples beyond ``n`` are discarded.
    """
    from PIL import Image

    folder = _fresh_folder(out / "samples")
    decision = GateDecision()
    samples: dict[str, dict] = {}
    drawn = batches = n_new = 0
    t_sample = t_embed = 0.0
    update = progress("accepted samples") if progress else None
    while len(decision.accepted) < n and drawn < max_draws:
        needed = n - len(decision.accepted)
        rate = len(decision.accepted) / drawn if drawn else 1.0
        want = min(sample_batch, max_draws - drawn, max(needed, math.ceil(needed / max(rate, 0.05))))
        batch_seed = seed + batches
        t0 = time.perf_counter()
        try:
            images = list(sampler(want, batch_seed))
        except Exception as exc:  # noqa: BLE001 - the user's generator failed: say so in one line
            raise IdleakError(f"--generator {spec} failed on sample({want}, seed={batch_seed}): "
                              f"{type(exc).__name__}: {exc}") from None
        if len(images) != want:
            raise IdleakError(f"--generator {spec} returned {len(images)} images for sample({want}, "
                              f"seed={batch_seed})")
        records = []
        for index, image in enumerate(images):
            path = folder / f"seed{batch_seed}_{index:04d}.png"
            Image.fromarray(to_uint8_rgb(image, f"--generator {spec}")).save(path)
            records.append(Record(str(path)))
            samples[str(path)] = {"seed": batch_seed, "index": index, "batch_n": want}
        t1 = time.perf_counter()
        prepared = ws.prepare(Source(str(folder), "folder", records), "SYN", aligned, exclusions, quiet=True)
        batch = gate_faces(prepared.faces, real, threshold, options.block_size)
        n_new += prepared.stats.n_new
        t_sample += t1 - t0
        t_embed += time.perf_counter() - t1
        decision.extend(batch)
        drawn += want
        batches += 1
        if update:
            update(min(len(decision.accepted), n), n)
    surplus = decision.accepted[n:]
    decision.accepted = decision.accepted[:n]
    for row in surplus:
        Path(row["path"]).unlink(missing_ok=True)
        samples.pop(row["path"], None)
    n_rejected = len(decision.rejected)
    generation = {
        "generator": spec, "n_requested": n, "n_accepted": len(decision.accepted), "n_drawn": drawn,
        "n_rejected": n_rejected, "n_discarded_surplus": len(surplus), "n_batches": batches,
        "rejection_rate": n_rejected / max(1, drawn - len(surplus)), "max_draws": max_draws, "first_seed": seed,
        "sample_batch": sample_batch, "seconds_sampling": t_sample, "seconds_embedding": t_embed,
        "n_embedded_new": n_new,
        "regenerate": "sample(batch_n, seed)[index] with the seed, index and batch_n columns of the CSVs",
    }
    return decision, samples, generation


def _write_decision(out: Path, decision: GateDecision, samples: dict[str, dict]) -> None:
    extra = SAMPLE_COLUMNS if samples else []

    def rows(items: list[dict]) -> list[dict]:
        return [{**r, **samples.get(r["path"], {})} for r in items] if samples else items

    write_table(rows(decision.accepted), ACCEPTED_COLUMNS + extra + BOX_COLUMNS, out / "accepted.csv",
                csv_columns=ACCEPTED_COLUMNS + extra)
    rejected = sorted(decision.rejected, key=lambda r: (r["reason"] != "leak", -(r["similarity"] or 0.0)))
    write_table(rows(rejected), REJECTED_COLUMNS + extra + BOX_COLUMNS, out / "rejected.csv",
                csv_columns=REJECTED_COLUMNS + extra)


def _check_out_outside(out: Path, synthetic: Path) -> None:
    """OUT inside a SYN folder would feed the gate's own output back into it on a rerun."""
    if synthetic.is_dir():
        syn, target = synthetic.resolve(), out.resolve()
        if target == syn or syn in target.parents:
            raise IdleakError(f"--out {out} is inside --synthetic {synthetic}: choose an output folder outside it")


def _fresh_folder(folder: Path) -> Path:
    """An empty ``folder``; an old one is deleted only if idleak made it."""
    if folder.exists():
        if not (folder / MARKER).is_file():
            raise IdleakError(f"{folder} exists and was not made by idleak: move it away or choose another --out")
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    (folder / MARKER).write_text("made by idleak; rebuilt on every run\n", encoding="utf-8")
    return folder


def _release(out: Path, decision: GateDecision, mode: str, syn_source: Source | None,
             synthetic: Path | None) -> dict:
    """Rebuild OUT/released/ with the accepted images (copy or link); list mode removes an old one."""
    target = out / "released"
    if mode == "list":
        if target.exists() and (target / MARKER).is_file():
            shutil.rmtree(target)
        return {"mode": mode, "folder": None, "n_files": 0}
    paths = [r["path"] for r in decision.accepted]
    if syn_source is not None and syn_source.kind == "folder":
        root = synthetic.resolve()
    else:
        root = Path(os.path.commonpath([os.path.dirname(os.path.abspath(p)) for p in paths])) if paths else out
    staging = out / "released.partial"
    if staging.exists():
        shutil.rmtree(staging)
    staging.mkdir()
    (staging / MARKER).write_text("made by idleak; rebuilt on every run\n", encoding="utf-8")
    done: set[Path] = set()
    for path in paths:
        source = Path(os.path.abspath(path))
        try:
            relative = source.relative_to(root)
        except ValueError:
            relative = Path(source.name)
        destination = staging / relative
        if destination in done:
            continue
        done.add(destination)
        destination.parent.mkdir(parents=True, exist_ok=True)
        try:
            if mode == "copy":
                shutil.copy2(source, destination)
            else:
                os.symlink(source, destination)
        except OSError as exc:
            raise IdleakError(f"cannot {mode} {source} to {destination}: {exc.strerror or exc}") from None
    if target.exists():
        if not (target / MARKER).is_file():
            shutil.rmtree(staging)
            raise IdleakError(f"{target} exists and was not made by idleak: move it away or choose another --out")
        shutil.rmtree(target)
    os.replace(staging, target)
    return {"mode": mode, "folder": target.name, "n_files": len(done)}  # relative to OUT


def _gate_summary(decision: GateDecision, threshold: GalleryDecider, options: GateOptions, ws: Workspace, ref,
                  real_source: Source, syn_source: Source | None, n_input: int, mode: str, released: dict,
                  reasons: dict[str, int], generation: dict | None) -> dict:
    n_images = decision.n_images
    by_reason = decision.reasons()
    n_leak = by_reason.get("leak", 0)
    unchecked = sum(c for r, c in by_reason.items() if r != "leak")
    text = (f"{len(decision.accepted)} of {n_images} synthetic images released; {len(decision.rejected)} rejected: "
            f"{n_leak} match a real face above the threshold")
    if unchecked:
        why = ", ".join(f"{reason}: {count}" for reason, count in by_reason.items() if reason != "leak")
        text += f", {unchecked} could not be checked or were excluded ({why}) and are held back"
    text += f". A stranger's face is rejected with probability about {options.alpha:g}."
    return {
        "analysis": "gate",
        "verdict_text": text,
        "n_images": n_images,
        "n_input_images": n_input,
        "n_accepted": len(decision.accepted),
        "n_rejected": len(decision.rejected),
        "rejected_by_reason": by_reason,
        "rejection_rate": len(decision.rejected) / n_images if n_images else 0.0,
        "n_rejected_leak": n_leak,
        "n_rejected_unchecked": unchecked,
        "expected_false_rejections": options.alpha * (n_images - unchecked),
        "leaked_real_identities": count_values(r["real_identity"] or f"(unlabelled) {r['real_path']}"
                                         for r in decision.rejected if r["reason"] == "leak"),
        "threshold": threshold.value,
        "alpha": options.alpha,
        "method": threshold.method,
        "method_text": METHOD_TEXT[threshold.method],
        "score": threshold.null.score,
        "threshold_details": threshold.details,
        "limits": (f"Each synthetic face of a stranger is rejected with probability at most "
                   f"{max(options.alpha, threshold.null.main.resolution()):.3g} ({METHOD_TEXT[threshold.method]})."
                   if threshold.method != "manual" else "A threshold given by hand has no stated error rate."),
        "n_real_faces": len(ref.faces),
        "n_real_images": len(real_source.records),
        "mode": mode,
        "released": released,
        "generation": generation,
        "excluded": reasons,
        "n_excluded": int(sum(reasons.values())),
        "model": ws.model_id,
        "inputs": {"synthetic": syn_source.spec if syn_source else None, "real": real_source.spec,
                   "store": str(ws.store.root), "faces": ws.faces},
        "versions": versions(),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


def count_values(values) -> dict[str, int]:
    counts: dict[str, int] = {}
    for value in values:
        counts[str(value)] = counts.get(str(value), 0) + 1
    return dict(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))
