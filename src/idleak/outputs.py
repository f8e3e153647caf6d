"""Write an analysis's machine-readable outputs: summary.json, pairs CSV/Parquet, excluded.csv."""

from __future__ import annotations

import csv
import json
import os
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

PAIR_COLUMNS = ["synthetic_path", "synthetic_identity", "rank", "real_path", "real_identity", "similarity", "leak"]
#: Also in pairs.parquet (not the CSV): face boxes, for thumbnails and the review app.
PAIR_EXTRA_COLUMNS = ["synthetic_box", "real_box"]


def write_json(path: str | os.PathLike[str], data: dict) -> None:
    """JSON with numpy values turned into plain numbers; written atomically."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, default=_plain, ensure_ascii=False) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def write_summary_and_report(out: str | os.PathLike[str], summary: dict, started: float,
                             render: Callable[[Path], object] | None = None) -> dict:
    """Write ``summary.json``, then (if ``render``) the report from the OUT files, then the summary again
    with ``timings.report_s`` and ``timings.total_s`` (``started`` is a ``time.perf_counter()`` value)."""
    out = Path(out)
    timings = summary.setdefault("timings", {})
    write_json(out / "summary.json", summary)
    if render is not None:
        t0 = time.perf_counter()
        render(out)
        timings["report_s"] = time.perf_counter() - t0
    timings["total_s"] = time.perf_counter() - started
    write_json(out / "summary.json", summary)
    return summary


def _plain(value: object) -> object:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def write_table(rows: list[dict], columns: list[str], csv_path: str | os.PathLike[str],
                parquet: bool = True, csv_columns: list[str] | None = None) -> None:
    """Rows as CSV (and Parquet beside it) with the given column order; ``csv_columns`` limits the CSV."""
    csv_path = Path(csv_path)
    with open(csv_path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=csv_columns or columns, extrasaction="ignore")
        writer.writeheader()
        for row in rows:
            writer.writerow({k: _csv_value(row.get(k)) for k in (csv_columns or columns)})
    if parquet:
        table = pa.table({c: [row.get(c) for row in rows] for c in columns}) if rows else pa.table(
            {c: pa.array([], pa.string()) for c in columns})
        pq.write_table(table, csv_path.with_suffix(".parquet"))


def _csv_value(value: object) -> object:
    if value is None:
        return ""
    if isinstance(value, bool | np.bool_):
        return "true" if value else "false"
    if isinstance(value, float | np.floating):
        return f"{float(value):.6f}"
    return value


def write_excluded(path: str | os.PathLike[str], excluded: list[tuple[str, str, str]]) -> dict[str, int]:
    """``excluded.csv`` (path, reason, detail); returns reason -> count."""
    rows = [{"path": p, "reason": r, "detail": d} for p, r, d in excluded]
    write_table(rows, ["path", "reason", "detail"], path, parquet=False)
    return dict(Counter(r for _, r, _ in excluded).most_common())


def read_csv(path: str | os.PathLike[str]) -> list[dict]:
    with open(path, newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def read_pairs(out: str | os.PathLike[str]) -> list[dict]:
    """pairs.parquet of an audit as dicts (typed values, boxes included)."""
    return pq.read_table(Path(out) / "pairs.parquet").to_pylist()
