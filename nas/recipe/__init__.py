"""The whole derivation behind ``nas-derive``: search → grid (refined) → families → final training → report,
each step resumable and refused when its inputs changed."""
from nas.recipe.choice import analyse
from nas.recipe.config import (
                               STEPS,
                               DeriveConfig,
                               FamiliesConfig,
                               FinalConfig,
                               RefineConfig,
                               Step,
                               load_config,
                               refine_proxy,
)
from nas.recipe.markers import Inputs, StepChanged, file_digest, fingerprint
from nas.recipe.pipeline import StepEvent, check_all, derive, step_inputs
from nas.recipe.plan import estimate, plan_text
from nas.recipe.refine import BASELINES, Entry, ProxyRunner, coefficient_key, plan_entries, read_candidates
from nas.recipe.report import build_report, compare_families, proxy_vs_test
from nas.recipe.stats import (
                               CANNOT_TELL,
                               Summary,
                               keep_count,
                               learns,
                               margin,
                               mean_spread,
                               pooled_spread,
                               ranked,
                               verdict,
                               versus,
)
from nas.recipe.tools import ToolFailed, run_tool

__all__ = [
    "STEPS", "Step", "RefineConfig", "FamiliesConfig", "FinalConfig", "DeriveConfig", "load_config", "refine_proxy",
    "StepChanged", "Inputs", "fingerprint", "file_digest",
    "CANNOT_TELL", "Summary", "mean_spread", "pooled_spread", "margin", "verdict", "versus", "keep_count", "ranked",
    "learns",
    "ToolFailed", "run_tool",
    "BASELINES", "Entry", "ProxyRunner", "coefficient_key", "read_candidates", "plan_entries",
    "analyse",
    "compare_families", "proxy_vs_test", "build_report",
    "estimate", "plan_text",
    "StepEvent", "derive", "check_all", "step_inputs",
]
