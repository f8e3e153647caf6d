"""dlib's aligned 150x150 face chips, and dlib's own descriptor of a chip (for the torch port of its ResNet).

``face_chips``: per image, the chip of its largest HOG-detected face (``get_face_chip(image, shape,
150, 0.25)``, the chip ``compute_face_descriptor`` extracts with no jitter); an image with no
detection is taken as one already aligned crop (landmarks re-fitted in the box they imply, as the
embedder's aligned mode does). ``dlib_descriptors``: dlib's raw (unnormalised) 128-d descriptors of chips.
"""

from __future__ import annotations

from functools import lru_cache

import dlib
import numpy as np

from idleak.faces import detect as det
from idleak.faces.dlib_backend import RESNET_FILE, DlibEmbedder


@lru_cache(maxsize=1)
def _embedder() -> DlibEmbedder:
    return DlibEmbedder(runtime="dlib")


def face_chips(images: list[np.ndarray]) -> list[np.ndarray]:
    """One (150, 150, 3) uint8 chip per RGB uint8 image: the embedder's own chip of the largest face,
    or of the image as an aligned crop when nothing is detected (see the module docstring)."""
    embedder = _embedder()
    chips = []
    for image in images:
        faces = embedder.prepare(image) or embedder.prepare(image, aligned=True)
        largest = max(faces, key=lambda f: (f.box[2] - f.box[0]) * (f.box[3] - f.box[1]))
        chips.append(largest.chip)
    return chips


def dlib_descriptors(chips: list[np.ndarray]) -> np.ndarray:
    """dlib's own network on aligned chips: (N, 128) raw (unnormalised) descriptors."""
    net = dlib.face_recognition_model_v1(det.model_file(RESNET_FILE))
    return np.array([np.asarray(net.compute_face_descriptor(np.ascontiguousarray(chip)), np.float32)
                     for chip in chips], dtype=np.float32).reshape(len(chips), 128)
