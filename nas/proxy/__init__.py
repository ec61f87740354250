"""The proxy task: its settings, datasets read into memory, the fast proxy trainer, where it runs, held-out
evaluation, DDP helpers, zero-cost proxies."""
from nas.proxy.config import ProxyTaskConfig, flag_name, proxy_fields
from nas.proxy.data import (
    DATASET_REGISTRY,
    DATASETS,
    DataConfig,
    DatasetSpec,
    ProxyData,
    TensorSplit,
    load_data,
    stratified_split,
)
from nas.proxy.distributed import (
    DistInfo,
    all_reduce_sum,
    any_flag,
    average_bn_statistics,
    broadcast_flag,
    init_from_env,
)
from nas.proxy.evaluation import autocast, evaluate, fold_bn, recalibrate_bn, recalibrate_on_calib
from nas.proxy.imagefolder import IMAGE_EXTENSIONS, FolderSplit, list_image_folder
from nas.proxy.readers import DataError, make_synthetic, read_cifar, read_digits, read_idx, read_idx_pair
from nas.proxy.runtime import (
    DEVICE_FORMS,
    check_device,
    default_amp,
    device_type,
    is_device_name,
    resolve_device,
    torch_threads,
)
from nas.proxy.split import Split
from nas.proxy.train import (
    AMP_MODES,
    OPTIMIZERS,
    TrainConfig,
    TrainingDiverged,
    TrainResult,
    decay_groups,
    train_proxy,
    warmup_cosine_lr,
)
from nas.proxy.zero_cost import ZC_PROXIES, score, score_arch

__all__ = [
    "warmup_cosine_lr",
    "decay_groups",
    "DataError",
    "read_idx",
    "read_idx_pair",
    "read_cifar",
    "read_digits",
    "make_synthetic",
    "IMAGE_EXTENSIONS",
    "list_image_folder",
    "FolderSplit",
    "Split",
    "DATASETS",
    "DATASET_REGISTRY",
    "DatasetSpec",
    "DataConfig",
    "ProxyData",
    "TensorSplit",
    "load_data",
    "stratified_split",
    "DistInfo",
    "init_from_env",
    "all_reduce_sum",
    "broadcast_flag",
    "any_flag",
    "average_bn_statistics",
    "autocast",
    "recalibrate_bn",
    "recalibrate_on_calib",
    "fold_bn",
    "evaluate",
    "DEVICE_FORMS",
    "is_device_name",
    "device_type",
    "check_device",
    "resolve_device",
    "default_amp",
    "torch_threads",
    "OPTIMIZERS",
    "AMP_MODES",
    "TrainConfig",
    "TrainResult",
    "TrainingDiverged",
    "train_proxy",
    "ProxyTaskConfig",
    "proxy_fields",
    "flag_name",
    "ZC_PROXIES",
    "score",
    "score_arch",
]
