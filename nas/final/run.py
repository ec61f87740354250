"""``train_final``: one architecture trained by the final recipe, checkpointed every epoch, scored once on test.

It runs the proxy trainer (``nas.proxy.train_proxy``) with ``nas.proxy.hooks.TrainHooks``: the
recipe's optimizer and schedule, the augmentation, the weight average after every step, a held-out
score and an atomic ``checkpoint.pt`` after every epoch, the averaged weights scored at the end. So
final training has every fast path of the proxy (in-memory uint8 batches, channels_last, the
small-map convolutions, AMP, DDP under ``torchrun``: rank 0 writes, every rank trains).
"""
from __future__ import annotations

import math
import os
import time
from pathlib import Path
from typing import Callable

import torch

from nas.final.augment import augmentation_name, make_augment
from nas.final.checkpoint import CHECKPOINT, load_checkpoint, read_json, run_settings, run_state, save_checkpoint
from nas.final.config import FinalConfig, FinalError, Recipe, default_resolution, make_recipe
from nas.final.data import FinalData, load_final_data
from nas.final.ema import WeightEMA
from nas.final.optim import make_optimizer, make_schedule
from nas.final.outputs import require_safetensors, write_outputs
from nas.proxy.distributed import DistInfo
from nas.proxy.evaluation import evaluate
from nas.proxy.hooks import EpochEnd, ResumeState, TrainHooks
from nas.proxy.runtime import check_device, default_amp, resolve_device
from nas.proxy.train import TrainConfig, TrainResult, train_proxy
from search_spaces import ArchSpec, build_model, count_cost

__all__ = ["train_final", "Progress"]

Emit = Callable[[str], None]


def _env_info() -> DistInfo:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo()
    return DistInfo(int(os.environ.get("RANK", "0")), world, int(os.environ.get("LOCAL_RANK", "0")))


def _clock(seconds: float) -> str:
    seconds = max(0, int(seconds))
    return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


class Progress:
    """Progress lines with an ETA: a bar (a line starting with ``\\r``: it replaces the previous bar) at
    most every ``every`` seconds, and one whole line per epoch."""

    def __init__(self, emit: Emit | None, images_per_step: int, every: float = 1.0) -> None:
        self.emit, self.images_per_step, self.every = emit, images_per_step, every
        self.total, self.per_epoch, self.first = 1, 1, 0
        self.start = self.last = time.perf_counter()

    def begin(self, steps_per_epoch: int, total_steps: int, first_step: int) -> None:
        self.per_epoch, self.total, self.first = steps_per_epoch, total_steps, first_step
        self.start = self.last = time.perf_counter()

    def _eta(self, step: int) -> tuple[float, str]:
        elapsed = time.perf_counter() - self.start
        rate = (step - self.first) / elapsed if elapsed > 0 and step > self.first else 0.0
        eta = _clock((self.total - step) / rate) if rate else "?"
        return rate * self.images_per_step, eta

    def step(self, step: int) -> None:
        now = time.perf_counter()
        if self.emit is None or now - self.last < self.every or step == self.total:
            return
        self.last = now
        images, eta = self._eta(step)
        done = int(20 * step / self.total)
        epochs = math.ceil(self.total / self.per_epoch)
        self.emit(f"\repoch {step // self.per_epoch + 1}/{epochs} [{'#' * done}{'-' * (20 - done)}] "
                  f"{100 * step / self.total:.0f}% {images:.0f} img/s ETA {eta}")

    def epoch(self, row: dict[str, object]) -> None:
        if self.emit is None:
            return
        images, eta = self._eta(int(row["step"]))  # type: ignore[call-overload]
        held = row.get("heldout_top1")
        self.emit(f"epoch {row['epoch']:g}/{self.total / self.per_epoch:g}: loss {row['train_loss']:.4f}, "
                  f"train top-1 {row['train_top1']:.4f}" + ("" if held is None else f", held-out top-1 {held:.4f}")
                  + f", lr {row['lr']:.3g}, {images:.0f} img/s, ETA {eta if row['step'] != self.total else '0:00:00'}")


class _Session:
    """The state of one ``train_final`` call around the trainer: the average, the history, the checkpoints."""

    def __init__(self, out: Path, data: FinalData, recipe: Recipe, train_config: TrainConfig,
                 settings: dict[str, object], model: torch.nn.Module, device: torch.device, progress: Progress,
                 checkpoint: dict[str, object] | None):
        self.out, self.data, self.recipe, self.config, self.settings = out, data, recipe, train_config, settings
        self.device, self.progress, self.info = device, progress, _env_info()
        self.started = time.perf_counter()
        self.ema = WeightEMA(model, recipe.ema_decay)
        self.history: list[dict[str, object]] = []
        self.previous_seconds, self.resumes, self.start = 0.0, [], None
        if checkpoint is not None:
            model.load_state_dict(checkpoint["model"])  # type: ignore[arg-type]
            self.ema.load_state_dict(checkpoint["ema"])  # type: ignore[arg-type]
            self.history = list(checkpoint["history"])  # type: ignore[call-overload]
            self.previous_seconds = float(checkpoint["seconds"])  # type: ignore[arg-type]
            self.resumes = [*checkpoint["resumes"], checkpoint["epoch"]]  # type: ignore[misc]
            self.start = ResumeState(int(checkpoint["step"]), checkpoint["optimizer"],  # type: ignore[arg-type, call-overload]
                                     checkpoint.get("scaler"), checkpoint.get("rng"), checkpoint.get("cuda_rng"))  # type: ignore[arg-type]

    def hooks(self) -> TrainHooks:
        schedule = make_schedule(self.recipe)
        first = self.start.step if self.start else 0

        def make(steps_per_epoch: int, total_steps: int) -> Callable[[int], float]:
            self.progress.begin(steps_per_epoch, total_steps, first)
            return schedule(steps_per_epoch, total_steps)

        return TrainHooks(make_optimizer=lambda m: make_optimizer(m, self.recipe), make_schedule=make,
                          augment=make_augment(self.data.task.name, self.data.kind, self.data.task.resolution,
                                               self.config.seed),
                          after_step=self._after_step, on_epoch=self._on_epoch, eval_model=lambda: self.ema.model,
                          start=self.start)

    def _after_step(self, model: torch.nn.Module, step: int) -> None:
        self.ema.update(model)
        self.progress.step(step)

    def seconds(self) -> float:
        return self.previous_seconds + time.perf_counter() - self.started

    def _on_epoch(self, end: EpochEnd) -> None:
        rng = torch.get_rng_state()
        cuda_rng = torch.cuda.get_rng_state(self.device) if self.device.type == "cuda" else None
        held: tuple[float, float | None, float] | None = None
        if self.data.heldout is not None:
            held = evaluate(self.ema.model, self.data.heldout, self.config, device=self.device, info=self.info,
                            calib_epoch=end.epoch)
        row: dict[str, object] = {
            "epoch": round(end.step / end.steps_per_epoch, 6), "step": end.step, "train_loss": end.train_loss,
            "train_top1": end.train_top1, "heldout_top1": held[0] if held else None,
            "heldout_loss": held[2] if held else None, "lr": end.lr, "seconds": round(self.seconds(), 3)}
        self.history.append(row)
        if self.info.rank == 0:
            save_checkpoint(self.out / CHECKPOINT, {
                "settings": self.settings, "epoch": end.epoch, "step": end.step,
                "images": end.step * self.config.batch_size * self.info.world_size, "seconds": self.seconds(),
                "model": end.model.state_dict(), "ema": self.ema.state_dict(), "optimizer": end.optimizer.state_dict(),
                "scaler": end.scaler.state_dict() if end.scaler is not None else None, "rng": rng, "cuda_rng": cuda_rng,
                "history": self.history, "resumes": self.resumes})
        self.progress.epoch(row)


def _train_config(cfg: FinalConfig, recipe: Recipe) -> TrainConfig:
    return TrainConfig(epochs=cfg.epochs, batch_size=cfg.batch_size, optimizer=cfg.recipe, lr=recipe.lr,
                       momentum=recipe.momentum, weight_decay=recipe.weight_decay, warmup_epochs=recipe.warmup_epochs,
                       label_smoothing=recipe.label_smoothing, device=cfg.device, amp=default_amp(cfg.device),
                       threads=cfg.threads, seed=cfg.seed)


def _metrics(arch: ArchSpec, cfg: FinalConfig, data: FinalData, recipe: Recipe, result: TrainResult,
             session: _Session) -> dict[str, object]:
    classes = data.task.num_classes
    at_train = count_cost(arch, recipe.resolution, num_classes=classes)
    held = session.history[-1]["heldout_top1"] if session.history else None
    return {
        "test_top1": result.accuracy, "test_top5": result.top5, "test_loss": result.loss, "heldout_top1": held,
        "macs": at_train.macs, "macs_224": count_cost(arch, num_classes=classes).macs, "params": at_train.params,
        "epochs": round(result.epochs, 6), "images": result.images, "seconds": round(session.seconds(), 3),
        "resolution": recipe.resolution, "recipe": recipe.to_dict(), "arch": arch.name, "dataset": cfg.dataset,
        "num_classes": classes, "num_train": data.num_train, "num_test": data.num_test,
        "num_heldout": data.heldout.num_val if data.heldout else 0, "resumed_from_epochs": session.resumes,
        "history": session.history, "finished": True,
    }


def train_final(arch: ArchSpec, cfg: FinalConfig, out_dir: Path, *, progress: Emit | None = None) -> dict[str, object]:
    """Train ``arch`` by ``cfg`` into ``out_dir`` (resuming a partial run there) and score it once on test.

    Every check that needs no training runs before ``out_dir`` is created or written: a bad value,
    a missing dataset file, a folder that holds another run.

    Args:
        progress: receives progress lines (a line starting with ``\\r`` replaces the previous bar line).

    Returns:
        The metrics (as written to ``metrics.json``); a finished run's, read back, without training.

    Raises:
        FinalError (a ``ConfigError``), SpecError, DataError: bad input, one line.
        nas.proxy.TrainingDiverged: the loss became NaN/inf or blew up (the last checkpoint is kept).
        OSError: the output folder cannot be written.
    """
    out = Path(out_dir)
    resolution = cfg.resolution or default_resolution(arch, cfg.dataset)
    settings = run_settings(arch, cfg, resolution)
    state = run_state(out, settings)
    emit = progress or (lambda line: None)
    if state == "finished":
        emit(f"{out} holds this run, finished: nothing to train")
        return read_json(out / "metrics.json") or {}
    require_safetensors()
    check_device(cfg.device)
    data = load_final_data(cfg, resolution)
    info = _env_info()
    if cfg.batch_size > data.num_train // info.world_size:
        raise FinalError(f"--batch-size {cfg.batch_size} exceeds the {data.num_train // info.world_size} training "
                         f"images per process")
    recipe = make_recipe(cfg, arch, resolution, augmentation_name(cfg.dataset, data.kind, resolution))
    checkpoint = load_checkpoint(out / CHECKPOINT) if state == "partial" else None
    device = resolve_device(cfg.device, info.local_rank if info.enabled else None)
    with torch.random.fork_rng(devices=[]):  # the initial weights follow --seed, and the caller's RNG is left alone
        torch.manual_seed(cfg.seed)
        model = build_model(arch, data.task.num_classes, in_chans=3)
    model = model.to(device=device, memory_format=torch.channels_last)  # type: ignore[call-overload]  # stub lacks it
    train_config = _train_config(cfg, recipe)
    session = _Session(out, data, recipe, train_config, settings, model, device,
                       Progress(progress if info.rank == 0 else None, cfg.batch_size * info.world_size), checkpoint)
    what = (f"resuming after epoch {checkpoint['epoch']} of {cfg.epochs:g}" if checkpoint
            else f"{cfg.epochs:g} epochs")
    emit(f"{arch.name} on {cfg.dataset} ({data.num_train} training, {data.num_test} test images) at {resolution} px, "
         f"recipe {cfg.recipe}, {what} -> {out}")
    out.mkdir(parents=True, exist_ok=True)
    result = train_proxy(model, data.task, train_config, hooks=session.hooks())
    metrics = _metrics(arch, cfg, data, recipe, result, session)
    if info.rank == 0:
        mean, std = data.task.mean, data.task.std
        write_outputs(out, arch, session.ema.model, metrics, settings,
                      {"mean": ",".join(f"{m:.4f}" for m in mean), "std": ",".join(f"{s:.4f}" for s in std)})
    return metrics
