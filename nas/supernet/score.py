"""Scoring a candidate with inherited weights: extract, recalibrate BN on training batches, held-out accuracy.

The candidate leaves the supernet as the stand-alone network ``build_model(arch)`` with the
supernet's weights (``extract_model``); its BN statistics are replaced by their average over
``bn_batches`` training batches as the project's own evaluation does it (``nas.proxy.recalibrate_on_calib``),
each BN is then folded into the convolution before it (``nas.proxy.fold_bn``: the same scores to float
rounding, a cheaper pass), and ``nas.proxy.evaluate`` scores the held-out split (``val_images``: only its
first images). The BN statistics the supernet carries are a mix over all the subnets it trained and
fit none of them, so recalibration is what makes inherited weights usable. ``finetune_epochs`` > 0
first trains the extracted network briefly from the inherited weights (``nas.proxy.train_proxy``): a
second, costlier fidelity. The supernet itself is never changed.
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
    fold_bn,
    init_from_env,
    recalibrate_on_calib,
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
    weights = supernet.extract(arch)  # copies: the model never shares memory with the supernet
    with torch.device("meta"):  # no initial weights to compute: every tensor is the supernet's
        model = build_model(arch, supernet.num_classes, supernet.in_chans)
    model.load_state_dict(weights, strict=True, assign=True)
    return model.eval()


def score(supernet: Supernet, arch: ArchSpec, data: ProxyData, *, bn_batches: int = 20,
          finetune_epochs: float = 0.0, config: TrainConfig | None = None, metric: str = "accuracy",
          val_images: int = 0) -> float:
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
        val_images: score on the first ``val_images`` images of the held-out split (0: all of them);
            without fine-tuning only.

    Raises:
        SupernetError: ``arch`` does not fit the supernet, the data does not fit it, its held-out
            split shares images with the supernet's training (``check_held_out``), or a
            negative ``bn_batches`` / ``finetune_epochs``, an unknown ``metric``, or a ``val_images``
            outside 0..``data.num_val`` or given with fine-tuning.
    """
    if metric not in ("accuracy", "loss", "likelihood") or (metric != "accuracy" and finetune_epochs > 0):
        raise SupernetError(f"metric must be 'accuracy', or 'loss' or 'likelihood' without fine-tuning, but got "
                            f"{metric!r} with {finetune_epochs=}")
    if bn_batches < 0 or finetune_epochs < 0:
        raise SupernetError(f"bn_batches and finetune_epochs must be >= 0, but got ({bn_batches=}, "
                            f"{finetune_epochs=})")
    check_held_out(supernet, data)  # the data fits, and its held-out split was not trained on
    _check_val_images(val_images, data, finetune_epochs)
    if config is None:
        config = dataclasses.replace(DEFAULT_SCORE_CONFIG, device=str(supernet.classifier.weight.device))
    config = dataclasses.replace(config, bn_recalibrate_batches=bn_batches, epochs=finetune_epochs or config.epochs)
    model = extract_model(supernet, arch)
    if finetune_epochs > 0:
        return train_proxy(model, data, config).accuracy
    top1, loss = _folded_score(model, data, config, val_images)
    return -loss if metric == "loss" else math.exp(-loss) if metric == "likelihood" else top1


def _check_val_images(val_images: int, data: ProxyData, finetune_epochs: float) -> None:
    if isinstance(val_images, bool) or not isinstance(val_images, int) or not 0 <= val_images <= data.num_val:
        raise SupernetError(f"val_images must be a whole number of held-out images in 0..{data.num_val} "
                            f"(0: all of them), but got {val_images!r}")
    if val_images and finetune_epochs > 0:
        raise SupernetError(f"val_images must be 0 with fine-tuning (a fine-tuned copy is scored on the whole "
                            f"held-out split), but got {val_images!r} with {finetune_epochs=}")


def _folded_score(model: Network, data: ProxyData, config: TrainConfig, val_images: int) -> tuple[float, float]:
    """``(top-1, mean cross-entropy)`` of the extracted ``model`` on the held-out split (its first ``val_images``;
    0: all): BN recalibrated on ``config.bn_recalibrate_batches`` calib batches as ``evaluate`` does it, then
    folded into the convolutions (``fold_bn``), then evaluated without recalibrating again."""
    info = init_from_env(device_type(config.device))
    device = resolve_device(config.device, info.local_rank if info.enabled else None)
    model.to(device)
    if config.channels_last:
        model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
    with torch_threads(config.threads):
        recalibrate_on_calib(model, data, config, device=device, info=info)
        fold_bn(model)  # the folded weights keep their memory format
        top1, _, loss = evaluate(model, data, dataclasses.replace(config, bn_recalibrate_batches=0), device=device,
                                 info=info, val_images=val_images or None)
    return top1, loss


def supernet_score_fn(supernet: Supernet, data: ProxyData, *, bn_batches: int = 20, finetune_epochs: float = 0.0,
                      config: TrainConfig | None = None, val_images: int = 0) -> Callable[[ArchSpec], float]:
    """``arch -> score(supernet, arch, data, ...)``: the supernet as a proxy that a search or a fidelity check calls."""

    def score_fn(arch: ArchSpec) -> float:
        return score(supernet, arch, data, bn_batches=bn_batches, finetune_epochs=finetune_epochs, config=config,
                     val_images=val_images)

    return score_fn
