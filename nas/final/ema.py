"""The exponential moving average of the weights, as the paper's TF code keeps it.

TF's ``ExponentialMovingAverage(decay=0.9999, num_updates=global_step)`` uses, at update ``n``
(1 after the first optimizer step), ``decay_n = min(decay, (1 + n) / (10 + n))``. That is how the
0.9999 of a 350-epoch ImageNet run scales to a short run: early on the average follows the weights
closely (0.18 at n = 1, 0.9 at n = 80, 0.99 at n = 890), and it reaches 0.9999 only after 90K steps,
so a run of a few hundred steps averages over its last ~10 % of steps instead of lagging behind them.
BatchNorm statistics are not averaged: they are copied, then recomputed for the averaged weights
before every evaluation (``nas.proxy.recalibrate_bn``).
"""
from __future__ import annotations

import copy

import torch
import torch.nn as nn

__all__ = ["WeightEMA"]


class WeightEMA:
    """A copy of ``model`` whose parameters follow the model's as a moving average (``update``).

    The copy lives on the model's device and memory format; ``model`` attribute is it.
    """

    def __init__(self, model: nn.Module, decay: float = 0.9999) -> None:
        if not 0 <= decay < 1:
            raise ValueError(f"WeightEMA decay must be in [0, 1), but got {decay!r}")
        self.decay, self.updates = decay, 0
        self.model = copy.deepcopy(model).requires_grad_(False)
        self._ema: list[torch.Tensor] = [p for p in self.model.parameters()]
        self._ema_buffers = [b for b in self.model.buffers()]

    def decay_at(self, n: int) -> float:
        """The decay of update ``n`` (1-based): ``min(decay, (1 + n) / (10 + n))``."""
        return min(self.decay, (1 + n) / (10 + n))

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        """One update after an optimizer step: ``ema = d * ema + (1 - d) * weights``; buffers copied."""
        self.updates += 1
        weight = 1.0 - self.decay_at(self.updates)
        torch._foreach_lerp_(self._ema, [p.detach() for p in model.parameters()], weight)
        buffers = list(model.buffers())
        if buffers:
            torch._foreach_copy_(self._ema_buffers, buffers)

    def state_dict(self) -> dict[str, object]:
        return {"decay": self.decay, "updates": self.updates, "model": self.model.state_dict()}

    def load_state_dict(self, state: dict[str, object]) -> None:
        self.decay = float(state["decay"])  # type: ignore[arg-type]
        self.updates = int(state["updates"])  # type: ignore[call-overload]
        self.model.load_state_dict(state["model"])  # type: ignore[arg-type]
