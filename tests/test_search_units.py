"""Reward, option parsing and storage opening: the small pieces of nas-search."""
from __future__ import annotations

import math

import pytest

from nas.cluster.storage import open_storage
from nas.config import ConfigError, mask_url, parse_count
from nas.search.config import SearchConfig
from nas.search.objective import pareto_front
from nas.search.reward import reward


@pytest.mark.parametrize("text", ["400M", "0.4G", "4e8", "400000000", 400_000_000, "400m", " 400M "])
def test_target_flops_forms(text):
    assert parse_count(text) == 400_000_000


@pytest.mark.parametrize("text", ["400X", "abc", "-400M", "0", "", "4e", "M"])
def test_target_flops_rejects(text):
    with pytest.raises(ConfigError, match="target-flops"):
        parse_count(text)


def test_soft_reward_matches_the_paper_formula():
    # ACC x (FLOPS/T)^w with w = -0.07 (EfficientNet section 4.2)
    assert reward(0.8, 400e6, 400e6) == pytest.approx(0.8)
    assert reward(0.8, 800e6, 400e6) == pytest.approx(0.8 * 2 ** -0.07)
    assert reward(0.8, 200e6, 400e6) == pytest.approx(0.8 * 0.5 ** -0.07)
    # MnasNet's observation: doubling the cost must buy ~5% relative accuracy to break even
    assert reward(0.8 * 2 ** 0.07, 800e6, 400e6) == pytest.approx(0.8)


def test_hard_reward():
    assert reward(0.8, 399e6, 400e6, kind="hard") == pytest.approx(0.8)
    assert reward(0.8, 400e6, 400e6, kind="hard") == pytest.approx(0.8)
    assert reward(0.8, 800e6, 400e6, kind="hard") == pytest.approx(0.4)
    assert reward(0.8, 500e6, 400e6, exponent=-0.5, kind="soft") == pytest.approx(0.8 * 1.25 ** -0.5)


@pytest.mark.parametrize("field,value", [("trials", 0), ("sampler", "cmaes"), ("pruner", "asha"),
                                         ("epochs", 0), ("reward", "medium"), ("flops_band", 0.5)])
def test_config_rejects(field, value):
    with pytest.raises(ConfigError, match=field.replace("_", "-")):
        SearchConfig(**{field: value})


def test_seed_arch_from_comma_list():
    assert SearchConfig(seed_arch="efficientnet-b0,mnasnet-a1").seed_arch == ("efficientnet-b0", "mnasnet-a1")


def test_mask_url_hides_password():
    assert mask_url("postgresql://nas:s3cret@db.example:5432/studies") == "postgresql://nas:***@db.example:5432/studies"
    assert "s3cret" not in mask_url("postgresql+psycopg://u:s3cret@h/db")
    assert mask_url("sqlite:///x.db") == "sqlite:///x.db"


def test_unknown_storage_scheme(tmp_path):
    with pytest.raises(ConfigError, match="unknown scheme 'redis2'"):
        open_storage("redis2://localhost/0", tmp_path)


def test_unreachable_storage_masks_password(tmp_path):
    # port 9 on loopback: nothing listens there
    with pytest.raises(ConfigError) as info:
        open_storage("postgresql://nas:s3cret@127.0.0.1:9/studies", tmp_path)
    assert "s3cret" not in str(info.value) and "cannot be opened" in str(info.value)
    assert "\n" not in str(info.value)


def test_pareto_front():
    pts = [(0.9, 500.0), (0.8, 300.0), (0.85, 600.0), (0.7, 300.0), (0.95, 900.0)]
    assert pareto_front(pts) == [0, 1, 4]
    assert math.isclose(len(pareto_front([(0.5, 1.0)] * 3)), 3)


@pytest.mark.parametrize("name", ["tpe", "random", "nsga2", "gp"])
def test_every_sampler_searches_the_real_space(name):
    import optuna

    from nas.search.study import make_sampler
    from search_spaces import count_cost, default_space

    space = default_space()
    directions = ["maximize", "minimize"] if name == "nsga2" else ["maximize"]
    study = optuna.create_study(directions=directions, sampler=make_sampler(name, seed=0, n_startup=3))
    for _ in range(6):
        trial = study.ask()
        macs = count_cost(space.sample(trial)).macs
        study.tell(trial, [1.0, macs] if name == "nsga2" else -abs(macs - 4e8))
    assert len({str(t.params) for t in study.trials}) > 1  # it explores
    assert all(set(t.params) == set(space.choices()) for t in study.trials)
