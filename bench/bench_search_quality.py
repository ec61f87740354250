"""Search quality at a fixed budget: TPE and the RL controller vs random on a cheap, deterministic objective.

The objective is the EfficientNet reward ``ACC x (MACs/T)^-0.07`` over the real MnasNet space,
with ACC a fixed surrogate of the architecture (it rises with log MACs, SE and larger
kernels, and falls for regular-conv stages; no training). Prints the best reward after 50 and
200 trials, mean (and min..max) over 5 seeds, per sampler, and TPE / random and RL / random
(``rl``: ``nas.search.rl_sampler.RLSampler``, MnasNet's LSTM controller trained by REINFORCE).

    python bench/bench_search_quality.py [--seeds 5] [--trials 200] [--samplers tpe,random,rl]
"""
from __future__ import annotations

import argparse
import math
import statistics

import optuna

from nas.search.reward import reward
from nas.search.rl_sampler import RLSampler
from nas.search.study import make_sampler
from search_spaces import ArchSpec, count_cost, default_space, get_preset

TARGET = 400e6


def surrogate_accuracy(arch: ArchSpec) -> float:
    """A fixed, smooth-ish function of the architecture standing in for proxy accuracy."""
    macs = count_cost(arch, convention="paper").macs
    acc = 0.55 + 0.06 * math.log(macs / 50e6)
    for i, s in enumerate(arch.stages):
        acc += 0.006 * (s.se_ratio > 0) + 0.003 * (s.kernel == 5) * (i >= 2)
        acc -= 0.01 * (s.op == "conv") + 0.004 * (s.skip == "none") * (s.repeats > 1)
        acc += 0.004 * (s.op == "mbconv" and s.expansion == 6)
    return min(acc, 0.99)


def objective_value(arch: ArchSpec) -> float:
    return reward(surrogate_accuracy(arch), count_cost(arch).macs, TARGET)


def sampler_for(name: str, seed: int) -> optuna.samplers.BaseSampler:
    return RLSampler(seed=seed) if name == "rl" else make_sampler(name, seed)


def best_after(sampler_name: str, seed: int, trials: int, marks: tuple[int, ...]) -> dict[int, float]:
    space = default_space()
    study = optuna.create_study(direction="maximize", sampler=sampler_for(sampler_name, seed))
    best, out = -math.inf, {}
    for i in range(1, trials + 1):
        t = study.ask()
        value = objective_value(space.sample(t))
        study.tell(t, value)
        best = max(best, value)
        if i in marks:
            out[i] = best
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", type=int, default=5)
    p.add_argument("--trials", type=int, default=200)
    p.add_argument("--samplers", default="tpe,random,rl", help="comma-separated; random is the reference")
    args = p.parse_args()
    names = args.samplers.split(",")
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    marks = tuple(m for m in (50, 200) if m <= args.trials) or (args.trials,)
    b0 = objective_value(get_preset("efficientnet-b0").replace(name=""))
    print(f"surrogate objective; EfficientNet-B0 scores {b0:.4f}")
    means = {}
    for name in names:
        runs = [best_after(name, seed, args.trials, marks) for seed in range(args.seeds)]
        for m in marks:
            vals = [r[m] for r in runs]
            means[name, m] = statistics.mean(vals)
            print(f"{name:<7} best after {m:>4} trials: {means[name, m]:.4f} "
                  f"(min {min(vals):.4f}, max {max(vals):.4f}, {args.seeds} seeds)")
    for name in [n for n in names if n != "random"] if "random" in names else []:
        for m in marks:
            print(f"{name} / random after {m} trials: {means[name, m] / means['random', m]:.4f}")


if __name__ == "__main__":
    main()
