"""Store datasets (read-only, self-contained), the file-hash cache, the format-1 upgrade and
precomputed embedding tables in and out."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from idleak.errors import IdleakError, StoreError
from idleak.sources import Record, open_source, scan_folder
from idleak.store import EmbeddingStore
from idleak.store.read import hash_records
from idleak.store.tables import export_table, table_faces


def idleak(*args: object, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "idleak", *map(str, args)], capture_output=True, text=True,
                          timeout=300, cwd=cwd)


@pytest.fixture(scope="module")
def embedded(faces_root: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """ORL subjects 1-3 copied and embedded into a store as dataset ``real``."""
    root = tmp_path_factory.mktemp("datasets")
    folder = root / "orl3"
    for subject in range(1, 4):
        shutil.copytree(faces_root / "orl" / f"s{subject}", folder / f"s{subject}")
    result = idleak("embed", folder, "--store", root / "store", "--name", "real", "-j", "2")
    assert result.returncode == 0, result.stderr
    return {"root": root, "folder": folder, "store": root / "store"}


def test_store_source_is_one_dataset_read_only_and_self_contained(embedded: dict, faces_root: Path,
                                                                   tmp_path: Path) -> None:
    from idleak.jobs.workspace import Workspace

    # move the store and the originals: the store alone is enough, its files are never re-read
    store = tmp_path / "moved-store"
    shutil.copytree(embedded["store"], store)
    source = open_source(store, "REAL")
    assert source.kind == "store" and source.dataset == "real" and len(source.records) == 30
    assert {r.identity for r in source.records} == {"s1", "s2", "s3"}
    ws = Workspace("dlib", cache=store, workers=2)  # --cache pointing at the source store (issue 8's trap)
    before = ws.prepare(source, "REAL")
    assert len(before.faces) == 30
    other = tmp_path / "other"
    shutil.copytree(faces_root / "orl" / "s4", other / "s4")
    ws.prepare(str(other), "SYN")  # embeds 10 new images into the cache = the same store
    assert EmbeddingStore.open(store).n_rows == 40
    after = ws.prepare(str(store), "REAL")
    assert len(after.faces) == 30 and np.array_equal(after.faces.vectors, before.faces.vectors)
    # two datasets: the bare store is ambiguous, STORE::NAME picks one
    again = idleak("embed", other, "--store", store, "--name", "s4")
    assert again.returncode == 0 and "embedded 0 new images, 10 already" in again.stdout
    with pytest.raises(IdleakError, match=r"it has 2 \(real, s4\); pick one with .*::NAME"):
        open_source(store, "REAL")
    assert len(open_source(f"{store}::s4", "SYN").records) == 10
    with pytest.raises(StoreError, match="no dataset 'nope'"):
        open_source(f"{store}::nope", "SYN")


def test_a_cache_without_datasets_is_not_a_source(tmp_path: Path) -> None:
    EmbeddingStore.create(tmp_path / "cache", "m", 4)
    with pytest.raises(IdleakError, match="holds no named dataset"):
        open_source(tmp_path / "cache", "REAL")


def test_unchanged_files_are_never_read_again(embedded: dict, tmp_path: Path) -> None:
    folder = tmp_path / "imgs"
    shutil.copytree(embedded["folder"] / "s1", folder)
    records = scan_folder(folder)
    store = EmbeddingStore.create(tmp_path / "s", "m", 4)
    first = hash_records(records, cache=store.file_hashes)
    # same size and mtime, other content: the cache answers without reading the file
    target = Path(records[0].path)
    stat = target.stat()
    data = bytearray(target.read_bytes())
    data[-1] ^= 0xFF
    target.write_bytes(bytes(data))
    os.utime(target, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert hash_records(records, cache=store.file_hashes) == first
    os.utime(target, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1))  # a touched file is hashed again
    again = hash_records(records, cache=store.file_hashes)
    assert again[0] != first[0] and again[1:] == first[1:]
    assert again == hash_records(records)


def test_format_1_store_is_refused_in_one_line_then_upgraded(embedded: dict, tmp_path: Path) -> None:
    v2 = EmbeddingStore.open(embedded["store"])
    rows = v2.rows()
    old = tmp_path / "old"
    (old / "parts").mkdir(parents=True)
    (old / "store.json").write_text(json.dumps({"format": 1, "model_id": v2.model_id, "dim": v2.dim}))
    table = pq.read_table(v2.segments()[0].path)
    vectors = pa.FixedSizeListArray.from_arrays(pa.array(rows.vectors[:table.num_rows].ravel()), v2.dim)
    pq.write_table(table.append_column("vector", vectors), old / "parts" / "part-1.parquet")
    result = idleak("audit", "-s", embedded["folder"], "-r", old, "-o", tmp_path / "out")
    assert result.returncode == 2 and "format 1" in result.stderr and "upgrade-store" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    result = idleak("upgrade-store", old)
    assert result.returncode == 0, result.stderr
    upgraded = EmbeddingStore.open(old)
    assert upgraded.datasets() == ["default"] and upgraded.n_rows == table.num_rows
    assert np.array_equal(upgraded.rows().vectors, rows.vectors[:table.num_rows])
    assert (old / "parts.v1" / "part-1.parquet").is_file()


def test_export_and_read_back_an_embedding_table(embedded: dict, tmp_path: Path) -> None:
    table_path = tmp_path / "real.parquet"
    result = idleak("export", embedded["store"], "--out", table_path)
    assert result.returncode == 0, result.stderr
    table = pq.read_table(table_path)
    assert set(table.column_names) == {"path", "identity", "face", "box", "vector"}
    assert table.schema.metadata[b"model"].decode() == EmbeddingStore.open(embedded["store"]).model_id
    faces = table_faces(table_path, "REAL", model_id=table.schema.metadata[b"model"].decode())
    source = open_source(embedded["store"], "REAL")
    from idleak.store.read import load_faces

    direct = load_faces(source.records, EmbeddingStore.open(embedded["store"]), source.aligned, "all", source.hashes)
    assert np.allclose(faces.vectors, direct.vectors, atol=1e-6)
    assert list(faces.identities) == list(direct.identities) and list(faces.paths) == list(direct.paths)
    # a table is an audit input: SYN = the table of subjects 1-3 against REAL = the same store
    out = tmp_path / "audit"
    result = idleak("audit", "-s", table_path, "-r", embedded["store"], "-o", out, "--cache", tmp_path / "c")
    assert result.returncode in (0, 1), result.stderr
    assert json.loads((out / "summary.json").read_text())["n_synthetic_faces"] == 30


def _write(path: Path, vectors: list, model: str | None = None, drop: str | None = None, fixed: bool = True) -> Path:
    columns = {"path": [f"img{i}.png" for i in range(len(vectors))], "identity": ["a"] * len(vectors)}
    if fixed:
        columns["vector"] = pa.FixedSizeListArray.from_arrays(pa.array(np.ravel(vectors), pa.float32()),
                                                                len(vectors[0]))
    else:
        columns["vector"] = pa.array(vectors, pa.list_(pa.float32()))
    columns.pop(drop, None)
    table = pa.table(columns)
    if model:
        table = table.replace_schema_metadata({"model": model})
    pq.write_table(table, path)
    return path


def test_bad_embedding_tables_are_one_line_errors(tmp_path: Path) -> None:
    good = [[1.0, 0.0, 0.0], [0.0, 2.0, 0.0]]
    faces = table_faces(_write(tmp_path / "ok.parquet", good), "SYN")
    assert np.allclose(np.linalg.norm(faces.vectors, axis=1), 1.0)  # normalised on read
    assert [Path(p).parent for p in faces.paths] == [tmp_path, tmp_path]  # relative to the table
    cases = {
        "missing": (_write(tmp_path / "m.parquet", good, drop="vector"), "lacks column.*vector"),
        "mixed": (_write(tmp_path / "x.parquet", [[1.0, 0.0], [1.0, 0.0, 0.0]], fixed=False), "mixed vector dim"),
        "nan": (_write(tmp_path / "n.parquet", [[1.0, 0.0, 0.0], [np.nan, 0.0, 0.0]]), "row 1 has NaN"),
        "model": (_write(tmp_path / "o.parquet", good, model="arcface"), "model 'arcface'.*uses 'dlib"),
        "dim": (_write(tmp_path / "d.parquet", good), "dimension 3, expected 128"),
    }
    for name, (path, pattern) in cases.items():
        with pytest.raises(IdleakError, match=pattern):
            table_faces(path, "SYN", model_id="dlib-resnet" if name == "model" else None,
                        dim=128 if name == "dim" else None)
    result = idleak("audit", "-s", cases["mixed"][0], "-r", cases["nan"][0], "-o", tmp_path / "out")
    assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1
    assert "mixed vector dimensions" in result.stderr


def test_export_needs_a_name_when_the_store_has_several(tmp_path: Path) -> None:
    store = EmbeddingStore.create(tmp_path / "s", "m", 4)
    store.write_dataset("a", [Record(str(tmp_path / "x.png"))], [None], False)
    store.write_dataset("b", [Record(str(tmp_path / "y.png"))], [None], False)
    with pytest.raises(IdleakError, match="has 2 datasets"):
        export_table(store, tmp_path / "t.parquet")


def test_tables_of_another_model_are_audited_with_that_model(tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    real = rng.standard_normal((400, 512)).astype(np.float32)
    syn = np.concatenate([real[:5] + 0.05 * rng.standard_normal((5, 512)).astype(np.float32),
                          rng.standard_normal((45, 512)).astype(np.float32)])

    def write(path: Path, vectors: np.ndarray, ids: list, model: str | None) -> Path:
        table = pa.table({"path": [f"{path.stem}/{i}.png" for i in range(len(vectors))], "identity": ids,
                          "vector": pa.FixedSizeListArray.from_arrays(pa.array(vectors.ravel()), vectors.shape[1])})
        pq.write_table(table.replace_schema_metadata({"model": model}) if model else table, path)
        return path

    r = write(tmp_path / "real.parquet", real, [f"p{i // 4}" for i in range(400)], "arcface-test")
    s = write(tmp_path / "syn.parquet", syn, [None] * 50, None)
    result = idleak("audit", "-s", s, "-r", r, "-o", tmp_path / "out", "--cache", tmp_path / "c")
    assert result.returncode in (0, 1), result.stderr
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["model"] == "arcface-test" and summary["n_flagged"] >= 5
    other = write(tmp_path / "other.parquet", syn, [None] * 50, "adaface")
    result = idleak("audit", "-s", other, "-r", r, "-o", tmp_path / "o2")
    assert result.returncode == 2 and "different models" in result.stderr
    small = write(tmp_path / "small.parquet", syn[:, :128].copy(), [None] * 50, None)
    result = idleak("audit", "-s", small, "-r", r, "-o", tmp_path / "o3")
    assert result.returncode == 2 and "different dimensions" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
