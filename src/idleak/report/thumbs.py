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


def array_thumbnail(image: np.ndarray, box: np.ndarray | None = None, size: int = 128, margin: float = 0.35) -> str:
    pil = Image.fromarray(image)
    if box is not None and np.all(np.isfinite(box)):
        left, top, right, bottom = (float(v) for v in box)
        w, h = right - left, bottom - top
        if w > 4 and h > 4 and (w < pil.width * 0.9 or h < pil.height * 0.9):
            pad_w, pad_h = w * margin, h * margin
            crop = (max(0, left - pad_w), max(0, top - pad_h), min(pil.width, right + pad_w),
                    min(pil.height, bottom + pad_h))
            pil = pil.crop(tuple(int(round(c)) for c in crop))
    pil.thumbnail((size, size))
    buffer = io.BytesIO()
    pil.convert("RGB").save(buffer, format="JPEG", quality=85)
    return data_uri(buffer.getvalue(), "image/jpeg")
