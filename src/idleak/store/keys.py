"""The store's on-disk key index: (content hash, aligned) -> the rows of that image.

A key is 17 bytes: the 16-byte BLAKE2b digest and ``a`` (aligned crop) or ``d`` (detected). Each
committed segment has a sorted key file and a value file (``row << 16 | n_rows``); once enough
segments are uncovered they are merged into one sorted run, so a lookup is one binary search in
the merged run plus one per recent segment. Files are memory-mapped: a lookup reads only the pages
the binary search touches.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

KEY_DTYPE = np.dtype("S17")
#: rows of one image are packed as ``first_row << ROW_SHIFT | n_rows``
ROW_SHIFT = 16


def make_keys(hashes: np.ndarray | list[str], aligned: bool | np.ndarray) -> np.ndarray:
    """17-byte keys for hex content hashes (one aligned flag for all, or one per hash)."""
    hashes = np.asarray(hashes, dtype="U32")
    n = len(hashes)
    out = np.zeros((n, 17), np.uint8)
    if n:
        hex_codes = hashes.view(np.uint32).reshape(n, 32).astype(np.uint8)
        nibbles = np.where(hex_codes >= ord("a"), hex_codes - ord("a") + 10, hex_codes - ord("0")).astype(np.uint8)
        out[:, :16] = (nibbles[:, 0::2] << 4) | nibbles[:, 1::2]
        flags = np.broadcast_to(np.asarray(aligned, dtype=bool), (n,))
        out[:, 16] = np.where(flags, ord("a"), ord("d"))
    return out.view(KEY_DTYPE).reshape(n)


def pack(first_row: np.ndarray, n_rows: np.ndarray) -> np.ndarray:
    return (np.asarray(first_row, np.int64) << ROW_SHIFT) | np.asarray(n_rows, np.int64)


def unpack(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    values = np.asarray(values, np.int64)
    return values >> ROW_SHIFT, values & ((1 << ROW_SHIFT) - 1)


def write_run(folder: Path, name: str, keys: np.ndarray, values: np.ndarray, write: callable) -> None:
    """Write a sorted run ``NAME.key.npy`` + ``NAME.val.npy`` with ``write(path, array)`` (atomic)."""
    order = np.argsort(keys, kind="stable")
    write(folder / f"{name}.val.npy", np.ascontiguousarray(values[order]))
    write(folder / f"{name}.key.npy", np.ascontiguousarray(keys[order]))


def read_run(folder: Path, name: str) -> tuple[np.ndarray, np.ndarray]:
    keys = np.load(folder / f"{name}.key.npy", mmap_mode="r")
    values = np.load(folder / f"{name}.val.npy", mmap_mode="r")
    if len(keys) != len(values) or keys.dtype != KEY_DTYPE:
        raise ValueError(f"key index run {name} is inconsistent")
    return keys, values


def search(runs: list[tuple[np.ndarray, np.ndarray]], keys: np.ndarray) -> np.ndarray:
    """Packed values for ``keys`` (-1 where absent); earlier runs win on duplicates."""
    found = np.full(len(keys), -1, np.int64)
    if not len(keys):
        return found
    for run_keys, run_values in runs:
        todo = np.flatnonzero(found < 0)
        if not len(todo) or not len(run_keys):
            continue
        pos = np.searchsorted(run_keys, keys[todo])
        pos_c = np.minimum(pos, len(run_keys) - 1)
        hit = (pos < len(run_keys)) & (run_keys[pos_c] == keys[todo])
        found[todo[hit]] = run_values[pos_c[hit]]
    return found


def merge(runs: list[tuple[np.ndarray, np.ndarray]]) -> tuple[np.ndarray, np.ndarray]:
    """One sorted run from several (a stable sort of sorted runs is close to a linear merge)."""
    keys = np.concatenate([np.asarray(k) for k, _ in runs]) if runs else np.zeros(0, KEY_DTYPE)
    values = np.concatenate([np.asarray(v) for _, v in runs]) if runs else np.zeros(0, np.int64)
    order = np.argsort(keys, kind="stable")
    keys, values = keys[order], values[order]
    if len(keys) > 1:  # a key in two runs (should not happen: commits check) keeps its first
        first = np.r_[True, keys[1:] != keys[:-1]]
        keys, values = keys[first], values[first]
    return keys, values
