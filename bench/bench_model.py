"""Training-step speed of our EfficientNet-B0 vs efficientnet_pytorch's, NCHW and channels_last.

One step = forward + cross-entropy + backward + SGD step, batch 128, 32x32 inputs, 10 classes.
All four configurations run in the same process, interleaved step by step (so a change in machine
load hits all of them alike); after a warm-up the median of N steps is reported.

    python bench/bench_model.py [--quick] [--steps 10] [--warmup 2] [--threads 2] [--profile]
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Callable

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from search_spaces import build_model, get_preset  # noqa: E402

BATCH, SIZE, CLASSES = 128, 32, 10
FORMATS = {"NCHW": torch.contiguous_format, "channels_last": torch.channels_last}


def make_models() -> dict[str, Callable[[], nn.Module]]:
    from efficientnet_pytorch import EfficientNet

    return {
        "ours": lambda: build_model(get_preset("efficientnet-b0"), num_classes=CLASSES),
        "efficientnet_pytorch": lambda: EfficientNet.from_name("efficientnet-b0", num_classes=CLASSES),
    }


def make_step(model: nn.Module, fmt: torch.memory_format, seed: int) -> Callable[[], None]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(BATCH, 3, SIZE, SIZE, generator=g).to(memory_format=fmt)
    y = torch.randint(0, CLASSES, (BATCH,), generator=g)
    model = model.to(memory_format=fmt).train()
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        loss = nn.functional.cross_entropy(model(x), y)
        loss.backward()
        opt.step()

    return step


def profile(step: Callable[[], None], label: str, rows: int = 12) -> None:
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    with torch_profile(activities=[ProfilerActivity.CPU]) as prof:
        step()
    print(f"\n--- profile: {label} (one step, self CPU time) ---")
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=rows))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="1 warm-up step and 3 timed steps")
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--profile", action="store_true", help="print a torch.profiler table per configuration")
    args = parser.parse_args(argv)
    steps, warmup = (3, 1) if args.quick else (args.steps, args.warmup)
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)

    load_start = os.getloadavg()[0]
    configs: dict[tuple[str, str], Callable[[], None]] = {}
    for fmt_name, fmt in FORMATS.items():
        for model_name, make in make_models().items():
            configs[(model_name, fmt_name)] = make_step(make(), fmt, args.seed)
    for _ in range(warmup):
        for step in configs.values():
            step()
    times: dict[tuple[str, str], list[float]] = {key: [] for key in configs}
    keys = list(configs)
    for i in range(steps):
        for key in keys[i % len(keys):] + keys[:i % len(keys)]:  # rotate the order every round
            start = time.perf_counter()
            configs[key]()
            times[key].append(time.perf_counter() - start)
    median_ms = {key: statistics.median(t) * 1e3 for key, t in times.items()}

    print(f"EfficientNet-B0 training step: batch {BATCH}, {SIZE}x{SIZE}, {CLASSES} classes, SGD, "
          f"torch {torch.__version__}, {args.threads} threads, median of {steps} steps after {warmup} warm-up")
    print(f"  {'format':<14} {'ours ms/step':>13} {'efficientnet_pytorch':>21} {'ref/ours':>9}")
    for fmt_name in FORMATS:
        ours, ref = median_ms[("ours", fmt_name)], median_ms[("efficientnet_pytorch", fmt_name)]
        print(f"  {fmt_name:<14} {ours:13.1f} {ref:21.1f} {ref / ours:8.2f}x")
    print("  (ref/ours > 1: ours is faster)")
    print(f"  1-min load average: {load_start:.1f} at start, {os.getloadavg()[0]:.1f} at end ({os.cpu_count()} CPUs)")
    if args.profile:
        for key, step in configs.items():
            profile(step, f"{key[0]}, {key[1]}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
