"""Shortcut diagnosis: does the model tie attribute A to attribute B? (spec §6.9, automated)

1. **Rank** prototypes for A and for B by single-prototype AUROC(y, s_j) on *clean* data (where A and
   B are independent), so that a prototype ranks high for A because it responds to A, not to B.
2. **Edit causally, in each direction.** Direction A: n clean test images *without* A, half with B and half
   without (so that a rise *and* a fall of B can be seen); invert x0 -> x_T under s and decode from the same
   x_T with s (reconstruction x_rec) and with s^A (the top-k prototypes of A raised to their plausible
   maximum max_X s_j, times ``edit_scale``: 1 is the paper's manipulation, larger values extrapolate for
   models whose s range is small). Direction B likewise, on images without B, half with A.
3. **Measure** with an independent attribute probe (a small CNN trained on clean data, so it does
   not use one attribute as evidence for the other) the probabilities pA, pB of every image, and the
   per-image effects  dA|A = pA(x^A) - pA(x_rec),  dB|A = pB(x^A) - pB(x_rec)  (and dB|B, dA|B).
4. **Score each direction** by its signed leak, the change of the other attribute per unit of the intended
   change:

       leak(A -> B) = mean dB|A / mean dA|A,        leak(B -> A) = mean dA|B / mean dB|B.

   +0.8 means "raising A raises B by 0.8 of what it does to A", -0.8 "raising A *lowers* B" (the paper's
   black hair -> less smiling). A direction is *tested* when its own effect reaches 0.1; an untested
   direction's leak is never used. Each tested direction's 95 % interval is a bootstrap over its (seed,
   image) units; it is a **shortcut** when the interval lies beyond +-tau (either sign), **no shortcut**
   when it lies inside (-tau, tau), else inconclusive. The model has a shortcut when any tested direction
   has one, none when every tested direction has none. ``score`` and ``ci95`` are those of the deciding
   direction (the largest |leak| among the tested ones), so the sign says which way the coupling goes and
   naming an attribute the other way round (``not:A``) flips the sign, not the verdict.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from tqdm.auto import tqdm

from ..data.biased import correlated_subset, phi, resolve_attribute
from ..data.errors import DataError
from ..utils.errors import UsageError
from .engine import Edit, EditPlan, run_plan
from .quality import auroc

DEFAULT_THRESHOLD = 0.2
MIN_OWN_EFFECT = 0.1


# ----------------------------------------------------------------------------- probe
class AttributeProbe(nn.Module):
    """Small CNN -> one logit per attribute; trained on clean images, used only to measure edits."""

    def __init__(self, channels: int, n_out: int, width: int = 32):
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(channels, width, 3, 2, 1), nn.ReLU(),
            nn.Conv2d(width, width, 3, 2, 1), nn.ReLU(),
            nn.Conv2d(width, width, 3, 1, 1), nn.ReLU(),
        )
        self.head = nn.Linear(2 * width, n_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.net(x)
        return self.head(torch.cat([h.mean((2, 3)), h.amax((2, 3))], 1))


def train_probe(images: torch.Tensor, targets: np.ndarray, seed: int = 0, epochs: int = 8, batch: int = 64,
                lr: float = 3e-3, progress: bool = False) -> AttributeProbe:
    """Fit the probe with binary cross-entropy on (images (N, C, H, W), targets (N, K) in {0, 1})."""
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    probe = AttributeProbe(images.shape[1], targets.shape[1])
    opt = torch.optim.Adam(probe.parameters(), lr=lr)
    y = torch.as_tensor(targets, dtype=torch.float32)
    for _ in tqdm(range(epochs), desc="probe", disable=not progress, leave=False):
        perm = torch.randperm(len(images), generator=g)
        for i in range(0, len(images), batch):
            b = perm[i:i + batch]
            loss = F.binary_cross_entropy_with_logits(probe(images[b]), y[b])
            opt.zero_grad()
            loss.backward()
            opt.step()
    return probe.eval()


@torch.no_grad()
def probe_probabilities(probe: AttributeProbe, images: torch.Tensor, batch: int = 256) -> np.ndarray:
    return torch.cat([torch.sigmoid(probe(images[i:i + batch].float())) for i in range(0, len(images), batch)]).numpy()


# ----------------------------------------------------------------------------- data
@dataclass
class CleanData:
    """Images with A and B independent: for ranking prototypes, training the probe, choosing edit images."""

    train_x: torch.Tensor
    train_y: np.ndarray  # (N, 2) A, B
    test_x: torch.Tensor
    test_y: np.ndarray
    source: str


def _load_xy(ds, a_spec: str, b_spec: str, limit: int, seed: int, decorrelate: bool):
    a, b = resolve_attribute(ds, a_spec), resolve_attribute(ds, b_spec)
    if decorrelate:
        idx = correlated_subset(a, b, 0.0, None, seed, p_a=float(np.clip(a.mean(), 0.05, 0.95)),
                                p_b=float(np.clip(b.mean(), 0.05, 0.95)))
    else:
        idx = np.arange(len(a))
    if limit and len(idx) > limit:
        idx = np.sort(np.random.default_rng(seed).choice(idx, limit, replace=False))
    x = torch.cat([ds.get_batch(idx[i:i + 512].tolist()) for i in range(0, len(idx), 512)])
    return x, np.stack([a[idx], b[idx]], 1).astype(np.int64)


def clean_data(pat, a_spec: str, b_spec: str, probe_cfg=None, limit: int = 4000, seed: int = 0) -> CleanData:
    """The clean data: ``probe_cfg`` (a DataConfig of an unbiased dataset) as it is, or else a subset of
    the run's own data in which A and B are made independent (phi = 0) by subsampling."""
    decorrelate = probe_cfg is None
    cfg = probe_cfg or pat.config.data
    from ..data import load_dataset

    try:
        tr = _load_xy(load_dataset(cfg, "train"), a_spec, b_spec, limit, seed, decorrelate)
        te = _load_xy(load_dataset(cfg, "test"), a_spec, b_spec, limit, seed + 1, decorrelate)
    except DataError as e:
        if decorrelate:
            raise DataError(f"{e}. The run's data cannot be made unbiased; pass --probe-data DIR "
                            f"(with --probe-csv) holding images where {a_spec} and {b_spec} vary "
                            f"independently") from None
        raise
    source = f"{cfg.dataset}:{cfg.root}" + (" (decorrelated subset of the run's data)" if decorrelate else "")
    return CleanData(tr[0], tr[1], te[0], te[1], source)


# ----------------------------------------------------------------------------- ranking
def rank_prototypes(S: np.ndarray, y: np.ndarray) -> list[tuple[int, float]]:
    """(prototype, AUROC) sorted by AUROC(y, s_j), highest first: prototypes more similar when y is present."""
    a = auroc(y, S)
    order = np.argsort(-np.nan_to_num(a, nan=0.0))
    return [(int(j), float(a[j])) for j in order]


# ----------------------------------------------------------------------------- edits
def edit_effects(pat, x0: torch.Tensor, protos_a: list[int], protos_b: list[int], values: np.ndarray,
                 probe: AttributeProbe, steps: int) -> dict:
    """Per-image probe effects of raising A's and B's prototypes to ``values`` (one per prototype).

    One engine plan: the reconstruction, the A edit and the B edit decoded from the same x_T in one batch."""
    v = torch.as_tensor(values, dtype=torch.float32)
    plan = EditPlan(images=x0, steps=steps, reconstruction=True,
                    edits=[Edit.set_all({j: float(v[j]) for j in protos_a}, "raise A"),
                           Edit.set_all({j: float(v[j]) for j in protos_b}, "raise B")])
    res = run_plan(pat, plan)
    rec, (xa, xb) = res.reconstruction, res.images
    p_rec, p_a, p_b = (probe_probabilities(probe, z) for z in (rec, xa, xb))
    return {"dA_A": p_a[:, 0] - p_rec[:, 0], "dB_A": p_a[:, 1] - p_rec[:, 1],
            "dB_B": p_b[:, 1] - p_rec[:, 1], "dA_B": p_b[:, 0] - p_rec[:, 0],
            "p_rec": p_rec, "p_orig": probe_probabilities(probe, x0),
            "images": {"x0": x0, "rec": rec, "edit_a": xa, "edit_b": xb},
            "s_after_a": res.s_after[0], "s_after_b": res.s_after[1], "s": res.s}


def leak(d_own: np.ndarray, d_other: np.ndarray) -> float:
    """Signed leak of one direction: mean change of the other attribute / mean change of the edited one."""
    own = float(np.mean(d_own))
    return float(np.mean(d_other)) / own if abs(own) > 1e-9 else float("nan")


def leak_interval(d_own: np.ndarray, d_other: np.ndarray, n_boot: int = 2000, seed: int = 0,
                  level: float = 0.95) -> tuple[float, float, float]:
    """Percentile bootstrap interval (lo, hi) and std of the leak, resampling (seed, image) units."""
    rng = np.random.default_rng(seed)
    n = len(d_own)
    vals = []
    for _ in range(n_boot):
        i = rng.integers(0, n, n)
        vals.append(leak(d_own[i], d_other[i]))
    vals = np.asarray(vals)
    vals = vals[np.isfinite(vals)]
    if not len(vals):
        return float("nan"), float("nan"), float("nan")
    lo, hi = np.quantile(vals, [(1 - level) / 2, 1 - (1 - level) / 2])
    return float(lo), float(hi), float(vals.std())


def tested_directions(own_a: float, own_b: float, names: tuple[str, str] = ("A", "B")) -> list[str]:
    """The attributes whose own edit effect (dA|A, dB|B) reaches MIN_OWN_EFFECT."""
    return [n for n, own in zip(names, (own_a, own_b)) if own >= MIN_OWN_EFFECT]


def interval_verdict(lo: float, hi: float, threshold: float) -> str:
    """shortcut: the interval lies beyond +-threshold; no shortcut: inside (-threshold, threshold)."""
    if not (np.isfinite(lo) and np.isfinite(hi)):
        return "inconclusive"
    if lo > threshold or hi < -threshold:
        return "shortcut"
    if lo > -threshold and hi < threshold:
        return "no shortcut"
    return "inconclusive"


def verdict(score: float, lo: float, hi: float, own_a: float, own_b: float, threshold: float,
            names: tuple[str, str] = ("A", "B")) -> tuple[str, str]:
    """(verdict, reason) of one leak interval given the own effects dA|A and dB|B (see :func:`assess`).

    With no tested direction the leak means nothing (inconclusive); with one, the reason says the verdict
    rests on it.
    """
    tested = tested_directions(own_a, own_b, names)
    if not np.isfinite(score) or not tested:
        return "inconclusive", (f"the edits change their own attribute by only {own_a:+.3f} ({names[0]}) and "
                                f"{own_b:+.3f} ({names[1]}) (< {MIN_OWN_EFFECT}): these prototypes do not carry "
                                f"A or B, so the leak ratio means nothing; train longer, raise --top-k or "
                                f"--edit-scale")
    only = "" if len(tested) == 2 else (
        f"; only raising {tested[0]} changes its own attribute by >= {MIN_OWN_EFFECT}, so the verdict rests on "
        f"that direction")
    v = interval_verdict(lo, hi, threshold)
    if v == "shortcut":
        return v, f"the 95% interval [{lo:.2f}, {hi:.2f}] lies beyond +-{threshold}{only}"
    if v == "no shortcut":
        return v, f"the 95% interval [{lo:.2f}, {hi:.2f}] lies within +-{threshold}{only}"
    return v, f"the 95% interval [{lo:.2f}, {hi:.2f}] overlaps +-{threshold}; use more --n/--seeds{only}"


def _describe(edited: str, other: str, value: float) -> str:
    word = "raises" if value > 0 else "lowers"
    return f"raising {edited} {word} {other} ({value:+.2f} of its own change)"


def assess(effects_a: dict[str, np.ndarray], effects_b: dict[str, np.ndarray], threshold: float = DEFAULT_THRESHOLD,
           names: tuple[str, str] = ("A", "B"), n_boot: int = 2000, seed: int = 0) -> dict:
    """The per-direction leaks, their intervals and the model's verdict (module docstring, step 4).

    ``effects_a`` holds dA_A and dB_A of the images edited in direction A, ``effects_b`` dB_B and dA_B of
    the images edited in direction B (per-image arrays)."""
    dirs = {}
    for key, (edited, other), own_k, other_k, e in (("a_to_b", names, "dA_A", "dB_A", effects_a),
                                                     ("b_to_a", names[::-1], "dB_B", "dA_B", effects_b)):
        own = float(np.mean(e[own_k]))
        value = leak(e[own_k], e[other_k])
        lo, hi, sd = leak_interval(e[own_k], e[other_k], n_boot, seed)
        tested = own >= MIN_OWN_EFFECT
        dirs[key] = {"edited": edited, "other": other, "own_effect": own, "leak": value, "ci95": [lo, hi],
                     "bootstrap_std": sd, "tested": tested,
                     "verdict": interval_verdict(lo, hi, threshold) if tested else "untested",
                     "says": _describe(edited, other, value) if np.isfinite(value) else ""}
    tested = [d for d in dirs.values() if d["tested"]]
    own_a, own_b = dirs["a_to_b"]["own_effect"], dirs["b_to_a"]["own_effect"]
    if not tested:
        v, why = verdict(float("nan"), float("nan"), float("nan"), own_a, own_b, threshold, names)
        return {"verdict": v, "reason": why, "score": float("nan"), "ci95": [float("nan")] * 2,
                "bootstrap_std": float("nan"), "directions": dirs, "deciding_direction": None}
    flagged = [d for d in tested if d["verdict"] == "shortcut"]
    deciding = max(flagged or tested, key=lambda d: abs(d["leak"]) if np.isfinite(d["leak"]) else -1.0)
    lo, hi = deciding["ci95"]
    v, why = verdict(deciding["leak"], lo, hi, own_a, own_b, threshold, names)
    if flagged:
        v = "shortcut"
    elif any(d["verdict"] != "no shortcut" for d in tested):
        v = "inconclusive"
    why = f"{deciding['says']}: {why}"
    others = [d for d in tested if d is not deciding]
    if others:
        o = others[0]
        why += f"; the other direction: {o['says']}, [{o['ci95'][0]:.2f}, {o['ci95'][1]:.2f}], {o['verdict']}"
    return {"verdict": v, "reason": why, "score": deciding["leak"], "ci95": [lo, hi],
            "bootstrap_std": deciding["bootstrap_std"], "directions": dirs,
            "deciding_direction": f"{deciding['edited']} -> {deciding['other']}"}


def _stratified(rng: np.random.Generator, pools: list[np.ndarray], n: int) -> np.ndarray:
    """n indices drawn as evenly as possible from the pools (without replacement), sorted."""
    take = [min(len(p), n // len(pools)) for p in pools]
    short = n - sum(take)
    for k, p in enumerate(pools):  # fill from pools that have more
        extra = min(short, len(p) - take[k])
        take[k] += extra
        short -= extra
    picks = [rng.choice(p, t, replace=False) for p, t in zip(pools, take) if t > 0]
    return np.sort(np.concatenate(picks)) if picks else np.zeros(0, np.int64)


# ----------------------------------------------------------------------------- main
def diagnose(pat, a_spec: str, b_spec: str, probe_cfg=None, n_images: int = 24, seeds: int = 3, top_k: int = 2,
             steps: int = 25, edit_scale: float = 1.0, threshold: float = DEFAULT_THRESHOLD, probe_limit: int = 4000,
             probe_epochs: int = 8, seed: int = 0, progress: bool = True) -> dict:
    """Run the diagnosis (module docstring) and return the report (JSON-able, plus ``_images``)."""
    data = clean_data(pat, a_spec, b_spec, probe_cfg, probe_limit, seed)
    S_train = pat.encode(data.train_x).s.numpy().astype(np.float64)
    rank_a = rank_prototypes(S_train, data.train_y[:, 0])
    rank_b = rank_prototypes(S_train, data.train_y[:, 1])
    protos_a = [j for j, _ in rank_a[:top_k]]
    protos_b = [j for j, _ in rank_b[:top_k]]
    if not edit_scale > 0:
        raise UsageError(f"edit_scale must be positive, got {edit_scale}")
    # plausible maximum of every prototype over the clean training images (times edit_scale)
    values = edit_scale * S_train.max(0)
    y = data.test_y
    pools_a = [np.flatnonzero((y[:, 0] == 0) & (y[:, 1] == v)) for v in (0, 1)]  # edit A: no A, B either way
    pools_b = [np.flatnonzero((y[:, 1] == 0) & (y[:, 0] == v)) for v in (0, 1)]  # edit B: no B, A either way
    for pools, (attr, other) in ((pools_a, (a_spec, b_spec)), (pools_b, (b_spec, a_spec))):
        if len(pools[0]) + len(pools[1]) < 2:
            raise DataError(f"the clean test split has {len(pools[0]) + len(pools[1])} images without {attr}; "
                            f"the edits need some, with and without {other} (use more or other clean data)")
    keys_a, keys_b = ("dA_A", "dB_A"), ("dB_B", "dA_B")
    pooled_a, pooled_b = {k: [] for k in keys_a}, {k: [] for k in keys_b}
    per_seed, probe_quality, first = [], [], None
    for r in tqdm(range(seeds), desc="diagnose seeds", disable=not progress):
        probe = train_probe(data.train_x, data.train_y, seed=seed + r, epochs=probe_epochs)
        p_test = probe_probabilities(probe, data.test_x)
        probe_quality.append([float(auroc(data.test_y[:, k], p_test[:, k])) for k in (0, 1)])
        rng = np.random.default_rng(seed + 1000 + r)
        pick_a, pick_b = _stratified(rng, pools_a, n_images), _stratified(rng, pools_b, n_images)
        ea = edit_effects(pat, data.test_x[pick_a], protos_a, protos_b, values, probe, steps)
        eb = edit_effects(pat, data.test_x[pick_b], protos_a, protos_b, values, probe, steps)
        per_seed.append(assess({k: ea[k] for k in keys_a}, {k: eb[k] for k in keys_b}, threshold,
                               (a_spec, b_spec), n_boot=200, seed=seed + r)["score"])
        for k in keys_a:
            pooled_a[k].append(ea[k])
        for k in keys_b:
            pooled_b[k].append(eb[k])
        if first is None:
            first = ea
    pooled_a = {k: np.concatenate(v) for k, v in pooled_a.items()}
    pooled_b = {k: np.concatenate(v) for k, v in pooled_b.items()}
    result = assess(pooled_a, pooled_b, threshold, (a_spec, b_spec), seed=seed)
    means = {k: float(np.mean(v)) for k, v in {**pooled_a, **pooled_b}.items()}
    seed_scores = np.array(per_seed, dtype=np.float64)
    dirs = result["directions"]
    report = {
        "a": a_spec, "b": b_spec, "clean_data": data.source,
        "clean_train_correlation": phi(data.train_y[:, 0], data.train_y[:, 1]),
        "score": result["score"], "ci95": result["ci95"], "bootstrap_std": result["bootstrap_std"],
        "deciding_direction": result["deciding_direction"],
        "directions": dirs,
        "seed_scores": seed_scores.tolist(),
        "seed_std": float(seed_scores[np.isfinite(seed_scores)].std()) if np.isfinite(seed_scores).any() else float("nan"),
        "verdict": result["verdict"], "reason": result["reason"], "threshold": threshold,
        "own_effect": (means["dA_A"] + means["dB_B"]) / 2, "min_own_effect": MIN_OWN_EFFECT,
        "effects": {**means, "leak_a_to_b": dirs["a_to_b"]["leak"], "leak_b_to_a": dirs["b_to_a"]["leak"]},
        "prototypes": {"a": [{"prototype": j, "auroc": v} for j, v in rank_a[:max(top_k, 10)]],
                       "b": [{"prototype": j, "auroc": v} for j, v in rank_b[:max(top_k, 10)]],
                       "edited_a": protos_a, "edited_b": protos_b, "shared": sorted(set(protos_a) & set(protos_b)),
                       "edit_values": {str(j): float(values[j]) for j in sorted(set(protos_a) | set(protos_b))}},
        "probe_test_auroc": {"a": float(np.mean([q[0] for q in probe_quality])),
                             "b": float(np.mean([q[1] for q in probe_quality]))},
        "edit_images": f"direction A: clean test images without {a_spec}, half with {b_spec}; direction B: "
                       f"without {b_spec}, half with {a_spec}",
        "n_images_per_seed": int(len(pick_a)), "seeds": seeds, "steps": steps, "top_k": top_k,
        "edit_scale": edit_scale,
        "per_image": {**{k: v.tolist() for k, v in pooled_a.items()}, **{k: v.tolist() for k, v in pooled_b.items()}},
    }
    report["tested_directions"] = tested_directions(means["dA_A"], means["dB_B"], (a_spec, b_spec))
    if not report["tested_directions"] and pat.config.unet.cond_norm == "none":
        report["reason"] += ("; this model was trained without unet.cond_norm=layer, and such CPU-budget decoders "
                             "barely react to s: retrain with --set unet.cond_norm=layer (docs/quality.md)")
    report["_first"] = first
    return report


# ----------------------------------------------------------------------------- scan
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


def scan_pairs(pat, names: list[str], probe_cfg=None, progress: bool = True, **diagnose_kw) -> list[dict]:
    """Diagnose every pair of ``names`` and rank the pairs by the size of their measured coupling |score|
    (the deciding direction's signed leak), strongest first; pairs without a tested direction come last, and a
    pair whose diagnosis cannot run (e.g. too few clean images) is kept as ``skipped`` with the reason."""
    from itertools import combinations

    if not diagnose_kw.get("edit_scale", 1.0) > 0:  # argument errors fail once, before any pair runs
        raise UsageError(f"edit_scale must be positive, got {diagnose_kw['edit_scale']}")
    rows = []
    pairs = list(combinations(names, 2))
    for a, b in tqdm(pairs, desc="scan pairs", disable=not progress):
        try:
            r = diagnose(pat, a, b, probe_cfg, progress=False, **diagnose_kw)
        except DataError as e:  # this pair's data cannot be used (e.g. too few clean images): say so, scan on
            rows.append({"a": a, "b": b, "score": None, "ci95": [None, None], "verdict": "skipped",
                         "deciding_direction": None, "reason": str(e), "leak_a_to_b": None, "leak_b_to_a": None,
                         "tested_directions": []})
            continue
        rows.append({"a": a, "b": b, "score": r["score"], "ci95": r["ci95"], "verdict": r["verdict"],
                     "deciding_direction": r["deciding_direction"], "reason": r["reason"],
                     "leak_a_to_b": r["directions"]["a_to_b"]["leak"], "leak_b_to_a": r["directions"]["b_to_a"]["leak"],
                     "tested_directions": r["tested_directions"]})
    if rows and all(r["verdict"] == "skipped" for r in rows):
        raise DataError(f"no pair of {', '.join(names)} could be diagnosed; first reason: {rows[0]['reason']}")
    measured = lambda r: r["score"] is not None and np.isfinite(r["score"])  # noqa: E731
    return sorted(rows, key=lambda r: -abs(r["score"]) if measured(r) else float("inf"))


# ----------------------------------------------------------------------------- figure
def _patch_box(pat, x: torch.Tensor, proto: int) -> tuple[int, int, int, int]:
    loc = pat.encode(x[None]).location[0, proto]
    return pat.model.prototypes.box(int(loc[0]), int(loc[1]))


def plot_diagnosis(pat, report: dict, path: str | Path, rows: int = 4) -> Path:
    """Paper-style figure: x0 | +A edit with the box of A's top prototype | its patch | +B edit | patch,
    titled with the probe probabilities (pA, pB)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.patches as mpatches
    import matplotlib.pyplot as plt

    from ..utils.io import atomic_path

    e = report["_first"]
    imgs = e["images"]
    n = min(rows, len(imgs["x0"]))
    ja, jb = report["prototypes"]["edited_a"][0], report["prototypes"]["edited_b"][0]
    p_rec = e["p_rec"]
    p_a = p_rec + np.stack([e["dA_A"], e["dB_A"]], 1)
    p_b = p_rec + np.stack([e["dA_B"], e["dB_B"]], 1)
    cols = [("x0", imgs["x0"], None, e["p_orig"]), ("recon.", imgs["rec"], None, p_rec),
            (f"+{report['a']} (p{ja})", imgs["edit_a"], ja, p_a), (f"patch p{ja}", imgs["edit_a"], ("patch", ja), None),
            (f"+{report['b']} (p{jb})", imgs["edit_b"], jb, p_b), (f"patch p{jb}", imgs["edit_b"], ("patch", jb), None)]
    fig, axes = plt.subplots(n, len(cols), figsize=(1.9 * len(cols), 2.0 * n), dpi=100, squeeze=False)
    for i in range(n):
        for c, (title, batch, mark, probs) in enumerate(cols):
            ax = axes[i, c]
            x = batch[i]
            img = ((x.clamp(-1, 1) + 1) / 2).permute(1, 2, 0).numpy()
            img = img[..., 0] if img.shape[-1] == 1 else img
            kw = {"cmap": "gray", "vmin": 0, "vmax": 1} if img.ndim == 2 else {}
            if isinstance(mark, tuple):
                x0_, y0_, x1_, y1_ = _patch_box(pat, x, mark[1])
                ax.imshow(img[y0_:y1_, x0_:x1_], **kw)
            else:
                ax.imshow(img, **kw)
                if mark is not None:
                    x0_, y0_, x1_, y1_ = _patch_box(pat, x, mark)
                    ax.add_patch(mpatches.Rectangle((x0_ - 0.5, y0_ - 0.5), x1_ - x0_, y1_ - y0_, fill=False,
                                                    edgecolor="red", linewidth=2))
            label = f"pA={probs[i, 0]:.2f} pB={probs[i, 1]:.2f}" if probs is not None else ""
            ax.set_title(f"{title}\n{label}" if i == 0 else label, fontsize=7)
            ax.axis("off")
    fig.suptitle(f"shortcut score {report['score']:+.2f} [{report['ci95'][0]:+.2f}, {report['ci95'][1]:+.2f}] "
                 f"({report['deciding_direction']}): {report['verdict']} (tau = +-{report['threshold']})", fontsize=9)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)
    return Path(path)


def write_diagnosis(pat, report: dict, out: str | Path) -> dict[str, Path]:
    """diagnosis.json, effects.csv (per image), rankings.csv, diagnosis.png into ``out``."""
    from ..utils.io import write_json, write_text

    out = Path(out)
    files = {"diagnosis.json": out / "diagnosis.json", "effects.csv": out / "effects.csv",
             "rankings.csv": out / "rankings.csv", "diagnosis.png": out / "diagnosis.png"}
    per = report["per_image"]
    write_json(files["diagnosis.json"], {k: v for k, v in report.items() if not k.startswith("_") and k != "per_image"})
    write_text(files["effects.csv"], "direction,unit,d_own,d_other\n" + "".join(
        f"{name},{i},{per[own][i]:.5f},{per[other][i]:.5f}\n"
        for name, own, other in ((f"{report['a']}->{report['b']}", "dA_A", "dB_A"),
                                 (f"{report['b']}->{report['a']}", "dB_B", "dA_B"))
        for i in range(len(per[own]))))
    pr = report["prototypes"]
    write_text(files["rankings.csv"], "attribute,rank,prototype,auroc\n" + "".join(
        f"{name},{r},{d['prototype']},{d['auroc']:.4f}\n" for name, key in ((report["a"], "a"), (report["b"], "b"))
        for r, d in enumerate(pr[key])))
    plot_diagnosis(pat, report, files["diagnosis.png"])
    return files
