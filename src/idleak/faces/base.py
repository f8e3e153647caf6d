"""The one face-model interface every backend implements, and the spec that names a backend."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field

import numpy as np


@dataclass
class Face:
    """One face found in an image: box (left, top, right, bottom), detector score, 5 landmarks, unit vector."""

    box: tuple[float, float, float, float]
    score: float
    landmarks: np.ndarray  # (5, 2) float32, in image pixels
    vector: np.ndarray  # (dim,) float32, L2-normalised

    @property
    def area(self) -> float:
        left, top, right, bottom = self.box
        return max(0.0, right - left) * max(0.0, bottom - top)


@dataclass(frozen=True)
class EmbedderSpec:
    """A picklable description of a face model, so worker processes can load their own copy.

    ``model`` is ``"dlib"`` or ``"onnx:PATH"``; ``options`` are backend settings (for ONNX:
    ``mean``, ``std``, ``bgr``, ``batch_size``).
    """

    model: str = "dlib"
    options: tuple[tuple[str, object], ...] = field(default_factory=tuple)

    def option(self, name: str, default: object = None) -> object:
        return dict(self.options).get(name, default)


class Embedder(ABC):
    """Detect, align and embed faces. Nothing outside ``idleak.faces`` touches a model's internals."""

    #: Identifies the model and preprocessing; stores are tied to it.
    model_id: str
    #: Embedding dimension.
    dim: int

    @abstractmethod
    def analyze(self, images: list[np.ndarray], aligned: bool = False) -> list[list[Face]]:
        """Every face in each RGB uint8 image, as a list per image (empty when none is found).

        With ``aligned=True`` each image is taken to be one already aligned face crop: no
        detection, so small or blurry crops are still embedded.
        """

    def embed_aligned(self, images: list[np.ndarray]) -> np.ndarray:
        """Unit vectors ``(n, dim)`` for aligned face crops (one face per image)."""
        faces = self.analyze(images, aligned=True)
        return np.stack([f[0].vector for f in faces]) if faces else np.zeros((0, self.dim), np.float32)


def l2_normalize(vectors: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length (float32); zero rows stay zero."""
    vectors = np.asarray(vectors, dtype=np.float32)
    norms = np.linalg.norm(vectors, axis=-1, keepdims=True)
    return vectors / np.maximum(norms, 1e-12)
