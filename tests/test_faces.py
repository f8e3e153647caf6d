"""The dlib pipeline on real photos: detection on small images, many faces, no face, aligned crops."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from idleak.faces import load_embedder, parse_model
from idleak.faces.detect import upsample_for
from idleak.images import load_rgb


@pytest.fixture(scope="module")
def dlib_model():
    return load_embedder("dlib")


def test_upsampling_follows_image_size() -> None:
    assert upsample_for(112, 92) == 2
    assert upsample_for(240, 320) == 1
    assert upsample_for(1428, 2000) == 0


def test_small_orl_faces_are_found_and_embedded(dlib_model, faces_root: Path) -> None:
    images = [load_rgb(p) for p in sorted((faces_root / "orl" / "s1").glob("*.pgm"))]
    faces = dlib_model.analyze(images)
    found = [f for f in faces if f]
    assert len(found) >= 9
    vectors = np.stack([f[0].vector for f in found])
    assert vectors.shape[1] == 128
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    for face in found:
        left, top, right, bottom = face[0].box
        assert left < right and top < bottom
        assert 0 <= (left + right) / 2 <= 92 and 0 <= (top + bottom) / 2 <= 112  # boxes may overhang the frame
        assert face[0].landmarks.shape == (5, 2)


def test_genuine_pairs_are_closer_than_impostors(dlib_model, faces_root: Path) -> None:
    people = sorted((faces_root / "johns").iterdir())
    vectors, labels = [], []
    for person in people:
        for path in sorted(person.glob("*"))[:4]:
            faces = dlib_model.analyze([load_rgb(path)], aligned=True)[0]
            vectors.append(faces[0].vector)
            labels.append(person.name)
    v, lab = np.stack(vectors), np.array(labels)
    sims = v @ v.T
    same = lab[:, None] == lab[None, :]
    off_diag = ~np.eye(len(v), dtype=bool)
    assert sims[same & off_diag].mean() > sims[~same].mean() + 0.08


def test_no_face_and_many_faces(dlib_model, faces_root: Path) -> None:
    dogs, crowd, two = (load_rgb(faces_root / "misc" / n) for n in ("dogs.jpg", "bald_guys.jpg", "two_people.jpg"))
    result = dlib_model.analyze([dogs, crowd, two])
    assert result[0] == []
    assert len(result[1]) >= 5
    assert len(result[2]) == 2


def test_aligned_mode_embeds_a_blurry_crop_without_detection(dlib_model, faces_root: Path) -> None:
    crop = load_rgb(sorted((faces_root / "johns" / "John_Salley").glob("*"))[0])
    from PIL import Image

    tiny = np.asarray(Image.fromarray(crop).resize((40, 40)).resize((112, 112)))
    faces = dlib_model.analyze([tiny], aligned=True)[0]
    assert len(faces) == 1
    full = dlib_model.analyze([crop], aligned=True)[0][0]
    assert float(faces[0].vector @ full.vector) > 0.9


def test_unknown_model_spec_is_refused() -> None:
    from idleak.errors import ModelError

    with pytest.raises(ModelError, match="unknown --model"):
        parse_model("facenet")
    with pytest.raises(ModelError, match="not found"):
        load_embedder("onnx:/nonexistent/model.onnx")
