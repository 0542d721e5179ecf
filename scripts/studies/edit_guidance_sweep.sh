#!/usr/bin/env bash
# How much guidance on the edit difference should a model ship with (sample.edit_guidance)?
# Runs `patronus evaluate-edits` on the same N seeded test images at each W (its amplified row decodes s' with
# eps(s') + W (eps(s') - eps(s))), all prototypes, one strength (the own-max target), and tabulates the amplified
# row's rise / off-target / leak per rise / effective request (1 + W) beside the unguided headline (W = 0) into
# OUT/sweep.md and OUT/sweep.csv. A guided rise is an amplified figure (to first order a (1 + W)-fold request):
# choose W on one image seed (SEED, default 0) and confirm it on another; the leak per rise says what W buys.
#   bash scripts/studies/edit_guidance_sweep.sh RUN [OUT] [N] [STEPS] [W ...]
#   (defaults: results/edit_guidance_sweep 16 20 0 1 2; measured: 6-8 min per W on 2 threads at N=16, 20 steps)
set -euo pipefail
cd "$(dirname "$0")/../.."
RUN=${1:?usage: edit_guidance_sweep.sh RUN [OUT] [N] [STEPS] [W ...]}
OUT=${2:-results/edit_guidance_sweep}
N=${3:-16}
STEPS=${4:-20}
shift $(( $# < 4 ? $# : 4 ))
WS=${*:-0 1 2}
P=.venv/bin/patronus
mkdir -p "$OUT"
for w in $WS; do
  t0=$SECONDS
  $P evaluate-edits --run "$RUN" --n "$N" --steps "$STEPS" --strengths 1 --edit-guidance "$w" --no-realism \
      --no-steerability --seed "${SEED:-0}" --no-progress --out "$OUT/w$w" > "$OUT/w$w.log" 2>&1
  echo "w=$w $((SECONDS - t0)) s" | tee -a "$OUT/times.txt"
done
.venv/bin/python - "$OUT" $WS <<'EOF'
import json, sys
from pathlib import Path
out, ws = Path(sys.argv[1]), sys.argv[2:]
rows = []
for w in ws:
    d = json.loads((out / f"w{w}" / "edits_eval.json").read_text())
    row = d["amplified"] or d  # W = 0: the headline itself
    rows.append([w, round(1 + float(w), 3), row["median_rise"], row["median_rise_ci95"], row["median_off_target"],
                 row["leak_per_rise"], d["median_rise"], round(d["seconds"])])
head = ["edit guidance w", "effective request", "rise", "rise 95 % interval", "off-target", "leak per rise",
        "unguided rise (same images)", "seconds of evaluate-edits"]
(out / "sweep.csv").write_text("\n".join(",".join(str(v).replace(",", ";") for v in r) for r in [head] + rows) + "\n")
md = ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
md += ["| " + " | ".join(str(v) for v in r) + " |" for r in rows]
(out / "sweep.md").write_text("\n".join(md) + "\n")
print("\n".join(md))
EOF
