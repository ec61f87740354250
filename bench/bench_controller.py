"""Controller overhead per trial: sampling (TPE) + storage, default journal file vs SQLite vs in-memory.

Each trial does what a real ``nas-search`` trial does around training: ask, sample the 42
parameters of the MnasNet space, price the architecture, write three trial attributes, tell.
Prints the mean ms/trial over N trials and the marginal ms/trial over the last 10%, per storage,
and the ratios to the default storage. One run, one process.

    python bench/bench_controller.py [--trials 1000] [--sqlite-trials 1000]
    python bench/bench_controller.py --samplers rl,random --trials 300   # the RL controller's own cost

With ``--samplers A,B``: in-memory storage only, each sampler's ms/trial and the ratio to the last.
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import optuna

from nas.cluster.storage import open_storage
from nas.search.study import make_sampler
from search_spaces import count_cost, default_space


def run(storage, trials: int, seed: int = 0, sampler: str = "tpe") -> tuple[float, float]:
    space = default_space()
    study = optuna.create_study(storage=storage, sampler=make_sampler(sampler, seed), direction="maximize")
    t0 = time.perf_counter()
    tail_start = None
    for i in range(trials):
        if i == int(trials * 0.9):
            tail_start = time.perf_counter()
        trial = study.ask()
        arch = space.sample(trial)
        cost = count_cost(arch)
        trial.set_user_attr("arch", arch.to_str())
        trial.set_user_attr("macs", cost.macs)
        trial.set_user_attr("params", cost.params)
        study.tell(trial, cost.macs / 1e9)
    end = time.perf_counter()
    return (end - t0) / trials * 1e3, (end - tail_start) / (trials - int(trials * 0.9)) * 1e3


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--trials", type=int, default=1000)
    p.add_argument("--sqlite-trials", type=int, default=None, help="[--trials]")
    p.add_argument("--samplers", help="compare samplers (comma-separated) on in-memory storage instead")
    args = p.parse_args()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    if args.samplers:
        names = args.samplers.split(",")
        timed = {n: run(optuna.storages.InMemoryStorage(), args.trials, sampler=n) for n in names}
        print(f"controller overhead per trial by sampler, in-memory storage, {args.trials} trials, 42 parameters")
        print(f"{'sampler':<10} {'mean ms':>8} {'last-10% ms':>12} {f'mean / {names[-1]}':>14}")
        for name, (mean, tail) in timed.items():
            print(f"{name:<10} {mean:8.1f} {tail:12.1f} {mean / timed[names[-1]][0]:14.2f}")
        return
    with tempfile.TemporaryDirectory() as tmp:
        results = {
            "journal file (default)": run(open_storage(None, Path(tmp)), args.trials),
            "in-memory": run(optuna.storages.InMemoryStorage(), args.trials),
            "sqlite": run(open_storage(f"sqlite:///{tmp}/study.db", Path(tmp)), args.sqlite_trials or args.trials),
        }
    base = results["journal file (default)"][0]
    print("controller overhead per trial, TPE (multivariate, constant liar), 42 parameters")
    print(f"{'storage':<24} {'trials':>6} {'mean ms':>8} {'last-10% ms':>12} {'mean / default':>15}")
    for name, (mean, tail) in results.items():
        n = args.sqlite_trials or args.trials if name == "sqlite" else args.trials
        print(f"{name:<24} {n:>6} {mean:8.1f} {tail:12.1f} {mean / base:15.2f}")


if __name__ == "__main__":
    main()
