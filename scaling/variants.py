"""The scaled family B1..B7 of a base network, in two modes.

* ``compound``: the paper's rule, depth ``α^φ``, width ``β^φ``, resolution ``base·γ^φ``
  rounded to a multiple; dropout and drop-connect follow the official schedule (B_φ's values).
* ``official``: EfficientNet's published (width, depth, resolution, dropout) table, read from
  the ``efficientnet-b{φ}`` presets and applied to the base (multipliers multiply the base's;
  resolution scales by ``res_φ / res_0``). Applied to ``efficientnet-b0`` it gives B1..B7 exactly.

The official table is not ``(β^φ, α^φ, 224·γ^φ)`` (docs/reference.md §2): compare the two modes.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from scaling.compound import TARGET_PRODUCT, Coefficients, ScalingError, compound_arch, scale_arch
from search_spaces import ArchSpec, count_cost, get_preset

__all__ = ["MODES", "PHIS", "Variant", "official_row", "make_variant", "make_family", "variant_yaml"]

MODES = ("compound", "official")
PHIS = tuple(range(1, 8))  # the official table has B1..B7


@dataclass(frozen=True)
class OfficialRow:
    """One row of the official table: multipliers, resolution, dropout, drop-connect."""

    phi: int
    width: float
    depth: float
    resolution: int
    dropout: float
    drop_connect: float


def official_row(phi: int) -> OfficialRow:
    """EfficientNet-B``phi``'s published row, read from the preset YAML (not restated here).

    Raises:
        ScalingError: ``phi`` outside 0..7.
    """
    if phi not in (0, *PHIS):
        raise ScalingError(f"--phi must be in 1..7 (the official table's B1..B7), but got phi={phi!r}")
    p = get_preset(f"efficientnet-b{phi}")
    return OfficialRow(phi, p.width_mult, p.depth_mult, p.resolution, p.dropout, p.drop_connect)


@dataclass(frozen=True)
class Variant:
    """A scaled network and its cost against the base."""

    phi: int
    mode: str
    arch: ArchSpec
    params: int
    macs: int
    macs_ratio: float
    predicted_ratio: float | None  # (α·β²·γ²)^φ in compound mode

    @property
    def ideal_ratio(self) -> float:
        return TARGET_PRODUCT ** self.phi

    def row(self) -> dict[str, object]:
        a = self.arch
        return {"phi": self.phi, "mode": self.mode, "name": a.name, "depth": a.depth_mult, "width": a.width_mult,
                "resolution": a.resolution, "dropout": a.dropout, "drop_connect": a.drop_connect,
                "params": self.params, "macs": self.macs, "macs_ratio": round(self.macs_ratio, 4),
                "ideal_ratio": self.ideal_ratio,
                "predicted_ratio": None if self.predicted_ratio is None else round(self.predicted_ratio, 4)}


def make_variant(base: ArchSpec, phi: int, mode: str, coefficients: Coefficients | None = None,
                 resolution_multiple: int = 4) -> Variant:
    """``base`` scaled to B``phi`` in ``mode``.

    Raises:
        ScalingError: unknown mode, ``phi`` outside 1..7, or compound mode without coefficients.
    """
    if mode not in MODES:
        raise ScalingError(f"--mode must be one of {MODES}, but got mode={mode!r}")
    row, row0 = official_row(phi), official_row(0)
    name = f"{base.name or 'base'}-{mode}-b{phi}"
    predicted = None
    if mode == "official":
        res = int(base.resolution * row.resolution / row0.resolution + 0.5)
        arch = scale_arch(base, row.depth / row0.depth, row.width / row0.width, res, name,
                          dropout=row.dropout, drop_connect=row.drop_connect)
    else:
        if coefficients is None:
            raise ScalingError("compound mode needs α, β, γ (a grid search or --alpha --beta --gamma)")
        arch = compound_arch(base, coefficients, phi, resolution_multiple, name)
        arch = arch.replace(dropout=row.dropout, drop_connect=row.drop_connect)
        predicted = coefficients.product ** phi
    cost = count_cost(arch)
    return Variant(phi, mode, arch, cost.params, cost.macs, cost.macs / count_cost(base).macs, predicted)


def make_family(base: ArchSpec, phis: Sequence[int], mode: str, coefficients: Coefficients | None = None,
                resolution_multiple: int = 4) -> list[Variant]:
    """``make_variant`` for every φ in ``phis``."""
    return [make_variant(base, phi, mode, coefficients, resolution_multiple) for phi in phis]


def variant_yaml(v: Variant, coefficients: Coefficients | None) -> str:
    """The variant as an architecture YAML (``load_arch`` reads it) with a provenance header."""
    how = "the official EfficientNet table"
    if v.mode == "compound" and coefficients:
        how = (f"compound scaling with alpha={coefficients.alpha:g}, beta={coefficients.beta:g}, "
               f"gamma={coefficients.gamma:g}")
    header = (f"# phi={v.phi}: {how}; depth {v.arch.depth_mult:g}, width {v.arch.width_mult:g}, "
              f"{v.arch.resolution}px, dropout {v.arch.dropout:g}\n"
              f"# {v.params:,} params, {v.macs:,} MACs (fvcore convention): {v.macs_ratio:.3f}x the base "
              f"(ideal 2^phi = {v.ideal_ratio:g})\n")
    return header + v.arch.to_yaml()
