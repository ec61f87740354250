"""Elastic primitives: weights at their largest size, of which a subnet runs a slice.

Each primitive holds one tensor per weight at the space's largest size and runs, for the active
subnet, ``F.conv2d`` / ``F.linear`` / ``F.batch_norm`` on views of it: the first output channels,
the first input channels, the centre of the largest kernel. Nothing is masked, so a forward pass
costs what the subnet costs. Every primitive can ``export`` its active slice under the state-dict
names of ``search_spaces.blocks`` (``ConvBNAct``: ``<prefix>0.weight`` and ``<prefix>1.*``;
``SqueezeExcite``: ``<prefix>reduce.*`` and ``<prefix>expand.*``).
"""
from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from search_spaces.blocks import crop_taps

__all__ = ["ACTIVATIONS", "ElasticBN", "ElasticConvBN", "ElasticSE", "StateDict", "conv2d", "crop_taps"]

StateDict = dict[str, torch.Tensor]
Activation = Callable[[torch.Tensor], torch.Tensor]
ACTIVATIONS: dict[str, Activation] = {"relu": F.relu, "relu6": F.relu6, "silu": F.silu, "hardswish": F.hardswish}


def conv2d(x: torch.Tensor, weight: torch.Tensor, stride: int, groups: int, crop: bool) -> torch.Tensor:
    """A bias-free 'same' convolution of ``x`` with ``weight`` (odd square kernel).

    With ``crop`` (training mode) the kernel taps that only read padding are skipped, and on maps of
    up to 4 pixels a 1x1 conv runs as a matrix product and a depthwise conv with one output pixel as
    a weighted sum: the same output, faster on CPU (as ``search_spaces.blocks.Conv2d`` does; at a
    32 px proxy resolution the last stages run on 2x2 and 1x1 maps).
    """
    kernel = weight.shape[-1]
    padding = (kernel - 1) // 2
    if not crop:
        return F.conv2d(x, weight, None, stride, padding, 1, groups)
    n, c, h, w = x.shape
    (h0, h1, ph), (w0, w1, pw) = (crop_taps(size, kernel, stride, padding) for size in (h, w))
    weight = weight[:, :, h0:h1 + 1, w0:w1 + 1]
    if h * w <= 4 and (ph, pw) == (0, 0) and x.is_contiguous(memory_format=torch.channels_last):
        if groups == 1 and weight.shape[-2:] == (1, 1) and (h * w == 1 or stride == 1):  # rows of NHWC
            rows = F.linear(x.permute(0, 2, 3, 1).reshape(-1, c), weight.flatten(1))
            return rows.view(n, h, w, -1).permute(0, 3, 1, 2)
        if groups == c == weight.shape[0] and weight.shape[-2:] == (h, w):  # one output pixel
            return (x * weight.reshape(1, c, h, w)).sum((2, 3), keepdim=True)
    return F.conv2d(x, weight, None, stride, (ph, pw), 1, groups)


class ElasticBN(nn.BatchNorm2d):
    """BatchNorm at the largest width; an input of ``c`` channels uses the first ``c`` of everything.

    It follows ``nn.BatchNorm2d`` exactly on that slice (momentum None: cumulative average), so
    ``nas.proxy.recalibrate_bn`` recalibrates the active subnet's statistics in place.
    """

    def _stats(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        mean, var, count = self.running_mean, self.running_var, self.num_batches_tracked
        if mean is None or var is None or count is None:
            raise ValueError("ElasticBN needs running statistics (track_running_stats=True)")
        return mean, var, count

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c = x.shape[1]
        mean, var, count = self._stats()
        factor = 0.0 if self.momentum is None else self.momentum
        if self.training:
            count.add_(1)
            if self.momentum is None:
                factor = 1.0 / float(count)
        return F.batch_norm(x, mean[:c], var[:c], self.weight[:c], self.bias[:c], self.training, factor, self.eps)

    def export(self, prefix: str, channels: int) -> StateDict:
        """The first ``channels`` of this BN under ``nn.BatchNorm2d``'s names."""
        mean, var, count = self._stats()
        return {f"{prefix}weight": self.weight[:channels], f"{prefix}bias": self.bias[:channels],
                f"{prefix}running_mean": mean[:channels], f"{prefix}running_var": var[:channels],
                f"{prefix}num_batches_tracked": count}


class ElasticConvBN(nn.Module):
    """Conv (no bias, 'same' padding) -> elastic BN -> activation, as ``blocks.ConvBNAct``.

    ``depthwise``: one filter per channel (``groups`` = channels), elastic in the channel count.
    Otherwise the weight is ``(out_max, in_max, K, K)`` and a subnet takes
    ``[:out, :in, centre k x k]``.
    """

    def __init__(self, in_max: int, out_max: int, kernel_max: int, bn_eps: float, bn_momentum: float,
                 depthwise: bool = False) -> None:
        super().__init__()
        if depthwise and in_max != out_max:
            raise ValueError(f"a depthwise conv keeps its width, but got in_max={in_max}, out_max={out_max}")
        self.depthwise = depthwise
        self.conv = nn.Conv2d(in_max, out_max, kernel_max, groups=out_max if depthwise else 1, bias=False)
        self.bn = ElasticBN(out_max, eps=bn_eps, momentum=bn_momentum)

    def _weight(self, in_ch: int, out_ch: int, kernel: int) -> torch.Tensor:
        k_max = self.conv.kernel_size[0]
        if kernel > k_max or kernel % 2 == 0:
            raise ValueError(f"kernel {kernel} is not an odd size up to the largest, {k_max}")
        o = (k_max - kernel) // 2
        weight = self.conv.weight
        weight = weight[:out_ch] if self.depthwise else weight[:out_ch, :in_ch]
        return weight[:, :, o:o + kernel, o:o + kernel]

    def forward(self, x: torch.Tensor, out_ch: int, kernel: int, stride: int = 1,
                act: str | None = None) -> torch.Tensor:
        in_ch = x.shape[1]
        if self.depthwise:
            out_ch = in_ch
        weight = self._weight(in_ch, out_ch, kernel)
        x = self.bn(conv2d(x, weight, stride, in_ch if self.depthwise else 1, self.training))
        return ACTIVATIONS[act](x) if act else x

    def export(self, prefix: str, in_ch: int, out_ch: int, kernel: int) -> StateDict:
        """This conv-BN's slice under ``ConvBNAct``'s names: ``<prefix>0.weight``, ``<prefix>1.*``."""
        return {f"{prefix}0.weight": self._weight(in_ch, out_ch, kernel), **self.bn.export(f"{prefix}1.", out_ch)}


class ElasticSE(nn.Module):
    """Squeeze-excite sized for the largest width and the largest reduced width.

    A subnet with ``c`` channels and ``r`` reduced ones takes ``reduce[:r, :c]`` and
    ``expand[:c, :r]`` (and the first biases), as ``blocks.SqueezeExcite`` computes.
    """

    def __init__(self, channels_max: int, reduced_max: int) -> None:
        super().__init__()
        self.reduce = nn.Conv2d(channels_max, reduced_max, 1)
        self.expand = nn.Conv2d(reduced_max, channels_max, 1)

    def _slices(self, channels: int, reduced: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """(reduce weight, reduce bias, expand weight, expand bias) of the subnet, the weights 4-d."""
        reduce_bias, expand_bias = self.reduce.bias, self.expand.bias
        if reduce_bias is None or expand_bias is None:
            raise ValueError("ElasticSE's 1x1 convs need biases")
        return (self.reduce.weight[:reduced, :channels], reduce_bias[:reduced],
                self.expand.weight[:channels, :reduced], expand_bias[:channels])

    def forward(self, x: torch.Tensor, reduced: int, act: str) -> torch.Tensor:
        reduce_w, reduce_b, expand_w, expand_b = self._slices(x.shape[1], reduced)
        s = F.adaptive_avg_pool2d(x, 1).flatten(1)
        s = ACTIVATIONS[act](F.linear(s, reduce_w[:, :, 0, 0], reduce_b))
        s = F.linear(s, expand_w[:, :, 0, 0], expand_b)
        return x * torch.sigmoid(s)[:, :, None, None]

    def export(self, prefix: str, channels: int, reduced: int) -> StateDict:
        names = ("reduce.weight", "reduce.bias", "expand.weight", "expand.bias")
        return {f"{prefix}{name}": t for name, t in zip(names, self._slices(channels, reduced))}
