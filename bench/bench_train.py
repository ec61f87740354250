"""Training throughput of EfficientNet-B0 at the proxy settings, project vs reference, one run.

project   = our B0 (``search_spaces.build_model``) trained by ``nas.proxy.train.train_proxy``:
            in-memory uint8 batches normalized on the fly, channels_last, small-map convolution shortcuts
            (search_spaces.blocks.Conv2d), fused SGD-Nesterov, denormals
            flushed to zero while training (a trainer setting; the reference loop runs without it).
reference = ``efficientnet_pytorch`` B0 trained by a plain PyTorch loop: a DataLoader over a
            TensorDataset of float NCHW images, SGD-Nesterov, same batch size, resolution, data.

Both sides are timed after warm-up steps, alternately, ``--repeats`` times; the best of each
is kept (a busy machine only slows a run down). Training FLOPs per image are taken as
3 x (2 x forward MACs), forward MACs counted by fvcore at the proxy resolution, and set against
the fp32 matmul peak measured here.

    python bench/bench_train.py [--threads 2] [--steps 20] [--amp bf16] [--compile] [--json out.json]
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import sys
import time
from pathlib import Path

# Idle OpenMP threads sleep instead of spinning: with any other busy process on a small machine,
# spinning threads slow a 2-thread run down ~10x. Must be set before torch loads OpenMP.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch  # noqa: E402
import torch.nn as nn  # noqa: E402
import torch.nn.functional as F  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from nas.proxy.data import DataConfig, load_data  # noqa: E402
from nas.proxy.train import TrainConfig, train_proxy  # noqa: E402


def matmul_peak_gflops(n: int = 2048, repeats: int = 10) -> float:
    """Best fp32 GFLOP/s of an n x n matmul on this machine (with the current thread count)."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    for _ in range(2):
        a @ b
    best = 0.0
    for _ in range(repeats):
        t0 = time.perf_counter()
        a @ b
        best = max(best, 2 * n**3 / (time.perf_counter() - t0) / 1e9)
    return best


def forward_macs(model: nn.Module, resolution: int) -> int:
    """fvcore's count (one fused multiply-add = one) of one image's forward pass."""
    from fvcore.nn import FlopCountAnalysis

    model.eval()
    counter = FlopCountAnalysis(model, torch.randn(1, 3, resolution, resolution))
    counter.unsupported_ops_warnings(False).uncalled_modules_warnings(False)
    macs = int(counter.total())
    model.train()
    return macs


def project_model() -> tuple[nn.Module, str]:
    try:
        from search_spaces import build_model, get_preset

        return build_model(get_preset("efficientnet-b0"), num_classes=10, in_chans=3), "search_spaces B0"
    except ImportError:
        from efficientnet_pytorch import EfficientNet

        return EfficientNet.from_name("efficientnet-b0", num_classes=10), "efficientnet_pytorch B0 (fallback)"


def reference_images_per_second(images: torch.Tensor, labels: torch.Tensor, args: argparse.Namespace) -> float:
    """The plain loop: DataLoader(TensorDataset), NCHW, SGD-Nesterov, fp32."""
    from efficientnet_pytorch import EfficientNet

    torch.manual_seed(0)
    model = EfficientNet.from_name("efficientnet-b0", num_classes=10)
    model.train()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, nesterov=True, weight_decay=5e-5)
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(images, labels),
                                         batch_size=args.batch_size, shuffle=True, drop_last=True)
    seen, t0 = 0, 0.0
    for step, (x, y) in enumerate(loader):
        if step == args.warmup:
            t0 = time.perf_counter()
        optimizer.zero_grad()
        loss = F.cross_entropy(model(x), y, label_smoothing=0.1)
        loss.backward()
        optimizer.step()
        seen += len(y) if step >= args.warmup else 0
        if step + 1 == args.warmup + args.steps:
            break
    return seen / (time.perf_counter() - t0)


def project_images_per_second(data, config: TrainConfig, args: argparse.Namespace,
                              model: nn.Module) -> tuple[float, float]:
    """(training images/s, seconds of the final BN recalibration + held-out evaluation)."""
    warm = dataclasses.replace(config, max_images=args.warmup * args.batch_size, bn_recalibrate_batches=0)
    train_proxy(model, data, warm)  # warm-up steps: kernel selection, compilation
    result = train_proxy(model, data, dataclasses.replace(config, max_images=args.steps * args.batch_size))
    return result.images / result.train_seconds, result.seconds - result.train_seconds


def quality(epochs_list: list[float], threads: int) -> None:
    """B0 on the Fashion-MNIST proxy (10K training images, 6K held out, 32x32): accuracy and s/epoch.

    Each row trains once without BN recalibration, then scores the same network with and
    without recalibrated statistics.
    """
    from efficientnet_pytorch import EfficientNet

    from nas.proxy.evaluation import evaluate

    data = load_data(DataConfig("fashion-mnist", train_size=10_000, resolution=32))
    print(f"Fashion-MNIST proxy: {data.num_train} training / {data.num_val} held-out images, 32x32, "
          f"{threads} thread(s), load average {os.getloadavg()[0]:.1f}")
    print(f"{'model':<26} {'epochs':>6} {'held-out acc':>12} {'stale BN acc':>12} {'top-5':>6} {'s/epoch':>8}")
    models = (("B0 (search_spaces)", lambda: project_model()[0]),
              ("B0 (efficientnet_pytorch)", lambda: EfficientNet.from_name("efficientnet-b0", num_classes=10)))
    for epochs in epochs_list:
        for name, make in models:
            torch.manual_seed(0)
            model = make()
            config = TrainConfig(epochs=epochs, threads=threads, bn_recalibrate_batches=0)
            stale = train_proxy(model, data, config)
            cfg = dataclasses.replace(config, bn_recalibrate_batches=TrainConfig.bn_recalibrate_batches)
            top1, top5, _ = evaluate(model, data, cfg, device=torch.device("cpu"), calib_epoch=10**6)
            print(f"{name:<26} {epochs:>6g} {top1:>12.4f} {stale.accuracy:>12.4f} {top5:>6.3f} "
                  f"{stale.train_seconds / stale.epochs:>8.1f}", flush=True)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--resolution", type=int, default=32)
    p.add_argument("--steps", type=int, default=10, help="timed steps per side per repeat")
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--repeats", type=int, default=4)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--amp", default="none", choices=("none", "bf16"), help="project side only")
    p.add_argument("--compile", action="store_true", help="torch.compile the project side (minutes on CPU)")
    p.add_argument("--json", type=Path, default=None)
    p.add_argument("--quality", default=None, metavar="EPOCHS",
                   help="instead: B0 held-out accuracy on the Fashion-MNIST proxy after these epochs, e.g. 1,3")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    threads = torch.get_num_threads()
    if args.quality:
        quality([float(e) for e in args.quality.split(",")], threads)
        return

    fmnist = Path("/usr/share/datasets/fashion-mnist").is_dir()
    data = load_data(DataConfig("fashion-mnist" if fmnist else "synthetic", train_size=10_000, val_size=1000,
                                resolution=args.resolution))
    images, labels = map(torch.cat, zip(*data.batches("train", 1000, channels_last=False)))  # float NCHW
    config = TrainConfig(batch_size=args.batch_size, amp=args.amp, compile=args.compile, threads=threads,
                         bn_recalibrate_batches=10)

    peak = matmul_peak_gflops()
    model, model_name = project_model()
    from efficientnet_pytorch import EfficientNet

    macs = {"project": forward_macs(model, args.resolution),
            "reference": forward_macs(EfficientNet.from_name("efficientnet-b0", num_classes=10), args.resolution)}
    best = {"project": 0.0, "reference": 0.0, "reference_model_in_train_proxy": 0.0, "eval_seconds": float("inf")}
    for _ in range(args.repeats):
        best["reference"] = max(best["reference"], reference_images_per_second(images, labels, args))
        train_ips, eval_seconds = project_images_per_second(data, config, args, project_model()[0])
        best["project"] = max(best["project"], train_ips)
        best["eval_seconds"] = min(best["eval_seconds"], eval_seconds)
        reference_model = EfficientNet.from_name("efficientnet-b0", num_classes=10)
        ips, _ = project_images_per_second(data, dataclasses.replace(config, compile=False, amp="none"), args,
                                           reference_model)
        best["reference_model_in_train_proxy"] = max(best["reference_model_in_train_proxy"], ips)

    macs["reference_model_in_train_proxy"] = macs["reference"]
    sides = ("reference", "reference_model_in_train_proxy", "project")
    peak = max(peak, matmul_peak_gflops())  # measured before and after: a busy moment only lowers it
    gflops = {side: best[side] * 6 * macs[side] / 1e9 for side in sides}
    print(f"EfficientNet-B0 training, {data.name} {args.resolution}x{args.resolution}, batch {args.batch_size}, "
          f"{threads} thread(s), OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY')}, torch {torch.__version__}, "
          f"{platform.processor() or platform.machine()}, load average {os.getloadavg()[0]:.1f}")
    print(f"fp32 matmul peak (2048^3): {peak:.1f} GFLOP/s; training FLOPs/image = 6 x forward MACs "
          f"(project {macs['project'] / 1e6:.2f}M, reference {macs['reference'] / 1e6:.2f}M MACs, fvcore)")
    print(f"{'side':<58} {'images/s':>9} {'GFLOP/s':>8} {'of peak':>8}")
    rows = (("reference: efficientnet_pytorch B0, plain loop, NCHW", "reference"),
            ("(efficientnet_pytorch B0 trained by train_proxy)", "reference_model_in_train_proxy"),
            (f"project: {model_name}, train_proxy{', ' + args.amp if args.amp != 'none' else ''}"
             f"{', compiled' if args.compile else ''}", "project"))
    for label, side in rows:
        print(f"{label:<58} {best[side]:>9.1f} {gflops[side]:>8.1f} {gflops[side] / peak:>8.1%}")
    ratio = best["project"] / best["reference"]
    print(f"project / reference: {ratio:.2f}x (goal >= 2.5x)")
    print(f"project evaluation (BN recalibration on {config.bn_recalibrate_batches} batches + {data.num_val} "
          f"held-out images): {best['eval_seconds']:.1f} s")
    if args.json:
        args.json.write_text(json.dumps({"threads": threads, "peak_gflops": peak, "macs": macs,
                                         "images_per_second": best, "ratio": ratio, "args": vars(args)},
                                        default=str, indent=2))


if __name__ == "__main__":
    main()
