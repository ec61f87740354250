"""Data-parallel helpers for the proxy trainer: process group from ``torchrun``'s environment.

Under ``torchrun --nproc-per-node N`` each process trains its shard of the data in a
``DistributedDataParallel`` model; metrics are summed over processes so every rank returns
the same result. Outside ``torchrun`` (``WORLD_SIZE`` unset or 1) everything is a no-op.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import cast

import torch
import torch.distributed as dist
import torch.nn as nn

__all__ = ["DistInfo", "init_from_env", "all_reduce_sum", "broadcast_flag", "any_flag", "average_bn_statistics"]


@dataclass(frozen=True)
class DistInfo:
    """This process's place in the job."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def init_from_env(device_type: str) -> DistInfo:
    """Join the process group that ``torchrun`` describes in the environment (once).

    Uses NCCL for CUDA devices, gloo otherwise. Returns ``DistInfo()`` outside ``torchrun``.
    """
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return DistInfo()
    if not dist.is_initialized():
        backend = "nccl" if device_type == "cuda" else "gloo"
        dist.init_process_group(backend=backend)
    return DistInfo(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))


def all_reduce_sum(values: torch.Tensor, info: DistInfo) -> torch.Tensor:
    """Sum ``values`` over all processes (in place); returns it."""
    if info.enabled:
        dist.all_reduce(values, op=dist.ReduceOp.SUM)
    return values


def broadcast_flag(flag: bool, info: DistInfo, device: torch.device) -> bool:
    """Rank 0's ``flag`` on every rank."""
    if not info.enabled:
        return flag
    t = torch.tensor([int(flag)], device=device)
    dist.broadcast(t, src=0)
    return bool(t.item())


def any_flag(flag: bool, info: DistInfo, device: torch.device) -> bool:
    """True on every rank when ``flag`` is true on any rank."""
    if not info.enabled:
        return flag
    t = torch.tensor([int(flag)], device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item())


def average_bn_statistics(model: nn.Module, info: DistInfo) -> None:
    """Pool the BatchNorm running statistics of equal-sized shards into those of their union."""
    if not info.enabled:
        return
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.running_mean is not None:
            mean, var = m.running_mean, cast(torch.Tensor, m.running_var)  # set with running_mean
            moments = torch.stack([mean, var + mean.square()]).double()
            dist.all_reduce(moments, op=dist.ReduceOp.SUM)
            moments /= info.world_size
            mean.copy_(moments[0])
            var.copy_(moments[1] - moments[0].square())
