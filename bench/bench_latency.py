"""Latency lookup table vs measured whole networks, on the same sampled architectures in one run.

The table (``search_spaces.latency.LatencyTable``) estimates a network's latency as the sum of its per-layer
entries, timed on this machine the first time they are needed. The reference is what a search
without the table has to do for every candidate: build the network and time it (``measure_latency``:
median of ``--repeats`` forward passes after 5 warm-up passes). Each network is measured twice, just
before and just after the table times its parts; the reference is the mean of the two, and their
difference is the machine's own noise, printed beside the table's error. After the run, the
table's optional per-network overhead is fitted on three presets (not among the sampled
architectures) and its error printed as well.

    OMP_NUM_THREADS=1 python3 bench/bench_latency.py [--archs 10] [--resolution 224] [--seed 0]
        [--threads 1] [--repeats 20] [--table PATH]
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import optuna
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from search_spaces import ArchSpec, build_model, default_space  # noqa: E402
from search_spaces.latency import CALIBRATION_PRESETS, LatencyTable, measure_latency  # noqa: E402


def sample_archs(n: int, seed: int) -> list[ArchSpec]:
    space = default_space()
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed))
    return [space.sample(study.ask()) for _ in range(n)]


def measure(arch: ArchSpec, resolution: int, repeats: int) -> tuple[float, float]:
    """The measured latency of ``arch`` and the wall seconds it took to get it (build included)."""
    start = time.perf_counter()
    latency = measure_latency(build_model(arch), resolution, repeats=repeats)
    return latency, time.perf_counter() - start


def time_estimates(table: LatencyTable, archs: list[ArchSpec], min_seconds: float = 1.0) -> float:
    """Seconds per ``table.estimate`` call from a warm table (repeated passes for >= min_seconds)."""
    passes, start = 0, time.perf_counter()
    while time.perf_counter() - start < min_seconds:
        for a in archs:
            table.estimate(a)
        passes += 1
    return (time.perf_counter() - start) / (passes * len(archs))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--archs", type=int, default=10)
    parser.add_argument("--resolution", type=int, default=224)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads (default 1)")
    parser.add_argument("--repeats", type=int, default=20, help="timed passes per measurement (default 20)")
    parser.add_argument("--table", type=Path, default=None, help="the table's cache file (default: in memory)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    optuna.logging.set_verbosity(optuna.logging.WARNING)

    load_start = os.getloadavg()[0]
    archs = sample_archs(args.archs, args.seed)
    table = LatencyTable(args.table, resolution=args.resolution, repeats=args.repeats)
    first, second, fill_seconds = [], [], 0.0
    for a in archs:  # the table times each network's parts between the network's two measurements
        first.append(measure(a, args.resolution, args.repeats))
        start = time.perf_counter()
        table.breakdown(a)
        fill_seconds += time.perf_counter() - start
        second.append(measure(a, args.resolution, args.repeats))
    measured = [(m1 + m2) / 2 for (m1, _), (m2, _) in zip(first, second)]
    estimates = [table.estimate(a) for a in archs]
    estimate_seconds = time_estimates(table, archs)
    overhead = table.calibrate()
    calibrated = [table.estimate(a) for a in archs]

    print(f"latency table vs measured: {len(archs)} architectures from default_space() (RandomSampler seed "
          f"{args.seed}), {args.resolution} px, batch 1, torch threads {torch.get_num_threads()}, "
          f"median of {args.repeats}")
    print(f"  {'#':>2} {'layers':>6} {'estimate ms':>12} {'measured ms':>12} {'error':>8} {'noise':>8}")
    errors, noise = [], []
    for i, (a, est, ref, (m1, _), (m2, _)) in enumerate(zip(archs, estimates, measured, first, second)):
        errors.append((est - ref) / ref)
        noise.append(abs(m1 - m2) / ref)
        print(f"  {i:>2} {len(table.parts(a)) - 2:>6} {est * 1e3:12.2f} {ref * 1e3:12.2f} "
              f"{errors[-1]:+8.1%} {noise[-1]:8.1%}")
    calibrated_mape = statistics.fmean(abs(c - ref) / ref for c, ref in zip(calibrated, measured))
    measure_seconds = statistics.fmean(seconds for _, seconds in first + second)
    print(f"  table error (MAPE)       : {statistics.fmean(abs(e) for e in errors):8.1%}  "
          f"(max {max(abs(e) for e in errors):.1%}, median {statistics.median(abs(e) for e in errors):.1%}, "
          f"mean signed {statistics.fmean(errors):+.1%})")
    print(f"  with a fitted overhead   : {calibrated_mape:8.1%}  MAPE (overhead {overhead * 1e3:+.2f} ms/network, "
          f"fitted on {', '.join(CALIBRATION_PRESETS)} after the run)")
    print(f"  measurement noise        : {statistics.fmean(noise):8.1%}  mean |run 1 - run 2| / mean "
          f"(max {max(noise):.1%})")
    print(f"  estimate (warm table)    : {estimate_seconds * 1e6:8.1f} us/arch")
    print(f"  measure (build + time)   : {measure_seconds * 1e3:8.1f} ms/arch")
    print(f"  speed-up                 : {measure_seconds / estimate_seconds:8.0f} x")
    print(f"  table                    : {len(table.entries)} entries; the sampled networks' parts timed in "
          f"{fill_seconds:.1f} s")
    print(f"  1-min load average       : {load_start:.1f} at start, {os.getloadavg()[0]:.1f} at end "
          f"({os.cpu_count()} CPUs)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
