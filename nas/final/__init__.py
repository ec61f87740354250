"""Final training behind ``nas-train``: the paper's recipe and SGD + cosine, augmentation, the weight average,
checkpoints that resume, and the one read of a test split in the toolkit."""
from nas.final.augment import NO_FLIP, crop_flip, make_augment, rand_augment
from nas.final.checkpoint import CHECKPOINT, load_checkpoint, run_settings, run_state
from nas.final.config import (
                              RECIPES,
                              SMALL_IMAGE_DATASETS,
                              FinalConfig,
                              FinalError,
                              Recipe,
                              default_resolution,
                              load_arch_ref,
                              make_recipe,
)
from nas.final.data import FinalData, load_final_data
from nas.final.ema import WeightEMA
from nas.final.optim import RMSpropTF, make_optimizer, make_schedule
from nas.final.outputs import OUTPUTS, read_weights, result_line
from nas.final.run import train_final

__all__ = [
    "RECIPES",
    "SMALL_IMAGE_DATASETS",
    "FinalError",
    "FinalConfig",
    "Recipe",
    "default_resolution",
    "make_recipe",
    "load_arch_ref",
    "NO_FLIP",
    "crop_flip",
    "rand_augment",
    "make_augment",
    "WeightEMA",
    "RMSpropTF",
    "make_optimizer",
    "make_schedule",
    "FinalData",
    "load_final_data",
    "CHECKPOINT",
    "run_settings",
    "run_state",
    "load_checkpoint",
    "OUTPUTS",
    "read_weights",
    "result_line",
    "train_final",
]
