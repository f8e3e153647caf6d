"""Nothing lost, nothing silent (issue 9): the REAL command line in subprocesses, killed, starved of disk space
and run twice at once; then every situation of the issue's table, each run from another working folder than
the one that created the data.

The data are 48 ORL photos copied into a temporary folder (REAL: subjects 1-6, photos 1-4; SYN: subjects 1-3,
photos 5-8, and 7-9, photos 1-4), embedded once per store; audits and gates use a manual threshold so no
statistics are involved. Kill moments are drawn from a seeded generator.
"""

from __future__ import annotations

import csv
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import psutil
import pytest

from idleak.store import EmbeddingStore
from idleak.store.read import file_hash

REPO = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": str(REPO / "src"), "COLUMNS": "200"}
ROUNDS = {"embed": 6, "audit": 5, "gate": 5, "review": 4}  # >= 20 kill -9 rounds in all
RNG = random.Random(9)


def idleak(*args: object, cwd: Path, env: dict | None = None, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "idleak", *map(str, args)], cwd=cwd, env=env or ENV,
                          capture_output=True, text=True, timeout=timeout)


def start(*args: object, cwd: Path, env: dict | None = None) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "idleak", *map(str, args)], cwd=cwd, env=env or ENV,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def kill_at_random(process: subprocess.Popen, seconds: float) -> tuple[list[psutil.Process], bool]:
    """kill -9 ``process`` after about ``seconds``, unless it ended before; its worker processes, and whether
    the kill hit it while it ran."""
    deadline = time.monotonic() + seconds
    children: list[psutil.Process] = []
    while time.monotonic() < deadline and process.poll() is None:
        try:
            children = psutil.Process(process.pid).children(recursive=True) or children
        except psutil.NoSuchProcess:
            break
        time.sleep(0.05)
    hit = process.poll() is None
    if hit:
        process.send_signal(signal.SIGKILL)
    process.wait()
    return children, hit


def full_run_seconds(args: list, cwd: Path, env: dict) -> float:
    """How long one complete run takes here (kill moments are drawn inside it)."""
    t0 = time.monotonic()
    done = idleak(*args, cwd=cwd, env=env)
    assert done.returncode == 0, done.stderr
    return time.monotonic() - t0


def assert_no_orphans(children: list[psutil.Process]) -> None:
    _, alive = psutil.wait_procs(children, timeout=20)
    assert not alive, f"worker processes outlived their killed parent: {[p.pid for p in alive]}"


def temp_files(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if p.name.endswith(".tmp") or ".tmp." in p.name or p.name.endswith(".partial")]


def assert_store_exact(store: Path, images: list[Path]) -> None:
    """Each image once (no duplicate rows), none lost, no temporary files left."""
    rows = store_rows(store)
    keys = list(zip(rows["hash"], rows["aligned"], rows["face"]))
    assert len(keys) == len(set(keys)), "duplicate rows in the store"
    assert set(rows["hash"]) == {file_hash(str(p)) for p in images}, "rows lost or foreign"
    assert not temp_files(store), f"stale temporary files: {temp_files(store)}"


def store_rows(store: Path) -> dict[str, list]:
    """Key columns of every row of the store at ``store`` (opening it also cleans a killed run's parts)."""
    opened = EmbeddingStore.open(store)
    meta = opened.meta(np.arange(opened.n_rows), ["hash", "aligned", "face", "reason"])
    return {k: list(np.asarray(v).tolist()) for k, v in meta.items()}


def orl(faces_root: Path, subject: int, photos: range) -> list[Path]:
    return [faces_root / "orl" / f"s{subject}" / f"{i}.pgm" for i in photos]


@pytest.fixture(scope="module")
def data(faces_root: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("faults-data")
    for subject in range(1, 7):
        for photo in orl(faces_root, subject, range(1, 5)):
            target = root / "real" / f"s{subject}" / photo.name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(photo, target)
    for subject, photos in [(1, range(5, 9)), (2, range(5, 9)), (3, range(5, 9)), (7, range(1, 5)),
                            (8, range(1, 5)), (9, range(1, 5))]:
        for photo in orl(faces_root, subject, photos):
            target = root / "syn" / f"g{subject}" / photo.name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(photo, target)
    elsewhere = tmp_path_factory.mktemp("faults-elsewhere")
    return {"root": root, "real": root / "real", "syn": root / "syn", "elsewhere": elsewhere,
            "cache": tmp_path_factory.mktemp("faults-cache")}


def files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file())


# -- kill -9 at random moments -------------------------------------------------------------------------------
def kill_rounds(args: list, rounds: int, data: dict, tmp_path: Path, store_of) -> None:
    """``rounds`` times: a fresh store, the command killed (-9) at a random moment of its run, its workers
    gone, then the command rerun from another folder to completion: every image once, none lost, no
    temporary files. Most kills must land while the command runs."""
    duration = full_run_seconds([a if a != "{store}" else tmp_path / "timing" for a in args], data["elsewhere"],
                                ENV)
    hits = 0
    for round_ in range(rounds):
        where = tmp_path / f"round{round_}"
        round_args = [a if a != "{store}" else where for a in args]
        process = start(*round_args, cwd=data["root"])
        children, hit = kill_at_random(process, RNG.uniform(0.15, 0.9) * duration)
        hits += hit
        assert_no_orphans(children)
        done = idleak(*round_args, cwd=data["elsewhere"])
        assert done.returncode == 0, done.stderr
        assert_store_exact(store_of(where), files(data["syn"]) + (files(data["real"]) if "-r" in args else []))
    assert hits >= rounds // 2, f"only {hits} of {rounds} kills landed while the command ran"


def test_kill_9_during_embed_loses_nothing_and_leaves_no_workers(data, tmp_path):
    kill_rounds(["embed", data["syn"], "--store", "{store}", "-j", "2", "--flush-every", "3"], ROUNDS["embed"],
                data, tmp_path, lambda where: where)


@pytest.mark.parametrize("command", ["audit", "gate"])
def test_kill_9_during_audit_and_gate_keeps_the_cache_exact(command, data, tmp_path):
    args = [command, "-s", data["syn"], "-r", data["real"], "-o", tmp_path / "out", "--threshold", "0.9",
            "-j", "2", "--cache", "{store}"]
    kill_rounds(args, ROUNDS[command], data, tmp_path, lambda where: next(where.rglob("store.json")).parent)
    assert not temp_files(tmp_path / "out"), temp_files(tmp_path / "out")
    assert json.loads((tmp_path / "out" / "summary.json").read_text())["analysis"] == command


def test_kill_9_during_review_writes_keeps_every_acknowledged_verdict(data, tmp_path):
    from _review_browser import ReviewServer

    env = {**ENV, "IDLEAK_CACHE": str(data["cache"])}
    out = tmp_path / "out"
    done = idleak("audit", "-s", data["syn"], "-r", data["real"], "-o", out, "--threshold", "0.6", cwd=data["root"],
                  env=env)
    assert done.returncode == 0, done.stderr
    acknowledged: dict[str, str] = {}
    for round_ in range(ROUNDS["review"]):
        server = ReviewServer(out, tmp_path / "review.log")
        try:
            with urllib.request.urlopen(f"{server.base}/api/candidates?token={server.token}") as answer:
                pairs = json.loads(answer.read())["items"]
            deadline = time.monotonic() + RNG.uniform(0.2, 1.5)
            i = 0
            while time.monotonic() < deadline:
                pair = pairs[(i + round_ * 7) % len(pairs)]
                verdict = ["match", "not_match", "unsure", "child"][(i + round_) % 4]
                body = json.dumps({"pair_id": pair["id"], "verdict": verdict}).encode()
                request = urllib.request.Request(f"{server.base}/api/verdict?token={server.token}", data=body,
                                                 headers={"Content-Type": "application/json"})
                with urllib.request.urlopen(request) as answer:
                    assert answer.status == 200
                acknowledged[pair["id"]] = verdict
                i += 1
        finally:
            server.kill()
    from idleak.review.db import VerdictStore

    stored = VerdictStore(out / "review.sqlite").verdicts()
    assert stored == acknowledged
    report = idleak("report", out, cwd=out)
    assert report.returncode == 0, report.stderr


# -- disk full, two writers ----------------------------------------------------------------------------------
def test_disk_full_while_writing_is_one_line_and_the_store_stays_intact(data, tmp_path):
    mount = tmp_path / "small"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=96k", "tmpfs", str(mount)], capture_output=True,
                          text=True)
    if done.returncode != 0:
        pytest.fail(f"this test mounts a small tmpfs to fill it (CI runs as root): mount failed: {done.stderr}")
    try:
        store = mount / "store"
        first = idleak("embed", data["real"] / "s1", "--store", store, "-j", "1", cwd=data["elsewhere"])
        assert first.returncode == 0, first.stderr
        full = idleak("embed", data["syn"], "--store", store, "-j", "1", "--flush-every", "4", cwd=data["elsewhere"])
        lines = [line for line in full.stderr.splitlines() if line.strip() and "━" not in line]
        assert full.returncode == 2, full.stderr
        assert "Traceback" not in full.stderr and lines[-1].startswith("error:"), full.stderr
        assert "space" in lines[-1].lower() or "ENOSPC" in lines[-1] or "full" in lines[-1].lower(), lines[-1]
        rows = store_rows(store)  # readable, and whatever it holds is whole
        keys = list(zip(rows["hash"], rows["face"]))
        assert len(keys) == len(set(keys))
        assert {file_hash(str(p)) for p in files(data["real"] / "s1")} <= set(rows["hash"])
        assert not temp_files(store), temp_files(store)
    finally:
        subprocess.run(["umount", "-l", str(mount)], capture_output=True)


def test_two_processes_embedding_into_one_store_end_with_each_image_once(data, tmp_path):
    store = tmp_path / "store"
    both = [start("embed", data["syn"], "--store", store, "-j", "1", "--flush-every", "2", cwd=data["root"]),
            start("embed", data["syn"], "--store", store, "-j", "1", "--flush-every", "2", cwd=data["elsewhere"])]
    assert [p.wait(timeout=600) for p in both] == [0, 0]
    assert_store_exact(store, files(data["syn"]))


# -- the table of issue 9, each row from another working folder ----------------------------------------------
@pytest.fixture(scope="module")
def audited(data, tmp_path_factory) -> dict[str, Path]:
    """An audit made with relative paths from the data's folder, then moved whole to another place."""
    env = {**ENV, "IDLEAK_CACHE": str(data["cache"])}
    done = idleak("audit", "-s", "syn", "-r", "real", "-o", "out", "--threshold", "0.6", cwd=data["root"], env=env)
    assert done.returncode == 0, done.stderr
    html = (data["root"] / "out" / "report.html").read_text()
    moved = tmp_path_factory.mktemp("moved") / "audit-out"
    shutil.copytree(data["root"] / "out", moved)
    return {"out": moved, "thumbs": html.count("data:image/jpeg"), "env": env}


def test_report_works_from_any_folder_and_after_out_is_moved(audited, data):
    for cwd in (data["elsewhere"], audited["out"]):
        done = idleak("report", audited["out"] if cwd != audited["out"] else ".", cwd=cwd)
        assert done.returncode == 0, done.stderr
        html = (audited["out"] / "report.html").read_text()
        assert audited["thumbs"] > 0 and html.count("data:image/jpeg") == audited["thumbs"]


def test_report_says_which_evidence_image_is_missing(audited, data, tmp_path):
    out = tmp_path / "out"
    shutil.copytree(audited["out"], out)
    summary = json.loads((out / "summary.json").read_text())
    gone = Path(summary["top_pairs"][0]["synthetic_path"])
    hidden = tmp_path / "hidden.pgm"
    shutil.move(gone, hidden)
    try:
        done = idleak("report", out, cwd=data["elsewhere"])
        review = idleak("review", out, "--port", "0", cwd=out)
    finally:
        shutil.move(hidden, gone)
    assert done.returncode == 2 and str(gone) in done.stderr and "Traceback" not in done.stderr, done.stderr
    assert review.returncode == 2 and str(gone) in review.stderr, review.stderr


def test_review_serves_images_from_inside_out_and_elsewhere(audited, monkeypatch, tmp_path):
    from _review_browser import ReviewServer

    for cwd in (audited["out"], tmp_path):
        monkeypatch.chdir(cwd)
        server = ReviewServer(Path("."), tmp_path / "review.log") if cwd == audited["out"] else \
            ReviewServer(audited["out"], tmp_path / "review.log")
        try:
            with urllib.request.urlopen(f"{server.base}/api/candidates?token={server.token}") as answer:
                pair = json.loads(answer.read())["items"][0]
            for side in ("left", "right"):
                url = f"{server.base}/api/image/{pair['id']}/{side}?token={server.token}"
                with urllib.request.urlopen(url) as image:
                    assert image.status == 200 and image.read(3) == b"\xff\xd8\xff"
        finally:
            server.kill()


def test_every_path_written_is_absolute(audited):
    summary = json.loads((audited["out"] / "summary.json").read_text())
    assert all(Path(v).is_absolute() for v in (summary["inputs"]["synthetic"], summary["inputs"]["real"],
                                               summary["inputs"]["store"]))
    with open(audited["out"] / "pairs.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert rows and all(Path(r["synthetic_path"]).is_absolute() and Path(r["real_path"]).is_absolute()
                        for r in rows)


def test_store_made_with_a_relative_path_works_from_elsewhere(data, tmp_path):
    work = tmp_path / "work"
    work.mkdir()
    shutil.copytree(data["real"], work / "real")
    done = idleak("embed", "real", "--store", "st", cwd=work)
    assert done.returncode == 0, done.stderr
    used = idleak("audit", "-s", data["syn"], "-r", work / "st", "-o", tmp_path / "out", "--threshold", "0.9",
                  "--cache", work / "st", cwd=data["elsewhere"])
    assert used.returncode == 0, used.stderr
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["n_real_faces"] == 24


def test_exclusions_match_by_content_from_anywhere_and_the_gate_holds_them_back(data, tmp_path):
    env = {**ENV, "IDLEAK_CACHE": str(data["cache"])}
    child = files(data["syn"])[0]
    lists = tmp_path / "lists"
    lists.mkdir()
    moved = lists / "copy-of-child.pgm"  # listed under another path: matched by its content
    shutil.copyfile(child, moved)
    (lists / "review_excluded.csv").write_text("path,reason\ncopy-of-child.pgm,child\nnot-here.jpg,child\n")
    out = tmp_path / "gate"
    done = idleak("gate", "-s", data["syn"], "-r", data["real"], "-o", out, "--threshold", "0.99",
                  "--exclude", lists / "review_excluded.csv", cwd=data["elsewhere"], env=env)
    assert done.returncode == 0, done.stderr
    assert "1 of 2 exclusions matched" in done.stdout
    summary = json.loads((out / "summary.json").read_text())
    assert summary["exclusions"]["n_matched"] == 1 and summary["exclusions"]["n_entries"] == 2
    with open(out / "accepted.csv", newline="") as handle:
        accepted = {r["path"] for r in csv.DictReader(handle)}
    with open(out / "rejected.csv", newline="") as handle:
        rejected = {r["path"]: r["reason"] for r in csv.DictReader(handle)}
    assert str(child) not in accepted and rejected[str(child)] == "child"
    assert "child: 1" in done.stdout  # the actual reason, not "(no usable face)"
    (lists / "nothing.csv").write_text("path,reason\nnot-here.jpg,child\n")
    none = idleak("gate", "-s", data["syn"], "-r", data["real"], "-o", out, "--threshold", "0.99",
                  "--exclude", lists / "nothing.csv", cwd=data["elsewhere"], env=env)
    assert none.returncode == 2 and "none of its 1 entries matched" in none.stderr, none.stderr


def test_symlinks_loops_fifos_and_odd_files_are_listed_with_their_reason(data, tmp_path):
    env = {**ENV, "IDLEAK_CACHE": str(data["cache"])}
    real = tmp_path / "real"
    real.mkdir()
    for person in sorted(data["real"].iterdir()):
        (real / person.name).symlink_to(person, target_is_directory=True)  # a REAL made only of links
    loops = tmp_path / "loops"
    (loops / "p").mkdir(parents=True)
    shutil.copyfile(files(data["syn"])[0], loops / "p" / "a.pgm")  # a face not already in REAL
    (loops / "p" / "back").symlink_to(loops, target_is_directory=True)
    (real / "s_loop").symlink_to(loops / "p", target_is_directory=True)
    syn = tmp_path / "syn"
    shutil.copytree(data["syn"], syn)
    os.mkfifo(syn / "g1" / "fifo.jpg")  # would block for ever if opened
    (syn / "g1" / "self.jpg").symlink_to(syn / "g1" / "self.jpg")
    from PIL import Image

    Image.open(files(data["syn"])[1]).convert("RGB").save(tmp_path / "whole.jpg", quality=90)
    whole = (tmp_path / "whole.jpg").read_bytes()
    (syn / "g2" / "truncated.jpg").write_bytes(whole[: len(whole) // 2])
    (syn / "face.jpg").mkdir()  # a folder named like an image: scanned as a folder (an identity), said so
    shutil.copyfile(files(data["syn"])[2], syn / "face.jpg" / "x.pgm")
    out = tmp_path / "out"
    done = idleak("audit", "-s", syn, "-r", real, "-o", out, "--threshold", "0.9", cwd=data["elsewhere"], env=env,
                  timeout=300)
    assert done.returncode == 0, done.stderr
    with open(out / "excluded.csv", newline="") as handle:
        rows = [(r["path"], r["reason"]) for r in csv.DictReader(handle)]
    reasons = {Path(path).name: reason for path, reason in rows}
    assert reasons["fifo.jpg"] == "not_a_file" and reasons["self.jpg"] == "symlink_loop"
    assert reasons["truncated.jpg"] == "truncated"
    assert [reason for path, reason in rows if "/back" in path] == ["symlink_loop"]  # the loop, listed once
    summary = json.loads((out / "summary.json").read_text())
    assert summary["n_real_faces"] == 25  # 24 behind links + the one in the looping folder
    assert any("face.jpg" in w for w in summary["warnings"]) and "face.jpg" in done.stderr


def test_unreadable_folders_are_listed_not_dropped(data, tmp_path):
    """As root every folder is readable, so the scan runs without root's permission bypass."""
    root = Path(os.environ.get("TMPDIR", "/tmp")) / f"idleak-unreadable-{os.getpid()}"
    shutil.rmtree(root, ignore_errors=True)
    shutil.copytree(data["real"], root / "real")
    os.chmod(root, 0o755)
    try:
        for path in [root / "real", *(root / "real").rglob("*")]:
            os.chmod(path, 0o755 if path.is_dir() else 0o644)
        os.chmod(root / "real" / "s2", 0o000)
        os.chmod(root / "real" / "s3" / "1.pgm", 0o000)
        # root without the capabilities that bypass file permissions (util-linux setpriv)
        drop = ["setpriv", "--inh-caps=-dac_override,-dac_read_search",
                "--bounding-set=-dac_override,-dac_read_search"] if os.geteuid() == 0 else []
        if drop and not shutil.which("setpriv"):
            pytest.fail("this test drops root's permission bypass with setpriv (util-linux): install util-linux")
        code = ("import json,sys; from idleak.sources import open_source; s = open_source(sys.argv[1], 'REAL'); "
                "print(json.dumps([len(s.records), s.excluded]))")
        done = subprocess.run([*drop, sys.executable, "-c", code, str(root / "real")], env=ENV,
                              capture_output=True, text=True, cwd="/", timeout=120)
        assert done.returncode == 0, done.stderr
        n, excluded = json.loads(done.stdout)
        reasons = {Path(p).relative_to(root / "real").as_posix(): r for p, r, _ in excluded}
        assert n == 24 - 5 and reasons == {"s2": "unreadable", "s3/1.pgm": "unreadable"}
    finally:
        os.chmod(root / "real" / "s2", 0o755)
        shutil.rmtree(root, ignore_errors=True)


def test_identity_level_and_layout_warnings(data, tmp_path):
    env = {**ENV, "IDLEAK_CACHE": str(data["cache"])}
    nested = tmp_path / "real"
    shutil.copytree(data["real"], nested / "train")
    args = ["audit", "-s", data["syn"], "-r", nested, "--threshold", "0.9"]
    flat = idleak(*args, "-o", tmp_path / "o1", cwd=data["elsewhere"], env=env)
    assert flat.returncode == 0, flat.stderr
    assert "'train'" in flat.stderr and "--identity-level 2" in flat.stderr
    deep = idleak(*args, "-o", tmp_path / "o2", "--identity-level", "2", cwd=data["elsewhere"], env=env)
    assert deep.returncode == 0, deep.stderr
    summary = json.loads((tmp_path / "o2" / "summary.json").read_text())
    assert summary["n_real_identities"] == 6 and not any("train" in w for w in summary["warnings"])


def test_out_of_range_arguments_are_one_line_errors(data, tmp_path):
    base = ["-s", data["syn"], "-r", data["real"], "-o", tmp_path / "o"]
    for args in (["audit", *base, "--threshold", "2"], ["audit", *base, "--top-k", "0"],
                 ["audit", *base, "--top-k", "-3"], ["audit", *base, "--alpha", "1.5"],
                 ["gate", *base, "--alpha", "0"], ["audit", *base, "--workers", "0"],
                 ["audit", *base, "--identity-level", "-1"], ["review", tmp_path, "--port", "70000"]):
        done = idleak(*args, cwd=data["elsewhere"])
        assert done.returncode == 2 and done.stderr.strip().startswith("error:"), (args, done.stderr)
        assert len(done.stderr.strip().splitlines()) == 1 and "Traceback" not in done.stderr
    version = idleak("--version", cwd=data["elsewhere"])
    assert version.returncode == 0 and version.stdout.startswith("idleak ")


def test_user_strings_are_printed_literally(data, tmp_path):
    env = {**ENV, "IDLEAK_CACHE": str(data["cache"])}
    out = tmp_path / "[red]x[/red]"
    done = idleak("audit", "-s", data["syn"], "-r", data["real"], "-o", out, "--threshold", "0.9",
                  cwd=data["elsewhere"], env=env)
    assert done.returncode == 0, done.stderr
    assert "[red]x[/red]/report.html" in done.stdout
    assert "see " not in done.stderr or (out / "excluded.csv").is_file()


def test_mia_with_too_few_people_gives_no_verdict(data, tmp_path):
    env = {**ENV, "IDLEAK_CACHE": str(data["cache"])}
    members, nonmembers = tmp_path / "members", tmp_path / "nonmembers"
    shutil.copytree(data["real"] / "s1", members / "s1")
    for person in ("s7", "s8"):
        shutil.copytree(data["syn"] / f"g{person[1:]}", nonmembers / person)
    out = tmp_path / "out"
    done = idleak("mia", "--members", members, "--nonmembers", nonmembers, "-g", data["syn"], "-o", out,
                  "--bootstrap", "50", cwd=data["elsewhere"], env=env)
    assert done.returncode == 0, done.stderr
    summary = json.loads((out / "summary.json").read_text())
    assert summary["verdict"] == "too_few_to_decide" and "TOO FEW TO DECIDE" in done.stdout
    assert summary["tpr_at_fpr"]["0.1"] is None and "not resolvable" in summary["tpr_at_fpr_null_reason"]["0.1"]


def test_a_file_over_the_time_limit_is_a_timeout_not_a_hang(data, tmp_path):
    """IDLEAK_FILE_TIMEOUT below what any decode takes: every file of a real run (2 worker processes) is given
    up as ``timeout``, and the run ends."""
    env = {**ENV, "IDLEAK_FILE_TIMEOUT": "0.0001"}
    store = tmp_path / "store"
    done = idleak("embed", data["syn"], "--store", store, "-j", "2", cwd=data["elsewhere"], env=env)
    assert done.returncode == 0, done.stderr
    assert "timeout: 24" in done.stderr, done.stderr
    rows = store_rows(store)
    assert set(rows["reason"]) == {"timeout"} and len(rows["reason"]) == 24
