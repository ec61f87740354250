"""The analytic cost model against fvcore's trace of the built model and docs/reference.md's figures."""
from __future__ import annotations

import pytest
import torch

from search_spaces import ArchSpec, StageSpec, build_model, count_cost, get_preset, list_presets

pytestmark = pytest.mark.usefixtures("one_thread")


fvcore_nn = pytest.importorskip("fvcore.nn")
optuna = pytest.importorskip("optuna")

FAST_MAX_RESOLUTION = 300  # B4..B7 (380..600 px) are traced at 224 here, at full size in the slow test


def _fvcore_macs(arch: ArchSpec, resolution: int, num_classes: int = 1000, in_chans: int = 3) -> tuple[int, int]:
    """(params, fvcore total) of the built model, as a user would measure them."""
    model = build_model(arch, num_classes=num_classes, in_chans=in_chans).eval()
    analysis = fvcore_nn.FlopCountAnalysis(model, torch.zeros(1, in_chans, resolution, resolution))
    analysis.unsupported_ops_warnings(False).uncalled_modules_warnings(False)
    return sum(p.numel() for p in model.parameters()), int(analysis.total())


def _sampled_archs(n: int, seed: int) -> list[ArchSpec]:
    from search_spaces import default_space

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    space = default_space()
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed))
    return [space.sample(study.ask()) for _ in range(n)]


def _assert_matches_fvcore(arch: ArchSpec, resolution: int, num_classes: int = 1000, in_chans: int = 3) -> None:
    params, macs = _fvcore_macs(arch, resolution, num_classes, in_chans)
    cost = count_cost(arch, resolution, num_classes=num_classes, in_chans=in_chans)
    assert cost.params == params
    assert cost.macs == macs, f"{arch.to_str()} at {resolution}px: {cost.macs} != fvcore {macs}"


# --- presets -----------------------------------------------------------------------------------

@pytest.mark.parametrize("name", list_presets())
def test_preset_cost_matches_fvcore(name: str) -> None:
    arch = get_preset(name)
    _assert_matches_fvcore(arch, arch.resolution if arch.resolution <= FAST_MAX_RESOLUTION else 224)


@pytest.mark.slow
@pytest.mark.parametrize("name", [n for n in list_presets() if get_preset(n).resolution > FAST_MAX_RESOLUTION])
def test_preset_cost_matches_fvcore_full_resolution(name: str) -> None:
    arch = get_preset(name)
    _assert_matches_fvcore(arch, arch.resolution)


def test_b0_conventions() -> None:
    """docs/reference.md section 3: the paper's multiply-adds and fvcore's torchvision-style count."""
    b0 = get_preset("efficientnet-b0")
    assert count_cost(b0, convention="paper").macs == 385_814_752
    assert count_cost(b0).macs == 401_659_392
    assert count_cost(b0, convention="fvcore").macs == 401_659_392
    assert count_cost(b0).params == count_cost(b0, convention="paper").params == 5_288_548


@pytest.mark.parametrize(("name", "giga_macs"), (
    ("efficientnet-b1", "0.7127"),
    ("efficientnet-b2", "1.0266"),
    ("efficientnet-b3", "1.8839"),
))
def test_b1_b3_fvcore_macs_match_reference(name: str, giga_macs: str) -> None:
    """docs/reference.md section 2, measured on torchvision-style SE, at each model's own resolution."""
    assert f"{count_cost(get_preset(name)).macs / 1e9:.4f}" == giga_macs


@pytest.mark.parametrize(("name", "giga_macs"), (
    ("efficientnet-b4", 4.5), ("efficientnet-b5", 10.5), ("efficientnet-b6", 19.4), ("efficientnet-b7", 38.3),
))
def test_b4_b7_fvcore_macs_near_reference(name: str, giga_macs: float) -> None:
    """docs/reference.md section 2 gives B4..B7 to about 3 digits ('~4.5 G')."""
    assert count_cost(get_preset(name)).macs / 1e9 == pytest.approx(giga_macs, rel=0.01)


def test_mnasnet_a1_paper_macs_near_reference() -> None:
    """docs/reference.md section 5: MnasNet-A1 has 312M multiply-adds (3 significant digits)."""
    assert round(count_cost(get_preset("mnasnet-a1"), convention="paper").macs / 1e6) == 312


def test_mobilenetv2_paper_macs() -> None:
    """MobileNetV2 1.0 at 224: 300M multiply-adds (Sandler et al. 2018, Table 6)."""
    assert count_cost(get_preset("mobilenetv2"), convention="paper").macs / 1e6 == pytest.approx(300, rel=0.01)


def test_resolution_argument_defaults_to_arch_resolution() -> None:
    b2 = get_preset("efficientnet-b2")
    assert count_cost(b2) == count_cost(b2, 260) == count_cost(b2.replace(resolution=224), 260)


# --- sampled architectures ---------------------------------------------------------------------

SMALL_RESOLUTIONS = (64, 96, 128, 67, 99, 113)  # odd sizes exercise 'same' padding and ceil pooling


def test_sampled_cost_matches_fvcore() -> None:
    archs = _sampled_archs(50, seed=1)
    for i, arch in enumerate(archs):
        _assert_matches_fvcore(arch, SMALL_RESOLUTIONS[i % len(SMALL_RESOLUTIONS)])


def test_sampled_cost_matches_fvcore_at_224() -> None:
    for arch in _sampled_archs(3, seed=2):
        _assert_matches_fvcore(arch, 224)


def test_sampled_cost_with_classes_and_channels() -> None:
    for arch, (classes, chans) in zip(_sampled_archs(3, seed=3), ((10, 1), (1, 4), (100, 3))):
        _assert_matches_fvcore(arch, 64, num_classes=classes, in_chans=chans)


@pytest.mark.parametrize("stages", (
    ("cn_r1_k3_s1_e1_c8_se0.25", "ds_r2_k5_s2_e1_c16_poolskip", "ir_r2_k3_s2_e3_c24_se0.25_poolskip",
     "ir_r1_k5_s1_e6_c24_nhs", "ir_r2_k3_s1_e1_c32_noskip", "cn_r1_k3_s2_e1_c40_poolskip"),
    ("cn_r1_k1_s2_e1_c12_poolskip", "ir_r1_k7_s2_e4_c20_se1", "ds_r1_k3_s1_e1_c20_se0.5_poolskip"),
))
@pytest.mark.parametrize("head", (0, 96))
def test_hand_arch_cost_matches_fvcore(stages: tuple[str, ...], head: int) -> None:
    arch = ArchSpec(stages=tuple(StageSpec.parse(s) for s in stages), stem_channels=8, head_channels=head)
    for resolution in (32, 33, 8):
        _assert_matches_fvcore(arch, resolution)


def test_bad_arguments_raise() -> None:
    b0 = get_preset("efficientnet-b0")
    with pytest.raises(ValueError, match="flops"):
        count_cost(b0, convention="flops")
    with pytest.raises(ValueError, match="resolution=0"):
        count_cost(b0, 0)
