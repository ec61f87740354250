"""The supernet as a proxy of ``nas-search`` and ``nas-proxy-check``: a trained supernet, ready to score candidates.

``prepare_supernet`` either trains one into a file (resuming a partial checkpoint there, as a
rerun of the command does) or loads a trained one, and checks it against the search before the
first trial: the same space, a record of its training data, and a held-out split it never saw.
``file_digest`` names the weights a study's scores came from, so a resumed study refuses another
supernet.
"""
from __future__ import annotations

import dataclasses
import hashlib
from pathlib import Path

import torch

from nas.proxy import ProxyData, TrainConfig
from nas.supernet.checkpoint import load_supernet
from nas.supernet.net import Supernet, SupernetError
from nas.supernet.provenance import check_held_out
from nas.supernet.score import DEFAULT_SCORE_CONFIG
from nas.supernet.train import SupernetTrainConfig, train_supernet
from search_spaces.space import SearchSpace

__all__ = ["SUPERNET_FILE", "DEFAULT_BN_BATCHES", "file_digest", "prepare_supernet", "score_config"]

SUPERNET_FILE = "supernet.pt"  # where nas-search trains the supernet in --out
DEFAULT_BN_BATCHES = 20  # training batches a candidate's BN statistics are recalibrated on


def file_digest(path: str | Path) -> str:
    """The first 16 hex digits of the file's SHA-256."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()[:16]


def prepare_supernet(space: SearchSpace, data: ProxyData, path: str | Path, device: str | torch.device,
                     train: SupernetTrainConfig | None = None) -> Supernet:
    """The trained supernet at ``path``, in eval mode on ``device``.

    Args:
        space: the search's space; the supernet must be over exactly this space.
        data: the proxy data; its held-out split must be disjoint from the supernet's training images.
        path: a trained supernet (``train`` None), or where to train one (created, or resumed).
        device: where it scores.
        train: the training recipe when the supernet is to be trained (or finished) at ``path``.

    Raises:
        SupernetError: a missing, foreign or unreadable file; another space; no record of its
            training data; a held-out split that shares images with that training.
    """
    if train is not None:
        supernet = Supernet(space, data.num_classes, data.in_chans)
        train_supernet(supernet, data, train, checkpoint=path)
    else:
        supernet = load_supernet(path, device)
        if supernet.space.digest() != space.digest():
            raise SupernetError(f"supernet {str(path)!r} was trained over the space {supernet.space.name!r} (digest "
                                f"{supernet.space.digest()}), but the search is over {space.name!r} "
                                f"(digest {space.digest()}); give the --space it was trained over")
        if supernet.trained_on is None:
            raise SupernetError(f"supernet {str(path)!r} holds no record of the data it was trained on, so its "
                                f"held-out split cannot be checked; train it with nas-search --proxy supernet")
    check_held_out(supernet, data)  # the data fits, and its held-out split was not trained on
    return supernet.to(device).eval()


def score_config(trainer: TrainConfig, seed: int) -> TrainConfig:
    """The scoring settings for a search's trainer: its batch size, device, threads and AMP; the brief
    fine-tuning's recipe of ``DEFAULT_SCORE_CONFIG``."""
    return dataclasses.replace(DEFAULT_SCORE_CONFIG, batch_size=trainer.batch_size, device=trainer.device,
                               threads=trainer.threads, amp=trainer.amp, channels_last=trainer.channels_last,
                               seed=seed)
