"""Unbounded work is either made to scale or refused up front with one line (issue: nothing hangs).

The grid's feasible set and its space-filling order are checked against plain reference
implementations (the cubic enumeration and the quadratic pure-Python farthest-point order)."""
from __future__ import annotations

import math
import time

import pytest

from scaling import Coefficients, Grid, ScalingError, compound_arch, space_filling_order
from scaling.compound import TARGET_PRODUCT
from search_spaces import SpecError, get_preset
from search_spaces.limits import MAX_LAYERS, activation_bytes, check_size


def _reference_feasible(grid: Grid) -> list[tuple[float, float, float]]:
    values = grid.values()
    return [(a, b, g) for a in values for b in values for g in values
            if abs(a * b ** 2 * g ** 2 - grid.target) <= grid.tolerance + 1e-12]


def _reference_order(points: list[Coefficients]) -> list[int]:
    logs = [(math.log(c.alpha), 2 * math.log(c.beta), 2 * math.log(c.gamma)) for c in points]
    shares = [tuple(x / (sum(row) or 1.0) for x in row) for row in logs]
    tie = [(abs(c.product - TARGET_PRODUCT), c.as_tuple()) for c in points]
    d2 = lambda a, b: sum((x - y) ** 2 for x, y in zip(a, b))  # noqa: E731
    first = min(range(len(points)), key=lambda i: (sum((s - 1 / 3) ** 2 for s in shares[i]), tie[i]))
    order, left = [first], set(range(len(points))) - {first}
    gap = {i: d2(shares[i], shares[first]) for i in left}
    while left:
        nxt = max(left, key=lambda i: (round(gap[i], 12), -tie[i][0], tuple(-v for v in tie[i][1])))
        order.append(nxt)
        left.discard(nxt)
        for i in left:
            gap[i] = min(gap[i], d2(shares[i], shares[nxt]))
    return order


@pytest.mark.parametrize("step,top,tol", [(0.05, 2.0, 0.1), (0.1, 2.0, 0.1), (0.02, 2.0, 0.05), (0.05, 1.5, 0.2),
                                          (0.03, 1.8, 0.0)])
def test_feasible_and_order_equal_the_reference(step: float, top: float, tol: float) -> None:
    grid = Grid(step=step, max=top, tolerance=tol)
    try:
        found = grid.feasible()
    except ScalingError:
        assert _reference_feasible(grid) == []
        return
    assert [c.as_tuple() for c in found] == _reference_feasible(grid)
    assert space_filling_order(list(found)) == _reference_order(list(found))


def test_a_fine_grid_scales() -> None:
    """--step 0.01 (10,286 candidates) used to stall in the ordering; now it is ordered in seconds."""
    grid = Grid(step=0.01, max=2.0, tolerance=0.1)
    start = time.perf_counter()
    found = grid.feasible()
    order = space_filling_order(list(found))
    assert len(found) == 10_286
    assert sorted(order) == list(range(len(found)))
    assert time.perf_counter() - start < 120  # a hang guard, not a benchmark


@pytest.mark.parametrize("kwargs,words", [({"step": 1e-4}, "10,001 values"), ({"max": 1e9}, "values per coefficient"),
                                          ({"step": 0.001, "tolerance": 1.0}, "more than 100,000 candidates")])
def test_huge_grids_are_refused_at_once(kwargs: dict, words: str) -> None:
    start = time.perf_counter()
    with pytest.raises(ScalingError, match=words) as info:
        Grid(**kwargs).feasible()
    assert "\n" not in str(info.value)
    assert time.perf_counter() - start < 30


def test_nearest_is_found_without_the_cube() -> None:
    grid = Grid(step=0.3, max=2.0, tolerance=0.0)
    ref = sorted(((a, b, g) for a in grid.values() for b in grid.values() for g in grid.values()),
                 key=lambda t: (abs(t[0] * t[1] ** 2 * t[2] ** 2 - 2), t))[:3]
    assert [c.as_tuple() for c in grid.nearest(3)] == ref


def test_activation_estimate_bounds_the_real_largest_map() -> None:
    """The estimate is an upper bound on the largest feature map the built B0 really makes."""
    import torch

    from search_spaces import build_model

    arch = get_preset("efficientnet-b0")
    model = build_model(arch, num_classes=10).eval()
    largest = 0

    def hook(_m: torch.nn.Module, _i: object, out: torch.Tensor) -> None:
        nonlocal largest
        largest = max(largest, out[0].numel() * 4)

    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    with torch.no_grad():
        model(torch.zeros(1, 3, 64, 64))
    for h in handles:
        h.remove()
    assert largest <= activation_bytes(arch, 64) <= 4 * largest


@pytest.mark.parametrize("change,words", [
    ({"depth_mult": 1.0e300}, "depth_mult"),
    ({"width_mult": 1e5}, "channels"),
    ({"resolution": 100_000}, "resolution"),
    ({"depth_mult": 200.0}, f"more than the {MAX_LAYERS}"),
])
def test_oversized_architectures_are_refused_before_building(change: dict, words: str) -> None:
    arch = get_preset("efficientnet-b0").replace(**change)
    start = time.perf_counter()
    with pytest.raises(SpecError, match=words):
        check_size(arch)
    assert time.perf_counter() - start < 1


def test_every_preset_is_within_the_bounds() -> None:
    from search_spaces import list_presets

    for name in list_presets():
        check_size(get_preset(name))


def test_a_huge_coefficient_is_refused_with_one_line() -> None:
    with pytest.raises(ScalingError, match="layers, more than"):
        compound_arch(get_preset("efficientnet-b0"), Coefficients(1e6, 1.0, 1.0), 1)
