"""pairs.csv/.parquet written in chunks from the search arrays; the report and review readers."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from idleak.outputs import review_pairs, top_pairs, write_pairs
from idleak.store.read import FaceSet


def faces(n: int, prefix: str, labelled: bool = True) -> FaceSet:
    boxes = np.tile(np.array([1, 2, 3, 4], np.float32), (n, 1))
    boxes[0] = np.nan  # an aligned crop: no box
    return FaceSet(np.zeros((n, 4), np.float32), np.array([f"/d/{prefix}{i}.png" for i in range(n)], dtype=object),
                   np.array([f"{prefix}id{i % 7}" if labelled else None for i in range(n)], dtype=object),
                   np.array([""] * n), boxes, np.ones(n, np.float32), np.ones(n, np.int64))


def test_pairs_written_in_chunks_equal_the_arrays(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    syn, real = faces(1000, "s"), faces(300, "r", labelled=False)
    scores = -np.sort(-rng.random((1000, 3)).astype(np.float32), axis=1)
    indices = rng.integers(0, 300, (1000, 3))
    indices[5, 2] = -1  # fewer neighbours than k
    n = write_pairs(tmp_path / "pairs.csv", syn, real, scores, indices, scores[:, 0] > 0.95, chunk=256)
    assert n == 2999
    table = pq.read_table(tmp_path / "pairs.parquet")
    assert table.num_rows == 2999 and pq.ParquetFile(tmp_path / "pairs.parquet").num_row_groups > 10
    rows = table.to_pylist()
    assert rows[0]["synthetic_box"] is None and rows[3]["synthetic_box"] == [1, 2, 3, 4]
    assert [r["rank"] for r in rows[:3]] == [1, 2, 3] and rows[0]["real_identity"] is None
    assert rows[3]["real_path"] == f"/d/r{indices[1, 0]}.png" and rows[3]["synthetic_identity"] == "sid1"
    assert sum(r["leak"] for r in rows) == int((scores[:, 0] > 0.95).sum())  # the rank-1 row carries the decision
    with open(tmp_path / "pairs.csv", newline="", encoding="utf-8") as handle:
        text = list(csv.DictReader(handle))
    assert len(text) == 2999 and list(text[0]) == ["synthetic_path", "synthetic_identity", "rank", "real_path",
                                                   "real_identity", "similarity", "leak"]
    assert text[3]["similarity"] == f"{scores[1, 0]:.6f}" and text[0]["real_identity"] == ""
    assert {r["leak"] for r in text} == {"true", "false"}
    assert not list(tmp_path.glob("*.tmp"))

    top, n_flagged = top_pairs(tmp_path, 10, flagged_only=True, batch=100)
    rank1 = scores[:, 0]
    assert n_flagged == int((rank1 > 0.95).sum())
    assert [r["similarity"] for r in top] == sorted(rank1[rank1 > 0.95], reverse=True)[:10]
    review = review_pairs(tmp_path, top=20, sample=30)
    keys = [(r["synthetic_path"], r["real_path"]) for r in review]
    assert len(keys) == len(set(keys)) and all(r["rank"] == 1 for r in review)
    assert n_flagged + 20 < len(review) <= n_flagged + 20 + 30  # flagged + top others + (part of) a sample
    assert len(review) < 1000  # not every synthetic face
