"""The proxy-fidelity check behind ``nas-proxy-check``: its config, the architectures and the scores to compute,
the resumable score cache, rank statistics and the analysis of proxy scores against a longer training."""
from nas.fidelity.analysis import (
    MACS_RESOLUTION,
    Analysis,
    analyse,
    fidelity,
    plot_scatter,
    report_table,
    seed_agreement,
    write_results_csv,
    write_summary,
)
from nas.fidelity.cache import CACHE_FORMAT, CACHE_NAME, ScoreCache, cache_settings, exclusive
from nas.fidelity.check import Item, compute_missing, measure, plan_items, sample_archs
from nas.fidelity.config import DEFAULT_PROXIES, TASK_FIELDS, ZC_BATCHES, CheckConfig, format_epochs, parse_proxies
from nas.fidelity.rankstats import average_ranks, bootstrap_ci, kendall_tau, spearman_rho

__all__ = [
    "kendall_tau",
    "spearman_rho",
    "average_ranks",
    "bootstrap_ci",
    "MACS_RESOLUTION",
    "fidelity",
    "seed_agreement",
    "Analysis",
    "analyse",
    "report_table",
    "write_results_csv",
    "write_summary",
    "plot_scatter",
    "DEFAULT_PROXIES",
    "TASK_FIELDS",
    "ZC_BATCHES",
    "CheckConfig",
    "format_epochs",
    "parse_proxies",
    "CACHE_NAME",
    "CACHE_FORMAT",
    "cache_settings",
    "ScoreCache",
    "exclusive",
    "sample_archs",
    "Item",
    "plan_items",
    "measure",
    "compute_missing",
]
