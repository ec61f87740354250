"""The one YAML reader (search_spaces.yaml_safe) and the type check of config values (nas.config.make_config).

YAML 1.2 numbers (PyYAML reads ``1e-3`` as a string), alias bombs, non-UTF-8 files, and a wrong
type in a config named by its option before anything is opened: in configs, architectures and spaces.
"""
from __future__ import annotations

import math
import re
from pathlib import Path

import pytest
import yaml

from nas.config import ConfigError, make_config, read_config_file
from nas.search.config import SearchConfig
from scaling.config import GridConfig
from search_spaces import ArchSpec, SpecError, load_arch, yaml_safe
from search_spaces.space import SPACE_DIR, SearchSpace, SpaceError

SOURCES = Path(__file__).resolve().parent.parent
# A billion laughs: 9 ** 9 = 387 million strings once expanded (PyYAML itself builds shared lists quickly;
# whatever walks them, a repr in an error message or a set of choices, runs out of memory).
BOMB = "a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"{chr(98 + i)}: &{chr(98 + i)} [{', '.join([f'*{chr(97 + i)}'] * 9)}]\n" for i in range(8))


# --- numbers ---------------------------------------------------------------------------------------

@pytest.mark.parametrize(("text", "value"), [
    ("1e-3", 0.001), ("-7e-2", -0.07), ("1e3", 1000.0), ("+2.5E+1", 25.0), (".5", 0.5), ("1.", 1.0),
    ("0.25", 0.25), ("4e8", 4e8), ("010", 10), ("-3", -3), ("0x1f", 31), ("0o17", 15),
    (".inf", math.inf), ("-.Inf", -math.inf),
])
def test_numbers_are_yaml_1_2(text: str, value: float) -> None:
    got = yaml_safe.load(f"v: {text}")["v"]
    assert got == value and type(got) is type(value)
    if "e" in text.lower() and "." not in text:
        assert isinstance(yaml.safe_load(f"v: {text}")["v"], str)  # what PyYAML alone gives


@pytest.mark.parametrize("text", ["'1e3'", "1_000", "1:30", "0b101", "1e", "e3", "1.2.3", "inf", "nan"])
def test_what_is_not_a_yaml_1_2_number_stays_a_string(text: str) -> None:
    assert isinstance(yaml_safe.load(f"v: {text}")["v"], str)


def test_nan_bools_and_nulls() -> None:
    data = yaml_safe.load("a: .nan\nb: true\nc: false\nd: null\ne: ~")
    assert math.isnan(data["a"]) and data["b"] is True and data["c"] is False and data["d"] is data["e"] is None


def test_dump_quotes_strings_that_would_read_back_as_numbers() -> None:
    data = {"name": "1e3", "other": "010", "x": 1e-05, "y": 0.001, "z": math.inf, "stages": ["ir_r1_k3_s1_e6_c16"]}
    assert yaml_safe.load(yaml_safe.dump(data)) == data
    arch = load_arch("name: '1e3'\nstages: [ir_r1_k3_s1_e6_c16]\nbn_eps: 1e-5")
    assert arch.name == "1e3" and arch.bn_eps == 1e-5
    assert ArchSpec.from_yaml(arch.to_yaml()) == arch


def test_architecture_and_space_numbers_in_exponent_form(tmp_path: Path) -> None:
    arch = load_arch("stages: [ir_r1_k3_s1_e6_c16]\nbn_eps: 1e-3\ndropout: 2e-1\ndepth_mult: 1e0")
    assert (arch.bn_eps, arch.dropout, arch.depth_mult) == (0.001, 0.2, 1.0)
    text = (SPACE_DIR / "mnasnet.yaml").read_text().replace("bn_eps: 0.001", "bn_eps: 1e-3")
    text = text.replace("se_ratios: [0.0, 0.25]", "se_ratios: [0, 2.5e-1]")
    space = SearchSpace.from_yaml(text)
    assert dict(space.fixed)["bn_eps"] == 0.001 and space.stages[0].se_ratios == (0.0, 0.25)


def test_config_file_numbers_reach_the_config(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("lr: 1e-3\nreward_exponent: -7e-2\ntarget_flops: 4e8\nepochs: 2\nmax_seconds: 1e3\n")
    cfg = make_config(SearchConfig, read_config_file(path, {f for f in SearchConfig.__dataclass_fields__}), {})
    assert (cfg.lr, cfg.reward_exponent, cfg.target_flops, cfg.max_seconds) == (0.001, -0.07, 400_000_000, 1000.0)
    assert type(cfg.epochs) is float and cfg.epochs == 2.0  # an integer is fine for a float option


# --- alias bombs, self-reference, encodings ----------------------------------------------------------

def test_alias_bomb_and_recursive_alias_are_refused() -> None:
    with pytest.raises(yaml_safe.YamlError, match=r"more than 100,000 nodes once its aliases are expanded"):
        yaml_safe.load(BOMB)
    with pytest.raises(yaml_safe.YamlError, match="refers to itself"):
        yaml_safe.load("a: &a [1, *a]")
    shared = yaml_safe.load("base: &b {kernels: [3, 5]}\nstage1: *b\nstage2: *b")  # ordinary aliases still work
    assert shared["stage2"] == {"kernels": [3, 5]}


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


@pytest.mark.parametrize("kind", ["config", "architecture", "space"])
def test_bombs_and_latin1_files_are_one_line_errors_naming_the_file(tmp_path: Path, kind: str) -> None:
    def read(path: Path) -> None:
        if kind == "config":
            read_config_file(path, {"a", "b", "c", "d", "e", "f", "g", "h", "i", "lr"})
        elif kind == "architecture":
            load_arch(path)
        else:
            SearchSpace.load(path)

    error = {"config": ConfigError, "architecture": SpecError, "space": SpaceError}[kind]
    bomb = _write(tmp_path / "bomb.yaml", BOMB.encode())
    with pytest.raises(error, match=r"bomb\.yaml.*aliases are expanded") as err:
        read(bomb)
    assert "\n" not in str(err.value)
    latin1 = _write(tmp_path / "latin.yaml", "# r\xe9glage du taux\nlr: 0.1\n".encode("latin-1"))
    with pytest.raises(error, match=r"latin\.yaml' is not UTF-8 text: byte 0xe9 on line 1") as err:
        read(latin1)
    assert "\n" not in str(err.value)


def test_a_utf8_file_with_a_byte_order_mark_reads(tmp_path: Path) -> None:
    path = _write(tmp_path / "c.yaml", "\ufeff# réglage\nlr: 1e-2\n".encode("utf-8"))
    assert read_config_file(path, {"lr"}) == {"lr": 0.01}


def test_no_yaml_is_read_around_the_safe_loader() -> None:
    """Every YAML read of the packages goes through yaml_safe (the tests may read with PyYAML)."""
    offenders = []
    for package in ("nas", "scaling", "search_spaces", "bench"):
        for path in (SOURCES / package).rglob("*.py"):
            if path.name == "yaml_safe.py":
                continue
            if re.search(r"yaml\.(safe_load|load|full_load|unsafe_load)\(|yaml\.(Safe)?Loader\b", path.read_text()):
                offenders.append(str(path.relative_to(SOURCES)))
    assert offenders == []


# --- config value types --------------------------------------------------------------------------

@pytest.mark.parametrize(("values", "message"), [
    ({"lr": "1e-3"}, "--lr must be a number, but got '1e-3'"),
    ({"seed": 1.5}, "--seed must be a whole number, but got 1.5"),
    ({"seed": True}, "--seed must be a whole number, but got True"),
    ({"batch_size": 64.0}, "--batch-size must be a whole number, but got 64.0"),
    ({"storage": 5}, "--storage must be a string, but got 5"),
    ({"quiet": "yes"}, "--quiet must be true or false, but got 'yes'"),
    ({"train": [1]}, "--train must be a mapping, but got [1]"),
    ({"seed_arch": [1, 2]}, "--seed-arch must be a list of strings, but got [1, 2]"),
    ({"reward_exponent": math.nan}, "--reward-exponent must be a finite number, but got nan"),
    ({"epochs": math.inf}, "--epochs must be a finite number, but got inf"),
    ({"target_latency": math.inf}, "--target-latency must be a finite number, but got inf"),
    ({"target_flops": "abc"}, "--target-flops must be a positive count like 400M"),
])
def test_a_wrong_type_names_the_option(values: dict, message: str) -> None:
    with pytest.raises(ConfigError) as err:
        make_config(SearchConfig, values, {})
    assert str(err.value).startswith(message) and "\n" not in str(err.value)


@pytest.mark.parametrize(("values", "field", "value"), [
    ({"target_flops": "400M"}, "target_flops", 400_000_000), ({"target_flops": 4e8}, "target_flops", 400_000_000),
    ({"seed_arch": "efficientnet-b0,mobilenetv2"}, "seed_arch", ("efficientnet-b0", "mobilenetv2")),
    ({"seed_arch": ["efficientnet-b0"]}, "seed_arch", ("efficientnet-b0",)),
    ({"target_latency": "15ms", "cost": "latency"}, "target_latency", 0.015),
    ({"lr": None}, "lr", None), ({"flops_band": 3}, "flops_band", 3.0),
])
def test_the_forms_the_config_parses_are_accepted(values: dict, field: str, value: object) -> None:
    assert getattr(make_config(SearchConfig, values, {}), field) == value


def test_grid_config_types() -> None:
    assert make_config(GridConfig, {"phi": 4}, {}).phi == (4,)
    assert make_config(GridConfig, {"phi": "1..3", "alpha": 1, "beta": 1.1, "gamma": 1.15}, {}).alpha == 1.0
    with pytest.raises(ConfigError, match=r"^--step must be a number, but got '0\.1'$"):
        make_config(GridConfig, {"step": "0.1"}, {})
    with pytest.raises(ConfigError, match="^--alpha must be a finite number, but got nan$"):
        make_config(GridConfig, {}, {"alpha": math.nan, "beta": 1.1, "gamma": 1.1})


def test_nas_search_refuses_a_string_number_before_opening_anything(tmp_path: Path, capsys) -> None:
    from nas.cli.search import main

    config = tmp_path / "c.yaml"
    config.write_text("lr: '1e-3'\ntrials: 1\n")
    out = tmp_path / "out"
    assert main(["--config", str(config), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "--lr must be a number, but got '1e-3'" in err and err.count("\n") == 1 and "Traceback" not in err
    assert not out.exists()
    assert main(["--reward-exponent", "nan", "--out", str(out)]) == 2
    assert "--reward-exponent must be a finite number, but got nan" in capsys.readouterr().err
    assert not out.exists()
