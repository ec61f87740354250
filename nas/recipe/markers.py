"""Each step's markers: what it was started with (``step.json``) and that it finished (``done.json``).

A step's inputs are its config section (``config``) and the digests of the upstream files it read
(``upstream``). A step is done when ``done.json`` holds the same fingerprints; a step started or done
with other inputs is refused (``StepChanged``), never mixed in. Files are replaced atomically.
"""
from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

from nas.config import ConfigError

__all__ = ["StepChanged", "Inputs", "fingerprint", "file_digest", "write_json", "read_json", "check_config",
           "begin", "finish", "done_record"]

STARTED, DONE = "step.json", "done.json"


class StepChanged(ConfigError):
    """A step was started or done with other inputs: one line naming the step, what changed and the way out."""


def fingerprint(value: object) -> str:
    """A short digest of plain data (dict order does not matter)."""
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()[:16]


def file_digest(path: Path) -> str:
    """The digest of a file's bytes.

    Raises:
        ConfigError: the file is missing (an upstream step did not write it).
    """
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()[:16]
    except FileNotFoundError:
        raise ConfigError(f"{path} is missing: the step that writes it did not finish") from None


def write_json(path: Path, value: object) -> None:
    """``value`` as JSON in ``path``, written to a temporary file and renamed over it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(value, indent=1, sort_keys=False, default=str) + "\n")
    os.replace(tmp, path)


def read_json(path: Path) -> dict[str, object] | None:
    """The JSON object in ``path``; None when there is none."""
    try:
        value = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except json.JSONDecodeError:
        raise ConfigError(f"{path} is not valid JSON: remove its step folder to redo the step") from None
    return value if isinstance(value, dict) else None


@dataclass(frozen=True)
class Inputs:
    """A step's inputs: the fingerprint of its config section and the digests of the upstream files it read."""

    config: str
    upstream: Mapping[str, str]


def _refuse(step_dir: Path, what: str) -> StepChanged:
    return StepChanged(f"step {step_dir.name} was run with other inputs ({what} changed since): remove "
                       f"{step_dir} to redo it with the new ones, or restore the old ones to resume")


def check_config(step_dir: Path, config: str, section: str) -> None:
    """Refuse a step started or done with another config section (checked for every step before any runs)."""
    for name in (DONE, STARTED):
        record = read_json(step_dir / name)
        if record is not None and record.get("config") != config:
            raise _refuse(step_dir, f"the {section} of the config")


def _changed_upstream(record: Mapping[str, object], inputs: Inputs) -> list[str]:
    before = record.get("upstream")
    if not isinstance(before, dict):
        return sorted(inputs.upstream)
    keys = set(before) | set(inputs.upstream)
    return sorted(k for k in keys if before.get(k) != inputs.upstream.get(k))


def done_record(step_dir: Path, inputs: Inputs, section: str) -> dict[str, object] | None:
    """``done.json`` when the step finished with these inputs; None when it has not finished.

    Raises:
        StepChanged: it was started or finished with another config section or other upstream files.
    """
    check_config(step_dir, inputs.config, section)
    for name in (DONE, STARTED):
        record = read_json(step_dir / name)
        if record is not None:
            changed = _changed_upstream(record, inputs)
            if changed:
                raise _refuse(step_dir, ", ".join(changed))
    return read_json(step_dir / DONE)


def begin(step_dir: Path, inputs: Inputs) -> dict[str, object]:
    """Record the start of an attempt at the step; returns the record (``attempts`` counts them)."""
    before = read_json(step_dir / STARTED) or {}
    attempts = before.get("attempts", 0)
    record: dict[str, object] = {"config": inputs.config, "upstream": dict(inputs.upstream),
                                 "attempts": (attempts if isinstance(attempts, int) else 0) + 1,
                                 "started_at": time.strftime("%Y-%m-%dT%H:%M:%S")}
    write_json(step_dir / STARTED, record)
    return record


def finish(step_dir: Path, inputs: Inputs, seconds: float, summary: Mapping[str, object]) -> dict[str, object]:
    """Write ``done.json``: the inputs, this attempt's wall time and the step's summary."""
    started = read_json(step_dir / STARTED) or {}
    record: dict[str, object] = {"config": inputs.config, "upstream": dict(inputs.upstream),
                                 "attempts": started.get("attempts", 1), "started_at": started.get("started_at"),
                                 "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S"), "seconds": round(seconds, 3),
                                 "summary": dict(summary)}
    write_json(step_dir / DONE, record)
    return record
