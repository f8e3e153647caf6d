"""The ONNX backend with small models the tests build: loading, preprocessing, alignment, batching."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from typer.testing import CliRunner

from idleak.cli import app
from idleak.errors import ModelError
from idleak.faces import load_embedder, parse_model
from idleak.faces.align import ARCFACE_TEMPLATE, align_arcface, similarity_transform
from idleak.images import load_rgb

SIZE = 112


def save(model: onnx.ModelProto, path: Path) -> str:
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return str(path)


#: The channel means are repeated to give a 16+-dimensional embedding, as models must (issue 9).
REPEAT = 6


def channel_mean_model(path: Path, batch: int | str = "N") -> str:
    """Output = per-channel mean of the input (repeated): shows exactly what preprocessing fed the model."""
    x = helper.make_tensor_value_info("input", TensorProto.FLOAT, [batch, 3, SIZE, SIZE])
    y = helper.make_tensor_value_info("embedding", TensorProto.FLOAT, [batch, 3 * REPEAT])
    nodes = [helper.make_node("ReduceMean", ["input"], ["means"], axes=[2, 3], keepdims=0),
             helper.make_node("Tile", ["means", "repeats"], ["embedding"])]
    repeats = numpy_helper.from_array(np.array([1, REPEAT], np.int64), "repeats")
    graph = helper.make_graph(nodes, "channel_mean", [x], [y], initializer=[repeats])
    return save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), path)


def projection_model(path: Path, batch: int | str = "N", dim: int = 32) -> str:
    """Flatten + a fixed random projection to ``dim``: an embedding that depends on every pixel."""
    weights = np.random.default_rng(0).standard_normal((3 * SIZE * SIZE, dim)).astype(np.float32) / 100
    x = helper.make_tensor_value_info("input", TensorProto.FLOAT, [batch, 3, SIZE, SIZE])
    y = helper.make_tensor_value_info("embedding", TensorProto.FLOAT, [batch, dim])
    nodes = [helper.make_node("Flatten", ["input"], ["flat"], axis=1), helper.make_node("MatMul", ["flat", "W"], ["embedding"])]
    graph = helper.make_graph(nodes, "projection", [x], [y], initializer=[numpy_helper.from_array(weights, "W")])
    return save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), path)


def constant_crop(rgb: tuple[int, int, int]) -> np.ndarray:
    return np.tile(np.array(rgb, np.uint8), (SIZE, SIZE, 1))


def unit(v) -> np.ndarray:
    v = np.asarray(v, np.float64)
    return v / np.linalg.norm(v)


def test_preprocessing_normalisation_and_channel_order(tmp_path: Path) -> None:
    path = channel_mean_model(tmp_path / "mean.onnx")
    crop = constant_crop((200, 100, 50))
    rgb = load_embedder(parse_model(f"onnx:{path}")).embed_aligned([crop])[0][:3] * np.sqrt(REPEAT)
    np.testing.assert_allclose(rgb, unit([(200 - 127.5) / 127.5, (100 - 127.5) / 127.5, (50 - 127.5) / 127.5]), atol=1e-5)
    bgr = load_embedder(parse_model(f"onnx:{path}", bgr=True)).embed_aligned([crop])[0][:3] * np.sqrt(REPEAT)
    np.testing.assert_allclose(bgr, rgb[::-1], atol=1e-5)
    scaled = load_embedder(parse_model(f"onnx:{path}", mean=0.0, std=255.0)).embed_aligned([crop])[0][:3] * np.sqrt(REPEAT)
    np.testing.assert_allclose(scaled, unit([200, 100, 50]), atol=1e-5)


def test_model_id_depends_on_file_and_preprocessing(tmp_path: Path) -> None:
    a = load_embedder(parse_model(f"onnx:{channel_mean_model(tmp_path / 'a.onnx')}"))
    b = load_embedder(parse_model(f"onnx:{projection_model(tmp_path / 'b.onnx')}"))
    a_bgr = load_embedder(parse_model(f"onnx:{tmp_path / 'a.onnx'}", bgr=True))
    assert len({a.model_id, b.model_id, a_bgr.model_id}) == 3
    assert b.dim == 32 and a.dim == 3 * REPEAT


def test_batches_give_the_same_vectors_as_single_images(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    crops = [rng.integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8) for _ in range(10)]
    dynamic = projection_model(tmp_path / "dyn.onnx")
    one = load_embedder(parse_model(f"onnx:{dynamic}", batch_size=1)).embed_aligned(crops)
    three = load_embedder(parse_model(f"onnx:{dynamic}", batch_size=3)).embed_aligned(crops)
    fixed = load_embedder(parse_model(f"onnx:{projection_model(tmp_path / 'fixed.onnx', batch=4)}")).embed_aligned(crops)
    np.testing.assert_allclose(one, three, atol=1e-5)
    np.testing.assert_allclose(one, fixed, atol=1e-5)  # a fixed batch of 4 is padded for the last 2


def test_similarity_transform_recovers_a_known_similarity() -> None:
    angle, scale, shift = 0.3, 1.7, np.array([12.0, -5.0])
    rot = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    src = (ARCFACE_TEMPLATE - shift) @ np.linalg.inv(scale * rot).T
    matrix = similarity_transform(src, ARCFACE_TEMPLATE)
    mapped = src @ matrix[:, :2].T + matrix[:, 2]
    np.testing.assert_allclose(mapped, ARCFACE_TEMPLATE, atol=1e-3)


def test_detected_faces_are_aligned_to_the_arcface_template(tmp_path: Path, faces_root: Path) -> None:
    from idleak.faces import detect as det

    embedder = load_embedder(parse_model(f"onnx:{projection_model(tmp_path / 'p.onnx')}"))
    photo = load_rgb(sorted((faces_root / "fr" / "obama").glob("*"))[0])
    faces = embedder.analyze([photo])[0]
    assert len(faces) == 1 and faces[0].vector.shape == (32,)
    crop = align_arcface(photo, faces[0].landmarks, SIZE)
    found = det.detect(crop)
    assert found, "the aligned crop should still contain a detectable face"
    points = det.five_points_from_68(det.points_of(det.shape_predictor(68)(crop, found[0][0])))
    eye_error = np.linalg.norm(points[:2] - ARCFACE_TEMPLATE[:2], axis=1)
    assert eye_error.max() < 6.0


def test_bad_model_files_are_refused(tmp_path: Path) -> None:
    garbage = tmp_path / "garbage.onnx"
    garbage.write_bytes(b"this is not a model")
    with pytest.raises(ModelError, match="not a usable ONNX model"):
        load_embedder(parse_model(f"onnx:{garbage}"))
    x = helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 10])
    y = helper.make_tensor_value_info("out", TensorProto.FLOAT, ["N", 10])
    flat = save(helper.make_model(helper.make_graph([helper.make_node("Identity", ["input"], ["out"])], "g", [x], [y]),
                                  opset_imports=[helper.make_opsetid("", 13)]), tmp_path / "flat.onnx")
    with pytest.raises(ModelError, match="expected an input of shape"):
        load_embedder(parse_model(f"onnx:{flat}"))
    result = CliRunner().invoke(app, ["audit", "-s", str(tmp_path), "-r", str(tmp_path), "-o", str(tmp_path / "o"),
                                      "--model", f"onnx:{garbage}"])
    assert result.exit_code == 2 and "not a usable ONNX model" in result.output


def test_onnx_audit_end_to_end_and_store_tied_to_model(tmp_path: Path, faces_root: Path) -> None:
    model = projection_model(tmp_path / "p.onnx")
    runner = CliRunner()
    johns = faces_root / "johns"
    out = tmp_path / "out"
    result = runner.invoke(app, ["audit", "-s", str(johns / "John_Simm"), "-r", str(johns), "-o", str(out),
                                 "--model", f"onnx:{model}", "--cache", str(tmp_path / "cache"), "--aligned", "-j", "1"])
    assert result.exit_code == 0, result.output
    summary = json.loads((out / "summary.json").read_text())
    assert summary["model"].startswith("onnx:") and summary["method"] == "leave_one_identity_out"
    # johns holds one photo twice (counted once); SYN's 11 files are REAL's own: identical files, not faces to test
    assert summary["n_real_faces"] == 54 and summary["excluded"]["duplicate"] == 1
    assert len(summary["identical_files"]) == 11 and summary["verdict"] == "leak"
    store = tmp_path / "store"
    assert runner.invoke(app, ["embed", str(johns / "John_Simm"), "--store", str(store), "--model", f"onnx:{model}",
                               "--aligned", "-j", "1"]).exit_code == 0
    mixed = runner.invoke(app, ["embed", str(johns / "John_Simm"), "--store", str(store), "-j", "1"])
    assert mixed.exit_code == 2 and "holds embeddings of model" in mixed.output
