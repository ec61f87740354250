"""What data a supernet was trained on, and the check that a candidate is never scored on those images.

A supernet's weights have seen its training images; scoring a candidate on a held-out split that
shares images with them would reward memorization. ``trained_on(data)`` records the dataset, the
input shape and the training images (their positions in the dataset's training files, or their
count for a folder dataset); the checkpoint keeps it, and ``check_held_out`` refuses a held-out
split that overlaps them (another ``--seed`` or ``--val-size`` moves the split) or data of
another shape.
"""
from __future__ import annotations

import numpy as np
import torch

from nas.proxy import ProxyData
from nas.supernet.net import Supernet, SupernetError, TrainedOn

__all__ = ["trained_on", "check_held_out", "check_same_training"]


def _index(split: object) -> np.ndarray | None:
    index = getattr(split, "source_index", None)
    return None if index is None else np.asarray(index, dtype=np.int64)


def trained_on(data: ProxyData) -> TrainedOn:
    """The record of ``data``'s training split that a supernet trained on it carries."""
    index = _index(data.train)
    return {"dataset": data.name, "resolution": data.resolution, "in_chans": data.in_chans,
            "num_train": data.num_train,
            "train_index": None if index is None else torch.from_numpy(np.sort(index))}


def _shape(record: TrainedOn) -> tuple[object, ...]:
    return record.get("dataset"), record.get("resolution"), record.get("in_chans")


def check_same_training(record: TrainedOn | None, data: ProxyData, where: str) -> None:
    """Refuse to resume a supernet's training on other training images than it started with."""
    if record is None:
        return
    ours = trained_on(data)
    same_index = (record.get("train_index") is None) == (ours["train_index"] is None) and (
        ours["train_index"] is None or torch.equal(record["train_index"], ours["train_index"]))  # type: ignore[arg-type]
    if _shape(record) != _shape(ours) or record.get("num_train") != ours["num_train"] or not same_index:
        raise SupernetError(f"{where} was trained on other data ({record.get('dataset')}, {record.get('num_train')} "
                            f"training images); this run has {data.name}, {data.num_train} (use another checkpoint "
                            f"path to start afresh)")


def check_held_out(supernet: Supernet, data: ProxyData) -> None:
    """Raise ``SupernetError`` when ``data`` does not fit the supernet (classes, input channels) or its
    held-out split is not held out from the supernet's training.

    A supernet without a record of its training (built, not trained by ``train_supernet``) passes the second.
    """
    if (data.num_classes, data.in_chans) != (supernet.num_classes, supernet.in_chans):
        raise SupernetError(f"the data has {data.num_classes} classes and {data.in_chans} input channels, but the "
                            f"supernet {supernet.num_classes} and {supernet.in_chans}")
    record = supernet.trained_on
    if record is None:
        return
    if _shape(record) != (data.name, data.resolution, data.in_chans):
        raise SupernetError(f"the supernet was trained on {record.get('dataset')} at {record.get('resolution')} px "
                            f"with {record.get('in_chans')} channels, but the data is {data.name} at "
                            f"{data.resolution} px with {data.in_chans}")
    stored, held_out = record.get("train_index"), _index(data.val)
    if isinstance(stored, torch.Tensor) and held_out is not None:
        shared = np.intersect1d(stored.numpy(), held_out).size
        if shared:
            raise SupernetError(f"the held-out split shares {shared} of its {held_out.size} images with the "
                                f"supernet's training images: score with the data split it was trained with "
                                f"(the same --seed, --val-size and --train-size)")
