"""Splitting the supernet by op kind (few-shot NAS) against the one-shot supernet, at equal training.

Few-shot NAS (Zhao et al., ICML 2021) splits a one-shot supernet on the operation choice of one
part of the network: each sub-supernet starts from the one-shot weights and keeps training only
over the architectures with its choice there, so the op kinds stop competing for the shared
weights downstream. Here the split is on the op kind of one stage (``--split-stage``, default 4:
the stage with the most layer slots): conv, dsconv and mbconv (mbconv1/3/6 nest, one set of
weights), three sub-supernets of ``--split-epochs`` each. The control trains the one-shot
supernet on for the same number of steps in all (3 x ``--split-epochs``), over the whole space,
with the same recipe, so any gain is the split's and not the extra training's. The split is the
library's (``nas.supernet.split_supernet``: ``base-s<stage>-<kind>.pt`` in ``--out``, each
architecture scored by ``pick``), so ``nas-proxy-check --supernet`` takes the same files.

Every architecture of the published proxy check (the 20 of ``--reference``, a ``nas-proxy-check``
results CSV with the 5-epoch stand-alone ``reference_mean``) is scored by the base supernet, the
control and the sub-supernet of its op kind, with BN recalibrated on ``--bn-batches`` training
batches: held-out accuracy and minus the held-out cross-entropy from the same forward passes.
Prints Kendall tau and Spearman rho with 95 % bootstrap intervals against the reference, the
training seconds and the scoring seconds per architecture; writes the per-architecture scores.

    python bench/bench_supernet_split.py --out runs/supernet-split      # rerun: resumes every training

Data: Fashion-MNIST, 5,000 training and 2,000 held-out images, split seed 0, 32 px (the proxy
check's). Base supernet: 15 epochs, 2 random members per step (the 2026-12-03 recipe, shorter).
"""
from __future__ import annotations

import argparse
import csv
import dataclasses
import time
from pathlib import Path

import numpy as np
import torch

from nas.fidelity.rankstats import bootstrap_ci, kendall_tau, spearman_rho
from nas.proxy import ProxyData, evaluate, torch_threads
from nas.proxy.data import DataConfig, load_data
from nas.supernet import OP_KINDS, Supernet, SupernetTrainConfig, pick, split_supernet, train_supernet
from nas.supernet.checkpoint import load_supernet
from nas.supernet.score import DEFAULT_SCORE_CONFIG, extract_model
from nas.supernet.train import SupernetTrainResult
from search_spaces import ArchSpec, default_space


def seconds_file(path: Path) -> Path:
    return path.with_suffix(".seconds")


def add_seconds(path: Path, result: SupernetTrainResult) -> float:
    """The seconds of training the file at ``path`` holds, this call's (``result``) added."""
    before = float(seconds_file(path).read_text()) if seconds_file(path).exists() else 0.0
    total = before + (result.seconds if result.step > result.start_step else 0.0)
    seconds_file(path).write_text(f"{total:.1f}\n")
    return total


def train(supernet: Supernet, data: ProxyData, path: Path, cfg: SupernetTrainConfig) -> float:
    """Train (or resume, or find done) ``supernet`` at ``path``; the seconds of training this file holds."""
    return add_seconds(path, train_supernet(supernet, data, cfg, checkpoint=path))


def scores(supernet: Supernet, arch: ArchSpec, data: ProxyData, bn_batches: int) -> tuple[float, float, float]:
    """(held-out accuracy, minus the held-out cross-entropy, seconds) with inherited weights."""
    start = time.perf_counter()
    config = dataclasses.replace(DEFAULT_SCORE_CONFIG, bn_recalibrate_batches=bn_batches, seed=0)
    model = extract_model(supernet, arch).to(memory_format=torch.channels_last)  # type: ignore[call-overload]
    top1, _, loss = evaluate(model, data, config, device=torch.device("cpu"))
    return top1, -loss, time.perf_counter() - start


def read_reference(path: Path) -> list[tuple[str, ArchSpec, float]]:
    with open(path, newline="") as f:
        return [(r["name"], ArchSpec.from_dict({"stages": r["arch"].split()}), float(r["reference_mean"]))
                for r in csv.DictReader(f)]


def agreement(x: list[float], y: list[float]) -> str:
    a, b = np.asarray(x), np.asarray(y)
    tau, rho = kendall_tau(a, b), spearman_rho(a, b)
    (tl, th), (rl, rh) = bootstrap_ci(a, b, kendall_tau), bootstrap_ci(a, b, spearman_rho)
    return f"{tau:6.3f} [{tl:.3f}, {th:.3f}]   {rho:6.3f} [{rl:.3f}, {rh:.3f}]"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", type=Path, default=Path("runs/supernet-split"))
    p.add_argument("--reference", type=Path, default=Path("docs/proxy-check-supernet-r4e30-bn5-fashion-mnist.csv"))
    p.add_argument("--base-epochs", type=float, default=15.0)
    p.add_argument("--split-epochs", type=float, default=2.0)
    p.add_argument("--split-stage", type=int, default=4)
    p.add_argument("--bn-batches", type=int, default=5)
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(args.threads)
    torch.set_flush_denormal(True)  # as the trainers do: denormal floats slow CPU kernels many times over
    data = load_data(DataConfig(name="fashion-mnist", val_size=2000, train_size=5000, resolution=32, seed=0))
    space = default_space()
    base_cfg = SupernetTrainConfig(epochs=args.base_epochs, threads=args.threads, device="cpu")
    base = Supernet(space, data.num_classes, data.in_chans)
    seconds = {"base": train(base, data, args.out / "base.pt", base_cfg)}
    # the same recipe restarted (warm-up, cosine) from the base weights: per sub-supernet, and for the control
    more = dataclasses.replace(base_cfg, epochs=args.split_epochs, warmup_epochs=0.0)
    nets: dict[str, Supernet] = {"base": load_supernet(args.out / "base.pt")}

    def trained(kind: str, path: Path, result: SupernetTrainResult) -> None:  # base-s<stage>-<kind>.pt in --out
        seconds[kind] = add_seconds(path, result)
        nets[kind] = load_supernet(path)

    split = split_supernet(args.out / "base.pt", data, args.split_stage, args.split_epochs, args.out,
                           dataclasses.replace(more, seed=1), on_trained=trained)
    control = load_supernet(args.out / "base.pt")
    seconds["control"] = train(control, data, args.out / "control.pt",
                               dataclasses.replace(more, epochs=args.split_epochs * len(split), seed=1))
    nets["control"] = control
    report(args, data, nets, seconds)


def report(args: argparse.Namespace, data: ProxyData, nets: dict[str, Supernet], seconds: dict[str, float]) -> None:
    rows = read_reference(args.reference)
    columns: dict[str, list[tuple[float, float, float]]] = {"base": [], "control": [], "split": []}
    split = [net for kind, net in nets.items() if kind in OP_KINDS]
    with torch_threads(args.threads):
        for _, arch, _ in rows:
            for column, net in (("base", nets["base"]), ("control", nets["control"]), ("split", pick(split, arch))):
                columns[column].append(scores(net.eval(), arch, data, args.bn_batches))
    reference = [r for _, _, r in rows]
    kinds = [a.stages[args.split_stage - 1].op for _, a, _ in rows]  # a stage's op is its op kind
    print(f"split on stage {args.split_stage}: " + ", ".join(f"{k} {kinds.count(k)}" for k in OP_KINDS)
          + f" of {len(rows)} architectures; BN recalibrated on {args.bn_batches} batches")
    print("training seconds: " + ", ".join(f"{k} {v:.0f}" for k, v in seconds.items()))
    print(f"{'supernet':<10} {'score':<9} {'Kendall tau [95% CI]':<26} {'Spearman rho [95% CI]':<24} s/arch")
    for column, values in columns.items():
        per_arch = sum(v[2] for v in values) / len(values)
        for j, metric in ((0, "accuracy"), (1, "-loss")):
            print(f"{column:<10} {metric:<9} {agreement([v[j] for v in values], reference)}   {per_arch:.2f}")
    with open(args.out / "scores.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["name", "kind", "reference_mean", *(f"{c}_{m}" for c in columns for m in ("accuracy", "loss"))])
        for i, (name, _, ref) in enumerate(rows):
            w.writerow([name, kinds[i], ref, *(f"{columns[c][i][j]:.6g}" for c in columns for j in (0, 1))])
    print(f"per-architecture scores: {args.out / 'scores.csv'}")


if __name__ == "__main__":
    main()
