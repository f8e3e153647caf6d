"""The reference target: a small face-identification CNN idleak trains itself (``idleak invert --train-target``).

It is the demo and the test bed of the split-computing attacks: a known network, trained in seconds
on CPU, whose front part stands in for "the layers that run on the phone".

Network (``ReferenceFaceNet``, input grey 56x48, i.e. ORL at half size), split points in order::

    block1  conv3x3(1->16)  + BN + ReLU + maxpool   -> 16 x 28 x 24
    block2  conv3x3(16->32) + BN + ReLU + maxpool   -> 32 x 14 x 12
    block3  conv3x3(32->64) + BN + ReLU + maxpool   -> 64 x 7 x 6
    fc      flatten + dropout + linear(2688->128) + ReLU  -> 128   (the identity embedding)
    classifier  linear(128 -> number of target identities)

Data split (``make_split``), from an identity-labelled folder (first-level sub-folder = identity),
with a seeded shuffle; images and identities never appear in two roles except as stated:

* **TARGET identities**: half of the identities that have at least ``MIN_IMAGES`` images
  (``target_fraction``). They are the classes of the classifier.
* **TARGET-TRAIN images**: all images of each target identity except ``private_per_identity``
  (2 on ORL, so 8 per identity). The classifier is trained on these only.
* **PRIVATE images**: the ``private_per_identity`` held-out images of every target identity (never
  used for training). These are the users of the deployed system: the attacker sees only their
  features at the split. PRIVATE identities = TARGET identities, so the ``class`` attack (which
  recovers a class of the classifier) attacks exactly the private people.
* **GALLERY** (re-identification): the TARGET-TRAIN images of the private identities, i.e. OTHER
  photos of the same people (the attacker's photo database). A reconstruction is re-identified
  when its nearest gallery face is of the right person. The gallery never holds a PRIVATE image.
* **AUX identities and images**: every other identity, all its images (public faces of other
  people). The ``learned`` attack trains its decoders on these only; AUX shares no identity and no
  image with TARGET, PRIVATE or GALLERY.

On ORL (40 identities x 10): 20 target identities (160 train images, 40 private images, gallery
160 images), 20 AUX identities (200 images); re-identification chance is 1/20.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from idleak.attacks.split import augment
from idleak.errors import IdleakError
from idleak.sources import Record, open_source

#: Working resolution (C, H, W): ORL's 92x112 grey at half size.
REFERENCE_INPUT = (1, 56, 48)
#: Split points of the reference network, shallow to deep.
REFERENCE_LAYERS = ("block1", "block2", "block3", "fc")
#: An identity needs this many images to be a target identity (train + private).
MIN_IMAGES = 3


class ReferenceFaceNet(nn.Module):
    """Small face-identification CNN; ``classes[i]`` is the identity of output ``i``."""

    def __init__(self, classes: list[str], input_shape: tuple[int, int, int] = REFERENCE_INPUT) -> None:
        super().__init__()
        c, h, w = input_shape
        self.input_shape = tuple(input_shape)
        self.classes = list(classes)

        def block(cin: int, cout: int) -> nn.Sequential:
            return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU(),
                                 nn.MaxPool2d(2, ceil_mode=True))

        self.block1 = block(c, 16)
        self.block2 = block(16, 32)
        self.block3 = block(32, 64)
        fh, fw = h, w
        for _ in range(3):
            fh, fw = -(-fh // 2), -(-fw // 2)
        self.fc = nn.Sequential(nn.Flatten(), nn.Dropout(0.3), nn.Linear(64 * fh * fw, 128), nn.ReLU())
        self.classifier = nn.Linear(128, len(classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.fc(self.block3(self.block2(self.block1(x)))))


@dataclass
class ReferenceSplit:
    """Records per role (see the module docstring) and the identities of each."""

    target_train: list[Record]
    private: list[Record]
    gallery: list[Record]
    aux: list[Record]
    target_identities: list[str]
    aux_identities: list[str]
    seed: int = 0

    def describe(self) -> dict:
        """JSON-ready description: identities and image paths per role."""
        def paths(records: list[Record]) -> list[str]:
            return [r.path for r in records]

        return {
            "seed": self.seed,
            "target_identities": self.target_identities,
            "private_identities": sorted({r.identity for r in self.private}),
            "aux_identities": self.aux_identities,
            "n_target_train_images": len(self.target_train), "n_private_images": len(self.private),
            "n_gallery_images": len(self.gallery), "n_aux_images": len(self.aux),
            "target_train": paths(self.target_train), "private": paths(self.private),
            "gallery": paths(self.gallery), "aux": paths(self.aux),
            "design": ("classifier trained on TARGET-TRAIN images of the target identities; PRIVATE = held-out "
                       "images of the same identities (features seen by the attacker); GALLERY = their "
                       "TARGET-TRAIN photos (other photos of the private people, for re-identification); "
                       "AUX = all images of the other identities (the learned attack's training data)"),
        }


def make_split(folder: str | os.PathLike[str], seed: int = 0, target_fraction: float = 0.5,
               private_per_identity: int = 2) -> ReferenceSplit:
    """Split an identity-labelled folder into target / private / gallery / aux (see the module docstring)."""
    source = open_source(folder, "--train-target")
    by_identity: dict[str, list[Record]] = {}
    for record in source.records:
        if record.identity is not None:
            by_identity.setdefault(record.identity, []).append(record)
    eligible = sorted(i for i, recs in by_identity.items() if len(recs) >= MIN_IMAGES)
    n_target = int(round(len(eligible) * target_fraction))
    if n_target < 2 or len(by_identity) - n_target < 2:
        raise IdleakError(f"--train-target {folder}: needs identity sub-folders, at least 4 identities with "
                          f"{MIN_IMAGES}+ images each (found {len(eligible)} of {len(by_identity)})")
    rng = np.random.default_rng(seed)
    target_ids = sorted(eligible[i] for i in rng.permutation(len(eligible))[:n_target])
    aux_ids = sorted(set(by_identity) - set(target_ids))
    train, private = [], []
    for identity in target_ids:
        records = sorted(by_identity[identity], key=lambda r: r.path)
        order = rng.permutation(len(records))
        n_private = max(1, min(private_per_identity, len(records) - 2))
        private += [records[i] for i in sorted(order[:n_private])]
        train += [records[i] for i in sorted(order[n_private:])]
    aux = [r for identity in aux_ids for r in sorted(by_identity[identity], key=lambda r: r.path)]
    return ReferenceSplit(train, private, list(train), aux, target_ids, aux_ids, seed)


@dataclass
class TrainResult:
    """The trained target and how it did."""

    model: ReferenceFaceNet
    train_accuracy: float
    private_accuracy: float
    epochs: int
    seconds: float
    history: list[float] = field(default_factory=list)


def train_reference_target(train_images: np.ndarray, train_labels: list[str], private_images: np.ndarray,
                           private_labels: list[str], epochs: int = 40, seed: int = 0,
                           batch_size: int = 32) -> TrainResult:
    """Train ``ReferenceFaceNet`` on (N, 1, H, W) images in [0, 1] with identity labels."""
    start = time.perf_counter()
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    classes = sorted(set(train_labels))
    index = {c: i for i, c in enumerate(classes)}
    x = torch.from_numpy(train_images)
    y = torch.tensor([index[c] for c in train_labels])
    model = ReferenceFaceNet(classes, tuple(train_images.shape[1:]))
    optimizer = torch.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=1e-3)
    steps = epochs * -(-len(x) // batch_size)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=3e-3, total_steps=steps)
    history = []
    for _ in range(epochs):
        model.train()
        order = torch.randperm(len(x), generator=generator)
        total = 0.0
        for i in range(0, len(x), batch_size):
            batch = order[i:i + batch_size]
            loss = F.cross_entropy(model(augment(x[batch], generator)), y[batch], label_smoothing=0.1)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            schedule.step()
            total += loss.item() * len(batch)
        history.append(total / len(x))
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    train_acc = _accuracy(model, x, y)
    known = [i for i, c in enumerate(private_labels) if c in index]
    private_acc = _accuracy(model, torch.from_numpy(private_images[known]),
                            torch.tensor([index[private_labels[i]] for i in known])) if known else float("nan")
    return TrainResult(model, train_acc, private_acc, epochs, time.perf_counter() - start, history)


def _accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    with torch.no_grad():
        return float((model(x).argmax(1) == y).float().mean()) if len(x) else float("nan")


def save_reference_target(model: ReferenceFaceNet, path: str | os.PathLike[str]) -> Path:
    """Weights, classes and input shape in one file (``torch.load(..., weights_only=True)`` safe)."""
    path = Path(path)
    torch.save({"state_dict": model.state_dict(), "classes": model.classes,
                "input_shape": list(model.input_shape)}, path)
    return path


def load_reference_target(path: str | os.PathLike[str]) -> ReferenceFaceNet:
    """A ``ReferenceFaceNet`` saved by ``save_reference_target``, in eval mode."""
    try:
        data = torch.load(Path(path), map_location="cpu", weights_only=True)
    except (OSError, RuntimeError) as exc:
        raise IdleakError(f"cannot load reference target {path}: {exc}") from None
    model = ReferenceFaceNet(list(data["classes"]), tuple(data["input_shape"]))
    model.load_state_dict(data["state_dict"])
    return model.eval()
