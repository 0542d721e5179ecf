#!/usr/bin/env bash
# The built-in shortcut demonstration, end to end (docs/quality.md, "Measured"):
#   1. plant a corner mark on Fashion-MNIST, tied to footwear (biased, phi = 1) and independent (unbiased);
#   2. train one cpu-small model (cond_norm=layer) on each, side by side, one thread each (STEPS, default 2000);
#   3. diagnose both with the paper's edit (raise the top-2 prototypes of each attribute to their
#      plausible maximum) and an independent probe trained on the unbiased images;
#   4. print both verdicts; results in OUT/diagnose-{biased,unbiased}/ and OUT/summary.json.
#   bash scripts/shortcut_demo.sh [OUT] [STEPS]     (measured: see docs/quality.md)
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-results/shortcut-demo}
STEPS=${2:-2000}
P=.venv/bin/patronus
DATA=runs/shortcut-demo
mkdir -p "$OUT"
[ -f "$DATA/demo.json" ] || $P make-biased --demo --correlation 1.0 --out "$DATA"
for m in biased unbiased; do
  OMP_NUM_THREADS=1 $P train --preset cpu-small --dataset folder --data-root "$DATA/$m" \
      --attributes-csv "$DATA/$m/attributes.csv" --out "runs/demo-$m" --steps "$STEPS" --no-progress \
      --set unet.cond_norm=layer \
      $( [ -f "runs/demo-$m/config.json" ] && echo --resume ) > "$OUT/train-$m.log" 2>&1 &
done
wait
for m in biased unbiased; do
  OMP_NUM_THREADS=1 $P diagnose --run "runs/demo-$m" --attributes footwear,mark --probe-data "$DATA/unbiased" \
      --n 48 --seeds 4 --out "$OUT/diagnose-$m" --no-progress > "$OUT/diagnose-$m.log" 2>&1 &
done
wait
.venv/bin/python - "$OUT" <<'EOF'
import json, sys
out = sys.argv[1]
rows = {}
for m in ("biased", "unbiased"):
    d = json.load(open(f"{out}/diagnose-{m}/diagnosis.json"))
    rows[m] = {k: d[k] for k in ("score", "ci95", "seed_std", "verdict", "reason", "effects", "tested_directions")}
    print(f"{m:9s} score {d['score']:+.3f} [{d['ci95'][0]:+.3f}, {d['ci95'][1]:+.3f}]  {d['verdict']}")
json.dump(rows, open(f"{out}/summary.json", "w"), indent=2)
EOF
