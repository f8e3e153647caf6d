"""Verdicts in SQLite inside the OUT folder: WAL journal, one transaction per verdict.

A verdict is committed (and fsynced, ``synchronous=FULL``) before the app answers, so a killed
server loses nothing it has acknowledged. ``verdicts`` holds the current verdict per pair;
``history`` keeps every change (including clearing one).
"""

from __future__ import annotations

import csv
import os
import sqlite3
import time
from collections import Counter
from pathlib import Path

from idleak.errors import IdleakError
from idleak.review.candidates import CandidateSet

#: verdict -> what the report calls it
VERDICTS = {"match": "confirmed", "not_match": "rejected", "unsure": "unsure", "child": "excluded",
            "not_a_face": "excluded"}
#: verdicts that exclude the left image (the synthetic / generated / dataset image) from the analysis
EXCLUSIONS = ("child", "not_a_face")

SCHEMA = """
CREATE TABLE IF NOT EXISTS verdicts (
    pair_id TEXT PRIMARY KEY,
    verdict TEXT NOT NULL,
    left_path TEXT,
    right_path TEXT,
    similarity REAL,
    updated_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS history (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    pair_id TEXT NOT NULL,
    verdict TEXT,
    at TEXT NOT NULL
);
"""


class VerdictStore:
    """The review database of one OUT folder (``OUT/review.sqlite``)."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        try:
            with self._connect() as conn:
                mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
                if str(mode).lower() != "wal":
                    raise IdleakError(f"{self.path}: SQLite could not switch to WAL mode (got {mode})")
                conn.executescript(SCHEMA)
        except sqlite3.Error as exc:
            raise IdleakError(f"{self.path}: not a usable review database ({exc})") from None

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, timeout=30, isolation_level=None)
        conn.execute("PRAGMA synchronous=FULL")
        return conn

    def set(self, pair_id: str, verdict: str | None, left_path: str = "", right_path: str = "",
            similarity: float | None = None) -> None:
        """Record (or with ``None`` clear) the verdict on one pair, in one transaction."""
        if verdict is not None and verdict not in VERDICTS:
            raise IdleakError(f"unknown verdict {verdict!r}: one of {', '.join(VERDICTS)}")
        now = time.strftime("%Y-%m-%dT%H:%M:%S%z")
        conn = self._connect()
        try:
            conn.execute("BEGIN IMMEDIATE")
            if verdict is None:
                conn.execute("DELETE FROM verdicts WHERE pair_id = ?", (pair_id,))
            else:
                conn.execute(
                    "INSERT INTO verdicts (pair_id, verdict, left_path, right_path, similarity, updated_at) "
                    "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT(pair_id) DO UPDATE SET verdict = excluded.verdict, "
                    "updated_at = excluded.updated_at",
                    (pair_id, verdict, left_path, right_path, similarity, now))
            conn.execute("INSERT INTO history (pair_id, verdict, at) VALUES (?, ?, ?)", (pair_id, verdict, now))
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        finally:
            conn.close()

    def verdicts(self) -> dict[str, str]:
        """pair id -> current verdict."""
        conn = self._connect()
        try:
            return dict(conn.execute("SELECT pair_id, verdict FROM verdicts").fetchall())
        finally:
            conn.close()


def review_counts(verdicts: dict[str, str], candidates: CandidateSet) -> dict:
    """The ``review`` block of summary.json: verdict counts over the pairs of this OUT folder."""
    current = {c.id: c for c in candidates.items}
    judged = {pid: v for pid, v in verdicts.items() if pid in current}
    kinds = Counter(VERDICTS[v] for v in judged.values() if v in VERDICTS)
    excluded_by_reason = dict(Counter(v for v in judged.values() if v in EXCLUSIONS).most_common())
    confirmed = [current[pid] for pid, v in judged.items() if v == "match"]
    identities = sorted({c.identity for c in confirmed if c.identity is not None})
    block = {
        "n_candidates": len(candidates),
        "n_reviewed": len(judged),
        "confirmed": kinds.get("confirmed", 0),
        "rejected": kinds.get("rejected", 0),
        "unsure": kinds.get("unsure", 0),
        "excluded": kinds.get("excluded", 0),
        "excluded_by_reason": excluded_by_reason,
        "confirmed_real_identities": len(identities),
        "confirmed_identities": identities,
        "n_stale_verdicts": len(verdicts) - len(judged),
    }
    if candidates.analysis == "audit":
        flagged = [c for c in candidates.items if c.flagged]
        block["n_flagged"] = len(flagged)
        block["n_flagged_reviewed"] = sum(c.id in judged for c in flagged)
        block["n_flagged_confirmed"] = sum(judged.get(c.id) == "match" for c in flagged)
    return block


def write_review_exclusions(path: str | os.PathLike[str], verdicts: dict[str, str], candidates: CandidateSet) -> int:
    """``review_excluded.csv`` (path, reason, hash): the left images reviewers excluded; usable as ``--exclude``
    (matched by path or, after the files moved, by the content hash)."""
    from idleak.store.read import file_hash

    rows = sorted({(c.left_path, verdicts[c.id]) for c in candidates.items if verdicts.get(c.id) in EXCLUSIONS})
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["path", "reason", "hash"])
        for image, reason in rows:
            try:
                content = file_hash(str(candidates.resolve(image)))
            except OSError:
                content = ""
            writer.writerow([image, reason, content])
    return len(rows)
