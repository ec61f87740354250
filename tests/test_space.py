"""The MnasNet factorized search space: membership, sample/encode, size, names, bad space files."""
from __future__ import annotations

import dataclasses
import math

import pytest
import torch
import yaml

from search_spaces import ArchSpec, build_model, get_preset
from search_spaces.space import SPACE_DIR, SearchSpace, SpaceError, default_space

pytestmark = pytest.mark.usefixtures("one_thread")


optuna = pytest.importorskip("optuna")

SPACE_YAML = (SPACE_DIR / "mnasnet.yaml").read_text()
PARAM_KINDS = ("op", "kernel", "se", "skip", "filters", "layers")


def _sampled(n: int, seed: int) -> tuple[list[ArchSpec], list[dict]]:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    space = default_space()
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed))
    archs, params = [], []
    for _ in range(n):
        trial = study.ask()
        archs.append(space.sample(trial))
        params.append(dict(trial.params))
    return archs, params


# --- membership and encode/sample --------------------------------------------------------------

@pytest.mark.parametrize("name", ("efficientnet-b0", "mnasnet-a1", "mobilenetv2"))
def test_default_space_contains_reference_networks(name: str) -> None:
    space = default_space()
    arch = get_preset(name)
    assert space.contains(arch)
    params = space.encode(arch)
    sampled = space.sample(optuna.trial.FixedTrial(params))
    assert sampled.stages == arch.stages


def test_sample_of_encoded_b0_is_b0() -> None:
    space = default_space()
    b0 = get_preset("efficientnet-b0")
    assert space.sample(optuna.trial.FixedTrial(space.encode(b0))) == b0.replace(name="")


def test_sample_encode_round_trip_on_sampled() -> None:
    space = default_space()
    archs, params = _sampled(100, seed=0)
    for arch, p in zip(archs, params):
        assert space.contains(arch)
        assert space.encode(arch) == p
        assert space.sample(optuna.trial.FixedTrial(p)) == arch
        assert space.from_params(p) == arch


def test_seeded_sampling_is_reproducible() -> None:
    assert _sampled(20, seed=7)[0] == _sampled(20, seed=7)[0]
    assert _sampled(20, seed=7)[0] != _sampled(20, seed=8)[0]


@pytest.mark.parametrize(("change", "misfit"), (
    (lambda a: a.replace(stages=a.stages[:6]), "6 stages"),
    (lambda a: a.replace(depth_mult=1.1), "depth_mult=1.1"),
    (lambda a: a.replace(width_mult=1.2), "width_mult=1.2"),
    (lambda a: a.replace(stem_channels=48), "stem_channels=48"),
    (lambda a: a.replace(head_channels=1024), "head_channels=1024"),
    (lambda a: _with_stage(a, 1, kernel=7), "stage 2 kernel=7"),
    (lambda a: _with_stage(a, 3, out_channels=84), "stage 4 filters=84"),
    (lambda a: _with_stage(a, 4, repeats=6), "stage 5 layers=6"),
    (lambda a: _with_stage(a, 2, stride=1), "stage 3 stride=1"),
    (lambda a: _with_stage(a, 5, expansion=4), "stage 6 op='mbconv4'"),
    (lambda a: _with_stage(a, 6, se_ratio=0.5), "stage 7 se=0.5"),
    (lambda a: _with_stage(a, 0, act="relu"), "stage 1 act='relu'"),
))
def test_encode_non_member_names_misfit(change, misfit: str) -> None:
    space = default_space()
    arch = change(get_preset("efficientnet-b0"))
    assert not space.contains(arch)
    with pytest.raises(SpaceError) as info:
        space.encode(arch)
    assert misfit in str(info.value)


def _with_stage(arch: ArchSpec, index: int, **changes) -> ArchSpec:
    stages = list(arch.stages)
    stages[index] = dataclasses.replace(stages[index], **changes)
    return arch.replace(stages=tuple(stages))


# --- size and parameter names ------------------------------------------------------------------

def test_size_is_product_of_choice_counts() -> None:
    data = yaml.safe_load(SPACE_YAML)
    expected = 1
    for stage in data["stages"]:
        merged = {**data["choices"], **stage}
        for key in ("ops", "kernels", "se_ratios", "skips", "filters", "layers"):
            expected *= len(merged[key])
    assert default_space().size() == expected
    # 60 (op x kernel x se x skip) per stage times (filters x layers): 6, 9, 9, 15, 21, 33, 42
    assert expected == 60 ** 7 * 6 * 9 * 9 * 15 * 21 * 33 * 42


def test_parameter_names_are_stable() -> None:
    names = [f"s{i}_{kind}" for i in range(1, 8) for kind in PARAM_KINDS]
    assert len(names) == 42
    space = default_space()
    assert list(space.choices()) == names
    assert list(space.distributions()) == names
    _, params = _sampled(1, seed=0)
    assert sorted(params[0]) == sorted(names)
    assert names[0] == "s1_op" and names[-1] == "s7_layers"


def test_choices_follow_the_yaml() -> None:
    data = yaml.safe_load(SPACE_YAML)
    choices = default_space().choices()
    for i, stage in enumerate(data["stages"], 1):
        merged = {**data["choices"], **stage}
        assert list(choices[f"s{i}_filters"]) == merged["filters"]
        assert list(choices[f"s{i}_layers"]) == merged["layers"]
        assert list(choices[f"s{i}_op"]) == merged["ops"]


# --- bad space files ---------------------------------------------------------------------------

BAD_SPACES = (
    (("kernels: [3, 5]", "kernels: [3, 4]"), "4"),
    (("kernels: [3, 5]", "kernels: [3, -5]"), "-5"),
    (("mbconv6]", "mbconv0]"), "mbconv0"),
    (("mbconv6]", "mbconv]"), "'mbconv'"),
    (("mbconv6]", "sepconv]"), "sepconv"),
    (("filters: [8, 16, 24]", "filters: [-8, 16, 24]"), "-8"),
    (("filters: [8, 16, 24]", "filters: [8, 16.5, 24]"), "16.5"),
    (("layers: [1, 2]}", "layers: [0, 2]}"), "0"),
    (("se_ratios: [0.0, 0.25]", "se_ratios: [0.0, 1.5]"), "1.5"),
    (("skips: [identity, pool, none]", "skips: [identity, dense]"), "dense"),
    (("name: mnasnet", "name: mnasnet\nfoo: 1"), "foo"),
    (("{stride: 1, filters: [8", "{stride: 1, bar: 2, filters: [8"), "bar"),
    (("{stride: 1, filters: [8", "{stride: 3, filters: [8"), "3"),
    (("kernels: [3, 5]", "kernels: []"), "[]"),
    (("layers: [1, 2]}", "layers: []}"), "[]"),
    (("kernels: [3, 5]", "kernels: [3, 3]"), "duplicates"),
    (("kernels: [3, 5]", "kernels: 3"), "3"),
    (("act: silu", "act: gelu"), "gelu"),
    (("stem_channels: 32", "stem_channels: 0"), "stem_channels=0"),
    (("kernels: [3, 5]", "kernels: [3, 5"), "does not parse"),
    (("stages:", "stage:"), "stages"),
)


@pytest.mark.parametrize(("edit", "named"), BAD_SPACES)
def test_bad_space_yaml_names_bad_value(edit: tuple[str, str], named: str) -> None:
    old, new = edit
    assert old in SPACE_YAML
    with pytest.raises(SpaceError) as info:
        SearchSpace.from_yaml(SPACE_YAML.replace(old, new, 1))
    assert named in str(info.value)


@pytest.mark.parametrize(("old", "new", "named"), [
    ("kernels: [3, 5]", "kernels: [[3, 5]]", "stage 1 kernels: bad value [3, 5], expected a list of plain values"),
    ("ops: [conv, dsconv, mbconv1, mbconv3, mbconv6]", "ops: [conv, {mbconv: 6}]",
     "stage 1 ops: bad value {'mbconv': 6}"),
    ("kernels: [3, 5]", "kernels: {3: a, 5: b}", "stage 1 kernels must be a non-empty list, but got {3: 'a', 5: 'b'}"),
    ("{stride: 1, filters: [8, 16, 24]", "{stride: [1], filters: [8, 16, 24]",
     "stage 1 stride must be 1 or 2, but got [1]"),
    ("{stride: 1, filters: [8, 16, 24]", "{stride: 1, filters: [[8, 16], 24]", "stage 1 filters: bad value [8, 16]"),
    ("name: mnasnet", "name: {a: 1}", "the space's name must be a string"),
    ("name: mnasnet", "name: mnasnet\n7: x", "unknown space key '7'"),
    ("act: silu", "act: [silu]", "act must be one of"),
])
def test_nested_or_mapping_choices_are_one_line_errors(old: str, new: str, named: str) -> None:
    """Before: ``TypeError: unhashable type: 'list'`` from inside the duplicate check."""
    assert old in SPACE_YAML
    with pytest.raises(SpaceError) as info:
        SearchSpace.from_yaml(SPACE_YAML.replace(old, new, 1))
    assert named in str(info.value) and "\n" not in str(info.value)


def test_the_timm_space_is_the_mnasnet_space_without_pool_skips_and_regular_convs() -> None:
    full, timm = default_space(), SearchSpace.load("mnasnet_timm")
    assert timm.name == "mnasnet_timm" and dict(timm.fixed) == dict(full.fixed)
    for a, b in zip(full.stages, timm.stages):
        assert (b.ops, b.skips) == (tuple(o for o in a.ops if o != "conv"), ("identity", "none"))
        assert (a.stride, a.kernels, a.se_ratios, a.filters, a.layers) == (b.stride, b.kernels, b.se_ratios,
                                                                            b.filters, b.layers)


def test_missing_choice_names_it() -> None:
    text = SPACE_YAML.replace("  skips: [identity, pool, none]\n", "")
    with pytest.raises(SpaceError, match="skips"):
        SearchSpace.from_yaml(text)


def test_unknown_space_file_names_it() -> None:
    with pytest.raises(SpaceError, match="no-such-space"):
        SearchSpace.load("no-such-space")


def test_choices_not_a_mapping_raises_space_error() -> None:
    text = ("name: tiny\nchoices: [conv]\nstages:\n  - {stride: 1, ops: [conv], kernels: [3], se_ratios: [0.0], "
            "skips: [none], filters: [8], layers: [1]}\n")
    with pytest.raises(SpaceError, match="choices"):
        SearchSpace.from_yaml(text)


def test_expansion_zero_spelled_mbconv00_is_rejected() -> None:
    with pytest.raises(SpaceError, match="mbconv00"):
        SearchSpace.from_yaml(SPACE_YAML.replace("mbconv6]", "mbconv00]", 1))


# --- every sampled architecture runs -----------------------------------------------------------

def test_sampled_archs_build_and_run_at_32px() -> None:
    archs, _ = _sampled(50, seed=3)
    torch.manual_seed(0)
    x = torch.randn(2, 3, 32, 32)
    for i, arch in enumerate(archs):
        model = build_model(arch, num_classes=10)
        if i < 5:  # training mode (drop path, batch statistics) on a few
            out = model.train()(x)
            assert out.shape == (2, 10) and torch.isfinite(out).all(), arch.to_str()
        with torch.no_grad():
            out = model.eval()(x)
        assert out.shape == (2, 10) and torch.isfinite(out).all(), arch.to_str()


def test_space_round_trips_through_its_yaml() -> None:
    space = default_space()
    again = SearchSpace.from_yaml(space.source)
    assert again == space and again.digest() == space.digest()
    assert math.prod(len(c) for c in space.choices().values()) == space.size()
