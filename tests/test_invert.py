"""Split-computing inversion (``idleak invert``): real training on ORL faces, real dlib embeddings, CPU only."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

torch = pytest.importorskip("torch")

from typer.testing import CliRunner  # noqa: E402

from idleak.attacks.inversion import AttackSettings  # noqa: E402
from idleak.jobs.invert import InvertSettings, ReferenceOptions, run_invert, run_reference  # noqa: E402
from idleak.sources import Record  # noqa: E402

#: datafree in the tests: images synthesised per split, gradient steps per batch
SYNTH = (64, 100)
KEYS = {"layer", "depth", "attack", "psnr", "ssim", "identity_similarity", "reid_top1", "reid_over_threshold"}


def _settings(epochs: int = 20, steps: int = 150) -> InvertSettings:
    return InvertSettings(attack=AttackSettings(epochs=epochs, steps=steps, class_steps=steps, synth_images=SYNTH[0],
                                                synth_steps=SYNTH[1]), threads=1, target_epochs=20)


def _row(summary: dict, layer: str, attack: str) -> dict:
    return next(r for r in summary["layers"] if r["layer"] == layer and r["attack"] == attack)


@pytest.fixture(scope="session")
def reference_run(tmp_path_factory: pytest.TempPathFactory, faces_root: Path, workspace) -> tuple[Path, dict]:
    """The reference target trained on ORL once, attacked at a shallow (block1) and a deep (fc) split by every
    attack (learned, optimize, datafree, class)."""
    out = tmp_path_factory.mktemp("invert-reference")
    summary = run_reference(faces_root / "orl", out, ReferenceOptions(layers=["block1", "fc"]),
                            settings=_settings(), workspace=workspace)
    return out, summary


def _manifest(path: Path, records: list[tuple[str, str]]) -> Path:
    path.write_text("path,identity\n" + "".join(f"{p},{i}\n" for p, i in records), encoding="utf-8")
    return path


# -- the reference target ---------------------------------------------------------------------------
@pytest.mark.slow
def test_reference_split_is_disjoint_and_target_learns(reference_run: tuple[Path, dict]) -> None:
    from idleak.attacks.reference_target import load_reference_target
    from idleak.attacks.split import load_images

    out, summary = reference_run
    split = json.loads((out / "split.json").read_text())
    ids = {role: {Path(p).parent.name for p in split[role]} for role in ("target_train", "private", "gallery", "aux")}
    assert set(split["target_identities"]) == ids["target_train"] == ids["private"] == ids["gallery"]
    assert not ids["aux"] & ids["target_train"]
    assert not set(split["private"]) & (set(split["target_train"]) | set(split["gallery"]) | set(split["aux"]))
    assert (len(split["target_identities"]), len(split["aux_identities"])) == (20, 20)
    assert (len(split["private"]), len(split["gallery"]), len(split["aux"])) == (40, 160, 200)
    # the saved target reloads and recognises held-out private faces
    model = load_reference_target(out / "target.pt")
    images, kept, _ = load_images([Record(p, Path(p).parent.name) for p in split["private"]], model.input_shape)
    with torch.no_grad():
        predicted = model(torch.from_numpy(images)).argmax(1).numpy()
    accuracy = np.mean([model.classes[k] == r.identity for k, r in zip(predicted, kept)])
    assert accuracy >= 0.8
    assert summary["reference"]["private_accuracy"] == pytest.approx(accuracy)


@pytest.mark.slow
def test_shallow_split_leaks_more_than_deep(reference_run: tuple[Path, dict]) -> None:
    _, summary = reference_run
    assert summary["analysis"] == "invert" and summary["mode"] == "reference"
    chance = summary["chance_reid"]
    assert chance == pytest.approx(1 / 20)
    for attack in ("learned", "optimize"):
        shallow, deep = _row(summary, "block1", attack), _row(summary, "fc", attack)
        assert KEYS <= set(shallow)
        assert shallow["depth"] < deep["depth"]
        assert shallow["psnr"] > deep["psnr"] + 5
        assert shallow["ssim"] > deep["ssim"] + 0.2
        assert shallow["identity_similarity"] > deep["identity_similarity"] + 0.03
        # re-identification of the shallow reconstructions: far above chance, with a tiny binomial p
        assert shallow["reid_top1"] >= max(0.6, 10 * chance)
        assert shallow["reid_p_value"] < 1e-10
        assert shallow["reid_top1"] > deep["reid_top1"] + 0.4
    # the learned shallow decoder beats the "mean face" baseline by a wide margin
    assert _row(summary, "block1", "learned")["psnr"] > summary["baseline"]["psnr"] + 8
    assert summary["verdict"] == "leak" and "block1" in summary["verdict_text"]


@pytest.mark.slow
def test_class_attack_reports_identification(reference_run: tuple[Path, dict]) -> None:
    _, summary = reference_run
    row = _row(summary, "output", "class")
    results = summary["class_attack"]
    assert len(results) == row["n_classes_attacked"] == 20
    assert row["identified"] == sum(r["identified"] for r in results)
    assert row["reid_top1"] == pytest.approx(row["identified"] / 20)
    assert all(r["identified"] == (r["identified_as"] == r["identity"]) for r in results)
    # the gradient ascent did its job on the classifier: it is confident about the recovered images
    assert np.median([r["class_probability"] for r in results]) > 0.5


# -- the data-free attack ---------------------------------------------------------------------------------
@pytest.mark.slow
def test_datafree_recovers_faces_at_block1_not_at_the_embedding(reference_run: tuple[Path, dict]) -> None:
    _, summary = reference_run
    shallow, deep = _row(summary, "block1", "datafree"), _row(summary, "fc", "datafree")
    assert KEYS <= set(shallow)
    assert shallow["bn_layers"] == ["block1.1"] and deep["bn_layers"] == ["block1.1", "block2.1", "block3.1"]
    assert shallow["n_synthetic"] == SYNTH[0]
    # no image at all, yet far better than the mean face and re-identifying far above chance
    baseline = summary["baseline"]
    assert shallow["psnr"] > baseline["psnr"] + 6 and shallow["ssim"] > baseline["ssim"] + 0.3
    assert shallow["identity_similarity"] > baseline["identity_similarity"]
    assert shallow["reid_top1"] >= 5 * summary["chance_reid"] and shallow["reid_p_value"] < 1e-6
    # within a few dB of the attacker who trains on other people's photos
    assert shallow["psnr"] > _row(summary, "block1", "learned")["psnr"] - 6
    # at the embedding the synthesised inputs teach little: generic faces, re-identification near chance
    assert deep["psnr"] < shallow["psnr"] - 5
    assert deep["reid_top1"] <= 4 * summary["chance_reid"]


@pytest.mark.slow
def test_bn_synthesis_reduces_the_statistic_mismatch(reference_run: tuple[Path, dict]) -> None:
    from idleak.attacks.datafree import bn_mismatch, synthesize
    from idleak.attacks.reference_target import load_reference_target
    from idleak.attacks.split import SplitModel, load_images

    out, _ = reference_run
    split = SplitModel.create(load_reference_target(out / "target.pt"), ["block3"])
    settings = AttackSettings(synth_images=16, synth_batch=16, synth_steps=60, seed=3)
    synthetic = synthesize(split, "block3", settings)
    noise = torch.rand((16, *split.input_shape), generator=torch.Generator().manual_seed(3))
    private = json.loads((out / "split.json").read_text())["private"]
    faces, _, _ = load_images([Record(p, None) for p in private[:16]], split.input_shape)
    with torch.no_grad():
        start, end = float(bn_mismatch(split, "block3", noise)), float(bn_mismatch(split, "block3", synthetic))
        real = float(bn_mismatch(split, "block3", torch.from_numpy(faces)))
    assert synthetic.shape == (16, *split.input_shape) and 0 <= synthetic.min() and synthetic.max() <= 1
    # the stored statistics describe faces, not noise; the synthesis closes most of the gap
    assert real < start / 5
    assert end < start / 10


def test_datafree_refuses_a_model_without_batchnorm(faces_root: Path, tmp_path: Path) -> None:
    from idleak.cli import app

    orl = str(faces_root / "orl")
    result = CliRunner().invoke(app, ["invert", "--model", "_invert_models:tiny_face_net", "--layers", "stem",
                                      "--attack", "datafree", "--aux", orl, "--private", orl,
                                      "--out", str(tmp_path / "o")])
    assert result.exit_code == 2
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and "BatchNorm" in lines[0] and "running_var" in lines[0] and "'stem'" in lines[0]
    assert not (tmp_path / "o" / "summary.json").exists()


@pytest.mark.slow
def test_outputs_and_report(reference_run: tuple[Path, dict], tmp_path: Path) -> None:
    from idleak.outputs import read_csv
    from idleak.report import rebuild

    out, summary = reference_run
    for name in ("grid_block1.png", "grid_fc.png", "grid_class.png", "depth.png"):
        with Image.open(out / name) as image:
            assert image.width > 300 and image.height > 100
    rows = read_csv(out / "images.csv")
    assert len(rows) == 6 * summary["n_private_images"]
    learned = [r for r in rows if r["layer"] == "block1" and r["attack"] == "learned"]
    assert np.mean([float(r["psnr"]) for r in learned]) == pytest.approx(_row(summary, "block1", "learned")["psnr"],
                                                                          abs=1e-3)
    on_disk = json.loads((out / "summary.json").read_text())
    assert on_disk["layers"] == json.loads(json.dumps(summary["layers"]))
    (out / "report.html").unlink()
    rebuild(out)
    html = (out / "report.html").read_text()
    assert "block1" in html and "Class attack" in html and html.count("data:image/png;base64,") >= 4


# -- a defence ------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_defense_lowers_reidentification(reference_run: tuple[Path, dict], tmp_path: Path, workspace) -> None:
    from idleak.attacks.reference_target import load_reference_target

    out, summary = reference_run
    split = json.loads((out / "split.json").read_text())

    def records(role: str) -> list[Record]:
        return [Record(p, Path(p).parent.name) for p in split[role]]

    defended = run_invert(load_reference_target(out / "target.pt"), ["block1"], records("aux"), records("private"),
                          tmp_path / "defended", attacks="learned", defense="_invert_models:strong_noise",
                          gallery=records("gallery"), settings=_settings(), workspace=workspace, report=False)
    plain, noisy = _row(summary, "block1", "learned"), _row(defended, "block1", "learned")
    assert defended["defense"] == "_invert_models:strong_noise"
    assert noisy["reid_top1"] <= plain["reid_top1"] - 0.3
    assert noisy["identity_similarity"] < plain["identity_similarity"]
    assert noisy["psnr"] < plain["psnr"]


# -- your own model: module:function through the CLI ------------------------------------------------------
@pytest.mark.slow
def test_cli_model_module_path_blockwise(faces_root: Path, tmp_path: Path, cache_dir: Path) -> None:
    from idleak.cli import app

    orl = faces_root / "orl"
    aux = _manifest(tmp_path / "aux.csv", [(str(orl / f"s{i}" / f"{k}.pgm"), f"s{i}")
                                           for i in range(21, 31) for k in range(1, 11)])
    private = _manifest(tmp_path / "private.csv", [(str(orl / f"s{i}" / f"{k}.pgm"), f"s{i}")
                                                   for i in range(31, 41) for k in range(1, 4)])
    out = tmp_path / "out"
    result = CliRunner().invoke(app, ["invert", "--model", "_invert_models:tiny_face_net",
                                      "--layers", "stem,stage1,stage2", "--aux", str(aux), "--private", str(private),
                                      "--attack", "learned", "--blockwise", "--epochs", "10", "--threads", "2",
                                      "--out", str(out), "--cache", str(cache_dir), "-j", "2"])
    assert result.exit_code == 0, result.output
    summary = json.loads((out / "summary.json").read_text())
    assert summary["model"] == "_invert_models:tiny_face_net" and summary["blockwise"]
    assert [r["layer"] for r in summary["layers"]] == ["stem", "stage1", "stage2"]
    assert {r["attack"] for r in summary["layers"]} == {"learned (blockwise)"}
    stem, stage2 = summary["layers"][0], summary["layers"][2]
    assert stem["depth"] < stage2["depth"]
    assert stem["psnr"] > stage2["psnr"] + 3
    assert stem["psnr"] > summary["baseline"]["psnr"] + 5
    assert stem["identity_similarity"] > stage2["identity_similarity"]
    # gallery = PRIVATE, a query never matching its own photo: 10 identities, chance 0.1
    assert summary["chance_reid"] == pytest.approx(0.1)
    assert stem["reid_top1"] >= 0.4 and stem["reid_p_value"] < 1e-4
    assert stem["reid_top1"] > stage2["reid_top1"]
    assert (out / "report.html").is_file() and (out / "grid_stem.png").is_file()


@pytest.mark.parametrize("spec, message", [
    ("no_such_module_xyz:build", "cannot import module"),
    ("_invert_models", "must be 'module:function'"),
    ("_invert_models:missing_fn", "has no attribute"),
    ("_invert_models:not_a_model", "not a torch.nn.Module"),
])
def test_cli_bad_model_spec_exits_2(spec: str, message: str, faces_root: Path, tmp_path: Path) -> None:
    from idleak.cli import app

    orl = str(faces_root / "orl")
    result = CliRunner().invoke(app, ["invert", "--model", spec, "--layers", "stem", "--aux", orl, "--private", orl,
                                      "--out", str(tmp_path / "o")])
    assert result.exit_code == 2
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and message in lines[0], result.output


def test_cli_bad_layer_and_missing_options(faces_root: Path, tmp_path: Path) -> None:
    from idleak.cli import app

    orl = str(faces_root / "orl")
    result = CliRunner().invoke(app, ["invert", "--model", "_invert_models:tiny_face_net", "--layers", "nope",
                                      "--aux", orl, "--private", orl, "--out", str(tmp_path / "o")])
    assert result.exit_code == 2 and "'nope' is not a module of the model" in result.output
    assert "stem" in result.output
    result = CliRunner().invoke(app, ["invert", "--model", "_invert_models:tiny_face_net", "--out", str(tmp_path)])
    assert result.exit_code == 2 and "missing --layers, --aux, --private" in result.output


def test_cli_without_torch_says_how_to_install(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from idleak.cli import app

    monkeypatch.setitem(sys.modules, "torch", None)  # `import torch` now raises ImportError
    result = CliRunner().invoke(app, ["invert", "--train-target", str(tmp_path), "--out", str(tmp_path / "o")])
    assert result.exit_code == 2
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and "pip install torch==2.13.0" in lines[0] and '.[torch]' in lines[0]


# -- metrics and the split machinery, on small real inputs ------------------------------------------------
def test_image_quality_and_reidentify_skip_own_photo(faces_root: Path) -> None:
    from idleak.analyses.invert import ReidGallery, image_quality, reidentify
    from idleak.attacks.split import load_images
    from idleak.decide import Threshold

    records = [Record(str(faces_root / "orl" / f"s{i}" / f"{k}.pgm"), f"s{i}") for i in (1, 2) for k in (1, 2)]
    images, _, _ = load_images(records, (1, 56, 48))
    psnr, ssim = image_quality(images, images)
    assert np.all(psnr == 100.0) and np.allclose(ssim, 1.0)
    noisy = np.clip(images + np.random.default_rng(0).normal(0, 0.1, images.shape), 0, 1).astype(np.float32)
    psnr_noisy, ssim_noisy = image_quality(images, noisy)
    assert np.all((psnr_noisy > 15) & (psnr_noisy < 25)) and np.all(ssim_noisy < 0.9)
    # unit vectors: photos 1 and 2 of a person are close, other people far; a query equal to its own
    # gallery row must be matched to the person's OTHER photo, never to itself
    vectors = np.array([[1, 0, 0], [0.9, 0.436, 0], [0, 1, 0], [0, 0.9, 0.436]], np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    gallery = ReidGallery(vectors, np.array(["s1", "s1", "s2", "s2"], dtype=object),
                          np.array([r.path for r in records], dtype=object), Threshold(0.95, "manual", 0.01))
    reid = reidentify(vectors, ["s1", "s1", "s2", "s2"], gallery, [r.path for r in records])
    assert reid.matched_identity == ["s1", "s1", "s2", "s2"] and reid.top1_rate == 1.0
    assert np.allclose(reid.score, [0.9, 0.9, 0.9, 0.9], atol=1e-3)
    assert not reid.over_threshold.any()  # 0.9 is below the 0.95 threshold
    assert reid.chance == 0.5


def test_split_model_features_depth_and_defense() -> None:
    import _invert_models
    from idleak.attacks.split import SplitModel, apply_defense, load_defense
    from idleak.errors import IdleakError

    model = _invert_models.tiny_face_net()
    split = SplitModel.create(model, ["stage1", "stem"])
    assert list(split.points) == ["stem", "stage1"]  # ordered by depth, not by the order given
    assert split.points["stem"].feature_shape == (12, 24, 20)
    assert split.points["stem"].depth < split.points["stage1"].depth < split.n_leaves
    x = torch.rand(2, 3, 48, 40)
    with torch.no_grad():
        expected = model.stage1(model.stem(x))
    assert torch.allclose(split.features(x, "stage1"), expected)
    x.requires_grad_(True)
    split.features(x, "stem").sum().backward()  # the white-box attack differentiates through the front part
    assert x.grad is not None and x.grad.abs().sum() > 0
    quantise = load_defense("_invert_models:coarse_quantise")
    features = split.batched_features(x.detach(), "stem")
    defended = apply_defense(quantise, features)
    assert defended.shape == features.shape and set(defended.unique().tolist()) <= {0.0, 1.0}
    with pytest.raises(IdleakError, match="same shape|features' shape"):
        apply_defense(lambda f: f[:, :1], features)
