"""``nas-proxy-check``'s frozen configuration: the architectures, the proxies, the reference, the proxy task."""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Mapping, Sequence

from nas.config import (
    SEED_EXPECTED,
    SUPERNET_FILES_EXPECTED,
    SUPERNET_VAL_IMAGES_EXPECTED,
    ConfigError,
    check_supernet_val_images,
    is_seed,
    is_whole,
    make_config,
    parse_count,
    supernet_files,
)
from nas.proxy.config import ProxyTaskConfig, proxy_fields

if TYPE_CHECKING:
    from nas.proxy.data import ProxyData

__all__ = ["DEFAULT_PROXIES", "TASK_FIELDS", "ZC_BATCHES", "CheckConfig", "format_epochs", "is_supernet_method",
           "parse_proxies"]

DEFAULT_PROXIES = "train:1,zc:synflow,zc:naswot,zc:grad_norm,zc:snip"
ZC_BATCHES = 1  # a zero-cost score is taken on one batch of --batch-size training images, as nas-search takes it
# The proxy-task settings that apply here: every field of ProxyTaskConfig but ``epochs`` (each run sets its own:
# --proxies train:EPOCHS, --reference-epochs).
TASK_FIELDS = tuple(f.name for f in proxy_fields() if f.name != "epochs")


def format_epochs(epochs: float) -> str:
    """``1.0`` -> ``"1"``, ``0.25`` -> ``"0.25"``: the epoch count as written in a method name."""
    short = f"{epochs:g}"
    return short if float(short) == epochs else repr(float(epochs))


def parse_proxies(value: str | Sequence[object]) -> tuple[str, ...]:
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


def _epochs(item: str, arg: str, expected: str) -> str:
    """The epoch count of a ``KIND:EPOCHS`` item as written in a method name; ``ConfigError`` unless finite and > 0."""
    try:
        epochs = float(arg)
    except ValueError:
        epochs = math.nan
    if not (math.isfinite(epochs) and epochs > 0):
        raise ConfigError(f"--proxies item {item!r}: expected {expected}")
    return format_epochs(epochs)


def _parse_proxy(item: str) -> str:
    kind, _, arg = item.partition(":")
    if kind == "train":
        return f"train:{_epochs(item, arg, 'train:EPOCHS with EPOCHS > 0, like train:1 or train:0.5')}"
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
    if kind in ("supernet", "supernet-loss") and not arg:
        return kind
    if kind == "supernet+ft":
        return f"supernet+ft:{_epochs(item, arg, 'supernet+ft:EPOCHS with EPOCHS > 0, like supernet+ft:0.1')}"
    raise ConfigError(f"--proxies item {item!r}: expected train:EPOCHS (like train:1), zc:NAME (like zc:synflow), "
                      f"supernet, supernet-loss or supernet+ft:EPOCHS")


def is_supernet_method(method: str) -> bool:
    """``supernet``, ``supernet-loss`` and ``supernet+ft:E``: scores with a supernet's inherited weights."""
    return method in ("supernet", "supernet-loss") or method.startswith("supernet+ft:")


MAX_ARCHS = 10_000  # every one is trained (or scored) once per proxy: more is days, not a check


@dataclass(frozen=True)
class CheckConfig:
    """Everything ``nas-proxy-check`` needs; field names are the CLI flags with ``-`` -> ``_``.

    ``task`` is the proxy task (``nas.proxy.ProxyTaskConfig``, validated as nas-search validates it);
    a mapping of ``TASK_FIELDS`` is accepted in its place. Its ``epochs`` are the reference's (each run
    sets its own), and this config's ``seed`` seeds its data split.
    """

    archs: int = 20
    seed: int = 0
    target_flops: int = 400_000_000
    flops_band: float = 4.0
    include_b0: bool = False
    proxies: tuple[str, ...] = tuple(DEFAULT_PROXIES.split(","))  # a comma list or a sequence is parsed
    reference_epochs: float = 5.0
    reference_seeds: int = 2
    supernet: str | None = None  # the trained supernet of the supernet proxies, or a comma list: a split supernet
    supernet_bn_batches: int = 20
    supernet_val_images: int = 0  # score each candidate on the first N held-out images (0: all)
    task: ProxyTaskConfig = field(default_factory=ProxyTaskConfig)  # or a mapping of TASK_FIELDS
    out: str = "runs/proxy-check"

    def __post_init__(self) -> None:
        object.__setattr__(self, "target_flops", parse_count(self.target_flops))
        object.__setattr__(self, "proxies", parse_proxies(self.proxies))
        checks = (
            ("archs", 3 <= self.archs <= MAX_ARCHS, f"an integer in 3..{MAX_ARCHS} (a ranking needs at least 3 "
                                                    f"architectures; each is trained)"),
            ("seed", is_seed(self.seed), SEED_EXPECTED),
            ("flops_band", self.flops_band >= 1, ">= 1"),
            ("reference_epochs", math.isfinite(self.reference_epochs) and self.reference_epochs > 0, "> 0"),
            ("reference_seeds", self.reference_seeds >= 1, "an integer >= 1 (2 or more measure seed-to-seed noise)"),
            ("out", isinstance(self.out, str) and bool(self.out.strip()), "a folder path"),
            ("supernet", self.supernet is None or (bool(str(self.supernet).strip()) and self.uses_supernet),
             "given only with --proxies supernet, supernet-loss or supernet+ft:EPOCHS, as a trained supernet file"),
            ("supernet", supernet_files(self.supernet) is not None, SUPERNET_FILES_EXPECTED),
            ("supernet_bn_batches", isinstance(self.supernet_bn_batches, int) and self.supernet_bn_batches >= 0,
             "a whole number of batches >= 0"),
            ("supernet_val_images", is_whole(self.supernet_val_images) and self.supernet_val_images >= 0,
             SUPERNET_VAL_IMAGES_EXPECTED),
            ("supernet_val_images", self.supernet_val_images == 0
             or not any(m.startswith("supernet+ft:") for m in self.proxies),
             "0 with --proxies supernet+ft:EPOCHS (a fine-tuned copy is scored on the whole held-out split)"),
        )
        for name, ok, expected in checks:
            if not ok:
                raise ConfigError(f"--{name.replace('_', '-')} must be {expected}, but got {getattr(self, name)!r}")
        object.__setattr__(self, "task", self._task(self.task))

    def _task(self, task: ProxyTaskConfig | Mapping[str, object] | None) -> ProxyTaskConfig:
        if isinstance(task, ProxyTaskConfig):
            values = {k: getattr(task, k) for k in TASK_FIELDS}
        else:
            values = dict(task or {})
            unknown = sorted(set(values) - set(TASK_FIELDS))
            if unknown:
                raise ConfigError(f"unknown proxy-task setting {unknown[0]!r}, expected one of "
                                  f"{', '.join(TASK_FIELDS)}")
        config: ProxyTaskConfig = make_config(ProxyTaskConfig, {}, {**values, "epochs": self.reference_epochs})
        return config

    @property
    def supernet_files(self) -> tuple[str, ...]:
        """The files of ``--supernet`` (``nas.config.supernet_files``); empty without it."""
        return supernet_files(self.supernet) or ()

    @property
    def uses_supernet(self) -> bool:
        return any(is_supernet_method(m) for m in self.proxies)

    def check_complete(self) -> None:
        """The checks across fields that a config of one field (as ``make_config`` probes it) cannot pass.

        Raises:
            ConfigError: a supernet proxy without ``--supernet``.
        """
        if self.uses_supernet and self.supernet is None:
            listed = ", ".join(m for m in self.proxies if is_supernet_method(m))
            raise ConfigError(f"--proxies {listed} needs --supernet, the trained supernet file "
                              f"(nas-search --proxy supernet trains one in its --out)")

    def check_data(self, data: ProxyData) -> None:
        """What needs the loaded data, checked before the first score: the proxy task's checks, and
        ``--supernet-val-images`` against the held-out split."""
        self.task.check_data(data)
        check_supernet_val_images(self.supernet_val_images, data.num_val)

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

    def public(self) -> dict[str, object]:
        """The settings as plain data, the proxy task reduced to its ``TASK_FIELDS``."""
        own = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "task"}
        return {**own, "task": {k: getattr(self.task, k) for k in TASK_FIELDS}}
