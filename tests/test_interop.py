"""Checkpoint import against the real torchvision and timm models (random weights, nothing downloaded).

Each source model gets random weights and measured BatchNorm statistics; its state dict is
loaded into our build of the same architecture (``pretrained_model``, layout auto-detected)
and both run on one input in float64: the outputs must agree within 1e-5.
"""
from __future__ import annotations

import pytest
from helpers import randomize_
from interop import import_timm, import_torchvision
from test_weights import _compare

from search_spaces import count_cost, get_preset
from search_spaces.interop.weights import detect_format, pretrained_model

pytestmark = pytest.mark.usefixtures("one_thread")
RESOLUTION = 64  # small inputs keep B7 quick; 64 -> 32, 16, 8, 4, 2 exercises every stride-2 layer


def _fast_b(b: int) -> object:
    return pytest.param(b, marks=pytest.mark.slow) if b >= 4 else b


@pytest.mark.parametrize("b", [_fast_b(b) for b in range(8)])
def test_torchvision_outputs_equal(b: int) -> None:
    tv = import_torchvision()
    source = randomize_(getattr(tv.models, f"efficientnet_b{b}")(num_classes=10), b, RESOLUTION)
    assert detect_format(source.state_dict()) == "torchvision"
    ours = pretrained_model(get_preset(f"efficientnet-b{b}"), source.state_dict())
    assert ours.classifier.out_features == 10
    assert _compare(source, ours, RESOLUTION) <= 1e-5


@pytest.mark.parametrize("b", [_fast_b(b) for b in range(8)])
def test_timm_outputs_equal(b: int) -> None:
    timm = import_timm()
    source = randomize_(timm.create_model(f"efficientnet_b{b}", num_classes=10), b, RESOLUTION)
    assert detect_format(source.state_dict()) == "timm"
    ours = pretrained_model(get_preset(f"efficientnet-b{b}"), source.state_dict())
    assert _compare(source, ours, RESOLUTION) <= 1e-5


def test_timm_tf_ported_weights_with_tf_padding() -> None:
    """timm's ``tf_efficientnet_b*`` (TF "SAME" padding, eps 1e-3): say so, and outputs agree."""
    timm = import_timm()
    source = randomize_(timm.create_model("tf_efficientnet_b1", num_classes=10), 1, 70)  # odd sizes on the way
    state = source.state_dict()
    ours = pretrained_model(get_preset("efficientnet-b1"), state, padding="same_tf", bn_eps=1e-3)
    assert _compare(source, ours, 70) <= 1e-5
    plain = pretrained_model(get_preset("efficientnet-b1"), state)  # the wrong padding is visibly wrong
    assert _compare(source, plain, 70) > 1e-3


def test_timm_mnasnet_a1_outputs_equal() -> None:
    timm = import_timm()
    source = randomize_(timm.create_model("semnasnet_100", num_classes=10), 0, RESOLUTION)
    ours = pretrained_model(get_preset("mnasnet-a1"), source.state_dict(), fmt="timm")
    assert _compare(source, ours, RESOLUTION) <= 1e-5


@pytest.mark.slow
def test_parameter_counts_equal_the_libraries() -> None:
    """The 1000-class models: the libraries' own counts, not ours (docs/reference.md's numbers)."""
    tv, timm = import_torchvision(), import_timm()
    for b in range(8):
        expected = sum(p.numel() for p in getattr(tv.models, f"efficientnet_b{b}")().parameters())
        assert count_cost(get_preset(f"efficientnet-b{b}")).params == expected
    expected = sum(p.numel() for p in timm.create_model("semnasnet_100").parameters())
    assert count_cost(get_preset("mnasnet-a1")).params == expected
