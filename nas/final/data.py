"""The data of final training: the whole training split (less an optional held-out part) and the test split.

This is the one place in the toolkit that reads a test split (``DatasetSpec.read_test`` of
``nas.proxy.data.DATASET_REGISTRY``): Fashion-MNIST / MNIST ``t10k-*``, CIFAR ``test_batch`` / ``test``,
an image folder's ``val/``. digits has no official test split: its test part is a fixed stratified
20 % of the 1,797 images (seed 0, ``nas.proxy.readers.digits_test_index``) that nas-train never trains
on. The proxy task (nas-search, nas-grid-scale, nas-proxy-check) still trains and holds out within all
1,797 images, so on digits the test part is held out from nas-train only, not from the search.

The training split is held as the trainer's ``train`` and the test split as its ``val``: the trainer's
single evaluation after the last step is the test score. The held-out part, when asked for, is a
second ``ProxyData`` over the same training split, scored after every epoch.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, cast

import numpy as np
import torch

from nas.final.config import FinalConfig, FinalError
from nas.proxy.data import DATASET_REGISTRY, DataConfig, ProxyData, TensorSplit, fit_resolution, stratified_split
from nas.proxy.imagefolder import FolderSplit
from nas.proxy.readers import DataError, digits_test_index

__all__ = ["CARVED_TEST", "FinalData", "load_final_data"]

# Datasets whose test split is carved from the training files: the indices nas-train must not train on.
CARVED_TEST: dict[str, Callable[[np.ndarray], np.ndarray]] = {"digits": digits_test_index}
_IMAGENET_MEAN = (123.675, 116.28, 103.53)
_IMAGENET_STD = (58.395, 57.12, 57.375)
_LOADER_WORKERS = 2


@dataclass(frozen=True)
class FinalData:
    """``task``: training split + test split (as ``val``); ``heldout``: training split + held-out part."""

    task: ProxyData
    heldout: ProxyData | None
    kind: str

    @property
    def num_train(self) -> int:
        return self.task.num_train

    @property
    def num_test(self) -> int:
        return self.task.num_val


def _split(labels: np.ndarray, pool: np.ndarray, cfg: FinalConfig) -> tuple[np.ndarray, np.ndarray]:
    """(training, held-out) indices of ``pool``: seeded and class-balanced, as the proxy task splits."""
    rng = np.random.default_rng(cfg.seed)
    heldout = np.array([], dtype=np.int64)
    if cfg.val_size:
        count = round(cfg.val_size * len(pool)) if cfg.val_size < 1 else int(cfg.val_size)
        if not 1 <= count < len(pool):
            raise FinalError(f"--val-size {cfg.val_size:g} leaves {count} of {len(pool)} training images held out, "
                             f"expected between 1 and {len(pool) - 1}")
        heldout, pool = stratified_split(labels, pool, count, rng)
    if cfg.train_size is not None and cfg.train_size < len(pool):
        pool, _ = stratified_split(labels, pool, cfg.train_size, rng)
    return pool, heldout


def _stats(images: torch.Tensor, in_chans: int) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and std (0..255) of uint8 ``(N, C, H, W)`` images, repeated to ``in_chans``."""
    x = images.double()
    mean = x.mean(dim=(0, 2, 3))
    std = (x.square().mean(dim=(0, 2, 3)) - mean.square()).clamp_min(1.0).sqrt()
    repeat = in_chans // images.shape[1]
    return (tuple(float(m) for m in mean for _ in range(repeat)), tuple(float(s) for s in std for _ in range(repeat)))


def _read(cfg: FinalConfig, resolution: int, test: bool) -> object:
    spec = DATASET_REGISTRY.lookup(cfg.dataset)
    reader = spec.read_test if test else spec.read_train
    if reader is None:
        usable = ", ".join(n for n, s in DATASET_REGISTRY.items() if s.read_test is not None)
        raise FinalError(f"--dataset {cfg.dataset!r} has no test split for nas-train to score on; use one of {usable}")
    data_dir = cfg.resolved_data_dir()
    if data_dir is None and spec.needs is not None:
        raise DataError(f"dataset {cfg.dataset!r} needs --data-dir ({spec.needs})")
    return reader(data_dir, DataConfig(cfg.dataset, data_dir, resolution=resolution, seed=cfg.seed))


def _arrays(cfg: FinalConfig, resolution: int, num_classes: int | None, in_chans: int) -> FinalData:
    images, labels = cast(tuple[np.ndarray, np.ndarray], _read(cfg, resolution, test=False))
    test_images, test_labels = cast(tuple[np.ndarray, np.ndarray], _read(cfg, resolution, test=True))
    pool = np.arange(len(labels))
    if cfg.dataset in CARVED_TEST:
        pool = np.setdiff1d(pool, CARVED_TEST[cfg.dataset](labels))
    train, heldout = _split(labels, pool, cfg)
    classes = num_classes or int(max(labels.max(), test_labels.max())) + 1
    train_split = TensorSplit(fit_resolution(images[train], resolution, in_chans),
                              torch.from_numpy(labels[train]), train)
    mean, std = _stats(train_split.images, in_chans)
    test_split = TensorSplit(fit_resolution(test_images, resolution, in_chans), torch.from_numpy(test_labels))
    task = ProxyData(cfg.dataset, classes, in_chans, resolution, train_split, test_split, train_split, mean, std)
    held = None
    if len(heldout):
        held_split = TensorSplit(fit_resolution(images[heldout], resolution, in_chans),
                                 torch.from_numpy(labels[heldout]), heldout)
        held = ProxyData(cfg.dataset, classes, in_chans, resolution, train_split, held_split, train_split, mean, std)
    return FinalData(task, held, "arrays")


def _folders(cfg: FinalConfig, resolution: int, in_chans: int) -> FinalData:
    classes, paths, labels = cast(tuple[list[str], list[str], np.ndarray], _read(cfg, resolution, test=False))
    test_classes, test_paths, test_labels = cast(tuple[list[str], list[str], np.ndarray],
                                                 _read(cfg, resolution, test=True))
    if test_classes != classes:
        extra = sorted(set(test_classes) ^ set(classes))
        raise DataError(f"{cfg.resolved_data_dir()}: val/ and train/ hold different class folders "
                        f"(e.g. {extra[0]!r}); the test split must have the training classes")
    train, heldout = _split(labels, np.arange(len(labels)), cfg)

    def split(files: list[str], index: np.ndarray, label_of: np.ndarray, is_train: bool) -> FolderSplit:
        return FolderSplit([files[i] for i in index], label_of[index], resolution, in_chans, is_train, _LOADER_WORKERS)

    train_split, calib = split(paths, train, labels, True), split(paths, train, labels, False)
    test_split = split(test_paths, np.arange(len(test_paths)), test_labels, False)
    task = ProxyData(cfg.dataset, len(classes), in_chans, resolution, train_split, test_split, calib,
                     _IMAGENET_MEAN, _IMAGENET_STD)
    held = None
    if len(heldout):
        held = ProxyData(cfg.dataset, len(classes), in_chans, resolution, train_split,
                         split(paths, heldout, labels, False), calib, _IMAGENET_MEAN, _IMAGENET_STD)
    return FinalData(task, held, "folder")


def load_final_data(cfg: FinalConfig, resolution: int, in_chans: int = 3) -> FinalData:
    """Read ``cfg.dataset``'s training and test splits at ``resolution``.

    Raises:
        FinalError: a dataset without a test split, a held-out part that leaves nothing.
        DataError: missing directory or file, a corrupt file, test classes unlike the training classes.
    """
    spec = DATASET_REGISTRY.lookup(cfg.dataset)
    if spec.read_test is None:
        _read(cfg, resolution, test=True)  # raises, naming the datasets that have one
    if spec.kind == "folder":
        return _folders(cfg, resolution, in_chans)
    return _arrays(cfg, resolution, spec.num_classes, in_chans)
