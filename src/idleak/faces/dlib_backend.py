"""dlib's ResNet face model (128-d, public domain weights from ``face-recognition-models``)."""

from __future__ import annotations

import dlib
import numpy as np

from idleak.faces import detect as det
from idleak.faces.base import Embedder, Face, l2_normalize

#: Bump when preprocessing changes, so old stores are not mixed with new vectors.
PIPELINE_VERSION = 2


class DlibEmbedder(Embedder):
    """HOG detection, 5-point landmarks, dlib's 150x150 chip alignment, 128-d ResNet descriptor."""

    dim = 128
    model_id = f"dlib_face_recognition_resnet_model_v1/sp5/hog/v{PIPELINE_VERSION}"

    def __init__(self) -> None:
        det.hog_detector()  # built once here (about 1 s), not on the first image
        self._predictor = det.shape_predictor(5)
        self._net = dlib.face_recognition_model_v1(det.model_file("dlib_face_recognition_resnet_model_v1.dat"))

    def analyze(self, images: list[np.ndarray], aligned: bool = False) -> list[list[Face]]:
        results: list[list[Face]] = []
        for image in images:
            if aligned:
                found = [(det.full_frame(image), float("nan"))]
            else:
                found = det.detect(image)
            faces = []
            for rect, score in found:
                shape = self._predictor(image, rect)
                if aligned:
                    shape = self._refine(image, shape)
                vector = np.asarray(self._net.compute_face_descriptor(image, shape), dtype=np.float32)
                faces.append(Face(det.box_of(rect), score, det.points_of(shape), l2_normalize(vector)))
            results.append(faces)
        return results

    def _refine(self, image: np.ndarray, shape: dlib.full_object_detection) -> dlib.full_object_detection:
        """For a crop with no detection: re-fit the landmarks in the box they imply (twice)."""
        height, width = image.shape[:2]
        for _ in range(2):
            rect = det.box_from_five_points(det.points_of(shape), width, height)
            shape = self._predictor(image, rect)
        return shape
