"""The verdict rules of the shortcut diagnosis (:mod:`.shortcut`, module steps 4-7), shared by the shared scan
(:mod:`.scan`): per direction the signed leak, the null edit's leak and the probe's cross-talk as references, the
score (the part of the leak neither explains, :func:`unexplained`) with its percentile-bootstrap interval
(:func:`direction_stats`), the gates of a tested direction, the verdict of an interval (:func:`interval_verdict`),
the verdict of a pair (:func:`decide`), the check of a claimed coupling against the run's training labels
(:func:`label_coupling`, :func:`check_training_labels`: a coupling those labels do not hold is the model's
``entanglement``, not a shortcut), and the naming rule (``not:A`` negates the reading, :func:`split_negation`).
"""

from __future__ import annotations

import numpy as np

from ..data.biased import phi

DEFAULT_THRESHOLD = 0.2
# a direction is tested only if its edit moves its own attribute by this much (mean change of probability); 0.25
# was chosen on the diagnose-benchmark pilot (training seed 0), where 0.1 let a weak edit's damage read as a
# shortcut (docs/diagnose_benchmark.md)
DEFAULT_MIN_OWN_EFFECT = 0.25
DEFAULT_MIN_PROBE_AUROC = 0.75
VERDICTS = ("shortcut", "inconclusive", "coupling below tau", "no coupling detected")  # precedence, strongest first
ENTANGLEMENT = "entanglement"  # a claimed coupling that the run's training labels do not hold (check_training_labels)
CLAIMS = ("shortcut", "coupling below tau")  # the verdicts that claim a coupling learned from the training data
VERDICT_RULES = {
    "shortcut": "the 95% interval of the score (the leak beyond its references) lies beyond +-tau",
    "coupling below tau": "the interval excludes 0 but lies within +-tau",
    "no coupling detected": "the interval holds 0 and lies within +-tau",
    "inconclusive": "no tested direction (an edit that does not move its own attribute, or a probe that cannot "
                    "read an attribute on clean test images), an interval across +tau or -tau, one within +-tau "
                    "only because a reference explains a raw leak whose interval reaches tau, or a pair with an "
                    "untested direction whose tested one finds no shortcut (a coupling may sit in the direction "
                    "that could not be tested, so 'no coupling' or 'below tau' is a claim about both)",
    ENTANGLEMENT: "a coupling (shortcut or below tau by the rules above) that the run's training labels do not hold: "
                  "phi(A, B) of those labels lies within the band an independent draw of as many labels stays in "
                  "95% of the time (+-1.96/sqrt(N)), or has the other sign; the model ties A and B by itself (or "
                  "through an attribute not checked), not by learning a correlation of A and B from its data",
}
COUPLING_RULE = ("score = the part of the leak (mean dOther|edit / mean dOwn|edit) that its references do not explain: "
                 "the null leak (mean dOther|null edit / mean dOwn|edit, the same images) and the probe's cross-talk "
                 "on clean test images; leak - r for the reference r leaking the same way the most, 0 when one leaks "
                 "that way as much or more, the leak when none does; computed per bootstrap resample (edit units "
                 "and clean images), and a coupling is claimed only when its 95% interval excludes 0")


def split_negation(spec: str) -> tuple[str, int]:
    """(the attribute the intervention is about, +1 or -1): ``not:SPEC`` and ``!SPEC`` (nested too) negate."""
    spec, sign = spec.strip(), 1
    while True:
        for prefix in ("not:", "!"):
            if spec.startswith(prefix):
                spec, sign = spec[len(prefix):].strip(), -sign
                break
        else:
            return spec, sign


def leak(d_own: np.ndarray, d_other: np.ndarray) -> float:
    """Signed leak of one direction: mean change of the other attribute / mean change of the edited one."""
    own = float(np.mean(d_own))
    return float(np.mean(d_other)) / own if abs(own) > 1e-9 else float("nan")


def unexplained(leak_value, *references):
    """The part of a leak that its references (the null edit's leak, the probe's cross-talk) do not explain,
    elementwise: leak - r for the reference r that leaks the same way the most, 0 when such a reference leaks
    as much or more, the leak itself when every reference leaks the other way or not at all. Never larger than
    the leak nor of the other sign: a reference that moves the other attribute the other way explains none of
    the leak, and subtracting it would invent a coupling."""
    leak_value = np.asarray(leak_value, np.float64)
    sign = np.sign(leak_value)
    explained = np.zeros_like(leak_value)
    for r in references:
        explained = np.maximum(explained, np.nan_to_num(sign * np.asarray(r, np.float64), nan=0.0))
    return sign * np.maximum(0.0, np.abs(leak_value) - explained) + 0.0  # + 0.0: no -0.0 in reports


def crosstalk(p: np.ndarray, y: np.ndarray, edited: int, weights: np.ndarray | None = None) -> np.ndarray:
    """The probe's own cross-talk on clean images: how much its reading of the other attribute moves, per unit
    of its reading of ``edited``, between clean images with and without ``edited`` at the same value of the
    other attribute (the change a perfect, coupling-free edit would register as a leak).

    p (n, 2) probe probabilities, y (n, 2) labels; ``weights`` (R, n) bootstrap counts give R resampled values
    (else one). Strata of the other attribute with an empty cell are left out; none left gives NaN."""
    other = 1 - edited
    p, y = np.asarray(p, np.float64), np.asarray(y)
    w = np.ones((1, len(p))) if weights is None else np.asarray(weights, np.float64)
    strata = [[(y[:, edited] == e) & (y[:, other] == v) for e in (1, 0)] for v in (0, 1)]
    strata = [cells for cells in strata if all(c.any() for c in cells)]
    if not strata:
        return np.full(len(w), np.nan)
    d_edit, d_other = 0.0, 0.0
    with np.errstate(invalid="ignore", divide="ignore"):
        for cells in strata:  # a resample that empties a cell gives NaN, left out by the caller
            means = [(w @ (c[:, None] * p)) / (w @ c)[:, None] for c in cells]
            d_edit = d_edit + (means[0][:, edited] - means[1][:, edited])
            d_other = d_other + (means[0][:, other] - means[1][:, other])
        return np.where(np.abs(d_edit) > 1e-9, d_other / d_edit, np.nan)


def direction_stats(d_own: np.ndarray, d_other: np.ndarray, d_null: np.ndarray, n_boot: int = 2000, seed: int = 0,
                    level: float = 0.95, clean: tuple[list[np.ndarray], np.ndarray, int] | None = None) -> dict:
    """Leak, null leak, the probe's cross-talk and the score (the leak neither explains, :func:`unexplained`),
    each as (value, lo, hi, std) with a percentile-bootstrap interval. Every resample draws the (seed, image)
    units of the edits (so the null is paired with the leak on the same images) and, independently, the clean
    test images of the cross-talk; ``clean`` = (each seed's probe probabilities on the clean test images, their
    labels, the edited attribute's column), None for no cross-talk reference."""
    d_own, d_other, d_null = (np.asarray(v, np.float64) for v in (d_own, d_other, d_null))
    own = float(np.mean(d_own))
    ok = abs(own) > 1e-9
    point = {"leak": float(np.mean(d_other)) / own if ok else float("nan"),
             "null_leak": float(np.mean(d_null)) / own if ok else float("nan")}
    rng = np.random.default_rng(seed)
    n = len(d_own)
    idx = rng.integers(0, n, (n_boot, n))
    o = d_own[idx].mean(1)
    with np.errstate(invalid="ignore", divide="ignore"):  # resamples with no own change are left out below
        boot = {"leak": d_other[idx].mean(1) / o, "null_leak": d_null[idx].mean(1) / o}
    if clean is not None:
        probs, y, edited = clean
        weights = rng.multinomial(len(y), np.full(len(y), 1 / len(y)), size=n_boot)
        point["probe_crosstalk"] = float(np.nanmean([crosstalk(p, y, edited)[0] for p in probs]))
        with np.errstate(invalid="ignore"):
            boot["probe_crosstalk"] = np.nanmean(np.stack([crosstalk(p, y, edited, weights) for p in probs]), 0)
    refs = [k for k in ("null_leak", "probe_crosstalk") if k in point]
    point["score"] = float(unexplained(point["leak"], *(point[k] for k in refs)))
    boot["score"] = unexplained(boot["leak"], *(boot[k] for k in refs))
    keep = np.abs(o) > 1e-9
    q = [(1 - level) / 2, 1 - (1 - level) / 2]
    out = {}
    for name, vals in boot.items():
        vals = vals[keep & np.isfinite(vals)]
        lo, hi = (float(v) for v in np.quantile(vals, q)) if len(vals) else (float("nan"), float("nan"))
        out[name] = (point[name], lo, hi, float(vals.std()) if len(vals) else float("nan"))
    return out


def interval_verdict(lo: float, hi: float, threshold: float,
                     leak_ci: tuple[float, float] | None = None) -> tuple[str, str]:
    """(verdict, reason) of one tested direction from its score interval [lo, hi] and tau (module step 6).

    ``leak_ci``, the raw leak's interval, guards the two verdicts that rest on the references: when the
    raw leak reaches tau but the null edit or the probe's cross-talk explain it down to within tau, a coupling
    of tau or more could hide behind a reference that leaks that much itself, so the verdict is inconclusive
    rather than 'coupling below tau' or 'no coupling detected'."""
    span = f"the 95% interval [{lo:+.2f}, {hi:+.2f}]"
    tau = f"tau = {threshold:g}"
    if not (np.isfinite(lo) and np.isfinite(hi)):
        return "inconclusive", f"the interval is undefined ([{lo}, {hi}]): no image changed its own attribute"
    if lo > threshold or hi < -threshold:
        return "shortcut", f"{span} lies beyond +-{tau}"
    if lo <= -threshold or hi >= threshold:
        half = "a coupling is there (it excludes 0), but " if (lo > 0 or hi < 0) else ""
        return "inconclusive", (f"{span} crosses +-{tau}: {half}its size against tau is not settled; use more "
                                f"--n/--seeds")
    if leak_ci is not None and not (-threshold < leak_ci[0] and leak_ci[1] < threshold):
        return "inconclusive", (f"{span} lies within +-{tau} only after the null edit or the probe's cross-talk "
                                f"explain the raw leak [{leak_ci[0]:+.2f}, {leak_ci[1]:+.2f}], which reaches tau: "
                                f"these references leak that much themselves, and a coupling of tau or more could "
                                f"hide behind them")
    if lo > 0 or hi < 0:
        return "coupling below tau", f"{span} excludes 0 but lies within +-{tau}: a coupling smaller than tau"
    return "no coupling detected", f"{span} holds 0 and lies within +-{tau}"


def _moves(value: float) -> str:
    return "raises" if value > 0 else "lowers"


def _describe(edited: str, other: str, sign_edited: int, score: float) -> str:
    """In words, for the names as given: raising A's prototypes raises A, i.e. lowers not:A."""
    action = "raising" if sign_edited > 0 else "lowering"
    if not np.isfinite(score):
        return f"{action} {edited}"
    return (f"{action} {edited} {_moves(score * sign_edited)} {other} ({score:+.2f} of its own change beyond the "
            f"null edit's and the probe's cross-talk)")


def assess(effects_a: dict[str, np.ndarray], effects_b: dict[str, np.ndarray], threshold: float = DEFAULT_THRESHOLD,
           names: tuple[str, str] = ("A", "B"), *, probe_auroc: tuple[float, float],
           min_probe_auroc: float = DEFAULT_MIN_PROBE_AUROC, signs: tuple[int, int] = (1, 1), n_boot: int = 2000,
           seed: int = 0, clean: tuple[list[np.ndarray], np.ndarray] | None = None,
           min_own_effect: float = DEFAULT_MIN_OWN_EFFECT) -> dict:
    """The per-direction leaks, null leaks, scores, intervals and the model's verdict (module steps 4-7).

    ``effects_a`` holds dA_A, dB_A (A's edit) and dA_0A, dB_0A (the null edit) of the images edited in
    direction A; ``effects_b`` dB_B, dA_B, dB_0B, dA_0B likewise (per-image arrays, of the attributes the
    interventions are about). ``probe_auroc`` is the probe's clean test AUROC of (A, B) (the lowest over
    seeds), ``names`` the attributes as the user named them and ``signs`` -1 for a negated name (``not:``).
    ``clean`` = (each seed's probe probabilities on the clean test images (n, 2), their labels (n, 2)) adds the
    probe's cross-talk as a second reference (:func:`crosstalk`); None leaves the null edit as the only one.
    A direction is tested only when its edit moves its own attribute by at least ``min_own_effect`` (mean change
    of the probe's probability): the score divides by that change, so a weak edit inflates it."""
    dirs = {}
    sign = signs[0] * signs[1]
    for key, col, (edited, other), (s_edit, _), (au_edit, au_other), own_k, other_k, null_k, e in (
            ("a_to_b", 0, names, signs, probe_auroc, "dA_A", "dB_A", "dB_0A", effects_a),
            ("b_to_a", 1, names[::-1], signs[::-1], probe_auroc[::-1], "dB_B", "dA_B", "dA_0B", effects_b)):
        own = float(np.mean(e[own_k]))
        st = direction_stats(e[own_k], e[other_k], e[null_k], n_boot, seed,
                             clean=None if clean is None else (clean[0], clean[1], col))
        named = {}
        for name, (v, lo, hi, sd) in st.items():  # a negated name negates the reading (and swaps the interval ends)
            named[name] = (sign * v + 0.0, *sorted((sign * lo + 0.0, sign * hi + 0.0)), sd)
        failed = []
        if not own >= min_own_effect:
            base = edited if s_edit > 0 else f"the prototypes of {split_negation(edited)[0]}"
            failed.append(f"raising {base} moves {edited} by only {s_edit * own:+.3f} (needs |change| >= "
                          f"{min_own_effect:g})")
        for attr, au in ((edited, au_edit), (other, au_other)):
            if not au >= min_probe_auroc:
                failed.append(f"the probe cannot read {attr} on clean test images (AUROC {au:.2f} < "
                              f"{min_probe_auroc:g})")
        tested = not failed
        score, lo, hi, sd = named["score"]
        v, why = (interval_verdict(lo, hi, threshold, named["leak"][1:3]) if tested
                  else ("untested", "; ".join(failed)))
        says = _describe(edited, other, s_edit, score)
        fmt = lambda k: f"{named[k][0]:+.2f} [{named[k][1]:+.2f}, {named[k][2]:+.2f}]"  # noqa: E731
        detail = f"leak {fmt('leak')}, null edit {fmt('null_leak')}"
        if "probe_crosstalk" in named:
            detail += f", probe cross-talk on clean images {fmt('probe_crosstalk')}"
        xt = named.get("probe_crosstalk", (float("nan"),) * 4)
        dirs[key] = {"edited": edited, "other": other, "own_effect": own, "own_effect_named": s_edit * own,
                     "leak": named["leak"][0], "leak_ci95": list(named["leak"][1:3]),
                     "null_leak": named["null_leak"][0], "null_ci95": list(named["null_leak"][1:3]),
                     "probe_crosstalk": xt[0], "probe_crosstalk_ci95": list(xt[1:3]),
                     "score": score, "ci95": [lo, hi], "bootstrap_std": sd, "tested": tested,
                     "untested_because": failed, "verdict": v, "why": why, "says": says, "detail": detail}
    return {**decide(dirs), "directions": dirs}


def decide(dirs: dict) -> dict:
    """The verdict of a pair from its directions (each with ``tested``, ``verdict``, ``score``, ``ci95``, ...): the
    first of :data:`VERDICTS` that a tested direction has, decided by the largest |score| among those; inconclusive,
    with every direction's reason, when none is tested. The shared scan uses it again after its gates."""
    tested = [d for d in dirs.values() if d["tested"]]
    if not tested:
        why = "; ".join(f"{d['edited']} -> {d['other']}: {d['why']}" for d in dirs.values())
        return {"verdict": "inconclusive", "reason": f"no direction is tested ({why})", "score": float("nan"),
                "ci95": [float("nan")] * 2, "bootstrap_std": float("nan"), "deciding_direction": None,
                "deciding_direction_key": None}
    v = min((d["verdict"] for d in tested), key=VERDICTS.index)
    deciding = max((d for d in tested if d["verdict"] == v),
                   key=lambda d: abs(d["score"]) if np.isfinite(d["score"]) else -1.0)
    why = f"{deciding['says']}: {deciding['why']} ({deciding['detail']})"
    untested = [d for d in dirs.values() if not d["tested"]]
    if untested and v in ("coupling below tau", "no coupling detected"):
        # only a shortcut can be claimed from one direction: the absence (or smallness) of a coupling is a claim
        # about both, and the direction that could not be tested may hold one (a one-way coupling)
        why = (f"only {deciding['edited']} -> {deciding['other']} is tested and it finds {v} ({why}); "
               f"{untested[0]['edited']} -> {untested[0]['other']} could not be tested "
               f"({untested[0]['why']}), and a coupling there is not ruled out")
        key = next(k for k, d in dirs.items() if d is deciding)
        return {"verdict": "inconclusive", "reason": why, "score": deciding["score"], "ci95": deciding["ci95"],
                "bootstrap_std": deciding.get("bootstrap_std", float("nan")),
                "deciding_direction": f"{deciding['edited']} -> {deciding['other']}", "deciding_direction_key": key}
    for d in dirs.values():
        if d is deciding:
            continue
        if d["tested"]:
            why += (f"; the other direction: {d['says']}, [{d['ci95'][0]:+.2f}, {d['ci95'][1]:+.2f}], "
                    f"{d['verdict']}")
        else:
            why += f"; only {deciding['edited']} -> {deciding['other']} is tested ({d['why']})"
    key = next(k for k, d in dirs.items() if d is deciding)
    return {"verdict": v, "reason": why, "score": deciding["score"], "ci95": deciding["ci95"],
            "bootstrap_std": deciding.get("bootstrap_std", float("nan")),
            "deciding_direction": f"{deciding['edited']} -> {deciding['other']}", "deciding_direction_key": key}


# ----------------------------------------------------------------------------- the training labels
def label_coupling(a: np.ndarray, b: np.ndarray, sign: int = 1) -> dict:
    """How the run's training labels couple A and B: phi(A, B) (``sign`` -1 for one negated name) over the N
    labelled training images, and whether it lies outside the band +-1.96/sqrt(N) that phi of N independent
    labels stays within 95 % of the time (under independence N phi^2 is chi-square with one degree of freedom).

    These are the images the model learned from, so phi is not an estimate of anything: the band only says
    whether the labels' association is larger than chance alone gives at this N."""
    a, b = np.asarray(a), np.asarray(b)
    constant = len(a) == 0 or a.min() == a.max() or b.min() == b.max()
    return coupling_of_labels(0.0 if constant else sign * phi(a, b), len(a), constant)


def coupling_of_labels(phi_value: float, n: int, constant: bool = False) -> dict:
    """:func:`label_coupling` from a phi already computed over ``n`` labels (as named)."""
    band = 1.959964 / np.sqrt(n) if n else float("inf")
    value = float(phi_value) + 0.0
    return {"phi": value, "n": int(n), "chance_band": float(band), "coupled": bool(abs(value) > band),
            "constant": bool(constant)}


def check_training_labels(verdict: dict, labels: dict | None, names: tuple[str, str], key: str = "reason") -> dict:
    """A pair's (or a direction's) verdict checked against its training labels (:func:`label_coupling`).

    A claimed coupling (:data:`CLAIMS`) whose sign the labels do not hold becomes ``entanglement``: the model
    couples A and B, but its training data gave it no correlation of A and B to learn, so "shortcut" would claim
    more than was seen. Every other verdict keeps its word; each gets the labels' phi in its reason. ``labels``
    None (the run's training data lack a label for A or B) leaves the verdict and says the check could not run.
    Returns a new dict (``verdict``, ``key`` and ``training_labels`` replaced)."""
    out = dict(verdict)
    a, b = names
    if labels is None:
        out["training_labels"] = None
        if out["verdict"] in CLAIMS:
            out[key] = (f"{out[key]}; the run's training data hold no labels of both {a} and {b}, so whether it "
                        f"held this coupling to learn is not checked")
        return out
    out["training_labels"] = dict(labels)
    if labels["constant"]:
        held = f"the run's {labels['n']} training labels hold one value of {a} or {b} only (phi undefined)"
    else:
        held = (f"the run's {labels['n']} training labels give phi({a}, {b}) = {labels['phi']:+.3f} (chance "
                f"band +-{labels['chance_band']:.3f})")
    score = float(out.get("score", float("nan")))
    if out["verdict"] in CLAIMS and np.isfinite(score):
        same_way = labels["coupled"] and np.sign(labels["phi"]) == np.sign(score)
        if not same_way:
            how = ("couple them the other way" if labels["coupled"] else "do not couple them beyond chance")
            size = "beyond" if out["verdict"] == "shortcut" else "within"
            out[key] = (f"the model couples {a} and {b} (a score {size} +-tau, by the rules: {out[key]}), but "
                        f"{held}: they {how}. The coupling is the model's own entanglement (or runs through an "
                        f"attribute not checked), not a correlation of {a} and {b} learned from its data")
            out["verdict_before_label_check"] = out["verdict"]
            out["verdict"] = ENTANGLEMENT
            return out
        out[key] = f"{out[key]}; {held}, the same way"
        return out
    out[key] = f"{out[key]}; {held}"
    return out
