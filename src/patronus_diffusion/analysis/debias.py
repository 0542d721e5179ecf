"""Debias: generate a data set in which attributes A and B are independent, as outside judges read them.

``debias(pat, "mark", "footwear", n=400)`` (``patronus debias --decouple A,B``) fills the four (A, B) cells with
n/4 generated images each:

1. **Rank** A's prototypes on up to ``rank_limit`` training images of the run. ``ranking="within"`` (the
   default): score_A = AUROC(A, s_j) averaged within B = 1 and within B = 0, score_B = AUROC(B, s_j) averaged
   within A = 1 and A = 0; a prototype qualifies when it reads A more than B (score_A - 0.5 > |score_B - 0.5|),
   so that on a biased run a prototype of B that merely co-occurs with A is never edited; the ``top_k``
   qualifying ones with the highest score_A are A's prototypes. Where a stratum holds only one value of A (a run
   trained at phi = +-1) it falls back to the plain AUROC, with a warning; ``ranking="plain"`` is the plain AUROC
   as ``patronus audit`` ranks. The edit targets are the plausible maximum (A present) and minimum (A absent):
   the maximum and minimum of s_j over the ranking images.
2. **Generate** each attempt for cell (a, b): a real training image with B = b (any A; drawn from a seeded
   permutation of them), its s with A's prototypes set to the target of a, decoded with the run's sampler either
   from fresh seeded noise (``mode="sample"``) or from the image's own DDIM inversion (``mode="inversion"``).
   Images are rounded to 8 bits before they are judged, so what is judged is what is written.
3. **Accept** an attempt only when both outside judges read it as the target cell with confidence: the judge of
   A gives p(A) >= ``confidence`` for a = 1 (<= 1 - confidence for a = 0), and the same for B. The judges are
   those of ``patronus audit`` (:mod:`.audit_models`): the project's class judge for ``class:`` attributes, else a
   small CNN trained on the run's real training images only (cached); each must read its attribute on the run's
   test split with AUROC >= ``min_judge_auroc``, or nothing runs.
4. **Stop** a cell when it holds n/4 accepted images or after ``max_attempts`` attempts; an unfilled cell is
   reported (a warning and ``unfilled`` in the report), never silently short.

The report: phi(A, B) of the written set by the judges (hard reads, p >= 0.5) with a percentile-bootstrap
interval over images; the same by a second pair of judges trained with another seed (``check_judges``: the
acceptance judges select the images, so their phi is 0 by construction when the cells are full; the second pair
did not select them); counts, attempts and acceptance per cell and how many accepted images came from sources
that already had the target A; the judges' test AUROC; FID/KID against the run's real test images with the
floor of N real training images at the same N (``fid``).

Written (``DebiasResult.write``): ``images/*.png``, ``attributes.csv`` (the folder dataset's format: ``file``,
``split`` = train, the judged A and B columns and the bookkeeping columns), ``debias.json``, ``debias.png`` and
``debias-state.json`` (what makes a re-run continue: settings, attempts and accepted rows per cell).
"""

from __future__ import annotations

import io
import math
import re
import textwrap
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from ..data.biased import phi, resolve_attribute
from ..data.errors import DataError
from ..evaluation.stats import bootstrap_interval
from ..utils.errors import UsageError
from .audit_models import AttributeJudge, attribute_judge, class_judge
from .quality import auroc

MODES = ("sample", "inversion")
RANKINGS = ("within", "plain")
CELLS = ((1, 1), (1, 0), (0, 1), (0, 0))  # (a, b), the attributes as named (base sense)
STATE_FILE = "debias-state.json"
RESERVED = ("file", "split", "source", "seed", "attempt")
DEFAULT_CONFIDENCE = 0.9
DEFAULT_MIN_JUDGE_AUROC = 0.9
DEFAULT_ATTEMPTS_PER_IMAGE = 20
CHECK_JUDGE_SEED = 54321  # the second pair of judges: not the acceptance judges' seed (12345)
FIGURE_PAIRS = 8
RULE = ("accepted when the judge of A reads p(A) >= c for a target a = 1 (<= 1 - c for a = 0) and the judge of B "
        "reads B the same way for its target b, c = the confidence; hard reads for phi: p >= 0.5")


# ----------------------------------------------------------------------------- settings and names
def check_settings(n: int = 400, top_k: int = 2, steps: int | None = None, confidence: float = DEFAULT_CONFIDENCE,
                   min_judge_auroc: float = DEFAULT_MIN_JUDGE_AUROC, max_attempts: int | None = None,
                   batch: int = 64, mode: str = "sample", edit_guidance: float = 0.0, rank_limit: int = 4000,
                   ranking: str = "within", n_boot: int = 2000) -> None:
    """Every cheap check of the settings, before a model, judge or image is touched."""
    if n < 8 or n % 4:
        raise UsageError(f"--n must be a multiple of 4 (n/4 images per (A, B) cell) and at least 8, got {n}")
    for name, v, low in (("--top-k", top_k, 1), ("--batch", batch, 1), ("--rank-limit", rank_limit, 4),
                         ("n_boot", n_boot, 100)):
        if v < low:
            raise UsageError(f"{name} must be at least {low}, got {v}")
    if steps is not None and steps < 1:
        raise UsageError(f"--steps must be at least 1, got {steps}")
    if max_attempts is not None and max_attempts < n // 4:
        raise UsageError(f"--max-attempts is per cell and must be at least n/4 = {n // 4}, got {max_attempts}")
    if not 0.5 <= confidence < 1:
        raise UsageError(f"--confidence must lie in [0.5, 1): a judge's probability for the target, got {confidence}")
    if not 0.5 < min_judge_auroc <= 1:
        raise UsageError(f"--min-judge-auroc must lie in (0.5, 1]: 0.5 is a judge at chance, got {min_judge_auroc}")
    if mode not in MODES:
        raise UsageError(f"--mode must be one of {', '.join(MODES)}, got {mode!r}")
    if ranking not in RANKINGS:
        raise UsageError(f"--ranking must be one of {', '.join(RANKINGS)}, got {ranking!r}")
    if not edit_guidance >= 0:
        raise UsageError(f"--edit-guidance must be >= 0 (0 = the decoder's own conditional), got {edit_guidance}")


def parse_pair(text: str) -> tuple[str, str]:
    """``"mark,footwear"`` -> ("mark", "footwear"): the two attributes of ``--decouple``."""
    parts = [p.strip() for p in str(text).split(",")]
    if len(parts) != 2 or not all(parts):
        raise UsageError(f"--decouple takes two attributes A,B (A is edited, B comes from the source image), "
                         f"e.g. mark,footwear; got {text!r}")
    return parts[0], parts[1]


def base_attribute(spec: str) -> str:
    """The attribute without ``not:`` / ``!`` (decoupling A from B is decoupling not:A from B)."""
    spec = spec.strip()
    while True:
        for prefix in ("not:", "!"):
            if spec.startswith(prefix):
                spec = spec[len(prefix):].strip()
                break
        else:
            return spec


def column_name(spec: str) -> str:
    """The attribute CSV column that holds ``spec``'s judged value: the column itself, or for ``class:...`` and
    ``NAME=v`` specs a name made of letters, digits and underscores (``class:7+9`` -> ``class_7_9``)."""
    base = base_attribute(spec)
    return base if re.fullmatch(r"[A-Za-z0-9_\-]+", base) else re.sub(r"[^A-Za-z0-9]+", "_", base).strip("_")


def phi_interval(a, b, n_boot: int = 2000, seed: int = 0) -> dict:
    """phi(a, b) of two binary vectors with a 95 % percentile-bootstrap interval over items and the cell counts."""
    a, b = np.asarray(a, bool), np.asarray(b, bool)
    rows = np.stack([a, b]).astype(np.float64)
    ci = bootstrap_interval(rows, lambda m: phi(m[0] > 0.5, m[1] > 0.5), n_boot=n_boot, seed=seed) if len(a) > 1 \
        else None
    cells = {f"{i},{j}": int(((a == i) & (b == j)).sum()) for i, j in CELLS}
    return {"phi": phi(a, b) if len(a) else None, "ci95": None if ci is None else [ci[0], ci[1]], "n": int(len(a)),
            "cells": cells}


def _within(S: np.ndarray, y: np.ndarray, strata: np.ndarray) -> np.ndarray | None:
    """Mean over the strata (values of ``strata``) of AUROC(y, s_j) within each: strata holding both values of y,
    at least 2 of each. None when no stratum does."""
    parts = [auroc(y[strata == v], S[strata == v]) for v in (True, False)
             if min(int((y & (strata == v)).sum()), int((~y & (strata == v)).sum())) >= 2]
    return np.mean(parts, 0) if parts else None


def choose_prototypes(S: np.ndarray, y_a: np.ndarray, y_b: np.ndarray, ranking: str, top_k: int) -> dict:
    """A's prototypes (module step 1) and the numbers they were chosen by.

    ``within``: score_A = AUROC(A, s_j) averaged within B = 1 and B = 0, score_B = AUROC(B, s_j) averaged within
    A = 1 and A = 0; a prototype qualifies when it reads A more than B (score_A - 0.5 > |score_B - 0.5|), and the
    ``top_k`` qualifying ones with the highest score_A are edited (fewer when fewer qualify). ``plain``: the
    ``top_k`` highest plain AUROC(A, s_j), as ``patronus audit`` ranks."""
    plain = auroc(y_a, S)
    score_a = _within(S, y_a, y_b) if ranking == "within" else None
    score_b = _within(S, y_b, y_a) if ranking == "within" else None
    if ranking == "within" and (score_a is None or score_b is None):
        warnings.warn("no stratum of B holds both values of A among the ranking images (a run trained with A and B "
                      "tied completely?): A's prototypes are ranked by the plain AUROC, which cannot tell A's "
                      "prototypes from B's", stacklevel=3)
        ranking = "plain (fallback: no stratum of B holds both values of A)"
    if score_a is None or score_b is None:
        order = [int(j) for j in np.argsort(-np.nan_to_num(plain, nan=0.0), kind="stable")]
        return {"own": order[:top_k], "score_a": plain, "score_b": None, "plain": plain, "excluded": [],
                "ranking": ranking}
    sa, sb = np.nan_to_num(score_a, nan=0.5), np.nan_to_num(score_b, nan=0.5)
    order = [int(j) for j in np.argsort(-sa, kind="stable")]
    ok = [j for j in order if sa[j] - 0.5 > abs(sb[j] - 0.5)]
    excluded = [j for j in order[:top_k] if j not in ok]
    own = ok[:top_k]
    if not own:
        warnings.warn("no prototype reads A more than B within the other's strata; the one with the highest AUROC "
                      "for A within B is edited, and it carries B too", stacklevel=3)
        own = order[:1]
    return {"own": own, "score_a": score_a, "score_b": score_b, "plain": plain, "excluded": excluded,
            "ranking": f"within (score_A - 0.5 > |score_B - 0.5|; {len(own)} of top-k {top_k} qualify)"}


# ----------------------------------------------------------------------------- judges
@dataclass
class _Judges:
    a: AttributeJudge
    b: AttributeJudge
    auroc_a: float
    auroc_b: float


def _class_judge_seeded(data_cfg, classes, device, seed: int, cache_dir, progress) -> AttributeJudge:
    from ..evaluation.judge import JudgeSettings, get_judge

    j = get_judge(data_cfg, JudgeSettings(seed=seed), cache_dir=cache_dir, device=device, progress=progress)
    return AttributeJudge(j.net, sorted(int(c) for c in classes), {
        "kind": "class judge", "classes": sorted(int(c) for c in classes), "file": j.meta.get("cache_file"),
        "seed": seed, "class_test_accuracy": j.meta.get("test_accuracy")})


def make_judge(pat, spec: str, y_train: np.ndarray, cache_dir=None, progress: bool = False,
               seed: int | None = None) -> AttributeJudge:
    """The outside judge of ``spec`` (its base attribute), as ``patronus audit`` builds it; with ``seed`` one
    trained with that seed instead of the default (the second, checking pair)."""
    base = base_attribute(spec)
    train_ds = pat.dataset("train")
    if base.startswith("class:"):
        classes = sorted(set(np.asarray(train_ds.labels)[y_train].tolist()))
        if seed is not None:
            return _class_judge_seeded(pat.config.data, classes, pat.device, seed, cache_dir, progress)
        return class_judge(pat.config.data, classes, pat.device, progress, cache_dir)
    settings = None
    if seed is not None:
        from ..evaluation.judge import JudgeSettings

        settings = JudgeSettings(seed=seed)
    return attribute_judge(pat.config.data, base, train_ds, y_train, pat.device, settings=settings,
                           cache_dir=cache_dir, progress=progress)


def _stack(ds, idx) -> torch.Tensor:
    idx = [int(i) for i in idx]
    if not idx:
        return torch.zeros(0)
    return torch.cat([ds.get_batch(idx[i:i + 512]) for i in range(0, len(idx), 512)])


def judge_test_auroc(pat, judge: AttributeJudge, spec: str, seed: int = 0, limit: int = 2000) -> float:
    test = pat.dataset("test")
    y = resolve_attribute(test, base_attribute(spec))
    idx = np.arange(len(test))
    if len(idx) > limit:
        idx = np.sort(np.random.default_rng(seed + 1).choice(idx, limit, replace=False))
    return float(auroc(y[idx], judge.probability(_stack(test, idx))))


# ----------------------------------------------------------------------------- the result
@dataclass
class DebiasResult:
    """The generated set: ``report`` (JSON-able), ``rows`` (one dict per image, attempt order per cell),
    ``images`` ((N, C, H, W) in [-1, 1], 8-bit exact) and ``sources`` (the real source image of each)."""

    report: dict
    rows: list[dict]
    images: torch.Tensor
    sources: torch.Tensor
    state: dict = field(default_factory=dict)

    def __repr__(self) -> str:
        r = self.report
        p = r["phi_judges"]
        ci = "" if p["ci95"] is None else f" [{p['ci95'][0]:+.2f}, {p['ci95'][1]:+.2f}]"
        v = "n/a" if p["phi"] is None else f"{p['phi']:+.3f}"
        short = "" if not r["unfilled"] else f", {len(r['unfilled'])} cell(s) UNFILLED"
        text = (f"DebiasResult({r['a'][:32]} x {r['b'][:32]}: {r['n_written']}/{r['n']} images, phi {v}{ci} by the "
                f"judges, acceptance {r['acceptance']:.2f}{short})")
        return text[:200]

    def summary(self) -> dict:
        r = self.report
        return {k: r[k] for k in ("a", "b", "n", "n_written", "complete", "unfilled", "phi_judges", "phi_check_judges",
                                  "acceptance", "cells", "judges", "fid", "mode", "rule")}

    def figure(self):
        from matplotlib.figure import Figure

        from ..utils.images import make_grid

        r = self.report
        fig = Figure(figsize=(11, 6.2), dpi=100)
        axes = fig.subplots(2, 2)
        c = self.images.shape[1]
        for ax, (a, b) in zip(axes.ravel(), CELLS):
            key = f"{a},{b}"
            idx = [i for i, row in enumerate(self.rows) if (row["target_a"], row["target_b"]) == (a, b)][:FIGURE_PAIRS]
            ax.set_axis_off()
            cell = r["cells"][key]
            ax.set_title(f"A={a}, B={b} (training share {cell['training_share']:.1%}): {cell['accepted']}/"
                         f"{cell['needed']} in {cell['attempts']} attempts\nrow 1: real sources, row 2: generated",
                         fontsize=8)
            if not idx:
                ax.text(0.5, 0.5, "no accepted image", ha="center", va="center", transform=ax.transAxes)
                continue
            k = len(idx)
            grid = make_grid(torch.cat([self.sources[idx], self.images[idx]]), nrow=k)
            ax.imshow(grid[..., 0] if c == 1 else grid, cmap="gray" if c == 1 else None, vmin=0, vmax=255)
        p, pc = r["phi_judges"], r["phi_check_judges"]
        line = f"phi(A, B) by the judges {_num(p['phi'])} {_ci(p['ci95'])}"
        if pc:
            line += f"; by the check judges {_num(pc['phi'])} {_ci(pc['ci95'])}"
        head = (f"debias set of A = {r['column_a']}, B = {r['column_b']}: {r['n_written']} of {r['n']} images, mode "
                f"{r['mode']}, acceptance {r['acceptance']:.2f}")
        fig.suptitle("\n".join(textwrap.fill(t, 150) for t in (head, line)), fontsize=9)
        fig.tight_layout()
        return fig

    def png(self) -> bytes:
        buf = io.BytesIO()
        self.figure().savefig(buf, format="png")
        return buf.getvalue()

    def _repr_png_(self) -> bytes:
        return self.png()

    def to_pil(self):
        from PIL import Image

        return Image.open(io.BytesIO(self.png())).convert("RGB")

    def csv_columns(self) -> list[str]:
        ca, cb = self.report["column_a"], self.report["column_b"]
        return ["file", "split", ca, cb, f"target_{ca}", f"target_{cb}", f"p_{ca}", f"p_{cb}", "source",
                f"source_{ca}", f"source_{cb}", "seed", "attempt"]

    def write(self, out: str | Path) -> dict[str, Path]:
        """images/*.png (those not there yet), attributes.csv, debias.json, debias.png, debias-state.json."""
        from ..utils.io import write_json
        from .tables import write_csv

        out = Path(out)
        files = {"attributes.csv": out / "attributes.csv", "debias.json": out / "debias.json",
                 "debias.png": out / "debias.png", "images": out / "images", "state": out / STATE_FILE}
        png = self.png()  # drawn before anything is written
        for i, row in enumerate(self.rows):
            if not (out / row["file"]).exists():
                _save_image(self.images[i], out / row["file"])
        f = lambda v: "" if v is None else f"{v:.6f}" if isinstance(v, float) else v  # noqa: E731
        keys = ["file", "split", "a", "b", "target_a", "target_b", "p_a", "p_b", "source", "source_a", "source_b",
                "seed", "attempt"]
        write_csv(files["attributes.csv"], self.csv_columns(), ([f(row[k]) for k in keys] for row in self.rows))
        write_json(files["debias.json"], self.report)
        from ..utils.io import atomic_path

        with atomic_path(files["debias.png"]) as tmp:
            Path(tmp).write_bytes(png)
        if self.state:
            write_json(files["state"], self.state)
        return files


def _f(a, j: int):
    return None if a is None or not np.isfinite(a[j]) else float(a[j])


def _num(v) -> str:
    return "n/a" if v is None else f"{v:+.3f}"


def _ci(pair) -> str:
    return "" if pair is None else f"[{pair[0]:+.3f}, {pair[1]:+.3f}]"


def _save_image(x: torch.Tensor, path: Path) -> None:
    from PIL import Image

    from ..utils.images import to_uint8
    from ..utils.io import atomic_path

    arr = to_uint8(x[None])[0]
    img = Image.fromarray(arr[..., 0] if arr.shape[-1] == 1 else arr)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        img.save(tmp, format="PNG")


def _load_image(path: Path, channels: int) -> torch.Tensor:
    from PIL import Image

    with Image.open(path) as img:
        arr = np.asarray(img.convert("L" if channels == 1 else "RGB"), dtype=np.float32)
    arr = arr[:, :, None] if arr.ndim == 2 else arr
    return torch.from_numpy(arr).permute(2, 0, 1) / 127.5 - 1.0


def quantize(x: torch.Tensor) -> torch.Tensor:
    """Images in [-1, 1] rounded to the 8-bit values their PNG holds (what the folder loader reads back)."""
    return ((x.float().clamp(-1, 1) + 1) * 127.5).round() / 127.5 - 1.0


# ----------------------------------------------------------------------------- the output folder
def _open_folder(out: Path | None, identity: dict, need: int) -> dict | None:
    """The stored state of a debias folder being continued, None for a new one; refuses a folder that is neither."""
    import json

    if out is None or not out.exists():
        return None
    if not out.is_dir():
        raise UsageError(f"--out {out} is a file; give a folder")
    state_path = out / STATE_FILE
    if not state_path.exists():
        if any(out.iterdir()):
            raise UsageError(f"--out {out} is not empty and holds no debias set ({STATE_FILE}); choose an empty or "
                             f"new folder")
        return None
    try:
        state = json.loads(state_path.read_text())
        stored = state["identity"]
    except (json.JSONDecodeError, KeyError, OSError):
        raise UsageError(f"{state_path} is damaged; move the folder away and start again") from None
    if stored != identity:
        diff = sorted(k for k in set(stored) | set(identity) if stored.get(k) != identity.get(k))
        said = ", ".join(f"{k}: {stored.get(k)!r}" for k in diff)
        raise UsageError(f"{out} holds a debias set made with other settings ({said}); use those settings to continue "
                         f"it, or choose another --out")
    most = max(len(c["accepted"]) for c in state["cells"].values())
    if most > need:
        raise UsageError(f"{out} already holds {most} images in a cell; --n must be at least {4 * most} to continue it")
    return state


# ----------------------------------------------------------------------------- main
def debias(pat, a: str, b: str, n: int = 400, out: str | Path | None = None, *, mode: str = "sample",
           top_k: int = 2, steps: int | None = None, edit_guidance: float = 0.0,
           confidence: float = DEFAULT_CONFIDENCE, min_judge_auroc: float = DEFAULT_MIN_JUDGE_AUROC,
           max_attempts: int | None = None, batch: int = 64, rank_limit: int = 4000, ranking: str = "within",
           seed: int = 0, check_judges: bool = True, fid: bool = False, fid_n_ref: int = 2000, extractor=None,
           n_boot: int = 2000, judges: tuple[AttributeJudge, AttributeJudge] | None = None,
           judge_cache: str | Path | None = None, progress: bool = False) -> DebiasResult:
    """Generate n images, n/4 in each (A, B) cell as the outside judges read them (module docstring).

    With ``out``, accepted images and the state are written there batch by batch, so an interrupted call continues
    where it stopped (the images already written count); call ``.write(out)`` on the result for the CSV, JSON and
    figure. Every check that input can fail runs before anything is generated or written."""
    t_start = time.time()
    check_settings(n, top_k, steps, confidence, min_judge_auroc, max_attempts, batch, mode, edit_guidance,
                   rank_limit, ranking, n_boot)
    base_a, base_b = base_attribute(a), base_attribute(b)
    if base_a == base_b:
        raise UsageError(f"--decouple needs two different attributes; got {a!r} and {b!r}")
    col_a, col_b = column_name(a), column_name(b)
    bad = [c for c in (col_a, col_b) if c in RESERVED or c.startswith(("target_", "p_", "source_"))]
    if bad or col_a == col_b:
        raise UsageError(f"the attributes' CSV columns would be {col_a!r} and {col_b!r}, which clash with each other "
                         f"or with the set's own columns ({', '.join(RESERVED)}); rename the attribute")
    cfg_w = float(getattr(pat.config.sample, "guidance", 0.0) or 0.0)
    if edit_guidance and cfg_w:
        raise UsageError(f"--edit-guidance {edit_guidance:g} cannot be combined with this run's classifier-free "
                         f"guidance on s (sample.guidance {cfg_w:g}); use --edit-guidance 0")
    train_ds = pat.dataset("train")
    y_a, y_b = resolve_attribute(train_ds, base_a), resolve_attribute(train_ds, base_b)
    resolve_attribute(pat.dataset("test"), base_a), resolve_attribute(pat.dataset("test"), base_b)
    for name, y in ((base_b, y_b), (base_a, y_a)):
        if y.all() or not y.any():
            raise DataError(f"every training image {'has' if y.all() else 'lacks'} {name}: it cannot be decoupled")
    need = n // 4
    pools = {v: np.random.default_rng([seed, 100, v]).permutation(np.flatnonzero(y_b == bool(v))) for v in (0, 1)}
    steps = steps or (pat.config.sample.steps if mode == "sample" else 25)
    if max_attempts is None:
        max_attempts = DEFAULT_ATTEMPTS_PER_IMAGE * need
    if mode == "inversion":  # an inversion decodes to the same image each time: one attempt per source image
        max_attempts = min(max_attempts, min(len(p) for p in pools.values()))
        if max_attempts < need:
            raise DataError(f"mode inversion tries each source image once, and only {max_attempts} training images "
                            f"have one value of {base_b}; lower --n to at most {4 * max_attempts} or use --mode sample")
    out = Path(out) if out is not None else None
    weights = getattr(pat, "weights_path", None)
    from ..runs import sha256

    identity = {"run": str(getattr(pat, "run_dir", None)), "weights_sha256": sha256(weights) if weights else None,
                "a": base_a, "b": base_b, "mode": mode, "top_k": top_k, "steps": steps,
                "edit_guidance": float(edit_guidance), "confidence": confidence, "ranking": ranking,
                "rank_limit": rank_limit, "seed": seed, "image_size": pat.config.data.image_size}
    state = _open_folder(out, identity, need)

    # the outside judges, gated on the run's clean test images
    t0 = time.time()
    if judges is None:
        judges = (make_judge(pat, base_a, y_a, judge_cache, progress), make_judge(pat, base_b, y_b, judge_cache,
                                                                                   progress))
    auc = [judge_test_auroc(pat, j, s, seed) for j, s in zip(judges, (base_a, base_b))]
    for name, v in zip((base_a, base_b), auc):
        if not v >= min_judge_auroc:
            raise UsageError(f"the judge of {name} reads it on the run's test images with AUROC {v:.3f} < "
                             f"--min-judge-auroc {min_judge_auroc:g}: it cannot confirm a cell of {name}; choose an "
                             f"attribute the images show")
    J = _Judges(judges[0], judges[1], auc[0], auc[1])
    judge_seconds = time.time() - t0

    # A's prototypes and their edit targets
    t0 = time.time()
    rank_idx = np.arange(len(train_ds))
    if len(rank_idx) > rank_limit:
        rank_idx = np.sort(np.random.default_rng(seed + 2).choice(rank_idx, rank_limit, replace=False))
    if y_a[rank_idx].all() or not y_a[rank_idx].any():
        raise DataError(f"the {len(rank_idx)} training images drawn for ranking all "
                        f"{'have' if y_a[rank_idx].all() else 'lack'} {base_a}; raise --rank-limit")
    if top_k >= pat.num_prototypes:
        raise UsageError(f"--top-k {top_k} would edit all {pat.num_prototypes} prototypes; lower --top-k")
    S = pat.encode_dataset("train", rank_idx.tolist()).s.numpy().astype(np.float64)
    chosen = choose_prototypes(S, y_a[rank_idx], y_b[rank_idx], ranking, top_k)
    own = chosen["own"]
    hi_v, lo_v = S.max(0), S.min(0)
    rank_seconds = time.time() - t0

    # generation, cell by cell in rounds of batches, resumable
    t0 = time.time()
    if state is None:
        state = {"identity": identity, "cells": {f"{ca},{cb}": {"attempts": 0, "decoded": 0, "accepted": []}
                                                 for ca, cb in CELLS}}
    targets = {j: (torch.tensor(lo_v[j], dtype=torch.float32), torch.tensor(hi_v[j], dtype=torch.float32))
               for j in own}
    done_images = _fill(pat, train_ds, state, need, pools, targets, J, (y_a, y_b), out, mode=mode, steps=steps,
                        w=float(edit_guidance), confidence=confidence, max_attempts=max_attempts, batch=batch,
                        seed=seed, progress=progress, desc=f"debias {base_a} x {base_b}")
    gen_seconds = time.time() - t0

    rows = [r for ca, cb in CELLS for r in state["cells"][f"{ca},{cb}"]["accepted"]]
    images = torch.stack([done_images[r["file"]] for r in rows]) if rows else torch.zeros(
        0, pat.config.data.channels, pat.config.data.image_size, pat.config.data.image_size)
    sources = _stack(train_ds, [r["source"] for r in rows]) if rows else images.clone()
    ja = np.array([r["a"] for r in rows], bool)
    jb = np.array([r["b"] for r in rows], bool)
    cells, unfilled = {}, []
    share = {(ca, cb): float(((y_a == ca) & (y_b == cb)).mean()) for ca, cb in CELLS}
    for ca, cb in CELLS:
        c = state["cells"][f"{ca},{cb}"]
        k = len(c["accepted"])
        cells[f"{ca},{cb}"] = {"needed": need, "accepted": k, "attempts": c["attempts"], "decoded": c["decoded"],
                               "acceptance": k / c["attempts"] if c["attempts"] else None,
                               "training_share": share[(ca, cb)],
                               "from_sources_with_target_a": sum(r["source_a"] == ca for r in c["accepted"])}
        if k < need:
            unfilled.append(f"{col_a}={ca},{col_b}={cb}")
            warnings.warn(f"cell {col_a}={ca}, {col_b}={cb} is unfilled: {k} of {need} images after {c['attempts']} "
                          f"attempts (the budget --max-attempts {max_attempts}); raise it to continue, or use "
                          f"--edit-guidance / --mode inversion", stacklevel=2)

    t0 = time.time()
    check = None
    if check_judges and rows:
        cj = (make_judge(pat, base_a, y_a, judge_cache, progress, CHECK_JUDGE_SEED),
              make_judge(pat, base_b, y_b, judge_cache, progress, CHECK_JUDGE_SEED))
        ca_p, cb_p = cj[0].probability(images), cj[1].probability(images)
        check = {**phi_interval(ca_p >= 0.5, cb_p >= 0.5, n_boot, seed),
                 "agreement_a": float(((ca_p >= 0.5) == ja).mean()), "agreement_b": float(((cb_p >= 0.5) == jb).mean()),
                 "test_auroc": [judge_test_auroc(pat, cj[0], base_a, seed), judge_test_auroc(pat, cj[1], base_b, seed)],
                 "seed": CHECK_JUDGE_SEED,
                 "note": "a second pair of judges, trained with another seed, that did not select the images"}
    check_seconds = time.time() - t0

    t0 = time.time()
    fid_report = None
    if fid:
        fid_report = _fid(pat, images, train_ds, fid_n_ref, seed, extractor, progress)
    fid_seconds = time.time() - t0
    attempts = sum(c["attempts"] for c in cells.values())
    report = {
        "a": a, "b": b, "column_a": col_a, "column_b": col_b, "n": n, "n_written": len(rows),
        "complete": not unfilled, "unfilled": unfilled, "rule": RULE, "confidence": confidence,
        "phi_judges": phi_interval(ja, jb, n_boot, seed), "phi_check_judges": check,
        "phi_training": phi(y_a, y_b),
        "acceptance": len(rows) / attempts if attempts else 0.0, "attempts": attempts, "max_attempts": max_attempts,
        "cells": cells,
        "judges": {"a": {**{k: v for k, v in J.a.meta.items() if k != "key"}, "test_auroc": J.auroc_a},
                   "b": {**{k: v for k, v in J.b.meta.items() if k != "key"}, "test_auroc": J.auroc_b},
                   "min_judge_auroc": min_judge_auroc},
        "prototypes": {"edited": [{"prototype": j, "score_a": _f(chosen["score_a"], j),
                                   "score_b": _f(chosen["score_b"], j), "auroc": float(chosen["plain"][j]),
                                   "raise_to": float(hi_v[j]), "lower_to": float(lo_v[j])} for j in own],
                       "excluded_for_reading_b": [{"prototype": j, "score_a": _f(chosen["score_a"], j),
                                                   "score_b": _f(chosen["score_b"], j)} for j in chosen["excluded"]],
                       "ranking": chosen["ranking"], "ranked_on": f"{len(rank_idx)} training images of the run"},
        "mode": mode, "steps": steps, "edit_guidance": float(edit_guidance),
        "sampler": pat.config.sample.sampler if mode == "sample" else pat.decode_sampler,
        "top_k": top_k, "seed": seed, "run": identity["run"], "weights_sha256": identity["weights_sha256"],
        "fid": fid_report,
        "files": {"images": "images/a{A}_b{B}_{k}.png", "attributes": "attributes.csv (split = train)",
                  "load_with": f"--dataset folder --data-root DIR --attributes-csv DIR/attributes.csv (columns "
                               f"{col_a}, {col_b})"},
        "seconds": {"judges": round(judge_seconds, 2), "ranking": round(rank_seconds, 2),
                    "generation": round(gen_seconds, 2), "check_judges": round(check_seconds, 2),
                    "fid": round(fid_seconds, 2), "total": round(time.time() - t_start, 2),
                    "per_attempt": round(gen_seconds / max(1, sum(c["decoded"] for c in cells.values())), 4)},
    }
    return DebiasResult(report, rows, images, sources, state)


def _reload(state: dict, out: Path | None, channels: int) -> dict[str, torch.Tensor]:
    """The images already written, by file; a cell's rows from its first missing file on are dropped and their
    attempts made again, so the set stays in attempt order."""
    done: dict[str, torch.Tensor] = {}
    for cell in state["cells"].values():
        keep = []
        for row in cell["accepted"]:
            if out is None or not (out / row["file"]).exists():
                break
            done[row["file"]] = _load_image(out / row["file"], channels)
            keep.append(row)
        if len(keep) < len(cell["accepted"]):
            cell["attempts"] = cell["decoded"] = (keep[-1]["attempt"] + 1) if keep else 0
        cell["accepted"] = keep
    return done


def _fill(pat, train_ds, state: dict, need: int, pools: dict, targets: dict, J: _Judges, labels, out: Path | None,
          *, mode: str, steps: int, w: float, confidence: float, max_attempts: int, batch: int, seed: int,
          progress: bool, desc: str) -> dict[str, torch.Tensor]:
    """Fill every cell of ``state`` to ``need`` accepted images or ``max_attempts`` attempts (module steps 2 to 4),
    in rounds: each unfilled cell gets a batch of attempts sized by its acceptance so far. Attempt j of cell c
    uses source image pools[b][(j + a * len / 2) % len] and noise seed SeedSequence([seed, c, j]), so the set
    depends on neither the batching nor the interruptions. Returns the images by file."""
    from tqdm.auto import tqdm

    from ..utils.io import write_json

    y_a, y_b = labels
    done = _reload(state, out, pat.config.data.channels)
    bar = tqdm(total=4 * need, initial=sum(min(len(c["accepted"]), need) for c in state["cells"].values()),
               desc=desc, disable=not progress, leave=False)
    while True:
        jobs = []
        for ci, (ca, cb) in enumerate(CELLS):
            cell = state["cells"][f"{ca},{cb}"]
            left, budget = need - len(cell["accepted"]), max_attempts - cell["attempts"]
            if left <= 0 or budget <= 0:
                continue
            rate = (len(cell["accepted"]) + 1) / (cell["attempts"] + 2)
            m = int(min(batch, budget, max(4, math.ceil(1.2 * left / max(rate, 0.05)))))
            pool = pools[cb]
            for j in range(cell["attempts"], cell["attempts"] + m):
                src = int(pool[(j + ca * (len(pool) // 2)) % len(pool)])
                noise = int(np.random.SeedSequence([seed, ci, j]).generate_state(1)[0] & 0x7FFFFFFF)
                jobs.append((ci, ca, cb, j, src, noise))
        if not jobs:
            break
        for i in range(0, len(jobs), batch):
            part = jobs[i:i + batch]
            x = _generate(pat, train_ds, part, targets, mode, steps, w)
            p_a, p_b = J.a.probability(x), J.b.probability(x)
            for k, (ci, ca, cb, j, src, noise) in enumerate(part):
                cell = state["cells"][f"{ca},{cb}"]
                if len(cell["accepted"]) >= need:
                    continue  # filled earlier in this batch: the attempt does not count
                cell["attempts"], cell["decoded"] = j + 1, cell["decoded"] + 1
                ok = ((p_a[k] >= confidence) if ca else (p_a[k] <= 1 - confidence)) and \
                     ((p_b[k] >= confidence) if cb else (p_b[k] <= 1 - confidence))
                if not ok:
                    continue
                row = {"file": f"images/a{ca}_b{cb}_{len(cell['accepted']):05d}.png", "split": "train",
                       "a": int(p_a[k] >= 0.5), "b": int(p_b[k] >= 0.5), "target_a": ca, "target_b": cb,
                       "p_a": float(p_a[k]), "p_b": float(p_b[k]), "source": src, "source_a": int(y_a[src]),
                       "source_b": int(y_b[src]), "seed": noise if mode == "sample" else None, "attempt": j}
                if out is not None:
                    _save_image(x[k], out / row["file"])
                done[row["file"]] = x[k]
                cell["accepted"].append(row)
                bar.update(1)
            if out is not None:
                write_json(out / STATE_FILE, state)  # after the images: a state never names a file not written
        bar.set_postfix(attempts=sum(c["attempts"] for c in state["cells"].values()))
    bar.close()
    return done


@torch.no_grad()
def _generate(pat, train_ds, jobs, targets, mode: str, steps: int, w: float) -> torch.Tensor:
    """One image per job (cell, a, b, attempt, source, noise seed), rounded to 8 bits."""
    src = [job[4] for job in jobs]
    x_src = train_ds.get_batch(src)
    s_src = pat.encode(x_src).s
    s_edit = s_src.clone()
    a = torch.tensor([job[1] for job in jobs], dtype=torch.bool)
    for j, (lo, hi) in targets.items():
        s_edit[:, j] = torch.where(a, hi, lo)
    against = s_src if w > 0 else None
    if mode == "sample":
        d = pat.config.data
        x_T = torch.stack([torch.randn((d.channels, d.image_size, d.image_size),
                                       generator=torch.Generator().manual_seed(job[5])) for job in jobs])
        out = pat.sample(s_edit, x_T=x_T, steps=steps, seed=jobs[0][5], guidance=w if w > 0 else None,
                         against=against)
    else:
        x_T = pat.invert(x_src, s_src, steps)
        out = pat.decode(x_T, s_edit, steps, guidance=w, against=against)
    return quantize(out)


def _fid(pat, images: torch.Tensor, train_ds, n_ref: int, seed: int, extractor, progress: bool) -> dict:
    """FID/KID of the set against the run's real test images, and of as many real training images (the floor)."""
    from ..evaluation.fid import InceptionFeatures, fid_kid

    n = int(images.shape[0])
    if n < 2:
        return {"skipped": f"N = {n} images: FID/KID need at least 2"}
    test_n = len(pat.dataset("test"))
    extractor = extractor or InceptionFeatures(pat.device)
    gen = fid_kid(images, pat.config.data, "test", min(n_ref, test_n), seed, progress, extractor=extractor)
    pick = np.sort(np.random.default_rng(seed + 3).choice(len(train_ds), min(n, len(train_ds)), replace=False))
    real = fid_kid(_stack(train_ds, pick), pat.config.data, "test", min(n_ref, test_n), seed, progress,
                   extractor=extractor)
    return {"fid": gen["fid"], "kid": gen["kid"], "kid_std": gen["kid_std"], "n_generated": gen["n_generated"],
            "n_reference": gen["n_reference"], "real_floor": {"fid": real["fid"], "kid": real["kid"],
                                                              "kid_std": real["kid_std"], "n": real["n_generated"],
                                                              "what": "N real training images (biased) against the "
                                                                      "same test images"},
            "small_n": gen["protocol"]["small_n"], "note": gen["protocol"]["note"],
            "feature_network": gen["protocol"]["feature_network"]}
