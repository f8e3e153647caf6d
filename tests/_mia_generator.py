"""A real, small face generator for the membership tests: a GLO-style decoder (Bojanowski et al., 2018).

One learned latent per training photo (kept on the unit sphere) and a convolutional decoder without
BatchNorm, trained jointly by pixel reconstruction. Trained for about a minute on a few ORL people it
memorises them: samples drawn near its learned latents are those people.

As a generator module for ``idleak mia`` (weights file named by $IDLEAK_TEST_GLO):
    --generator _mia_generator:sample          sample(n, seed) -> list of 64x64x3 uint8 images
    --generator-module _mia_generator:build    build() -> nn.Module, latents (n, LATENT_DIM) -> images in [0, 1]
"""

from __future__ import annotations

import os
import time
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import nn

SIZE = 64
LATENT_DIM = 32
#: Spread of samples around a learned latent (before projecting back onto the sphere).
SAMPLE_NOISE = 0.15
WEIGHTS_ENV = "IDLEAK_TEST_GLO"


def load_photo(path: str | os.PathLike[str], size: int = SIZE) -> np.ndarray:
    """A photo as a (size, size) float32 grey image in [0, 1]: centre square crop, resized."""
    with Image.open(path) as img:
        grey = img.convert("L")
    side = min(grey.size)
    left, top = (grey.width - side) // 2, (grey.height - side) // 2
    square = grey.crop((left, top, left + side, top + side)).resize((size, size), Image.BICUBIC)
    return np.asarray(square, dtype=np.float32) / 255.0


class GloDecoder(nn.Module):
    """Latents (n, latent_dim), projected onto the unit sphere -> grey-as-RGB images (n, 3, 64, 64) in [0, 1]."""

    def __init__(self, latent_dim: int = LATENT_DIM, channels: tuple[int, ...] = (128, 64, 32, 16, 8)) -> None:
        super().__init__()
        self.latent_dim = latent_dim
        self.channels = channels
        self.project = nn.Linear(latent_dim, channels[0] * 4 * 4)
        layers: list[nn.Module] = []
        for c_in, c_out in zip(channels[:-1], channels[1:]):
            layers += [nn.ConvTranspose2d(c_in, c_out, 4, stride=2, padding=1), nn.LeakyReLU(0.2)]
        layers += [nn.Conv2d(channels[-1], 1, 3, padding=1), nn.Sigmoid()]
        self.body = nn.Sequential(*layers)

    def forward(self, latents: torch.Tensor) -> torch.Tensor:
        x = self.project(_unit(latents)).view(len(latents), self.channels[0], 4, 4)
        return self.body(nn.functional.leaky_relu(x, 0.2)).expand(-1, 3, -1, -1)


def train_glo(paths: list[str], steps: int = 1500, seed: int = 0, lr: float = 3e-3,
              seconds: float | None = None) -> dict:
    """Train decoder and latents on ``paths`` (full batch); returns a state dict for ``save``/``from_state``."""
    torch.manual_seed(seed)
    torch.set_num_threads(2)
    images = torch.from_numpy(np.stack([load_photo(p) for p in paths]))[:, None]
    decoder = GloDecoder()
    latents = nn.Parameter(_unit(torch.randn(len(paths), LATENT_DIM)))
    optimiser = torch.optim.Adam([{"params": decoder.parameters(), "lr": lr},
                                  {"params": [latents], "lr": lr * 3}])
    start = time.perf_counter()
    loss_value = float("nan")
    step = 0
    for step in range(1, steps + 1):  # noqa: B007 - the count is returned
        out = decoder(latents)[:, :1]
        loss = nn.functional.mse_loss(out, images) + 0.5 * nn.functional.l1_loss(out, images)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        loss_value = float(loss.detach())
        if seconds is not None and time.perf_counter() - start > seconds:
            break
    return {"decoder": decoder.state_dict(), "latents": latents.detach().clone(), "paths": list(paths),
            "steps": step, "loss": loss_value, "seconds": time.perf_counter() - start}


def _unit(z: torch.Tensor) -> torch.Tensor:
    return z / z.norm(dim=1, keepdim=True).clamp_min(1e-8)


def from_state(state: dict) -> tuple[GloDecoder, torch.Tensor]:
    decoder = GloDecoder()
    decoder.load_state_dict(state["decoder"])
    decoder.eval()
    return decoder, state["latents"]


def sample_images(decoder: GloDecoder, latents: torch.Tensor, n: int, seed: int) -> list[np.ndarray]:
    """``n`` samples near the learned latents (sample j of seed s equals sample 0 of seed s + j)."""
    out = []
    with torch.no_grad():
        zs = []
        for j in range(n):
            gen = torch.Generator().manual_seed(int(seed) + j)
            row = int(torch.randint(len(latents), (1,), generator=gen))
            noise = torch.randn(LATENT_DIM, generator=gen) * (SAMPLE_NOISE / LATENT_DIM ** 0.5)
            zs.append(latents[row] + noise)
        images = decoder(_unit(torch.stack(zs))) if zs else torch.zeros(0, 3, SIZE, SIZE)
        for image in images:
            out.append((image.permute(1, 2, 0).numpy() * 255).round().clip(0, 255).astype(np.uint8))
    return out


@lru_cache(maxsize=4)
def _loaded(path: str) -> tuple[GloDecoder, torch.Tensor]:
    return from_state(torch.load(path, weights_only=False))


def _weights() -> str:
    path = os.environ.get(WEIGHTS_ENV)
    if not path or not Path(path).is_file():
        raise RuntimeError(f"set ${WEIGHTS_ENV} to a trained weights file")
    return path


def sample(n: int, seed: int) -> list[np.ndarray]:
    """The ``--generator`` entry point: ``n`` 64x64 RGB uint8 faces from the weights in $IDLEAK_TEST_GLO."""
    torch.set_num_threads(2)
    decoder, latents = _loaded(_weights())
    return sample_images(decoder, latents, n, seed)


def build() -> nn.Module:
    """The ``--generator-module`` entry point: the trained decoder (latents -> images in [0, 1])."""
    decoder, _ = _loaded(_weights())
    return decoder
