"""The building blocks: conv-bn-act, squeeze-excite, stochastic depth and the three searched ops.

Each block's forward is flat: optional parts are ``nn.Identity`` and the skip decision is made
once in ``__init__``. Shortcuts:

* ``identity``: ``x + drop_path(f(x))`` when the layer keeps the shape (stride 1, in == out).
* ``pool``: where the shape changes, the shortcut is ``AvgPool(stride)`` followed, if the
  channel count changes, by a 1x1 conv + BN projection; where the shape is kept it is the
  identity residual (there is nothing to pool).
* ``none``: no shortcut.
"""
from __future__ import annotations

from typing import Callable, cast

import torch
import torch.nn.functional as F
from torch import nn

Norm = Callable[[int], nn.Module]  # the BatchNorm layer of a channel count (``partial(nn.BatchNorm2d, ...)``)

_ACT_LAYERS = {"relu": nn.ReLU, "relu6": nn.ReLU6, "silu": nn.SiLU, "hardswish": nn.Hardswish}


def make_act(name: str) -> nn.Module:
    # In place only where the backward pass needs just the output (ReLU's): autograd would copy
    # the input of an in-place SiLU or hard-swish to keep it (~2 % of a B0 training step).
    return _ACT_LAYERS[name](inplace=name in ("relu", "relu6"))


def crop_taps(size: int, kernel: int, stride: int, padding: int) -> tuple[int, int, int]:
    """(first, last, padding) of the kernel taps that meet the input along one axis of ``size``.

    The other taps only ever read zero padding. The crop is used only where it keeps the output
    size with symmetric padding; otherwise all taps are kept.
    """
    out = (size + 2 * padding - kernel) // stride + 1
    first, last = max(0, padding - (out - 1) * stride), min(kernel - 1, padding + size - 1)
    pad = padding - first
    if (size + 2 * pad - (last - first + 1)) // stride + 1 != out:
        return 0, kernel - 1, padding
    return first, last, pad


class Conv2d(nn.Conv2d):
    """``nn.Conv2d`` that, in training mode, skips the kernel taps that only ever read padding.

    At a 32 px proxy resolution the last stages of an EfficientNet run on 2x2 and 1x1 maps, where
    a 5x5 'same' conv reads 16 or 24 of its 25 taps from zero padding, and oneDNN's kernels
    for such maps are slow. Cropping the kernel to the taps that meet the input gives the same
    output (to float rounding) and the same gradients (zero for the skipped taps, as before).
    On maps of up to 4 pixels, a 1x1 conv then runs as a matrix product and a depthwise conv
    with one output pixel as a weighted sum. B0 at 32 px trains 10-20 % faster on CPU. Eval mode
    runs the plain convolution, so fvcore's trace, exported models and MACs see the full kernel.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.dilation != (1, 1) or isinstance(self.padding, str):
            return super().forward(x)
        n, c, h, w = x.shape
        (h0, h1, ph), (w0, w1, pw) = (crop_taps(*a) for a in zip((h, w), self.kernel_size, self.stride, self.padding))
        weight = self.weight[:, :, h0:h1 + 1, w0:w1 + 1]
        if h * w <= 4 and x.is_contiguous(memory_format=torch.channels_last):  # oneDNN is slowest here
            if self.groups == 1 and weight.shape[-2:] == (1, 1) and (ph, pw) == (0, 0) \
                    and (h * w == 1 or self.stride == (1, 1)):
                out = F.linear(x.permute(0, 2, 3, 1).reshape(-1, c), weight.flatten(1), self.bias)  # NHWC rows
                return out.view(n, h, w, -1).permute(0, 3, 1, 2)
            if self.groups == c == self.out_channels and weight.shape[-2:] == (h, w) and (ph, pw) == (0, 0):
                out = (x * weight.reshape(1, c, h, w)).sum((2, 3), keepdim=True)  # one output pixel
                return out if self.bias is None else out + self.bias.view(1, -1, 1, 1)
        if weight.shape[-2:] == self.weight.shape[-2:]:
            return super().forward(x)
        return F.conv2d(x, weight, self.bias, self.stride, (ph, pw), 1, self.groups)


class ConvBNAct(nn.Sequential):
    """Conv (no bias, 'same' padding for odd kernels) -> BatchNorm -> activation (or none)."""

    def __init__(self, in_ch: int, out_ch: int, kernel: int, stride: int = 1, groups: int = 1,
                 act: str | None = "silu", bn: Norm | None = None) -> None:
        bn = bn or nn.BatchNorm2d
        super().__init__(
            Conv2d(in_ch, out_ch, kernel, stride, padding=(kernel - 1) // 2, groups=groups, bias=False),
            bn(out_ch),
            make_act(act) if act else nn.Identity(),
        )


class SqueezeExcite(nn.Module):
    """SE as in EfficientNet: global average pool, 1x1 reduce, act, 1x1 expand, sigmoid gate."""

    def __init__(self, channels: int, reduced: int, act: str) -> None:
        super().__init__()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.reduce = nn.Conv2d(channels, reduced, 1)
        self.act = make_act(act)
        self.expand = nn.Conv2d(reduced, channels, 1)
        self.gate = nn.Sigmoid()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # The 1x1 convs act on a pooled vector: as matrix products their backward pass is ~10 % of a
        # B0 training step faster on CPU (same weights, same MACs for fvcore).
        s = self.pool(x).flatten(1)
        s = self.act(F.linear(s, self.reduce.weight.flatten(1), self.reduce.bias))
        s = F.linear(s, self.expand.weight.flatten(1), self.expand.bias)
        return x * self.gate(s)[:, :, None, None]


class DropPath(nn.Module):
    """Stochastic depth: drop the residual branch per sample with probability ``p`` in training."""

    def __init__(self, p: float) -> None:
        super().__init__()
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0:
            return x
        keep = 1.0 - self.p
        mask = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(keep)
        return x * mask.div_(keep)

    def extra_repr(self) -> str:
        return f"p={self.p:.4f}"


def make_shortcut(kind: str | None, in_ch: int, out_ch: int, stride: int, bn: Norm) -> nn.Module | None:
    """The shortcut module for a resolved skip kind (``identity``, ``pool`` or None)."""
    if kind is None:
        return None
    if kind == "identity":
        return nn.Identity()
    parts: list[nn.Module] = []
    if stride > 1:
        parts.append(nn.AvgPool2d(stride, stride, ceil_mode=True, count_include_pad=False))
    if in_ch != out_ch:
        parts.append(ConvBNAct(in_ch, out_ch, 1, act=None, bn=bn))
    return nn.Sequential(*parts)


class Block(nn.Module):
    """One layer of a stage: ``shortcut(x) + drop_path(main(x))`` or just ``main(x)``."""

    def __init__(self, main: nn.Sequential, shortcut: nn.Module | None, drop_path: float) -> None:
        super().__init__()
        self.main = main
        self.shortcut = shortcut
        self.has_skip = shortcut is not None
        self.drop_path = DropPath(drop_path) if self.has_skip and drop_path > 0 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.main(x)
        if not self.has_skip:
            return out
        return cast(nn.Module, self.shortcut)(x) + self.drop_path(out)  # has_skip: not None


def _se(channels: int, se_reduced: int, act: str) -> nn.Module:
    """Squeeze-excite to ``se_reduced`` channels, or nothing where that is 0."""
    return SqueezeExcite(channels, se_reduced, act) if se_reduced else nn.Identity()


def _depthwise_se_project(ch: int, out_ch: int, kernel: int, stride: int, se_reduced: int, act: str,
                          bn: Norm) -> list[nn.Module]:
    """kxk depthwise -> SE -> 1x1 linear project: the layers MBConv and the depthwise-separable conv share."""
    return [ConvBNAct(ch, ch, kernel, stride, groups=ch, act=act, bn=bn), _se(ch, se_reduced, act),
            ConvBNAct(ch, out_ch, 1, act=None, bn=bn)]


def mbconv(in_ch: int, out_ch: int, kernel: int, stride: int, expansion: int, se_reduced: int,
           act: str, bn: Norm) -> nn.Sequential:
    """MBConv: 1x1 expand -> kxk depthwise -> SE -> 1x1 linear project (timm's InvertedResidual)."""
    mid = in_ch * expansion
    return nn.Sequential(ConvBNAct(in_ch, mid, 1, act=act, bn=bn),
                         *_depthwise_se_project(mid, out_ch, kernel, stride, se_reduced, act, bn))


def dsconv(in_ch: int, out_ch: int, kernel: int, stride: int, expansion: int, se_reduced: int,
           act: str, bn: Norm) -> nn.Sequential:
    """Depthwise-separable: kxk depthwise -> SE -> 1x1 linear project (EfficientNet's MBConv1)."""
    return nn.Sequential(*_depthwise_se_project(in_ch, out_ch, kernel, stride, se_reduced, act, bn))


def conv(in_ch: int, out_ch: int, kernel: int, stride: int, expansion: int, se_reduced: int,
         act: str, bn: Norm) -> nn.Sequential:
    """Regular conv: kxk conv -> BN -> act -> SE."""
    return nn.Sequential(ConvBNAct(in_ch, out_ch, kernel, stride, act=act, bn=bn), _se(out_ch, se_reduced, act))


OP_BUILDERS = {"mbconv": mbconv, "dsconv": dsconv, "conv": conv}
