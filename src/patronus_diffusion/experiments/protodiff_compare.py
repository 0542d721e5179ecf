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
from ..utils.io import atomic_path, write_json, write_text

CURVE_FIELDS = ["mode", "seed", "checkpoint", "step", "images_seen", "train_seconds", "train_cpu_seconds", "fid",
                "kid", "kid_std",
                "judge_accuracy_on_samples", "classifier_accuracy_on_samples", "sample_seconds", "fid_seconds",
                "table_norm", "table_cosine_to_prototypes", "table_distance_to_prototypes"]
MEAN_FIELDS = ["mode", "step", "images_seen", "seeds", "fid_mean", "fid_std", "kid_mean", "kid_std",
               "judge_accuracy_mean", "judge_accuracy_std", "classifier_accuracy_mean", "train_seconds_mean",
               "train_cpu_seconds_mean", "table_cosine_to_prototypes_mean", "table_distance_to_prototypes_mean"]
REACH_FIELDS = ["mode", "baseline_best_fid", "best_fid", "steps_to_reach", "images_seen_to_reach",
                "train_seconds_to_reach", "cpu_hours_to_reach", "seeds_reaching", "reached"]
PAIRED_FIELDS = ["mode", "step", "images_seen", "pairs", "fid_diff_mean", "fid_diff_std", "fid_diff_ci95_low",
                 "fid_diff_ci95_high", "seeds_better", "judge_diff_mean", "judge_diff_std", "finding"]
SAVED_FIELDS = ["mode", "baseline_step", "target_fid_mean", "pairs", "steps_saved_mean", "steps_saved_std",
                "steps_saved_ci95_low", "steps_saved_ci95_high", "relative_saving_mean", "seeds_sooner",
                "crossing_before_first_point", "crossing_after_last_point", "finding"]
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
    return {"fid": res["fid"], "kid": res["kid"], "kid_std": res["kid_std"], "protocol": res["protocol"],
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


# ---------------------------------------------------------------------------- tables and plots
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


def _mean_std(vals: list[float]) -> tuple[float | None, float | None]:
    vals = [float(v) for v in vals if v is not None]
    if not vals:
        return None, None
    t = torch.tensor(vals, dtype=torch.float64)
    return float(t.mean()), float(t.std(unbiased=True)) if len(vals) > 1 else 0.0


def mean_curves(rows: list[dict]) -> list[dict]:
    """Per (mode, step): mean and sample std over the seeds evaluated there (std 0 with one seed)."""
    out = []
    for mode in dict.fromkeys(r["mode"] for r in rows):
        for step in sorted({r["step"] for r in rows if r["mode"] == mode}):
            g = [r for r in rows if r["mode"] == mode and r["step"] == step]
            fid, fid_sd = _mean_std([r["fid"] for r in g])
            kid, kid_sd = _mean_std([r["kid"] for r in g])
            judge, judge_sd = _mean_std([r.get("judge_accuracy_on_samples") for r in g])
            clf, _ = _mean_std([r["classifier_accuracy_on_samples"] for r in g])
            secs, _ = _mean_std([r["train_seconds"] for r in g])
            measured = all(r.get("table_cosine_to_prototypes") is not None for r in g)  # older evals lack it
            cos = _mean_std([r["table_cosine_to_prototypes"] for r in g])[0] if measured else None
            dist = _mean_std([r["table_distance_to_prototypes"] for r in g])[0] if measured else None
            cpu = [r.get("train_cpu_seconds") for r in g]
            cpu_mean = _mean_std(cpu)[0] if all(c is not None for c in cpu) else None
            out.append({"mode": mode, "step": step, "images_seen": g[0]["images_seen"], "seeds": len(g),
                        "fid_mean": fid, "fid_std": fid_sd, "kid_mean": kid, "kid_std": kid_sd,
                        "judge_accuracy_mean": judge, "judge_accuracy_std": judge_sd,
                        "classifier_accuracy_mean": clf, "train_seconds_mean": secs,
                        "train_cpu_seconds_mean": cpu_mean, "table_cosine_to_prototypes_mean": cos,
                        "table_distance_to_prototypes_mean": dist})
    return out


def reach_baseline_table(means: list[dict], baseline: str, rows: list[dict] | None = None,
                         threads: int = 1) -> list[dict]:
    """Per mode: the first step whose mean FID over seeds <= the baseline's best mean FID, with the images seen,
    mean training seconds and CPU-hours to get there, and in how many seeds the mode's own curve reaches that FID
    at all. CPU-hours are the training process's measured CPU time (``train_cpu_seconds_mean``, all threads; not
    inflated by other jobs sharing the machine) where recorded, else wall-clock seconds x ``threads``."""
    base = [r for r in means if r["mode"] == baseline]
    if not base:
        return []
    best = min(r["fid_mean"] for r in base)
    table = []
    for mode in dict.fromkeys(r["mode"] for r in means):
        mine = sorted((r for r in means if r["mode"] == mode), key=lambda r: r["step"])
        hit = next((r for r in mine if r["fid_mean"] <= best), None)
        per_seed = {}
        for r in rows or []:
            if r["mode"] == mode:
                per_seed[r["seed"]] = per_seed.get(r["seed"], False) or r["fid"] <= best
        table.append({"mode": mode, "baseline_best_fid": round(best, 3),
                      "best_fid": round(min(r["fid_mean"] for r in mine), 3),
                      "steps_to_reach": hit["step"] if hit else "",
                      "images_seen_to_reach": hit["images_seen"] if hit else "",
                      "train_seconds_to_reach": round(hit["train_seconds_mean"], 1) if hit else "",
                      "cpu_hours_to_reach": _cpu_hours(hit, threads) if hit else "",
                      "seeds_reaching": f"{sum(per_seed.values())}/{len(per_seed)}" if per_seed else "",
                      "reached": bool(hit)})
    return table


def _t_interval(mean: float, sd: float, n: int, level: float = 0.95) -> tuple[float | None, float | None]:
    """Student-t confidence interval of a mean of n values (None with fewer than two)."""
    if n < 2:
        return None, None
    from scipy.stats import t as student_t

    half = float(student_t.ppf(0.5 + level / 2, n - 1)) * sd / n ** 0.5
    return mean - half, mean + half


def _paired_stats(diffs: list[float], digits: int, good_sign: int, words: tuple[str, str]) -> dict:
    """Mean, sample std and Student-t 95 % interval of paired differences (rounded to ``digits``), the seeds on the
    good side (sign ``good_sign``: -1 when lower is better), and the finding the interval reads: ``words[0]`` /
    ``words[1]`` (good / bad) when it excludes 0, "no difference shown" when it holds it, "one seed" without one,
    "none measured" (and no statistics) without any difference."""
    if not diffs:
        return {"mean": None, "std": None, "low": None, "high": None, "good": "0/0", "finding": "none measured"}
    mean, sd = _mean_std(diffs)
    lo, hi = _t_interval(mean, sd, len(diffs))
    if lo is None:
        finding = "one seed"
    else:
        worst, best = sorted((lo * good_sign, hi * good_sign))  # the interval, good side up
        finding = words[0] if worst > 0 else words[1] if best < 0 else "no difference shown"
    return {"mean": round(mean, digits), "std": round(sd, digits),
            "low": None if lo is None else round(lo, digits), "high": None if hi is None else round(hi, digits),
            "good": f"{sum(d * good_sign > 0 for d in diffs)}/{len(diffs)}", "finding": finding}


def paired_vs_baseline(rows: list[dict], baseline: str) -> list[dict]:
    """Per (mode, step): the mode's FID minus the baseline's, **paired by seed**.

    A seed fixes the initialisation and the data order, and every mode samples from the same x_T and labels, so
    the difference d_s = FID(mode, s) - FID(baseline, s) cancels what the two runs of seed s share; over the n
    seeds evaluated for both: mean, sample std, the Student-t 95 % interval mean +- t_{0.975, n-1} sd / sqrt(n),
    how many seeds the mode is better in (d_s < 0), and the same mean/std for the judge's accuracy (mode minus
    baseline; higher is better). ``finding`` reads the interval: "better" / "worse" when it excludes 0, "no
    difference shown" when it holds 0, "one seed" when there is no interval yet."""
    base = {(r["seed"], r["step"]): r for r in rows if r["mode"] == baseline}
    table = []
    for mode in (m for m in dict.fromkeys(r["mode"] for r in rows) if m != baseline):
        for step in sorted({r["step"] for r in rows if r["mode"] == mode}):
            pairs = [(r, base[(r["seed"], step)]) for r in rows
                     if r["mode"] == mode and r["step"] == step and (r["seed"], step) in base]
            if not pairs:
                continue
            st = _paired_stats([a["fid"] - b["fid"] for a, b in pairs], 3, -1, ("better", "worse"))
            judged = [(a.get("judge_accuracy_on_samples"), b.get("judge_accuracy_on_samples")) for a, b in pairs]
            j_mean, j_sd = (_mean_std([a - b for a, b in judged]) if all(None not in p for p in judged)
                            else (None, None))
            table.append({"mode": mode, "step": step, "images_seen": pairs[0][0]["images_seen"], "pairs": len(pairs),
                          "fid_diff_mean": st["mean"], "fid_diff_std": st["std"], "fid_diff_ci95_low": st["low"],
                          "fid_diff_ci95_high": st["high"], "seeds_better": st["good"],
                          "judge_diff_mean": None if j_mean is None else round(j_mean, 4),
                          "judge_diff_std": None if j_sd is None else round(j_sd, 4), "finding": st["finding"]})
    return table


def first_step_reaching(curve: list[tuple[int, float]], target: float) -> float | str:
    """The first step at which a FID curve ``[(step, fid), ...]`` (sorted by step) is at or below ``target``,
    linearly interpolated between the last evaluation above it and the first at or below it:
    s0 + (s1 - s0) (f0 - target) / (f0 - f1). ``"before"`` when the first evaluation is already there (the
    crossing lies before it, unmeasured), ``"never"`` when no evaluation gets there."""
    for i, (step, fid) in enumerate(curve):
        if fid <= target:
            if i == 0:
                return "before"
            s0, f0 = curve[i - 1]
            return s0 + (step - s0) * (f0 - target) / (f0 - fid)
    return "never"


def steps_saved_vs_baseline(rows: list[dict], baseline: str) -> list[dict]:
    """ProtoDiffusion's claim read directly: how many fewer training steps a mode needs to reach the FID the
    baseline has at each of its steps, **paired by seed** (the horizontal gap between the two FID curves).

    For seed s and a baseline step k (from its second evaluation on: nothing is measured before the first), the
    target is FID(baseline, s, k); each curve's crossing of it is :func:`first_step_reaching` along that curve
    in seed s, and steps saved = crossing(baseline) - crossing(mode) (> 0: the mode gets there sooner). A seed
    counts at step k only when the mode was evaluated there too. A crossing before the mode's first evaluation
    (``crossing_before_first_point``) or after its last (``crossing_after_last_point``: past the budget, or not
    evaluated yet in a seed still running) is censored: counted, left out of the mean. Over the rest: mean,
    sample std, Student-t 95 % interval, the mean relative saving (steps saved / baseline's steps), seeds where
    the mode is sooner; ``finding`` is "sooner" / "later" when the interval excludes 0, "no difference shown"
    when it holds it, "one seed" without an interval, "none measured" when every crossing is censored."""
    curves: dict[tuple[str, int], list[tuple[int, float]]] = {}
    for r in sorted(rows, key=lambda r: r["step"]):
        if r.get("fid") is not None:
            curves.setdefault((r["mode"], r["seed"]), []).append((r["step"], float(r["fid"])))
    at = {key: dict(c) for key, c in curves.items()}  # (mode, seed) -> {step: fid}
    base_curves = {seed: c for (m, seed), c in curves.items() if m == baseline}
    steps = sorted({s for c in base_curves.values() for s, _ in c})[1:]
    # (seed, k) -> (target, the baseline's crossing of it), once for every mode; left out where the baseline's
    # first point is already as good (no crossing measured)
    crossings = {(seed, k): (at[(baseline, seed)][k], first_step_reaching(c, at[(baseline, seed)][k]))
                 for seed, c in base_curves.items() for k in steps if k in at[(baseline, seed)]}
    crossings = {key: tc for key, tc in crossings.items() if not isinstance(tc[1], str)}
    table = []
    for mode in (m for m in dict.fromkeys(r["mode"] for r in rows) if m != baseline):
        for k in steps:
            saved, targets, before, never = [], [], 0, 0
            for seed in base_curves:
                if (seed, k) not in crossings or k not in at.get((mode, seed), {}):
                    continue
                target, ours = crossings[(seed, k)]
                targets.append(target)
                theirs = first_step_reaching(curves[(mode, seed)], target)
                before, never = before + (theirs == "before"), never + (theirs == "never")
                if not isinstance(theirs, str):
                    saved.append((ours, theirs))
            if not targets:
                continue
            diffs = [b - m for b, m in saved]
            st = _paired_stats(diffs, 1, +1, ("sooner", "later"))
            table.append({"mode": mode, "baseline_step": k, "target_fid_mean": round(sum(targets) / len(targets), 3),
                          "pairs": len(diffs), "steps_saved_mean": st["mean"], "steps_saved_std": st["std"],
                          "steps_saved_ci95_low": st["low"], "steps_saved_ci95_high": st["high"],
                          "relative_saving_mean": (round(sum((b - m) / b for b, m in saved) / len(saved), 4)
                                                   if saved else None),
                          "seeds_sooner": st["good"], "crossing_before_first_point": before,
                          "crossing_after_last_point": never, "finding": st["finding"]})
    return table


def baseline_flattening(rows: list[dict], baseline: str, rel_tol: float = 0.05) -> dict | None:
    """Where the baseline's FID curve flattens: the first evaluated step whose mean FID is within ``rel_tol``
    (relative) of the best mean FID measured, with each interval's gain in FID per 1,000 steps.

    The curve is the mean over the seeds evaluated at every one of the baseline's steps (a partial, seed-by-seed
    study has longer curves for its first seeds; mixing seed sets between steps would make steps look flatter or
    steeper than they are); with no such seed, the seeds of the longest curve. ``flattened`` is true only when a
    later evaluation confirms it (the step is not the last one evaluated). With a learning rate that decays to 0 at
    the budget's end, the last interval's gain is small by construction, so read the gains too."""
    mine = [r for r in rows if r["mode"] == baseline and r.get("fid") is not None]
    if not mine:
        return None
    steps = sorted({r["step"] for r in mine})
    by_seed = {s: {r["step"] for r in mine if r["seed"] == s} for s in {r["seed"] for r in mine}}
    longest = max(len(v) for v in by_seed.values())
    seeds = sorted(s for s, v in by_seed.items() if len(v) == len(steps)) or \
        sorted(s for s, v in by_seed.items() if len(v) == longest)[:1]
    curve = sorted(mean_curves([r for r in mine if r["seed"] in seeds]), key=lambda r: r["step"])
    best = min(r["fid_mean"] for r in curve)
    at = next(r for r in curve if r["fid_mean"] <= best * (1 + rel_tol))
    gains = [{"from_step": a["step"], "to_step": b["step"],
              "fid_gain_per_1000_steps": round((a["fid_mean"] - b["fid_mean"]) * 1000 / (b["step"] - a["step"]), 3)}
             for a, b in zip(curve, curve[1:])]
    return {"baseline": baseline, "rel_tol": rel_tol, "seeds": seeds, "best_fid_mean": round(best, 3),
            "step": at["step"], "images_seen": at["images_seen"], "flattened": at["step"] < curve[-1]["step"],
            "last_step_evaluated": curve[-1]["step"], "gains": gains}


def _cpu_hours(point: dict, threads: int) -> float:
    cpu = point.get("train_cpu_seconds_mean")
    return round((cpu if cpu is not None else point["train_seconds_mean"] * threads) / 3600, 3)


def _write_csv(path: Path, rows: list[dict], fields: list[str]) -> Path:
    with atomic_path(path) as tmp:
        with open(tmp, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=fields, extrasaction="ignore")
            w.writeheader()
            w.writerows(rows)
    return path


def plot_curves(means: list[dict], x_key: str, x_label: str, path: Path, scale: float = 1.0) -> Path:
    """FID and the judge's accuracy, mean +- std over seeds (bands), per mode."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg  # the object API: no backend switch, no pyplot state
    from matplotlib.figure import Figure

    fig = Figure(figsize=(10, 4))
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, 2)
    for mode in dict.fromkeys(r["mode"] for r in means):
        mine = sorted((r for r in means if r["mode"] == mode), key=lambda r: r["step"])
        xs = [r[x_key] * scale for r in mine]
        for ax, key in ((axes[0], "fid"), (axes[1], "judge_accuracy")):
            m = [r[f"{key}_mean"] for r in mine]
            if any(v is None for v in m):
                continue
            sd = [r[f"{key}_std"] or 0.0 for r in mine]
            line, = ax.plot(xs, m, marker="o", label=f"{mode} (n={mine[-1]['seeds']})")
            ax.fill_between(xs, [a - b for a, b in zip(m, sd)], [a + b for a, b in zip(m, sd)],
                            color=line.get_color(), alpha=0.15)
    axes[0].set_ylabel("FID vs test split (lower is better)")
    axes[1].set_ylabel("independent judge's accuracy on samples")
    for ax in axes:
        ax.set_xlabel(x_label)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.suptitle("mean +- std over seeds", fontsize=9)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=120)
    return path


def summary_header(cfg: RunConfig) -> dict:
    """What compare.json says about the runs' configuration (the first mode's; all modes share it)."""
    return {"preset": cfg.preset, "dataset": cfg.data.dataset, "image_size": cfg.data.image_size,
            "train_steps": cfg.train.max_steps, "batch_size": cfg.train.batch_size,
            "lr_schedule": cfg.train.lr_schedule}


def _errorbars(ax, rows: list[dict], x_key: str, y_key: str, lo_key: str, hi_key: str, span: float) -> None:
    """Per mode: the mean with its 95 % interval (where >= 2 seeds), modes side by side around each x."""
    modes = list(dict.fromkeys(r["mode"] for r in rows))
    for i, mode in enumerate(modes):
        mine = [r for r in rows if r["mode"] == mode and r[y_key] is not None]
        if not mine:
            continue
        shift = (i - (len(modes) - 1) / 2) * 0.015 * span
        xs = [r[x_key] + shift for r in mine]
        ys = [r[y_key] for r in mine]
        err = [[y - r[lo_key] if r[lo_key] is not None else 0.0 for y, r in zip(ys, mine)],
               [r[hi_key] - y if r[hi_key] is not None else 0.0 for y, r in zip(ys, mine)]]
        lo, hi = min(r["pairs"] for r in mine), max(r["pairs"] for r in mine)
        ax.errorbar(xs, ys, yerr=err, marker="o", capsize=3,
                    label=f"{mode} (seeds paired: {lo}{'' if lo == hi else f'-{hi}'})")
    ax.axhline(0.0, color="k", lw=0.8)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)


def plot_paired(paired: list[dict], baseline: str, path: Path, saved: list[dict] | None = None) -> Path:
    """Each mode's FID minus the baseline's, paired by seed: mean with its 95 % interval (where >= 2 seeds); with
    ``saved``, a second panel: the steps each mode saves to reach the baseline's FID at each of its steps."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg  # the object API: no backend switch, no pyplot state
    from matplotlib.figure import Figure

    saved = [r for r in saved or [] if r["steps_saved_mean"] is not None]
    fig = Figure(figsize=(11 if saved else 6, 4))
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, 2 if saved else 1, squeeze=False)
    _errorbars(axes[0, 0], paired, "images_seen", "fid_diff_mean", "fid_diff_ci95_low", "fid_diff_ci95_high",
               max(r["images_seen"] for r in paired) or 1)
    axes[0, 0].set_xlabel("training images seen")
    axes[0, 0].set_ylabel(f"FID(mode) - FID({baseline}), same seed")
    axes[0, 0].set_title("below 0: better than the baseline; bars: 95 % t-interval over seeds", fontsize=9)
    if saved:
        _errorbars(axes[0, 1], saved, "baseline_step", "steps_saved_mean", "steps_saved_ci95_low",
                   "steps_saved_ci95_high", max(r["baseline_step"] for r in saved))
        axes[0, 1].set_xlabel(f"{baseline}'s step whose FID is the target")
        axes[0, 1].set_ylabel("steps saved to reach it, same seed")
        axes[0, 1].set_title("above 0: the mode gets there sooner; bars: 95 % t-interval", fontsize=9)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=120)
    return path


def _fmt_pm(mean: float | None, sd: float | None, n: int, digits: int = 1) -> str:
    if mean is None:
        return ""
    return f"{mean:.{digits}f}" if n < 2 else f"{mean:.{digits}f} ± {sd:.{digits}f}"


def _markdown_table(header: list[str], rows: list[list[str]]) -> list[str]:
    return ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)] + \
        ["| " + " | ".join(r) + " |" for r in rows]


def _step_by_mode(by: dict, steps: list[int], modes: list[str], cell: Callable[[dict], str]) -> list[list[str]]:
    """Cells of a step x mode table from ``by[(mode, step)]`` rows (blank where a mode has no row at a step)."""
    return [[cell(by[(m, step)]) if (m, step) in by else "" for m in modes] for step in steps]


def summary_markdown(means: list[dict], paired: list[dict], reach: list[dict], flattening: dict | None,
                     baseline: str, fid_protocol: dict, saved: list[dict] | None = None) -> str:
    """The comparison's tables in Markdown, ready to quote in docs: FID mean ± std over seeds per (step, mode) with
    the judge's accuracy and the number of seeds, the paired-by-seed difference to the baseline with its 95 %
    interval, the steps each mode saves to reach the baseline's FID (``saved``, paired by seed), the steps and
    CPU-hours to reach the baseline's best, and where the baseline flattens. Every number
    comes from the rows the CSV files hold."""
    modes = list(dict.fromkeys(r["mode"] for r in means))
    steps = sorted({r["step"] for r in means})
    at = {(r["mode"], r["step"]): r for r in means}
    ref = fid_protocol.get("reference") or {}
    n_gen = fid_protocol.get("n_generated")
    lines = ["# ProtoDiffusion comparison", "",
             f"FID against {ref.get('n', '?')} images of the {ref.get('split', 'test')} split"
             + (f", {n_gen} samples per point" if n_gen else "") + " (lower is better); in parentheses the independent "
             "judge's accuracy on the samples (higher is better); n = seeds evaluated at that point.", ""]

    def fid_cell(r: dict) -> str:
        judge = "" if r["judge_accuracy_mean"] is None else f" ({r['judge_accuracy_mean']:.3f})"
        return f"{_fmt_pm(r['fid_mean'], r['fid_std'], r['seeds'])}{judge}, n={r['seeds']}"

    images = {r["step"]: r["images_seen"] for r in means}
    lines += _markdown_table(["step (images seen)"] + modes,
                             [[f"{step:,} ({images[step]:,})"] + cells
                              for step, cells in zip(steps, _step_by_mode(at, steps, modes, fid_cell))])
    if paired:
        others = list(dict.fromkeys(r["mode"] for r in paired))
        by = {(r["mode"], r["step"]): r for r in paired}
        lines += ["", f"## FID(mode) − FID({baseline}), paired by seed", "",
                  "Mean difference [Student-t 95 % interval], seeds where the mode is better, finding. Below 0: "
                  "better than the baseline.", ""]

        def diff_cell(r: dict) -> str:
            ci = ("" if r["fid_diff_ci95_low"] is None
                  else f" [{r['fid_diff_ci95_low']:+.2f}, {r['fid_diff_ci95_high']:+.2f}]")
            return f"{r['fid_diff_mean']:+.2f}{ci}, {r['seeds_better']}, {r['finding']}"

        paired_steps = sorted({r["step"] for r in paired})
        lines += _markdown_table(["step"] + others,
                                 [[f"{step:,}"] + cells for step, cells in
                                  zip(paired_steps, _step_by_mode(by, paired_steps, others, diff_cell))])
    if saved:
        others = list(dict.fromkeys(r["mode"] for r in saved))
        by = {(r["mode"], r["baseline_step"]): r for r in saved}
        lines += ["", f"## Steps saved to reach {baseline}'s FID, paired by seed", "",
                  f"Per seed, the FID {baseline} has at a step is the target; each curve's first crossing of it is "
                  "interpolated between evaluations, and the steps saved are the baseline's crossing minus the "
                  "mode's (above 0: the mode gets there sooner). Mean [Student-t 95 % interval] (mean relative "
                  "saving), seeds where the mode is sooner, finding; crossings outside the evaluated steps are "
                  "counted, not averaged.", ""]

        def saved_cell(r: dict) -> str:
            if r["steps_saved_mean"] is None:
                text = r["finding"]
            else:
                ci = ("" if r["steps_saved_ci95_low"] is None
                      else f" [{r['steps_saved_ci95_low']:+,.0f}, {r['steps_saved_ci95_high']:+,.0f}]")
                text = (f"{r['steps_saved_mean']:+,.0f}{ci} ({r['relative_saving_mean']:+.1%}), "
                        f"{r['seeds_sooner']}, {r['finding']}")
            after, before = r["crossing_after_last_point"], r["crossing_before_first_point"]
            censored = [f"{after} after the last point"] * bool(after) + \
                [f"{before} before the first point"] * bool(before)
            return text + "".join(f"; {c}" for c in censored)

        saved_steps = sorted({r["baseline_step"] for r in saved})
        lines += _markdown_table([f"{baseline}'s step (its mean FID)"] + others,
                                 [[f"{k:,} ({at[(baseline, k)]['fid_mean']:.1f})"] + cells for k, cells in
                                  zip(saved_steps, _step_by_mode(by, saved_steps, others, saved_cell))])
    if reach:
        lines += ["", f"## Reaching the baseline's best mean FID ({reach[0]['baseline_best_fid']:.2f})", ""]
        lines += _markdown_table(
            ["mode", "best mean FID", "steps to reach", "images seen", "CPU-hours", "seeds reaching it"],
            [[r["mode"], f"{r['best_fid']:.2f}",
              *((f"{r['steps_to_reach']:,}", f"{r['images_seen_to_reach']:,}", f"{r['cpu_hours_to_reach']:.2f}")
                if r["reached"] else ("not reached", "", "")), r["seeds_reaching"]] for r in reach])
    tables = [max((r for r in means if r["mode"] == m), key=lambda r: r["step"]) for m in modes]
    if any(r["table_cosine_to_prototypes_mean"] is not None for r in tables):
        lines += ["", "## The class tables against the prototypes", "",
                  "At each mode's last evaluated step (EMA weights, mean over seeds): the mean cosine of each class's "
                  "row to its prototype, and the distance |T − P| / |P|.", ""]
        lines += _markdown_table(["mode", "step", "cosine to prototypes", "distance to prototypes"],
                                 [[r["mode"], f"{r['step']:,}", f"{r['table_cosine_to_prototypes_mean']:.4f}",
                                   f"{r['table_distance_to_prototypes_mean']:.4f}"]
                                  for r in tables if r["table_cosine_to_prototypes_mean"] is not None])
    if flattening:
        gains = ", ".join(f"{g['fid_gain_per_1000_steps']:.1f}" for g in flattening["gains"]) or "none yet"
        seeds = flattening["seeds"]
        confirmed = ("confirmed by a later point" if flattening["flattened"]
                     else "the last point evaluated: not confirmed")
        lines += ["", f"## Where {baseline} flattens", "",
                  f"Seed{'s' if len(seeds) > 1 else ''} {', '.join(map(str, seeds))}: best mean FID "
                  f"{flattening['best_fid_mean']:.2f}; first within {flattening['rel_tol']:.0%} of it at step "
                  f"{flattening['step']:,} ({confirmed}). FID gained per 1,000 steps, interval by interval: {gains}."]
    return "\n".join(lines) + "\n"


def write_comparison(out: Path, rows: list[dict], baseline: str, meta: dict, protocol: dict,
                     header: dict) -> dict[str, Path]:
    """Write every table, plot and compare.json of a comparison from its evaluated ``rows``."""
    means = mean_curves(rows)
    files = {"curves": _write_csv(out / "curves.csv", rows, CURVE_FIELDS),
             "curves_mean": _write_csv(out / "curves_mean.csv", means, MEAN_FIELDS)}
    threads = meta.get("torch_threads", 1)
    table = reach_baseline_table(means, baseline, rows, threads)
    files["reach_baseline"] = _write_csv(out / "reach_baseline.csv", table, REACH_FIELDS)
    paired = paired_vs_baseline(rows, baseline)
    files["paired_vs_baseline"] = _write_csv(out / "paired_vs_baseline.csv", paired, PAIRED_FIELDS)
    saved = steps_saved_vs_baseline(rows, baseline)
    files["steps_saved"] = _write_csv(out / "steps_saved_vs_baseline.csv", saved, SAVED_FIELDS)
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
