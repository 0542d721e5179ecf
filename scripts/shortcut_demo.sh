#!/usr/bin/env bash
# The built-in shortcut demonstration, end to end (docs/quality.md, "Measured"):
#   1. plant a corner mark on Fashion-MNIST: tied to footwear (biased, phi = 1), tied the opposite way
#      (opposite, phi = -0.9: the mark sits on the garments that are *not* footwear) and independent (unbiased);
#   2. train one cpu-small model (cond_norm=layer) on each (STEPS, default 2000), two side by side on one
#      thread each, then the third on two threads;
#   3. diagnose each with the paper's edit (raise the top-2 prototypes of each attribute to their
#      plausible maximum) and an independent probe trained on the unbiased images;
#   4. print the verdicts; results in OUT/diagnose-{biased,opposite,unbiased}/ and OUT/summary.json.
#   bash scripts/shortcut_demo.sh [OUT] [STEPS]     (measured: see docs/quality.md)
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-results/shortcut-demo}
STEPS=${2:-2000}
P=${PATRONUS:-.venv/bin/patronus}
DATA=runs/shortcut-demo
mkdir -p "$OUT"
[ -f "$DATA/demo.json" ] || $P make-biased --demo --correlation 1.0 --out "$DATA"
[ -f "$DATA-opposite/demo.json" ] || $P make-biased --demo --correlation -0.9 --out "$DATA-opposite"
data_of() { case "$1" in opposite) echo "$DATA-opposite/biased" ;; *) echo "$DATA/$1" ;; esac; }
train() {  # MODEL THREADS
  local d; d=$(data_of "$1")
  OMP_NUM_THREADS=$2 $P train --preset cpu-small --dataset folder --data-root "$d" \
      --attributes-csv "$d/attributes.csv" --out "runs/demo-$1" --steps "$STEPS" --no-progress \
      --set unet.cond_norm=layer --resume-if-present > "$OUT/train-$1.log" 2>&1
}
diagnose() {  # MODEL THREADS
  OMP_NUM_THREADS=$2 $P diagnose --run "runs/demo-$1" --attributes footwear,mark --probe-data "$DATA/unbiased" \
      --n 48 --seeds 4 --out "$OUT/diagnose-$1" --no-progress > "$OUT/diagnose-$1.log" 2>&1
}
train biased 1 & train opposite 1 & wait
train unbiased 2 & diagnose biased 1 & wait      # (unbiased trains while biased is diagnosed)
diagnose opposite 1 & diagnose unbiased 1 & wait
.venv/bin/python - "$OUT" <<'PY'
import json, sys
out = sys.argv[1]
rows = {}
for m in ("biased", "opposite", "unbiased"):
    d = json.load(open(f"{out}/diagnose-{m}/diagnosis.json"))
    rows[m] = {k: d.get(k) for k in ("score", "ci95", "seed_std", "verdict", "reason", "directions", "effects")}
    print(f"{m:9s} score {d['score']:+.3f} [{d['ci95'][0]:+.3f}, {d['ci95'][1]:+.3f}]  {d['verdict']}: {d['reason']}")
json.dump(rows, open(f"{out}/summary.json", "w"), indent=2)
PY
