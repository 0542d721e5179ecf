"""Which training recipe makes s steer the decoder? (the steering study)

Trains cpu-small candidates on Fashion-MNIST from one seed on the same budget, one after another (one torch
job at a time), each resumable, then measures every finished candidate the same way:

    python benchmarks/steering_study.py train   [--out results/steering_study] [--epochs 1] [--only NAME,...]
    python benchmarks/steering_study.py measure [--out results/steering_study] [--n 16] [--fid-n 500]
    python benchmarks/steering_study.py table   [--out results/steering_study]      # the markdown table

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

ROOT = Path(__file__).resolve().parents[1]
PATRONUS = [sys.executable, "-m", "patronus_diffusion.cli.main"]

# name -> (what it tests, overrides on top of cpu-small). cpu-small already has cond_norm=layer, patch init.
CANDIDATES: dict[str, tuple[str, list[str]]] = {
    "layer": ("today's cpu-small: LayerNorm on s, added to every block", []),
    "honour": ("+ honour loss (re-encode the predicted x0 under edited s)", ["train.honour_weight=0.05"]),
    "film": ("+ scale-shift (FiLM/AdaGN) conditioning", ["unet.cond_mode=film"]),
    "cluster": ("+ unsupervised cluster cost (prototypes near real patches)", ["train.cluster_weight=0.05"]),
    "combo": ("film + honour + cluster", ["unet.cond_mode=film", "train.honour_weight=0.05",
                                          "train.cluster_weight=0.05"]),
    "cfg": ("+ condition dropout 0.1 (learned null; guidance on s at decode)", ["train.cond_dropout=0.1"]),
    "reference": ("the reference conditioning (no LayerNorm)", ["unet.cond_norm=none"]),
}


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


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    t = sub.add_parser("train", help="train every candidate (resumable)")
    t.add_argument("--out", default="results/steering_study")
    t.add_argument("--epochs", type=float, default=1.0)
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--only", help="comma-separated candidate names")
    args = p.parse_args(argv)
    {"train": cmd_train}[args.cmd](args)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
