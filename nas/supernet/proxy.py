"""The supernet as a proxy of ``nas-search`` and ``nas-proxy-check``: a trained supernet, ready to score candidates.

``prepare_supernet`` either trains one into a file (resuming a partial checkpoint there, as a
rerun of the command does) or loads a trained one, and checks it against the search before the
first trial: the same space, a record of its training data, and a held-out split it never saw.
``prepare_supernets`` loads one file as ``prepare_supernet`` does, or several: a supernet split by
op kind (``nas.supernet.split``), each file over a restriction of the space (for a search, together
covering it). ``supernet_digest`` names the weights a study's scores came from (one file's
``file_digest``, several joined), so a resumed study refuses another supernet or another split;
``supernet_tag`` names all the files' weights in a score cache.
"""
from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Sequence
from pathlib import Path

import torch

from nas.proxy import ProxyData, TrainConfig
from nas.supernet.checkpoint import load_supernet
from nas.supernet.net import Supernet, SupernetError
from nas.supernet.provenance import check_held_out
from nas.supernet.score import DEFAULT_SCORE_CONFIG
from nas.supernet.split import coverage_misfit, pick, restriction_misfit
from nas.supernet.train import SupernetTrainConfig, train_supernet
from search_spaces import ArchSpec
from search_spaces.space import SearchSpace

__all__ = ["SUPERNET_FILE", "DEFAULT_BN_BATCHES", "file_digest", "supernet_digest", "supernet_tag",
           "prepare_supernet", "prepare_supernets", "score_config"]

SUPERNET_FILE = "supernet.pt"  # where nas-search trains the supernet in --out
DEFAULT_BN_BATCHES = 20  # training batches a candidate's BN statistics are recalibrated on


def file_digest(path: str | Path) -> str:
    """The first 16 hex digits of the file's SHA-256."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()[:16]


def supernet_digest(paths: Sequence[str | Path]) -> str:
    """The ``file_digest`` of one file; of several (a split supernet), their digests joined by ``+`` in their order.
    What a study records, so resuming it with other weights (or another split) is refused."""
    return "+".join(file_digest(p) for p in paths)


def supernet_tag(paths: Sequence[str | Path], bn_batches: int, val_images: int = 0) -> str:
    """``@<supernet_digest>/bn<batches>``, with ``/v<val_images>`` when the scores are on the first ``val_images``
    held-out images (0: all, no suffix): what a supernet proxy's name carries in a score cache, so the scores of
    other weights (or another split, or other images) are never reused."""
    return f"@{supernet_digest(paths)}/bn{bn_batches}" + (f"/v{val_images}" if val_images else "")


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
        _check_record(supernet, path)
    check_held_out(supernet, data)  # the data fits, and its held-out split was not trained on
    return supernet.to(device).eval()


def _check_record(supernet: Supernet, path: str | Path) -> None:
    if supernet.trained_on is None:
        raise SupernetError(f"supernet {str(path)!r} holds no record of the data it was trained on, so its "
                            f"held-out split cannot be checked; train it with nas-search --proxy supernet")


def prepare_supernets(space: SearchSpace, data: ProxyData, paths: Sequence[str | Path], device: str | torch.device,
                      archs: Sequence[ArchSpec] = (), *, cover: bool = False) -> list[Supernet]:
    """The trained supernets at ``paths``, in eval mode on ``device``: one file as ``prepare_supernet`` loads
    it, or the files of a split supernet (``nas.supernet.split``), each architecture scored by
    ``pick(supernets, arch)``, the first file in the order given whose space admits it.

    Several files are checked in this order, all before the first score: every file loads; each
    one's space is ``space`` or a restriction of it (``restriction_misfit``) and it records its
    training data; with ``cover`` (a search, which samples the whole space), every architecture of
    ``space`` is admitted by at least one file (``coverage_misfit``); every one of ``archs`` is
    admitted by at least one file; each file's held-out check holds (``check_held_out``).

    Raises:
        SupernetError: the first failed check, in one line naming the file or the architecture (or
            the files, with ``cover``).
    """
    if len(paths) == 1:
        return [prepare_supernet(space, data, paths[0], device)]
    if not paths:
        raise SupernetError("no supernet file given")
    supernets = [load_supernet(path, device) for path in paths]
    for path, supernet in zip(paths, supernets):
        misfit = restriction_misfit(supernet.space, space)
        if misfit is not None:
            raise SupernetError(f"supernet {str(path)!r} is over the space {supernet.space.name!r}, which is not "
                                f"{space.name!r} or a restriction of it: {misfit}")
        _check_record(supernet, path)
    if cover:
        _check_cover(space, paths, supernets)
    for arch in archs:
        pick(supernets, arch)
    for path, supernet in zip(paths, supernets):
        try:
            check_held_out(supernet, data)
        except SupernetError as exc:
            raise SupernetError(f"supernet {str(path)!r}: {exc}") from None
    return [supernet.to(device).eval() for supernet in supernets]


def _check_cover(space: SearchSpace, paths: Sequence[str | Path], supernets: Sequence[Supernet]) -> None:
    files = ", ".join(repr(str(path)) for path in paths)
    what = f"do not cover the space {space.name!r} (a search needs every architecture admitted by one of them)"
    try:
        gap = coverage_misfit([supernet.space for supernet in supernets], space)
    except SupernetError as exc:  # a combination the check cannot decide
        gap, what = str(exc), f"cannot be told to cover the space {space.name!r}"
    if gap is not None:
        raise SupernetError(f"the supernets {files} {what}: {gap}")


def score_config(trainer: TrainConfig, seed: int) -> TrainConfig:
    """The scoring settings for a search's trainer: its batch size, device, threads and AMP; the brief
    fine-tuning's recipe of ``DEFAULT_SCORE_CONFIG``."""
    return dataclasses.replace(DEFAULT_SCORE_CONFIG, batch_size=trainer.batch_size, device=trainer.device,
                               threads=trainer.threads, amp=trainer.amp, channels_last=trainer.channels_last,
                               seed=seed)
