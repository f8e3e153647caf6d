"""The embedding store: resume after a kill, no double work, damage recovery, concurrent appends, one model
per store (datasets, hash cache, format upgrade and tables: test_store_datasets.py)."""

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
    parts = store_path / "meta"
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


def test_sigterm_flushes_what_was_computed(faces_root: Path, tmp_path: Path) -> None:
    import psutil

    store_path = tmp_path / "store"
    # dlib's own runtime, one process, all of ORL: seconds of work per few images, nothing flushed before the end
    proc = subprocess.Popen(embed_cmd(faces_root / "orl", store_path, "--workers", "1", "--flush-every", "1000",
                                      "--runtime", "dlib"), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    watched = psutil.Process(proc.pid)
    while proc.poll() is None and sum(watched.cpu_times()[:2]) < 8.0:  # loading (~3 s of CPU) + some images
        watched.cpu_percent(0.2)  # blocks 0.2 s between polls
    assert proc.poll() is None, "the embed finished before it could be interrupted"
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, stderr
    assert b"interrupted" in stderr
    assert len(EmbeddingStore.open(store_path).rows()) > 0


def test_killed_writer_leftovers_are_cleaned_and_truncated_vectors_recovered(faces_root: Path, tmp_path: Path) -> None:
    from idleak.embedding import embed_records
    from idleak.faces import parse_model
    from idleak.faces.dlib_backend import DlibEmbedder

    spec = parse_model("dlib")
    store = EmbeddingStore.create(tmp_path / "s", DlibEmbedder.model_id, 128)
    records = scan_folder(faces_root / "orl" / "s3")[:4]
    embed_records(records, store, spec, workers=1, flush_every=2)
    assert [s.count for s in store.segments()] == [2, 2]
    vectors = store.root / "vectors.f32"
    size = vectors.stat().st_size
    # a killed writer: a half-written metadata file, a key run without a commit, vectors past the end
    (store.root / "meta" / "00000002-4-2.parquet.tmp").write_bytes(b"half written")
    (store.root / "keys" / "00000002.key.npy").write_bytes(b"orphan")
    with open(vectors, "ab") as handle:
        handle.write(b"\0" * 1000)
    store = EmbeddingStore.open(store.root)
    assert vectors.stat().st_size == size and len(store) == 4
    assert not list(store.root.rglob("*.tmp")) and not (store.root / "keys" / "00000002.key.npy").exists()
    before = store.rows()
    # damage: the vectors file loses the second segment's last row -> that segment is dropped, redone
    os.truncate(vectors, size - 10)
    with pytest.warns(UserWarning, match="truncated.*dropped 2 rows"):
        store = EmbeddingStore.open(store.root)
    assert len(store) == 2
    stats = embed_records(records, store, spec, workers=1)
    assert stats.n_new == 2 and stats.n_cached == 2
    after = store.rows()
    assert sorted(after.hash) == sorted(before.hash) and all(c == 1 for c in keys(store).values())


def test_truncated_vectors_of_a_read_only_store_is_one_line(tmp_path: Path) -> None:
    import numpy as np
    import pyarrow as pa

    from idleak.store import meta_schema

    store = EmbeddingStore.create(tmp_path / "s", "m", 4)
    meta = pa.table({"hash": ["ab" * 16], "aligned": [True], "face": [0], "n_faces": [1]},
                    schema=pa.schema([meta_schema().field(c) for c in ("hash", "aligned", "face", "n_faces")]))
    full = pa.table({c: meta.column(c) if c in meta.column_names else pa.nulls(1, meta_schema().field(c).type)
                     for c in meta_schema().names}, schema=meta_schema())
    store.append(full, np.ones((1, 4), np.float32))
    os.truncate(store.root / "vectors.f32", 8)
    os.chmod(store.root, 0o555)
    try:
        result = subprocess.run([sys.executable, "-m", "idleak", "export", str(store.root), "--out",
                                 str(tmp_path / "t.parquet")], capture_output=True, text=True, timeout=60)
    finally:
        os.chmod(store.root, 0o755)
    if os.geteuid() == 0:  # root writes anyway: the open recovers instead
        assert result.returncode == 0, result.stderr
    else:
        assert result.returncode == 2 and "truncated" in result.stderr
        assert len(result.stderr.strip().splitlines()) == 1


def test_two_processes_appending_at_once_store_each_image_once(orl_subset: Path, tmp_path: Path) -> None:
    store_path = tmp_path / "store"
    procs = [subprocess.Popen(embed_cmd(orl_subset, store_path, "--workers", "1", "--flush-every", "3"),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE) for _ in range(2)]
    for proc in procs:
        _, stderr = proc.communicate(timeout=300)
        assert proc.returncode == 0, stderr
    store = EmbeddingStore.open(store_path)
    total = len({file_hash(r.path) for r in scan_folder(orl_subset)})
    assert len({h for h, _ in keys(store)}) == total
    assert all(count == 1 for count in keys(store).values())


def test_store_of_another_model_is_an_error(tmp_path: Path) -> None:
    EmbeddingStore.create(tmp_path / "s", "model-a", 4)
    with pytest.raises(StoreError, match="model-a"):
        EmbeddingStore.create(tmp_path / "s", "model-b", 4)
    with pytest.raises(StoreError, match="not an idleak store"):
        EmbeddingStore.open(tmp_path)
    assert os.path.isdir(tmp_path / "s" / "meta")


def test_a_full_disk_during_an_append_is_one_line_and_leaves_the_store_intact(tmp_path: Path) -> None:
    script = r'''
import resource, signal, sys
import numpy as np, pyarrow as pa
from idleak.errors import StoreError
from idleak.store import EmbeddingStore, meta_schema

def rows(start, n):
    hashes = [f"{i:032x}" for i in range(start, start + n)]
    cols = {c: pa.nulls(n, meta_schema().field(c).type) for c in meta_schema().names}
    cols.update(hash=pa.array(hashes), aligned=pa.array([True] * n), face=pa.array([0] * n, pa.int16()),
                n_faces=pa.array([1] * n, pa.int16()))
    return pa.table(cols, schema=meta_schema()), np.ones((n, 64), np.float32)

store = EmbeddingStore.create(sys.argv[1], "m", 64)
store.append(*rows(0, 100))
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
resource.setrlimit(resource.RLIMIT_FSIZE, (200_000, 200_000))  # writes past 200 KB fail, like a full disk
try:
    store.append(*rows(100, 5000))
except StoreError as exc:
    print("ERROR", exc)
'''
    result = subprocess.run([sys.executable, "-c", script, str(tmp_path / "s")], capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr
    assert "ERROR cannot write to store" in result.stdout and "File too large" in result.stdout
    store = EmbeddingStore.open(tmp_path / "s")
    assert len(store) == 100 and (tmp_path / "s" / "vectors.f32").stat().st_size == 100 * 64 * 4
    assert not list((tmp_path / "s").rglob("*.tmp")) and len(store.segments()) == 1
