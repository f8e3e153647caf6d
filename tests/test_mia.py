"""Identity membership attack (idleak mia): metrics, generator wrapper, scoring, and real attacks on real
generators trained here on ORL faces.

The member generator is a GLO-style decoder (tests/_mia_generator.py) trained on photos 1-5 of ORL people
s1-s10; it memorises them. Members are those people's OTHER photos (6-10), non-members are photos 6-10 of
people it never saw. The control generator is trained on s31-s40 and attacked with the same members and
non-members s11-s30: nobody in that attack was in its training set.

Set IDLEAK_TEST_WEIGHTS_CACHE=DIR to reuse trained weights between local runs (keyed by a hash of the
training data, settings and generator code); without it (CI) both generators are trained for real.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from idleak.analyses.mia import MiaOptions, combine_photos, genuine_nearest, per_identity_max, run_mia
from idleak.cli import app
from idleak.embedding import FaceSet
from idleak.errors import IdleakError
from idleak.generators import call_batch, load_callable, sample_to_folder, without_sample_list
from idleak.jobs.mia import count_training_folder, mia, read_train_counts
from idleak.metrics import (
    auc_mann_whitney,
    bootstrap,
    d_prime,
    empirical_roc,
    ks_statistic,
    roc_metrics,
    tpr_at_fpr_direct,
    tpr_at_fpr_from_curve,
)
from idleak.sources import open_source

HERE = Path(__file__).resolve().parent
MEMBER_IDS = [f"s{i}" for i in range(1, 11)]
NONMEMBER_IDS = [f"s{i}" for i in range(11, 41)]
CONTROL_TRAIN_IDS = [f"s{i}" for i in range(31, 41)]
TRAIN_PHOTOS = range(1, 6)
ATTACK_PHOTOS = range(6, 11)
TRAIN_STEPS, TRAIN_LR = 500, 5e-3
N_SAMPLES = 150


# -- metrics -----------------------------------------------------------------------------------------
def test_tpr_at_fpr_read_from_the_curve_equals_the_direct_count_with_ties() -> None:
    rng = np.random.default_rng(3)
    for n1, n0 in ((5, 7), (10, 30), (40, 200), (3, 1000)):
        for _ in range(20):
            pos = np.round(rng.normal(0.3, 1, n1), 1)  # rounding makes ties
            neg = np.round(rng.normal(0.0, 1, n0), 1)
            scores, members = np.concatenate([pos, neg]), np.r_[np.ones(n1, bool), np.zeros(n0, bool)]
            fpr, tpr, _ = empirical_roc(scores, members)
            for level in (0.5, 0.1, 0.01, 0.001):
                assert tpr_at_fpr_from_curve(fpr, tpr, level) == pytest.approx(tpr_at_fpr_direct(pos, neg, level))
            assert auc_mann_whitney(pos, neg) == pytest.approx(roc_metrics(scores, members, n_boot=0).auc)


def test_roc_metrics_by_hand() -> None:
    # members 0.9 0.8 0.6; non-members 0.85 0.7 0.5 0.4 0.3 -> pairs won: 5 + 4 + 3 of 15
    scores = np.array([0.9, 0.8, 0.6, 0.85, 0.7, 0.5, 0.4, 0.3])
    members = np.array([1, 1, 1, 0, 0, 0, 0, 0], bool)
    roc = roc_metrics(scores, members, n_boot=200, seed=1)
    assert roc.auc == pytest.approx(12 / 15)
    # FPR <= 0.1 with 5 non-members: no non-member may pass -> only 0.9 -> TPR 1/3
    assert roc.tpr_at_fpr["0.1"] == pytest.approx(1 / 3)
    assert roc.resolvable == {"0.1": False, "0.01": False, "0.001": False}  # 1/5 = 0.2 is the smallest FPR
    assert roc_metrics(scores, members, n_boot=0).tpr_at_fpr["0.1"] == pytest.approx(1 / 3)
    assert roc.auc_ci[0] <= roc.auc <= roc.auc_ci[1]
    assert roc_metrics(scores, members, n_boot=200, seed=1).auc_ci == roc.auc_ci  # fixed seed
    wide = roc_metrics(np.r_[scores[:3], np.linspace(0, 0.55, 1000)], np.r_[members[:3], np.zeros(1000, bool)],
                       n_boot=0)
    assert wide.resolvable == {"0.1": True, "0.01": True, "0.001": True}
    with pytest.raises(IdleakError, match="at least one member and one non-member"):
        roc_metrics(scores[:3], members[:3])


def test_bootstrap_is_stratified_and_covers_the_truth() -> None:
    rng = np.random.default_rng(0)
    pos, neg = rng.normal(1.0, 1, 60), rng.normal(0.0, 1, 120)
    reps = bootstrap(pos, neg, n_boot=500, seed=2)
    assert len(reps["auc"]) == 500 and set(reps) == {"auc", "0.1", "0.01", "0.001"}
    true_auc = 0.7602  # Phi(1 / sqrt(2))
    low, high = np.percentile(reps["auc"], [2.5, 97.5])
    assert low < true_auc < high and high - low < 0.2
    separated = bootstrap(np.array([2.0, 3.0]), np.array([0.0, 1.0, 1.5]), n_boot=100)
    assert np.all(separated["auc"] == 1.0)  # every resample keeps both classes: always separated


def test_d_prime_and_ks() -> None:
    rng = np.random.default_rng(1)
    a, b = rng.normal(2, 1, 20000), rng.normal(0, 1, 20000)
    assert d_prime(a, b) == pytest.approx(2.0, abs=0.05)
    assert ks_statistic(a, b)[0] == pytest.approx(0.6827, abs=0.02)  # 2 Phi(1) - 1
    assert ks_statistic(a, a)[0] == 0.0
    assert np.isnan(d_prime(a[:1], b))


# -- generator wrapper ---------------------------------------------------------------------------------
def _noise_sample(n: int, seed: int) -> list[np.ndarray]:
    """A generator whose j-th sample of seed s is a function of s + j only."""
    return [np.random.default_rng(seed + j).integers(0, 256, (24, 20, 3), dtype=np.uint8) for j in range(n)]


def test_sample_to_folder_saves_every_sample_with_its_seed(tmp_path: Path) -> None:
    seen: list[tuple[int, int]] = []
    progress = []

    def sample(n: int, seed: int) -> list[np.ndarray]:
        seen.append((n, seed))
        return _noise_sample(n, seed)

    results = sample_to_folder(sample, 23, tmp_path / "gen", batch=10, seed0=100,
                               progress=lambda done, total: progress.append((done, total)))
    assert seen == [(10, 100), (10, 110), (3, 120)]
    assert progress[0] == (0, 23) and progress[-1] == (23, 23)
    assert len(results) == 23 and all(path.is_file() for path, _ in results)
    rows = list(csv.DictReader(open(tmp_path / "gen" / "samples.csv")))
    assert [r["path"] for r in rows] == [p.name for p, _ in results]
    for (path, seed), row in zip(results, rows):
        assert int(row["seed"]) == seed
        again = _noise_sample(int(row["batch_size"]), seed)[int(row["index"])]  # the documented recipe
        assert np.array_equal(np.asarray(Image.open(path)), again)
        assert np.array_equal(again, _noise_sample(1, seed + int(row["index"]))[0])
    folder = without_sample_list(open_source(tmp_path / "gen", "generated"))  # samples.csv is not an image
    assert sorted(Path(r.path).name for r in folder.records) == sorted(p.name for p, _ in results)


def test_generator_outputs_are_checked() -> None:
    grey = call_batch(lambda n, s: [np.zeros((8, 9), np.uint8)] * n, 2, 0)
    assert grey[0].shape == (8, 9, 3)
    pil = call_batch(lambda n, s: [Image.new("L", (5, 4))] * n, 1, 0)
    assert pil[0].shape == (4, 5, 3)
    stacked = call_batch(lambda n, s: np.zeros((n, 6, 6, 3), np.uint8), 3, 0)
    assert len(stacked) == 3
    with pytest.raises(IdleakError, match="returned 1 images for sample"):
        call_batch(lambda n, s: [np.zeros((8, 8, 3), np.uint8)], 2, 0)
    with pytest.raises(IdleakError, match="uint8"):
        call_batch(lambda n, s: [np.zeros((8, 8, 3), np.float32)] * n, 1, 0)
    with pytest.raises(IdleakError, match="generator failed on sample.*ZeroDivisionError"):
        call_batch(lambda n, s: 1 / 0, 1, 0)


def test_load_callable(tmp_path: Path) -> None:
    assert load_callable("os.path:join") is os.path.join
    module = tmp_path / "gen_file.py"
    module.write_text("import numpy as np\ndef sample(n, seed):\n    return [np.zeros((4, 4, 3), np.uint8)] * n\n")
    assert len(load_callable(f"{module}:sample")(2, 0)) == 2
    for spec, message in (("os.path.join", "module:function"), ("no_such_module_xyz:f", "not found"),
                          ("os.path:no_such", "no attribute"), ("os:sep", "not callable"),
                          (f"{tmp_path / 'missing.py'}:f", "file not found")):
        with pytest.raises(IdleakError, match=message):
            load_callable(spec)


# -- scoring on known vectors ------------------------------------------------------------------------------
def _faces(vectors: np.ndarray, identities: list[str | None], prefix: str) -> FaceSet:
    n = len(vectors)
    vectors = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    return FaceSet(vectors.astype(np.float32), np.array([f"{prefix}{i}.png" for i in range(n)], dtype=object),
                   np.array(identities, dtype=object), np.array([""] * n), np.zeros((n, 4), np.float32),
                   np.ones(n, np.float32), np.ones(n, np.int64))


def test_run_mia_scores_identities_from_known_vectors() -> None:
    rng = np.random.default_rng(5)
    centres = rng.normal(size=(8, 32))
    photos = np.repeat(centres, 3, axis=0) + 0.3 * rng.normal(size=(24, 32))
    ids = [f"p{i}" for i in range(8) for _ in range(3)]
    members = _faces(photos[:9], ids[:9], "m")  # p0 p1 p2
    nonmembers = _faces(np.r_[photos[9:], rng.normal(size=(1, 32))], ids[9:] + [None], "n")  # p3..p7 + unlabelled
    generated = _faces(np.r_[centres[:3] + 0.05 * rng.normal(size=(3, 32)), rng.normal(size=(40, 32))],
                       [None] * 43, "g")
    # 15 non-member photos resolve a false-flag rate of 1/16 at best: alpha 0.01 flags nothing, 0.1 can
    strict = run_mia(generated, members, nonmembers, MiaOptions(n_bootstrap=10), {"p0": 7, "p1": 2, "p2": 4})
    assert strict.n_over.sum() == 0 and not np.isfinite(strict.threshold.value)
    result = run_mia(generated, members, nonmembers, MiaOptions(n_bootstrap=100, alpha=0.1), {"p0": 7, "p1": 2, "p2": 4})
    assert list(result.identities) == [f"p{i}" for i in range(8)]
    assert list(result.member) == [True] * 3 + [False] * 5
    # a member's score is its best photo's similarity to its own near-copy (generated face i)
    assert list(result.best_generated[:3]) == [0, 1, 2]
    sims = result.photos.vectors @ generated.vectors.T
    for i in range(8):
        rows = np.flatnonzero(result.photos.identities == f"p{i}")
        assert result.score[i] == pytest.approx(sims[rows].max(), abs=1e-5)
        assert result.best_photo[i] in rows
    assert result.roc.auc == 1.0 and result.n_over[:3].sum() == 3 and result.n_over[3:].sum() == 0
    assert result.photos.excluded == [("n15.png", "unlabelled", "non-members: not in a per-person sub-folder")]
    assert len(result.distributions["genuine"]) == 24 and len(result.distributions["generated"]) == 43
    assert result.over_representation["n_members_with_counts"] == 3
    with pytest.raises(IdleakError, match="identities in both members and non-members: p0"):
        combine_photos(members, _faces(photos[:3], ids[:3], "x"))
    with pytest.raises(IdleakError, match="no face was found in any generated image"):
        run_mia(generated.subset(np.zeros(43, bool)), members, nonmembers)


def test_per_identity_max_and_genuine_nearest() -> None:
    best, arg = per_identity_max(np.array([0.1, 0.5, 0.5, 0.2]), np.array([0, 0, 1, 1]), 3)
    assert list(arg) == [1, 2, -1] and best[0] == 0.5 and best[2] == -np.inf
    vectors = np.eye(3, dtype=np.float32)[[0, 0, 1]]
    assert sorted(genuine_nearest(vectors, np.array([0, 0, 1]))) == [1.0, 1.0]


def test_training_counts(tmp_path: Path) -> None:
    good = tmp_path / "counts.csv"
    good.write_text("identity,n_train\ns1,5\ns2,12\n")
    assert read_train_counts(good) == {"s1": 5, "s2": 12}
    bad = tmp_path / "bad.csv"
    bad.write_text("name,n\ns1,5\n")
    with pytest.raises(IdleakError, match="needs columns identity,n_train"):
        read_train_counts(bad)
    bad.write_text("identity,count\ns1,many\n")
    with pytest.raises(IdleakError, match="must be a number"):
        read_train_counts(bad)
    (tmp_path / "train" / "a").mkdir(parents=True)
    (tmp_path / "train" / "b").mkdir()
    for name in ("a/1.png", "a/2.jpg", "a/notes.txt", "b/1.png"):
        (tmp_path / "train" / name).write_bytes(b"x")
    assert count_training_folder(tmp_path / "train") == {"a": 2, "b": 1}


def test_torch_missing_is_a_one_line_error(monkeypatch: pytest.MonkeyPatch) -> None:
    from idleak.attacks.latent_recovery import require_torch

    monkeypatch.setitem(sys.modules, "torch", None)  # what "import torch" sees when it is not installed
    with pytest.raises(IdleakError, match=r"pip install torch==2\.13\.0") as info:
        require_torch()
    assert "\n" not in str(info.value)


def test_cli_rejects_bad_input_in_one_line(tmp_path: Path, faces_root: Path) -> None:
    runner = CliRunner()
    orl = str(faces_root / "orl")
    cases = [
        (["--members", str(tmp_path / "nope"), "--nonmembers", orl, "--generated", orl], "members not found"),
        (["--members", orl, "--nonmembers", orl], "give exactly one of"),
        (["--members", orl, "--nonmembers", orl, "--generated", orl, "--generator", "os:getcwd"],
         "give exactly one of"),
        (["--members", orl, "--nonmembers", orl, "--generated", orl, "--latent-recovery"], "needs --generator-module"),
        (["--members", orl, "--nonmembers", orl, "--generator", "not_a_module_zz:sample"], "not found"),
        (["--members", orl, "--nonmembers", orl, "--generated", orl, "--train-counts", str(tmp_path / "x.csv")],
         "--train-counts file not found"),
    ]
    for args, message in cases:
        result = runner.invoke(app, ["mia", "--out", str(tmp_path / "out"), *args])
        assert result.exit_code == 2, result.output
        assert message in result.output and len(result.output.strip().splitlines()) == 1


# -- real generators trained on ORL ------------------------------------------------------------------------
def _orl(faces_root: Path, ids: list[str], photos: range) -> list[tuple[str, str]]:
    return [(str(faces_root / "orl" / i / f"{k}.pgm"), i) for i in ids for k in photos]


def _person_folder(root: Path, items: list[tuple[str, str]]) -> Path:
    """A per-person folder of links to the ORL photos (nothing copied)."""
    for path, identity in items:
        (root / identity).mkdir(parents=True, exist_ok=True)
        (root / identity / Path(path).name).symlink_to(path)
    return root


def _trained(paths: list[str], tmp_dir: Path) -> Path:
    """Train a GLO generator on ``paths`` (or reuse $IDLEAK_TEST_WEIGHTS_CACHE) and return its weights file."""
    import torch

    import _mia_generator as glo

    key = hashlib.sha256()
    for path in paths:
        key.update(Path(path).read_bytes())
    key.update(f"{TRAIN_STEPS} {TRAIN_LR} {torch.__version__}".encode())
    key.update(Path(glo.__file__).read_bytes())
    name = f"glo-{key.hexdigest()[:16]}.pt"
    cache = os.environ.get("IDLEAK_TEST_WEIGHTS_CACHE")
    if cache and (Path(cache) / name).is_file():
        return Path(cache) / name
    state = glo.train_glo(paths, steps=TRAIN_STEPS, lr=TRAIN_LR, seed=0)
    target = (Path(cache) if cache else tmp_dir) / name
    target.parent.mkdir(parents=True, exist_ok=True)
    torch.save(state, target)
    return target


@pytest.fixture(scope="session")
def mia_data(faces_root: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    pytest.importorskip("torch")
    root = tmp_path_factory.mktemp("mia-data")
    train = _orl(faces_root, MEMBER_IDS, TRAIN_PHOTOS)
    control_train = _orl(faces_root, CONTROL_TRAIN_IDS, TRAIN_PHOTOS)
    return {
        "root": root,
        "members": _person_folder(root / "members", _orl(faces_root, MEMBER_IDS, ATTACK_PHOTOS)),
        "nonmembers": _person_folder(root / "nonmembers", _orl(faces_root, NONMEMBER_IDS, ATTACK_PHOTOS)),
        "control_nonmembers": _person_folder(root / "control_nonmembers", _orl(
            faces_root, [i for i in NONMEMBER_IDS if i not in CONTROL_TRAIN_IDS], ATTACK_PHOTOS)),
        "train_folder": _person_folder(root / "train", train),
        "weights": _trained([p for p, _ in train], root),
        "control_weights": _trained([p for p, _ in control_train], root),
    }


@pytest.fixture(scope="session")
def member_attack(mia_data: dict, cache_dir: Path) -> Path:
    """``idleak mia --generator _mia_generator:sample`` on the generator that memorised s1-s10 (the CLI path)."""
    out = mia_data["root"] / "out-member"
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("IDLEAK_TEST_GLO", str(mia_data["weights"]))
        result = CliRunner().invoke(app, [
            "mia", "--generator", "_mia_generator:sample", "--n", str(N_SAMPLES), "--batch-size", "50",
            "--seed", "7", "--members", str(mia_data["members"]), "--nonmembers", str(mia_data["nonmembers"]),
            "--train-folder", str(mia_data["train_folder"]), "--out", str(out), "--cache", str(cache_dir),
            "--workers", "2"])
    assert result.exit_code == 0, result.output
    assert "MEMBERSHIP LEAK" in result.output
    return out


@pytest.mark.slow
def test_memorising_generator_separates_members(member_attack: Path) -> None:
    s = json.loads((member_attack / "summary.json").read_text())
    assert s["analysis"] == "mia" and s["attack"] == "generated_faces"
    assert s["n_members"] == 10 and s["n_nonmembers"] == 30
    assert s["auc"] >= 0.9 and s["auc_ci"][0] > 0.5  # clearly above chance, interval excludes 0.5
    assert s["tpr_at_fpr"]["0.1"] >= 0.5
    assert set(s["tpr_at_fpr"]) == {"0.1", "0.01", "0.001"}
    assert s["tpr_at_fpr_resolvable"] == {"0.1": True, "0.01": False, "0.001": False}  # 30 non-members
    assert s["n_generated_images"] == N_SAMPLES and s["n_generated"] >= 0.8 * N_SAMPLES  # dlib finds most
    assert s["n_generated"] + s["excluded_generated"].get("no_face", 0) == N_SAMPLES
    # generated faces sit closer to real people than chance does
    assert s["separation"]["d_prime_generated_vs_impostor"] > 1.0 and s["separation"]["ks_p_value"] < 1e-6
    rows = list(csv.DictReader(open(member_attack / "identities.csv")))
    assert list(rows[0])[:6] == ["identity", "member", "score", "n_over_threshold", "best_generated_path",
                                 "best_photo_path"]
    assert len(rows) == 40 and [float(r["score"]) for r in rows] == sorted((float(r["score"]) for r in rows),
                                                                           reverse=True)
    assert sum(int(r["n_over_threshold"]) for r in rows if r["member"] == "true") > 10
    assert {r["n_train"] for r in rows if r["member"] == "true"} == {"5"}  # counted from --train-folder
    for r in rows:
        # files idleak wrote inside OUT (OUT/generated/) are written relative to OUT
        assert (member_attack / r["best_generated_path"]).is_file() and not Path(r["best_generated_path"]).is_absolute()
        assert Path(r["best_photo_path"]).parent.name == r["identity"]
    for name in ("report.html", "roc.png", "distributions.png", "over_representation.png", "scores.npz"):
        assert (member_attack / name).is_file(), name
    assert "log axes" in (member_attack / "report.html").read_text()


@pytest.mark.slow
def test_flagged_generated_face_is_regenerated_from_its_seed(member_attack: Path, mia_data: dict,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    import _mia_generator as glo

    monkeypatch.setenv("IDLEAK_TEST_GLO", str(mia_data["weights"]))
    top = next(csv.DictReader(open(member_attack / "identities.csv")))
    name = Path(top["best_generated_path"]).name
    sample = next(r for r in csv.DictReader(open(member_attack / "generated" / "samples.csv")) if r["path"] == name)
    again = glo.sample(int(sample["batch_size"]), int(sample["seed"]))[int(sample["index"])]
    assert np.array_equal(again, np.asarray(Image.open(member_attack / top["best_generated_path"])))


@pytest.mark.slow
def test_report_rebuilds_from_out_files_alone(member_attack: Path) -> None:
    from idleak.report import rebuild

    (member_attack / "roc.png").unlink()
    (member_attack / "report.html").unlink()
    assert rebuild(member_attack).is_file() and (member_attack / "roc.png").is_file()


@pytest.fixture(scope="session")
def control_attack(mia_data: dict, workspace) -> dict:
    """The ``--generated FOLDER`` path: samples of the generator trained on s31-s40, through the API."""
    import _mia_generator as glo

    folder = mia_data["root"] / "control-samples"
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("IDLEAK_TEST_GLO", str(mia_data["control_weights"]))
        sample_to_folder(glo.sample, N_SAMPLES, folder, batch=50, seed0=7)
    result = mia(mia_data["members"], mia_data["control_nonmembers"], mia_data["root"] / "out-control",
                 generated=folder, workspace=workspace, report=False)
    return result.summary


@pytest.mark.slow
def test_generator_trained_on_other_people_stays_near_chance(control_attack: dict, member_attack: Path) -> None:
    s = control_attack
    assert s["n_members"] == 10 and s["n_nonmembers"] == 20 and s["n_generated"] >= 0.8 * N_SAMPLES
    assert s["n_generated_images"] == N_SAMPLES  # the folder's samples.csv is not taken for an image
    # With no membership signal the AUC of 10 vs 20 identities is still random: its standard error under
    # the null is sqrt((n1 + n0 + 1) / (12 n1 n0)) = 0.114, so one honest control lands within 0.5 +- 2.6 SE
    # (99%); the memorising generator (AUC near 1) would fail this.
    se = np.sqrt((10 + 20 + 1) / (12 * 10 * 20))
    assert abs(s["auc"] - 0.5) <= 2.6 * se
    member = json.loads((member_attack / "summary.json").read_text())
    assert member["auc"] - s["auc"] >= 0.2
    assert s["separation"]["d_prime_generated_vs_impostor"] < 0.5  # generated faces are strangers


@pytest.mark.slow
def test_latent_recovery_on_the_trained_generator(mia_data: dict, cache_dir: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("IDLEAK_TEST_GLO", str(mia_data["weights"]))
    out = mia_data["root"] / "out-latent"
    nonmembers = _person_folder(mia_data["root"] / "latent-nonmembers",
                                [(str(p), i) for i in NONMEMBER_IDS[:10]
                                 for p in sorted((mia_data["nonmembers"] / i).iterdir())])
    result = CliRunner().invoke(app, [
        "mia", "--generator-module", "_mia_generator:build", "--latent-recovery", "--steps", "50",
        "--restarts", "2", "--lr", "0.1", "--targets-per-identity", "2", "--members", str(mia_data["members"]),
        "--nonmembers", str(nonmembers), "--out", str(out), "--cache", str(cache_dir), "--workers", "2"])
    assert result.exit_code == 0, result.output
    s = json.loads((out / "summary.json").read_text())
    assert s["attack"] == "latent_recovery" and s["n_generated"] == 40  # 2 photos x 20 people reconstructed
    assert s["mean_mse_members"] < s["mean_mse_nonmembers"]  # it reproduces the people it was trained on better
    assert s["auc_ci"][0] > 0.5 and s["auc_pixel_ci"][0] > 0.5
    assert s["n_reconstructions_unscored"] <= 4
    rows = list(csv.DictReader(open(out / "identities.csv")))
    assert all(r["best_generated_path"].endswith("_recon.png") and (out / r["best_generated_path"]).is_file()
               for r in rows)
    assert (out / "report.html").is_file()


@pytest.mark.slow
def test_generator_module_sampler_is_seeded(mia_data: dict, monkeypatch: pytest.MonkeyPatch) -> None:
    from idleak.attacks.latent_recovery import load_generator_module, module_sampler

    monkeypatch.setenv("IDLEAK_TEST_GLO", str(mia_data["weights"]))
    sample = module_sampler(load_generator_module("_mia_generator:build"))
    batch = sample(4, 10)
    assert len(batch) == 4 and batch[0].shape == (64, 64, 3) and batch[0].dtype == np.uint8
    assert np.array_equal(batch[2], sample(1, 12)[0]) and not np.array_equal(batch[0], batch[1])
    with pytest.raises(IdleakError, match="must return a torch nn.Module"):
        load_generator_module("os:getcwd")
