"""Zero-cost proxies against hand computations, and on real architectures."""
from __future__ import annotations

import copy
import dataclasses
import math

import optuna
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from nas.proxy.data import DataConfig, load_data
from nas.proxy.zero_cost import ZC_PROXIES, score, score_arch
from search_spaces import build_model, default_space, get_preset

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def digits():
    return load_data(DataConfig(name="digits", resolution=16, train_size=256, seed=0))


def _two_linear(w1: torch.Tensor, w2: torch.Tensor, middle: nn.Module) -> nn.Sequential:
    net = nn.Sequential(nn.Linear(w1.shape[1], w1.shape[0], bias=False, dtype=w1.dtype), middle,
                        nn.Linear(w2.shape[1], w2.shape[0], bias=False, dtype=w2.dtype))
    with torch.no_grad():
        net[0].weight.copy_(w1)
        net[2].weight.copy_(w2)
    return net


def test_synflow_of_two_linear_layers_is_log_of_twice_the_flow():
    # R = 1^T |W2| |W1| 1, and sum(theta * dR/dtheta) over one layer's weights is R: the total is 2R.
    torch.manual_seed(0)
    w1, w2 = torch.randn(4, 3, dtype=torch.float64), torch.randn(2, 4, dtype=torch.float64)
    flow = (w2.abs() @ w1.abs() @ torch.ones(3, dtype=torch.float64)).sum().item()
    x = torch.randn(5, 3)  # only its shape counts
    assert score(_two_linear(w1, w2, nn.ReLU()), x, torch.zeros(5, dtype=torch.long), "synflow") == \
        pytest.approx(math.log(2 * flow), rel=1e-12)
    # BatchNorm is removed, as in the reference's 'synflow': running stats that would scale the flow do not.
    bn = nn.BatchNorm1d(4)
    bn.running_var.fill_(1e-4)
    bn.running_mean.fill_(-3.0)
    assert score(_two_linear(w1, w2, bn).eval(), x, None, "synflow") == pytest.approx(math.log(2 * flow), rel=1e-12)


def test_synflow_conv_net_by_hand():
    # 1x1 convs on a 1x1 image are linear layers; biases count in R (|b| too) but not in the sum.
    torch.manual_seed(1)
    net = nn.Sequential(nn.Conv2d(3, 4, 1), nn.SiLU(), nn.Conv2d(4, 2, 1, bias=False))
    w1, b1, w2 = (t.detach().double().abs() for t in (net[0].weight.flatten(1), net[0].bias, net[2].weight.flatten(1)))
    hidden = w1 @ torch.ones(3, dtype=torch.float64) + b1
    gate = torch.sigmoid(hidden)
    grad_hidden = w2.sum(0) * gate * (1 + hidden * (1 - gate))  # dR/dh = 1^T |W2| silu'(h)
    total = (w2 * F.silu(hidden)).sum() + (w1 * grad_hidden[:, None]).sum()  # dR/dW1[i, j] = dR/dh_i * 1
    assert score(net, torch.randn(2, 3, 1, 1), None, "synflow") == pytest.approx(math.log(total.item()), rel=1e-12)


def test_synflow_sum_past_float64_goes_to_log_space():
    # R = 1.5e308 is finite, but the two per-layer terms sum to 3e308 > float64's max.
    net = _two_linear(torch.full((1, 1), 1e308, dtype=torch.float64), torch.full((1, 1), 1.5, dtype=torch.float64),
                      nn.Identity())
    expected = math.log(3.0) + 308 * math.log(10.0)
    assert score(net, torch.ones(1, 1), None, "synflow") == pytest.approx(expected, rel=1e-12)
    with torch.no_grad():
        net[2].weight.fill_(1e10)  # now R itself overflows: refused, not a silent inf
    with pytest.raises(FloatingPointError, match="overflows"):
        score(net, torch.ones(1, 1), None, "synflow")


def test_grad_norm_and_snip_of_a_linear_classifier_in_closed_form():
    # Softmax cross-entropy: dL/dW = (softmax(W x) - onehot(y))^T x / B, no autograd.
    torch.manual_seed(2)
    net = nn.Linear(6, 4, bias=False)
    x, y = torch.randn(8, 6), torch.randint(0, 4, (8,))
    w = net.weight.detach()
    grad = (torch.softmax(x @ w.T, dim=1) - F.one_hot(y, 4).float()).T @ x / len(x)
    assert score(net, x, y, "grad_norm") == pytest.approx(grad.norm().item(), rel=1e-5)
    assert score(net, x, y, "snip") == pytest.approx((w * grad).abs().sum().item(), rel=1e-5)


def test_grad_norm_and_snip_match_plain_autograd_on_a_conv_bn_net():
    torch.manual_seed(3)
    net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.Conv2d(8, 8, 3, groups=8),
                        nn.BatchNorm2d(8), nn.SiLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(0.5),
                        nn.Linear(8, 5))
    x, y = torch.randn(6, 3, 8, 8), torch.randint(0, 5, (6,))
    ref = copy.deepcopy(net).train()
    ref[8].eval()  # dropout off; BatchNorm on batch statistics, as in the reference's training mode
    F.cross_entropy(ref(x), y).backward()
    layers = [ref[0], ref[3], ref[9]]  # conv and linear weights only: not biases, not BN
    assert score(net, x, y, "grad_norm") == pytest.approx(sum(l.weight.grad.norm().item() for l in layers), rel=1e-5)
    assert score(net, x, y, "snip") == \
        pytest.approx(sum((l.weight * l.weight.grad).abs().sum().item() for l in layers), rel=1e-5)


def _naswot_by_hand(codes: torch.Tensor) -> float:
    n, units = codes.shape
    kernel = torch.tensor([[units - int((codes[i] != codes[j]).sum()) for j in range(n)] for i in range(n)],
                          dtype=torch.float64)
    return torch.linalg.slogdet(kernel).logabsdet.item()


@pytest.mark.parametrize("act", [nn.ReLU(inplace=True), nn.SiLU(inplace=True), nn.Hardswish()])
def test_naswot_is_the_log_det_of_the_hamming_kernel(act):
    # One activation layer behind an identity linear map: the codes are the signs of x itself.
    torch.manual_seed(4)
    x = torch.randn(10, 40)
    net = nn.Sequential(nn.Linear(40, 40, bias=False), act, nn.Sigmoid())  # the sigmoid is no activation unit
    with torch.no_grad():
        net[0].weight.copy_(torch.eye(40))
    expected = _naswot_by_hand(x > 0)
    assert score(net, x, torch.zeros(10, dtype=torch.long), "naswot") == pytest.approx(expected, rel=1e-9)
    assert score(net, x, torch.arange(10), "naswot") == pytest.approx(expected, rel=1e-9)  # labels play no part
    same = x[:1].repeat(10, 1)  # identical images: K_H is all N_A, singular
    assert score(net, same, None, "naswot") < expected - 100


def test_naswot_adds_the_kernels_of_all_activation_layers():
    torch.manual_seed(5)
    x = torch.randn(7, 12)
    net = nn.Sequential(nn.Linear(12, 12, bias=False), nn.ReLU(), nn.Linear(12, 9, bias=False), nn.SiLU())
    hidden = net[0](x)
    codes = torch.cat([hidden > 0, net[2](torch.relu(hidden)) > 0], dim=1)
    assert score(net, x, None, "naswot") == pytest.approx(_naswot_by_hand(codes), rel=1e-9)


def _small_b0():
    """B0's blocks (BN, SE, dropout, stochastic depth) at a quarter of its width and half its depth."""
    return dataclasses.replace(get_preset("efficientnet-b0"), width_mult=0.25, depth_mult=0.5)


def test_score_leaves_the_model_unchanged(digits):
    torch.manual_seed(0)
    model = build_model(_small_b0(), num_classes=digits.num_classes, in_chans=digits.in_chans)
    x, y = next(digits.batches("train", 16, seed=0))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    for name in ZC_PROXIES:
        assert math.isfinite(score(model, x, y, name))
        after = model.state_dict()
        assert all(torch.equal(before[k], after[k]) and before[k].dtype == after[k].dtype for k in before), name
        assert model.training and all(m.training for m in model.modules()), name
        assert all(p.grad is None and p.dtype == torch.float32 for p in model.parameters()), name


def test_score_arch_is_deterministic_per_seed_and_varies_across_seeds(digits):
    for name in ZC_PROXIES:
        first = score_arch(_small_b0(), digits, name, seed=0, batch_size=16, batches=2)
        assert score_arch(_small_b0(), digits, name, seed=0, batch_size=16, batches=2) == first, name
        assert score_arch(_small_b0(), digits, name, seed=1, batch_size=16, batches=2) != first, name


def test_score_arch_on_efficientnet_b0(digits):
    scores = {name: score_arch(get_preset("efficientnet-b0"), digits, name, batch_size=32) for name in ZC_PROXIES}
    assert all(math.isfinite(s) for s in scores.values()), scores
    assert 0 < scores["synflow"] < 709  # the log of the flow, nowhere near float64's overflow (log max ~ 709.8)


def test_all_proxies_finite_on_sampled_architectures(digits):
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    archs = [default_space().sample(study.ask()) for _ in range(5)]
    x, y = next(digits.batches("train", 16, seed=0))
    scores = []
    for arch in archs:
        torch.manual_seed(0)
        model = build_model(arch, num_classes=digits.num_classes, in_chans=digits.in_chans)
        scores.append([score(model, x, y, name) for name in ZC_PROXIES])
    assert all(math.isfinite(s) for row in scores for s in row), scores
    assert len({row[0] for row in scores}) == len(archs)  # synflow tells the architectures apart


def test_unknown_proxy_and_short_data_are_errors(digits):
    expected = "^zero-cost proxy must be one of synflow, naswot, grad_norm, snip, but got 'foo'$"
    with pytest.raises(ValueError, match=expected):
        score(nn.Linear(2, 2), torch.zeros(1, 2), torch.zeros(1, dtype=torch.long), "foo")
    with pytest.raises(ValueError, match="zero-cost proxy must be one of .*, but got 'jacov'"):
        score_arch(get_preset("efficientnet-b0"), digits, "jacov")
    with pytest.raises(ValueError, match="cannot take 3 batches of 128 from 256 training images"):
        score_arch(get_preset("efficientnet-b0"), digits, "snip", batch_size=128, batches=3)
