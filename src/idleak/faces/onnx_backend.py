"""Bring-your-own ONNX face model (ArcFace / AdaFace style, 112x112 input) through onnxruntime."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

from idleak.errors import ModelError
from idleak.faces import detect as det
from idleak.faces.align import align_arcface
from idleak.faces.base import Embedder, FaceChip, l2_normalize

PIPELINE_VERSION = 1
#: Smallest embedding a face model may produce.
MIN_DIM = 16
#: Probe faces whose embeddings must differ (see ``validate``).
N_PROBES = 4


class OnnxEmbedder(Embedder):
    """Detection + 68-point landmarks -> ArcFace 5-point alignment -> batched ONNX inference.

    Pixels are fed as ``(x - mean) / std`` in NCHW float32, RGB unless ``bgr``; the model's first
    input must accept ``(N, 3, size, size)`` and its first output gives ``(N, dim)``.
    """

    batched = True

    def __init__(self, path: str, mean: float = 127.5, std: float = 127.5, bgr: bool = False,
                 batch_size: int = 32, threads: int = 0, device: str = "cpu", detector: str = "hog") -> None:
        from idleak.faces.runtime import ChipSession

        file = Path(path)
        if not file.is_file():
            raise ModelError(f"ONNX model file not found: {path}")
        self.mean, self.std, self.bgr = float(mean), float(std), bool(bgr)
        self._session = ChipSession(file, device=device, threads=threads, batch_size=batch_size,
                                    preprocess=self.preprocess, label=path)
        self.device_note = self._session.note
        shape = self._session.input_shape
        if len(shape) != 4 or (isinstance(shape[1], int) and shape[1] != 3):
            raise ModelError(f"{path}: expected an input of shape (N, 3, H, W), got {shape}")
        self.size = shape[2] if isinstance(shape[2], int) else 112
        self.batch_size = self._session.batch_size
        self.detector = det.check_detector(detector)
        self.dim = self.validate(path)
        digest = hashlib.sha256(file.read_bytes()).hexdigest()[:16]
        order = "bgr" if self.bgr else "rgb"
        found = "hog68" if self.detector == "hog" else f"{self.detector}68"
        self.model_id = f"onnx:{digest}/{self.size}/{order}/{self.mean:g}/{self.std:g}/{found}/v{PIPELINE_VERSION}"
        self._predictor = det.shape_predictor(68)
        det.warm_up(self.detector)

    def validate(self, path: str) -> int:
        """The embedding size, after checking the model on a few different probe faces.

        Output must be ``(N, D)`` with ``D >= 16``, finite, and not the same vector for different
        faces (a degenerate model would make every audit say "no leak").
        """
        probes = probe_faces(self.size)
        step = self._session.fixed_batch or len(probes)
        try:
            vectors = np.concatenate([self._session.run_batch(probes[i:i + step]) for i in range(0, len(probes), step)])
        except ModelError:
            raise
        except Exception as exc:  # noqa: BLE001 - onnxruntime raises several private types
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ModelError(f"{path}: fails on probe faces ({first[:160]})") from None
        if vectors.shape[1] < MIN_DIM:
            raise ModelError(f"{path}: embeddings have {vectors.shape[1]} dimensions, need at least {MIN_DIM}")
        if not np.isfinite(vectors).all():
            raise ModelError(f"{path}: gives non-finite embeddings (NaN or inf) for probe faces")
        unit = l2_normalize(vectors)
        cos = unit @ unit.T
        if np.linalg.norm(vectors, axis=1).min() < 1e-6 or cos[np.triu_indices(len(unit), 1)].min() > 0.9999:
            raise ModelError(f"{path}: gives the same embedding for different faces (degenerate model)")
        return int(vectors.shape[1])

    def preprocess(self, crops: list[np.ndarray]) -> np.ndarray:
        """Aligned RGB uint8 crops to the normalised NCHW float32 batch the model takes."""
        batch = np.stack(crops).astype(np.float32)
        if self.bgr:
            batch = batch[..., ::-1]
        batch = (batch - self.mean) / self.std
        return np.ascontiguousarray(batch.transpose(0, 3, 1, 2))

    def embed_chips(self, chips: list[np.ndarray]) -> list[np.ndarray | str]:
        return [r if isinstance(r, str) else l2_normalize(r) for r in self._session.run(chips)] if chips else []

    def embed_crops(self, crops: list[np.ndarray]) -> np.ndarray:
        """Unit vectors for aligned ``size x size`` RGB crops, run in batches."""
        if not crops:
            return np.zeros((0, self.dim), np.float32)
        out = self.embed_chips(crops)
        bad = [r for r in out if isinstance(r, str)]
        if bad:
            raise ModelError(f"{self._session.label}: inference failed ({bad[0]})")
        return np.stack(out)

    def prepare(self, image: np.ndarray, aligned: bool = False) -> list[FaceChip]:
        if aligned:
            h, w = image.shape[:2]
            box = (0.0, 0.0, float(w - 1), float(h - 1))
            return [FaceChip(box, float("nan"), np.zeros((5, 2), np.float32), _resize(image, self.size))]
        faces = []
        for rect, score in det.detect(image, self.detector):
            points = det.five_points_from_68(det.points_of(self._predictor(image, rect)))
            faces.append(FaceChip(det.box_of(rect), score, points, align_arcface(image, points, self.size)))
        return faces


def probe_faces(size: int) -> list[np.ndarray]:
    """Deterministic face-like probes: a light oval with dark eyes and mouth at varied places and
    contrasts on different backgrounds. Any model that sees pixels tells them apart."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    probes = []
    for k in range(N_PROBES):
        rng = np.random.default_rng(1000 + k)
        background = rng.uniform(0, 255, 3)
        skin = np.array([200 - 30 * k, 160 - 10 * k, 130 + 20 * k], np.float32)
        image = np.empty((size, size, 3), np.float32)
        image[:] = background
        face = ((xx - 0.5) / (0.33 + 0.03 * k)) ** 2 + ((yy - 0.55) / 0.45) ** 2 < 1
        image[face] = skin
        for ex in (0.36 + 0.02 * k, 0.64 - 0.02 * k):
            image[(xx - ex) ** 2 + (yy - 0.46) ** 2 < 0.003] = 30
        image[(np.abs(xx - 0.5) < 0.12 + 0.02 * k) & (np.abs(yy - (0.78 - 0.02 * k)) < 0.02)] = 60
        image += rng.normal(0, 8, image.shape)
        probes.append(np.clip(image, 0, 255).astype(np.uint8))
    return probes


def _resize(image: np.ndarray, size: int) -> np.ndarray:
    if image.shape[0] == size and image.shape[1] == size:
        return image
    import cv2

    return cv2.resize(image, (size, size), interpolation=cv2.INTER_AREA)
