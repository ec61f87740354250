#!/usr/bin/env bash
# One-time set-up on a fresh Debian machine: system packages, the CPU build of PyTorch, the toolkit.
# GPU users: install the torch build for your CUDA first; the `pip install -e` below keeps it.
set -euo pipefail
cd "$(dirname "$0")/.."
if command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
  missing=""
  [ -d /usr/share/datasets/fashion-mnist ] || missing="$missing dataset-fashion-mnist"
  ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || missing="$missing postgresql"
  if [ -n "$missing" ]; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $missing >/dev/null
  fi
fi
py=${PYTHON:-python3}
if ! $py -c "import torch" 2>/dev/null; then
  $py -m pip install -q torch==2.13.0   # the CPU build; a plain `torch` would pull a 5 GB CUDA build
fi
# torchvision (the release made for the installed torch, so pip never swaps torch for another build) and
# timm: the tests import their EfficientNet models to check checkpoint import against the real thing.
tv=$($py -c "from importlib.metadata import version; print('0.%d.*' % (int(version('torch').split('.')[1]) + 15))")
$py -m pip install -q "torchvision==$tv" "timm>=1.0"
$py -m pip install -q -e ".[test,bench]"
