"""Frozen architecture specs and their text forms.

A stage is written as one compact string in timm's grammar, e.g. ``ir_r2_k3_s2_e6_c24_se0.25``:

========  ===========================================================================
token     meaning
========  ===========================================================================
``ir``    op prefix: ``ir`` MBConv (inverted residual), ``ds`` depthwise-separable conv,
          ``cn`` regular conv (conv-bn-act). Always first.
``r2``    repeats (layers in the stage), >= 1
``k3``    kernel size, odd, >= 1
``s2``    stride of the stage's first layer (1 or 2)
``e6``    expansion ratio (MBConv); ``ds`` and ``cn`` take ``e1`` only
``c24``   output channels, >= 1
``se0.25`` squeeze-excite ratio (reduced width = int(block input channels * ratio)); absent = 0
``n<a>``  activation override: ``nre`` relu, ``nr6`` relu6, ``nsw`` silu/swish, ``nhs`` hardswish
``noskip`` / ``poolskip``  skip op: none / pooling shortcut; absent = identity residual
========  ===========================================================================

Tokens after the op may come in any order when parsing; they are printed in the order above.
An unknown or repeated token is an error, never a silent default.
"""
from __future__ import annotations

import dataclasses
import math
import re
from dataclasses import dataclass
from typing import Any, Callable

from search_spaces import yaml_safe

OPS = ("mbconv", "dsconv", "conv")
SKIPS = ("identity", "pool", "none")
ACTIVATIONS = ("relu", "relu6", "silu", "hardswish")

_OP_PREFIX = {"ir": "mbconv", "ds": "dsconv", "cn": "conv"}
_PREFIX_OF_OP = {v: k for k, v in _OP_PREFIX.items()}
_ACT_TOKEN = {"re": "relu", "r6": "relu6", "sw": "silu", "hs": "hardswish"}
_TOKEN_OF_ACT = {v: k for k, v in _ACT_TOKEN.items()}
_SKIP_TOKEN = {"noskip": "none", "poolskip": "pool"}
_TOKEN_OF_SKIP = {v: k for k, v in _SKIP_TOKEN.items()}
_NUM = r"(\d+(?:\.\d+)?(?:e-?\d+)?)"
_TOKEN_RES = (
    ("repeats", re.compile(r"r(\d+)")),
    ("kernel", re.compile(r"k(\d+)")),
    ("stride", re.compile(r"s(\d+)")),
    ("expansion", re.compile(r"e(\d+)")),
    ("out_channels", re.compile(r"c(\d+)")),
    ("se_ratio", re.compile(r"se" + _NUM)),
    ("act", re.compile(r"n(re|r6|sw|hs)")),
    ("skip", re.compile(r"(noskip|poolskip)")),
)
_TOKEN_HELP = "r<repeats>, k<kernel>, s<stride>, e<expansion>, c<channels>, se<ratio>, n{re,r6,sw,hs}, noskip, poolskip"


class SpecError(ValueError):
    """An architecture spec, stage string or YAML document is invalid."""


def _fmt_num(x: float) -> str:
    text = repr(float(x))  # the shortest text that reads back as the same float
    return text[:-2] if text.endswith(".0") else text


def _checked(default: Any, ok: Callable[[Any], bool], expected: str) -> Any:
    """A field with its rule: ``ok(value)`` must hold, else ``SpecError`` says ``<name> must be <expected>``."""
    return dataclasses.field(default=default, metadata={"ok": ok, "expected": expected})


def _check_fields(spec: StageSpec | ArchSpec) -> None:
    """Each field's rule (``_checked``), in field order. Raises SpecError naming the first bad value."""
    for f in dataclasses.fields(spec):
        value = getattr(spec, f.name)
        if "ok" in f.metadata and not f.metadata["ok"](value):
            raise SpecError(f"{f.name} must be {f.metadata['expected']}, but got {f.name}={value!r}")


@dataclass(frozen=True)
class StageSpec:
    """One stage: ``repeats`` copies of one searched layer; only the first has ``stride``."""

    op: str = _checked("mbconv", lambda v: v in OPS, f"one of {OPS}")
    repeats: int = _checked(1, lambda v: v >= 1, ">= 1")
    kernel: int = _checked(3, lambda v: v >= 1 and v % 2 == 1, "an odd integer >= 1")
    stride: int = _checked(1, lambda v: v in (1, 2), "1 or 2")
    expansion: int = _checked(6, lambda v: v >= 1, ">= 1")
    out_channels: int = _checked(16, lambda v: v >= 1, ">= 1")
    se_ratio: float = _checked(0.0, lambda v: 0.0 <= v <= 1.0, "in [0, 1]")
    skip: str = _checked("identity", lambda v: v in SKIPS, f"one of {SKIPS}")
    act: str | None = _checked(None, lambda v: v is None or v in ACTIVATIONS,
                               f"one of {ACTIVATIONS} or None")  # None: the architecture's activation

    def __post_init__(self) -> None:
        _check_fields(self)
        if self.op != "mbconv" and self.expansion != 1:
            raise SpecError(f"op={self.op!r} takes expansion 1 only, but got expansion={self.expansion}")

    def to_str(self) -> str:
        """The compact timm-style string, e.g. ``ir_r2_k3_s2_e6_c24_se0.25``."""
        parts = [_PREFIX_OF_OP[self.op], f"r{self.repeats}", f"k{self.kernel}", f"s{self.stride}",
                 f"e{self.expansion}", f"c{self.out_channels}"]
        if self.se_ratio:
            parts.append("se" + _fmt_num(self.se_ratio))
        if self.act is not None:
            parts.append("n" + _TOKEN_OF_ACT[self.act])
        if self.skip != "identity":
            parts.append(_TOKEN_OF_SKIP[self.skip])
        return "_".join(parts)

    @classmethod
    def parse(cls, text: str) -> "StageSpec":
        """Parse a stage string. Raises SpecError naming the bad token."""
        if not isinstance(text, str) or not text.strip():
            raise SpecError(f"a stage string like 'ir_r2_k3_s2_e6_c24_se0.25' was expected, but got {text!r}")
        tokens = text.strip().split("_")
        if tokens[0] not in _OP_PREFIX:
            raise SpecError(f"stage {text!r}: bad op token {tokens[0]!r}, expected one of {tuple(_OP_PREFIX)}")
        values: dict[str, Any] = {"op": _OP_PREFIX[tokens[0]]}
        token_of: dict[str, str] = {"op": tokens[0]}
        for tok in tokens[1:]:
            key, value = _parse_token(text, tok)
            if key in values:
                raise SpecError(f"stage {text!r}: token {tok!r} repeats {key!r}")
            values[key], token_of[key] = value, tok
        for required in ("repeats", "kernel", "out_channels"):
            if required not in values:
                raise SpecError(f"stage {text!r}: missing {required!r} token")
        values.setdefault("expansion", 1 if values["op"] != "mbconv" else 6)
        try:
            return cls(**values)
        except SpecError as exc:
            bad = next((t for k, t in reversed(token_of.items()) if f"{k}=" in str(exc)), None)
            where = f"bad token {bad!r}: " if bad else ""
            raise SpecError(f"stage {text!r}: {where}{exc}") from None


def _parse_token(text: str, tok: str) -> tuple[str, Any]:
    for key, pattern in _TOKEN_RES:
        m = pattern.fullmatch(tok)
        if not m:
            continue
        raw = m.group(1)
        if key == "se_ratio":
            return key, float(raw)
        if key == "act":
            return key, _ACT_TOKEN[raw]
        if key == "skip":
            return key, _SKIP_TOKEN[raw]
        return key, int(raw)
    raise SpecError(f"stage {text!r}: bad token {tok!r}, expected one of {_TOKEN_HELP}")


# --- TF rounding rules (tensorflow/tpu efficientnet_model.py), tiny pure functions -------------

def round_filters(channels: int, width_mult: float, divisor: int = 8) -> int:
    """TF ``round_filters``: scale channels by ``width_mult`` and round to a multiple of ``divisor``."""
    if width_mult == 1.0:
        return channels
    scaled = channels * width_mult
    new = max(divisor, int(scaled + divisor / 2) // divisor * divisor)
    if new < 0.9 * scaled:
        new += divisor
    return int(new)


def round_repeats(repeats: int, depth_mult: float) -> int:
    """TF ``round_repeats``: ``ceil(depth_mult * repeats)``."""
    if depth_mult == 1.0:
        return repeats
    return int(math.ceil(depth_mult * repeats))


@dataclass(frozen=True)
class ArchSpec:
    """A whole network: stem conv, stages, 1x1 head conv, pooling, dropout, classifier.

    ``resolution`` is the deployment resolution at which costs are counted.
    ``width_mult`` / ``depth_mult`` apply TF's ``round_filters`` / ``round_repeats`` at build time.
    """

    stages: tuple[StageSpec, ...]
    stem_channels: int = _checked(32, lambda v: v >= 1, ">= 1")
    head_channels: int = _checked(1280, lambda v: v >= 0, ">= 0 (0: no head conv)")
    width_mult: float = _checked(1.0, lambda v: v > 0, "> 0")
    depth_mult: float = _checked(1.0, lambda v: v > 0, "> 0")
    resolution: int = _checked(224, lambda v: v >= 8, ">= 8")
    dropout: float = _checked(0.2, lambda v: 0.0 <= v < 1.0, "in [0, 1)")
    drop_connect: float = _checked(0.2, lambda v: 0.0 <= v < 1.0, "in [0, 1)")
    act: str = _checked("silu", lambda v: v in ACTIVATIONS, f"one of {ACTIVATIONS}")
    bn_momentum: float = _checked(0.01, lambda v: 0.0 < v <= 1.0, "in (0, 1]")
    bn_eps: float = _checked(1e-3, lambda v: v > 0, "> 0")
    name: str = ""

    def __post_init__(self) -> None:
        if not isinstance(self.stages, tuple):
            object.__setattr__(self, "stages", tuple(self.stages))
        if not self.stages or not all(isinstance(s, StageSpec) for s in self.stages):
            raise SpecError(f"stages must be a non-empty sequence of StageSpec, but got {self.stages!r}")
        if not isinstance(self.name, str):
            raise SpecError(f"name must be a string, but got name={self.name!r}")
        _check_fields(self)

    # -- derived views --------------------------------------------------------------------------
    def stage_strings(self) -> tuple[str, ...]:
        return tuple(s.to_str() for s in self.stages)

    def to_str(self) -> str:
        """One line: the stage strings joined by spaces (stem/head/multipliers are in the YAML form)."""
        return " ".join(self.stage_strings())

    def replace(self, **changes: Any) -> "ArchSpec":
        return dataclasses.replace(self, **changes)

    # -- YAML -----------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, object]:
        d: dict[str, object] = {"name": self.name} if self.name else {}
        d["stem_channels"] = self.stem_channels
        d["stages"] = list(self.stage_strings())
        for f in dataclasses.fields(self):
            if f.name not in ("stages", "stem_channels", "name"):
                d[f.name] = getattr(self, f.name)
        return d

    def to_yaml(self) -> str:
        return yaml_safe.dump(self.to_dict())

    @classmethod
    def from_dict(cls, data: object) -> "ArchSpec":
        if not isinstance(data, dict):
            raise SpecError(f"an architecture mapping with a 'stages' list was expected, but got {type(data).__name__}")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise SpecError(f"unknown architecture key {unknown[0]!r}, expected one of {sorted(known)}")
        if not isinstance(data.get("stages"), list):
            raise SpecError("architecture needs 'stages': a list of stage strings like 'ir_r2_k3_s2_e6_c24_se0.25'")
        kwargs = dict(data)
        kwargs["stages"] = tuple(StageSpec.parse(s) for s in data["stages"])
        for key in ("width_mult", "depth_mult", "dropout", "drop_connect", "bn_momentum", "bn_eps"):
            if key in kwargs:
                kwargs[key] = _as_number(key, kwargs[key], float)
        for key in ("stem_channels", "head_channels", "resolution"):
            if key in kwargs:
                kwargs[key] = _as_number(key, kwargs[key], int)
        return cls(**kwargs)

    @classmethod
    def from_yaml(cls, text: str) -> "ArchSpec":
        return cls.from_dict(yaml_safe.load_as(text, SpecError, "architecture"))


def _as_number(key: str, value: object, kind: type[int] | type[float]) -> int | float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
            or (kind is int and value != int(value)):
        raise SpecError(f"{key} must be {'an integer' if kind is int else 'a number'}, but got {key}={value!r}")
    return kind(value)
