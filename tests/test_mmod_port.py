"""dlib's MMOD CNN face detector read from its .dat and run as ONNX (``dlib_mmod``) against dlib's own."""

from __future__ import annotations

from pathlib import Path

import dlib
import numpy as np
import pytest

from conftest import damaged_copies
from idleak.errors import ModelError
from idleak.faces import detect as det
from idleak.faces.dlib_backend import RESNET_FILE, DlibEmbedder
from idleak.faces.dlib_format import read_mmod
from idleak.faces.dlib_mmod import MmodDetector, pyramid_rects, resize_bilinear, upsample_rgb
from idleak.images import load_rgb

MMOD = Path(det.model_file(det.MMOD_FILE))


@pytest.fixture(scope="module")
def port(tmp_path_factory: pytest.TempPathFactory) -> MmodDetector:
    return MmodDetector(MMOD, tmp_path_factory.mktemp("models"))


def _box(rect: dlib.rectangle) -> tuple[int, int, int, int]:
    return (rect.left(), rect.top(), rect.right(), rect.bottom())


def _iou(a, b) -> float:
    w = min(a[2], b[2]) - max(a[0], b[0]) + 1
    h = min(a[3], b[3]) - max(a[1], b[1]) + 1
    inner = max(w, 0) * max(h, 0)
    area = lambda r: (r[2] - r[0] + 1) * (r[3] - r[1] + 1)  # noqa: E731
    return inner / (area(a) + area(b) - inner)


def _assert_same(port_found, own_found) -> None:
    assert len(port_found) == len(own_found)
    for (box, score), (rect, confidence) in zip(port_found, own_found):
        assert _iou(box, _box(rect)) >= 0.98
        assert abs(score - confidence) < 1e-3


def test_the_file_reads_as_dlib_describes_the_network() -> None:
    net = read_mmod(MMOD)
    convs = [layer for layer in net.layers if layer.kind == "conv"]
    assert [c.params["weight"].shape[0] for c in convs] == [16, 32, 32, 45, 45, 45, 1]
    assert [c.params["stride"] for c in convs] == [(2, 2)] * 3 + [(1, 1)] * 4
    assert [layer.kind for layer in net.layers].count("affine") == 6
    assert net.loss["windows"] == ((80, 80),) and net.loss["nms"][1] == 1.0 and 0 < net.loss["nms"][0] < 1
    first = net.layers[0].params
    assert (first["pyramid_padding"], first["pyramid_outer_padding"]) == (10, 11)
    assert np.allclose(net.mean_rgb, (122.782, 117.001, 104.298), atol=1e-3)


def test_resizing_is_dlibs_bilinear() -> None:
    rng = np.random.default_rng(0)
    for rows, cols, out_rows, out_cols in [(112, 92, 93, 76), (200, 300, 166, 250), (50, 37, 101, 77), (112, 92, 225, 186)]:
        plane = rng.random((rows, cols), dtype=np.float32) - 0.5
        assert np.array_equal(resize_bilinear(plane[None], out_rows, out_cols)[0],
                              dlib.resize_image(plane, out_rows, out_cols))
        rgb = rng.integers(0, 256, (rows, cols, 3), dtype=np.uint8)
        ours = resize_bilinear(np.ascontiguousarray(rgb.transpose(2, 0, 1)), out_rows, out_cols).transpose(1, 2, 0)
        assert np.array_equal(ours, dlib.resize_image(rgb, out_rows, out_cols))
    assert upsample_rgb(np.zeros((112, 92, 3), np.uint8)).shape == (225, 186, 3)  # pyramid_down<2>::rect_up of the image rectangle


def test_pyramid_tiles_fit_the_canvas_without_overlap() -> None:
    rects, rows, cols = pyramid_rects(112, 92, 10, 11)
    assert rects[0] == (11, 11, 102, 122) and cols == 92 + 22
    for i, a in enumerate(rects):
        assert 0 <= a[0] <= a[2] < cols and 0 <= a[1] <= a[3] < rows
        for b in rects[i + 1:]:
            assert min(a[2], b[2]) < max(a[0], b[0]) or min(a[3], b[3]) < max(a[1], b[1])
    sizes = [(r[2] - r[0] + 1, r[3] - r[1] + 1) for r in rects]
    assert all(h2 == int(h1 * 5 / 6) for (_, h1), (_, h2) in zip(sizes, sizes[1:]))


def test_port_finds_dlibs_boxes_on_real_photos(port: MmodDetector, faces_root: Path) -> None:
    own = det.dlib_cnn_detector()
    two_faces = load_rgb(faces_root / "lfw" / "Sandy_Smith" / "Sandy_Smith_0001.jpg")  # two faces at upsample 0
    found = port(two_faces, 0)
    assert len(found) == 2 and found[0][1] > found[1][1]
    _assert_same(found, [(d.rect, d.confidence) for d in own(two_faces, 0)])
    photos = [faces_root / "orl" / "s1" / "1.pgm", faces_root / "orl" / "s7" / "4.pgm",
              sorted((faces_root / "johns" / "John_Savage").glob("*.jpg"))[0]]
    for path in photos:
        image = load_rgb(path)
        for upsample in (0, 1):
            _assert_same(port(image, upsample), [(d.rect, d.confidence) for d in own(image, upsample)])
    batch = [load_rgb(path) for path in photos[:2]] + [two_faces[:112, :92], np.zeros((8, 8), np.uint8)]
    batched, single = port.detect_many(batch, 1, batch_size=2), [port(image, 1) for image in batch]  # 92x112: one call
    assert [[box for box, _ in found] for found in batched] == [[box for box, _ in found] for found in single]
    assert np.allclose([s for found in batched for _, s in found], [s for found in single for _, s in found], atol=1e-5)
    assert port(np.full((120, 120, 3), 128, np.uint8), 1) == []
    assert port(np.zeros((8, 8), np.uint8), 0) == []  # a gray image, too small for the network


def test_runtime_flag_chooses_the_detector(faces_root: Path, tmp_path: Path) -> None:
    photo = load_rgb(faces_root / "orl" / "s3" / "2.pgm")
    ported, own = det.detect(photo, "cnn", "onnx"), det.detect(photo, "cnn", "dlib")
    assert len(ported) == len(own) == 1
    assert _iou(_box(ported[0][0]), _box(own[0][0])) >= 0.98 and ported[0][1] != own[0][1]  # float noise differs
    model = DlibEmbedder(detector="cnn", cache_root=str(tmp_path))
    assert model.model_id == "dlib_face_recognition_resnet_model_v1/sp5/cnn/v2"  # same boxes: same store
    assert len(model.prepare(photo)) == 1
    with pytest.raises(ModelError, match="--runtime must be"):
        det.detect(photo, "cnn", "torch")


def test_bad_detector_files_are_one_line_errors(tmp_path: Path, port: MmodDetector) -> None:
    data = MMOD.read_bytes()
    for name, content in damaged_copies(data, 40).items():  # 40: inside the loss layer's options
        path = tmp_path / name
        path.write_bytes(content)
        for load in (read_mmod, lambda p: MmodDetector(p, tmp_path)):
            with pytest.raises(ModelError) as err:
                load(path)
            assert str(path) in str(err.value) and "\n" not in str(err.value), name
    for other in (RESNET_FILE, "shape_predictor_5_face_landmarks.dat"):  # dlib files of other architectures
        with pytest.raises(ModelError, match="not a readable mmod_human_face_detector file") as err:
            MmodDetector(det.model_file(other), tmp_path)
        assert other in str(err.value) and "\n" not in str(err.value)
    with pytest.raises(ModelError, match="missing.dat: cannot read dlib model"):
        MmodDetector(tmp_path / "missing.dat", tmp_path)
    with pytest.raises(ModelError, match="8-bit gray or RGB"):
        port(np.zeros((50, 50, 3), np.float32))
