"""The proxy trainer: a few epochs of a candidate network, scored on the held-out split.

``train_proxy`` trains in place and returns held-out accuracy. Before every evaluation it
recalibrates the BatchNorm running statistics on training batches: with TF-style momentum
(0.01 in PyTorch terms) the running averages of a network trained for an epoch are still
close to their initial values and the evaluated accuracy is chance, whatever the network
learned. With an Optuna trial it reports held-out accuracy during training and stops when
the pruner says so. Under ``torchrun`` it trains data-parallel (see ``nas.proxy.distributed``).
``nas-train`` runs final training through this trainer with ``nas.proxy.hooks.TrainHooks`` (optimizer,
schedule, augmentation, weight average, checkpoints, resume).
"""
from __future__ import annotations

import functools
import itertools
import logging
import math
import time
from dataclasses import dataclass
from typing import Any, Iterator

import torch
import torch.nn as nn
import torch.nn.functional as F

from nas.proxy.data import ProxyData
from nas.proxy.distributed import DistInfo, all_reduce_sum, any_flag, broadcast_flag, init_from_env
from nas.proxy.evaluation import autocast, evaluate, recalibrate_bn
from nas.proxy.hooks import EpochEnd, ResumeState, TrainHooks
from nas.proxy.runtime import DEVICE_FORMS, device_type, is_device_name, resolve_device, torch_threads

__all__ = ["OPTIMIZERS", "AMP_MODES", "TrainConfig", "TrainResult", "TrainingDiverged", "train_proxy",
           "warmup_cosine_lr", "decay_groups", "evaluate", "recalibrate_bn", "torch_threads"]

logger = logging.getLogger(__name__)

OPTIMIZERS = ("sgd", "rmsprop")
AMP_MODES = ("none", "bf16", "fp16")


@dataclass(frozen=True)
class TrainConfig:
    """How a candidate is trained on the proxy task.

    ``batch_size`` is per process. The budget is the first reached of ``epochs``,
    ``max_images`` (over all processes) and ``max_seconds`` (wall time of the call so far;
    the final evaluation follows). The learning rate warms up linearly for ``warmup_epochs`` then
    follows a cosine to zero at the ``epochs``/``max_images`` budget. ``reports_per_epoch``
    None reports 4 times in a proxy of one epoch or less, twice an epoch up to 4 epochs,
    then once an epoch. A mean training loss over a check window above ``divergence_ratio``
    x max(ln(classes), first loss) counts as divergence, like a NaN/inf loss.
    """

    epochs: float = 1.0
    batch_size: int = 128
    optimizer: str = "sgd"
    lr: float = 0.05
    momentum: float = 0.9
    weight_decay: float = 5e-5
    warmup_epochs: float = 0.1
    label_smoothing: float = 0.1
    grad_clip: float | None = None
    max_images: int | None = None
    max_seconds: float | None = None
    device: str = "auto"
    amp: str = "none"
    channels_last: bool = True
    compile: bool = False
    threads: int | None = None
    flush_denormal: bool = True  # CPU: denormal floats -> 0 while training (~12 % faster B0 steps here)
    seed: int = 0
    bn_recalibrate_batches: int = 20
    reports_per_epoch: int | None = None
    divergence_ratio: float = 5.0

    def __post_init__(self) -> None:
        checks = (
            ("epochs", self.epochs > 0, "> 0"),
            ("batch_size", self.batch_size >= 1, ">= 1"),
            ("optimizer", self.optimizer in OPTIMIZERS, f"one of {OPTIMIZERS}"),
            ("lr", self.lr > 0, "> 0"),
            ("momentum", 0 <= self.momentum < 1, "in [0, 1)"),
            ("weight_decay", self.weight_decay >= 0, ">= 0"),
            ("warmup_epochs", self.warmup_epochs >= 0, ">= 0"),
            ("label_smoothing", 0 <= self.label_smoothing < 1, "in [0, 1)"),
            ("grad_clip", self.grad_clip is None or self.grad_clip > 0, "> 0 or None"),
            ("max_images", self.max_images is None or self.max_images >= 1, ">= 1 or None"),
            ("max_seconds", self.max_seconds is None or self.max_seconds > 0, "> 0 or None"),
            ("device", is_device_name(self.device), DEVICE_FORMS),
            ("amp", self.amp in AMP_MODES, f"one of {AMP_MODES}"),
            ("threads", self.threads is None or self.threads >= 1, ">= 1 or None"),
            ("seed", self.seed >= 0, ">= 0"),
            ("bn_recalibrate_batches", self.bn_recalibrate_batches >= 0, ">= 0 (0 turns it off)"),
            ("reports_per_epoch", self.reports_per_epoch is None or self.reports_per_epoch >= 1, ">= 1 or None"),
            ("divergence_ratio", self.divergence_ratio > 1, "> 1"),
        )
        for name, ok, expected in checks:
            if not ok:
                raise ValueError(f"TrainConfig.{name} must be {expected}, but got {getattr(self, name)!r}")


@dataclass(frozen=True)
class TrainResult:
    """Held-out metrics after training (the same on every rank under ``torchrun``).

    ``top5`` is None with 5 classes or fewer. ``loss`` is the held-out cross-entropy;
    ``train_loss`` the mean training loss of the last epoch. ``images`` counts training
    images over all processes; ``seconds`` is the wall time of the call, ``train_seconds``
    the part spent in training steps.
    """

    accuracy: float
    top5: float | None
    loss: float
    epochs: float
    images: int
    seconds: float
    train_loss: float = math.nan
    train_seconds: float = 0.0


class TrainingDiverged(RuntimeError):
    """The training loss became NaN/inf or blew up; the message says at which step."""


@dataclass(frozen=True)
class _Plan:
    steps_per_epoch: int
    total_steps: int
    warmup_steps: int
    report_steps: tuple[int, ...]  # steps after which held-out accuracy goes to the trial
    check_every: int


def _make_plan(data: ProxyData, config: TrainConfig, info: DistInfo, device: torch.device, reporting: bool) -> _Plan:
    per_epoch = data.steps_per_epoch(config.batch_size, info.world_size)
    if per_epoch == 0:
        raise ValueError(f"TrainConfig.batch_size={config.batch_size} exceeds the "
                         f"{data.num_train // info.world_size} training images per process")
    total = max(1, math.floor(config.epochs * per_epoch + 1e-9))
    if config.max_images is not None:
        global_batch = config.batch_size * info.world_size
        if config.max_images < global_batch:
            raise ValueError(f"TrainConfig.max_images={config.max_images} is less than one batch "
                             f"({global_batch} images)")
        total = min(total, config.max_images // global_batch)
    warmup = min(round(config.warmup_epochs * per_epoch), total - 1)
    reports: tuple[int, ...] = ()
    if reporting:
        per = config.reports_per_epoch or (4 if config.epochs <= 1 else 2 if config.epochs <= 4 else 1)
        count = max(1, math.ceil(total * per / per_epoch - 1e-9))
        steps = {min(total, max(1, round(k * per_epoch / per))) for k in range(1, count + 1)}
        reports = tuple(sorted(steps | {total}))
    check_every = 1 if device.type == "cpu" and not info.enabled else 10
    return _Plan(per_epoch, total, warmup, reports, check_every)


def warmup_cosine_lr(step: int, warmup_steps: int, total_steps: int, base_lr: float) -> float:
    """The learning rate at ``step``: linear warm-up over ``warmup_steps``, then cosine decay to 0."""
    if step < warmup_steps:
        return base_lr * (step + 1) / warmup_steps
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    return base_lr * 0.5 * (1.0 + math.cos(math.pi * progress))


def decay_groups(params: list[nn.Parameter], weight_decay: float) -> list[dict[str, object]]:
    """Optimizer parameter groups: ``weight_decay`` on weights, none on BN parameters and biases (1-d)."""
    groups = [{"params": [p for p in params if p.ndim > 1], "weight_decay": weight_decay},
              {"params": [p for p in params if p.ndim <= 1], "weight_decay": 0.0}]
    return [g for g in groups if g["params"]]


def _make_optimizer(model: nn.Module, config: TrainConfig) -> torch.optim.Optimizer:
    """SGD-Nesterov or RMSProp (decay 0.9, eps 1e-3 as in the TF code); no decay on BN/bias."""
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ValueError("the model has no trainable parameters")
    groups = decay_groups(params, config.weight_decay)
    if config.optimizer == "sgd":
        sgd = functools.partial(torch.optim.SGD, groups, lr=config.lr, momentum=config.momentum,
                                nesterov=config.momentum > 0)
        try:  # one fused kernel per step: ~6 % faster B0 steps on CPU than foreach
            return sgd(fused=True)
        except (RuntimeError, TypeError, ValueError):  # a torch or device without fused SGD
            return sgd(foreach=True)
    return torch.optim.RMSprop(groups, lr=config.lr, alpha=0.9, eps=1e-3, momentum=config.momentum, foreach=True)


def train_proxy(model: nn.Module, data: ProxyData, config: TrainConfig, trial: Any = None,
                hooks: TrainHooks | None = None) -> TrainResult:
    """Train ``model`` in place on ``data`` and score it on the held-out split.

    Args:
        model: a network mapping ``(B, data.in_chans, R, R)`` to ``(B, data.num_classes)`` logits.
        data: from ``nas.proxy.data.load_data``.
        config: the training recipe and budget.
        trial: an Optuna trial (on rank 0 under ``torchrun``) to report held-out accuracy to.
        hooks: final training's parts (``nas.proxy.hooks``); None: the proxy trainer as it is.

    Returns:
        The held-out metrics.

    Raises:
        optuna.TrialPruned: the trial's pruner stopped it (the reason is the user attr ``reason``).
        TrainingDiverged: NaN/inf or exploding training loss (also set as ``reason``).
        ValueError: invalid configuration for this data or machine.
    """
    start = time.perf_counter()
    info = init_from_env(device_type(config.device))
    device = resolve_device(config.device, info.local_rank if info.enabled else None)
    if config.amp == "fp16" and device.type != "cuda":
        raise ValueError("TrainConfig.amp='fp16' needs a CUDA device, but got device 'cpu' (use 'bf16')")
    flushing_before = _flushing_denormals()
    if config.flush_denormal:
        torch.set_flush_denormal(True)
    rng_devices = [device.index] if device.type == "cuda" else []
    try:
        if device.type == "cuda":
            torch.cuda.set_device(device)
        with torch_threads(config.threads), torch.random.fork_rng(devices=rng_devices, device_type=device.type):
            torch.manual_seed(config.seed)
            reporting = broadcast_flag(trial is not None, info, device)
            plan = _make_plan(data, config, info, device, reporting)
            return _Run(model, data, config, trial, device, info, plan, start, hooks or TrainHooks()).run()
    finally:
        torch.set_flush_denormal(flushing_before)


def _flushing_denormals() -> bool:
    """Whether CPU arithmetic flushes denormal floats to zero now (torch has no getter)."""
    return float(torch.tensor([1e-39]) * 1.0) == 0.0


class _Run:
    """The state of one ``train_proxy`` call."""

    def __init__(self, model: nn.Module, data: ProxyData, config: TrainConfig, trial: Any, device: torch.device,
                 info: DistInfo, plan: _Plan, start: float, hooks: TrainHooks):
        self.data, self.config, self.trial, self.device, self.info, self.plan = data, config, trial, device, info, plan
        self.start, self.eval_seconds, self.step, self.hooks = start, 0.0, 0, hooks
        fmt = torch.channels_last if config.channels_last else torch.preserve_format
        self.model = model.to(device=device, memory_format=fmt)  # type: ignore[call-overload]  # torch's stub lacks it
        self.optimizer = (hooks.make_optimizer or (lambda m: _make_optimizer(m, config)))(self.model)
        self.lr_at = (hooks.make_schedule(plan.steps_per_epoch, plan.total_steps) if hooks.make_schedule
                      else lambda step: warmup_cosine_lr(step, plan.warmup_steps, plan.total_steps, config.lr))
        net: nn.Module = self.model
        if info.enabled:
            ids = [device.index] if device.type == "cuda" else None
            net = nn.parallel.DistributedDataParallel(self.model, device_ids=ids)
        self.net = torch.compile(net) if config.compile else net
        self.scaler = torch.amp.GradScaler("cuda") if config.amp == "fp16" else None
        self.window: list[torch.Tensor] = []
        self.epoch_loss, self.epoch_steps = torch.zeros((), device=device), 0
        self.epoch_hits = torch.zeros((), device=device, dtype=torch.int64)  # counted with an on_epoch hook only
        self.max_loss = math.inf  # set from the first check window
        if hooks.start is not None:
            self._resume(hooks.start)

    def _resume(self, state: ResumeState) -> None:
        self.step = state.step
        self.optimizer.load_state_dict(state.optimizer)
        if self.scaler is not None and state.scaler is not None:
            self.scaler.load_state_dict(state.scaler)
        if state.rng is not None:
            torch.set_rng_state(state.rng)
        if state.cuda_rng is not None and self.device.type == "cuda":
            torch.cuda.set_rng_state(state.cuda_rng, self.device)

    def run(self) -> TrainResult:
        self.model.train()
        # reports counted from step 0, so that a resumed run calibrates on the batches an uninterrupted one does
        reports, metrics_step = sum(1 for s in self.plan.report_steps if s <= self.step), -1
        metrics: tuple[float, float | None, float] | None = None
        train_start = time.perf_counter()
        for x, y in self._batches() if self.step < self.plan.total_steps else ():
            self._step(x, y)
            out_of_time = self._check()
            if self.step in self.plan.report_steps:
                reports += 1
                metrics, metrics_step = self._report(reports), self.step
            done = self.step == self.plan.total_steps
            if self.hooks.on_epoch and (self.step % self.plan.steps_per_epoch == 0 or done):
                self._epoch_end()
            if out_of_time or done:
                break
        train_seconds = time.perf_counter() - train_start - self.eval_seconds
        if metrics_step != self.step or self.hooks.eval_model is not None:
            scored = self.hooks.eval_model() if self.hooks.eval_model else self.model
            metrics = evaluate(scored, self.data, self.config, device=self.device, info=self.info,
                               calib_epoch=10**6 + reports)
        train_loss = all_reduce_sum(self.epoch_loss.double() / max(1, self.epoch_steps), self.info).item()
        assert metrics is not None  # scored at the last report step, or just above
        return TrainResult(*metrics, epochs=self.step / self.plan.steps_per_epoch,
                           images=self.step * self.config.batch_size * self.info.world_size,
                           seconds=time.perf_counter() - self.start,
                           train_loss=train_loss / self.info.world_size, train_seconds=train_seconds)

    def _batches(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Training batches, epoch after epoch (the epoch's loss statistics restart with it)."""
        for epoch in itertools.count(self.step // self.plan.steps_per_epoch):
            self.epoch_loss.zero_()
            self.epoch_hits.zero_()
            self.epoch_steps = 0
            augment = self.hooks.augment(epoch, self.info.rank, self.device) if self.hooks.augment else None
            yield from self.data.batches("train", self.config.batch_size, epoch=epoch, seed=self.config.seed,
                                         rank=self.info.rank, world_size=self.info.world_size, device=self.device,
                                         channels_last=self.config.channels_last, augment=augment)

    def _epoch_end(self) -> None:
        t0 = time.perf_counter()
        sums = torch.stack([self.epoch_loss.double(), self.epoch_hits.double()])
        loss, hits = (all_reduce_sum(sums, self.info) / self.info.world_size).tolist()
        steps = max(1, self.epoch_steps)
        assert self.hooks.on_epoch is not None
        self.hooks.on_epoch(EpochEnd(
            epoch=math.ceil(self.step / self.plan.steps_per_epoch), step=self.step, total_steps=self.plan.total_steps,
            steps_per_epoch=self.plan.steps_per_epoch, train_loss=loss / steps,
            train_top1=hits / (steps * self.config.batch_size), lr=self.lr_at(self.step - 1), model=self.model,
            optimizer=self.optimizer, scaler=self.scaler))
        self.eval_seconds += time.perf_counter() - t0

    def _step(self, x: torch.Tensor, y: torch.Tensor) -> None:
        lr = self.lr_at(self.step)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        with autocast(self.device, self.config.amp):
            logits = self.net(x)
        loss = F.cross_entropy(logits.float(), y, label_smoothing=self.config.label_smoothing)
        self.optimizer.zero_grad(set_to_none=True)
        if self.scaler is not None:
            self.scaler.scale(loss).backward()
            self.scaler.unscale_(self.optimizer)
        else:
            loss.backward()
        if self.config.grad_clip is not None:
            nn.utils.clip_grad_norm_(self.model.parameters(), self.config.grad_clip)
        if self.scaler is not None:
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            self.optimizer.step()
        self.step += 1
        if self.hooks.on_epoch is not None:
            self.epoch_hits += (logits.detach().argmax(1) == y).sum()
        if self.hooks.after_step is not None:
            self.hooks.after_step(self.model, self.step)
        loss = loss.detach()
        self.window.append(loss)
        self.epoch_loss += loss
        self.epoch_steps += 1

    def _check(self) -> bool:
        """Every ``check_every`` steps: raise on divergence; True when the time budget is spent."""
        if self.step % self.plan.check_every and self.step < self.plan.total_steps:
            return False
        losses = all_reduce_sum(torch.stack(self.window).double(), self.info) / self.info.world_size
        first_step = self.step - len(self.window) + 1
        self.window = []
        bad = (~torch.isfinite(losses)).nonzero()
        if first_step == 1 and not len(bad):
            chance = math.log(max(2, self.data.num_classes))
            self.max_loss = self.config.divergence_ratio * max(chance, losses[0].item())
        if len(bad) or losses.mean().item() > self.max_loss:
            at = first_step + int(bad[0]) if len(bad) else self.step
            what = (f"{losses[int(bad[0])].item()}" if len(bad)
                    else f"mean {losses.mean().item():.3g} > {self.max_loss:.3g}")
            lr = self.lr_at(at - 1)
            self._fail(f"training diverged at step {at} of {self.plan.total_steps} "
                       f"(epoch {at / self.plan.steps_per_epoch:.2f}, lr {lr:.3g}): loss {what}")
        over = self.config.max_seconds is not None and time.perf_counter() - self.start > self.config.max_seconds
        return any_flag(over, self.info, self.device)

    def _fail(self, reason: str) -> None:
        if self.trial is not None:
            self.trial.set_user_attr("reason", reason)
        raise TrainingDiverged(reason)

    def _report(self, index: int) -> tuple[float, float | None, float]:
        t0 = time.perf_counter()
        metrics = evaluate(self.model, self.data, self.config, device=self.device, info=self.info,
                           calib_epoch=10**6 + index)
        self.eval_seconds += time.perf_counter() - t0
        logger.debug("step %d/%d: held-out accuracy %.4f", self.step, self.plan.total_steps, metrics[0])
        prune = False
        if self.trial is not None:
            self.trial.report(metrics[0], index)
            prune = self.trial.should_prune()
        if broadcast_flag(prune, self.info, self.device):
            import optuna

            reason = (f"pruned at report {index} (epoch {self.step / self.plan.steps_per_epoch:.2f}): "
                      f"held-out accuracy {metrics[0]:.4f}")
            if self.trial is not None:
                self.trial.set_user_attr("reason", reason)
            raise optuna.TrialPruned(reason)
        return metrics
