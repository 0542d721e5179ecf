"""The shared scan: every pair of K attributes for about K edit passes (issue 37, part 4).

:func:`scan_pairs` runs one full diagnosis per pair: K(K-1)/2 probes, prototype rankings and
edit passes (each pair inverts and decodes its own images in both directions). This scan does the same
measurement once per *attribute* and reads every other attribute from it. Per seed:

1. **One probe** (the diagnosis' small CNN, one logit per attribute) trained on the clean train images for
   all K attributes at once; its clean test AUROC of each attribute gates every direction it reads.
2. **Images.** For each attribute A, ``n_images`` clean test images *without* A, picked so that every other
   attribute B appears among them with and without B (at least n // 4 each where the pool allows: a rise and
   a fall of B can both be seen), ties broken by one seeded order shared by all attributes, so attributes
   reuse each other's images. The union of the picks is **inverted once** and its **reconstruction decoded
   once**.
3. **One edit pass per attribute**: A's ``top_k`` prototypes (ranked by AUROC on the clean train images, as
   the diagnosis ranks them) raised to their plausible maximum, and the **null edit** (the prototypes least
   associated with *every* scanned attribute, raised by a request of the same size in std units, per image:
   :func:`~.shortcut.matched_null_targets`), decoded from the images' inverted x_T in one engine plan.
4. The probe reads all K attributes on reconstruction, edit and null edit: dB|A, dB|0 for every B at once.

Per pair (A, B) the two directions' effects go through the diagnosis' own :func:`~.verdicts.assess`: the
same signed leak, null leak, probe cross-talk, score (the leak neither reference explains), percentile-
bootstrap interval, gates (own effect >= ``min_own_effect``, default 0.25, the diagnosis' floor; probe AUROC >=
``min_probe_auroc`` for both attributes) and four verdicts. Cost: seeds x K edit passes of 2n rows plus one inversion and one reconstruction of at most K n
images, and seeds probes, against seeds x K(K-1) direction passes (inversion of n, 3n rows), K(K-1)/2 rankings
and seeds x K(K-1)/2 probes for the pairwise scan.

Where it necessarily differs from the pairwise diagnosis (:data:`DIFFERENCES`, written into ``scan.json``):
which images are edited (A's images are picked once for all B, not balanced half/half on each B), the null
prototypes (least associated with all K attributes, not with A and B only), one K-output probe per seed instead
of a 2-output probe per pair, and the clean data (used as given for all pairs; the pairwise diagnosis without
``--probe-data`` decorrelates the run's own data pair by pair). Three gates keep those differences from
claiming anything: a direction is left **untested** when the pair is correlated in the clean data
(|phi| > ``max_phi``: a prototype of B could rank among A's), when A's images hold fewer than 2 with or
without B, or when A's null edit raises one of B's edited prototypes.
"""

from __future__ import annotations

import warnings
from itertools import combinations

import numpy as np
import torch
from tqdm.auto import tqdm

from ..data.biased import phi, resolve_attribute
from ..data.errors import DataError
from ..edit import Edit, EditPlan, Inverted, invert_images, run_plan
from ..utils.errors import UsageError
from .quality import auroc
from .shortcut import (DEFAULT_EDIT_GUIDANCE, check_settings, diagnose, matched_null_targets, probe_probabilities,
                       train_probe, training_labels)
from .shortcut_result import ScanResult
from .verdicts import (DEFAULT_MIN_OWN_EFFECT, DEFAULT_MIN_PROBE_AUROC, DEFAULT_THRESHOLD, assess,
                       check_training_labels, label_coupling, split_negation)
from .verdicts import decide as pair_decision

DEFAULT_MAX_PHI = 0.2
MIN_PER_SIDE = 2
SCAN_MODES = ("shared", "pairwise")
DIFFERENCES = {
    "edited_images": "A's images (clean test images without A) are picked once for every B: each B appears among "
                     "them with and without B (at least n // 4 each where the pool allows), not half and half as the "
                     "pairwise diagnosis balances them on its one B; leaks are means over these images",
    "null_edit": "the null prototypes are the top-k least associated with all scanned attributes (max |AUROC - 0.5| "
                 "over them), not with A and B only; a direction whose null edit raises one of B's edited "
                 "prototypes is untested",
    "probe": "one probe per seed reads all K attributes (a K-output CNN), not a 2-output probe per pair",
    "clean_data": "the clean data are used as given for all pairs (the run's own data when no --probe-data); a pair "
                  "correlated there beyond max_phi is untested (the pairwise diagnosis decorrelates the run's data "
                  "per pair)",
    "inversion": "every image is inverted once and reconstructed once, whatever number of attributes edit it",
}


# ----------------------------------------------------------------------------- the pairwise scan
def binary_attributes(pat, probe_cfg=None) -> list[str]:
    """Names of the two-valued attribute columns (0/1, -1/1, ...; both values present) of the clean data
    (``probe_cfg``) or of the run's own data: the columns a bare NAME spec resolves (the larger value is True)."""
    from ..data import load_dataset

    ds = load_dataset(probe_cfg or pat.config.data, "train")
    attrs = np.asarray(ds.attributes, dtype=np.float64)
    names = []
    for k, name in enumerate(ds.attribute_names):
        col = attrs[:, k][np.isfinite(attrs[:, k])] if attrs.shape[0] else attrs[:0, 0]
        if len(np.unique(col)) == 2:
            names.append(name)
    return names


def scan_pairs(pat, names: list[str], probe_cfg=None, progress: bool = True, **diagnose_kw) -> ScanResult:
    """Diagnose every pair of ``names`` and rank the pairs by the size of their measured coupling |score|
    (the deciding direction's signed leak beyond its references), strongest first; pairs without a tested
    direction come last, and a pair whose diagnosis cannot run (e.g. too few clean images) is kept as
    ``skipped`` with the reason. The result's report says the mode ("pairwise"), the settings and the cost."""
    check_settings(**{k: diagnose_kw[k] for k in ("threshold", "edit_guidance", "min_probe_auroc", "min_own_effect",
                                                   "edit_scale",
                                                   "n_images", "seeds", "top_k", "steps") if k in diagnose_kw})
    rows = []
    pairs = list(combinations(names, 2))
    for a, b in tqdm(pairs, desc="scan pairs", disable=not progress):
        try:
            r = diagnose(pat, a, b, probe_cfg, progress=False, **diagnose_kw).report
        except DataError as e:  # this pair's data cannot be used (e.g. too few clean images): say so, scan on
            rows.append({"a": a, "b": b, "score": None, "ci95": [None, None], "verdict": "skipped",
                         "deciding_direction": None, "reason": str(e), "leak_a_to_b": None, "leak_b_to_a": None,
                         "null_leak_a_to_b": None, "null_leak_b_to_a": None, "tested_directions": []})
            continue
        d = r["directions"]
        rows.append({"a": a, "b": b, "score": r["score"], "ci95": r["ci95"], "verdict": r["verdict"],
                     "deciding_direction": r["deciding_direction"], "reason": r["reason"],
                     "training_labels": r["training_labels"],
                     "verdict_before_label_check": r["verdict_before_label_check"],
                     "leak_a_to_b": d["a_to_b"]["leak"], "leak_b_to_a": d["b_to_a"]["leak"],
                     "null_leak_a_to_b": d["a_to_b"]["null_leak"], "null_leak_b_to_a": d["b_to_a"]["null_leak"],
                     "tested_directions": r["tested_directions"]})
    if rows and all(r["verdict"] == "skipped" for r in rows):
        raise DataError(f"no pair of {', '.join(names)} could be diagnosed; first reason: {rows[0]['reason']}")
    measured = lambda r: r["score"] is not None and np.isfinite(r["score"])  # noqa: E731
    return ScanResult({
        "mode": "pairwise", "attributes": list(names),
        "pairs": sorted(rows, key=lambda r: -abs(r["score"]) if measured(r) else float("inf")),
        "threshold": diagnose_kw.get("threshold", DEFAULT_THRESHOLD),
        "edit_guidance": diagnose_kw.get("edit_guidance", DEFAULT_EDIT_GUIDANCE),
        "min_probe_auroc": diagnose_kw.get("min_probe_auroc", DEFAULT_MIN_PROBE_AUROC),
        "min_own_effect": diagnose_kw.get("min_own_effect", DEFAULT_MIN_OWN_EFFECT),
        "cost": {"diagnoses": len(rows), "note": "one full diagnosis per pair"},
        "ranking": "by |score| (the deciding direction's signed leak beyond the null edit's and the probe's "
                   "cross-talk), strongest first"})


def _labels(ds, bases: list[str], limit: int, seed: int) -> tuple[torch.Tensor, np.ndarray]:
    """(images, labels (N, K)) of a split: every image, or ``limit`` of them drawn as the diagnosis draws them."""
    y = np.stack([resolve_attribute(ds, b) for b in bases], 1).astype(np.int64)
    idx = np.arange(len(y))
    if limit and len(idx) > limit:
        idx = np.sort(np.random.default_rng(seed).choice(idx, limit, replace=False))
    x = torch.cat([ds.get_batch(idx[i:i + 512].tolist()) for i in range(0, len(idx), 512)])
    return x, y[idx]


def cover_pick(order: np.ndarray, pool: np.ndarray, others: np.ndarray, n: int, quota: int) -> np.ndarray:
    """``n`` indices of ``pool`` so that each column of ``others`` (labels (N, m) of every image) takes both values
    at least ``quota`` times where the pool has that many: greedily the image filling the most open quotas,
    ties (and the rest, once every quota is met) by ``order`` (the rank of every image: one seeded order shared by
    all attributes, so their picks overlap). Sorted."""
    pool = np.asarray(pool, np.int64)
    if len(pool) <= n:
        return np.sort(pool)
    pool = pool[np.argsort(order[pool], kind="stable")]
    hot = np.concatenate([others[pool] == 0, others[pool] == 1], 1).astype(np.int64)  # (len(pool), 2m)
    need = np.minimum(quota, hot.sum(0))
    taken = np.zeros(len(pool), bool)
    while taken.sum() < n and need.max() > 0:
        gain = hot @ (need > 0)
        gain[taken] = -1
        k = int(np.argmax(gain))  # the first maximum: the earliest in the shared order
        if gain[k] <= 0:
            break
        taken[k] = True
        need = np.maximum(need - hot[k], 0)
    rest = np.flatnonzero(~taken)[:n - int(taken.sum())]
    taken[rest] = True
    return np.sort(pool[taken])


def null_for(auc: np.ndarray, exclude, k: int) -> list[tuple[int, float]]:
    """(prototype, association) of the ``k`` prototypes least associated with every attribute:
    association = max over attributes of |AUROC - 0.5| (auc: (K, P)), smallest first, ``exclude`` never."""
    dev = np.abs(np.asarray(auc, np.float64) - 0.5)
    assoc = np.where(np.isfinite(dev), dev, np.inf).max(0)  # an AUROC that cannot be computed: never "unrelated"
    skip = {int(j) for j in exclude}
    order = [int(j) for j in np.argsort(assoc, kind="stable") if int(j) not in skip]
    return [(j, float(assoc[j])) for j in order[:k]]


def decide(dirs: dict) -> dict:
    """The model verdict of a pair from its two directions, by the diagnosis' own rule (:func:`~.verdicts.decide`),
    without the bootstrap spread the scan does not report: used again after the scan's gates leave a direction
    untested."""
    out = pair_decision(dirs)
    out.pop("bootstrap_std", None)
    return out


def _gate(d: dict, failures: list[str]) -> None:
    if failures:
        d["untested_because"] = list(d["untested_because"]) + failures
        d["tested"], d["verdict"], d["why"] = False, "untested", "; ".join(d["untested_because"])


def scan_shared(pat, specs: list[str], probe_cfg=None, n_images: int = 24, seeds: int = 3, top_k: int = 2,
                steps: int = 25, edit_scale: float = 1.0, threshold: float = DEFAULT_THRESHOLD,
                probe_limit: int = 4000, probe_epochs: int = 8, seed: int = 0, progress: bool = True,
                edit_guidance: float = DEFAULT_EDIT_GUIDANCE, min_probe_auroc: float = DEFAULT_MIN_PROBE_AUROC,
                max_phi: float = DEFAULT_MAX_PHI, min_own_effect: float = DEFAULT_MIN_OWN_EFFECT) -> ScanResult:
    """Scan every pair of ``specs`` (module docstring). The result's report holds "pairs": rows ranked as
    :func:`scan_pairs` ranks them (by |score|, untested last, skipped kept), "directions": one row per ordered
    pair (A, B) with its own score, interval and verdict, the rankings, null edits, probe quality, the clean data's
    phi, the settings, :data:`DIFFERENCES` and "cost" (images inverted, rows decoded, edit passes)."""
    check_settings(threshold, edit_guidance, min_probe_auroc, edit_scale, n_images, seeds, top_k, steps,
                   min_own_effect)
    if not 0 < max_phi <= 1:
        raise UsageError(f"max_phi must lie in (0, 1], got {max_phi}")
    if len(specs) < 2:
        raise UsageError(f"a scan needs at least two attributes, got {specs}")
    if len(set(specs)) != len(specs):
        raise UsageError(f"a scan names an attribute twice: {', '.join(specs)}")
    cfg_w = float(getattr(pat.config.sample, "guidance", 0.0) or 0.0)
    if edit_guidance and cfg_w:
        raise UsageError(f"--edit-guidance {edit_guidance:g} cannot be combined with this run's classifier-free "
                         f"guidance on s (sample.guidance {cfg_w:g}); use --edit-guidance 0")
    from ..data import load_dataset

    cfg = probe_cfg or pat.config.data
    split = [split_negation(s) for s in specs]
    ds_tr, ds_te = load_dataset(cfg, "train"), load_dataset(cfg, "test")
    skipped = {}
    for spec, (base, _) in zip(specs, split):  # an attribute that cannot be used is skipped with its reason
        try:
            for ds in (ds_tr, ds_te):
                resolve_attribute(ds, base)
        except DataError as e:
            skipped[spec] = str(e)
    use = [k for k, s in enumerate(specs) if s not in skipped]
    bases = [split[k][0] for k in use]
    train_x, train_y = _labels(ds_tr, bases, probe_limit, seed)
    test_x, test_y = _labels(ds_te, bases, probe_limit, seed + 1)
    for c, k in enumerate(use):
        if int((test_y[:, c] == 0).sum()) < 2:
            skipped[specs[k]] = (f"the clean test split has {int((test_y[:, c] == 0).sum())} images without "
                                 f"{bases[c]}; the edits need some (use more or other clean data)")
    keep = [c for c, k in enumerate(use) if specs[k] not in skipped]
    use, bases = [use[c] for c in keep], [bases[c] for c in keep]
    train_y, test_y = train_y[:, keep], test_y[:, keep]
    if len(use) < 2:
        raise DataError(f"fewer than two of {', '.join(specs)} can be scanned; "
                        + "; ".join(f"{s}: {why}" for s, why in skipped.items()))
    K = len(use)
    names = [specs[k] for k in use]
    signs = [split[k][1] for k in use]

    S_train = pat.encode(train_x).s.numpy().astype(np.float64)
    auc = np.stack([auroc(train_y[:, c], S_train) for c in range(K)])  # (K, P)
    protos = [[int(j) for j in np.argsort(-np.nan_to_num(auc[c], nan=0.0), kind="stable")[:top_k]] for c in range(K)]
    nulls = [null_for(auc, protos[c], top_k) for c in range(K)]
    if any(not n for n in nulls):
        raise UsageError(f"--top-k {top_k} edits all {S_train.shape[1]} prototypes; lower --top-k")
    values, sd = edit_scale * S_train.max(0), S_train.std(0)
    S_test = pat.encode(test_x).s.numpy().astype(np.float64)
    quota = max(1, n_images // 4)

    d_own = [[] for _ in range(K)]
    d_null = [[] for _ in range(K)]
    edited_y = [[] for _ in range(K)]
    z_sizes = [[] for _ in range(K)]
    clean_probs, quality, used_w = [], [], set()
    cost = {"inverted_images": 0, "reconstructed_images": 0, "edited_rows": 0, "edit_passes": 0, "probes": 0}
    for r in tqdm(range(seeds), desc="scan seeds", disable=not progress):
        probe = train_probe(train_x, train_y, seed=seed + r, epochs=probe_epochs)
        cost["probes"] += 1
        p_test = probe_probabilities(probe, test_x)
        clean_probs.append(p_test)
        quality.append([float(auroc(test_y[:, c], p_test[:, c])) for c in range(K)])
        order = np.empty(len(test_y), np.int64)
        order[np.random.default_rng(seed + 1000 + r).permutation(len(test_y))] = np.arange(len(test_y))
        picks = [cover_pick(order, np.flatnonzero(test_y[:, c] == 0), np.delete(test_y, c, 1), n_images, quota)
                 for c in range(K)]
        union = np.unique(np.concatenate(picks))
        inv = invert_images(pat, test_x[union], steps)  # each image once, whatever number of attributes edit it
        rec = run_plan(pat, EditPlan(images=inv.x0, reconstruction=True, steps=steps, inverted=inv,
                                     edit_guidance=float(edit_guidance)))
        used_w.add(float(rec.plan.edit_guidance or 0.0))
        p_rec = probe_probabilities(probe, rec.reconstruction)
        cost["inverted_images"] += len(union)
        cost["reconstructed_images"] += len(union)
        for c in tqdm(range(K), desc="edit passes", disable=not progress, leave=False):
            rows = np.searchsorted(union, picks[c])
            sub = Inverted(x0=inv.x0[rows], s=inv.s[rows], x_T=inv.x_T[rows], steps=inv.steps)
            targets, z = matched_null_targets(S_test[picks[c]], protos[c], values, [j for j, _ in nulls[c]], sd)
            plan = EditPlan(images=sub.x0, steps=steps, inverted=sub, edit_guidance=float(edit_guidance),
                            edits=[Edit.set_all({j: float(values[j]) for j in protos[c]}, "raise own"),
                                   Edit.set_all(targets, "null edit")])
            res = run_plan(pat, plan)
            used_w.add(float(res.plan.edit_guidance or 0.0))
            cost["edit_passes"] += 1
            cost["edited_rows"] += 2 * len(rows)
            d_own[c].append(probe_probabilities(probe, res.images[0]) - p_rec[rows])
            d_null[c].append(probe_probabilities(probe, res.images[1]) - p_rec[rows])
            edited_y[c].append(test_y[picks[c]])
            z_sizes[c].append(z)
    if used_w != {float(edit_guidance)}:
        raise RuntimeError(f"asked for edit guidance {edit_guidance}, the engine used {sorted(used_w)}")
    d_own = [np.concatenate(v) for v in d_own]
    d_null = [np.concatenate(v) for v in d_null]
    edited_y = [np.concatenate(v) for v in edited_y]
    quality = np.asarray(quality)
    lowest = quality.min(0)
    phis = np.array([[phi(train_y[:, i], train_y[:, j]) for j in range(K)] for i in range(K)])
    y_run = training_labels(pat, bases, ds=None if probe_cfg else ds_tr)  # the run's own split: already loaded

    pairs, directions = [], []
    for i, j in combinations(range(K), 2):
        # phi of the pair's training labels, as named: the same for both directions and the pair
        labels = None if y_run is None else label_coupling(y_run[:, i], y_run[:, j], signs[i] * signs[j])
        with warnings.catch_warnings():  # a cross-talk stratum left empty is NaN, reported as such
            warnings.filterwarnings("ignore", "Mean of empty slice", RuntimeWarning)
            res = assess({"dA_A": d_own[i][:, i], "dB_A": d_own[i][:, j], "dA_0A": d_null[i][:, i],
                          "dB_0A": d_null[i][:, j]},
                         {"dB_B": d_own[j][:, j], "dA_B": d_own[j][:, i], "dB_0B": d_null[j][:, j],
                          "dA_0B": d_null[j][:, i]},
                         threshold, (names[i], names[j]), probe_auroc=(float(lowest[i]), float(lowest[j])),
                         min_probe_auroc=min_probe_auroc, signs=(signs[i], signs[j]), seed=seed,
                         clean=([p[:, [i, j]] for p in clean_probs], test_y[:, [i, j]]),
                         min_own_effect=min_own_effect)
        dirs = res["directions"]
        for key, e, o in (("a_to_b", i, j), ("b_to_a", j, i)):
            failures = []
            if abs(phis[e, o]) > max_phi:
                failures.append(f"{bases[e]} and {bases[o]} are correlated in the clean data (phi "
                                f"{phis[e, o]:+.2f}, beyond +-{max_phi:g}): a prototype of one can rank among the "
                                f"other's; pass --probe-data where they vary independently, or --scan-mode pairwise")
            with_o = int(edited_y[e][:, o].sum())
            without_o = len(edited_y[e]) - with_o
            if min(with_o, without_o) < MIN_PER_SIDE:
                failures.append(f"the images edited for {bases[e]} hold {with_o} with {bases[o]} and {without_o} "
                                f"without it (needs >= {MIN_PER_SIDE} of each, so that a rise and a fall of "
                                f"{bases[o]} can both be seen)")
            clash = sorted({p for p, _ in nulls[e]} & set(protos[o]))
            if clash:
                failures.append(f"the null edit for {bases[e]} raises {', '.join(f'p{p}' for p in clash)}, edited "
                                f"for {bases[o]}")
            _gate(dirs[key], failures)
            d = dirs[key]
            checked = check_training_labels(d, labels, (d["edited"], d["other"]), key="why")
            directions.append({
                "a": d["edited"], "b": d["other"], "score": d["score"], "ci95": d["ci95"],
                "verdict": checked["verdict"], "says": d["says"], "why": checked["why"],
                "training_labels": checked["training_labels"],
                "verdict_before_label_check": checked.get("verdict_before_label_check"),
                "leak": d["leak"], "leak_ci95": d["leak_ci95"],
                "null_leak": d["null_leak"], "null_ci95": d["null_ci95"], "probe_crosstalk": d["probe_crosstalk"],
                "probe_crosstalk_ci95": d["probe_crosstalk_ci95"], "own_effect": d["own_effect"],
                "tested": d["tested"], "untested_because": d["untested_because"], "edited_images": len(edited_y[e]),
                "edited_with_other": with_o, "clean_phi": float(phis[e, o])})
        v = check_training_labels(decide(dirs), labels, (names[i], names[j]))
        pairs.append({"a": names[i], "b": names[j], "score": v["score"], "ci95": v["ci95"], "verdict": v["verdict"],
                      "deciding_direction": v["deciding_direction"], "reason": v["reason"],
                      "training_labels": v["training_labels"],
                      "verdict_before_label_check": v.get("verdict_before_label_check"),
                      "leak_a_to_b": dirs["a_to_b"]["leak"], "leak_b_to_a": dirs["b_to_a"]["leak"],
                      "null_leak_a_to_b": dirs["a_to_b"]["null_leak"], "null_leak_b_to_a": dirs["b_to_a"]["null_leak"],
                      "tested_directions": [d["edited"] for d in dirs.values() if d["tested"]],
                      "directions": {k: {**d} for k, d in dirs.items()}})
    for a, b in combinations(specs, 2):
        if a in skipped or b in skipped:
            why = skipped.get(a) or skipped.get(b)
            pairs.append({"a": a, "b": b, "score": None, "ci95": [None, None], "verdict": "skipped",
                          "deciding_direction": None, "reason": why, "leak_a_to_b": None, "leak_b_to_a": None,
                          "null_leak_a_to_b": None, "null_leak_b_to_a": None, "tested_directions": []})

    def rank(r):  # by |score|; a direction or pair with nothing tested last (an untested score is never used)
        if r["score"] is None or not np.isfinite(r["score"]) or not r.get("tested", True):
            return float("inf")
        return -abs(r["score"])

    return ScanResult({
        "mode": "shared", "attributes": list(specs), "scanned": names, "skipped_attributes": skipped,
        "pairs": sorted(pairs, key=rank), "directions": sorted(directions, key=rank),
        "ranking": "by |score| (the deciding direction's signed leak beyond the null edit's and the probe's "
                   "cross-talk), strongest first; pairs with no tested direction last",
        "prototypes": {n: {"edited": protos[c], "auroc": [float(auc[c, p]) for p in protos[c]]}
                       for c, n in enumerate(names)},
        "null_edit": {n: {"prototypes": [p for p, _ in nulls[c]], "association": [a for _, a in nulls[c]],
                          "request_std_units": float(np.mean(np.concatenate(z_sizes[c])))}
                      for c, n in enumerate(names)},
        "probe_test_auroc_min": {n: float(lowest[c]) for c, n in enumerate(names)},
        "clean_phi": {names[i]: {names[j]: float(phis[i, j]) for j in range(K) if j != i} for i in range(K)},
        "clean_data": f"{cfg.dataset}:{cfg.root}" + ("" if probe_cfg else " (the run's own data, as it is)"),
        "threshold": threshold, "min_probe_auroc": min_probe_auroc, "min_own_effect": min_own_effect,
        "max_phi": max_phi,
        "edit_guidance": float(edit_guidance), "edit_scale": edit_scale, "n_images_per_seed": n_images,
        "seeds": seeds, "steps": steps, "top_k": top_k, "differences_from_pairwise": DIFFERENCES,
        "cost": {**cost, "unet_image_evaluations": steps * (cost["inverted_images"] + (2 if edit_guidance else 1)
                                                            * (cost["reconstructed_images"] + cost["edited_rows"])),
                 "note": "unet_image_evaluations = steps x (inverted images + decoded rows, the decoded rows twice "
                         "with edit guidance > 0); encoder passes and probe training are not in it"},
    })
