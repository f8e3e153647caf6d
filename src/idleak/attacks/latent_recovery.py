"""Latent-recovery membership attack on a white-box torch generator (torch imported only here).

For each target photo, search the generator's latent space for the image that best reproduces it
(Adam on the latent, pixel MSE, a few random restarts, the best kept). A generator reproduces people
it was trained on better than strangers, so the reconstruction's quality is the membership score:
its identity similarity to the photo (the Workspace's face model) drives the ROC, pixel MSE is
reported beside it.

The generator module: ``module:build`` returns an ``nn.Module`` mapping latents ``(n, *latent_shape)``
to images ``(n, C, H, W)`` with C = 1 or 3, in [0, 1] (or [-1, 1] when the module has
``output_range = (-1, 1)``). It must say its latent size as ``latent_dim`` (int) or ``latent_shape``
(tuple). Targets are centre-cropped to a square and resized to the output size, so give photos
framed like the training images.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from PIL import Image

from idleak.errors import IdleakError
from idleak.images import load_rgb

TORCH_HINT = "the latent-recovery attack needs torch: pip install torch==2.13.0 (or pip install idleak[torch])"

ProgressFn = Callable[[int, int], None]


def require_torch():  # noqa: ANN201 - returns the torch module
    """``import torch`` or a one-line ``IdleakError`` saying how to install it."""
    try:
        import torch
    except ImportError:
        raise IdleakError(TORCH_HINT) from None
    return torch


@dataclass
class RecoveryOptions:
    """How hard to search for each target's latent."""

    steps: int = 200
    restarts: int = 3
    lr: float = 0.05
    batch_size: int = 64
    seed: int = 0
    threads: int | None = None


@dataclass
class Recovery:
    """Per target: the reconstruction (uint8 HxWx3 at generator resolution), its pixel MSE and latent."""

    reconstructions: np.ndarray  # (n, H, W, 3) uint8
    targets: np.ndarray  # (n, H, W, 3) uint8, the photos as the generator sees them
    mse: np.ndarray  # (n,) on [0, 1] pixels
    latents: np.ndarray  # (n, *latent_shape)


def load_generator_module(spec: str):  # noqa: ANN201 - returns an nn.Module
    """Call ``module:build`` and check that it gives an ``nn.Module`` with a known latent shape."""
    torch = require_torch()
    from idleak.generators import load_callable

    build = load_callable(spec)
    try:
        module = build()
    except IdleakError:
        raise
    except Exception as exc:  # noqa: BLE001 - user code; report it in one line
        raise IdleakError(f"{spec}() failed: {type(exc).__name__}: {str(exc).strip()[:200]}") from None
    if not isinstance(module, torch.nn.Module):
        raise IdleakError(f"{spec}() must return a torch nn.Module, got {type(module).__name__}")
    latent_shape(module, spec)
    module.eval()
    for parameter in module.parameters():
        parameter.requires_grad_(False)
    return module


def latent_shape(module: object, spec: str = "generator") -> tuple[int, ...]:
    """The module's latent shape from ``latent_shape`` or ``latent_dim``."""
    shape = getattr(module, "latent_shape", None)
    if shape is None and getattr(module, "latent_dim", None) is not None:
        shape = (int(module.latent_dim),)
    if shape is None:
        raise IdleakError(f"{spec}: the generator module must have a latent_dim (int) or latent_shape attribute")
    return tuple(int(s) for s in shape)


def output_range(module: object) -> tuple[float, float]:
    low, high = getattr(module, "output_range", (0.0, 1.0))
    return float(low), float(high)


def prepare_target(path: str, height: int, width: int) -> tuple[np.ndarray, tuple[float, float, float]]:
    """A photo centre-cropped to the generator's aspect ratio and resized to its output size (uint8 RGB), and
    the transform (left, top, scale) taking photo pixels to target pixels: ``(x - left) * scale``."""
    image = Image.fromarray(load_rgb(path))
    aspect = width / height
    if image.width / image.height > aspect:
        crop_w, crop_h = round(image.height * aspect), image.height
    else:
        crop_w, crop_h = image.width, round(image.width / aspect)
    left, top = (image.width - crop_w) // 2, (image.height - crop_h) // 2
    image = image.crop((left, top, left + crop_w, top + crop_h)).resize((width, height), Image.BICUBIC)
    return np.asarray(image, dtype=np.uint8), (float(left), float(top), width / crop_w)


def face_crop(image: np.ndarray, box: np.ndarray, transform: tuple[float, float, float],
              margin: float = 0.1) -> np.ndarray | None:
    """The region of ``image`` (a target-sized reconstruction) where the photo's face ``box`` lies, or None."""
    left, top, scale = transform
    box = np.asarray(box, dtype=np.float64)
    if box.shape != (4,) or not np.all(np.isfinite(box)):
        return None
    x0, y0, x1, y1 = (box[0] - left) * scale, (box[1] - top) * scale, (box[2] - left) * scale, (box[3] - top) * scale
    pad_x, pad_y = (x1 - x0) * margin, (y1 - y0) * margin
    height, width = image.shape[:2]
    x0, y0 = max(0, round(x0 - pad_x)), max(0, round(y0 - pad_y))
    x1, y1 = min(width, round(x1 + pad_x)), min(height, round(y1 + pad_y))
    if x1 - x0 < 8 or y1 - y0 < 8:
        return None
    return np.ascontiguousarray(image[y0:y1, x0:x1])


def recover(module: object, targets: np.ndarray, options: RecoveryOptions | None = None,
            progress: ProgressFn | None = None) -> Recovery:
    """Optimise one latent per target (``(n, H, W, 3)`` uint8 at the generator's output size)."""
    torch = require_torch()
    options = options or RecoveryOptions()
    if options.threads:
        torch.set_num_threads(options.threads)
    shape = latent_shape(module)
    low, high = output_range(module)
    n = len(targets)
    generator = torch.Generator().manual_seed(options.seed)
    best_mse = np.full(n, np.inf)
    best_latent = np.zeros((n, *shape), np.float32)
    best_image = np.zeros_like(targets)
    total = n * options.restarts
    done = 0
    if progress:
        progress(0, total)
    for start in range(0, n, options.batch_size):
        batch = targets[start:start + options.batch_size]
        target = torch.from_numpy(batch.astype(np.float32) / 255.0).permute(0, 3, 1, 2)
        for _ in range(options.restarts):
            latent = torch.randn((len(batch), *shape), generator=generator).requires_grad_(True)
            optimiser = torch.optim.Adam([latent], lr=options.lr)
            for _step in range(options.steps):
                image = _to_unit(module(latent), low, high)
                if image.shape[1] == 1:
                    image = image.expand(-1, 3, -1, -1)
                loss = ((image - target) ** 2).mean(dim=(1, 2, 3))
                optimiser.zero_grad()
                loss.sum().backward()
                optimiser.step()
            with torch.no_grad():
                image = _to_unit(module(latent), low, high)
                if image.shape[1] == 1:
                    image = image.expand(-1, 3, -1, -1)
                mse = ((image - target) ** 2).mean(dim=(1, 2, 3)).numpy()
                pixels = (image.clamp(0, 1).permute(0, 2, 3, 1).numpy() * 255).round().astype(np.uint8)
            rows = start + np.arange(len(batch))
            better = mse < best_mse[rows]
            best_mse[rows[better]] = mse[better]
            best_latent[rows[better]] = latent.detach().numpy()[better]
            best_image[rows[better]] = pixels[better]
            done += len(batch)
            if progress:
                progress(done, total)
    return Recovery(best_image, targets, best_mse, best_latent)


def _to_unit(image, low: float, high: float):  # noqa: ANN001, ANN202 - torch tensors
    return (image - low) / (high - low)


def output_size(module: object) -> tuple[int, int, int]:
    """(channels, height, width) of one generated image."""
    torch = require_torch()
    with torch.no_grad():
        out = module(torch.zeros((1, *latent_shape(module))))
    if out.ndim != 4 or out.shape[1] not in (1, 3):
        raise IdleakError(f"the generator module must return images (n, 1 or 3, H, W), got shape {tuple(out.shape)}")
    return int(out.shape[1]), int(out.shape[2]), int(out.shape[3])


def save_reconstructions(recovery: Recovery, names: list[str], out_dir: str | os.PathLike[str]) -> list[str]:
    """Each reconstruction as PNG beside its target (``recon_i.png``, ``target_i.png``); returns recon paths."""
    from pathlib import Path

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, (recon, target) in enumerate(zip(recovery.reconstructions, recovery.targets)):
        stem = f"{i:05d}_{names[i]}"
        Image.fromarray(recon).save(out_dir / f"{stem}_recon.png")
        Image.fromarray(target).save(out_dir / f"{stem}_target.png")
        paths.append(str(out_dir / f"{stem}_recon.png"))
    return paths


def module_sampler(module: object) -> Callable[[int, int], list[np.ndarray]]:
    """``sample(n, seed)`` for a generator module: standard-normal latents (sample j of seed s uses seed s + j)."""
    torch = require_torch()
    shape = latent_shape(module)
    low, high = output_range(module)

    def sample(n: int, seed: int) -> list[np.ndarray]:
        latents = torch.stack([torch.randn(shape, generator=torch.Generator().manual_seed(seed + j))
                               for j in range(n)])
        with torch.no_grad():
            image = _to_unit(module(latents), low, high).clamp(0, 1)
        if image.shape[1] == 1:
            image = image.expand(-1, 3, -1, -1)
        return list((image.permute(0, 2, 3, 1).numpy() * 255).round().astype(np.uint8))

    return sample
