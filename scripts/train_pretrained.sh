#!/usr/bin/env bash
# How the shipped model pretrained:fashion-mnist is made (resumable; re-run to continue).
#   bash scripts/train_pretrained.sh [EPOCHS] [RUN_DIR]
# Trains the cpu-small preset on Fashion-MNIST one epoch at a time and exports the EMA weights, config
# and training log into the package after every epoch (src/patronus_diffusion/pretrained/fashion-mnist/).
set -euo pipefail
cd "$(dirname "$0")/.."
EPOCHS=${1:-4}
RUN=${2:-runs/pretrained-fmnist-v2}
BIN=.venv/bin
for e in $(seq 1 "$EPOCHS"); do
  $BIN/patronus train --preset cpu-small --out "$RUN" --resume-if-present --epochs "$e" --no-progress \
    --set train.sample_every=1000 train.checkpoint_every=250 train.keep_checkpoints=2
  $BIN/patronus export --run "$RUN" --out src/patronus_diffusion/pretrained/fashion-mnist
done
