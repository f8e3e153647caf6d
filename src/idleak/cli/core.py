"""``idleak audit``, ``idleak embed`` and ``idleak demo``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from idleak.cli import RichProgress, guard, headline, out, print_warnings, warn_excluded

CACHE_HELP = ("Embedding store to reuse across runs. Default: $IDLEAK_CACHE, else $XDG_CACHE_HOME/idleak, "
              "else ~/.cache/idleak (one sub-folder per model). A store made by `idleak embed` works too.")
MODEL_HELP = "Face model: 'dlib' (default, built in) or 'onnx:PATH' for an ArcFace-style 112x112 ONNX model."

Model = Annotated[str, typer.Option("--model", "-m", help=MODEL_HELP)]
Engine = Annotated[str, typer.Option("--engine", help="local (processes on this machine) or ray (a Ray cluster: embedding as Ray Data batch inference, exact search sharded over nodes).")]
RayAddress = Annotated[str | None, typer.Option("--ray-address", help="Ray cluster to join (HOST:6379 or ray://HOST:10001); default: start a local one.")]
Cache = Annotated[Path | None, typer.Option("--cache", help=CACHE_HELP)]
Workers = Annotated[int | None, typer.Option("--workers", "-j", help="Embedding processes (default: all cores).")]
InputMean = Annotated[float | None, typer.Option("--input-mean", help="ONNX: subtracted from 0..255 pixels [127.5].")]
InputStd = Annotated[float | None, typer.Option("--input-std", help="ONNX: pixels are divided by this [127.5].")]
Bgr = Annotated[bool, typer.Option("--bgr", help="ONNX: the model takes BGR channel order.")]
BatchSize = Annotated[int | None, typer.Option("--batch-size", help="Faces per inference batch [dlib port 64, ONNX 32].")]
Runtime = Annotated[str | None, typer.Option("--runtime", help="dlib model and CNN detector: 'onnx' (default, the batched ONNX ports) or 'dlib' (dlib's own, one face at a time).")]
Device = Annotated[str | None, typer.Option("--device", help="cpu (default), cuda (an error without a GPU) or auto (GPU if usable, else CPU, and it says so): embedding inference and, for audit, exact search (torch).")]
IdentityLevel = Annotated[int, typer.Option("--identity-level", help="Which sub-folder level names the identity: 1 (default) the first (FOLDER/PERSON/x.jpg), 2 for FOLDER/SPLIT/PERSON/x.jpg, 0 for none (all unlabelled).")]
Strata = Annotated[str, typer.Option("--strata", help="age (default): a face that may be a young child's (P(under 13) >= 0.3 from the embedding; 0.1 in the audit when more than 5% of SYN is such) is compared only with a holdout's children (audit --holdout); without them it is set aside, not decided (the gate rejects it as undecidable), because neither a null of adults nor one of REAL's own children held alpha for children. none: one null for every face (children are then flagged far beyond alpha). Needs the dlib model's age classifier; other models run without strata and say so.")]
Tta = Annotated[str | None, typer.Option("--tta", help="dlib model, test-time augmentation: none (default), flip (the chip and its mirror, 2x the network's work) or flip68 (also the chip aligned on 68 landmarks, 4x). Slightly more accurate (LFW 98.87% -> 99.07%, 99.23%); a separate store and no shipped calibration.")]
Detector = Annotated[str | None, typer.Option("--detector", help="Face detector: hog (default), cnn (dlib's MMOD CNN, slow on CPU) or auto (CNN where HOG finds nothing).")]


def model_options(input_mean: float | None, input_std: float | None, bgr: bool, batch_size: int | None,
                  runtime: str | None = None, device: str | None = None, detector: str | None = None,
                  tta: str | None = None) -> dict:
    return {"mean": input_mean, "std": input_std, "bgr": True if bgr else None, "batch_size": batch_size,
            "runtime": runtime, "device": device, "detector": detector, "tta": tta}


def register(app: typer.Typer) -> None:
    @app.command("audit")
    @guard
    def audit_cmd(
        synthetic: Annotated[Path, typer.Option("--synthetic", "-s", help="Synthetic faces: folder, CSV manifest (path,identity) or store.")],
        real: Annotated[Path, typer.Option("--real", "-r", help="Real faces (the generator's training set): folder, manifest or store. Sub-folders are identities.")],
        out_dir: Annotated[Path, typer.Option("--out", "-o", help="Output folder for summary.json, pairs.csv, excluded.csv, report.html.")],
        model: Model = "dlib",
        alpha: Annotated[float, typer.Option(help="False-flag rate for a stranger's face; also the p-value level.")] = 0.01,
        top_k: Annotated[int, typer.Option("--top-k", help="Real neighbours listed per synthetic face.")] = 5,
        holdout: Annotated[Path | None, typer.Option("--holdout", help="Real people who were NOT in the generator's training set (ideally the same population as REAL): the gold-standard control. Folder, manifest, store or embeddings table.")] = None,
        method: Annotated[str, typer.Option(help="Null: auto (holdout if given, else loio if REAL is labelled, else shipped), loio, holdout, shipped, manual.")] = "auto",
        score: Annotated[str, typer.Option(help="Statistic: raw cosine similarity (auto, the default), or csls (similarity scaled by the local density of both faces; experimental: it held alpha on a simulated dense population but not on real LFW faces, see bench/RESULTS.md).")] = "auto",
        threshold: Annotated[float | None, typer.Option(help="Use this cosine threshold instead of a null (method manual): flags only, no verdict.")] = None,
        fmr: Annotated[float | None, typer.Option(help="With --method shipped: flag at this per-comparison false-match rate; each face is then flagged by chance with probability at most N x FMR for a gallery of N faces, and that rate is tested.")] = None,
        exclude: Annotated[Path | None, typer.Option(help="CSV (path,reason[,hash]) of images to leave out, e.g. child or not_a_face; matched by path or content; a list matching nothing is an error.")] = None,
        exclude_children: Annotated[bool, typer.Option("--exclude-children", help="Leave out faces whose apparent age (estimated from the embedding) is a child's, on every side.")] = False,
        strata: Strata = "age",
        reweight: Annotated[str, typer.Option("--reweight", help="population (default): with the leave-one-identity-out null, each null value is weighted by how much more often faces like it occur in SYN than in REAL (a classifier of SYN vs REAL faces, cross-fitted), so that a REAL mixing populations still gives the right null for a SYN resembling one of them (measured on LFW + UTKFace as REAL, UTKFace strangers: 41.5% false verdicts without, 2.0% with, at alpha 0.05; 6.5% and 0% at 0.01). The null's effective size shrinks accordingly; when SYN and REAL look alike nothing changes. none: every null value counts the same.")] = "population",
        faces: Annotated[str, typer.Option(help="'largest' face per image, or 'all' faces as separate rows.")] = "largest",
        aligned: Annotated[bool, typer.Option("--aligned", help="Treat every image (both sides) as an aligned face crop: no detection.")] = False,
        aligned_synthetic: Annotated[bool, typer.Option("--aligned-synthetic", help="Only SYN images are aligned crops (DCFace, IDiff-Face ...).")] = False,
        aligned_real: Annotated[bool, typer.Option("--aligned-real", help="Only REAL images are aligned crops.")] = False,
        aligned_holdout: Annotated[bool, typer.Option("--aligned-holdout", help="Only HOLDOUT images are aligned crops.")] = False,
        fail_on_leak: Annotated[bool, typer.Option("--fail-on-leak", help="Exit with code 1 when the p-value is below alpha.")] = False,
        search: Annotated[str, typer.Option("--search", help="exact, ivf (FAISS IVF candidates; every face near the threshold searched again exactly) or auto (ivf for large sets).")] = "exact",
        search_recall: Annotated[float, typer.Option("--search-recall", help="With ivf: nprobe is raised until recall@1 of the top-k table, measured on 1,000 faces searched exactly, reaches this; exact search when that costs as much (0: no target).")] = 0.99,
        engine: Engine = "local",
        ray_address: RayAddress = None,
        cache: Cache = None,
        workers: Workers = None,
        input_mean: InputMean = None,
        input_std: InputStd = None,
        bgr: Bgr = False,
        batch_size: BatchSize = None,
        runtime: Runtime = None,
        device: Device = None,
        detector: Detector = None,
        tta: Tta = None,
        identity_level: IdentityLevel = 1,
    ) -> None:
        """Leakage audit: find real training identities inside a synthetic face dataset.

        Embeds both sets (reusing the store), finds each synthetic face's nearest real faces, sets a
        threshold that a stranger passes with probability ALPHA, and tests whether more synthetic
        faces pass it than chance allows.
        """
        from idleak.analyses.audit import AuditOptions
        from idleak.jobs.audit import audit

        options = AuditOptions(alpha=alpha, top_k=top_k, method=method, score=score, threshold=threshold, fmr=fmr,
                               exclude_children=exclude_children, search=search, device=device, engine=engine,
                               ray_address=ray_address, strata=strata, search_recall=search_recall, reweight=reweight)
        with RichProgress() as progress:
            result = audit(synthetic, real, out_dir, model=model, cache=cache, options=options, exclude=exclude,
                           faces=faces, aligned_synthetic=aligned or aligned_synthetic,
                           aligned_real=aligned or aligned_real, workers=workers, progress=progress,
                           holdout=holdout, aligned_holdout=aligned or aligned_holdout,
                           on_plan=lambda plan: out.print(plan.text), identity_level=identity_level,
                           **model_options(input_mean, input_std, bgr, batch_size, runtime, device, detector, tta))
        s = result.summary
        warn_excluded(s["excluded"], out_dir / "excluded.csv")
        colour = {"leak": "red", "no_evidence_of_leak": "green"}.get(s["verdict"], "yellow")
        headline(s["verdict"], s["verdict_text"], colour)
        matched = f"{s['n_leaked_real_identities']} labelled real identities"
        if s["n_unlabelled_real_faces_matched"]:
            matched += f" and {s['n_unlabelled_real_faces_matched']} unlabelled real faces"
        out.print(f"threshold {s['threshold']:.4f} ({s['method']}, {s['score']} score), {matched} matched")
        out.print(s["limits"])
        if s.get("exclusions"):
            out.print(f"--exclude: {s['exclusions']['text']}")
        print_warnings(s.get("warnings"))
        out.print(f"report: {out_dir / 'report.html'}")
        if fail_on_leak and s["verdict"] == "leak":
            raise typer.Exit(1)

    @app.command("embed")
    @guard
    def embed_cmd(
        path: Annotated[Path, typer.Argument(help="Folder or CSV manifest of images.")],
        store: Annotated[Path, typer.Option("--store", help="Store folder (created if missing). Reuse it as SYN/REAL or --cache.")],
        model: Model = "dlib",
        aligned: Annotated[bool, typer.Option("--aligned", help="Images are aligned face crops: no detection.")] = False,
        workers: Workers = None,
        flush_every: Annotated[int, typer.Option(help="Write a store part every N images.")] = 256,
        engine: Engine = "local",
        ray_address: RayAddress = None,
        name: Annotated[str | None, typer.Option("--name", help="Dataset name inside the store (default: the folder name); read it back as STORE or STORE::NAME.")] = None,
        input_mean: InputMean = None,
        input_std: InputStd = None,
        bgr: Bgr = False,
        batch_size: BatchSize = None,
        runtime: Runtime = None,
        device: Device = None,
        detector: Detector = None,
        tta: Tta = None,
        identity_level: IdentityLevel = 1,
    ) -> None:
        """Embed images once into a store; later runs reuse it and a killed run resumes."""
        from idleak.jobs.embed import embed

        with RichProgress() as progress:
            stats, target = embed(path, store, model=model, aligned=aligned, workers=workers, progress=progress,
                                  flush_every=flush_every, name=name, engine=engine, ray_address=ray_address,
                                  identity_level=identity_level,
                                  **model_options(input_mean, input_std, bgr, batch_size, runtime, device, detector, tta))
        reasons = dict(stats.reasons)
        if stats.n_missing:
            reasons["unreadable"] = stats.n_missing
        warn_excluded(reasons, "the store (reason column)")
        out.print(f"embedded {stats.n_new} new images, {stats.n_cached} already in the store, "
                  f"{stats.seconds:.1f} s; store: {target.root}")

    @app.command("demo")
    @guard
    def demo_cmd(
        out_dir: Annotated[Path, typer.Option("--out", "-o", help="Folder for the demo data and its audit.")] = Path("idleak-demo"),
        workers: Workers = None,
    ) -> None:
        """Run a whole audit offline on a small example with a planted leak; prints where the report is."""
        from idleak.jobs.demo import run_demo

        with RichProgress() as progress:
            result = run_demo(out_dir, workers=workers, progress=progress)
        s = result.summary
        out.print(f"demo data: {out_dir / 'data'} (planted near-copies of the real faces in the synthetic set)")
        headline(s["verdict"], s["verdict_text"], "bold")
        out.print(f"report: {(out_dir / 'audit' / 'report.html').resolve()}")
