"""dlib's face ResNet in torch (``idleak invert --model dlib``): faithful to dlib, split points, refusals."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from typer.testing import CliRunner  # noqa: E402

from idleak.images import load_rgb  # noqa: E402


def _chips(faces_root: Path) -> list[np.ndarray]:
    from idleak.faces.dlib_chips import face_chips

    paths = [faces_root / "orl" / "s1" / "1.pgm", faces_root / "johns" / sorted(p.name for p in
                                                                               (faces_root / "johns").iterdir())[0]]
    paths = [next(p.glob("*")) if p.is_dir() else p for p in paths]
    paths += sorted((faces_root / "lfw").glob("*/*.jpg"))[:2]
    return face_chips([load_rgb(str(p)) for p in paths])


def test_dlib_target_matches_dlib_descriptor_and_splits(faces_root: Path) -> None:
    from idleak.attacks.dlib_target import DLIB_LAYERS, dlib_resnet
    from idleak.attacks.split import SplitModel
    from idleak.faces.dlib_chips import dlib_descriptors

    chips = _chips(faces_root)
    assert len(chips) == 4 and all(c.shape == (150, 150, 3) and c.dtype == np.uint8 for c in chips)
    model = dlib_resnet()
    x = torch.from_numpy(np.stack(chips).transpose(0, 3, 1, 2).astype(np.float32) / 255.0)
    with torch.no_grad():
        ours = model(x).numpy()
    theirs = dlib_descriptors(chips)
    cosine = np.sum(ours * theirs, 1) / np.linalg.norm(ours, axis=1) / np.linalg.norm(theirs, axis=1)
    assert np.all(cosine >= 0.999), cosine
    assert np.allclose(np.linalg.norm(ours, axis=1), np.linalg.norm(theirs, axis=1), rtol=1e-3)
    # different people get different descriptors (not a constant network)
    assert float(cosine_matrix(ours)[0, 2]) < 0.99
    split = SplitModel.create(model, list(DLIB_LAYERS) + ["stage2.1"])
    shapes = {name: point.feature_shape for name, point in split.points.items()}
    assert shapes == {"stem": (32, 35, 35), "stage1": (32, 35, 35), "stage2.1": (64, 17, 17),
                      "stage2": (64, 17, 17), "stage3": (128, 8, 8), "stage4": (256, 4, 4), "stage5": (256, 2, 2)}
    depths = [point.depth for point in split.points.values()]
    assert depths == sorted(depths) and len(set(depths)) == len(depths) and depths[-1] < split.n_leaves
    assert torch.allclose(split.features(x[:1], "stage1"), model.stage1(model.stem((x[:1] * 255 - model.mean_rgb) / 256)))


def cosine_matrix(vectors: np.ndarray) -> np.ndarray:
    unit = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    return unit @ unit.T


def test_cli_dlib_refuses_datafree_and_the_embedding(faces_root: Path, tmp_path: Path) -> None:
    from idleak.cli import app

    orl = str(faces_root / "orl")
    base = ["invert", "--model", "dlib", "--aux", orl, "--private", orl, "--out", str(tmp_path / "o")]
    result = CliRunner().invoke(app, base + ["--layers", "stem", "--attack", "datafree"])
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert result.exit_code == 2 and len(lines) == 1, result.output
    assert "folds BatchNorm into affine layers" in lines[0] and "datafree" in lines[0]
    result = CliRunner().invoke(app, base + ["--layers", "stem,embedding"])
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert result.exit_code == 2 and len(lines) == 1, result.output
    assert "--layers embedding" in lines[0] and "circular" in lines[0]
    assert not (tmp_path / "o" / "summary.json").exists()


def test_cli_help_lists_the_dlib_split_points() -> None:
    from idleak.attacks.dlib_target import DLIB_LAYERS
    from idleak.cli import app

    result = CliRunner().invoke(app, ["invert", "--help"], terminal_width=200)
    text = re.sub(r"[\s│]+", " ", result.output)
    assert result.exit_code == 0
    assert "'dlib'" in text and ("split points " + ", ".join(DLIB_LAYERS)) in text
