"""Test-time augmentation of the dlib model (``--tta flip|flip68``) on real photos."""

from __future__ import annotations

from pathlib import Path

import dlib
import numpy as np
import pytest
from typer.testing import CliRunner

from idleak.cli import app
from idleak.errors import ModelError
from idleak.faces import detect as det
from idleak.faces import load_embedder, parse_model
from idleak.faces.base import l2_normalize
from idleak.faces.dlib_backend import CHIP_PADDING, CHIP_SIZE, RESNET_FILE, DlibEmbedder
from idleak.images import load_rgb
from idleak.store import EmbeddingStore


@pytest.fixture(scope="module")
def photos(faces_root: Path) -> list[np.ndarray]:
    """Three LFW photos of two people (full photos: detection, landmarks, chips)."""
    lfw = faces_root / "lfw"
    names = ["Aaron_Peirsol/Aaron_Peirsol_0001.jpg", "Aaron_Peirsol/Aaron_Peirsol_0002.jpg",
             "AJ_Cook/AJ_Cook_0001.jpg"]
    return [load_rgb(str(lfw / name)) for name in names]


@pytest.fixture(scope="module")
def dlib_net() -> dlib.face_recognition_model_v1:
    return dlib.face_recognition_model_v1(det.model_file(RESNET_FILE))


def _raw(net: dlib.face_recognition_model_v1, chip: np.ndarray) -> np.ndarray:
    """dlib's own descriptor of one chip, unnormalised."""
    return np.asarray(net.compute_face_descriptor(np.ascontiguousarray(chip)), np.float32)


def test_flip_is_the_normalised_mean_of_the_chip_and_its_mirror(photos, dlib_net, tmp_path: Path) -> None:
    plain = DlibEmbedder(cache_root=str(tmp_path))
    flip = DlibEmbedder(tta="flip", cache_root=str(tmp_path))
    assert flip.model_id == "dlib_face_recognition_resnet_model_v1/sp5/hog/tta-flip/v2"
    for photo in photos:
        chips = plain.prepare(photo)
        assert len(chips) == 1 and chips[0].chip.shape == (CHIP_SIZE, CHIP_SIZE, 3)
        chip = chips[0].chip
        expected = l2_normalize(_raw(dlib_net, chip) + _raw(dlib_net, chip[:, ::-1]))
        vector = flip.analyze([photo])[0][0].vector
        assert float(vector @ expected) >= 0.9999  # the port against dlib's own network
        assert float(vector @ plain.analyze([photo])[0][0].vector) < 0.9995  # the mirror changes the vector


def test_flip68_adds_the_chip_aligned_on_68_landmarks(photos, dlib_net, tmp_path: Path) -> None:
    model = DlibEmbedder(tta="flip68", runtime="dlib", cache_root=str(tmp_path))
    predictor68 = det.shape_predictor(68)
    photo = photos[0]
    (face,) = model.prepare(photo)
    assert face.chip.shape == (2, CHIP_SIZE, CHIP_SIZE, 3)
    rect = det.detect(photo)[0][0]
    chip68 = np.asarray(dlib.get_face_chip(photo, predictor68(photo, rect), CHIP_SIZE, CHIP_PADDING), np.uint8)
    assert np.array_equal(face.chip[1], chip68)
    assert not np.array_equal(face.chip[0], face.chip[1])
    views = [face.chip[0], face.chip[1], face.chip[0][:, ::-1], face.chip[1][:, ::-1]]
    expected = l2_normalize(np.mean([_raw(dlib_net, v) for v in views], axis=0))
    (vector,) = model.embed_chips([face.chip])
    np.testing.assert_allclose(vector, expected, atol=1e-6)
    aligned = model.analyze([np.ascontiguousarray(face.chip[0])], aligned=True)[0]  # a chip as an aligned crop
    assert len(aligned) == 1 and np.isclose(np.linalg.norm(aligned[0].vector), 1.0)


def test_tta_has_its_own_store_and_bad_values_are_one_line_errors(faces_root: Path, tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="--tta must be one of none, flip, flip68"):
        DlibEmbedder(tta="jitter", cache_root=str(tmp_path))
    with pytest.raises(ModelError, match="--tta only applies to the built-in dlib model"):
        load_embedder(parse_model("onnx:arcface.onnx", tta="flip"))
    folder, store = faces_root / "johns" / "John_Simm", tmp_path / "store"
    runner = CliRunner()
    made = runner.invoke(app, ["embed", str(folder), "--store", str(store), "--aligned", "--tta", "flip", "-j", "1"])
    assert made.exit_code == 0 and "embedded 11 new images" in made.output, made.output
    assert EmbeddingStore.open(store).model_id == "dlib_face_recognition_resnet_model_v1/sp5/hog/tta-flip/v2"
    mixed = runner.invoke(app, ["embed", str(folder), "--store", str(store), "--aligned", "-j", "1"])
    assert mixed.exit_code == 2 and "tta-flip" in mixed.output, mixed.output
    bad = runner.invoke(app, ["embed", str(folder), "--store", str(tmp_path / "s2"), "--tta", "many"])
    assert bad.exit_code == 2 and "--tta must be one of" in bad.output, bad.output
