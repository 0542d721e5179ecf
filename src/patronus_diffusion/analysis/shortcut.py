"""Shortcut diagnosis: does the model tie attribute A to attribute B? (spec §6.9, automated)

1. **Rank** prototypes for A and for B by single-prototype AUROC(y, s_j) on *clean* data (where A and
   B are independent), so that a prototype ranks high for A because it responds to A, not to B.
2. **Edit causally.** For n clean test images with neither A nor B, invert x0 -> x_T under s, then
   decode three times from the same x_T: with s (reconstruction x_rec), with s^A (the top-k prototypes
   of A raised to their plausible maximum max_X s_j, times ``edit_scale``: 1 is the paper's manipulation,
   larger values extrapolate for models whose s range is small) and with s^B (likewise for B).
3. **Measure** with an independent attribute probe (a small CNN trained on clean data, so it does
   not use one attribute as evidence for the other) the probabilities pA, pB of every image, and the
   per-image effects  dA|A = pA(x^A) - pA(x_rec),  dB|A = pB(x^A) - pB(x_rec)  (and dB|B, dA|B).
4. **Score.** The shortcut score is the fraction of the intended change that leaks to the other attribute,

       score = (mean dB|A + mean dA|B) / (mean dA|A + mean dB|B),

   0 when edits of A leave B alone (and vice versa), about 1 when raising either brings the other
   with it. The uncertainty is a bootstrap over (seed, image) units and the spread over seeds (each
   seed draws other images and retrains the probe). Verdict with threshold tau: ``shortcut`` when the
   95 % interval lies above tau, ``no shortcut`` when it lies below tau, else ``inconclusive``
   (also when neither edit changes its own attribute by 0.1: the prototypes then do not carry the
   attributes and the ratio means nothing; when only one does, the verdict rests on that direction).
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


def shortcut_score(e: dict[str, np.ndarray]) -> dict:
    """score = (mean dB|A + mean dA|B) / (mean dA|A + mean dB|B) and the two one-way leak ratios."""
    m = {k: float(np.mean(e[k])) for k in ("dA_A", "dB_A", "dB_B", "dA_B")}
    own = m["dA_A"] + m["dB_B"]
    return {"score": (m["dB_A"] + m["dA_B"]) / own if abs(own) > 1e-9 else float("nan"),
            "leak_a_to_b": m["dB_A"] / m["dA_A"] if abs(m["dA_A"]) > 1e-9 else float("nan"),
            "leak_b_to_a": m["dA_B"] / m["dB_B"] if abs(m["dB_B"]) > 1e-9 else float("nan"), **m}


def bootstrap_interval(e: dict[str, np.ndarray], n_boot: int = 2000, seed: int = 0, level: float = 0.95):
    """Percentile bootstrap interval of the score, resampling (seed, image) units with replacement."""
    rng = np.random.default_rng(seed)
    n = len(e["dA_A"])
    vals = []
    for _ in range(n_boot):
        i = rng.integers(0, n, n)
        vals.append(shortcut_score({k: e[k][i] for k in ("dA_A", "dB_A", "dB_B", "dA_B")})["score"])
    vals = np.asarray(vals)
    vals = vals[np.isfinite(vals)]
    lo, hi = np.quantile(vals, [(1 - level) / 2, 1 - (1 - level) / 2]) if len(vals) else (np.nan, np.nan)
    return float(lo), float(hi), float(vals.std()) if len(vals) else float("nan")


def tested_directions(own_a: float, own_b: float, names: tuple[str, str] = ("A", "B")) -> list[str]:
    """The attributes whose own edit effect (dA|A, dB|B) reaches MIN_OWN_EFFECT."""
    return [n for n, own in zip(names, (own_a, own_b)) if own >= MIN_OWN_EFFECT]


def verdict(score: float, lo: float, hi: float, own_a: float, own_b: float, threshold: float,
            names: tuple[str, str] = ("A", "B")) -> tuple[str, str]:
    """(verdict, reason) from the score, its 95 % interval and the own effects dA|A and dB|B.

    A direction is *tested* when raising that attribute's prototypes changes the attribute itself by at
    least MIN_OWN_EFFECT; with no tested direction the leak ratio means nothing (inconclusive). With one,
    the verdict stands on that direction alone, and the reason says so.
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
    if lo > threshold:
        return "shortcut", f"the 95% interval [{lo:.2f}, {hi:.2f}] lies above the threshold {threshold}{only}"
    if hi < threshold:
        return "no shortcut", f"the 95% interval [{lo:.2f}, {hi:.2f}] lies below the threshold {threshold}{only}"
    return "inconclusive", (f"the 95% interval [{lo:.2f}, {hi:.2f}] contains the threshold {threshold}; "
                            f"use more --n/--seeds{only}")


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
    neither = np.flatnonzero((data.test_y[:, 0] == 0) & (data.test_y[:, 1] == 0))
    if len(neither) < 2:
        raise DataError(f"the clean test split has {len(neither)} images with neither {a_spec} nor {b_spec}; "
                        f"the edits need some (use more or other clean data)")
    per_seed, pooled, probe_quality, first = [], {k: [] for k in ("dA_A", "dB_A", "dB_B", "dA_B")}, [], None
    for r in tqdm(range(seeds), desc="diagnose seeds", disable=not progress):
        probe = train_probe(data.train_x, data.train_y, seed=seed + r, epochs=probe_epochs)
        p_test = probe_probabilities(probe, data.test_x)
        probe_quality.append([float(auroc(data.test_y[:, k], p_test[:, k])) for k in (0, 1)])
        rng = np.random.default_rng(seed + 1000 + r)
        pick = np.sort(rng.choice(neither, min(n_images, len(neither)), replace=False))
        e = edit_effects(pat, data.test_x[pick], protos_a, protos_b, values, probe, steps)
        per_seed.append(shortcut_score(e))
        for k in pooled:
            pooled[k].append(e[k])
        if first is None:
            first = e
    pooled = {k: np.concatenate(v) for k, v in pooled.items()}
    total = shortcut_score(pooled)
    lo, hi, boot_sd = bootstrap_interval(pooled, seed=seed)
    seed_scores = np.array([p["score"] for p in per_seed])
    own = (total["dA_A"] + total["dB_B"]) / 2
    report = {
        "a": a_spec, "b": b_spec, "clean_data": data.source,
        "clean_train_correlation": phi(data.train_y[:, 0], data.train_y[:, 1]),
        "score": total["score"], "ci95": [lo, hi], "bootstrap_std": boot_sd,
        "seed_scores": seed_scores.tolist(), "seed_std": float(seed_scores.std()),
        "verdict": None, "reason": None, "threshold": threshold, "own_effect": own, "min_own_effect": MIN_OWN_EFFECT,
        "effects": {k: total[k] for k in ("dA_A", "dB_A", "dB_B", "dA_B", "leak_a_to_b", "leak_b_to_a")},
        "prototypes": {"a": [{"prototype": j, "auroc": v} for j, v in rank_a[:max(top_k, 10)]],
                       "b": [{"prototype": j, "auroc": v} for j, v in rank_b[:max(top_k, 10)]],
                       "edited_a": protos_a, "edited_b": protos_b, "shared": sorted(set(protos_a) & set(protos_b)),
                       "edit_values": {str(j): float(values[j]) for j in sorted(set(protos_a) | set(protos_b))}},
        "probe_test_auroc": {"a": float(np.mean([q[0] for q in probe_quality])),
                             "b": float(np.mean([q[1] for q in probe_quality]))},
        "n_images_per_seed": int(min(n_images, len(neither))), "seeds": seeds, "steps": steps, "top_k": top_k,
        "edit_scale": edit_scale,
        "per_image": {k: v.tolist() for k, v in pooled.items()},
    }
    report["verdict"], report["reason"] = verdict(total["score"], lo, hi, total["dA_A"], total["dB_B"], threshold,
                                                  (a_spec, b_spec))
    report["tested_directions"] = tested_directions(total["dA_A"], total["dB_B"], (a_spec, b_spec))
    if not report["tested_directions"] and pat.config.unet.cond_norm == "none":
        report["reason"] += ("; this model was trained without unet.cond_norm=layer, and such CPU-budget decoders "
                             "barely react to s: retrain with --set unet.cond_norm=layer (docs/quality.md)")
    report["_first"] = first
    return report


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
    fig.suptitle(f"shortcut score {report['score']:.2f} [{report['ci95'][0]:.2f}, {report['ci95'][1]:.2f}]: "
                 f"{report['verdict']} (tau = {report['threshold']})", fontsize=9)
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
    write_text(files["effects.csv"], "unit,dA_A,dB_A,dB_B,dA_B\n" + "".join(
        f"{i},{per['dA_A'][i]:.5f},{per['dB_A'][i]:.5f},{per['dB_B'][i]:.5f},{per['dA_B'][i]:.5f}\n"
        for i in range(len(per["dA_A"]))))
    pr = report["prototypes"]
    write_text(files["rankings.csv"], "attribute,rank,prototype,auroc\n" + "".join(
        f"{name},{r},{d['prototype']},{d['auroc']:.4f}\n" for name, key in ((report["a"], "a"), (report["b"], "b"))
        for r, d in enumerate(pr[key])))
    plot_diagnosis(pat, report, files["diagnosis.png"])
    return files
