"""``idleak demo``: a whole audit offline, on images that installed dependencies ship.

Real set: scikit-image's ``astronaut`` (Eileen Collins, NASA) and matplotlib's ``grace_hopper``
sample photo, unlabelled, so the threshold comes from the shipped false-match-rate calibration.
Synthetic set: 40 faces of other people (scikit-image's ``lfw_subset``, upscaled to 112x112) and
8 planted near-copies of the real faces (aligned 112x112 crops, then cropped, flipped,
recoloured, rotated or JPEG-compressed), as a leaking generator would produce them.
"""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np
from PIL import Image, ImageEnhance

from idleak.analyses.audit import AuditOptions, AuditResult
from idleak.errors import IdleakError

N_STRANGERS = 40


def real_photos() -> dict[str, np.ndarray]:
    """The two real photos, by file name."""
    import matplotlib
    import skimage.data

    hopper = Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg"
    return {
        "astronaut.png": skimage.data.astronaut(),
        "grace_hopper.jpg": np.asarray(Image.open(hopper).convert("RGB")),
    }


def stranger_faces(n: int = N_STRANGERS) -> list[np.ndarray]:
    """``n`` face crops of other people from scikit-image's LFW subset, as 112x112 RGB."""
    import skimage.data

    faces = skimage.data.lfw_subset()[:100]  # the first 100 are faces, the rest are not
    out = []
    for face in faces[:n]:
        grey = Image.fromarray(np.clip(face * 255, 0, 255).astype(np.uint8)).resize((112, 112), Image.BICUBIC)
        out.append(np.asarray(grey.convert("RGB")))
    return out


def aligned_crop(image: np.ndarray) -> np.ndarray:
    """The largest face of ``image`` as an ArcFace-aligned 112x112 crop (how synthetic sets ship)."""
    from idleak.faces import detect as det
    from idleak.faces.align import align_arcface

    found = det.detect(image)
    if not found:
        raise IdleakError("demo: no face found in a bundled photo")
    rect = found[0][0]
    points = det.five_points_from_68(det.points_of(det.shape_predictor(68)(image, rect)))
    return align_arcface(image, points, 112)


def near_copies(crop: np.ndarray) -> dict[str, np.ndarray]:
    """Four augmented copies of an aligned crop: crop+resize, flip, colour, rotation+JPEG."""
    pil = Image.fromarray(crop)
    w, h = pil.size
    zoom = pil.crop((6, 6, w - 6, h - 6)).resize((w, h), Image.BICUBIC)
    flip = pil.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    colour = ImageEnhance.Brightness(ImageEnhance.Color(pil).enhance(0.4)).enhance(1.2)
    rotated = pil.rotate(5, resample=Image.BICUBIC)
    buffer = io.BytesIO()
    rotated.save(buffer, format="JPEG", quality=35)
    jpeg = Image.open(io.BytesIO(buffer.getvalue())).convert("RGB")
    return {"crop": np.asarray(zoom), "flip": np.asarray(flip), "colour": np.asarray(colour), "jpeg": np.asarray(jpeg)}


def build_demo_data(root: str | os.PathLike[str]) -> tuple[Path, Path]:
    """Write ``root/real`` and ``root/synthetic``; returns both folders."""
    root = Path(root)
    real_dir, syn_dir = root / "real", root / "synthetic"
    real_dir.mkdir(parents=True, exist_ok=True)
    syn_dir.mkdir(parents=True, exist_ok=True)
    for name, image in real_photos().items():
        Image.fromarray(image).save(real_dir / name)
        stem = Path(name).stem
        for kind, copy in near_copies(aligned_crop(image)).items():
            Image.fromarray(copy).save(syn_dir / f"planted_{stem}_{kind}.png")
    for i, face in enumerate(stranger_faces()):
        Image.fromarray(face).save(syn_dir / f"generated_{i:03d}.png")
    return real_dir, syn_dir


def run_demo(out: str | os.PathLike[str], workers: int | None = None, progress=None) -> AuditResult:
    """Build the demo data under ``out/data`` and audit it into ``out/audit`` (store in ``out/store``)."""
    from idleak.jobs.audit import audit

    out = Path(os.path.abspath(out))
    real_dir, syn_dir = build_demo_data(out / "data")
    return audit(syn_dir, real_dir, out / "audit", cache=out / "store", options=AuditOptions(),
                 aligned_synthetic=True, workers=workers, progress=progress)
