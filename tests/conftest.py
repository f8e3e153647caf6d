"""Shared fixtures: paths into ../shared/data/faces, a session-wide embedding cache, a dlib workspace."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
FACES = Path(os.environ.get("IDLEAK_TEST_FACES", REPO.parent / "shared" / "data" / "faces"))


def pytest_configure(config: pytest.Config) -> None:
    if not FACES.is_dir():
        raise pytest.UsageError(f"test faces not found at {FACES} (set IDLEAK_TEST_FACES)")
    os.environ.setdefault("IDLEAK_CACHE", str(REPO / ".pytest_cache" / "idleak-cache-unused"))


@pytest.fixture(scope="session")
def faces_root() -> Path:
    """../shared/data/faces: orl/ (40 x 10 grey), johns/ (5 x 11 aligned chips), fr/ (6 ids), misc/ (edge cases)."""
    return FACES


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One embedding cache for the whole session, so each test image is embedded once."""
    return tmp_path_factory.mktemp("idleak-cache")


@pytest.fixture(scope="session")
def workspace(cache_dir: Path):
    """A dlib ``Workspace`` on the session cache (2 worker processes)."""
    from idleak.jobs.workspace import Workspace

    return Workspace("dlib", cache=cache_dir, workers=2)


def lfw_people(faces_root: Path, n: int, offset: int = 0) -> list[Path]:
    """``n`` LFW people (folders), every 11th in name order from ``offset``: a fixed, varied sample."""
    people = sorted(p for p in (faces_root / "lfw").iterdir() if p.is_dir())
    return people[offset::11][:n]


def damaged_copies(data: bytes, flip_at: int) -> dict[str, bytes]:
    """A model file's bytes truncated, emptied, with a trailing byte, and with one byte flipped."""
    return {
        "truncated.dat": data[: len(data) // 2],
        "empty.dat": b"",
        "trailing.dat": data + b"\x00",
        "flipped.dat": data[:flip_at] + bytes([data[flip_at] ^ 0xFF]) + data[flip_at + 1:],
    }


def orl_photos(faces_root: Path, subject: int) -> list[Path]:
    """The 10 photos of ORL subject ``subject`` (1..40) in numeric order."""
    return sorted((faces_root / "orl" / f"s{subject}").glob("*.pgm"), key=lambda p: int(p.stem))


@pytest.fixture(scope="session")
def planted(faces_root: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A planted-leak scenario from ORL, with a gallery large enough to state a 1% error rate.

    REAL = ORL subjects 1-20, photos 1-5, plus one photo each of 500 LFW people (``lfw_NAME``): an
    error rate of 1% per synthetic identity of 5 faces needs a null of at least 499 people. SYN (one sub-folder per synthetic identity):
    (a) ``leak_sN``: photos 6-10 of subjects 1-5 (other photos of REAL people: identity leak);
    (b) ``copy_sN``: crop / flip / colour / JPEG copies of photo 1 of subjects 6-10;
    (c) ``stranger_sN``: photos 1-2 of subjects 21-40 (people not in REAL).
    """
    from PIL import Image, ImageEnhance, ImageOps

    root = tmp_path_factory.mktemp("planted")
    real, syn = root / "real", root / "syn"
    for subject in range(1, 21):
        folder = real / f"s{subject}"
        folder.mkdir(parents=True)
        for photo in orl_photos(faces_root, subject)[:5]:
            (folder / photo.name).write_bytes(photo.read_bytes())
    for person in lfw_people(faces_root, 500):
        folder = real / f"lfw_{person.name}"
        folder.mkdir(parents=True)
        photo = sorted(person.glob("*.jpg"))[0]
        (folder / photo.name).write_bytes(photo.read_bytes())
    for subject in range(1, 6):
        folder = syn / f"leak_s{subject}"
        folder.mkdir(parents=True)
        for photo in orl_photos(faces_root, subject)[5:]:
            (folder / photo.name).write_bytes(photo.read_bytes())
    for subject in range(6, 11):
        folder = syn / f"copy_s{subject}"
        folder.mkdir(parents=True)
        image = Image.open(orl_photos(faces_root, subject)[0]).convert("RGB")
        w, h = image.size
        image.crop((4, 4, w - 4, h - 4)).resize((w, h)).save(folder / "crop.png")
        ImageOps.mirror(image).save(folder / "flip.png")
        ImageEnhance.Brightness(image).enhance(1.3).save(folder / "colour.png")
        image.save(folder / "jpeg.jpg", quality=30)
    for subject in range(21, 41):
        folder = syn / f"stranger_s{subject}"
        folder.mkdir(parents=True)
        for photo in orl_photos(faces_root, subject)[:2]:
            (folder / photo.name).write_bytes(photo.read_bytes())
    return {"root": root, "real": real, "syn": syn}
