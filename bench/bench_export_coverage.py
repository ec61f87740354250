"""Which fraction of each bundled search space exports to each format (docs/export.md).

    python bench/bench_export_coverage.py [--samples 2000] [--exports 10] [--seed 0]

For every space under ``search_spaces/spaces/``, ``--samples`` architectures drawn uniformly (each
choice independently, as Optuna's RandomSampler draws them) are checked against the refusals of
each format: ``--format timm`` (``timm_check``: a layer timm's EfficientNetBuilder would build
differently) and the checkpoint layouts of ``--weights`` (``layout_problem``: efficientnet_pytorch,
torchvision, timm; ``--format timm --weights`` needs the timm layout too). ONNX, TorchScript and the
standalone Python file refuse no architecture; the first ``--exports`` samples of each space are
exported to each of them for real (at 32 px), and counted only if the check of the export passes
(for Python: the file's network, loaded with the model's weights, gives the model's outputs).
"""
from __future__ import annotations

import argparse
import importlib.util
import random
import sys
import tempfile
import time
from pathlib import Path

import torch

from search_spaces import build_model
from search_spaces.interop import export_onnx, export_torchscript, layout_problem, python_source, timm_check
from search_spaces.space import SPACE_DIR, SearchSpace
from search_spaces.spec import ArchSpec

LAYOUTS = ("efficientnet_pytorch", "torchvision", "timm")


def draw(space: SearchSpace, n: int, seed: int) -> list[ArchSpec]:
    rng = random.Random(seed)
    return [space.from_params({k: rng.choice(c) for k, c in space.choices().items()}) for _ in range(n)]




def python_ok(model: torch.nn.Module, directory: Path) -> bool:
    path = directory / "net.py"
    path.write_text(python_source(model, "net"))
    spec = importlib.util.spec_from_file_location("net", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    standalone = module.build_model(10, 3)
    standalone.load_state_dict(model.state_dict())
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        return bool(torch.allclose(standalone.eval()(x), model.eval()(x), rtol=0, atol=1e-5))


def exported(archs: list[ArchSpec]) -> dict[str, int]:
    counts = {"onnx": 0, "torchscript": 0, "python": 0}
    with tempfile.TemporaryDirectory() as tmp:
        for arch in archs:
            model = build_model(arch, num_classes=10).eval()
            for fmt, run in (("onnx", lambda m: export_onnx(m, Path(tmp) / "m.onnx", 32)),
                             ("torchscript", lambda m: export_torchscript(m, Path(tmp) / "m.pt", 32)),
                             ("python", lambda m: python_ok(m, Path(tmp)))):
                try:
                    ok = run(model) is not False
                except Exception as exc:  # noqa: BLE001 -- a refusal or a failed check, reported below
                    print(f"  {fmt} failed for {arch.to_str()}: {type(exc).__name__}: {exc}", file=sys.stderr)
                    ok = False
                counts[fmt] += ok
    return counts


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--samples", type=int, default=2000)
    p.add_argument("--exports", type=int, default=10)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    torch.set_num_threads(1)
    print(f"{args.samples} random architectures per space (seed {args.seed}); ONNX/TorchScript/Python: the first "
          f"{args.exports} exported for real")
    print(f"{'space':14} {'size':>9} {'timm':>7} " + " ".join(f"{'w:' + f:>22}" for f in LAYOUTS)
          + f" {'onnx':>6} {'ts':>6} {'py':>6}  seconds")
    for path in sorted(SPACE_DIR.glob("*.yaml")):
        t0 = time.perf_counter()
        space = SearchSpace.load(path)
        archs = draw(space, args.samples, args.seed)
        timm = sum(timm_check(a) is None for a in archs) / len(archs)
        layouts = [sum(layout_problem(a, f) is None for a in archs) / len(archs) for f in LAYOUTS]
        real = exported(archs[:args.exports]) if args.exports else {}
        real_text = " ".join(f"{real[f]:>3}/{args.exports:<2}" if real else f"{'-':>6}"
                             for f in ("onnx", "torchscript", "python"))
        print(f"{space.name:14} {space.size():9.2e} {timm:7.1%} " + " ".join(f"{v:>24.1%}" for v in layouts)
              + f" {real_text}  {time.perf_counter() - t0:.0f}")


if __name__ == "__main__":
    main()
