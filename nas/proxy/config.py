"""The proxy task's settings, defined once: what nas-search, nas-grid-scale and nas-proxy-check train on, and how.

``ProxyTaskConfig`` holds the fields with their checks; its field metadata carries each flag's
help and type, from which ``nas.cli.common.add_proxy_arguments`` generates the flags of every
command. ``nas.search.SearchConfig`` and ``scaling.config.GridConfig`` extend it (their YAML keys
and flags stay flat); ``nas.fidelity.CheckConfig`` holds one as its ``task``.
"""
from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from typing import Callable, Mapping

from nas.config import ConfigError, choices_help, is_number, is_whole
from nas.proxy.data import DATASETS, DataConfig, ProxyData
from nas.proxy.runtime import DEVICE_FORMS, default_amp, is_device_name
from nas.proxy.train import TrainConfig

__all__ = ["ProxyTaskConfig", "proxy_fields", "flag_name", "field_help"]

FlagType = type[int] | type[float] | None


def _flag(help: str | Callable[[], str], type: FlagType = None, *, flag: bool = True) -> dict[str, object]:
    """A field's flag: ``help`` is a string, or a function read when a parser is built (a registry's names)."""
    return {"help": help, "type": type, "flag": flag}


def field_help(f: dataclasses.Field[object]) -> str:
    """The help text of a field's flag, as a parser built now shows it."""
    text = f.metadata["help"]
    return str(text() if callable(text) else text)


def _dataset_help() -> str:
    return choices_help(DATASETS, "digits")


@dataclass(frozen=True)
class ProxyTaskConfig:
    """The proxy task: the data, the training budget and recipe, where it runs.

    Field names are the flags with ``-`` -> ``_``; ``train`` (YAML or library use only) sets any
    other ``nas.proxy.TrainConfig`` field.
    """

    dataset: str = field(default="digits", metadata=_flag(_dataset_help))
    data_dir: str | None = field(default=None, metadata=_flag(
        "dataset directory (fashion-mnist: /usr/share/datasets/fashion-mnist)"))
    proxy_resolution: int = field(default=32, metadata=_flag("training resolution of the proxy task [32]", int))
    val_size: float = field(default=0.1, metadata=_flag(
        "held-out part of the training set: fraction or count [0.1]", float))
    train_size: int | None = field(default=None, metadata=_flag("cap on training images", int))
    epochs: float = field(default=1.0, metadata=_flag("proxy training epochs per network [1]", float))
    batch_size: int = field(default=128, metadata=_flag("training batch size per process [128]", int))
    lr: float | None = field(default=None, metadata=_flag("learning rate [the trainer's default]", float))
    max_seconds: float | None = field(default=None, metadata=_flag("training time cap per network, seconds", float))
    device: str = field(default="auto", metadata=_flag(f"{DEVICE_FORMS} [auto]"))
    threads: int | None = field(default=None, metadata=_flag("torch CPU threads [torch's default]", int))
    train: dict[str, object] = field(default_factory=dict, metadata=_flag(
        "any other trainer setting (a mapping; YAML only)", flag=False))

    def __post_init__(self) -> None:
        checks = (
            ("dataset", self.dataset in DATASETS, f"one of {', '.join(DATASETS)}"),
            ("proxy_resolution", is_whole(self.proxy_resolution) and self.proxy_resolution >= 8, ">= 8 pixels"),
            ("val_size", is_number(self.val_size) and self.val_size > 0, "> 0 (a fraction < 1 or a count)"),
            ("train_size", self.train_size is None or (is_whole(self.train_size) and self.train_size >= 1),
             "a whole number >= 1"),
            ("epochs", is_number(self.epochs) and self.epochs > 0, "> 0"),
            ("batch_size", is_whole(self.batch_size) and self.batch_size >= 1, ">= 1"),
            ("lr", self.lr is None or (is_number(self.lr) and self.lr > 0), "> 0"),
            ("max_seconds", self.max_seconds is None or (is_number(self.max_seconds) and self.max_seconds > 0),
             "> 0 seconds"),
            ("device", is_device_name(self.device), DEVICE_FORMS),
            ("threads", self.threads is None or (is_whole(self.threads) and self.threads >= 1), "a whole number >= 1"),
            ("train", isinstance(self.train, dict), "a mapping of trainer settings"),
        )
        for name, ok, expected in checks:
            if not ok:
                raise ConfigError(f"--{flag_name(name)} must be {expected}, but got {getattr(self, name)!r}")

    def train_config(self, seed: int) -> TrainConfig:
        """The trainer's recipe: these fields, the AMP default of the device, then ``train`` on top.

        Raises:
            ConfigError: an unknown key in ``train``, or a value the trainer refuses.
        """
        values: dict[str, object] = {"epochs": self.epochs, "batch_size": self.batch_size, "device": self.device,
                                     "seed": seed, "max_seconds": self.max_seconds, "threads": self.threads}
        if self.lr is not None:
            values["lr"] = self.lr
        values["amp"] = default_amp(self.device)
        values.update(self.train)
        known = {f.name for f in dataclasses.fields(TrainConfig)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ConfigError(f"train: unknown key {unknown[0]!r}, expected one of {sorted(known)}")
        try:
            return TrainConfig(**values)  # type: ignore[arg-type]  # each value is checked by TrainConfig
        except (TypeError, ValueError) as exc:
            raise ConfigError(str(exc)) from None

    def check_data(self, data: ProxyData) -> None:
        """What needs the loaded data, checked before the first trial: a batch the training part can fill."""
        if self.batch_size > data.num_train:
            raise ConfigError(f"--batch-size {self.batch_size} exceeds the {data.num_train} training images that "
                              f"--train-size/--val-size leave")

    def data_config(self, seed: int, environ: Mapping[str, str] = os.environ) -> DataConfig:
        """The data split; ``NAS_LOADER_WORKERS`` sets the image decoders per process (imagefolder).

        Raises:
            ConfigError: a value the dataset refuses, or a malformed ``NAS_LOADER_WORKERS``.
        """
        loaders = environ.get("NAS_LOADER_WORKERS", "")  # cluster recipes set it
        if loaders and not loaders.isdigit():
            raise ConfigError(f"NAS_LOADER_WORKERS must be a whole number, but got {loaders!r}")
        extra = {"workers": int(loaders)} if loaders else {}
        try:
            return DataConfig(name=self.dataset, data_dir=self.data_dir, val_size=self.val_size,
                              train_size=self.train_size, resolution=self.proxy_resolution, seed=seed, **extra)
        except (TypeError, ValueError) as exc:
            raise ConfigError(str(exc)) from None


def proxy_fields() -> tuple[dataclasses.Field[object], ...]:
    """The fields of ``ProxyTaskConfig``, in order (each with ``help``, ``type`` and ``flag`` metadata)."""
    return dataclasses.fields(ProxyTaskConfig)


def flag_name(name: str) -> str:
    """``proxy_resolution`` -> ``proxy-resolution``: a field's flag, without the dashes."""
    return name.replace("_", "-")
