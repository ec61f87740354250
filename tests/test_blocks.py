"""blocks.Conv2d's training shortcut on small feature maps against plain convolution (float64)."""
from __future__ import annotations

import copy
import itertools

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from search_spaces import build_model, get_preset
from search_spaces.blocks import Conv2d, crop_taps

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.mark.parametrize("size, kernel, stride, padding, expected", [
    (1, 5, 1, 2, (2, 2, 0)),  # a 1x1 map meets only the centre tap
    (2, 5, 1, 2, (1, 3, 1)),  # a 2x2 map: the centre 3x3, padding 1
    (2, 3, 1, 1, (0, 2, 1)),  # every tap of a 3x3 meets a 2x2 map
    (3, 5, 1, 2, (0, 4, 2)),  # and every tap of a 5x5 a 3x3 map
    (2, 5, 2, 2, (2, 3, 0)),  # stride 2, one output pixel: the 2x2 taps over the map, no padding
    (2, 3, 2, 1, (1, 2, 0)),
    (1, 3, 2, 1, (1, 1, 0)),
    (4, 5, 2, 2, (0, 4, 2)),
    (1, 1, 1, 0, (0, 0, 0)),
])
def test_taps_worked_by_hand(size: int, kernel: int, stride: int, padding: int, expected: tuple) -> None:
    assert crop_taps(size, kernel, stride, padding) == expected


def _grads(conv: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
    x = x.detach().requires_grad_()
    out = conv(x)
    out.backward(torch.linspace(-1, 1, out.numel(), dtype=out.dtype).view_as(out))
    grads = (out, x.grad, conv.weight.grad) + ((conv.bias.grad,) if conv.bias is not None else ())
    conv.zero_grad(set_to_none=True)
    return grads


CASES = list(itertools.product(
    ((1, 1), (2, 2), (3, 3), (1, 2), (2, 3), (4, 4)),  # feature map
    (1, 3, 5),  # kernel
    (1, 2),  # stride
    ("depthwise", "dense"),
    (False, True),  # bias
))


@pytest.mark.parametrize("hw, kernel, stride, kind, bias", CASES)
@pytest.mark.parametrize("channels_last", [True, False])
def test_training_shortcut_equals_full_convolution(hw, kernel, stride, kind, bias, channels_last) -> None:
    torch.manual_seed(0)
    cin, cout, groups = (6, 6, 6) if kind == "depthwise" else (5, 7, 1)
    conv = Conv2d(cin, cout, kernel, stride, (kernel - 1) // 2, groups=groups, bias=bias).double()
    x = torch.randn(3, cin, *hw, dtype=torch.float64)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    fast = _grads(conv.train(), x)
    plain = _grads(conv.eval(), x)  # eval mode: nn.Conv2d.forward
    expected_out = F.conv2d(x, conv.weight, conv.bias, stride, (kernel - 1) // 2, 1, groups)
    torch.testing.assert_close(plain[0], expected_out)
    assert fast[0].shape == expected_out.shape
    for got, want in zip(fast, plain):
        torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)


OTHER_PADDINGS = [(hw, kernel, padding)  # not 'same' padding: Conv2d is a drop-in nn.Conv2d
                  for hw in ((1, 1), (2, 2), (1, 2)) for kernel, padding in ((1, 1), (3, 0), (3, 2), (5, 1))
                  if kernel <= 2 * padding + min(hw)]


@pytest.mark.parametrize("hw, kernel, padding", OTHER_PADDINGS)
@pytest.mark.parametrize("groups", [1, 4])
def test_other_paddings_equal_full_convolution(hw, kernel, padding, groups) -> None:
    torch.manual_seed(0)
    conv = Conv2d(4, 4, kernel, 1, padding, groups=groups).double()
    x = torch.randn(3, 4, *hw, dtype=torch.float64).contiguous(memory_format=torch.channels_last)
    for got, want in zip(_grads(conv.train(), x), _grads(conv.eval(), x)):
        torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)


def test_b0_training_step_equals_plain_convolutions() -> None:
    """B0 at 32 px runs its last stages on 2x2 and 1x1 maps, where every shortcut applies."""
    torch.manual_seed(0)
    fast = build_model(get_preset("efficientnet-b0"), num_classes=10).double().train()
    plain = copy.deepcopy(fast)
    swapped = 0
    for m in plain.modules():
        if type(m) is Conv2d:
            m.__class__ = nn.Conv2d
            swapped += 1
    assert swapped == 49  # stem, head, 2 in the first block and 3 in each of the other 15 (SE: nn.Conv2d)
    x = torch.randn(4, 3, 32, 32, dtype=torch.float64).contiguous(memory_format=torch.channels_last)
    results = []
    for model in (fast, plain):
        model.to(memory_format=torch.channels_last)
        torch.manual_seed(1)  # the same stochastic-depth draws
        loss = F.cross_entropy(model(x), torch.tensor([0, 1, 2, 3]))
        loss.backward()
        results.append((loss, [p.grad for p in model.parameters()]))
    (loss_fast, grads_fast), (loss_plain, grads_plain) = results
    torch.testing.assert_close(loss_fast, loss_plain, rtol=1e-12, atol=1e-12)
    for got, want in zip(grads_fast, grads_plain):
        torch.testing.assert_close(got, want, rtol=1e-9, atol=1e-12)


def test_eval_mode_is_the_plain_convolution(monkeypatch) -> None:
    """fvcore, export and latency see the full kernel: eval mode never takes the shortcut."""
    conv = Conv2d(4, 4, 5, 1, 2, groups=4, bias=False).eval()
    seen = []
    plain = nn.Conv2d._conv_forward
    monkeypatch.setattr(nn.Conv2d, "_conv_forward", lambda self, x, w, b: seen.append(w.shape) or plain(self, x, w, b))
    conv(torch.randn(1, 4, 2, 2))
    conv.train()(torch.randn(1, 4, 2, 2))
    assert seen == [torch.Size([4, 1, 5, 5])]  # the training call cropped to 3x3 and went through F.conv2d
