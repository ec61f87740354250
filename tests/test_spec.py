"""Stage strings (timm grammar) and the architecture YAML: round trips and error messages."""
from __future__ import annotations

import re

import pytest

from search_spaces import ArchSpec, SpecError, StageSpec, get_preset, list_presets
from search_spaces.presets import PRESET_DIR

optuna = pytest.importorskip("optuna")

# Canonical strings written by hand (printed token order: op r k s e c se n<act> skip).
HAND_STRINGS = (
    "ds_r1_k3_s1_e1_c16_noskip",
    "ir_r3_k5_s2_e3_c40_se0.25",
    "cn_r2_k3_s1_e1_c32_nre_poolskip",
    "ds_r1_k3_s1_e1_c16_se0.25",
    "ir_r2_k3_s2_e6_c24_se0.25",
    "ir_r4_k5_s2_e6_c192_se0.25",
    "ir_r1_k3_s1_e6_c320",
    "ir_r1_k7_s2_e4_c64_se0.5_nsw",
    "ir_r2_k3_s1_e1_c8_nhs_noskip",
    "cn_r1_k1_s2_e1_c1000_se1_nr6",
    "ds_r5_k9_s2_e1_c7_poolskip",
)


def _sampled_archs(n: int, seed: int) -> list[ArchSpec]:
    """``n`` architectures from the default space, drawn by a seeded RandomSampler."""
    from search_spaces import default_space

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    space = default_space()
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed))
    return [space.sample(study.ask()) for _ in range(n)]


SAMPLED = _sampled_archs(120, seed=0)


# --- stage strings ----------------------------------------------------------------------------

def _assert_stage_round_trip(text: str) -> None:
    stage = StageSpec.parse(text)
    assert stage.to_str() == text  # print(parse(s)) == s
    assert StageSpec.parse(stage.to_str()) == stage  # parse(print(x)) == x


@pytest.mark.parametrize("text", HAND_STRINGS)
def test_hand_stage_strings_round_trip(text: str) -> None:
    _assert_stage_round_trip(text)


@pytest.mark.parametrize("name", list_presets())
def test_preset_stage_strings_round_trip(name: str) -> None:
    arch = get_preset(name)
    for text in arch.stage_strings():
        _assert_stage_round_trip(text)


def test_sampled_stage_strings_round_trip() -> None:
    texts = {t for arch in SAMPLED for t in arch.stage_strings()}
    assert len(texts) > 500  # 120 architectures x 7 stages, nearly all distinct
    for text in sorted(texts):
        _assert_stage_round_trip(text)


def test_parse_reads_every_field() -> None:
    s = StageSpec.parse("cn_r2_k3_s1_e1_c32_nre_poolskip")
    assert (s.op, s.repeats, s.kernel, s.stride, s.expansion, s.out_channels, s.se_ratio, s.skip, s.act) == (
        "conv", 2, 3, 1, 1, 32, 0.0, "pool", "relu")
    s = StageSpec.parse("ir_r3_k5_s2_e3_c40_se0.25")
    assert (s.op, s.repeats, s.kernel, s.stride, s.expansion, s.out_channels, s.se_ratio, s.skip, s.act) == (
        "mbconv", 3, 5, 2, 3, 40, 0.25, "identity", None)


def test_parse_accepts_any_token_order_and_prints_canonically() -> None:
    assert StageSpec.parse("ir_c24_se0.25_e6_s2_k3_r2").to_str() == "ir_r2_k3_s2_e6_c24_se0.25"
    assert StageSpec.parse("ds_noskip_c16_k3_r1").to_str() == "ds_r1_k3_s1_e1_c16_noskip"


# The message must name the bad token (or the missing field) so a user can find it in a YAML file.
BAD_STAGE_STRINGS = (
    ("ir_r2_k3_sx0.25_e6_c24", "sx0.25"),  # timm reads this typo as se_ratio=0: we must not
    ("ir_r2_k3_s2_e6_c24_sz0.25", "sz0.25"),
    ("ir_r2_r2_k3_c24", "r2"),
    ("ir_r1_k3_c16_se0.25_se0.5", "se0.5"),
    ("ir_r1_k3_c16_noskip_poolskip", "poolskip"),
    ("xx_r1_k3_c16", "xx"),
    ("IR_r1_k3_c16", "IR"),
    ("r1_k3_c16", "r1"),
    ("ir_k3_s1_e6_c16", "repeats"),
    ("ir_r1_s1_e6_c16", "kernel"),
    ("ir_r1_k3_s1_e6", "out_channels"),
    ("ir_r1_k3_c16_nxx", "nxx"),
    ("ir__r1_k3_c16", "''"),
    ("ir_r1_k3_c16_se", "'se'"),
    ("ir_r1_k3_c16_e1.5", "e1.5"),
    ("ds_r1_k3_s1_e2_c16", "expansion=2"),
    ("cn_r1_k3_s1_e6_c16", "expansion=6"),
    ("ir_r1_k4_s1_e6_c16", "kernel=4"),
    ("ir_r1_k3_s3_e6_c16", "stride=3"),
    ("ir_r0_k3_s1_e6_c16", "repeats=0"),
    ("ir_r1_k3_s1_e6_c0", "out_channels=0"),
    ("ir_r1_k3_s1_e0_c16", "expansion=0"),
    ("ir_r1_k3_s1_e6_c16_se1.5", "se_ratio=1.5"),
    ("", "''"),
    ("   ", "'   '"),
)


@pytest.mark.parametrize(("text", "named"), BAD_STAGE_STRINGS)
def test_parse_error_names_bad_value(text: str, named: str) -> None:
    with pytest.raises(SpecError) as info:
        StageSpec.parse(text)
    assert named in str(info.value)


def test_parse_rejects_non_string() -> None:
    with pytest.raises(SpecError, match="5"):
        StageSpec.parse(5)  # type: ignore[arg-type]


@pytest.mark.parametrize(("text", "token"), (
    ("ds_r1_k3_s1_e2_c16", "e2"),
    ("ir_r1_k4_s1_e6_c16", "k4"),
    ("ir_r1_k3_s3_e6_c16", "s3"),
))
def test_parse_value_error_names_stage_and_token(text: str, token: str) -> None:
    with pytest.raises(SpecError) as info:
        StageSpec.parse(text)
    assert text in str(info.value) and re.search(rf"\b{token}\b", str(info.value))


@pytest.mark.parametrize("se_ratio", (1e-5, 1 / 3))
def test_se_ratio_print_parse_round_trip(se_ratio: float) -> None:
    stage = StageSpec(se_ratio=se_ratio)
    assert StageSpec.parse(stage.to_str()) == stage


# --- architecture YAML ----------------------------------------------------------------------

def _assert_yaml_round_trip(arch: ArchSpec) -> None:
    text = arch.to_yaml()
    assert ArchSpec.from_yaml(text) == arch  # parse(print(x)) == x
    assert ArchSpec.from_yaml(text).to_yaml() == text  # print(parse(s)) == s


@pytest.mark.parametrize("name", list_presets())
def test_preset_yaml_round_trip(name: str) -> None:
    arch = get_preset(name)
    assert arch.name == name
    _assert_yaml_round_trip(arch)


@pytest.mark.parametrize("name", list_presets())
def test_preset_files_are_canonical(name: str) -> None:
    """A preset file is the printed form of its architecture, plus leading comments."""
    text = (PRESET_DIR / f"{name}.yaml").read_text()
    body = "".join(line for line in text.splitlines(keepends=True) if not line.startswith("#"))
    assert ArchSpec.from_yaml(body).to_yaml() == body


def test_sampled_yaml_round_trip() -> None:
    for arch in SAMPLED:
        _assert_yaml_round_trip(arch)
        _assert_yaml_round_trip(arch.replace(name="sampled", width_mult=1.1, depth_mult=1.2))


def test_hand_arch_yaml_round_trip() -> None:
    arch = ArchSpec(stages=tuple(StageSpec.parse(s) for s in HAND_STRINGS), stem_channels=24,
                    head_channels=0, resolution=97, dropout=0.0, drop_connect=0.1, act="hardswish",
                    bn_momentum=0.1, bn_eps=1e-5, name="hand")
    _assert_yaml_round_trip(arch)


def test_yaml_defaults_fill_missing_keys() -> None:
    arch = ArchSpec.from_yaml("stages: [ir_r2_k3_s2_e6_c24_se0.25]\n")
    assert arch == ArchSpec(stages=(StageSpec.parse("ir_r2_k3_s2_e6_c24_se0.25"),))


BAD_YAML = (
    ("stages: [ir_r1_k3_c16]\nfoo: 1\n", "foo"),  # unknown key
    ("stages: [ir_r1_k3_c16]\nwidth: 1.1\n", "width"),
    ("stages: [ir_r1_k3_c16\n", "does not parse"),  # bad YAML
    ("stages: {a: 1\n", "does not parse"),
    ("- ir_r1_k3_c16\n", "list"),  # not a mapping
    ("", "NoneType"),
    ("resolution: 224\n", "stages"),  # no stages
    ("stages: ir_r1_k3_c16\n", "stages"),
    ("stages: []\n", "stages"),
    ("stages: [ir_r1_k3_sx0.25_c16]\n", "sx0.25"),
    ("stages: [5]\n", "5"),
    ("stages: [ir_r1_k3_c16]\nresolution: big\n", "'big'"),
    ("stages: [ir_r1_k3_c16]\nresolution: 224.5\n", "224.5"),
    ("stages: [ir_r1_k3_c16]\nwidth_mult: true\n", "True"),
    ("stages: [ir_r1_k3_c16]\nwidth_mult: -1\n", "width_mult=-1"),
    ("stages: [ir_r1_k3_c16]\nact: gelu\n", "gelu"),
    ("stages: [ir_r1_k3_c16]\ndropout: 1.0\n", "dropout=1.0"),
    ("stages: [ir_r1_k3_c16]\nbn_eps: 0\n", "bn_eps=0"),
)


@pytest.mark.parametrize(("text", "named"), BAD_YAML)
def test_bad_yaml_raises_spec_error_naming_it(text: str, named: str) -> None:
    with pytest.raises(SpecError) as info:
        ArchSpec.from_yaml(text)
    assert named in str(info.value)


@pytest.mark.parametrize("value", (".inf", ".nan"))
def test_non_finite_integer_field_raises_spec_error(value: str) -> None:
    with pytest.raises(SpecError, match="resolution"):
        ArchSpec.from_yaml(f"stages: [ir_r1_k3_c16]\nresolution: {value}\n")


def test_unknown_preset_names_it() -> None:
    with pytest.raises(SpecError, match="efficientnet-b9"):
        get_preset("efficientnet-b9")


def test_specs_are_frozen() -> None:
    arch = get_preset("efficientnet-b0")
    with pytest.raises(AttributeError):
        arch.stages[0].kernel = 5  # type: ignore[misc]
    with pytest.raises(AttributeError):
        arch.resolution = 300  # type: ignore[misc]
