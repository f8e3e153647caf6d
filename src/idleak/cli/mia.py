"""``idleak mia``: the identity membership attack."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from idleak.cli import RichProgress, guard, headline, out, print_warnings, warn_excluded
from idleak.cli.core import Bgr, Cache, IdentityLevel, InputMean, InputStd, Model, Workers, model_options


def register(app: typer.Typer) -> None:
    @app.command("mia")
    @guard
    def mia_cmd(
        members: Annotated[Path, typer.Option("--members", help="Photos of people known to be in the training set: folder with one sub-folder per person, or manifest (path,identity). Need not be training photos.")],
        nonmembers: Annotated[Path, typer.Option("--nonmembers", help="Photos of people known NOT to be in the training set, same layout.")],
        out_dir: Annotated[Path, typer.Option("--out", "-o", help="Output folder: summary.json, identities.csv, plots, report.html.")],
        generated: Annotated[Path | None, typer.Option("--generated", "-g", help="Folder (or manifest, or store) of generated faces; a synthetic dataset works too.")] = None,
        generator: Annotated[str | None, typer.Option("--generator", help="module:function with sample(n, seed) -> images (PIL or HxWx3 uint8); sampled --n times into OUT/generated.")] = None,
        generator_module: Annotated[str | None, typer.Option("--generator-module", help="module:build returning a torch nn.Module latents -> images (needs torch). Sampled from normal latents, or attacked with --latent-recovery.")] = None,
        latent_recovery: Annotated[bool, typer.Option("--latent-recovery", help="White-box attack: optimise a latent per photo; the reconstruction's identity similarity is the score.")] = False,
        n: Annotated[int, typer.Option("--n", help="Samples to draw with --generator / --generator-module.")] = 1000,
        batch_size: Annotated[int, typer.Option("--batch-size", help="Samples per generator call (and targets per optimisation batch).")] = 64,
        seed: Annotated[int, typer.Option("--seed", help="Seed of the first sample; batch seeds follow (see samples.csv).")] = 0,
        train_counts: Annotated[Path | None, typer.Option("--train-counts", help="CSV identity,n_train: training images per member, to relate over-representation to leakage.")] = None,
        train_folder: Annotated[Path | None, typer.Option("--train-folder", help="The training set (one sub-folder per person): images are counted per person.")] = None,
        alpha: Annotated[float, typer.Option(help="A non-member's photo passes the n_over_threshold threshold with this probability.")] = 0.01,
        bootstrap: Annotated[int, typer.Option("--bootstrap", help="Bootstrap resamples of identities for the 95% intervals.")] = 1000,
        steps: Annotated[int, typer.Option("--steps", help="Latent recovery: optimisation steps per restart.")] = 200,
        restarts: Annotated[int, typer.Option("--restarts", help="Latent recovery: random starting latents per photo (best kept).")] = 3,
        lr: Annotated[float, typer.Option("--lr", help="Latent recovery: Adam learning rate on the latent.")] = 0.05,
        targets_per_identity: Annotated[int | None, typer.Option("--targets-per-identity", help="Latent recovery: reconstruct at most this many photos per person.")] = None,
        faces: Annotated[str, typer.Option(help="'largest' face per image, or 'all' faces as separate rows.")] = "largest",
        aligned_generated: Annotated[bool, typer.Option("--aligned-generated", help="Generated images are aligned face crops: no detection.")] = False,
        aligned_photos: Annotated[bool, typer.Option("--aligned-photos", help="Member / non-member photos are aligned face crops.")] = False,
        model: Model = "dlib",
        cache: Cache = None,
        workers: Workers = None,
        input_mean: InputMean = None,
        input_std: InputStd = None,
        bgr: Bgr = False,
        identity_level: IdentityLevel = 1,
    ) -> None:
        """Membership attack: tell whether people were in a face generator's training set.

        Scores each member and non-member identity by how closely the generated faces match the
        person's photos (or, with --latent-recovery, how well the generator reproduces them), and
        reports ROC, AUC and TPR at low FPR with bootstrap intervals over identities.
        """
        from idleak.analyses.mia import MiaOptions
        from idleak.attacks.latent_recovery import RecoveryOptions
        from idleak.jobs.mia import mia

        options = MiaOptions(alpha=alpha, n_bootstrap=bootstrap)
        recovery = RecoveryOptions(steps=steps, restarts=restarts, lr=lr, batch_size=batch_size, seed=seed)
        with RichProgress() as progress:
            result = mia(members, nonmembers, out_dir, generated=generated, generator=generator,
                         generator_module=generator_module, latent_recovery=latent_recovery, n=n,
                         batch_size=batch_size, seed=seed, train_counts=train_counts, train_folder=train_folder,
                         options=options, recovery=recovery, targets_per_identity=targets_per_identity, model=model,
                         cache=cache, faces=faces, aligned_generated=aligned_generated, aligned_photos=aligned_photos,
                         workers=workers, progress=progress, identity_level=identity_level,
                         **{k: v for k, v in model_options(input_mean, input_std, bgr, None).items()
                            if k != "batch_size"})
        s = result.summary
        warn_excluded(s["excluded"], out_dir / "excluded.csv")
        colour = {"membership_leak": "red", "too_few_to_decide": "yellow"}.get(s["verdict"], "green")
        headline(s["verdict"], s["verdict_text"], colour)
        print_warnings(s.get("warnings"))
        tprs = ", ".join(f"{v:.3f} at {k}" if v is not None else f"not given at {k} (too few non-members)"
                         for k, v in s["tpr_at_fpr"].items())
        out.print(f"TPR at FPR: {tprs}; {s['n_generated']} generated faces used")
        out.print(f"report: {out_dir / 'report.html'}")
