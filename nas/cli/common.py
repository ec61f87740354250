"""What the command-line modules share: the parser class, the flags of several commands, exit codes.

Command-line modules of every package may import this module (docs/architecture.md); library
modules never do. It imports nothing heavy at import time, so ``nas-cost`` and ``nas-export`` pay
nothing for it.
"""
from __future__ import annotations

import argparse
import logging
import shlex
import signal
import sys
from typing import Callable, Sequence, TypeVar

__all__ = ["EXIT_OK", "EXIT_USAGE", "EXIT_STORAGE", "EXIT_INTERRUPTED", "Parser", "command_parser",
           "add_proxy_arguments", "proxy_flags", "add_study_arguments", "glue_negative_values", "error_exit",
           "resume_command", "study_main", "interrupted_exit"]

C = TypeVar("C")

EXIT_OK = 0
EXIT_USAGE = 2  # bad input: one line on stderr naming the value and what was expected
EXIT_STORAGE = 3  # the storage stayed unreachable
EXIT_INTERRUPTED = 130  # Ctrl-C or SIGTERM: the study (or cache) is kept


class Parser(argparse.ArgumentParser):
    """An argument parser whose errors are one line (``PROG: error: ...``) and exit code 2."""

    def error(self, message: str) -> None:  # type: ignore[override]  # argparse's returns NoReturn
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}\n")


def command_parser(prog: str, description: str | None) -> Parser:
    """The parser of a command: its docstring as the description, kept as written; no defaults filled in."""
    return Parser(prog=prog, description=description, formatter_class=argparse.RawDescriptionHelpFormatter,
                  argument_default=None)


def proxy_flags() -> dict[str, str]:
    """``{flag: field}`` of the proxy-task flags, generated from ``nas.proxy.ProxyTaskConfig``."""
    from nas.proxy.config import flag_name, proxy_fields

    return {f"--{flag_name(f.name)}": f.name for f in proxy_fields() if f.metadata["flag"]}


def add_proxy_arguments(group: argparse._ActionsContainer, hidden: Sequence[str] = (),
                        only: Sequence[str] | None = None) -> None:
    """The proxy-task flags, one per ``ProxyTaskConfig`` field, with the help and type of its metadata.

    ``hidden``: fields whose flag is accepted but left out of ``--help`` (the command refuses or ignores it).
    ``only``: just these fields' flags (nas-train's data and device flags), in the config's order; None: all.
    """
    from nas.proxy.config import field_help, proxy_fields

    flags = {v: k for k, v in proxy_flags().items()}
    for f in proxy_fields():
        if f.name in flags and (only is None or f.name in only):
            group.add_argument(flags[f.name], type=f.metadata["type"],
                               help=argparse.SUPPRESS if f.name in hidden else field_help(f))


def add_study_arguments(group: argparse._ActionsContainer, prog: str) -> None:
    """``--storage``, ``--study-name`` and ``--out``: the same meaning in nas-search and nas-grid-scale."""
    from nas.cluster.storage import storage_help  # the storage registry's schemes

    group.add_argument("--storage", help=storage_help())
    group.add_argument("--study-name", help=f"[{prog}]")
    group.add_argument("--out", help=f"output directory [runs/{prog}]")


def glue_negative_values(parser: argparse.ArgumentParser, argv: Sequence[str]) -> list[str]:
    """``--target-flops -400M`` -> ``--target-flops=-400M``, so the bad value reaches validation."""
    takes_value = {s for a in parser._actions if a.nargs is None and a.option_strings for s in a.option_strings}
    out: list[str] = []
    i = 0
    while i < len(argv):
        if argv[i] in takes_value and i + 1 < len(argv) and argv[i + 1].startswith("-") \
                and argv[i + 1] not in parser._option_string_actions:
            out.append(f"{argv[i]}={argv[i + 1]}")
            i += 2
        else:
            out.append(argv[i])
            i += 1
    return out


def error_exit(prog: str, exc: BaseException, code: int = EXIT_USAGE) -> int:
    """Print ``PROG: error: MESSAGE`` (one line) on stderr; returns ``code`` for ``main`` to exit with."""
    print(f"{prog}: error: {exc}", file=sys.stderr)
    return code


def resume_command(prog: str, argv: Sequence[str] | None = None) -> str:
    """The command line that resumes this run (``argv``: this process's arguments), any password masked."""
    from nas.config import mask_url

    args = sys.argv[1:] if argv is None else argv
    return " ".join(shlex.quote(mask_url(a)) for a in [prog, *args])


def study_main(prog: str, module: str, argv: Sequence[str] | None, *, parse: Callable[[list[str]], C],
               run: Callable[[C], int], errors: tuple[type[BaseException], ...], optuna_level: int,
               relaunch: Callable[[C], bool]) -> int:
    """The ``main`` of a command that runs a study (nas-search, nas-grid-scale).

    Parses ``argv`` (``--nproc-per-node`` taken out) and relaunches ``module`` under torchrun when
    more than one process is asked for and ``relaunch(cfg)`` allows it. ``errors``: the command's
    own bad-input errors (``ConfigError``, ``SpecError`` and ``DataError`` always count), exit code 2
    with one line; an unreachable storage exits 3. ``optuna_level``: a ``logging`` level for
    Optuna's own log. SIGTERM ends the run like Ctrl-C.
    """
    from nas.cluster.storage import StorageUnavailable
    from nas.cluster.torchrun import relaunch_under_torchrun, split_nproc, under_torchrun
    from nas.config import ConfigError
    from nas.proxy.data import DataError
    from search_spaces import SpecError

    bad_input: tuple[type[BaseException], ...] = (ConfigError, SpecError, DataError, *errors)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        import optuna

        optuna.logging.set_verbosity(optuna_level)
        try:
            nproc, rest = split_nproc(sys.argv[1:] if argv is None else list(argv))
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
        cfg = parse(rest)
        if getattr(cfg, "quiet", False):
            logging.getLogger().setLevel(logging.WARNING)
        if nproc > 1 and not under_torchrun() and relaunch(cfg):
            _check_database(cfg)  # one line here, not a traceback from every process torchrun starts
            return relaunch_under_torchrun(module, nproc, rest)
        signal.signal(signal.SIGTERM, signal.default_int_handler)  # preemption ends like Ctrl-C
        return run(cfg)
    except StorageUnavailable as exc:
        return error_exit(prog, exc, EXIT_STORAGE)
    except bad_input as exc:
        return error_exit(prog, exc)


def _check_database(cfg: object) -> None:
    """Open (and close) a database storage once: an unreachable one raises ``ConfigError`` (password masked)."""
    from pathlib import Path

    from nas.cluster.storage import is_journal, open_storage

    storage = getattr(cfg, "storage", None)
    if storage is not None and not is_journal(storage):
        opened = open_storage(storage, Path(getattr(cfg, "out", ".")))
        engine = getattr(getattr(opened, "rdb", None), "engine", None)
        if engine is not None:
            engine.dispose()


def interrupted_exit(prog: str) -> int:
    """Say how to resume an interrupted run (the study is kept); returns 130."""
    print(f"{prog}: interrupted; the study is kept. Resume with: {resume_command(prog)}", file=sys.stderr)
    return EXIT_INTERRUPTED
