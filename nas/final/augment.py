"""Data augmentation of final training, on whole uint8 batches on the training device.

* Small images held in memory (digits, MNIST, Fashion-MNIST, CIFAR): a random crop of the image
  zero-padded by ``resolution / 8`` pixels (4 at 32 px, the CIFAR convention) and a horizontal flip
  with probability 1/2, except for digits and MNIST: a mirrored digit is another symbol or none
  (a flipped 2 is not a 2), while a mirrored shirt or car is still one.
* Image folders: the loader's random-resized crop and flip (``nas.proxy.imagefolder``), then a
  RandAugment-style policy (Cubuk et al. 2020): two operations per image, each drawn uniformly from
  13 and applied with probability 1/2, at magnitude 9 of 10 with a random sign.

Each batch is transformed as one tensor (a gather, a few masked ops), so augmentation costs well
under 1 % of a training step. The random draws come from a generator seeded by (seed, epoch, rank):
an epoch's augmented batches are the same when a run resumes.
"""
from __future__ import annotations

import math
from typing import Callable

import torch
import torch.nn.functional as F

from nas.proxy.hooks import BatchTransform

__all__ = ["NO_FLIP", "RAND_OPS", "crop_flip", "rand_augment", "augmentation_name", "make_augment"]

NO_FLIP = frozenset({"digits", "mnist"})  # a mirrored digit is a different symbol
MAGNITUDE, OPS_PER_IMAGE, OP_PROBABILITY = 9, 2, 0.5
_LUMA = (0.299, 0.587, 0.114)


def crop_flip(images: torch.Tensor, pad: int, flip: bool, generator: torch.Generator) -> torch.Tensor:
    """Random ``(H, W)`` crops of ``images`` zero-padded by ``pad``, mirrored with probability 1/2 if ``flip``.

    One ``gather`` over the flattened padded batch (faster than advanced indexing).
    """
    n, c, h, w = images.shape
    device = images.device
    padded = F.pad(images, (pad, pad, pad, pad))
    dy = torch.randint(0, 2 * pad + 1, (n, 1), generator=generator, device=device)
    dx = torch.randint(0, 2 * pad + 1, (n, 1), generator=generator, device=device)
    rows = dy + torch.arange(h, device=device)
    cols = dx + torch.arange(w, device=device)
    if flip:
        mirror = torch.rand((n, 1), generator=generator, device=device) < 0.5
        cols = torch.where(mirror, cols.flip(1), cols)
    index = (rows[:, :, None] * (w + 2 * pad) + cols[:, None, :]).view(n, 1, h * w).expand(n, c, h * w)
    return padded.reshape(n, c, -1).gather(2, index).view(n, c, h, w)


# -- RandAugment: each op maps float (k, C, H, W) images in 0..255 and signed magnitudes (k,) to images -------------
def _gray(x: torch.Tensor) -> torch.Tensor:
    if x.shape[1] == 1:
        return x
    return (x * torch.tensor(_LUMA, device=x.device).view(1, 3, 1, 1)).sum(1, keepdim=True)


def _blend(a: torch.Tensor, b: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """``b + factor * (a - b)``: PIL's ImageEnhance (factor 1 keeps ``a``)."""
    return b + factor.view(-1, 1, 1, 1) * (a - b)


def _affine(x: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def _rotate(x: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
    angle = m * math.radians(30)
    cos, sin = angle.cos(), angle.sin()
    return _affine(x, torch.stack([cos, -sin, 0 * m, sin, cos, 0 * m], 1).view(-1, 2, 3))


def _shear(axis: int) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    def op(x: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
        s, one, zero = 0.3 * m, torch.ones_like(m), torch.zeros_like(m)
        rows = [one, s, zero, zero, one, zero] if axis == 0 else [one, zero, zero, s, one, zero]
        return _affine(x, torch.stack(rows, 1).view(-1, 2, 3))
    return op


def _translate(axis: int) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    def op(x: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
        t, one, zero = 0.45 * 2 * m, torch.ones_like(m), torch.zeros_like(m)  # 45 % of the side (grid is -1..1)
        rows = [one, zero, t, zero, one, zero] if axis == 0 else [one, zero, zero, zero, one, t]
        return _affine(x, torch.stack(rows, 1).view(-1, 2, 3))
    return op


def _autocontrast(x: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
    lo, hi = x.amin((2, 3), keepdim=True), x.amax((2, 3), keepdim=True)
    scale = torch.where(hi > lo, 255.0 / (hi - lo).clamp_min(1e-3), torch.ones_like(hi))
    return torch.where(hi > lo, (x - lo) * scale, x)


def _sharpness(x: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
    kernel = torch.tensor([[1.0, 1.0, 1.0], [1.0, 5.0, 1.0], [1.0, 1.0, 1.0]], device=x.device) / 13
    c = x.shape[1]
    smooth = F.conv2d(F.pad(x, (1, 1, 1, 1), mode="replicate"), kernel.expand(c, 1, 3, 3), groups=c)
    return _blend(x, smooth, 1 + 0.9 * m)


RAND_OPS: dict[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = {
    "identity": lambda x, m: x,
    "autocontrast": _autocontrast,
    "rotate": _rotate,
    "posterize": lambda x, m: torch.floor(x / 2 ** int(4 * MAGNITUDE / 10)) * 2 ** int(4 * MAGNITUDE / 10),
    "solarize": lambda x, m: torch.where(x >= 256 * MAGNITUDE / 10, 255 - x, x),
    "color": lambda x, m: _blend(x, _gray(x).expand_as(x), 1 + 0.9 * m),
    "contrast": lambda x, m: _blend(x, _gray(x).mean((1, 2, 3), keepdim=True).expand_as(x), 1 + 0.9 * m),
    "brightness": lambda x, m: x * (1 + 0.9 * m).view(-1, 1, 1, 1),
    "sharpness": _sharpness,
    "shear_x": _shear(0),
    "shear_y": _shear(1),
    "translate_x": _translate(0),
    "translate_y": _translate(1),
}


def rand_augment(images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """RandAugment-style: ``OPS_PER_IMAGE`` ops per image from ``RAND_OPS``, each with probability 1/2."""
    n, device = len(images), images.device
    x = images.float()
    names = list(RAND_OPS)
    for _ in range(OPS_PER_IMAGE):
        choice = torch.randint(0, len(names), (n,), generator=generator, device=device)
        choice = torch.where(torch.rand(n, generator=generator, device=device) < OP_PROBABILITY, choice, 0)
        sign = torch.where(torch.rand(n, generator=generator, device=device) < 0.5, -1.0, 1.0)
        magnitude = sign * MAGNITUDE / 10
        for k in range(1, len(names)):
            chosen = (choice == k).nonzero().flatten()
            if len(chosen):
                x[chosen] = RAND_OPS[names[k]](x[chosen], magnitude[chosen]).clamp(0, 255)
    return x.round().to(torch.uint8)


def augmentation_name(dataset: str, kind: str, resolution: int) -> str:
    """The policy in words, for the recipe of ``metrics.json``."""
    if kind == "folder":
        return (f"random-resized crop (scale 0.08-1) + horizontal flip + RandAugment ({OPS_PER_IMAGE} ops, "
                f"magnitude {MAGNITUDE}, p {OP_PROBABILITY})")
    flip = "no flip (digits)" if dataset in NO_FLIP else "horizontal flip"
    return f"random crop with {max(1, round(resolution / 8))} px zero padding + {flip}"


def make_augment(dataset: str, kind: str, resolution: int, seed: int) -> Callable[[int, int, torch.device],
                                                                                    BatchTransform]:
    """The ``TrainHooks.augment`` factory: ``(epoch, rank, device) -> uint8 batch transform`` of that epoch."""
    pad, flip = max(1, round(resolution / 8)), dataset not in NO_FLIP

    def factory(epoch: int, rank: int, device: torch.device) -> BatchTransform:
        generator = torch.Generator(device=device).manual_seed((seed * 1_000_003 + epoch) * 1_009 + rank + 7)
        if kind == "folder":
            return lambda images: rand_augment(images, generator)
        return lambda images: crop_flip(images, pad, flip, generator)

    return factory
