#!/usr/bin/env bash
# One worker whose trials train on all GPUs of this machine, launched by torchrun directly
# (what `nas-search --nproc-per-node N` does for you). Start as many of these, on as many
# machines, as you like: they cooperate through the study.
#
#   NAS_STORAGE=postgresql://nas@dbhost:5432/nas experiments/cluster/torchrun_search.sh [GPUS]
set -euo pipefail
: "${NAS_STORAGE:?set NAS_STORAGE=postgresql://user@host:port/db}"
gpus=${1:-$(nvidia-smi -L | wc -l)}
exec torchrun --standalone --nproc-per-node "$gpus" -m nas.cli \
     --config experiments/b0_imagenet.yaml --storage "$NAS_STORAGE" --out runs/b0_imagenet
