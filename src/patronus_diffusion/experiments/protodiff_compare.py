"""The measured comparison of ProtoDiffusion's class-embedding modes (`patronus protodiff compare`).

Train the prototype classifier (once), then each mode with the same seed, data order and budget; at each of
``checkpoints`` evenly spaced steps generate class-balanced guided samples and measure FID/KID (offline
Inception) and the classifier's accuracy on them::

    from patronus_diffusion.experiments.protodiff_compare import run_protodiff_compare
    res = run_protodiff_compare(get_preset("protodiff-fmnist-cpu"), "results/protodiff_compare", train_steps=1500)
    res.files            # curves.csv, reach_baseline.csv, fid_vs_images.png, fid_vs_wallclock.png, compare.json

Re-running skips finished work: every (mode, checkpoint) evaluation is stored in ``OUT/evals/`` and the runs
in ``OUT/runs/MODE`` resume. The loop is checkpoint-major, so a partial study still compares every mode at
the same (early) budgets; the tables and plots are refreshed after every round.
"""

from __future__ import annotations

import csv
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import torch

from ..api import ProtoDiffusion
from ..config import PROTODIFF_MODES, ConfigError, RunConfig
from ..runs import latest_checkpoint, read_checkpoint_state
from ..training import train
from ..training.protodiff import (
    check_resume_identity,
    load_classifier,
    train_classifier,
)
from ..utils.errors import UsageError
from ..utils.images import save_grid
from ..utils.io import atomic_path, write_json

CURVE_FIELDS = ["mode", "checkpoint", "step", "images_seen", "train_seconds", "fid", "kid", "kid_std",
                "classifier_accuracy_on_samples", "sample_seconds", "fid_seconds"]
REACH_FIELDS = ["mode", "baseline_best_fid", "best_fid", "images_seen_to_reach", "train_seconds_to_reach", "reached"]
SAMPLE_SEED = 12345


@dataclass
class CompareResult:
    out: Path
    files: dict[str, Path]  # name -> file written (curves, reach_baseline, plots, summary)
    rows: list[dict] = field(default_factory=list)  # one per (mode, checkpoint) evaluated so far
    reach_baseline: list[dict] = field(default_factory=list)
    classifier_accuracy: dict | None = None
    sampling: dict = field(default_factory=dict)  # the sampling protocol of every evaluation


def _log(message: str) -> None:
    print(message, flush=True)


def stage_targets(total_steps: int, k: int) -> list[int]:
    """k evaluation steps evenly spaced up to total_steps, e.g. (1500, 3) -> [500, 1000, 1500]."""
    if k < 1 or total_steps < k:
        raise UsageError(f"need 1 <= --checkpoints <= --train-steps, got {k} and {total_steps}")
    return [int(round(total_steps * (i + 1) / k)) for i in range(k)]


def _run_step(run_dir: Path) -> int:
    ck = latest_checkpoint(run_dir) if run_dir.exists() else None
    return int(read_checkpoint_state(ck, verify=False)["step"]) if ck is not None else 0


def compare_config(base: RunConfig, mode: str, prototypes: Path, train_steps: int | None = None) -> RunConfig:
    """The config of one mode: ``base`` with the mode, the prototype file and the comparison's budget."""
    cfg = base.copy()
    cfg.protodiff.mode = mode
    cfg.protodiff.prototypes = str(prototypes.resolve())
    cfg.train.sample_every = 0
    cfg.train.max_epochs, cfg.train.max_minutes = None, None
    if train_steps:
        cfg.train.max_steps = train_steps
    if not cfg.train.max_steps:
        raise ConfigError("give --train-steps (the preset sets no step budget)")
    # a short comparison must not spend its whole budget in the LR warm-up: cap it at 10 % of the steps
    cfg.train.warmup_steps = min(cfg.train.warmup_steps, cfg.train.max_steps // 10)
    cfg.train.checkpoint_every = min(cfg.train.checkpoint_every or 250, 250)
    cfg.train.keep_checkpoints = 1
    return cfg.validate()


def evaluate_checkpoint(run_dir: Path, mode: str, classifier, extractor, protocol: dict, *, n_gen: int,
                        n_ref: int, device: str | None = "auto", progress: bool = True) -> dict:
    """Class-balanced guided samples -> FID/KID and the prototype classifier's accuracy on them."""
    from ..evaluation.fid import fid_kid

    pd = ProtoDiffusion.load(run_dir, "ema", device)
    C = pd.num_classes
    labels = pd.class_labels(-(-n_gen // C), n_gen)
    t0 = time.time()
    imgs = pd.sample(labels, w=protocol["guidance_w"], sampler=protocol["sampler"], steps=protocol["steps"],
                     seed=protocol["seed"], progress=progress)
    sample_s = time.time() - t0
    acc = float((classifier.predict(imgs) == labels).float().mean())
    t0 = time.time()
    res = fid_kid(imgs, pd.config.data, split="test", n_ref=n_ref, seed=0, progress=progress,
                  extractor=extractor, protocol={**protocol, "mode": mode})
    per_class = min(10, -(-n_gen // C))
    grid_idx = torch.cat([torch.nonzero(labels == c).flatten()[:per_class] for c in range(C)])
    return {"fid": res["fid"], "kid": res["kid"], "kid_std": res["kid_std"], "protocol": res["protocol"],
            "classifier_accuracy_on_samples": acc, "sample_seconds": round(sample_s, 1),
            "fid_seconds": round(time.time() - t0, 1), "grid": imgs[grid_idx], "grid_nrow": per_class}


def run_protodiff_compare(base: RunConfig, out: str | Path, *, modes: Sequence[str] = PROTODIFF_MODES,
                          baseline: str = "regular", train_steps: int | None = None, checkpoints: int = 3,
                          n_gen: int = 300, n_ref: int = 2000, classifier: str | Path | None = None,
                          classifier_epochs: float | None = None, w: float | None = None, sampler: str | None = None,
                          steps: int | None = None, device: str | None = "auto", progress: bool = True,
                          log: Callable[[str], None] = _log) -> CompareResult:
    """Run (or continue) the comparison into ``out``; ``base`` is the starting config (preset and overrides).

    ``classifier`` is an existing train-classifier folder (None: train one into OUT/classifier, for
    ``classifier_epochs`` epochs when given); ``w``, ``sampler`` and ``steps`` default to the config's.
    """
    from ..evaluation.fid import InceptionFeatures

    out = Path(out)
    modes = list(modes)
    if baseline not in modes:
        raise UsageError(f"the baseline {baseline!r} must be one of --modes")
    # ---- stage A: one classifier shared by every mode (and used to score the samples)
    clf_dir = Path(classifier) if classifier else out / "classifier"
    if not (clf_dir / "prototypes.safetensors").exists():
        if classifier:
            raise FileNotFoundError(f"{clf_dir} holds no prototypes.safetensors")
        cfg = base.copy()
        if classifier_epochs is not None:
            cfg.protodiff.classifier.epochs = classifier_epochs
        log(f"[compare] training the prototype classifier -> {clf_dir}")
        train_classifier(cfg, clf_dir, device=device, progress=progress)
    clf, clf_meta = load_classifier(clf_dir, device)
    log(f"[compare] classifier accuracy: {clf_meta['accuracy']}")
    protos = clf_dir / "prototypes.safetensors"
    first = compare_config(base, modes[0], protos, train_steps)
    targets = stage_targets(first.train.max_steps, checkpoints)
    protocol = {"guidance_w": first.protodiff.guidance if w is None else w,
                "sampler": sampler or first.sample.sampler, "steps": steps or first.sample.steps,
                "seed": SAMPLE_SEED, "weights": "ema", "labels": "class-balanced", "n_generated": n_gen}
    extractor = InceptionFeatures(device="cpu")
    # ---- stage B + evaluation, resumable per (mode, checkpoint); checkpoint-major, so a partial run
    # ---- still compares every mode at the same (early) budgets
    for k, target in enumerate(targets, 1):
        for mode in modes:
            cfg = compare_config(base, mode, protos, train_steps)
            run_dir = out / "runs" / mode
            times_path = run_dir / "stage_seconds.json"
            ev_path = out / "evals" / f"{mode}_step{target:06d}.json"
            if ev_path.exists():
                continue
            times = json.loads(times_path.read_text()) if times_path.exists() else {}
            if _run_step(run_dir) < target:
                if _run_step(run_dir) > 0:
                    check_resume_identity(run_dir, cfg)
                log(f"[compare] {mode}: training to step {target} ({k}/{len(targets)})")
                t0 = time.time()
                r = train(cfg, run_dir, resume=_run_step(run_dir) > 0, device=device, max_steps=target,
                          progress=progress)
                times[str(target)] = times.get(str(target), 0.0) + (time.time() - t0)
                write_json(times_path, times)
                images_seen = r.images_seen
            else:
                images_seen = target * cfg.train.batch_size
            log(f"[compare] {mode}: evaluating step {target}")
            ev = evaluate_checkpoint(run_dir, mode, clf, extractor, {**protocol, "images_seen": images_seen},
                                     n_gen=n_gen, n_ref=n_ref, device=device, progress=progress)
            save_grid(ev.pop("grid"), out / "samples" / f"{mode}_step{target:06d}.png", nrow=ev.pop("grid_nrow"),
                      upscale=2)
            train_s = sum(v for s_, v in times.items() if int(s_) <= target)
            write_json(ev_path, {"mode": mode, "checkpoint": k, "step": target, "images_seen": images_seen,
                                 "train_seconds": round(train_s, 1), **ev})
            log(f"[compare] {mode} step {target}: FID {ev['fid']:.2f}, KID {ev['kid']:.4f}, "
                f"classifier accuracy on samples {ev['classifier_accuracy_on_samples']:.3f}")
            if mode == modes[-1]:  # refresh the curves after every round, so a partial run has them
                write_comparison(out, collect_evals(out, modes, targets), baseline, clf_meta, protocol, first)
    rows = collect_evals(out, modes, targets)
    files = write_comparison(out, rows, baseline, clf_meta, protocol, first)
    return CompareResult(out, files, rows, reach_baseline_table(rows, baseline), clf_meta.get("accuracy"), protocol)


# ---------------------------------------------------------------------------- tables and plots
def collect_evals(out: Path, modes: list[str], targets: list[int]) -> list[dict]:
    rows = []
    for mode in modes:
        for t in targets:
            p = out / "evals" / f"{mode}_step{t:06d}.json"
            if p.exists():
                ev = json.loads(p.read_text())
                rows.append({k: ev.get(k) for k in CURVE_FIELDS} | {"protocol": ev.get("protocol")})
    return rows


def reach_baseline_table(rows: list[dict], baseline: str) -> list[dict]:
    """Per mode: the first checkpoint whose FID <= the baseline's best FID (images seen, training seconds)."""
    base = [r for r in rows if r["mode"] == baseline]
    if not base:
        return []
    best = min(r["fid"] for r in base)
    table = []
    for mode in dict.fromkeys(r["mode"] for r in rows):
        mine = sorted((r for r in rows if r["mode"] == mode), key=lambda r: r["step"])
        hit = next((r for r in mine if r["fid"] <= best), None)
        table.append({"mode": mode, "baseline_best_fid": round(best, 3),
                      "best_fid": round(min(r["fid"] for r in mine), 3),
                      "images_seen_to_reach": hit["images_seen"] if hit else "",
                      "train_seconds_to_reach": hit["train_seconds"] if hit else "",
                      "reached": bool(hit)})
    return table


def _write_csv(path: Path, rows: list[dict], fields: list[str]) -> Path:
    with atomic_path(path) as tmp:
        with open(tmp, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=fields, extrasaction="ignore")
            w.writeheader()
            w.writerows(rows)
    return path


def plot_curves(rows: list[dict], x_key: str, x_label: str, path: Path, scale: float = 1.0) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for mode in dict.fromkeys(r["mode"] for r in rows):
        mine = sorted((r for r in rows if r["mode"] == mode), key=lambda r: r["step"])
        xs = [r[x_key] * scale for r in mine]
        axes[0].plot(xs, [r["fid"] for r in mine], marker="o", label=mode)
        axes[1].errorbar(xs, [r["kid"] * 1e3 for r in mine], yerr=[r["kid_std"] * 1e3 for r in mine], marker="o",
                         capsize=3, label=mode)
    axes[0].set_ylabel("FID (lower is better)")
    axes[1].set_ylabel("KID x 1e3 (lower is better)")
    for ax in axes:
        ax.set_xlabel(x_label)
        ax.grid(alpha=0.3)
    axes[0].legend()
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=120)
    plt.close(fig)
    return path


def write_comparison(out: Path, rows: list[dict], baseline: str, clf_meta: dict, protocol: dict,
                     cfg: RunConfig) -> dict[str, Path]:
    files = {"curves": _write_csv(out / "curves.csv", rows, CURVE_FIELDS)}
    table = reach_baseline_table(rows, baseline)
    files["reach_baseline"] = _write_csv(out / "reach_baseline.csv", table, REACH_FIELDS)
    if rows:
        files["fid_vs_images"] = plot_curves(rows, "images_seen", "training images seen", out / "fid_vs_images.png")
        files["fid_vs_wallclock"] = plot_curves(rows, "train_seconds", "training wall-clock (minutes)",
                                                out / "fid_vs_wallclock.png", scale=1 / 60)
    fid_protocol = next((r["protocol"] for r in rows if r.get("protocol")), {})
    write_json(out / "compare.json", {
        "preset": cfg.preset, "dataset": cfg.data.dataset, "image_size": cfg.data.image_size,
        "train_steps": cfg.train.max_steps, "batch_size": cfg.train.batch_size, "seed": cfg.train.seed,
        "classifier_accuracy": clf_meta.get("accuracy"), "baseline": baseline, "sampling": protocol,
        "fid_protocol": {k: fid_protocol.get(k) for k in ("metric", "feature_network", "preprocessing", "reference",
                                                          "small_n", "note")},
        "curves": [{k: r[k] for k in CURVE_FIELDS} for r in rows], "reach_baseline": table,
        "note": "train_seconds is the wall-clock of this machine's training invocations (shared CPU: other jobs "
                "ran beside it); images seen is the load-independent axis."})
    files["summary"] = out / "compare.json"
    return files
