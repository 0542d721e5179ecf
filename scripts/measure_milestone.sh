#!/usr/bin/env bash
# Measure one exported milestone of a long training (issue 33's training curve), on fresh images (seed 1):
#   bash scripts/measure_milestone.sh MILESTONE_DIR [OUT]        (OUT default: MILESTONE_DIR/measured)
# - the decoder's own edit response: evaluate-edits, w = 0, 50 steps, 16 fresh test images, own-max target
# - class agreement of generations from s: n = 500 images x 4 noises, image seed 1
# - conditional FID/KID at N = 1,000 (its real-data floor is the same for every milestone: fid --mode real-sources)
# Each step is skipped when its result file exists, so a killed run resumes; each logs its time.
# Then: python scripts/training_curve.py RUN/milestones docs/images/training_curve  (the curves, CSV + PNG)
set -euo pipefail
cd "$(dirname "$0")/.."
M=$1
OUT=${2:-$M/measured}
P=${PATRONUS:-.venv/bin/patronus}
mkdir -p "$OUT"
step() { local name=$1 file=$2; shift 2; if [[ -f "$OUT/$file" ]]; then return; fi
         local t0=$SECONDS; "$@" > "$OUT/$name.log" 2>&1; echo "$name: $((SECONDS - t0)) s" >> "$OUT/timings.txt"; }
step edits edits/edits_eval.json $P evaluate-edits --run "$M" --n 16 --seed 1 --strengths 1 --edit-guidance 0 \
     --no-realism --out "$OUT/edits" --no-progress
step agreement agreement/class_agreement.json $P evaluate --run "$M" --modes none --recon-n 4 --recon-steps 20 --agreement-n 500 \
     --agreement-k 4 --seed 1 --out "$OUT/agreement" --no-progress
step fid fid/fid.json $P fid --run "$M" --mode conditional --n 1000 --out "$OUT/fid" --no-progress
cat "$OUT/timings.txt"
