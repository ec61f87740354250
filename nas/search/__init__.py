"""The search: its config, the Optuna study (samplers and pruners by name), the trial objective, the reward,
the RL controller, reports."""
from nas.search.config import COSTS, PROXIES, PRUNERS, REWARDS, SAMPLERS, ZC_NAMES, SearchConfig, StudyConfig
from nas.search.objective import Objective, StopAtTrials, best_trial, eta_seconds, pareto_front, worker_label
from nas.search.progress import Progress, fmt_seconds
from nas.search.report import (
    COLUMNS,
    plot_history,
    plot_pareto,
    top_table,
    trial_rows,
    write_leaderboard,
    write_manifest,
)
from nas.search.reward import reward
from nas.search.rl_sampler import REJECTED, RLSampler
from nas.search.study import (
    PRUNER_REGISTRY,
    SAMPLER_REGISTRY,
    enqueue_seeds,
    make_pruner,
    make_sampler,
    open_study,
    prescreen,
    sampler_seed,
    search_settings,
    study_directions,
    worker_index,
)

__all__ = [
    "SAMPLERS",
    "PRUNERS",
    "REWARDS",
    "ZC_NAMES",
    "PROXIES",
    "COSTS",
    "SearchConfig",
    "StudyConfig",
    "reward",
    "SAMPLER_REGISTRY",
    "PRUNER_REGISTRY",
    "make_sampler",
    "make_pruner",
    "worker_index",
    "sampler_seed",
    "study_directions",
    "search_settings",
    "open_study",
    "enqueue_seeds",
    "prescreen",
    "StopAtTrials",
    "worker_label",
    "Objective",
    "best_trial",
    "pareto_front",
    "eta_seconds",
    "REJECTED",
    "RLSampler",
    "COLUMNS",
    "trial_rows",
    "write_leaderboard",
    "top_table",
    "plot_pareto",
    "plot_history",
    "write_manifest",
    "fmt_seconds",
    "Progress",
]
