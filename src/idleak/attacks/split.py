"""Split a torch model at named layers: the features a device would send to the cloud.

The target is any ``torch.nn.Module`` built by a ``module:function`` spec. A split point is the
name of one of its modules (``dict(model.named_modules())``); the features at the split are that
module's output, captured with a forward hook. The forward pass stops right after the split layer
(the hook raises), so extracting features costs only the front part, and the captured tensor keeps
its autograd graph (the white-box attack differentiates through the front part).

Inputs are float tensors ``(N, C, H, W)`` in [0, 1]. A model says its input shape with an
``input_shape = (C, H, W)`` attribute (otherwise the caller gives one); it may name its output
classes with a ``classes`` list (needed by the ``class`` attack).

A ``--defense module:function`` is a function ``features -> features`` (same shape) applied to the
features before the attacker sees them (noise, quantisation, dropout ...).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from PIL import Image
from torch import nn

from idleak.errors import IdleakError, ImageError
from idleak.generators import load_callable
from idleak.images import load_rgb
from idleak.sources import Record

Defense = Callable[[torch.Tensor], torch.Tensor]


class _StopForward(Exception):
    """Raised by the split hook once the features are captured."""


def build_model(spec: str) -> nn.Module:
    """Call the ``module:function`` in ``spec`` with no arguments; it must return a ``torch.nn.Module``.

    ``dlib`` is dlib's face recognition ResNet (``idleak.attacks.dlib_target``).
    """
    if spec == "dlib":
        from idleak.attacks.dlib_target import dlib_resnet

        return dlib_resnet()
    factory = load_callable(spec, "--model")
    try:
        model = factory()
    except Exception as exc:  # noqa: BLE001 - user code
        raise IdleakError(f"--model {spec!r}: calling it failed: {type(exc).__name__}: {exc}") from None
    if not isinstance(model, nn.Module):
        raise IdleakError(f"--model {spec!r} returned {type(model).__name__}, not a torch.nn.Module")
    return model.eval()


def load_defense(spec: str | None) -> Defense | None:
    """The ``--defense module:function`` feature transform, or None."""
    return load_callable(spec, "--defense") if spec else None


def apply_defense(defense: Defense | None, features: torch.Tensor) -> torch.Tensor:
    """``defense(features)`` checked to keep the shape; features unchanged without a defence."""
    if defense is None:
        return features
    try:
        out = defense(features)
    except Exception as exc:  # noqa: BLE001 - user code
        raise IdleakError(f"--defense failed on features of shape {tuple(features.shape)}: "
                          f"{type(exc).__name__}: {exc}") from None
    if not isinstance(out, torch.Tensor) or out.shape != features.shape:
        shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise IdleakError(f"--defense must return a tensor of the features' shape {tuple(features.shape)}, got {shape}")
    return out.to(features.dtype)


def parse_layers(text: str | Sequence[str]) -> list[str]:
    """``a,b,c`` -> ["a", "b", "c"] (duplicates and blanks dropped, order kept)."""
    items = text.split(",") if isinstance(text, str) else list(text)
    layers = list(dict.fromkeys(s.strip() for s in items if s and s.strip()))
    if not layers:
        raise IdleakError("--layers needs at least one layer name, e.g. --layers layer1,layer3")
    return layers


def model_input_shape(model: nn.Module, given: Sequence[int] | None = None) -> tuple[int, int, int]:
    """(C, H, W): ``given``, else the model's ``input_shape`` attribute; C must be 1 or 3."""
    shape = given if given is not None else getattr(model, "input_shape", None)
    if shape is None:
        raise IdleakError("the model has no input_shape attribute (C, H, W): give --input-shape C,H,W")
    try:
        c, h, w = (int(v) for v in shape)
    except (TypeError, ValueError):
        raise IdleakError(f"input shape must be three integers C,H,W, got {shape!r}") from None
    if c not in (1, 3) or h < 8 or w < 8:
        raise IdleakError(f"input shape must have 1 or 3 channels and be at least 8x8, got {(c, h, w)}")
    return c, h, w


@dataclass
class SplitPoint:
    """One split: the layer name, its depth (leaf layers the device runs) and the feature shape per image."""

    layer: str
    depth: int
    feature_shape: tuple[int, ...]

    @property
    def feature_size(self) -> int:
        return int(np.prod(self.feature_shape))


@dataclass
class SplitModel:
    """A target model with named split points; runs only the front part up to a split."""

    model: nn.Module
    input_shape: tuple[int, int, int]
    points: dict[str, SplitPoint] = field(default_factory=dict)
    n_leaves: int = 0

    @classmethod
    def create(cls, model: nn.Module, layers: Sequence[str], input_shape: Sequence[int] | None = None) -> SplitModel:
        """Check ``layers`` exist and run once to find each one's depth and feature shape.

        The model is put in eval mode and its parameters stop requiring gradients (attacks never
        change the target).
        """
        model.eval()
        for p in model.parameters():
            p.requires_grad_(False)
        modules = dict(model.named_modules())
        missing = [name for name in layers if name not in modules or name == ""]
        if missing:
            names = [n for n in modules if n]
            hint = ", ".join(names[:12]) + (" ..." if len(names) > 12 else "")
            raise IdleakError(f"layer {missing[0]!r} is not a module of the model; its layers: {hint}")
        shape = model_input_shape(model, input_shape)
        order, outputs = _trace(model, shape, modules, set(layers))
        leaves = {name for name, m in modules.items() if name and not any(True for _ in m.children())}
        points = {}
        for name in layers:
            if name not in outputs:
                raise IdleakError(f"layer {name!r} is not called in the model's forward pass")
            if not isinstance(outputs[name], torch.Tensor):
                raise IdleakError(f"layer {name!r} does not output a tensor ({type(outputs[name]).__name__})")
            position = order.index(name)
            depth = len({n for n in order[:position + 1] if n in leaves}) or position + 1
            points[name] = SplitPoint(name, depth, tuple(outputs[name].shape[1:]))
        n_leaves = len({n for n in order if n in leaves}) or len(order)
        ordered = dict(sorted(points.items(), key=lambda kv: (kv[1].depth, order.index(kv[0]))))
        return cls(model, shape, ordered, n_leaves)

    def features(self, images: torch.Tensor, layer: str) -> torch.Tensor:
        """The output of ``layer`` for ``images`` (N, C, H, W); keeps the graph if ``images`` needs grad."""
        module = dict(self.model.named_modules())[layer]
        captured: list[torch.Tensor] = []

        def hook(_module: nn.Module, _inputs: object, output: object) -> None:
            captured.append(_first_tensor(output))
            raise _StopForward

        handle = module.register_forward_hook(hook)
        try:
            self.model(images)
        except _StopForward:
            pass
        finally:
            handle.remove()
        if not captured:
            raise IdleakError(f"layer {layer!r} was not reached in the forward pass")
        return captured[0]

    def batched_features(self, images: torch.Tensor, layer: str, batch: int = 64) -> torch.Tensor:
        """``features`` without gradients, in batches."""
        with torch.no_grad():
            return torch.cat([self.features(images[i:i + batch], layer) for i in range(0, len(images), batch)])

    def logits(self, images: torch.Tensor) -> torch.Tensor:
        """The full model's output (for the class attack)."""
        return _first_tensor(self.model(images))


def _first_tensor(output: object) -> torch.Tensor:
    if isinstance(output, torch.Tensor):
        return output
    if isinstance(output, list | tuple) and output and isinstance(output[0], torch.Tensor):
        return output[0]
    raise IdleakError(f"expected a layer output tensor, got {type(output).__name__}")


def _trace(model: nn.Module, shape: tuple[int, int, int], modules: dict[str, nn.Module],
           wanted: set[str]) -> tuple[list[str], dict[str, object]]:
    """Module names in the order their forward calls finish, and the first output of each wanted one."""
    order: list[str] = []
    outputs: dict[str, object] = {}
    handles = []
    for name, module in modules.items():
        if not name:
            continue

        def hook(_m: nn.Module, _i: object, output: object, name: str = name) -> None:
            order.append(name)
            if name in wanted and name not in outputs:
                outputs[name] = output[0] if isinstance(output, list | tuple) and output else output

        handles.append(module.register_forward_hook(hook))
    try:
        with torch.no_grad():
            model(torch.full((2, *shape), 0.5))
    except Exception as exc:  # noqa: BLE001 - user model
        raise IdleakError(f"the model failed on a {shape} input: {type(exc).__name__}: {exc}") from None
    finally:
        for handle in handles:
            handle.remove()
    return order, outputs


# -- images -------------------------------------------------------------------------------------------
def load_images(records: Sequence[Record], shape: Sequence[int],
                dlib_chips: bool = False) -> tuple[np.ndarray, list[Record], list]:
    """Decode and resize images to (C, H, W) float32 in [0, 1]; with ``dlib_chips``, each image's
    aligned face chip (``idleak.faces.dlib_chips``) instead of the whole image.

    Returns (array (N, C, H, W), the records kept, excluded [(path, reason, detail)]).
    """
    c, h, w = shape
    arrays, kept, excluded = [], [], []
    for record in records:
        try:
            rgb = load_rgb(record.path)
        except ImageError as exc:
            excluded.append((record.path, exc.reason, exc.detail))
            continue
        if dlib_chips:
            from idleak.faces.dlib_chips import face_chips

            rgb = face_chips([rgb])[0]
        image = Image.fromarray(rgb)
        if c == 1:
            image = image.convert("L")
        image = image.resize((w, h), Image.BILINEAR)
        array = np.asarray(image, dtype=np.float32) / 255.0
        arrays.append(array[None] if c == 1 else array.transpose(2, 0, 1))
        kept.append(record)
    stack = np.stack(arrays) if arrays else np.zeros((0, c, h, w), np.float32)
    return stack.astype(np.float32), kept, excluded


def to_uint8_rgb(images: np.ndarray | torch.Tensor) -> list[np.ndarray]:
    """(N, C, H, W) floats in [0, 1] -> list of HxWx3 uint8 (grey replicated), for the face embedder."""
    if isinstance(images, torch.Tensor):
        images = images.detach().cpu().numpy()
    arrays = np.clip(np.asarray(images, np.float32) * 255.0 + 0.5, 0, 255).astype(np.uint8)
    if arrays.shape[1] == 1:
        arrays = np.repeat(arrays, 3, axis=1)
    return [np.ascontiguousarray(a.transpose(1, 2, 0)) for a in arrays]


def augment(images: torch.Tensor, generator: torch.Generator, shift: int = 3) -> torch.Tensor:
    """Random horizontal flips and shifts of up to ``shift`` pixels (reflect padding), for training."""
    n, _, h, w = images.shape
    flip = torch.rand(n, generator=generator) < 0.5
    images = torch.where(flip[:, None, None, None], images.flip(3), images)
    padded = torch.nn.functional.pad(images, (shift, shift, shift, shift), mode="reflect")
    dy = torch.randint(0, 2 * shift + 1, (n,), generator=generator).tolist()
    dx = torch.randint(0, 2 * shift + 1, (n,), generator=generator).tolist()
    return torch.stack([padded[i, :, dy[i]:dy[i] + h, dx[i]:dx[i] + w] for i in range(n)])
