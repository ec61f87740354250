"""The proxy task defined once (``nas.proxy.ProxyTaskConfig``): the same flags, help and errors in nas-search,
nas-grid-scale and nas-proxy-check; one resolver of ``device: auto``; one launcher index; one atomic writer."""
from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

import pytest
import torch

import nas.cli.proxy_check as proxy_check
import nas.cli.search as search
import scaling.cli as grid
from nas.cli.common import proxy_flags
from nas.config import ConfigError, make_config
from nas.fidelity import CheckConfig
from nas.proxy import ProxyTaskConfig, default_amp, proxy_fields, resolve_device
from nas.proxy.config import field_help
from nas.search import SearchConfig
from scaling.config import GridConfig

COMMANDS = {"nas-search": search, "nas-grid-scale": grid, "nas-proxy-check": proxy_check}


def _actions(parser: argparse.ArgumentParser) -> dict[str, argparse.Action]:
    return {s: a for a in parser._actions for s in a.option_strings}


# -- one set of flags ----------------------------------------------------------------------------------------------
def test_the_proxy_flags_are_the_fields_of_the_config():
    fields = [f.name for f in proxy_fields()]
    assert fields == ["dataset", "data_dir", "proxy_resolution", "val_size", "train_size", "epochs", "batch_size",
                      "lr", "max_seconds", "device", "threads", "train"]
    assert list(proxy_flags()) == [f"--{n.replace('_', '-')}" for n in fields if n != "train"]  # train: YAML only
    for f in proxy_fields():
        assert f.metadata["help"], f.name


@pytest.mark.parametrize("prog", sorted(COMMANDS))
def test_every_command_has_the_proxy_flags_with_the_config_s_help_and_type(prog):
    actions = _actions(COMMANDS[prog].build_parser())
    by_field = {f.name: f for f in proxy_fields()}
    for flag, name in proxy_flags().items():
        action, f = actions[flag], by_field[name]
        assert action.dest == name and action.type is f.metadata["type"], flag
        if prog == "nas-proxy-check" and name == "epochs":  # accepted, refused with a hint, not shown
            assert action.help == argparse.SUPPRESS
        else:
            assert action.help == field_help(f), flag


def test_the_three_commands_show_the_same_proxy_help():
    def shown(prog: str) -> dict[str, tuple[object, str | None]]:
        actions = _actions(COMMANDS[prog].build_parser())
        return {flag: (actions[flag].type, actions[flag].help) for flag in proxy_flags()
                if actions[flag].help != argparse.SUPPRESS}

    assert shown("nas-search") == shown("nas-grid-scale")
    assert shown("nas-proxy-check") == {k: v for k, v in shown("nas-search").items() if k != "--epochs"}
    for prog, module in COMMANDS.items():  # and --help prints them
        text = " ".join(module.build_parser().format_help().split())
        assert "training resolution of the proxy task [32]" in text, prog


# -- one set of checks ---------------------------------------------------------------------------------------------
BAD_VALUES = [
    ("--batch-size", "0", "batch_size", 0),
    ("--proxy-resolution", "4", "proxy_resolution", 4),
    ("--dataset", "imagenet", "dataset", "imagenet"),
    ("--device", "tpu", "device", "tpu"),
    ("--lr", "-1", "lr", -1.0),
    ("--threads", "0", "threads", 0),
    ("--val-size", "0", "val_size", 0.0),
    ("--max-seconds", "-5", "max_seconds", -5.0),
    ("--train-size", "0", "train_size", 0),
]


def _error(module, argv: list[str], capsys) -> tuple[int, str]:
    try:
        code = module.main(argv)
    except SystemExit as exc:  # argparse
        code = exc.code
    return code, capsys.readouterr().err


@pytest.mark.parametrize("flag, text, name, value", BAD_VALUES, ids=[b[0] for b in BAD_VALUES])
def test_a_bad_proxy_value_is_the_same_one_line_from_every_command(flag, text, name, value, tmp_path, capsys):
    with pytest.raises(ConfigError) as expected:
        make_config(ProxyTaskConfig, {}, {name: value})
    assert f"--{name.replace('_', '-')} must be " in str(expected.value) and repr(value) in str(expected.value)
    for prog, module in COMMANDS.items():
        code, err = _error(module, [flag, text, "--out", str(tmp_path / prog)], capsys)
        assert code == 2 and err == f"{prog}: error: {expected.value}\n", (prog, err)
        assert not (tmp_path / prog).exists()


def test_the_configs_are_proxy_task_configs_with_flat_fields():
    for cls in (SearchConfig, GridConfig):
        assert issubclass(cls, ProxyTaskConfig)
        names = [f.name for f in dataclasses.fields(cls)]
        assert names[:len(proxy_fields())] == [f.name for f in proxy_fields()]  # flat: YAML keys = flags
    assert isinstance(CheckConfig(task={"dataset": "synthetic"}).task, ProxyTaskConfig)
    cfg = CheckConfig(reference_epochs=3, task=ProxyTaskConfig(batch_size=64))
    assert cfg.task.epochs == 3 and cfg.task.batch_size == 64  # the reference's length
    with pytest.raises(ConfigError, match="unknown proxy-task setting 'epochs'"):
        CheckConfig(task={"epochs": 2})


def test_the_trainer_and_data_recipes_come_from_the_one_config():
    task = {"dataset": "synthetic", "proxy_resolution": 16, "val_size": 0.2, "train_size": 64, "epochs": 2.0,
            "batch_size": 32, "lr": 0.1, "max_seconds": 9.0, "device": "cpu", "threads": 1,
            "train": {"optimizer": "rmsprop"}}
    configs = [SearchConfig(**task, seed=3), GridConfig(**task, seed=3),
               CheckConfig(seed=3, reference_epochs=2.0, task={k: v for k, v in task.items() if k != "epochs"}).task]
    trainers = {c.train_config(3) for c in configs}
    data = {c.data_config(3) for c in configs}
    assert len(trainers) == 1 and len(data) == 1
    (trainer,), (split,) = trainers, data
    assert (trainer.epochs, trainer.batch_size, trainer.lr, trainer.optimizer, trainer.seed, trainer.amp) == \
        (2.0, 32, 0.1, "rmsprop", 3, "none")
    assert (split.name, split.resolution, split.train_size, split.val_size, split.seed) == ("synthetic", 16, 64, 0.2, 3)
    with pytest.raises(ConfigError, match="train: unknown key 'optimiser'"):
        ProxyTaskConfig(train={"optimiser": "sgd"}).train_config(0)
    with pytest.raises(ConfigError, match="NAS_LOADER_WORKERS must be a whole number, but got 'two'"):
        ProxyTaskConfig().data_config(0, environ={"NAS_LOADER_WORKERS": "two"})
    assert ProxyTaskConfig(dataset="imagefolder").data_config(0, environ={"NAS_LOADER_WORKERS": "5"}).workers == 5


# -- one resolver of "auto" ----------------------------------------------------------------------------------------
@pytest.fixture
def fake_cuda(monkeypatch):
    """As on a machine with GPUs, the current one being cuda:3, with bf16 support."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 3)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)


@pytest.fixture
def no_cuda(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)


def _amp_of_every_config(device: str) -> set[str]:
    return {SearchConfig(device=device).train_config(0).amp, GridConfig(device=device).train_config(0).amp,
            CheckConfig(task={"device": device}).task.train_config(0).amp}


def test_auto_on_a_machine_with_gpus(fake_cuda):
    assert resolve_device("auto") == resolve_device("cuda") == torch.device("cuda", 3)  # this process's GPU
    assert resolve_device("auto", local_rank=1) == torch.device("cuda", 1)  # a torchrun rank's own GPU
    assert resolve_device("cuda:2", local_rank=1) == torch.device("cuda", 2)  # an explicit index stays
    assert resolve_device("cpu") == torch.device("cpu")
    assert default_amp("auto") == default_amp("cuda:0") == "bf16" and default_amp("cpu") == "none"
    assert _amp_of_every_config("auto") == {"bf16"} and _amp_of_every_config("cpu") == {"none"}


def test_auto_on_a_machine_without(no_cuda):
    assert resolve_device("auto") == torch.device("cpu")
    assert default_amp("auto") == default_amp("cuda") == "none"
    assert _amp_of_every_config("auto") == {"none"}
    with pytest.raises(ConfigError, match="--device 'cuda:1' but CUDA is not available on this machine"):
        resolve_device("cuda:1")
    for bad in ("tpu", "cuda:x", "", "gpu"):
        with pytest.raises(ConfigError, match=f"--device must be auto, cpu, cuda or cuda:N, but got '{bad}'"):
            resolve_device(bad)


def test_a_missing_gpu_is_the_same_one_line_from_every_command(no_cuda, tmp_path, capsys):
    """Before any data is read or any file written: nas-search and nas-grid-scale check it as the proxy check does."""
    argv = ["--dataset", "digits", "--device", "cuda", "--train-size", "128", "--batch-size", "32", "--quiet"]
    own = {"nas-search": ["--trials", "1"], "nas-grid-scale": ["--step", "0.5", "--tolerance", "0.25"],
           "nas-proxy-check": ["--archs", "3", "--proxies", "zc:synflow"]}
    for prog, module in COMMANDS.items():
        args = [a for a in argv if prog != "nas-proxy-check" or a != "--quiet"]
        code, err = _error(module, [*args, *own[prog], "--out", str(tmp_path / prog)], capsys)
        assert code == 2 and err == f"{prog}: error: --device 'cuda' but CUDA is not available on this machine; " \
                                    f"use cpu or auto\n", (prog, err)
        assert not (tmp_path / prog).exists()


def test_the_trainer_resolves_through_the_one_resolver(monkeypatch):
    import nas.proxy.train as train

    assert not hasattr(train, "_resolve_device") and train.resolve_device is resolve_device
    assert train.torch_threads is __import__("nas.proxy", fromlist=["torch_threads"]).torch_threads


# -- one launcher index --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("env, index", [({}, None), ({"SLURM_ARRAY_TASK_ID": "5"}, 5),
                                        ({"NAS_WORKER_INDEX": "2", "SLURM_PROCID": "7"}, 2),
                                        ({"JOB_COMPLETION_INDEX": "x", "SLURM_PROCID": "4"}, 4)])
def test_one_launcher_index(env, index, monkeypatch):
    from nas.cluster.workers import launcher_index
    from nas.search import worker_index

    for var in ("NAS_WORKER_INDEX", "SLURM_ARRAY_TASK_ID", "SLURM_PROCID", "JOB_COMPLETION_INDEX"):
        monkeypatch.delenv(var, raising=False)
    for var, value in env.items():
        monkeypatch.setenv(var, value)
    assert launcher_index() == index and worker_index() == (index or 0)


# -- one atomic writer ---------------------------------------------------------------------------------------------
def test_one_atomic_writer(tmp_path: Path):
    import search_spaces.interop as interop
    from search_spaces.files import atomic_write

    assert interop.atomic_write is atomic_write
    target = tmp_path / "plot.png"
    target.write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_write(target) as tmp:
            assert tmp.parent == tmp_path and tmp.suffix == ".png"  # writers that choose the format by it
            tmp.write_text("half")
            raise RuntimeError("killed")
    assert target.read_text() == "old" and sorted(p.name for p in tmp_path.iterdir()) == ["plot.png"]
    with atomic_write(target, missing_ok=True):
        pass  # wrote nothing (no matplotlib): the old file stays
    assert target.read_text() == "old"
    with pytest.raises(FileNotFoundError):
        with atomic_write(target):
            pass
    with atomic_write(target) as tmp:
        tmp.write_text("new")
    assert target.read_text() == "new" and sorted(p.name for p in tmp_path.iterdir()) == ["plot.png"]
