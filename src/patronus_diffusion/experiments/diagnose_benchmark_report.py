"""Tables and figure of the detector benchmark, rewritten from its stored per-model evaluations alone.

Every number here comes from ``OUT/evals/*.json`` and ``OUT/benchmark.json`` (:func:`write_report`), so
``patronus diagnose-benchmark --report-only`` and the record test reproduce them byte for byte. Pairs are of
three classes: **planted** (A and the planted mark, at a strength rho != 0), **uncoupled** (independent in the
training data by construction: A or the mark with the control mark, and A with the mark at rho = 0) and
**blind** (any pair with the coin column, which no image shows). Scores of pairs without a tested direction
(NaN) count as 0 in the AUROC and rank below every measured pair; ties rank against the planted pair.

Verdicts are read after the check against the training labels (:func:`~..analysis.verdicts.check_training_labels`:
a claimed coupling those labels lack is ``entanglement``). Evaluations stored before that check existed get it
here (:func:`with_label_check`), from the phi of their training set that each evaluation records and the study's
``n_train``; the verdict by the rules alone stays beside it (``verdict_before_label_check``) and the headline
counts claims both ways.
"""

from __future__ import annotations

import csv
import io
import math
from pathlib import Path

import numpy as np

from ..analysis.verdicts import CLAIMS, ENTANGLEMENT, check_training_labels, coupling_of_labels, split_negation
from ..utils.io import atomic_path, write_text

NO_COUPLING = "no coupling detected"
VERDICT_ORDER = ("shortcut", "coupling below tau", ENTANGLEMENT, "no coupling detected", "inconclusive", "skipped")
BOOT = 2000


# ----------------------------------------------------------------------------- statistics
def wilson(k: int, n: int, z: float = 1.959964) -> tuple[float, float]:
    """95 % Wilson score interval of a share k/n ((nan, nan) for n = 0)."""
    if n == 0:
        return float("nan"), float("nan")
    p = k / n
    den = 1 + z * z / n
    mid = (p + z * z / (2 * n)) / den
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / den
    return max(0.0, mid - half), min(1.0, mid + half)


def auroc_pos_neg(pos: list[float], neg: list[float]) -> float:
    """P(a planted |score| > an uncoupled one) + P(tie) / 2; NaN when either side is empty."""
    if not pos or not neg:
        return float("nan")
    p, q = np.asarray(pos, float)[:, None], np.asarray(neg, float)[None, :]
    return float(((p > q).sum() + 0.5 * (p == q).sum()) / (p.size * q.size))


def auroc_with_ci(pos: list[float], neg: list[float], seed: int = 0) -> tuple[float, float, float]:
    """AUROC and its 95 % percentile-bootstrap interval (planted and uncoupled pairs resampled separately)."""
    point = auroc_pos_neg(pos, neg)
    if not np.isfinite(point):
        return point, float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    p, q = np.asarray(pos, float), np.asarray(neg, float)
    vals = [auroc_pos_neg(list(p[rng.integers(0, len(p), len(p))]), list(q[rng.integers(0, len(q), len(q))]))
            for _ in range(BOOT)]
    lo, hi = np.quantile(vals, [0.025, 0.975])
    return point, float(lo), float(hi)


def abs_interval(lo: float, hi: float) -> tuple[float, float]:
    """The interval of |score| from the signed score's interval [lo, hi]."""
    if not (np.isfinite(lo) and np.isfinite(hi)):
        return float("nan"), float("nan")
    if lo >= 0:
        return lo, hi
    if hi <= 0:
        return -hi, -lo
    return 0.0, max(-lo, hi)


def _f(v, fmt: str = "+.3f") -> str:
    return "n/a" if v is None or not np.isfinite(v) else format(v, fmt)


def _c(v, fmt: str = ".4f") -> str:  # a CSV cell
    return "" if v is None or not np.isfinite(v) else format(v, fmt)


def _yes(v) -> str:
    return "unmeasured" if v is None else ("yes" if v else "no")


def _num(v) -> float:
    return float("nan") if v is None else float(v)


def _sign(v: float) -> int:
    return 0 if not np.isfinite(v) or v == 0 else (1 if v > 0 else -1)


# ----------------------------------------------------------------------------- the training labels
def training_phi(ev: dict, a: str, b: str) -> float | None:
    """phi(a, b) of the model's training set as recorded in its evaluation (names as given, ``not:`` negates),
    None when the evaluation records no such pair."""
    (x, sx), (y, sy) = split_negation(a), split_negation(b)
    table = ev.get("data", {}).get("train", {})
    v = table.get(f"{x},{y}", table.get(f"{y},{x}"))
    return None if v is None else sx * sy * float(v)


def with_label_check(ev: dict, n_train: int) -> dict:
    """The evaluation with every scan row and both namings checked against the training labels, where it was
    stored before the check existed (their rows lack ``training_labels``); checked ones are returned as stored."""
    def checked(row: dict) -> dict:
        if "training_labels" in row:
            return row
        phi_value = training_phi(ev, row["a"], row["b"])
        labels = None if phi_value is None else coupling_of_labels(phi_value, n_train)
        out = check_training_labels({**row, "score": _num(row["score"]), "reason": row.get("reason", "")},
                                    labels, (row["a"], row["b"]))
        out["score"] = row["score"]
        out["label_check"] = "by the report (evaluated before the check)"
        return out

    return {**ev, "scan": {**ev["scan"], "rows": [checked(r) for r in ev["scan"]["rows"]]},
            "naming": {k: checked(v) for k, v in ev["naming"].items()}}


def rule_verdict(row: dict) -> str:
    """The verdict by the interval rules alone, before the check against the training labels."""
    return row.get("verdict_before_label_check") or row["verdict"]


# ----------------------------------------------------------------------------- classification
def pair_class(ev: dict, a: str, b: str) -> str:
    if "coin" in (a, b):
        return "blind"
    if {a, b} == {ev["a_name"], "mark"}:
        return "planted" if ev["rho"] != 0 else "uncoupled"
    return "uncoupled"


def pair_rows(ev: dict) -> list[dict]:
    """The scan's rows of one model with their class and the planted pair's pessimistic rank."""
    rows = []
    for r in ev["scan"]["rows"]:
        score = _num(r["score"])
        rows.append({"a": r["a"], "b": r["b"], "class": pair_class(ev, r["a"], r["b"]), "score": score,
                     "ci95": [_num(v) for v in r["ci95"]], "verdict": r["verdict"], "rule_verdict": rule_verdict(r),
                     "train_phi": (r.get("training_labels") or {}).get("phi")})
    for r in rows:  # 1 + the other measured pairs at least as strong (ties rank against this pair); unmeasured last
        r["rank"] = (1 + sum(1 for o in rows if o is not r and np.isfinite(o["score"])
                             and abs(o["score"]) >= abs(r["score"])) if np.isfinite(r["score"]) else len(rows))
    return rows


def naming_agrees(ev: dict) -> bool | None:
    """Same verdict under (A, mark) and (not:A, mark), with opposite signs (or both scores 0); None when either
    has no measured score (no tested direction): two unmeasured diagnoses agree on nothing."""
    x, y = ev["naming"]["a_b"], ev["naming"]["nota_b"]
    if not (np.isfinite(_num(x["score"])) and np.isfinite(_num(y["score"]))):
        return None
    return x["verdict"] == y["verdict"] and _sign(_num(x["score"])) == -_sign(_num(y["score"]))


# ----------------------------------------------------------------------------- tables
def model_table(evals: list[dict]) -> list[dict]:
    rows = []
    for ev in evals:
        ab, nab, j = ev["naming"]["a_b"], ev["naming"]["nota_b"], ev["judge"]
        score = _num(ab["score"])
        lo, hi = (_num(v) for v in ab["ci95"])
        alo, ahi = abs_interval(lo, hi)
        planted = next((r for r in pair_rows(ev) if {r["a"], r["b"]} == {ev["a_name"], "mark"}), None)
        steer = j.get("steered", {})
        rows.append({"kind": ev["kind"], "rho": ev["rho"], "train_seed": ev["train_seed"], "score": score,
                     "ci_low": lo, "ci_high": hi, "abs_score": abs(score) if np.isfinite(score) else float("nan"),
                     "abs_ci_low": alo, "abs_ci_high": ahi, "verdict": ab["verdict"],
                     "tested": "+".join(d.split(" -> ")[0] for d in ab["tested_directions"]) or "none",
                     "not_a_score": _num(nab["score"]), "not_a_verdict": nab["verdict"],
                     "naming_agrees": naming_agrees(ev), "scan_rank": planted["rank"] if planted else None,
                     "pairs": len(ev["scan"]["rows"]), "steered": steer.get("k"), "steer_n": steer.get("n"),
                     "steer_share": _num(steer.get("share")),
                     "train_seconds": ev["train"]["seconds"], "eval_seconds": ev["seconds"]["evaluate"]})
    return rows


def detection(evals: list[dict], seed: int = 0) -> list[dict]:
    """The headline measures, each with its interval and N."""
    out = []
    pairs = [(ev, r) for ev in evals for r in pair_rows(ev)]
    strength = lambda r: abs(r["score"]) if np.isfinite(r["score"]) else 0.0  # noqa: E731
    neg = [strength(r) for _, r in pairs if r["class"] == "uncoupled"]
    pos = [strength(r) for _, r in pairs if r["class"] == "planted"]
    v, lo, hi = auroc_with_ci(pos, neg, seed)
    unmeasured = sum(1 for _, r in pairs if r["class"] != "blind" and not np.isfinite(r["score"]))
    out.append({"measure": "AUROC of abs(score), planted vs uncoupled pairs (scan)", "value": v, "ci_low": lo,
                "ci_high": hi, "k": None,
                "n": f"{len(pos)} planted, {len(neg)} uncoupled ({unmeasured} of them unmeasured, as 0)"})
    for rho in sorted({ev["rho"] for ev in evals if ev["rho"] != 0}):
        p = [strength(r) for ev, r in pairs if r["class"] == "planted" and ev["rho"] == rho]
        v, lo, hi = auroc_with_ci(p, neg, seed)
        out.append({"measure": f"AUROC at rho = {rho:+.2f} (its planted pairs vs every uncoupled pair)", "value": v,
                    "ci_low": lo, "ci_high": hi, "k": None, "n": f"{len(p)} planted, {len(neg)} uncoupled"})

    def share(measure: str, hits: list[bool]) -> None:
        k, n = int(sum(hits)), len(hits)
        lo, hi = wilson(k, n)
        out.append({"measure": measure, "value": k / n if n else float("nan"), "ci_low": lo, "ci_high": hi,
                    "k": k, "n": str(n)})

    planted_models = [ev for ev in evals if ev["rho"] != 0]
    rank1 = lambda ev: any(r["class"] == "planted" and r["rank"] == 1 for r in pair_rows(ev))  # noqa: E731
    share("precision@1 of the scan (planted pair strictly first), models with rho != 0",
          [rank1(ev) for ev in planted_models])
    for cut in (0.75,):
        share(f"precision@1 of the scan, models with abs(rho) >= {cut}",
              [rank1(ev) for ev in planted_models if abs(ev["rho"]) >= cut])
    share("false 'shortcut'/'coupling below tau' on uncoupled pairs (scan)",
          [r["verdict"] in CLAIMS for _, r in pairs if r["class"] == "uncoupled"])
    share("'entanglement' on uncoupled pairs (scan): a coupling the model makes, named as its own",
          [r["verdict"] == ENTANGLEMENT for _, r in pairs if r["class"] == "uncoupled"])
    share("the same claims by the interval rules alone, before the training-label check (uncoupled pairs, scan)",
          [r["rule_verdict"] in CLAIMS for _, r in pairs if r["class"] == "uncoupled"])
    share("false 'entanglement' on planted pairs (scan): a coupling their training labels hold, called the "
          "model's own", [r["verdict"] == ENTANGLEMENT for _, r in pairs if r["class"] == "planted"])
    share("false 'no coupling detected' on planted pairs (scan)",
          [r["verdict"] == NO_COUPLING for _, r in pairs if r["class"] == "planted"])
    share("false 'no coupling detected' on blind pairs (scan)",
          [r["verdict"] == NO_COUPLING for _, r in pairs if r["class"] == "blind"])
    named = [(ev, ev["naming"][k]) for ev in evals for k in ("a_b", "nota_b")]
    share("false 'shortcut'/'coupling below tau', naming diagnoses at rho = 0",
          [d["verdict"] in CLAIMS for ev, d in named if ev["rho"] == 0])
    share("the same, by the interval rules alone (before the training-label check)",
          [rule_verdict(d) in CLAIMS for ev, d in named if ev["rho"] == 0])
    share("false 'no coupling detected', naming diagnoses at rho != 0",
          [d["verdict"] == NO_COUPLING for ev, d in named if ev["rho"] != 0])
    share("claimed couplings of planted pairs with the sign of rho, (A, mark) diagnoses",
          [_sign(_num(ev["naming"]["a_b"]["score"])) == _sign(ev["rho"]) for ev in evals
           if ev["rho"] != 0 and ev["naming"]["a_b"]["verdict"] in CLAIMS])
    share("naming agreement: same verdict, opposite sign for (A, mark) and (not:A, mark), models where both "
          "are measured", [a for a in (naming_agrees(ev) for ev in evals) if a is not None])
    steered = [ev["judge"]["steered"] for ev in evals if "steered" in ev["judge"]]
    k, n = sum(s["k"] for s in steered), sum(s["n"] for s in steered)
    lo, hi = wilson(k, n)
    out.append({"measure": "steerability by the outside judge: read as marked after the mark edit, among images "
                           "whose reconstruction it reads unmarked (pooled)",
                "value": k / n if n else float("nan"), "ci_low": lo, "ci_high": hi, "k": k,
                "n": f"{n} images, {len(steered)} models"})
    recon = [ev["judge"]["marked_reconstruction"] for ev in evals if "marked_reconstruction" in ev["judge"]]
    k, n = sum(s["k"] for s in recon), sum(s["n"] for s in recon)
    lo, hi = wilson(k, n)
    out.append({"measure": "unedited reconstructions the outside judge reads as marked (pooled)",
                "value": k / n if n else float("nan"), "ci_low": lo, "ci_high": hi, "k": k,
                "n": f"{n} images, {len(recon)} models"})
    return out


def judge_table(evals: list[dict]) -> list[dict]:
    """Per (kind, rho): the outside judges' accuracy on real test images and what they read on the models' edits."""
    out = []
    for kind in dict.fromkeys(ev["kind"] for ev in evals):
        for rho in sorted({ev["rho"] for ev in evals if ev["kind"] == kind}):
            g = [ev["judge"] for ev in evals if ev["kind"] == kind and ev["rho"] == rho and "steered" in ev["judge"]]
            if not g:
                continue
            row = {"kind": kind, "rho": rho, "models": len(g),
                   "judge_accuracy_mark": g[0]["judge_test_accuracy"]["mark"],
                   "judge_accuracy_a": g[0]["judge_test_accuracy"]["a"]}
            for key in ("steered", "marked_reconstruction", "marked_original"):
                k, n = sum(j[key]["k"] for j in g), sum(j[key]["n"] for j in g)
                row.update({f"{key}_k": k, f"{key}_n": n, key: k / n if n else float("nan")})
            leaks = [j["a_leak"]["value"] for j in g if np.isfinite(_num(j["a_leak"]["value"]))]
            row["a_leak_mean"] = float(np.mean(leaks)) if leaks else float("nan")
            out.append(row)
    return out


def verdict_counts(evals: list[dict]) -> list[dict]:
    """Scan verdicts per (pair class, rho): how many pairs got each verdict."""
    rows = {}
    for ev in evals:
        for r in pair_rows(ev):
            key = (r["class"], ev["rho"])
            rows.setdefault(key, {v: 0 for v in VERDICT_ORDER})
            rows[key][r["verdict"] if r["verdict"] in VERDICT_ORDER else "skipped"] += 1
    order = {"planted": 0, "uncoupled": 1, "blind": 2}
    return [{"class": c, "rho": rho, **counts, "pairs": sum(counts.values())}
            for (c, rho), counts in sorted(rows.items(), key=lambda kv: (order[kv[0][0]], kv[0][1]))]


def dose_summary(models: list[dict]) -> list[dict]:
    """Per (kind, rho): models, mean |score| (unmeasured as 0), its range, verdicts of (A, mark), steerability."""
    out = []
    for kind in dict.fromkeys(m["kind"] for m in models):
        for rho in sorted({m["rho"] for m in models if m["kind"] == kind}):
            g = [m for m in models if m["kind"] == kind and m["rho"] == rho]
            a = [m["abs_score"] if np.isfinite(m["abs_score"]) else 0.0 for m in g]
            verdicts = {}
            for m in g:
                verdicts[m["verdict"]] = verdicts.get(m["verdict"], 0) + 1
            k = sum(m["steered"] or 0 for m in g)
            n = sum(m["steer_n"] or 0 for m in g)
            out.append({"kind": kind, "rho": rho, "models": len(g), "mean_abs_score": float(np.mean(a)),
                        "min_abs_score": float(np.min(a)), "max_abs_score": float(np.max(a)),
                        "unmeasured": sum(1 for m in g if not np.isfinite(m["abs_score"])),
                        "verdicts": "; ".join(f"{v} {c}" for v, c in sorted(verdicts.items(),
                                                                            key=lambda kv: VERDICT_ORDER.index(kv[0])
                                                                            if kv[0] in VERDICT_ORDER else 9)),
                        "rank1": sum(1 for m in g if m["scan_rank"] == 1),
                        "steer_k": k, "steer_n": n, "steer_share": k / n if n else float("nan")})
    return out


# ----------------------------------------------------------------------------- files
MODEL_FIELDS = ["kind", "rho", "train_seed", "score", "ci_low", "ci_high", "abs_score", "abs_ci_low", "abs_ci_high",
                "verdict", "tested", "not_a_score", "not_a_verdict", "naming_agrees", "scan_rank", "pairs", "steered",
                "steer_n", "steer_share", "train_seconds", "eval_seconds"]
PAIR_FIELDS = ["kind", "rho", "train_seed", "a", "b", "class", "score", "ci_low", "ci_high", "verdict", "rank",
               "rule_verdict", "train_phi"]


def _csv(fields: list[str], rows: list[dict]) -> str:
    def cell(v):
        if isinstance(v, bool):
            return _yes(v)
        if isinstance(v, float):
            return _c(v)
        return "" if v is None else str(v)

    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(fields)
    for r in rows:
        w.writerow([cell(r.get(f)) for f in fields])
    return buf.getvalue()


def summary_markdown(spec: dict, plan: list[str], evals: list[dict], models: list[dict], headline: list[dict],
                     dose: list[dict], counts: list[dict], judged: list[dict]) -> str:
    s = spec
    lines = [f"# Detector benchmark: {len(evals)} of {len(plan)} planned models evaluated", ""]
    if s.get("record_note"):
        lines += [f"> {s['record_note']}", ""]
    lines += [f"Planted marks {', '.join(s['mark_kinds'])} tied to {s['a_name']} (classes {s['a_classes']} of "
              f"{s['classes']}) at strengths {', '.join(f'{r:+.2f}' for r in s['strengths'])}; "
              f"{s['train_seeds']} training seed(s) at "
              f"{', '.join(f'{r:+.2f}' for r in s['seeded_strengths']) or 'no strength'}, one elsewhere (first seed "
              f"{s['first_train_seed']}); {s['train_steps']} training steps per model from "
              f"{s['init_from'] or 'scratch (preset ' + str(s['preset']) + ')'}; "
              f"{s['n_train']} train / {s['n_test']} test images per set.",
              f"Diagnosis: {s['diagnose']['n_images']} images x {s['diagnose']['seeds']} seeds, top-k "
              f"{s['diagnose']['top_k']}, {s['diagnose']['steps']} steps, tau = {s['diagnose']['threshold']:g}, "
              f"probe AUROC >= {s['diagnose']['min_probe_auroc']:g}, own effect >= "
              f"{s['diagnose'].get('min_own_effect', 0.1):g}, edit guidance "
              f"{s['diagnose']['edit_guidance']:g}; {s.get('scan', 'pairwise')} scan over "
              f"{', '.join(evals[0]['names']) if evals else '-'}; "
              f"judge steerability on {s['steer_n']} clean test images without the mark per model.", "",
              "## Headline", "", "| measure | value | 95 % interval | N |", "| --- | --- | --- | --- |"]
    for h in headline:
        k = "" if h["k"] is None else f"{h['k']} / "
        lines.append(f"| {h['measure']} | {_f(h['value'], '.3f')} | [{_f(h['ci_low'], '.3f')}, "
                     f"{_f(h['ci_high'], '.3f')}] | {k}{h['n']} |")
    lines += ["", "## Dose response: |score| of (A, mark) by planted strength", "",
              "| mark | rho | models | mean abs score | range | unmeasured | verdicts of (A, mark) | scan rank 1 | "
              "judge steered |", "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for d in dose:
        lines.append(f"| {d['kind']} | {d['rho']:+.2f} | {d['models']} | {d['mean_abs_score']:.3f} | "
                     f"{d['min_abs_score']:.3f} to {d['max_abs_score']:.3f} | {d['unmeasured']} | {d['verdicts']} | "
                     f"{d['rank1']} / {d['models']} | {d['steer_k']} / {d['steer_n']} "
                     f"({_f(d['steer_share'], '.2f')}) |")
    lines += ["", "## Scan verdicts by pair class", "",
              "| pair class | rho | pairs | " + " | ".join(VERDICT_ORDER) + " |",
              "| --- | --- | --- | " + " | ".join("---" for _ in VERDICT_ORDER) + " |"]
    for c in counts:
        lines.append(f"| {c['class']} | {c['rho']:+.2f} | {c['pairs']} | "
                     + " | ".join(str(c[v]) for v in VERDICT_ORDER) + " |")
    lines += ["", "## Outside judge", "",
              "| mark | rho | models | judge accuracy, mark / A (real test images) | steered (of reconstructions read "
              "unmarked) | reconstructions read marked | originals read marked | leak into A as it reads it |",
              "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for j in judged:
        lines.append(f"| {j['kind']} | {j['rho']:+.2f} | {j['models']} | {j['judge_accuracy_mark']:.3f} / "
                     f"{j['judge_accuracy_a']:.3f} | {j['steered_k']} / {j['steered_n']} "
                     f"({_f(j['steered'], '.2f')}) | {j['marked_reconstruction_k']} / {j['marked_reconstruction_n']} | "
                     f"{j['marked_original_k']} / {j['marked_original_n']} | {_f(j['a_leak_mean'])} |")
    lines += ["", "## Per model", "",
              "| mark | rho | seed | score [95 % CI] | verdict | not:A score | not:A verdict | naming agrees | "
              "scan rank | judge steered |", "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for m in models:
        lines.append(f"| {m['kind']} | {m['rho']:+.2f} | {m['train_seed']} | {_f(m['score'])} "
                     f"[{_f(m['ci_low'])}, {_f(m['ci_high'])}] | {m['verdict']} | {_f(m['not_a_score'])} | "
                     f"{m['not_a_verdict']} | {_yes(m['naming_agrees'])} | {m['scan_rank']} of "
                     f"{m['pairs']} | {m['steered']} / {m['steer_n']} |")
    lines += ["", "Classes: planted = (A, mark) at rho != 0; uncoupled = pairs independent in the training data "
              "(A or mark with the control mark, and (A, mark) at rho = 0); blind = pairs with the coin column, which "
              "no image shows. Unmeasured scores (no tested direction) count as 0 in the AUROC and rank last; ties "
              "rank against the planted pair. Verdicts are read after the check against the run's training labels (a "
              "claimed coupling they lack is 'entanglement'); models evaluated before that check existed get it from "
              "the phi of their training set recorded in their evaluation. Intervals: Wilson for shares, a stratified "
              "percentile bootstrap for AUROC (pairs within a model are not independent, so these intervals are "
              "optimistic).", ""]
    return "\n".join(lines)


def plot_dose_response(models: list[dict], path: Path, title: str) -> Path:
    from ..analysis.figures import new_figure

    fig = new_figure(figsize=(6.4, 4.2), dpi=100)
    ax = fig.subplots()
    kinds = list(dict.fromkeys(m["kind"] for m in models))
    colours = ["tab:blue", "tab:orange", "tab:green", "tab:red"]
    for k, kind in enumerate(kinds):
        g = [m for m in models if m["kind"] == kind]
        off = (k - (len(kinds) - 1) / 2) * 0.02
        for m in g:
            x = m["rho"] + off + 0.006 * m["train_seed"]
            if np.isfinite(m["abs_score"]):
                ax.errorbar([x], [m["abs_score"]], yerr=[[m["abs_score"] - m["abs_ci_low"]],
                                                         [m["abs_ci_high"] - m["abs_score"]]],
                            fmt="o", color=colours[k % 4], ms=4, capsize=2)
            else:
                ax.plot([x], [0.0], marker="x", color=colours[k % 4], ms=6)
        rhos = sorted({m["rho"] for m in g})
        means = [np.mean([m["abs_score"] if np.isfinite(m["abs_score"]) else 0.0 for m in g if m["rho"] == r])
                 for r in rhos]
        ax.plot(rhos, means, "-", color=colours[k % 4], alpha=0.6, label=f"{kind} (mean; x = no tested direction)")
    ax.set_xlabel("planted strength rho = phi(A, mark) in the training set")
    ax.set_ylabel("|score| of (A, mark), 95 % interval")
    ax.set_title(title, fontsize=9)
    ax.axhline(0, color="grey", lw=0.5)
    ax.legend(fontsize=7)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    return path


TABLES = ("summary.md", "models.csv", "pairs.csv", "detection.csv", "verdicts.csv", "dose_response.csv", "judge.csv")
JUDGE_FIELDS = ["kind", "rho", "models", "judge_accuracy_mark", "judge_accuracy_a", "steered_k", "steered_n", "steered",
                "marked_reconstruction_k", "marked_reconstruction_n", "marked_reconstruction", "marked_original_k",
                "marked_original_n", "marked_original", "a_leak_mean"]


def write_report(out: Path, spec: dict, plan: list[str], evals: list[dict], figure: bool = True) -> dict[str, Path]:
    """summary.md and the CSVs (and dose_response.png) from the stored evaluations of the planned models."""
    out = Path(out)
    order = {name: i for i, name in enumerate(plan)}
    evals = [with_label_check(ev, int(spec["n_train"])) for ev in evals]
    evals = sorted(evals, key=lambda ev: (ev["kind"], ev["rho"], ev["train_seed"], order.get(ev["name"], 0)))
    models = model_table(evals)
    headline = detection(evals)
    dose = dose_summary(models)
    counts = verdict_counts(evals)
    judged = judge_table(evals)
    pairs = [{"kind": ev["kind"], "rho": ev["rho"], "train_seed": ev["train_seed"], "a": r["a"], "b": r["b"],
              "class": r["class"], "score": r["score"], "ci_low": r["ci95"][0], "ci_high": r["ci95"][1],
              "verdict": r["verdict"], "rank": r["rank"], "rule_verdict": r["rule_verdict"],
              "train_phi": r["train_phi"]} for ev in evals for r in pair_rows(ev)]
    files = {name: out / name for name in TABLES}
    write_text(files["summary.md"], summary_markdown(spec, plan, evals, models, headline, dose, counts, judged))
    write_text(files["models.csv"], _csv(MODEL_FIELDS, models))
    write_text(files["pairs.csv"], _csv(PAIR_FIELDS, pairs))
    write_text(files["detection.csv"], _csv(["measure", "value", "ci_low", "ci_high", "k", "n"], headline))
    write_text(files["verdicts.csv"], _csv(["class", "rho", "pairs", *VERDICT_ORDER], counts))
    write_text(files["dose_response.csv"], _csv(["kind", "rho", "models", "mean_abs_score", "min_abs_score",
                                                 "max_abs_score", "unmeasured", "verdicts", "rank1", "steer_k",
                                                 "steer_n", "steer_share"], dose))
    write_text(files["judge.csv"], _csv(JUDGE_FIELDS, judged))
    if figure and models:
        files["dose_response.png"] = plot_dose_response(
            models, out / "dose_response.png",
            f"diagnose-benchmark: {len(evals)} of {len(plan)} models, {spec['train_steps']} steps each")
    return files
