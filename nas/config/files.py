"""Options from YAML files and flags: one error type, counts like ``400M``, the dataclass a config is made into."""
from __future__ import annotations

import dataclasses
import re
from pathlib import Path
from typing import Any

import yaml

from nas.config.secrets import mask_url


class ConfigError(ValueError):
    """Bad user input: the message is one line naming the value and what was expected."""


_SUFFIX = {"": 1, "k": 1e3, "m": 1e6, "g": 1e9, "t": 1e12}


def parse_count(text: Any, what: str = "--target-flops") -> int:
    """``400M``, ``0.4G``, ``4e8`` and ``400000000`` all give 400,000,000."""
    if isinstance(text, (int, float)) and not isinstance(text, bool):
        value = float(text)
    else:
        m = re.fullmatch(r"\s*(\d+(?:\.\d*)?(?:[eE][+-]?\d+)?)\s*([kKmMgGtT]?)\s*", str(text))
        if not m:
            raise ConfigError(f"{what} must be a positive count like 400M, 0.4G, 4e8 or 400000000, but got {text!r}")
        value = float(m.group(1)) * _SUFFIX[m.group(2).lower()]
    if not value > 0:
        raise ConfigError(f"{what} must be positive, but got {text!r}")
    return int(round(value))


def read_config_file(path: str | Path, known: set[str]) -> dict[str, Any]:
    """Read a YAML config; every key must be a known option."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"--config file {str(path)!r} does not exist")
    try:
        data = yaml.safe_load(p.read_text())
    except yaml.YAMLError as exc:
        raise ConfigError(f"--config {path}: YAML does not parse: {str(exc).splitlines()[0]}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"--config {path}: expected a mapping of options, but got {type(data).__name__}")
    data = {str(k).replace("-", "_"): v for k, v in data.items()}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ConfigError(f"--config {path}: unknown key {unknown[0]!r}, expected one of {sorted(known)}")
    return data


def make_config(cls: type, file_values: dict[str, Any], flag_values: dict[str, Any]) -> Any:
    """``cls`` from file values overridden by the flags the user actually gave."""
    values = {**file_values, **{k: v for k, v in flag_values.items() if v is not None}}
    try:
        return cls(**values)
    except TypeError as exc:  # a wrong type deep inside a check
        raise ConfigError(f"bad option value: {exc}") from None


def config_fields(cls: type) -> set[str]:
    return {f.name for f in dataclasses.fields(cls)}


def public_dict(config: Any) -> dict[str, Any]:
    """The config as plain data, with any password in a storage URL masked."""
    d = dataclasses.asdict(config)
    if d.get("storage"):
        d["storage"] = mask_url(d["storage"])
    if isinstance(d.get("seed_arch"), tuple):
        d["seed_arch"] = list(d["seed_arch"])
    return d
