"""What a finished ``nas-train`` run writes in its folder; each file is replaced whole (``atomic_write``).

``model.safetensors`` (the averaged weights, BatchNorm statistics recomputed for them, loadable with
``search_spaces.build_model(arch, num_classes) + load_state_dict``), ``arch.yaml``, ``metrics.json``,
``curves.png`` (when matplotlib is installed), ``model-card.md`` and ``manifest.json``.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import cast

import torch
import torch.nn as nn

from nas.config.figures import new_figure
from nas.config.provenance import provenance
from nas.final.config import FinalError
from search_spaces import ArchSpec
from search_spaces.files import atomic_write

__all__ = ["OUTPUTS", "require_safetensors", "write_weights", "read_weights", "write_outputs", "result_line"]

OUTPUTS = ("model.safetensors", "arch.yaml", "metrics.json", "curves.png", "model-card.md", "manifest.json",
           "checkpoint.pt")
_INSTALL = "pip install 'effnas[export]' (or: pip install safetensors)"


def require_safetensors() -> None:
    """Raises FinalError (one line: how to install it) when the safetensors package is missing."""
    try:
        import safetensors.torch  # noqa: F401
    except ImportError:
        raise FinalError(f"nas-train writes model.safetensors and needs the safetensors package: {_INSTALL}") from None


def write_weights(path: Path, model: nn.Module, metadata: dict[str, str]) -> None:
    """``model.state_dict()`` as a safetensors file (CPU, contiguous), with string ``metadata``."""
    from safetensors.torch import save_file

    tensors = {k: v.detach().to("cpu").contiguous().clone() for k, v in model.state_dict().items()}
    with atomic_write(path) as tmp:
        save_file(tensors, str(tmp), metadata=metadata)


def read_weights(path: Path) -> dict[str, torch.Tensor]:
    """The tensors of a safetensors file, for ``model.load_state_dict``."""
    from safetensors.torch import load_file

    return load_file(str(path))


def _write_text(path: Path, text: str) -> None:
    with atomic_write(path) as tmp:
        tmp.write_text(text)


def _plot_curves(history: list[dict[str, object]], path: Path) -> None:
    """Loss and accuracy per epoch (training batches; held-out when there is a held-out part)."""
    fig = new_figure(9, 3.4)
    if fig is None:
        return
    epochs = [float(r["epoch"]) for r in history]  # type: ignore[arg-type]
    loss_ax, acc_ax = fig.subplots(1, 2)
    for key, label, ax in (("train_loss", "training loss", loss_ax), ("heldout_loss", "held-out loss", loss_ax),
                           ("train_top1", "training top-1", acc_ax), ("heldout_top1", "held-out top-1", acc_ax)):
        values = [r.get(key) for r in history]
        if any(v is not None for v in values):
            ax.plot(epochs, [float("nan") if v is None else v for v in values], marker="o", ms=3, label=label)
    for ax, what in ((loss_ax, "loss"), (acc_ax, "accuracy")):
        ax.set_xlabel("epoch")
        ax.set_ylabel(what)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    with atomic_write(path) as tmp:
        fig.savefig(tmp, dpi=110)


def _card(arch: ArchSpec, metrics: dict[str, object]) -> str:
    recipe = metrics["recipe"]
    assert isinstance(recipe, dict)
    top5 = metrics["test_top5"]
    held = metrics["heldout_top1"]
    lines = [
        f"# {metrics['arch']}", "",
        f"Trained by `nas-train` on **{metrics['dataset']}** at {metrics['resolution']} px for {metrics['epochs']:g} "
        f"epochs ({metrics['images']:,} images, {metrics['seconds']:.0f} s), recipe `{recipe['name']}`.", "",
        "| metric | value |", "|---|---|",
        f"| test top-1 | {metrics['test_top1']:.4f} |",
        f"| test top-5 | {'n/a' if top5 is None else format(top5, '.4f')} |",
        f"| held-out top-1 | {'none kept' if held is None else format(held, '.4f')} |",
        f"| MACs at {metrics['resolution']} px | {metrics['macs']:,} |",
        f"| MACs at {arch.resolution} px | {metrics['macs_224']:,} |",
        f"| parameters | {metrics['params']:,} |", "",
        f"Recipe: {recipe['optimizer']}, lr {recipe['lr']:.4g}, {recipe['schedule']}, weight decay "
        f"{recipe['weight_decay']:g}, label smoothing {recipe['label_smoothing']}, weight EMA {recipe['ema_decay']} "
        f"({recipe['ema_warmup']}), dropout {recipe['dropout']}, stochastic depth {recipe['drop_connect']}; "
        f"augmentation: {recipe['augmentation']}.", "",
        "Load it:", "", "```python",
        "from safetensors.torch import load_file",
        "from search_spaces import build_model, load_arch",
        f"model = build_model(load_arch('arch.yaml'), num_classes={metrics['num_classes']})",
        "model.load_state_dict(load_file('model.safetensors'))",
        "model.eval()", "```", "",
        "Inputs are 3-channel images normalized with the mean and std (0..255 units) in the file's metadata.", "",
    ]
    return "\n".join(lines)


def write_outputs(out: Path, arch: ArchSpec, model: nn.Module, metrics: dict[str, object],
                  settings: dict[str, object], normalization: dict[str, str]) -> None:
    """Every output but the checkpoint; ``metrics.json`` last, so ``finished: true`` means all are there."""
    write_weights(out / "model.safetensors", model, {"arch": arch.to_yaml(), "num_classes": str(metrics["num_classes"]),
                                                     "resolution": str(metrics["resolution"]), **normalization})
    _write_text(out / "arch.yaml", f"# trained by nas-train: test top-1 {metrics['test_top1']:.4f} on "
                                   f"{metrics['dataset']}\n" + arch.to_yaml())
    history = metrics.get("history")
    if isinstance(history, list) and history:
        _plot_curves(history, out / "curves.png")
    _write_text(out / "model-card.md", _card(arch, metrics))
    manifest = {**provenance("torch"), "settings": settings}
    _write_text(out / "manifest.json", json.dumps(manifest, indent=2, default=str) + "\n")
    _write_text(out / "metrics.json", json.dumps(metrics, indent=2) + "\n")


def result_line(metrics: dict[str, object]) -> str:
    """One line: the test score, the cost and the budget of a finished run."""
    top5 = metrics.get("test_top5")
    held = metrics.get("heldout_top1")
    return (f"{metrics['arch']} on {metrics['dataset']}: test top-1 {metrics['test_top1']:.4f}"
            + ("" if top5 is None else f", top-5 {top5:.4f}")
            + ("" if held is None else f", held-out top-1 {held:.4f}")
            + f"; {cast(float, metrics['macs']) / 1e6:.1f}M MACs at {metrics['resolution']} px"
            + f", {cast(float, metrics['params']) / 1e6:.2f}M params"
            + f"; {metrics['epochs']:g} epochs, {metrics['images']:,} images, {metrics['seconds']:.0f} s")
