"""One onnxruntime session per device that embeds batches of aligned face chips.

``make_session`` is the only place a session is created; ``ChipSession`` runs the dlib ResNet port
and the user's own ONNX models (ArcFace/AdaFace 112x112) through it, and the ported MMOD face
detector (``dlib_mmod``) uses it directly (one pyramid canvas per call). A batch that fails (out of memory, a
provider error) is split in halves and retried; a single chip that still fails gets its error
back instead of a vector, so one bad face never costs the others.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np

from idleak.errors import ModelError

DEVICES = ("cpu", "cuda", "auto")
CUDA = "CUDAExecutionProvider"
CPU = "CPUExecutionProvider"


def providers_for(device: str) -> tuple[list[str], str]:
    """onnxruntime providers for ``--device``, and a note for the user (empty when nothing to say)."""
    import onnxruntime as ort

    if device not in DEVICES:
        raise ModelError(f"--device must be one of {', '.join(DEVICES)}, not {device!r}")
    available = ort.get_available_providers()
    if device == "cpu":
        return [CPU], ""
    if CUDA in available:
        return [CUDA, CPU], ""
    if device == "cuda":
        raise ModelError("--device cuda: onnxruntime has no CUDA provider here "
                         "(install the gpu extra, pip install 'idleak[gpu]', on a machine with an NVIDIA GPU)")
    return [CPU], "--device auto: no CUDA provider in onnxruntime, running on the CPU"


def make_session(path: str | Path, device: str = "cpu", threads: int = 0, label: str | None = None):
    """An onnxruntime session for ``path`` on ``device``, and the note printed for the user (or "")."""
    import onnxruntime as ort

    label = label or str(path)
    providers, note = providers_for(device)
    options = ort.SessionOptions()
    # Idle inference threads sleep instead of spinning: the worker processes need those cores.
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    if threads:
        options.intra_op_num_threads = int(threads)
    try:
        session = ort.InferenceSession(str(path), options, providers=providers)
    except Exception as exc:  # noqa: BLE001 - onnxruntime raises several private types
        raise ModelError(f"{label}: not a usable ONNX model ({_first_line(exc)})") from None
    if device == "cuda" and session.get_providers()[0] != CUDA:
        raise ModelError(f"--device cuda: the CUDA provider failed to load for {label}")
    if device == "auto" and providers[0] == CUDA and session.get_providers()[0] != CUDA:
        note = "--device auto: the CUDA provider failed to load, running on the CPU"
    if note:
        print(f"idleak: {note}", file=sys.stderr)
    return session, note


class ChipSession:
    """Batched inference of a ``(N, ...) -> (N, D)`` ONNX model on one device.

    ``preprocess`` turns a list of chips (uint8 HxWx3 RGB) into the model's input array.
    """

    def __init__(self, path: str | Path, device: str = "cpu", threads: int = 0, batch_size: int = 64,
                 preprocess: Callable[[list[np.ndarray]], np.ndarray] | None = None, label: str | None = None) -> None:
        self.path = str(path)
        self.label = label or self.path
        self.session, self.note = make_session(path, device=device, threads=threads, label=self.label)
        self.device = "cuda" if self.session.get_providers()[0] == CUDA else "cpu"
        first = self.session.get_inputs()[0]
        self.input_name, self.input_shape = first.name, first.shape
        self.fixed_batch = self.input_shape[0] if isinstance(self.input_shape[0], int) else None
        self.batch_size = self.fixed_batch or max(1, int(batch_size))
        self.preprocess = preprocess or (lambda chips: np.stack(chips))

    def run_batch(self, chips: list[np.ndarray]) -> np.ndarray:
        """Raw outputs ``(len(chips), D)`` of one inference call (no splitting, errors raised)."""
        pad = 0
        if self.fixed_batch and len(chips) < self.fixed_batch:
            pad = self.fixed_batch - len(chips)
            chips = chips + [chips[-1]] * pad
        out = self.session.run(None, {self.input_name: self.preprocess(chips)})[0]
        out = np.asarray(out)
        if out.ndim != 2 or out.shape[0] != len(chips):
            raise ModelError(f"{self.label}: output must have shape (N, D), got {tuple(out.shape)}")
        return out[: len(chips) - pad].astype(np.float32)

    def run(self, chips: list[np.ndarray]) -> list[np.ndarray | str]:
        """A raw output row per chip, or the error text for a chip that could not be run."""
        results: list[np.ndarray | str] = []
        for start in range(0, len(chips), self.batch_size):
            results.extend(self._run_shrinking(chips[start:start + self.batch_size]))
        return results

    def _run_shrinking(self, chips: list[np.ndarray]) -> list[np.ndarray | str]:
        try:
            return list(self.run_batch(chips))
        except ModelError:
            raise
        except Exception as exc:  # noqa: BLE001 - out of memory and provider failures: shrink and retry
            if len(chips) == 1 or self.fixed_batch:
                return [_first_line(exc)] * len(chips)
            half = len(chips) // 2
            if self.batch_size > half:
                self.batch_size = half  # later batches start at the size that worked
                print(f"idleak: inference batch failed ({_first_line(exc)[:80]}); batch size now {half}",
                      file=sys.stderr)
            return self._run_shrinking(chips[:half]) + self._run_shrinking(chips[half:])


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return (text.splitlines()[0] if text else type(exc).__name__)[:200]
