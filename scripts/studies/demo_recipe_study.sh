#!/usr/bin/env bash
# Can a recipe make the `make demo` model's edits work sooner? Trains cpu-small candidates from seed 0 for the
# demo's budget (STEPS optimiser steps of 64 images, the demo's 6 minutes on 2 threads: 525), one after another,
# then measures each as the demo does (evaluate-edits on 8 test images, 20 DDIM steps, strength 1, the run's
# edit guidance) and prints one row per candidate:
#   bash scripts/studies/demo_recipe_study.sh [OUT] [STEPS] [NAME ...]       (re-run to continue; finished parts skip)
#   SEED=1 bash scripts/studies/demo_recipe_study.sh OUT-seed1 525 p10      (another training seed)
set -euo pipefail
cd "$(dirname "$0")/../.."
OUT=${1:-results/demo_recipe_study}; STEPS=${2:-525}; shift $(( $# > 2 ? 2 : $# )) || true
P="${PATRONUS:-.venv/bin/patronus}"
SEED=${SEED:-0}
declare -A SETS=(
  [base]=""                                               # cpu-small as shipped (= the demo's recipe)
  [lr2e-3]="train.lr=2e-3"                                # twice the learning rate
  [p10]="prototypes.num_prototypes=10"                    # a third of the prototypes, each seen more often
  [p10-lr2e-3]="prototypes.num_prototypes=10 train.lr=2e-3"
  [decor0.1]="train.decorrelate_weight=0.1"               # redundancy penalty on s (mean squared correlation)
  [decor1]="train.decorrelate_weight=1"
)
NAMES=("$@"); [ ${#NAMES[@]} -eq 0 ] && NAMES=(base lr2e-3 p10 p10-lr2e-3)
mkdir -p "$OUT"
for n in "${NAMES[@]}"; do
  run="$OUT/run-$n"
  if ! grep -q "\"step\": $STEPS" "$run/train_summary.json" 2>/dev/null; then
    t0=$SECONDS
    # shellcheck disable=SC2086
    $P train --preset cpu-small --out "$run" --steps "$STEPS" --seed "$SEED" --no-progress --resume-if-present \
       --set train.checkpoint_every=100 ${SETS[$n]} >> "$OUT/train-$n.log" 2>&1
    echo "$n: trained in $((SECONDS - t0)) s" >> "$OUT/timings.txt"
  fi
  [ -f "$OUT/edits-$n/edits_eval.json" ] || $P evaluate-edits --run "$run" --n 8 --steps 20 --strengths 1 \
       --out "$OUT/edits-$n" --no-progress > "$OUT/edits-$n.log" 2>&1
done
# redundancy of s: mean squared correlation between prototypes over 1,000 test images (what decorrelate_weight lowers)
PY="${PYTHON:-.venv/bin/python}"
for n in "${NAMES[@]}"; do
  [ -f "$OUT/s-corr-$n.json" ] || "$PY" - "$OUT/run-$n" "$OUT/s-corr-$n.json" <<'PYEOF'
import json, sys
from patronus_diffusion import Patronus
from patronus_diffusion.models.prototypes import similarity_correlation_loss
p = Patronus.load(sys.argv[1], device="cpu")
s = p.encode_dataset("test", indices=range(1000)).s.float()
json.dump({"mean_r2": float(similarity_correlation_loss(s)), "n_images": 1000}, open(sys.argv[2], "w"))
PYEOF
done
echo "| candidate | overrides | median rise | median off-target | locality | mean r^2 of s |"
echo "| --- | --- | --- | --- | --- | --- |"
for n in "${NAMES[@]}"; do
  python3 -c "import json,sys; d=json.load(open(sys.argv[1])); r=json.load(open(sys.argv[4]))['mean_r2']; print(f\"| {sys.argv[2]} | {sys.argv[3] or '-'} | {d['median_rise']:.3f} | {d['median_off_target']:.3f} | {d['median_locality']:.2f} | {r:.3f} |\")" \
    "$OUT/edits-$n/edits_eval.json" "$n" "${SETS[$n]}" "$OUT/s-corr-$n.json"
done
