"""Load test: many nas-search workers on one PostgreSQL study, quick trials.

Starts a throwaway PostgreSQL server on 127.0.0.1 (``tests/pg.py``; or pass ``--storage``), then

1. ``--workers`` (4) workers on one study of ``--trials`` (200) trials of a one-batch proxy
   (digits, 16 px, one batch of 64 images, 1 thread each): trials per minute, and
   ``nas.cluster.workers.study_health``: lost, duplicated, left running, over budget;
2. the same proxy with 1 worker and with 2 workers (``--scaling-workers``; ``--scaling-trials``
   each, fresh studies): throughput, as a ratio of the 1-worker figure.

Trials per minute count trained trials (the ``--trials`` budget) over the span from the first
trial's start to the last one's end, read from the study; wall time includes process start-up
and the outputs written at the end; s/trial is the median wall time of one trained trial, and
"not training" the part of it outside ``train_proxy``: sampling (TPE's cost grows with the
trials in the study), the storage, the claim lock and building the network.
The machine's other load is printed alongside (load average), since it moves every figure.
Each lost trial (failed with its worker mid-training, no finished retry) is printed with its
attributes and the history of its retries, so that a loss explains itself.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))  # pg.py: the throwaway server of the tests

ONE_BATCH = ["--dataset", "digits", "--proxy-resolution", "16", "--epochs", "1", "--batch-size", "64",
             "--train-size", "64", "--lr", "0.05", "--threads", "1", "--pruner", "none", "--quiet"]


def run_workers(storage: str, study: str, trials: int, n_workers: int, out: Path) -> dict:
    """``n_workers`` nas-search processes on one study; the study's figures."""
    import optuna

    from nas.cluster.workers import lost_trials, study_health

    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    args = [*ONE_BATCH, "--trials", str(trials), "--storage", storage, "--study-name", study]
    t0 = time.perf_counter()
    procs = [subprocess.Popen([sys.executable, "-m", "nas.cli.search", *args, "--out", str(out / f"{study}-{i}")],
                              env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True) for i in range(n_workers)]
    errors = [p.communicate()[1] for p in procs]
    wall = time.perf_counter() - t0
    bad = [(p.returncode, e[-2000:]) for p, e in zip(procs, errors) if p.returncode != 0]
    if bad:
        raise SystemExit(f"a worker failed: {bad[0]}")
    s = optuna.load_study(study_name=study, storage=storage)
    figures = study_health(s)
    lost = lost_trials(s.get_trials(deepcopy=False))
    for t in lost:
        print(f"lost in study {study!r}: " + describe(t, s.get_trials(deepcopy=False)), file=sys.stderr)
    for note in (line for e in errors for line in e.splitlines() if lost and "stale" in line):
        print(f"  worker said: {note}", file=sys.stderr)
    finished = [t for t in s.get_trials(deepcopy=False) if t.datetime_complete and t.datetime_start]
    span = (max(t.datetime_complete for t in finished) - min(t.datetime_start for t in finished)).total_seconds()
    done = [t for t in finished if t.user_attrs.get("trained") and t.user_attrs.get("seconds") is not None]
    trained = sorted((t.datetime_complete - t.datetime_start).total_seconds() for t in done)
    outside = sorted((t.datetime_complete - t.datetime_start).total_seconds() - t.user_attrs["seconds"] for t in done)
    return {**figures, "stale": figures["running"], "workers": n_workers, "wall_s": wall, "span_s": span,
            "per_min": figures["trained"] / span * 60, "over": figures["trained"] - trials,
            "trial_s": trained[len(trained) // 2], "outside_s": outside[len(outside) // 2]}


def describe(trial, trials) -> str:
    """One lost trial: its state, times, attributes, and every trial of its retry series."""
    def line(t) -> str:
        times = f"{t.datetime_start:%H:%M:%S.%f}"[:-3] if t.datetime_start else "-"
        times += f" .. {t.datetime_complete:%H:%M:%S.%f}"[:-3] if t.datetime_complete else " .. (not finished)"
        return (f"trial {t.number} {t.state.name} {times} user_attrs={json.dumps(t.user_attrs, default=str)} "
                f"system_attrs={json.dumps(t.system_attrs, default=str)}")
    series = [t for t in trials if t.number != trial.number and (
        t.user_attrs.get("retry_of") in (trial.number, trial.user_attrs.get("retry_of"))
        or trial.number in t.system_attrs.get("retry_history", []))]
    return "\n  ".join([line(trial), *(f"series: {line(t)}" for t in series)])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--trials", type=int, default=200)
    p.add_argument("--workers", type=int, default=4)
    p.add_argument("--scaling-trials", type=int, default=40, help="trials of each scaling run")
    p.add_argument("--scaling-workers", default="1,2", help="worker counts of the scaling runs, comma-separated")
    p.add_argument("--storage", help="a PostgreSQL URL whose database is empty [a throwaway server]")
    a = p.parse_args()

    server = None
    if a.storage is None:
        import pg

        reason = pg.why_unavailable()
        if reason:
            raise SystemExit(f"bench_cluster: {reason}")
        server = pg.PgServer().start()
    try:
        with tempfile.TemporaryDirectory() as tmp:
            def url(name: str) -> str:
                return a.storage if a.storage else server.create_database(name)
            runs = [run_workers(url("load"), "load", a.trials, a.workers, Path(tmp))]
            counts = [int(n) for n in a.scaling_workers.split(",") if n]
            if a.scaling_trials:
                runs += [run_workers(url(f"scale{n}"), f"scale{n}", a.scaling_trials, n, Path(tmp)) for n in counts]
    finally:
        if server is not None:
            server.destroy()
    print(f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f} at the end; one-batch proxy "
          f"(digits 16 px, 64 images, 1 thread per worker); PostgreSQL {'(given)' if a.storage else '15, loopback'}")
    print(f"{'workers':>7} {'trained':>7} {'trials':>6} {'over':>4} {'lost':>4} {'dup':>4} {'stale':>5} "
          f"{'s/trial':>7} {'not training':>12} {'span s':>7} {'wall s':>7} {'trials/min':>10} {'vs 1 worker':>11}")
    one = next((r for r in runs[1:] if r["workers"] == 1), None)
    for r in runs:
        ratio = f"{r['per_min'] / one['per_min']:.2f}x" if one else "-"
        print(f"{r['workers']:>7} {r['trained']:>7} {r['trials']:>6} {r['over']:>4} {r['lost']:>4} "
              f"{r['duplicated']:>4} {r['stale']:>5} {r['trial_s']:>7.2f} {r['outside_s']:>12.2f} {r['span_s']:>7.1f} "
              f"{r['wall_s']:>7.1f} "
              f"{r['per_min']:>10.1f} {ratio:>11}")


if __name__ == "__main__":
    main()
