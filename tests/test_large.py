"""Large-dataset paths on precomputed embedding tables: an ivf audit decides exactly like the exact one,
and the scale guard prints its plan and refuses a plan that cannot fit in memory."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from idleak.scale import plan_audit, search_bytes


def table(path: Path, vectors: np.ndarray, identities: list[str | None]) -> Path:
    pq.write_table(pa.table({
        "path": [f"img/{path.stem}/{i}.png" for i in range(len(vectors))],
        "identity": identities,
        "vector": pa.FixedSizeListArray.from_arrays(pa.array(vectors.ravel(), pa.float32()), vectors.shape[1]),
    }), path)
    return path


@pytest.fixture(scope="module")
def tables(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """REAL: 30,000 random unit vectors in 3,000 identities; SYN: 3,000, of which 40 are noisy copies."""
    rng = np.random.default_rng(1)
    root = tmp_path_factory.mktemp("tables")

    def unit(n: int) -> np.ndarray:
        v = rng.standard_normal((n, 128)).astype(np.float32)
        return v / np.linalg.norm(v, axis=1, keepdims=True)

    real, syn = unit(30_000), unit(3_000)
    syn[:40] = real[::750][:40] + 0.025 * rng.standard_normal((40, 128)).astype(np.float32)
    return {"real": table(root / "real.parquet", real, [f"p{i // 10}" for i in range(30_000)]),
            "syn": table(root / "syn.parquet", syn, [None] * 3_000), "root": root}


def audit(tables: dict, out: Path, *extra: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "idleak", "audit", "-s", str(tables["syn"]), "-r", str(tables["real"]),
                           "-o", str(out), "--cache", str(tables["root"] / "cache"), *extra],
                          capture_output=True, text=True, timeout=600, env={**os.environ, **(env or {})})


def test_ivf_audit_flags_exactly_what_exact_search_flags(tables: dict, tmp_path: Path) -> None:
    exact = audit(tables, tmp_path / "exact", "--search", "exact")
    # random vectors: recall@1 0.99 would cost as much as exact search, so no target here (see the next test)
    ivf = audit(tables, tmp_path / "ivf", "--search", "ivf", "--search-recall", "0")
    assert exact.returncode in (0, 1) and ivf.returncode == exact.returncode, ivf.stderr
    assert "plan: 3,000 x 30,000 faces, search ivf" in ivf.stdout
    a, b = (json.loads((tmp_path / x / "summary.json").read_text()) for x in ("exact", "ivf"))
    assert b["search"]["engine"] == "ivf" and b["search"]["n_rescored_exactly"] >= 40
    assert b["search"]["nprobe"] == 8 and b["search"]["recall_target"] is None
    assert a["threshold"] == b["threshold"] and a["n_flagged"] == b["n_flagged"] >= 40
    flags = [pq.read_table(tmp_path / x / "pairs.parquet").filter(pa.compute.equal(pa.compute.field("rank"), 1))
             for x in ("exact", "ivf")]
    pairs = [{(r["synthetic_path"], r["real_path"]) for r in f.to_pylist() if r["leak"]} for f in flags]
    assert pairs[0] == pairs[1]


def test_ivf_that_cannot_reach_its_recall_target_cheaply_says_so_and_searches_exactly(tables: dict,
                                                                                      tmp_path: Path) -> None:
    result = audit(tables, tmp_path / "o", "--search", "ivf")  # recall@1 target 0.99 on random vectors
    assert result.returncode in (0, 1), result.stderr
    s = json.loads((tmp_path / "o" / "summary.json").read_text())
    assert s["search"]["engine"] == "exact" and s["search"]["recall_target"] == 0.99
    assert s["search"]["check_sample"] == 1000 and s["search"]["sample_recall_at_1"] < 0.99
    assert any(w.startswith("--search ivf: ivf gave way to exact search: recall@1") for w in s["warnings"])
    assert s["n_flagged"] >= 40


def test_a_plan_that_cannot_fit_is_refused_with_the_option_that_fits(tables: dict, tmp_path: Path) -> None:
    ivf = plan_audit(3_000, 30_000, 128, "ivf")
    exact = plan_audit(3_000, 30_000, 128, "exact")
    assert ivf.bytes > exact.bytes
    squeeze = str(int((ivf.bytes + exact.bytes) / 2 / 0.85))  # fits exact, not ivf
    result = audit(tables, tmp_path / "a", "--search", "ivf", env={"IDLEAK_MEMORY_BYTES": squeeze})
    assert result.returncode == 2 and "use --search exact" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and not (tmp_path / "a" / "pairs.csv").exists()
    real_only = search_bytes(0, 30_000, 128, "exact", 5)
    tight = str(int((real_only + exact.bytes) / 2 / 0.85))  # REAL fits, not all of SYN with it
    result = audit(tables, tmp_path / "b", env={"IDLEAK_MEMORY_BYTES": tight})
    assert result.returncode == 2 and "split SYN into parts of at most" in result.stderr


def test_a_disk_that_fills_while_writing_pairs_is_one_line_and_keeps_nothing_half_written(
        tables: dict, tmp_path: Path) -> None:
    import resource
    import signal

    def small_files() -> None:  # files may not grow past 300 KB: writes fail with EFBIG, like a full disk
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (300_000, 300_000))

    result = subprocess.run([sys.executable, "-m", "idleak", "audit", "-s", str(tables["syn"]), "-r",
                             str(tables["real"]), "-o", str(tmp_path / "out"), "--cache", str(tmp_path / "c")],
                            capture_output=True, text=True, timeout=600, preexec_fn=small_files)
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert result.returncode == 2 and "Traceback" not in result.stderr and len(errors) == 1  # (progress bars aside)
    assert "cannot write" in errors[0] and "pairs.csv: File too large" in errors[0]
    assert not list((tmp_path / "out").glob("pairs*")) and not list((tmp_path / "out").glob("*.tmp"))
