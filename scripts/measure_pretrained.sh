#!/usr/bin/env bash
# Re-measure the shipped model after (re)training it with scripts/train_pretrained.sh:
# its prior over s (shipped beside it), FID/KID conditional and unconditional, the explanation gallery
# (wall time, faithfulness), edit faithfulness (evaluate-edits), class agreement of generations from s,
# prototype quality, reconstruction, the README/doc pictures, and the bundle's MODEL_CARD.md (scripts/model_card.py;
# HARDWARE="..." names the training machine).
#   bash scripts/measure_pretrained.sh [OUT]          (measured: 21.5 min on 1 thread before the class agreement went to n = 500 (+7 min)
#   and the real-data FID floors were added (+8 min each); each step logs its time)
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-results/pretrained}
P=.venv/bin/patronus
R=pretrained:fashion-mnist
PKG=src/patronus_diffusion/pretrained/fashion-mnist
mkdir -p "$OUT"
timed() { local name=$1; shift; local t0=$SECONDS; "$@" > "$OUT/$name.log" 2>&1;
          echo "$name: $((SECONDS - t0)) s" | tee -a "$OUT/timings.txt"; }
: > "$OUT/timings.txt"
rm -rf "$OUT/prior"
timed prior   $P train-prior --run $R --out "$OUT/prior" --minutes "${PRIOR_MINUTES:-6}" --no-progress
mkdir -p "$PKG/prior"
cp "$OUT/prior/prior.safetensors" "$OUT/prior/prior.json" "$OUT/prior/prior_log.csv" "$PKG/prior/"
timed explain $P explain --run $R --out "$OUT/explain" --no-progress
timed quality $P quality --run $R --out "$OUT/quality" --no-progress
timed reconstruct $P reconstruct --run $R --n 16 --steps 10,20,50,100 --out "$OUT/reconstruct"
timed edits_eval $P evaluate-edits --run $R --n 16 --seed 1 --out "$OUT/edits_eval" --no-progress
timed agreement  $P evaluate --run $R --modes none --recon-n 16 --recon-steps 50 --agreement-n 500 --agreement-k 4 --seed 1 \
                 --out "$OUT/agreement" --no-progress
timed fid_cond   $P fid --run $R --mode conditional --n 1000 --out "$OUT/fid_conditional" --no-progress
timed fid_uncond $P fid --run $R --mode unconditional --n 1000 --out "$OUT/fid_unconditional" --no-progress
timed fid_real_sources $P fid --run $R --mode real-sources --n 1000 --out "$OUT/fid_real_sources" --no-progress
timed fid_real_train   $P fid --run $R --mode real-train --n 1000 --out "$OUT/fid_real_train" --no-progress
timed sample  $P sample --run $R --n 16 --out "$OUT/sample"
timed where   $P where --run $R --indices 0,1,2,3 --top-k 3 --out "$OUT/where" --no-progress
timed when    $P when --run $R --n 6 --out "$OUT/when" --no-progress
timed edit    $P edit --run $R --indices 0,1,2,3 --edit 3=max --edit "7*2" --out "$OUT/edit" --no-progress
cat "$OUT/timings.txt"
.venv/bin/python scripts/model_card.py "$OUT" "$PKG" > /dev/null   # MODEL_CARD.md from these result files
echo "model card: $PKG/MODEL_CARD.md"
