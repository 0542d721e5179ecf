"""Audit a classifier with prototype counterfactuals: does its prediction move when attribute A, and only A, flips?

FastDiME's shortcut test (Weng et al., ECCV 2024), with Patronus prototype edits as the counterfactual generator:

1. **Rank** the prototypes for A by single-prototype AUROC(A, s_j) on the run's training images (up to
   ``rank_limit``, a seeded subset), as the shortcut diagnosis does (:func:`.shortcut.rank_prototypes`); A's
   ``top_k`` are edited (:mod:`.audit_flip`, shared with the explorer's counterfactual view). The **null
   prototypes** are the ``top_k`` others least associated with A by the same measure (smallest |AUROC_A - 0.5|,
   :func:`.shortcut.null_prototypes`).
2. **Images**: a balanced set of n clean test images, half with A and half without (with ``label``, each half is
   split evenly by the classifier's true label too, so A and the label are independent in it), drawn with
   ``seed``.
3. **Flip A** on each image from its own inversion (one engine plan, :func:`~..edit.run_plan`): where A is absent
   its top prototypes are raised to their plausible maximum (the maximum over the ranking images), where it is
   present lowered to their minimum there. The **null counterfactual** edits the null prototypes in the same
   direction by a request of the same size, counted in each prototype's standard deviation over the ranking
   images (:func:`.shortcut.matched_null_targets`). Edits decode with ``edit_guidance`` w (default 0: the
   decoder's own conditional eps(s'); w > 0 decodes eps(s') + w (eps(s') - eps(s))).
4. **Confirm** each flip with an outside judge of A (:mod:`.audit_models`): a counterfactual counts only when the
   judge reads A on the original as its label says and the opposite on the counterfactual, and only when the
   judge reads A on the clean test split with AUROC >= ``min_judge_auroc``.
5. **Measure** the classifier's probability p of the ``target`` class, on confirmed counterfactuals:
   MAD = mean |p(x) - p(x_cf)|; MD_with / MD_without = mean (p(x_cf) - p(x)) among images with / without A;
   the same for the null counterfactual on the same images, and the differences (A's edit minus the null's), each
   with a paired percentile-bootstrap interval over images; the classifier's AUROC for A on the real images and
   on the counterfactuals (whose A is flipped), and with ``label`` its AUROC for the label on real images, on the
   counterfactuals and on the null counterfactuals (the label taken as unchanged by an edit of A).
6. **Verdict** from the 95 % interval of MAD - MAD_null and tau (``threshold``, in probability): ``uses the
   attribute`` (the interval lies above tau), ``effect below tau`` (above 0, below tau), ``no effect detected``
   (it holds 0, or lies below 0 but within tau), ``inconclusive`` (it crosses tau or -tau, fewer than
   MIN_CONFIRMED confirmed counterfactuals, or a judge that cannot read A).
"""

from __future__ import annotations

import io
import textwrap
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from ..data.biased import resolve_attribute
from ..data.errors import DataError
from ..edit import Edit, EditPlan, run_plan
from ..evaluation.stats import bootstrap_interval
from ..utils.errors import UsageError
from .audit_flip import fit_flip, ranking_indices
from .audit_models import AttributeJudge, Classifier, attribute_judge, class_judge, load_classifier
from .quality import auroc
from .results import ShowsFigure
from .shortcut import matched_null_targets, null_prototypes
from .verdicts import split_negation

DEFAULT_THRESHOLD = 0.05
DEFAULT_MIN_JUDGE_AUROC = 0.75
MIN_CONFIRMED = 4
FIGURE_ROWS = 6
VERDICTS = ("uses the attribute", "inconclusive", "effect below tau", "no effect detected")
DEFINITIONS = {
    "p": "the classifier's probability of the target class (softmax of (B, K) logits, or sigmoid of one logit)",
    "MAD": "mean over confirmed counterfactuals of |p(x) - p(x_cf)|, x the real test image (FastDiME)",
    "MD_with / MD_without": "mean of p(x_cf) - p(x) among confirmed images that have / lack the attribute "
                            "(signed; with: A was lowered, without: A was raised)",
    "null": "the same measures for the null counterfactual (the least A-associated prototypes edited in the same "
            "direction by a request of the same size in std units) on the same images",
    "difference": "A's measure minus the null's, paired by image; its 95% percentile-bootstrap interval resamples "
                  "images",
    "confirmed": "the outside judge reads A on the real image as its label says and the opposite on the "
                 "counterfactual, and reads A on the clean test split with AUROC >= min_judge_auroc",
    "MAD_reconstruction": "mean |p(x) - p(reconstruction)| over all images: the inversion's own share, which A's "
                          "edit and the null edit both carry",
}
VERDICT_RULES = {
    "uses the attribute": "the 95% interval of MAD - MAD_null lies above tau",
    "effect below tau": "the interval lies above 0 but below tau",
    "no effect detected": "the interval holds 0 (or lies below 0) and within +-tau",
    "inconclusive": f"the interval crosses tau or -tau, fewer than {MIN_CONFIRMED} confirmed counterfactuals, or a "
                    "judge that cannot read A on clean test images",
}


def check_settings(n: int = 48, steps: int = 25, top_k: int = 2, edit_guidance: float = 0.0,
                   threshold: float = DEFAULT_THRESHOLD, min_judge_auroc: float = DEFAULT_MIN_JUDGE_AUROC,
                   rank_limit: int = 4000, n_boot: int = 2000) -> None:
    """Every cheap check of the settings, before a model, classifier or judge loads."""
    for name, v, low in (("--n", n, 4), ("--steps", steps, 1), ("--top-k", top_k, 1), ("--rank-limit", rank_limit, 2),
                         ("n_boot", n_boot, 100)):
        if v < low:
            raise UsageError(f"{name} must be at least {low}, got {v}")
    if not edit_guidance >= 0:
        raise UsageError(f"--edit-guidance must be >= 0 (0 = the decoder's own conditional), got {edit_guidance}")
    if not 0 < threshold < 1:
        raise UsageError(f"--threshold tau is a change of probability in (0, 1), got {threshold}")
    if not 0.5 < min_judge_auroc <= 1:
        raise UsageError(f"--min-judge-auroc must lie in (0.5, 1]: 0.5 is a judge at chance, got {min_judge_auroc}")


# ----------------------------------------------------------------------------- images
def _draw(rng: np.random.Generator, pool: np.ndarray, k: int, what: str) -> np.ndarray:
    if len(pool) < k:
        raise DataError(f"the test split has only {len(pool)} images {what}, {k} needed; lower --n")
    return rng.choice(pool, k, replace=False)


def balanced_indices(has: np.ndarray, n: int, seed: int, label: np.ndarray | None = None,
                     names: tuple[str, str] = ("A", "label")) -> np.ndarray:
    """n test indices, half with A and half without (with ``label``: each half split evenly by the label)."""
    rng = np.random.default_rng(seed)
    halves = {True: n // 2, False: n - n // 2}
    picks = []
    for value, k in halves.items():
        what = f"{'with' if value else 'without'} {names[0]}"
        if label is None:
            picks.append(_draw(rng, np.flatnonzero(has == value), k, what))
            continue
        for lv, kk in ((True, k // 2), (False, k - k // 2)):
            pool = np.flatnonzero((has == value) & (label == lv))
            picks.append(_draw(rng, pool, kk, f"{what} and {'with' if lv else 'without'} {names[1]}"))
    return np.sort(np.concatenate(picks))


# ----------------------------------------------------------------------------- statistics
def _mean(a) -> float | None:
    a = np.asarray(a, np.float64)
    return float(a.mean()) if a.size else None


def _ci(rows: np.ndarray, stat, n_boot: int, seed: int) -> list | None:
    rows = np.asarray(rows, np.float64)
    if rows.shape[-1] < 2:
        return None
    ci = bootstrap_interval(rows, stat, n_boot=n_boot, seed=seed)
    return None if ci is None else [ci[0], ci[1]]


def _auroc_stat(a: np.ndarray) -> float | None:
    v = float(auroc(a[0] > 0.5, a[1]))
    return v if np.isfinite(v) else None


def paired_measure(d_edit: np.ndarray, d_null: np.ndarray, n_boot: int, seed: int, absolute: bool) -> dict:
    """Mean of (|d| if absolute else d) for A's edit and for the null, their difference, each with its interval."""
    e, z = (np.abs(d_edit), np.abs(d_null)) if absolute else (np.asarray(d_edit), np.asarray(d_null))
    rows = np.stack([e, z]) if len(e) else np.zeros((2, 0))
    one = lambda k: (lambda a: float(a[k].mean()))  # noqa: E731
    return {"n": int(len(e)), "edit": _mean(e), "edit_ci95": _ci(rows, one(0), n_boot, seed),
            "null": _mean(z), "null_ci95": _ci(rows, one(1), n_boot, seed),
            "difference": None if not len(e) else float(e.mean() - z.mean()),
            "difference_ci95": _ci(rows, lambda a: float(a[0].mean() - a[1].mean()), n_boot, seed)}


def auroc_with_ci(y: np.ndarray, p: np.ndarray, n_boot: int, seed: int) -> dict:
    rows = np.stack([np.asarray(y, np.float64), np.asarray(p, np.float64)]) if len(y) else np.zeros((2, 0))
    v = _auroc_stat(rows) if len(y) else None
    return {"auroc": v, "ci95": _ci(rows, _auroc_stat, n_boot, seed) if v is not None else None, "n": int(len(y))}


def audit_verdict(mad: dict, threshold: float, confirmed: int, judge_auroc: float,
                  min_judge_auroc: float, attribute: str) -> tuple[str, str]:
    """(verdict, reason) from the interval of MAD - MAD_null (module step 6)."""
    tau = f"tau = {threshold:g}"
    if not judge_auroc >= min_judge_auroc:
        return "inconclusive", (f"the judge cannot read {attribute} on clean test images (AUROC {judge_auroc:.2f} < "
                                f"{min_judge_auroc:g}), so no counterfactual can be confirmed")
    if confirmed < MIN_CONFIRMED or mad["difference_ci95"] is None:
        return "inconclusive", (f"only {confirmed} counterfactual(s) confirmed by the judge (needs "
                                f">= {MIN_CONFIRMED}); the edits do not flip {attribute} as the judge reads it")
    d, (lo, hi) = mad["difference"], mad["difference_ci95"]
    said = (f"flipping {attribute} moves the classifier by MAD {mad['edit']:.3f} against the null edit's "
            f"{mad['null']:.3f}: the difference {d:+.3f} has the 95% interval [{lo:+.3f}, {hi:+.3f}], which")
    if lo > threshold:
        return "uses the attribute", f"{said} lies above {tau}"
    if lo <= -threshold or hi >= threshold:
        extra = (" (the null edit moves it more: the classifier reads what the null prototypes change)"
                 if d < 0 else "")
        return "inconclusive", f"{said} crosses +-{tau}: its size against tau is not settled; use more --n{extra}"
    if lo > 0:
        return "effect below tau", f"{said} lies above 0 but below {tau}"
    return "no effect detected", (f"{said} lies within +-{tau} and does not exclude 0; an effect up to "
                                  f"{max(hi, 0):+.3f} is not ruled out")


# ----------------------------------------------------------------------------- the result
@dataclass
class AuditResult(ShowsFigure):
    """An audit's numbers (``report``, JSON-able), its per-image table (``per_image``) and its figure's images."""

    report: dict
    per_image: dict[str, np.ndarray]
    figure_rows: list[dict] = field(default_factory=list)

    def __repr__(self) -> str:
        r, m = self.report, self.report["measures"]["MAD"]
        ci = m["difference_ci95"]
        diff = "n/a" if ci is None else f"{m['difference']:+.3f} [{ci[0]:+.3f}, {ci[1]:+.3f}]"
        mad = "n/a" if m["edit"] is None else f"{m['edit']:.3f} vs null {m['null']:.3f}"
        text = (f"AuditResult({r['attribute'][:24]!r}, target {r['classifier']['target']}: {r['verdict']}; MAD "
                f"{mad}, diff {diff}; {r['counts']['confirmed']}/{r['counts']['n']} confirmed)")
        return text[:200]

    def to_json(self) -> dict:
        """audit.json: every number of the audit."""
        return self.report

    def summary(self) -> str:
        """The verdict with its reason, the judge's confirmations, the measures and the settings (what `audit`
        prints)."""
        r = self.report
        m, c = r["measures"], r["counts"]
        num = lambda v: "n/a" if v is None else f"{v:.3f}"  # noqa: E731
        ci = lambda pair: "" if pair is None else f"[{pair[0]:+.3f}, {pair[1]:+.3f}]"  # noqa: E731
        lines = [f"{r['verdict']} (tau = {r['threshold']:g}): {r['reason']}",
                 f"  confirmed by the judge: {c['confirmed']} of {c['n']} ({c['confirmed_with']} of {c['with']} with "
                 f"{r['attribute']}, {c['confirmed_without']} of {c['without']} without); judge test AUROC "
                 f"{r['judge']['test_auroc']:.3f}"]
        for key, what in (("MAD", "MAD"), ("MD_with", "mean change, with A"), ("MD_without", "mean change, without A")):
            d = m[key]
            lines.append(f"  {what}: no confirmed image" if d["edit"] is None else
                         f"  {what}: flip {d['edit']:+.3f} {ci(d['edit_ci95'])}, null {d['null']:+.3f} "
                         f"{ci(d['null_ci95'])}, difference {d['difference']:+.3f} {ci(d['difference_ci95'])} "
                         f"(n = {d['n']})")
        a = m["auroc_attribute"]
        lines.append(f"  classifier AUROC for {r['attribute']}: real {num(a['real']['auroc'])}, counterfactual "
                     f"{num(a['counterfactual']['auroc'])}")
        if "auroc_label" in m:
            b = m["auroc_label"]
            lines.append(f"  classifier AUROC for {r['label']}: real {num(b['real']['auroc'])}, counterfactual "
                         f"{num(b['counterfactual']['auroc'])}, null {num(b['null']['auroc'])}")
        edited, null = ([e["prototype"] for e in r["prototypes"][k]] for k in ("edited", "null"))
        return "\n".join(lines + [f"  edit guidance w = {r['edit_guidance']:g}, {r['steps']} steps, prototypes "
                                  f"{edited} (null {null})"])

    # figure
    def _figure(self):
        from matplotlib.patches import Rectangle

        from .figures import new_figure

        rows = self.figure_rows
        r = self.report
        n = max(len(rows), 1)
        cols = ("image x", "reconstruction", f"flip {r['attribute']}", "null edit")
        fig = new_figure(figsize=(2.1 * len(cols), 2.1 * n + 1.2), dpi=100)
        axes = fig.subplots(n, len(cols), squeeze=False)
        for i in range(n):
            for c in range(len(cols)):
                ax = axes[i, c]
                ax.axis("off")
                if i >= len(rows):
                    continue
                row = rows[i]
                key = ("x", "rec", "cf", "null")[c]
                img = ((row[key].clamp(-1, 1) + 1) / 2).permute(1, 2, 0).numpy()
                img = img[..., 0] if img.shape[-1] == 1 else img
                ax.imshow(img, **({"cmap": "gray", "vmin": 0, "vmax": 1} if img.ndim == 2 else {}))
                box = row.get(f"box_{key}")
                if box is not None:
                    x0, y0, x1, y1 = box
                    ax.add_patch(Rectangle((x0 - 0.5, y0 - 0.5), x1 - x0, y1 - y0, fill=False, edgecolor="red",
                                           linewidth=2))
                text = f"p={row[f'p_{key}']:.2f} judge={row[f'j_{key}']:.2f}"
                head = cols[c] + (f" (p{row['proto_' + key]})" if f"proto_{key}" in row else "")
                if c == 0:
                    text = f"{row['name']}: {text}"
                ax.set_title(f"{head}\n{text}" if i == 0 else text, fontsize=7)
        width = int(fig.get_figwidth() * 15)  # characters per line at font size 8
        fig.suptitle("\n".join(textwrap.fill(part, width) for part in self.figure_title().split("\n")), fontsize=8)
        fig.tight_layout()
        return fig

    def figure_title(self) -> str:
        r, m = self.report, self.report["measures"]["MAD"]
        c = r["counts"]
        ci = m["difference_ci95"]
        nums = ("no confirmed counterfactual" if m["edit"] is None else
                f"MAD {m['edit']:.3f}, null {m['null']:.3f}, difference {m['difference']:+.3f}"
                + ("" if ci is None else f" [{ci[0]:+.3f}, {ci[1]:+.3f}]"))
        shown = (f"the {len(self.figure_rows)} confirmed images whose p moved most" if r["figure"]["confirmed_only"]
                 else f"{len(self.figure_rows)} unconfirmed images (none confirmed)")
        return (f"audit of p(class {r['classifier']['target']}) for {r['attribute']}: {r['verdict']} (tau = "
                f"{r['threshold']:g}); {nums}\n{c['confirmed']} of {c['n']} counterfactuals confirmed by the judge; "
                f"{shown}; edit guidance w = {r['edit_guidance']:g}, {r['steps']} steps; red: the edited "
                f"prototype's best match")

    def png(self) -> bytes:
        buf = io.BytesIO()
        self._figure().savefig(buf, format="png")
        return buf.getvalue()

    def to_pil(self):
        from PIL import Image

        return Image.open(io.BytesIO(self.png())).convert("RGB")

    def write(self, out: str | Path) -> dict[str, Path]:
        """audit.json, audit.csv (one row per image), audit.png into ``out`` (each written atomically)."""
        from ..utils.io import atomic_path, write_json
        from .tables import write_csv

        out = Path(out)
        files = {"audit.json": out / "audit.json", "audit.csv": out / "audit.csv", "audit.png": out / "audit.png"}
        png = self.png()  # drawn before anything is written
        write_json(files["audit.json"], self.report)
        cols = list(self.per_image)
        fmt = lambda v: f"{v:.6f}" if isinstance(v, float) else v  # noqa: E731
        table = [np.asarray(self.per_image[c]).tolist() for c in cols]
        write_csv(files["audit.csv"], cols, ([fmt(col[i]) for col in table] for i in range(len(table[0]))))
        with atomic_path(files["audit.png"]) as tmp:
            Path(tmp).write_bytes(png)
        return files


# ----------------------------------------------------------------------------- main
def _judge_for(pat, base: str, train_ds, y_train: np.ndarray, judge_cache, progress) -> AttributeJudge:
    if base.startswith("class:"):
        classes = sorted(set(np.asarray(train_ds.labels)[y_train].tolist()))
        return class_judge(pat.config.data, classes, pat.device, progress, judge_cache)
    return attribute_judge(pat.config.data, base, train_ds, y_train, pat.device, cache_dir=judge_cache,
                           progress=progress)


def _stack_batches(ds, idx) -> torch.Tensor:
    idx = [int(i) for i in idx]
    return torch.cat([ds.get_batch(idx[i:i + 512]) for i in range(0, len(idx), 512)])


def audit(pat, classifier, attribute: str, target: int | None = None, n: int = 48, label: str | None = None,
          top_k: int = 2, steps: int = 25, edit_guidance: float = 0.0, threshold: float = DEFAULT_THRESHOLD,
          min_judge_auroc: float = DEFAULT_MIN_JUDGE_AUROC, rank_limit: int = 4000, seed: int = 0,
          n_boot: int = 2000, classifier_range=None, classifier_size=None, classifier_channels=None,
          judge: AttributeJudge | None = None, judge_cache: str | Path | None = None,
          progress: bool = False) -> AuditResult:
    """Audit ``classifier`` (a TorchScript file or a loaded :class:`Classifier`) for ``attribute`` (module docstring).

    Every check that input can fail (settings, attribute, images, classifier, target) runs before the judge,
    the ranking or any edit."""
    t_start = time.time()
    check_settings(n, steps, top_k, edit_guidance, threshold, min_judge_auroc, rank_limit, n_boot)
    cfg_w = float(getattr(pat.config.sample, "guidance", 0.0) or 0.0)
    if edit_guidance and cfg_w:
        raise UsageError(f"--edit-guidance {edit_guidance:g} cannot be combined with this run's classifier-free "
                         f"guidance on s (sample.guidance {cfg_w:g}); use --edit-guidance 0")
    base, sign = split_negation(attribute)
    train_ds, test_ds = pat.dataset("train"), pat.dataset("test")
    y_train = resolve_attribute(train_ds, base)
    has_base = resolve_attribute(test_ds, base)
    has_named = has_base if sign > 0 else ~has_base
    y_label = resolve_attribute(test_ds, label) if label else None
    idx = balanced_indices(has_named, n, seed, y_label, (attribute, label or ""))
    x0 = _stack_batches(test_ds, idx)
    d = pat.config.data
    if top_k >= pat.num_prototypes:
        raise UsageError(f"--top-k {top_k} would edit all {pat.num_prototypes} prototypes and leave none for the "
                         f"null edit; lower --top-k")
    rank_idx = ranking_indices(y_train, rank_limit, seed, base)
    if isinstance(classifier, Classifier):
        if any(v is not None for v in (classifier_range, classifier_size, classifier_channels, target)):
            raise UsageError("a loaded Classifier carries its own range, size, channels and target; pass the file "
                             "path to set them here")
        clf = classifier
    else:
        clf = load_classifier(classifier, pat.device, d.image_size, d.channels, x0[:2], classifier_range,
                              classifier_size, classifier_channels, target)

    # the outside judge of A (the attribute as the intervention is about: before not:)
    t0 = time.time()
    judge = judge or _judge_for(pat, base, train_ds, y_train, judge_cache, progress)
    test_all = np.arange(len(test_ds))
    if len(test_all) > 2000:
        test_all = np.sort(np.random.default_rng(seed + 1).choice(test_all, 2000, replace=False))
    judge_auroc = float(auroc(has_base[test_all], judge.probability(_stack_batches(test_ds, test_all))))
    judge_seconds = time.time() - t0

    # rank prototypes for A on the training images; the null prototypes; edit targets and request sizes
    t0 = time.time()
    flip = fit_flip(pat, base, rank_idx, y_train[rank_idx], top_k)
    own, ranking, auc_a = flip.prototypes, flip.ranking, flip.auroc
    null = null_prototypes(auc_a, auc_a, own, top_k)
    if not null:
        raise UsageError(f"--top-k {top_k} edits all {len(auc_a)} prototypes and leaves none for the null "
                         f"edit; lower --top-k")
    null_ids = [j for j, _ in null]
    hi_v, lo_v, sd = flip.high, flip.low, flip.sd
    s0 = pat.encode(x0).s.numpy().astype(np.float64)
    present, named = has_base[idx], has_named[idx]
    null_t = {k: torch.zeros(len(idx)) for k in null_ids}
    z = np.zeros(len(idx))
    for rows, values in ((present, lo_v), (~present, hi_v)):
        if rows.any():
            t, zz = matched_null_targets(s0[rows], own, values, null_ids, sd)
            z[rows] = zz
            for k in null_ids:
                null_t[k][torch.as_tensor(rows)] = t[k]
    rank_seconds = time.time() - t0

    # one plan: reconstruction, A flipped, the null counterfactual, from each image's own inversion
    t0 = time.time()
    plan = EditPlan(images=x0, edits=[flip.edit(present), Edit.set_all(null_t, "null edit")],
                    steps=steps, reconstruction=True, edit_guidance=float(edit_guidance))
    res = run_plan(pat, plan, progress)
    used_w = float(res.plan.edit_guidance or 0.0)
    if used_w != float(edit_guidance):
        raise RuntimeError(f"asked for edit guidance {edit_guidance}, the engine used {used_w}")
    edit_seconds = time.time() - t0

    p = {"x": clf.probability(x0), "rec": clf.probability(res.reconstruction), "cf": clf.probability(res.images[0]),
         "null": clf.probability(res.images[1])}
    j = {"x": judge.probability(x0), "rec": judge.probability(res.reconstruction),
         "cf": judge.probability(res.images[0]), "null": judge.probability(res.images[1])}
    judge_ok = judge_auroc >= min_judge_auroc
    read_right = (j["x"] >= 0.5) == present
    flipped = (j["cf"] >= 0.5) == ~present
    confirmed = judge_ok & read_right & flipped
    d_cf, d_null = p["cf"] - p["x"], p["null"] - p["x"]

    c = confirmed
    measures = {"MAD": paired_measure(d_cf[c], d_null[c], n_boot, seed, True),
                "MD_with": paired_measure(d_cf[c & named], d_null[c & named], n_boot, seed, False),
                "MD_without": paired_measure(d_cf[c & ~named], d_null[c & ~named], n_boot, seed, False),
                "MAD_reconstruction": _mean(np.abs(p["rec"] - p["x"])),
                "auroc_attribute": {"real": auroc_with_ci(named, p["x"], n_boot, seed),
                                    "counterfactual": auroc_with_ci(~named[c], p["cf"][c], n_boot, seed),
                                    "note": "the classifier's p as a score for the attribute; on counterfactuals "
                                            "the attribute is the flipped one"}}
    if y_label is not None:
        lab = y_label[idx]
        measures["auroc_label"] = {"real": auroc_with_ci(lab, p["x"], n_boot, seed),
                                   "counterfactual": auroc_with_ci(lab[c], p["cf"][c], n_boot, seed),
                                   "null": auroc_with_ci(lab[c], p["null"][c], n_boot, seed),
                                   "note": f"the classifier's AUROC for {label} (FastDiME's test_u and testc_u); "
                                           f"the label is taken as unchanged by an edit of {base}"}
    all_edits = {"MAD": paired_measure(d_cf, d_null, n_boot, seed, True),
                 "note": "every edited image, unconfirmed ones included: not the audit's measure"}
    verdict, reason = audit_verdict(measures["MAD"], threshold, int(c.sum()), judge_auroc, min_judge_auroc,
                                    attribute)

    counts = {"n": int(len(idx)), "with": int(named.sum()), "without": int((~named).sum()), "confirmed": int(c.sum()),
              "confirmed_with": int((c & named).sum()), "confirmed_without": int((c & ~named).sum()),
              "judge_read_original_right": int(read_right.sum()), "judge_read_flipped": int(flipped.sum()),
              "null_keeps_attribute": int(((j["null"] >= 0.5) == present).sum())}
    names = [f"test:{int(i)}" for i in idx]
    per_image = {"image": np.array(names), "has_attribute": named.astype(int),
                 "edit": np.where(present, f"lower {base}", f"raise {base}"),
                 "p_x": p["x"], "p_reconstruction": p["rec"], "p_counterfactual": p["cf"], "p_null": p["null"],
                 "d_counterfactual": d_cf, "d_null": d_null, "judge_x": j["x"], "judge_counterfactual": j["cf"],
                 "judge_null": j["null"], "confirmed": c.astype(int), "null_request_std": z}
    if y_label is not None:
        per_image["label"] = y_label[idx].astype(int)

    order = [int(i) for i in np.argsort(-np.abs(d_cf), kind="stable")]
    pool = [i for i in order if c[i]] or order
    figure_rows = []
    for i in pool[:FIGURE_ROWS]:
        row = {"name": names[i], "x": x0[i], "rec": res.reconstruction[i], "cf": res.images[0, i],
               "null": res.images[1, i], "proto_cf": own[0], "proto_null": null_ids[0]}
        for key in ("x", "rec", "cf", "null"):
            row[f"p_{key}"] = float(p[key][i])
            row[f"j_{key}"] = float(j[key][i])
        if res.location is not None and res.receptive_field is not None:
            row["box_cf"], row["box_null"] = res.box(0, i, own[0]), res.box(1, i, null_ids[0])
        figure_rows.append(row)

    report = {
        "attribute": attribute, "intervention": base, "negated": sign < 0, "label": label,
        "run": str(getattr(pat, "run_dir", None)), "classifier": clf.describe(),
        "verdict": verdict, "reason": reason, "threshold": threshold, "verdict_rules": VERDICT_RULES,
        "counts": counts, "measures": measures, "all_edits": all_edits, "definitions": DEFINITIONS,
        "judge": {**{k: v for k, v in judge.meta.items() if k != "key"}, "test_auroc": judge_auroc,
                  "min_judge_auroc": min_judge_auroc, "n_test": int(len(test_all))},
        "prototypes": {"edited": [{"prototype": jj, "auroc": float(auc_a[jj]), "raise_to": float(hi_v[jj]),
                                   "lower_to": float(lo_v[jj])} for jj in own],
                       "ranking": [{"prototype": jj, "auroc": v} for jj, v in ranking[:10]],
                       "null": [{"prototype": k, "association": a, "auroc": float(auc_a[k])} for k, a in null],
                       "ranked_on": f"{len(rank_idx)} training images of the run",
                       "null_rule": "the top-k others with the smallest |AUROC - 0.5| for the attribute, edited in "
                                    "the same direction as A's; each image's request has the same size in units "
                                    "of each prototype's std over the ranking images",
                       "mean_request_std": float(np.mean(np.abs(z)))},
        "images": {"split": "test", "indices": [int(i) for i in idx], "seed": seed,
                   "rule": "balanced: half with the attribute, half without" + (
                       f", each half split evenly by {label}" if label else "")},
        "n_images": int(len(idx)), "steps": steps, "top_k": top_k, "edit_guidance": float(edit_guidance),
        "run_sample_edit_guidance": float(getattr(pat.config.sample, "edit_guidance", 0.0) or 0.0),
        "cfg_guidance": cfg_w, "seed": seed, "n_boot": n_boot,
        "figure": {"rows": [r["name"] for r in figure_rows], "confirmed_only": bool(c.any())},
        "seconds": {"judge": round(judge_seconds, 2), "ranking": round(rank_seconds, 2),
                    "edits": round(edit_seconds, 2), "total": round(time.time() - t_start, 2)},
    }
    return AuditResult(report, per_image, figure_rows)
