"""Supernet training: the sandwich rule with in-place distillation (BigNAS, AttentiveNAS).

Every step runs one batch through the largest subnet (cross-entropy on the labels, with the
architecture's dropout and drop-path), the smallest subnet and ``random_subnets`` uniform random
ones (cross-entropy on the largest's detached soft predictions, no dropout); their gradients
add up and the optimizer steps once. Which subnets a step trains, its dropout masks and the order
of the data follow from ``(seed, step)`` alone, so a run that resumes from a checkpoint repeats
what the uninterrupted run would have done.

Data-parallel under ``torchrun``: every process trains its shard of each batch through the same
subnets (they depend on the step, not the rank), and the gradients are summed by hand
(``nas.proxy.all_reduce_sum``) before the step. ``DistributedDataParallel``'s bucket hooks assume
the same parameters get gradients every step, which a supernet's changing path breaks.
"""
from __future__ import annotations

import contextlib
import dataclasses
import itertools
import math
import random
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from nas.proxy import (
    DEVICE_FORMS,
    DistInfo,
    ProxyData,
    TrainingDiverged,
    all_reduce_sum,
    decay_groups,
    device_type,
    init_from_env,
    is_device_name,
    resolve_device,
    torch_threads,
    warmup_cosine_lr,
)
from nas.supernet.checkpoint import Recipe, restore_checkpoint, save_checkpoint
from nas.supernet.net import Supernet, SupernetError
from nas.supernet.provenance import check_same_training, trained_on
from nas.supernet.subnets import sandwich_archs

__all__ = ["SupernetTrainConfig", "SupernetTrainResult", "train_supernet", "all_reduce_gradients"]

_RUN_ONLY = ("device", "threads", "flush_denormal", "checkpoint_every")  # may change between a run and its resume


@dataclass(frozen=True)
class SupernetTrainConfig:
    """The supernet's training recipe (SGD-Nesterov, linear warm-up then cosine to zero).

    ``batch_size`` is per process. ``random_subnets``: the random subnets of each step besides the
    largest and the smallest. ``distill``: the smaller subnets learn the largest's predictions
    (in-place distillation); False: the labels. ``checkpoint_every``: steps between checkpoints
    (one is also written at the end of every call).
    """

    epochs: float = 10.0
    batch_size: int = 128
    lr: float = 0.05
    momentum: float = 0.9
    weight_decay: float = 5e-5
    warmup_epochs: float = 0.2
    label_smoothing: float = 0.1
    random_subnets: int = 2
    distill: bool = True
    grad_clip: float | None = 5.0
    seed: int = 0
    device: str = "auto"
    threads: int | None = None
    flush_denormal: bool = True
    checkpoint_every: int = 200

    def __post_init__(self) -> None:
        checks = (
            ("epochs", self.epochs > 0, "> 0"), ("batch_size", self.batch_size >= 1, ">= 1"),
            ("lr", self.lr > 0, "> 0"), ("momentum", 0 <= self.momentum < 1, "in [0, 1)"),
            ("weight_decay", self.weight_decay >= 0, ">= 0"), ("warmup_epochs", self.warmup_epochs >= 0, ">= 0"),
            ("label_smoothing", 0 <= self.label_smoothing < 1, "in [0, 1)"),
            ("random_subnets", self.random_subnets >= 0, ">= 0"),
            ("grad_clip", self.grad_clip is None or self.grad_clip > 0, "> 0 or None"),
            ("seed", self.seed >= 0, ">= 0"), ("device", is_device_name(self.device), DEVICE_FORMS),
            ("threads", self.threads is None or self.threads >= 1, ">= 1 or None"),
            ("checkpoint_every", self.checkpoint_every >= 1, ">= 1"),
        )
        for name, ok, expected in checks:
            if not ok:
                raise SupernetError(f"SupernetTrainConfig.{name} must be {expected}, but got {getattr(self, name)!r}")

    def recipe(self) -> Recipe:
        """The settings that decide the trained weights (a resumed run must share them)."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name not in _RUN_ONLY}


@dataclass(frozen=True)
class SupernetTrainResult:
    """What one ``train_supernet`` call did.

    ``step``: the step counter after the call (``total_steps`` when training is complete);
    ``start_step``: where the call began (0, or the checkpoint's step). ``loss``: the mean
    cross-entropy of the largest subnet over the call's steps; ``student_loss`` the mean loss of
    the other subnets. ``images``: training images of the call over all processes (each went
    through every subnet of its step); ``seconds``: the call's wall time.
    """

    step: int
    total_steps: int
    start_step: int
    loss: float
    student_loss: float
    images: int
    seconds: float

    @property
    def done(self) -> bool:
        return self.step >= self.total_steps


@dataclass(frozen=True)
class _Plan:
    steps_per_epoch: int
    total_steps: int
    warmup_steps: int


def _make_plan(data: ProxyData, config: SupernetTrainConfig, info: DistInfo) -> _Plan:
    per_epoch = data.steps_per_epoch(config.batch_size, info.world_size)
    if per_epoch == 0:
        raise SupernetError(f"SupernetTrainConfig.batch_size={config.batch_size} exceeds the "
                            f"{data.num_train // info.world_size} training images per process")
    total = max(1, math.floor(config.epochs * per_epoch + 1e-9))
    return _Plan(per_epoch, total, min(round(config.warmup_epochs * per_epoch), total - 1))


def _make_optimizer(supernet: nn.Module, config: SupernetTrainConfig) -> torch.optim.Optimizer:
    """SGD-Nesterov; no weight decay on BN and biases. Parameters without a gradient are left alone."""
    params = list(supernet.parameters())
    groups = decay_groups(params, config.weight_decay)
    return torch.optim.SGD(groups, lr=config.lr, momentum=config.momentum, nesterov=config.momentum > 0,
                           foreach=True)


def all_reduce_gradients(module: nn.Module, info: DistInfo) -> None:
    """Average the gradients of ``module`` over all processes (no-op in one process).

    Every process must have gradients for the same parameters (the same subnets in this step).
    """
    if not info.enabled:
        return
    grads = [p.grad for p in module.parameters() if p.grad is not None]
    if not grads:
        return
    flat = torch.cat([g.reshape(-1) for g in grads])
    all_reduce_sum(flat, info).div_(info.world_size)
    offset = 0
    for g in grads:
        g.copy_(flat[offset:offset + g.numel()].view_as(g))
        offset += g.numel()


def _soft_cross_entropy(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return -(target * F.log_softmax(logits.float(), dim=1)).sum(dim=1).mean()


def _sandwich_step(supernet: Supernet, optimizer: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor,
                   step: int, config: SupernetTrainConfig, info: DistInfo, lr: float) -> tuple[float, float]:
    """One step of the sandwich rule; returns (largest subnet's loss, mean loss of the others)."""
    step_seed = config.seed * 1_000_003 + step
    archs = sandwich_archs(supernet.space, random.Random(step_seed), config.random_subnets)
    torch.manual_seed(step_seed)  # this step's dropout and drop-path masks
    optimizer.zero_grad(set_to_none=True)
    supernet.set_active(archs[0])
    logits = supernet(x).float()
    loss = F.cross_entropy(logits, y, label_smoothing=config.label_smoothing)
    if not torch.isfinite(loss):
        raise TrainingDiverged(f"supernet training diverged at step {step + 1}: loss {loss.item()}")
    loss.backward()
    target = logits.detach().softmax(dim=1)
    students = []
    for arch in archs[1:]:
        supernet.set_active(arch.replace(dropout=0.0, drop_connect=0.0))
        out = supernet(x)
        student = _soft_cross_entropy(out, target) if config.distill else \
            F.cross_entropy(out.float(), y, label_smoothing=config.label_smoothing)
        student.backward()
        students.append(student.detach())
    all_reduce_gradients(supernet, info)
    if config.grad_clip is not None:
        nn.utils.clip_grad_norm_(supernet.parameters(), config.grad_clip)
    for group in optimizer.param_groups:
        group["lr"] = lr
    optimizer.step()
    student_loss = torch.stack(students).mean().item() if students else math.nan
    return loss.item(), student_loss


def _batches(data: ProxyData, config: SupernetTrainConfig, info: DistInfo, device: torch.device, step: int,
             plan: _Plan) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Training batches from ``step`` on (epoch ``step // steps_per_epoch``, from its ``step % steps_per_epoch``-th)."""
    first = step // plan.steps_per_epoch
    for epoch in itertools.count(first):
        batches = data.batches("train", config.batch_size, epoch=epoch, seed=config.seed, rank=info.rank,
                               world_size=info.world_size, device=device, channels_last=True)
        skip = step % plan.steps_per_epoch if epoch == first else 0
        yield from itertools.islice(batches, skip, None)


@contextlib.contextmanager
def _flush_denormals(enabled: bool) -> Iterator[None]:
    before = float(torch.tensor([1e-39]) * 1.0) == 0.0  # torch has no getter
    if enabled:
        torch.set_flush_denormal(True)
    try:
        yield
    finally:
        torch.set_flush_denormal(before)


def train_supernet(supernet: Supernet, data: ProxyData, config: SupernetTrainConfig, *,
                   checkpoint: str | Path | None = None, until_step: int | None = None) -> SupernetTrainResult:
    """Train ``supernet`` in place with the sandwich rule; resume from ``checkpoint`` when it exists.

    Args:
        supernet: the supernet (moved to the config's device).
        data: the proxy data (``nas.proxy.load_data``); only its training split is read.
        config: the recipe and budget.
        checkpoint: where to write checkpoints (rank 0), every ``config.checkpoint_every`` steps and
            at the end; an existing one is resumed from (its recipe must be this config's).
        until_step: stop after this step of the schedule (None: the end); a later call resumes.

    Raises:
        SupernetError: a batch larger than the data, or a checkpoint that does not fit.
        TrainingDiverged: a NaN/inf loss.
    """
    start = time.perf_counter()
    info = init_from_env(device_type(config.device))
    device = resolve_device(config.device, info.local_rank if info.enabled else None)
    plan = _make_plan(data, config, info)
    supernet.to(device).to(memory_format=torch.channels_last)  # type: ignore[call-overload]
    optimizer = _make_optimizer(supernet, config)
    first = 0
    if checkpoint is not None and Path(checkpoint).exists():
        first = restore_checkpoint(checkpoint, supernet, optimizer, config.recipe())
    where = f"supernet checkpoint {str(checkpoint)!r}" if first else "the supernet"
    check_same_training(supernet.trained_on, data, where)
    supernet.trained_on = trained_on(data)
    end = plan.total_steps if until_step is None else max(first, min(plan.total_steps, until_step))
    losses: list[tuple[float, float]] = []
    rng_devices = [device.index] if device.type == "cuda" else []
    supernet.train()
    with torch_threads(config.threads), _flush_denormals(config.flush_denormal and device.type == "cpu"), \
            torch.random.fork_rng(devices=rng_devices, device_type=device.type):
        step = first
        for x, y in itertools.islice(_batches(data, config, info, device, first, plan), end - first):
            losses.append(_sandwich_step(supernet, optimizer, x, y, step, config, info,
                                         warmup_cosine_lr(step, plan.warmup_steps, plan.total_steps, config.lr)))
            step += 1
            if checkpoint is not None and info.rank == 0 and (step % config.checkpoint_every == 0 or step == end):
                save_checkpoint(checkpoint, supernet, optimizer, step, config.recipe())
    teacher = sum(t for t, _ in losses) / len(losses) if losses else math.nan
    student = sum(s for _, s in losses) / len(losses) if losses else math.nan
    return SupernetTrainResult(step, plan.total_steps, first, teacher, student,
                               len(losses) * config.batch_size * info.world_size, time.perf_counter() - start)
