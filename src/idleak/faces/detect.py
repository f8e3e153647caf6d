"""Face detection (dlib HOG, dlib's MMOD CNN, or HOG then CNN) and landmarks, shared by every backend."""

from __future__ import annotations

import importlib.util
from functools import lru_cache
from pathlib import Path

import dlib
import numpy as np

from idleak.errors import ModelError

#: Images whose longer side exceeds this are shrunk for detection only (boxes map back).
DETECT_MAX_SIDE = 1600
#: HOG finds faces of about 80 px and larger; small images are upsampled until this side.
DETECT_MIN_SIDE = 400
MAX_UPSAMPLE = 2


def models_dir() -> Path:
    """Folder of the dlib model files shipped by the ``face-recognition-models`` package."""
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        raise ModelError("the dlib face models are missing: pip install face-recognition-models")
    folder = Path(list(spec.submodule_search_locations)[0]) / "models"
    if not folder.is_dir():
        raise ModelError(f"dlib model folder not found: {folder}")
    return folder


def model_file(name: str) -> str:
    path = models_dir() / name
    if not path.is_file():
        raise ModelError(f"dlib model file not found: {path}")
    return str(path)


DETECTORS = ("hog", "cnn", "auto")


def check_detector(detector: str) -> str:
    if detector not in DETECTORS:
        raise ModelError(f"--detector must be one of {', '.join(DETECTORS)}, not {detector!r}")
    return detector


@lru_cache(maxsize=1)
def hog_detector() -> dlib.fhog_object_detector:
    return dlib.get_frontal_face_detector()


MMOD_FILE = "mmod_human_face_detector.dat"
RUNTIMES = ("onnx", "dlib")


@lru_cache(maxsize=1)
def dlib_cnn_detector() -> dlib.cnn_face_detection_model_v1:
    """dlib's own MMOD CNN face detector (``mmod_human_face_detector.dat``), run by dlib on the CPU."""
    return dlib.cnn_face_detection_model_v1(model_file(MMOD_FILE))


_PORT: list = []


def cnn_port(cache_root: str | Path | None = None):
    """The ported MMOD detector (``dlib_mmod.MmodDetector``), one per process: its ONNX graph is
    built once and cached under ``cache_root/models`` (default: the user cache)."""
    if not _PORT:
        from idleak.faces.dlib_mmod import MmodDetector

        _PORT.append(MmodDetector(model_file(MMOD_FILE), cache_root_or_default(cache_root)))
    return _PORT[0]


def cache_root_or_default(cache_root: str | Path | None) -> Path:
    """Where ported models are cached: ``cache_root``, else the user's cache root."""
    if cache_root:
        return Path(cache_root)
    from idleak.jobs.workspace import default_cache_root  # lazy: jobs import this package

    return default_cache_root()


def check_runtime(runtime: str) -> str:
    if runtime not in RUNTIMES:
        raise ModelError(f"--runtime must be 'onnx' or 'dlib', not {runtime!r}")
    return runtime


def warm_up(detector: str, runtime: str = "onnx", cache_root: str | Path | None = None) -> None:
    """Build the detectors ``detector`` needs, so workers forked later inherit them."""
    if detector in ("hog", "auto"):
        hog_detector()
    if detector in ("cnn", "auto"):
        if check_runtime(runtime) == "dlib":
            dlib_cnn_detector()
        else:
            cnn_port(cache_root)


@lru_cache(maxsize=2)
def shape_predictor(points: int) -> dlib.shape_predictor:
    name = {5: "shape_predictor_5_face_landmarks.dat", 68: "shape_predictor_68_face_landmarks.dat"}[points]
    return dlib.shape_predictor(model_file(name))


def upsample_for(height: int, width: int) -> int:
    """How many 2x upsamplings HOG needs so a face filling a small image is found (92x112 -> 2)."""
    side = min(height, width)
    times = 0
    while side < DETECT_MIN_SIDE and times < MAX_UPSAMPLE:
        side *= 2
        times += 1
    return times


def detect(image: np.ndarray, detector: str = "hog", runtime: str = "onnx") -> list[tuple[dlib.rectangle, float]]:
    """Face rectangles in image coordinates with detector scores, best first.

    ``hog``: dlib's HOG detector; ``cnn``: the MMOD CNN, ported (``runtime="onnx"``, the default:
    ``dlib_mmod``, same boxes as dlib's) or dlib's own (``runtime="dlib"``); ``auto``: HOG, then
    the CNN only where HOG finds nothing (side-lit, turned or small faces).
    """
    if detector == "auto":
        return detect(image, "hog") or detect(image, "cnn", runtime)
    height, width = image.shape[:2]
    scale = 1.0
    work = image
    if max(height, width) > DETECT_MAX_SIDE:
        scale = DETECT_MAX_SIDE / max(height, width)
        from PIL import Image

        small = Image.fromarray(image).resize((max(1, round(width * scale)), max(1, round(height * scale))))
        work = np.asarray(small)
    upsample = upsample_for(*work.shape[:2])
    if detector == "cnn" and check_runtime(runtime) == "dlib":
        found_raw = [(d.rect, float(d.confidence)) for d in dlib_cnn_detector()(work, upsample)]
    elif detector == "cnn":
        found_raw = [(dlib.rectangle(*box), score) for box, score in cnn_port()(work, upsample)]
    else:
        rects, scores, _ = hog_detector().run(work, upsample, 0.0)
        found_raw = [(rect, float(score)) for rect, score in zip(rects, scores)]
    found = []
    for rect, score in found_raw:
        if scale != 1.0:
            rect = dlib.rectangle(
                round(rect.left() / scale), round(rect.top() / scale),
                round(rect.right() / scale), round(rect.bottom() / scale),
            )
        found.append((rect, score))
    found.sort(key=lambda item: -item[1])
    return found


def full_frame(image: np.ndarray) -> dlib.rectangle:
    """The whole image as one face rectangle (for already aligned crops)."""
    height, width = image.shape[:2]
    return dlib.rectangle(0, 0, width - 1, height - 1)


#: Where dlib's HOG box sits relative to the 5-point eye corners, in inter-ocular distances
#: (measured on 173 detections in shared/data/faces: centre dx -0.04, dy +0.47, side 2.33).
BOX_FROM_EYES = (-0.04, 0.47, 2.33)


def box_from_five_points(points: np.ndarray, width: int, height: int) -> dlib.rectangle:
    """The detector-style box implied by dlib's 5 landmarks (eye corners 0-3, nose 4)."""
    right_eye, left_eye = points[0:2].mean(axis=0), points[2:4].mean(axis=0)
    centre = (right_eye + left_eye) / 2
    iod = max(float(np.linalg.norm(right_eye - left_eye)), 4.0)
    dx, dy, side = BOX_FROM_EYES
    cx, cy, half = centre[0] + dx * iod, centre[1] + dy * iod, side * iod / 2
    return dlib.rectangle(round(cx - half), round(cy - half), round(cx + half), round(cy + half))


def box_of(rect: dlib.rectangle) -> tuple[float, float, float, float]:
    return (float(rect.left()), float(rect.top()), float(rect.right()), float(rect.bottom()))


def points_of(shape: dlib.full_object_detection) -> np.ndarray:
    return np.array([(p.x, p.y) for p in shape.parts()], dtype=np.float32)


def five_points_from_68(points68: np.ndarray) -> np.ndarray:
    """The ArcFace 5 points (left eye, right eye, nose tip, left mouth, right mouth) from 68 landmarks."""
    return np.stack([
        points68[36:42].mean(axis=0),  # subject's right eye, image left
        points68[42:48].mean(axis=0),
        points68[30],
        points68[48],
        points68[54],
    ]).astype(np.float32)
