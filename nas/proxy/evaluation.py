"""Held-out evaluation after BatchNorm recalibration.

With TF-style BN momentum (0.01 in PyTorch terms) the running statistics of a network trained
for an epoch are still close to their initial values, and evaluating with them gives chance
accuracy whatever the network learned. ``evaluate`` first replaces them by their exact average
over training batches (``recalibrate_bn``), then scores the held-out split.
"""
from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING, Any, Iterable, TypedDict

import torch
import torch.nn as nn
import torch.nn.functional as F

from nas.proxy.data import ProxyData
from nas.proxy.distributed import DistInfo, all_reduce_sum, average_bn_statistics

if TYPE_CHECKING:
    from nas.proxy.train import TrainConfig

__all__ = ["autocast", "recalibrate_bn", "evaluate"]


class _Shard(TypedDict):
    """The keyword arguments of ``ProxyData.batches`` that place batches: this process's shard and device."""

    rank: int
    world_size: int
    device: torch.device
    channels_last: bool


def autocast(device: torch.device, amp: str) -> contextlib.AbstractContextManager:
    """The autocast context of ``TrainConfig.amp`` ("none", "bf16", "fp16") on ``device``."""
    if amp == "none":
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=torch.bfloat16 if amp == "bf16" else torch.float16)


def recalibrate_bn(model: nn.Module, batches: Iterable[tuple[torch.Tensor, Any]], num_batches: int,
                   context: contextlib.AbstractContextManager | None = None) -> int:
    """Replace BatchNorm running statistics by their exact average over ``num_batches`` batches.

    The rest of the network runs in eval mode (no dropout, no drop-path). Returns the number
    of batches used (0 when the model has no BatchNorm with running statistics).
    """
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats]
    if not norms or num_batches == 0:
        return 0
    was_training, momenta = model.training, [m.momentum for m in norms]
    model.eval()
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # cumulative average
        m.train()
    used = 0
    with torch.no_grad(), context or contextlib.nullcontext():
        for x, _ in batches:
            model(x)
            used += 1
            if used == num_batches:
                break
    for m, momentum in zip(norms, momenta):
        m.momentum = momentum
    model.train(was_training)
    return used


def evaluate(model: nn.Module, data: ProxyData, config: TrainConfig, *, device: torch.device,
             info: DistInfo = DistInfo(), calib_epoch: int = 0) -> tuple[float, float | None, float]:  # noqa: B008 (a frozen dataclass)
    """Recalibrate BatchNorm (``config.bn_recalibrate_batches``) then score the held-out split.

    Returns:
        ``(top-1 accuracy, top-5 accuracy or None, mean cross-entropy)`` over all processes.
    """
    kw: _Shard = dict(rank=info.rank, world_size=info.world_size, device=device, channels_last=config.channels_last)
    mixed = autocast(device, config.amp)
    if config.bn_recalibrate_batches:
        calib = data.batches("calib", config.batch_size, epoch=calib_epoch, seed=config.seed, **kw)
        recalibrate_bn(model, calib, config.bn_recalibrate_batches, mixed)
        average_bn_statistics(model, info)
    was_training = model.training
    model.eval()
    sums = torch.zeros(4, dtype=torch.float64, device=device)  # loss, top-1 hits, top-5 hits, images
    with torch.no_grad():
        for x, y in data.batches("val", max(config.batch_size, 256), **kw):
            with autocast(device, config.amp):
                logits = model(x)
            logits = logits.float()
            hits = logits.topk(min(5, logits.shape[1]), dim=1).indices == y[:, None]
            sums += torch.stack([F.cross_entropy(logits, y, reduction="sum"), hits[:, 0].sum(),
                                 hits.any(dim=1).sum(), torch.tensor(len(y), device=device)]).double()
    model.train(was_training)
    loss, top1, top5, count = all_reduce_sum(sums, info).tolist()
    return top1 / count, (top5 / count if data.num_classes > 5 else None), loss / count
