"""Datasets of the proxy task: real files, the held-out split, shapes, and one-line errors."""
from __future__ import annotations

import gzip
import pickle
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from nas.proxy.data import DATASETS, DataConfig, DataError, fit_resolution, load_data, stratified_split
from nas.proxy.readers import read_idx

FMNIST = Path("/usr/share/datasets/fashion-mnist")
needs_fmnist = pytest.mark.skipif(not FMNIST.is_dir(), reason="apt-get install dataset-fashion-mnist")


def _raw_idx(name: str) -> bytes:
    with gzip.open(FMNIST / f"{name}.gz", "rb") as f:
        return f.read()


def _idx_bytes(array: np.ndarray, magic: int) -> bytes:
    return struct.pack(f">I{array.ndim}I", magic, *array.shape) + array.astype(np.uint8).tobytes()


@pytest.fixture(scope="module")
def fmnist_head() -> tuple[np.ndarray, np.ndarray]:
    """The first 300 real Fashion-MNIST training images and labels."""
    if not FMNIST.is_dir():
        pytest.skip("apt-get install dataset-fashion-mnist")
    images = np.frombuffer(_raw_idx("train-images-idx3-ubyte"), np.uint8, offset=16).reshape(-1, 28, 28)
    labels = np.frombuffer(_raw_idx("train-labels-idx1-ubyte"), np.uint8, offset=8)
    return images[:300].copy(), labels[:300].copy()


def _write_idx_dir(directory: Path, images: np.ndarray, labels: np.ndarray, gz: bool = True,
                   image_name: str = "train-images-idx3-ubyte") -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    for name, blob in ((image_name, _idx_bytes(images, 0x803)),
                       ("train-labels-idx1-ubyte", _idx_bytes(labels, 0x801))):
        if gz:
            with gzip.open(directory / f"{name}.gz", "wb") as f:
                f.write(blob)
        else:
            (directory / name).write_bytes(blob)
    return directory


# ---------------------------------------------------------------- config
@pytest.mark.parametrize("kwargs, fragment", [
    ({"name": "imagenet"}, "'imagenet'"),
    ({"val_size": 0}, "val_size"),
    ({"val_size": 2.5}, "2.5"),
    ({"train_size": 0}, "train_size"),
    ({"resolution": 4}, "resolution"),
    ({"in_chans": 2}, "in_chans"),
    ({"seed": -1}, "seed"),
])
def test_bad_config_names_the_value(kwargs: dict, fragment: str) -> None:
    with pytest.raises(DataError, match=fragment) as info:
        DataConfig(**kwargs)
    assert "\n" not in str(info.value)
    assert isinstance(info.value, ValueError)


def test_datasets_tuple_is_the_documented_one() -> None:
    assert DATASETS == ("digits", "fashion-mnist", "mnist", "cifar10", "cifar100", "imagefolder", "synthetic")


# ---------------------------------------------------------------- digits and the split
def test_digits_split_is_disjoint_balanced_and_seeded() -> None:
    data = load_data(DataConfig("digits", val_size=0.1, seed=3))
    assert (data.num_train, data.num_val, data.num_classes) == (1617, 180, 10)
    train, val = data.train.source_index, data.val.source_index
    assert len(np.intersect1d(train, val)) == 0 and len(np.union1d(train, val)) == 1797
    from sklearn.datasets import load_digits

    all_labels = load_digits().target
    share = np.bincount(all_labels, minlength=10) * 0.1
    assert np.all(np.abs(np.bincount(data.val.labels.numpy(), minlength=10) - share) < 1)
    same = load_data(DataConfig("digits", val_size=0.1, seed=3))
    other = load_data(DataConfig("digits", val_size=0.1, seed=4))
    assert np.array_equal(same.val.source_index, val)
    assert not np.array_equal(other.val.source_index, val)


def test_val_count_and_train_cap_are_class_balanced() -> None:
    data = load_data(DataConfig("digits", val_size=500, train_size=1000))
    assert (data.num_val, data.num_train) == (500, 1000)
    counts = np.bincount(data.train.labels.numpy(), minlength=10)
    assert counts.min() >= 97 and counts.max() <= 103  # digits has 174..183 images a class
    assert len(np.intersect1d(data.train.source_index, data.val.source_index)) == 0


def test_stratified_split_takes_exact_proportional_shares() -> None:
    labels = np.array([0] * 60 + [1] * 30 + [2] * 10)
    drawn, rest = stratified_split(labels, np.arange(100), 10, np.random.default_rng(0))
    assert np.bincount(labels[drawn]).tolist() == [6, 3, 1]
    assert len(rest) == 90 and len(np.intersect1d(drawn, rest)) == 0


def test_split_that_leaves_nothing_is_an_error() -> None:
    with pytest.raises(DataError, match="val_size=1797"):
        load_data(DataConfig("digits", val_size=1797))


@pytest.mark.parametrize("in_chans", [1, 3])
def test_batches_are_normalized_channels_last_at_the_proxy_resolution(in_chans: int) -> None:
    data = load_data(DataConfig("digits", resolution=24, in_chans=in_chans))
    batches = list(data.batches("train", 100, epoch=0))
    assert len(batches) == data.num_train // 100  # the partial batch is dropped
    x, y = batches[0]
    assert x.shape == (100, in_chans, 24, 24) and x.dtype == torch.float32 and y.dtype == torch.int64
    assert x.is_contiguous(memory_format=torch.channels_last)
    every = torch.cat([b[0] for b in batches])
    assert abs(every.mean().item()) < 0.05 and abs(every.std().item() - 1) < 0.05
    if in_chans == 3:
        assert torch.equal(x[:, 0], x[:, 2])  # grayscale repeated
    val = list(data.batches("val", 64))
    assert sum(len(b[1]) for b in val) == data.num_val  # the held-out split keeps its last batch


def test_train_batches_are_reshuffled_each_epoch_and_seeded() -> None:
    data = load_data(DataConfig("digits"))
    first = [y for _, y in data.batches("train", 128, epoch=0, seed=1)]
    again = [y for _, y in data.batches("train", 128, epoch=0, seed=1)]
    second = [y for _, y in data.batches("train", 128, epoch=1, seed=1)]
    assert all(torch.equal(a, b) for a, b in zip(first, again))
    assert not all(torch.equal(a, b) for a, b in zip(first, second))


def test_shards_are_disjoint_equal_and_cover_the_held_out_split() -> None:
    data = load_data(DataConfig("digits"))
    train = [data.shard("train", epoch=2, seed=5, rank=r, world_size=3) for r in range(3)]
    assert len({len(s) for s in train}) == 1 and len(torch.cat(train).unique()) == 3 * len(train[0])
    val = torch.cat([data.shard("val", rank=r, world_size=3) for r in range(3)])
    assert sorted(val.tolist()) == list(range(data.num_val))


def test_fit_resolution_pads_28_to_32_and_resizes_otherwise() -> None:
    images = np.arange(2 * 28 * 28, dtype=np.int64).reshape(2, 1, 28, 28).astype(np.uint8)
    padded = fit_resolution(images, 32, 1)
    assert padded.shape == (2, 1, 32, 32)
    assert torch.equal(padded[:, :, 2:30, 2:30], torch.from_numpy(images))
    assert padded[:, :, :2].sum() == 0 and padded[:, :, :, 30:].sum() == 0
    assert fit_resolution(images, 56, 1).shape == (2, 1, 56, 56)
    colour = np.stack([np.full((4, 9, 9), v, np.uint8) for v in (200, 100, 0)], axis=1)
    assert fit_resolution(colour, 9, 1)[0, 0, 0, 0].item() == round(0.299 * 200 + 0.587 * 100)


def test_synthetic_needs_no_files() -> None:
    data = load_data(DataConfig("synthetic", resolution=16, val_size=200))
    assert (data.num_train, data.num_val, data.num_classes) == (1800, 200, 10)
    x, _ = next(data.batches("train", 32))
    assert x.shape == (32, 3, 16, 16)


# ---------------------------------------------------------------- Fashion-MNIST, the real files
@needs_fmnist
def test_fashion_mnist_default_directory_real_files() -> None:
    data = load_data(DataConfig("fashion-mnist", val_size=0.1, train_size=10_000, seed=0))
    assert (data.num_train, data.num_val, data.num_classes, data.resolution) == (10_000, 6_000, 10, 32)
    assert np.bincount(data.train.labels.numpy()).tolist() == [1000] * 10
    assert np.bincount(data.val.labels.numpy()).tolist() == [600] * 10
    raw = np.frombuffer(_raw_idx("train-images-idx3-ubyte"), np.uint8, offset=16).reshape(-1, 28, 28)
    k = int(data.train.source_index[0])
    assert np.array_equal(data.train.images[0, 0, 2:30, 2:30].numpy(), raw[k])
    assert data.train.images.shape == (10_000, 1, 32, 32)


def test_mnist_style_directory_raw_files_with_dot_names(tmp_path: Path, fmnist_head) -> None:
    images, labels = fmnist_head
    _write_idx_dir(tmp_path, images, labels, gz=False, image_name="train-images.idx3-ubyte")
    data = load_data(DataConfig("mnist", data_dir=str(tmp_path), val_size=30, resolution=28, in_chans=1))
    assert (data.num_train, data.num_val) == (270, 30)
    order = np.argsort(data.train.source_index)
    assert np.array_equal(data.train.images.numpy()[order, 0], images[np.sort(data.train.source_index)])


def _bad(tmp_path: Path, fmnist_head, what: str) -> Path:
    images, labels = fmnist_head
    d = _write_idx_dir(tmp_path / what, images, labels)
    img = d / "train-images-idx3-ubyte.gz"
    if what == "truncated-gzip":
        img.write_bytes(img.read_bytes()[:-300])
    elif what == "truncated-data":
        blob = _idx_bytes(images, 0x803)[:-784]
        img.write_bytes(gzip.compress(blob))
    elif what == "magic":
        img.write_bytes(gzip.compress(_idx_bytes(images, 0x801)[:4] + _idx_bytes(images, 0x803)[4:]))
    elif what == "count":
        (d / "train-labels-idx1-ubyte.gz").write_bytes(gzip.compress(_idx_bytes(labels[:-1], 0x801)))
    elif what == "labels":
        (d / "train-labels-idx1-ubyte.gz").write_bytes(gzip.compress(_idx_bytes(labels + 10, 0x801)))
    elif what == "missing":
        img.unlink()
    return d


@pytest.mark.parametrize("what, message", [
    ("truncated-gzip", r"train-images-idx3-ubyte\.gz: truncated gzip file"),
    ("truncated-data", r"234416 data bytes but the header \(300, 28, 28\) says 235200"),
    ("magic", r"wrong magic number 0x00000801, expected 0x00000803"),
    ("count", r"300 training images but 299 labels"),
    ("labels", r"labels span 10\.\.19, expected 0\.\.9"),
    ("missing", r"missing train-images-idx3-ubyte\[\.gz\]"),
])
def test_bad_idx_files_give_one_line_errors(tmp_path: Path, fmnist_head, what: str, message: str) -> None:
    d = _bad(tmp_path, fmnist_head, what)
    with pytest.raises(DataError, match=message) as info:
        load_data(DataConfig("fashion-mnist", data_dir=str(d)))
    assert "\n" not in str(info.value)


def test_missing_directory_and_missing_data_dir(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="does not exist"):
        load_data(DataConfig("fashion-mnist", data_dir=str(tmp_path / "nope")))
    with pytest.raises(DataError, match="'mnist' needs data_dir"):
        load_data(DataConfig("mnist"))


def test_read_idx_rejects_a_short_header(tmp_path: Path) -> None:
    (tmp_path / "x").write_bytes(b"\x00\x00\x08")
    with pytest.raises(DataError, match="truncated IDX header"):
        read_idx(tmp_path / "x", 0x803)


# ---------------------------------------------------------------- CIFAR pickles
def _write_cifar10(root: Path, per_batch: int = 40) -> np.ndarray:
    d = root / "cifar-10-batches-py"
    d.mkdir(parents=True)
    rng = np.random.default_rng(0)
    first = None
    for i in range(1, 6):
        data = rng.integers(0, 256, (per_batch, 3072), dtype=np.uint8)
        first = data if first is None else first
        batch = {b"data": data, b"labels": [int(v) for v in np.arange(per_batch) % 10]}
        (d / f"data_batch_{i}").write_bytes(pickle.dumps(batch))
    return first


def test_cifar10_pickles_from_the_parent_directory(tmp_path: Path) -> None:
    first = _write_cifar10(tmp_path)
    data = load_data(DataConfig("cifar10", data_dir=str(tmp_path), val_size=0.2))
    assert (data.num_train, data.num_val, data.num_classes) == (160, 40, 10)
    k = int(np.flatnonzero(data.train.source_index == 0)[0])
    assert np.array_equal(data.train.images[k].numpy(), first[0].reshape(3, 32, 32))


def test_cifar100_and_bad_pickles(tmp_path: Path) -> None:
    d = tmp_path / "cifar-100-python"
    d.mkdir()
    batch = {b"data": np.zeros((200, 3072), np.uint8), b"fine_labels": list(np.arange(200) % 100)}
    (d / "train").write_bytes(pickle.dumps(batch))
    assert load_data(DataConfig("cifar100", data_dir=str(tmp_path), val_size=100)).num_classes == 100
    (d / "train").write_bytes(pickle.dumps({b"data": np.zeros((10, 3072), np.uint8), b"fine_labels": [0] * 9}))
    with pytest.raises(DataError, match="10 images but 9 labels"):
        load_data(DataConfig("cifar100", data_dir=str(d)))

    class Evil:
        def __reduce__(self):
            return (print, ("side effect",))

    (d / "train").write_bytes(pickle.dumps(Evil()))
    with pytest.raises(DataError, match="refusing to load builtins.print"):
        load_data(DataConfig("cifar100", data_dir=str(d)))
    (d / "train").write_bytes(pickle.dumps(batch)[:100])
    with pytest.raises(DataError, match="not a CIFAR python pickle"):
        load_data(DataConfig("cifar100", data_dir=str(d)))


@pytest.mark.parametrize("data, labels, message", [
    ("hello", [0], r"'data' is a str, expected a uint8 array of shape \(N, 3072\)$"),
    (np.full((4, 3072), 0.5), [0] * 4, r"'data' is a float64 array of shape \(4, 3072\), expected a uint8"),
    (np.zeros((4, 100), np.uint8), [0] * 4, r"'data' is a uint8 array of shape \(4, 100\)"),
    (np.zeros((4, 3072), np.uint8), "abcd", r"'fine_labels' is a str, expected a list of whole-number labels$"),
    (np.zeros((4, 3072), np.uint8), None, r"'fine_labels' is a NoneType, expected"),
    (np.zeros((4, 3072), np.uint8), [0.5] * 4, r"'fine_labels' is a list \(float64, shape \(4,\)\), expected"),
    (np.zeros((4, 3072), np.uint8), [[0]] * 4, r"'fine_labels' is a list \(int64, shape \(4, 1\)\), expected"),
])
def test_cifar_pickles_with_wrong_types_inside_give_one_line(tmp_path: Path, data, labels, message) -> None:
    d = tmp_path / "cifar-100-python"
    d.mkdir()
    (d / "train").write_bytes(pickle.dumps({b"data": data, b"fine_labels": labels}))
    with pytest.raises(DataError, match=message):
        load_data(DataConfig("cifar100", data_dir=str(d), val_size=1))


def test_a_crafted_idx_header_is_counted_without_overflow(tmp_path: Path) -> None:
    (tmp_path / "x").write_bytes(b"\x00\x00\x08\x03" + (10**9).to_bytes(4, "big") + (10**5).to_bytes(4, "big") * 2)
    with pytest.raises(DataError, match=r"0 data bytes but the header \(1000000000, 100000, 100000\) says "
                                        r"10000000000000000000 \(truncated"):
        read_idx(tmp_path / "x", 0x803)


# ---------------------------------------------------------------- image folders
def _write_folder(root: Path, classes: int = 3, per_class: int = 12) -> Path:
    from PIL import Image
    from sklearn.datasets import load_digits

    digits = load_digits()
    for c in range(classes):
        (root / "train" / f"class{c}").mkdir(parents=True)
        images = digits.images[digits.target == c][:per_class]
        for i, img in enumerate(images):
            pixels = np.rint(img * 255 / 16).astype(np.uint8)
            rgb = np.stack([pixels, 255 - pixels, pixels], axis=-1).repeat(6, 0).repeat(5, 1)  # 48x40, not square
            Image.fromarray(rgb).save(root / "train" / f"class{c}" / f"{i}.{'png' if i % 2 else 'jpg'}")
    return root


def test_image_folder_loads_with_train_and_eval_transforms(tmp_path: Path) -> None:
    root = _write_folder(tmp_path)
    config = DataConfig("imagefolder", data_dir=str(root), val_size=6, resolution=24, workers=0)
    data = load_data(config)
    assert (data.num_classes, data.num_train, data.num_val) == (3, 30, 6)
    x, y = next(data.batches("train", 10, epoch=0, seed=1))
    assert x.shape == (10, 3, 24, 24) and set(y.tolist()) <= {0, 1, 2}
    again, _ = next(data.batches("train", 10, epoch=0, seed=1))
    other, _ = next(data.batches("train", 10, epoch=1, seed=1))
    assert torch.equal(x, again) and not torch.equal(x[:4], other[:4])
    val = [b for b in data.batches("val", 4)]
    assert sum(len(b[1]) for b in val) == 6
    in_workers = load_data(DataConfig("imagefolder", data_dir=str(root), val_size=6, resolution=24, workers=2))
    with_workers, _ = next(in_workers.batches("train", 10, epoch=0, seed=1))
    assert torch.equal(x, with_workers)  # the draws depend on (seed, epoch, index), not on the workers
    gray = load_data(DataConfig("imagefolder", data_dir=str(root), val_size=6, resolution=24, in_chans=1, workers=0))
    assert next(gray.batches("val", 4))[0].shape == (4, 1, 24, 24)


def test_image_folder_errors(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="no class folders"):
        load_data(DataConfig("imagefolder", data_dir=str(tmp_path)))
    root = _write_folder(tmp_path / "ok", classes=2, per_class=4)
    (root / "train" / "class9").mkdir()
    (root / "train" / "class9" / "notes.txt").write_text("not an image")
    with pytest.raises(DataError, match=r"class9: empty class folder"):
        load_data(DataConfig("imagefolder", data_dir=str(root)))
    (root / "train" / "class9" / "broken.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    data = load_data(DataConfig("imagefolder", data_dir=str(root), val_size=2, workers=0))
    with pytest.raises(DataError, match=r"broken\.jpg: cannot decode image"):
        for _ in data.batches("calib", 1):
            pass
    with pytest.raises(DataError, match="'imagefolder' needs data_dir"):
        load_data(DataConfig("imagefolder"))


@pytest.mark.parametrize(("content", "named"), [(b"", "an empty file"), (b"GIF89a not ours", "not an image")])
def test_image_folder_refuses_a_file_that_is_no_image_when_listing(tmp_path: Path, content: bytes, named: str) -> None:
    root = _write_folder(tmp_path, classes=2, per_class=4)
    (root / "train" / "class1" / "zero.jpg").write_bytes(content)  # found before any training, not mid-trial
    with pytest.raises(DataError, match=rf"class1/zero\.jpg: {named}") as err:
        load_data(DataConfig("imagefolder", data_dir=str(root), val_size=2, workers=0))
    assert "\n" not in str(err.value)
