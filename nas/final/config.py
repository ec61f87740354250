"""What ``nas-train`` is asked to do (``FinalConfig``) and the recipe it resolves to (``Recipe``).

The paper's recipe (EfficientNet paper, section 5.2; the TF code's defaults): RMSProp with decay 0.9,
momentum 0.9 and epsilon 1e-3 (TF semantics), weight decay 1e-5, learning rate 0.016 per 256 images
(0.256 at batch 4096) warmed up then decayed by 0.97 every 2.4 of 350 epochs, label smoothing 0.1, an
exponential moving average of the weights (decay 0.9999), the architecture's dropout and stochastic
depth, BatchNorm momentum 0.99 (TF terms). A run of E epochs follows the same curve compressed in time.
``recipe="sgd"``: SGD-Nesterov, momentum 0.9, 0.1 per 256 images, weight decay 5e-5, cosine to zero.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

from nas.config import SEED_EXPECTED, ConfigError, is_number, is_seed, is_whole
from nas.proxy.data import DATASET_REGISTRY, DATASETS
from nas.proxy.runtime import DEVICE_FORMS, is_device_name
from search_spaces import ArchSpec, SpecError, get_preset, load_arch

__all__ = ["RECIPES", "SMALL_IMAGE_DATASETS", "FinalError", "FinalConfig", "Recipe", "default_resolution",
           "make_recipe", "load_arch_ref", "PAPER_EPOCHS", "PAPER_DECAY", "PAPER_DECAY_EPOCHS"]

RECIPES = ("rmsprop", "sgd")
SMALL_IMAGE_DATASETS = ("digits", "mnist", "fashion-mnist", "cifar10", "cifar100", "synthetic")
PAPER_EPOCHS = 350  # EfficientNet paper / TF code: 350 epochs, lr x 0.97 every 2.4 epochs
PAPER_DECAY, PAPER_DECAY_EPOCHS = 0.97, 2.4
_LR_PER_256 = {"rmsprop": 0.016, "sgd": 0.1}  # TF code: base_learning_rate 0.016 x batch / 256
_WEIGHT_DECAY = {"rmsprop": 1e-5, "sgd": 5e-5}  # the paper's; the proxy trainer's SGD default
EMA_DECAY = 0.9999
LABEL_SMOOTHING = 0.1
MIN_RESOLUTION = 8


class FinalError(ConfigError):
    """Bad input to final training: one line naming the value and what was expected."""


@dataclass(frozen=True)
class FinalConfig:
    """One field per ``nas-train`` flag (but ARCH, ``--config``, ``--out`` and ``--quiet``).

    ``lr`` None: the recipe's rate per 256 images times ``batch_size / 256``; ``warmup_epochs`` None:
    ``min(5, epochs / 10)`` (the paper warms up 5 of 350 epochs); ``resolution`` None:
    ``default_resolution``; ``val_size`` 0 trains on the whole training split, a fraction < 1 or a
    count keeps that part held out (scored every epoch, for model selection).
    """

    dataset: str = "digits"
    data_dir: str | None = None
    epochs: float = 10.0
    batch_size: int = 128
    recipe: str = "rmsprop"
    lr: float | None = None
    warmup_epochs: float | None = None
    resolution: int | None = None
    val_size: float = 0.0
    device: str = "auto"
    threads: int | None = None
    seed: int = 0
    train_size: int | None = None

    def __post_init__(self) -> None:
        v = self.val_size
        checks = (
            ("dataset", self.dataset in DATASETS, f"one of {', '.join(DATASETS)}"),
            ("data_dir", self.data_dir is None or (isinstance(self.data_dir, str) and bool(self.data_dir)), "a folder"),
            ("epochs", is_number(self.epochs) and self.epochs > 0, "> 0"),
            ("batch_size", is_whole(self.batch_size) and self.batch_size >= 1, "a whole number >= 1"),
            ("recipe", self.recipe in RECIPES, f"one of {', '.join(RECIPES)}"),
            ("lr", self.lr is None or (is_number(self.lr) and self.lr > 0), "> 0"),
            ("warmup_epochs", self.warmup_epochs is None or (is_number(self.warmup_epochs) and self.warmup_epochs >= 0)
             and (self.warmup_epochs or 0) < self.epochs, f">= 0 and less than --epochs ({self.epochs!r})"),
            ("resolution", self.resolution is None or (is_whole(self.resolution) and self.resolution >= MIN_RESOLUTION),
             f"a whole number >= {MIN_RESOLUTION} pixels"),
            ("val_size", is_number(v) and (v == 0 or 0 < v < 1 or (v >= 1 and float(v).is_integer())),
             "0 (none), a fraction in (0, 1) or a whole count >= 1"),
            ("device", is_device_name(self.device), DEVICE_FORMS),
            ("threads", self.threads is None or (is_whole(self.threads) and self.threads >= 1), "a whole number >= 1"),
            ("seed", is_seed(self.seed), SEED_EXPECTED),
            ("train_size", self.train_size is None or (is_whole(self.train_size) and self.train_size >= 1),
             "a whole number >= 1"),
        )
        for name, ok, expected in checks:
            if not ok:
                raise FinalError(f"--{name.replace('_', '-')} must be {expected}, but got {getattr(self, name)!r}")

    def resolved_lr(self) -> float:
        return self.lr if self.lr is not None else _LR_PER_256[self.recipe] * self.batch_size / 256

    def resolved_warmup(self) -> float:
        return self.warmup_epochs if self.warmup_epochs is not None else min(5.0, self.epochs / 10)

    def resolved_data_dir(self) -> str | None:
        """``data_dir`` (absolute) or the dataset's default folder; None for a dataset that needs none."""
        chosen = self.data_dir or DATASET_REGISTRY.lookup(self.dataset).default_dir
        return str(Path(chosen).expanduser().resolve()) if chosen else None


def default_resolution(arch: ArchSpec, dataset: str) -> int:
    """The training resolution: the architecture's own, scaled for small-image datasets as the proxy is.

    ``round(arch.resolution * 32 / 224)`` rounded half up to a multiple of 4 (B0 224 -> 32, B1 240 -> 36,
    B2 260 -> 36, B3 300 -> 44), so each member of a family trains at its own size; an image folder
    trains at ``arch.resolution`` itself.
    """
    if dataset not in SMALL_IMAGE_DATASETS:
        return arch.resolution
    scaled = round(arch.resolution * 32 / 224)
    return max(MIN_RESOLUTION, int(scaled / 4 + 0.5) * 4)


@dataclass(frozen=True)
class Recipe:
    """Every setting of one final training run, as written to ``metrics.json``."""

    name: str
    optimizer: str
    lr: float
    momentum: float
    rmsprop_decay: float | None
    eps: float | None
    weight_decay: float
    warmup_epochs: float
    schedule: str
    final_lr_fraction: float
    label_smoothing: float
    ema_decay: float
    ema_warmup: str
    dropout: float
    drop_connect: float
    bn_momentum_tf: float
    augmentation: str
    bn_recalibration: str
    epochs: float
    batch_size: int
    resolution: int

    def to_dict(self) -> dict[str, object]:
        return dataclasses.asdict(self)


def make_recipe(cfg: FinalConfig, arch: ArchSpec, resolution: int, augmentation: str) -> Recipe:
    """The settings ``cfg`` resolves to for ``arch`` at ``resolution``."""
    rmsprop = cfg.recipe == "rmsprop"
    return Recipe(
        name=cfg.recipe, optimizer="rmsprop-tf" if rmsprop else "sgd-nesterov", lr=cfg.resolved_lr(), momentum=0.9,
        rmsprop_decay=0.9 if rmsprop else None, eps=1e-3 if rmsprop else None, weight_decay=_WEIGHT_DECAY[cfg.recipe],
        warmup_epochs=cfg.resolved_warmup(),
        schedule=(f"linear warm-up, then exponential: x{PAPER_DECAY} every {PAPER_DECAY_EPOCHS} of "
                  f"{PAPER_EPOCHS} epochs, compressed to the run" if rmsprop else "linear warm-up, then cosine to 0"),
        final_lr_fraction=PAPER_DECAY ** (PAPER_EPOCHS / PAPER_DECAY_EPOCHS) if rmsprop else 0.0,
        label_smoothing=LABEL_SMOOTHING, ema_decay=EMA_DECAY, ema_warmup="decay_n = min(0.9999, (1 + n) / (10 + n))",
        dropout=arch.dropout, drop_connect=arch.drop_connect, bn_momentum_tf=round(1 - arch.bn_momentum, 6),
        augmentation=augmentation,
        bn_recalibration="BatchNorm statistics of the averaged weights recomputed on 20 training batches",
        epochs=float(cfg.epochs), batch_size=cfg.batch_size, resolution=resolution)


def load_arch_ref(ref: str) -> ArchSpec:
    """ARCH of ``nas-train``: a preset name, an architecture YAML file (a ``nas-grid-scale`` family member
    such as ``variants/b2.yaml``), or a ``nas-search`` output directory (its ``best.yaml``).

    The architecture's name is the file's stem when the file names none.

    Raises:
        SpecError: no such preset or file, a directory without ``best.yaml``, an invalid architecture.
    """
    path = Path(ref).expanduser()
    if path.is_dir():
        if not (path / "best.yaml").is_file():
            raise SpecError(f"ARCH {ref!r} is a directory without best.yaml (expected a nas-search output "
                            f"directory, a preset name or an architecture YAML file)")
        path = path / "best.yaml"
    elif not path.exists():
        if "/" in ref or ref.endswith((".yaml", ".yml")):
            raise SpecError(f"ARCH {ref!r}: no such file (expected a preset name, an architecture YAML file or a "
                            f"nas-search output directory)")
        return get_preset(ref)
    arch = load_arch(path)
    if not arch.name:
        arch = arch.replace(name=path.parent.name if path.name == "best.yaml" else path.stem)
    return arch
