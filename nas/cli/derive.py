"""``nas-derive``: the whole EfficientNet recipe as one resumable pipeline.

  1-search    nas-search → our B0 (best.yaml)
  2-grid      nas-grid-scale on our B0 at φ = 1 (all candidates briefly), then the best third longer with
              several seeds, and the depth-, width- and resolution-only baselines → α, β, γ
  3-families  ours B0..BK (compound) and EfficientNet-B0..BK (official), scored on the brief proxy
  4-final     nas-train of every member, one recipe
  5-report    report.md + report.png in --out

Run it again to resume at the first unfinished step; a step whose inputs changed is refused (exit 2).
"""
from __future__ import annotations

import logging
import signal
import sys
import time
from typing import TYPE_CHECKING, Callable, Sequence

from nas.cli.common import EXIT_INTERRUPTED, EXIT_OK, EXIT_USAGE, Parser, command_parser, error_exit, resume_command

if TYPE_CHECKING:
    from nas.recipe.pipeline import StepEvent

PROG = "nas-derive"
STEP_NAMES = ("search", "grid", "families", "final", "report")


def build_parser() -> Parser:
    p = command_parser(PROG, __doc__)
    p.add_argument("--config", help="the derivation's YAML file (sections search, grid, refine, families, final)")
    p.add_argument("--out", help="output folder [the config's out]")
    p.add_argument("--storage", help="Optuna storage the search and grid steps share with other workers "
                                     "(journal:PATH, sqlite:///..., postgresql://...) [a journal file per step]")
    p.add_argument("--stop-after", choices=STEP_NAMES, help="stop once this step is done")
    p.add_argument("--dry-run", action="store_true", help="check the config, print the plan and exit")
    p.add_argument("--quiet", action="store_true", help="no progress lines")
    return p


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    m, s = divmod(round(seconds), 60)
    h, m = divmod(m, 60)
    return f"{h} h {m:02d} min" if h else f"{m} min {s:02d} s" if m else f"{s} s"


def _printer(quiet: bool) -> Callable[[StepEvent], None]:
    def show(e: StepEvent) -> None:
        if quiet:
            return
        head = f"{PROG}: [{e.step.number}/5] {e.step.name}"
        if e.kind == "started":
            print(f"{head} started at {time.strftime('%H:%M:%S')}", flush=True)
        elif e.kind == "done":
            print(f"{head} done in {_duration(e.seconds)}: {e.headline}", flush=True)
        else:
            print(f"{head} already done ({_duration(e.seconds)}); skipped", flush=True)
    return show


def main(argv: Sequence[str] | None = None) -> int:
    from nas.config import ConfigError

    parser = build_parser()
    args = parser.parse_args(sys.argv[1:] if argv is None else list(argv))
    if not args.config:
        return error_exit(PROG, ConfigError("--config is required (e.g. experiments/derive_digits.yaml)"))
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    import optuna

    from nas.recipe import ToolFailed, derive, load_config, plan_text  # before the try that catches ToolFailed

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    try:
        cfg = load_config(args.config, args.out, args.storage)
        if args.dry_run:
            print(plan_text(cfg))
            return EXIT_OK
        signal.signal(signal.SIGTERM, signal.default_int_handler)  # preemption ends like Ctrl-C
        derive(cfg, args.config, args.stop_after, progress=_printer(args.quiet))
        if not args.quiet:
            print(f"{PROG}: outputs in {cfg.out}/" + ("" if args.stop_after not in STEP_NAMES[:-1]
                                                     else f" (stopped after {args.stop_after})"))
        return EXIT_OK
    except ToolFailed as exc:
        return error_exit(PROG, exc, exc.code if exc.code in (2, 3, EXIT_INTERRUPTED) else 1)
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted; finished work is kept. Resume with: {resume_command(PROG, argv)}",
              file=sys.stderr)
        return EXIT_INTERRUPTED
    except ValueError as exc:  # ConfigError, StepChanged, SpecError, ScalingError, DataError: bad input, one line
        return error_exit(PROG, exc, EXIT_USAGE)


if __name__ == "__main__":
    sys.exit(main())
