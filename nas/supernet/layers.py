"""One layer slot of the supernet: its own weights per op kind, and the shortcut's projection.

Ops do not nest (a regular conv is no slice of an MBConv), so each slot holds one set of weights
per op kind the stage offers: ``conv`` (kxk conv -> BN -> act -> SE), ``dsconv`` (kxk depthwise
-> SE -> 1x1 project) and ``mbconv`` (1x1 expand -> kxk depthwise -> SE -> 1x1 project, at the
largest expansion; ``mbconv1`` .. ``mbconv6`` share it). A resolved ``search_spaces.builder.Layer``
says which slice runs; ``export`` names that slice as ``build_model`` names the layer.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from nas.supernet.elastic import ElasticConvBN, ElasticSE, StateDict
from search_spaces.builder import Layer

__all__ = ["OP_KINDS", "OpSizes", "LayerSlot"]

OP_KINDS = ("conv", "dsconv", "mbconv")


class OpSizes:
    """The largest sizes one op kind takes in a slot."""

    def __init__(self, in_max: int, out_max: int, kernel_max: int, expansion_max: int, se_reduced_max: int,
                 bn_eps: float, bn_momentum: float) -> None:
        self.in_max, self.out_max, self.kernel_max = in_max, out_max, kernel_max
        self.expansion_max, self.se_reduced_max = expansion_max, se_reduced_max
        self.bn_eps, self.bn_momentum = bn_eps, bn_momentum

    def conv_bn(self, cin: int, cout: int, kernel: int, depthwise: bool = False) -> ElasticConvBN:
        return ElasticConvBN(cin, cout, kernel, self.bn_eps, self.bn_momentum, depthwise)


def _se(channels_max: int, sizes: OpSizes) -> ElasticSE | None:
    return ElasticSE(channels_max, sizes.se_reduced_max) if sizes.se_reduced_max else None


def _apply_se(se: ElasticSE | None, x: torch.Tensor, l: Layer) -> torch.Tensor:
    if not l.se_reduced:
        return x
    if se is None:
        raise ValueError(f"SE reduced to {l.se_reduced} channels, but this slot has no SE weights")
    return se(x, l.se_reduced, l.act)


def _export_se(se: ElasticSE | None, prefix: str, channels: int, l: Layer) -> StateDict:
    if not l.se_reduced:
        return {}
    if se is None:
        raise ValueError(f"SE reduced to {l.se_reduced} channels, but this slot has no SE weights")
    return se.export(prefix, channels, l.se_reduced)


class MBConvOp(nn.Module):
    """The inverted residual at the largest expansion: a subnet uses the first ``in * e`` channels."""

    def __init__(self, s: OpSizes) -> None:
        super().__init__()
        mid = s.in_max * s.expansion_max
        self.expand = s.conv_bn(s.in_max, mid, 1)
        self.depthwise = s.conv_bn(mid, mid, s.kernel_max, depthwise=True)
        self.se = _se(mid, s)
        self.project = s.conv_bn(mid, s.out_max, 1)

    def forward(self, x: torch.Tensor, l: Layer) -> torch.Tensor:
        x = self.expand(x, l.in_channels * l.expansion, 1, 1, l.act)
        x = self.depthwise(x, 0, l.kernel, l.stride, l.act)
        x = _apply_se(self.se, x, l)
        return self.project(x, l.out_channels, 1)

    def export(self, prefix: str, l: Layer) -> StateDict:
        mid = l.in_channels * l.expansion
        sd = {**self.expand.export(f"{prefix}0.", l.in_channels, mid, 1),
              **self.depthwise.export(f"{prefix}1.", mid, mid, l.kernel)}
        sd.update(_export_se(self.se, f"{prefix}2.", mid, l))
        sd.update(self.project.export(f"{prefix}3.", mid, l.out_channels, 1))
        return sd


class DSConvOp(nn.Module):
    """Depthwise-separable: kxk depthwise -> SE -> 1x1 project (EfficientNet's MBConv1)."""

    def __init__(self, s: OpSizes) -> None:
        super().__init__()
        self.depthwise = s.conv_bn(s.in_max, s.in_max, s.kernel_max, depthwise=True)
        self.se = _se(s.in_max, s)
        self.project = s.conv_bn(s.in_max, s.out_max, 1)

    def forward(self, x: torch.Tensor, l: Layer) -> torch.Tensor:
        x = self.depthwise(x, 0, l.kernel, l.stride, l.act)
        x = _apply_se(self.se, x, l)
        return self.project(x, l.out_channels, 1)

    def export(self, prefix: str, l: Layer) -> StateDict:
        sd = self.depthwise.export(f"{prefix}0.", l.in_channels, l.in_channels, l.kernel)
        sd.update(_export_se(self.se, f"{prefix}1.", l.in_channels, l))
        sd.update(self.project.export(f"{prefix}2.", l.in_channels, l.out_channels, 1))
        return sd


class ConvOp(nn.Module):
    """Regular conv: kxk conv -> BN -> act -> SE."""

    def __init__(self, s: OpSizes) -> None:
        super().__init__()
        self.conv = s.conv_bn(s.in_max, s.out_max, s.kernel_max)
        self.se = _se(s.out_max, s)

    def forward(self, x: torch.Tensor, l: Layer) -> torch.Tensor:
        x = self.conv(x, l.out_channels, l.kernel, l.stride, l.act)
        return _apply_se(self.se, x, l)

    def export(self, prefix: str, l: Layer) -> StateDict:
        sd = self.conv.export(f"{prefix}0.", l.in_channels, l.out_channels, l.kernel)
        sd.update(_export_se(self.se, f"{prefix}1.", l.out_channels, l))
        return sd


_OP_CLASSES: dict[str, type[MBConvOp] | type[DSConvOp] | type[ConvOp]] = {
    "conv": ConvOp, "dsconv": DSConvOp, "mbconv": MBConvOp}


def _drop_path(x: torch.Tensor, p: float, training: bool) -> torch.Tensor:
    """Stochastic depth as ``blocks.DropPath``."""
    if not training or p == 0.0:
        return x
    keep = 1.0 - p
    mask = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(keep)
    return x * mask.div_(keep)


class LayerSlot(nn.Module):
    """The ``j``-th layer of a stage: the op kinds' weights and, where needed, the shortcut projection.

    Args:
        sizes: op kind -> its largest sizes (``expansion_max`` matters for ``mbconv`` only).
        projection: the pool shortcut's 1x1 conv + BN (``(in_max, out_max)``) when some subnet
            needs one; None otherwise.
    """

    def __init__(self, sizes: dict[str, OpSizes], projection: OpSizes | None) -> None:
        super().__init__()
        unknown = sorted(set(sizes) - set(OP_KINDS))
        if unknown:
            raise ValueError(f"unknown op kind {unknown[0]!r}, expected one of {OP_KINDS}")
        self.ops = nn.ModuleDict({kind: _OP_CLASSES[kind](s) for kind, s in sizes.items()})
        self.projection = projection.conv_bn(projection.in_max, projection.out_max, 1) if projection else None

    def _projection(self, l: Layer) -> ElasticConvBN:
        if self.projection is None:
            raise ValueError(f"a pool shortcut {l.in_channels} -> {l.out_channels} channels, but this slot has no "
                             "projection weights")
        return self.projection

    def _shortcut(self, x: torch.Tensor, l: Layer) -> torch.Tensor:
        if l.shortcut == "identity":
            return x
        if l.stride > 1:
            x = F.avg_pool2d(x, l.stride, l.stride, ceil_mode=True, count_include_pad=False)
        if l.in_channels != l.out_channels:
            x = self._projection(l)(x, l.out_channels, 1)
        return x

    def _op(self, l: Layer) -> MBConvOp | DSConvOp | ConvOp:
        op = self.ops[l.op] if l.op in self.ops else None
        if not isinstance(op, (MBConvOp, DSConvOp, ConvOp)):
            raise ValueError(f"op {l.op!r} is not one of this slot's ops {tuple(self.ops)}")
        return op

    def forward(self, x: torch.Tensor, l: Layer) -> torch.Tensor:
        out = self._op(l)(x, l)
        if l.shortcut is None:
            return out
        return self._shortcut(x, l) + _drop_path(out, l.drop_path, self.training)

    def export(self, prefix: str, l: Layer) -> StateDict:
        """This layer's weights under ``build_model``'s names for block ``prefix`` (``blocks.<n>.``)."""
        sd = self._op(l).export(f"{prefix}main.", l)
        if l.shortcut == "pool" and l.in_channels != l.out_channels:
            index = 1 if l.stride > 1 else 0  # after the AvgPool2d, when there is one
            sd.update(self._projection(l).export(f"{prefix}shortcut.{index}.", l.in_channels, l.out_channels, 1))
        return sd
