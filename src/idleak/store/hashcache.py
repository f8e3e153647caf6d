"""Content hashes of input files, cached by (path, size, mtime_ns, inode) so an unchanged file is
never read again. One SQLite file per store (``STORE/filehash.sqlite``); safe for concurrent runs."""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Sequence
from pathlib import Path

_BATCH = 500


class HashCache:
    """``get(stats)`` -> cached hashes; ``put(entries)`` records new ones. Errors make it a no-op."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._db: sqlite3.Connection | None = None
        self.disabled = False

    def _connect(self) -> sqlite3.Connection | None:
        if self._db is None and not self.disabled:
            try:
                db = sqlite3.connect(self.path, timeout=60, isolation_level=None)
                db.execute("CREATE TABLE IF NOT EXISTS files (path TEXT PRIMARY KEY, size INTEGER, "
                           "mtime_ns INTEGER, inode INTEGER, hash TEXT)")
                self._db = db
            except sqlite3.Error:
                self.disabled = True  # a read-only store still works, it just hashes again
        return self._db

    def get(self, paths: Sequence[str], stats: Sequence[os.stat_result | None]) -> list[str | None]:
        """The cached hash of each file whose size, mtime and inode are unchanged; None otherwise."""
        out: list[str | None] = [None] * len(paths)
        db = self._connect()
        if db is None:
            return out
        where = {p: i for i, (p, s) in enumerate(zip(paths, stats)) if s is not None}
        keys = list(where)
        try:
            for start in range(0, len(keys), _BATCH):
                chunk = keys[start:start + _BATCH]
                marks = ",".join("?" * len(chunk))
                for path, size, mtime, inode, digest in db.execute(
                        f"SELECT path, size, mtime_ns, inode, hash FROM files WHERE path IN ({marks})", chunk):
                    i = where[path]
                    st = stats[i]
                    if (size, mtime, inode) == (st.st_size, st.st_mtime_ns, st.st_ino):
                        out[i] = digest
        except sqlite3.Error:
            self.disabled = True
        return out

    def put(self, entries: Sequence[tuple[str, os.stat_result, str]]) -> None:
        db = self._connect()
        if db is None or not entries:
            return
        try:
            with db:
                db.execute("BEGIN")
                db.executemany("INSERT OR REPLACE INTO files VALUES (?, ?, ?, ?, ?)",
                               [(p, s.st_size, s.st_mtime_ns, s.st_ino, h) for p, s, h in entries])
        except sqlite3.Error:
            self.disabled = True

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None
