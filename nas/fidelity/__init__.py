"""The proxy-fidelity check: rank statistics and the analysis of proxy scores against a longer training."""
from nas.fidelity.rankstats import (kendall_tau, spearman_rho, average_ranks, bootstrap_ci)
from nas.fidelity.analysis import (MACS_RESOLUTION, fidelity, seed_agreement, Analysis, analyse, report_table, write_results_csv, write_summary, plot_scatter)

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
]
