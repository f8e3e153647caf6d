"""Helpers for the review-app tests: the review server as a real subprocess, and Debian's Chromium.

Chromium: ``/usr/bin/chromium`` (or $IDLEAK_CHROMIUM). If it is missing the test fails with a message
saying what to install (``.ci/run`` installs Debian's package before the tests; tests never do). Playwright's Python package drives it over CDP; its own
browser downloads (``playwright install``) are never used.
"""

from __future__ import annotations

import os
import queue
import re
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest

CHROMIUM = Path(os.environ.get("IDLEAK_CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
URL_LINE = re.compile(r"^(http://127\.0\.0\.1:(\d+))/\?token=([A-Za-z0-9_-]+)$")


def ensure_chromium() -> Path:
    """Path of a usable Chromium; the test fails with a message if it is missing (tests never install system
    packages: CI's ``.ci/run`` installs Debian's ``chromium`` before running the tests)."""
    if CHROMIUM.is_file():
        return CHROMIUM
    pytest.fail(f"the review-app browser test needs Debian's Chromium at {CHROMIUM}: run "
                "`apt-get install -y chromium` as root (.ci/run does), or set IDLEAK_CHROMIUM to a Chromium binary")


def sync_playwright():
    """Playwright's sync API (the ``playwright`` pip package); a clear failure if it is not installed."""
    try:
        from playwright.sync_api import sync_playwright as start
    except ImportError:
        pytest.fail("the review-app browser test needs the playwright package: pip install -e '.[browser]'")
    return start()


class ReviewServer:
    """``python -m idleak review OUT --port 0`` as a subprocess; ``url``, ``base`` and ``token`` once it listens."""

    def __init__(self, out: Path, log: Path, timeout: float = 60.0) -> None:
        self.log = open(log, "ab")
        self.process = subprocess.Popen([sys.executable, "-m", "idleak", "review", str(out), "--port", "0"],
                                        stdout=subprocess.PIPE, stderr=self.log, text=True)
        lines: queue.Queue[str] = queue.Queue()
        threading.Thread(target=lambda: lines.put(self.process.stdout.readline()), daemon=True).start()
        try:
            line = lines.get(timeout=timeout).strip()
        except queue.Empty:
            self.kill()
            raise AssertionError(f"idleak review printed no URL within {timeout:.0f} s; see {log}") from None
        match = URL_LINE.match(line)
        if not match:
            self.kill()
            raise AssertionError(f"idleak review printed {line!r}, not http://127.0.0.1:PORT/?token=TOKEN; see {log}")
        self.url, self.base, self.port, self.token = line, match.group(1), int(match.group(2)), match.group(3)

    def kill(self) -> None:
        """SIGKILL: no chance to flush or clean up, like a crash."""
        if self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=30)
        self.log.close()
