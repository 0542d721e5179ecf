"""Issue 33's training curve: the measures of every milestone of a long training, as a CSV and a figure.

    python scripts/training_curve.py RUN/milestones OUT_STEM [--floor FID_JSON]

Reads MILESTONE/measured/{edits/edits_eval.json, agreement/class_agreement.json, fid/fid.json} of every
``epoch_NN`` folder (made by scripts/measure_milestone.sh) and writes OUT_STEM.csv and OUT_STEM.png: the decoder's
own rise (w = 0, true median with its bootstrap interval), leak per rise, prototypes below 0.2, class agreement
with its standard error, conditional FID and its excess over the real-data floor (``--floor``: the fid.json of
``patronus fid --mode real-sources --n 1000``), KID. Milestones not measured yet are left out.
"""

from __future__ import annotations

import argparse
import csv
import json
import re
from pathlib import Path

COLUMNS = ["epoch", "rise", "rise_lo", "rise_hi", "off_target", "leak_per_rise", "below_0.2", "agreement",
           "agreement_se", "fid", "fid_excess", "kid"]


def _load(path: Path) -> dict | None:
    return json.loads(path.read_text()) if path.is_file() else None


def rows(milestones: Path, floor: float | None) -> list[dict]:
    out = []
    for m in sorted(milestones.glob("epoch_*")):
        ep = int(re.sub(r"\D", "", m.name))
        e, a, f = (_load(m / "measured" / p) for p in ("edits/edits_eval.json", "agreement/class_agreement.json",
                                                        "fid/fid.json"))
        if not (e or a or f):
            continue
        r = {"epoch": ep}
        if e:
            lo, hi = e.get("median_rise_ci95") or (None, None)
            r |= {"rise": e["median_rise"], "rise_lo": lo, "rise_hi": hi, "off_target": e["median_off_target"],
                  "leak_per_rise": e.get("leak_per_rise"), "below_0.2": e.get("n_prototypes_below_0.2")}
        if a:
            r |= {"agreement": a["agreement"], "agreement_se": a.get("agreement_standard_error")}
        if f:
            r |= {"fid": round(f["fid"], 2), "kid": f["kid"],
                  "fid_excess": None if floor is None else round(f["fid"] - floor, 2)}
        out.append(r)
    return out


def figure(data: list[dict], path: Path) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(12, 3.4))
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, 4)
    ep = [r["epoch"] for r in data]

    def line(ax, key, label, goal=None, band=None):
        xs = [r["epoch"] for r in data if r.get(key) is not None]
        ys = [r[key] for r in data if r.get(key) is not None]
        ax.plot(xs, ys, marker="o", label=label)
        if band:
            lo = [r.get(band[0]) for r in data if r.get(key) is not None]
            hi = [r.get(band[1]) for r in data if r.get(key) is not None]
            if all(v is not None for v in lo + hi):
                ax.fill_between(xs, lo, hi, alpha=0.2)
        if goal is not None:
            ax.axhline(goal, color="grey", linestyle=":", linewidth=1)
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
        ax.set_title(label, fontsize=9)

    line(axes[0], "rise", "decoder's own rise (w = 0; goal 0.6)", 0.6, ("rise_lo", "rise_hi"))
    line(axes[1], "leak_per_rise", "leak per rise (goal 0.12)", 0.12)
    line(axes[2], "agreement", "class agreement (seed 1, n = 500; goal 0.85)", 0.85)
    line(axes[3], "fid_excess" if any(r.get("fid_excess") is not None for r in data) else "fid",
         "conditional FID excess over the real floor (goal 3)", 3)
    fig.suptitle(f"training curve of the shipped recipe, epochs {min(ep)}-{max(ep)}", fontsize=10)
    fig.tight_layout()
    tmp = path.with_suffix(".tmp.png")
    fig.savefig(tmp, dpi=110)
    tmp.replace(path)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("milestones", type=Path)
    ap.add_argument("out", type=Path, help="output stem: OUT.csv and OUT.png")
    ap.add_argument("--floor", type=Path, help="fid.json of `patronus fid --mode real-sources --n 1000`")
    a = ap.parse_args()
    floor = _load(a.floor)["fid"] if a.floor else None
    data = rows(a.milestones, floor)
    if not data:
        ap.error(f"no measured milestone under {a.milestones} (run scripts/measure_milestone.sh first)")
    a.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = a.out.with_suffix(".tmp.csv")
    with tmp.open("w", newline="") as fh:
        w = csv.DictWriter(fh, COLUMNS)
        w.writeheader()
        w.writerows(data)
    tmp.replace(a.out.with_suffix(".csv"))
    figure(data, a.out.with_suffix(".png"))
    print(f"wrote {a.out.with_suffix('.csv')} and {a.out.with_suffix('.png')} ({len(data)} milestones)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
