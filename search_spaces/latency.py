"""Latency as the cost, as MnasNet measured it on phones: measured, or estimated from a lookup table.

* ``parse_latency("15ms")`` reads a duration (seconds).
* ``measure_latency(model, 224)`` times a built network: the median of ``repeats`` forward passes.
* ``LatencyTable`` estimates a candidate's latency without building it: the sum of per-layer
  entries (stem, each block, head) measured once on this machine and cached in a JSON file, plus
  a constant per-network overhead where one was fitted on a few whole networks (``calibrate``).

A layer timed alone, back to back, runs faster than inside its network: its code and data stay
in the caches. The table therefore times a network's parts in turn (``time_in_turn``): one pass
of each part per round, in network order, so each runs after the others as it does in the
network. On a quiet 2-core EPYC (one thread, 64 and 224 px) the parts' summed medians came to
0.98x to 1.02x of the whole network's for most networks, where solo timings gave 0.6x to 1.0x.

Timings depend on the machine, its load and ``torch.get_num_threads()``; set the threads before
making a table (the table records them, and a file made under other conditions is not reused).
"""
from __future__ import annotations

import json
import math
import os
import platform
import re
import statistics
import tempfile
import time
import warnings
from functools import partial
from pathlib import Path
from typing import Callable, Iterable, NamedTuple, cast

import torch
from torch import nn

from search_spaces import ArchSpec, build_model, get_preset, resolve
from search_spaces.blocks import OP_BUILDERS, Block, ConvBNAct, make_shortcut

FORMAT = 1
CALIBRATION_PRESETS = ("efficientnet-b0", "mnasnet-a1", "mobilenetv2")
_UNITS = {"s": 1.0, "ms": 1e-3, "us": 1e-6, "\u00b5s": 1e-6, "\u03bcs": 1e-6}  # micro sign and Greek mu
_DURATION = re.compile(r"(\d+\.?\d*(?:e[-+]?\d+)?|\.\d+(?:e[-+]?\d+)?)\s*(s|ms|us|\u00b5s|\u03bcs)?", re.IGNORECASE)


def parse_latency(text: str | float, *, name: str = "--target-latency") -> float:
    """Read a duration: ``"15ms"``, ``"15 ms"``, ``"1500us"``, ``"1500µs"``, ``"0.015s"``; a bare number is seconds.

    Args:
        text: the duration, a string or a number of seconds.
        name: what the value is, for the error message.

    Returns:
        The duration in seconds, > 0.

    Raises:
        ValueError: not a positive finite duration; the one-line message names the value.
    """
    seconds = None
    if isinstance(text, (int, float)) and not isinstance(text, bool):
        seconds = float(text)
    elif isinstance(text, str) and (m := _DURATION.fullmatch(text.strip())):
        seconds = float(m.group(1)) * _UNITS[(m.group(2) or "s").lower()]
    if seconds is None or not math.isfinite(seconds) or seconds <= 0:
        raise ValueError(f"{name} must be a positive duration like 15ms, 1500us or 0.015s, but got {text!r}")
    return seconds


def measure_latency(model: nn.Module, resolution: int, *, batch: int = 1, in_chans: int = 3,
                    device: str | torch.device = "cpu", warmup: int = 5, repeats: int = 20) -> float:
    """Median wall seconds of one forward pass of ``model`` on a random input, after warm-up.

    The model runs in eval mode under ``torch.inference_mode()`` (its training flag is restored
    after); on CUDA each pass is timed between synchronizations. The model is moved to ``device``.

    Args:
        model: the module to time; its input is ``(batch, in_chans, resolution, resolution)``.
        resolution: input height and width in pixels.
        batch: batch size.
        in_chans: input channels.
        device: where to run.
        warmup: untimed passes first.
        repeats: timed passes; the median is returned.

    Returns:
        Seconds per forward pass.

    Raises:
        ValueError: ``repeats`` below 1 or ``warmup`` below 0.
    """
    was_training = model.training
    x = torch.randn(batch, in_chans, resolution, resolution)
    try:
        return statistics.median(time_in_turn([model], [x], device=device, warmup=warmup, repeats=repeats)[0])
    finally:
        model.train(was_training)


def time_in_turn(models: list[nn.Module], inputs: list[torch.Tensor], *, device: str | torch.device = "cpu",
                 warmup: int = 5, repeats: int = 20) -> list[list[float]]:
    """Time each model on its input, the models taking turns: one pass of each per round.

    Timed in turn, each part of a network runs after the others, as it does in the network,
    with the caches and branch predictors the other parts leave (see the module docstring).

    Args:
        models: modules, put in eval mode and moved to ``device``.
        inputs: one input per model.
        device: where to run; on CUDA each pass is timed between synchronizations.
        warmup: untimed rounds first.
        repeats: timed rounds.

    Returns:
        Per model, its ``repeats`` pass times in seconds.

    Raises:
        ValueError: ``repeats`` below 1 or ``warmup`` below 0.
    """
    if repeats < 1 or warmup < 0:
        raise ValueError(f"repeats must be >= 1 and warmup >= 0, but got ({repeats=}, {warmup=})")
    device = torch.device(device)
    sync = partial(torch.cuda.synchronize, device) if device.type == "cuda" else lambda: None
    models = [m.eval().to(device) for m in models]
    inputs = [x.to(device) for x in inputs]
    times: list[list[float]] = [[] for _ in models]
    with torch.inference_mode():
        for _ in range(warmup + repeats):
            for model, x, out in zip(models, inputs, times):
                sync()
                start = time.perf_counter()
                model(x)
                sync()
                out.append(time.perf_counter() - start)
    return [t[warmup:] for t in times]


class Part(NamedTuple):
    """One entry of a network in the table: the stem, one block or the head.

    Attributes:
        label: the module's name in ``build_model``'s network (``stem``, ``blocks.3``, ``head``;
            the head entry also covers the pool and the classifier).
        key: the table key, ``name=value`` fields for everything that sets the part's runtime.
        in_channels: input channels.
        size: input height and width.
        build: makes the part as ``build_model`` does.
    """

    label: str
    key: str
    in_channels: int
    size: int
    build: Callable[[], nn.Module]


def _key(**fields: object) -> str:
    return " ".join(f"{k}={v}" for k, v in fields.items())


def _out(size: int, stride: int) -> int:
    return -(-size // stride)  # 'same' padding: ceil(size / stride)


def _block(layer, bn: Callable[[int], nn.Module]) -> Block:
    main = OP_BUILDERS[layer.op](layer.in_channels, layer.out_channels, layer.kernel, layer.stride,
                                 layer.expansion, layer.se_reduced, layer.act, bn)
    shortcut = make_shortcut(layer.shortcut, layer.in_channels, layer.out_channels, layer.stride, bn)
    return Block(main, shortcut, layer.drop_path)


def _head(in_ch: int, head_ch: int, num_classes: int, act: str, bn: Callable[[int], nn.Module]) -> nn.Module:
    conv = ConvBNAct(in_ch, head_ch, 1, act=act, bn=bn) if head_ch else nn.Identity()
    return nn.Sequential(conv, nn.AdaptiveAvgPool2d(1), nn.Flatten(1), nn.Linear(head_ch or in_ch, num_classes))


def network_parts(arch: ArchSpec, resolution: int, *, batch: int = 1, num_classes: int = 1000,
                  in_chans: int = 3) -> list[Part]:
    """The stem, blocks and head of ``build_model(arch, num_classes, in_chans)`` at ``resolution``, as table parts.

    Nothing is built: ``Part.build`` makes one part on demand.
    """
    r = resolve(arch)
    bn = partial(nn.BatchNorm2d, momentum=arch.bn_momentum, eps=arch.bn_eps)
    parts = [Part("stem", _key(op="stem", k=3, s=2, cin=in_chans, cout=r.stem_channels, act=arch.act,
                               hw=resolution, b=batch),
                  in_chans, resolution, partial(ConvBNAct, in_chans, r.stem_channels, 3, 2, act=arch.act, bn=bn))]
    size = _out(resolution, 2)
    for i, l in enumerate(r.layers):
        key = _key(op=l.op, k=l.kernel, s=l.stride, cin=l.in_channels, cout=l.out_channels, e=l.expansion,
                   se=l.se_reduced, skip=l.shortcut or "none", act=l.act, hw=size, b=batch)
        parts.append(Part(f"blocks.{i}", key, l.in_channels, size, partial(_block, l, bn)))
        size = _out(size, l.stride)
    last = r.layers[-1].out_channels
    parts.append(Part("head", _key(op="head", cin=last, cout=r.head_channels, classes=num_classes, act=arch.act,
                                   hw=size, b=batch),
                      last, size, partial(_head, last, r.head_channels, num_classes, arch.act, bn)))
    return parts


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def measurement_conditions(device: str | torch.device = "cpu", batch: int = 1) -> dict[str, object]:
    """What a table's timings are valid for: torch, the device, the thread count, batch and dtype."""
    device = torch.device(device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"{_cpu_model()} x{os.cpu_count()}"
    return {"torch": torch.__version__, "device": f"{device.type}: {name}", "threads": torch.get_num_threads(),
            "batch": batch, "dtype": "float32"}


def _differences(ours: dict, theirs: dict) -> str:
    return ", ".join(f"{k} {theirs.get(k)!r} not {v!r}" for k, v in ours.items() if theirs.get(k) != v)


class LatencyTable:
    """Per-layer latency lookup table: estimates a network's latency without building it.

    Entries are keyed by everything that sets a part's runtime at its input size (see
    ``network_parts``): op, kernel, stride, in/out channels, expansion, SE channels, shortcut,
    activation, input height = width and batch; the stem and the head (1x1 conv, pool,
    classifier) are entries too. Missing entries are measured on demand and saved to ``path``:
    each part of the network is built on its own as ``build_model`` builds it, the parts are
    timed in turn (``time_in_turn``), and the median of each missing entry's passes is kept.

    The file holds one table per set of measurement conditions (``measurement_conditions``);
    a table made under other conditions is never reused (a warning says so).

    Summed entries may miss what a whole network costs beyond its parts (the network's own
    forward, what timing in turn does not reproduce); ``calibrate`` fits that as a constant
    ``overhead``: the median, over a few whole networks, of the network's seconds minus its
    parts', timed together. It is saved with the table; until it is fitted the overhead is 0.
    It is not fitted by default: timed in turn, the parts already sum to the whole network on a
    quiet machine, and on a busy one a whole network's median takes in the waits for the CPU
    that its short parts' medians leave out, so the fit measures the load of the moment it was
    made (on this project's busy 2-core machine it made estimates worse, not better).

    Attributes:
        entries: key -> seconds.
        measurements: how many timings this object has taken (entries and whole networks).
    """

    def __init__(self, path: str | os.PathLike | None = None, *, resolution: int = 224, batch: int = 1,
                 device: str | torch.device = "cpu", num_classes: int = 1000, in_chans: int = 3,
                 warmup: int = 5, repeats: int = 20) -> None:
        """Open (or start) the table.

        Args:
            path: the JSON cache file; None keeps the table in memory only.
            resolution: input size in pixels at which latencies are estimated.
            batch: batch size.
            device: where parts are timed.
            num_classes: classifier outputs.
            in_chans: input channels.
            warmup: untimed passes before each timing.
            repeats: timed passes per timing; the median is kept.
        """
        self.path = Path(path) if path is not None else None
        self.resolution, self.batch, self.device = resolution, batch, torch.device(device)
        self.num_classes, self.in_chans = num_classes, in_chans
        self.warmup, self.repeats = warmup, repeats
        self.conditions = measurement_conditions(self.device, batch)
        self.measurements = 0
        stored = self._read().get(self._fingerprint(), {})
        self.entries: dict[str, float] = dict(stored.get("entries", {}))
        self._overheads: dict[str, float] = dict(stored.get("overhead", {}))

    # -- estimates ------------------------------------------------------------------------------
    def parts(self, arch: ArchSpec) -> list[Part]:
        """``network_parts`` at this table's resolution, batch, classes and input channels."""
        return network_parts(arch, self.resolution, batch=self.batch, num_classes=self.num_classes,
                             in_chans=self.in_chans)

    def breakdown(self, arch: ArchSpec) -> list[tuple[str, float]]:
        """Seconds per part (``stem``, ``blocks.<i>``, ``head``) and the per-network ``overhead``, in order."""
        parts = self.parts(arch)
        self._fill(parts)
        return [(p.label, self.entries[p.key]) for p in parts] + [("overhead", self.overhead)]

    def estimate(self, arch: ArchSpec) -> float:
        """Estimated seconds per forward pass of ``build_model(arch)``: the sum of ``breakdown``."""
        return sum(seconds for _, seconds in self.breakdown(arch))

    @property
    def overhead(self) -> float:
        """Per-network seconds beyond the summed parts at this resolution (0 until ``calibrate``)."""
        return self._overheads.get(self._context(), 0.0)

    def calibrate(self, archs: Iterable[ArchSpec] | None = None) -> float:
        """Fit and save the overhead: median over ``archs`` of the whole network's seconds minus its parts'.

        Each network is timed in turn with its own parts (``time_in_turn``), so that both see the
        same machine load; its missing entries are kept from the same timings.

        Args:
            archs: whole networks to measure; default the presets in ``CALIBRATION_PRESETS``.

        Returns:
            The overhead in seconds; it may be negative.
        """
        archs = [get_preset(n) for n in CALIBRATION_PRESETS] if archs is None else list(archs)
        diffs = []
        for arch in archs:
            parts = self.parts(arch)
            medians, whole = self._measure(parts, build_model(arch, self.num_classes, self.in_chans))
            self._store({k: v for k, v in medians.items() if k not in self.entries})
            diffs.append(cast(float, whole) - sum(medians[p.key] for p in parts))
        self.measurements += len(archs)
        self._overheads[self._context()] = statistics.median(diffs)
        self._save()
        return self._overheads[self._context()]

    # -- measuring and the file -----------------------------------------------------------------
    def _fill(self, parts: list[Part]) -> None:
        """Measure and save the missing entries of a network."""
        missing = {p.key for p in parts} - self.entries.keys()
        if missing:
            medians, _ = self._measure(parts)
            self._store({k: medians[k] for k in missing})

    def _measure(self, parts: list[Part], network: nn.Module | None = None) -> tuple[dict[str, float], float | None]:
        """All of a network's parts (and the whole ``network``, if given) timed in turn: median seconds per key."""
        self._check_threads()
        models = [p.build() for p in parts]
        inputs = [torch.randn(self.batch, p.in_channels, p.size, p.size) for p in parts]
        if network is not None:
            models.append(network)
            inputs.append(torch.randn(self.batch, self.in_chans, self.resolution, self.resolution))
        times = time_in_turn(models, inputs, device=self.device, warmup=self.warmup, repeats=self.repeats)
        samples: dict[str, list[float]] = {}
        for part, seconds in zip(parts, times):
            samples.setdefault(part.key, []).extend(seconds)  # a stage's repeated blocks pool their samples
        medians = {key: statistics.median(seconds) for key, seconds in samples.items()}
        return medians, statistics.median(times[-1]) if network is not None else None

    def _store(self, entries: dict[str, float]) -> None:
        self.entries.update(entries)
        self.measurements += len(entries)
        self._save()

    def _check_threads(self) -> None:
        if torch.get_num_threads() != self.conditions["threads"]:
            raise RuntimeError(f"torch threads changed from {self.conditions['threads']} to {torch.get_num_threads()} "
                               "since this latency table was opened; open a table for the new count")

    def _context(self) -> str:
        return _key(hw=self.resolution, classes=self.num_classes, cin=self.in_chans)

    def _fingerprint(self) -> str:
        return json.dumps(self.conditions, sort_keys=True)

    def _read(self) -> dict[str, dict]:
        """The file's tables by fingerprint; warns and returns none for a bad file or other conditions only."""
        if self.path is None or not self.path.exists():
            return {}
        try:
            data = json.loads(self.path.read_text())
            tables = data["tables"] if data.get("format") == FORMAT else None
        except (OSError, ValueError, KeyError, AttributeError) as exc:
            tables, why = None, f"{type(exc).__name__}: {exc}"
        else:
            why = f"format {data.get('format')!r}, expected {FORMAT}"
        if not isinstance(tables, dict):
            warnings.warn(f"latency table {self.path} is unreadable ({why}); starting a fresh table", stacklevel=3)
            return {}
        if tables and self._fingerprint() not in tables:
            others = "; ".join(_differences(self.conditions, t.get("conditions", {})) for t in tables.values())
            warnings.warn(f"latency table {self.path} holds timings made under other conditions ({others}); "
                          f"measuring a fresh table for {self._fingerprint()}", stacklevel=3)
        return tables

    def _save(self) -> None:
        """Merge this table into the file (other conditions' tables are kept); atomic replace."""
        if self.path is None:
            return
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            tables = self._read()
        old = tables.get(self._fingerprint(), {})
        tables[self._fingerprint()] = {
            "conditions": self.conditions,
            "entries": {**old.get("entries", {}), **self.entries},
            "overhead": {**old.get("overhead", {}), **self._overheads},
        }
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=self.path.name, suffix=".tmp")
        try:
            with os.fdopen(fd, "w") as f:
                json.dump({"format": FORMAT, "tables": tables}, f, indent=1, sort_keys=True)
            os.replace(tmp, self.path)
        except BaseException:
            os.unlink(tmp)
            raise
