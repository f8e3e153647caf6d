"""load_rgb: every odd or broken kind of file either becomes 8-bit RGB or gives a one-word reason."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from idleak.errors import ImageError
from idleak.images import load_rgb


def reason_of(path: Path, **kwargs) -> str:
    with pytest.raises(ImageError) as info:
        load_rgb(path, **kwargs)
    assert str(path) in str(info.value)
    assert "\n" not in str(info.value)
    return info.value.reason


def test_real_grey_pgm_becomes_rgb(faces_root: Path) -> None:
    image = load_rgb(faces_root / "orl" / "s1" / "1.pgm")
    assert image.shape == (112, 92, 3) and image.dtype == np.uint8
    assert np.array_equal(image[..., 0], image[..., 2])


def test_rgba_png_is_composited_on_white(faces_root: Path, tmp_path: Path) -> None:
    image = load_rgb(faces_root / "misc" / "32bit.png")
    assert image.ndim == 3 and image.shape[2] == 3
    transparent = tmp_path / "t.png"
    Image.new("RGBA", (8, 8), (255, 0, 0, 0)).save(transparent)
    assert load_rgb(transparent)[0, 0].tolist() == [255, 255, 255]


def test_cmyk_palette_16bit_float_modes(tmp_path: Path) -> None:
    cmyk = tmp_path / "cmyk.jpg"
    Image.new("CMYK", (10, 10), (0, 255, 255, 0)).save(cmyk)
    assert load_rgb(cmyk)[5, 5, 0] > 200 and load_rgb(cmyk)[5, 5, 1] < 60  # red
    pal = tmp_path / "pal.gif"
    Image.new("RGB", (10, 10), (0, 0, 255)).convert("P").save(pal)
    assert load_rgb(pal)[0, 0].tolist() == [0, 0, 255]
    deep = tmp_path / "16bit.png"
    Image.fromarray(np.full((6, 6), 65535, np.uint16)).save(deep)
    assert Image.open(deep).mode.startswith("I")
    assert load_rgb(deep)[0, 0].tolist() == [255, 255, 255]
    half = tmp_path / "16bit_half.png"
    Image.fromarray(np.full((6, 6), 32896, np.uint16)).save(half)
    assert load_rgb(half)[0, 0, 0] == 128
    floats = tmp_path / "f.tiff"
    Image.fromarray(np.full((4, 4), 0.5, np.float32)).save(floats)
    assert load_rgb(floats)[0, 0, 0] == 128


def test_exif_orientation_is_applied(tmp_path: Path) -> None:
    array = np.zeros((20, 40, 3), np.uint8)
    array[:, :20] = 255  # left half white
    image = Image.fromarray(array)
    exif = image.getexif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise when displayed
    path = tmp_path / "rotated.jpg"
    image.save(path, exif=exif, quality=95)
    loaded = load_rgb(path)
    assert loaded.shape[:2] == (40, 20)
    assert loaded[5, 10].mean() > 200 and loaded[35, 10].mean() < 50  # white on top after rotation


def test_broken_files_give_reasons(tmp_path: Path, faces_root: Path) -> None:
    empty = tmp_path / "empty.jpg"
    empty.write_bytes(b"")
    assert reason_of(empty) == "empty_file"
    text = tmp_path / "notes.jpg"
    text.write_text("not an image at all")
    assert reason_of(text) == "not_an_image"
    data = (faces_root / "fr" / "obama").glob("*")
    jpeg = next(iter(sorted(data))).read_bytes()
    truncated = tmp_path / "truncated.jpg"
    truncated.write_bytes(jpeg[: len(jpeg) // 2])
    assert reason_of(truncated) == "truncated"
    corrupt = tmp_path / "corrupt.png"
    png = io.BytesIO()
    Image.new("RGB", (64, 64), (10, 20, 30)).save(png, format="PNG")
    raw = bytearray(png.getvalue())
    raw[60:90] = b"\x00" * 30  # smash the IDAT chunk
    corrupt.write_bytes(bytes(raw))
    assert reason_of(corrupt) in ("corrupt", "truncated")
    assert reason_of(tmp_path / "missing.png") == "missing"


def test_huge_image_is_refused_before_decoding(tmp_path: Path) -> None:
    huge = tmp_path / "huge.png"
    Image.new("1", (12000, 12000)).save(huge)  # 144 Mpx, a few kB on disk
    assert huge.stat().st_size < 1_000_000
    assert reason_of(huge) == "too_large"
    small_limit = tmp_path / "small.png"
    Image.new("RGB", (100, 100)).save(small_limit)
    assert reason_of(small_limit, limit=5000) == "too_large"


def test_unicode_path(tmp_path: Path, faces_root: Path) -> None:
    folder = tmp_path / "données" / "李"
    folder.mkdir(parents=True)
    target = folder / "visage ü.pgm"
    target.write_bytes((faces_root / "orl" / "s2" / "1.pgm").read_bytes())
    assert load_rgb(target).shape == (112, 92, 3)
