"""The optimizers and learning-rate schedules of final training.

``RMSpropTF`` is RMSProp as TensorFlow computes it (``tf.train.RMSPropOptimizer``, which the paper's
code uses), not as ``torch.optim.RMSprop`` does: the mean square starts at 1 (torch: 0, which makes
the first steps ~1/sqrt(1 - decay) = 3x the learning rate per weight), epsilon is added *inside*
the square root, and the learning rate multiplies the gradient before it enters the momentum::

    ms  = decay * ms + (1 - decay) * g^2          (ms starts at 1)
    mom = momentum * mom + lr * g / sqrt(ms + eps)
    w   = w - mom

Weight decay is the TF code's L2 term, ``weight_decay * w`` added to the gradient, on every weight
but BatchNorm's (TF: every trainable variable whose name has no ``batch_normalization``).
"""
from __future__ import annotations

import math
from typing import Callable, Iterable

import torch
import torch.nn as nn

from nas.final.config import PAPER_DECAY, PAPER_DECAY_EPOCHS, PAPER_EPOCHS, Recipe

__all__ = ["RMSpropTF", "param_groups", "make_optimizer", "make_schedule"]

ParamGroup = dict[str, object]


class RMSpropTF(torch.optim.Optimizer):
    """TensorFlow's RMSProp with momentum (see the module docstring); one foreach pass per group."""

    def __init__(self, params: Iterable[torch.nn.Parameter] | Iterable[ParamGroup], lr: float, alpha: float = 0.9,
                 eps: float = 1e-3, momentum: float = 0.9, weight_decay: float = 0.0) -> None:
        if not (lr > 0 and 0 <= alpha < 1 and eps > 0 and 0 <= momentum < 1 and weight_decay >= 0):
            raise ValueError(f"RMSpropTF: bad hyper-parameters ({lr=}, {alpha=}, {eps=}, {momentum=}, {weight_decay=})")
        super().__init__(params, dict(lr=lr, alpha=alpha, eps=eps, momentum=momentum, weight_decay=weight_decay))

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:  # type: ignore[override]
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            params = [p for p in group["params"] if p.grad is not None]
            if not params:
                continue
            grads: list[torch.Tensor] | tuple[torch.Tensor, ...] = [p.grad for p in params]
            if group["weight_decay"]:
                grads = torch._foreach_add(grads, params, alpha=group["weight_decay"])
            for p in params:
                if not self.state[p]:
                    self.state[p]["square_avg"] = torch.ones_like(p, memory_format=torch.preserve_format)
                    self.state[p]["momentum_buffer"] = torch.zeros_like(p, memory_format=torch.preserve_format)
            square = [self.state[p]["square_avg"] for p in params]
            moment = [self.state[p]["momentum_buffer"] for p in params]
            torch._foreach_mul_(square, group["alpha"])
            torch._foreach_addcmul_(square, grads, grads, value=1 - group["alpha"])
            step = torch._foreach_add(square, group["eps"])
            torch._foreach_rsqrt_(step)  # g * rsqrt(ms + eps): ~30 % faster on CPU than addcdiv by a sqrt
            torch._foreach_mul_(step, grads)
            torch._foreach_mul_(moment, group["momentum"])
            torch._foreach_add_(moment, step, alpha=group["lr"])
            torch._foreach_sub_(params, moment)
        return loss


def param_groups(model: nn.Module, weight_decay: float) -> list[ParamGroup]:
    """Two groups: BatchNorm weights and biases without weight decay, every other weight with it (TF's rule)."""
    norm = {id(p) for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)
            for p in m.parameters(recurse=False)}
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ValueError("the model has no trainable parameters")
    groups: list[ParamGroup] = [{"params": [p for p in params if id(p) not in norm], "weight_decay": weight_decay},
                                {"params": [p for p in params if id(p) in norm], "weight_decay": 0.0}]
    return [g for g in groups if g["params"]]


def make_optimizer(model: nn.Module, recipe: Recipe) -> torch.optim.Optimizer:
    """``RMSpropTF`` (decay 0.9, momentum 0.9, eps 1e-3) or SGD-Nesterov (momentum 0.9), per ``recipe``."""
    groups = param_groups(model, recipe.weight_decay)
    if recipe.optimizer == "rmsprop-tf":
        assert recipe.rmsprop_decay is not None and recipe.eps is not None
        return RMSpropTF(groups, lr=recipe.lr, alpha=recipe.rmsprop_decay, eps=recipe.eps, momentum=recipe.momentum)
    try:  # one fused kernel per step where the torch build has it
        return torch.optim.SGD(groups, lr=recipe.lr, momentum=recipe.momentum, nesterov=True, fused=True)
    except (RuntimeError, TypeError, ValueError):
        return torch.optim.SGD(groups, lr=recipe.lr, momentum=recipe.momentum, nesterov=True, foreach=True)


def make_schedule(recipe: Recipe) -> Callable[[int, int], Callable[[int], float]]:
    """``(steps_per_epoch, total_steps) -> (step -> lr)``: linear warm-up over ``recipe.warmup_epochs``, then

    * rmsprop: the paper's exponential decay (x0.97 every 2.4 epochs of 350) compressed in time: from
      the peak at the end of the warm-up to the paper's final fraction of it, 0.97^(350/2.4) = 1.2 %,
      at the last step, whatever the run's length (smooth, not staircase: a short run has fewer steps
      than the paper has decays);
    * sgd: a cosine from the peak to 0 at the last step.
    """
    def factory(steps_per_epoch: int, total_steps: int) -> Callable[[int], float]:
        warmup = min(round(recipe.warmup_epochs * steps_per_epoch), total_steps - 1)
        exponential = recipe.optimizer == "rmsprop-tf"
        rate = math.log(PAPER_DECAY) * PAPER_EPOCHS / PAPER_DECAY_EPOCHS  # log of the final fraction

        def lr_at(step: int) -> float:
            if step < warmup:
                return recipe.lr * (step + 1) / warmup
            if exponential:
                return recipe.lr * math.exp(rate * (step - warmup) / max(1, total_steps - 1 - warmup))
            progress = (step - warmup) / max(1, total_steps - warmup)
            return recipe.lr * 0.5 * (1.0 + math.cos(math.pi * progress))

        return lr_at

    return factory
