#!/usr/bin/env bash
# The main job: install, train a diffusion model on Fashion-MNIST (the default data), write samples.
# Usage: bash scripts/main.sh [RUN_DIR] [STEPS]
set -euo pipefail
cd "$(dirname "$0")/.."
RUN_DIR="${1:-runs/fmnist}"
STEPS="${2:-}"
DATA_DIR=/usr/share/datasets/fashion-mnist
if [ ! -d "$DATA_DIR" ]; then
  if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
    apt-get update -qq && apt-get install -y -qq dataset-fashion-mnist
  elif command -v apt-get >/dev/null 2>&1 && command -v sudo >/dev/null 2>&1; then
    sudo apt-get update -qq && sudo apt-get install -y -qq dataset-fashion-mnist
  else
    echo "main: Fashion-MNIST is missing — install the Debian package dataset-fashion-mnist, or use --data fashion-mnist:DIR with the IDX files" >&2
    exit 1
  fi
fi
bash scripts/setup.sh
U=.venv/bin/undiffuse
if [ -f "$RUN_DIR/config.json" ]; then
  $U train --data fashion-mnist --out "$RUN_DIR" --resume ${STEPS:+--steps "$STEPS"}
else
  $U train --data fashion-mnist --out "$RUN_DIR" ${STEPS:+--steps "$STEPS"}
fi
$U sample "$RUN_DIR" --n 64 --seed 0 --sampler ddim --steps 50 --out "$RUN_DIR/samples.png"
echo "main: samples in $RUN_DIR/samples.png, loss plot in $RUN_DIR/loss.png, checkpoints in $RUN_DIR/checkpoints/"
