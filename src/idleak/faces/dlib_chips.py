"""dlib's aligned 150x150 face chips, and dlib's own descriptor of a chip (for the torch port of its ResNet).

``face_chips``: per image, the chip of its largest HOG-detected face (``get_face_chip(image, shape,
150, 0.25)``, the chip ``compute_face_descriptor`` extracts with no jitter); an image with no
detection is taken as one already aligned crop (landmarks re-fitted in the box they imply, as the
embedder's aligned mode does). ``dlib_descriptors``: dlib's raw (unnormalised) 128-d descriptors of chips.
"""

from __future__ import annotations

import dlib
import numpy as np

from idleak.faces import detect as det

CHIP_SIZE, CHIP_PADDING = 150, 0.25
RESNET_FILE = "dlib_face_recognition_resnet_model_v1.dat"


def face_chips(images: list[np.ndarray]) -> list[np.ndarray]:
    """One (150, 150, 3) uint8 chip per RGB uint8 image (see the module docstring)."""
    predictor = det.shape_predictor(5)
    chips = []
    for image in images:
        found = det.detect(image)
        if found:
            rect = max(found, key=lambda item: item[0].area())[0]
            shape = predictor(image, rect)
        else:
            shape = predictor(image, det.full_frame(image))
            for _ in range(2):
                shape = predictor(image, det.box_from_five_points(det.points_of(shape), *image.shape[1::-1]))
        chips.append(np.asarray(dlib.get_face_chip(image, shape, CHIP_SIZE, CHIP_PADDING), dtype=np.uint8))
    return chips


def dlib_descriptors(chips: list[np.ndarray]) -> np.ndarray:
    """dlib's own network on aligned chips: (N, 128) raw descriptors."""
    net = dlib.face_recognition_model_v1(det.model_file(RESNET_FILE))
    return np.array([np.asarray(net.compute_face_descriptor(np.ascontiguousarray(chip)), np.float32)
                     for chip in chips], dtype=np.float32).reshape(len(chips), 128)
