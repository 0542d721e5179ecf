#!/usr/bin/env bash
# Does LayerNorm on s before the condition MLP (unet.cond_norm=layer) help a CPU-budget Patronus model?
# Trains cpu-small on Fashion-MNIST twice from the same seed, side by side on one thread each, with
# cond_norm=none (the reference) and =layer, then measures on each:
#   * the decoder's use of s and the prototype quality table (patronus quality),
#   * explanation faithfulness, i.e. whether an edit to max(s_X) moves the image (patronus explain, 6 prototypes),
#   * conditional FID/KID with the real Inception network (N images, small-N protocol line).
# Prints one JSON object per model and writes OUT/summary.json.
#   bash scripts/studies/cond_norm_study.sh [OUT] [STEPS] [N]     (defaults: results/cond_norm_study 937 500)
# Measured: about 35 min on 2 cores (two 14-min trainings side by side, then about 5 min of measurements each).
set -euo pipefail
cd "$(dirname "$0")/../.."
OUT=${1:-results/cond_norm_study}
STEPS=${2:-937}
N=${3:-500}
P=.venv/bin/patronus
mkdir -p "$OUT"
for norm in none layer; do
  OMP_NUM_THREADS=1 $P train --preset cpu-small --out "$OUT/run-$norm" --steps "$STEPS" --no-progress \
      --set unet.cond_norm=$norm $( [ -f "$OUT/run-$norm/config.json" ] && echo --resume ) \
      > "$OUT/train-$norm.log" 2>&1 &
done
wait
for norm in none layer; do
  (
    OMP_NUM_THREADS=1 $P quality --run "$OUT/run-$norm" --out "$OUT/quality-$norm" --no-progress
    OMP_NUM_THREADS=1 $P explain --run "$OUT/run-$norm" --prototypes 0,5,10,15,20,25 --out "$OUT/explain-$norm" \
        --no-progress
    OMP_NUM_THREADS=1 $P fid --run "$OUT/run-$norm" --mode conditional --n "$N" --out "$OUT/fid-$norm" --no-progress
  ) > "$OUT/measure-$norm.log" 2>&1 &
done
wait
.venv/bin/python - "$OUT" <<'EOF'
import json, sys
out = sys.argv[1]
rows = {}
for norm in ("none", "layer"):
    q = json.load(open(f"{out}/quality-{norm}/quality.json"))
    e = json.load(open(f"{out}/explain-{norm}/explain.json"))
    f = json.load(open(f"{out}/fid-{norm}/fid.json"))
    rows[norm] = {"s_use_gain": q["s_use"]["gain"], "probe_accuracy": q["probes"]["class"]["mean"],
                  "tad": q["tad"]["mean"], "captured": q["attributes_captured"]["mean"],
                  "s_correlated_pairs": len(q["redundancy"]["s_correlated_pairs"]),
                  "explain_rise_median": e["faithfulness"]["rise_median"],
                  "explain_others_median": e["faithfulness"]["others_median"],
                  "fid": f["fid"], "kid": f["kid"], "kid_std": f["kid_std"], "protocol": f["protocol_line"]}
    print(json.dumps({"cond_norm": norm, **rows[norm]}))
json.dump(rows, open(f"{out}/summary.json", "w"), indent=2)
EOF
