"""ImageNet-style class folders of JPEG/PNG files, decoded by worker processes.

Train transform: random resized crop (scale 0.08..1, aspect 3/4..4/3) and horizontal flip.
Eval transform: resize the shorter side to ``resolution / 0.875``, center crop.
The random draws of a sample come from ``(seed, epoch, index)``, so an epoch's batches are
the same whatever the number of workers.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import torch

from nas.proxy.readers import DataError
from nas.proxy.split import Split

__all__ = ["IMAGE_EXTENSIONS", "list_image_folder", "FolderSplit"]

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp")
_EVAL_CROP = 0.875


# The first bytes of each format PIL decodes here (a file's content, not its extension, decides).
_SIGNATURES = {"JPEG": b"\xff\xd8", "PNG": b"\x89PNG\r\n\x1a\n", "BMP": b"BM", "WebP": b"RIFF"}


def _check_header(path: str) -> None:
    """Refuse a file that is not a JPEG, PNG, BMP or WebP image by its first bytes (a zero-byte JPEG).

    Raises:
        DataError: naming the file and what its first bytes are.
    """
    try:
        with open(path, "rb") as f:
            head = f.read(12)
    except OSError as exc:
        raise DataError(f"{path}: cannot be read ({exc.strerror or exc})") from None
    if any(head.startswith(sig) for sig in _SIGNATURES.values()) and (head[:4] != b"RIFF" or head[8:12] == b"WEBP"):
        return
    what = "an empty file (0 bytes)" if not head else f"not an image (it starts with {head[:8]!r})"
    raise DataError(f"{path}: {what}; expected a {', '.join(_SIGNATURES)} image: remove or replace it")


def list_image_folder(directory: str | Path) -> tuple[list[str], list[str], np.ndarray]:
    """List ``directory/<class>/<image>`` (or ``directory/train/<class>/<image>``).

    Returns:
        ``(class names, file paths, labels)``, classes and files in sorted order.

    Raises:
        DataError: missing directory, no class folders, a class folder without images, a file
            that is not an image by its first bytes (a zero-byte JPEG).
    """
    root = Path(directory).expanduser()
    if not root.is_dir():
        raise DataError(f"data directory {str(root)!r} does not exist or is not a directory")
    if (root / "train").is_dir():
        root = root / "train"
    classes = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not classes:
        raise DataError(f"{root}: no class folders (expected {root}/<class>/<image>.jpg)")
    paths: list[str] = []
    labels: list[int] = []
    for label, name in enumerate(classes):
        files = sorted(
            str(p) for p in (root / name).iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS
        )
        if not files:
            raise DataError(f"{root / name}: empty class folder (no {'/'.join(IMAGE_EXTENSIONS)} files)")
        for path in files:
            _check_header(path)
        paths += files
        labels += [label] * len(files)
    return classes, paths, np.asarray(labels, dtype=np.int64)


def _random_resized_box(width: int, height: int, rng: np.random.Generator) -> tuple[int, int, int, int]:
    area = width * height
    log_ratio = (math.log(3 / 4), math.log(4 / 3))
    for _ in range(10):
        target = area * rng.uniform(0.08, 1.0)
        ratio = math.exp(rng.uniform(*log_ratio))
        w = int(round(math.sqrt(target * ratio)))
        h = int(round(math.sqrt(target / ratio)))
        if 0 < w <= width and 0 < h <= height:
            left = int(rng.integers(0, width - w + 1))
            top = int(rng.integers(0, height - h + 1))
            return left, top, left + w, top + h
    side = min(width, height)  # fall back to a center crop
    left, top = (width - side) // 2, (height - side) // 2
    return left, top, left + side, top + side


def _eval_box(width: int, height: int) -> tuple[float, float, float, float]:
    side = min(width, height) * _EVAL_CROP
    left, top = (width - side) / 2, (height - side) / 2
    return left, top, left + side, top + side


class _FolderDataset(torch.utils.data.Dataset):
    def __init__(self, paths: Sequence[str], labels: np.ndarray, resolution: int, in_chans: int, train: bool):
        self.paths, self.labels = paths, labels
        self.resolution, self.mode, self.train = resolution, "L" if in_chans == 1 else "RGB", train

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, item: tuple[int, int, int]) -> tuple[torch.Tensor, int]:
        from PIL import Image

        index, seed, epoch = item
        path = self.paths[index]
        try:
            with Image.open(path) as file:
                img = file.convert(self.mode)
        except (OSError, ValueError) as e:
            raise DataError(f"{path}: cannot decode image ({e})") from None
        box: tuple[float, float, float, float]
        if self.train:
            rng = np.random.default_rng([seed, epoch, index])
            box = _random_resized_box(img.width, img.height, rng)
            flip = rng.random() < 0.5
        else:
            box, flip = _eval_box(img.width, img.height), False
        img = img.resize((self.resolution, self.resolution), Image.Resampling.BILINEAR, box=box)
        if flip:
            img = img.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        array = np.asarray(img, dtype=np.uint8)
        array = array[None] if array.ndim == 2 else array.transpose(2, 0, 1)
        return torch.from_numpy(array.copy()), int(self.labels[index])


class FolderSplit(Split):
    """A split of an image folder: file paths and labels, decoded on demand."""

    def __init__(self, paths: Sequence[str], labels: np.ndarray, resolution: int, in_chans: int,
                 train: bool, workers: int):
        self.labels = torch.as_tensor(labels)
        self.paths, self.workers = list(paths), workers
        self._dataset = _FolderDataset(paths, labels, resolution, in_chans, train)

    def __repr__(self) -> str:
        return f"FolderSplit({len(self)} images, {'train' if self._dataset.train else 'eval'} transform)"

    def _batches(self, order: torch.Tensor, batch_size: int, seed: int, epoch: int,
                 pin_memory: bool) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        items = [(int(i), seed, epoch) for i in order]
        batch_sampler = [items[s:s + batch_size] for s in range(0, len(items), batch_size)]
        loader = torch.utils.data.DataLoader(
            self._dataset, batch_sampler=batch_sampler, num_workers=self.workers, pin_memory=pin_memory
        )
        try:
            yield from loader
        except DataError as e:  # from a worker: keep the original one-line message
            raise DataError(str(e).strip().splitlines()[-1].split("DataError: ", 1)[-1]) from None
