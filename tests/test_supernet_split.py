"""The supernet split by op kind (few-shot NAS): the sub-spaces, the inherited weights, the split's training and
its resume, picking the admitting sub-supernet, and nas-proxy-check and nas-search --supernet A.pt,B.pt,C.pt."""
from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import random
from pathlib import Path

import optuna
import pytest
import test_supernet
import torch
from optuna.storages.journal import JournalFileBackend, JournalStorage
from optuna.trial import TrialState

from nas.cli.proxy_check import main as proxy_check
from nas.cli.proxy_check import parse_config
from nas.cli.search import main as search
from nas.cli.search import parse_config as parse_search
from nas.fidelity.check import sample_archs
from nas.proxy import DataConfig, load_data
from nas.supernet import (
    OP_KINDS,
    Supernet,
    SupernetError,
    SupernetTrainConfig,
    extract_model,
    inherit,
    largest_arch,
    load_supernet,
    pick,
    random_arch,
    read_checkpoint,
    restriction_misfit,
    save_checkpoint,
    score,
    smallest_arch,
    split_path,
    split_supernet,
    sub_space,
    train_supernet,
)
from nas.supernet.provenance import trained_on
from nas.supernet.proxy import score_config
from nas.supernet.split import coverage_misfit
from search_spaces.space import SearchSpace, default_space

TINY = test_supernet.TINY  # every op, kernel, SE and skip choice, a fraction of the width
tiny, digits = test_supernet.tiny, test_supernet.digits  # its fixtures: the tiny space, digits at 16 px
FAST = SupernetTrainConfig(epochs=1, batch_size=32, lr=0.1, warmup_epochs=0.0, threads=1, device="cpu")
# nas-proxy-check on digits at 16 px, 256 training images (4 supernet steps of 64 per epoch), the default space
TASK = ["--dataset", "digits", "--proxy-resolution", "16", "--train-size", "256", "--batch-size", "64",
        "--threads", "1", "--device", "cpu"]
CHECK = [*TASK, "--archs", "3", "--proxies", "supernet-loss", "--reference-epochs", "0.5", "--reference-seeds", "1",
         "--supernet-bn-batches", "2"]


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _randomize(module: torch.nn.Module, seed: int) -> None:
    """Random weights and BN statistics of the scale of a trained network (every slice of every tensor set)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, t in [*module.named_parameters(), *module.named_buffers()]:
            if not t.is_floating_point():
                continue
            noise = torch.randn(t.shape, generator=gen, dtype=torch.float64).to(t.dtype)
            if t.ndim > 1:
                t.copy_(noise / math.sqrt(t[0].numel()))
            elif name.endswith("running_var"):
                t.copy_(1.0 + 0.5 * noise.abs())
            else:
                t.copy_(noise * 0.1 + (1.0 if name.endswith("bn.weight") else 0.0))


# ---------------------------------------------------------------- the sub-spaces
@pytest.mark.parametrize("kind", list(OP_KINDS))
def test_sub_space_restricts_exactly_the_one_stage(kind) -> None:
    space = default_space()
    sub = sub_space(space, 4, kind)
    assert sub.name == f"mnasnet-s4-{kind}" and sub.fixed == space.fixed
    assert sub.stages[3] == dataclasses.replace(space.stages[3], ops=OP_KINDS[kind])
    assert [s for i, s in enumerate(sub.stages) if i != 3] == [s for i, s in enumerate(space.stages) if i != 3]
    assert SearchSpace.from_yaml(sub.source) == sub  # a checkpoint rebuilds it from its source
    assert sub.digest() != space.digest()
    assert restriction_misfit(sub, space) is None
    assert restriction_misfit(space, sub).startswith("stage 4 ops has ")


def test_the_sub_spaces_of_a_stage_partition_the_space() -> None:
    space = default_space()
    subs = [sub_space(space, 2, kind) for kind in OP_KINDS]
    assert sum(sub.size() for sub in subs) == space.size()
    rng = random.Random(0)
    for _ in range(20):
        arch = random_arch(space, rng)
        assert [sub.contains(arch) for sub in subs] == [kind == arch.stages[1].op for kind in OP_KINDS]


@pytest.mark.parametrize(("stage", "kind", "says"), [
    (0, "conv", "the split stage must be in 1..3 (the stages of space 'tiny'), but got 0"),
    (4, "conv", "the split stage must be in 1..3"),
    (2, "ir", "the split kind must be one of stage 2's op kinds in space 'tiny' (conv, dsconv, mbconv), but got 'ir'"),
])
def test_sub_space_refuses_a_stage_or_kind_it_cannot_split(tiny, stage, kind, says) -> None:
    with pytest.raises(SupernetError) as info:
        sub_space(tiny, stage, kind)
    assert says in str(info.value)


def test_sub_space_refuses_a_kind_the_stage_does_not_offer(tiny) -> None:
    conv_only = sub_space(tiny, 1, "conv")
    with pytest.raises(SupernetError, match=r"stage 1's op kinds in space 'tiny-s1-conv' \(conv\), but got 'dsconv'"):
        sub_space(conv_only, 1, "dsconv")


def test_restriction_misfit_names_the_first_difference(tiny) -> None:
    space = default_space()
    assert restriction_misfit(tiny, space) == "3 stages, not 7"
    wider = SearchSpace.from_yaml(TINY.replace("head_channels: 32", "head_channels: 64"))
    assert restriction_misfit(wider, tiny) == "head_channels=64, not 32"
    more = SearchSpace.from_yaml(TINY.replace("filters: [8, 16]", "filters: [8, 16, 24]"))
    assert restriction_misfit(more, tiny) == "stage 1 filters has 24, not one of [8, 16]"
    assert restriction_misfit(tiny, more) is None


def test_a_sub_supernet_file_loads_back_over_its_sub_space(tiny, tmp_path) -> None:
    sub = Supernet(sub_space(tiny, 2, "mbconv"), 10, 3)
    save_checkpoint(tmp_path / "sub.pt", sub, None, 0, FAST.recipe())
    loaded = load_supernet(tmp_path / "sub.pt")
    assert loaded.space == sub.space
    for name, tensor in sub.state_dict().items():
        assert torch.equal(tensor, loaded.state_dict()[name]), name


# ---------------------------------------------------------------- inheriting the weights
@pytest.mark.parametrize("kind", list(OP_KINDS))
def test_inherit_gives_the_base_outputs_in_float64(tiny, kind) -> None:
    """Before any training, each admitted architecture computes in the sub-supernet what it does in the base."""
    torch.manual_seed(0)
    base = Supernet(tiny, 10, 3).double()
    _randomize(base, 1)
    base.trained_on = {"dataset": "digits", "resolution": 16, "in_chans": 3, "num_train": 256, "train_index": None}
    sub = Supernet(sub_space(tiny, 2, kind), 10, 3).double()
    assert sum(p.numel() for p in sub.parameters()) < sum(p.numel() for p in base.parameters())
    rng = random.Random(2)
    archs = [largest_arch(sub.space), smallest_arch(sub.space), *(random_arch(sub.space, rng) for _ in range(6))]
    x = torch.randn(4, 3, 16, 16, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        assert not torch.allclose(extract_model(sub, archs[0])(x), extract_model(base, archs[0])(x))
        inherit(sub, base)
        for arch in archs:
            assert arch.stages[1].op == kind
            assert torch.equal(extract_model(sub, arch)(x), extract_model(base, arch)(x)), arch.to_str()
    assert sub.trained_on == base.trained_on


def test_inherit_refuses_a_supernet_that_is_not_a_restriction(tiny) -> None:
    base = Supernet(tiny, 10, 3)
    sub = Supernet(sub_space(tiny, 2, "conv"), 10, 3)
    with pytest.raises(SupernetError, match=r"has the tensor stages\.1\.0\.\w+.* that the base supernet lacks"):
        inherit(base, sub)
    narrower = Supernet(SearchSpace.from_yaml(TINY.replace("filters: [16, 24]", "filters: [16]")), 10, 3)
    with pytest.raises(SupernetError, match=r"has shape .* the base supernet's .*keep each stage's largest choices"):
        inherit(narrower, base)
    with pytest.raises(SupernetError, match="the sub-supernet has 5 classes"):
        inherit(Supernet(sub.space, 5, 3), base)


# ---------------------------------------------------------------- picking
def test_pick_chooses_the_admitting_supernet_and_raises_for_none(tiny) -> None:
    subs = {kind: Supernet(sub_space(tiny, 2, kind), 10, 3) for kind in OP_KINDS}
    base = Supernet(tiny, 10, 3)
    rng = random.Random(0)
    archs = [random_arch(tiny, rng) for _ in range(30)]
    assert {a.stages[1].op for a in archs} == set(OP_KINDS)
    for arch in archs:
        kind = arch.stages[1].op
        assert pick(list(subs.values()), arch) is subs[kind]
        assert pick([subs["conv"], subs["dsconv"], base], arch) is (base if kind == "mbconv" else subs[kind])
        assert pick([base, *subs.values()], arch) is base  # the first that admits it
    mbconv = next(a for a in archs if a.stages[1].op == "mbconv")
    with pytest.raises(SupernetError) as info:
        pick([subs["conv"], subs["dsconv"]], mbconv.replace(name="cand"))
    assert str(info.value).startswith("architecture 'cand' is in none of the 2 supernets' spaces: tiny-s2-conv: "
                                      "stage 2 op='mbconv")
    assert "; tiny-s2-dsconv: stage 2 op='mbconv" in str(info.value) and "\n" not in str(info.value)


# ---------------------------------------------------------------- training the split
@pytest.fixture(scope="module")
def base_file(tiny, digits, tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("split-base") / "base.pt"
    torch.manual_seed(0)
    train_supernet(Supernet(tiny, digits.num_classes, digits.in_chans), digits, FAST, checkpoint=path)
    return path


def test_split_supernet_trains_one_file_per_kind_beside_the_base_and_a_rerun_resumes(tiny, digits, base_file,
                                                                                      tmp_path) -> None:
    calls: list[tuple[str, Path, int, int]] = []

    def on_trained(kind, path, result) -> None:
        calls.append((kind, path, result.start_step, result.step))

    whole = split_supernet(base_file, digits, 2, 0.5, tmp_path / "whole", FAST, on_trained=on_trained)
    assert whole == [tmp_path / "whole" / f"base-s2-{kind}.pt" for kind in OP_KINDS]
    assert calls == [(kind, path, 0, 4) for kind, path in zip(OP_KINDS, whole)]  # half an epoch of 8 steps
    base = read_checkpoint(base_file)["trained_on"]
    for kind, path in zip(OP_KINDS, whole):
        state = read_checkpoint(path)
        assert state["space_digest"] == sub_space(tiny, 2, kind).digest() and state["step"] == 4
        assert state["recipe"] == {**FAST.recipe(), "epochs": 0.5}
        assert torch.equal(state["trained_on"]["train_index"], base["train_index"])
    shas = [sha(p) for p in whole]
    calls.clear()
    assert split_supernet(base_file, digits, 2, 0.5, tmp_path / "whole", FAST, on_trained=on_trained) == whole
    assert calls == [(kind, path, 4, 4) for kind, path in zip(OP_KINDS, whole)]  # complete: nothing trained
    assert [sha(p) for p in whole] == shas
    # interrupted after 2 steps of dsconv's: the rerun finishes it as the uninterrupted run did
    cut = Supernet(sub_space(tiny, 2, "dsconv"), digits.num_classes, digits.in_chans)
    inherit(cut, load_supernet(base_file))
    partial = split_path(base_file, 2, "dsconv", tmp_path / "resumed")
    train_supernet(cut, digits, dataclasses.replace(FAST, epochs=0.5), checkpoint=partial, until_step=2)
    calls.clear()
    split_supernet(base_file, digits, 2, 0.5, tmp_path / "resumed", FAST, on_trained=on_trained)
    assert calls[1] == ("dsconv", partial, 2, 4)
    done, resumed = load_supernet(whole[1]).state_dict(), load_supernet(partial).state_dict()
    for name, tensor in done.items():
        assert torch.equal(tensor, resumed[name]), name


@pytest.mark.slow  # ~30 s: six sub-supernets trained
def test_split_supernet_defaults_to_the_base_recipe_without_warm_up(digits, base_file, tmp_path) -> None:
    base = tmp_path / "base.pt"
    base.write_bytes(base_file.read_bytes())
    paths = split_supernet(base, digits, 1, 0.25, train_config=dataclasses.replace(FAST, lr=0.02))
    assert paths == [tmp_path / f"base-s1-{kind}.pt" for kind in OP_KINDS]  # beside the base
    assert read_checkpoint(paths[0])["recipe"]["lr"] == 0.02
    default = split_supernet(base, digits, 3, 0.25, tmp_path / "default")
    expected = {**FAST.recipe(), "epochs": 0.25, "warmup_epochs": 0.0, "seed": FAST.seed + 1}
    assert [read_checkpoint(p)["recipe"] for p in default] == [expected] * len(OP_KINDS)


def test_split_supernet_refuses_other_data_and_a_base_without_a_record(tiny, digits, base_file, tmp_path) -> None:
    moved = load_data(DataConfig("digits", resolution=16, train_size=256, val_size=200, seed=1))
    with pytest.raises(SupernetError, match="was trained on other data"):
        split_supernet(base_file, moved, 2, 0.5, tmp_path, FAST)
    with pytest.raises(SupernetError, match=r"the split stage must be in 1\.\.3 .* but got 9"):
        split_supernet(base_file, digits, 9, 0.5, tmp_path, FAST)
    bare = tmp_path / "bare.pt"
    save_checkpoint(bare, Supernet(tiny, 10, 3), None, 0, FAST.recipe())
    with pytest.raises(SupernetError, match="holds no record of the data it was trained on"):
        split_supernet(bare, digits, 2, 0.5, tmp_path, FAST)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bare.pt"]


# ---------------------------------------------------------------- nas-proxy-check --supernet A.pt,B.pt,C.pt
@pytest.fixture(scope="module")
def split_files(tmp_path_factory) -> dict[str, Path]:
    """A default-space supernet trained one step on nas-proxy-check's data, split on stage 4 (one step per kind)."""
    folder = tmp_path_factory.mktemp("split-default")
    cfg = parse_config([*CHECK, "--supernet", "x.pt"])
    data = load_data(cfg.task.data_config(cfg.seed))
    recipe = SupernetTrainConfig(epochs=0.25, batch_size=64, random_subnets=1, threads=1, device="cpu")
    torch.manual_seed(0)
    train_supernet(Supernet(default_space(), data.num_classes, data.in_chans), data, recipe,
                   checkpoint=folder / "base.pt")
    paths = split_supernet(folder / "base.pt", data, 4, 0.25, None, dataclasses.replace(recipe, seed=1))
    return {"base": folder / "base.pt", **{kind: path for kind, path in zip(OP_KINDS, paths)}}


def digest(path: Path) -> str:
    return sha(path)[:16]


def records(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "scores.jsonl").read_text().splitlines()[1:]]


def test_proxy_check_scores_each_architecture_with_its_split_file(split_files, tmp_path) -> None:
    out = tmp_path / "check"
    assert proxy_check([*CHECK, "--supernet", str(split_files["base"]), "--out", str(out)]) == 0
    three = ",".join(str(split_files[k]) for k in OP_KINDS)
    assert proxy_check([*CHECK, "--supernet", three, "--out", str(out)]) == 0
    two = f"{split_files['dsconv']},{split_files['mbconv']}"  # the 3 architectures have no conv at stage 4
    assert proxy_check([*CHECK, "--supernet", two, "--out", str(out)]) == 0
    single = f"supernet-loss@{digest(split_files['base'])}/bn2"
    tag3 = "+".join(digest(split_files[k]) for k in OP_KINDS)
    tag2 = f"{digest(split_files['dsconv'])}+{digest(split_files['mbconv'])}"
    found = records(out)
    by_method: dict[str, dict[str, float]] = {}
    for r in found:
        by_method.setdefault(r["method"], {})[r["arch"]] = r["score"]
    assert set(by_method) == {single, f"supernet-loss@{tag3}/bn2", f"supernet-loss@{tag2}/bn2", "train:0.5"}
    assert all(len(scores) == 3 for scores in by_method.values())  # the reference was computed once
    assert len(found) == 12
    # each architecture's score is its own sub-supernet's, whichever files are listed
    cfg = parse_config([*CHECK, "--supernet", three])
    data, trainer = load_data(cfg.task.data_config(cfg.seed)), cfg.task.train_config(cfg.seed)
    archs = sample_archs(default_space(), 3, 0, cfg.target_flops, cfg.flops_band, False)
    assert {a.stages[3].op for a in archs} == {"dsconv", "mbconv"}
    for arch in archs:
        torch.manual_seed(cfg.seed)
        own = score(load_supernet(split_files[arch.stages[3].op]), arch, data, bn_batches=2,
                    config=score_config(trainer, cfg.seed), metric="loss")
        assert by_method[f"supernet-loss@{tag3}/bn2"][arch.to_str()] == pytest.approx(own, abs=1e-6)
        assert by_method[f"supernet-loss@{tag2}/bn2"][arch.to_str()] == pytest.approx(own, abs=1e-6)


def _other_space_file(files: dict[str, Path]) -> str:
    path = files["base"].parent / "tiny.pt"
    save_checkpoint(path, Supernet(SearchSpace.from_yaml(TINY), 10, 3), None, 0, FAST.recipe())
    return f"{files['conv']},{path}"


@pytest.mark.parametrize(("given", "says"), [
    (_other_space_file, "supernet '{base}/tiny.pt' is over the space 'tiny', which is not 'mnasnet' or a restriction "
                        "of it: 3 stages, not 7"),
    (lambda f: f"{f['conv']},{f['mbconv']}", "architecture 'arch02' is in none of the 2 supernets' spaces: "
                                             "mnasnet-s4-conv: stage 4 op='dsconv' not in ['conv']; mnasnet-s4-mbconv"),
    (lambda f: f"{f['conv']},{f['base'].parent / 'missing.pt'}",
     "supernet checkpoint '{base}/missing.pt' does not exist"),
    (lambda f: f"{f['conv']},,{f['mbconv']}", "--supernet must be one trained supernet file, or a comma list of the "
                                              "files of a split supernet, without empty or repeated items, but got"),
    (lambda f: f"{f['conv']},{f['conv']}", "without empty or repeated items"),
])
def test_proxy_check_refuses_bad_split_files_in_one_line(split_files, given, says, tmp_path, capsys) -> None:
    archs = sample_archs(default_space(), 3, 0, 400e6, 4.0, False)
    assert archs[2].stages[3].op == "dsconv"  # the architecture that neither conv nor mbconv admits
    out = tmp_path / "check"
    assert proxy_check([*CHECK, "--supernet", given(split_files), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("nas-proxy-check: error: "), err
    assert says.format(base=split_files["base"].parent) in err[0], err
    assert not out.exists()


def test_proxy_check_checks_each_split_file_is_held_out(split_files, tmp_path, capsys) -> None:
    """--seed 1 draws another held-out split, which shares images with the files' training."""
    three = ",".join(str(split_files[k]) for k in OP_KINDS)
    assert proxy_check([*CHECK, "--seed", "1", "--supernet", three, "--out", str(tmp_path / "c")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"supernet '{split_files['conv']}': the held-out split shares " in err[0], err


def test_trained_on_is_what_the_split_files_record(split_files) -> None:
    cfg = parse_config([*CHECK, "--supernet", "x.pt"])
    record = trained_on(load_data(cfg.task.data_config(cfg.seed)))
    for kind in OP_KINDS:
        stored = read_checkpoint(split_files[kind])["trained_on"]
        assert torch.equal(stored["train_index"], record["train_index"]), kind


# ---------------------------------------------------------------- nas-search --supernet A.pt,B.pt,C.pt
SEARCH = [*TASK, "--proxy", "supernet", "--supernet-bn-batches", "2", "--pruner", "none", "--quiet"]
SUPPORTED = "coverage is checked for files that differ from the space only in the ops of one stage"


def test_coverage_misfit_accepts_a_split_and_names_the_gap(tiny) -> None:
    subs = {kind: sub_space(tiny, 2, kind) for kind in OP_KINDS}
    assert coverage_misfit(list(subs.values()), tiny) is None
    assert coverage_misfit([subs["mbconv"], subs["conv"], subs["dsconv"]], tiny) is None
    assert coverage_misfit([subs["conv"], tiny], tiny) is None  # a whole supernet covers what the others leave
    assert coverage_misfit([subs["conv"], subs["mbconv"]], tiny) == (
        "stage 2 op 'dsconv' is in none of the 2 spaces (tiny-s2-conv, tiny-s2-mbconv)")
    assert coverage_misfit([subs["mbconv"]], tiny) == "stage 2 op 'conv' is in none of the 1 spaces (tiny-s2-mbconv)"
    assert coverage_misfit([], tiny) == "no space given"
    assert coverage_misfit([*subs.values(), default_space()], tiny) == (
        "space 'mnasnet' is not 'tiny' or a restriction of it: 7 stages, not 3")
    # what it cannot decide: restrictions of two stages, or of another choice than the ops
    with pytest.raises(SupernetError, match=f"the spaces tiny-s1-conv, tiny-s2-conv, .* restrict stages 1, 2 of "
                                            f"'tiny': {SUPPORTED}"):
        coverage_misfit([sub_space(tiny, 1, "conv"), *subs.values()], tiny)
    narrow = SearchSpace.from_yaml(TINY.replace("name: tiny", "name: narrow").replace("filters: [16, 24]",
                                                                                      "filters: [16]"))
    with pytest.raises(SupernetError, match=f"the space 'narrow' restricts stage 2 filters of 'tiny': {SUPPORTED}"):
        coverage_misfit([narrow, *subs.values()], tiny)


def study(out: Path) -> optuna.Study:
    storage = JournalStorage(JournalFileBackend(str(out / "study.journal")))
    return optuna.load_study(study_name="nas-search", storage=storage)


def _seed_files(folder: Path) -> str:
    """Two architectures of the proxy check's sample as YAML files, dsconv and mbconv at stage 4: seeded first,
    the search scores with two different files of the split."""
    archs = sample_archs(default_space(), 3, 0, 400e6, 4.0, False)
    chosen = [archs[2], next(a for a in archs if a.stages[3].op == "mbconv")]
    assert [a.stages[3].op for a in chosen] == ["dsconv", "mbconv"]
    for i, arch in enumerate(chosen):
        (folder / f"seed{i}.yaml").write_text(arch.to_yaml())
    return ",".join(str(folder / f"seed{i}.yaml") for i in range(len(chosen)))


def test_search_scores_each_trial_with_the_split_file_that_admits_it(split_files, tmp_path, capsys) -> None:
    out = tmp_path / "search"
    three = ",".join(str(split_files[k]) for k in OP_KINDS)
    args = [*SEARCH, "--supernet", three, "--trials", "3", "--seed-arch", _seed_files(tmp_path), "--out", str(out)]
    assert search(args) == 0
    found = study(out)
    assert found.user_attrs["supernet_digest"] == "+".join(digest(split_files[k]) for k in OP_KINDS)
    done = [t for t in found.trials if t.state == TrialState.COMPLETE and "duplicate_of" not in t.user_attrs]
    space = default_space()
    archs = [space.from_params(t.params) for t in done]
    assert len(done) == 3 and {a.stages[3].op for a in archs} >= {"dsconv", "mbconv"}
    cfg = parse_search(args)
    data, trainer = load_data(cfg.data_config(cfg.seed)), cfg.train_config(cfg.seed)
    for t, arch in zip(done, archs):
        torch.manual_seed(cfg.seed)
        own = score(load_supernet(split_files[arch.stages[3].op]), arch, data, bn_batches=2,
                    config=score_config(trainer, cfg.seed), metric="accuracy")
        assert t.user_attrs["accuracy"] == pytest.approx(own, abs=1e-9), t.number
    # resuming with another supernet, another order of the split, or one of its files is refused, the study kept
    journal = sha(out / "study.journal")
    reordered = ",".join(str(split_files[k]) for k in reversed(OP_KINDS))
    for other, says in [(str(split_files["base"]), "was made with supernet_digest="),
                        (reordered, "was made with supernet_digest="),
                        (str(split_files["conv"]), "was trained over the space 'mnasnet-s4-conv'")]:
        capsys.readouterr()
        assert search([*SEARCH, "--supernet", other, "--trials", "4", "--out", str(out)]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and says in err[0], err
    assert sha(out / "study.journal") == journal


@pytest.mark.parametrize(("given", "says"), [
    (lambda f: ["--supernet", f"{f['conv']},{f['mbconv']}"],
     "do not cover the space 'mnasnet' (a search needs every architecture admitted by one of them): stage 4 op "
     "'dsconv' is in none of the 2 spaces (mnasnet-s4-conv, mnasnet-s4-mbconv)"),
    (lambda f: ["--supernet", _other_space_file(f)],
     "supernet '{base}/tiny.pt' is over the space 'tiny', which is not 'mnasnet' or a restriction of it"),
    (lambda f: ["--supernet", f"{f['conv']},{f['base'].parent / 'missing.pt'}"],
     "supernet checkpoint '{base}/missing.pt' does not exist"),
    (lambda f: ["--supernet", f"{f['conv']},,{f['mbconv']}"],
     "--supernet must be one trained supernet file, or a comma list of the files of a split supernet, without "
     "empty or repeated items, but got"),
    (lambda f: ["--supernet", f"{f['conv']},{f['conv']}"], "without empty or repeated items"),
    (lambda f: ["--proxy", "train", "--supernet", f"{f['conv']},{f['dsconv']},{f['mbconv']}"],
     "--supernet must be given with --proxy supernet"),
])
def test_search_refuses_bad_split_files_in_one_line_before_the_study(split_files, given, says, tmp_path,
                                                                     capsys) -> None:
    out = tmp_path / "search"
    assert search([*SEARCH, *given(split_files), "--trials", "2", "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("nas-search: error: "), err
    assert says.format(base=split_files["base"].parent) in err[0], err
    assert not out.exists()
