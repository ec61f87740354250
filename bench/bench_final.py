"""``nas-train`` throughput against the proxy trainer and against a plain PyTorch loop, one run.

All three sides train our EfficientNet-B0 (``search_spaces.build_model``, 10 classes, 3 input
channels) on the same Fashion-MNIST images (synthetic where the dataset is not installed), at the
same resolution and batch size, on the CPU:

nas-train   ``nas.final.train_final`` itself, the paper's recipe: RMSProp-TF, EMA of the weights
            after every step, random crop with padding + flip on the uint8 batch, a checkpoint
            written after every epoch. Timed from the seconds it records per epoch (the first
            epoch, with its warm-up, is left out). Again with ``--recipe sgd``: the proxy
            trainer's optimizer (fused SGD), so the difference is the final recipe's extra work.
proxy       ``nas.proxy.train_proxy`` with its defaults (SGD-Nesterov, no augmentation, no EMA):
            the trainer nas-train runs on, without the final recipe's extra work per step.
plain loop  a ``DataLoader`` over a ``TensorDataset`` of uint8 NCHW images, the same crop + flip
            (``nas.final.crop_flip``) and normalization per batch, ``torch.optim.RMSprop``, and an
            EMA with ``torch.optim.swa_utils.AveragedModel``: what a user would write by hand.

Sides alternate ``--repeats`` times; the best of each is kept (a busy machine only slows a run down).

    python bench/bench_final.py [--threads 2] [--images 5120] [--repeats 2]
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # idle OpenMP threads sleep (set before torch loads)

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from nas.final import FinalConfig, crop_flip, load_final_data, train_final  # noqa: E402
from nas.proxy import TrainConfig, train_proxy  # noqa: E402
from search_spaces import build_model, get_preset  # noqa: E402

FMNIST = Path("/usr/share/datasets/fashion-mnist")


def nas_train_images_per_second(cfg: FinalConfig, arch_name: str) -> float:
    """Training images/s of one ``train_final`` run: the fastest epoch after the first."""
    with tempfile.TemporaryDirectory() as tmp:
        metrics = train_final(get_preset(arch_name), cfg, Path(tmp) / "run")
    history = metrics["history"]
    assert isinstance(history, list)
    seconds = [float(r["seconds"]) for r in history]
    steps = [int(r["step"]) for r in history]
    rates = [(b_step - a_step) * cfg.batch_size / (b - a)
             for a, b, a_step, b_step in zip(seconds, seconds[1:], steps, steps[1:])]
    return max(rates)


def proxy_images_per_second(data, batch_size: int, steps: int, threads: int) -> float:
    torch.manual_seed(0)
    model = build_model(get_preset("efficientnet-b0"), num_classes=data.num_classes, in_chans=3)
    config = TrainConfig(batch_size=batch_size, threads=threads, bn_recalibrate_batches=0)
    warm = TrainConfig(batch_size=batch_size, threads=threads, bn_recalibrate_batches=0, max_images=3 * batch_size)
    train_proxy(model, data, warm)
    result = train_proxy(model, data, TrainConfig(**{**config.__dict__, "max_images": steps * batch_size}))
    return result.images / result.train_seconds


def plain_loop_images_per_second(images: torch.Tensor, labels: torch.Tensor, mean: tuple[float, ...],
                                 std: tuple[float, ...], batch_size: int, steps: int, pad: int) -> float:
    """A hand-written loop with the same augmentation, optimizer family and EMA."""
    from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

    torch.manual_seed(0)
    model = build_model(get_preset("efficientnet-b0"), num_classes=10, in_chans=3)
    model.train()
    ema = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(0.9999))
    optimizer = torch.optim.RMSprop(model.parameters(), lr=0.016 * batch_size / 256, alpha=0.9, eps=1e-3,
                                    momentum=0.9, weight_decay=1e-5)
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(images, labels), batch_size=batch_size,
                                         shuffle=True, drop_last=True)
    m = torch.tensor(mean).view(1, -1, 1, 1)
    s = torch.tensor(std).view(1, -1, 1, 1)
    generator = torch.Generator().manual_seed(0)
    warmup, seen, t0 = 3, 0, 0.0
    step = 0
    while step < warmup + steps:
        for x, y in loader:
            if step == warmup:
                t0 = time.perf_counter()
            x = (crop_flip(x, pad, True, generator).float() - m) / s
            loss = F.cross_entropy(model(x), y, label_smoothing=0.1)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            ema.update_parameters(model)
            seen += len(y) if step >= warmup else 0
            step += 1
            if step == warmup + steps:
                break
    return seen / (time.perf_counter() - t0)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--images", type=int, default=5120, help="training images per epoch")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--resolution", type=int, default=32)
    p.add_argument("--repeats", type=int, default=2)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    dataset = "fashion-mnist" if FMNIST.is_dir() else "synthetic"
    cfg = FinalConfig(dataset=dataset, train_size=args.images, batch_size=args.batch_size, epochs=3.0,
                      resolution=args.resolution, threads=args.threads, seed=0)
    data = load_final_data(cfg, args.resolution).task
    steps = args.images // args.batch_size
    images, labels = data.train.images, data.train.labels  # uint8 NCHW, as nas-train holds them
    pad = max(1, round(args.resolution / 8))
    best = {"nas-train": 0.0, "nas-train-sgd": 0.0, "proxy": 0.0, "plain": 0.0}
    sgd_cfg = dataclasses.replace(cfg, recipe="sgd")
    for _ in range(args.repeats):
        best["nas-train"] = max(best["nas-train"], nas_train_images_per_second(cfg, "efficientnet-b0"))
        best["nas-train-sgd"] = max(best["nas-train-sgd"], nas_train_images_per_second(sgd_cfg, "efficientnet-b0"))
        best["proxy"] = max(best["proxy"], proxy_images_per_second(data, args.batch_size, steps, args.threads))
        best["plain"] = max(best["plain"], plain_loop_images_per_second(images, labels, data.mean, data.std,
                                                                        args.batch_size, steps, pad))
    print(f"EfficientNet-B0 (search_spaces), {dataset} {args.resolution}x{args.resolution}, batch {args.batch_size}, "
          f"{steps} steps/epoch, {args.threads} thread(s), torch {torch.__version__}, "
          f"load average {os.getloadavg()[0]:.1f}, best of {args.repeats}")
    rows = (("nas-train (RMSProp-TF, EMA, crop+flip, checkpoint per epoch)", "nas-train"),
            ("nas-train --recipe sgd (fused SGD, EMA, crop+flip, checkpoint per epoch)", "nas-train-sgd"),
            ("proxy trainer (train_proxy: SGD, no augmentation, no EMA)", "proxy"),
            ("plain loop (DataLoader, crop+flip, torch RMSprop, AveragedModel EMA)", "plain"))
    for label, side in rows:
        print(f"{label:<72} {best[side]:>8.1f} images/s")
    print(f"nas-train / proxy trainer: {best['nas-train'] / best['proxy']:.2f}x (--recipe sgd: "
          f"{best['nas-train-sgd'] / best['proxy']:.2f}x); "
          f"nas-train / plain loop: {best['nas-train'] / best['plain']:.2f}x")


if __name__ == "__main__":
    main()
