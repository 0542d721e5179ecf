"""What one model of `patronus diagnose-benchmark` costs at the real size, measured in a few CPU minutes.

Fine-tunes the shipped model for ``--steps`` steps on a patch set at rho = 1 (the step cost does not depend on the
set's size), then runs one seed of one diagnosis of (footwear, mark) at the study's default images and steps, and
times a probe epoch on 4,000 images (what a diagnosis seed trains 8 of). Prints the parts and the projection:

    per model = train_steps x s/step
                + (2 namings + K(K-1)/2 scan pairs) x diagnosis seeds x (seconds per diagnosis seed)
                + judge steerability (about one diagnosis direction)

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/diagnose_benchmark_cost.py --out /tmp/dbc --steps 20
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import torch


def timed(fn):
    t0, c0 = time.time(), time.process_time()
    out = fn()
    return out, time.time() - t0, time.process_time() - c0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="/tmp/diagnose_benchmark_cost")
    ap.add_argument("--steps", type=int, default=20, help="fine-tuning steps to time")
    ap.add_argument("--n", type=int, default=24, help="edited images per diagnosis seed")
    ap.add_argument("--ddim-steps", type=int, default=25)
    ap.add_argument("--study-train-steps", type=int, default=1000)
    ap.add_argument("--study-seeds", type=int, default=3, help="diagnosis seeds of the study")
    ap.add_argument("--attributes", type=int, default=4, help="K scanned attributes (footwear, mark, other, coin)")
    ap.add_argument("--models", type=int, default=18, help="models in the study (the default plan: 18)")
    args = ap.parse_args()

    from patronus_diffusion.analysis.shortcut import diagnose, train_probe
    from patronus_diffusion.api import Patronus
    from patronus_diffusion.config import DataConfig
    from patronus_diffusion.data.marks import marked_set
    from patronus_diffusion.experiments.diagnose_benchmark import BenchmarkSpec, model_config
    from patronus_diffusion.training import train

    out = Path(args.out)
    kw = dict(n_train=400, n_test=160)
    marked_set(out / "clean", "patch", 0.0, **kw)
    marked_set(out / "planted", "patch", 1.0, **kw)
    spec = BenchmarkSpec(train_steps=1)
    run = out / "run"
    # one step first (start-up: data, model, init weights), then the timed steps on top of it
    _, first_s, _ = timed(lambda: train(model_config(spec, out / "planted", 0), run, resume="if-present",
                                        device="cpu", progress=False, max_steps=1, init_from=spec.init_from))
    _, steps_s, steps_cpu = timed(lambda: train(model_config(spec, out / "planted", 0), run, resume=True,
                                                device="cpu", progress=False, max_steps=1 + args.steps))
    pat = Patronus.load(run, device="cpu")
    clean = out / "clean"
    cfg = DataConfig(**{**pat.config.data.__dict__, "dataset": "folder", "root": str(clean),
                        "attributes_csv": str(clean / "attributes.csv"), "limit": None})
    _, diag_s, diag_cpu = timed(lambda: diagnose(pat, "footwear", "mark", cfg, n_images=args.n, seeds=1, top_k=2,
                                                 steps=args.ddim_steps, probe_limit=400, progress=False))
    x = torch.randn(4000, 1, 32, 32).clamp(-1, 1)
    y = (torch.rand(4000, 2) > 0.5).numpy().astype("int64")
    _, epoch_s, _ = timed(lambda: train_probe(x, y, epochs=1))
    small_epoch_s = epoch_s * 400 / 4000
    per_seed = diag_s + 8 * (epoch_s - small_epoch_s)  # the probe at 4,000 clean images instead of 400
    k = args.attributes
    diagnoses = 2 + k * (k - 1) // 2
    eval_s = diagnoses * args.study_seeds * per_seed + per_seed / 2
    train_s = args.study_train_steps * steps_s / args.steps
    report = {"threads": torch.get_num_threads(), "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
              "load_average": os.getloadavg(), "first_step_s": round(first_s, 1),
              "s_per_step": round(steps_s / args.steps, 3), "cpu_s_per_step": round(steps_cpu / args.steps, 3),
              "diagnosis_one_seed_s": round(diag_s, 1), "diagnosis_one_seed_cpu_s": round(diag_cpu, 1),
              "probe_epoch_4000_s": round(epoch_s, 1), "diagnosis_seed_at_4000_clean_images_s": round(per_seed, 1),
              "projection": {"train_s": round(train_s), "evaluate_s": round(eval_s),
                             "per_model_h": round((train_s + eval_s) / 3600, 2),
                             "study_cpu_h": round(args.models * (train_s + eval_s) / 3600, 1),
                             "diagnoses_per_model": diagnoses, "models": args.models}}
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
