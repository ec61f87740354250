"""``nas-grid-scale``'s frozen configuration: one value per CLI flag, optionally read from YAML."""
from __future__ import annotations

import re
from dataclasses import dataclass

from nas.config import ConfigError, is_number
from nas.search.config import StudyConfig
from scaling.compound import Coefficients, Grid
from scaling.variants import MODES, PHIS

__all__ = ["GridConfig", "parse_phis"]

def parse_phis(value: object) -> tuple[int, ...]:
    """``"1..7"``, ``"1-3"``, ``"1,2,5"``, ``4`` or ``[1, 2]`` -> sorted φ values in 1..7."""
    if isinstance(value, (list, tuple)):
        items: list[object] = list(value)
    elif isinstance(value, int) and not isinstance(value, bool):
        items = [value]
    else:
        text = str(value).strip()
        m = re.fullmatch(r"(\d+)\s*(?:\.\.|-)\s*(\d+)", text)
        items = list(range(int(m.group(1)), int(m.group(2)) + 1)) if m else [s.strip() for s in text.split(",")]
    try:
        phis = sorted({int(x) for x in items})  # type: ignore[call-overload]  # a bad item is the error below
    except (TypeError, ValueError):
        raise ConfigError(f"--phi must be values in 1..7 like 1..7, 1,2,3 or 4, but got {value!r}") from None
    if not phis or any(p not in PHIS for p in phis):
        raise ConfigError(f"--phi must be values in 1..7 (the official table's B1..B7), but got {value!r}")
    return tuple(phis)


@dataclass(frozen=True)
class GridConfig(StudyConfig):
    """Everything ``nas-grid-scale`` needs; field names are the CLI flags with ``-`` -> ``_``.

    The proxy-task fields and their checks are ``nas.proxy.ProxyTaskConfig``'s (as in nas-search);
    the controller fields mean what they mean in ``nas.search.SearchConfig``.
    """

    base: str = "efficientnet-b0"
    resolution: int | None = None  # deployment resolution of the base [its own]
    # grid (step 1)
    step: float = 0.05
    max: float = 2.0
    tolerance: float = 0.1
    resolution_multiple: int = 4
    alpha: float | None = None
    beta: float | None = None
    gamma: float | None = None
    max_candidates: int | None = None
    # family (step 2)
    phi: tuple[int, ...] = PHIS
    mode: str = "compound"
    # controller: StudyConfig's fields (as nas-search), with this command's defaults
    pruner: str = "none"  # a grid trains each candidate once; pruning favours fast starters
    study_name: str = "nas-grid-scale"
    out: str = "runs/nas-grid-scale"

    def __post_init__(self) -> None:
        object.__setattr__(self, "phi", parse_phis(self.phi))
        given = [self.alpha, self.beta, self.gamma]
        checks = [
            ("step", is_number(self.step) and self.step > 0, "> 0"),
            ("max", is_number(self.max) and self.max >= 1, ">= 1"),
            ("tolerance", is_number(self.tolerance) and self.tolerance >= 0, ">= 0"),
            ("resolution_multiple", isinstance(self.resolution_multiple, int) and self.resolution_multiple >= 1,
             ">= 1"),
            ("resolution", self.resolution is None or self.resolution >= 8, ">= 8 pixels"),
            ("max_candidates", self.max_candidates is None or self.max_candidates >= 1, "an integer >= 1"),
            ("mode", self.mode in MODES, f"one of {MODES}"),
        ]
        checks += [(n, v is None or (is_number(v) and v >= 1), ">= 1 (compound scaling never shrinks)")
                   for n, v in zip(("alpha", "beta", "gamma"), given)]
        for name, ok, expected in checks:
            if not ok:
                raise ConfigError(f"--{name.replace('_', '-')} must be {expected}, but got {getattr(self, name)!r}")
        if any(v is None for v in given) and any(v is not None for v in given):
            missing = [f"--{n}" for n, v in zip(("alpha", "beta", "gamma"), given) if v is None]
            raise ConfigError(f"--alpha, --beta and --gamma go together, but {', '.join(missing)} missing")
        super().__post_init__()  # the controller's and the proxy task's own checks

    @property
    def given(self) -> Coefficients | None:
        if self.alpha is None or self.beta is None or self.gamma is None:
            return None
        return Coefficients(self.alpha, self.beta, self.gamma)

    @property
    def grid(self) -> Grid:
        return Grid(self.step, self.max, self.tolerance)
