"""Errors idleak raises for bad input; the CLI turns them into one-line messages and exit code 2."""

from __future__ import annotations


class IdleakError(Exception):
    """A problem with what the user gave us (path, model, store, option). Message is one line."""


class ImageError(IdleakError):
    """One image could not be used; ``reason`` is a short machine-readable tag."""

    def __init__(self, path: str, reason: str, detail: str = "") -> None:
        self.path = path
        self.reason = reason
        self.detail = detail
        text = f"{path}: {reason}"
        if detail:
            text += f" ({detail})"
        super().__init__(text)


class StoreError(IdleakError):
    """The embedding store is missing, corrupt, or belongs to another model."""


class ModelError(IdleakError):
    """A face model could not be loaded or does not have the expected shape."""
