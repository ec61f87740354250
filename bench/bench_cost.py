"""Analytic cost model vs fvcore, per architecture, on the same sampled architectures in one run.

The fvcore side is what a user without the analytic model has to do: build the model, trace it
with ``fvcore.nn.FlopCountAnalysis`` and read ``total()``. Both sides are checked to agree.
One torch thread by default: tracing one image is overhead-bound, and a second thread only adds
spin-waits (on a busy 2-core machine fvcore took 4.4 s/arch with 2 threads, 0.49 s with 1).

    python bench/bench_cost.py [--archs 30] [--resolution 224] [--seed 0] [--threads 1]
"""
from __future__ import annotations

import argparse
import logging
import os
import statistics
import sys
import time
from pathlib import Path

import optuna
import torch
from fvcore.nn import FlopCountAnalysis

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from search_spaces import ArchSpec, build_model, count_cost, default_space  # noqa: E402


def sample_archs(n: int, seed: int) -> list[ArchSpec]:
    space = default_space()
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed))
    return [space.sample(study.ask()) for _ in range(n)]


def time_analytic(archs: list[ArchSpec], resolution: int, min_seconds: float = 1.0) -> tuple[float, list[int]]:
    """Seconds per architecture of ``count_cost`` (repeated passes over ``archs`` for >= min_seconds)."""
    macs = [count_cost(a, resolution).macs for a in archs]  # warm-up, and the values to compare
    passes, start = 0, time.perf_counter()
    while True:
        for a in archs:
            count_cost(a, resolution)
        passes += 1
        elapsed = time.perf_counter() - start
        if elapsed >= min_seconds:
            return elapsed / (passes * len(archs)), macs


def time_fvcore(archs: list[ArchSpec], resolution: int) -> tuple[float, list[float], list[int]]:
    """Mean and per-architecture seconds of build + trace + total(), once per architecture."""
    x = torch.zeros(1, 3, resolution, resolution)
    seconds, macs = [], []
    for a in archs:
        start = time.perf_counter()
        model = build_model(a).eval()
        analysis = FlopCountAnalysis(model, x)
        analysis.unsupported_ops_warnings(False).uncalled_modules_warnings(False)
        macs.append(int(analysis.total()))
        seconds.append(time.perf_counter() - start)
    return statistics.fmean(seconds), seconds, macs


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--archs", type=int, default=30)
    parser.add_argument("--resolution", type=int, default=224)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1,
                        help="torch intra-op threads; 1 is fvcore's fastest for a batch-1 trace (default)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    logging.getLogger("fvcore").setLevel(logging.ERROR)

    load_start = os.getloadavg()[0]
    archs = sample_archs(args.archs, args.seed)
    time_fvcore(archs[:1], args.resolution)  # warm-up: first-call costs of torch and the tracer
    fv_mean, fv_each, fv_macs = time_fvcore(archs, args.resolution)
    ours, our_macs = time_analytic(archs, args.resolution)
    mismatches = sum(a != b for a, b in zip(our_macs, fv_macs))

    print(f"cost model vs fvcore: {len(archs)} architectures from default_space() "
          f"(RandomSampler seed {args.seed}), {args.resolution} px, torch threads {args.threads}")
    print(f"  fvcore build + trace : {fv_mean * 1e3:10.1f} ms/arch  "
          f"(min {min(fv_each) * 1e3:.0f}, max {max(fv_each) * 1e3:.0f})")
    print(f"  count_cost (ours)    : {ours * 1e3:10.4f} ms/arch")
    print(f"  speed-up             : {fv_mean / ours:10.0f} x  (goal >= 500 x)")
    print(f"  MACs equal to fvcore : {len(archs) - mismatches}/{len(archs)}")
    print(f"  1-min load average   : {load_start:.1f} at start, {os.getloadavg()[0]:.1f} at end "
          f"({os.cpu_count()} CPUs)")
    return 0 if mismatches == 0 else 1


if __name__ == "__main__":
    raise SystemExit(main())
