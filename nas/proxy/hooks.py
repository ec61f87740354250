"""Hooks into the proxy trainer for final training (``nas-train``): one trainer, two recipes.

``train_proxy(..., hooks=TrainHooks(...))`` keeps every fast path of the proxy trainer (in-memory
uint8 batches, channels_last, the small-map convolutions, AMP, ``torch.compile``, DDP under
``torchrun``) and lets the caller choose the optimizer and the learning-rate schedule, augment each
uint8 training batch before it is normalized, act after every step (a weight average, a progress
line) and at the end of every epoch (a checkpoint), score another model than the trained one at the
end (the weight average), and start from a saved state (resume). Without hooks nothing changes.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn as nn

__all__ = ["BatchTransform", "Schedule", "ResumeState", "EpochEnd", "TrainHooks"]

BatchTransform = Callable[[torch.Tensor], torch.Tensor]  # uint8 (B, C, R, R) on the device -> the same shape
Schedule = Callable[[int], float]  # optimizer step (0-based) -> learning rate


@dataclass(frozen=True)
class ResumeState:
    """Where a run resumes: after ``step`` optimizer steps (a whole number of epochs).

    ``optimizer`` and ``scaler`` are their ``state_dict()``; ``rng`` / ``cuda_rng`` the torch random
    states at that point (dropout, stochastic depth), restored after the trainer seeds torch. The
    model's weights are the caller's to load before the call.
    """

    step: int
    optimizer: dict[str, object]
    scaler: dict[str, object] | None = None
    rng: torch.Tensor | None = None
    cuda_rng: torch.Tensor | None = None


@dataclass(frozen=True)
class EpochEnd:
    """What ``TrainHooks.on_epoch`` gets after the last step of an epoch (or of the run).

    ``epoch`` counts finished epochs (1 after the first); ``train_loss`` and ``train_top1`` are the
    mean loss and accuracy of the epoch's (augmented) training batches, over all processes.
    """

    epoch: int
    step: int
    total_steps: int
    steps_per_epoch: int
    train_loss: float
    train_top1: float
    lr: float
    model: nn.Module
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler | None


@dataclass(frozen=True)
class TrainHooks:
    """Optional parts of a ``train_proxy`` run; None keeps the proxy trainer's own.

    Attributes:
        make_optimizer: ``model -> optimizer`` (the proxy's: SGD-Nesterov or RMSProp by ``TrainConfig``).
        make_schedule: ``(steps_per_epoch, total_steps) -> Schedule`` (the proxy's: warm-up, cosine).
        augment: ``(epoch, rank, device) -> BatchTransform`` applied to every uint8 training batch of
            that epoch before normalization; seeding it by epoch makes a resumed epoch the same.
        after_step: ``(model, steps done)`` after every optimizer step (weight average, progress).
        on_epoch: called with an ``EpochEnd`` after each epoch's last step (checkpoints); its time is
            not counted as training time.
        eval_model: ``() -> model`` that the final evaluation scores instead of the trained one.
        start: the state to resume from.
    """

    make_optimizer: Callable[[nn.Module], torch.optim.Optimizer] | None = None
    make_schedule: Callable[[int, int], Schedule] | None = None
    augment: Callable[[int, int, torch.device], BatchTransform] | None = None
    after_step: Callable[[nn.Module, int], None] | None = None
    on_epoch: Callable[[EpochEnd], None] | None = None
    eval_model: Callable[[], nn.Module] | None = None
    start: ResumeState | None = None
