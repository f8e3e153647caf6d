"""The embedding store: resume after a kill, no double work, damage tolerance, one model per store."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from idleak.embedding import file_hash
from idleak.errors import StoreError
from idleak.sources import scan_folder
from idleak.store import EmbeddingStore


def embed_cmd(folder: Path, store: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "idleak", "embed", str(folder), "--store", str(store), *extra]


def keys(store: EmbeddingStore) -> Counter:
    rows = store.rows()
    return Counter((h, f) for h, f in zip(rows.hash, rows.face))


@pytest.fixture
def orl_subset(faces_root: Path, tmp_path: Path) -> Path:
    """60 ORL images of 6 people, copied so the test owns them."""
    folder = tmp_path / "orl6"
    for subject in range(1, 7):
        shutil.copytree(faces_root / "orl" / f"s{subject}", folder / f"s{subject}")
    return folder


@pytest.mark.slow
def test_killed_run_resumes_without_redoing_work(orl_subset: Path, tmp_path: Path) -> None:
    store_path = tmp_path / "store"
    total = len({file_hash(r.path) for r in scan_folder(orl_subset)})
    proc = subprocess.Popen(embed_cmd(orl_subset, store_path, "--workers", "1", "--flush-every", "4"),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    deadline = time.time() + 120
    parts = store_path / "parts"
    while time.time() < deadline and (not parts.is_dir() or len(list(parts.glob("*.parquet"))) < 3):
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the run finished before it could be killed"
    store = EmbeddingStore.open(store_path)
    done_before = len({h for h, _ in keys(store)})
    assert 0 < done_before < total
    assert all(count == 1 for count in keys(store).values())

    rerun = subprocess.run(embed_cmd(orl_subset, store_path, "--workers", "2"), capture_output=True, text=True,
                           timeout=300)
    assert rerun.returncode == 0, rerun.stderr
    new, cached = map(int, re.search(r"embedded (\d+) new images, (\d+) already", rerun.stdout).groups())
    assert cached == done_before and new == total - done_before
    store = EmbeddingStore.open(store_path)
    assert len({h for h, _ in keys(store)}) == total
    assert all(count == 1 for count in keys(store).values())

    again = subprocess.run(embed_cmd(orl_subset, store_path), capture_output=True, text=True, timeout=120)
    assert "embedded 0 new images" in again.stdout


def test_sigterm_flushes_what_was_computed(orl_subset: Path, tmp_path: Path) -> None:
    store_path = tmp_path / "store"
    proc = subprocess.Popen(embed_cmd(orl_subset, store_path, "--workers", "1", "--flush-every", "1000"),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.time() + 60
    while time.time() < deadline and not (store_path / "store.json").exists():
        time.sleep(0.05)
    time.sleep(3.0)  # some images embedded, none flushed yet (flush every 1000)
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, stderr
    assert b"interrupted" in stderr
    assert len(EmbeddingStore.open(store_path).rows()) > 0


def test_damaged_parts_are_skipped_and_duplicates_kept_once(faces_root: Path, tmp_path: Path) -> None:
    from idleak.embedding import embed_records
    from idleak.faces import parse_model

    spec = parse_model("dlib")
    from idleak.faces.dlib_backend import DlibEmbedder

    store = EmbeddingStore.create(tmp_path / "s", DlibEmbedder.model_id, 128)
    records = scan_folder(faces_root / "orl" / "s3")[:4]
    embed_records(records, store, spec, workers=1, flush_every=2)
    parts = store.part_files()
    assert len(parts) == 2
    shutil.copy(parts[0], parts[0].with_name("part-99999999999999999999-copy.parquet"))  # a concurrent duplicate
    (parts[0].parent / "part-x.parquet.tmp").write_bytes(b"half written")  # a killed writer's leftover
    store = EmbeddingStore.open(store.root)
    assert len(store.rows()) == 4 and all(c == 1 for c in keys(store).values())
    parts[1].write_bytes(b"PAR1 garbage")  # damaged on disk
    store = EmbeddingStore.open(store.root)
    with pytest.warns(UserWarning, match="unreadable store part"):
        rows = store.rows()
    assert len(rows) == 2
    stats = embed_records(records, store, spec, workers=1)
    assert stats.n_new == 2 and stats.n_cached == 2  # only the damaged part's images are redone


def test_store_of_another_model_is_an_error(tmp_path: Path) -> None:
    EmbeddingStore.create(tmp_path / "s", "model-a", 4)
    with pytest.raises(StoreError, match="model-a"):
        EmbeddingStore.create(tmp_path / "s", "model-b", 4)
    with pytest.raises(StoreError, match="not an idleak store"):
        EmbeddingStore.open(tmp_path)
    assert os.path.isdir(tmp_path / "s" / "parts")
