"""What ``patronus report --results DIR`` quotes from earlier result folders, and how the page words it.

:func:`earlier_results` walks each folder (or reads each JSON file given) for the files other commands write, by
name: ``fid.json`` (``patronus fid``), ``class_agreement.json`` (``patronus evaluate``), ``diagnosis.json``
(``patronus diagnose``), ``edits_eval.json`` (``patronus evaluate-edits``), ``audit.json`` (``patronus audit``),
``debias.json`` (``patronus debias``) and ``debias_eval.json`` (``patronus debias-eval``). It keeps the numbers
the report quotes (they go into ``report.json``); a file of one of these names that is not JSON, or lacks what
its command writes, becomes a visible "could not read" line with the reason instead.

:func:`earlier_html` words the audits, debias sets and their evaluations as labelled values with their units,
intervals and verdicts, never as raw JSON (FID, class agreement and diagnoses are worded by :mod:`.report`).
"""

from __future__ import annotations

import html
import json
from pathlib import Path

from ..utils.errors import UsageError

WRITERS = {"fid": "patronus fid", "class_agreement": "patronus evaluate", "diagnosis": "patronus diagnose",
           "edits_eval": "patronus evaluate-edits", "audit": "patronus audit", "debias": "patronus debias",
           "debias_eval": "patronus debias-eval"}
"""The command that writes each kind of result, which it writes as ``KIND.json``."""
KINDS = {f"{kind}.json": kind for kind in WRITERS}
MAX_BYTES = 64 << 20  # a result file larger than this is not one of these commands' (they write kilobytes)


class Unreadable(ValueError):
    """A result file of a known name whose content is not what its command writes."""


def check_folders(folders) -> list[Path]:
    """``--results`` paths that exist: folders, or JSON files named as one of :data:`KINDS`."""
    paths = [Path(f) for f in folders or []]
    for p in paths:
        if not p.exists():
            raise UsageError(f"--results {p} does not exist; give folders written by patronus fid, evaluate, "
                             f"diagnose, evaluate-edits, audit, debias or debias-eval")
        if p.is_file() and p.name not in KINDS:
            raise UsageError(f"--results {p} is a file, not one the report reads ({', '.join(KINDS)}); give its "
                             f"folder")
    return paths


def _files(paths: list[Path]):
    for p in paths:
        if p.is_file():
            yield p
        else:
            yield from (f for f in sorted(p.rglob("*.json")) if f.name in KINDS and f.is_file())


def earlier_results(folders) -> dict:
    """Everything quoted from the result files under ``folders``, by kind, and ``unreadable``: [{file, reason}]."""
    found = {kind: [] for kind in WRITERS} | {"unreadable": []}
    for path in _files(check_folders(folders)):
        kind = KINDS[path.name]
        try:
            if path.stat().st_size > MAX_BYTES:
                raise Unreadable(f"{path.stat().st_size / 2**20:.0f} MiB is not a result of {WRITERS[kind]}")
            data = json.loads(path.read_text())
            if not isinstance(data, dict):
                raise Unreadable("it holds JSON but not an object")
            entry = EXTRACT[kind](data)
        except (OSError, UnicodeDecodeError, json.JSONDecodeError, RecursionError) as e:
            found["unreadable"].append({"file": str(path), "reason": f"not JSON ({_first_line(e)})"})
            continue
        except Unreadable as e:
            found["unreadable"].append({"file": str(path), "reason": f"not a result of {WRITERS[kind]}: {e}"})
            continue
        if entry is not None:
            found[kind].append({"file": str(path), **entry})
    return found


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return (text[0] if text else type(e).__name__)[:160]


# ----------------------------------------------------------------------------- reading, checked
def _get(d, *keys, kind=None, optional=False):
    """d[k1][k2]...; a missing key or a value not of ``kind`` is :class:`Unreadable` (None where ``optional``)."""
    v = d
    for k in keys:
        if isinstance(v, dict) and k in v:
            v = v[k]
        elif isinstance(v, list) and isinstance(k, int) and -len(v) <= k < len(v):
            v = v[k]
        elif optional:
            return None
        else:
            raise Unreadable(f"it has no {'.'.join(map(str, keys))}")
    if v is None and optional:
        return None
    if kind == "number" and (isinstance(v, bool) or not isinstance(v, (int, float))):
        if v is None:
            return None
        raise Unreadable(f"{'.'.join(map(str, keys))} is not a number")
    if kind == "interval":
        if v is None:
            return None
        if not (isinstance(v, list) and len(v) == 2 and all(isinstance(x, (int, float)) and not isinstance(x, bool)
                                                            for x in v)):
            raise Unreadable(f"{'.'.join(map(str, keys))} is not an interval [low, high]")
    if kind == "text" and not isinstance(v, str):
        raise Unreadable(f"{'.'.join(map(str, keys))} is not text")
    return v


def _fid(d):
    if "fid" not in d:
        return None
    return {"fid": _get(d, "fid", kind="number"), "kid": _get(d, "kid", kind="number", optional=True),
            "protocol_line": _get(d, "protocol_line", kind="text", optional=True)}


def _agreement(d):
    if "agreement" not in d:
        return None
    out = {k: _get(d, k, kind="number", optional=True) for k in
           ("agreement", "n_images", "per_image", "chance", "judge_test_accuracy", "pixel_spread_grey_levels",
            "agreement_standard_error", "judge_on_sources")}
    for k in ("agreement", "judge_test_accuracy"):
        if out[k] is None:
            raise Unreadable(f"it has no {k}")
    return out


def _diagnosis(d):
    if "verdict" not in d:
        return None
    return {k: d.get(k) for k in ("a", "b", "verdict", "score", "ci95", "reason")}


def _edits(d):
    if "median_rise" not in d:
        return None
    return {"median_rise": d["median_rise"], "median_off_target": d.get("median_off_target")}


def _audit(d):
    mad = _get(d, "measures", "MAD")
    aur = _get(d, "measures", "auroc_attribute", optional=True) or {}
    return {"attribute": _get(d, "attribute", kind="text"), "label": _get(d, "label", optional=True),
            "verdict": _get(d, "verdict", kind="text"), "reason": _get(d, "reason", kind="text"),
            "threshold": _get(d, "threshold", kind="number"),
            "classifier": _get(d, "classifier", "file", optional=True),
            "target": _get(d, "classifier", "target", optional=True),
            "mad": _get(mad, "edit", kind="number"), "mad_null": _get(mad, "null", kind="number"),
            "difference": _get(mad, "difference", kind="number"),
            "difference_ci95": _get(mad, "difference_ci95", kind="interval"),
            "confirmed": _get(d, "counts", "confirmed", kind="number"), "n": _get(d, "counts", "n", kind="number"),
            "judge_test_auroc": _get(d, "judge", "test_auroc", kind="number", optional=True),
            "auroc_real": _get(aur, "real", "auroc", kind="number", optional=True),
            "auroc_counterfactual": _get(aur, "counterfactual", "auroc", kind="number", optional=True),
            "edit_guidance": _get(d, "edit_guidance", kind="number", optional=True)}


def _phi(d, *keys, optional=False):
    p = _get(d, *keys, optional=optional)
    if p is None:
        return None
    return {"phi": _get(p, "phi", kind="number", optional=True), "ci95": _get(p, "ci95", kind="interval",
                                                                               optional=True),
            "n": _get(p, "n", kind="number", optional=True)}


def _debias(d):
    fid = _get(d, "fid", optional=True)
    fid = None if not isinstance(fid, dict) else {
        "fid": _get(fid, "fid", kind="number", optional=True), "kid": _get(fid, "kid", kind="number", optional=True),
        "real_floor_fid": _get(fid, "real_floor", "fid", kind="number", optional=True),
        "skipped": _get(fid, "skipped", optional=True)}
    check = _phi(d, "phi_check_judges", optional=True)
    if check is not None:
        check.update({k: _get(d, "phi_check_judges", k, kind="number", optional=True)
                      for k in ("agreement_a", "agreement_b")})
    unfilled = _get(d, "unfilled", optional=True) or []
    return {"a": _get(d, "a", kind="text"), "b": _get(d, "b", kind="text"),
            "n": _get(d, "n", kind="number"), "n_written": _get(d, "n_written", kind="number"),
            "complete": bool(_get(d, "complete")), "unfilled": [str(u) for u in unfilled],
            "mode": _get(d, "mode", optional=True), "phi_judges": _phi(d, "phi_judges"),
            "phi_check_judges": check, "phi_training": _get(d, "phi_training", kind="number", optional=True),
            "acceptance": _get(d, "acceptance", kind="number", optional=True),
            "attempts": _get(d, "attempts", kind="number", optional=True), "fid": fid}


def _t(d, *keys):
    v = _get(d, *keys)
    return {"mean": _get(v, "mean", kind="number", optional=True), "ci95": _get(v, "ci95", kind="interval",
                                                                                 optional=True),
            "n": _get(v, "n", kind="number", optional=True)}


def _debias_eval(d):
    variants = _get(d, "variants")
    compared = _get(d, "compared_with_real")
    if not isinstance(variants, dict) or not isinstance(compared, dict):
        raise Unreadable("variants or compared_with_real is not an object")
    out = {"a": _get(d, "a", kind="text"), "b": _get(d, "b", kind="text"),
           "test_per_cell": _get(d, "test_per_cell", kind="number", optional=True),
           "test_source": _get(d, "test_source", optional=True),
           "debias_n": _get(d, "debias_set", "n", kind="number", optional=True),
           "variants": {str(v): {k: _t(x, k) for k in ("worst_group", "mean_group")} for v, x in variants.items()},
           "compared_with_real": {}}
    for v, c in compared.items():
        out["compared_with_real"][str(v)] = {}
        for k in ("worst_group", "mean_group"):
            verdict = _get(c, k, "verdict")
            if not (isinstance(verdict, list) and len(verdict) == 2 and all(isinstance(x, str) for x in verdict)):
                raise Unreadable(f"compared_with_real.{v}.{k}.verdict is not [verdict, reason]")
            out["compared_with_real"][str(v)][k] = {**_t(c, k), "verdict": verdict[0], "reason": verdict[1]}
    return out


EXTRACT = {"fid": _fid, "class_agreement": _agreement, "diagnosis": _diagnosis, "edits_eval": _edits,
           "audit": _audit, "debias": _debias, "debias_eval": _debias_eval}


# ----------------------------------------------------------------------------- wording
def _e(v) -> str:
    return html.escape(str(v))


def _n(v, digits: int = 3, sign: bool = False) -> str:
    if v is None:
        return "n/a"
    return f"{v:+.{digits}f}" if sign else f"{v:.{digits}f}"


def _ci(pair, digits: int = 3, sign: bool = True) -> str:
    return "" if pair is None else f", 95% interval [{_n(pair[0], digits, sign)}, {_n(pair[1], digits, sign)}]"


def _src(entry: dict) -> str:
    return f" <span class='muted'>({_e(entry['file'])})</span>"


def audit_line(a: dict) -> str:
    target = f"class {a['target']}" if a.get("target") is not None else "its target class"
    clf = f" of <code>{_e(Path(str(a['classifier'])).name)}</code>" if a.get("classifier") else ""
    judge = a.get("judge_test_auroc")
    confirmed = (f"{a['confirmed']:.0f} of {a['n']:.0f} counterfactuals confirmed by the judge"
                 + (f" (judge test AUROC {_n(judge)})" if judge is not None else ""))
    measures = ("no confirmed counterfactual" if a["mad"] is None else
                f"MAD {_n(a['mad'])} (mean |change| of p, in probability) against the null edit's "
                f"{_n(a['mad_null'])}; difference {_n(a['difference'], sign=True)}{_ci(a['difference_ci95'])}")
    aur = ""
    if a.get("auroc_real") is not None:
        aur = (f"; the classifier's AUROC for {_e(a['attribute'])}: real {_n(a['auroc_real'])}, counterfactual "
               f"{_n(a['auroc_counterfactual'])}")
    return (f"<li>audit{clf}, p({_e(target)}) for <i>{_e(a['attribute'])}</i>: <b>{_e(a['verdict'])}</b> "
            f"(tau = {a['threshold']:g}): {measures}; {confirmed}{aur}. {_e(a['reason'])}{_src(a)}</li>")


def _phi_text(p: dict | None) -> str:
    if not p or p.get("phi") is None:
        return "n/a"
    n = f" (n = {p['n']:.0f})" if p.get("n") is not None else ""
    return f"{_n(p['phi'], sign=True)}{_ci(p.get('ci95'))}{n}"


def debias_line(d: dict) -> str:
    status = ("<b>complete</b>" if d["complete"] else
              "<b class='flag'>incomplete</b>" + (f" (unfilled: {_e('; '.join(d['unfilled']))})" if d["unfilled"]
                                                  else ""))
    parts = [f"{status}: {d['n_written']:.0f} of {d['n']:.0f} images" + (f" (mode {_e(d['mode'])})" if d["mode"]
                                                                         else ""),
             f"phi(A, B) by the judges {_phi_text(d['phi_judges'])}"
             + (f", in the training data {_n(d['phi_training'], sign=True)}" if d["phi_training"] is not None else "")]
    c = d["phi_check_judges"]
    if c:
        agree = ", ".join(f"{k} {_n(c.get('agreement_' + k))}" for k in ("a", "b") if c.get("agreement_" + k)
                          is not None)
        parts.append(f"by the check judges {_phi_text(c)}" + (f" (agreement with the judges: {agree})" if agree
                                                              else ""))
    if d["acceptance"] is not None:
        parts.append(f"acceptance {_n(d['acceptance'])}" + (f" of {d['attempts']:.0f} attempts" if d["attempts"]
                                                              is not None else ""))
    f = d["fid"]
    if f and f.get("skipped"):
        parts.append(f"FID skipped ({_e(f['skipped'])})")
    elif f and f.get("fid") is not None:
        parts.append(f"FID {_n(f['fid'], 2)}, KID {_n(f['kid'], 4)} against real test images"
                     + (f" (real training images' floor: FID {_n(f['real_floor_fid'], 2)})"
                        if f.get("real_floor_fid") is not None else ""))
    return (f"<li>debias set of A = <i>{_e(d['a'])}</i>, B = <i>{_e(d['b'])}</i>: " + "; ".join(parts) + "."
            + _src(d) + "</li>")


def _acc(t: dict) -> str:
    return "n/a" if t["mean"] is None else f"{_n(t['mean'])}{_ci(t['ci95'], sign=False)}"


def debias_eval_line(r: dict) -> str:
    head = (f"classifier of <i>{_e(r['b'])}</i>, groups by ({_e(r['a'])}, {_e(r['b'])})"
            + (f", {r['test_per_cell']:.0f} balanced real test images per group" if r["test_per_cell"] is not None
               else "") + (f", debias set of {r['debias_n']:.0f} images" if r["debias_n"] is not None else ""))
    variants = "; ".join(f"{_e(v)}: worst-group accuracy {_acc(x['worst_group'])}, mean over groups "
                         f"{_acc(x['mean_group'])}" for v, x in r["variants"].items())
    verdicts = "".join(f"<li>{_e(v)} minus real, {k.replace('_', '-')} accuracy: <b>{_e(c[k]['verdict'])}</b>: "
                       f"{_e(c[k]['reason'])}</li>" for v, c in r["compared_with_real"].items()
                       for k in ("worst_group", "mean_group"))
    return (f"<li>debias evaluation ({head}; intervals: 95% t over seeds): {variants or 'no variant'}{_src(r)}"
            f"<ul>{verdicts}</ul></li>")


def earlier_html(found: dict) -> str:
    """The page's section on audits, debias sets, their evaluations and the files that could not be read."""
    audits = "".join(audit_line(a) for a in found.get("audit", []))
    debias = "".join(debias_line(d) for d in found.get("debias", []))
    evals = "".join(debias_eval_line(r) for r in found.get("debias_eval", []))
    bad = "".join(f"<li class='flag'>could not read {_e(u['file'])}: {_e(u['reason'])}</li>"
                  for u in found.get("unreadable", []))
    none = ("<li class='muted'>none given (pass --results DIR with `patronus audit`, `patronus debias` or "
            "`patronus debias-eval` output)</li>")
    return (f"<h3>Classifier audits</h3><ul>{audits or none}</ul>"
            f"<h3>Debias sets and their evaluation</h3><ul>{debias + evals or none}</ul>"
            + (f"<h3>Result files that could not be read</h3><ul>{bad}</ul>" if bad else ""))


__all__ = ["KINDS", "check_folders", "earlier_html", "earlier_results"]
