"""``idleak gate``, ``idleak lookup``, ``idleak review`` and ``idleak report``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from idleak.cli import RichProgress, err, guard, out, print_warnings, styled, warn_excluded
from idleak.cli.core import (
    BatchSize,
    Bgr,
    Cache,
    Detector,
    Device,
    IdentityLevel,
    InputMean,
    InputStd,
    Model,
    Runtime,
    Strata,
    Tta,
    Workers,
    model_options,
)


def register(app: typer.Typer) -> None:
    @app.command("gate")
    @guard
    def gate_cmd(
        real: Annotated[Path, typer.Option("--real", "-r", help="Real faces (the generator's training set): folder, manifest or store. Sub-folders are identities.")],
        out_dir: Annotated[Path, typer.Option("--out", "-o", help="Output folder: accepted.csv, rejected.csv, summary.json, report.html, released/.")],
        synthetic: Annotated[Path | None, typer.Option("--synthetic", "-s", help="Synthetic images to gate: folder, CSV manifest or store. Never modified.")] = None,
        generator: Annotated[str | None, typer.Option("--generator", help="Sample instead: module:function or file.py:function, a callable sample(n, seed) returning PIL images or HxWx3 uint8 arrays.")] = None,
        n: Annotated[int | None, typer.Option("--n", help="With --generator: sample until this many images are accepted.")] = None,
        mode: Annotated[str, typer.Option(help="list: CSVs only; copy or link: also put the accepted images in OUT/released/.")] = "list",
        alpha: Annotated[float, typer.Option(help="Chance that a stranger's face is rejected; as in the audit.")] = 0.01,
        method: Annotated[str, typer.Option(help="Null: auto (loio if REAL is labelled, else shipped), loio, shipped, manual.")] = "auto",
        threshold: Annotated[float | None, typer.Option(help="Use this cosine threshold instead of calibrating (method manual).")] = None,
        strata: Strata = "age",
        seed: Annotated[int, typer.Option(help="With --generator: seed of the first batch; batch b gets seed + b.")] = 0,
        sample_batch: Annotated[int, typer.Option("--sample-batch", help="With --generator: largest number of samples per call.")] = 256,
        max_draws: Annotated[int | None, typer.Option("--max-draws", help="With --generator: stop with an error after this many samples [10 x N].")] = None,
        exclude: Annotated[Path | None, typer.Option(help="CSV (path,reason[,hash]) of images to hold back, e.g. review_excluded.csv from idleak report; matched by path or content.")] = None,
        faces: Annotated[str, typer.Option(help="'all' faces of an image are checked (default), or only the 'largest'.")] = "all",
        aligned_synthetic: Annotated[bool, typer.Option("--aligned-synthetic", help="Synthetic images are aligned face crops: no detection.")] = False,
        aligned_real: Annotated[bool, typer.Option("--aligned-real", help="REAL images are aligned face crops.")] = False,
        model: Model = "dlib",
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
        """Release gate: release only synthetic images that pass the audit's calibrated test.

        An image is rejected when one of its faces matches a real face above the threshold, and also
        when it could not be checked (no face found, unreadable, or a face that may be a young child's:
        children are decided only against a holdout's children): a gate does not release what it could
        not check. With --generator, samples are drawn and checked until N are accepted.
        """
        from idleak.analyses.gate import GateOptions
        from idleak.jobs.gate import gate

        options = GateOptions(alpha=alpha, method=method, threshold=threshold, strata=strata)
        with RichProgress() as progress:
            result = gate(real, out_dir, synthetic=synthetic, generator=generator, n=n, mode=mode, options=options,
                          model=model, cache=cache, exclude=exclude, faces=faces, aligned_synthetic=aligned_synthetic,
                          aligned_real=aligned_real, workers=workers, progress=progress, seed=seed,
                          sample_batch=sample_batch, max_draws=max_draws, identity_level=identity_level,
                          **model_options(input_mean, input_std, bgr, batch_size, runtime, device, detector, tta))
        s = result.summary
        warn_excluded(s["excluded"], out_dir / "excluded.csv")
        out.print(s["verdict_text"])
        if s.get("exclusions"):
            out.print(f"--exclude: {s['exclusions']['text']}")
        print_warnings(s.get("warnings"))
        if s["generation"]:
            g = s["generation"]
            out.print(f"generator: {g['n_drawn']} samples drawn in {g['n_batches']} batches, "
                      f"rejection rate {g['rejection_rate']:.1%}")
        if s["released"]["folder"]:
            out.print(f"released ({mode}): {out_dir.absolute() / s['released']['folder']}")
        out.print(f"threshold {s['threshold']:.4f} ({s['method']}); report: {out_dir / 'report.html'}")

    @app.command("lookup")
    @guard
    def lookup_cmd(
        person: Annotated[Path, typer.Option("--person", "-p", help="Photos of one person: folder, manifest or store.")],
        datasets: Annotated[list[Path], typer.Option("--in", "-i", help="A dataset to search (folder, manifest or store); repeat for several.")],
        out_dir: Annotated[Path, typer.Option("--out", "-o", help="Output folder: matches.csv, summary.json, report.html.")],
        alpha: Annotated[float, typer.Option(help="Chance that a stranger gets any match, over all the person's photos.")] = 0.01,
        method: Annotated[str, typer.Option(help="Null: auto (loio if the dataset is labelled, else shipped), loio, shipped, manual.")] = "auto",
        threshold: Annotated[float | None, typer.Option(help="Use this cosine threshold instead of calibrating (method manual).")] = None,
        aligned_person: Annotated[bool, typer.Option("--aligned-person", help="The person's photos are aligned face crops.")] = False,
        aligned_datasets: Annotated[bool, typer.Option("--aligned-datasets", help="The datasets' images are aligned face crops.")] = False,
        model: Model = "dlib",
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
        """Personal lookup: is this person's face in these datasets?

        Every face of each dataset is compared with the person's photos against the dataset's
        calibrated threshold. A match is evidence, not proof; no match is not proof of absence
        (summary.json and the report say why).
        """
        from idleak.analyses.lookup import LookupOptions
        from idleak.jobs.lookup import lookup

        options = LookupOptions(alpha=alpha, method=method, threshold=threshold)
        with RichProgress() as progress:
            result = lookup(person, datasets, out_dir, options=options, model=model, cache=cache,
                            aligned_person=aligned_person, aligned_datasets=aligned_datasets, workers=workers,
                            progress=progress, identity_level=identity_level,
                            **model_options(input_mean, input_std, bgr, batch_size, runtime, device, detector, tta))
        s = result.summary
        warn_excluded(s["excluded"], out_dir / "excluded.csv")
        colour = "red" if s["found"] else "green"
        out.print(styled((s["statement"]["headline"], f"bold {colour}")))
        print_warnings(s.get("warnings"))
        for line in s["statement"]["per_dataset"]:
            out.print(f"  {line}", markup=False)
        out.print(s["statement"]["match_means"] if s["found"] else s["statement"]["no_match_means"], markup=False)
        out.print(f"matches: {out_dir / 'matches.csv'}; report: {out_dir / 'report.html'}")

    @app.command("review")
    @guard
    def review_cmd(
        out_dir: Annotated[Path, typer.Argument(help="OUT folder of idleak audit, mia, gate or lookup.")],
        port: Annotated[int, typer.Option(help="Port to listen on (0: any free port).")] = 8765,
        host: Annotated[str, typer.Option(help="Address to bind. Only change it if you know who can reach this machine.")] = "127.0.0.1",
    ) -> None:
        """Review candidate pairs in the browser; verdicts go to OUT/review.sqlite.

        Prints a URL with a random token; requests without it are refused. Keys: m match,
        n not a match, u unsure, c exclude (child), f exclude (not a face), arrows or j/k move,
        Backspace clears. Then run `idleak report OUT`.
        """
        from idleak.jobs.edge import port as check_port

        check_port(port)
        try:
            from idleak.review.app import serve
        except ModuleNotFoundError as exc:
            from idleak.errors import IdleakError

            raise IdleakError(f"idleak review needs the review extra (pip install 'idleak[review]'): {exc}") from None

        def announce(url: str, pairs) -> None:
            print(url, flush=True)  # plain print: one unwrapped line that scripts can read
            err.print(f"{len(pairs)} pairs to review ({pairs.analysis}); verdicts are saved in "
                      f"{out_dir / 'review.sqlite'}. Ctrl-C to stop.")

        serve(out_dir, host=host, port=port, announce=announce)

    @app.command("report")
    @guard
    def report_cmd(
        out_dir: Annotated[Path, typer.Argument(help="OUT folder of any idleak analysis.")],
    ) -> None:
        """Rebuild report.html and summary.json from OUT, with the human review counts from OUT/review.sqlite."""
        from idleak.jobs.report import report

        summary = report(out_dir)
        r = summary.get("review")
        if r:
            excluded = ", ".join(f"{k}: {v}" for k, v in r["excluded_by_reason"].items())
            out.print(f"review: {r['n_reviewed']} of {r['n_candidates']} pairs reviewed, {r['confirmed']} confirmed, "
                      f"{r['rejected']} not a match, {r['unsure']} unsure, {r['excluded']} excluded"
                      + (f" ({excluded})" if excluded else ""), markup=False)
            if r["excluded"]:
                out.print(f"reviewer exclusions: {out_dir / 'review_excluded.csv'} (usable as --exclude)")
        else:
            out.print("no review.sqlite in OUT: report rebuilt without review counts")
        out.print(f"report: {out_dir / 'report.html'}")
