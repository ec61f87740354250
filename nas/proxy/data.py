"""Proxy-task datasets: a seeded, class-balanced held-out split of the training set.

No dataset is downloaded: ``digits`` ships with scikit-learn, the others are read from a
directory (``DataConfig.data_dir``). Images that fit in memory are held as one uint8 tensor at
the proxy resolution and batched by indexing it; image folders are decoded by DataLoader
workers. The official test split is never read: search decisions use the held-out split.
"""
from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Literal, cast

import numpy as np
import torch
import torch.nn.functional as F

from nas.config import Choices, Registry
from nas.proxy.imagefolder import FolderSplit, list_image_folder
from nas.proxy.readers import (
    DataError,
    imagefolder_test_dir,
    make_synthetic,
    read_cifar,
    read_cifar_test,
    read_digits,
    read_digits_test,
    read_idx_pair,
    read_idx_test,
)
from nas.proxy.split import Split

__all__ = ["DATASETS", "DATASET_REGISTRY", "DatasetSpec", "DataError", "DataConfig", "ProxyData", "TensorSplit",
           "load_data", "stratified_split"]

logger = logging.getLogger(__name__)

Arrays = tuple[np.ndarray, np.ndarray]  # uint8 (N, C, H, W) images, int64 (N,) labels
Listing = tuple[list[str], list[str], np.ndarray]  # an image folder: class names, image paths, int64 labels
Reader = Callable[[str | None, "DataConfig"], "Arrays | Listing"]  # (data directory, config) -> one split
_IMAGENET_MEAN = (123.675, 116.28, 103.53)  # 0..255 units
_IMAGENET_STD = (58.395, 57.12, 57.375)
_PAD_LIMIT = 4  # a size difference up to this many pixels is zero-padded (28 -> 32), not resized


@dataclass(frozen=True)
class DatasetSpec:
    """One dataset of the proxy task: how its splits are read, and what it holds.

    Attributes:
        read_train: ``(data_dir, config) -> split`` of the training files: ``Arrays`` for
            ``kind="arrays"`` (held in memory at the proxy resolution), a ``Listing`` for
            ``kind="folder"`` (decoded by DataLoader workers). ``data_dir`` is ``config.data_dir``
            or ``default_dir``; None only for a dataset that needs no directory (``needs`` None).
            The held-out split of every search decision is carved from it.
        read_test: The same for the official test split (Fashion-MNIST / MNIST ``t10k-*``, CIFAR
            ``test_batch`` / ``test``, an image folder's ``val/``), for the one final evaluation
            of ``nas-train``; None: no test split (nas-train refuses the dataset). digits has none: its
            ``read_test`` is a fixed stratified 20 % (``readers.digits_test_index``) that nas-train holds
            out of training, while the proxy task still sees all 1,797 images. ``load_data`` never calls
            it: nas-search, nas-grid-scale and nas-proxy-check never read a test split.
        num_classes: The number of classes; None: from the data (an image folder's class folders).
        default_dir: The directory read when ``data_dir`` is not given.
        needs: What ``data_dir`` must hold (for the error when it is missing); None: no directory.
        kind: ``"arrays"`` or ``"folder"``, the kind of ``read_train``'s result.
        help: A few words after the name in the ``--dataset`` help ("" for none).
    """

    read_train: Reader
    read_test: Reader | None = None
    num_classes: int | None = 10
    default_dir: str | None = None
    needs: str | None = "the folder with its files"
    kind: Literal["arrays", "folder"] = "arrays"
    help: str = ""


def _idx(data_dir: str | None, config: DataConfig) -> Arrays:
    return read_idx_pair(cast(str, data_dir))


def _cifar(classes: int) -> Reader:
    return lambda data_dir, config: read_cifar(cast(str, data_dir), classes)


def _idx_test(data_dir: str | None, config: DataConfig) -> Arrays:
    return read_idx_test(cast(str, data_dir))


def _cifar_test(classes: int) -> Reader:
    return lambda data_dir, config: read_cifar_test(cast(str, data_dir), classes)


# Adding a dataset is one entry: its name (the --dataset choice) and its spec; readers live in
# nas/proxy/readers.py (or a module beside it).
DATASET_REGISTRY: Registry[DatasetSpec] = Registry("--dataset", {
    "digits": DatasetSpec(lambda data_dir, config: read_digits(), lambda data_dir, config: read_digits_test(),
                          needs=None),
    "fashion-mnist": DatasetSpec(_idx, _idx_test, default_dir="/usr/share/datasets/fashion-mnist"),
    "mnist": DatasetSpec(_idx, _idx_test),
    "cifar10": DatasetSpec(_cifar(10), _cifar_test(10)),
    "cifar100": DatasetSpec(_cifar(100), _cifar_test(100), num_classes=100),
    "imagefolder": DatasetSpec(lambda data_dir, config: list_image_folder(cast(str, data_dir)),
                               lambda data_dir, config: list_image_folder(imagefolder_test_dir(cast(str, data_dir))),
                               num_classes=None, needs="a folder of <class>/<image> files", kind="folder"),
    "synthetic": DatasetSpec(lambda data_dir, config: make_synthetic(config.resolution, config.in_chans), needs=None),
}, error=DataError)
DATASETS = Choices(DATASET_REGISTRY)  # the names, read at every use


class _DefaultDirs(Mapping[str, str]):
    """Each dataset's ``default_dir``, read from the registry at every use."""

    def _dirs(self) -> dict[str, str]:
        return {name: spec.default_dir for name, spec in DATASET_REGISTRY.items() if spec.default_dir}

    def __getitem__(self, name: str) -> str:
        return self._dirs()[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._dirs())

    def __len__(self) -> int:
        return len(self._dirs())


DEFAULT_DIRS: Mapping[str, str] = _DefaultDirs()


@dataclass(frozen=True)
class DataConfig:
    """Which dataset, and how to cut and shape it for the proxy task.

    Attributes:
        name: one of ``DATASETS`` (the names of ``DATASET_REGISTRY``).
        data_dir: the dataset's directory; None for its spec's ``default_dir`` (Fashion-MNIST:
            ``/usr/share/datasets/fashion-mnist``; digits and synthetic need none).
        val_size: held-out images carved from the training set: a fraction if < 1, else a count.
        train_size: cap on the training images left after the split (seeded, class-balanced).
        resolution: the proxy resolution images are padded/resized/cropped to.
        in_chans: model input channels, 1 or 3 (grayscale is repeated, colour is converted).
        seed: seed of the split and of the subsample.
        workers: DataLoader worker processes (imagefolder only).
    """

    name: str = "digits"
    data_dir: str | None = None
    val_size: float = 0.1
    train_size: int | None = None
    resolution: int = 32
    in_chans: int = 3
    seed: int = 0
    workers: int = 2

    def __post_init__(self) -> None:
        DATASET_REGISTRY.lookup(self.name)
        if not (0 < self.val_size < 1 or (self.val_size >= 1 and float(self.val_size).is_integer())):
            raise DataError(f"val_size must be a fraction in (0, 1) or a whole count >= 1, but got {self.val_size!r}")
        if self.train_size is not None and self.train_size < 1:
            raise DataError(f"train_size must be >= 1 or None, but got {self.train_size!r}")
        if self.resolution < 8:
            raise DataError(f"resolution must be >= 8, but got {self.resolution!r}")
        if self.in_chans not in (1, 3):
            raise DataError(f"in_chans must be 1 or 3, but got {self.in_chans!r}")
        if self.seed < 0 or self.workers < 0:
            raise DataError(f"seed and workers must be >= 0, but got ({self.seed=}, {self.workers=})")


class TensorSplit(Split):
    """Images held in memory: uint8 ``(N, C, R, R)`` at the proxy resolution, int64 labels.

    ``source_index`` gives each image's position in the dataset's training files.
    """

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, source_index: np.ndarray | None = None):
        self.images, self.labels = images, labels
        self.source_index = np.arange(len(labels)) if source_index is None else source_index
        self._on_device: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}

    def __repr__(self) -> str:
        return f"TensorSplit({len(self)} images of {'x'.join(map(str, self.images.shape[1:]))})"

    def _batches(self, order: torch.Tensor, batch_size: int, seed: int, epoch: int,
                 pin_memory: bool) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for start in range(0, len(order), batch_size):
            index = order[start:start + batch_size]
            yield self.images[index], self.labels[index]

    def images_on(self, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """The whole split on ``device`` (copied once; a few MB for a proxy task)."""
        key = str(device)
        if key not in self._on_device:
            self._on_device[key] = (self.images.to(device), self.labels.to(device))
        return self._on_device[key]


@dataclass(frozen=True, eq=False)
class ProxyData:
    """The proxy task's data: a training split, a held-out split, and the input shape.

    ``batches`` yields normalized float images of shape ``(B, in_chans, resolution, resolution)``.
    """

    name: str
    num_classes: int
    in_chans: int
    resolution: int
    train: Split
    val: Split
    calib: Split = field(repr=False)  # training images, eval transform
    mean: tuple[float, ...] = field(repr=False)
    std: tuple[float, ...] = field(repr=False)

    @property
    def num_train(self) -> int:
        return len(self.train)

    @property
    def num_val(self) -> int:
        return len(self.val)

    def steps_per_epoch(self, batch_size: int, world_size: int = 1) -> int:
        """Full batches a process sees per epoch (the last partial batch is dropped)."""
        return self.num_train // world_size // batch_size

    def shard(self, split: str, *, epoch: int = 0, seed: int = 0, rank: int = 0, world_size: int = 1,
              limit: int | None = None) -> torch.Tensor:
        """Indices into ``split`` that process ``rank`` reads in ``epoch``.

        ``train`` and ``calib`` are shuffled by ``(seed, epoch)`` and cut into equal, disjoint
        shards; ``val`` is read in order, every ``world_size``-th image, so shards are disjoint
        and together cover it (its first ``limit`` images with ``limit``; ``val`` only).
        """
        if split == "val":
            return torch.arange(rank, self.num_val if limit is None else min(limit, self.num_val), world_size)
        if split not in ("train", "calib"):
            raise ValueError(f"unknown split {split!r}, expected 'train', 'calib' or 'val'")
        if limit is not None:
            raise ValueError(f"limit applies to the 'val' split only, but got {limit=} for {split!r}")
        generator = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
        order = torch.randperm(self.num_train, generator=generator)
        per_rank = self.num_train // world_size
        return order[rank * per_rank:(rank + 1) * per_rank]

    def batches(self, split: str, batch_size: int, *, epoch: int = 0, seed: int = 0, rank: int = 0,
                world_size: int = 1, device: str | torch.device = "cpu", channels_last: bool = True,
                augment: Callable[[torch.Tensor], torch.Tensor] | None = None, limit: int | None = None,
                ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Normalized ``(images, labels)`` batches of this process's shard of ``split``.

        ``train`` and ``calib`` drop the last partial batch; ``val`` keeps it. ``augment`` maps each
        uint8 ``(B, C, R, R)`` batch, on ``device``, before it is normalized (``nas-train``'s augmentation).
        ``limit``: read only the first ``limit`` images of ``val`` (``shard``).
        """
        device = torch.device(device)
        order = self.shard(split, epoch=epoch, seed=seed, rank=rank, world_size=world_size, limit=limit)
        source = getattr(self, split)
        mean = torch.tensor(self.mean, device=device).view(1, -1, 1, 1)
        inv_std = 1.0 / torch.tensor(self.std, device=device).view(1, -1, 1, 1)
        fmt = torch.channels_last if channels_last else torch.contiguous_format
        if isinstance(source, TensorSplit) and device.type != "cpu":
            images, labels = source.images_on(device)
            source = TensorSplit(images, labels)
            order = order.to(device)
        raw = source.batches(order, batch_size, split != "val", seed, epoch, device.type == "cuda")
        for images, labels in raw:
            images = images.to(device, non_blocking=True)
            if augment is not None:
                images = augment(images)
            x = torch.empty((len(images), self.in_chans, *images.shape[2:]), device=device, memory_format=fmt)
            torch.mul(images.float() - mean, inv_std, out=x)  # broadcasts 1 -> 3 channels
            yield x, labels.to(device, non_blocking=True)


def stratified_split(labels: np.ndarray, pool: np.ndarray, count: int,
                     rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Draw ``count`` indices of ``pool`` with each class in proportion to its share of ``pool``.

    Returns:
        ``(drawn, rest)``, both sorted.
    """
    classes, counts = np.unique(labels[pool], return_counts=True)
    quota = counts * (count / len(pool))
    take = np.floor(quota).astype(np.int64)
    by_remainder = np.argsort(-(quota - take), kind="stable")
    take[by_remainder[:count - int(take.sum())]] += 1
    drawn = [rng.permutation(pool[labels[pool] == c])[:k] for c, k in zip(classes, take)]
    drawn_all = np.sort(np.concatenate(drawn))
    return drawn_all, np.setdiff1d(pool, drawn_all)


def _split_indices(labels: np.ndarray, config: DataConfig) -> tuple[np.ndarray, np.ndarray]:
    total = len(labels)
    num_val = round(config.val_size * total) if config.val_size < 1 else int(config.val_size)
    if not 1 <= num_val < total:
        raise DataError(f"val_size={config.val_size!r} leaves {num_val} of {total} images held out, "
                        f"expected between 1 and {total - 1}")
    rng = np.random.default_rng(config.seed)
    val, train = stratified_split(labels, np.arange(total), num_val, rng)
    if config.train_size is not None and config.train_size < len(train):
        train, _ = stratified_split(labels, train, config.train_size, rng)
    logger.debug("%s: %d training, %d held-out images", config.name, len(train), len(val))
    return train, val


def fit_resolution(images: np.ndarray, resolution: int, in_chans: int, chunk: int = 4096) -> torch.Tensor:
    """uint8 ``(N, C, H, W)`` -> uint8 ``(N, C', R, R)``.

    A square image up to 4 pixels smaller is zero-padded (28 -> 32, the LeNet convention);
    any other size is resized bilinearly (antialiased when shrinking). Colour becomes
    grayscale (ITU-R 601 luma) when ``in_chans`` is 1; grayscale stays one channel here and is
    repeated when batches are normalized.
    """
    out = torch.from_numpy(np.array(images, dtype=np.uint8))  # a writable copy
    if out.shape[1] == 3 and in_chans == 1:
        luma = torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)
        out = torch.cat([(c.float() * luma).sum(1, keepdim=True).round().to(torch.uint8) for c in out.split(chunk)])
    height, width = out.shape[2:]
    if height == width == resolution:
        return out
    if height == width and 0 < resolution - height <= _PAD_LIMIT:
        before = (resolution - height) // 2
        return F.pad(out, (before, resolution - height - before) * 2)
    resized = [
        F.interpolate(c.float(), size=(resolution, resolution), mode="bilinear", align_corners=False,
                      antialias=resolution < max(height, width)).round().clamp(0, 255).to(torch.uint8)
        for c in out.split(chunk)
    ]
    return torch.cat(resized)


def _read_train(config: DataConfig) -> Arrays | Listing:
    """The training split of ``config.name``, as its spec reads it (never the test split)."""
    spec = DATASET_REGISTRY.lookup(config.name)
    data_dir = config.data_dir or spec.default_dir
    if data_dir is None and spec.needs is not None:
        raise DataError(f"dataset {config.name!r} needs data_dir ({spec.needs})")
    return spec.read_train(data_dir, config)


def _load_folder(config: DataConfig, listing: Listing) -> ProxyData:
    classes, paths, labels = listing
    train, val = _split_indices(labels, config)

    def split(index: np.ndarray, is_train: bool) -> FolderSplit:
        return FolderSplit([paths[i] for i in index], labels[index], config.resolution, config.in_chans,
                           is_train, config.workers)

    gray = config.in_chans == 1
    mean = (float(np.dot(_IMAGENET_MEAN, (0.299, 0.587, 0.114))),) if gray else _IMAGENET_MEAN
    std = (float(np.mean(_IMAGENET_STD)),) if gray else _IMAGENET_STD
    return ProxyData(config.name, len(classes), config.in_chans, config.resolution,
                     split(train, True), split(val, False), split(train, False), mean, std)


def _channel_stats(images: torch.Tensor, chunk: int = 4096) -> tuple[list[float], list[float]]:
    """Per-channel mean and standard deviation (0..255 units) of uint8 ``(N, C, H, W)`` images."""
    total = torch.zeros(images.shape[1], dtype=torch.float64)
    squares = torch.zeros_like(total)
    for c in images.split(chunk):
        c = c.double()
        total += c.sum(dim=(0, 2, 3))
        squares += c.square().sum(dim=(0, 2, 3))
    count = images.numel() / images.shape[1]
    mean = total / count
    std = (squares / count - mean.square()).clamp_min(1.0).sqrt()
    return mean.tolist(), std.tolist()


def load_data(config: DataConfig) -> ProxyData:
    """Load ``config.name`` and carve the held-out split from its training set.

    Raises:
        DataError: unknown dataset, missing directory, missing/truncated/corrupt file,
            image/label count mismatch, empty class folder, a split that leaves nothing.
    """
    spec = DATASET_REGISTRY.lookup(config.name)
    if spec.kind == "folder":
        return _load_folder(config, cast(Listing, _read_train(config)))
    images, labels = cast(Arrays, _read_train(config))
    num_classes = spec.num_classes if spec.num_classes is not None else int(labels.max()) + 1
    train, val = _split_indices(labels, config)
    pixels = fit_resolution(images, config.resolution, config.in_chans)
    labels_t = torch.from_numpy(labels)
    train_split = TensorSplit(pixels[train], labels_t[train], train)
    channel_means, channel_stds = _channel_stats(train_split.images)
    repeat = config.in_chans // len(channel_means)  # 1 -> 3 channels: same statistics per channel
    mean = tuple(m for m in channel_means for _ in range(repeat))
    std = tuple(s for s in channel_stds for _ in range(repeat))
    return ProxyData(config.name, num_classes, config.in_chans, config.resolution, train_split,
                     TensorSplit(pixels[val], labels_t[val], val), train_split, mean, std)
