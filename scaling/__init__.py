"""Compound scaling: the (α, β, γ) grid search of EfficientNet's step 1 and the B1..B7 family of step 2."""
import os

# Busy-waiting OpenMP threads cost up to 10x when the CPU is shared (README, "The proxy task");
# it must be set before torch loads, and the console scripts import this package first.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from .compound import (TARGET_PRODUCT, Candidate, Coefficients, Grid, ScalingError, compound_arch, cost_candidates,
                       proxy_resolution, round_resolution, scale_arch, space_filling_order)
from .search import CandidateSampler, choose, run_search
from .variants import MODES, PHIS, Variant, make_family, make_variant, official_row, variant_yaml

__all__ = [
    "TARGET_PRODUCT", "Candidate", "Coefficients", "Grid", "ScalingError", "compound_arch", "cost_candidates",
    "proxy_resolution", "round_resolution", "scale_arch", "space_filling_order",
    "CandidateSampler", "choose", "run_search",
    "MODES", "PHIS", "Variant", "make_family", "make_variant", "official_row", "variant_yaml",
]
