"""``nas-proxy-check``: does a cheap proxy rank architectures the way longer training does?

K architectures are sampled from the MnasNet space (seeded, distinct, MACs at 224 px within
``[T/band, T*band]``, EfficientNet-B0 optionally among them). Each is scored by every proxy
(``train:E``: held-out accuracy after E proxy epochs; ``zc:NAME``: a zero-cost score of
``nas.proxy.zero_cost``) and by the reference (``--reference-epochs`` of training, once per
``--reference-seeds`` seed; the reference score is the mean over seeds). A proxy's fidelity is
its Kendall tau and Spearman rho with the reference, with 95% bootstrap intervals over the
architectures; the seed-to-seed agreement of the reference itself is the ceiling to compare with.

Every score is appended to ``scores.jsonl`` in ``--out`` as soon as it is computed; the same
command run again skips what is there. Settings that would change a stored score (dataset, data
split, trainer recipe, seed) must match the file's first line, else the run is refused. Proxies,
reference epochs and seeds, and the architecture count may change: only missing scores are computed.
A run holds a lock on the file, so a second run on the same ``--out`` is refused while it lasts.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import math
import signal
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np

from nas.cli.search import _Parser, add_proxy_arguments, data_config, glue_negative_values, train_config
from nas.config import ConfigError, make_config, parse_count
from nas.search.config import SearchConfig
from nas.fidelity.analysis import MACS_RESOLUTION, analyse, plot_scatter, report_table, write_results_csv, write_summary

log = logging.getLogger("nas-proxy-check")
PROG = "nas-proxy-check"
DEFAULT_PROXIES = "train:1,zc:synflow,zc:naswot,zc:grad_norm,zc:snip"
CACHE_NAME = "scores.jsonl"
CACHE_FORMAT = 1
ZC_BATCHES = 1  # a zero-cost score is taken on one batch of --batch-size training images, as nas-search takes it
MAX_DRAWS_PER_ARCH = 1000  # sampling gives up after this many draws per wanted architecture
# Trainer fields that say how a run executes, not what it computes: left out of the cache's settings.
_RUNTIME_FIELDS = ("epochs", "seed", "device", "threads", "amp", "channels_last", "compile", "reports_per_epoch",
                   "flush_denormal")
_FLAG_OF_SETTING = {"data.name": "--dataset", "data.data_dir": "--data-dir", "data.resolution": "--proxy-resolution",
                    "data.val_size": "--val-size", "data.train_size": "--train-size", "data.seed": "--seed",
                    "trainer.batch_size": "--batch-size", "trainer.lr": "--lr", "trainer.max_seconds": "--max-seconds"}


# -- configuration ------------------------------------------------------------------------------------------------
def format_epochs(epochs: float) -> str:
    """``1.0`` -> ``"1"``, ``0.25`` -> ``"0.25"``: the epoch count as written in a method name."""
    short = f"{epochs:g}"
    return short if float(short) == epochs else repr(float(epochs))


def parse_proxies(value: Any) -> tuple[str, ...]:
    """``"train:1,zc:synflow"`` (or a sequence of such items) -> normalized method names, in order.

    Raises:
        ConfigError: an item that is not ``train:E`` with E > 0 or ``zc:NAME`` of a known zero-cost proxy.
    """
    items = value.split(",") if isinstance(value, str) else [str(s) for s in value]
    methods: list[str] = []
    for item in filter(None, (s.strip() for s in items)):
        method = _parse_proxy(item)
        if method not in methods:
            methods.append(method)
    if not methods:
        raise ConfigError(f"--proxies must list at least one proxy like {DEFAULT_PROXIES}, but got {value!r}")
    return tuple(methods)


def _parse_proxy(item: str) -> str:
    kind, _, arg = item.partition(":")
    if kind == "train":
        try:
            epochs = float(arg)
        except ValueError:
            epochs = math.nan
        if not (math.isfinite(epochs) and epochs > 0):
            raise ConfigError(f"--proxies item {item!r}: expected train:EPOCHS with EPOCHS > 0, "
                              f"like train:1 or train:0.5")
        return f"train:{format_epochs(epochs)}"
    if kind == "zc":
        try:
            from nas.proxy.zero_cost import ZC_PROXIES
        except ImportError as exc:
            raise ConfigError(f"--proxies item {item!r}: zero-cost proxies need nas.proxy.zero_cost, which does not "
                              f"import ({exc}); use train:EPOCHS proxies only") from None
        if arg not in ZC_PROXIES:
            raise ConfigError(f"--proxies item {item!r}: unknown zero-cost proxy {arg!r}, expected one of "
                              f"{', '.join('zc:' + n for n in ZC_PROXIES)}")
        return item
    raise ConfigError(f"--proxies item {item!r}: expected train:EPOCHS (like train:1) or zc:NAME (like zc:synflow)")


# nas.cli.add_proxy_arguments's flags that apply here (not --epochs: see parse_config), and ``train`` (library use).
TASK_FIELDS = ("dataset", "data_dir", "proxy_resolution", "val_size", "train_size", "batch_size", "lr", "max_seconds",
               "device", "threads", "train")


@dataclass(frozen=True)
class CheckConfig:
    """Everything ``nas-proxy-check`` needs; field names are the CLI flags with ``-`` -> ``_``.

    ``task`` holds the proxy-task settings (``TASK_FIELDS``, as a mapping) and becomes the
    ``nas.search.config.SearchConfig`` that carries them, validated as nas-search validates them, with
    this config's ``seed`` and the reference's epochs (each run sets its own).
    """

    archs: int = 20
    seed: int = 0
    target_flops: int = 400_000_000
    flops_band: float = 4.0
    include_b0: bool = False
    proxies: Any = DEFAULT_PROXIES  # a comma list or a sequence; a tuple of method names once parsed
    reference_epochs: float = 5.0
    reference_seeds: int = 2
    task: Any = None  # a mapping of TASK_FIELDS -> SearchConfig
    out: str = "runs/proxy-check"

    def __post_init__(self) -> None:
        object.__setattr__(self, "target_flops", parse_count(self.target_flops))
        object.__setattr__(self, "proxies", parse_proxies(self.proxies))
        checks = (
            ("archs", self.archs >= 3, "an integer >= 3 (a ranking needs at least 3 architectures)"),
            ("seed", self.seed >= 0, ">= 0"),
            ("flops_band", self.flops_band >= 1, ">= 1"),
            ("reference_epochs", math.isfinite(self.reference_epochs) and self.reference_epochs > 0, "> 0"),
            ("reference_seeds", self.reference_seeds >= 1, "an integer >= 1 (2 or more measure seed-to-seed noise)"),
            ("out", bool(self.out), "a directory"),
        )
        for name, ok, expected in checks:
            if not ok:
                raise ConfigError(f"--{name.replace('_', '-')} must be {expected}, but got {getattr(self, name)!r}")
        if not isinstance(self.task, SearchConfig):
            object.__setattr__(self, "task", self._task(dict(self.task or {})))

    def _task(self, values: dict[str, Any]) -> SearchConfig:
        unknown = sorted(set(values) - set(TASK_FIELDS))
        if unknown:
            raise ConfigError(f"unknown proxy-task setting {unknown[0]!r}, expected one of {', '.join(TASK_FIELDS)}")
        return make_config(SearchConfig, {}, {**values, "seed": self.seed, "epochs": self.reference_epochs})

    @property
    def reference_method(self) -> str:
        return f"train:{format_epochs(self.reference_epochs)}"

    @property
    def reference_seed_values(self) -> tuple[int, ...]:
        """Training seeds of the reference runs; proxies train with ``seed``, so no run is shared."""
        return tuple(self.seed + 1 + i for i in range(self.reference_seeds))

    @property
    def out_dir(self) -> Path:
        return Path(self.out)

    def public(self) -> dict[str, Any]:
        """The settings as plain data, the proxy task reduced to its ``TASK_FIELDS``."""
        own = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "task"}
        return {**own, "task": {k: getattr(self.task, k) for k in TASK_FIELDS}}


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog=PROG, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                argument_default=None)
    g = p.add_argument_group("architectures")
    g.add_argument("--archs", type=int, help="architectures to rank, EfficientNet-B0 included if asked [20]")
    g.add_argument("--seed", type=int, help="seed of the sampling, the data split and the training runs [0]")
    g.add_argument("--target-flops", help="MACs target T at 224 px: 400M, 0.4G, 4e8 or 400000000 [400M]")
    g.add_argument("--flops-band", type=float, help="keep architectures within [T/band, T*band] [4]")
    g.add_argument("--include-b0", action="store_true", default=None, help="rank EfficientNet-B0 too")
    g = p.add_argument_group("proxies and reference")
    g.add_argument("--proxies", help=f"comma list of train:EPOCHS and zc:NAME [{DEFAULT_PROXIES}]")
    g.add_argument("--reference-epochs", type=float, help="epochs of the reference training [5]")
    g.add_argument("--reference-seeds", type=int, help="reference runs per architecture, one per seed [2]")
    g = p.add_argument_group("proxy task (as nas-search)")
    add_proxy_arguments(g, "run", "training resolution of the proxy task [32]")
    p._option_string_actions["--epochs"].help = argparse.SUPPRESS  # see parse_config
    p.add_argument("--out", help="output directory, also the resumable score cache [runs/proxy-check]")
    return p


def parse_config(argv: Sequence[str]) -> CheckConfig:
    parser = build_parser()
    args = {k: v for k, v in vars(parser.parse_args(glue_negative_values(parser, list(argv)))).items() if v is not None}
    if "epochs" in args:
        raise ConfigError("--epochs does not apply here: give training proxies as --proxies train:EPOCHS "
                          "and the reference's length as --reference-epochs")
    task = {k: args.pop(k) for k in TASK_FIELDS if k in args}
    return make_config(CheckConfig, {}, {**args, "task": task})


# -- architectures -------------------------------------------------------------------------------------------------
class _SeededDraw:
    """What ``SearchSpace.sample`` asks of an Optuna trial: each choice drawn uniformly from a seeded stream."""

    def __init__(self, rng: np.random.Generator) -> None:
        self.rng = rng

    def suggest_categorical(self, name: str, choices: Sequence[Any]) -> Any:
        return choices[self.rng.integers(len(choices))]


def sample_archs(space: Any, count: int, seed: int, target: float, band: float, include_b0: bool) -> list:
    """``count`` distinct architectures of ``space`` with MACs in ``[target/band, target*band]``.

    EfficientNet-B0 (as a member of the space) comes first when ``include_b0``. The draws are
    seeded and sequential, so a larger ``count`` with the same seed extends the same list.
    """
    from search_spaces import count_cost, get_preset

    archs = [space.from_params(space.encode(get_preset("efficientnet-b0"))).replace(name="efficientnet-b0")] \
        if include_b0 else []
    seen = {a.to_str() for a in archs}
    draw = _SeededDraw(np.random.default_rng(seed))
    for _ in range(MAX_DRAWS_PER_ARCH * count):
        if len(archs) >= count:
            break
        arch = space.sample(draw)
        if arch.to_str() not in seen and target / band <= count_cost(arch, MACS_RESOLUTION).macs <= target * band:
            seen.add(arch.to_str())
            archs.append(arch.replace(name=f"arch{len(archs):02d}"))
    if len(archs) < count:
        raise ConfigError(f"--archs {count}: only {len(archs)} distinct architectures of the space have MACs "
                          f"within [{target / band / 1e6:g}M, {target * band / 1e6:g}M] in "
                          f"{MAX_DRAWS_PER_ARCH * count} draws; widen --flops-band or move --target-flops")
    return archs


# -- the score cache -----------------------------------------------------------------------------------------------
def cache_settings(data_cfg: Any, train_cfg: Any, arch: Any) -> dict[str, Any]:
    """What fixes every score: the data split, the trainer recipe, the zero-cost batch, the fixed arch fields."""
    from nas.proxy.data import DEFAULT_DIRS

    settings: dict[str, Any] = {"tool": PROG, "format": CACHE_FORMAT}
    settings.update({f"data.{k}": v for k, v in dataclasses.asdict(data_cfg).items() if k != "workers"})
    settings["data.data_dir"] = data_cfg.data_dir or DEFAULT_DIRS.get(data_cfg.name)  # omitted = the default's path
    settings.update({f"trainer.{k}": v for k, v in dataclasses.asdict(train_cfg).items() if k not in _RUNTIME_FIELDS})
    settings["zero_cost.batches"] = ZC_BATCHES
    settings.update({f"arch.{k}": v for k, v in arch.to_dict().items() if k not in ("name", "stages")})
    return json.loads(json.dumps(settings))  # as it reads back from the file


class ScoreCache:
    """``scores.jsonl``: the settings on the first line, then one JSON line per computed score.

    A score line: ``{"arch", "method", "seed", "score", "seconds"}`` plus ``"error"`` when the run
    failed (score null). Keys are ``(arch string, method, seed)``.
    """

    def __init__(self, path: Path, settings: dict[str, Any], records: dict[tuple, dict], torn_tail: bool) -> None:
        self.path, self.settings, self.records, self._torn_tail = path, settings, records, torn_tail

    @classmethod
    def open(cls, path: Path, settings: dict[str, Any]) -> "ScoreCache":
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
        if not isinstance(header, dict) or header.get("tool") != PROG:
            raise ConfigError(f"{path} is not a {PROG} score cache; use another --out")
        _check_settings(path, header, settings)
        records = {}
        for number, line in enumerate(lines[1:], 2):
            try:
                record = json.loads(line)
                records[(record["arch"], record["method"], record["seed"])] = record
            except (json.JSONDecodeError, KeyError, TypeError):
                raise ConfigError(f"{path} line {number} is not a score record; use another --out") from None
        return cls(path, settings, records, torn_tail)

    def __contains__(self, key: tuple) -> bool:
        return key in self.records

    def score(self, key: tuple) -> float:
        """The stored score, NaN when missing or failed."""
        value = self.records.get(key, {}).get("score")
        return math.nan if value is None else float(value)

    def add(self, record: dict[str, Any]) -> None:
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
        self.records[(record["arch"], record["method"], record["seed"])] = record


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
            raise ConfigError(f"{path} is in use by another {PROG} run; wait for it to finish or use another "
                              f"--out") from None
        yield  # closing the file releases the lock


def _check_settings(path: Path, stored: dict[str, Any], current: dict[str, Any]) -> None:
    for key in sorted(set(stored) | set(current)):
        if stored.get(key) != current.get(key):
            what = _FLAG_OF_SETTING.get(key, f"setting {key}")
            raise ConfigError(f"{path} holds scores computed with {what} {stored.get(key)!r}, but this run has "
                              f"{current.get(key)!r}; run with the same settings to continue it, or use another --out")


# -- scoring -------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Item:
    """One score to compute: ``method`` (``train:E`` or ``zc:NAME``) of ``arch`` with ``seed``."""

    arch: Any
    method: str
    seed: int

    @property
    def key(self) -> tuple[str, str, int]:
        return self.arch.to_str(), self.method, self.seed


def plan_items(cfg: CheckConfig, archs: Sequence[Any]) -> list[Item]:
    """Every score the report needs, cheapest first: zero-cost, proxy training, then the reference."""
    def cost(method: str) -> float:
        kind, _, arg = method.partition(":")
        return float(arg) if kind == "train" else 0.0

    runs = [(m, cfg.seed) for m in cfg.proxies] + [(cfg.reference_method, s) for s in cfg.reference_seed_values]
    runs.sort(key=lambda run: cost(run[0]))  # stable: the reference after a proxy of the same length
    return [Item(arch, method, seed) for method, seed in runs for arch in archs]


def measure(item: Item, data: Any, trainer: Any, device: str) -> float:
    """Held-out accuracy after training (``train:E``) or the zero-cost score (``zc:NAME``) of ``item``."""
    import torch

    from search_spaces import build_model

    from nas.proxy.train import train_proxy

    kind, _, arg = item.method.partition(":")
    if kind == "zc":
        from nas.proxy.zero_cost import score_arch

        return score_arch(item.arch, data, arg, seed=item.seed, batch_size=min(trainer.batch_size, data.num_train),
                          batches=ZC_BATCHES, device=device)
    torch.manual_seed(item.seed)  # the same item builds the same initial weights on every rerun
    model = build_model(item.arch, num_classes=data.num_classes, in_chans=data.in_chans)
    return train_proxy(model, data, dataclasses.replace(trainer, epochs=float(arg), seed=item.seed)).accuracy


def compute_missing(items: Sequence[Item], cache: ScoreCache, data: Any, trainer: Any, device: str) -> int:
    """Compute and store each item not in ``cache``, logging one line each; returns how many were computed."""
    from search_spaces import count_cost

    from nas.search.progress import fmt_seconds
    from nas.proxy.train import TrainingDiverged

    todo = [item for item in items if item.key not in cache]
    log.info("%s: %d scores needed, %d already in %s, %d to compute", PROG, len(items), len(items) - len(todo),
             cache.path, len(todo))
    start = time.perf_counter()
    for number, item in enumerate(todo, 1):
        t0 = time.perf_counter()
        record: dict[str, Any] = {"arch": item.arch.to_str(), "method": item.method, "seed": item.seed}
        try:
            score: float | None = float(measure(item, data, trainer, device))
        except TrainingDiverged as exc:
            score, record["error"] = None, str(exc)
        if score is not None and not math.isfinite(score):
            score, record["error"] = None, f"non-finite score {score}"
        record.update(score=score, seconds=round(time.perf_counter() - t0, 3))
        cache.add(record)
        macs = count_cost(item.arch, MACS_RESOLUTION).macs
        shown = f"{score:.4f}" if score is not None else record["error"]
        log.info("[%d/%d] %s seed %d %s (%.0fM MACs): %s in %.1f s | elapsed %s", number, len(todo), item.method,
                 item.seed, item.arch.name, macs / 1e6, shown, record["seconds"],
                 fmt_seconds(time.perf_counter() - start))
    return len(todo)


# -- the command ---------------------------------------------------------------------------------------------------
def resolve_device(name: str) -> str:
    """``auto`` -> ``cuda`` when available, else ``cpu``; a CUDA device without CUDA is an error."""
    import torch

    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"--device {name!r} but CUDA is not available on this machine; use cpu or auto")
    return name


def run(cfg: CheckConfig) -> int:
    """Validate and load everything, then compute the missing scores, then analyse and write the report."""
    from search_spaces import default_space

    from nas.proxy.data import load_data
    from nas.proxy.train import torch_threads

    out = cfg.out_dir
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {cfg.out!r} is a file, expected a directory")
    device = resolve_device(cfg.task.device)
    archs = sample_archs(default_space(), cfg.archs, cfg.seed, cfg.target_flops, cfg.flops_band, cfg.include_b0)
    data_cfg, trainer = data_config(cfg.task), train_config(cfg.task)
    data = load_data(data_cfg)
    if cfg.task.batch_size > data.num_train:
        raise ConfigError(f"--batch-size {cfg.task.batch_size} exceeds the {data.num_train} training images that "
                          f"--train-size/--val-size leave")
    items = plan_items(cfg, archs)
    out.mkdir(parents=True, exist_ok=True)  # every input has been checked; an existing cache is left as it is
    path, settings = out / CACHE_NAME, cache_settings(data_cfg, trainer, archs[0])
    try:
        with exclusive(path), torch_threads(cfg.task.threads):
            cache = ScoreCache.open(path, settings)
            computed = compute_missing(items, cache, data, trainer, device)
    except KeyboardInterrupt:
        done = sum(item.key in ScoreCache.open(path, settings) for item in items)
        print(f"{PROG}: interrupted; {done} of {len(items)} scores are in {path}. "
              f"Run the same command again to continue.", file=sys.stderr)
        return 130
    analysis = analyse(cfg, archs, cache)
    write_results_csv(cfg, analysis, out / "results.csv")
    write_summary(cfg, analysis, computed, len(items), out / "summary.json")
    plotted = plot_scatter(cfg, analysis, out / "scatter.png")
    print(report_table(cfg, analysis))
    print(f"\noutputs in {out}/: results.csv, summary.json{', scatter.png' if plotted else ''}, {CACHE_NAME}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """The command: exit 0 with the report, 2 with one ``nas-proxy-check: error: ...`` line, 130 interrupted."""
    from search_spaces import SpecError
    from search_spaces.space import SpaceError

    from nas.proxy.data import DataError

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    signal.signal(signal.SIGTERM, signal.default_int_handler)  # preemption ends like Ctrl-C: the cache is kept
    try:
        return run(parse_config(sys.argv[1:] if argv is None else argv))
    except (ConfigError, SpecError, SpaceError, DataError) as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
