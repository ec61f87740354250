"""Analytic parameter and MAC counts from the spec alone: no model is built, nothing is traced.

Conventions (one multiply-add = one MAC):

* ``fvcore`` (default) equals ``fvcore.nn.FlopCountAnalysis(model.eval(), x).total()`` on the
  built model: conv and linear MACs (bias not counted), batch norm 2 per output element
  (eval mode, affine), ``adaptive_avg_pool2d`` 1 per input element (SE and the head pool
  both use it, torchvision style); activations, the SE gate product, residual adds and the
  pooling shortcut's ``avg_pool2d`` count 0, as fvcore counts them.
* ``paper``: conv + linear MACs only, the "FLOPS" of the EfficientNet and MnasNet papers
  (EfficientNet-B0: 385,814,752 at 224 px).
"""
from __future__ import annotations

from dataclasses import dataclass

from search_spaces.builder import Layer, resolve
from search_spaces.spec import ArchSpec

CONVENTIONS = ("fvcore", "paper")


@dataclass(frozen=True)
class Cost:
    params: int
    macs: int


def _out(size: int, stride: int) -> int:
    return -(-size // stride)  # 'same' padding: ceil(size / stride)


class _Counter:
    def __init__(self, fvcore: bool) -> None:
        self.fvcore = fvcore
        self.params = 0
        self.macs = 0

    def conv_bn(self, cin: int, cout: int, k: int, hw_out: int, groups: int = 1) -> None:
        w = cout * (cin // groups) * k * k
        self.params += w + 2 * cout  # conv weight (no bias) + BN affine
        self.macs += w * hw_out + (2 * cout * hw_out if self.fvcore else 0)

    def se(self, channels: int, reduced: int, hw: int) -> None:
        self.params += 2 * channels * reduced + reduced + channels
        self.macs += 2 * channels * reduced + (channels * hw if self.fvcore else 0)

    def layer(self, l: Layer, size: int) -> int:
        out = _out(size, l.stride)
        hw_in, hw_out = size * size, out * out
        cin, cout = l.in_channels, l.out_channels
        if l.op == "mbconv":
            mid = cin * l.expansion
            self.conv_bn(cin, mid, 1, hw_in)
            self.conv_bn(mid, mid, l.kernel, hw_out, groups=mid)
            if l.se_reduced:
                self.se(mid, l.se_reduced, hw_out)
            self.conv_bn(mid, cout, 1, hw_out)
        elif l.op == "dsconv":
            self.conv_bn(cin, cin, l.kernel, hw_out, groups=cin)
            if l.se_reduced:
                self.se(cin, l.se_reduced, hw_out)
            self.conv_bn(cin, cout, 1, hw_out)
        else:
            self.conv_bn(cin, cout, l.kernel, hw_out)
            if l.se_reduced:
                self.se(cout, l.se_reduced, hw_out)
        if l.shortcut == "pool" and cin != cout:
            self.conv_bn(cin, cout, 1, hw_out)
        return out


def count_cost(arch: ArchSpec, resolution: int | None = None, *, num_classes: int = 1000,
               in_chans: int = 3, convention: str = "fvcore") -> Cost:
    """Parameters and MACs of ``build_model(arch, num_classes, in_chans)`` on one image.

    Args:
        arch: the architecture.
        resolution: input size in pixels (square); default ``arch.resolution``.
        num_classes: classifier outputs.
        in_chans: input channels.
        convention: ``"fvcore"`` (default) or ``"paper"``; see the module docstring.

    Returns:
        ``Cost(params, macs)``; ``params`` equals ``sum(p.numel() for p in model.parameters())``.

    Raises:
        ValueError: unknown convention or a resolution below 1.
    """
    if convention not in CONVENTIONS:
        raise ValueError(f"convention must be one of {CONVENTIONS}, but got {convention=}")
    size = arch.resolution if resolution is None else int(resolution)
    if size < 1:
        raise ValueError(f"resolution must be >= 1, but got {resolution=}")
    r = resolve(arch)
    c = _Counter(convention == "fvcore")
    size = _out(size, 2)
    c.conv_bn(in_chans, r.stem_channels, 3, size * size)
    for layer in r.layers:
        size = c.layer(layer, size)
    if r.head_channels:
        c.conv_bn(r.layers[-1].out_channels, r.head_channels, 1, size * size)
    if c.fvcore:
        c.macs += r.features * size * size  # global average pool
    c.params += r.features * num_classes + num_classes
    c.macs += r.features * num_classes
    return Cost(c.params, c.macs)
