"""``scores.jsonl``, the proxy check's resumable score cache: the settings that fix every score on the first
line, then one JSON line per computed score; and the lock that keeps a second run off it."""
from __future__ import annotations

import dataclasses
import json
import math
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from nas.config import ConfigError
from nas.fidelity.config import ZC_BATCHES
from nas.proxy.data import DEFAULT_DIRS, DataConfig
from nas.proxy.train import TrainConfig
from search_spaces import ArchSpec

__all__ = ["TOOL", "CACHE_NAME", "CACHE_FORMAT", "Key", "cache_settings", "ScoreCache", "exclusive"]

TOOL = "nas-proxy-check"  # the first line's "tool": what wrote the file
CACHE_NAME = "scores.jsonl"
CACHE_FORMAT = 1
Key = tuple[str, str, int]  # (architecture string, method, seed)
Settings = dict[str, object]
# Trainer fields that say how a run executes, not what it computes: left out of the cache's settings.
_RUNTIME_FIELDS = ("epochs", "seed", "device", "threads", "amp", "channels_last", "compile", "reports_per_epoch",
                   "flush_denormal")
_FLAG_OF_SETTING = {"data.name": "--dataset", "data.data_dir": "--data-dir", "data.resolution": "--proxy-resolution",
                    "data.val_size": "--val-size", "data.train_size": "--train-size", "data.seed": "--seed",
                    "trainer.batch_size": "--batch-size", "trainer.lr": "--lr", "trainer.max_seconds": "--max-seconds"}


def cache_settings(data_cfg: DataConfig, train_cfg: TrainConfig, arch: ArchSpec) -> Settings:
    """What fixes every score: the data split, the trainer recipe, the zero-cost batch, the fixed arch fields."""
    settings: Settings = {"tool": TOOL, "format": CACHE_FORMAT}
    settings.update({f"data.{k}": v for k, v in dataclasses.asdict(data_cfg).items() if k != "workers"})
    settings["data.data_dir"] = data_cfg.data_dir or DEFAULT_DIRS.get(data_cfg.name)  # omitted = the default's path
    settings.update({f"trainer.{k}": v for k, v in dataclasses.asdict(train_cfg).items() if k not in _RUNTIME_FIELDS})
    settings["zero_cost.batches"] = ZC_BATCHES
    settings.update({f"arch.{k}": v for k, v in arch.to_dict().items() if k not in ("name", "stages")})
    read_back: Settings = json.loads(json.dumps(settings))  # as it reads back from the file
    return read_back


class ScoreCache:
    """``scores.jsonl``: the settings on the first line, then one JSON line per computed score.

    A score line: ``{"arch", "method", "seed", "score", "seconds"}`` plus ``"error"`` when the run
    failed (score null). Keys are ``(arch string, method, seed)``.
    """

    def __init__(self, path: Path, settings: Settings, records: dict[Key, dict[str, object]],
                 torn_tail: bool) -> None:
        self.path, self.settings, self.records, self._torn_tail = path, settings, records, torn_tail

    @classmethod
    def open(cls, path: Path, settings: Settings) -> ScoreCache:
        """Read ``path`` if it exists (writing nothing).

        Raises:
            ConfigError: the file is not a score cache, or was written with other settings.
        """
        text = path.read_text() if path.exists() else ""
        if not text:
            return cls(path, settings, {}, False)
        lines = text.split("\n")
        torn_tail = not text.endswith("\n")  # an interrupted write: that last line is dropped
        lines = lines[:-1]
        try:
            header = json.loads(lines[0]) if lines else None
        except json.JSONDecodeError:
            header = None
        if not isinstance(header, dict) or header.get("tool") != TOOL:
            raise ConfigError(f"{path} is not a {TOOL} score cache; use another --out")
        _check_settings(path, header, settings)
        records = {}
        for number, line in enumerate(lines[1:], 2):
            try:
                record = json.loads(line)
                records[_key(record)] = record
            except (json.JSONDecodeError, KeyError, TypeError):
                raise ConfigError(f"{path} line {number} is not a score record; use another --out") from None
        return cls(path, settings, records, torn_tail)

    def __contains__(self, key: Key) -> bool:
        return key in self.records

    def score(self, key: Key) -> float:
        """The stored score, NaN when missing or failed."""
        value = self.records.get(key, {}).get("score")
        return float(value) if isinstance(value, (int, float)) else math.nan

    def seconds(self, key: Key) -> float:
        """How long the stored score took to compute."""
        value = self.records[key]["seconds"]
        return float(value) if isinstance(value, (int, float)) else math.nan

    def add(self, record: dict[str, object]) -> None:
        """Append one record (the settings line first in a new file) and flush it to disk."""
        if self._torn_tail:
            text = self.path.read_text()
            self.path.write_text(text[:text.rfind("\n") + 1])
            self._torn_tail = False
        new = not self.path.exists() or self.path.stat().st_size == 0
        with self.path.open("a") as f:
            if new:
                f.write(json.dumps(self.settings) + "\n")
            f.write(json.dumps(record) + "\n")
        self.records[_key(record)] = record


def _key(record: dict[str, object]) -> Key:
    arch, method, seed = record["arch"], record["method"], record["seed"]
    if not (isinstance(arch, str) and isinstance(method, str) and isinstance(seed, int)):
        raise TypeError(f"not a score record: {record!r}")
    return arch, method, seed


@contextmanager
def exclusive(path: Path) -> Iterator[None]:
    """Hold an exclusive lock on ``path`` (created empty if missing, else unchanged) for the block.

    Raises:
        ConfigError: another run holds it (two runs on one ``--out`` would compute everything twice).
    """
    import fcntl

    with path.open("a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise ConfigError(f"{path} is in use by another {TOOL} run; wait for it to finish or use another "
                              f"--out") from None
        yield  # closing the file releases the lock


def _check_settings(path: Path, stored: Settings, current: Settings) -> None:
    for key in sorted(set(stored) | set(current)):
        if stored.get(key) != current.get(key):
            what = _FLAG_OF_SETTING.get(key, f"setting {key}")
            raise ConfigError(f"{path} holds scores computed with {what} {stored.get(key)!r}, but this run has "
                              f"{current.get(key)!r}; run with the same settings to continue it, or use another --out")
