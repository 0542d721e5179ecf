"""The figures and the Markdown summary of the ProtoDiffusion comparison (:mod:`.protodiff_compare`), drawn from
the tables of :mod:`.protodiff_compare_tables`.

Figures use matplotlib's object API (a ``Figure`` on its own Agg canvas, :func:`~..analysis.figures.new_figure`):
drawing one never switches the process's backend nor touches pyplot's open figures.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from ..analysis.figures import new_figure, save_figure


def plot_curves(means: list[dict], x_key: str, x_label: str, path: Path, scale: float = 1.0) -> Path:
    """FID and the judge's accuracy, mean +- std over seeds (bands), per mode."""
    fig = new_figure(figsize=(10, 4))
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
    return save_figure(fig, path, dpi=120)


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
    saved = [r for r in saved or [] if r["steps_saved_mean"] is not None]
    fig = new_figure(figsize=(11 if saved else 6, 4))
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
    return save_figure(fig, path, dpi=120)


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
