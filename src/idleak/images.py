"""Open any file safely as an RGB ``uint8`` array, or say in one word why not.

Every other module trusts what ``load_rgb`` returns: EXIF orientation applied, and grey, palette,
RGBA, CMYK, 16-bit and float images all turned into 8-bit RGB.
"""

from __future__ import annotations

import errno
import os
import stat
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from idleak.errors import ImageError

#: Largest image we decode, in pixels (about 100 megapixels). Override with IDLEAK_MAX_PIXELS.
DEFAULT_MAX_PIXELS = 100_000_000

#: Reasons ``load_rgb`` can give, with the words a report shows for them.
DECODE_REASONS = {
    "missing": "file not found",
    "unreadable": "file could not be read (permissions or I/O error)",
    "empty_file": "file is empty",
    "not_an_image": "not an image file",
    "truncated": "image data is truncated",
    "corrupt": "image data is corrupt",
    "too_large": "image is larger than the pixel limit",
    "not_a_file": "not a regular file (a FIFO, socket or device), never opened",
    "symlink_loop": "a symbolic link that points back to itself",
    "timeout": "took longer than IDLEAK_FILE_TIMEOUT seconds",
}


def max_pixels() -> int:
    """The pixel limit in force (IDLEAK_MAX_PIXELS or the default)."""
    value = os.environ.get("IDLEAK_MAX_PIXELS")
    return int(value) if value else DEFAULT_MAX_PIXELS


def file_kind(mode: int) -> str:
    """What a non-regular file is, in words."""
    for test, kind in ((stat.S_ISDIR, "a folder"), (stat.S_ISFIFO, "a FIFO (named pipe)"),
                       (stat.S_ISSOCK, "a socket"), (stat.S_ISCHR, "a character device"),
                       (stat.S_ISBLK, "a block device")):
        if test(mode):
            return f"{kind}, not a regular file"
    return "not a regular file"


def load_rgb(path: str | os.PathLike[str], limit: int | None = None) -> np.ndarray:
    """Decode ``path`` to an ``HxWx3`` uint8 RGB array; raise ``ImageError`` with a reason if it can't."""
    name = str(path)
    limit = max_pixels() if limit is None else limit
    try:
        info = Path(path).stat()
    except FileNotFoundError:
        raise ImageError(name, "missing", "no such file (or a broken link)") from None
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise ImageError(name, "symlink_loop", "a symbolic link that points back to itself") from None
        raise ImageError(name, "unreadable", exc.strerror or str(exc)) from None
    if not stat.S_ISREG(info.st_mode):  # a FIFO, socket or device: never opened (a FIFO would block for ever)
        raise ImageError(name, "not_a_file", file_kind(info.st_mode))
    size = info.st_size
    if size == 0:
        raise ImageError(name, "empty_file")
    try:
        with warnings.catch_warnings():
            # our own pixel limit applies (checked below); Pillow's error above 2x its limit still stops bombs
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as img:
                width, height = img.size
                if width * height > limit:
                    raise ImageError(name, "too_large", f"{width}x{height} > {limit} pixels")
                img.load()
                return _to_rgb_array(_apply_exif(img))
    except ImageError:
        raise
    except Image.DecompressionBombError as exc:
        raise ImageError(name, "too_large", str(exc).split(".")[0]) from None
    except UnidentifiedImageError:
        raise ImageError(name, "not_an_image") from None
    except PermissionError as exc:
        raise ImageError(name, "unreadable", exc.strerror or "permission denied") from None
    except OSError as exc:
        text = str(exc)
        truncated = any(s in text for s in ("truncated", "broken data stream", "premature end", "end of file"))
        reason = "truncated" if truncated else "corrupt"
        raise ImageError(name, reason, text.splitlines()[0][:120] if text else "") from None
    except (SyntaxError, ValueError, EOFError, IndexError, TypeError, ZeroDivisionError) as exc:
        raise ImageError(name, "corrupt", str(exc).splitlines()[0][:120] if str(exc) else "") from None


def _apply_exif(img: Image.Image) -> Image.Image:
    """Rotate/flip by the EXIF orientation tag; a broken EXIF block is ignored, not fatal."""
    try:
        return ImageOps.exif_transpose(img) or img
    except Exception:  # noqa: BLE001 - a malformed EXIF block must not lose the image
        return img


def _to_rgb_array(img: Image.Image) -> np.ndarray:
    """Any Pillow mode to contiguous 8-bit RGB."""
    mode = img.mode
    if mode in ("I;16", "I;16L", "I;16B", "I;16N", "I", "F"):
        arr = np.asarray(img, dtype=np.float64)
        grey = _scale_to_uint8(arr, mode)
        return np.ascontiguousarray(np.repeat(grey[:, :, None], 3, axis=2))
    if mode == "P" and "transparency" in img.info:
        img = img.convert("RGBA")
        mode = "RGBA"
    if mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        img = Image.alpha_composite(background, rgba)
    arr = np.asarray(img.convert("RGB"), dtype=np.uint8)
    return np.ascontiguousarray(arr)


def _scale_to_uint8(arr: np.ndarray, mode: str) -> np.ndarray:
    """Map 16-bit, 32-bit integer or float grey levels into 0..255."""
    if mode == "F":
        top = 1.0 if arr.size and float(np.nanmax(arr)) <= 1.0 else 255.0
        scaled = np.nan_to_num(arr) * (255.0 / top)
    elif mode.startswith("I;16") or (arr.size and float(arr.max()) > 255):
        scaled = arr / 257.0
    else:
        scaled = arr
    return np.clip(np.rint(scaled), 0, 255).astype(np.uint8)
