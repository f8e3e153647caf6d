"""dlib's face recognition ResNet as a torch module, built from ``idleak.faces.dlib_format``'s layer list.

``idleak invert --model dlib`` attacks the network idleak's default face model is. The layers are
grouped into named blocks, the split points of ``--layers`` (shapes for a 150x150 chip)::

    stem       conv 7x7/2 (32) + affine + ReLU + max-pool 3x3/2     -> 32 x 35 x 35
    stage1     3 residual units, 32 filters      (dlib's level4)    -> 32 x 35 x 35
    stage2     4 residual units, 64, first /2    (dlib's level3)    -> 64 x 17 x 17
    stage3     3 residual units, 128, first /2   (dlib's level2)    -> 128 x 8 x 8
    stage4     3 residual units, 256, first /2   (dlib's level1)    -> 256 x 4 x 4
    stage5     1 residual unit, 256, /2          (dlib's level0)    -> 256 x 2 x 2
    embedding  global average pool + fc 256 -> 128 (the descriptor)

and every residual unit is a split point too (``stage2.0`` .. ``stage2.3``). Inputs are dlib's
aligned chips, (N, 3, 150, 150) RGB floats in [0, 1]; the module applies dlib's input scaling
``(255 x - mean_rgb) / 256``. The output is dlib's raw (unnormalised) descriptor.

dlib folds BatchNorm into affine layers when it saves a model: there are no running statistics,
so the data-free attack does not apply (``BATCHNORM_NOTE``). Re-identifying a reconstruction with
the network it was inverted from is circular, so ``--model dlib`` refuses the ``embedding`` split
(``CIRCULARITY_NOTE``).
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from idleak.errors import IdleakError

#: Split points of the dlib target, shallow to deep (the embedding excluded: see CIRCULARITY_NOTE).
DLIB_LAYERS = ("stem", "stage1", "stage2", "stage3", "stage4", "stage5")
#: Residual units per stage (dlib's level4 .. level0).
STAGE_UNITS = (3, 4, 3, 3, 1)
BATCHNORM_NOTE = ("dlib folds BatchNorm into affine layers when it saves a model (no running mean/variance), "
                  "so --attack datafree does not apply to --model dlib")
CIRCULARITY_NOTE = ("re-identifying reconstructions with the dlib network they were inverted from is circular (an "
                    "image optimised to match the embedding can be an adversarial pattern rather than the face), so "
                    "PSNR, SSIM and re-identification are reported only at splits before the embedding")


class _Affine(nn.Module):
    def __init__(self, scale: np.ndarray, shift: np.ndarray) -> None:
        super().__init__()
        self.register_buffer("scale", torch.from_numpy(scale.astype(np.float32)).view(1, -1, 1, 1))
        self.register_buffer("shift", torch.from_numpy(shift.astype(np.float32)).view(1, -1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.scale + self.shift


class _PaddedAdd(nn.Module):
    """dlib's add_prev: the larger size in every dimension, a missing element counts as zero."""

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        size = [max(p, q) for p, q in zip(a.shape[1:], b.shape[1:])]
        return _pad_to(a, size) + _pad_to(b, size)


def _pad_to(x: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    c, h, w = x.shape[1:]
    if (c, h, w) == tuple(size):
        return x
    return F.pad(x, (0, size[2] - w, 0, size[1] - h, 0, size[0] - c))


class _GlobalAverage(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean(dim=(2, 3), keepdim=True)


class _NoBiasFC(nn.Module):
    def __init__(self, weight: np.ndarray) -> None:
        super().__init__()
        self.register_buffer("weight", torch.from_numpy(weight.astype(np.float32)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(1) @ self.weight


def _module(layer) -> nn.Module:  # layer: idleak.faces.dlib_format.Layer
    p = layer.params
    if layer.kind == "conv":
        conv = nn.Conv2d(p["weight"].shape[1], p["weight"].shape[0], p["kernel"], p["stride"], p["padding"])
        conv.weight.data = torch.from_numpy(p["weight"].astype(np.float32))
        conv.bias.data = torch.from_numpy(p["bias"].astype(np.float32))
        return conv
    if layer.kind == "affine":
        return _Affine(p["scale"], p["shift"])
    if layer.kind == "relu":
        return nn.ReLU()
    if layer.kind == "max_pool":
        return nn.MaxPool2d(p["kernel"], p["stride"], p["padding"])
    if layer.kind == "avg_pool":
        if tuple(p["kernel"]) == (0, 0):
            return _GlobalAverage()
        return nn.AvgPool2d(p["kernel"], p["stride"], p["padding"])
    if layer.kind == "add":
        return _PaddedAdd()
    if layer.kind == "fc":
        return _NoBiasFC(p["weight"])
    raise IdleakError(f"dlib layer {layer.name}: kind {layer.kind!r} has no torch form")


class _Unit(nn.Module):
    """A run of dlib layers with one input, evaluated as the layer list wires them (skips included)."""

    def __init__(self, layers: Sequence, entry: str) -> None:
        super().__init__()
        self.entry = entry
        self.wiring = [(layer.name, tuple(layer.inputs)) for layer in layers]
        self.ops = nn.ModuleDict({layer.name: _module(layer) for layer in layers})

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        values = {self.entry: x}
        for name, inputs in self.wiring:
            values[name] = self.ops[name](*(values[i] for i in inputs))
        return values[self.wiring[-1][0]]


class DlibResNet(nn.Module):
    """dlib_face_recognition_resnet_model_v1 in torch (see the module docstring for the split points)."""

    input_shape = (3, 150, 150)
    #: read by ``idleak invert``: inputs are dlib's aligned chips; splits refused; notes for summary.json
    input_kind = "dlib_chip"
    circular_layers = ("embedding",)
    circularity_note = CIRCULARITY_NOTE
    datafree_note = BATCHNORM_NOTE
    caveats = (CIRCULARITY_NOTE, BATCHNORM_NOTE)

    def __init__(self, net) -> None:  # net: idleak.faces.dlib_format.DlibNet
        super().__init__()
        layers = list(net.layers[1:])
        self.register_buffer("mean_rgb", torch.tensor(net.mean_rgb, dtype=torch.float32).view(1, 3, 1, 1))
        units, current, start = [], "input", 0
        for i, layer in enumerate(layers):
            # a unit ends at the ReLU after an add (a residual unit), or at the stem's max-pool
            ends = layer.kind == "max_pool" or (layer.kind == "relu" and i and layers[i - 1].kind == "add")
            if ends:
                units.append(_Unit(layers[start:i + 1], current))
                current, start = layer.name, i + 1
        head = layers[start:]
        if len(units) != 1 + sum(STAGE_UNITS) or [layer.kind for layer in head] != ["avg_pool", "fc"]:
            raise IdleakError(f"{net.architecture}: unexpected layer structure for the torch port")
        self.stem = units[0]
        offset = 1
        for k, count in enumerate(STAGE_UNITS, start=1):
            setattr(self, f"stage{k}", nn.Sequential(*units[offset:offset + count]))
            offset += count
        self.embedding = _Unit(head, current)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = (x * 255.0 - self.mean_rgb) / 256.0
        x = self.stem(x)
        for k in range(1, len(STAGE_UNITS) + 1):
            x = getattr(self, f"stage{k}")(x)
        return self.embedding(x).flatten(1)


@lru_cache(maxsize=1)
def _parsed():
    from idleak.faces.detect import model_file
    from idleak.faces.dlib_format import read_resnet

    return read_resnet(model_file("dlib_face_recognition_resnet_model_v1.dat"))


def dlib_resnet() -> DlibResNet:
    """dlib's face ResNet with the weights of ``face-recognition-models``, in eval mode."""
    return DlibResNet(_parsed()).eval()


def split_names() -> str:
    """The split points for ``--help``."""
    return ", ".join(DLIB_LAYERS) + " (residual units: stage1.0-2, stage2.0-3, stage3.0-2, stage4.0-2, stage5.0)"
