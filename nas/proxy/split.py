"""What the proxy trainer reads a split through: labelled images, batched in a given order."""
from __future__ import annotations

from typing import Iterator

import torch

__all__ = ["Split"]

Batch = tuple[torch.Tensor, torch.Tensor]


class Split:
    """A split of labelled images; subclasses hold them (in memory, in files) and say how a batch is made."""

    labels: torch.Tensor

    def __len__(self) -> int:
        return len(self.labels)

    def batches(self, order: torch.Tensor, batch_size: int, drop_last: bool, seed: int, epoch: int,
                pin_memory: bool) -> Iterator[Batch]:
        """uint8 ``(B, C, R, R)`` images and int64 labels, in ``order``; ``drop_last`` drops a short last batch."""
        count = len(order) // batch_size * batch_size if drop_last else len(order)
        return self._batches(order[:count], batch_size, seed, epoch, pin_memory)

    def _batches(self, order: torch.Tensor, batch_size: int, seed: int, epoch: int,
                 pin_memory: bool) -> Iterator[Batch]:
        raise NotImplementedError
