"""The read path: content hashes of records (cached by file identity) and their faces from a store."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np

from idleak.sources import Record
from idleak.store.core import EmbeddingStore
from idleak.store.hashcache import HashCache


@dataclass
class FaceSet:
    """Faces of one dataset: unit vectors plus, per face, where it came from."""

    vectors: np.ndarray
    paths: np.ndarray
    identities: np.ndarray  # object array; None where unlabelled
    hashes: np.ndarray
    boxes: np.ndarray
    det_scores: np.ndarray
    n_faces: np.ndarray
    excluded: list[tuple[str, str, str]] = field(default_factory=list)  # (path, reason, detail)

    def __len__(self) -> int:
        return len(self.vectors)

    @property
    def labelled(self) -> np.ndarray:
        return np.array([i is not None for i in self.identities], dtype=bool)

    def subset(self, mask: np.ndarray) -> FaceSet:
        idx = np.flatnonzero(mask)
        return FaceSet(self.vectors[idx], self.paths[idx], self.identities[idx], self.hashes[idx],
                       self.boxes[idx], self.det_scores[idx], self.n_faces[idx], list(self.excluded))


def file_hash(path: str) -> str:
    """Content hash of a file (BLAKE2b, 128 bits, hex)."""
    digest = hashlib.blake2b(digest_size=16)
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def hash_records(records: list[Record], threads: int = 8, cache: HashCache | None = None) -> list[str | None]:
    """Content hashes in record order; None for files that cannot be read. With ``cache``, a file whose
    (path, size, mtime_ns, inode) is unchanged is not read again."""
    records = list(records)

    def stat(record: Record) -> os.stat_result | None:
        try:
            return os.stat(record.path)
        except OSError:
            return None

    def one(record: Record) -> str | None:
        try:
            return file_hash(record.path)
        except OSError:
            return None

    with ThreadPoolExecutor(threads) as pool:
        if cache is None:
            return list(pool.map(one, records, chunksize=64))
        paths = [os.path.abspath(r.path) for r in records]
        stats = list(pool.map(stat, records, chunksize=256))
        hashes = cache.get(paths, stats)
        todo = [i for i, (h, s) in enumerate(zip(hashes, stats)) if h is None and s is not None]
        for i, digest in zip(todo, pool.map(one, [records[i] for i in todo], chunksize=64)):
            hashes[i] = digest
        cache.put([(paths[i], stats[i], hashes[i]) for i in todo if hashes[i] is not None])
    return hashes


def load_faces(
    records: Iterable[Record],
    store: EmbeddingStore,
    aligned: bool = False,
    faces: str = "largest",
    hashes: list[str | None] | None = None,
) -> FaceSet:
    """Faces of ``records`` from the store: the largest face per image, or every face (``faces="all"``).

    Reads only the store rows of these records (key index, then their metadata and vectors).
    """
    records = list(records)
    if hashes is None:
        hashes = hash_records(records, cache=store.file_hashes)
    present = np.array([h is not None for h in hashes], bool)
    first = np.full(len(records), -1, np.int64)
    count = np.zeros(len(records), np.int64)
    if present.any():
        f, c = store.lookup([h for h in hashes if h is not None], aligned)
        first[present], count[present] = f, c
    found = first >= 0
    meta = store.meta(first[found], ["reason", "detail"])
    reason = np.full(len(records), None, dtype=object)
    detail = np.full(len(records), None, dtype=object)
    reason[found], detail[found] = meta["reason"], meta["detail"]
    excluded: list[tuple[str, str, str]] = []
    owners: list[np.ndarray] = []
    rows: list[np.ndarray] = []
    for number, record in enumerate(records):
        if not present[number]:
            excluded.append((record.path, "missing" if not os.path.exists(record.path) else "unreadable", ""))
        elif not found[number]:
            excluded.append((record.path, "not_embedded", "not in the store"))
        elif reason[number]:
            excluded.append((record.path, str(reason[number]), str(detail[number] or "")))
    ok = np.flatnonzero(found & np.array([not r for r in reason], bool))
    multi = ok[count[ok] > 1]
    single = ok[count[ok] == 1]
    owners.append(single)
    rows.append(first[single])
    if len(multi):
        spans = np.concatenate([np.arange(first[i], first[i] + count[i]) for i in multi])
        span_owner = np.repeat(multi, count[multi])
        if faces == "largest":
            boxes = store.meta(spans, ["box"])["box"]
            area = np.nan_to_num((boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1]), nan=-1.0)
            order = np.lexsort((-area, span_owner))
            keep = order[np.r_[True, span_owner[order][1:] != span_owner[order][:-1]]]
            spans, span_owner = spans[keep], span_owner[keep]
        owners.append(span_owner)
        rows.append(spans)
    own = np.concatenate(owners)
    sel = np.concatenate(rows)
    order = np.lexsort((sel, own))  # record order, then face order
    own, sel = own[order], sel[order]
    meta = store.meta(sel, ["hash", "box", "det_score", "n_faces"])
    return FaceSet(
        vectors=store.vectors(sel),
        paths=np.array([records[i].path for i in own], dtype=object),
        identities=np.array([records[i].identity for i in own], dtype=object),
        hashes=np.asarray(meta["hash"], dtype=str) if len(sel) else np.array([], dtype=str),
        boxes=np.asarray(meta["box"], np.float32).reshape(-1, 4),
        det_scores=np.asarray(meta["det_score"], np.float32),
        n_faces=np.asarray(meta["n_faces"], np.int64),
        excluded=excluded,
    )
