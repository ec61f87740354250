"""A weight-sharing supernet over the search space: train it once, score many candidates with inherited weights.

``Supernet`` (``net``) holds every architecture of a space in one network with elastic depth,
width, kernel, expansion and SE, and per op kind its own weights (``layers``, ``elastic``);
``subnets`` names the largest, smallest and random members; ``train`` trains it with the
sandwich rule and in-place distillation, resumable (``checkpoint``) and data-parallel; ``score``
extracts a candidate as ``build_model(arch)`` with inherited weights and scores it on the
held-out split; ``split`` splits a trained supernet by the op kind of one stage (few-shot NAS) and
picks, for a candidate, the sub-supernet whose space admits it. See docs/supernet.md.
"""
from nas.supernet.checkpoint import FORMAT, load_supernet, read_checkpoint, restore_checkpoint, save_checkpoint
from nas.supernet.net import Supernet, SupernetError
from nas.supernet.score import DEFAULT_SCORE_CONFIG, extract_model, score, supernet_score_fn
from nas.supernet.split import (
    OP_KINDS,
    coverage_misfit,
    inherit,
    op_kind,
    pick,
    restriction_misfit,
    split_path,
    split_supernet,
    sub_space,
)
from nas.supernet.subnets import largest_arch, random_arch, sandwich_archs, smallest_arch
from nas.supernet.train import SupernetTrainConfig, SupernetTrainResult, all_reduce_gradients, train_supernet

__all__ = [
    "Supernet",
    "SupernetError",
    "largest_arch",
    "smallest_arch",
    "random_arch",
    "sandwich_archs",
    "SupernetTrainConfig",
    "SupernetTrainResult",
    "train_supernet",
    "all_reduce_gradients",
    "FORMAT",
    "save_checkpoint",
    "read_checkpoint",
    "restore_checkpoint",
    "load_supernet",
    "DEFAULT_SCORE_CONFIG",
    "extract_model",
    "score",
    "supernet_score_fn",
    "OP_KINDS",
    "op_kind",
    "sub_space",
    "restriction_misfit",
    "inherit",
    "split_path",
    "split_supernet",
    "pick",
    "coverage_misfit",
]
