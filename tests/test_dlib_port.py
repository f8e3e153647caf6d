"""dlib's face ResNet read from its .dat file and run as ONNX: format, faithfulness, pipeline, devices, detectors."""

from __future__ import annotations

from pathlib import Path

import dlib
import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from typer.testing import CliRunner

from conftest import damaged_copies
from idleak.cli import app
from idleak.embedding import embed_records
from idleak.errors import ModelError
from idleak.faces import detect as det
from idleak.faces import load_embedder, parse_model
from idleak.faces.dlib_backend import CHIP_PADDING, CHIP_SIZE, RESNET_FILE, DlibEmbedder
from idleak.faces.dlib_format import read_resnet
from idleak.faces.dlib_onnx import cached_onnx
from idleak.images import load_rgb
from idleak.sources import open_source
from idleak.store import EmbeddingStore

RESNET = Path(det.model_file(RESNET_FILE))


@pytest.fixture(scope="module")
def net():
    return read_resnet(RESNET)


@pytest.fixture(scope="module")
def port(tmp_path_factory: pytest.TempPathFactory) -> DlibEmbedder:
    return DlibEmbedder(runtime="onnx", cache_root=str(tmp_path_factory.mktemp("models")))


@pytest.fixture(scope="module")
def own() -> DlibEmbedder:
    return DlibEmbedder(runtime="dlib")


def test_format_gives_the_resnet_layer_by_layer(net) -> None:
    kinds = [layer.kind for layer in net.layers]
    assert kinds.count("conv") == 29 and kinds.count("add") == 14 and kinds[-1] == "fc"
    assert net.input_size == 150 and np.allclose(net.mean_rgb, (122.782, 117.001, 104.298), atol=1e-3)
    first = net.layer("conv1")
    assert first.params["weight"].shape == (32, 3, 7, 7) and first.params["stride"] == (2, 2)
    assert net.layer(net.output).params["weight"].shape == (256, 128)
    names = {layer.name for layer in net.layers}
    for layer in net.layers:  # every input is an earlier layer
        assert all(name in names for name in layer.inputs)
    downs = [layer for layer in net.layers if layer.kind == "add" and net.layer(layer.inputs[0]).kind == "avg_pool"]
    assert len(downs) == 4  # the four stride-2 blocks add an avg-pooled shortcut


def _copy_with(tmp_path: Path, name: str, data: bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


def test_bad_dat_files_are_one_line_model_errors(tmp_path: Path) -> None:
    data = RESNET.read_bytes()
    for name, content in damaged_copies(data, 300).items():
        path = _copy_with(tmp_path, name, content)
        with pytest.raises(ModelError) as err:
            read_resnet(path)
        assert str(path) in str(err.value) and "\n" not in str(err.value), name
    for other in ("mmod_human_face_detector.dat", "shape_predictor_5_face_landmarks.dat"):
        with pytest.raises(ModelError, match="not a readable dlib_face_recognition_resnet_model_v1"):
            read_resnet(det.model_file(other))
    with pytest.raises(ModelError, match="cannot read"):
        read_resnet(tmp_path / "missing.dat")


def _chips(faces_root: Path, count: int) -> list[np.ndarray]:
    predictor = det.shape_predictor(5)
    photos = sorted((faces_root / "fr").rglob("*.jpg")) + sorted((faces_root / "orl").rglob("1.pgm"))[:8]
    chips = []
    for photo in photos:
        image = load_rgb(str(photo))
        for rect, _ in det.detect(image)[:1]:
            chips.append(np.asarray(dlib.get_face_chip(image, predictor(image, rect), CHIP_SIZE, CHIP_PADDING)))
        if len(chips) == count:
            break
    return chips


def test_port_matches_dlib_on_real_faces(faces_root: Path, port: DlibEmbedder, own: DlibEmbedder) -> None:
    chips = _chips(faces_root, 16)
    assert len(chips) == 16
    ours = np.stack(port.embed_chips(chips))
    theirs = np.stack(own.embed_chips(chips))
    cosine = (ours * theirs).sum(axis=1)
    assert cosine.min() >= 0.9999, cosine.min()
    assert (theirs @ theirs.T)[np.triu_indices(16, 1)].max() < 0.99  # different faces, different vectors
    assert port.model_id == own.model_id == "dlib_face_recognition_resnet_model_v1/sp5/hog/v2"


def test_graph_is_cached_by_file_hash(tmp_path: Path) -> None:
    first = cached_onnx(RESNET, tmp_path)
    stamp = first.stat().st_mtime_ns
    assert cached_onnx(RESNET, tmp_path) == first and first.stat().st_mtime_ns == stamp
    onnx.checker.check_model(str(first))
    with pytest.raises(ModelError, match="not a readable"):
        cached_onnx(_copy_with(tmp_path, "bad.dat", RESNET.read_bytes()[:1000]), tmp_path)


def test_batched_pipeline_matches_dlib_runtime(tmp_path: Path, faces_root: Path, port: DlibEmbedder,
                                               own: DlibEmbedder) -> None:
    source = open_source(faces_root / "fr", "input")
    vectors = {}
    for name, embedder in (("onnx", port), ("dlib", own)):
        store = EmbeddingStore.create(tmp_path / name, embedder.model_id, 128)
        spec = parse_model("dlib", runtime=name)
        stats = embed_records(source.records, store, spec, workers=2, chunk_size=2, embedder=embedder)
        assert stats.n_new == len(source.records) and not stats.reasons.get("model_error")
        rows = EmbeddingStore.open(tmp_path / name, embedder.model_id).rows()
        vectors[name] = {(h, f): v for h, f, v, r in zip(rows.hash, rows.face, rows.vectors, rows.reason) if not r}
    assert vectors["onnx"].keys() == vectors["dlib"].keys() and len(vectors["onnx"]) >= 10
    worst = min(float(vectors["onnx"][k] @ vectors["dlib"][k]) for k in vectors["onnx"])
    assert worst >= 0.9999


def _odd_batch_model(path: Path) -> str:
    """A 112x112 model that fails on odd batch sizes (a stand-in for a batch the device cannot run)."""
    x = helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 3, 112, 112])
    y = helper.make_tensor_value_info("embedding", TensorProto.FLOAT, ["N", 32])
    pair, back = np.array([-1, 2 * 3 * 112 * 112], np.int64), np.array([-1, 32, 1176], np.int64)
    nodes = [helper.make_node("Reshape", ["input", "pair"], ["pairs"]),  # needs an even batch
             helper.make_node("Reshape", ["pairs", "back"], ["chunks"]),
             helper.make_node("ReduceMean", ["chunks"], ["embedding"], axes=[2], keepdims=0)]
    graph = helper.make_graph(nodes, "odd", [x], [y], initializer=[numpy_helper.from_array(pair, "pair"),
                                                                    numpy_helper.from_array(back, "back")])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), str(path))
    return str(path)


def test_failed_batch_shrinks_and_only_the_failing_face_is_lost(tmp_path: Path) -> None:
    embedder = load_embedder(parse_model(f"onnx:{_odd_batch_model(tmp_path / 'odd.onnx')}", batch_size=3))
    rng = np.random.default_rng(0)
    out = embedder.embed_chips([rng.integers(0, 256, (112, 112, 3), dtype=np.uint8) for _ in range(3)])
    assert isinstance(out[0], str) and all(isinstance(v, np.ndarray) and v.shape == (32,) for v in out[1:])


def _model(path: Path, nodes: list, out_shape: list, inits: list | None = None) -> str:
    x = helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 3, 112, 112])
    y = helper.make_tensor_value_info("out", TensorProto.FLOAT, out_shape)
    graph = helper.make_graph(nodes, "m", [x], [y], initializer=inits or [])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), str(path))
    return str(path)


def test_degenerate_onnx_models_are_refused_at_load(tmp_path: Path) -> None:
    image_out = _model(tmp_path / "image.onnx", [helper.make_node("Identity", ["input"], ["out"])], ["N", 3, 112, 112])
    with pytest.raises(ModelError, match=r"output must have shape \(N, D\)"):
        load_embedder(parse_model(f"onnx:{image_out}"))
    small = _model(tmp_path / "small.onnx", [helper.make_node("ReduceMean", ["input"], ["out"], axes=[2, 3], keepdims=0)],
                   ["N", 3])
    with pytest.raises(ModelError, match="at least 16"):
        load_embedder(parse_model(f"onnx:{small}"))
    zero = numpy_helper.from_array(np.zeros((3 * 112 * 112, 64), np.float32), "W")
    bias = numpy_helper.from_array(np.ones(64, np.float32), "B")
    constant = _model(tmp_path / "constant.onnx", [helper.make_node("Flatten", ["input"], ["flat"]),
                                                   helper.make_node("Gemm", ["flat", "W", "B"], ["out"])],
                      ["N", 64], [zero, bias])
    with pytest.raises(ModelError, match="same embedding for different faces"):
        load_embedder(parse_model(f"onnx:{constant}"))
    result = CliRunner().invoke(app, ["embed", str(tmp_path), "--store", str(tmp_path / "s"), "--model", f"onnx:{constant}"])
    assert result.exit_code == 2 and "degenerate" in result.output


def test_devices(tmp_path: Path) -> None:
    import onnxruntime as ort

    assert "CUDAExecutionProvider" not in ort.get_available_providers(), "this test expects a machine without CUDA"
    with pytest.raises(ModelError, match="--device cuda: onnxruntime has no CUDA provider"):
        DlibEmbedder(device="cuda", cache_root=str(tmp_path))
    auto = DlibEmbedder(device="auto", cache_root=str(tmp_path))
    assert "running on the CPU" in auto.device_note and auto._session.device == "cpu"
    with pytest.raises(ModelError, match="--device must be one of"):
        DlibEmbedder(device="tpu", cache_root=str(tmp_path))
    result = CliRunner().invoke(app, ["embed", str(tmp_path), "--store", str(tmp_path / "s"), "--device", "cuda"])
    assert result.exit_code == 2 and "no CUDA provider" in result.output


def test_detectors_and_runtimes_options(faces_root: Path, tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="--detector must be one of"):
        DlibEmbedder(detector="yolo", cache_root=str(tmp_path))
    with pytest.raises(ModelError, match="--runtime must be"):
        DlibEmbedder(runtime="torch", cache_root=str(tmp_path))
    photo = load_rgb(str(sorted((faces_root / "orl" / "s1").glob("*.pgm"))[0]))
    cnn = det.detect(photo, "cnn")
    assert len(cnn) == 1
    hog = det.detect(photo, "hog")
    auto = det.detect(photo, "auto")
    assert auto == hog if hog else auto == cnn
    blank = np.full((200, 200, 3), 128, np.uint8)
    assert det.detect(blank, "auto") == []
    cnn_model = DlibEmbedder(detector="cnn", cache_root=str(tmp_path))
    assert cnn_model.model_id == "dlib_face_recognition_resnet_model_v1/sp5/cnn/v2"


def test_runtimes_share_one_store(tmp_path: Path, faces_root: Path) -> None:
    folder, store = faces_root / "johns" / "John_Simm", tmp_path / "store"
    runner = CliRunner()
    first = runner.invoke(app, ["embed", str(folder), "--store", str(store), "--runtime", "dlib", "--aligned", "-j", "1"])
    assert first.exit_code == 0, first.output
    assert "embedded 11 new images" in first.output
    second = runner.invoke(app, ["embed", str(folder), "--store", str(store), "--aligned", "-j", "1"])
    assert second.exit_code == 0 and "0 new images, 11 already in the store" in second.output, second.output
    bad = runner.invoke(app, ["embed", str(folder), "--store", str(tmp_path / "s2"), "--runtime", "torch"])
    assert bad.exit_code == 2 and "--runtime must be" in bad.output


def test_pipeline_keeps_every_image_when_a_batch_fails(tmp_path: Path, faces_root: Path) -> None:
    spec = parse_model(f"onnx:{_odd_batch_model(tmp_path / 'odd.onnx')}", batch_size=3)
    embedder = load_embedder(spec)
    records = open_source(faces_root / "johns" / "John_Simm", "input").records[:6]
    store = EmbeddingStore.create(tmp_path / "store", embedder.model_id, embedder.dim)
    stats = embed_records(records, store, spec, aligned=True, workers=1, embedder=embedder)
    # The first batch of 3 fails, is split into 1 + 2: the single face fails (model_error), the pair
    # runs; later batches start at the smaller size, where this model fails every face.
    assert stats.n_new == 6 and stats.reasons["model_error"] == 4
    rows = EmbeddingStore.open(tmp_path / "store", embedder.model_id).rows()
    assert len(rows.hash) == 6 and sum(1 for r in rows.reason if not r) == 2
    assert all("Reshape" in d or "reshape" in d for d, r in zip(rows.detail, rows.reason) if r == "model_error")
