"""The weight-sharing supernet: extraction equals the stand-alone network, the parameter count the
space implies, only the active path learns, sandwich training, resume, scoring, data-parallel."""
from __future__ import annotations

import dataclasses
import math
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

from nas.proxy import DataConfig, DistInfo, TrainConfig, evaluate, load_data, recalibrate_bn
from nas.supernet import (
    Supernet,
    SupernetError,
    SupernetTrainConfig,
    all_reduce_gradients,
    extract_model,
    largest_arch,
    load_supernet,
    random_arch,
    read_checkpoint,
    save_checkpoint,
    score,
    smallest_arch,
    supernet_score_fn,
    train_supernet,
)
from search_spaces import ArchSpec, build_model, count_cost, get_preset
from search_spaces.space import SearchSpace, default_space

ROOT = Path(__file__).resolve().parents[1]
PRESETS = ("efficientnet-b0", "mnasnet-a1", "mobilenetv2")
# A small space for the training tests: every op, kernel, SE and skip choice, a fraction of the width.
TINY = """
name: tiny
stem_channels: 8
head_channels: 32
resolution: 16
choices:
  ops: [conv, dsconv, mbconv1, mbconv3, mbconv6]
  kernels: [3, 5]
  se_ratios: [0.0, 0.25]
  skips: [identity, pool, none]
stages:
  - {stride: 1, filters: [8, 16], layers: [1, 2]}
  - {stride: 2, filters: [16, 24], layers: [1, 2]}
  - {stride: 2, filters: [24, 32], layers: [1, 2]}
"""


@pytest.fixture(scope="module")
def space() -> SearchSpace:
    return default_space()


@pytest.fixture(scope="module")
def tiny() -> SearchSpace:
    return SearchSpace.from_yaml(TINY)


@pytest.fixture(scope="module")
def digits():
    return load_data(DataConfig("digits", resolution=16, train_size=256, val_size=200))


def _members(space: SearchSpace, samples: int, seed: int = 0) -> list[ArchSpec]:
    """The presets' structures with the space's settings, then ``samples`` random members."""
    presets = [space.from_params(space.encode(get_preset(name))) for name in PRESETS]
    rng = random.Random(seed)
    return presets + [random_arch(space, rng) for _ in range(samples)]


def _randomize(module: torch.nn.Module, seed: int) -> None:
    """Random weights of the scale of a trained network (every slice of every tensor set)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, t in module.named_parameters():
            noise = torch.randn(t.shape, generator=gen, dtype=torch.float64).to(t.dtype)
            if t.ndim > 1:
                t.copy_(noise / math.sqrt(t[0].numel()))
            else:
                t.copy_(noise * 0.1 + (1.0 if name.endswith("bn.weight") else 0.0))


@pytest.fixture(scope="module")
def supernet64(space) -> Supernet:
    torch.manual_seed(0)
    net = Supernet(space, num_classes=10, in_chans=3).double()
    _randomize(net, 1)
    return net


# ---------------------------------------------------------------- extraction
def test_the_three_presets_are_members_of_the_default_space(space) -> None:
    for name in PRESETS:
        assert space.contains(get_preset(name)), name


def _check_extraction(supernet64: Supernet, archs: list[ArchSpec]) -> None:
    gen = torch.Generator().manual_seed(2)
    calib = torch.randn(16, 3, 32, 32, generator=gen, dtype=torch.float64)
    x = torch.randn(4, 3, 32, 32, generator=gen, dtype=torch.float64)
    for arch in archs:
        supernet64.set_active(arch)
        assert recalibrate_bn(supernet64, [(calib, None)], 1) == 1  # the active path's statistics
        supernet64.eval()
        with torch.no_grad():
            ours = supernet64(x)
            model = build_model(arch, 10, 3).double()
            model.load_state_dict(supernet64.extract(arch), strict=True)
            theirs = model.eval()(x)
            assert ours.std() > 0.1, arch.to_str()  # outputs that depend on the weights
            torch.testing.assert_close(theirs, ours, rtol=1e-12, atol=1e-12, msg=arch.to_str())
            recalibrate_bn(model, [(calib, None)], 1)  # the model's own statistics are the supernet's
            torch.testing.assert_close(model(x), ours, rtol=1e-9, atol=1e-9, msg=arch.to_str())


def test_extracted_network_equals_the_supernet_in_float64(supernet64, space) -> None:
    """The presets' structures and 3 random members (float64 depthwise convs are slow on CPU)."""
    _check_extraction(supernet64, _members(space, 3))


@pytest.mark.slow
def test_extracted_network_equals_the_supernet_on_20_random_members(supernet64, space) -> None:
    _check_extraction(supernet64, _members(space, 20, seed=1)[len(PRESETS):])


def test_training_mode_forward_equals_the_built_network(supernet64, space) -> None:
    """Batch statistics, the cropped kernels and the tiny-map shortcuts of training mode, channels-last input."""
    x = torch.randn(6, 3, 32, 32, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    x = x.contiguous(memory_format=torch.channels_last)
    for arch in _members(space, 4, seed=5):
        arch = arch.replace(dropout=0.0, drop_connect=0.0)
        supernet64.set_active(arch)
        model = build_model(arch, 10, 3).double().to(memory_format=torch.channels_last)
        model.load_state_dict(supernet64.extract(arch), strict=True)
        with torch.no_grad():
            torch.testing.assert_close(model.train()(x), supernet64.train()(x), rtol=1e-10, atol=1e-10)
    supernet64.eval()


def test_only_the_active_path_runs(supernet64, space) -> None:
    """The supernet's forward costs what the subnet costs: the same conv and matmul FLOPs."""
    supernet64.eval()
    x = torch.randn(2, 3, 32, 32, dtype=torch.float64)
    flops = []
    for arch in (get_preset("efficientnet-b0"), smallest_arch(space), largest_arch(space)):
        supernet64.set_active(arch)
        model = extract_model(supernet64, arch)
        with torch.no_grad():
            with FlopCounterMode(display=False) as ours:
                supernet64(x)
            with FlopCounterMode(display=False) as theirs:
                model(x)
        assert ours.get_total_flops() == theirs.get_total_flops() > 0
        flops.append(ours.get_total_flops())
    assert flops[1] < flops[0] < flops[2]


def test_parameter_count_is_the_sum_the_space_implies(space) -> None:
    """Per stage and op kind, the largest layer times the most layers; stem, head, classifier once.

    count_cost of the all-conv, all-dsconv and all-mbconv6 networks at every stage's largest
    kernel, SE, filters and layers holds those layers plus the stem, head and classifier; the
    mbconv6 one with pool skips also holds each stage's projection shortcut (its width changes).
    """
    for st in space.stages:
        assert set(st.ops) == {"conv", "dsconv", "mbconv1", "mbconv3", "mbconv6"} and "pool" in st.skips

    def all_of(op: str, skip: str) -> ArchSpec:
        params: dict[str, str | int | float] = {}
        for i, st in enumerate(space.stages, 1):
            params.update({f"s{i}_op": op, f"s{i}_kernel": max(st.kernels), f"s{i}_se": max(st.se_ratios),
                           f"s{i}_skip": skip, f"s{i}_filters": max(st.filters), f"s{i}_layers": max(st.layers)})
        return space.from_params(params)

    stem = 3 * 3 * 3 * 32 + 2 * 32
    last = max(space.stages[-1].filters)
    fixed = stem + (last * 1280 + 2 * 1280) + (1280 * 10 + 10)
    per_op = [count_cost(all_of(op, skip), num_classes=10, in_chans=3).params
              for op, skip in (("conv", "none"), ("dsconv", "none"), ("mbconv6", "pool"))]
    expected = sum(per_op) - 2 * fixed
    net = Supernet(space, num_classes=10, in_chans=3)
    assert sum(p.numel() for p in net.parameters()) == expected == 20_640_190


def test_a_non_member_is_refused_in_one_line(space) -> None:
    net = Supernet(space, 10, 3)
    with pytest.raises(SupernetError, match="no active architecture"):
        net(torch.zeros(1, 3, 32, 32))
    b0 = get_preset("efficientnet-b0")
    wide = b0.replace(stages=(b0.stages[0].__class__(**{**dataclasses.asdict(b0.stages[0]), "out_channels": 17}),
                              *b0.stages[1:]))
    for bad, fragment in ((wide, "stage 1 filters=17"), (b0.replace(bn_eps=1e-5), "bn_eps=1e-05"),
                          (b0.replace(stem_channels=16), "stem_channels=16")):
        with pytest.raises(SupernetError, match=fragment) as info:
            net.set_active(bad)
        assert "\n" not in str(info.value)
        with pytest.raises(SupernetError, match=fragment):
            net.extract(bad)


# ---------------------------------------------------------------- gradients
def test_only_the_active_paths_parameters_get_gradients(tiny) -> None:
    """Number every entry of every parameter uniquely; the numbers extract returns are the path."""
    net = Supernet(tiny, num_classes=10, in_chans=3).double()
    starts: list[tuple[int, str]] = []
    offset = 0
    with torch.no_grad():
        for name, p in net.named_parameters():
            p.copy_(torch.arange(offset, offset + p.numel(), dtype=torch.float64).view_as(p))
            starts.append((offset, name))
            offset += p.numel()
    arch = random_arch(tiny, random.Random(4))
    used: dict[str, set[int]] = {}
    for key, t in net.extract(arch).items():
        if key.endswith(("running_mean", "running_var", "num_batches_tracked")):
            continue
        for number in t.long().flatten().tolist():
            begin, name = max(s for s in starts if s[0] <= number)
            used.setdefault(name, set()).add(number - begin)
    _randomize(net, 7)
    net.set_active(arch)
    F.cross_entropy(net.train()(torch.randn(4, 3, 16, 16, dtype=torch.float64)), torch.arange(4)).backward()
    touched = 0
    for name, p in net.named_parameters():
        if name not in used:
            assert p.grad is None or not p.grad.any(), name
            continue
        nonzero = set(p.grad.flatten().nonzero().flatten().tolist())
        assert nonzero <= used[name], name
        touched += bool(nonzero)
    assert touched >= 0.8 * len(used)
    assert len(used) < 0.5 * len(starts)  # the other op kinds and slots are off the path


# ---------------------------------------------------------------- training
FAST = SupernetTrainConfig(epochs=2, batch_size=32, lr=0.1, warmup_epochs=0.0, threads=1, device="cpu",
                           checkpoint_every=3)


def _subnet_loss(net: Supernet, arch: ArchSpec, data) -> float:
    net.set_active(arch.replace(dropout=0.0, drop_connect=0.0))
    net.train()
    with torch.no_grad():
        x, y = next(data.batches("train", 128, seed=9))
        return F.cross_entropy(net(x), y).item()


def test_sandwich_training_lowers_the_loss_of_the_largest_and_the_smallest(tiny, digits) -> None:
    torch.manual_seed(0)
    net = Supernet(tiny, digits.num_classes, digits.in_chans)
    archs = (largest_arch(tiny), smallest_arch(tiny))
    before = [_subnet_loss(net, a, digits) for a in archs]
    result = train_supernet(net, digits, dataclasses.replace(FAST, epochs=4))
    after = [_subnet_loss(net, a, digits) for a in archs]
    assert result.done and result.step == result.total_steps == 4 * (256 // 32) and result.start_step == 0
    assert result.images == result.step * 32
    assert after[0] < 0.7 * before[0] and after[1] < 0.9 * before[1], (before, after)


def test_resuming_repeats_the_uninterrupted_run(tiny, digits, tmp_path) -> None:
    torch.manual_seed(0)
    whole = Supernet(tiny, digits.num_classes, digits.in_chans)
    initial = {k: v.clone() for k, v in whole.state_dict().items()}
    done = train_supernet(whole, digits, FAST)  # 16 steps
    halves = Supernet(tiny, digits.num_classes, digits.in_chans)
    halves.load_state_dict(initial)
    path = tmp_path / "supernet.pt"
    first = train_supernet(halves, digits, FAST, checkpoint=path, until_step=7)
    assert (first.step, first.done) == (7, False) and read_checkpoint(path)["step"] == 7
    fresh = Supernet(tiny, digits.num_classes, digits.in_chans)  # another process: weights from the file
    second = train_supernet(fresh, digits, FAST, checkpoint=path)
    assert (second.start_step, second.step) == (7, done.step) and read_checkpoint(path)["step"] == done.step
    for key, value in whole.state_dict().items():
        assert torch.equal(value, fresh.state_dict()[key]), key
    again = train_supernet(fresh, digits, FAST, checkpoint=path)  # complete: a rerun trains nothing
    assert (again.start_step, again.step, again.images) == (done.step, done.step, 0)
    loaded = load_supernet(path)
    for key, value in whole.state_dict().items():
        assert torch.equal(value, loaded.state_dict()[key]), key


def test_a_checkpoint_of_another_recipe_or_file_is_refused(tiny, digits, tmp_path) -> None:
    net = Supernet(tiny, digits.num_classes, digits.in_chans)
    path = tmp_path / "supernet.pt"
    save_checkpoint(path, net, None, 0, FAST.recipe())
    with pytest.raises(SupernetError, match=r"trained with lr=0.1, but this run has lr=0.2"):
        train_supernet(net, digits, dataclasses.replace(FAST, lr=0.2), checkpoint=path)
    with pytest.raises(SupernetError, match="another search space"):
        train_supernet(Supernet(default_space(), 10, 3), digits, FAST, checkpoint=path)
    path.write_bytes(b"not a checkpoint")
    with pytest.raises(SupernetError, match="is not readable") as info:
        load_supernet(path)
    assert "\n" not in str(info.value)
    with pytest.raises(SupernetError, match="does not exist"):
        load_supernet(tmp_path / "missing.pt")
    with pytest.raises(SupernetError, match="batch_size=1000 exceeds the 256 training images"):
        train_supernet(net, digits, dataclasses.replace(FAST, batch_size=1000))
    with pytest.raises(SupernetError, match="random_subnets must be >= 0, but got -1"):
        SupernetTrainConfig(random_subnets=-1)


class _OneRankGroup(DistInfo):
    @property
    def enabled(self) -> bool:  # the all-reduce path, in a process group of one
        return True


def test_gradients_are_averaged_by_hand_in_a_process_group(tiny, tmp_path) -> None:
    net = Supernet(tiny, 10, 3)
    net.set_active(random_arch(tiny, random.Random(1)))
    F.cross_entropy(net(torch.randn(2, 3, 16, 16)), torch.tensor([1, 2])).backward()
    before = {n: p.grad.clone() for n, p in net.named_parameters() if p.grad is not None}
    all_reduce_gradients(net, DistInfo())  # one process: nothing happens
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    try:
        all_reduce_gradients(net, _OneRankGroup())
    finally:
        dist.destroy_process_group()
    after = {n: p.grad for n, p in net.named_parameters() if p.grad is not None}
    assert after.keys() == before.keys() and 0 < len(after) < len(list(net.parameters()))
    for name, grad in after.items():
        assert torch.equal(grad, before[name]), name


# ---------------------------------------------------------------- scoring
@pytest.fixture(scope="module")
def trained(tiny, digits) -> Supernet:
    torch.manual_seed(0)
    net = Supernet(tiny, digits.num_classes, digits.in_chans)
    train_supernet(net, digits, dataclasses.replace(FAST, epochs=3))
    return net


def test_score_is_the_held_out_accuracy_of_the_extracted_network(trained, tiny, digits) -> None:
    state = {k: v.clone() for k, v in trained.state_dict().items()}
    config = TrainConfig(batch_size=32, device="cpu", threads=1)
    for arch in (largest_arch(tiny), random_arch(tiny, random.Random(3))):
        model = build_model(arch, digits.num_classes, digits.in_chans)
        model.load_state_dict(trained.extract(arch), strict=True)
        expected = evaluate(model, digits, dataclasses.replace(config, bn_recalibrate_batches=5),
                            device=torch.device("cpu"))[0]
        got = score(trained, arch, digits, bn_batches=5, config=config)
        assert got == expected and 0.0 <= got <= 1.0
        assert supernet_score_fn(trained, digits, bn_batches=5, config=config)(arch) == got
        assert got * digits.num_val == round(got * digits.num_val)  # a count of held-out hits
    assert score(trained, largest_arch(tiny), digits, bn_batches=5) > 0.5  # it learned
    for key, value in trained.state_dict().items():  # scoring leaves the supernet alone
        assert torch.equal(value, state[key]), key


def test_fine_tuned_score_trains_the_extracted_copy_only(trained, tiny, digits) -> None:
    state = {k: v.clone() for k, v in trained.state_dict().items()}
    arch = smallest_arch(tiny)
    config = TrainConfig(batch_size=32, device="cpu", threads=1, lr=0.01, warmup_epochs=0.0)
    tuned = score(trained, arch, digits, bn_batches=5, finetune_epochs=0.5, config=config)
    assert 0.0 <= tuned <= 1.0
    for key, value in trained.state_dict().items():
        assert torch.equal(value, state[key]), key
    with pytest.raises(SupernetError, match="bn_batches and finetune_epochs must be >= 0"):
        score(trained, arch, digits, bn_batches=-1)


# ---------------------------------------------------------------- data-parallel
def _worker(out_dir: Path) -> None:
    rank = int(os.environ["RANK"])
    tiny = SearchSpace.from_yaml(TINY)
    data = load_data(DataConfig("digits", resolution=16, train_size=256, val_size=200))
    torch.manual_seed(0)  # the same initial weights on both ranks
    net = Supernet(tiny, data.num_classes, data.in_chans)
    result = train_supernet(net, data, dataclasses.replace(FAST, epochs=1), checkpoint=out_dir / "supernet.pt")
    torch.save({"state": net.state_dict(), "step": result.step, "images": result.images}, out_dir / f"rank{rank}.pt")


@pytest.mark.slow
def test_two_ranks_train_the_same_supernet(tmp_path) -> None:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
           "OMP_NUM_THREADS": "1", "OMP_WAIT_POLICY": "PASSIVE"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", __file__,
           str(tmp_path)]
    run = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    a, b = (torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(2))
    assert a["step"] == b["step"] == 256 // 2 // 32 and a["images"] == a["step"] * 32 * 2
    for key, value in a["state"].items():
        if "running" not in key and "num_batches" not in key:  # BN statistics are each rank's own shard's
            torch.testing.assert_close(value, b["state"][key], rtol=1e-5, atol=1e-6, msg=key)
    assert read_checkpoint(tmp_path / "supernet.pt")["step"] == a["step"]


if __name__ == "__main__":
    _worker(Path(sys.argv[1]))
