"""Held-out evaluation after BatchNorm recalibration.

With TF-style BN momentum (0.01 in PyTorch terms) the running statistics of a network trained
for an epoch are still close to their initial values, and evaluating with them gives chance
accuracy whatever the network learned. ``evaluate`` first replaces them by their exact average
over training batches (``recalibrate_bn``, on the data's ``calib`` batches: ``recalibrate_on_calib``),
then scores the held-out split. ``fold_bn`` folds each BatchNorm into the convolution before it, for a
network that is only evaluated afterwards (the same outputs to float rounding, fewer passes over memory).
"""
from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING, Any, Iterable, TypedDict

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.nn.utils.fusion import fuse_conv_bn_weights

from nas.proxy.data import ProxyData
from nas.proxy.distributed import DistInfo, all_reduce_sum, average_bn_statistics

if TYPE_CHECKING:
    from nas.proxy.train import TrainConfig

__all__ = ["autocast", "recalibrate_bn", "recalibrate_on_calib", "fold_bn", "evaluate"]


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


def _shard(config: TrainConfig, device: torch.device, info: DistInfo) -> _Shard:
    return _Shard(rank=info.rank, world_size=info.world_size, device=device, channels_last=config.channels_last)


def recalibrate_on_calib(model: nn.Module, data: ProxyData, config: TrainConfig, *, device: torch.device,
                         info: DistInfo = DistInfo(), calib_epoch: int = 0) -> int:  # noqa: B008 (a frozen dataclass)
    """``recalibrate_bn`` on ``config.bn_recalibrate_batches`` of ``data``'s ``calib`` batches (shuffled by
    ``(config.seed, calib_epoch)``), the statistics then averaged over all processes; what ``evaluate``
    does first. Returns the number of batches used (0: the statistics are left as they were)."""
    if not config.bn_recalibrate_batches:
        return 0
    calib = data.batches("calib", config.batch_size, epoch=calib_epoch, seed=config.seed,
                         **_shard(config, device, info))
    used = recalibrate_bn(model, calib, config.bn_recalibrate_batches, autocast(device, config.amp))
    average_bn_statistics(model, info)
    return used


def fold_bn(model: nn.Module) -> nn.Module:
    """Fold every ``BatchNorm2d`` that follows a ``Conv2d`` in an ``nn.Sequential`` into that convolution
    (as ``fuse_conv_bn_eval``, without its copy: its running statistics and affine map become the
    convolution's weight and bias), the BatchNorm replaced by ``nn.Identity``. In place; returns ``model``.

    For a network that is only evaluated afterwards: the outputs are the same to float rounding, its BN
    statistics are fixed in the weights, and training it would no longer normalize.

    Raises:
        ValueError: ``model`` is in training mode.
    """
    if model.training:
        raise ValueError("fold_bn folds BatchNorm for evaluation, but the model is in training mode; call "
                         "model.eval() first")
    for module in list(model.modules()):
        if not isinstance(module, nn.Sequential):
            continue
        children = list(module.named_children())
        for (_, conv), (second, bn) in zip(children, children[1:]):
            if isinstance(conv, nn.Conv2d) and isinstance(bn, nn.BatchNorm2d) and bn.running_mean is not None:
                _fold_into(conv, bn)
                setattr(module, second, nn.Identity())
    return model


def _fold_into(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> None:
    """``fuse_conv_bn_eval`` without its deep copy: ``conv`` takes ``bn``'s statistics and affine map in place."""
    assert bn.running_mean is not None and bn.running_var is not None
    with torch.no_grad():
        weight, bias = fuse_conv_bn_weights(conv.weight, conv.bias, bn.running_mean, bn.running_var, bn.eps,
                                            bn.weight, bn.bias)
    conv.weight, conv.bias = weight, bias


def evaluate(model: nn.Module, data: ProxyData, config: TrainConfig, *, device: torch.device,
             info: DistInfo = DistInfo(), calib_epoch: int = 0,  # noqa: B008 (a frozen dataclass)
             val_images: int | None = None) -> tuple[float, float | None, float]:
    """Recalibrate BatchNorm (``config.bn_recalibrate_batches``: ``recalibrate_on_calib``) then score the
    held-out split, or its first ``val_images`` images (None or 0: all of them).

    Returns:
        ``(top-1 accuracy, top-5 accuracy or None, mean cross-entropy)`` over all processes.
    """
    recalibrate_on_calib(model, data, config, device=device, info=info, calib_epoch=calib_epoch)
    was_training = model.training
    model.eval()
    sums = torch.zeros(4, dtype=torch.float64, device=device)  # loss, top-1 hits, top-5 hits, images
    with torch.no_grad():
        for x, y in data.batches("val", max(config.batch_size, 256), limit=val_images or None,
                                 **_shard(config, device, info)):
            with autocast(device, config.amp):
                logits = model(x)
            logits = logits.float()
            hits = logits.topk(min(5, logits.shape[1]), dim=1).indices == y[:, None]
            sums += torch.stack([F.cross_entropy(logits, y, reduction="sum"), hits[:, 0].sum(),
                                 hits.any(dim=1).sum(), torch.tensor(len(y), device=device)]).double()
    model.train(was_training)
    loss, top1, top5, count = all_reduce_sum(sums, info).tolist()
    return top1 / count, (top5 / count if data.num_classes > 5 else None), loss / count
