"""5-point similarity alignment to the standard ArcFace 112x112 template."""

from __future__ import annotations

import cv2
import numpy as np

#: Left eye, right eye, nose tip, left and right mouth corner in a 112x112 ArcFace crop.
ARCFACE_TEMPLATE = np.array(
    [
        [38.2946, 51.6963],
        [73.5318, 51.5014],
        [56.0252, 71.7366],
        [41.5493, 92.3655],
        [70.7299, 92.2041],
    ],
    dtype=np.float32,
)


def similarity_transform(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Least-squares similarity (Umeyama) mapping ``src`` points onto ``dst``, as a 2x3 matrix."""
    src = np.asarray(src, dtype=np.float64)
    dst = np.asarray(dst, dtype=np.float64)
    mean_src, mean_dst = src.mean(axis=0), dst.mean(axis=0)
    src_c, dst_c = src - mean_src, dst - mean_dst
    cov = dst_c.T @ src_c / len(src)
    u, s, vt = np.linalg.svd(cov)
    d = np.ones(2)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:
        d[1] = -1
    rotation = u @ np.diag(d) @ vt
    var_src = (src_c**2).sum() / len(src)
    scale = (s * d).sum() / var_src if var_src > 0 else 1.0
    translation = mean_dst - scale * rotation @ mean_src
    return np.hstack([scale * rotation, translation[:, None]]).astype(np.float32)


def align_arcface(image: np.ndarray, five_points: np.ndarray, size: int = 112) -> np.ndarray:
    """Warp ``image`` so its 5 landmarks land on the ArcFace template scaled to ``size``."""
    template = ARCFACE_TEMPLATE * (size / 112.0)
    matrix = similarity_transform(five_points, template)
    return cv2.warpAffine(image, matrix, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
