"""The measured comparison of ProtoDiffusion's class-embedding modes (`patronus protodiff compare`).

Train the prototype classifier (once), then each mode from each of ``seeds`` (the seed sets the UNet's
initialisation and the data order; every mode gets the same ones) on the same budget; at each of ``checkpoints``
evenly spaced steps generate class-balanced guided samples from the same x_T and labels for every mode and
measure FID/KID against the test split (offline Inception), the accuracy of the **independent judge**
(:mod:`~..evaluation.judge`: a plain CNN trained on real images only, another architecture and seed, never used to
make prototypes) on them, and the prototype classifier's own accuracy (which may favour the proto modes)::

    from patronus_diffusion.experiments.protodiff_compare import run_protodiff_compare
    res = run_protodiff_compare(get_preset("protodiff-fmnist-cpu"), "results/protodiff_compare", train_steps=1500)
    res.files            # curves.csv (per seed), curves_mean.csv (mean +- std over seeds), reach_baseline.csv,
                         # paired_vs_baseline.csv/.png, steps_saved_vs_baseline.csv, fid_vs_images.png,
                         # fid_vs_wallclock.png,
                         # summary.md (the tables in Markdown), compare.json (with where the baseline flattens)

Re-running skips finished work: every (mode, seed, checkpoint) evaluation is stored in ``OUT/evals/`` and the
runs in ``OUT/runs/MODE/seedS`` resume. The loop is seed-major (then checkpoint, then mode): a partial study
compares every mode at the same budgets over the seeds it has reached (whole curves for the first seeds, which
show early where the baseline flattens), and at most one seed's runs are unfinished at any time. The tables and
plots are refreshed after every round.

This module runs the study and writes its outputs; the tables and their statistics are
:mod:`.protodiff_compare_tables`, the figures and the Markdown summary :mod:`.protodiff_compare_report`.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import torch

from ..api import ProtoDiffusion
from ..config import PROTODIFF_MODES, ConfigError, RunConfig
from ..models.protodiffusion import load_prototypes
from ..runs import latest_checkpoint, read_checkpoint_state
from ..training import train
from ..training.protodiff import (
    check_resume_identity,
    load_classifier,
    train_classifier,
)
from ..utils.errors import UsageError
from ..utils.images import save_grid
from ..utils.io import write_json, write_text
from .protodiff_compare_report import plot_curves, plot_paired, summary_markdown
from .protodiff_compare_tables import (CURVE_FIELDS, MEAN_FIELDS, PAIRED_FIELDS, REACH_FIELDS, SAVED_FIELDS,
                                       baseline_flattening, mean_curves, paired_vs_baseline, reach_baseline_table,
                                       steps_saved_vs_baseline, write_table)

SUMMARY_HEADER = ["preset", "dataset", "image_size", "train_steps", "batch_size", "lr_schedule"]
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


STAGE_FILES = {"wall": "stage_seconds.json",  # wall-clock seconds of the training calls, per target step
               "cpu": "stage_cpu_seconds.json"}  # the training process's CPU seconds (all its threads)


def read_stage_seconds(run_dir: Path) -> dict[str, dict[str, float]]:
    """{"wall": {target: seconds}, "cpu": {target: seconds}} spent training a run so far (empty when new)."""
    return {k: json.loads((run_dir / f).read_text()) if (run_dir / f).exists() else {} for k, f in STAGE_FILES.items()}


def add_stage_seconds(run_dir: Path, spent: dict[str, dict[str, float]], target: int, **seconds: float) -> None:
    """Add one training call's seconds (wall=..., cpu=...) to the stage ending at ``target`` and write them."""
    for kind, sec in seconds.items():
        spent[kind][str(target)] = spent[kind].get(str(target), 0.0) + sec
        write_json(run_dir / STAGE_FILES[kind], spent[kind])


def stage_totals(spent: dict[str, dict[str, float]], target: int) -> dict[str, float | None]:
    """Seconds spent up to ``target``: train_seconds (wall) and train_cpu_seconds, the latter None unless every
    stage up to there was measured (runs started before CPU time was recorded)."""
    def upto(kind: str) -> float:
        return round(sum(v for s, v in spent[kind].items() if int(s) <= target), 1)

    measured = all(s in spent["cpu"] for s in spent["wall"] if int(s) <= target)
    return {"train_seconds": upto("wall"), "train_cpu_seconds": upto("cpu") if measured else None}


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


def table_vs_prototypes(table: torch.Tensor, prototypes: torch.Tensor) -> dict[str, float]:
    """How prototype-like a class table T (C, D) is: its Frobenius norm |T|, the mean over classes of
    cos(T_c, P_c), and the relative distance |T - P| / |P|. A frozen prototype table gives (|P|, 1, 0); a
    trainable one shows how far training moved it; random tables give cosines near 0 and distances near
    sqrt(1 + |T|^2 / |P|^2)."""
    t, p = table.detach().float().cpu(), prototypes.float().cpu()
    return {"table_norm": float(t.norm()),
            "table_cosine_to_prototypes": float(torch.nn.functional.cosine_similarity(t, p, dim=1).mean()),
            "table_distance_to_prototypes": float((t - p).norm() / p.norm())}


def eval_path(out: Path, mode: str, seed: int, step: int) -> Path:
    """Where the evaluation of one (mode, seed, step) is stored; its existence marks the point done."""
    return out / "evals" / f"{mode}_seed{seed}_step{step:06d}.json"


def eta_line(left: int, done_here: int, seconds_here: float) -> str:
    """Points left and the time they will take at this process's mean wall-clock per point so far."""
    per = seconds_here / max(done_here, 1)
    return (f"[compare] {left} point(s) left; {per / 60:.1f} min per point here, so about "
            f"{left * per / 3600:.1f} h to go" if left else "[compare] every point is evaluated")


def evaluate_checkpoint(run_dir: Path, mode: str, classifier, extractor, protocol: dict, *, n_gen: int,
                        n_ref: int, device: str | None = "auto", progress: bool = True, judge=None,
                        prototypes: torch.Tensor | None = None) -> dict:
    """Class-balanced guided samples -> FID/KID, the independent judge's and the prototype classifier's accuracy,
    and (given ``prototypes``) how far the EMA class table that made them is from the prototypes.

    The samples start from the same seeded x_T with the same labels for every mode and checkpoint."""
    from ..evaluation.fid import fid_kid

    pd = ProtoDiffusion.load(run_dir, "ema", device)
    C = pd.num_classes
    labels = pd.class_labels(-(-n_gen // C), n_gen)
    t0 = time.time()
    imgs = pd.sample(labels, guidance=protocol["guidance_w"], sampler=protocol["sampler"], steps=protocol["steps"],
                     seed=protocol["seed"], progress=progress)
    sample_s = time.time() - t0
    acc = float((classifier.predict(imgs) == labels).float().mean())
    judged = judge.accuracy(imgs, labels) if judge is not None else None
    t0 = time.time()
    res = fid_kid(imgs, pd.config.data, split="test", n_ref=n_ref, seed=0, progress=progress,
                  extractor=extractor, protocol={**protocol, "mode": mode})
    per_class = min(10, -(-n_gen // C))
    grid_idx = torch.cat([torch.nonzero(labels == c).flatten()[:per_class] for c in range(C)])
    return {"fid": res.fid, "kid": res.kid, "kid_std": res.kid_std, "protocol": res.protocol,
            "judge_accuracy_on_samples": judged, "classifier_accuracy_on_samples": acc,
            "sample_seconds": round(sample_s, 1),
            "fid_seconds": round(time.time() - t0, 1), "grid": imgs[grid_idx], "grid_nrow": per_class,
            **(table_vs_prototypes(pd.model.classes.table, prototypes) if prototypes is not None else {})}


def run_protodiff_compare(base: RunConfig, out: str | Path, *, modes: Sequence[str] = PROTODIFF_MODES,
                          baseline: str = "regular", train_steps: int | None = None, checkpoints: int = 3,
                          seeds: Sequence[int] = (0, 1, 2), n_gen: int = 1000, n_ref: int = 2000,
                          classifier: str | Path | None = None, classifier_epochs: float | None = None,
                          w: float | None = None, sampler: str | None = None, steps: int | None = None,
                          judge_settings=None, device: str | None = "auto", progress: bool = True,
                          log: Callable[[str], None] = _log) -> CompareResult:
    """Run (or continue) the comparison into ``out``; ``base`` is the starting config (preset and overrides).

    ``classifier`` is an existing train-classifier folder (None: train one into OUT/classifier, for
    ``classifier_epochs`` epochs when given); ``w``, ``sampler`` and ``steps`` default to the config's;
    ``judge_settings`` (:class:`~..evaluation.judge.JudgeSettings`) how the cached independent judge is trained.
    """
    from ..evaluation.fid import InceptionFeatures
    from ..evaluation.judge import copy_judge, get_judge, judge_files

    seeds = [int(s) for s in seeds]
    if not seeds or len(set(seeds)) != len(seeds):
        raise UsageError(f"--seeds must be distinct integers, got {seeds}")
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
    proto_table, _ = load_prototypes(protos)
    first = compare_config(base, modes[0], protos, train_steps)
    targets = stage_targets(first.train.max_steps, checkpoints)
    protocol = {"guidance_w": first.protodiff.guidance if w is None else w,
                "sampler": sampler or first.sample.sampler, "steps": steps or first.sample.steps,
                "seed": SAMPLE_SEED, "weights": "ema", "labels": "class-balanced", "n_generated": n_gen}
    extractor = InceptionFeatures(device=device)  # the FID network runs where the models do
    # the comparison keeps its own copy of the judge, so every seed and every resumed session (a carried tree)
    # is scored by the same network, whatever the machine's cache holds
    judge_home = out / "judge"
    kept = all(f.exists() for f in judge_files(first.data, judge_settings, judge_home))
    judge = get_judge(first.data, judge_settings, cache_dir=judge_home if kept else None, progress=progress)
    if not kept:
        copy_judge(judge, judge_home)
    log(f"[compare] independent judge: {judge.meta['architecture']}, seed {judge.meta['key']['settings']['seed']}, "
        f"{judge.meta['test_accuracy']:.3f} on real test images")
    meta = {"classifier": clf_meta, "judge": {k: judge.meta.get(k) for k in ("architecture", "test_accuracy",
                                                                              "n_train", "cache_file")},
            "seeds": seeds, "modes": modes, "targets": targets, "torch_threads": torch.get_num_threads()}
    # ---- stage B + evaluation, resumable per (mode, seed, checkpoint); seed-major, then checkpoint, then mode, so
    # ---- a partial run compares every mode at the same budgets and only one seed's runs are unfinished
    done_here, t_start = 0, time.time()
    for seed in seeds:
        for (k, target), mode in ((kt, m) for kt in enumerate(targets, 1) for m in modes):
            cfg = compare_config(base, mode, protos, train_steps)
            cfg.train.seed = seed
            run_dir = out / "runs" / mode / f"seed{seed}"
            ev_path = eval_path(out, mode, seed, target)
            if ev_path.exists():
                continue
            spent = read_stage_seconds(run_dir)
            if _run_step(run_dir) < target:
                if _run_step(run_dir) > 0:
                    check_resume_identity(run_dir, cfg)
                log(f"[compare] {mode} seed {seed}: training to step {target} ({k}/{len(targets)})")
                t0, c0 = time.time(), time.process_time()
                r = train(cfg, run_dir, resume=_run_step(run_dir) > 0, device=device, max_steps=target,
                          progress=progress)
                add_stage_seconds(run_dir, spent, target, wall=time.time() - t0, cpu=time.process_time() - c0)
                images_seen = r.images_seen
            else:
                images_seen = target * cfg.train.batch_size
            log(f"[compare] {mode} seed {seed}: evaluating step {target}")
            ev = evaluate_checkpoint(run_dir, mode, clf, extractor, {**protocol, "images_seen": images_seen},
                                     n_gen=n_gen, n_ref=n_ref, device=device, progress=progress, judge=judge,
                                     prototypes=proto_table)
            save_grid(ev.pop("grid"), out / "samples" / f"{mode}_seed{seed}_step{target:06d}.png",
                      nrow=ev.pop("grid_nrow"), upscale=2)
            write_json(ev_path, {"mode": mode, "seed": seed, "checkpoint": k, "step": target,
                                 "images_seen": images_seen, **stage_totals(spent, target), **ev})
            log(f"[compare] {mode} seed {seed} step {target}: FID {ev['fid']:.2f}, KID {ev['kid']:.4f}, judge "
                f"accuracy {ev['judge_accuracy_on_samples']:.3f}, classifier accuracy "
                f"{ev['classifier_accuracy_on_samples']:.3f}")
            done_here += 1
            left = sum(not eval_path(out, m, s, t).exists() for s in seeds for t in targets for m in modes)
            log(eta_line(left, done_here, time.time() - t_start))
            if mode == modes[-1]:  # refresh the curves after every round, so a partial run has them
                write_comparison(out, collect_evals(out, modes, targets, seeds), baseline, meta, protocol,
                                 summary_header(first))
    rows = collect_evals(out, modes, targets, seeds)
    files = write_comparison(out, rows, baseline, meta, protocol, summary_header(first))
    return CompareResult(out, files, rows, reach_baseline_table(mean_curves(rows), baseline, rows,
                                                                 meta["torch_threads"]),
                         clf_meta.get("accuracy"), protocol)


def rewrite_comparison(out: str | Path) -> CompareResult:
    """Rewrite the tables, plots and compare.json of an existing comparison from ``OUT/evals`` and the settings
    its compare.json recorded, training and evaluating nothing (a carried tree, or tables added since it ran)."""
    out = Path(out)
    summary_path = out / "compare.json"
    if not summary_path.exists():
        raise UsageError(f"{out} holds no compare.json: run `patronus protodiff compare --out {out}` first")
    summary = json.loads(summary_path.read_text())
    # only the evaluations of the study compare.json describes (a folder may keep those of an earlier budget); a
    # compare.json written before it recorded its modes and steps: every evaluation stored
    stored = [json.loads(p.read_text()) for p in (out / "evals").glob("*.json")]
    modes = summary.get("modes") or [m for m in PROTODIFF_MODES if any(ev["mode"] == m for ev in stored)]
    targets = summary.get("targets") or sorted({ev["step"] for ev in stored})
    rows = collect_evals(out, modes, targets, summary.get("seeds") or sorted({ev["seed"] for ev in stored}))
    meta = {"classifier": {"accuracy": summary.get("classifier_accuracy")}, "judge": summary.get("judge"),
            "seeds": summary.get("seeds"), "modes": summary.get("modes"), "targets": summary.get("targets"),
            "torch_threads": summary.get("torch_threads", 1)}
    files = write_comparison(out, rows, summary["baseline"], meta, summary.get("sampling", {}), summary)
    means = mean_curves(rows)
    return CompareResult(out, files, rows, reach_baseline_table(means, summary["baseline"], rows,
                                                                meta["torch_threads"]),
                         summary.get("classifier_accuracy"), summary.get("sampling", {}))


# ---------------------------------------------------------------------------- the stored evaluations and outputs
def collect_evals(out: Path, modes: list[str], targets: list[int], seeds: Sequence[int]) -> list[dict]:
    rows = []
    for mode in modes:
        for seed in seeds:
            for t in targets:
                p = eval_path(out, mode, seed, t)
                if p.exists():
                    ev = json.loads(p.read_text())
                    rows.append({k: ev.get(k) for k in CURVE_FIELDS} | {"protocol": ev.get("protocol")})
    return rows


def summary_header(cfg: RunConfig) -> dict:
    """What compare.json says about the runs' configuration (the first mode's; all modes share it)."""
    return {"preset": cfg.preset, "dataset": cfg.data.dataset, "image_size": cfg.data.image_size,
            "train_steps": cfg.train.max_steps, "batch_size": cfg.train.batch_size,
            "lr_schedule": cfg.train.lr_schedule}


def write_comparison(out: Path, rows: list[dict], baseline: str, meta: dict, protocol: dict,
                     header: dict) -> dict[str, Path]:
    """Write every table, plot and compare.json of a comparison from its evaluated ``rows``."""
    means = mean_curves(rows)
    files = {"curves": write_table(out / "curves.csv", rows, CURVE_FIELDS),
             "curves_mean": write_table(out / "curves_mean.csv", means, MEAN_FIELDS)}
    threads = meta.get("torch_threads", 1)
    table = reach_baseline_table(means, baseline, rows, threads)
    files["reach_baseline"] = write_table(out / "reach_baseline.csv", table, REACH_FIELDS)
    paired = paired_vs_baseline(rows, baseline)
    files["paired_vs_baseline"] = write_table(out / "paired_vs_baseline.csv", paired, PAIRED_FIELDS)
    saved = steps_saved_vs_baseline(rows, baseline)
    files["steps_saved"] = write_table(out / "steps_saved_vs_baseline.csv", saved, SAVED_FIELDS)
    flattening = baseline_flattening(rows, baseline)
    if rows:
        files["fid_vs_images"] = plot_curves(means, "images_seen", "training images seen", out / "fid_vs_images.png")
        files["fid_vs_wallclock"] = plot_curves(means, "train_seconds_mean", "training wall-clock (minutes)",
                                                out / "fid_vs_wallclock.png", scale=1 / 60)
    if paired:
        files["paired_plot"] = plot_paired(paired, baseline, out / "paired_vs_baseline.png", saved)
    fid_protocol = next((r["protocol"] for r in rows if r.get("protocol")), {})
    if rows:
        files["markdown"] = out / "summary.md"
        write_text(files["markdown"],
                   summary_markdown(means, paired, table, flattening, baseline, fid_protocol, saved))
    clf = meta.get("classifier", {})
    write_json(out / "compare.json", {
        **{k: header.get(k) for k in SUMMARY_HEADER}, "seeds": meta.get("seeds"), "modes": meta.get("modes"),
        "targets": meta.get("targets"), "torch_threads": threads,
        "classifier_accuracy": clf.get("accuracy"), "judge": meta.get("judge"), "baseline": baseline,
        "sampling": protocol,
        "fid_protocol": {k: fid_protocol.get(k) for k in ("metric", "feature_network", "preprocessing", "reference",
                                                          "small_n", "note")},
        "curves_mean": means, "curves": [{k: r.get(k) for k in CURVE_FIELDS} for r in rows], "reach_baseline": table,
        "paired_vs_baseline": paired, "steps_saved_vs_baseline": saved, "baseline_flattening": flattening,
        "note": "train_seconds is the wall-clock of this machine's training invocations (shared CPU: other jobs "
                "may have run beside it), train_cpu_seconds the CPU time of the training process (all threads), "
                "which cpu_hours_to_reach uses; images seen is the load-independent axis. The judge is an "
                "independent CNN; the classifier accuracy uses the network whose prototypes condition the "
                "proto modes."})
    files["summary"] = out / "compare.json"
    return files
