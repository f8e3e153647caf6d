"""``idleak report``: rebuild an OUT folder's report with the human review counts."""

from __future__ import annotations

import os
from pathlib import Path

from idleak.outputs import write_json


def report(out: str | os.PathLike[str]) -> dict:
    """Rebuild OUT/report.html and OUT/summary.json with the human review counts (from OUT/review.sqlite,
    if it holds any verdict).

    Also writes OUT/review_excluded.csv (path, reason) with the reviewers' exclusions, usable as
    ``--exclude`` in a rerun. Nothing is embedded or searched again.
    """
    import json

    from idleak.report import analysis_of, rebuild

    out = Path(os.path.abspath(out))
    analysis_of(out)  # one-line error if OUT is not an idleak output folder
    summary_path = out / "summary.json"
    summary = json.loads(summary_path.read_text(encoding="utf-8"))
    review = None
    if (out / "review.sqlite").is_file():
        from idleak.review.candidates import load_candidates
        from idleak.review.db import VerdictStore, review_counts, write_review_exclusions

        verdicts = VerdictStore(out / "review.sqlite").verdicts()
        if verdicts:
            candidates = load_candidates(out)
            review = review_counts(verdicts, candidates)
            write_review_exclusions(out / "review_excluded.csv", verdicts, candidates)
    if review is None:
        summary.pop("review", None)
    else:
        summary["review"] = review
    write_json(summary_path, summary)
    rebuild(out, review)
    return summary
