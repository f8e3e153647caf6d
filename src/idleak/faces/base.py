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

    ``model`` is ``"dlib"`` or ``"onnx:PATH"``; ``options`` are backend settings: ``runtime``
    (dlib model: ``onnx`` port or ``dlib``'s own), ``device``, ``detector``, ``batch_size``,
    ``threads``, ``tta`` (dlib model: test-time augmentation) and, for ONNX models, ``mean``, ``std``, ``bgr``.
    """

    model: str = "dlib"
    options: tuple[tuple[str, object], ...] = field(default_factory=tuple)

    def option(self, name: str, default: object = None) -> object:
        return dict(self.options).get(name, default)


@dataclass
class FaceChip:
    """A found face before embedding: box, detector score, landmarks and its aligned RGB chip."""

    box: tuple[float, float, float, float]
    score: float
    landmarks: np.ndarray
    chip: np.ndarray  # (size, size, 3) uint8, or (views, size, size, 3) for test-time augmentation


class Embedder(ABC):
    """Detect, align and embed faces. Nothing outside ``idleak.faces`` touches a model's internals.

    Two stages: ``prepare`` (decode-side work: detection, landmarks, alignment, in worker
    processes) and ``embed_chips`` (the network). With ``batched`` the pipeline sends chips from
    the workers to one ``embed_chips`` call per batch in the parent process.
    """

    #: Identifies the model and preprocessing; stores are tied to it.
    model_id: str
    #: Embedding dimension.
    dim: int
    #: True when ``embed_chips`` runs an inference session that gains from batches.
    batched: bool = False
    #: A line for the user about the device actually used (empty when nothing to say).
    device_note: str = ""

    @abstractmethod
    def prepare(self, image: np.ndarray, aligned: bool = False) -> list[FaceChip]:
        """Every face in an RGB uint8 image with its aligned chip (empty when none is found).

        With ``aligned=True`` the image is taken to be one already aligned face crop: no
        detection, so small or blurry crops are still embedded.
        """

    @abstractmethod
    def embed_chips(self, chips: list[np.ndarray]) -> list[np.ndarray | str]:
        """A unit vector per chip, or the error text for a chip the model could not run."""

    def analyze(self, images: list[np.ndarray], aligned: bool = False) -> list[list[Face]]:
        """Every face in each RGB uint8 image, as a list per image (empty when none is found)."""
        found = [self.prepare(image, aligned) for image in images]
        flat = [face for faces in found for face in faces]
        vectors = iter(self.embed_chips([face.chip for face in flat]) if flat else [])
        results = []
        for faces in found:
            out = []
            for face in faces:
                vector = next(vectors)
                if isinstance(vector, str):
                    raise RuntimeError(vector)
                out.append(Face(face.box, face.score, face.landmarks, vector))
            results.append(out)
        return results

    def embed_aligned(self, images: list[np.ndarray]) -> np.ndarray:
        """Unit vectors ``(n, dim)`` for aligned face crops (one face per image)."""
        faces = self.analyze(images, aligned=True)
        return np.stack([f[0].vector for f in faces]) if faces else np.zeros((0, self.dim), np.float32)


def l2_normalize(vectors: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length (float32); zero rows stay zero."""
    vectors = np.asarray(vectors, dtype=np.float32)
    norms = np.linalg.norm(vectors, axis=-1, keepdims=True)
    return vectors / np.maximum(norms, 1e-12)
