"""Small JPEG thumbnails as data URIs, for self-contained reports."""

from __future__ import annotations

import base64
import io

import numpy as np
from PIL import Image

from idleak.errors import ImageError
from idleak.images import load_rgb


def data_uri(png_or_jpeg: bytes, mime: str = "image/png") -> str:
    return f"data:{mime};base64," + base64.b64encode(png_or_jpeg).decode("ascii")


def thumbnail(path: str, box: np.ndarray | None = None, size: int = 128, margin: float = 0.35) -> str | None:
    """A face-centred thumbnail of ``path`` (cropped around ``box`` when given), or None if unreadable."""
    try:
        image = load_rgb(path)
    except ImageError:
        return None
    return array_thumbnail(image, box, size, margin)


def face_crop(image: np.ndarray, box: np.ndarray | list | None, margin: float = 0.35,
              full_fraction: float = 0.9) -> Image.Image:
    """``image`` cropped around the face ``box`` with ``margin`` (of the box size) on each side.

    The whole image is kept when there is no box or the face already fills ``full_fraction`` of it.
    """
    pil = Image.fromarray(image)
    if box is not None and np.all(np.isfinite(np.asarray(box, dtype=np.float64))):
        left, top, right, bottom = (float(v) for v in box)
        w, h = right - left, bottom - top
        if w > 4 and h > 4 and (w < pil.width * full_fraction or h < pil.height * full_fraction):
            crop = (max(0, left - w * margin), max(0, top - h * margin), min(pil.width, right + w * margin),
                    min(pil.height, bottom + h * margin))
            pil = pil.crop(tuple(int(round(c)) for c in crop))
    return pil


def jpeg_bytes(pil: Image.Image, size: int, quality: int = 85) -> bytes:
    """``pil`` shrunk to fit ``size`` x ``size``, as JPEG bytes."""
    pil = pil.copy()
    pil.thumbnail((size, size))
    buffer = io.BytesIO()
    pil.convert("RGB").save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()


def array_thumbnail(image: np.ndarray, box: np.ndarray | None = None, size: int = 128, margin: float = 0.35) -> str:
    """A face-centred JPEG thumbnail of an RGB array, as a data URI."""
    return data_uri(jpeg_bytes(face_crop(image, box, margin), size), "image/jpeg")
