"""How much an inversion attack recovers: image quality, identity similarity and re-identification.

Plain numpy on arrays and face vectors (no torch):

* ``image_quality``: PSNR and SSIM (``skimage.metrics``) of each reconstruction against its original,
  both (N, C, H, W) floats in [0, 1].
* identity similarity: cosine between the face-model vectors of reconstruction and original (both
  embedded as aligned crops by the caller, ``ws.embedder.embed_aligned``).
* ``reidentify``: each reconstruction searched (exact cosine top-1, ``idleak.search.topk``) against
  a gallery of OTHER photos of the private identities (a gallery row made from the same file as the
  query is never returned). ``top1`` = the nearest gallery face is the right person;
  ``over_threshold`` = top-1 right AND its similarity above the audit's calibrated threshold
  (leave-one-identity-out on that gallery, ``idleak.decide.loio_threshold``), i.e. a match the
  audit would also flag. Chance for top-1 is about 1 / number of gallery identities; the binomial
  p-value tests "more right than chance".
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from idleak.decide import Threshold, group_ids, loio_threshold
from idleak.decide.stats import count_p_value_exact_rate
from idleak.embedding import FaceSet
from idleak.errors import IdleakError
from idleak.search import topk

#: PSNR of a perfect reconstruction is infinite; reported as this.
MAX_PSNR = 100.0


@dataclass
class ReidGallery:
    """Labelled face vectors to re-identify reconstructions against, and the calibrated threshold."""

    vectors: np.ndarray
    identities: np.ndarray
    paths: np.ndarray
    threshold: Threshold

    @property
    def n_identities(self) -> int:
        return len({str(i) for i in self.identities})


def make_gallery(faces: FaceSet, alpha: float = 0.01) -> ReidGallery:
    """The re-identification gallery from embedded, labelled faces (unlabelled rows are dropped)."""
    keep = faces.labelled
    faces = faces.subset(keep)
    if len({str(i) for i in faces.identities}) < 2:
        raise IdleakError("the re-identification gallery needs labelled photos of at least 2 identities")
    threshold = loio_threshold(faces.vectors, faces.identities, alpha)
    return ReidGallery(faces.vectors, faces.identities, faces.paths, threshold)


def image_quality(originals: np.ndarray, reconstructions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-image PSNR (dB, data range 1) and SSIM of (N, C, H, W) arrays in [0, 1]."""
    if originals.shape != reconstructions.shape:
        raise ValueError(f"shape mismatch: {originals.shape} vs {reconstructions.shape}")
    psnr = np.empty(len(originals))
    ssim = np.empty(len(originals))
    side = min(originals.shape[-2:])
    window = min(7, side if side % 2 else side - 1)
    for i, (a, b) in enumerate(zip(originals.astype(np.float64), np.clip(reconstructions, 0, 1).astype(np.float64))):
        psnr[i] = MAX_PSNR if np.array_equal(a, b) else min(MAX_PSNR, peak_signal_noise_ratio(a, b, data_range=1.0))
        ssim[i] = structural_similarity(a, b, data_range=1.0, channel_axis=0, win_size=window)
    return psnr, ssim


def cosine_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise cosine of unit vectors (N, d) x (N, d) -> (N,)."""
    return np.sum(np.asarray(a, np.float32) * np.asarray(b, np.float32), axis=1)


@dataclass
class Reidentification:
    """Per query: the nearest gallery identity and similarity, whether right, whether over the threshold."""

    matched_identity: list[str | None]
    score: np.ndarray
    correct: np.ndarray
    over_threshold: np.ndarray
    chance: float
    threshold: float

    @property
    def top1_rate(self) -> float:
        return float(np.mean(self.correct)) if len(self.correct) else float("nan")

    @property
    def over_threshold_rate(self) -> float:
        return float(np.mean(self.over_threshold)) if len(self.over_threshold) else float("nan")

    @property
    def p_value(self) -> float:
        """One-sided binomial p-value of this many right top-1 matches under guessing."""
        return count_p_value_exact_rate(int(np.sum(self.correct)), len(self.correct), self.chance)


def reidentify(vectors: np.ndarray, identities: Sequence[str | None], gallery: ReidGallery,
               query_paths: Sequence[str] | None = None) -> Reidentification:
    """Top-1 gallery match of each query vector; a gallery photo from the query's own file is skipped."""
    vectors = np.asarray(vectors, np.float32).reshape(len(identities), -1)
    if len(vectors) == 0:
        empty = np.zeros(0)
        return Reidentification([], empty, empty.astype(bool), empty.astype(bool), 1 / gallery.n_identities,
                                gallery.threshold.value)
    groups = None
    if query_paths is not None:
        keys = np.array([_norm(p) for p in gallery.paths] + [_norm(p) for p in query_paths], dtype=object)
        ids = group_ids(keys)
        gallery_groups, groups = ids[:len(gallery.paths)], ids[len(gallery.paths):]
    result = topk(vectors, gallery.vectors, 1, query_groups=groups,
                  gallery_groups=gallery_groups if groups is not None else None)
    index = result.indices[:, 0]
    score = result.scores[:, 0].astype(np.float64)
    matched = [str(gallery.identities[j]) if j >= 0 else None for j in index]
    correct = np.array([m is not None and m == str(t) for m, t in zip(matched, identities)], dtype=bool)
    over = correct & (score > gallery.threshold.value)
    return Reidentification(matched, score, correct, over, 1.0 / gallery.n_identities, gallery.threshold.value)


def _norm(path: object) -> str:
    return os.path.normcase(os.path.realpath(str(path)))


def aggregate(psnr: np.ndarray, ssim: np.ndarray, identity_similarity: np.ndarray, reid: Reidentification) -> dict:
    """Means over images of one (layer, attack), as in summary.json's ``layers`` rows."""
    return {
        "psnr": float(np.mean(psnr)), "ssim": float(np.mean(ssim)),
        "identity_similarity": float(np.mean(identity_similarity)),
        "reid_top1": reid.top1_rate, "reid_over_threshold": reid.over_threshold_rate,
        "reid_p_value": reid.p_value, "n_images": int(len(psnr)),
        "psnr_median": float(np.median(psnr)), "identity_similarity_median": float(np.median(identity_similarity)),
    }
