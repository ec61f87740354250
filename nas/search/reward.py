"""The EfficientNet / MnasNet objective: ``ACC x (MACs / T) ** w``."""
from __future__ import annotations


def reward(accuracy: float, macs: float, target: float, exponent: float = -0.07, kind: str = "soft") -> float:
    """Reward of a network with ``accuracy`` and ``macs`` against the target ``target``.

    Args:
        accuracy: held-out top-1 accuracy in [0, 1].
        macs: the network's multiply-adds.
        target: T, the MACs target.
        exponent: w for the soft constraint (the paper's -0.07).
        kind: ``"soft"``: w at every cost; ``"hard"``: w = 0 at or under T, -1 over.

    Returns:
        The reward; equal to ``accuracy`` when ``macs == target``.
    """
    if kind == "soft":
        w = exponent
    elif kind == "hard":
        w = 0.0 if macs <= target else -1.0
    else:
        raise ValueError(f"kind must be 'soft' or 'hard', but got {kind=}")
    return accuracy * (macs / target) ** w
