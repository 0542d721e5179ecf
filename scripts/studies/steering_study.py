"""Which training recipe makes s steer the decoder? (the steering study)

Trains cpu-small candidates on Fashion-MNIST from one seed on the same budget, one after another (one torch
job at a time), each resumable, then measures every finished candidate the same way:

    python scripts/studies/steering_study.py train   [--out results/steering_study] [--epochs 1] [--only NAME,...]
    python scripts/studies/steering_study.py measure [--out results/steering_study] [--n 16] [--fid-n 500]
    python scripts/studies/steering_study.py table   [--out results/steering_study]      # the markdown table

``train`` is safe to interrupt and re-run: each candidate resumes from its last checkpoint, finished ones are
skipped. Threads: OMP_NUM_THREADS (1 leaves a core free). The candidates are the --set overrides below.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PATRONUS = [sys.executable, "-m", "patronus_diffusion.cli.main"]

# name -> (what it tests, overrides on top of cpu-small as it was when the study began: cond_norm=layer, patch
# init, l2 metric, additive conditioning). BASE pins that starting point, since cpu-small now has the winner.
BASE = ["prototypes.metric=l2", "unet.cond_mode=add"]
CANDIDATES: dict[str, tuple[str, list[str]]] = {
    "layer": ("today's cpu-small: LayerNorm on s, added to every block", []),
    "honour": ("+ honour loss (re-encode the predicted x0 under edited s)", ["train.honour_weight=0.05"]),
    "film": ("+ scale-shift (FiLM/AdaGN) conditioning", ["unet.cond_mode=film"]),
    "cluster": ("+ unsupervised cluster cost (prototypes near real patches)", ["train.cluster_weight=0.05"]),
    "combo": ("film + honour + cluster", ["unet.cond_mode=film", "train.honour_weight=0.05",
                                          "train.cluster_weight=0.05"]),
    "cfg": ("+ condition dropout 0.1 (learned null; guidance on s at decode)", ["train.cond_dropout=0.1"]),
    "reference": ("the reference conditioning (no LayerNorm)", ["unet.cond_norm=none"]),
    "cosine": ("+ cosine metric (unit-length patches and prototypes: d in [0, 4])", ["prototypes.metric=cosine"]),
    "cosine-film": ("cosine metric + FiLM conditioning", ["prototypes.metric=cosine", "unet.cond_mode=film"]),
    "cosine-film-contrast": ("cosine-film + contrastive honour loss (only the edited prototype's change is asked)",
                             ["prototypes.metric=cosine", "unet.cond_mode=film", "train.honour_weight=0.05",
                              "train.honour_mode=contrast"]),
}
CANDIDATES = {name: (what, BASE + overrides) for name, (what, overrides) in CANDIDATES.items()}


# extra evaluate-edits flags per candidate: the condition-dropout model is decoded with guidance on s
EDIT_FLAGS: dict[str, list[str]] = {"cfg": ["--guidance", "2"]}


def _finished(run: Path, steps: int) -> bool:
    summary = run / "train_summary.json"
    return summary.exists() and json.loads(summary.read_text()).get("step", 0) >= steps


def cmd_train(args) -> None:
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    names = args.only.split(",") if args.only else list(CANDIDATES)
    steps = int(round(args.epochs * 938))  # 60,000 / 64 per epoch
    for name in names:
        run = out / f"run-{name}"
        if _finished(run, steps):
            print(f"[study] {name}: done ({steps} steps)")
            continue
        cmd = PATRONUS + ["train", "--preset", "cpu-small", "--out", str(run), "--steps", str(steps),
                          "--no-progress", "--seed", str(args.seed)]
        overrides = CANDIDATES[name][1] + ["train.checkpoint_every=100"]
        cmd += ["--set", *overrides]
        if (run / "latest.json").exists():
            cmd.append("--resume")
        print(f"[study] {name}: {' '.join(cmd[2:])}", flush=True)
        with open(out / f"train-{name}.log", "a") as log:
            subprocess.run(cmd, check=True, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT,
                           env=dict(os.environ, PYTHONPATH=str(ROOT / "src")))


def _run(cmd: list[str], log: Path) -> None:
    with open(log, "a") as f:
        subprocess.run(PATRONUS + cmd, check=True, stdout=f, stderr=subprocess.STDOUT, cwd=ROOT,
                       env=dict(os.environ, PYTHONPATH=str(ROOT / "src")))


def measure_one(run: Path, out: Path, n: int, fid_n: int, edit_flags: list[str] | None = None) -> dict:
    """Every measure of the table for one trained candidate (each step skipped when its file exists)."""
    out.mkdir(parents=True, exist_ok=True)
    log = out / "measure.log"
    steps = [
        (out / "edits" / "edits_eval.json", ["evaluate-edits", "--run", str(run), "--n", str(n), "--steps", "20",
                                             "--strengths", "0.5,1", *(edit_flags or []),
                                             "--out", str(out / "edits"), "--no-progress"]),
        (out / "quality" / "quality.json", ["quality", "--run", str(run), "--out", str(out / "quality"),
                                            "--no-progress"]),
        (out / "evaluate" / "evaluate.json", ["evaluate", "--run", str(run), "--n", str(fid_n), "--settings",
                                              "dpmpp-2m:20", "--modes", "conditional", "--recon-n", "32",
                                              "--recon-steps", "50", "--agreement-n", "100", "--agreement-k", "4",
                                              "--out", str(out / "evaluate"), "--no-progress"]),
    ]
    for done, cmd in steps:
        stale = done.name == "edits_eval.json" and done.exists() and "median_rise_lower" not in done.read_text()
        if not done.exists() or stale:  # edits measured before lowering was part of evaluate-edits: redo them
            _run(cmd, log)
    e = json.loads((out / "edits" / "edits_eval.json").read_text())
    q = json.loads((out / "quality" / "quality.json").read_text())
    v = json.loads((out / "evaluate" / "evaluate.json").read_text())
    log_rows = (run / "train_log.csv").read_text().splitlines()
    header = log_rows[0].split(",")
    ips = [float(r.split(",")[header.index("images_per_s")]) for r in log_rows[1:]]
    gen = v["generation"][0]
    return {"median_rise": e["median_rise"], "median_off_target": e["median_off_target"],
            "median_rise_lower": e.get("median_rise_lower"), "median_off_target_lower": e.get("median_off_target_lower"),
            "median_locality": e.get("median_locality"), "probe_accuracy": q["probes"]["class"]["mean"],
            "decoder_use_of_s": q.get("s_use", {}).get("gain"),
            "fid": gen["fid"], "kid": gen["kid"], "kid_std": gen["kid_std"], "fid_n": gen["n"],
            "psnr_50": v["reconstruction"][0]["psnr_db"],
            "class_agreement": (v.get("class_agreement") or {}).get("agreement"),
            "train_images_per_s": round(sum(ips) / len(ips), 1) if ips else None}


def cmd_measure(args) -> None:
    out = Path(args.out)
    names = args.only.split(",") if args.only else list(CANDIDATES)
    rows = {}
    summary_path = out / "summary.json"
    if summary_path.exists():
        rows = json.loads(summary_path.read_text())
    for name in names:
        run = out / f"run-{name}"
        if not (run / "train_summary.json").exists():
            print(f"[study] {name}: not trained yet, skipped")
            continue
        print(f"[study] measuring {name}", flush=True)
        row = {"what": CANDIDATES[name][0], "overrides": CANDIDATES[name][1],
               **measure_one(run, out / f"measure-{name}", args.n, args.fid_n, EDIT_FLAGS.get(name))}
        # re-read before writing: another `measure` (other candidates) may have updated the file meanwhile
        rows = json.loads(summary_path.read_text()) if summary_path.exists() else {}
        rows[name] = row
        summary_path.write_text(json.dumps(rows, indent=2))
        print(json.dumps({name: row}), flush=True)


COLUMNS = [("median_rise", "rise", "{:.3f}"), ("median_off_target", "off-target", "{:.3f}"),
           ("median_rise_lower", "rise (lower)", "{:.3f}"),
           ("median_locality", "locality", "{:.2f}"), ("probe_accuracy", "probe acc.", "{:.3f}"),
           ("class_agreement", "class agr.", "{:.3f}"), ("fid", "FID", "{:.1f}"), ("psnr_50", "PSNR@50", "{:.1f}"),
           ("train_images_per_s", "train img/s", "{:.0f}")]


def cmd_table(args) -> None:
    rows = json.loads((Path(args.out) / "summary.json").read_text())
    print("| candidate | what | " + " | ".join(c[1] for c in COLUMNS) + " |")
    print("| --- | --- | " + " | ".join("---" for _ in COLUMNS) + " |")
    for name, r in rows.items():
        cells = [fmt.format(r[k]) if isinstance(r.get(k), (int, float)) else "n/a" for k, _, fmt in COLUMNS]
        print(f"| {name} | {r['what']} | " + " | ".join(cells) + " |")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    t = sub.add_parser("train", help="train every candidate (resumable)")
    t.add_argument("--out", default="results/steering_study")
    t.add_argument("--epochs", type=float, default=1.0)
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--only", help="comma-separated candidate names")
    m = sub.add_parser("measure", help="measure every trained candidate (resumable)")
    m.add_argument("--out", default="results/steering_study")
    m.add_argument("--n", type=int, default=16, help="test images for evaluate-edits")
    m.add_argument("--fid-n", type=int, default=500, help="generated images for conditional FID/KID")
    m.add_argument("--only", help="comma-separated candidate names")
    tb = sub.add_parser("table", help="print the markdown table of summary.json")
    tb.add_argument("--out", default="results/steering_study")
    args = p.parse_args(argv)
    {"train": cmd_train, "measure": cmd_measure, "table": cmd_table}[args.cmd](args)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
