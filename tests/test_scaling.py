"""Compound scaling against the references: the paper's constraint and coefficients, the official table."""
from __future__ import annotations

import itertools
import time
from fractions import Fraction

import pytest

from scaling import (
    PHIS,
    Coefficients,
    Grid,
    ScalingError,
    compound_arch,
    cost_candidates,
    make_family,
    make_variant,
    official_row,
    round_resolution,
    space_filling_order,
    variant_yaml,
)
from search_spaces import count_cost, get_preset, load_arch, resolve

# docs/reference.md section 2 (timm / torchvision / efficientnet_pytorch): exact parameter counts, and
# (width, depth, res, dropout) of the official table.
REFERENCE = {
    1: (1.0, 1.1, 240, 0.2, 7_794_184),
    2: (1.1, 1.2, 260, 0.3, 9_109_994),
    3: (1.2, 1.4, 300, 0.3, 12_233_232),
    4: (1.4, 1.8, 380, 0.4, 19_341_616),
    5: (1.6, 2.2, 456, 0.4, 30_389_784),
    6: (1.8, 2.6, 528, 0.5, 43_040_704),
    7: (2.0, 3.1, 600, 0.5, 66_347_960),
}
B0_PARAMS = 5_288_548
# docs/reference.md section 2: fvcore MACs with torchvision-style SE (the cost model's default convention).
B0_MACS = 401_659_392
REFERENCE_MACS = {1: 0.7127e9, 2: 1.0266e9, 3: 1.8839e9}  # measured to 4 digits
REFERENCE_MACS_APPROX = {4: 4.5e9, 5: 10.5e9, 6: 19.4e9, 7: 38.3e9}  # "~" in the table
# docs/reference.md section 1: B0's layers per stage.
B0_REPEATS = (1, 2, 2, 3, 3, 4, 1)
PAPER = (1.2, 1.1, 1.15)  # docs/reference.md section 4: the paper's grid-search result, product 1.920


@pytest.fixture(scope="module")
def b0():
    return get_preset("efficientnet-b0")


# --- the grid ---------------------------------------------------------------------------------

def test_paper_coefficients_are_feasible_at_the_defaults():
    points = {c.as_tuple() for c in Grid().feasible()}
    assert PAPER in points
    assert Coefficients(*PAPER).product == pytest.approx(1.920, abs=5e-4)


def test_default_grid_values():
    values = Grid().values()
    assert len(values) == 21 and values[0] == 1.0 and values[-1] == 2.0
    assert values[4] == 1.2 and values[3] == 1.15  # exact: no float drift
    assert Grid(step=0.3).values() == (1.0, 1.3, 1.6, 1.9)


@pytest.mark.parametrize("step,maximum,tolerance", [(0.05, 2.0, 0.1), (0.1, 2.0, 0.05), (0.25, 3.0, 0.3)])
def test_feasible_set_is_exactly_the_constraint(step, maximum, tolerance):
    """Exact rational arithmetic: every grid point with |α·β²·γ² − 2| ≤ tol, and nothing else."""
    s, n = Fraction(str(step)), int(Fraction(str(maximum - 1)) / Fraction(str(step)))
    values = [1 + i * s for i in range(n + 1)]
    expected = {(float(a), float(b), float(g)) for a, b, g in itertools.product(values, repeat=3)
                if abs(a * b * b * g * g - 2) <= Fraction(str(tolerance))}
    got = Grid(step, maximum, tolerance).feasible()
    assert {c.as_tuple() for c in got} == expected
    assert all(min(c.as_tuple()) >= 1 for c in got)


def test_full_default_grid_enumerates_and_costs_fast(b0):
    t0 = time.perf_counter()
    candidates = cost_candidates(b0, Grid().feasible())
    seconds = time.perf_counter() - t0
    print(f"\nfull default grid: {len(candidates)} candidates enumerated, ordered and costed in {seconds:.3f} s")
    assert len(candidates) > 50


def test_space_filling_order_starts_with_the_pure_directions(b0):
    points = Grid().feasible()
    order = space_filling_order(points)
    assert sorted(order) == list(range(len(points)))
    first = [points[i].as_tuple() for i in order[:4]]
    # depth only, width only, resolution only: the extremes of the simplex come right after the balanced point
    for pure in ((2.0, 1.0, 1.0), (1.0, 1.4, 1.0), (1.0, 1.0, 1.4)):
        assert pure in first


# --- scaling a base ---------------------------------------------------------------------------

def test_round_resolution():
    assert round_resolution(224 * 1.15, 1) == 258  # docs/reference.md section 2: "res ≈ 258"
    assert round_resolution(257.6, 4) == 256
    assert round_resolution(258.0, 4) == 260  # half up
    assert round_resolution(3, 8) == 8


def test_paper_phi1_network(b0):
    """φ = 1 with (1.2, 1.1, 1.15): depth 1.2 and width 1.1 are B2's row, so B2's parameters."""
    arch = compound_arch(b0, Coefficients(*PAPER), 1, resolution_multiple=1)
    assert (arch.depth_mult, arch.width_mult, arch.resolution) == (1.2, 1.1, 258)
    assert count_cost(arch).params == REFERENCE[2][4]
    # round_repeats = ceil(depth * repeats): every 1-layer stage becomes 2
    layers = [sum(1 for _ in g) for _, g in itertools.groupby(resolve(arch).layers, key=lambda l: l.out_channels)]
    assert tuple(layers) == tuple(-(-r * 12 // 10) for r in B0_REPEATS)


def test_unit_coefficients_leave_the_base_unchanged(b0):
    arch = compound_arch(b0, Coefficients(1.0, 1.0, 1.0), 3)
    assert count_cost(arch) == count_cost(b0)
    assert count_cost(b0).params == B0_PARAMS and count_cost(b0).macs == B0_MACS


def test_multipliers_compose_with_the_base(b0):
    b1 = get_preset("efficientnet-b1")  # depth 1.1: scaling it by 1.2 must give 1.32, not 1.3200000000000003
    arch = compound_arch(b1, Coefficients(1.2, 1.0, 1.0), 1)
    assert arch.depth_mult == 1.32


# --- the family -------------------------------------------------------------------------------

@pytest.mark.parametrize("phi", PHIS)
def test_official_mode_on_b0_is_the_reference_family(b0, phi):
    width, depth, res, dropout, params = REFERENCE[phi]
    v = make_variant(b0, phi, "official")
    assert (v.arch.width_mult, v.arch.depth_mult, v.arch.resolution, v.arch.dropout) == (width, depth, res, dropout)
    assert v.params == params
    assert v.ideal_ratio == 2 ** phi
    assert official_row(phi).resolution == res  # the table is read from the presets


@pytest.mark.parametrize("phi", PHIS)
def test_official_macs_match_reference(b0, phi):
    v = make_variant(b0, phi, "official")
    if phi in REFERENCE_MACS:
        assert v.macs == pytest.approx(REFERENCE_MACS[phi], rel=1e-4)
    else:
        assert v.macs == pytest.approx(REFERENCE_MACS_APPROX[phi], rel=0.02)
    assert v.macs_ratio == pytest.approx(v.macs / B0_MACS)


def test_official_table_is_not_alpha_to_the_phi(b0):
    """docs/reference.md §2: at φ = 1 the paper's rule gives depth 1.2, width 1.1, res ≈ 258; B1 is 1.1, 1.0, 240."""
    compound = make_variant(b0, 1, "compound", Coefficients(*PAPER))
    official = make_variant(b0, 1, "official")
    assert (compound.arch.depth_mult, compound.arch.width_mult) == (1.2, 1.1)
    assert (official.arch.depth_mult, official.arch.width_mult, official.arch.resolution) == (1.1, 1.0, 240)
    assert compound.predicted_ratio == pytest.approx(1.920, abs=5e-4)


@pytest.mark.parametrize("mode", ["compound", "official"])
def test_variant_yaml_loads_back(b0, mode):
    coefficients = Coefficients(*PAPER)
    for v in make_family(b0, PHIS, mode, coefficients):
        arch = load_arch(variant_yaml(v, coefficients))
        assert arch == v.arch
        assert arch.dropout == REFERENCE[v.phi][3]  # dropout follows the official schedule in both modes
        assert count_cost(arch).params == v.params


# --- bad input --------------------------------------------------------------------------------

@pytest.mark.parametrize("kwargs,needle", [
    ({"step": 0}, "step=0"), ({"step": -0.05}, "step=-0.05"), ({"max": 0.5}, "max=0.5"),
    ({"tolerance": -1}, "tolerance=-1"),
])
def test_bad_grid(kwargs, needle):
    with pytest.raises(ScalingError, match=needle):
        Grid(**kwargs)


@pytest.mark.parametrize("abc,needle", [((0.9, 1, 1), "alpha=0.9"), ((1, 0.5, 1), "beta=0.5"),
                                        ((1, 1, float("nan")), "gamma=nan")])
def test_bad_coefficients(abc, needle):
    with pytest.raises(ScalingError, match=needle):
        Coefficients(*abc)


def test_tolerance_that_leaves_nothing_names_the_nearest_products():
    with pytest.raises(ScalingError) as info:
        Grid(step=0.3, tolerance=0.001).feasible()
    message = str(info.value)
    assert "\n" not in message and "0.001" in message and "nearest products" in message
    # on {1, 1.3, 1.6, 1.9} the nearest product to 2 is 1.9 * 1 * 1 = 1.9, then 1.3 * 1.3^2 = 2.197
    assert "1.9000 at (1.9, 1, 1)" in message and "2.1970" in message


def test_bad_phi_and_mode(b0):
    with pytest.raises(ScalingError, match="phi=8"):
        make_variant(b0, 8, "official")
    with pytest.raises(ScalingError, match="mode='tf'"):
        make_variant(b0, 1, "tf")
    with pytest.raises(ScalingError, match="compound mode needs"):
        make_variant(b0, 1, "compound")
