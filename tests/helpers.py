"""Helpers shared by the test modules."""
from __future__ import annotations

import math

import torch


def randomize_(module: torch.nn.Module, seed: int, resolution: int = 64) -> torch.nn.Module:
    """Random weights, then BatchNorm statistics measured on a random batch: outputs that depend on the input."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, t in module.state_dict().items():
            if t.dtype.is_floating_point and t.ndim > 1:
                t.copy_(torch.randn(t.shape, generator=gen) / math.sqrt(t[0].numel()))
            elif name.endswith((".weight", ".bias")):
                t.copy_(torch.rand(t.shape, generator=gen) + 0.5 if name.endswith("weight") else
                        torch.randn(t.shape, generator=gen) * 0.1)
        norms = [m for m in module.modules() if isinstance(m, torch.nn.BatchNorm2d)]
        for m in norms:
            m.reset_running_stats()
            m.momentum = None
        module.train()(torch.randn(8, module_in_chans(module), resolution, resolution, generator=gen))
        for m in norms:
            m.momentum = 0.01
    return module.eval()


def module_in_chans(module: torch.nn.Module) -> int:
    return next(m for m in module.modules() if isinstance(m, torch.nn.Conv2d)).in_channels
