"""Compound scaling: the (α, β, γ) grid search of EfficientNet's step 1 and the B1..B7 family of step 2."""
from scaling.compound import (
                       TARGET_PRODUCT,
                       Candidate,
                       Coefficients,
                       Grid,
                       ScalingError,
                       compound_arch,
                       cost_candidates,
                       proxy_resolution,
                       round_resolution,
                       scale_arch,
                       space_filling_order,
)
from scaling.search import CandidateSampler, choose, run_search
from scaling.variants import MODES, PHIS, Variant, make_family, make_variant, official_row, variant_yaml

__all__ = [
    "TARGET_PRODUCT", "Candidate", "Coefficients", "Grid", "ScalingError", "compound_arch", "cost_candidates",
    "proxy_resolution", "round_resolution", "scale_arch", "space_filling_order",
    "CandidateSampler", "choose", "run_search",
    "MODES", "PHIS", "Variant", "make_family", "make_variant", "official_row", "variant_yaml",
]
