"""Controller overhead per trial: sampling (TPE) + storage, default journal file vs SQLite vs in-memory.

Each trial does what a real ``nas-search`` trial does around training: ask, sample the 42
parameters of the MnasNet space, price the architecture, write three trial attributes, tell.
Prints the mean ms/trial over N trials and the marginal ms/trial over the last 10%, per storage,
and the ratios to the default storage. One run, one process.

    python bench/bench_controller.py [--trials 1000] [--sqlite-trials 1000]
    python bench/bench_controller.py --samplers rl,random --trials 300   # the RL controller's own cost

With ``--samplers A,B``: in-memory storage only, each sampler's ms/trial and the ratio to the last.

With ``--curve 0,1000,5000,10000``: the cost of one ``nas-search`` trial as the study grows, on the
default storage (the journal file with leases and the study lock). The study is filled to each
size with completed trials of random architectures (``study.add_trials``, the attributes a trial
leaves), then ``--window`` trials run through the search's own objective and worker loop
(``nas.search.Objective``, ``nas.cluster.workers.optimize``, the stop and progress callbacks) with an instant
proxy, after 5 untimed trials that fill the one-off caches (Optuna's intersection search space,
ours); their mean ms/trial is the curve's point, with nas-search's TPE (``nas.search.tpe``) and,
as the reference of the ratio, Optuna's ``TPESampler`` with the same settings (multivariate,
constant liar) in the same run. ``--profile`` adds where the last window's time went (sampler,
storage, ours).

    python bench/bench_controller.py --curve 0,1000,2000,5000,10000 --window 100 --profile
"""
from __future__ import annotations

import argparse
import contextlib
import cProfile
import dataclasses
import io
import pstats
import random
import tempfile
import time
from pathlib import Path

import optuna

from nas.cluster import workers
from nas.cluster.locks import StudyLock
from nas.cluster.storage import open_storage
from nas.proxy.train import TrainResult
from nas.search import Objective, SearchConfig, StopAtTrials
from nas.search.progress import Progress
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


def _prefill(study: optuna.Study, space, count: int, seed: int) -> None:
    """Add ``count`` completed trials of random architectures, with the attributes a trained trial leaves."""
    source = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed))
    rng, made = random.Random(seed), []
    for _ in range(count):
        t = source.ask()
        arch = space.sample(t)
        accuracy = rng.uniform(0.3, 0.9)
        made.append(optuna.trial.create_trial(
            params=t.params, distributions=t.distributions, value=accuracy,
            user_attrs={"arch": arch.to_str(), "macs": rng.randint(1e8, 1.6e9), "params": rng.randint(1e6, 2e7),
                        "worker": "prefill", "trained": True, "accuracy": accuracy, "top5": None, "loss": 1.0,
                        "reward": accuracy, "seconds": 0.0, "epochs": 1.0, "images": 1}))
    study.add_trials(made)


def _instant(arch, trial, seed) -> TrainResult:
    """A proxy that costs nothing: the controller's overhead is all that is left."""
    return TrainResult(accuracy=random.Random(arch.to_str()).uniform(0.3, 0.9), top5=None, loss=1.0, epochs=1.0,
                       images=1, seconds=0.0)


def _where(profile: cProfile.Profile) -> dict[str, float]:
    """Seconds of own time by where the code lives: Optuna's samplers, its storages, the rest of Optuna, ours."""
    parts = {"sampler": 0.0, "storage": 0.0, "optuna (other)": 0.0, "ours (nas/)": 0.0, "python / numpy": 0.0}
    for (path, _, _), (_, _, tottime, _, _) in pstats.Stats(profile).stats.items():  # type: ignore[attr-defined]
        key = ("sampler" if "optuna/samplers" in path else "storage" if "optuna/storages" in path
               else "optuna (other)" if "/optuna/" in path else "ours (nas/)" if "/nas/" in path
               else "python / numpy")
        parts[key] += tottime
    return parts


def _reference_tpe(seed: int) -> optuna.samplers.BaseSampler:
    """Optuna's own TPE with nas-search's settings: the reference the curve's ratio is taken against."""
    return optuna.samplers.TPESampler(multivariate=True, constant_liar=True, seed=seed, n_startup_trials=10)


def _curve_points(sampler: optuna.samplers.BaseSampler, sizes: list[int], window: int, warmup: int,
                  profile: bool, seed: int) -> tuple[list[float], dict[str, float] | None]:
    """ms per trial at each size (after ``warmup`` untimed trials), and the last point's profile."""
    space, points, where = default_space(), [], None
    with tempfile.TemporaryDirectory() as tmp:
        cfg = SearchConfig(pruner="none", out=tmp, quiet=True, seed=seed)
        storage = open_storage(None, Path(tmp))
        lock = StudyLock(storage, cfg.study_name)
        study = optuna.create_study(storage=storage, study_name=cfg.study_name, direction="maximize",
                                    sampler=sampler, pruner=optuna.pruners.NopPruner())
        for size in sizes:
            _prefill(study, space, size - len(study.get_trials(deepcopy=False)), seed + size)
            start = len(study.get_trials(deepcopy=False))
            # the objective prunes untrained once the study holds cfg.trials: its budget is this point's
            objective = Objective(dataclasses.replace(cfg, trials=start + warmup + window), space, _instant, lock=lock)
            warm = StopAtTrials(start + warmup, max_attempts=10**9)  # one-off caches (Optuna's search space, ours)
            workers.optimize(study, objective, warm.done, None, [warm], catch=())
            stop = StopAtTrials(start + warmup + window, max_attempts=10**9)
            progress = Progress(start + warmup + window, start + warmup)  # nas-search's progress line, not shown
            t0 = time.perf_counter()
            with contextlib.redirect_stderr(io.StringIO()):
                workers.optimize(study, objective, stop.done, None, [stop, progress], catch=())
            points.append((time.perf_counter() - t0) / window * 1e3)
        if profile:  # another window, profiled: the profiler's overhead stays out of the timed ones
            end = len(study.get_trials(deepcopy=False)) + window
            objective = Objective(dataclasses.replace(cfg, trials=end), space, _instant, lock=lock)
            stop, runner = StopAtTrials(end, max_attempts=10**9), cProfile.Profile()
            runner.enable()
            workers.optimize(study, objective, stop.done, None, [stop], catch=())
            runner.disable()
            where = _where(runner)
    return points, where


def curve(sizes: list[int], window: int, profile: bool, seed: int = 0, warmup: int = 5) -> None:
    print(f"one nas-search trial against the study's size: default storage (journal file, leases, study lock), "
          f"instant proxy, {window} trials timed per point after {warmup} untimed; "
          f"nas-search's TPE against Optuna's TPESampler (same settings, same run)")
    ours, where = _curve_points(make_sampler("tpe", seed, 10), sizes, window, warmup, profile, seed)
    ref, _ = _curve_points(_reference_tpe(seed), sizes, window, warmup, False, seed)
    print(f"{'trials in study':>15} {'nas-search ms':>14} {'optuna TPE ms':>14} {'ratio':>6}")
    for size, a, b in zip(sizes, ours, ref):
        print(f"{size:>15} {a:14.1f} {b:14.1f} {a / b:6.2f}", flush=True)
    if where:
        total = sum(where.values())
        print(f"\nwhere nas-search's time went at {sizes[-1]} trials (own time, profiled run):")
        for name, seconds in where.items():
            print(f"  {name:<16} {seconds / window * 1e3:7.1f} ms/trial  {seconds / total:6.1%}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--trials", type=int, default=1000)
    p.add_argument("--sqlite-trials", type=int, default=None, help="[--trials]")
    p.add_argument("--samplers", help="compare samplers (comma-separated) on in-memory storage instead")
    p.add_argument("--curve", help="study sizes (comma-separated): ms per nas-search trial at each")
    p.add_argument("--window", type=int, default=100, help="trials timed at each size of --curve [100]")
    p.add_argument("--profile", action="store_true", help="with --curve: where the last point's time goes")
    args = p.parse_args()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    if args.curve:
        curve(sorted(int(n) for n in args.curve.split(",")), args.window, args.profile)
        return
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
