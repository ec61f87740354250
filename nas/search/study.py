"""The Optuna study: samplers and pruners by name, seeds, opening or resuming a study, queued seed networks."""
from __future__ import annotations

import math
import os
import warnings
from collections.abc import Mapping
from typing import TYPE_CHECKING, Callable

import optuna
from optuna.trial import TrialState

from nas.config import ConfigError, Registry
from nas.search.tpe import CachedTPESampler
from search_spaces import ArchSpec
from search_spaces.space import SearchSpace

if TYPE_CHECKING:  # nas.search.config reads the registries below: no import of it at run time
    from nas.search.config import SearchConfig

SamplerFactory = Callable[[int | None, int], optuna.samplers.BaseSampler]  # (seed, startup trials) -> sampler


def _tpe(seed: int | None, n_startup: int) -> optuna.samplers.BaseSampler:
    return CachedTPESampler(multivariate=True, constant_liar=True, seed=seed, n_startup_trials=n_startup)


def _rl(seed: int | None, n_startup: int) -> optuna.samplers.BaseSampler:
    from nas.search.rl_sampler import RLSampler  # torch: loaded when the controller is asked for

    return RLSampler(seed=seed)


# Adding a sampler is one entry: its name (the --sampler choice) and a factory of (seed, startup trials).
SAMPLER_REGISTRY: Registry[SamplerFactory] = Registry("--sampler", {
    "tpe": _tpe,
    "random": lambda seed, n_startup: optuna.samplers.RandomSampler(seed=seed),
    "nsga2": lambda seed, n_startup: optuna.samplers.NSGAIISampler(seed=seed),
    "gp": lambda seed, n_startup: optuna.samplers.GPSampler(seed=seed, n_startup_trials=n_startup),
    "rl": _rl,
}, notes={"rl": "MnasNet-style policy-gradient controller"})

# Adding a pruner is one entry: its name (the --pruner choice) and a factory.
PRUNER_REGISTRY: Registry[Callable[[], optuna.pruners.BasePruner]] = Registry("--pruner", {
    "hyperband": lambda: optuna.pruners.HyperbandPruner(min_resource=1, reduction_factor=3),
    "median": lambda: optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=1),
    "none": optuna.pruners.NopPruner,
})


def make_sampler(name: str, seed: int | None, n_startup: int = 10) -> optuna.samplers.BaseSampler:
    """The sampler ``name`` of ``SAMPLER_REGISTRY``, seeded.

    Raises:
        ConfigError: ``name`` is not in the registry (the message lists every entry).
    """
    factory = SAMPLER_REGISTRY.lookup(name)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return factory(seed, n_startup)


def make_pruner(name: str) -> optuna.pruners.BasePruner:
    """The pruner ``name`` of ``PRUNER_REGISTRY``.

    Raises:
        ConfigError: ``name`` is not in the registry (the message lists every entry).
    """
    return PRUNER_REGISTRY.lookup(name)()


def worker_index() -> int:
    """This worker's index from the launcher (``nas.cluster.workers.launcher_index``), else 0."""
    from nas.cluster.workers import launcher_index

    index = launcher_index()
    return 0 if index is None else index


def sampler_seed(seed: int, study: optuna.Study | None = None, slot: int | None = None) -> int:
    """Distinct per worker: ``seed`` for a lone worker, mixed with the worker's index otherwise.

    ``slot`` is the worker's slot in the study (``nas.cluster.workers.register_worker``: distinct among the
    live workers of a study, 0 for a lone one): ``seed + 7919 * slot``. Without it, the launcher's
    index, mixed with the pid when other trials are running.
    """
    if slot is not None:
        return seed + 7919 * slot
    index = worker_index()
    others = study is not None and bool(study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)))
    return seed + 7919 * index + (os.getpid() if others and index == 0 else 0)


def study_directions(cfg: SearchConfig) -> list[str]:
    return ["maximize", "minimize"] if cfg.sampler == "nsga2" else ["maximize"]


# Settings stored only when they differ from these values: absent, on either side, means the value.
ABSENT_MEANS: dict[str, object] = {"proxy": "train", "cost": "macs", "supernet_score": "accuracy",
                                   "supernet_val_images": 0}


def search_settings(cfg: SearchConfig, space: SearchSpace) -> dict[str, object]:
    """What a resumed ``nas-search`` study must agree on."""
    settings = {"space_digest": space.digest(), "target_flops": cfg.target_flops, "resolution": cfg.resolution,
                "reward": cfg.reward, "reward_exponent": cfg.reward_exponent, "dataset": cfg.dataset}
    settings.update(proxy=cfg.proxy, cost=cfg.cost, supernet_score=cfg.supernet_score)
    if cfg.proxy == "supernet":
        settings.update(supernet_bn_batches=cfg.supernet_bn_batches, supernet_finetune=cfg.supernet_finetune,
                        supernet_val_images=cfg.supernet_val_images)
    if cfg.cost == "latency":
        settings["target_latency"] = cfg.target_latency
    # a value ABSENT_MEANS gives is left out: studies made before its option hold no such key
    return {k: v for k, v in settings.items() if k not in ABSENT_MEANS or v != ABSENT_MEANS[k]}


def open_study(name: str, storage: str | optuna.storages.BaseStorage, directions: list[str],
               settings: Mapping[str, object],
               sampler: optuna.samplers.BaseSampler | Callable[[optuna.Study], optuna.samplers.BaseSampler],
               pruner: optuna.pruners.BasePruner) -> optuna.Study:
    """Create or resume the study ``name``; refuse to resume one made with other settings.

    ``settings`` are stored as study attributes on creation and compared on resume. ``sampler``
    may be a function of the (probed) study, to seed each worker differently.

    Raises:
        ConfigError: the existing study has other directions or settings (it is left untouched).
    """
    try:  # loading writes nothing, so a refused resume leaves the study exactly as it was
        probe = optuna.load_study(study_name=name, storage=storage, sampler=optuna.samplers.RandomSampler())
    except KeyError:
        probe = optuna.create_study(study_name=name, storage=storage, load_if_exists=True,
                                    directions=[optuna.study.StudyDirection[d.upper()] for d in directions])
        for key, value in settings.items():
            probe.set_user_attr(key, value)
    existing = [d.name.lower() for d in probe.directions]
    if existing != directions:
        raise ConfigError(f"study {name!r} exists with directions {existing}, but this run needs "
                          f"{directions}; use another --study-name")
    attrs = probe.user_attrs
    for key in {**settings, **ABSENT_MEANS}:
        value = settings.get(key, ABSENT_MEANS.get(key))
        made = attrs.get(key, ABSENT_MEANS.get(key, value))  # another absent setting: a study made before it
        if made != value:
            raise ConfigError(f"study {name!r} was made with {key}={made!r}, but this run has "
                              f"{key}={value!r}; use another --study-name or --out")
    if callable(sampler) and not isinstance(sampler, optuna.samplers.BaseSampler):
        sampler = sampler(probe)
    return optuna.load_study(study_name=name, storage=storage, sampler=sampler, pruner=pruner)


def enqueue_seeds(study: optuna.Study, space: SearchSpace, archs: list[ArchSpec]) -> None:
    """Queue known networks as the first trials (skipped if the study already has them)."""
    for arch in archs:
        study.enqueue_trial(space.encode(arch), user_attrs={"seed_arch": arch.name}, skip_if_exists=True)


def prescreen(space: SearchSpace, cfg: SearchConfig, score: Callable[[ArchSpec], float],
              in_band: Callable[[ArchSpec], bool]) -> list[tuple[float, ArchSpec]]:
    """``--prescreen K:k``: the best k of K distinct random architectures in the cost band, by ``score``.

    The sample is seeded by ``cfg.seed`` alone, so every worker would draw the same one.
    """
    counts = cfg.prescreen_counts
    if counts is None:
        raise ConfigError(f"--prescreen must be K:k with whole numbers K >= k >= 1, but got {cfg.prescreen!r}")
    many, keep = counts
    draw = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=cfg.seed))
    archs: dict[str, ArchSpec] = {}
    for _ in range(200 * many):
        arch = space.sample(draw.ask())
        if arch.to_str() not in archs and in_band(arch):
            archs[arch.to_str()] = arch
            if len(archs) == many:
                break
    scored = [(score(a), a) for a in archs.values()]
    scored = [(s, a) for s, a in scored if math.isfinite(s)]
    return sorted(scored, key=lambda sa: -sa[0])[:keep]
