"""The registries of samplers, pruners, zero-cost proxies and datasets: one entry is all it takes.

An entry added to a registry (here through ``monkeypatch.setitem``, as a plugin would) is accepted
by the config checks, works, and is shown in the command-line help; an unknown name gets the
one-line "must be one of" error that lists every entry, the added one included.
"""
from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import numpy as np
import optuna
import pytest
import torch
from torch import nn

from nas.cli.search import build_parser, parse_config
from nas.config import Choices, ConfigError, Registry, choices_help
from nas.proxy import (
    DATASET_REGISTRY,
    DATASETS,
    ZC_PROXIES,
    DataConfig,
    DataError,
    DatasetSpec,
    load_data,
    make_synthetic,
    score,
)
from nas.search import (
    PROXIES,
    PRUNER_REGISTRY,
    SAMPLER_REGISTRY,
    SAMPLERS,
    ZC_NAMES,
    SearchConfig,
    make_pruner,
    make_sampler,
)

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def wide_help(monkeypatch):
    monkeypatch.setenv("COLUMNS", "1000")  # argparse wraps help lines to the terminal, even within a word


def one_line(text: str) -> str:
    return re.sub(r"\s+", " ", text)


def search_help() -> str:
    return one_line(build_parser().format_help())


def fake_sampler(seed: int | None, n_startup: int) -> optuna.samplers.BaseSampler:
    return optuna.samplers.QMCSampler(seed=seed)


def fake_scorer(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    return float(len(x)) + 0.5


def fake_reader(data_dir: str | None, config: DataConfig) -> tuple[np.ndarray, np.ndarray]:
    return make_synthetic(config.resolution, config.in_chans, num_images=300, num_classes=3)


FAKE_DATASET = DatasetSpec(fake_reader, num_classes=3, needs=None, help="a test's three classes")


# ---------------------------------------------------------------- one entry: accepted, working, shown
def test_a_sampler_added_to_the_registry_is_accepted_made_and_shown(monkeypatch):
    monkeypatch.setitem(SAMPLER_REGISTRY, "qmc", fake_sampler)
    assert "qmc" in SAMPLERS and SAMPLERS[-1] == "qmc"
    assert parse_config(["--sampler", "qmc"]).sampler == "qmc"
    assert isinstance(make_sampler("qmc", seed=3), optuna.samplers.QMCSampler)
    assert "tpe, random, nsga2, gp, rl (MnasNet-style policy-gradient controller), qmc [tpe]" in search_help()


def test_a_pruner_added_to_the_registry_is_accepted_made_and_shown(monkeypatch):
    from scaling.cli import build_parser as grid_parser

    monkeypatch.setitem(PRUNER_REGISTRY, "patient", lambda: optuna.pruners.PatientPruner(None, patience=2))
    assert SearchConfig(pruner="patient").pruner == "patient"
    assert isinstance(make_pruner("patient"), optuna.pruners.PatientPruner)
    assert "hyperband, median, none, patient [hyperband]" in search_help()
    assert "hyperband, median, none, patient [none]" in one_line(grid_parser().format_help())
    from scaling.config import GridConfig

    assert GridConfig(pruner="patient").pruner == "patient"  # the grid reads the same registry


def test_a_zero_cost_proxy_added_to_the_registry_is_accepted_scored_and_shown(monkeypatch):
    monkeypatch.setitem(ZC_PROXIES, "count", fake_scorer)
    cfg = SearchConfig(proxy="zc:count", prescreen="20:2", prescreen_proxy="count")
    assert (cfg.proxy, cfg.prescreen_proxy) == ("zc:count", "count")
    assert PROXIES[-1] == "zc:count" and ZC_NAMES == ("synflow", "naswot", "grad_norm", "snip", "count")
    assert score(nn.Linear(2, 2), torch.zeros(4, 2), torch.zeros(4, dtype=torch.long), "count") == 4.5
    text = search_help()
    assert "or zc:synflow, zc:naswot, zc:grad_norm, zc:snip, zc:count (a zero-cost score" in text
    assert "synflow, naswot, grad_norm, snip, count [synflow]" in text


def test_a_dataset_added_to_the_registry_is_accepted_and_loaded(monkeypatch):
    monkeypatch.setitem(DATASET_REGISTRY, "three", FAKE_DATASET)
    assert "three" in DATASETS
    assert SearchConfig(dataset="three").dataset == "three"
    data = load_data(DataConfig("three", val_size=30, resolution=12))
    assert (data.num_classes, data.num_train, data.num_val, data.resolution) == (3, 270, 30, 12)
    assert choices_help(DATASETS, "digits").endswith("synthetic, three (a test's three classes) [digits]")


def test_a_dataset_added_to_the_registry_is_shown_in_the_help(monkeypatch):
    monkeypatch.setitem(DATASET_REGISTRY, "three", FAKE_DATASET)
    assert "synthetic, three (a test's three classes) [digits]" in search_help()


def test_the_test_split_is_never_read_by_the_proxy_task(monkeypatch):
    """``read_test`` is for nas-train's final evaluation: ``load_data`` (every search command) never calls it."""
    def test_split(data_dir: str | None, config: DataConfig) -> tuple[np.ndarray, np.ndarray]:
        raise AssertionError("the test split was read")

    monkeypatch.setitem(DATASET_REGISTRY, "three", DatasetSpec(fake_reader, test_split, num_classes=3, needs=None))
    assert load_data(DataConfig("three", val_size=30)).num_train == 270
    digits = dataclasses.replace(DATASET_REGISTRY["digits"], read_test=test_split)
    monkeypatch.setitem(DATASET_REGISTRY, "digits", digits)
    data = load_data(DataConfig("digits", val_size=0.1))
    assert data.num_train + data.num_val == 1797  # all of digits: the proxy task has no test split to leave out


# ---------------------------------------------------------------- unknown names: one line, every entry
@pytest.mark.parametrize("argv, message", [
    (["--sampler", "ppo"], "--sampler must be one of tpe, random, nsga2, gp, rl, qmc, but got 'ppo'"),
    (["--pruner", "sha"], "--pruner must be one of hyperband, median, none, patient, but got 'sha'"),
    (["--proxy", "zc:jacov"], "--proxy must be one of train, supernet, zc:synflow, zc:naswot, zc:grad_norm, zc:snip, "
                              "zc:count, but got 'zc:jacov'"),
    (["--prescreen", "20:2", "--prescreen-proxy", "jacov"],
     "--prescreen-proxy must be one of synflow, naswot, grad_norm, snip, count, but got 'jacov'"),
    (["--dataset", "imagenet"], "--dataset must be one of digits, fashion-mnist, mnist, cifar10, cifar100, "
                                "imagefolder, synthetic, three, but got 'imagenet'"),
])
def test_an_unknown_name_is_one_line_listing_every_entry(monkeypatch, argv, message):
    monkeypatch.setitem(SAMPLER_REGISTRY, "qmc", fake_sampler)
    monkeypatch.setitem(PRUNER_REGISTRY, "patient", lambda: optuna.pruners.NopPruner())
    monkeypatch.setitem(ZC_PROXIES, "count", fake_scorer)
    monkeypatch.setitem(DATASET_REGISTRY, "three", FAKE_DATASET)
    with pytest.raises(ConfigError) as info:
        parse_config(argv)
    assert str(info.value) == message


def test_the_library_lookups_name_every_entry():
    with pytest.raises(ConfigError, match=r"^--sampler must be one of tpe, random, nsga2, gp, rl, but got 'ppo'$"):
        make_sampler("ppo", seed=0)
    with pytest.raises(ConfigError, match=r"^--pruner must be one of hyperband, median, none, but got 'sha'$"):
        make_pruner("sha")
    with pytest.raises(DataError, match=r"^--dataset must be one of digits, .*, synthetic, but got 'imagenet'$"):
        DataConfig("imagenet")
    with pytest.raises(ValueError, match=r"^zero-cost proxy must be one of synflow, naswot, grad_norm, snip, "
                                         r"but got 'jacov'$"):
        score(nn.Linear(2, 2), torch.zeros(1, 2), torch.zeros(1, dtype=torch.long), "jacov")


# ---------------------------------------------------------------- the pieces
def test_choices_follow_their_registry_and_read_as_a_tuple():
    table: Registry[int] = Registry("--colour", {"red": 1, "blue": 2}, notes={"blue": "the default"})
    names = Choices(table)
    derived = Choices(lambda: ("none", *(f"c:{n}" for n in table)))
    assert names == ("red", "blue") and names == ["red", "blue"] and names != ("red",) and names != "red,blue"
    assert (str(names), repr(names), len(names), names[1], names[:1]) == ("red, blue", "('red', 'blue')", 2, "blue",
                                                                            ("red",))
    table["green"] = 3
    assert "green" in names and list(derived) == ["none", "c:red", "c:blue", "c:green"]
    assert choices_help(names, "blue") == "red, blue (the default), green [blue]"
    assert choices_help(derived) == "none, c:red, c:blue, c:green"
    assert choices_help(table, prefix="x:", notes=False) == "x:red, x:blue, x:green"
    assert table.lookup("green") == 3
    with pytest.raises(ConfigError, match=r"^--colour must be one of red, blue, green, but got 'pink'$"):
        table.lookup("pink")
    with pytest.raises(ConfigError, match=r"but got \['red'\]$"):
        table.lookup(["red"])  # type: ignore[arg-type]  # an unhashable value from YAML is an error too


def test_the_docs_name_each_registry_where_it_is():
    """docs/architecture.md's "Where to add things": each registry it names exists in the file it names."""
    import importlib

    section = (ROOT / "docs" / "architecture.md").read_text().split("## Where to add things", 1)[1]
    rows = re.findall(r"^\| (a [\w -]+) \|.*\| one .*`([A-Z_]+)` of `([\w/]+)\.py` \|$", section, re.M)
    assert [r[0] for r in rows] == ["a dataset", "a sampler", "a pruner", "a zero-cost proxy", "a storage"]
    for _, name, path in rows:
        module = importlib.import_module(path.replace("/", "."))
        assert isinstance(getattr(module, name), dict), (name, path)
