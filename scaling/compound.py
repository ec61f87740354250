"""Compound scaling: the feasible (α, β, γ) grid, scaling a base network, and costing candidates.

EfficientNet (Tan & Le 2019, §3.3): depth ``d = α^φ``, width ``w = β^φ``, resolution
``r = γ^φ`` with ``α·β²·γ² ≈ 2`` and ``α, β, γ ≥ 1``, so that the MACs of the network grow by
about ``2^φ``. Step 1 fixes φ = 1 and searches a small grid of (α, β, γ); this module
enumerates that grid and prices every candidate with the analytic cost model.

Rounding (all tiny pure functions): depth multipliers go through TF ``round_repeats`` (ceil)
and width multipliers through TF ``round_filters`` when the network is resolved; a scaled
resolution is rounded to the nearest multiple of ``resolution_multiple`` (4 by default: every
official EfficientNet resolution, 224..600, is a multiple of 4).
"""
from __future__ import annotations

import bisect
import math
from dataclasses import dataclass
from typing import Iterable, Sequence

import numpy as np

from search_spaces import ArchSpec, SpecError, count_cost
from search_spaces.limits import check_size

__all__ = ["TARGET_PRODUCT", "MAX_GRID_VALUES", "MAX_FEASIBLE",
           "ScalingError", "Coefficients", "Grid", "Candidate", "round_resolution",
           "scale_arch", "compound_arch", "cost_candidates", "space_filling_order", "proxy_resolution"]

TARGET_PRODUCT = 2.0  # φ = 1: "twice the resources"
MAX_GRID_VALUES = 1_001  # per coefficient: step 0.001 at --max 2
MAX_FEASIBLE = 100_000  # candidates costed and ordered; --max-candidates then picks the ones trained
_DIGITS = 6  # multipliers are kept to 6 decimals: 1.1 * 1.2 must stay 1.32, not 1.3200000000000003


class ScalingError(ValueError):
    """Bad scaling input: one line naming the value and what was expected."""


@dataclass(frozen=True)
class Coefficients:
    """Compound-scaling coefficients: depth ``alpha``, width ``beta``, resolution ``gamma``."""

    alpha: float
    beta: float
    gamma: float

    def __post_init__(self) -> None:
        for name in ("alpha", "beta", "gamma"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise ScalingError(f"--{name} must be a number >= 1, but got {name}={value!r}")
            if value < 1:
                raise ScalingError(f"--{name} must be >= 1 (compound scaling never shrinks), but got {name}={value!r}")

    @property
    def product(self) -> float:
        """``α·β²·γ²``: the predicted MACs growth at φ = 1."""
        return self.alpha * self.beta ** 2 * self.gamma ** 2

    def at(self, phi: int) -> tuple[float, float, float]:
        """``(α^φ, β^φ, γ^φ)``: the depth, width and resolution factors at ``phi``."""
        return self.alpha ** phi, self.beta ** phi, self.gamma ** phi

    def as_tuple(self) -> tuple[float, float, float]:
        return self.alpha, self.beta, self.gamma


@dataclass(frozen=True)
class Grid:
    """Step 1's grid: α, β, γ in ``1, 1 + step, ..., max`` with ``|α·β²·γ² − target| ≤ tolerance``."""

    step: float = 0.05
    max: float = 2.0
    tolerance: float = 0.1
    target: float = TARGET_PRODUCT

    def __post_init__(self) -> None:
        checks = (
            ("step", self.step > 0, "> 0"),
            ("max", self.max >= 1, ">= 1"),
            ("tolerance", self.tolerance >= 0, ">= 0"),
        )
        for name, ok, expected in checks:
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value) or not ok:
                raise ScalingError(f"--{name} must be {expected}, but got {name}={value!r}")

    def values(self) -> tuple[float, ...]:
        """The grid values ``1, 1 + step, ...`` up to ``max`` (rounded to 10 decimals, no float drift)."""
        count = int(math.floor((self.max - 1) / self.step + 1e-9))
        return tuple(round(1 + i * self.step, 10) for i in range(count + 1))

    def points(self) -> Iterable[Coefficients]:
        values = self._checked_values()
        return (Coefficients(a, b, g) for a in values for b in values for g in values)

    def _checked_values(self) -> tuple[float, ...]:
        """``values()``, refused when there are more than ``MAX_GRID_VALUES`` of them (before any is made)."""
        count = math.floor((self.max - 1) / self.step + 1e-9) + 1
        if count > MAX_GRID_VALUES:
            raise ScalingError(
                f"--step {self.step:g} with --max {self.max:g} gives {count:,} values per coefficient, more than the "
                f"{MAX_GRID_VALUES:,} this grid search handles: raise --step (0.001 or more at --max 2) or lower --max")
        return self.values()

    def feasible(self) -> tuple[Coefficients, ...]:
        """Every grid point within ``tolerance`` of the target product, in (α, β, γ) order.

        Only the γ values that can meet the tolerance are visited for each (α, β), so the work grows
        with the number of values squared plus the number of feasible points, not with its cube.

        Raises:
            ScalingError: no grid point is within the tolerance (the message names the nearest products), or
                more than ``MAX_FEASIBLE`` are.
        """
        values = self._checked_values()
        squares = [g * g for g in values]
        found: list[Coefficients] = []
        slack = self.tolerance + 1e-12
        for a in values:
            for b in values:
                ab = a * b ** 2
                lo = bisect.bisect_left(squares, (self.target - slack) / ab * (1 - 1e-9))
                hi = bisect.bisect_right(squares, (self.target + slack) / ab * (1 + 1e-9))
                for g in values[lo:hi]:
                    c = Coefficients(a, b, g)
                    if abs(c.product - self.target) <= slack:
                        found.append(c)
                if len(found) > MAX_FEASIBLE:
                    raise ScalingError(
                        f"the grid (--step {self.step:g}, --max {self.max:g}, --tolerance {self.tolerance:g}) has more "
                        f"than {MAX_FEASIBLE:,} candidates: raise --step or lower --tolerance")
        if not found:
            near = ", ".join(f"{c.product:.4f} at ({c.alpha:g}, {c.beta:g}, {c.gamma:g})" for c in self.nearest(3))
            raise ScalingError(
                f"--tolerance {self.tolerance:g} leaves no candidate: no grid point (step {self.step:g}, max "
                f"{self.max:g}) has |alpha*beta^2*gamma^2 - {self.target:g}| <= {self.tolerance:g}; "
                f"nearest products: {near}")
        return tuple(found)

    def nearest(self, n: int = 3) -> list[Coefficients]:
        """The ``n`` grid points whose product is nearest the target (two γ candidates per (α, β) suffice)."""
        values = self._checked_values()
        squares = [g * g for g in values]
        near: list[Coefficients] = []
        for a in values:
            for b in values:
                i = bisect.bisect_left(squares, self.target / (a * b ** 2))
                near.extend(Coefficients(a, b, values[j]) for j in (i - 1, i) if 0 <= j < len(values))
        return sorted(near, key=lambda c: (abs(c.product - self.target), c.as_tuple()))[:n]


def round_resolution(pixels: float, multiple: int = 4) -> int:
    """``pixels`` rounded half up to the nearest multiple of ``multiple`` (at least one multiple)."""
    if multiple < 1:
        raise ScalingError(f"--resolution-multiple must be >= 1, but got resolution_multiple={multiple!r}")
    return max(multiple, int(pixels / multiple + 0.5) * multiple)


def proxy_resolution(base_pixels: int, gamma: float) -> int:
    """A candidate's proxy training resolution: ``round(base proxy resolution × γ)``."""
    return int(base_pixels * gamma + 0.5)


def scale_arch(base: ArchSpec, depth: float, width: float, resolution: int, name: str, *,
               dropout: float | None = None, drop_connect: float | None = None) -> ArchSpec:
    """``base`` with its depth and width multipliers multiplied by ``depth`` and ``width``.

    The multipliers compose (a base that already has ``width_mult`` 1.1 scaled by 1.2 gets 1.32);
    TF ``round_filters`` / ``round_repeats`` apply when the result is resolved or built.
    """
    changes = {"depth_mult": round(base.depth_mult * depth, _DIGITS),
               "width_mult": round(base.width_mult * width, _DIGITS),
               "resolution": int(resolution), "name": name}
    if dropout is not None:
        changes["dropout"] = dropout
    if drop_connect is not None:
        changes["drop_connect"] = drop_connect
    try:
        scaled = base.replace(**changes)
        check_size(scaled)
    except SpecError as exc:  # e.g. --alpha 1e6: refused before a layer list is made
        raise ScalingError(f"scaled by depth {depth:g}, width {width:g}: {exc}") from None
    return scaled


def compound_arch(base: ArchSpec, coefficients: Coefficients, phi: int, resolution_multiple: int = 4,
                  name: str | None = None) -> ArchSpec:
    """``base`` scaled by ``(α^φ, β^φ, γ^φ)``; resolution ``base.resolution·γ^φ`` rounded to the multiple."""
    depth, width, res = coefficients.at(phi)
    return scale_arch(base, depth, width, round_resolution(base.resolution * res, resolution_multiple),
                      name or f"{base.name or 'base'}-phi{phi}")


@dataclass(frozen=True)
class Scaled:
    """The base scaled by (α, β, γ) at φ = 1, its cost at its own resolution and its proxy resolution.

    ``macs_ratio`` is the real MACs growth over the base (rounding moves it away from ``product``).
    """

    coefficients: Coefficients
    arch: ArchSpec
    params: int
    macs: int
    macs_ratio: float
    proxy_resolution: int


@dataclass(frozen=True)
class Candidate(Scaled):
    """One feasible (α, β, γ) of the grid; ``index`` is its place in the evaluation order."""

    index: int

    def row(self) -> dict[str, float | int]:
        c = self.coefficients
        return {"index": self.index, "alpha": c.alpha, "beta": c.beta, "gamma": c.gamma,
                "product": round(c.product, 6), "params": self.params, "macs": self.macs,
                "macs_ratio": round(self.macs_ratio, 6), "resolution": self.arch.resolution,
                "proxy_resolution": self.proxy_resolution}


def space_filling_order(points: Sequence[Coefficients]) -> list[int]:
    """An evaluation order in which any prefix spreads over the grid.

    Each point is placed by the shares of the cost it gives depth, width and resolution,
    ``(ln α, 2 ln β, 2 ln γ) / ln(α·β²·γ²)``. The most balanced point (shares nearest 1/3 each)
    comes first; each next point is the one farthest from all points already chosen (ties: the
    product nearer the target, then (α, β, γ) order). ``--max-candidates N`` thus trains the N
    most distinct ways of spending the resources, not N near-copies of one.
    """
    if not points:
        return []
    shares = []
    for c in points:
        logs = (math.log(c.alpha), 2 * math.log(c.beta), 2 * math.log(c.gamma))
        total = sum(logs) or 1.0
        shares.append(tuple(x / total for x in logs))
    tie = [(abs(c.product - TARGET_PRODUCT), c.as_tuple()) for c in points]
    first = min(range(len(points)), key=lambda i: (sum((s - 1 / 3) ** 2 for s in shares[i]), tie[i]))
    s = np.array(shares, dtype=np.float64).reshape(len(points), 3)
    gap = _dist2_to(s, s[first])
    taken = np.zeros(len(points), dtype=bool)
    taken[first] = True
    gap[first] = -np.inf
    order = [first]
    for _ in range(len(points) - 1):
        # the farthest point; near-ties (within rounding to 12 decimals) are settled by the exact key
        best = float(gap.max())
        near = np.flatnonzero(gap >= best - 1e-11)
        nxt = int(max(near, key=lambda i: (round(float(gap[i]), 12), -tie[i][0], tuple(-v for v in tie[i][1]))))
        order.append(nxt)
        taken[nxt] = True
        np.minimum(gap, _dist2_to(s, s[nxt]), out=gap)
        gap[taken] = -np.inf
    return order


def _dist2_to(s: np.ndarray, p: np.ndarray) -> np.ndarray:
    """Squared distances of the rows of ``s`` to ``p``, summed in the order ``_dist2`` sums them."""
    return (s[:, 0] - p[0]) ** 2 + (s[:, 1] - p[1]) ** 2 + (s[:, 2] - p[2]) ** 2


def _dist2(a: tuple[float, ...], b: tuple[float, ...]) -> float:
    return sum((x - y) ** 2 for x, y in zip(a, b))


def cost_candidates(base: ArchSpec, points: Sequence[Coefficients], resolution_multiple: int = 4,
                    base_proxy_resolution: int = 32, ordered: bool = True) -> list[Candidate]:
    """Scale ``base`` at φ = 1 by every point and price it (params, MACs at its own resolution).

    Args:
        base: the network to scale (its ``resolution`` is the deployment resolution).
        points: the feasible coefficients.
        resolution_multiple: scaled resolutions are rounded to this multiple.
        base_proxy_resolution: the base's proxy training resolution (a candidate trains at
            ``round(base_proxy_resolution × γ)``).
        ordered: put the candidates in ``space_filling_order`` (else keep ``points`` order).

    Returns:
        The candidates, ``index`` = position in the returned list.
    """
    base_macs = count_cost(base).macs
    order = space_filling_order(points) if ordered else list(range(len(points)))
    out = []
    for index, i in enumerate(order):
        c = points[i]
        arch = compound_arch(base, c, 1, resolution_multiple,
                             name=f"{base.name or 'base'}-a{c.alpha:g}-b{c.beta:g}-g{c.gamma:g}")
        cost = count_cost(arch)
        out.append(Candidate(c, arch, cost.params, cost.macs, cost.macs / base_macs,
                             proxy_resolution(base_proxy_resolution, c.gamma), index=index))
    return out
