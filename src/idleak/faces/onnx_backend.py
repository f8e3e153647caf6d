"""Bring-your-own ONNX face model (ArcFace / AdaFace style, 112x112 input) through onnxruntime."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

from idleak.errors import ModelError
from idleak.faces import detect as det
from idleak.faces.align import align_arcface
from idleak.faces.base import Embedder, Face, l2_normalize

PIPELINE_VERSION = 1


class OnnxEmbedder(Embedder):
    """HOG detection + 68-point landmarks -> ArcFace 5-point alignment -> batched ONNX inference.

    Pixels are fed as ``(x - mean) / std`` in NCHW float32, RGB unless ``bgr``; the model's first
    input must accept ``(N, 3, size, size)`` and its first output gives ``(N, dim)``.
    """

    def __init__(self, path: str, mean: float = 127.5, std: float = 127.5, bgr: bool = False,
                 batch_size: int = 32, threads: int = 0) -> None:
        import onnxruntime as ort

        file = Path(path)
        if not file.is_file():
            raise ModelError(f"ONNX model file not found: {path}")
        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
        try:
            self._session = ort.InferenceSession(str(file), options, providers=["CPUExecutionProvider"])
        except Exception as exc:  # noqa: BLE001 - onnxruntime raises several private types
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ModelError(f"{path}: not a usable ONNX model ({first[:160]})") from None
        inputs = self._session.get_inputs()
        shape = inputs[0].shape
        if len(shape) != 4 or (isinstance(shape[1], int) and shape[1] != 3):
            raise ModelError(f"{path}: expected an input of shape (N, 3, H, W), got {shape}")
        self.size = shape[2] if isinstance(shape[2], int) else 112
        self._input = inputs[0].name
        self._batch_fixed = shape[0] if isinstance(shape[0], int) else None
        out_shape = self._session.get_outputs()[0].shape
        self.dim = out_shape[-1] if isinstance(out_shape[-1], int) else self._probe_dim()
        self.mean, self.std, self.bgr = float(mean), float(std), bool(bgr)
        self.batch_size = self._batch_fixed or max(1, int(batch_size))
        digest = hashlib.sha256(file.read_bytes()).hexdigest()[:16]
        order = "bgr" if self.bgr else "rgb"
        self.model_id = f"onnx:{digest}/{self.size}/{order}/{self.mean:g}/{self.std:g}/hog68/v{PIPELINE_VERSION}"
        self._predictor = det.shape_predictor(68)
        det.hog_detector()

    def _probe_dim(self) -> int:
        probe = np.zeros((self._batch_fixed or 1, 3, self.size, self.size), np.float32)
        return int(self._session.run(None, {self._input: probe})[0].shape[-1])

    def preprocess(self, crops: list[np.ndarray]) -> np.ndarray:
        """Aligned RGB uint8 crops to the normalised NCHW float32 batch the model takes."""
        batch = np.stack(crops).astype(np.float32)
        if self.bgr:
            batch = batch[..., ::-1]
        batch = (batch - self.mean) / self.std
        return np.ascontiguousarray(batch.transpose(0, 3, 1, 2))

    def embed_crops(self, crops: list[np.ndarray]) -> np.ndarray:
        """Unit vectors for aligned ``size x size`` RGB crops, run in batches."""
        if not crops:
            return np.zeros((0, self.dim), np.float32)
        outputs = []
        for start in range(0, len(crops), self.batch_size):
            chunk = crops[start:start + self.batch_size]
            pad = 0
            if self._batch_fixed and len(chunk) < self._batch_fixed:
                pad = self._batch_fixed - len(chunk)
                chunk = chunk + [chunk[-1]] * pad
            out = self._session.run(None, {self._input: self.preprocess(chunk)})[0]
            out = np.asarray(out, dtype=np.float32).reshape(len(chunk), -1)
            outputs.append(out[: len(chunk) - pad])
        return l2_normalize(np.concatenate(outputs))

    def analyze(self, images: list[np.ndarray], aligned: bool = False) -> list[list[Face]]:
        crops: list[np.ndarray] = []
        pending: list[tuple[int, tuple, float, np.ndarray]] = []
        for index, image in enumerate(images):
            if aligned:
                crop = _resize(image, self.size)
                h, w = image.shape[:2]
                crops.append(crop)
                box = (0.0, 0.0, float(w - 1), float(h - 1))
                pending.append((index, box, float("nan"), np.zeros((5, 2), np.float32)))
                continue
            for rect, score in det.detect(image):
                points = det.five_points_from_68(det.points_of(self._predictor(image, rect)))
                crops.append(align_arcface(image, points, self.size))
                pending.append((index, det.box_of(rect), score, points))
        vectors = self.embed_crops(crops)
        results: list[list[Face]] = [[] for _ in images]
        for (index, box, score, points), vector in zip(pending, vectors):
            results[index].append(Face(box, score, points, vector))
        return results


def _resize(image: np.ndarray, size: int) -> np.ndarray:
    if image.shape[0] == size and image.shape[1] == size:
        return image
    import cv2

    return cv2.resize(image, (size, size), interpolation=cv2.INTER_AREA)
