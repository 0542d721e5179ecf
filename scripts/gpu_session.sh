#!/usr/bin/env bash
# One prepared run for a lent accelerator (the `device` tool): the shipped model's 20-epoch training with the
# study's recipe, then its prior, then the multi-seed ProtoDiffusion comparison, each bounded in time, results
# under $OUT. PyTorch is preinstalled there and nothing downloads: the package runs from PYTHONPATH=src and the
# four Fashion-MNIST IDX files travel in the ignored folder data/fashion-mnist/ (carry it).
#   Test here first at a tiny size:  TINY=1 OUT=/tmp/gpu_out bash scripts/gpu_session.sh
#   There:  run(command="bash scripts/gpu_session.sh", carry=["data/fashion-mnist"], timeout_s=540)
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH=src
OUT=${OUT:?set OUT}
DATA=${DATA:-data/fashion-mnist}
PY=${PY:-python3}
DEV=${DEV:-cuda}
if [ "${TINY:-0}" = 1 ]; then EPOCHS=0.02; PRIOR_MIN=0.05; STEPS=20; SEEDS=0,1; NGEN=20; DEV=${DEV_TINY:-cpu}
else EPOCHS=20; PRIOR_MIN=1; STEPS=4000; SEEDS=0,1,2; NGEN=1000; fi
P="$PY -m patronus_diffusion.cli.main"
nvidia-smi -L > "$OUT/hardware.txt" 2>/dev/null || echo "no nvidia-smi ($DEV)" > "$OUT/hardware.txt"
$PY -c "import torch; print('torch', torch.__version__)" >> "$OUT/hardware.txt"
timeout "${TRAIN_S:-330}" $P train --preset cpu-small --data-root "$DATA" --out "$OUT/run" --device "$DEV" \
  --epochs "$EPOCHS" --no-progress --set train.batch_size=256 train.lr=2e-3 train.precision=bf16 \
  train.checkpoint_every=500 train.sample_every=0 > "$OUT/train.log" 2>&1 || echo "train stopped: $?" >> "$OUT/train.log"
$P train-prior --run "$OUT/run" --out "$OUT/run/prior" --minutes "$PRIOR_MIN" --device "$DEV" --no-progress \
  > "$OUT/prior.log" 2>&1 || true
timeout "${COMPARE_S:-150}" $P protodiff compare --out "$OUT/compare" --data-root "$DATA" --seeds "$SEEDS" \
  --train-steps "$STEPS" --checkpoints 4 --n-gen "$NGEN" --device "$DEV" --no-progress > "$OUT/compare.log" 2>&1 \
  || echo "compare stopped: $?" >> "$OUT/compare.log"
tar -C "$OUT" -czf "$OUT/results.tgz" --exclude="results.tgz" --exclude="*/checkpoints/*" run compare 2>/dev/null || true
ls -la "$OUT"
