"""Latency: duration parsing, measuring, and the per-layer lookup table (no timing value is asserted)."""
from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from search_spaces import ArchSpec, StageSpec, build_model, get_preset
from search_spaces.blocks import ConvBNAct, SqueezeExcite
from search_spaces.latency import LatencyTable, measure_latency, parse_latency

pytestmark = pytest.mark.usefixtures("one_thread")

QUICK = {"resolution": 32, "warmup": 0, "repeats": 1}  # one timed pass per entry: these tests count, never time
ACT_NAMES = {nn.SiLU: "silu", nn.ReLU: "relu", nn.ReLU6: "relu6", nn.Hardswish: "hardswish"}
# Every op, skip kind and activation, a head without a 1x1 conv, SE on a regular conv.
MIXED = ArchSpec(stages=tuple(StageSpec.parse(s) for s in (
    "cn_r1_k3_s1_e1_c16_se0.25", "ds_r2_k5_s2_e1_c24_poolskip", "ir_r2_k3_s2_e3_c32_se0.25_nre_noskip",
    "ir_r2_k5_s1_e6_c40_poolskip_nhs")), stem_channels=16, head_channels=0)


@pytest.mark.parametrize("text, seconds", [
    ("15ms", 0.015), ("15 ms", 0.015), ("1500us", 0.0015), ("1500\u00b5s", 0.0015), ("1500\u03bcs", 0.0015),
    ("0.015s", 0.015), ("0.015", 0.015), (" 2.5ms ", 0.0025), ("1e-3s", 0.001), (0.015, 0.015), (2, 2.0),
])
def test_parse_latency_accepts(text, seconds):
    assert parse_latency(text) == pytest.approx(seconds, rel=1e-12)


@pytest.mark.parametrize("text", ["", "-5ms", "0", "0ms", "fast", "5 lightyears", "15 m s", "inf", "nan", 0, -1.0,
                                  float("inf"), True, None])
def test_parse_latency_rejects(text):
    with pytest.raises(ValueError) as info:
        parse_latency(text)
    message = str(info.value)
    assert "\n" not in message and repr(text) in message and "15ms" in message


def test_measure_latency_restores_training_mode():
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4)).train()
    seconds = measure_latency(model, 16, batch=2, warmup=1, repeats=3)
    assert seconds > 0 and model.training
    with pytest.raises(ValueError):
        measure_latency(model, 16, repeats=0)


def _model_configs(model: nn.Module, resolution: int) -> set[frozenset]:
    """The distinct stem / block / head configurations of a built model, read from its modules (the reference)."""
    shapes: dict[str, torch.Size] = {}
    named = [("stem", model.stem), *((f"blocks.{i}", b) for i, b in enumerate(model.blocks)), ("head", model.head)]
    for name, module in named:
        module.register_forward_pre_hook(lambda _, args, name=name: shapes.update({name: args[0].shape}))
    with torch.inference_mode():
        model.eval()(torch.zeros(1, 3, resolution, resolution))
    configs = []
    stem = model.stem[0]
    configs.append(dict(op="stem", k=stem.kernel_size[0], s=stem.stride[0], cin=stem.in_channels,
                        cout=stem.out_channels, act=ACT_NAMES[type(model.stem[2])], hw=resolution, b=1))
    for i, block in enumerate(model.blocks):
        convs = [m[0] for m in block.main if isinstance(m, ConvBNAct)]
        op = {3: "mbconv", 2: "dsconv", 1: "conv"}[len(convs)]
        spatial = convs[1] if op == "mbconv" else convs[0]
        se = next((m.reduce.out_channels for m in block.main if isinstance(m, SqueezeExcite)), 0)
        skip = "none" if block.shortcut is None else "identity" if isinstance(block.shortcut, nn.Identity) else "pool"
        shape = shapes[f"blocks.{i}"]
        configs.append(dict(op=op, k=spatial.kernel_size[0], s=spatial.stride[0], cin=shape[1],
                            cout=convs[-1].out_channels,
                            e=convs[0].out_channels // shape[1] if op == "mbconv" else 1, se=se, skip=skip,
                            act=ACT_NAMES[type(block.main[0][2])], hw=shape[2], b=1))
    shape = shapes["head"]
    configs.append(dict(op="head", cin=shape[1], cout=model.head[0].out_channels, classes=model.classifier.out_features,
                        act=ACT_NAMES[type(model.head[2])], hw=shape[2], b=1))
    return {frozenset((k, str(v)) for k, v in c.items()) for c in configs}


def _key_fields(key: str) -> frozenset:
    return frozenset(tuple(field.split("=", 1)) for field in key.split())


def test_entries_are_the_distinct_layer_configurations_of_the_model():
    b0 = get_preset("efficientnet-b0")
    table = LatencyTable(**QUICK, num_classes=10)
    table.estimate(b0)
    expected = _model_configs(build_model(b0, num_classes=10), QUICK["resolution"])
    assert {_key_fields(k) for k in table.entries} == expected
    assert len(table.entries) == len(expected) == table.measurements == 14  # 16 blocks, repeats share entries


@pytest.mark.parametrize("name", ["efficientnet-b0", "mobilenetv2", "mixed"])
def test_parts_have_the_parameters_of_the_built_blocks(name):
    arch = MIXED if name == "mixed" else get_preset(name)
    model = build_model(arch, num_classes=10)
    table = LatencyTable(**QUICK, num_classes=10)
    parts = table.parts(arch)
    assert [p.label for p in parts] == ["stem", *(f"blocks.{i}" for i in range(len(model.blocks))), "head"]
    count = lambda *modules: sum(p.numel() for m in modules for p in m.parameters())  # noqa: E731
    for part in parts:
        reference = (model.head, model.classifier) if part.label == "head" else (model.get_submodule(part.label),)
        assert count(part.build()) == count(*reference), part.label
    assert sum(count(p.build()) for p in parts) == count(model)


def test_estimate_is_the_sum_of_the_breakdown():
    arch = get_preset("mnasnet-a1")
    table = LatencyTable(**QUICK)
    table.calibrate([MIXED])
    rows = table.breakdown(arch)
    assert [label for label, _ in rows][-1] == "overhead" and len(rows) == len(table.parts(arch)) + 1
    assert table.estimate(arch) == sum(seconds for _, seconds in rows)


def test_cache_round_trips_and_a_second_table_measures_nothing(tmp_path):
    path, b0 = tmp_path / "latency.json", get_preset("efficientnet-b0")
    first = LatencyTable(path, **QUICK)
    first.calibrate([MIXED])
    estimate = first.estimate(b0)
    assert first.measurements > 0
    second = LatencyTable(path, **QUICK)
    assert second.estimate(b0) == estimate and second.breakdown(b0) == first.breakdown(b0)
    assert second.measurements == 0
    assert [p.name for p in tmp_path.iterdir()] == ["latency.json"]  # no temporary file left behind


def test_a_file_from_other_conditions_is_not_reused(tmp_path):
    path, b0 = tmp_path / "latency.json", get_preset("efficientnet-b0")
    LatencyTable(path, **QUICK).estimate(b0)
    torch.set_num_threads(2)
    try:
        with pytest.warns(UserWarning, match="other conditions"):
            two_threads = LatencyTable(path, **QUICK)
        assert two_threads.entries == {}
        two_threads.estimate(b0)
        assert two_threads.measurements > 0
    finally:
        torch.set_num_threads(1)
    with pytest.raises(RuntimeError, match="threads changed"):
        two_threads.estimate(get_preset("mobilenetv2"))  # never measured under the count it is not for
    assert len(json.loads(path.read_text())["tables"]) == 2  # both kept, one per set of conditions
    with pytest.warns(UserWarning, match="other conditions"):
        other_batch = LatencyTable(path, **QUICK, batch=2)
    assert other_batch.entries == {}
    one_thread = LatencyTable(path, **QUICK)
    one_thread.estimate(b0)
    assert one_thread.measurements == 0


def test_an_unreadable_file_is_replaced_with_a_warning(tmp_path):
    path = tmp_path / "latency.json"
    path.write_text("{not json")
    with pytest.warns(UserWarning, match="unreadable"):
        table = LatencyTable(path, **QUICK)
    table.estimate(MIXED)
    assert LatencyTable(path, **QUICK).entries == table.entries
