"""The GPU check: the CUDA paths of the toolkit, run for real in about 5 minutes on one GPU.

    python bench/gpu_check.py [--out DIR] [--quick]

1. the proxy trainer (``nas.proxy.train_proxy``) on EfficientNet-B0 at 32 px with AMP bf16 and fp16,
   channels_last, and ``torch.compile``: images/s and held-out accuracy of each;
2. ``nas-train`` of EfficientNet-B0 on digits on CUDA (its default AMP there);
3. a short ``nas-search`` on CUDA (3 trials on digits);
4. B0 training throughput at 224 px, batch 64, bf16 + channels_last: ours (``search_spaces.build_model``)
   against timm's ``efficientnet_b0`` in the same run (images/s and the ratio).

Each line printed is ``check: figure``; the exit code is the number of checks that failed. Without a
GPU it says so and exits 0 (nothing to check). Never part of the test suite.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Callable

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def _proxy_trainer(quick: bool) -> list[str]:
    from nas.proxy import DataConfig, TrainConfig, load_data, train_proxy
    from search_spaces import build_model, get_preset

    data = load_data(DataConfig(name="synthetic" if quick else "digits", resolution=32, seed=0))
    lines = []
    for amp, compile_ in (("bf16", False), ("fp16", False), ("bf16", True)):
        torch.manual_seed(0)
        model = build_model(get_preset("efficientnet-b0"), num_classes=data.num_classes)
        cfg = TrainConfig(epochs=2, batch_size=128, device="cuda", amp=amp, channels_last=True, compile=compile_)
        start = time.perf_counter()
        result = train_proxy(model, data, cfg)
        seconds = time.perf_counter() - start
        lines.append(f"proxy trainer amp={amp} compile={compile_}: accuracy {result.accuracy:.3f}, "
                     f"{result.images / seconds:,.0f} images/s over {seconds:.1f} s (compile time included)")
    return lines


def _command(args: list[str], out: Path, what: str) -> list[str]:
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", *args], cwd=ROOT, capture_output=True, text=True, timeout=240)
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        raise RuntimeError(f"{what} exited {proc.returncode}: {proc.stderr.strip().splitlines()[-1:]}")
    tail = proc.stdout.strip().splitlines()[-1:] or [""]
    return [f"{what}: exit 0 in {seconds:.1f} s; {tail[0][:160]}"]


def _nas_train(out: Path) -> list[str]:
    return _command(["nas.cli.train", "efficientnet-b0", "--dataset", "digits", "--epochs", "2", "--device", "cuda",
                     "--out", str(out / "train"), "--quiet"], out, "nas-train on CUDA")


def _nas_search(out: Path) -> list[str]:
    return _command(["nas.cli.search", "--dataset", "digits", "--trials", "3", "--device", "cuda",
                     "--out", str(out / "search"), "--quiet"], out, "nas-search on CUDA")


def _images_per_second(model: torch.nn.Module, batch: int, steps: int) -> float:
    model = model.cuda().to(memory_format=torch.channels_last).train()
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    x = torch.randn(batch, 3, 224, 224, device="cuda").to(memory_format=torch.channels_last)
    y = torch.randint(0, 1000, (batch,), device="cuda")

    def step() -> None:
        with torch.autocast("cuda", dtype=torch.bfloat16):
            loss = torch.nn.functional.cross_entropy(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    for _ in range(5):
        step()
    torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    torch.cuda.synchronize()
    return batch * steps / (time.perf_counter() - start)


def _b0_against_timm(quick: bool) -> list[str]:
    import timm

    from search_spaces import build_model, get_preset

    steps = 10 if quick else 50
    ours = _images_per_second(build_model(get_preset("efficientnet-b0"), num_classes=1000), 64, steps)
    theirs = _images_per_second(timm.create_model("efficientnet_b0", num_classes=1000), 64, steps)
    return [f"B0 224 px batch 64 bf16 channels_last: ours {ours:,.0f} images/s, timm {theirs:,.0f} images/s, "
            f"ratio {ours / theirs:.2f}x"]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", help="scratch directory [a temporary one]")
    p.add_argument("--quick", action="store_true", help="fewer steps (a smoke run)")
    args = p.parse_args()
    if not torch.cuda.is_available():
        print("gpu check: no CUDA device here; nothing to check")
        return 0
    print(f"device: {torch.cuda.get_device_name(0)}, torch {torch.__version__}, CUDA {torch.version.cuda}")
    out = Path(args.out or tempfile.mkdtemp(prefix="gpu-check-"))
    checks: list[tuple[str, Callable[[], list[str]]]] = [
        ("proxy trainer", lambda: _proxy_trainer(args.quick)), ("nas-train", lambda: _nas_train(out)),
        ("nas-search", lambda: _nas_search(out)), ("B0 vs timm", lambda: _b0_against_timm(args.quick))]
    failed = 0
    for name, check in checks:
        try:
            for line in check():
                print(line, flush=True)
        except Exception:  # report and go on: one failing path must not hide the others
            failed += 1
            print(f"{name}: FAILED\n{traceback.format_exc(limit=3)}", flush=True)
    return failed


if __name__ == "__main__":
    sys.exit(main())
