"""Bounds on what an architecture may ask for, checked from the spec alone, before anything is built.

Layer counts, channel widths and resolutions follow from the spec in a few arithmetic steps
(``round_repeats``, ``round_filters``), so an architecture that would take hours to resolve or more
memory than the machine has (``r1000000000``, ``depth_mult: 1.0e+300``, ``c1000000``,
``--resolution 100000``) is refused with one line before a layer list or a tensor exists.
The bounds are far beyond any published network (EfficientNet-B7: 55 layers, 640 head channels
x 4 = 2,560, 600 px) and can be raised through the environment variables named in each message.
"""
from __future__ import annotations

import math
import os

from search_spaces.spec import ArchSpec, SpecError, round_filters, round_repeats

__all__ = ["MAX_LAYERS", "MAX_CHANNELS", "MAX_RESOLUTION", "MAX_ACTIVATION_BYTES", "check_size", "activation_bytes"]

MAX_LAYERS = 2_000
MAX_CHANNELS = 65_536
MAX_RESOLUTION = 8_192
MAX_ACTIVATION_BYTES = 8 * 2**30  # one image's largest feature map, float32, in training (x ~3 kept for backward)


def _limit(name: str, default: int) -> int:
    text = os.environ.get(f"NAS_{name}", "")
    return int(text) if text.isdigit() and int(text) > 0 else default


def _finite_mult(value: float, what: str) -> None:
    if not math.isfinite(value) or value <= 0 or value > 1e6:
        raise SpecError(f"{what} must be a positive number up to 1e6, but got {value!r}")


def activation_bytes(arch: ArchSpec, resolution: int) -> int:
    """An upper estimate of one image's largest float32 feature map (the expanded one of a stage)."""
    size, largest = resolution, 0
    stem = round_filters(arch.stem_channels, arch.width_mult)
    size = -(-size // 2)
    largest = stem * size * size
    for st in arch.stages:
        channels = round_filters(st.out_channels, arch.width_mult)
        expanded = channels * max(1, st.expansion)
        largest = max(largest, expanded * size * size)
        size = -(-size // st.stride)
        largest = max(largest, expanded * size * size)
    return 4 * largest


def check_size(arch: ArchSpec, resolution: int | None = None) -> None:
    """Refuse an architecture (at ``resolution``, default its own) beyond the bounds, with one line.

    Raises:
        SpecError: naming the value, the bound and the environment variable that raises it.
    """
    res = arch.resolution if resolution is None else resolution
    _finite_mult(arch.depth_mult, "depth_mult")
    _finite_mult(arch.width_mult, "width_mult")
    max_res = _limit("MAX_RESOLUTION", MAX_RESOLUTION)
    if not 1 <= res <= max_res:
        raise SpecError(f"resolution must be from 1 to {max_res} pixels (NAS_MAX_RESOLUTION raises it), but got {res}")
    max_layers = _limit("MAX_LAYERS", MAX_LAYERS)
    layers: float = sum(st.repeats for st in arch.stages) * arch.depth_mult  # ceil per stage adds < 1 each
    if layers <= max_layers:
        layers = sum(round_repeats(st.repeats, arch.depth_mult) for st in arch.stages)
    if layers > max_layers:
        raise SpecError(f"{arch.name or 'the architecture'} has {layers:.4g} layers, more than the {max_layers} "
                        f"allowed (NAS_MAX_LAYERS raises it)")
    max_ch = _limit("MAX_CHANNELS", MAX_CHANNELS)
    widths = [arch.stem_channels, arch.head_channels] + [st.out_channels * max(1, st.expansion) for st in arch.stages]
    widest = max(w * arch.width_mult for w in widths)
    if widest > max_ch:
        raise SpecError(f"{arch.name or 'the architecture'} has a layer of {widest:.4g} channels, more than the "
                        f"{max_ch} allowed (NAS_MAX_CHANNELS raises it)")
    max_bytes = _limit("MAX_ACTIVATION_BYTES", MAX_ACTIVATION_BYTES)
    need = activation_bytes(arch, res)
    if need > max_bytes:
        raise SpecError(f"{arch.name or 'the architecture'} at {res} px needs a {need / 2**30:.1f} GiB feature map "
                        f"per image, more than the {max_bytes / 2**30:.1f} GiB allowed "
                        f"(NAS_MAX_ACTIVATION_BYTES raises it)")
