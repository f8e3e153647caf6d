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
    from idleak.api import Workspace

    return Workspace("dlib", cache=cache_dir, workers=2)
