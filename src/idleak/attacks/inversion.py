"""Model-inversion attacks on split computing: rebuild the input image from the features at a split.

* ``learned`` (black-box on private data): a decoder from features to image, trained on AUX images
  (public faces of other people) pushed through the target's front part (He et al., ACSAC 2019).
  With ``blockwise``: one inversion module per block between consecutive split layers, each trained
  to map a block's output back to its input, plus a cycle-consistency term that pushes the image
  rebuilt so far through the target's front part and asks for the observed features again
  (Dong et al., BMVC 2022, divide-and-conquer inversion); the modules are then chained.
* ``optimize`` (white-box): the image whose features match the observed ones, found by gradient
  descent from the AUX mean face, with a total-variation prior and the image range [0, 1] enforced
  by projection (regularised maximum likelihood, Mahendran & Vedaldi style).
* ``class`` (Fredrikson et al., CCS 2015): gradient ascent on the log-probability of one class of
  the full classifier, from the AUX mean face, with total-variation and closeness-to-mean priors:
  a representative face of a training identity.

A defence (``features -> features``) is applied to every feature tensor the attacker receives,
the AUX features it trains on included (an adaptive attacker who can query the deployed system).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from idleak.attacks.split import Defense, SplitModel, apply_defense, augment

Progress = Callable[[int, int], None]


@dataclass
class AttackSettings:
    """Knobs of the attacks; the defaults are what ``idleak invert`` uses."""

    epochs: int = 30  # learned: passes over AUX
    batch_size: int = 32
    lr: float = 2e-3
    width: int = 32  # learned: decoder channels at its coarsest level
    cycle_weight: float = 0.1  # blockwise: weight of cycle consistency through the front part
    steps: int = 300  # optimize: gradient steps
    step_lr: float = 0.05
    tv_weight: float = 0.02  # optimize: total-variation prior
    class_steps: int = 300  # class: gradient-ascent steps
    class_lr: float = 0.05
    class_tv_weight: float = 2.0
    class_prior_weight: float = 5.0  # class: squared distance to the AUX mean face
    synth_images: int = 128  # datafree: images synthesised from the BatchNorm statistics
    synth_batch: int = 64  # datafree: images optimised together (their batch statistics are matched)
    synth_steps: int = 200  # datafree: gradient steps per batch
    synth_lr: float = 0.05
    synth_tv_weight: float = 0.05  # datafree: total-variation prior
    synth_l2_weight: float = 0.01  # datafree: squared distance to mid-grey
    synth_jitter: int = 2  # datafree: random shift (pixels) at every step
    seed: int = 0


# -- feature statistics and inversion networks -------------------------------------------------------
class Normalizer(nn.Module):
    """Per-channel mean and one scale, measured on AUX features; maps features to ~unit range and back."""

    def __init__(self, features: torch.Tensor) -> None:
        super().__init__()
        dims = [0] + list(range(2, features.dim()))
        mean = features.mean(dim=dims, keepdim=True)[0] if features.dim() > 2 else features.mean(0)
        scale = (features - mean).std().clamp_min(1e-6)
        self.register_buffer("mean", mean.detach().clone())
        self.register_buffer("scale", scale.detach().clone())

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return (features - self.mean) / self.scale

    def inverse(self, normalized: torch.Tensor) -> torch.Tensor:
        return normalized * self.scale + self.mean


class Inverter(nn.Module):
    """Maps features of ``in_shape`` to an image (sigmoid output) or to features of ``out_shape``.

    Conv features: a 3x3 conv, then transposed convs (4x4, stride 2) that double the resolution
    until within 25 % of the output's size, and a 3x3 conv to the output channels there (then a
    bilinear resize to the exact size); vector features start
    with a linear layer onto a coarse grid instead of the conv. Vector outputs: an MLP. Channels:
    ``width`` at the finest hidden level, doubling towards the coarsest (at most 2 x ``width``),
    ``width / 2`` at the output resolution.
    """

    def __init__(self, in_norm: Normalizer, in_shape: Sequence[int], out_shape: Sequence[int], image: bool,
                 out_norm: Normalizer | None = None, width: int = 32) -> None:
        super().__init__()
        self.in_norm, self.out_norm = in_norm, out_norm
        self.in_shape, self.out_shape, self.image = tuple(in_shape), tuple(out_shape), image
        if len(out_shape) != 3:
            size = math.prod(in_shape)
            self.body = nn.Sequential(nn.Flatten(), nn.Linear(size, 4 * width), nn.ReLU(),
                                      nn.Linear(4 * width, math.prod(out_shape)))
            self.final = None
            return
        out_c, out_h, out_w = out_shape
        if len(in_shape) == 3:
            h, w = in_shape[1:]
        else:
            h, w = out_h, out_w
            while h > 8 and w > 8:
                h, w = -(-h // 2), -(-w // 2)
        n_up = 0  # doublings; the last bilinear resize may enlarge by up to 25 % (150 from 140, not from 280)
        while (h << n_up) * 1.25 < out_h or (w << n_up) * 1.25 < out_w:
            n_up += 1
        channels = [min(2 * width, width << max(0, n_up - 1 - k)) for k in range(max(1, n_up))]
        if len(in_shape) == 3:
            layers: list[nn.Module] = [nn.Conv2d(in_shape[0], channels[0], 3, padding=1)]
        else:
            layers = [nn.Flatten(), nn.Linear(math.prod(in_shape), channels[0] * h * w), _Reshape(channels[0], h, w)]
        layers += [nn.BatchNorm2d(channels[0]), nn.ReLU()]
        for k in range(n_up - 1):
            layers += [nn.ConvTranspose2d(channels[k], channels[k + 1], 4, stride=2, padding=1),
                       nn.BatchNorm2d(channels[k + 1]), nn.ReLU()]
        self.body = nn.Sequential(*layers)
        tail = max(8, width // 2)
        self.final = nn.Sequential(nn.ConvTranspose2d(channels[-1], tail, 4, stride=2, padding=1),
                                   nn.BatchNorm2d(tail), nn.ReLU(), nn.Conv2d(tail, out_c, 3, padding=1)) if n_up \
            else nn.Conv2d(channels[-1], out_c, 3, padding=1)

    def raw(self, features: torch.Tensor) -> torch.Tensor:
        """The output before the image squashing / de-normalisation (normalised target space)."""
        x = self.body(self.in_norm(features))
        if self.final is None:
            return x.view(len(x), *self.out_shape)
        x = self.final(x)
        if x.shape[-2:] != self.out_shape[1:]:
            x = F.interpolate(x, size=self.out_shape[1:], mode="bilinear", align_corners=False)
        return x

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        x = self.raw(features)
        if self.image:
            return torch.sigmoid(x)
        return self.out_norm.inverse(x) if self.out_norm is not None else x


class _Reshape(nn.Module):
    def __init__(self, *shape: int) -> None:
        super().__init__()
        self.shape = shape

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.view(len(x), *self.shape)


class Chain(nn.Module):
    """Inverters applied deepest first: features at the split -> ... -> image."""

    def __init__(self, stages: Sequence[Inverter]) -> None:
        super().__init__()
        self.stages = nn.ModuleList(stages)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        for stage in reversed(self.stages):
            features = stage(features)
        return features


@dataclass
class TrainedDecoder:
    """A decoder for one split and what training it cost."""

    layer: str
    decoder: nn.Module
    seconds: float
    losses: list[float] = field(default_factory=list)
    blockwise: bool = False

    def invert(self, features: torch.Tensor, batch: int = 64) -> torch.Tensor:
        self.decoder.eval()
        with torch.no_grad():
            return torch.cat([self.decoder(features[i:i + batch]) for i in range(0, len(features), batch)])


# -- learned attack ---------------------------------------------------------------------------------------
def train_decoder(split: SplitModel, layer: str, aux: torch.Tensor, settings: AttackSettings,
                  defense: Defense | None = None, progress: Progress | None = None) -> TrainedDecoder:
    """Train a features -> image decoder for ``layer`` on AUX images (N, C, H, W) in [0, 1]."""
    start = time.perf_counter()
    torch.manual_seed(settings.seed)
    generator = torch.Generator().manual_seed(settings.seed)
    point = split.points[layer]
    features = apply_defense(defense, split.batched_features(aux, layer))
    decoder = Inverter(Normalizer(features), point.feature_shape, split.input_shape, True, width=settings.width)
    losses = _fit(decoder, aux, settings, generator,
                  lambda images: apply_defense(defense, split.features(images, layer)),
                  lambda images, output: F.mse_loss(output, images), progress)
    return TrainedDecoder(layer, decoder.eval(), time.perf_counter() - start, losses)


def _fit(module: nn.Module, aux: torch.Tensor, settings: AttackSettings, generator: torch.Generator,
         inputs: Callable[[torch.Tensor], torch.Tensor], loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
         progress: Progress | None) -> list[float]:
    """Adam with one-cycle learning rate over augmented AUX batches; mean loss per epoch."""
    parameters = [p for p in module.parameters() if p.requires_grad]
    optimizer = torch.optim.Adam(parameters, lr=settings.lr)
    per_epoch = -(-len(aux) // settings.batch_size)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=settings.lr,
                                                   total_steps=max(1, settings.epochs * per_epoch))
    losses = []
    for epoch in range(settings.epochs):
        module.train()
        order = torch.randperm(len(aux), generator=generator)
        total = 0.0
        for i in range(0, len(aux), settings.batch_size):
            images = augment(aux[order[i:i + settings.batch_size]], generator)
            with torch.no_grad():
                features = inputs(images)
            loss = loss_fn(images, module(features))
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            schedule.step()
            total += loss.item() * len(images)
        losses.append(total / len(aux))
        if progress:
            progress(epoch + 1, settings.epochs)
    module.eval()
    return losses


class BlockwiseTrainer:
    """Dong et al.'s divide-and-conquer inversion over the blocks between consecutive split layers.

    Stage ``i`` maps the output of split layer ``i`` to the output of split layer ``i-1`` (the image
    for the first); its loss is the error on that target (normalised: features by their scale, pixels
    by the AUX pixel variance) plus ``cycle_weight`` times the error of the target's front part re-run
    on the image rebuilt through the earlier, already trained stages. Stages are cached, so a sweep
    over layers trains each block once (the last stage of a split with a defence is trained on
    defended inputs, separately).
    """

    def __init__(self, split: SplitModel, aux: torch.Tensor, settings: AttackSettings,
                 defense: Defense | None = None) -> None:
        self.split, self.aux, self.settings, self.defense = split, aux, settings, defense
        self.order = list(split.points)
        self._stages: dict[tuple[str, bool], Inverter] = {}
        self._norms: dict[str, Normalizer] = {}

    def _norm(self, layer: str) -> Normalizer:
        if layer not in self._norms:
            self._norms[layer] = Normalizer(self.split.batched_features(self.aux, layer))
        return self._norms[layer]

    def train(self, layer: str, progress: Progress | None = None) -> TrainedDecoder:
        """The chained decoder for a split at ``layer``."""
        start = time.perf_counter()
        chain: list[Inverter] = []
        losses: list[float] = []
        layers = self.order[:self.order.index(layer) + 1]
        for i, stage_layer in enumerate(layers):
            defended = self.defense is not None and stage_layer == layer
            key = (stage_layer, defended)
            if key not in self._stages:
                self._stages[key], stage_losses = self._train_stage(layers[i - 1] if i else None, stage_layer,
                                                                    Chain(list(chain)), defended, progress)
                losses += stage_losses
            chain.append(self._stages[key])
        return TrainedDecoder(layer, Chain(chain).eval(), time.perf_counter() - start, losses, blockwise=True)

    def _train_stage(self, previous: str | None, layer: str, earlier: Chain, defended: bool,
                     progress: Progress | None) -> tuple[Inverter, list[float]]:
        split, settings = self.split, self.settings
        torch.manual_seed(settings.seed)
        generator = torch.Generator().manual_seed(settings.seed)
        in_features = split.batched_features(self.aux, layer)
        if defended:
            in_features = apply_defense(self.defense, in_features)
        in_norm = Normalizer(in_features)
        if previous is None:
            stage = Inverter(in_norm, split.points[layer].feature_shape, split.input_shape, True,
                             width=settings.width)
        else:
            stage = Inverter(in_norm, split.points[layer].feature_shape, split.points[previous].feature_shape, False,
                             out_norm=self._norm(previous), width=settings.width)
        for p in earlier.parameters():
            p.requires_grad_(False)
        earlier.eval()
        layer_norm = self._norm(layer)
        pixel_variance = self.aux.var().clamp_min(1e-6)

        def inputs(images: torch.Tensor) -> torch.Tensor:
            features = split.features(images, layer)
            return apply_defense(self.defense, features) if defended else features

        def loss_fn(images: torch.Tensor, output: torch.Tensor) -> torch.Tensor:
            with torch.no_grad():
                clean = split.features(images, layer)
                target = images if previous is None else split.features(images, previous)
            if previous is None:
                rebuilt = output
                fit = F.mse_loss(output, target) / pixel_variance
            else:
                fit = F.mse_loss((output - stage.out_norm.mean) / stage.out_norm.scale, self._norm(previous)(target))
                rebuilt = earlier(output)
            cycle = F.mse_loss(layer_norm(split.features(rebuilt, layer)), layer_norm(clean))
            return fit + settings.cycle_weight * cycle

        losses = _fit(stage, self.aux, settings, generator, inputs, loss_fn, progress)
        return stage, losses


# -- white-box attacks --------------------------------------------------------------------------------
def total_variation(images: torch.Tensor) -> torch.Tensor:
    """Per-image mean absolute difference between neighbouring pixels."""
    dx = (images[..., :, 1:] - images[..., :, :-1]).abs().flatten(1).mean(1)
    dy = (images[..., 1:, :] - images[..., :-1, :]).abs().flatten(1).mean(1)
    return dx + dy


def optimize_images(start: torch.Tensor, loss_fn, steps: int, lr: float,
                    progress: Progress | None = None) -> torch.Tensor:
    """Adam with a cosine schedule on the pixels of ``start``, minimising ``loss_fn(x)`` (one loss per
    image, summed), with the images clamped to [0, 1] after every step."""
    x = start.clone().requires_grad_(True)
    optimizer = torch.optim.Adam([x], lr=lr)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, max(1, steps))
    for step in range(steps):
        loss = loss_fn(x).sum()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        schedule.step()
        with torch.no_grad():
            x.clamp_(0.0, 1.0)
        if progress and (step + 1) % 25 == 0:
            progress(step + 1, steps)
    return x.detach()


def optimize_attack(split: SplitModel, layer: str, observed: torch.Tensor, prior: torch.Tensor,
                    settings: AttackSettings, progress: Progress | None = None) -> torch.Tensor:
    """Images whose features at ``layer`` match ``observed`` (relative squared error) + TV, kept in [0, 1]."""
    torch.manual_seed(settings.seed)
    observed = observed.detach()
    norm = observed.flatten(1).pow(2).sum(1).clamp_min(1e-8)

    def loss(x: torch.Tensor) -> torch.Tensor:
        fit = (split.features(x, layer) - observed).flatten(1).pow(2).sum(1) / norm
        return fit + settings.tv_weight * total_variation(x)

    start = prior.expand(len(observed), *prior.shape[-3:])
    return optimize_images(start, loss, settings.steps, settings.step_lr, progress)


def class_attack(split: SplitModel, class_indices: Sequence[int], prior: torch.Tensor, settings: AttackSettings,
                 progress: Progress | None = None) -> torch.Tensor:
    """One representative image per class: gradient ascent on its log-probability with TV and mean-face priors."""
    torch.manual_seed(settings.seed)
    targets = torch.tensor(list(class_indices), dtype=torch.long)
    start = prior.expand(len(targets), *prior.shape[-3:]).clone()

    def loss(x: torch.Tensor) -> torch.Tensor:
        log_p = F.log_softmax(split.logits(x), dim=1).gather(1, targets[:, None])[:, 0]
        prior_term = (x - start).flatten(1).pow(2).mean(1)
        return -log_p + settings.class_tv_weight * total_variation(x) + settings.class_prior_weight * prior_term

    return optimize_images(start, loss, settings.class_steps, settings.class_lr, progress)


def class_probabilities(split: SplitModel, images: torch.Tensor, class_indices: Sequence[int]) -> list[float]:
    """The classifier's probability of each image's target class."""
    with torch.no_grad():
        p = F.softmax(split.logits(images), dim=1)
    return [float(p[i, c]) for i, c in enumerate(class_indices)]
