"""`make demo` / `patronus demo`: a newcomer's first run, end to end, in bounded time.

Train a preset on Fashion-MNIST for a fixed number of steps (``DEMO_STEPS``: every machine gets the same model,
a slow or loaded one just takes longer; an earlier demo run is continued by as many steps unless ``fresh``), then
generate from 16 test images' s, reconstruct test images at 50 and 100 inversion steps and draw the
explanation gallery of every prototype, then measure whether its edits do what they say (evaluate-edits).
Everything lands in one folder with a ``summary.json``.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import torch

from ..analysis.evaluate_edits import EvaluationPlan, evaluate_edits
from ..analysis.explain import explain_gallery
from ..analysis.report import build_report
from ..api import Patronus
from ..config import apply_overrides
from ..edit import fresh_indices, reference_indices, reference_set
from ..evaluation.reconstruction import reconstruct
from ..presets import get_preset
from ..training import train
from ..utils.images import save_grid
from ..utils.io import write_json


DEMO_STEPS = 400
"""The demo's training budget: about 6 minutes at the ~70 images/s of a quiet 2-core CPU (batch 64)."""
QUIET_IMAGES_PER_S = 70.0
"""cpu-demo's training speed on one quiet 2-core machine of this project (stop 27: 62.8; bench: 64-110)."""


def run_demo(out: str | Path, *, preset: str = "cpu-demo", overrides: list[str] | None = None,
             steps: int = DEMO_STEPS, minutes: float | None = None,
             seed: int = 0, n_reconstruct: int = 8, gallery_images: int = 4, edit_images: int = 8,
             fresh: bool = False, device: str | None = "auto",
             reports: bool = True) -> tuple[dict, dict[str, Path]]:
    """Run the demo into ``out``; returns (summary, files written). ``edit_images`` test images get the edit
    benchmark of ``patronus evaluate-edits`` (every prototype raised to its own max, 20 DDIM steps, the run's
    edit guidance; 0 skips it). ``reports`` ends with the quick HTML report of the demo's own model and of the
    shipped ``pretrained:fashion-mnist``."""
    t_all = time.time()
    out = Path(out)
    run = out / "run"
    if fresh and run.exists():
        shutil.rmtree(run)
    cfg = apply_overrides(get_preset(preset), list(overrides or []) + [f"train.seed={seed}"])
    cfg.train.max_steps, cfg.train.max_epochs = None, None
    resume = (run / "latest.json").exists()
    start = int(json.loads((run / "latest.json").read_text())["step"]) if resume else 0
    expected = steps * cfg.train.batch_size / QUIET_IMAGES_PER_S / 60
    print(f"[demo] training {cfg.preset} on {cfg.data.dataset} for {steps} steps (to step {start + steps}; about "
          f"{expected:.0f} min on a quiet 2-core CPU, longer on a busy one: the progress bar shows this machine's "
          f"estimate) -> {run}" + (" (continuing the earlier demo run; --fresh starts over)" if resume else "")
          + (f"; stopping early after {minutes} min if not done (the model then depends on the machine)"
             if minutes else ""))
    r = train(cfg, run, resume=resume, max_steps=start + steps, max_minutes=minutes, device=device)
    t_train = time.time() - t_all
    pat = Patronus.load(run, device=device)
    ds = pat.dataset("test")
    idx = fresh_indices(len(ds), 16, seed, exclude=reference_indices(len(ds), 256, seed))  # never images of X
    x = ds.get_batch(idx)
    s = pat.encode(x).s
    print("[demo] sampling 16 images from test images' s")
    t0 = time.time()
    gen = pat.sample(s, seed=seed, progress=True)
    t_sample = time.time() - t0
    save_grid(torch.cat([x, gen]), out / "generated_from_test_s.png", nrow=16, upscale=2)
    print(f"[demo] reconstructing {n_reconstruct} test images at 50 and 100 inversion steps")
    rec = reconstruct(pat, x[:n_reconstruct], [f"test:{i}" for i in idx[:n_reconstruct]], [50, 100])
    rec_files = rec.write(out)
    summary = {
        "run": str(run), "preset": cfg.preset, "dataset": cfg.data.dataset, "train_steps": r.step,
        "note": "train_steps, images_seen and epochs count the whole run (a repeated `make demo` continues it); "
                "*_this_run count this invocation",
        "images_seen": r.images_seen, "epochs": round(json.loads((run / "train_summary.json").read_text())["epoch"], 3),
        "train_steps_this_run": r.steps_this_invocation,
        "train_minutes_this_run": round(t_train / 60, 2),
        "train_images_per_s_this_run": round(r.steps_this_invocation * cfg.train.batch_size / max(r.elapsed_s, 1e-9), 1),
        "final_train_loss": round(r.last_loss, 5),
        "sampling": {"sampler": pat.config.sample.sampler, "steps": pat.config.sample.steps, "n": 16,
                     "seconds": round(t_sample, 2), "conditioning": "s of 16 test images (top row of the grid)"},
        "reconstruction_psnr_db": {k: v["psnr_db"] for k, v in rec.by_steps.items()},
        "reconstruction_ssim": {k: v["ssim"] for k, v in rec.by_steps.items()},
        "wall_minutes": None,
    }
    files = {"generated": out / "generated_from_test_s.png", "reconstructions": rec_files["grid"],
             "psnr per image": rec_files["per image"]}
    if gallery_images > 0:
        print(f"[demo] explanation gallery of all {pat.num_prototypes} prototypes -> {out / 'explain'}")
        t0 = time.time()
        gal = explain_gallery(pat, out / "explain", seed=seed, n_images=gallery_images, stats_images=1000,
                              patch_images=5000)
        faithful = gal.result.faithfulness()
        summary["gallery"] = {"folder": str(out / "explain"), "seconds": round(time.time() - t0, 1),
                              "max_s_X": gal.reference.to_json()["max_s_X"],
                              "edit_faithfulness": {k: faithful[k] for k in ("rise_median", "others_median")}}
        files["gallery"] = out / "explain" / "overview.png"
    if edit_images > 0:
        n_ed = min(edit_images, len(idx))
        print(f"[demo] do the edits work? every prototype raised to its own max on {n_ed} test images "
              f"-> {out / 'edits_eval'}")
        ev = evaluate_edits(pat, EvaluationPlan(
            images=x[:n_ed], reference=reference_set(pat, n=256, seed=seed), names=[f"test:{i}" for i in idx[:n_ed]],
            strengths=[1.0], steps=20, seed=seed, kinds=("own_max",), edit_guidance=0.0), progress=True)
        ev.write(out / "edits_eval")
        e = ev.to_json()
        summary["edits_eval"] = {"folder": str(out / "edits_eval"), "seconds": round(ev.seconds, 1),
                                 "median_rise": e["median_rise"], "median_off_target": e["median_off_target"],
                                 "median_locality": e["median_locality"], "n_images": n_ed, "steps": 20,
                                 "edit_guidance": e["settings"]["edit_guidance"] or 0.0,
                                 "note": "the measure of `patronus evaluate-edits --strengths 1 --steps 20`"}
        print(f"[demo] median rise {e['median_rise']} of the requested change (1 = as asked), off-target "
              f"{e['median_off_target']}")
        files["edits"] = out / "edits_eval" / "edits_eval.png"
    if reports:
        for name, model in (("report", pat), ("report-pretrained", Patronus.load("pretrained:fashion-mnist",
                                                                                device=device))):
            print(f"[demo] quick HTML report -> {out / name / 'index.html'}")
            t0 = time.time()
            files[name] = build_report(model, quick=True, seed=seed).write(out / name)["page"]
            summary.setdefault("reports", {})[name] = {"page": str(files[name]), "seconds": round(time.time() - t0, 1)}
    summary["wall_minutes"] = round((time.time() - t_all) / 60, 2)
    write_json(out / "summary.json", summary)
    return summary, {**files, "summary": out / "summary.json", "run": run}
