"""Importable ``module:function`` targets and defences for tests/test_invert.py (``--model`` / ``--defense``)."""

from __future__ import annotations

import torch
from torch import nn


class TinyFaceNet(nn.Module):
    """A small randomly initialised (seeded) 3-channel CNN: stem -> stage1 -> stage2 -> head (8 outputs)."""

    input_shape = (3, 48, 40)

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 12, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2))
        self.stage1 = nn.Sequential(nn.Conv2d(12, 24, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2))
        self.stage2 = nn.Sequential(nn.Conv2d(24, 32, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1))
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(32, 8))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.stage2(self.stage1(self.stem(x))))


def tiny_face_net() -> nn.Module:
    """``--model _invert_models:tiny_face_net``: same weights on every call."""
    torch.manual_seed(1234)
    return TinyFaceNet()


def not_a_model() -> str:
    """A factory that returns something that is not a torch module (bad --model)."""
    return "not a model"


def strong_noise(features: torch.Tensor) -> torch.Tensor:
    """Gaussian noise three times the features' own standard deviation."""
    return features + 3.0 * features.std() * torch.randn_like(features)


def coarse_quantise(features: torch.Tensor) -> torch.Tensor:
    """Each feature map reduced to 2x2-pooled one-bit values (above / below its mean)."""
    if features.dim() == 4:
        pooled = nn.functional.avg_pool2d(features, 2, ceil_mode=True)
        bits = (pooled > pooled.mean(dim=(2, 3), keepdim=True)).float()
        return nn.functional.interpolate(bits, size=features.shape[-2:], mode="nearest")
    return (features > features.mean(dim=1, keepdim=True)).float()
