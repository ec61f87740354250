"""Readers for the on-disk dataset formats: IDX (MNIST, Fashion-MNIST), CIFAR python pickles.

Each reader returns ``(images, labels)`` as numpy arrays: ``uint8 (N, C, H, W)`` and
``int64 (N,)``, and raises ``DataError`` with a one-line message naming the bad file.
``load_data`` reads the training files only; the ``*_test`` readers at the end read the official test
splits, for the one final evaluation of ``nas-train`` (``nas.final``): search decisions never use them.
"""
from __future__ import annotations

import gzip
import math
import pickle
import struct
import zlib
from pathlib import Path

import numpy as np

__all__ = ["DataError", "read_idx", "read_idx_pair", "read_cifar", "read_digits", "make_synthetic",
           "read_idx_test", "read_cifar_test", "DIGITS_TEST_FRACTION", "digits_test_index", "read_digits_test",
           "imagefolder_test_dir"]


class DataError(ValueError):
    """Bad dataset input: a one-line message naming the bad value and what was expected."""


_IDX_IMAGES = 0x00000803  # uint8, 3 dimensions
_IDX_LABELS = 0x00000801  # uint8, 1 dimension


def _read_bytes(path: Path) -> bytes:
    try:
        with open(path, "rb") as f:
            head = f.read(2)
        if head == b"\x1f\x8b":
            with gzip.open(path, "rb") as f:
                return f.read()
        return path.read_bytes()
    except EOFError:
        raise DataError(f"{path}: truncated gzip file (ended before its end-of-stream marker)") from None
    except (gzip.BadGzipFile, zlib.error) as e:
        raise DataError(f"{path}: corrupt gzip file ({e})") from None
    except OSError as e:
        raise DataError(f"{path}: cannot read ({e.strerror or e})") from None


def read_idx(path: str | Path, magic: int) -> np.ndarray:
    """Read one IDX file (raw or gzip) whose header must carry ``magic``.

    Args:
        path: the file.
        magic: ``0x00000803`` for an image file, ``0x00000801`` for a label file.

    Returns:
        The uint8 array with the header's shape.

    Raises:
        DataError: unreadable or truncated file, wrong magic number, size not matching the header.
    """
    path = Path(path)
    raw = _read_bytes(path)
    ndim = magic & 0xFF
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DataError(f"{path}: truncated IDX header ({len(raw)} bytes, expected at least {header})")
    (found,) = struct.unpack(">I", raw[:4])
    if found != magic:
        raise DataError(f"{path}: wrong magic number 0x{found:08x}, expected 0x{magic:08x}")
    dims = struct.unpack(f">{ndim}I", raw[4:header])
    size = math.prod(dims)  # Python ints: a crafted header cannot overflow the count
    if len(raw) - header != size:
        raise DataError(
            f"{path}: {len(raw) - header} data bytes but the header {tuple(dims)} says {size} (truncated file?)"
        )
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(dims)


def _find_file(directory: Path, stem: str) -> Path:
    names = (stem, stem + ".gz", stem.replace("-idx", ".idx"), stem.replace("-idx", ".idx") + ".gz")
    for name in names:
        if (directory / name).is_file():
            return directory / name
    raise DataError(f"{directory}: missing {stem}[.gz] (the standard IDX file name)")


def _read_idx_split(directory: str | Path, prefix: str, split: str, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    directory = _existing_dir(directory)
    images = read_idx(_find_file(directory, f"{prefix}-images-idx3-ubyte"), _IDX_IMAGES)
    labels = read_idx(_find_file(directory, f"{prefix}-labels-idx1-ubyte"), _IDX_LABELS)
    if len(images) != len(labels):
        raise DataError(f"{directory}: {len(images)} {split} images but {len(labels)} labels")
    _check_labels(labels, num_classes, directory)
    return images[:, None], labels.astype(np.int64)


def read_idx_pair(directory: str | Path, num_classes: int = 10) -> tuple[np.ndarray, np.ndarray]:
    """Read the training images and labels of an MNIST-style IDX directory.

    Raises:
        DataError: missing directory or file, bad file, image/label count mismatch, label out of range.
    """
    return _read_idx_split(directory, "train", "training", num_classes)


class _ArrayUnpickler(pickle.Unpickler):
    """Loads plain data and numpy arrays only: a CIFAR file cannot run code."""

    _ALLOWED = {
        ("numpy", "ndarray"), ("numpy", "dtype"),
        ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
        ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
    }

    def find_class(self, module: str, name: str):
        if (module, name) in self._ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name}")


def _load_pickle(path: Path) -> dict:
    try:
        with open(path, "rb") as f:
            batch = _ArrayUnpickler(f, encoding="bytes").load()
    except OSError as e:
        raise DataError(f"{path}: cannot read ({e.strerror or e})") from None
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError) as e:
        raise DataError(f"{path}: not a CIFAR python pickle ({e or 'truncated'})") from None
    if not isinstance(batch, dict):
        raise DataError(f"{path}: not a CIFAR python pickle (a {type(batch).__name__}, expected a dict)")
    return {k.decode() if isinstance(k, bytes) else k: v for k, v in batch.items()}


def read_cifar(directory: str | Path, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """Read the CIFAR-10 (``data_batch_1..5``) or CIFAR-100 (``train``) training pickles.

    ``directory`` may be the extracted folder or its parent (``cifar-10-batches-py``,
    ``cifar-100-python``).

    Raises:
        DataError: missing directory or file, bad pickle, wrong array shape, count mismatch.
    """
    files = [f"data_batch_{i}" for i in range(1, 6)] if num_classes == 10 else ["train"]
    return _read_cifar_files(directory, num_classes, files)


def _read_cifar_files(directory: str | Path, num_classes: int, files: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """The CIFAR python pickles ``files`` of ``directory`` (or its ``cifar-10-batches-py`` / ``cifar-100-python``)."""
    directory = _existing_dir(directory)
    sub, key = ("cifar-10-batches-py", "labels") if num_classes == 10 else ("cifar-100-python", "fine_labels")
    if not (directory / files[0]).exists() and (directory / sub).is_dir():
        directory = directory / sub
    images, labels = [], []
    for name in files:
        path = directory / name
        if not path.is_file():
            raise DataError(f"{directory}: missing {name} (the standard CIFAR python batch)")
        batch = _load_pickle(path)
        if "data" not in batch or key not in batch:
            raise DataError(f"{path}: missing 'data' or '{key}' entry, found {sorted(batch)}")
        data, found = _cifar_arrays(path, batch["data"], batch[key], key)
        images.append(data.reshape(-1, 3, 32, 32))
        labels.append(found)
    labels_all = np.concatenate(labels)
    _check_labels(labels_all, num_classes, directory)
    return np.concatenate(images), labels_all


def _cifar_arrays(path: Path, data: object, labels: object, key: str) -> tuple[np.ndarray, np.ndarray]:
    """The ``data`` and labels of one CIFAR batch, checked: uint8 (N, 3072) images, N whole-number labels."""
    expected = "expected a uint8 array of shape (N, 3072)"
    if not isinstance(data, np.ndarray):
        raise DataError(f"{path}: 'data' is a {type(data).__name__}, {expected}")
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
        raise DataError(f"{path}: 'data' is a {data.dtype} array of shape {data.shape}, {expected}")
    found = np.asarray(labels) if isinstance(labels, (list, tuple, np.ndarray)) else None
    if found is None or found.ndim != 1 or not (found.size == 0 or np.issubdtype(found.dtype, np.integer)):
        what = f"a {type(labels).__name__}" + ("" if found is None else f" ({found.dtype}, shape {found.shape})")
        raise DataError(f"{path}: '{key}' is {what}, expected a list of whole-number labels")
    if len(data) != len(found):
        raise DataError(f"{path}: {len(data)} images but {len(found)} labels")
    return data, found.astype(np.int64)


def read_digits() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's bundled 8x8 digits (1,797 images), scaled from 0..16 to 0..255."""
    try:
        from sklearn.datasets import load_digits
    except ImportError:
        raise DataError("dataset 'digits' needs scikit-learn (pip install scikit-learn)") from None
    digits = load_digits()
    images = np.rint(digits.images * (255.0 / 16.0)).astype(np.uint8)
    return images[:, None], digits.target.astype(np.int64)


def make_synthetic(
    resolution: int, channels: int, num_images: int = 2000, num_classes: int = 10, seed: int = 1234
) -> tuple[np.ndarray, np.ndarray]:
    """Generated images whose class is a smooth random pattern under pixel noise.

    A small CNN learns it within an epoch; a model that ignores its input stays at chance.
    The images are the same for every call with the same arguments.
    """
    rng = np.random.default_rng(seed)
    coarse = rng.standard_normal((num_classes, channels, 4, 4))
    grid = np.linspace(0, 3, resolution)
    lo = np.floor(grid).astype(int).clip(0, 2)
    frac = grid - lo
    rows = coarse[:, :, lo] * (1 - frac)[None, None, :, None] + coarse[:, :, lo + 1] * frac[None, None, :, None]
    patterns = rows[..., lo] * (1 - frac) + rows[..., lo + 1] * frac  # bilinear upsample to (res, res)
    labels = rng.permutation(np.arange(num_images) % num_classes)
    noise = rng.standard_normal((num_images, channels, resolution, resolution))
    images = 128 + 40 * patterns[labels] + 50 * noise
    return np.clip(np.rint(images), 0, 255).astype(np.uint8), labels.astype(np.int64)


def _existing_dir(directory: str | Path) -> Path:
    directory = Path(directory).expanduser()
    if not directory.is_dir():
        raise DataError(f"data directory {str(directory)!r} does not exist or is not a directory")
    return directory


def _check_labels(labels: np.ndarray, num_classes: int, where: Path) -> None:
    if len(labels) and (labels.min() < 0 or labels.max() >= num_classes):
        raise DataError(f"{where}: labels span {labels.min()}..{labels.max()}, expected 0..{num_classes - 1}")


# -- the official test splits: read by nas-train only (nas.final), never by load_data --------------------------------
def read_idx_test(directory: str | Path, num_classes: int = 10) -> tuple[np.ndarray, np.ndarray]:
    """Read the test images and labels (``t10k-*``) of an MNIST-style IDX directory.

    Raises:
        DataError: missing directory or file, bad file, image/label count mismatch, label out of range.
    """
    return _read_idx_split(directory, "t10k", "test", num_classes)


def read_cifar_test(directory: str | Path, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """Read the CIFAR-10 ``test_batch`` or CIFAR-100 ``test`` pickle (``directory`` as in ``read_cifar``).

    Raises:
        DataError: missing directory or file, bad pickle, wrong array shape, count mismatch.
    """
    return _read_cifar_files(directory, num_classes, ["test_batch" if num_classes == 10 else "test"])


DIGITS_TEST_FRACTION = 0.2  # digits has no official test split: a fixed stratified 20 % of the 1,797 images


def digits_test_index(labels: np.ndarray | None = None) -> np.ndarray:
    """Sorted indices of digits' test part: a stratified 20 % (359 of 1,797 images) drawn with seed 0.

    Each class gives its share (largest remainder); the draw never changes. ``nas-train`` trains on the
    other 1,438 images and scores on these; the proxy task (``load_data``) still sees all 1,797.
    """
    if labels is None:
        labels = read_digits()[1]
    rng = np.random.default_rng(0)
    classes, counts = np.unique(labels, return_counts=True)
    quota = counts * DIGITS_TEST_FRACTION
    take = np.floor(quota).astype(np.int64)
    order = np.argsort(-(quota - take), kind="stable")
    take[order[:round(len(labels) * DIGITS_TEST_FRACTION) - int(take.sum())]] += 1
    drawn = [rng.permutation(np.flatnonzero(labels == c))[:k] for c, k in zip(classes, take)]
    return np.sort(np.concatenate(drawn))


def read_digits_test() -> tuple[np.ndarray, np.ndarray]:
    """digits' test part (``digits_test_index``), scaled as ``read_digits``."""
    images, labels = read_digits()
    index = digits_test_index(labels)
    return images[index], labels[index]


def imagefolder_test_dir(directory: str | Path) -> Path:
    """The ``val/`` folder beside ``train/`` of an image folder: its official test split.

    Raises:
        DataError: the directory or its ``val/`` folder is missing.
    """
    root = _existing_dir(directory)
    if not (root / "val").is_dir():
        raise DataError(f"{root}: no val/ folder, the test split nas-train scores on "
                        f"(expected {root}/train/<class>/<image> and {root}/val/<class>/<image>)")
    return root / "val"
