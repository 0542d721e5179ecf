#!/usr/bin/env bash
# One prepared run for a lent accelerator (the `device` tool): issue 17's multi-seed ProtoDiffusion comparison with
# the CPU study's exact settings (carry/README.md), at 4 of its 8 evaluation steps (1,000 ... 4,000, the same
# targets), bounded in time; results under $OUT. The study itself lives in $WORK (default gpu_work/, ignored), which
# stays on a warm machine between calls, so re-running the command resumes it. PyTorch is preinstalled there and
# nothing downloads: the package runs from PYTHONPATH=src and the four Fashion-MNIST IDX files travel in the
# ignored folder data/fashion-mnist/ (make it with: mkdir -p data/fashion-mnist && cp
# /usr/share/datasets/fashion-mnist/*.gz data/fashion-mnist/; carry it).
#   Test here first at a tiny size:  TINY=1 OUT=/tmp/gpu_out bash scripts/gpu_session.sh
#   There:  run(command="bash scripts/gpu_session.sh", carry=["data/fashion-mnist"], timeout_s=480)
# The shipped model's 20-epoch recipe (issue 16's conditional FID) is a call of its own, only if time is left:
#   run(command="WITH_TRAIN=1 COMPARE_S=0 bash scripts/gpu_session.sh", carry=["data/fashion-mnist"], timeout_s=420)
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH=src
OUT=${OUT:?set OUT}
DATA=${DATA:-data/fashion-mnist}
PY=${PY:-python3}
DEV=${DEV:-cuda}
WORK=${WORK:-gpu_work}
mkdir -p "$WORK" "$OUT"
if [ "${TINY:-0}" = 1 ]; then STEPS=8; CKPTS=2; SEEDS=0,1; NGEN=8; NREF=16; EPOCHS=0.02; DEV=${DEV_TINY:-cpu}
  EXTRA=(--classifier-epochs 0.01 --steps 2)
else STEPS=4000; CKPTS=4; SEEDS=${SEEDS:-0,1,2}; NGEN=1000; NREF=2000; EPOCHS=20; EXTRA=(); fi
P="$PY -m patronus_diffusion.cli.main"
{ nvidia-smi -L 2>/dev/null || echo "no nvidia-smi ($DEV)"; $PY -c "import torch; print('torch', torch.__version__)"; } \
  > "$OUT/hardware.txt"
if [ "${COMPARE_S:-420}" != 0 ]; then
  timeout "${COMPARE_S:-420}" $P protodiff compare --out "$WORK/compare" --data-root "$DATA" --seeds "$SEEDS" \
    ${EXTRA[@]+"${EXTRA[@]}"} --set unet.base_channels=16 unet.groups=4 --train-steps "$STEPS" \
    --checkpoints "$CKPTS" --n-gen "$NGEN" --n-ref "$NREF" --device "$DEV" --no-progress > "$OUT/compare.log" 2>&1 \
    || echo "compare stopped: $? (re-run the same command to resume)" >> "$OUT/compare.log"
  $P protodiff compare --out "$WORK/compare" --report-only >> "$OUT/compare.log" 2>&1 || true
  # at most 8 files come back: the log, the summary and one archive of the evaluations, tables and plots (the
  # weights stay in $WORK)
  cp "$WORK/compare/summary.md" "$OUT/" 2>/dev/null || true
  tar -C "$WORK" -czf "$OUT/compare.tgz" --exclude="*/checkpoints" --exclude="*.safetensors" compare || true
fi
if [ "${WITH_TRAIN:-0}" = 1 ]; then
  timeout "${TRAIN_S:-300}" $P train --preset cpu-small --data-root "$DATA" --out "$WORK/run" --device "$DEV" \
    --epochs "$EPOCHS" --no-progress --set train.batch_size=256 train.lr=2e-3 train.precision=bf16 \
    train.checkpoint_every=500 train.sample_every=0 > "$OUT/train.log" 2>&1 || echo "train stopped: $?" >> "$OUT/train.log"
  tar -C "$WORK" -czf "$OUT/run.tgz" --exclude="*/checkpoints" run || true  # keeps run/model.safetensors
fi
ls -la "$OUT"
