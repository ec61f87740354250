"""The proxy task: datasets read into memory, the fast proxy trainer, held-out evaluation, DDP helpers, zero-cost proxies."""
from nas.proxy.readers import (DataError, read_idx, read_idx_pair, read_cifar, read_digits, make_synthetic)
from nas.proxy.imagefolder import (IMAGE_EXTENSIONS, list_image_folder, FolderSplit)
from nas.proxy.data import (DATASETS, DataConfig, ProxyData, TensorSplit, load_data, stratified_split)
from nas.proxy.distributed import (DistInfo, init_from_env, all_reduce_sum, broadcast_flag, any_flag, average_bn_statistics)
from nas.proxy.evaluation import (autocast, recalibrate_bn, evaluate)
from nas.proxy.train import (OPTIMIZERS, AMP_MODES, TrainConfig, TrainResult, TrainingDiverged, train_proxy)
from nas.proxy.zero_cost import (ZC_PROXIES, score, score_arch)

__all__ = [
    "DataError",
    "read_idx",
    "read_idx_pair",
    "read_cifar",
    "read_digits",
    "make_synthetic",
    "IMAGE_EXTENSIONS",
    "list_image_folder",
    "FolderSplit",
    "DATASETS",
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
    "evaluate",
    "OPTIMIZERS",
    "AMP_MODES",
    "TrainConfig",
    "TrainResult",
    "TrainingDiverged",
    "train_proxy",
    "ZC_PROXIES",
    "score",
    "score_arch",
]
