"""Checkpoint import. efficientnet_pytorch: against the real library (random weights, outputs compared).
torchvision and timm: against the real libraries in test_interop.py; their layouts are also transcribed
below from their sources as data, and checked key by key and through round trips, so these tests
run where neither library is installed."""
from __future__ import annotations

import math

import pytest
import torch
from helpers import randomize_

from search_spaces import get_preset
from search_spaces.builder import build_model
from search_spaces.interop.weights import (
    Conv2dSameTF,
    WeightsError,
    detect_format,
    from_native,
    key_map,
    load_checkpoint,
    load_weights,
    pretrained_model,
    source_convention,
    use_tf_padding,
)

pytestmark = pytest.mark.usefixtures("one_thread")


try:
    from efficientnet_pytorch import EfficientNet
except ImportError:  # the torchvision/timm layout tests and the error tests still run
    EfficientNet = None
needs_efficientnet_pytorch = pytest.mark.skipif(
    EfficientNet is None, reason="efficientnet_pytorch is not installed (pip install efficientnet-pytorch==0.7.1)")


def _compare(source: torch.nn.Module, ours: torch.nn.Module, resolution: int) -> float:
    """Largest |difference| of the outputs, computed in float64.

    In float32 efficientnet_pytorch's default MemoryEfficientSwish rounds differently from
    ``nn.SiLU`` (about 1e-5 on logits of size 3 at B0's depth); float64 leaves only the mapping.
    """
    x = torch.randn(2, 3, resolution, resolution, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    with torch.no_grad():
        expected, got = source.double()(x), ours.eval().double()(x)
    assert (expected[0] - expected[1]).abs().max() > 0.1  # outputs that depend on the input: a real comparison
    return float((expected - got).abs().max())


# --- efficientnet_pytorch: the real library -----------------------------------------------------

@needs_efficientnet_pytorch
@pytest.mark.parametrize("b, resolution, image_size", [
    (0, 224, None),   # from_name's own static padding for 224
    (1, 240, None),   # 240 -> ... -> 15: an odd input to a stride-2 layer (symmetric TF padding there)
    (3, 100, 100),    # 100, 50, 25, 13, 7: mixed parity
])
def test_efficientnet_pytorch_outputs_equal(b: int, resolution: int, image_size: int | None) -> None:
    source = EfficientNet.from_name(f"efficientnet-b{b}", **({"image_size": image_size} if image_size else {}))
    source = randomize_(source, b, resolution)
    ours = pretrained_model(get_preset(f"efficientnet-b{b}"), source.state_dict())  # format auto-detected
    assert _compare(source, ours, resolution) <= 1e-5


@needs_efficientnet_pytorch
def test_efficientnet_pytorch_float32_outputs_agree_to_rounding() -> None:
    """In float32 the outputs differ by rounding only (SE runs as matrix products here, 1x1 convs there)."""
    source = randomize_(EfficientNet.from_name("efficientnet-b0", image_size=64), 0, 64)
    source.set_swish(memory_efficient=False)  # x * sigmoid(x), efficientnet_pytorch's export setting
    ours = pretrained_model(get_preset("efficientnet-b0"), source.state_dict()).eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        expected = source(x)
        assert (ours(x) - expected).abs().max() <= 2e-5 * expected.abs().max()


@needs_efficientnet_pytorch
def test_efficientnet_pytorch_needs_tf_padding() -> None:
    source = randomize_(EfficientNet.from_name("efficientnet-b0", image_size=64), 0, 64)
    symmetric = pretrained_model(get_preset("efficientnet-b0"), source.state_dict(), padding="symmetric")
    assert _compare(source, symmetric, 64) > 1e-3


@needs_efficientnet_pytorch
@pytest.mark.slow
@pytest.mark.parametrize("b", [4, 5, 6, 7])
def test_efficientnet_pytorch_outputs_equal_b4_to_b7(b: int) -> None:
    source = randomize_(EfficientNet.from_name(f"efficientnet-b{b}", image_size=150), b, 150)  # 150, 75, 38, 19, 10
    ours = pretrained_model(get_preset(f"efficientnet-b{b}"), source.state_dict(), "efficientnet_pytorch")
    assert _compare(source, ours, 150) <= 1e-5


@needs_efficientnet_pytorch
@pytest.mark.parametrize("size", [7, 8, 15, 16])
@pytest.mark.parametrize("kernel", [3, 5])
def test_conv2d_same_tf_equals_efficientnet_pytorch(size: int, kernel: int) -> None:
    from efficientnet_pytorch.utils import Conv2dDynamicSamePadding

    reference = Conv2dDynamicSamePadding(4, 4, kernel, stride=2, groups=4, bias=False)
    conv = torch.nn.Conv2d(4, 4, kernel, 2, padding=(kernel - 1) // 2, groups=4, bias=False)
    conv.weight = reference.weight
    wrapper = torch.nn.Sequential(conv)
    assert use_tf_padding(wrapper) == 1 and isinstance(wrapper[0], Conv2dSameTF)
    x = torch.randn(1, 4, size, size)
    assert torch.allclose(wrapper(x), reference(x), atol=1e-6)


# --- torchvision and timm: documented layouts ------------------------------------------------------

def _conv_bn(keys: dict, prefix: str, conv: str, bn: str, cin: int, cout: int, k: int, groups: int = 1) -> None:
    keys[f"{prefix}{conv}.weight"] = (cout, cin // groups, k, k)
    keys.update({f"{prefix}{bn}.{t}": (cout,) for t in ("weight", "bias", "running_mean", "running_var")})
    keys[f"{prefix}{bn}.num_batches_tracked"] = ()


def _se(keys: dict, reduce: str, expand: str, channels: int, reduced: int) -> None:
    keys.update({f"{reduce}.weight": (reduced, channels, 1, 1), f"{reduce}.bias": (reduced,),
                 f"{expand}.weight": (channels, reduced, 1, 1), f"{expand}.bias": (channels,)})


def _make_divisible(v: float, divisor: int = 8) -> int:
    """timm.layers.make_divisible (round_limit 0.9), the same as torchvision._utils._make_divisible."""
    new = max(divisor, int(v + divisor / 2) // divisor * divisor)
    return new + divisor if new < 0.9 * v else new


# torchvision/models/efficientnet.py, _efficientnet_conf("efficientnet_b0"):
# bneck_conf(expand_ratio, kernel, stride, input_channels, out_channels, num_layers)
TORCHVISION_B0_CONF = [(1, 3, 1, 32, 16, 1), (6, 3, 2, 16, 24, 2), (6, 5, 2, 24, 40, 2), (6, 3, 2, 40, 80, 3),
                       (6, 5, 1, 80, 112, 3), (6, 5, 2, 112, 192, 4), (6, 3, 1, 192, 320, 1)]


def torchvision_layout(width_mult: float = 1.0, depth_mult: float = 1.0) -> dict[str, tuple[int, ...]]:
    """Names and shapes of torchvision's ``efficientnet_b*().state_dict()``, transcribed from its source.

    features.0: Conv2dNormActivation(3, 32, k3, s2) = (conv, bn, act). features.1..7: a Sequential of
    MBConv per stage; MBConv.block = [Conv2dNormActivation expand (only if expanded != input)],
    depthwise Conv2dNormActivation, SqueezeExcitation(fc1, fc2; squeeze = max(1, input // 4)),
    project Conv2dNormActivation. features.8: 1x1 conv to 4 x the last stage's width.
    classifier = (Dropout, Linear). Widths: _make_divisible(c * width_mult, 8); layers:
    ceil(n * depth_mult); expanded = _make_divisible(input * expand_ratio, 8).
    """
    keys: dict[str, tuple[int, ...]] = {}
    stem = _make_divisible(32 * width_mult)
    _conv_bn(keys, "features.0.", "0", "1", 3, stem, 3)
    for stage, (expand, kernel, _, cin, cout, layers) in enumerate(TORCHVISION_B0_CONF, start=1):
        cin, cout = _make_divisible(cin * width_mult), _make_divisible(cout * width_mult)
        for i in range(math.ceil(layers * depth_mult)):
            c_in = cin if i == 0 else cout
            mid, block, k = _make_divisible(c_in * expand), f"features.{stage}.{i}.block.", 0
            if mid != c_in:
                _conv_bn(keys, f"{block}0.", "0", "1", c_in, mid, 1)
                k = 1
            _conv_bn(keys, f"{block}{k}.", "0", "1", mid, mid, kernel, groups=mid)
            _se(keys, f"{block}{k + 1}.fc1", f"{block}{k + 1}.fc2", mid, max(1, c_in // 4))
            _conv_bn(keys, f"{block}{k + 2}.", "0", "1", mid, cout, 1)
    _conv_bn(keys, "features.8.", "0", "1", cout, 4 * cout, 1)
    keys.update({"classifier.1.weight": (1000, 4 * cout), "classifier.1.bias": (1000,)})
    return keys


# timm/models/efficientnet.py: _gen_efficientnet's arch_def (efficientnet_b0) and _gen_mnasnet_a1's (semnasnet_100)
TIMM_B0_ARCH_DEF = [["ds_r1_k3_s1_e1_c16_se0.25"], ["ir_r2_k3_s2_e6_c24_se0.25"], ["ir_r2_k5_s2_e6_c40_se0.25"],
                    ["ir_r3_k3_s2_e6_c80_se0.25"], ["ir_r3_k5_s1_e6_c112_se0.25"], ["ir_r4_k5_s2_e6_c192_se0.25"],
                    ["ir_r1_k3_s1_e6_c320_se0.25"]]
TIMM_MNASNET_A1_ARCH_DEF = [["ds_r1_k3_s1_e1_c16_noskip"], ["ir_r2_k3_s2_e6_c24"], ["ir_r3_k5_s2_e3_c40_se0.25"],
                            ["ir_r4_k3_s2_e6_c80"], ["ir_r2_k3_s1_e6_c112_se0.25"], ["ir_r3_k5_s2_e6_c160_se0.25"],
                            ["ir_r1_k3_s1_e6_c320"]]


def timm_layout(arch_def: list[list[str]]) -> dict[str, tuple[int, ...]]:
    """Names and shapes of timm's ``EfficientNet(decode_arch_def(arch_def), stem_size=32, num_features=1280)``.

    Transcribed from timm's sources: conv_stem/bn1; blocks.{stage}.{i} = DepthwiseSeparableConv
    (conv_dw, bn1, se.conv_reduce, se.conv_expand, conv_pw, bn2) or InvertedResidual (conv_pw, bn1,
    conv_dw, bn2, se.*, conv_pwl, bn3); SE reduce width round(mid * se_ratio / exp_ratio);
    conv_head/bn2; classifier.
    """
    keys: dict[str, tuple[int, ...]] = {}
    _conv_bn(keys, "", "conv_stem", "bn1", 3, 32, 3)
    cin = 32
    for s, (block_str,) in enumerate(arch_def):
        tok = {t[0]: t[1:] for t in block_str.split("_")[1:] if t[0] in "rkec"}
        se = float(block_str.split("_se")[1].split("_")[0]) if "_se" in block_str else 0.0
        for i in range(int(tok["r"])):
            p, cout, k = f"blocks.{s}.{i}.", int(tok["c"]), int(tok["k"])
            if block_str.startswith("ds"):
                _conv_bn(keys, p, "conv_dw", "bn1", cin, cin, k, groups=cin)
                if se:  # SqueezeExcite(in_chs, rd_ratio=se_ratio / 1.0)
                    _se(keys, p + "se.conv_reduce", p + "se.conv_expand", cin, round(cin * se))
                _conv_bn(keys, p, "conv_pw", "bn2", cin, cout, 1)
            else:
                exp = float(tok["e"])
                mid = _make_divisible(cin * exp)
                _conv_bn(keys, p, "conv_pw", "bn1", cin, mid, 1)
                _conv_bn(keys, p, "conv_dw", "bn2", mid, mid, k, groups=mid)
                if se:  # SqueezeExcite(mid_chs, rd_ratio=se_ratio / exp_ratio)
                    _se(keys, p + "se.conv_reduce", p + "se.conv_expand", mid, round(mid * (se / exp)))
                _conv_bn(keys, p, "conv_pwl", "bn3", mid, cout, 1)
            cin = cout
    _conv_bn(keys, "", "conv_head", "bn2", cin, 1280, 1)
    keys.update({"classifier.weight": (1000, 1280), "classifier.bias": (1000,)})
    return keys


LAYOUTS = [("torchvision", "efficientnet-b0", torchvision_layout()),
           ("torchvision", "efficientnet-b3", torchvision_layout(1.2, 1.4)),  # efficientnet_b3(): width 1.2, depth 1.4
           ("timm", "efficientnet-b0", timm_layout(TIMM_B0_ARCH_DEF)),
           ("timm", "mnasnet-a1", timm_layout(TIMM_MNASNET_A1_ARCH_DEF))]


def _random_state(layout: dict[str, tuple[int, ...]], seed: int) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    state = {}
    for name, shape in layout.items():
        if name.endswith("num_batches_tracked"):
            state[name] = torch.tensor(7)
        elif name.endswith("running_var"):
            state[name] = torch.rand(shape, generator=gen) + 0.5
        else:
            state[name] = torch.randn(shape, generator=gen) * 0.1
    return state


@pytest.mark.parametrize("fmt, preset, layout", LAYOUTS,
                         ids=["torchvision-b0", "torchvision-b3", "timm-b0", "timm-semnasnet_100"])
def test_layout_round_trip(fmt: str, preset: str, layout: dict) -> None:
    """theirs -> ours -> theirs is the identity on every tensor; ours -> theirs -> ours keeps the outputs."""
    theirs = _random_state(layout, 0)
    assert detect_format(theirs) == fmt
    ours = pretrained_model(get_preset(preset), theirs)  # every key of the documented layout maps
    back = from_native(ours, fmt)
    assert back.keys() == layout.keys()
    assert all(torch.equal(back[k], theirs[k]) for k in layout)

    _, eps = source_convention(fmt, get_preset(preset))
    model = randomize_(build_model(get_preset(preset).replace(bn_eps=eps)), 3)
    again = pretrained_model(get_preset(preset), from_native(model, fmt), fmt)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(again.eval()(x), model(x))


def test_torchvision_b0_layout_spot_checks() -> None:
    """A few keys written out by hand from torchvision's module structure, and the count."""
    layout = torchvision_layout()
    assert len(layout) == 360  # stem 6 + MBConv1 16 + 15 x MBConv6 22 + head 6 + classifier 2
    mapping = key_map(build_model(get_preset("efficientnet-b0")), "torchvision")
    assert mapping["blocks.0.main.0.0.weight"] == "features.1.0.block.0.0.weight"  # MBConv1: depthwise first
    assert mapping["blocks.0.main.1.reduce.weight"] == "features.1.0.block.1.fc1.weight"
    assert mapping["blocks.1.main.0.0.weight"] == "features.2.0.block.0.0.weight"  # MBConv6: expand first
    assert mapping["blocks.15.main.3.1.running_var"] == "features.7.0.block.3.1.running_var"
    assert mapping["head.0.weight"] == "features.8.0.weight" and mapping["classifier.bias"] == "classifier.1.bias"
    assert layout["features.2.0.block.2.fc1.weight"] == (4, 96, 1, 1)


@pytest.mark.parametrize("fmt, preset, padding, eps", [
    ("efficientnet_pytorch", "efficientnet-b0", "same_tf", 1e-3), ("torchvision", "efficientnet-b4", "symmetric", 1e-5),
    ("torchvision", "efficientnet-b5", "symmetric", 1e-3), ("timm", "efficientnet-b0", "symmetric", 1e-5),
])
def test_source_convention(fmt: str, preset: str, padding: str, eps: float) -> None:
    assert source_convention(fmt, get_preset(preset)) == (padding, eps)


# --- refusals and error messages ---------------------------------------------------------------------

@pytest.mark.parametrize("fmt, preset, message", [
    ("torchvision", "mnasnet-a1", "activation 'relu'"),
    ("efficientnet_pytorch", "mobilenetv2", "activation 'relu6'"),
])
def test_inexpressible_architectures(fmt: str, preset: str, message: str) -> None:
    with pytest.raises(WeightsError, match=message):
        key_map(build_model(get_preset(preset)), fmt)


def test_timm_refuses_pool_shortcut() -> None:
    arch = get_preset("efficientnet-b0")
    arch = arch.replace(stages=(arch.stages[0].__class__.parse("ir_r2_k3_s2_e6_c24_se0.25_poolskip"), *arch.stages[1:]))
    with pytest.raises(WeightsError, match="pooling shortcut"):
        key_map(build_model(arch), "timm")


@pytest.fixture(scope="module")
def b0_source_state() -> dict[str, torch.Tensor]:
    """A B0 checkpoint in efficientnet_pytorch's layout (made here: the library is not needed)."""
    return from_native(randomize_(build_model(get_preset("efficientnet-b0")), 0), "efficientnet_pytorch")


@pytest.mark.parametrize("preset, kwargs, message", [
    ("efficientnet-b1", {}, r"shape mismatch at checkpoint tensor '_blocks\.1\._depthwise_conv\.weight' "
                            r"\(the model's 'blocks\.1\.main\.0\.0\.weight'\): \(96, 1, 3, 3\) in the checkpoint, "
                            r"\(16, 1, 3, 3\) in the model"),
    ("efficientnet-b0", {"num_classes": 10}, r"shape mismatch at checkpoint tensor '_fc\.weight'"),
    ("efficientnet-b0", {"fmt": "timm"}, r"no tensor 'conv_stem\.weight'.*a timm checkpoint"),
])
def test_mismatch_names_the_first_tensor(b0_source_state: dict, preset: str, kwargs: dict, message: str) -> None:
    with pytest.raises(WeightsError, match=message):
        pretrained_model(get_preset(preset), b0_source_state, **kwargs)


def test_missing_and_extra_tensors_are_named(b0_source_state: dict) -> None:
    extra = {**b0_source_state, "extra.weight": torch.zeros(1)}
    with pytest.raises(WeightsError, match="1 tensor.*first 'extra.weight'"):
        pretrained_model(get_preset("efficientnet-b0"), extra)
    missing = {k: v for k, v in b0_source_state.items() if k != "_blocks.3._se_reduce.bias"}
    with pytest.raises(WeightsError, match="no tensor '_blocks.3._se_reduce.bias'"):
        pretrained_model(get_preset("efficientnet-b0"), missing)


class _Payload:
    """Unpickling this would create a file: what a malicious checkpoint could do instead."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self):
        return open, (self.path, "w")


def test_checkpoint_with_arbitrary_objects_is_refused(tmp_path, b0_source_state: dict) -> None:
    marker = tmp_path / "was-unpickled"
    torch.save({"state_dict": b0_source_state, "extra": _Payload(str(marker))}, tmp_path / "evil.pth")
    with pytest.raises(WeightsError, match="refused to unpickle"):
        load_checkpoint(tmp_path / "evil.pth")
    assert not marker.exists()


class _Command:
    """Unpickling this would run a shell command (``os.system``, whose module torch blocks by name)."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self):
        import os

        return os.system, (f"touch {self.path}",)


def test_checkpoint_holding_code_is_refused_for_that_not_called_no_checkpoint(tmp_path, b0_source_state) -> None:
    marker = tmp_path / "was-run"
    torch.save({"state_dict": b0_source_state, "extra": _Command(str(marker))}, tmp_path / "evil.pth")
    with pytest.raises(WeightsError) as err:
        load_checkpoint(tmp_path / "evil.pth")
    message = str(err.value)
    assert "refused to unpickle" in message and "holds code" in message and "GLOBAL posix.system" in message
    assert "not a PyTorch checkpoint" not in message and "\n" not in message
    assert not marker.exists()


def test_checkpoint_unwrapping_and_formats(tmp_path, b0_source_state: dict) -> None:
    torch.save({"state_dict": {f"module.{k}": v for k, v in b0_source_state.items()}, "epoch": 3}, tmp_path / "w.pth")
    state = load_checkpoint(tmp_path / "w.pth")
    assert detect_format(state) == "efficientnet_pytorch" and state.keys() == b0_source_state.keys()
    model = build_model(get_preset("efficientnet-b0"))
    assert load_weights(model, tmp_path / "w.pth") == "efficientnet_pytorch"
    assert torch.equal(model.blocks[1].main[1][0].weight, b0_source_state["_blocks.1._depthwise_conv.weight"])


def test_safetensors_checkpoint(tmp_path, b0_source_state: dict) -> None:
    safetensors = pytest.importorskip("safetensors.torch", reason="pip install safetensors")
    safetensors.save_file({k: v.contiguous() for k, v in b0_source_state.items()}, str(tmp_path / "w.safetensors"))
    assert load_checkpoint(tmp_path / "w.safetensors").keys() == b0_source_state.keys()


@pytest.mark.parametrize("content, message", [
    (None, "does not exist"),
    (b"not a checkpoint", "is not a PyTorch checkpoint"),
    ("tensor", "expected a state dict"),
])
def test_unreadable_checkpoints(tmp_path, content, message: str) -> None:
    path = tmp_path / "w.pth"
    if content == "tensor":
        torch.save(torch.zeros(3), path)
    elif content is not None:
        path.write_bytes(content)
    with pytest.raises(WeightsError, match=message):
        load_checkpoint(path)


def test_unknown_layout_is_an_error() -> None:
    with pytest.raises(WeightsError, match="cannot tell the checkpoint's layout.*'foo.weight'"):
        detect_format({"foo.weight": torch.zeros(1)})
