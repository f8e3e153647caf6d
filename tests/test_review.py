"""The review app: a real server subprocess, real HTTP, and real headless Chromium driven with the keyboard."""

from __future__ import annotations

import csv
import http.client
import io
import json
import shutil
import sqlite3
from pathlib import Path

import httpx
import pytest
from PIL import Image
from typer.testing import CliRunner

from _review_browser import CHROMIUM_ARGS, ReviewServer, ensure_chromium, sync_playwright
from idleak.api import audit
from idleak.cli import app
from idleak.errors import IdleakError
from idleak.review.candidates import load_candidates, pair_id
from idleak.review.db import VerdictStore, review_counts

HOSTILE = '<img src=x onerror=alert(1)> "&amp;.pgm'


@pytest.fixture(scope="module")
def audit_out(planted, workspace, tmp_path_factory) -> Path:
    """An audit OUT folder: 10 leaks (subjects 1-2), 4 strangers and one stranger photo with a hostile file name."""
    root = tmp_path_factory.mktemp("review")
    syn = root / "syn"
    for name in ("leak_s1", "leak_s2", "stranger_s21", "stranger_s22"):
        shutil.copytree(planted["syn"] / name, syn / name)
    shutil.copy(planted["syn"] / "stranger_s24" / "1.pgm", syn / HOSTILE)
    out = root / "audit"
    audit(syn, planted["real"], out, workspace=workspace)
    return out


@pytest.fixture()
def servers(tmp_path):
    started: list[ReviewServer] = []

    def start(out: Path) -> ReviewServer:
        started.append(ReviewServer(out, tmp_path / "server.log"))
        return started[-1]

    yield start
    for server in started:
        server.kill()


def raw_get(server: ReviewServer, path: str, token: str | None = None) -> tuple[int, bytes]:
    """GET with the path sent byte for byte (no client-side normalisation of ../)."""
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    conn.putrequest("GET", path, skip_accept_encoding=True)
    if token:
        conn.putheader("X-Idleak-Token", token)
    conn.endheaders()
    response = conn.getresponse()
    body = response.read()
    conn.close()
    return response.status, body


@pytest.mark.slow
def test_requests_without_the_token_are_refused(audit_out, servers):
    server = servers(audit_out)
    pairs = load_candidates(audit_out)
    image = f"/api/image/{pairs.items[0].id}/left"
    with httpx.Client(base_url=server.base, timeout=30) as client:
        for path in ("/", "/api/info", "/api/candidates", image, "/static/app.js"):
            assert client.get(path).status_code == 401, path
        assert client.post("/api/verdict", json={"pair_id": pairs.items[0].id, "verdict": "match"}).status_code == 401
        wrong = "A" * len(server.token)
        assert client.get("/", params={"token": wrong}).status_code == 403
        assert client.get("/api/info", headers={"X-Idleak-Token": wrong}).status_code == 403
        assert client.get("/api/info", headers={"Authorization": f"Bearer {wrong}"}).status_code == 403
        assert client.get(image, params={"token": server.token[:-1]}).status_code == 403
        assert client.get("/api/info", headers={"Authorization": f"Bearer {server.token}"}).status_code == 200
        first = client.get("/", params={"token": server.token})
        assert first.status_code == 200 and "httponly" in first.headers["set-cookie"].lower()
        assert "script-src 'self'" in first.headers["content-security-policy"]
    assert VerdictStore(audit_out / "review.sqlite").verdicts() == {}  # nothing was written by the refused POST
    with httpx.Client(base_url=server.base, cookies=first.cookies, timeout=30) as browser_like:
        assert browser_like.get("/api/info").json()["total"] == len(pairs)  # the cookie alone is enough
        response = browser_like.get(image)
        assert response.status_code == 200 and response.headers["content-type"] == "image/jpeg"
        assert Image.open(io.BytesIO(response.content)).format == "JPEG"
        assert browser_like.post("/api/verdict", content=b"pair_id=x", headers={
            "Content-Type": "application/x-www-form-urlencoded"}).status_code == 415
        assert browser_like.post("/api/verdict", json={"pair_id": pairs.items[0].id, "verdict": "drop"}).status_code == 400
        assert browser_like.post("/api/verdict", json={"pair_id": "nope", "verdict": "match"}).status_code == 404


@pytest.mark.slow
def test_only_images_of_the_run_are_served_no_traversal(audit_out, servers):
    server = servers(audit_out)
    good = load_candidates(audit_out).items[0].id
    secrets_on_disk = [b"[project]", b"root:", b'"analysis"', b"SQLite format", b"synthetic_path"]
    probes = [
        "/static/../../pyproject.toml", "/static/..%2f..%2fpyproject.toml", "/static/%2e%2e/%2e%2e/summary.json",
        "/static/..%5c..%5csummary.json", "/static/app.js/../../summary.json", "/static/index.html%00.js",
        "/api/image/../../summary.json", "/api/image/%2e%2e%2f%2e%2e%2fetc%2fpasswd/left",
        f"/api/image/{good}/..%2f..%2fsummary.json", f"/api/image/{good}/%2fetc%2fpasswd",
        f"/api/image/{good}/../../../../etc/passwd", "/api/image/%2fetc%2fpasswd/left",
        "/api/image?path=/etc/passwd", "/summary.json", "/pairs.csv", "/review.sqlite", "/etc/passwd",
        "//etc/passwd", "/static//etc/passwd",
    ]
    for path in probes:
        status, body = raw_get(server, path, server.token)
        assert 400 <= status < 500, (path, status)
        assert not any(marker in body for marker in secrets_on_disk), path
    status, body = raw_get(server, f"/api/image/{good}/right", server.token)
    assert status == 200 and body[:2] == b"\xff\xd8"  # a JPEG re-encoded from a pair's image


def test_candidate_ids_are_stable_and_mia_pairs_are_read(tmp_path, faces_root):
    out = tmp_path / "mia"
    out.mkdir()
    (out / "summary.json").write_text(json.dumps({"analysis": "mia"}), encoding="utf-8")
    orl = faces_root / "orl"
    with open(out / "identities.csv", "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["identity", "member", "score", "n_over_threshold", "best_generated_path", "best_photo_path"])
        writer.writerow(["s3", "false", "0.91", "0", orl / "s9/1.pgm", orl / "s3/1.pgm"])
        writer.writerow(["s1", "true", "0.97", "4", orl / "s1/2.pgm", orl / "s1/1.pgm"])
        writer.writerow(["s2", "true", "0.5", "0", "", ""])  # no generated face: nothing to review
    pairs = load_candidates(out)
    assert [c.identity for c in pairs.items] == ["s1", "s3"]
    assert [c.flagged for c in pairs.items] == [True, False] and pairs.items[0].note == "member"
    assert pairs.items[0].id == pair_id("mia", str(orl / "s1/2.pgm"), str(orl / "s1/1.pgm"))
    store = VerdictStore(out / "review.sqlite")
    store.set(pairs.items[0].id, "match")
    store.set(pairs.items[1].id, "not_a_face")
    store.set(pairs.items[1].id, None)  # cleared again
    store.set("gone-from-this-run", "match")
    counts = review_counts(store.verdicts(), pairs)
    assert (counts["n_reviewed"], counts["confirmed"], counts["excluded"], counts["n_stale_verdicts"]) == (1, 1, 0, 1)
    assert counts["confirmed_identities"] == ["s1"] and "n_flagged_confirmed" not in counts
    with sqlite3.connect(out / "review.sqlite") as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert conn.execute("SELECT count(*) FROM history").fetchone()[0] == 4
    with pytest.raises(IdleakError, match="unknown verdict"):
        store.set(pairs.items[0].id, "maybe")
    (out / "summary.json").write_text(json.dumps({"analysis": "invert"}), encoding="utf-8")
    with pytest.raises(IdleakError, match="nothing to review"):
        load_candidates(out)


@pytest.mark.slow
def test_review_in_headless_chromium_survives_a_killed_server(audit_out, servers):
    chromium = ensure_chromium()
    runner = CliRunner()
    assert runner.invoke(app, ["report", str(audit_out)]).exit_code == 0
    summary_before = json.loads((audit_out / "summary.json").read_text(encoding="utf-8"))
    assert "review" not in summary_before and "Human review" not in (audit_out / "report.html").read_text()
    pairs = load_candidates(audit_out)
    total = len(pairs)
    hostile = next(i for i, c in enumerate(pairs.items) if Path(c.left_path).name == HOSTILE)
    assert hostile >= 5  # a stranger: below the leaks, so it is reached after the judged pairs

    server = servers(audit_out)
    with sync_playwright() as playwright:
        from playwright.sync_api import expect

        browser = playwright.chromium.launch(executable_path=str(chromium), args=CHROMIUM_ARGS)
        page = browser.new_page()
        page.goto(server.url)
        expect(page.locator("body")).to_have_attribute("data-ready", "1")
        position, verdict = page.locator("#position"), page.locator("#verdict")
        expect(position).to_have_text(f"1 / {total}")
        assert "token" not in page.url  # dropped from the address bar once the cookie is set
        expect(page.locator("#flag")).to_have_text("above threshold")
        expect(page.locator("#left-label")).to_have_text(pairs.items[0].left_label)
        assert page.locator("#left-img").evaluate("img => img.decode().then(() => img.naturalWidth)") > 0

        for i, key in enumerate(["m", "n", "u", "c", "f"]):
            page.keyboard.press(key)
            expect(position).to_have_text(f"{i + 2} / {total}")
        page.keyboard.press("k")
        expect(position).to_have_text(f"5 / {total}")
        expect(verdict).to_have_text("excluded: not a face")
        page.keyboard.press("ArrowLeft")
        expect(verdict).to_have_text("excluded: child")
        page.keyboard.press("m")  # change pair 4 from child to match; moves on
        expect(position).to_have_text(f"5 / {total}")
        expect(page.locator("#reviewed")).to_have_text("5")
        expect(page.locator("#confirmed")).to_have_text("2")

        for _ in range(hostile - 4):
            page.keyboard.press("j")
        expect(position).to_have_text(f"{hostile + 1} / {total}")
        expect(page.locator("#left-label")).to_contain_text(HOSTILE)  # shown as text ...
        assert page.locator('img[src="x"]').count() == 0  # ... never parsed as HTML
        assert page.locator("#left-img").evaluate("img => img.decode().then(() => img.naturalWidth)") > 0

        server.kill()
        page.keyboard.press("m")
        expect(page.locator("#status")).to_contain_text("NOT saved")
        expect(position).to_have_text(f"{hostile + 1} / {total}")

        server = servers(audit_out)  # a new process, a new token
        page.goto(server.url)
        expect(page.locator("body")).to_have_attribute("data-ready", "1")
        expect(position).to_have_text(f"6 / {total}")  # opens at the first pair without a verdict
        expect(page.locator("#reviewed")).to_have_text("5")
        expected = ["excluded: not a face", "match", "unsure", "not a match", "match"]
        for i, text in enumerate(expected):
            page.keyboard.press("ArrowUp")
            expect(position).to_have_text(f"{5 - i} / {total}")
            expect(verdict).to_have_text(text)
        browser.close()

    with sqlite3.connect(audit_out / "review.sqlite") as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    result = runner.invoke(app, ["report", str(audit_out)])
    assert result.exit_code == 0, result.output
    review = json.loads((audit_out / "summary.json").read_text(encoding="utf-8"))["review"]
    assert (review["n_reviewed"], review["confirmed"], review["rejected"], review["unsure"], review["excluded"]) == \
        (5, 2, 1, 1, 1)
    assert review["excluded_by_reason"] == {"not_a_face": 1}
    assert review["n_flagged_confirmed"] == 2  # the two confirmed pairs are leaks above the threshold
    assert review["confirmed_real_identities"] == len({pairs.items[0].identity, pairs.items[3].identity})
    html = (audit_out / "report.html").read_text(encoding="utf-8")
    assert "5 pairs reviewed: 2 confirmed as the same person, 1 not a match, 1 unsure, 1 excluded" in html
    with open(audit_out / "review_excluded.csv", newline="", encoding="utf-8") as handle:
        assert [{k: r[k] for k in ("path", "reason")} for r in csv.DictReader(handle)] == \
            [{"path": pairs.items[4].left_path, "reason": "not_a_face"}]
