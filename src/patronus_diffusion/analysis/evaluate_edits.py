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
    leak per rise = median off-target / median rise                               what each unit of rise drags along
    locality   = mean |x_hat - recon| inside the receptive-field box of J's best match in x_hat
                 / mean |x_hat - recon| outside that box                          > 1 = the change sits where J looks

(the one measure of every edit: :mod:`~..edit.measures`; rise and off-target are undefined, NaN, where
|value - s_J(recon)| <= 1e-3; locality where the box covers all or none of the image.) Each is summarised
by its true median over the images, per prototype, target kind and strength; the headline numbers are true
medians over the prototypes at strength 1 (or the listed strength nearest to it) with the own-max target,
each with a percentile-bootstrap 95 % interval over the images and the count of prototypes that entered it;
the same numbers are given for the global-max target and, lowering, for the own-min target.

**The headline is the decoder's own response**: every edit is decoded unguided (w = 0). Decoding with edit
guidance, eps(s') + w (eps(s') - eps(s)), is to first order a request of (1 + w) times the change, while rise
divides by the change itself; so a guided run is reported apart, as the *amplified* row at w (own-max target,
headline strength), with its effective request (1 + w) and its leak per rise, never as the headline.

All decodes of one image set run in two batched engine calls (three with an amplified row): the
reconstruction (which fixes the values), then every prototype x target x strength edit at once, from the
cached inversion. :mod:`.edit_judges` adds what something outside the model sees of the same edits: KID of the
headline edits against real images beside the reconstructions' at matched N, and steerability by a judge.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from ..edit import Box, Edit, EditPlan, EditResult, Reference, run_plan
from ..edit.measures import (DEFINITIONS as MEASURES, LOW_RISE, MIN_CHANGE, MIN_RISE_FOR_LEAK, N_BOOT, edit_rise,
                             off_target, row_numbers)
from ..evaluation.stats import true_median
from ..utils.errors import UsageError
from ..utils.io import write_json
from .figures import Panel, panels_figure, save_figure, short_name
from .results import ShowsFigure
from .tables import write_csv

DEFAULT_STRENGTHS = (0.25, 0.5, 1.0, 1.5)
TARGET_KINDS = ("own_max", "global_max", "own_min")
DEFINITIONS = {
    "value": "s_J(recon) + strength * (target - s_J(recon)); recon = the unedited image decoded from the same x_T",
    "baseline": "recon (s of the unedited decode from the same x_T: the inversion error is not charged to the edit)",
    "own_max": "target = max over the reference set X of s_J",
    "global_max": "target = max(s_X), the largest entry of s over X (the paper's max)",
    "own_min": "target = min over the reference set X of s_J (lowering J)",
    "rise": "(s_J(edited) - s_J(recon)) / (value - s_J(recon)); null where |value - s_J(recon)| <= 1e-3",
    "off_target": "mean over k != J of |s_k(edited) - s_k(recon)|, divided by |value - s_J(recon)|",
    "leak_per_rise": "median off-target / median rise (the off-target change per unit of rise); null where the median "
                     f"rise is below {MIN_RISE_FOR_LEAK:g}",
    "locality": "mean |edited - recon| inside the receptive-field box of J's best match in the edited image, "
                "divided by the mean outside it",
    "medians": "true medians (mean of the two middle values for an even count) over images per prototype, target "
               "kind and strength; top-level medians over the prototypes at the headline strength (n_prototypes "
               "counts those with a defined median); intervals: percentile bootstrap over the images (95 %, "
               f"{N_BOOT} draws, seeded)",
    "headline": "the decoder's own response: every edit decoded unguided (edit guidance w = 0)",
    "amplified": "the own-max edits at the headline strength decoded with edit guidance eps(s') + w (eps(s') - "
                 "eps(s)): to first order a request of (1 + w) times the change (effective_request), so its rise is "
                 "an amplified figure; rise_per_effective_request = rise / (1 + w)",
    "measures": MEASURES,
}


# ------------------------------------------------------------------------------ the measures
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
    """True median of the defined (non-NaN) entries, rounded; None when there is none or it is infinite."""
    return true_median(t, 4)


def _values(t: torch.Tensor) -> list:
    return [round(float(v), 4) if math.isfinite(v) else None for v in t.flatten().tolist()]


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
    """w of the *amplified* row (None: the run's sample.edit_guidance; 0: no amplified row). Every headline edit
    is decoded unguided whatever this says."""
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
        if self.edit_guidance is not None and not (math.isfinite(self.edit_guidance) and self.edit_guidance >= 0):
            raise UsageError(f"the amplified row's edit guidance must be a number >= 0, got {self.edit_guidance}")


@dataclass
class EditEvaluation(ShowsFigure):
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
    _rows: dict = field(default_factory=dict)  # row numbers already computed (:meth:`_numbers`)
    realism: dict | None = None
    """KID of the headline edits and of the reconstructions against real images at matched N, when measured
    (:func:`.edit_judges.measure_realism`): a rise bought with artefacts shows here."""
    steerability: dict | None = None
    """Per class, the share of images an independent judge reads as that class after its top prototypes are
    raised (:func:`.edit_judges.class_steerability`), when measured."""
    amplified: EditResult | None = None
    """The own-max edits at the headline strength decoded with edit guidance ``amplified_w`` (None: not run)."""
    amplified_w: float = 0.0
    amplified_rise: torch.Tensor | None = None
    amplified_off_target: torch.Tensor | None = None

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

    def _numbers(self, key, rise: torch.Tensor, off: torch.Tensor) -> dict:
        """:func:`~..edit.measures.row_numbers` of a row, slow prototypes named by id; computed once (bootstraps)."""
        if key not in self._rows:
            row = row_numbers(rise, off, self.plan.seed)
            row["prototypes_below_0.2"] = [self.prototypes[a] for a in row.pop("prototype_positions_below_0.2")]
            self._rows[key] = row
        return dict(self._rows[key])

    def _row(self, k: int) -> dict:
        return self._numbers(k, self.rise[:, k, self.headline], self.off_target[:, k, self.headline])

    def amplified_row(self) -> dict | None:
        """The guided row: its numbers, the effective request (1 + w) and the rise per effective request."""
        if self.amplified is None:
            return None
        w = self.amplified_w
        row = self._numbers(("amplified", w), self.amplified_rise, self.amplified_off_target)
        rise = row["median_rise"]
        return {"edit_guidance": w, "target": "own_max", "strength": self.strengths[self.headline],
                "effective_request": round(1 + w, 4),
                "median_rise_per_effective_request": None if rise is None else round(rise / (1 + w), 4), **row}

    def to_json(self) -> dict:
        """edits_eval.json: the headline and other rows with intervals, every prototype's numbers, the settings."""
        per = self.per_prototype()
        r = self.result
        settings = {"run": r.run, "images": r.names, "n_images": len(r.names), "seed": self.plan.seed,
                    "steps": r.steps, "sampler": r.sampler, "guidance": r.plan.guidance,
                    "edit_guidance": 0.0, "amplified_edit_guidance": self.amplified_w if self.amplified else None,
                    "baseline": "recon", "prototypes": self.prototypes,
                    "strengths": self.strengths, "headline_strength": self.strengths[self.headline],
                    "swept_target_kinds": list(self.kinds if self.plan.swept is None else self.plan.swept),
                    "headline_target": "own_max", "target_kinds": list(self.kinds),
                    "reference": r.reference.to_json(), "min_change": MIN_CHANGE, "definitions": DEFINITIONS}
        head = self._row(0)
        out = {"headline": "the decoder's own response: unguided (w = 0), own-max target, strength "
                           f"{self.strengths[self.headline]:g}, true medians over prototypes of medians over images",
               **head, "median_locality": true_median([p["locality_median"] for p in per], 4)}
        for name, key in (("global_max", "global_max"), ("own_min", "lower")):
            if name in self.kinds:
                row = self._row(self.kinds.index(name))
                out |= {f"median_rise_{key}": row["median_rise"], f"median_off_target_{key}": row["median_off_target"],
                        name: row}
        out["amplified"] = self.amplified_row()
        if self.realism is not None:
            out["realism"] = self.realism
        if self.steerability is not None:
            out["steerability"] = self.steerability
        return out | {"per_prototype": per, "settings": settings, "seconds": round(self.seconds, 2)}

    def summary(self) -> str:
        """The printout (:meth:`lines`) as one text."""
        return "\n".join(self.lines())

    def lines(self) -> list[str]:
        """The printout: the headline with intervals and counts, the other targets, the amplified row, realism."""
        s = self.to_json()

        def ci(v):
            return "" if v is None else f" [{v[0]:.4f}, {v[1]:.4f}]"

        def num(v):
            return "n/a" if v is None else f"{v:.4f}"

        out = [f"headline (decoder's own, w = 0; strength {s['settings']['headline_strength']:g}, own max over X; "
               f"{s['n_prototypes']} prototypes x {s['n_images']} images, 95 % bootstrap intervals over images):",
               f"  median rise {num(s['median_rise'])}{ci(s['median_rise_ci95'])}, median off-target "
               f"{num(s['median_off_target'])}{ci(s['median_off_target_ci95'])}, leak per rise "
               f"{num(s['leak_per_rise'])}{ci(s['leak_per_rise_ci95'])}, median locality {num(s['median_locality'])}",
               f"  prototypes with median rise < {LOW_RISE:g}: {s['n_prototypes_below_0.2']} "
               f"{s['prototypes_below_0.2'] or ''}".rstrip()]
        for name, what in (("global_max", "raised to max(s_X) (the paper's target)"),
                           ("own_min", "lowered to own min over X")):
            if name in s:
                row = s[name]
                out.append(f"{what}: median rise {num(row['median_rise'])}{ci(row['median_rise_ci95'])}, median "
                           f"off-target {num(row['median_off_target'])}{ci(row['median_off_target_ci95'])} "
                           f"({row['n_prototypes']} prototypes)")
        amp = s["amplified"]
        if amp:
            out.append(f"amplified (edit guidance w = {amp['edit_guidance']:g}, effective request "
                       f"{amp['effective_request']:g}x the change; not the decoder's own): median rise "
                       f"{num(amp['median_rise'])}{ci(amp['median_rise_ci95'])} ({num(amp['median_rise_per_effective_request'])} "
                       f"per effective request), off-target {num(amp['median_off_target'])}, leak per rise "
                       f"{num(amp['leak_per_rise'])}")
        if self.realism:
            e, rec = self.realism["edited"], self.realism["reconstruction"]
            out.append(f"realism (KID x 1e3 against {rec['n_reference']} test images, N = {rec['n']} each): edited "
                       f"{1e3 * e['kid_median']:.2f} (median of {e['rounds']} rounds, range {1e3 * e['kid_min']:.2f} "
                       f"... {1e3 * e['kid_max']:.2f}), reconstructions {1e3 * rec['kid']:.2f} +- "
                       f"{1e3 * rec['kid_std']:.2f}")
        st = self.steerability
        if st and st.get("per_class"):
            worst = sorted(st["per_class"], key=lambda r: r["steerability"] if r["steerability"] is not None else 2)
            out.append(f"steerability by the outside judge (a class's top {st['top_k']} prototypes raised to their own "
                       f"max on images it reads as another class): median over classes {num(st['median'])}, pooled "
                       f"{num(st['pooled'])} +- {num(st['pooled_standard_error'])} ({st['n_steered']} of "
                       f"{st['n_edits']}); lowest " + ", ".join(f"{r['name']} {num(r['steerability'])}"
                                                            for r in worst[:3]))
        return out

    def write(self, out_dir: str | Path) -> dict[str, Path]:
        """edits_eval.json, edits_eval.csv (prototype x target kind x strength) and edits_eval.png."""
        out = Path(out_dir)
        summary = self.to_json()
        write_json(out / "edits_eval.json", summary)
        rows = [[p["prototype"], row["target_kind"], row["strength"], row["target"],
                 *("" if row[c] is None else row[c] for c in ("rise_median", "off_target_median", "locality_median"))]
                for p in summary["per_prototype"] for row in p["sweep"]]
        write_csv(out / "edits_eval.csv", ["prototype", "target_kind", "strength", "target", "rise_median",
                                           "off_target_median", "locality_median"], rows)
        self.figure(out / "edits_eval.png")
        return {"results": out / "edits_eval.json", "table": out / "edits_eval.csv", "figure": out / "edits_eval.png"}

    def __repr__(self) -> str:
        s = self.to_json()

        def num(v):
            return "n/a" if v is None else f"{v:.3f}"

        return (f"EditEvaluation({len(self.prototypes)} prototypes x {s['n_images']} images, w = 0: rise "
                f"{num(s['median_rise'])}, off-target {num(s['median_off_target'])}, leak/rise "
                f"{num(s['leak_per_rise'])}" + (f"; amplified w={self.amplified_w:g}" if self.amplified else "") + ")")

    def to_pil(self):
        """edits_eval.png as a PIL image (:meth:`figure`)."""
        from .figures import figure_image

        return figure_image(self.figure())

    def figure(self, path: Path | None = None, n_images: int = 4, per_row: int = 15, n_strips: int = 4):
        """What the numbers mean, to look at: per image (up to ``n_images``) its reconstruction and every
        prototype raised to its own max at the headline strength (``per_row`` prototypes a row, red box = the
        best patch of p_J in the edit, title = s_J reached / asked); then, for the first image, strength strips
        of the ``n_strips`` prototypes with the largest median rise; below, median rise per prototype
        (bars: rise and off-target at the headline; or rise vs strength when several strengths ran). Saved to
        ``path`` (returned) when given, else returned as a matplotlib Figure."""
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

        fig = panels_figure(rows, row_labels=labels, cell=1.15, plot=curves if len(self.strengths) > 1 else bars,
                            title="edit evaluation: s_J := s_J(recon) + strength x (own max over X - s_J(recon)), "
                                  "decoded unguided (w = 0) from the inverted x_T; "
                                  f"first rows: every prototype at strength {self.strengths[h]:g}; "
                                  "red box = best patch of p_J; title = s_J reached (asked)")
        return fig if path is None else save_figure(fig, path)


def evaluate_edits(pat, plan: EvaluationPlan, progress: bool = False) -> EditEvaluation:
    """Run the benchmark of the module docstring: two batched engine runs from one (cached) inversion, unguided,
    and a third for the amplified row when its w (``plan.edit_guidance``, default the run's) is above 0."""
    t0 = time.time()
    plan.check(pat.num_prototypes)
    protos = list(range(pat.num_prototypes)) if plan.prototypes is None else list(plan.prototypes)
    strengths = [float(a) for a in plan.strengths]
    ref = plan.reference
    common = dict(names=plan.names, steps=plan.steps, sampler=plan.sampler, reference=ref, seed=plan.seed,
                  guidance=plan.guidance)
    base = run_plan(pat, EditPlan(images=plan.images, reconstruction=True, edit_guidance=0.0, **common), progress)
    s_rec = base.s_reconstruction
    own = ref.s[:, protos].max(0).values
    by_kind = {"own_max": own, "global_max": torch.full_like(own, ref.max), "own_min": ref.s[:, protos].min(0).values}
    kinds = tuple(plan.kinds)
    targets = torch.stack([by_kind[k] for k in kinds], 1)  # (J, K)
    headline = headline_index(strengths)
    swept = set(kinds if plan.swept is None else plan.swept)
    combos = [(a, k, s) for a in range(len(protos)) for k, kind in enumerate(kinds) for s in range(len(strengths))
              if kind in swept or s == headline]

    def edit_of(a: int, k: int, s: int) -> Edit:
        j = protos[a]
        return Edit.set(j, s_rec[:, j] + strengths[s] * (float(targets[a, k]) - s_rec[:, j]),
                        label=f"p{j} {kinds[k]} x{strengths[s]:g}")

    res = run_plan(pat, EditPlan(images=plan.images, edits=[edit_of(*c) for c in combos], inverted=base.inverted,
                                 edit_guidance=0.0, **common), progress)
    n_j, n_k, n_s, b = len(protos), len(kinds), len(strengths), plan.images.shape[0]
    rise, off, loc, req = (torch.full((n_j, n_k, n_s, b), float("nan")) for _ in range(4))
    for e, (a, k, s) in enumerate(combos):
        j = protos[a]
        value = res.s_requested[e, :, j]
        rise[a, k, s] = edit_rise(s_rec[:, j], res.s_after[e, :, j], value)
        off[a, k, s] = off_target(s_rec, res.s_after[e], j, value)
        loc[a, k, s] = locality(base.reconstruction, res.images[e], res.boxes(e, j))
        req[a, k, s] = value - s_rec[:, j]
    ev = EditEvaluation(plan=plan, prototypes=protos, strengths=strengths, targets=targets, base=base, result=res,
                        rise=rise, off_target=off, locality=loc, requested=req, seconds=0.0,
                        index={c: e for e, c in enumerate(combos)})
    w = plan.edit_guidance
    if w is None:
        w = 0.0 if plan.guidance else float(getattr(pat.config.sample, "edit_guidance", 0.0) or 0.0)
    if w > 0:
        amp = run_plan(pat, EditPlan(images=plan.images, edits=[edit_of(a, 0, headline) for a in range(n_j)],
                                     inverted=base.inverted, edit_guidance=w, **common), progress)
        ev.amplified, ev.amplified_w = amp, w
        ev.amplified_rise = torch.stack([edit_rise(s_rec[:, j], amp.s_after[a, :, j], amp.s_requested[a, :, j])
                                         for a, j in enumerate(protos)])
        ev.amplified_off_target = torch.stack([off_target(s_rec, amp.s_after[a], j, amp.s_requested[a, :, j])
                                               for a, j in enumerate(protos)])
    ev.seconds = time.time() - t0
    return ev
