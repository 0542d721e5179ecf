"""How faithful are prototype edits? A benchmark built on the edit engine (``patronus evaluate-edits``).

On N fixed, seeded images x0 with s = f(x0) and x_T = DDIM-invert(x0, s):

    recon = DDIM(x_T, s)      the unedited decode from the same x_T; s(recon) is the baseline, so the
                              inversion error is not charged to the edit

For every prototype J, targets taken over the seeded reference set X of the engine:

    own_max:    target = max_{x in X} s_J(x)       J's own plausible maximum (raise J: the headline)
    global_max: target = max(s_X)                  the largest entry of s over X (the paper's "max")
    own_min:    target = min_{x in X} s_J(x)       J's own plausible minimum (lower J: remove what it sees)

and every strength a (default 0.25, 0.5, 1, 1.5) for the swept kinds (default own_max only; the other
kinds at the headline strength alone, which halves the decodes; ``--sweep-all-targets`` sweeps every kind):

    value = s_J(recon) + a (target - s_J(recon)),   s' = s with s'_J := value,   x_hat = DDIM(x_T, s')

    rise       = (s_J(x_hat) - s_J(recon)) / (value - s_J(recon))                  1 = exactly what was asked
    off-target = mean_{k != J} |s_k(x_hat) - s_k(recon)| / |value - s_J(recon)|     0 = nothing else moved
    locality   = mean |x_hat - recon| inside the receptive-field box of J's best match in x_hat
                 / mean |x_hat - recon| outside that box                          > 1 = the change sits where J looks

(rise and off-target are undefined, NaN, where |value - s_J(recon)| <= 1e-3; locality where the box
covers all or none of the image.) Each is summarised by its median over the images, per prototype,
target kind and strength; the headline numbers are medians over the prototypes at strength 1 (or the
listed strength nearest to it) with the own-max target; ``median_rise_lower`` is the same with own_min.

All decodes of one image set run in two batched engine calls: the reconstruction (which fixes the
values), then every prototype x target x strength edit at once, from the cached inversion.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from ..utils.errors import UsageError
from ..utils.io import write_json
from .editing import Reference
from .engine import Box, Edit, EditPlan, EditResult, run_plan
from .figures import Panel, save_panels, short_name
from .tables import write_csv

DEFAULT_STRENGTHS = (0.25, 0.5, 1.0, 1.5)
TARGET_KINDS = ("own_max", "global_max", "own_min")
MIN_CHANGE = 1e-3
DEFINITIONS = {
    "value": "s_J(recon) + strength * (target - s_J(recon)); recon = the unedited image decoded from the same x_T",
    "own_max": "target = max over the reference set X of s_J",
    "global_max": "target = max(s_X), the largest entry of s over X",
    "own_min": "target = min over the reference set X of s_J (lowering J)",
    "rise": "(s_J(edited) - s_J(recon)) / (value - s_J(recon)); null where |value - s_J(recon)| <= 1e-3",
    "off_target": "mean over k != J of |s_k(edited) - s_k(recon)|, divided by |value - s_J(recon)|",
    "locality": "mean |edited - recon| inside the receptive-field box of J's best match in the edited image, "
                "divided by the mean outside it",
    "medians": "over images per prototype, target kind and strength; top-level medians over prototypes at the "
               "headline strength with the own_max target",
}


# ------------------------------------------------------------------------------ the measures
def edit_rise(s_base_j: torch.Tensor, s_edit_j: torch.Tensor, value: torch.Tensor,
              min_change: float = MIN_CHANGE) -> torch.Tensor:
    """(s_J(edited) - s_J(base)) / (value - s_J(base)) per image; NaN where the requested change is tiny."""
    req = torch.as_tensor(value, dtype=torch.float32) - s_base_j
    ok = req.abs() > min_change
    return torch.where(ok, (s_edit_j - s_base_j) / torch.where(ok, req, torch.ones_like(req)),
                       torch.full_like(req, float("nan")))


def off_target(s_base: torch.Tensor, s_edit: torch.Tensor, j: int, value: torch.Tensor,
               min_change: float = MIN_CHANGE) -> torch.Tensor:
    """mean_{k != j} |s_k(edited) - s_k(base)| / |value - s_j(base)| per image (s: (B, P)); NaN for tiny requests."""
    req = (torch.as_tensor(value, dtype=torch.float32) - s_base[:, j]).abs()
    mask = torch.ones(s_base.shape[1], dtype=torch.bool)
    mask[j] = False
    moved = (s_edit[:, mask] - s_base[:, mask]).abs().mean(1) if mask.any() else torch.zeros(s_base.shape[0])
    ok = req > min_change
    return torch.where(ok, moved / torch.where(ok, req, torch.ones_like(req)), torch.full_like(req, float("nan")))


def locality(base: torch.Tensor, edited: torch.Tensor, boxes: Sequence[Box]) -> torch.Tensor:
    """Per image: mean |edited - base| (over channels and pixels) inside its box over the mean outside it.

    Boxes are (x0, y0, x1, y1), end-exclusive. NaN where the box covers all or none of the image or
    nothing changed; inf where only the inside changed."""
    diff = (edited - base).abs().mean(1)  # (B, H, W)
    out = []
    for d, (x0, y0, x1, y1) in zip(diff, boxes):
        mask = torch.zeros_like(d, dtype=torch.bool)
        mask[y0:y1, x0:x1] = True
        if mask.all() or not mask.any():
            out.append(float("nan"))
            continue
        inside, outside = float(d[mask].mean()), float(d[~mask].mean())
        if outside > 1e-12:
            out.append(inside / outside)
        else:
            out.append(float("inf") if inside > 1e-12 else float("nan"))
    return torch.tensor(out, dtype=torch.float32)


def headline_index(strengths: Sequence[float]) -> int:
    """Index of the strength nearest to 1 (the first of a tie): the headline numbers are reported there."""
    return min(range(len(strengths)), key=lambda s: (abs(strengths[s] - 1.0), s))


def _median(t: torch.Tensor) -> float | None:
    """Median of the defined (non-NaN) entries, rounded; None when there is none or it is infinite."""
    t = t.flatten()
    t = t[~torch.isnan(t)]
    if not t.numel():
        return None
    m = float(t.median())
    return round(m, 4) if math.isfinite(m) else None


def _values(t: torch.Tensor) -> list:
    return [round(float(v), 4) if math.isfinite(v) else None for v in t.flatten().tolist()]


def _median_of(values: list) -> float | None:
    vals = [v for v in values if v is not None]
    return _median(torch.tensor(vals)) if vals else None


# ------------------------------------------------------------------------------ plan and run
@dataclass
class EvaluationPlan:
    """Images (B, C, H, W), the prototypes to evaluate (None: all), the strengths, the reference set X."""

    images: torch.Tensor
    reference: Reference
    prototypes: list[int] | None = None
    strengths: list[float] = field(default_factory=lambda: list(DEFAULT_STRENGTHS))
    names: list[str] | None = None
    steps: int | None = None
    sampler: str | None = None
    seed: int = 0
    guidance: float | None = None
    edit_guidance: float | None = None
    kinds: tuple[str, ...] = TARGET_KINDS
    """The target kinds to run (own_max first: it is the headline)."""
    swept: tuple[str, ...] | None = ("own_max",)
    """The kinds run at every strength; the others only at the headline strength (None: every kind swept)."""

    def check(self, num_prototypes: int) -> None:
        if not self.kinds or self.kinds[0] != "own_max" or not set(self.kinds) <= set(TARGET_KINDS):
            raise UsageError(f"target kinds must start with own_max and come from {TARGET_KINDS}, got {self.kinds}")
        if self.swept is not None and not set(self.swept) <= set(self.kinds):
            raise UsageError(f"swept target kinds {self.swept} must be among the run kinds {self.kinds}")
        if not self.strengths:
            raise UsageError("give at least one strength, e.g. --strengths 0.5,1")
        if not all(math.isfinite(a) for a in self.strengths):
            raise UsageError(f"strengths must be finite numbers, got {self.strengths}")
        bad = [j for j in (self.prototypes or []) if not 0 <= j < num_prototypes]
        if bad or self.prototypes == []:
            raise UsageError(f"prototype id(s) {bad or '[]'} out of range 0 ... {num_prototypes - 1}")
        if self.steps is not None and self.steps < 1:
            raise UsageError("steps must be at least 1")


@dataclass
class EditEvaluation:
    """The benchmark's numbers: rise, off_target, locality and requested (the change value - s_J(recon)) are
    (J, K, S, B) for prototype J, target kind K (``plan.kinds``), strength S and image B, NaN where that
    combination was not run (a kind outside ``plan.swept`` away from the headline strength);
    targets (J, K); ``base`` holds the reconstruction, ``result`` every edit run (``edit_index``)."""

    plan: EvaluationPlan
    prototypes: list[int]
    strengths: list[float]
    targets: torch.Tensor
    base: EditResult
    result: EditResult
    rise: torch.Tensor
    off_target: torch.Tensor
    locality: torch.Tensor
    requested: torch.Tensor
    seconds: float
    index: dict = field(default_factory=dict)
    """(prototype position, kind position, strength position) -> edit index in ``result``, for the run ones."""
    realism: dict | None = None
    """KID/FID of the headline edits and of the reconstructions against real images, when measured
    (``patronus evaluate-edits --realism``): a rise bought with artefacts shows here."""

    @property
    def headline(self) -> int:
        """Index of the strength nearest to 1 (the headline numbers are reported there)."""
        return headline_index(self.strengths)

    @property
    def kinds(self) -> tuple[str, ...]:
        return tuple(self.plan.kinds)

    def edit_index(self, a: int, k: int, s: int) -> int:
        """Where prototype position a, kind k, strength s sits in ``result`` (KeyError: it was not run)."""
        return self.index[a, k, s]

    def headline_edits(self) -> torch.Tensor:
        """Every prototype's edit at the headline strength with the own-max target: (J * B, C, H, W)."""
        h = self.headline
        return torch.cat([self.result.images[self.edit_index(a, 0, h)] for a in range(len(self.prototypes))])

    def sweep(self, a: int) -> list[dict]:
        rows = []
        for k, kind in enumerate(self.kinds):
            for s, strength in enumerate(self.strengths):
                if (a, k, s) not in self.index:
                    continue
                rows.append({"target_kind": kind, "strength": strength, "target": round(float(self.targets[a, k]), 5),
                             "requested_change_median": _median(self.requested[a, k, s]),
                             "rise_median": _median(self.rise[a, k, s]),
                             "off_target_median": _median(self.off_target[a, k, s]),
                             "locality_median": _median(self.locality[a, k, s]),
                             "rise": _values(self.rise[a, k, s]), "off_target": _values(self.off_target[a, k, s]),
                             "locality": _values(self.locality[a, k, s])})
        return rows

    def per_prototype(self) -> list[dict]:
        h, s_rec = self.headline, self.base.s_reconstruction
        out = []
        low = self.kinds.index("own_min") if "own_min" in self.kinds else None
        for a, j in enumerate(self.prototypes):
            rec = {"prototype": j, "s_recon_median": _median(s_rec[:, j]),
                   "targets": {kind: round(float(self.targets[a, k]), 5) for k, kind in enumerate(self.kinds)},
                   "rise_median": _median(self.rise[a, 0, h]),
                   "off_target_median": _median(self.off_target[a, 0, h]),
                   "locality_median": _median(self.locality[a, 0, h])}
            if low is not None:
                rec |= {"rise_lower_median": _median(self.rise[a, low, h]),
                        "off_target_lower_median": _median(self.off_target[a, low, h])}
            out.append(rec | {"sweep": self.sweep(a)})
        return out

    def summary(self) -> dict:
        per = self.per_prototype()
        r = self.result
        settings = {"run": r.run, "images": r.names, "n_images": len(r.names), "seed": self.plan.seed,
                    "steps": r.steps, "sampler": r.sampler, "guidance": r.plan.guidance,
                    "edit_guidance": r.plan.edit_guidance, "prototypes": self.prototypes,
                    "strengths": self.strengths, "headline_strength": self.strengths[self.headline],
                    "swept_target_kinds": list(self.kinds if self.plan.swept is None else self.plan.swept),
                    "headline_target": "own_max", "target_kinds": list(self.kinds),
                    "reference": r.reference.to_json(), "min_change": MIN_CHANGE, "definitions": DEFINITIONS}
        out = {"median_rise": _median_of([p["rise_median"] for p in per]),
               "median_off_target": _median_of([p["off_target_median"] for p in per]),
               "median_locality": _median_of([p["locality_median"] for p in per])}
        if "own_min" in self.kinds:
            out |= {"median_rise_lower": _median_of([p["rise_lower_median"] for p in per]),
                    "median_off_target_lower": _median_of([p["off_target_lower_median"] for p in per])}
        if self.realism is not None:
            out["realism"] = self.realism
        return out | {"per_prototype": per, "settings": settings, "seconds": round(self.seconds, 2)}

    def write(self, out_dir: str | Path) -> dict[str, Path]:
        """edits_eval.json, edits_eval.csv (prototype x target kind x strength) and edits_eval.png."""
        out = Path(out_dir)
        summary = self.summary()
        write_json(out / "edits_eval.json", summary)
        rows = [[p["prototype"], row["target_kind"], row["strength"], row["target"],
                 *("" if row[c] is None else row[c] for c in ("rise_median", "off_target_median", "locality_median"))]
                for p in summary["per_prototype"] for row in p["sweep"]]
        write_csv(out / "edits_eval.csv", ["prototype", "target_kind", "strength", "target", "rise_median",
                                           "off_target_median", "locality_median"], rows)
        self.figure(out / "edits_eval.png")
        return {"results": out / "edits_eval.json", "table": out / "edits_eval.csv", "figure": out / "edits_eval.png"}

    def figure(self, path: Path, n_images: int = 4, per_row: int = 15, n_strips: int = 4) -> Path:
        """What the numbers mean, to look at: per image (up to ``n_images``) its reconstruction and every
        prototype raised to its own max at the headline strength (``per_row`` prototypes a row, red box = the
        best patch of p_J in the edit, title = s_J reached / asked); then, for the first image, strength strips
        of the ``n_strips`` prototypes with the largest median rise; below, median rise per prototype
        (bars: rise and off-target at the headline; or rise vs strength when several strengths ran)."""
        r, base, h = self.result, self.base, self.headline
        rows, labels = [], []
        for i in range(min(n_images, len(r.names))):
            for c in range(0, len(self.prototypes), per_row):
                row = ([Panel(r.x0[i], short_name(r.names[i])), Panel(base.reconstruction[i], "reconstruction")]
                       if c == 0 else [Panel(None), Panel(None)])
                for a in range(c, min(c + per_row, len(self.prototypes))):
                    j, e = self.prototypes[a], self.edit_index(a, 0, h)
                    row.append(Panel(r.images[e, i], f"p{j}: {float(r.s_after[e, i, j]):.2f}\n"
                                                     f"(asked {float(r.s_requested[e, i, j]):.2f})", r.box(e, i, j)))
                rows.append(row)
                labels.append(short_name(r.names[i]) if c == 0 else "")
        if len(self.strengths) > 1:
            by_rise = sorted(range(len(self.prototypes)),
                             key=lambda a: -(_median(self.rise[a, 0, h]) or float("-inf")))[:n_strips]
            for a in by_rise:
                j = self.prototypes[a]
                row = [Panel(r.x0[0], short_name(r.names[0])),
                       Panel(base.reconstruction[0], f"reconstruction\ns_{j}={float(base.s_reconstruction[0, j]):.2f}")]
                for s, strength in enumerate(self.strengths):
                    e = self.edit_index(a, 0, s)
                    row.append(Panel(r.images[e, 0], f"x{strength:g}: s_{j}->{float(r.s_after[e, 0, j]):.2f}\n"
                                                     f"(asked {float(r.s_requested[e, 0, j]):.2f})", r.box(e, 0, j)))
                rows.append(row)
                labels.append(f"p{j}, x strength")

        def curves(ax):
            for a, j in enumerate(self.prototypes):
                own = [_median(self.rise[a, 0, s]) for s in range(len(self.strengths))]
                ax.plot(self.strengths, [float("nan") if v is None else v for v in own], marker="o",
                        linewidth=1.2, label=f"p{j}")
            ax.axhline(1.0, color="grey", linewidth=0.8, linestyle=":")
            ax.set_xlabel("strength (fraction of the way from s_J(recon) to J's own max over X)")
            ax.set_ylabel("median rise")
            ax.set_title("rise vs strength per prototype (grey: as requested)", fontsize=8)
            ax.grid(alpha=0.3)
            ax.legend(fontsize=6, loc="best", ncol=max(1, len(self.prototypes) // 8))

        def bars(ax):
            x = np.arange(len(self.prototypes))
            rise = [_median(self.rise[a, 0, h]) for a in range(len(self.prototypes))]
            off = [_median(self.off_target[a, 0, h]) for a in range(len(self.prototypes))]
            ax.bar(x - 0.2, [np.nan if v is None else v for v in rise], 0.4, label="median rise")
            ax.bar(x + 0.2, [np.nan if v is None else v for v in off], 0.4, label="median off-target")
            ax.axhline(1.0, color="grey", linewidth=0.8, linestyle=":")
            ax.set_xticks(x, [f"p{j}" for j in self.prototypes], fontsize=6)
            ax.set_title(f"per prototype, strength {self.strengths[h]:g}, own-max target (grey: as requested)",
                         fontsize=8)
            ax.grid(alpha=0.3, axis="y")
            ax.legend(fontsize=7)

        w = self.result.plan.edit_guidance or 0  # as resolved by the engine (the run's default when None)
        return save_panels(rows, path, row_labels=labels, cell=1.15, plot=curves if len(self.strengths) > 1 else bars,
                           title="edit evaluation: s_J := s_J(recon) + strength x (own max over X - s_J(recon)), "
                                 f"decoded from the inverted x_T{f' with edit guidance {w:g}' if w else ''}; "
                                 f"first rows: every prototype at strength {self.strengths[h]:g}; "
                                 "red box = best patch of p_J; title = s_J reached (asked)")


def evaluate_edits(pat, plan: EvaluationPlan, progress: bool = False) -> EditEvaluation:
    """Run the benchmark of the module docstring: two batched engine runs from one (cached) inversion."""
    t0 = time.time()
    plan.check(pat.num_prototypes)
    protos = list(range(pat.num_prototypes)) if plan.prototypes is None else list(plan.prototypes)
    strengths = [float(a) for a in plan.strengths]
    ref = plan.reference
    common = dict(names=plan.names, steps=plan.steps, sampler=plan.sampler, reference=ref, seed=plan.seed,
                  guidance=plan.guidance, edit_guidance=plan.edit_guidance)
    base = run_plan(pat, EditPlan(images=plan.images, reconstruction=True, **common), progress)
    s_rec = base.s_reconstruction
    own = ref.s[:, protos].max(0).values
    by_kind = {"own_max": own, "global_max": torch.full_like(own, ref.max), "own_min": ref.s[:, protos].min(0).values}
    kinds = tuple(plan.kinds)
    targets = torch.stack([by_kind[k] for k in kinds], 1)  # (J, K)
    headline = headline_index(strengths)
    swept = set(kinds if plan.swept is None else plan.swept)
    combos = [(a, k, s) for a in range(len(protos)) for k, kind in enumerate(kinds) for s in range(len(strengths))
              if kind in swept or s == headline]
    edits = [Edit.set(protos[a], s_rec[:, protos[a]] + strengths[s] * (float(targets[a, k]) - s_rec[:, protos[a]]),
                      label=f"p{protos[a]} {kinds[k]} x{strengths[s]:g}") for a, k, s in combos]
    res = run_plan(pat, EditPlan(images=plan.images, edits=edits, inverted=base.inverted, **common), progress)
    n_j, n_k, n_s, b = len(protos), len(kinds), len(strengths), plan.images.shape[0]
    rise, off, loc, req = (torch.full((n_j, n_k, n_s, b), float("nan")) for _ in range(4))
    for e, (a, k, s) in enumerate(combos):
        j = protos[a]
        value = res.s_requested[e, :, j]
        rise[a, k, s] = edit_rise(s_rec[:, j], res.s_after[e, :, j], value)
        off[a, k, s] = off_target(s_rec, res.s_after[e], j, value)
        loc[a, k, s] = locality(base.reconstruction, res.images[e], res.boxes(e, j))
        req[a, k, s] = value - s_rec[:, j]
    return EditEvaluation(plan=plan, prototypes=protos, strengths=strengths, targets=targets, base=base, result=res,
                          rise=rise, off_target=off, locality=loc, requested=req, seconds=time.time() - t0,
                          index={c: e for e, c in enumerate(combos)})
