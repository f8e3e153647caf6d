"""Data-free inversion: the attacker holds only the device part of the network, no images at all.

DeepInversion (Yin et al., CVPR 2020), as used against split computing by Dong et al. (BMVC 2022):
the BatchNorm layers of the front part store the running mean and variance of their inputs over the
training data. Random images are optimised until the batch statistics they produce at every one of
those layers match the stored ones (with total-variation and L2 image priors, random jitter and
flips at every step); the images found stand in for the missing training data. The inversion
modules are then trained on them block by block, with the cycle-consistency chaining of
``BlockwiseTrainer``, and applied to the private features.

Only BatchNorm layers the device runs up to the split are used (the attacker of a split has nothing
deeper), so every split gets its own synthesised set. A model without such layers (or with
BatchNorm folded into affine layers, as dlib's ResNet) cannot be attacked this way: ``IdleakError``.

The statistic mismatch (``bn_mismatch``), summed over the BatchNorm layers, per channel and made
scale-free by the stored variance: ``mean_c((mu_c - m_c)^2 / v_c) + mean_c((sqrt(s2_c / v_c) - 1)^2)``
with ``mu_c, s2_c`` the batch mean and (biased) variance of the layer's input and ``m_c, v_c`` the
running statistics.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn

from idleak.attacks.inversion import (
    AttackSettings,
    BlockwiseTrainer,
    Progress,
    TrainedDecoder,
    optimize_images,
    total_variation,
)
from idleak.attacks.split import Defense, SplitModel
from idleak.errors import IdleakError

_BN = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)


def _has_statistics(module: nn.Module) -> bool:
    return isinstance(module, _BN) and module.track_running_stats and module.running_mean is not None


@contextmanager
def _captured_inputs(split: SplitModel) -> Iterator[list[tuple[str, nn.Module, torch.Tensor]]]:
    """Record (name, BatchNorm, input) for every BatchNorm with running statistics that runs."""
    captured: list[tuple[str, nn.Module, torch.Tensor]] = []
    handles = []
    for name, module in split.model.named_modules():
        if _has_statistics(module):
            def hook(m: nn.Module, inputs: tuple, _output: object, name: str = name) -> None:
                captured.append((name, m, inputs[0]))

            handles.append(module.register_forward_hook(hook))
    try:
        yield captured
    finally:
        for handle in handles:
            handle.remove()


def statistics_layers(split: SplitModel, layer: str) -> list[str]:
    """Names of the BatchNorm layers with running statistics that the device runs up to ``layer``.

    Raises ``IdleakError`` when there are none: the data-free attack has nothing to match.
    """
    with _captured_inputs(split) as captured, torch.no_grad():
        split.features(torch.full((2, *split.input_shape), 0.5), layer)
    names = list(dict.fromkeys(name for name, _, _ in captured))
    if not names and getattr(split.model, "datafree_note", None):
        raise IdleakError(split.model.datafree_note)
    if not names:
        raise IdleakError(f"--attack datafree needs BatchNorm layers with running statistics (running_mean/"
                          f"running_var) in the model up to the split {layer!r}; this model has none there "
                          f"(use learned or optimize)")
    return names


def bn_mismatch(split: SplitModel, layer: str, images: torch.Tensor) -> torch.Tensor:
    """The statistic mismatch of a batch (see the module docstring); differentiable in ``images``."""
    with _captured_inputs(split) as captured:
        split.features(images, layer)
    total = images.new_zeros(())
    for _, bn, x in captured:
        dims = [0] + list(range(2, x.dim()))
        mean = x.mean(dim=dims)
        var = x.var(dim=dims, unbiased=False)
        running_var = bn.running_var + bn.eps
        total = total + ((mean - bn.running_mean).pow(2) / running_var).mean()
        total = total + ((var + bn.eps).div(running_var).sqrt() - 1).pow(2).mean()
    return total


def synthesize(split: SplitModel, layer: str, settings: AttackSettings,
               progress: Progress | None = None) -> torch.Tensor:
    """``settings.synth_images`` images (N, C, H, W) in [0, 1] whose BatchNorm statistics up to ``layer``
    match the stored ones, optimised in batches of ``settings.synth_batch`` from uniform noise."""
    statistics_layers(split, layer)
    generator = torch.Generator().manual_seed(settings.seed)
    batches = []
    for start in range(0, settings.synth_images, settings.synth_batch):
        n = min(settings.synth_batch, settings.synth_images - start)
        noise = torch.rand((n, *split.input_shape), generator=generator)

        def loss(x: torch.Tensor) -> torch.Tensor:
            shifted = _jitter(x, generator, settings.synth_jitter)
            prior = settings.synth_tv_weight * total_variation(x) + settings.synth_l2_weight * (x - 0.5).pow(2).flatten(
                1).mean(1)
            return bn_mismatch(split, layer, shifted) + prior.mean()

        batches.append(optimize_images(noise, loss, settings.synth_steps, settings.synth_lr))
        if progress:
            progress(start + n, settings.synth_images)
    return torch.cat(batches)


def _jitter(x: torch.Tensor, generator: torch.Generator, shift: int) -> torch.Tensor:
    """The batch rolled by up to ``shift`` pixels and flipped left-right at random (one draw per step)."""
    if shift:
        dy, dx = (int(v) for v in torch.randint(-shift, shift + 1, (2,), generator=generator))
        x = torch.roll(x, shifts=(dy, dx), dims=(2, 3))
    if bool(torch.rand((), generator=generator) < 0.5):
        x = x.flip(3)
    return x


def train_datafree(split: SplitModel, layer: str, settings: AttackSettings, defense: Defense | None = None,
                   progress: Progress | None = None) -> tuple[TrainedDecoder, dict]:
    """Synthesise inputs from the BatchNorm statistics up to ``layer``, train the chained inverters on them.

    Returns the decoder (``seconds`` = synthesis + training) and facts for the report: the BatchNorm
    layers used, the mismatch before and after synthesis, the synthesis time, the synthesised images.
    """
    start = time.perf_counter()
    used = statistics_layers(split, layer)
    torch.manual_seed(settings.seed)
    noise = torch.rand((min(settings.synth_batch, settings.synth_images), *split.input_shape),
                       generator=torch.Generator().manual_seed(settings.seed))
    synthetic = synthesize(split, layer, settings, progress)
    synth_seconds = time.perf_counter() - start
    with torch.no_grad():
        before = float(bn_mismatch(split, layer, noise))
        after = float(bn_mismatch(split, layer, synthetic[:len(noise)]))
    decoder = BlockwiseTrainer(split, synthetic, settings, defense).train(layer, progress)
    decoder.seconds = time.perf_counter() - start
    facts = {"bn_layers": used, "bn_mismatch_noise": before, "bn_mismatch_synthetic": after,
             "synth_seconds": synth_seconds, "n_synthetic": int(len(synthetic))}
    return decoder, facts | {"synthetic": synthetic}
