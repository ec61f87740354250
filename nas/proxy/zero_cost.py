"""Zero-cost proxies: score an architecture at initialization from one batch, without training.

Four proxies, each defined as in its paper and in the reference code that the zero-cost NAS
study used (Abdelfattah et al., "Zero-Cost Proxies for Lightweight NAS", ICLR 2021;
https://github.com/mohsaied/zero-cost-nas, ``foresight/pruners/measures/*.py``):

* ``synflow`` (Tanaka et al. 2020): synaptic flow, the natural log of
  ``sum |theta * dR/dtheta|`` with ``R`` the summed output of the network with ``|theta|`` on an
  all-ones input, BatchNorm removed, in float64.
* ``naswot`` (Mellor et al., "Neural Architecture Search without Training", ICML 2021;
  https://github.com/BayesWatch/nas-without-training): ``log |det K_H|`` of the Hamming kernel of
  the batch's binary activation codes.
* ``grad_norm``: ``sum ||dL/dW||_2`` over the conv and linear weights, L the cross-entropy.
* ``snip`` (Lee et al. 2019): ``sum |W * dL/dW|`` over the conv and linear weights.

Higher is better for all four. ``score`` never changes the model it is given: each proxy runs on
a deep copy. ``grad_norm``, ``snip`` and ``naswot`` run BatchNorm on the batch's statistics, as
the reference code does (it scores networks in training mode); dropout and stochastic depth are
off so that a score is a function of the weights and the batch alone.
"""
from __future__ import annotations

import copy
import itertools
import math
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from nas.config import Registry
from nas.proxy.data import ProxyData
from search_spaces import ArchSpec, build_model

Scorer = Callable[[nn.Module, torch.Tensor, torch.Tensor], float]  # (model, images, labels) -> score, higher better

# Activation units whose would-be-ReLU pattern (the sign of their input) is a NASWOT code.
_ACTIVATIONS = (nn.ReLU, nn.ReLU6, nn.SiLU, nn.Hardswish, nn.LeakyReLU, nn.GELU, nn.Mish)


def _weights(model: nn.Module) -> list[torch.Tensor]:
    """The conv and linear weights: the tensors the reference sums its per-layer metrics over."""
    return [m.weight for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]


def _scoring_copy(model: nn.Module) -> nn.Module:
    """A deep copy with BatchNorm on batch statistics and dropout / stochastic depth off."""
    net = copy.deepcopy(model).eval()
    for m in net.modules():
        if isinstance(m, _BatchNorm):
            m.train()
    for p in net.parameters():
        p.requires_grad_(True)
    return net


def _loss_grads(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """``(W, dL/dW)`` for each conv/linear weight of a scoring copy, L the mean cross-entropy."""
    net = _scoring_copy(model)
    weights = _weights(net)
    loss = F.cross_entropy(net(x), y)
    grads = torch.autograd.grad(loss, weights, allow_unused=True)
    return [(w.detach(), torch.zeros_like(w) if g is None else g) for w, g in zip(weights, grads)]


def _grad_norm(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    return torch.stack([g.norm() for _, g in _loss_grads(model, x, y)]).sum().item()


def _snip(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    return torch.stack([(w * g).abs().sum() for w, g in _loss_grads(model, x, y)]).sum().item()


def _synflow(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    net = copy.deepcopy(model).double().eval()
    for parent in list(net.modules()):  # the reference's default 'synflow' runs with BN as a no-op
        for child_name, child in list(parent.named_children()):
            if isinstance(child, _BatchNorm):
                setattr(parent, child_name, nn.Identity())
    with torch.no_grad():
        for p in net.parameters():
            p.abs_()
    weights = _weights(net)
    for w in weights:
        w.requires_grad_(True)
    ones = torch.ones((1, *x.shape[1:]), dtype=torch.float64, device=x.device)
    flow = net(ones).sum()
    if not torch.isfinite(flow):
        raise FloatingPointError(f"synflow: the network's output overflows float64 ({flow.item()})")
    grads = torch.autograd.grad(flow, weights, allow_unused=True)
    terms = [(w * g).detach() for w, g in zip(weights, grads) if g is not None]  # w >= 0, g >= 0
    total = sum(t.sum() for t in terms)
    if torch.isfinite(torch.as_tensor(total)):
        return math.log(total) if total > 0 else -math.inf
    logs = torch.cat([t[t > 0].log() for t in terms])  # the sum overflows: add in log space
    return torch.logsumexp(logs, 0).item()


def _naswot(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    net = _scoring_copy(model)
    gram = torch.zeros((len(x), len(x)), dtype=torch.float64, device=x.device)
    units = 0

    def count(module: nn.Module, inputs: tuple[torch.Tensor, ...]) -> None:
        nonlocal gram, units
        code = inputs[0].flatten(1) > 0  # the would-be-ReLU pattern
        exact = torch.float32 if code.shape[1] < 2 ** 24 else torch.float64  # integer sums stay exact
        signs = torch.where(code, 1.0, -1.0).to(exact)
        gram += (signs @ signs.T).double()
        units += signs.shape[1]

    for m in net.modules():
        if isinstance(m, _ACTIVATIONS):
            m.register_forward_pre_hook(count)  # the input, before an in-place activation overwrites it
    with torch.no_grad():
        net(x)
    # +-1 codes: s_i . s_j = N_A - 2 Hamming(c_i, c_j), so K_H = N_A - Hamming = (N_A + s_i . s_j) / 2.
    kernel = (units + gram) / 2
    return torch.linalg.slogdet(kernel).logabsdet.item()


# Adding a zero-cost proxy is one entry: its name (``--proxy zc:NAME``, ``--prescreen-proxy NAME``,
# ``nas-proxy-check --proxies zc:NAME``) and a scoring function of (model, images, labels); it is
# called on a model it must leave unchanged (score on a copy), with gradients enabled.
ZC_PROXIES: Registry[Scorer] = Registry("zero-cost proxy", {
    "synflow": _synflow,
    "naswot": _naswot,
    "grad_norm": _grad_norm,
    "snip": _snip,
}, error=ValueError)


def score(model: nn.Module, x: torch.Tensor, y: torch.Tensor, name: str) -> float:
    """Zero-cost proxy ``name`` of ``model`` (at initialization) on one batch.

    Definitions (higher is better for all four):

    * ``synflow``: ``log(sum over conv/linear weights of |theta * dR/dtheta|)``, the natural
      logarithm because the sum spans hundreds of orders of magnitude across architectures.
      ``R = 1^T f(1)`` is the summed output of the network on one all-ones input of ``x``'s
      shape, with every parameter replaced by its absolute value, in float64, in eval mode
      (dropout off) and with BatchNorm removed (an identity), as the reference's default
      ``synflow`` measure (``bn=False``) does. The data in ``x`` and ``y`` is not used. Where the
      sum of the per-weight terms overflows float64 it is taken in log space (log-sum-exp).
    * ``naswot``: ``log |det K_H|`` (``slogdet``) with ``K_H[i, j] = N_A - Hamming(c_i, c_j)``,
      ``c_i`` the binary code of image ``i``: one bit per activation unit of the network, set where
      the unit's input is positive. For ReLU that is Mellor et al.'s code (their hooks read the
      ReLU's input); for SiLU, Hardswish and the other non-ReLU activations it is the
      would-be-ReLU pattern, the sign of the activation's input. The SE gates' sigmoids are not
      activation units. ``y`` is not used. Identical images give a singular ``K_H`` and a score of
      ``-inf`` or very low.
    * ``grad_norm``: ``sum over conv/linear weights W of ||dL/dW||_2``, L the mean cross-entropy
      of the batch (Abdelfattah et al. 2021).
    * ``snip``: ``sum over conv/linear weights W of |W * dL/dW|`` (Lee et al. 2019), same L.

    Args:
        model: the network, as initialized; it is not modified (weights, buffers, dtype, mode
            and gradients are left as they were).
        x: a batch of images on the model's device, ``(B, C, H, W)``.
        y: the batch's integer labels, ``(B,)``.
        name: one of ``ZC_PROXIES``.

    Returns:
        The score as a float.

    Raises:
        ValueError: ``name`` is not a known proxy.
        FloatingPointError: synflow's network output itself overflows float64.
    """
    scorer = ZC_PROXIES.lookup(name)
    with torch.enable_grad():
        return scorer(model, x, y)


def score_arch(arch: ArchSpec, data: ProxyData, name: str, *, seed: int = 0, batch_size: int = 64, batches: int = 1,
               device: str | torch.device = "cpu") -> float:
    """Zero-cost proxy ``name`` of ``arch`` at a seeded initialization, on ``data``'s training images.

    Seeds torch with ``seed``, builds the model for ``data`` (its classes and input channels), and
    averages ``score`` over the first ``batches`` batches of ``data.batches("train", batch_size,
    seed=seed)``. The same arguments give the same value.

    Args:
        arch: the ``ArchSpec`` to score.
        data: a ``ProxyData`` (``nas.proxy.data.load_data``).
        name: one of ``ZC_PROXIES``.
        seed: seeds the initialization and the batch order.
        batch_size: images per batch.
        batches: batches to average over.
        device: where the model and batches live.

    Returns:
        The mean score over the batches.

    Raises:
        ValueError: an unknown ``name``, ``batches`` below 1, or a training split too small for
            ``batches`` full batches of ``batch_size``.
    """
    ZC_PROXIES.lookup(name)
    if batches < 1 or batch_size < 1 or batches * batch_size > data.num_train:
        raise ValueError(f"cannot take {batches} batches of {batch_size} from {data.num_train} training images")
    torch.manual_seed(seed)
    model = build_model(arch, num_classes=data.num_classes, in_chans=data.in_chans).to(device)
    stream = data.batches("train", batch_size, seed=seed, device=device)
    scores = [score(model, x, y, name) for x, y in itertools.islice(stream, batches)]
    return sum(scores) / len(scores)
