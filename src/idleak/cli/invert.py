"""``idleak invert``: split-computing inversion (needs the optional torch extra)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from idleak.cli import RichProgress, err, guard, headline, out, warn_excluded
from idleak.errors import IdleakError


def register(app: typer.Typer) -> None:
    @app.command("invert")
    @guard
    def invert_cmd(
        out_dir: Annotated[Path, typer.Option("--out", "-o", help="Output folder: summary.json, images.csv, grid_<layer>.png, depth.png, report.html.")],
        model: Annotated[str | None, typer.Option("--model", help="Target model as module:function returning a torch.nn.Module (inputs (N,C,H,W) in [0,1]; an input_shape attribute (C,H,W) and a classes list are read if present), or 'dlib': dlib's face recognition ResNet on its aligned 150x150 chips, split points stem, stage1, stage2, stage3, stage4, stage5 (residual units stage1.0-2, stage2.0-3, stage3.0-2, stage4.0-2, stage5.0; the embedding is not a split: re-identification with the same network would be circular; datafree does not apply: dlib folds BatchNorm into affine layers).")] = None,
        layers: Annotated[str | None, typer.Option("--layers", help="Split points: comma-separated module names (see model.named_modules()), e.g. layer1,layer3. --model dlib: default stem,stage1,stage2,stage3,stage4,stage5.")] = None,
        aux: Annotated[Path | None, typer.Option("--aux", help="AUX: public face images of OTHER people (folder or manifest); the learned attack trains on them.")] = None,
        private: Annotated[Path | None, typer.Option("--private", help="PRIVATE: the images whose split features the attacker sees; identity sub-folders (or manifest identities) needed for re-identification.")] = None,
        gallery: Annotated[Path | None, typer.Option("--gallery", help="Other photos of the private identities to re-identify against (default: PRIVATE, never matching an image with itself).")] = None,
        attack: Annotated[str | None, typer.Option("--attack", help="Comma-separated: learned, optimize, datafree, class. Default: learned,optimize (+class when the model has classes). datafree uses no images: inputs synthesised from the model's BatchNorm statistics.")] = None,
        blockwise: Annotated[bool, typer.Option("--blockwise", help="learned: one inversion module per block between split layers, with cycle consistency (Dong et al.).")] = False,
        defense: Annotated[str | None, typer.Option("--defense", help="module:function applied to the features before the attacker sees them (noise, quantisation ...).")] = None,
        train_target: Annotated[Path | None, typer.Option("--train-target", help="Train idleak's reference face CNN on this identity-labelled folder, split it into target/private/aux, and attack it.")] = None,
        input_shape: Annotated[str | None, typer.Option("--input-shape", help="C,H,W of the model input when it has no input_shape attribute, e.g. 3,112,112.")] = None,
        epochs: Annotated[int, typer.Option(help="learned: training passes over AUX.")] = 30,
        steps: Annotated[int, typer.Option(help="optimize and class: gradient steps.")] = 300,
        synth_images: Annotated[int, typer.Option(help="datafree: images synthesised from the BatchNorm statistics per split.")] = 128,
        synth_steps: Annotated[int, typer.Option(help="datafree: gradient steps per synthesised batch.")] = 200,
        alpha: Annotated[float, typer.Option(help="Re-identification threshold: false-match rate for a stranger (leave-one-identity-out on the gallery).")] = 0.01,
        threads: Annotated[int | None, typer.Option(help="torch threads (default: torch's choice).")] = None,
        seed: Annotated[int, typer.Option(help="Seed for data split, training and attacks.")] = 0,
        cache: Annotated[Path | None, typer.Option("--cache", help="Embedding store for the gallery photos (as in idleak audit).")] = None,
        workers: Annotated[int | None, typer.Option("--workers", "-j", help="Embedding processes for the gallery.")] = None,
    ) -> None:
        """Rebuild faces from a model's intermediate features: how much does each split point leak?

        Either attack your model (--model, --layers, --aux, --private) or let idleak train its
        reference target on a labelled folder (--train-target FOLDER).
        """
        from idleak.jobs.invert import torch_missing_message

        try:
            import torch  # noqa: F401
        except ImportError:
            # printed without rich markup: the message contains ".[torch]"
            err.print(f"error: {torch_missing_message()}", markup=False, highlight=False, soft_wrap=True)
            raise typer.Exit(2) from None
        from idleak.attacks.inversion import AttackSettings
        from idleak.jobs.invert import InvertSettings, ReferenceOptions, run_invert, run_reference

        if min(epochs, steps, synth_images, synth_steps) < 1:
            raise IdleakError("--epochs, --steps, --synth-images and --synth-steps must be at least 1")
        settings = InvertSettings(attack=AttackSettings(epochs=epochs, steps=steps, class_steps=steps, seed=seed,
                                                        synth_images=synth_images, synth_steps=synth_steps),
                                  alpha=alpha, threads=threads, seed=seed)
        shape = _parse_shape(input_shape)
        with RichProgress() as progress:
            if train_target is not None:
                if model or aux or private or gallery:
                    raise IdleakError("--train-target trains its own model and data split: leave out --model, --aux, --private and --gallery")
                summary = run_reference(train_target, out_dir,
                                        ReferenceOptions(layers=layers.split(",") if layers else None, attacks=attack),
                                        blockwise=blockwise, defense=defense, settings=settings, cache=cache,
                                        workers=workers, progress=progress)
            else:
                if model == "dlib" and not layers:
                    from idleak.attacks.dlib_target import DLIB_LAYERS

                    layers = ",".join(DLIB_LAYERS)
                missing = [name for name, value in (("--model", model), ("--layers", layers), ("--aux", aux),
                                                    ("--private", private)) if not value]
                if missing:
                    raise IdleakError(f"missing {', '.join(missing)} (or use --train-target FOLDER for the reference target)")
                summary = run_invert(model, layers, aux, private, out_dir, attacks=attack, blockwise=blockwise,
                                     defense=defense, gallery=gallery, input_shape=shape, settings=settings,
                                     cache=cache, workers=workers, progress=progress)
        warn_excluded(summary["excluded"], out_dir / "summary.json")
        colour = {"leak": "red", "clean": "green"}.get(summary["verdict"], "white")
        headline(summary["verdict"], summary["verdict_text"], colour)
        for row in summary["layers"]:
            out.print(f"  {row['layer']:<12} depth {row['depth']:>3}  {row['attack']:<20} PSNR {row['psnr']:6.2f}  "
                      f"SSIM {row['ssim']:.3f}  id-sim {row['identity_similarity']:.3f}  re-id {row['reid_top1']:.0%}", soft_wrap=True)
        for caveat in summary.get("caveats", []):
            out.print(f"note: {caveat}", markup=False, highlight=False, soft_wrap=True)
        out.print(f"report: {out_dir / 'report.html'}")


def _parse_shape(text: str | None) -> tuple[int, int, int] | None:
    if not text:
        return None
    try:
        c, h, w = (int(v) for v in text.replace("x", ",").split(","))
    except ValueError:
        raise IdleakError(f"--input-shape must be C,H,W (e.g. 3,112,112), got {text!r}") from None
    return c, h, w
