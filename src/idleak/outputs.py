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
import pyarrow.compute as pc
import pyarrow.csv as pacsv
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
        from idleak.report.html import evidence

        t0 = time.perf_counter()
        with evidence(out) as seen:
            render(out)
        # images unreadable already on the first run (e.g. a store whose originals are gone): a rebuild
        # may show them blank; any other unreadable image is an error there
        summary["evidence_unavailable"] = sorted(seen.missing)
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
    """Rows as CSV (and Parquet beside it) with the given column order; ``csv_columns`` limits the CSV.

    Paths (columns named ``path`` or ``*_path``) to files inside the table's folder (OUT) are written
    relative to it, so OUT can be moved whole; every other path is written absolute.
    """
    csv_path = Path(os.path.abspath(csv_path))
    rows = [out_relative(row, csv_path.parent) for row in rows]
    with open(csv_path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=csv_columns or columns, extrasaction="ignore")
        writer.writeheader()
        for row in rows:
            writer.writerow({k: _csv_value(row.get(k)) for k in (csv_columns or columns)})
    if parquet:
        table = pa.table({c: [row.get(c) for row in rows] for c in columns}) if rows else pa.table(
            {c: pa.array([], pa.string()) for c in columns})
        pq.write_table(table, csv_path.with_suffix(".parquet"))


def out_relative(row: dict, out: Path) -> dict:
    """``row`` with its path values inside ``out`` made relative to ``out`` (and the others absolute)."""
    fixed = {}
    for key, value in row.items():
        if isinstance(value, str) and value and (key == "path" or key.endswith("_path")) and "::" not in value:
            absolute = os.path.abspath(value)
            inside = absolute.startswith(str(out) + os.sep)
            fixed[key] = os.path.relpath(absolute, out) if inside else absolute
        else:
            fixed[key] = value
    return fixed


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
    """pairs.parquet of an audit as dicts (typed values, boxes included): the whole table, for small
    outputs and tests; the report and the review app use ``top_pairs`` and ``review_pairs``."""
    return pq.read_table(Path(out) / "pairs.parquet").to_pylist()


#: pairs (query x rank rows) per chunk when writing or scanning pairs tables
PAIR_CHUNK = 262_144


def pairs_schema() -> pa.Schema:
    box = pa.list_(pa.float32(), 4)
    return pa.schema([("synthetic_path", pa.string()), ("synthetic_identity", pa.string()), ("rank", pa.int32()),
                      ("real_path", pa.string()), ("real_identity", pa.string()), ("similarity", pa.float32()),
                      ("leak", pa.bool_()), ("synthetic_box", box), ("real_box", box)])


def write_pairs(csv_path: str | os.PathLike[str], synthetic: object, real: object, scores: np.ndarray,
                indices: np.ndarray, flagged: np.ndarray, chunk: int = PAIR_CHUNK) -> int:
    """pairs.csv and pairs.parquet (one row per synthetic face and rank) written chunk by chunk from the
    search arrays; ``synthetic``/``real`` are face sets (paths, identities, boxes); ``flagged`` is the
    decision per synthetic face (its rank-1 row's ``leak``). Memory is bounded by
    one chunk; both files are written to temporary names and renamed when complete. Returns the row count."""
    csv_path = Path(csv_path)
    parquet_path = csv_path.with_suffix(".parquet")
    tmp_csv = csv_path.with_name(csv_path.name + ".tmp")
    tmp_parquet = parquet_path.with_name(parquet_path.name + ".tmp")
    schema = pairs_schema()
    k = indices.shape[1] if indices.ndim == 2 else 0
    per_chunk = max(1, chunk // max(k, 1))
    written = 0
    csv_options = pacsv.WriteOptions(include_header=True, quoting_style="needed")
    try:
        with pq.ParquetWriter(tmp_parquet, schema) as pw, open(tmp_csv, "wb") as handle:
            csv_writer = None
            for start in range(0, max(len(scores), 1), per_chunk):
                q = np.arange(start, min(len(scores), start + per_chunk))
                qi, rank = np.nonzero(indices[q] >= 0) if len(q) else (np.zeros(0, int), np.zeros(0, int))
                qq = q[qi]
                j = indices[qq, rank]
                sim = scores[qq, rank].astype(np.float32)
                leak = np.asarray(flagged, bool)[qq] & (rank == 0)
                table = pa.table({
                    "synthetic_path": _strings(synthetic.paths[qq]),
                    "synthetic_identity": _strings(synthetic.identities[qq]),
                    "rank": pa.array(rank.astype(np.int32) + 1), "real_path": _strings(real.paths[j]),
                    "real_identity": _strings(real.identities[j]), "similarity": pa.array(sim),
                    "leak": pa.array(leak), "synthetic_box": _boxes(synthetic.boxes[qq]),
                    "real_box": _boxes(real.boxes[j]),
                }, schema=schema)
                pw.write_table(table)
                text = table.select(PAIR_COLUMNS)
                text = text.set_column(5, "similarity", pa.array(np.char.mod("%.6f", sim.astype(np.float64))))
                text = text.set_column(6, "leak", pa.array(np.where(leak, "true", "false")))
                if csv_writer is None:
                    csv_writer = pacsv.CSVWriter(handle, text.schema, write_options=csv_options)
                csv_writer.write_table(text)
                written += table.num_rows
            if csv_writer is not None:
                csv_writer.close()
        os.replace(tmp_parquet, parquet_path)
        os.replace(tmp_csv, csv_path)
    except OSError as exc:
        tmp_csv.unlink(missing_ok=True)
        tmp_parquet.unlink(missing_ok=True)
        from idleak.errors import IdleakError

        raise IdleakError(f"cannot write {csv_path}: {exc.strerror or exc}") from None
    return written


def _strings(values: np.ndarray) -> pa.Array:
    return pa.array([None if v is None else str(v) for v in values], pa.string())


def _boxes(boxes: np.ndarray) -> pa.Array:
    boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
    ok = np.isfinite(boxes).all(axis=1)
    flat = pa.array(np.nan_to_num(boxes).ravel(), pa.float32())
    return pa.FixedSizeListArray.from_arrays(flat, 4, mask=pa.array(~ok))


def top_pairs(out: str | os.PathLike[str], n: int, flagged_only: bool = False, rank1: bool = True,
              batch: int = PAIR_CHUNK) -> tuple[list[dict], int]:
    """The ``n`` most similar pairs of pairs.parquet (rank-1 rows, flagged ones only if asked), and how
    many rows qualify; read batch by batch, so memory is bounded by a batch and ``n``."""
    handle = pq.ParquetFile(Path(out) / "pairs.parquet")
    best: pa.Table | None = None
    total = 0
    for record_batch in handle.iter_batches(batch_size=batch):
        table = pa.Table.from_batches([record_batch])
        mask = pa.array(np.ones(table.num_rows, bool))
        if rank1:
            mask = pc.and_(mask, pc.equal(table.column("rank"), 1))
        if flagged_only:
            mask = pc.and_(mask, table.column("leak"))
        table = table.filter(mask)
        total += table.num_rows
        best = table if best is None else pa.concat_tables([best, table])
        if best.num_rows > n:
            order = pc.sort_indices(best, sort_keys=[("similarity", "descending")])
            best = best.take(order[:n])
    if best is None:
        return [], 0
    best = best.take(pc.sort_indices(best, sort_keys=[("similarity", "descending")])[:n])
    return best.to_pylist(), total


def review_pairs(out: str | os.PathLike[str], top: int = 200, sample: int = 100, seed: int = 0) -> list[dict]:
    """Rank-1 pairs worth a reviewer's time: every flagged pair, the ``top`` most similar others and a
    random ``sample`` of the rest (so a reviewer also sees what unflagged pairs look like)."""
    path = Path(out) / "pairs.parquet"
    flagged, _ = top_pairs(out, 1 << 62, flagged_only=True)
    ranked, n_rank1 = top_pairs(out, len(flagged) + top)
    chosen = {(r["synthetic_path"], r["real_path"], r["rank"]) for r in flagged}
    rows = flagged + [r for r in ranked if (r["synthetic_path"], r["real_path"], r["rank"]) not in chosen][:top]
    chosen |= {(r["synthetic_path"], r["real_path"], r["rank"]) for r in rows}
    if sample and n_rank1:
        wanted = set(np.random.default_rng(seed).choice(n_rank1, min(sample, n_rank1), replace=False).tolist())
        position = 0
        for record_batch in pq.ParquetFile(path).iter_batches(batch_size=PAIR_CHUNK):
            table = pa.Table.from_batches([record_batch])
            table = table.filter(pc.equal(table.column("rank"), 1))
            here = [i for i in range(table.num_rows) if position + i in wanted]
            for r in table.take(pa.array(here, pa.int64())).to_pylist():
                if (r["synthetic_path"], r["real_path"], r["rank"]) not in chosen:
                    rows.append(r)
            position += table.num_rows
    return rows
