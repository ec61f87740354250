"""MnasNet's factorized hierarchical search space, as data (``spaces/*.yaml``).

Per stage the space chooses an op, kernel, SE ratio, skip op, output filters and layer count;
stem/head widths, strides and the training-time settings (activation, BN, dropout) are fixed by
the space file. Optuna parameter names are ``s<i>_op``, ``s<i>_kernel``, ``s<i>_se``,
``s<i>_skip``, ``s<i>_filters``, ``s<i>_layers`` (i = 1..7), all categorical.
Membership (``contains``) is about the searched choices: stage structure and stem/head widths.
"""
from __future__ import annotations

import hashlib
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from search_spaces import yaml_safe
from search_spaces.spec import SKIPS, ArchSpec, SpecError, StageSpec

SPACE_DIR = Path(__file__).parent / "spaces"
_CHOICE_KEYS = ("ops", "kernels", "se_ratios", "skips", "filters", "layers")
_PARAM_OF_KEY = {"ops": "op", "kernels": "kernel", "se_ratios": "se", "skips": "skip",
                 "filters": "filters", "layers": "layers"}
_FIXED_KEYS = ("stem_channels", "head_channels", "resolution", "act", "dropout", "drop_connect",
               "bn_momentum", "bn_eps")
_OP_RE = re.compile(r"conv|dsconv|mbconv(\d+)")


class SpaceError(ValueError):
    """A search-space file is invalid."""


def _op_to_stage(op: str) -> tuple[str, int]:
    m = _OP_RE.fullmatch(op)
    if op == "conv" or op == "dsconv":
        return op, 1
    return "mbconv", int(m.group(1))  # type: ignore[union-attr]


def _stage_op(stage: StageSpec) -> str:
    return f"mbconv{stage.expansion}" if stage.op == "mbconv" else stage.op


def _short(value: object, limit: int = 80) -> str:
    """``repr(value)``, cut to ``limit`` characters for a one-line message."""
    text = repr(value)
    return text if len(text) <= limit else text[:limit - 3] + "..."


@dataclass(frozen=True)
class StageChoices:
    stride: int
    ops: tuple[str, ...]
    kernels: tuple[int, ...]
    se_ratios: tuple[float, ...]
    skips: tuple[str, ...]
    filters: tuple[int, ...]
    layers: tuple[int, ...]

    def size(self) -> int:
        return math.prod(len(getattr(self, k)) for k in _CHOICE_KEYS)


def _check_choices(i: int, key: str, values: object) -> tuple:
    where = f"stage {i} {key}"
    if not isinstance(values, list) or not values:
        raise SpaceError(f"{where} must be a non-empty list, but got {_short(values)}")
    nested = next((v for v in values if isinstance(v, (list, dict))), None)
    if nested is not None:
        raise SpaceError(f"{where}: bad value {_short(nested)}, expected a list of plain values (no nested lists "
                         "or mappings)")
    if len(set(values)) != len(values):
        raise SpaceError(f"{where} has duplicates: {_short(values)}")
    for v in values:
        ok = {
            "ops": isinstance(v, str) and bool(_OP_RE.fullmatch(v)) and _op_to_stage(v)[1] >= 1,
            "kernels": isinstance(v, int) and not isinstance(v, bool) and v >= 1 and v % 2 == 1,
            "se_ratios": isinstance(v, (int, float)) and not isinstance(v, bool) and 0 <= v <= 1,
            "skips": v in SKIPS,
            "filters": isinstance(v, int) and not isinstance(v, bool) and v >= 1,
            "layers": isinstance(v, int) and not isinstance(v, bool) and v >= 1,
        }[key]
        if not ok:
            expected = {
                "ops": "conv, dsconv or mbconv<e> with e >= 1", "kernels": "an odd integer >= 1",
                "se_ratios": "a number in [0, 1]", "skips": f"one of {SKIPS}",
                "filters": "an integer >= 1", "layers": "an integer >= 1",
            }[key]
            raise SpaceError(f"{where}: bad value {v!r}, expected {expected}")
    return tuple(float(v) if key == "se_ratios" else v for v in values)


@dataclass(frozen=True)
class SearchSpace:
    name: str
    stages: tuple[StageChoices, ...]
    fixed: tuple[tuple[str, Any], ...]  # ArchSpec fields shared by every sampled architecture
    source: str  # the YAML text, for hashing

    @classmethod
    def from_yaml(cls, text: str) -> "SearchSpace":
        data = yaml_safe.load_as(text, SpaceError, "space")
        if not isinstance(data, dict) or not isinstance(data.get("stages"), list) or not data["stages"]:
            raise SpaceError("a space needs 'stages': a non-empty list of stage mappings")
        allowed = {"name", "choices", "stages", *_FIXED_KEYS}
        unknown = sorted(str(k) for k in set(data) - allowed)
        if unknown:
            raise SpaceError(f"unknown space key {unknown[0]!r}, expected one of {sorted(allowed)}")
        common = data.get("choices") or {}
        if not isinstance(common, dict):
            raise SpaceError(f"'choices' must be a mapping of {_CHOICE_KEYS} lists, but got {_short(common)}")
        stages = []
        for i, raw in enumerate(data["stages"], 1):
            if not isinstance(raw, dict):
                raise SpaceError(f"stage {i} must be a mapping, but got {_short(raw)}")
            merged = {**common, **raw}
            bad = sorted(str(k) for k in set(merged) - {"stride", *_CHOICE_KEYS})
            if bad:
                raise SpaceError(f"stage {i}: unknown key {bad[0]!r}, expected stride or one of {_CHOICE_KEYS}")
            missing = [k for k in _CHOICE_KEYS if k not in merged]
            if missing:
                raise SpaceError(f"stage {i}: missing {missing[0]!r}")
            stride = merged.get("stride", 1)
            if not isinstance(stride, int) or isinstance(stride, bool) or stride not in (1, 2):
                raise SpaceError(f"stage {i} stride must be 1 or 2, but got {_short(stride)}")
            stages.append(StageChoices(stride, *(_check_choices(i, k, merged[k]) for k in _CHOICE_KEYS)))
        try:  # the fixed settings must make a valid architecture (typed as ArchSpec reads them)
            probe = ArchSpec.from_dict({"stages": [StageSpec(stride=s.stride).to_str() for s in stages],
                                        **{k: data[k] for k in _FIXED_KEYS if k in data}})
        except (SpecError, TypeError) as exc:
            raise SpaceError(f"space settings are invalid: {exc}") from None
        fixed = tuple((k, getattr(probe, k)) for k in _FIXED_KEYS if k in data)
        name = data.get("name", "custom")
        if not isinstance(name, str):
            raise SpaceError(f"the space's name must be a string, but got {_short(name)}")
        return cls(name, tuple(stages), fixed, text)

    @classmethod
    def load(cls, path_or_name: str | Path) -> "SearchSpace":
        """A space file path, or the name of a bundled space (``mnasnet``)."""
        p = Path(path_or_name)
        if not p.is_file():
            bundled = SPACE_DIR / f"{path_or_name}.yaml"
            if not bundled.is_file():
                names = sorted(q.stem for q in SPACE_DIR.glob("*.yaml"))
                raise SpaceError(f"space file {str(path_or_name)!r} does not exist (expected a YAML file or one of "
                                 f"{names})")
            p = bundled
        try:
            return cls.from_yaml(yaml_safe.read_text(p))
        except yaml_safe.YamlError as exc:
            raise SpaceError(f"space file {exc}") from None
        except SpaceError as exc:
            raise SpaceError(f"{p}: {exc}") from None

    # -- structure --------------------------------------------------------------------------------
    def size(self) -> int:
        """Number of distinct choice combinations."""
        return math.prod(s.size() for s in self.stages)

    def digest(self) -> str:
        return hashlib.sha256(self.source.encode()).hexdigest()[:16]

    def choices(self) -> dict[str, tuple]:
        """Optuna parameter name -> its categorical choices, in sampling order."""
        out: dict[str, tuple] = {}
        for i, s in enumerate(self.stages, 1):
            for key in _CHOICE_KEYS:
                out[f"s{i}_{_PARAM_OF_KEY[key]}"] = getattr(s, key)
        return out

    def distributions(self) -> dict[str, Any]:
        from optuna.distributions import CategoricalDistribution
        return {name: CategoricalDistribution(c) for name, c in self.choices().items()}

    def _arch(self, stages: list[StageSpec]) -> ArchSpec:
        return ArchSpec(stages=tuple(stages), name="", **dict(self.fixed))

    # -- sample / encode / contains ---------------------------------------------------------------
    def from_params(self, params: dict[str, Any]) -> ArchSpec:
        """The architecture for a full set of parameter values (as ``encode`` returns)."""
        stages = []
        for i, s in enumerate(self.stages, 1):
            op, expansion = _op_to_stage(params[f"s{i}_op"])
            stages.append(StageSpec(
                op=op, expansion=expansion, kernel=params[f"s{i}_kernel"], stride=s.stride,
                se_ratio=float(params[f"s{i}_se"]), skip=params[f"s{i}_skip"],
                out_channels=params[f"s{i}_filters"], repeats=params[f"s{i}_layers"],
            ))
        return self._arch(stages)

    def sample(self, trial: Any) -> ArchSpec:
        """Sample an architecture through ``trial.suggest_categorical`` (an Optuna trial)."""
        params = {name: trial.suggest_categorical(name, list(c)) for name, c in self.choices().items()}
        return self.from_params(params)

    def encode(self, arch: ArchSpec) -> dict[str, Any]:
        """The parameters that make ``sample`` return ``arch``'s searched structure.

        Raises:
            SpaceError: ``arch`` is not a member of the space (the message names the first misfit).
        """
        reason = self._misfit(arch)
        if reason:
            raise SpaceError(f"architecture {arch.name or arch.to_str()!r} is not in space {self.name!r}: {reason}")
        params: dict[str, Any] = {}
        for i, st in enumerate(arch.stages, 1):
            params.update({f"s{i}_op": _stage_op(st), f"s{i}_kernel": st.kernel, f"s{i}_se": st.se_ratio,
                           f"s{i}_skip": st.skip, f"s{i}_filters": st.out_channels, f"s{i}_layers": st.repeats})
        return params

    def contains(self, arch: ArchSpec) -> bool:
        return self._misfit(arch) is None

    def _misfit(self, arch: ArchSpec) -> str | None:
        fixed = dict(self.fixed)
        for key in ("stem_channels", "head_channels"):
            if key in fixed and getattr(arch, key) != fixed[key]:
                return f"{key}={getattr(arch, key)} (space: {fixed[key]})"
        if arch.width_mult != 1.0 or arch.depth_mult != 1.0:
            return f"width_mult={arch.width_mult}, depth_mult={arch.depth_mult} (space: 1.0, 1.0)"
        if len(arch.stages) != len(self.stages):
            return f"{len(arch.stages)} stages (space: {len(self.stages)})"
        for i, (st, ch) in enumerate(zip(arch.stages, self.stages), 1):
            values = {"stride": (st.stride, (ch.stride,)), "op": (_stage_op(st), ch.ops),
                      "kernel": (st.kernel, ch.kernels), "se": (st.se_ratio, ch.se_ratios),
                      "skip": (st.skip, ch.skips), "filters": (st.out_channels, ch.filters),
                      "layers": (st.repeats, ch.layers)}
            for key, (value, allowed) in values.items():
                if value not in allowed:
                    return f"stage {i} {key}={value!r} not in {list(allowed)}"
            if st.act is not None and st.act != fixed.get("act", arch.act):
                return f"stage {i} act={st.act!r} (space: the architecture's)"
        return None


def default_space() -> SearchSpace:
    """The bundled MnasNet space (``search_spaces/spaces/mnasnet.yaml``)."""
    return SearchSpace.load("mnasnet")
