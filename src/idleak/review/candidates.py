"""Candidate pairs to review, read from an analysis's OUT folder.

Each analysis has an adapter that lists its pairs, largest similarity first:

* ``audit``: rank-1 rows of pairs.parquet (synthetic face vs. its nearest real face): every flagged
  pair, the 200 most similar others and a random sample of 100;
* ``mia``: identities.csv (best generated face vs. the person's best-matching photo);
* ``gate``: the ``leak`` rows of rejected.parquet (rejected synthetic image vs. the real face it matched);
* ``lookup``: matches.parquet (dataset face vs. the person's photo).

The left image is always the one under scrutiny (synthetic / generated / dataset image); the
right one is the real person's photo. A pair's id is a hash of the analysis, both paths and the
left face box, so it is the same after a restart as long as the OUT files are the same.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow.parquet as pq

from idleak.errors import IdleakError


@dataclass
class Candidate:
    """One pair to judge."""

    id: str
    left_path: str
    right_path: str
    similarity: float | None
    flagged: bool
    identity: str | None  # the real identity this pair would confirm (for counting), if any
    left_label: str = ""
    right_label: str = ""
    left_box: list[float] | None = None
    right_box: list[float] | None = None
    note: str = ""


@dataclass
class CandidateSet:
    """The pairs of one OUT folder, in review order."""

    analysis: str
    out: Path
    items: list[Candidate]
    left_title: str
    right_title: str
    question: str
    by_id: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.by_id = {c.id: i for i, c in enumerate(self.items)}

    def __len__(self) -> int:
        return len(self.items)

    def get(self, pair_id: str) -> Candidate | None:
        index = self.by_id.get(pair_id)
        return None if index is None else self.items[index]

    def resolve(self, path: str) -> Path:
        """Where an image of a pair is on disk: absolute, else relative to OUT (a file idleak wrote there)."""
        candidate = Path(path)
        return candidate if candidate.is_absolute() else Path(os.path.abspath(self.out)) / candidate


def pair_id(analysis: str, left: str, right: str, left_box: list[float] | None = None) -> str:
    """A short id that stays the same for the same pair across restarts."""
    box = "" if left_box is None else ",".join(f"{v:.1f}" for v in left_box)
    text = "\n".join([analysis, left, right, box])
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:20]


def _read_summary(out: Path) -> dict:
    path = out / "summary.json"
    if not path.is_file():
        raise IdleakError(f"no summary.json in {out}: not an idleak output folder")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except ValueError as exc:
        raise IdleakError(f"{path}: unreadable summary ({exc})") from None


def _need(path: Path) -> Path:
    if not path.is_file():
        raise IdleakError(f"{path} is missing: cannot list the pairs to review")
    return path


def _order(items: list[Candidate]) -> list[Candidate]:
    return sorted(items, key=lambda c: (-(c.similarity if c.similarity is not None else float("-inf")), c.id))


def _float(value: object) -> float | None:
    try:
        return None if value in (None, "") else float(value)
    except (TypeError, ValueError):
        return None


def _label(path: str, identity: object = None) -> str:
    return f"{path} [{identity}]" if identity not in (None, "") else path


def audit_candidates(out: Path, summary: dict) -> CandidateSet:
    from idleak.outputs import review_pairs

    _need(out / "pairs.parquet")
    items = []
    for r in review_pairs(out):  # flagged pairs, the most similar others and a sample: not every face
        real_id = r["real_identity"] if r["real_identity"] not in (None, "") else f"(unlabelled) {r['real_path']}"
        items.append(Candidate(pair_id("audit", r["synthetic_path"], r["real_path"], r.get("synthetic_box")),
                               r["synthetic_path"], r["real_path"], _float(r["similarity"]), bool(r["leak"]),
                               str(real_id), _label(r["synthetic_path"], r.get("synthetic_identity")),
                               _label(r["real_path"], r["real_identity"]), r.get("synthetic_box"),
                               r.get("real_box")))
    return CandidateSet("audit", out, _order(items), "synthetic", "real",
                        "Is the synthetic face the same person as the real one?")


def mia_candidates(out: Path, summary: dict) -> CandidateSet:
    items = []
    with open(_need(out / "identities.csv"), newline="", encoding="utf-8") as handle:
        for r in csv.DictReader(handle):
            generated, photo = (r.get("best_generated_path") or "").strip(), (r.get("best_photo_path") or "").strip()
            if not generated or not photo:
                continue
            over = _float(r.get("n_over_threshold")) or 0.0
            member = str(r.get("member", "")).strip().lower()
            note = {"true": "member", "1": "member", "false": "non-member", "0": "non-member"}.get(member, "")
            items.append(Candidate(pair_id("mia", generated, photo), generated, photo, _float(r.get("score")),
                                   over > 0, r.get("identity") or None, generated,
                                   _label(photo, r.get("identity")), note=note))
    return CandidateSet("mia", out, _order(items), "generated", "person's photo",
                        "Is the generated face this person?")


def gate_candidates(out: Path, summary: dict) -> CandidateSet:
    rows = pq.read_table(_need(out / "rejected.parquet")).to_pylist()
    items = []
    for r in rows:
        if r["reason"] != "leak" or not r.get("real_path"):
            continue
        real_id = r["real_identity"] if r["real_identity"] not in (None, "") else f"(unlabelled) {r['real_path']}"
        items.append(Candidate(pair_id("gate", r["path"], r["real_path"], r.get("box")), r["path"], r["real_path"],
                               _float(r["similarity"]), True, str(real_id), r["path"],
                               _label(r["real_path"], r["real_identity"]), r.get("box"), r.get("real_box")))
    return CandidateSet("gate", out, _order(items), "rejected synthetic", "real",
                        "Is the rejected synthetic face the same person as the real one?")


def lookup_candidates(out: Path, summary: dict) -> CandidateSet:
    rows = pq.read_table(_need(out / "matches.parquet")).to_pylist()
    items = []
    for r in rows:
        items.append(Candidate(pair_id("lookup", r["dataset_path"], r["person_path"], r.get("dataset_box")),
                               r["dataset_path"], r["person_path"], _float(r["similarity"]), True, "the person",
                               f"{r['dataset']}: {_label(r['dataset_path'], r['dataset_identity'])}",
                               r["person_path"], r.get("dataset_box"), r.get("person_box")))
    return CandidateSet("lookup", out, _order(items), "dataset face", "the person's photo",
                        "Is the dataset face this person?")


ADAPTERS: dict[str, Callable[[Path, dict], CandidateSet]] = {
    "audit": audit_candidates,
    "mia": mia_candidates,
    "gate": gate_candidates,
    "lookup": lookup_candidates,
}


def load_candidates(out: str | os.PathLike[str]) -> CandidateSet:
    """The pairs to review in ``out`` (an OUT folder of audit, mia, gate or lookup)."""
    out = Path(out)
    if not out.is_dir():
        raise IdleakError(f"not a folder: {out}")
    summary = _read_summary(out)
    analysis = summary.get("analysis")
    if analysis not in ADAPTERS:
        raise IdleakError(f"{out}: nothing to review for analysis {analysis!r} (audit, mia, gate or lookup)")
    return ADAPTERS[analysis](out, summary)
