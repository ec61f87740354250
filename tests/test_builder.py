"""The built models against the reference networks: parameter counts, B0's structure, formats."""
from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from search_spaces import ArchSpec, StageSpec, build_model, get_preset, list_presets, resolve
from search_spaces.blocks import DropPath, SqueezeExcite

pytestmark = pytest.mark.usefixtures("one_thread")


# docs/reference.md section 2 (timm / torchvision / efficientnet_pytorch); torchvision mobilenet_v2;
# timm semnasnet_100. Every preset needs an entry here, or test_preset_param_count fails.
REFERENCE_PARAMS = {
    "efficientnet-b0": 5_288_548,
    "efficientnet-b1": 7_794_184,
    "efficientnet-b2": 9_109_994,
    "efficientnet-b3": 12_233_232,
    "efficientnet-b4": 19_341_616,
    "efficientnet-b5": 30_389_784,
    "efficientnet-b6": 43_040_704,
    "efficientnet-b7": 66_347_960,
    "mobilenetv2": 3_504_872,
    "mnasnet-a1": 3_887_038,
}
# docs/reference.md section 2: dropout before the classifier.
REFERENCE_DROPOUT = {"efficientnet-b0": 0.2, "efficientnet-b1": 0.2, "efficientnet-b2": 0.3,
                     "efficientnet-b3": 0.3, "efficientnet-b4": 0.4, "efficientnet-b5": 0.4,
                     "efficientnet-b6": 0.5, "efficientnet-b7": 0.5}

# docs/reference.md section 1, stages 2..8: (out channels, layers, stride, kernel, expansion, input resolution).
B0_TABLE = (
    (16, 1, 1, 3, 1, 112),
    (24, 2, 2, 3, 6, 112),
    (40, 2, 2, 5, 6, 56),
    (80, 3, 2, 3, 6, 28),
    (112, 3, 1, 5, 6, 14),
    (192, 4, 2, 5, 6, 14),
    (320, 1, 1, 3, 6, 7),
)
B0_STEM, B0_HEAD = 32, 1280

# Every op, every skip kind, SE on each op, an activation override, a head-less network.
TINY = ArchSpec(
    stages=tuple(StageSpec.parse(s) for s in (
        "cn_r1_k3_s1_e1_c8_se0.25",
        "ds_r2_k5_s2_e1_c16_poolskip",
        "ir_r2_k3_s2_e3_c24_se0.25_poolskip",
        "ir_r1_k5_s1_e6_c24_nhs",
        "ir_r2_k3_s1_e1_c32_noskip",
        "cn_r1_k3_s2_e1_c40_poolskip",
    )),
    stem_channels=8, head_channels=0, resolution=32, name="tiny",
)


def _b0_layers() -> list[tuple[int, int, int, int, int]]:
    """(in, out, stride, kernel, expansion) for B0's 16 layers, from the reference table."""
    layers, in_ch = [], B0_STEM
    for out_ch, n, stride, kernel, exp, _ in B0_TABLE:
        for i in range(n):
            layers.append((in_ch, out_ch, stride if i == 0 else 1, kernel, exp))
            in_ch = out_ch
    return layers


def _calibrate(model: nn.Module, x: torch.Tensor) -> nn.Module:
    """Set BN running stats from one batch so eval outputs have realistic (order-1) magnitudes."""
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.reset_running_stats()
            m.momentum = None  # cumulative average: one batch sets the stats
    model.train()
    with torch.no_grad():
        model(x)
    return model.eval()


def _num_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


# --- parameter counts --------------------------------------------------------------------------

@pytest.mark.parametrize("name", list_presets())
def test_preset_param_count(name: str) -> None:
    if name not in REFERENCE_PARAMS:
        pytest.fail(f"preset {name!r} has no reference parameter count in REFERENCE_PARAMS")
    model = build_model(get_preset(name))
    assert _num_params(model) == REFERENCE_PARAMS[name]
    if name in REFERENCE_DROPOUT:
        dropouts = [m.p for m in model.modules() if isinstance(m, nn.Dropout)]
        assert dropouts == [REFERENCE_DROPOUT[name]]


def test_presets_include_required() -> None:
    required = {f"efficientnet-b{i}" for i in range(8)} | {"mobilenetv2", "mnasnet-a1"}
    assert required <= set(list_presets())


def test_b0_param_count_matches_efficientnet_pytorch() -> None:
    ep = pytest.importorskip("efficientnet_pytorch")
    theirs = _num_params(ep.EfficientNet.from_name("efficientnet-b0"))
    assert theirs == REFERENCE_PARAMS["efficientnet-b0"]
    assert _num_params(build_model(get_preset("efficientnet-b0"))) == theirs


@pytest.mark.parametrize("index", range(8))
def test_efficientnet_layers_match_efficientnet_pytorch(index: int) -> None:
    """Layer by layer: channels, stride, kernel, expansion, SE width, drop-connect rate."""
    ep = pytest.importorskip("efficientnet_pytorch")
    name = f"efficientnet-b{index}"
    ref = ep.EfficientNet.from_name(name)
    ref_layers = []
    for idx, block in enumerate(ref._blocks):
        a = block._block_args
        stride = a.stride[0] if isinstance(a.stride, (list, tuple)) else a.stride
        se = block._se_reduce.out_channels if block.has_se else 0
        rate = ref._global_params.drop_connect_rate * idx / len(ref._blocks)
        ref_layers.append((a.input_filters, a.output_filters, stride, a.kernel_size, a.expand_ratio, se,
                           round(rate, 12)))
    r = resolve(get_preset(name))
    ours = [(l.in_channels, l.out_channels, l.stride, l.kernel, l.expansion, l.se_reduced, round(l.drop_path, 12))
            for l in r.layers]
    assert ours == ref_layers
    assert (r.stem_channels, r.head_channels) == (ref._conv_stem.out_channels, ref._conv_head.out_channels)
    assert get_preset(name).dropout == ref._global_params.dropout_rate
    assert _num_params(build_model(get_preset(name))) == _num_params(ref)


# --- EfficientNet-B0 structure (docs/reference.md section 1) -----------------------------------------

def test_b0_resolved_stages() -> None:
    r = resolve(get_preset("efficientnet-b0"))
    assert (r.stem_channels, r.head_channels) == (B0_STEM, B0_HEAD)
    ours = [(l.in_channels, l.out_channels, l.stride, l.kernel, l.expansion) for l in r.layers]
    assert ours == _b0_layers()
    assert [l.op for l in r.layers] == ["dsconv"] + ["mbconv"] * 15


def test_b0_feature_map_sizes_at_224() -> None:
    model = build_model(get_preset("efficientnet-b0")).eval()
    shapes: list[tuple[int, ...]] = []
    model.stem.register_forward_hook(lambda m, i, o: shapes.append(tuple(o.shape[1:])))
    for block in model.blocks:
        block.register_forward_hook(lambda m, i, o: shapes.append(tuple(o.shape[1:])))
    with torch.no_grad():
        model(torch.zeros(1, 3, 224, 224))
    # The stem's output and each stage's input resolution, then each stage's output.
    assert shapes[0] == (B0_STEM, 112, 112)
    ends = [sum(row[1] for row in B0_TABLE[:i + 1]) for i in range(len(B0_TABLE))]
    in_res = [row[5] for row in B0_TABLE] + [7]
    for i, (row, end) in enumerate(zip(B0_TABLE, ends)):
        assert shapes[end] == (row[0], in_res[i + 1], in_res[i + 1])


def test_b0_se_width_is_quarter_of_block_input() -> None:
    model = build_model(get_preset("efficientnet-b0"))
    widths = []
    for block in model.blocks:
        se = [m for m in block.modules() if isinstance(m, SqueezeExcite)]
        assert len(se) == 1
        assert isinstance(se[0].gate, nn.Sigmoid) and isinstance(se[0].act, nn.SiLU)
        widths.append(se[0].reduce.out_channels)
    assert widths == [int(in_ch * 0.25) for in_ch, *_ in _b0_layers()]
    assert widths[:3] == [8, 4, 6]  # 32 -> 8 (not 0.25 x 32 x 1 expanded), 16 -> 4, 24 -> 6


def test_b0_residual_and_stochastic_depth() -> None:
    model = build_model(get_preset("efficientnet-b0"))
    layers = _b0_layers()
    assert len(model.blocks) == len(layers) == 16
    rates = []
    for idx, (block, (in_ch, out_ch, stride, *_)) in enumerate(zip(model.blocks, layers)):
        assert block.has_skip == (stride == 1 and in_ch == out_ch)
        if block.has_skip:
            assert isinstance(block.drop_path, DropPath)
            assert block.drop_path.p == pytest.approx(0.2 * idx / 16, abs=1e-12)
            rates.append(block.drop_path.p)
        else:
            assert not any(isinstance(m, DropPath) for m in block.modules())
    assert len(rates) == 9
    assert rates == sorted(rates) and len(set(rates)) == len(rates)  # rises linearly
    assert 0.0 < max(rates) < 0.2


def test_b0_norm_and_activations() -> None:
    model = build_model(get_preset("efficientnet-b0"))
    bns = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    assert bns and all(m.momentum == 0.01 and m.eps == 1e-3 for m in bns)
    acts = {type(m) for m in model.modules() if isinstance(m, (nn.ReLU, nn.ReLU6, nn.SiLU, nn.Hardswish,
                                                                 nn.Sigmoid, nn.GELU))}
    assert acts == {nn.SiLU, nn.Sigmoid}
    assert isinstance(model.classifier, nn.Linear)
    assert (model.classifier.in_features, model.classifier.out_features) == (B0_HEAD, 1000)


def test_mobilenetv2_and_mnasnet_activations_and_se() -> None:
    mv2 = build_model(get_preset("mobilenetv2"))
    assert {type(m) for m in mv2.modules() if isinstance(m, (nn.ReLU, nn.ReLU6, nn.SiLU))} == {nn.ReLU6}
    assert not any(isinstance(m, SqueezeExcite) for m in mv2.modules())
    a1 = build_model(get_preset("mnasnet-a1"))
    assert {type(m) for m in a1.modules() if isinstance(m, (nn.ReLU, nn.ReLU6, nn.SiLU))} == {nn.ReLU}
    se_blocks = [i for i, b in enumerate(a1.blocks) if any(isinstance(m, SqueezeExcite) for m in b.modules())]
    # layers 1 | 2 | 3 (SE) | 4 | 2 (SE) | 3 (SE) | 1: SE in stages 3, 5, 6
    assert se_blocks == [3, 4, 5, 10, 11, 12, 13, 14]
    assert not a1.blocks[0].has_skip  # ds_..._noskip: 32 -> 16 has none anyway, and noskip says so


# --- running -----------------------------------------------------------------------------------

@pytest.mark.parametrize("name", list_presets())
def test_preset_forward_shapes(name: str) -> None:
    arch = get_preset(name)
    torch.manual_seed(0)
    with torch.no_grad():
        out = build_model(arch).eval()(torch.randn(2, 3, 64, 64))
        assert out.shape == (2, 1000) and torch.isfinite(out).all()
        out = build_model(arch, num_classes=10, in_chans=1).eval()(torch.randn(2, 1, 64, 64))
        assert out.shape == (2, 10) and torch.isfinite(out).all()


def test_build_rejects_bad_sizes() -> None:
    with pytest.raises(ValueError, match="num_classes=0"):
        build_model(get_preset("efficientnet-b0"), num_classes=0)
    with pytest.raises(ValueError, match="in_chans=0"):
        build_model(get_preset("efficientnet-b0"), in_chans=0)


def test_train_step_reaches_every_parameter() -> None:
    torch.manual_seed(0)
    model = build_model(TINY, num_classes=10).train()
    loss = nn.functional.cross_entropy(model(torch.randn(4, 3, 32, 32)), torch.tensor([0, 1, 2, 3]))
    loss.backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None]
    assert not missing
    assert torch.isfinite(loss)


@pytest.mark.parametrize("name", ("efficientnet-b0", "mobilenetv2", "mnasnet-a1", "tiny"))
def test_channels_last_matches_nchw(name: str) -> None:
    """Eval outputs agree within 1e-5: absolutely in float64; relative to the logits' scale in float32.

    Float32 itself is only good to ~1e-5 relative here (NCHW float32 vs float64 differs by up to
    8e-5 on logits of magnitude 5-10), so an absolute 1e-5 on float32 logits would test rounding.
    """
    arch = TINY if name == "tiny" else get_preset(name)
    torch.manual_seed(0)
    model = _calibrate(build_model(arch, num_classes=10), torch.randn(16, 3, 96, 96))
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        for dtype in (torch.float64, torch.float32):
            model = model.to(dtype=dtype, memory_format=torch.contiguous_format)
            ref = model(x.to(dtype))
            model = model.to(memory_format=torch.channels_last)
            out = model(x.to(dtype).to(memory_format=torch.channels_last))
            scale = 1.0 if dtype == torch.float64 else max(1.0, ref.abs().max().item())
            assert ref.abs().max() > 1e-2  # a real signal, not a vanishing one
            assert (out - ref).abs().max().item() <= 1e-5 * scale, dtype


@pytest.mark.parametrize("name", ("efficientnet-b0", "tiny"))
def test_jit_trace_matches(name: str) -> None:
    arch = TINY if name == "tiny" else get_preset(name)
    torch.manual_seed(0)
    model = _calibrate(build_model(arch, num_classes=10), torch.randn(8, 3, 64, 64))
    with torch.no_grad():
        traced = torch.jit.trace(model, torch.randn(1, 3, 64, 64))
        x = torch.randn(2, 3, 64, 64)
        torch.testing.assert_close(traced(x), model(x), rtol=1e-5, atol=1e-5)


@pytest.mark.slow  # 25-50 s cold on 2 cores (inductor compiles C++ kernels)
def test_torch_compile_tiny() -> None:
    torch.manual_seed(0)
    model = _calibrate(build_model(TINY, num_classes=10), torch.randn(8, 3, 32, 32))
    x = torch.randn(2, 3, 32, 32)
    compiled = torch.compile(model)
    with torch.no_grad():
        out = compiled(x)
        ref = model(x)
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("init", ["pytorch", "fan_out"])
def test_initialisation_schemes(init: str) -> None:
    """pytorch: each layer's own default, U(±1/sqrt(fan_in)) (efficientnet_pytorch's); fan_out: torchvision's
    kaiming-normal fan-out, std sqrt(2 / fan_out), with the classifier at U(±1/sqrt(in_features))."""
    torch.manual_seed(0)
    model = build_model(get_preset("efficientnet-b0"), num_classes=10, init=init)
    convs = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d) and m.weight.numel() >= 4096]
    for conv in convs:
        w = conv.weight.detach()
        fan_in = w[0].numel()
        fan_out = w.shape[0] * w[0, 0].numel()
        if init == "pytorch":
            assert w.abs().max() <= 1 / math.sqrt(fan_in) + 1e-7
            assert w.std().item() == pytest.approx(1 / math.sqrt(3 * fan_in), rel=0.1)
        else:
            assert w.std().item() == pytest.approx(math.sqrt(2 / fan_out), rel=0.1)
    bound = 1 / math.sqrt(model.classifier.in_features)
    assert model.classifier.weight.abs().max() <= bound + 1e-7
    with pytest.raises(ValueError, match="init must be one of"):
        build_model(get_preset("efficientnet-b0"), init="xavier")
