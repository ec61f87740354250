"""Options from YAML files and flags: one error type, counts like ``400M``, the dataclass a config is made into.

``make_config`` checks every value's type against the config dataclass's field annotations
before the class's own checks run (and before anything is opened), so a wrong type is one line
naming the option: ``--lr must be a number, but got '1e-3'``.
"""
from __future__ import annotations

import dataclasses
import math
import re
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

from nas.config.errors import ConfigError
from nas.config.secrets import mask_url

__all__ = ["MAX_SEED", "SEED_EXPECTED", "is_seed", "is_number", "is_whole",
           "ConfigError", "parse_count", "read_config_file", "make_config",
           "check_types", "config_fields", "public_dict", "SUPERNET_FILES_EXPECTED", "supernet_files",
           "SUPERNET_VAL_IMAGES_EXPECTED", "check_supernet_val_images"]


T = TypeVar("T")
# numpy, torch and Optuna's samplers take seeds below 2**32; half of that leaves room for the offsets
# added per worker and per trial (``nas.search.sampler_seed``: seed + 7919 * slot).
MAX_SEED = 2**31 - 1
SEED_EXPECTED = f"a whole number in 0..{MAX_SEED}"  # what a --seed error says was expected


def is_seed(value: object) -> bool:
    """Whether ``value`` is a seed every command accepts: a whole number (not a bool) in 0..MAX_SEED."""
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= MAX_SEED


def is_number(value: object) -> bool:
    """Whether ``value`` is a finite int or float (not a bool): what a numeric option's check starts from."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def is_whole(value: object) -> bool:
    """Whether ``value`` is an int (not a bool)."""
    return isinstance(value, int) and not isinstance(value, bool)


# what a bad --supernet (nas-search, nas-proxy-check) is told was expected
SUPERNET_FILES_EXPECTED = ("one trained supernet file, or a comma list of the files of a split supernet, without "
                           "empty or repeated items")


def supernet_files(value: str | None) -> tuple[str, ...] | None:
    """The files of a ``--supernet`` value: one supernet, or the sub-supernets of a split supernet (a comma
    list); () without a value, None for an empty or repeated item."""
    files = tuple(item.strip() for item in str(value).split(",")) if value is not None else ()
    return files if all(files) and len(set(files)) == len(files) else None


# what a bad --supernet-val-images (nas-search, nas-proxy-check) is told was expected
SUPERNET_VAL_IMAGES_EXPECTED = "a whole number of held-out images >= 0 (0: all of them)"


def check_supernet_val_images(value: int, num_val: int) -> None:
    """``--supernet-val-images`` against the held-out images the data leaves, checked before the first score.

    Raises:
        ConfigError: more images than the held-out split holds.
    """
    if value > num_val:
        raise ConfigError(f"--supernet-val-images must be at most the {num_val} held-out images that --val-size "
                          f"leaves, but got {value!r}")


_SUFFIX = {"": 1, "k": 1e3, "m": 1e6, "g": 1e9, "t": 1e12}


def parse_count(text: object, what: str = "--target-flops") -> int:
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


def read_config_file(path: str | Path, known: set[str]) -> dict[str, object]:
    """Read a YAML config; every key must be a known option."""
    from search_spaces import yaml_safe  # imported here: ``search_spaces`` loads torch

    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"--config file {str(path)!r} does not exist")
    try:
        data = yaml_safe.load_file(p)  # YAML 1.2 numbers (1e-3 is a float), no alias bombs, UTF-8 only
    except yaml_safe.YamlError as exc:
        raise ConfigError(f"--config {exc}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"--config {path}: expected a mapping of options, but got {type(data).__name__}")
    data = {str(k).replace("-", "_"): v for k, v in data.items()}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ConfigError(f"--config {path}: unknown key {unknown[0]!r}, expected one of {sorted(known)}")
    return data


def make_config(cls: type[T], file_values: Mapping[str, object], flag_values: Mapping[str, object]) -> T:
    """``cls`` from file values overridden by the flags the user actually gave.

    Every value is first checked against its field's annotation (``check_types``).

    Raises:
        ConfigError: a value of the wrong type, or one the class's own checks refuse.
    """
    values = {**file_values, **{k: v for k, v in flag_values.items() if v is not None}}
    values = check_types(cls, values)
    try:
        return cls(**values)
    except TypeError as exc:  # a wrong type deep inside a check
        raise ConfigError(f"bad option value: {exc}") from None


def check_types(cls: type, values: Mapping[str, object]) -> dict[str, object]:
    """``values`` checked against the annotations of the dataclass ``cls``'s fields.

    ``bool`` is not an integer; an integer is fine for a ``float`` field (it becomes a float); a
    float must be finite; a list is fine for a ``tuple[X, ...]`` field (it becomes a tuple). A value
    of another type is still accepted where ``cls`` itself turns it into the annotated type (the
    text forms its ``__post_init__`` parses: ``target_flops: 400M``, ``seed_arch: a,b``).

    Returns:
        The values, converted as above.

    Raises:
        ConfigError: ``--name must be <expected>, but got <value>`` for the first misfit.
    """
    try:
        hints = typing.get_type_hints(cls)
    except (NameError, TypeError):  # an annotation that cannot be evaluated here: nothing to check against
        return dict(values)
    out = dict(values)
    for name, value in values.items():
        hint = hints.get(name)
        if hint is None:
            continue
        ok, converted = _conform(value, hint)
        if ok and not _finite(converted):
            raise ConfigError(f"--{_flag(name)} must be a finite number, but got {value!r}")
        if not ok:
            parsed, refusal = _parsed_by(cls, name, value, hint)
            if not parsed:
                if isinstance(refusal, ConfigError) and isinstance(value, str) and _parses_text(cls, name, hint):
                    raise refusal  # the class's own words for its text form (``--target-flops ... like 400M``)
                raise ConfigError(f"--{_flag(name)} must be {_expected(hint)}, but got {_short(value)}")
        out[name] = converted if ok else value
    return out


def _flag(name: str) -> str:
    return name.replace("_", "-")


def _short(value: object, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[:limit - 3] + "..."


def _finite(value: object) -> bool:
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, (tuple, list)):
        return all(_finite(v) for v in value)
    return True


def _is_union(hint: object) -> bool:
    return typing.get_origin(hint) in (typing.Union, types.UnionType)


def _conform(value: object, hint: object) -> tuple[bool, object]:
    """(whether ``value`` has the type ``hint``, the value converted to it)."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is Any or hint is object:
        return True, value
    if _is_union(hint):
        for arg in args:
            ok, converted = _conform(value, arg)
            if ok:
                return True, converted
        return False, value
    if hint is type(None):
        return value is None, value
    if hint is bool:
        return isinstance(value, bool), value
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool), value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return False, value
        return True, float(value)
    if origin in (tuple, list) or hint in (tuple, list):
        return _conform_items(value, hint)
    if origin is dict or hint is dict:
        key = args[0] if args else Any
        return isinstance(value, dict) and all(_conform(k, key)[0] for k in value), value
    if isinstance(hint, type):
        return isinstance(value, hint), value
    return True, value  # a typing construct this check does not know: the class checks it


def _conform_items(value: object, hint: object) -> tuple[bool, object]:
    """``tuple[X, ...]``, ``tuple[X, Y]`` or ``list[X]``: a list or tuple whose items conform."""
    origin, args = typing.get_origin(hint) or hint, typing.get_args(hint)
    if not isinstance(value, (list, tuple)):
        return False, value
    if origin is tuple and args and args[-1] is not Ellipsis:
        if len(args) != len(value):
            return False, value
        item_hints = list(args)
    else:
        item_hints = [args[0] if args else Any] * len(value)
    items = [_conform(v, h) for v, h in zip(value, item_hints)]
    if not all(ok for ok, _ in items):
        return False, value
    converted = [v for _, v in items]
    return True, tuple(converted) if origin is tuple else converted


def _parsed_by(cls: type, name: str, value: object, hint: object) -> tuple[bool, Exception | None]:
    """Whether ``cls``, given ``value`` for ``name`` alone, turns it into a value of type ``hint``;
    and the exception with which it refused, if it did."""
    try:
        probe = cls(**{name: value})
    except Exception as exc:  # noqa: BLE001 -- any refusal means the class does not parse this value
        return False, exc
    return _conform(getattr(probe, name, None), hint)[0], None


def _parses_text(cls: type, name: str, hint: object) -> bool:
    """Whether ``cls`` reads ``name`` from text at all: it accepts its default value written as text."""
    default = next((f.default for f in dataclasses.fields(cls) if f.name == name), dataclasses.MISSING)
    if default is dataclasses.MISSING or default is None or isinstance(default, str):
        return False
    text = ",".join(map(str, default)) if isinstance(default, (tuple, list)) else str(default)
    return _parsed_by(cls, name, text, hint)[0]


_NAMES: dict[object, str] = {bool: "true or false", int: "a whole number", float: "a number", str: "a string",
                              dict: "a mapping"}
_PLURALS: dict[object, str] = {bool: "true/false values", int: "whole numbers", float: "numbers", str: "strings"}


def _expected(hint: object) -> str:
    """What a value of type ``hint`` is, in words: ``a number``, ``a list of strings``."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if _is_union(hint):
        words = [_expected(a) for a in args if a is not type(None)]
        return " or ".join(words) if words else "null"
    if origin in (tuple, list) or hint in (tuple, list):
        item = args[0] if args else None
        return f"a list of {_PLURALS.get(item, 'values')}" if item is not None else "a list"
    if origin is dict:
        return "a mapping"
    return _NAMES.get(hint) or str(getattr(hint, "__name__", hint))


def config_fields(cls: type) -> set[str]:
    return {f.name for f in dataclasses.fields(cls)}


def public_dict(config: DataclassInstance) -> dict[str, object]:
    """The config as plain data (tuples as lists), with every password in a URL masked (``mask_url``)."""
    def public(value: object) -> object:
        if isinstance(value, str):
            return mask_url(value)
        if isinstance(value, (list, tuple)):
            return [public(v) for v in value]
        if isinstance(value, dict):
            return {k: public(v) for k, v in value.items()}
        return value

    return {k: public(v) for k, v in dataclasses.asdict(config).items()}
