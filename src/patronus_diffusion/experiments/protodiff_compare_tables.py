"""The tables of the ProtoDiffusion comparison (:mod:`.protodiff_compare`), computed from its evaluated rows.

One row per (mode, seed, checkpoint) evaluation (:data:`CURVE_FIELDS`) gives: the mean curves over seeds
(:func:`mean_curves`), the steps and CPU-hours to reach the baseline's best (:func:`reach_baseline_table`), the
FID difference to the baseline paired by seed (:func:`paired_vs_baseline`), the training steps saved to reach the
baseline's FID (:func:`steps_saved_vs_baseline`) and where the baseline flattens (:func:`baseline_flattening`).
The generic statistics (mean and sample std, Student-t interval) are :mod:`~..evaluation.stats`'.
"""

from __future__ import annotations

from pathlib import Path

from ..analysis.tables import write_csv
from ..evaluation.stats import mean_std, t_interval

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


def write_table(path: Path, rows: list[dict], fields: list[str]) -> Path:
    """One of the comparison's CSV tables: ``fields`` as the header, each row's values in that order (a missing
    or None value empty). Line ends are the csv module's default \\r\\n, which the kept record
    (docs/records/protodiff_compare_seeds) has, so rewriting it gives it back byte for byte."""
    return write_csv(path, fields, ([r.get(f) for f in fields] for r in rows), lineterminator="\r\n")


def mean_curves(rows: list[dict]) -> list[dict]:
    """Per (mode, step): mean and sample std over the seeds evaluated there (std 0 with one seed)."""
    out = []
    for mode in dict.fromkeys(r["mode"] for r in rows):
        for step in sorted({r["step"] for r in rows if r["mode"] == mode}):
            g = [r for r in rows if r["mode"] == mode and r["step"] == step]
            fid, fid_sd = mean_std([r["fid"] for r in g])
            kid, kid_sd = mean_std([r["kid"] for r in g])
            judge, judge_sd = mean_std([r.get("judge_accuracy_on_samples") for r in g])
            clf, _ = mean_std([r["classifier_accuracy_on_samples"] for r in g])
            secs, _ = mean_std([r["train_seconds"] for r in g])
            measured = all(r.get("table_cosine_to_prototypes") is not None for r in g)  # older evals lack it
            cos = mean_std([r["table_cosine_to_prototypes"] for r in g])[0] if measured else None
            dist = mean_std([r["table_distance_to_prototypes"] for r in g])[0] if measured else None
            cpu = [r.get("train_cpu_seconds") for r in g]
            cpu_mean = mean_std(cpu)[0] if all(c is not None for c in cpu) else None
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


def _paired_stats(diffs: list[float], digits: int, good_sign: int, words: tuple[str, str]) -> dict:
    """Mean, sample std and Student-t 95 % interval of paired differences (rounded to ``digits``), the seeds on the
    good side (sign ``good_sign``: -1 when lower is better), and the finding the interval reads: ``words[0]`` /
    ``words[1]`` (good / bad) when it excludes 0, "no difference shown" when it holds it, "one seed" without one,
    "none measured" (and no statistics) without any difference."""
    if not diffs:
        return {"mean": None, "std": None, "low": None, "high": None, "good": "0/0", "finding": "none measured"}
    mean, sd = mean_std(diffs)
    lo, hi = t_interval(mean, sd, len(diffs))
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
            j_mean, j_sd = (mean_std([a - b for a, b in judged]) if all(None not in p for p in judged)
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
