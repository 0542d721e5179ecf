#!/usr/bin/env bash
# How the shipped model pretrained:fashion-mnist is made (resumable; re-run to continue).
#   bash scripts/train_pretrained.sh [EPOCHS] [RUN_DIR] [EXPORT_DIR]
# Trains the cpu-small preset (the steering study's recipe: cosine prototype metric, FiLM conditioning on s) on
# Fashion-MNIST one epoch at a time, checkpointing every 250 steps, channels-last (1.15x the training images/s
# of the default layout on these CPUs: `patronus bench --preset cpu-small --compare`, 64.5 vs 55.8). After the last epoch it exports the EMA
# weights, config and training log to EXPORT_DIR (default: the package's pretrained/fashion-mnist/).
# Extra overrides: RECIPE="train.cond_dropout=0.1" bash scripts/train_pretrained.sh 20
# Milestones: every MILESTONE_EVERY epochs (default 5) the EMA weights are exported to RUN/milestones/epoch_NN, so
# a training curve can be measured on them later (scripts/measure_milestone.sh); existing milestones are kept.
# Train on (issue 33): bash scripts/train_pretrained.sh 60 runs/pretrained-fmnist-v5 runs/pretrained-fmnist-v5/export
set -euo pipefail
cd "$(dirname "$0")/.."
EPOCHS=${1:-20}
RUN=${2:-runs/pretrained-fmnist-v5}
EXPORT=${3:-src/patronus_diffusion/pretrained/fashion-mnist}
EVERY=${MILESTONE_EVERY:-5}
PATRONUS=${PATRONUS:-.venv/bin/patronus}
for e in $(seq 1 "$EPOCHS"); do
  $PATRONUS train --preset cpu-small --out "$RUN" --resume-if-present --epochs "$e" --no-progress \
    --set train.sample_every=1000 train.checkpoint_every=250 train.keep_checkpoints=2 train.channels_last=true ${RECIPE:-}
  milestone=$(printf '%s/milestones/epoch_%02d' "$RUN" "$e")
  reached=$(python3 -c 'import json,sys; print(int(round(json.load(open(sys.argv[1]))["epoch"])))' "$RUN/train_summary.json")
  # only when this call trained up to epoch e (a resumed run skips the epochs it already has)
  if (( e % EVERY == 0 )) && (( reached == e )) && [[ ! -e "$milestone" ]]; then
    $PATRONUS export --run "$RUN" --out "$milestone"
  fi
done
$PATRONUS export --run "$RUN" --out "$EXPORT"
