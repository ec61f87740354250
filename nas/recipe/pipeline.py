"""The derivation as one resumable pipeline: each step runs once, with its inputs on record.

Before any step runs, every step folder that holds markers is checked against the config (a step started
or done with another config section is refused). Then each step, in order: done with the same inputs →
skipped; otherwise started (``step.json``), run, and marked done (``done.json``). The inputs of a step are
its config sections and the digests of the upstream files it reads, so a redone upstream step that gave
other results is caught by the next step, not mixed in.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from nas.recipe import steps
from nas.recipe.config import STEPS, DeriveConfig, Step
from nas.recipe.markers import Inputs, begin, check_config, done_record, file_digest, fingerprint, finish
from nas.recipe.report import build_report

__all__ = ["SECTIONS_OF", "UPSTREAM_OF", "step_inputs", "check_all", "derive", "StepEvent"]

# The config sections each step's results depend on, and the upstream files it reads.
SECTIONS_OF = {"search": ("search",), "grid": ("grid", "refine"), "families": ("families", "grid"),
               "final": ("final",), "report": ()}
UPSTREAM_OF: dict[str, tuple[Path, ...]] = {
    "search": (),
    "grid": (steps.BEST,),
    "families": (steps.BEST, steps.CHOSEN),
    "final": (steps.FAMILIES,),
    "report": (steps.CHOSEN, steps.FAMILIES, steps.FINAL,
               *(Path(s.folder) / "done.json" for s in STEPS[:4])),
}


@dataclass(frozen=True)
class StepEvent:
    """What the pipeline tells its caller: a step started, finished or was found done (``skipped``)."""

    step: Step
    kind: str  # "started", "done", "skipped"
    seconds: float | None = None
    headline: str = ""


def _label(name: str) -> str:
    sections = SECTIONS_OF[name]
    return " and ".join(f"{s} section" for s in sections) if sections else "report"


def config_fingerprint(cfg: DeriveConfig, name: str) -> str:
    return fingerprint({s: cfg.section_fingerprint_input(s) for s in SECTIONS_OF[name]})


def step_inputs(cfg: DeriveConfig, step: Step) -> Inputs:
    """The step's inputs now (the upstream files must exist: their steps are done)."""
    return Inputs(config_fingerprint(cfg, step.name),
                  {str(p): file_digest(cfg.out / p) for p in UPSTREAM_OF[step.name]})


def check_all(cfg: DeriveConfig) -> None:
    """Refuse, before anything runs, any step folder started or done with another config section."""
    for step in STEPS:
        check_config(cfg.step_dir(step), config_fingerprint(cfg, step.name), _label(step.name))


def _run(cfg: DeriveConfig, step: Step, config_path: str) -> steps.Result:
    if step.name == "search":
        return steps.run_search(cfg)
    if step.name == "grid":
        return steps.run_grid(cfg)
    if step.name == "families":
        return steps.run_families(cfg)
    if step.name == "final":
        return steps.run_final(cfg)
    record = build_report(cfg.out, config_path)
    tau = record["kendall_tau"]["tau"]  # None: undefined (a constant ranking)
    return ({"family_beats_at_every_phi": record["family_beats_at_every_phi"], "kendall_tau": tau},
            f"{cfg.out / 'report.md'}: our family beats EfficientNet's at every φ: "
            f"{'yes' if record['family_beats_at_every_phi'] else 'no'}; Kendall τ proxy/test "
            f"{'—' if tau is None else f'{tau:.3f}'}")


def derive(cfg: DeriveConfig, config_path: str, stop_after: str | None = None,
           progress: Callable[[StepEvent], None] = lambda e: None) -> list[StepEvent]:
    """Run the steps not yet done, in order, up to ``stop_after`` (a step name) or the end.

    Raises:
        StepChanged: a step was started or done with other inputs (nothing of it is rerun).
        ToolFailed: a child command (nas-search, nas-grid-scale, nas-train) failed.
        ConfigError: an output a step needs is missing or does not fit.
        KeyboardInterrupt: interrupted; every finished run is kept and the next call resumes.
    """
    check_all(cfg)
    events: list[StepEvent] = []

    def tell(event: StepEvent) -> None:
        events.append(event)
        progress(event)

    for step in STEPS:
        inputs = step_inputs(cfg, step)
        record = done_record(cfg.step_dir(step), inputs, _label(step.name))
        if record is not None:
            summary = record.get("seconds")
            tell(StepEvent(step, "skipped", summary if isinstance(summary, (int, float)) else None))
        else:
            tell(StepEvent(step, "started"))
            begin(cfg.step_dir(step), inputs)
            t0 = time.perf_counter()
            summary_dict, headline = _run(cfg, step, config_path)
            seconds = time.perf_counter() - t0
            finish(cfg.step_dir(step), inputs, seconds, summary_dict)
            tell(StepEvent(step, "done", seconds, headline))
        if step.name == stop_after:
            break
    return events
