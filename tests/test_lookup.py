"""Personal lookup on the planted scenario (conftest ``planted``): a person is found in the datasets that
hold other photos of them, and not in those that don't."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from idleak.analyses.lookup import LookupOptions
from idleak.cli import app
from idleak.errors import IdleakError
from idleak.jobs.lookup import lookup
from idleak.jobs.report import report
from idleak.review.candidates import load_candidates
from idleak.review.db import VerdictStore


def photos(faces_root: Path, subject: int, numbers: list[int], folder: Path) -> Path:
    """Copy ORL photos of one subject into ``folder`` (the person's own photos)."""
    folder.mkdir(parents=True)
    for k in numbers:
        shutil.copy(faces_root / "orl" / f"s{subject}" / f"{k}.pgm", folder / f"{k}.pgm")
    return folder


def manifest(path: Path, files: list[Path], labelled: bool) -> Path:
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["path", "identity"] if labelled else ["path"])
        for f in files:
            writer.writerow([str(f), f.parent.name] if labelled else [str(f)])
    return path


@pytest.fixture(scope="module")
def strangers(planted, tmp_path_factory) -> Path:
    """A labelled dataset without subjects 1-20: the stranger photos of the planted SYN."""
    files = sorted(planted["syn"].glob("stranger_*/*.pgm"))
    return manifest(tmp_path_factory.mktemp("lookup") / "strangers.csv", files, labelled=True)


@pytest.mark.slow
def test_person_found_where_planted_and_not_elsewhere(planted, strangers, faces_root, cache_dir, tmp_path):
    person = photos(faces_root, 2, [6, 7, 8], tmp_path / "person")  # REAL holds photos 1-5 of subject 2
    out = tmp_path / "out"
    result = CliRunner().invoke(app, ["lookup", "--person", str(person), "--in", str(planted["real"]),
                                      "--in", str(strangers), "--out", str(out), "--cache", str(cache_dir),
                                      "--workers", "2"])
    assert result.exit_code == 0, result.output
    assert "found in 1 of 2 dataset(s)" in result.output

    with open(out / "matches.csv", newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        assert reader.fieldnames[:5] == ["dataset", "dataset_path", "dataset_identity", "person_path", "similarity"]
        rows = list(reader)
    assert rows and {r["dataset"] for r in rows} == {"real"}
    assert {r["dataset_identity"] for r in rows} == {"s2"}  # only the person, no lookalike
    assert len({r["dataset_path"] for r in rows}) >= 4  # of the 5 photos of subject 2 in REAL
    assert [float(r["similarity"]) for r in rows] == sorted((float(r["similarity"]) for r in rows), reverse=True)
    assert {Path(r["person_path"]).parent for r in rows} == {person}

    summary = json.loads((out / "summary.json").read_text(encoding="utf-8"))
    assert summary["analysis"] == "lookup" and summary["found"] is True
    by_name = {d["name"]: d for d in summary["datasets"]}
    assert by_name["real"]["found"] and by_name["real"]["method"] == "leave_one_identity_out"
    assert not by_name["strangers.csv"]["found"] and by_name["strangers.csv"]["n_matches"] == 0
    assert by_name["strangers.csv"]["closest"]["similarity"] < by_name["strangers.csv"]["threshold"]
    # the threshold guards the whole person: alpha split over their 3 photos
    assert by_name["real"]["alpha_per_photo"] == pytest.approx(0.01 / 3)
    said = summary["statement"]
    assert "evidence, not proof" in said["match_means"]
    assert "does not prove absence" in said["no_match_means"]
    html = (out / "report.html").read_text(encoding="utf-8")
    assert "evidence, not proof" in html and "does not prove absence" in html


@pytest.mark.slow
def test_stranger_found_in_synthetic_set_not_in_real(planted, faces_root, workspace, tmp_path):
    person = photos(faces_root, 23, [3, 4, 5], tmp_path / "s23")  # SYN holds photos 1-2 of subject 23
    # SYN has 30 people: too few to resolve 1% / 3 photos, and the lookup says so instead of "no match"
    run = lookup(person, [planted["real"], planted["syn"]], tmp_path / "few", workspace=workspace)
    real, syn = run.datasets
    assert not real.found and real.decidable
    assert not syn.found and not syn.decidable
    assert run.summary["verdict_text"].startswith("Too few to decide in 1 of 2")
    # one photo at alpha 0.05 needs a null of 19 people: SYN's 30 resolve it
    person = photos(faces_root, 23, [3], tmp_path / "s23one")
    run = lookup(person, [planted["real"], planted["syn"]], tmp_path / "out", workspace=workspace,
                 options=LookupOptions(alpha=0.05))
    real, syn = run.datasets
    assert not real.found
    assert syn.found and {m["dataset_identity"] for m in syn.matches} == {"stranger_s23"}
    assert run.summary["verdict_text"].startswith("Faces matching this person were found in 1 of 2")

    # reviewed matches are counted in the rebuilt report
    pairs = load_candidates(tmp_path / "out")
    assert pairs.analysis == "lookup" and len(pairs) == len(syn.matches)
    VerdictStore(tmp_path / "out" / "review.sqlite").set(pairs.items[0].id, "match")
    summary = report(tmp_path / "out")
    assert summary["review"]["confirmed"] == 1 and summary["review"]["n_reviewed"] == 1
    assert "1 confirmed as this person" in (tmp_path / "out" / "report.html").read_text(encoding="utf-8")


@pytest.mark.slow
def test_unlabelled_dataset_uses_the_shipped_calibration(planted, strangers, faces_root, workspace, tmp_path):
    person = photos(faces_root, 2, [6, 7, 8], tmp_path / "person")
    real_files = sorted(planted["real"].glob("*/*.pgm"))
    unlabelled = manifest(tmp_path / "real_unlabelled.csv", real_files, labelled=False)
    run = lookup(person, [unlabelled], tmp_path / "out", workspace=workspace)
    (found,) = run.datasets
    assert found.threshold.method == "shipped" and found.decidable
    assert found.found and {Path(m["dataset_path"]).parent.name for m in found.matches} == {"s2"}


def test_lookup_bad_input(planted, faces_root, workspace, tmp_path):
    two = tmp_path / "two"
    for subject in (1, 2):
        photos(faces_root, subject, [9], two / f"s{subject}")
    with pytest.raises(IdleakError, match="identities"):
        lookup(two, [planted["real"]], tmp_path / "o1", workspace=workspace)
    nobody = tmp_path / "nobody"
    nobody.mkdir()
    shutil.copy(faces_root / "misc" / "dogs.jpg", nobody / "dogs.jpg")
    with pytest.raises(IdleakError, match="no face"):
        lookup(nobody, [planted["real"]], tmp_path / "o2", workspace=workspace)
    with pytest.raises(IdleakError, match="--in"):
        lookup(two / "s1", [], tmp_path / "o3", workspace=workspace)
    with pytest.raises(IdleakError, match="not found"):
        lookup(two / "s1", [tmp_path / "missing"], tmp_path / "o4", workspace=workspace)
    with pytest.raises(IdleakError, match="alpha"):
        lookup(two / "s1", [planted["real"]], tmp_path / "o5", options=LookupOptions(alpha=0), workspace=workspace)
