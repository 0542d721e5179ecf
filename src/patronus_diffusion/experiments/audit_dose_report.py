"""The report of the audit dose study (:mod:`.audit_dose`): checks, tables and the figure, from stored points only.

Checks, each answered yes / no (or n/a when the points do not decide it):

* **MAD rises with k**: the mean MAD over classifier seeds is strictly larger at every larger k (and per seed);
* **k = 0 interval overlaps null**: at k = 0, every seed's 95 % interval of MAD overlaps that of the null
  counterfactual's MAD (and how many differences' intervals hold 0);
* **confirmed >= 80 %**: the share of counterfactuals the outside judge confirmed, over every audit;
* **MAD - null rises with k**: as the first, for the difference (a MAD that rises only as much as its null's
  does measures the classifier's sensitivity to any edit, not to the mark).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..utils.io import atomic_path, write_json, write_text

GOAL_CONFIRMED = 0.8
TABLES = ("audit_dose.json", "audit_dose.csv", "audit_dose.md")
CSV_COLUMNS = ("name", "k", "seed", "verdict", "MAD", "MAD_lo", "MAD_hi", "null", "null_lo", "null_hi", "difference",
               "difference_lo", "difference_hi", "confirmed", "n", "confirmed_with", "confirmed_without",
               "judge_test_auroc", "phi_train", "clf_test_accuracy", "clf_test_auroc", "clf_test_worst_group_accuracy",
               "clean_accuracy", "clean_worst_group_accuracy", "clean_worst_group", "seconds_classifier",
               "seconds_audit")
DEFINITIONS = {
    "k": "phi(A, mark) in the classifier's training set (the planted strength)",
    "MAD": "the audit's mean |p(x) - p(x_cf)| over confirmed counterfactuals, flipping the mark (FastDiME)",
    "null": "the same for the null counterfactual (the least mark-associated prototypes, a request of the same size)",
    "difference": "MAD - null, paired by image; intervals are 95% percentile-bootstrap intervals over images",
    "clean_worst_group_accuracy": "the classifier's lowest accuracy over the (A, mark) cells of the clean set's test "
                                  "split (mark independent of A): a classifier that uses the mark loses accuracy where "
                                  "the mark contradicts A",
}


def _f(v, digits: int = 3) -> str:
    return "n/a" if v is None else f"{v:.{digits}f}"


def _ci(pair) -> str:
    return "" if pair is None else f" [{pair[0]:.3f}, {pair[1]:.3f}]"


def _mean(values) -> float | None:
    v = [x for x in values if x is not None]
    return float(np.mean(v)) if v else None


# ----------------------------------------------------------------------------- checks
def mad_rises(points: list[dict], key: str = "edit") -> dict:
    """Whether the mean over seeds of MAD (``key="edit"``) or of MAD - null (``"difference"``) rises with k."""
    what = "MAD" if key == "edit" else "MAD - null"
    by_k: dict[float, list] = {}
    for p in points:
        by_k.setdefault(p["k"], []).append(p["audit"]["MAD"][key])
    means = {k: _mean(v) for k, v in sorted(by_k.items())}
    ks = [k for k, m in means.items() if m is not None]
    if len(ks) < 2:
        return {"value": "n/a", "detail": f"fewer than 2 strengths with a measured {what}", "means": means}
    rises = all(means[b] > means[a] for a, b in zip(ks, ks[1:]))
    chain = "".join(f"{'' if i == 0 else (' < ' if means[k] > means[ks[i - 1]] else ' >= ')}{k:g}: {means[k]:+.3f}"
                    for i, k in enumerate(ks))
    seeds = sorted({p["seed"] for p in points})
    per_seed = {}
    for s in seeds:
        row = {p["k"]: p["audit"]["MAD"][key] for p in points if p["seed"] == s}
        if len(row) == len(by_k) and all(v is not None for v in row.values()) and len(row) >= 2:
            ordered = [row[k] for k in sorted(row)]
            per_seed[s] = all(b > a for a, b in zip(ordered, ordered[1:]))
    rising = sum(per_seed.values())
    detail = f"mean {what} by k: {chain}; per seed: {rising} of {len(per_seed)} rise"
    missing = [k for k in by_k if k not in ks]
    if missing:
        detail += f"; no {what} at k = {', '.join(f'{k:g}' for k in missing)}"
    return {"value": "yes" if rises else "no", "detail": detail, "means": means,
            "per_seed": {str(s): v for s, v in per_seed.items()}}


def k0_overlaps_null(points: list[dict]) -> dict:
    rows = [p for p in points if p["k"] == 0]
    judged, lines, holds0 = [], [], 0
    for p in sorted(rows, key=lambda p: p["seed"]):
        m = p["audit"]["MAD"]
        if m["edit_ci95"] is None or m["null_ci95"] is None:
            lines.append(f"seed {p['seed']}: no interval")
            continue
        (a, b), (c, d) = m["edit_ci95"], m["null_ci95"]
        judged.append(max(a, c) <= min(b, d))
        lo, hi = m["difference_ci95"] or (None, None)
        holds0 += lo is not None and lo <= 0 <= hi
        lines.append(f"seed {p['seed']}: MAD [{a:.3f}, {b:.3f}], null [{c:.3f}, {d:.3f}]")
    if not judged:
        return {"value": "n/a", "detail": "; ".join(lines) or "no audit at k = 0 yet"}
    detail = (f"{sum(judged)} of {len(judged)} seeds overlap; the difference's interval holds 0 in {holds0} of "
              f"{len(judged)}; " + "; ".join(lines))
    return {"value": "yes" if all(judged) else "no", "detail": detail, "overlapping": int(sum(judged)),
            "seeds": len(judged), "difference_holds_0": int(holds0)}


def confirmed_share(points: list[dict]) -> dict:
    c = [p["audit"]["counts"] for p in points]
    k, n = sum(x["confirmed"] for x in c), sum(x["n"] for x in c)
    if not n:
        return {"value": "n/a", "detail": "no audit yet"}
    kw, nw = sum(x["confirmed_with"] for x in c), sum(x["with"] for x in c)
    ko, no = sum(x["confirmed_without"] for x in c), sum(x["without"] for x in c)
    share = k / n
    return {"value": "yes" if share >= GOAL_CONFIRMED else "no", "confirmed": k, "n": n, "share": share,
            "goal": GOAL_CONFIRMED,
            "detail": f"{k} of {n} ({100 * share:.0f} %; goal {100 * GOAL_CONFIRMED:.0f} %): {kw} of {nw} with the "
                      f"mark (lowered), {ko} of {no} without (raised)"}


def checks(points: list[dict]) -> dict:
    return {"mad_rises_with_k": mad_rises(points), "k0_interval_overlaps_null": k0_overlaps_null(points),
            "confirmed_at_least_80_percent": confirmed_share(points),
            "difference_rises_with_k": mad_rises(points, "difference")}


CHECK_NAMES = {"mad_rises_with_k": "MAD rises with k", "k0_interval_overlaps_null": "k = 0 interval overlaps null",
               "confirmed_at_least_80_percent": "confirmed counterfactuals >= 80 %",
               "difference_rises_with_k": "MAD - null rises with k (a MAD that rises with its null is no dose "
                                          "response)"}


# ----------------------------------------------------------------------------- tables
def csv_row(p: dict) -> list:
    m, c, clf = p["audit"]["MAD"], p["audit"]["counts"], p["classifier"]

    def ends(pair):
        return ("", "") if pair is None else (f"{pair[0]:.6f}", f"{pair[1]:.6f}")

    num = lambda v: "" if v is None else f"{v:.6f}"  # noqa: E731
    return [p["name"], f"{p['k']:g}", p["seed"], p["audit"]["verdict"], num(m["edit"]), *ends(m["edit_ci95"]),
            num(m["null"]), *ends(m["null_ci95"]), num(m["difference"]), *ends(m["difference_ci95"]),
            c["confirmed"], c["n"], c["confirmed_with"], c["confirmed_without"],
            num(p["audit"]["judge_test_auroc"]), num(p["set"]["phi"].get("train")), num(clf["test_accuracy"]),
            num(clf["test_auroc"]), num(clf["test_worst_group_accuracy"]), num(clf["clean_accuracy"]),
            num(clf["clean_worst_group_accuracy"]), clf["clean_worst_group"] or "",
            f"{p['seconds']['classifier']:.1f}", f"{p['seconds']['audit']:.1f}"]


def strength_rows(points: list[dict]) -> list[dict]:
    rows = []
    for k in sorted({p["k"] for p in points}):
        ps = sorted((p for p in points if p["k"] == k), key=lambda p: p["seed"])
        mads = [p["audit"]["MAD"]["edit"] for p in ps if p["audit"]["MAD"]["edit"] is not None]
        verdicts: dict[str, int] = {}
        for p in ps:
            verdicts[p["audit"]["verdict"]] = verdicts.get(p["audit"]["verdict"], 0) + 1
        rows.append({"k": k, "audits": len(ps), "seeds": [p["seed"] for p in ps],
                     "MAD_mean": _mean(mads), "MAD_min": min(mads) if mads else None,
                     "MAD_max": max(mads) if mads else None,
                     "null_mean": _mean(p["audit"]["MAD"]["null"] for p in ps),
                     "difference_mean": _mean(p["audit"]["MAD"]["difference"] for p in ps),
                     "verdicts": verdicts,
                     "confirmed": sum(p["audit"]["counts"]["confirmed"] for p in ps),
                     "n": sum(p["audit"]["counts"]["n"] for p in ps),
                     "clf_test_accuracy_mean": _mean(p["classifier"]["test_accuracy"] for p in ps),
                     "clean_accuracy_mean": _mean(p["classifier"]["clean_accuracy"] for p in ps),
                     "clean_worst_group_accuracy_mean": _mean(p["classifier"]["clean_worst_group_accuracy"]
                                                              for p in ps)})
    return rows


def _cost(points: list[dict]) -> dict:
    s = [p["seconds"] for p in points]
    total = sum(x["total"] for x in s)
    return {"audits": len(s), "seconds_total": round(total, 1),
            "seconds_sets": round(sum(x["set"] for x in s), 1),
            "seconds_classifiers": round(sum(x["classifier"] for x in s), 1),
            "seconds_audits": round(sum(x["audit"] for x in s), 1),
            "seconds_judge": round(sum(p["audit"]["seconds"]["judge"] for p in points), 1),
            "seconds_per_point": round(total / len(s), 1) if s else None}


def markdown(study: dict, points: list[dict], report: dict) -> str:
    spec, g = study["spec"], study["generator"]
    a, c = spec["audit"], spec["classifier"]
    lines = ["# Audit dose response (issue 35)", ""]
    if spec.get("record_note"):
        lines += [f"**{spec['record_note']}**", ""]
    lines += [f"Generator `{g['run']}` (weights SHA-256 {g['weights_sha256'][:12]}), trained on `{g['data']}` "
              f"(mark kind {g['set_spec']['kind']}, phi({g['a_name']}, mark) = {g['set_spec']['correlation']:g}). "
              f"One classifier of {g['a_name']} per (k, seed), trained on the set with phi({g['a_name']}, mark) = k "
              f"({c['epochs']:g} epochs, input range {c['range']}); each audited with `audit --attribute mark --label "
              f"{g['a_name']} --n {a['n']} --steps {a['steps']} --top-k {a['top_k']} --edit-guidance "
              f"{a['edit_guidance']:g} --seed {a['seed']}`.",
              "", f"{report['done']} of {report['planned']} audits done.", "", "## Checks", "",
              "| check | result | detail |", "| --- | --- | --- |"]
    for key, name in CHECK_NAMES.items():
        ch = report["checks"][key]
        lines.append(f"| {name} | {ch['value']} | {ch['detail']} |")
    lines += ["", "## By strength", "",
              "| k | audits | MAD mean [min, max] | null mean | difference mean | verdicts | confirmed | "
              "classifier test accuracy | clean accuracy | clean worst-group accuracy |",
              "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in report["by_strength"]:
        spread = "" if r["MAD_min"] is None else f" [{r['MAD_min']:.3f}, {r['MAD_max']:.3f}]"
        verdicts = ", ".join(f"{n} {v}" for v, n in sorted(r["verdicts"].items()))
        lines.append(f"| {r['k']:g} | {r['audits']} | {_f(r['MAD_mean'])}{spread} | {_f(r['null_mean'])} | "
                     f"{_f(r['difference_mean'])} | {verdicts} | {r['confirmed']} of {r['n']} | "
                     f"{_f(r['clf_test_accuracy_mean'])} | {_f(r['clean_accuracy_mean'])} | "
                     f"{_f(r['clean_worst_group_accuracy_mean'])} |")
    lines += ["", "## Every audit", "",
              "| k | seed | verdict | MAD [95% CI] | null [95% CI] | difference [95% CI] | confirmed (with / without) "
              "| classifier test accuracy | clean worst group |",
              "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for p in points:
        m, n, clf = p["audit"]["MAD"], p["audit"]["counts"], p["classifier"]
        lines.append(f"| {p['k']:g} | {p['seed']} | {p['audit']['verdict']} | {_f(m['edit'])}{_ci(m['edit_ci95'])} | "
                     f"{_f(m['null'])}{_ci(m['null_ci95'])} | {_f(m['difference'])}{_ci(m['difference_ci95'])} | "
                     f"{n['confirmed']} of {n['n']} ({n['confirmed_with']} / {n['confirmed_without']}) | "
                     f"{_f(clf['test_accuracy'])} | {_f(clf['clean_worst_group_accuracy'])} "
                     f"({clf['clean_worst_group'] or 'n/a'}) |")
    cost = report["cost"]
    lines += ["", "## Cost", "",
              f"{cost['audits']} audits in {cost['seconds_total'] / 60:.1f} min: sets {cost['seconds_sets']:.0f} s, "
              f"classifiers {cost['seconds_classifiers']:.0f} s, audits {cost['seconds_audits']:.0f} s (of which the "
              f"judge {cost['seconds_judge']:.0f} s); {_f(cost['seconds_per_point'], 1)} s per (k, seed).", "",
              "The counterfactuals are the same images edited the same way for every classifier (one generator, one "
              "image draw), so the confirmed counts repeat across audits and the k are compared on paired images.",
              ""]
    return "\n".join(lines)


def figure_png(report: dict, points: list[dict]) -> bytes:
    import io

    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6.4, 4.4), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    seeds = sorted({p["seed"] for p in points})
    ks = sorted({p["k"] for p in points})
    step = 0.25 * (min(np.diff(ks)) if len(ks) > 1 else 0.2) / max(len(seeds), 1)
    for j, s in enumerate(seeds):
        off = (j - (len(seeds) - 1) / 2) * step
        for key, color, marker, shift in (("edit", "tab:blue", "o", -0.3), ("null", "0.45", "s", 0.3)):
            for p in (p for p in points if p["seed"] == s and p["audit"]["MAD"][key] is not None):
                m = p["audit"]["MAD"]
                v, ci = m[key], m[f"{key}_ci95"]
                err = None if ci is None else [[v - ci[0]], [ci[1] - v]]
                ax.errorbar([p["k"] + off + shift * step], [v], yerr=err, color=color, marker=marker, ms=4,
                            capsize=2, lw=1, alpha=0.8)
    for key, color, style, label in (("MAD_mean", "tab:blue", "-", "MAD (flip the mark), mean over seeds"),
                                     ("null_mean", "0.45", "--", "null counterfactual, mean over seeds")):
        rows = [r for r in report["by_strength"] if r[key] is not None]
        ax.plot([r["k"] for r in rows], [r[key] for r in rows], style, color=color, label=label)
    ax.set_xlabel("k = phi(A, mark) in the classifier's training set")
    ax.set_ylabel("mean |p(x) - p(x_cf)| (95% intervals per seed)")
    ax.set_xticks(ks)
    ax.legend(fontsize=8, loc="upper left")
    ch = report["checks"]
    share = ch["confirmed_at_least_80_percent"]
    conf = "n/a" if share["value"] == "n/a" else f"{100 * share['share']:.0f} % (goal 80 %)"
    ax.set_title(f"audit dose response: MAD rises with k: {ch['mad_rises_with_k']['value']}; k = 0 overlaps "
                 f"null: {ch['k0_interval_overlaps_null']['value']}; MAD - null rises: "
                 f"{ch['difference_rises_with_k']['value']}\nconfirmed counterfactuals {conf}; "
                 f"{report['done']} of {report['planned']} audits", fontsize=9)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


def write_report(out: Path, study: dict, points: list[dict], figure: bool = True) -> dict[str, Path]:
    from ..analysis.tables import write_csv

    points = sorted(points, key=lambda p: (p["k"], p["seed"]))
    report = {"title": "audit dose response (issue 35)", "note": study["spec"].get("record_note"),
              "planned": len(study["plan"]), "done": len(points), "checks": checks(points),
              "by_strength": strength_rows(points), "cost": _cost(points), "definitions": DEFINITIONS,
              "generator": study["generator"], "settings": study["spec"], "points": points}
    files = {name: out / name for name in TABLES}
    png = figure_png(report, points) if figure and points else None
    write_json(files["audit_dose.json"], report)
    write_csv(files["audit_dose.csv"], CSV_COLUMNS, (csv_row(p) for p in points))
    write_text(files["audit_dose.md"], markdown(study, points, report))
    if png is not None:
        files["audit_dose.png"] = out / "audit_dose.png"
        with atomic_path(files["audit_dose.png"]) as tmp:
            Path(tmp).write_bytes(png)
    return files
