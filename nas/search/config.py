"""The search's frozen configuration: one value per CLI flag, optionally read from YAML.

Flow: ``--config file.yaml`` -> command-line flags override -> ``SearchConfig`` (validated)
-> the one function that needs each value. Unknown keys are errors.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from nas.config import (
    SEED_EXPECTED,
    SUPERNET_FILES_EXPECTED,
    SUPERNET_VAL_IMAGES_EXPECTED,
    Choices,
    ConfigError,
    check_supernet_val_images,
    is_number,
    is_seed,
    is_whole,
    parse_count,
    supernet_files,
)
from nas.proxy.config import ProxyTaskConfig
from nas.proxy.zero_cost import ZC_PROXIES
from nas.search.study import PRUNER_REGISTRY, SAMPLER_REGISTRY

if TYPE_CHECKING:
    from nas.proxy.data import ProxyData

# The names of the registries, read at every use: an entry added to a registry is a valid choice.
SAMPLERS = Choices(SAMPLER_REGISTRY)
PRUNERS = Choices(PRUNER_REGISTRY)
REWARDS = ("soft", "hard")
ZC_NAMES = Choices(ZC_PROXIES)
PROXIES = Choices(lambda: ("train", "supernet", *(f"zc:{n}" for n in ZC_PROXIES)))
COSTS = ("macs", "latency")
SUPERNET_SCORES = ("accuracy", "likelihood")  # what --proxy supernet scores a candidate by


@dataclass(frozen=True)
class StudyConfig(ProxyTaskConfig):
    """The controller fields ``nas-search`` and ``nas-grid-scale`` share: the same flags, meaning and checks.

    A command whose defaults differ (``nas-grid-scale``'s pruner, study name and output folder)
    redeclares only those fields.
    """

    timeout: float | None = None
    pruner: str = "hyperband"
    seed: int = 0
    storage: str | None = None
    study_name: str = "nas-search"
    out: str = "runs/nas-search"
    quiet: bool = False
    dry_run: bool = False

    def __post_init__(self) -> None:
        checks = (
            ("pruner", self.pruner in PRUNERS, f"one of {PRUNERS}"),
            ("seed", is_seed(self.seed), SEED_EXPECTED),
            ("timeout", self.timeout is None or self.timeout > 0, "> 0 seconds"),
            ("study_name", bool(self.study_name), "a non-empty name"),
        )
        for name, ok, expected in checks:
            if not ok:
                raise ConfigError(f"--{name.replace('_', '-')} must be {expected}, but got {getattr(self, name)!r}")
        super().__post_init__()  # the proxy task's own checks

    @property
    def out_dir(self) -> Path:
        return Path(self.out)


@dataclass(frozen=True)
class SearchConfig(StudyConfig):
    """Everything ``nas-search`` needs; field names are the CLI flags with ``-`` -> ``_``.

    The proxy-task fields (dataset, data split, training budget, device) and their checks are
    ``nas.proxy.ProxyTaskConfig``'s; they come first in the field order.
    """

    # objective
    target_flops: int = 400_000_000
    reward_exponent: float = -0.07
    reward: str = "soft"  # soft: ACC*(MACs/T)^w ; hard: w=0 at or under T, -1 over
    flops_band: float = 4.0  # reject untrained when MACs > T*band or < T/band
    resolution: int = 224  # deployment resolution at which MACs are counted
    cost: str = "macs"  # or "latency": measured on this device, estimated from a per-layer table
    target_latency: str | float | None = None  # seconds, or "15ms"; required with cost latency
    latency_table: str | None = None  # cache file of the per-layer table [in --out]
    # proxy task
    proxy: str = "train"  # or "zc:NAME": a zero-cost score at initialization; "supernet": inherited weights
    supernet: str | None = None  # a trained supernet (--proxy supernet), or a comma list: a split supernet;
    # None: train one in --out first
    supernet_epochs: float = 10.0  # its training when nas-search trains it
    supernet_random_subnets: int = 2  # random members per training step besides the largest and smallest
    supernet_bn_batches: int = 20  # training batches a candidate's BN statistics are recalibrated on
    supernet_val_images: int = 0  # score each candidate on the first N held-out images (0: all)
    supernet_finetune: float = 0.0  # epochs of fine-tuning from the inherited weights before scoring
    supernet_score: str = "accuracy"  # or "likelihood": exp(-held-out cross-entropy), the finer ranking
    prescreen: str | None = None  # "K:k": score K sampled architectures, queue the best k to train first
    prescreen_proxy: str = "synflow"
    # controller (and StudyConfig's fields)
    trials: int = 20
    sampler: str = "tpe"
    seed_arch: tuple[str, ...] = ()
    space: str = "mnasnet"

    def __post_init__(self) -> None:
        object.__setattr__(self, "target_flops", parse_count(self.target_flops))
        if isinstance(self.seed_arch, str):
            object.__setattr__(self, "seed_arch", tuple(s for s in self.seed_arch.split(",") if s))
        else:
            object.__setattr__(self, "seed_arch", tuple(self.seed_arch))
        if self.target_latency is not None:
            from search_spaces.latency import parse_latency

            try:
                object.__setattr__(self, "target_latency", parse_latency(self.target_latency))
            except ValueError as exc:
                raise ConfigError(str(exc)) from None
        checks = (
            ("cost", self.cost in COSTS, f"one of {COSTS}"),
            ("target_latency", self.cost != "latency" or self.target_latency is not None,
             "given with --cost latency (e.g. 15ms)"),
            ("proxy", self.proxy in PROXIES, f"one of {', '.join(PROXIES)}"),
            ("supernet", self.supernet is None or (self.proxy == "supernet" and bool(str(self.supernet).strip())),
             "given with --proxy supernet, as the path of a trained supernet"),
            ("supernet", supernet_files(self.supernet) is not None, SUPERNET_FILES_EXPECTED),
            ("supernet_epochs", is_number(self.supernet_epochs) and self.supernet_epochs > 0, "a number of epochs > 0"),
            ("supernet_random_subnets", isinstance(self.supernet_random_subnets, int)
             and self.supernet_random_subnets >= 0, "a whole number of subnets >= 0"),
            ("supernet_bn_batches", isinstance(self.supernet_bn_batches, int) and self.supernet_bn_batches >= 0,
             "a whole number of batches >= 0"),
            ("supernet_finetune", is_number(self.supernet_finetune) and self.supernet_finetune >= 0,
             "a number of epochs >= 0"),
            ("supernet_val_images", is_whole(self.supernet_val_images) and self.supernet_val_images >= 0,
             SUPERNET_VAL_IMAGES_EXPECTED),
            ("supernet_val_images", self.supernet_val_images == 0 or self.supernet_finetune == 0,
             "0 with --supernet-finetune (a fine-tuned copy is scored on the whole held-out split)"),
            ("supernet_score", self.supernet_score in SUPERNET_SCORES, f"one of {', '.join(SUPERNET_SCORES)}"),
            ("supernet_score", self.supernet_score == "accuracy" or self.proxy == "supernet",
             "accuracy unless --proxy supernet"),
            ("supernet_score", self.supernet_score == "accuracy" or self.supernet_finetune == 0,
             "accuracy with --supernet-finetune (likelihood scores the inherited weights as they are)"),
            ("prescreen_proxy", self.prescreen_proxy in ZC_NAMES, f"one of {', '.join(ZC_NAMES)}"),
            ("prescreen", self.prescreen is None or self.prescreen_counts is not None,
             "K:k with whole numbers K >= k >= 1 (score K architectures, train the best k first), e.g. 200:20"),
            ("reward", self.reward in REWARDS, f"one of {REWARDS}"),
            ("sampler", self.sampler in SAMPLERS, f"one of {SAMPLERS}"),
            ("trials", isinstance(self.trials, int) and self.trials >= 1, "an integer >= 1"),
            ("flops_band", self.flops_band >= 1, ">= 1"),
            ("resolution", self.resolution >= 8, ">= 8 pixels"),
            ("latency_table", self.latency_table is None or not Path(str(self.latency_table)).is_dir(),
             "a file path (created when missing), not a folder"),
        )
        for name, ok, expected in checks:
            if not ok:
                raise ConfigError(f"--{name.replace('_', '-')} must be {expected}, but got {getattr(self, name)!r}")
        super().__post_init__()  # the controller's and the proxy task's own checks

    def check_data(self, data: ProxyData) -> None:
        """The proxy task's checks of the loaded data, and ``--supernet-val-images`` against its held-out split."""
        super().check_data(data)
        check_supernet_val_images(self.supernet_val_images, data.num_val)

    @property
    def supernet_files(self) -> tuple[str, ...]:
        """The files of ``--supernet`` (``nas.config.supernet_files``); empty without it."""
        return supernet_files(self.supernet) or ()

    @property
    def prescreen_counts(self) -> tuple[int, int] | None:
        """``(K, k)`` of ``--prescreen K:k``; None when unset or malformed."""
        m = re.fullmatch(r"\s*(\d+)\s*:\s*(\d+)\s*", str(self.prescreen or ""))
        if not m or not int(m.group(1)) >= int(m.group(2)) >= 1:
            return None
        return int(m.group(1)), int(m.group(2))

    @property
    def target(self) -> float:
        """T of the reward: MACs, or seconds with ``--cost latency``."""
        if self.cost == "latency" and isinstance(self.target_latency, (int, float)):  # parsed to seconds
            return float(self.target_latency)
        return self.target_flops
