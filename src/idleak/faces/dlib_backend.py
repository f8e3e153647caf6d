"""dlib's ResNet face model (128-d, public domain weights from ``face-recognition-models``).

Two runtimes compute the same descriptor from the same 150x150 chip (dlib's own chip extraction,
``get_face_chip(image, shape, 150, 0.25)``, as ``compute_face_descriptor`` does with no jitter):

* ``onnx`` (default): the network read from the ``.dat`` file by ``dlib_format`` and run as an
  ONNX graph (``dlib_onnx``) by onnxruntime in batches, on the CPU or a CUDA GPU;
* ``dlib``: dlib's own ``face_recognition_model_v1``, one chip at a time.

Their descriptors agree to cosine >= 0.9999 (bench/bench_embed.py checks every shared face), so
both write the same model id and share stores and the shipped calibration.
"""

from __future__ import annotations

import dlib
import numpy as np

from idleak.errors import ModelError
from idleak.faces import detect as det
from idleak.faces.base import Embedder, FaceChip, l2_normalize

#: Bump when preprocessing changes, so old stores are not mixed with new vectors.
PIPELINE_VERSION = 2
CHIP_SIZE, CHIP_PADDING = 150, 0.25
RESNET_FILE = "dlib_face_recognition_resnet_model_v1.dat"


class DlibEmbedder(Embedder):
    """Detection (HOG, CNN or both), 5-point landmarks, dlib's 150x150 chip, 128-d ResNet descriptor."""

    dim = 128
    #: The id with the default HOG detector (the shipped calibration is keyed by it).
    model_id = f"dlib_face_recognition_resnet_model_v1/sp5/hog/v{PIPELINE_VERSION}"

    def __init__(self, runtime: str = "onnx", device: str = "cpu", detector: str = "hog", batch_size: int = 64,
                 threads: int = 0, cache_root: str | None = None) -> None:
        det.check_runtime(runtime)
        if runtime == "dlib" and device == "cuda":
            raise ModelError("--device cuda needs --runtime onnx (dlib's own runtime here is CPU-only)")
        self.detector = det.check_detector(detector)
        self.runtime = runtime
        self.batch_size = max(1, int(batch_size))
        self.model_id = DlibEmbedder.model_id.replace("/hog/", f"/{self.detector}/")
        det.warm_up(self.detector, runtime, cache_root)  # built once here (about 1 s), not on the first image
        self._predictor = det.shape_predictor(5)
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
            faces.append(FaceChip(det.box_of(rect), score, det.points_of(shape), chip))
        return faces

    def embed_chips(self, chips: list[np.ndarray]) -> list[np.ndarray | str]:
        if not chips:
            return []
        if self._session is None:
            return [l2_normalize(np.asarray(self._net.compute_face_descriptor(chip), np.float32)) for chip in chips]
        return [r if isinstance(r, str) else l2_normalize(r) for r in self._session.run(chips)]

    def _refine(self, image: np.ndarray, shape: dlib.full_object_detection) -> dlib.full_object_detection:
        """For a crop with no detection: re-fit the landmarks in the box they imply (twice)."""
        height, width = image.shape[:2]
        for _ in range(2):
            rect = det.box_from_five_points(det.points_of(shape), width, height)
            shape = self._predictor(image, rect)
        return shape
