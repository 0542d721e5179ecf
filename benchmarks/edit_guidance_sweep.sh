#!/usr/bin/env bash
# How much guidance on the edit difference should a model ship with (sample.edit_guidance)?
# Runs `patronus evaluate-edits --realism` on the same N seeded test images at each W (decode s' with
# eps(s') + W (eps(s') - eps(s))), all prototypes, one strength (the own-max target), and tabulates
# rise / off-target / rise (lower) / locality / KID of the edited images / seconds into OUT/sweep.md and
# OUT/sweep.csv. The issue's rule: the largest rise whose median off-target stays <= 0.1.
#   bash benchmarks/edit_guidance_sweep.sh RUN [OUT] [N] [STEPS] [W ...]
#   (defaults: results/edit_guidance_sweep 16 20 0 1 2; measured: 6-8 min per W on 2 threads at N=16, 20 steps)
set -euo pipefail
cd "$(dirname "$0")/.."
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
  $P evaluate-edits --run "$RUN" --n "$N" --steps "$STEPS" --strengths 1 --edit-guidance "$w" --realism \
      --no-progress --out "$OUT/w$w" > "$OUT/w$w.log" 2>&1
  echo "w=$w $((SECONDS - t0)) s" | tee -a "$OUT/times.txt"
done
.venv/bin/python - "$OUT" $WS <<'EOF'
import json, sys
from pathlib import Path
out, ws = Path(sys.argv[1]), sys.argv[2:]
rows = []
for w in ws:
    d = json.loads((out / f"w{w}" / "edits_eval.json").read_text())
    e = d["realism"]["edited"]
    rows.append([w, d["median_rise"], d["median_off_target"], d["median_rise_lower"], d["median_locality"],
                 f"{1e3 * e['kid']:.1f} +- {1e3 * e['kid_std']:.1f}", e["n"], round(d["seconds"])])
head = ["edit guidance w", "rise", "off-target", "rise (lower)", "locality", "KID x 1e3 of edits", "N edits",
        "seconds of evaluate-edits"]
(out / "sweep.csv").write_text("\n".join(",".join(map(str, r)) for r in [head] + rows) + "\n")
md = ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
md += ["| " + " | ".join(str(v) for v in r) + " |" for r in rows]
(out / "sweep.md").write_text("\n".join(md) + "\n")
print("\n".join(md))
EOF
