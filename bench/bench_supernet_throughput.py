"""Supernet throughput: candidates scored per CPU-hour, the supernet's training amortized, against ``train:1``.

The issue's measure: a candidate scored with inherited weights costs its scoring (extract,
recalibrate BN, held-out loss) plus the supernet's training divided by ``--amortize`` candidates
(1,000); a candidate of the 1-epoch proxy costs one stand-alone training of one epoch and its
held-out evaluation (``nas-proxy-check``'s ``train:1``, through the same function). Both run in
this process with ``--threads`` threads (default 1: wall seconds are then CPU seconds, so the
figures are per CPU-hour; with 2 every figure is per machine-hour of a 2-core machine), on the
same candidates: the 20 architectures of the published proxy check (``--reference``). The
supernet is trained in ``--out`` (a rerun resumes it, the seconds it took are kept beside it) or
taken as it is with ``--supernet`` and ``--train-seconds``. Prints seconds per candidate, the
ratio, and the scores' Kendall tau against the reference's 5-epoch stand-alone accuracy.

    python bench/bench_supernet_throughput.py --out runs/throughput                  # trains 15 epochs first
    python bench/bench_supernet_throughput.py --supernet runs/throughput/base.pt --train-seconds 362 \\
        --bn-batches 2 --val-images 500 --baseline 20 --baseline-seed 1    # and train:1's tau at seed 1
    python bench/bench_supernet_throughput.py --out runs/lr02 --epochs 10 --lr 0.02 --seed 3   # another recipe

Data: Fashion-MNIST, 5,000 training and 2,000 held-out images, split seed 0, 32 px (the proxy check's).
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch
from bench_supernet_split import agreement, read_reference, train

from nas.cli.proxy_check import parse_config
from nas.fidelity.check import Item, measure
from nas.proxy import ProxyData
from nas.proxy.data import load_data
from nas.supernet import Supernet, SupernetTrainConfig, score
from nas.supernet.checkpoint import load_supernet
from search_spaces import ArchSpec, default_space


def supernet_seconds(args: argparse.Namespace, data: ProxyData) -> tuple[Path, float]:
    """The supernet file and the seconds its training took (trained here, or given)."""
    if args.supernet:
        return args.supernet, args.train_seconds
    args.out.mkdir(parents=True, exist_ok=True)
    cfg = SupernetTrainConfig(epochs=args.epochs, threads=args.threads, device="cpu", seed=args.seed, lr=args.lr,
                              random_subnets=args.random_subnets)
    torch.manual_seed(args.seed)
    net = Supernet(default_space(), data.num_classes, data.in_chans)
    path = args.out / "base.pt"
    return path, train(net, data, path, cfg)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", type=Path, default=Path("runs/throughput"))
    p.add_argument("--supernet", type=Path, help="a trained supernet (then --train-seconds is its training time)")
    p.add_argument("--train-seconds", type=float, default=0.0)
    p.add_argument("--epochs", type=float, default=15.0, help="the supernet's training when it is trained here")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--lr", type=float, default=SupernetTrainConfig.lr, help="the supernet's peak learning rate")
    p.add_argument("--random-subnets", type=int, default=SupernetTrainConfig.random_subnets,
                   help="random members per step besides the largest and the smallest")
    p.add_argument("--reference", type=Path, default=Path("docs/proxy-check-supernet-r4e30-bn5-fashion-mnist.csv"))
    p.add_argument("--bn-batches", type=int, default=5)
    p.add_argument("--val-images", type=int, default=0, help="held-out images a candidate is scored on (0: all)")
    p.add_argument("--baseline", type=int, default=5, help="candidates the 1-epoch proxy trains (the first N; all "
                                                           "20: its tau is printed too)")
    p.add_argument("--baseline-seed", type=int, default=0, help="the 1-epoch proxy's seed (nas-proxy-check's: 0)")
    p.add_argument("--amortize", type=int, default=1000)
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    torch.set_flush_denormal(True)  # as the trainers do
    check = parse_config(["--dataset", "fashion-mnist", "--train-size", "5000", "--val-size", "2000",
                          "--threads", str(args.threads), "--out", str(args.out / "unused")])
    data, trainer = load_data(check.task.data_config(0)), check.task.train_config(0)
    path, train_seconds = supernet_seconds(args, data)
    rows = read_reference(args.reference)
    net = load_supernet(path).eval()
    reference = [r for _, _, r in rows]

    def loss_score(arch: ArchSpec) -> float:
        return score(net, arch, data, bn_batches=args.bn_batches, metric="loss", val_images=args.val_images)

    loss_score(rows[0][1])  # warm-up
    start = time.perf_counter()
    scores = [loss_score(arch) for _, arch, _ in rows]
    scoring = (time.perf_counter() - start) / len(rows)
    start = time.perf_counter()
    trained = [measure(Item(arch, "train:1", args.baseline_seed), data, trainer, "cpu") for _, arch, _ in
               rows[:args.baseline]]
    baseline = (time.perf_counter() - start) / args.baseline
    ours = scoring + train_seconds / args.amortize
    per_hour = 3600 / args.threads
    print(f"threads {args.threads}; supernet {path}: training {train_seconds:.0f} s over {args.amortize} candidates "
          f"= {train_seconds / args.amortize:.3f} s; scoring (bn {args.bn_batches}, val images "
          f"{args.val_images or data.num_val}) {scoring:.3f} s")
    print(f"s/candidate: supernet {ours:.3f}, train:1 {baseline:.2f} (first {args.baseline}); candidates per "
          f"CPU-hour: {per_hour / ours:.0f} vs {per_hour / baseline:.0f}; ratio {baseline / ours:.1f}x")
    print(f"supernet-loss vs the 5-epoch reference: tau [95% CI], rho [95% CI]: "
          f"{agreement(scores, reference)}")
    if len(trained) == len(rows):
        print(f"train:1 (seed {args.baseline_seed}) vs the reference: {agreement(trained, reference)}")
    args.out.mkdir(parents=True, exist_ok=True)
    np.save(args.out / f"scores-bn{args.bn_batches}-v{args.val_images}.npy", np.array(scores))


if __name__ == "__main__":
    main()
