"""Scoring a candidate with inherited weights: extract, recalibrate BN on training batches, held-out accuracy.

The candidate leaves the supernet as the stand-alone network ``build_model(arch)`` with the
supernet's weights (``extract_model``); the project's own evaluation (``nas.proxy.evaluate``)
then replaces its BN statistics by their average over ``bn_batches`` training batches and scores
the held-out split. The BN statistics the supernet carries are a mix over all the subnets it
trained and fit none of them, so recalibration is what makes inherited weights usable.
``finetune_epochs`` > 0 first trains the extracted network briefly from the inherited weights
(``nas.proxy.train_proxy``): a second, costlier fidelity. The supernet itself is never changed.
"""
from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable

import torch

from nas.proxy import (
    ProxyData,
    TrainConfig,
    device_type,
    evaluate,
    init_from_env,
    resolve_device,
    torch_threads,
    train_proxy,
)
from nas.supernet.net import Supernet, SupernetError
from nas.supernet.provenance import check_held_out
from search_spaces import ArchSpec, Network, build_model

__all__ = ["DEFAULT_SCORE_CONFIG", "extract_model", "score", "supernet_score_fn"]

# Evaluation batches, and the brief fine-tuning's recipe (no warm-up: the weights are trained already).
DEFAULT_SCORE_CONFIG = TrainConfig(batch_size=128, lr=0.01, warmup_epochs=0.0, device="cpu")


def extract_model(supernet: Supernet, arch: ArchSpec) -> Network:
    """``build_model(arch)`` holding ``arch``'s weights and BN statistics from ``supernet``.

    The model has the supernet's dtype and device and is in eval mode.

    Raises:
        SupernetError: ``arch`` is not an architecture the supernet can run.
    """
    weights = supernet.extract(arch)
    reference = next(iter(weights.values()))
    model = build_model(arch, supernet.num_classes, supernet.in_chans)
    model.to(device=reference.device, dtype=supernet.classifier.weight.dtype)
    model.load_state_dict(weights, strict=True)
    return model.eval()


def score(supernet: Supernet, arch: ArchSpec, data: ProxyData, *, bn_batches: int = 20,
          finetune_epochs: float = 0.0, config: TrainConfig | None = None, metric: str = "accuracy") -> float:
    """Held-out top-1 accuracy of ``arch`` with the supernet's weights, or another ``metric`` of them.

    Args:
        supernet: a trained supernet.
        arch: a member of the supernet's space.
        data: the proxy data (the supernet's classes and input channels).
        bn_batches: training batches the BN statistics are recalibrated on (0: keep the supernet's).
        finetune_epochs: > 0: train the extracted network this many epochs first (0.1: a tenth).
        config: evaluation batch size, device, threads and the fine-tuning recipe
            (default ``DEFAULT_SCORE_CONFIG`` on the supernet's device); its
            ``bn_recalibrate_batches`` and ``epochs`` are replaced by ``bn_batches`` and
            ``finetune_epochs``.
        metric: ``accuracy``; ``loss``: minus the held-out cross-entropy, higher is better (a finer
            ranking than accuracy on a small held-out split); ``likelihood``: exp of that, the
            geometric mean of the true class's probability, in (0, 1] like an accuracy (the same
            ranking as ``loss``). ``loss`` and ``likelihood`` without fine-tuning only.

    Raises:
        SupernetError: ``arch`` does not fit the supernet, the data does not fit it, its held-out
            split shares images with the supernet's training (``check_held_out``), or a
            negative ``bn_batches`` / ``finetune_epochs``, or an unknown ``metric``.
    """
    if metric not in ("accuracy", "loss", "likelihood") or (metric != "accuracy" and finetune_epochs > 0):
        raise SupernetError(f"metric must be 'accuracy', or 'loss' or 'likelihood' without fine-tuning, but got "
                            f"{metric!r} with {finetune_epochs=}")
    if bn_batches < 0 or finetune_epochs < 0:
        raise SupernetError(f"bn_batches and finetune_epochs must be >= 0, but got ({bn_batches=}, "
                            f"{finetune_epochs=})")
    check_held_out(supernet, data)  # the data fits, and its held-out split was not trained on
    if config is None:
        config = dataclasses.replace(DEFAULT_SCORE_CONFIG, device=str(supernet.classifier.weight.device))
    config = dataclasses.replace(config, bn_recalibrate_batches=bn_batches, epochs=finetune_epochs or config.epochs)
    model = extract_model(supernet, arch)
    if finetune_epochs > 0:
        return train_proxy(model, data, config).accuracy
    info = init_from_env(device_type(config.device))
    device = resolve_device(config.device, info.local_rank if info.enabled else None)
    model.to(device)
    if config.channels_last:
        model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
    with torch_threads(config.threads):
        top1, _, loss = evaluate(model, data, config, device=device, info=info)
    return -loss if metric == "loss" else math.exp(-loss) if metric == "likelihood" else top1


def supernet_score_fn(supernet: Supernet, data: ProxyData, *, bn_batches: int = 20, finetune_epochs: float = 0.0,
                      config: TrainConfig | None = None) -> Callable[[ArchSpec], float]:
    """``arch -> score(supernet, arch, data, ...)``: the supernet as a proxy that a search or a fidelity check calls."""

    def score_fn(arch: ArchSpec) -> float:
        return score(supernet, arch, data, bn_batches=bn_batches, finetune_epochs=finetune_epochs, config=config)

    return score_fn
