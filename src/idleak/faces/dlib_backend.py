"""dlib's ResNet face model (128-d, public domain weights from ``face-recognition-models``).

Two runtimes compute the same descriptor from the same 150x150 chip (dlib's own chip extraction,
``get_face_chip(image, shape, 150, 0.25)``, as ``compute_face_descriptor`` does with no jitter):

* ``onnx`` (default): the network read from the ``.dat`` file by ``dlib_format`` and run as an
  ONNX graph (``dlib_onnx``) by onnxruntime in batches, on the CPU or a CUDA GPU;
* ``dlib``: dlib's own ``face_recognition_model_v1``, one chip at a time.

Their descriptors agree to cosine >= 0.9999 (bench/bench_embed.py checks every shared face), so
both write the same model id and share stores and the shipped calibration.

Test-time augmentation (``tta``, off by default) averages the raw descriptors of several views of a
face before normalising, as dlib's ``compute_face_descriptor(..., num_jitters)`` averages jittered
chips, but deterministic: ``flip`` the chip and its mirror image (2 network passes a face);
``flip68`` also the chip aligned on the 68 landmarks, and its mirror (4 passes). Vectors differ, so
the model id says so (``.../tta-flip/v2``). LFW 10-fold: none 98.87%, flip 99.07%, flip68 99.23%
(bench/RESULTS.md).
"""

from __future__ import annotations

import dlib
import numpy as np

from idleak.errors import ModelError
from idleak.faces import detect as det
from idleak.faces.base import Embedder, FaceChip, l2_normalize

#: Bump when preprocessing changes, so old stores are not mixed with new vectors.
PIPELINE_VERSION = 2
TTAS = ("none", "flip", "flip68")
CHIP_SIZE, CHIP_PADDING = 150, 0.25
RESNET_FILE = "dlib_face_recognition_resnet_model_v1.dat"


class DlibEmbedder(Embedder):
    """Detection (HOG, CNN or both), 5-point landmarks, dlib's 150x150 chip, 128-d ResNet descriptor."""

    dim = 128
    #: The id with the default HOG detector (the shipped calibration is keyed by it).
    model_id = f"dlib_face_recognition_resnet_model_v1/sp5/hog/v{PIPELINE_VERSION}"

    def __init__(self, runtime: str = "onnx", device: str = "cpu", detector: str = "hog", batch_size: int = 64,
                 threads: int = 0, cache_root: str | None = None, tta: str = "none") -> None:
        det.check_runtime(runtime)
        if tta not in TTAS:
            raise ModelError(f"--tta must be one of {', '.join(TTAS)}, not {tta!r}")
        if runtime == "dlib" and device == "cuda":
            raise ModelError("--device cuda needs --runtime onnx (dlib's own runtime here is CPU-only)")
        self.detector = det.check_detector(detector)
        self.runtime = runtime
        self.batch_size = max(1, int(batch_size))
        self.tta = tta
        self.model_id = DlibEmbedder.model_id.replace("/hog/", f"/{self.detector}/")
        if tta != "none":
            self.model_id = self.model_id.replace(f"/v{PIPELINE_VERSION}", f"/tta-{tta}/v{PIPELINE_VERSION}")
        det.warm_up(self.detector, runtime, cache_root)  # built once here (about 1 s), not on the first image
        self._predictor = det.shape_predictor(5)
        self._predictor68 = det.shape_predictor(68) if tta == "flip68" else None
        if runtime == "dlib":
            self._net = dlib.face_recognition_model_v1(det.model_file(RESNET_FILE))
            self._session = None
            self.batched = False
        else:
            from idleak.faces.dlib_onnx import cached_onnx
            from idleak.faces.runtime import ChipSession

            path = cached_onnx(det.model_file(RESNET_FILE), det.cache_root_or_default(cache_root))
            self._session = ChipSession(path, device=device, threads=threads, batch_size=batch_size,
                                        label=f"{RESNET_FILE} (ONNX port)")
            self.device_note = self._session.note
            self.batched = True

    def prepare(self, image: np.ndarray, aligned: bool = False) -> list[FaceChip]:
        found = [(det.full_frame(image), float("nan"))] if aligned else det.detect(image, self.detector, self.runtime)
        faces = []
        for rect, score in found:
            shape = self._predictor(image, rect)
            if aligned:
                shape = self._refine(image, shape)
            chip = np.asarray(dlib.get_face_chip(image, shape, CHIP_SIZE, CHIP_PADDING), dtype=np.uint8)
            if self._predictor68 is not None:  # a second view: the chip aligned on the 68 landmarks
                box = det.box_from_five_points(det.points_of(shape), *image.shape[1::-1]) if aligned else rect
                chip68 = dlib.get_face_chip(image, self._predictor68(image, box), CHIP_SIZE, CHIP_PADDING)
                chip = np.stack([chip, np.asarray(chip68, dtype=np.uint8)])
            faces.append(FaceChip(det.box_of(rect), score, det.points_of(shape), chip))
        return faces

    def embed_chips(self, chips: list[np.ndarray]) -> list[np.ndarray | str]:
        """A unit vector per face; a face's chip is one view (H, W, 3) or several (V, H, W, 3)."""
        if not chips:
            return []
        views = [chip[None] if chip.ndim == 3 else chip for chip in chips]
        if self.tta != "none":
            views = [np.concatenate([v, v[:, :, ::-1]]) for v in views]
        flat = [np.ascontiguousarray(view) for v in views for view in v]
        if self._session is None:
            raw = [np.asarray(self._net.compute_face_descriptor(view), np.float32) for view in flat]
        else:
            raw = self._session.run(flat)
        out, start = [], 0
        for v in views:
            mine, start = raw[start:start + len(v)], start + len(v)
            failed = next((r for r in mine if isinstance(r, str)), None)
            out.append(failed if failed is not None else l2_normalize(np.mean(mine, axis=0)))
        return out

    def _refine(self, image: np.ndarray, shape: dlib.full_object_detection) -> dlib.full_object_detection:
        """For a crop with no detection: re-fit the landmarks in the box they imply (twice)."""
        height, width = image.shape[:2]
        for _ in range(2):
            rect = det.box_from_five_points(det.points_of(shape), width, height)
            shape = self._predictor(image, rect)
        return shape
