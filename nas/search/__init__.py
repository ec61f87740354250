"""The search: its config, the Optuna study (samplers and pruners by name), the trial objective, the reward, the RL controller, reports."""
from nas.search.config import (SAMPLERS, PRUNERS, REWARDS, ZC_NAMES, PROXIES, COSTS, SearchConfig)
from nas.search.reward import (reward)
from nas.search.study import (make_sampler, make_pruner, worker_index, sampler_seed, study_directions, search_settings, open_study, enqueue_seeds, prescreen)
from nas.search.objective import (StopAtTrials, worker_label, Objective, best_trial, pareto_front, eta_seconds)
from nas.search.rl_sampler import (REJECTED, RLSampler)
from nas.search.report import (COLUMNS, trial_rows, write_leaderboard, top_table, plot_pareto, plot_history, git_commit, write_manifest)
from nas.search.progress import (fmt_seconds, Progress)

__all__ = [
    "SAMPLERS",
    "PRUNERS",
    "REWARDS",
    "ZC_NAMES",
    "PROXIES",
    "COSTS",
    "SearchConfig",
    "reward",
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
    "git_commit",
    "write_manifest",
    "fmt_seconds",
    "Progress",
]
