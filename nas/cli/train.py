"""``nas-train ARCH``: final training of one architecture, scored once on the dataset's official test split.

ARCH is a preset name (efficientnet-b0 ...), an architecture YAML file (a nas-grid-scale family member
such as variants/b2.yaml), or a nas-search output directory (its best.yaml). It trains on the whole
training split (--val-size keeps a held-out part, scored every epoch) with the paper's recipe
(--recipe rmsprop: RMSProp, warm-up then exponential decay, weight decay 1e-5, label smoothing 0.1,
an average of the weights, the architecture's dropout and stochastic depth) or SGD-Nesterov + cosine
(--recipe sgd), then scores the averaged weights once on the test split.

DIR gets model.safetensors, arch.yaml, metrics.json, curves.png, model-card.md, manifest.json and
checkpoint.pt (after every epoch). The same command run again resumes an interrupted run from its
last checkpoint, or prints a finished run's result without training; other settings on the same
DIR are refused. Exit codes: 0 done, 2 bad input, 3 the output folder cannot be written,
130 interrupted (the checkpoint is kept). See docs/train.md.
"""
from __future__ import annotations

import argparse
import logging
import signal
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Sequence

from nas.cli.common import (
    EXIT_INTERRUPTED,
    EXIT_STORAGE,
    add_proxy_arguments,
    command_parser,
    error_exit,
    glue_negative_values,
    resume_command,
)
from nas.config import ConfigError, config_fields, make_config, read_config_file

if TYPE_CHECKING:
    from nas.final import FinalConfig

__all__ = ["PROG", "build_parser", "parse_args", "main"]

PROG = "nas-train"
log = logging.getLogger(PROG)


def build_parser() -> argparse.ArgumentParser:
    p = command_parser(PROG, __doc__)
    a = p.add_argument
    a("arch", metavar="ARCH", help="preset name, architecture YAML file, or nas-search output directory")
    a("--config", help="YAML file of options (keys = flag names); flags override it")
    a("--out", metavar="DIR", help="output folder (new, or the folder of the run to resume)")
    g = p.add_argument_group("data")
    add_proxy_arguments(g, only=("dataset",))  # the dataset registry's names, as every command shows them
    g.add_argument("--data-dir", help="dataset directory (fashion-mnist: /usr/share/datasets/fashion-mnist; "
                                      "imagefolder: the folder with train/ and val/)")
    g.add_argument("--resolution", type=int, help="training resolution [the architecture's, scaled by 32/224 "
                                                  "to a multiple of 4 for small-image datasets]")
    g.add_argument("--val-size", type=float, help="held-out part of the training split: fraction or count [0]")
    add_proxy_arguments(g, only=("train_size",))
    g = p.add_argument_group("recipe")
    g.add_argument("--recipe", help="rmsprop (the paper's) or sgd (SGD-Nesterov + cosine) [rmsprop]")
    g.add_argument("--epochs", type=float, help="training epochs [10]")
    g.add_argument("--batch-size", type=int, help="batch size per process [128]")
    g.add_argument("--lr", type=float, help="peak learning rate [rmsprop 0.016, sgd 0.1, per 256 images]")
    g.add_argument("--warmup-epochs", type=float, help="linear warm-up [min(5, epochs / 10)]")
    g.add_argument("--seed", type=int, help="[0]")
    g = p.add_argument_group("where it runs", "not among the run's settings: a run may resume on another device")
    add_proxy_arguments(g, only=("device", "threads"))  # the proxy task's definitions
    g.add_argument("--quiet", action="store_true", default=None, help="no progress bar")
    return p


def parse_args(argv: Sequence[str]) -> tuple[str, Path, FinalConfig, bool]:
    """``(ARCH, DIR, config, quiet)`` from the flags over ``--config``'s YAML.

    Raises:
        ConfigError: a bad value, named with what was expected.
    """
    from nas.final import FinalConfig

    parser = build_parser()
    args = vars(parser.parse_args(glue_negative_values(parser, argv)))
    fields = config_fields(FinalConfig)
    file_values = read_config_file(args["config"], fields | {"out", "quiet"}) if args["config"] else {}
    out = args["out"] if args["out"] is not None else file_values.pop("out", None)
    file_values.pop("out", None)
    quiet = bool(args["quiet"] if args["quiet"] is not None else file_values.pop("quiet", False))
    file_values.pop("quiet", None)
    if not isinstance(out, str) or not out:
        raise ConfigError(f"--out must be a folder to write the trained model in, but got {out!r}")
    cfg = make_config(FinalConfig, file_values, {k: v for k, v in args.items() if k in fields})
    return args["arch"], Path(out), cfg, quiet


def _progress_printer() -> Callable[[str], None]:
    """Progress to stderr: the bar redrawn in place on a terminal; elsewhere (a log) only the epoch lines."""
    tty = sys.stderr.isatty()

    def emit(line: str) -> None:
        if line.startswith("\r"):
            if tty:
                sys.stderr.write(f"\r{line[1:]}\x1b[K")
                sys.stderr.flush()
            return
        sys.stderr.write(("\r\x1b[K" if tty else "") + f"{PROG}: {line}\n")
        sys.stderr.flush()

    return emit


def _run(arch_ref: str, out: Path, cfg: FinalConfig, quiet: bool) -> int:
    from nas.final import load_arch_ref, result_line, train_final

    arch = load_arch_ref(arch_ref)
    try:
        metrics = train_final(arch, cfg, out, progress=None if quiet else _progress_printer())
    except KeyboardInterrupt:
        print(f"\n{PROG}: interrupted; the last checkpoint is kept. Resume with: {resume_command(PROG)}",
              file=sys.stderr)
        return EXIT_INTERRUPTED
    print(result_line(metrics))
    print(f"outputs in {out}/")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """The command: 0 done, 2 bad input (one line), 3 the output folder cannot be written, 130 interrupted."""
    from nas.proxy.data import DataError
    from nas.proxy.train import TrainingDiverged
    from search_spaces import SpecError

    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    argv = sys.argv[1:] if argv is None else list(argv)
    try:
        arch_ref, out, cfg, quiet = parse_args(argv)
        signal.signal(signal.SIGTERM, signal.default_int_handler)  # preemption ends like Ctrl-C
        return _run(arch_ref, out, cfg, quiet)
    except (ConfigError, SpecError, DataError) as exc:
        return error_exit(PROG, exc)
    except TrainingDiverged as exc:
        return error_exit(PROG, TrainingDiverged(f"{exc}; the last checkpoint is kept (try a lower --lr)"))
    except OSError as exc:
        return error_exit(PROG, OSError(f"cannot write the outputs: {exc}"), EXIT_STORAGE)


if __name__ == "__main__":
    from nas.cli.entry import prepare_process

    prepare_process()
    sys.exit(main())
