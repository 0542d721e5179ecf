"""Edit analyses on the edit engine: edit, extrapolate, consistency, interpolate, variations.

Each analysis is a plan (a named constructor of :class:`~..edit.EditPlan`: :meth:`~..edit.EditPlan.edit`,
``sweep``, ``consistency``, ``interpolation``, ``noise_variations``; each resolves every value, so a bad one fails
before any inversion), a run (``run_*``: one :func:`~..edit.run_plan`) and a ``*Result`` around the engine's
:class:`~..edit.EditResult` (the convention of :mod:`.results`): ``write(out_dir)`` draws the figure(s), writes the
JSON/CSV files and returns them by role; ``summary()``, ``to_pil()`` (the main figure) and a one-line repr show it.
Faithfulness, as everywhere, is the one measure of :mod:`~..edit.measures` (rise, others, off-target against the
baseline each result names).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from ..edit import FAITHFULNESS_DEFINITION, WINDOW_RULE, EditPlan, EditResult, run_plan
from ..utils.images import psnr, save_grid
from ..utils.io import write_json
from .figures import Panel, crop, figure_image, panels_figure, save_figure, short_name
from .results import ShowsFigure, one_line
from .tables import write_csv


def _r(t: torch.Tensor, digits: int = 5) -> list:
    return [round(float(v), digits) for v in t]


def write_s_table(path: Path, names: Sequence[str], conditions: Sequence[str], s: torch.Tensor) -> Path:
    """s.csv: one row per (image, condition), columns s0 ... s{P-1}; s is (C, B, P)."""
    rows = [[name, cond] + [f"{v:.5f}" for v in s[c, i].tolist()]
            for i, name in enumerate(names) for c, cond in enumerate(conditions)]
    return write_csv(path, ["image", "condition"] + [f"s{j}" for j in range(s.shape[-1])], rows)


@dataclass(repr=False)
class _EditAnalysis(ShowsFigure):
    """What the five edit analyses share: the engine's result they read (``result``), a repr that names the
    analysis, ``to_pil`` from the analysis' ``figure()``."""

    result: EditResult

    def __repr__(self) -> str:
        return one_line(type(self).__name__ + repr(self.result).removeprefix("EditResult"))

    def figure(self):  # pragma: no cover - every analysis draws its own
        raise NotImplementedError

    def to_pil(self):
        """The analysis' main figure (the PNG ``write`` saves first) as a PIL image."""
        return figure_image(self.figure())


# ------------------------------------------------------------------------------ edit
@dataclass(repr=False)
class EditsResult(_EditAnalysis):
    """`patronus edit`: several edits of every image next to its reconstruction."""

    def records(self) -> list[dict]:
        r = self.result
        return [{"edit": e.label, "operations": [str(o) for o in e.ops],
                 **({"window": {"t_over_T": list(e.window), "rule": WINDOW_RULE}} if e.window is not None else {}),
                 "requested": {str(o.prototype): _r(r.s_requested[k, :, o.prototype]) for o in e.ops},
                 "reached": {str(o.prototype): _r(r.s_after[k, :, o.prototype]) for o in e.ops},
                 "faithfulness": r.faithfulness(k)} for k, e in enumerate(r.edits)]

    def summary(self) -> str:
        """One line per edit: its median rise and the median change of the other prototypes."""
        return "\n".join(f"{e['edit']}: median rise {e['faithfulness']['rise_median']}, median change of others "
                         f"{e['faithfulness']['others_median']}" for e in self.records())

    def to_json(self) -> dict:
        """edits.json: the run's provenance, reconstruction PSNR and every edit's request, reach and faithfulness."""
        r = self.result
        return r.meta(seconds=round(r.seconds, 2), reconstruction_psnr_db=_r(r.reconstruction_psnr(), 3),
                      faithfulness_definition=FAITHFULNESS_DEFINITION, edits=self.records())

    def figure(self):
        """edit.png: per image, input | reconstruction | each edit, the first edited prototype's best patch boxed."""
        r = self.result
        x, rec = r.x0, r.reconstruction
        rows = []
        for i, name in enumerate(r.names):
            row = [Panel(x[i], short_name(name)),
                   Panel(rec[i], f"reconstruction\nPSNR {float(psnr(rec[i:i + 1], x[i:i + 1])):.1f}")]
            for k, e in enumerate(r.edits):
                j = e.prototype
                title = (f"{e.label}\ns_{j}: {float(r.s[i, j]):.2f}->{float(r.s_after[k, i, j]):.2f} "
                         f"(asked {float(r.s_requested[k, i, j]):.2f})")
                row.append(Panel(r.images[k, i], title, r.box(k, i, j)))
            rows.append(row)
        return panels_figure(rows, cell=1.6, title="input | reconstruction | edits (red box: best patch of the first "
                                                   "edited prototype)")

    def write(self, out_dir: str | Path) -> dict[str, Path]:
        """edit.png, edit_grid.png (lossless: input, reconstruction, edits per row), edits.json and s.csv."""
        r, out = self.result, Path(out_dir)
        x, rec = r.x0, r.reconstruction
        save_figure(self.figure(), out / "edit.png")
        save_grid(torch.cat([x[None], rec[None], r.images]).transpose(0, 1).reshape(-1, *x.shape[1:]),
                  out / "edit_grid.png", nrow=len(r.edits) + 2, upscale=2)
        write_s_table(out / "s.csv", r.names, ["input", "reconstruction"] + [e.label for e in r.edits],
                      torch.cat([r.s[None], r.s_reconstruction[None], r.s_after]))
        write_json(out / "edits.json", self.to_json())
        return {"figure": out / "edit.png", "images": out / "edit_grid.png", "results": out / "edits.json",
                "s": out / "s.csv"}


def run_edit(pat, plan: EditPlan, progress: bool = False) -> EditsResult:
    return EditsResult(run_plan(pat, plan, progress))


# ------------------------------------------------------------------------------ extrapolate
@dataclass(repr=False)
class ExtrapolationResult(_EditAnalysis):
    """`patronus extrapolate`: s_J set to each of several values, prototype by prototype."""

    @property
    def prototypes(self) -> list[int]:
        return list(dict.fromkeys(e.prototype for e in self.result.edits))

    @property
    def values(self) -> list[str]:
        first = self.prototypes[0]
        return [e.ops[0].value for e in self.result.edits if e.prototype == first]

    def sweep(self) -> list[dict]:
        """Per (prototype, value): the value asked for and reached in every image, and the faithfulness."""
        r = self.result
        return [{"prototype": edit.prototype, "value": edit.ops[0].value,
                 "requested": _r(r.s_requested[e, :, edit.prototype]), "reached": _r(r.s_after[e, :, edit.prototype]),
                 "faithfulness": r.faithfulness(e)} for e, edit in enumerate(r.edits)]

    def summary(self) -> str:
        """One line per (prototype, value): the mean s asked for and reached, and the median rise."""
        lines = []
        for row in self.sweep():
            asked, got = np.mean(row["requested"]), np.mean(row["reached"])
            lines.append(f"p{row['prototype']} := {row['value']}: asked {asked:.2f}, reached {got:.2f} (mean over "
                         f"images), median rise {row['faithfulness']['rise_median']}")
        return "\n".join(lines)

    def to_json(self) -> dict:
        r = self.result
        return r.meta(prototypes=self.prototypes, values=self.values, seconds=round(r.seconds, 2),
                      s_x0={str(j): _r(r.s[:, j]) for j in self.prototypes},
                      faithfulness_definition=FAITHFULNESS_DEFINITION, sweep=self.sweep())

    def figure(self):
        """extrapolate.png: a row per (image, prototype), a column per value, the best patch boxed."""
        r, protos, tokens = self.result, self.prototypes, self.values
        nv = len(tokens)
        rows, row_labels = [], []
        for i, name in enumerate(r.names):
            for a, j in enumerate(protos):
                row = []
                for b, tok in enumerate(tokens):
                    e = a * nv + b
                    row.append(Panel(r.images[e, i], f"s_{j}={float(r.s_requested[e, i, j]):.2f} ({tok})\n"
                                                     f"got {float(r.s_after[e, i, j]):.2f}", r.box(e, i, j)))
                rows.append(row)
                row_labels.append(f"{short_name(name)}\np{j} (s={float(r.s[i, j]):.2f})")
        return panels_figure(rows, row_labels=row_labels, cell=1.5,
                             title=f"extrapolation: s_J set to each value (max(s_X) = {r.reference.max:.2f}), decoded "
                                   f"from the inverted x_T")

    def write(self, out_dir: str | Path) -> dict[str, Path]:
        """extrapolate.png, extrapolate_grid.png (lossless) and extrapolate.json."""
        r, out = self.result, Path(out_dir)
        x, nv = r.x0, len(self.values)
        save_figure(self.figure(), out / "extrapolate.png")
        save_grid(r.images.reshape(len(self.prototypes), nv, len(r.names), *x.shape[1:]).permute(2, 0, 1, 3, 4, 5)
                  .reshape(-1, *x.shape[1:]), out / "extrapolate_grid.png", nrow=nv, upscale=2)
        write_json(out / "extrapolate.json", self.to_json())
        return {"figure": out / "extrapolate.png", "images": out / "extrapolate_grid.png",
                "results": out / "extrapolate.json"}


def run_extrapolate(pat, plan: EditPlan, progress: bool = False) -> ExtrapolationResult:
    return ExtrapolationResult(run_plan(pat, plan, progress))


# ------------------------------------------------------------------------------ consistency
@dataclass(repr=False)
class ConsistencyResult(_EditAnalysis):
    """`patronus consistency`: one value for s_J on every image; the same concept should appear in each box."""

    @property
    def value(self) -> str:
        return self.result.edits[0].ops[0].value if self.result.edits else ""

    def per_prototype(self) -> list[dict]:
        r = self.result
        return [{"prototype": e.prototype, "value": e.ops[0].value,
                 "requested": round(float(r.s_requested[a, 0, e.prototype]), 5),
                 "boxes": [list(b) for b in r.boxes(a, e.prototype)], "reached": _r(r.s_after[a, :, e.prototype]),
                 "faithfulness": r.faithfulness(a)} for a, e in enumerate(r.edits)]

    def summary(self) -> str:
        """One line per prototype: the value, the mean s reached over the images and the median rise."""
        return "\n".join(f"p{p['prototype']} := {p['value']} ({p['requested']:.2f}) on {len(p['reached'])} images: "
                         f"reached {np.mean(p['reached']):.2f} on average, median rise "
                         f"{p['faithfulness']['rise_median']}" for p in self.per_prototype())

    def to_json(self) -> dict:
        r = self.result
        return r.meta(seconds=round(r.seconds, 2), faithfulness_definition=FAITHFULNESS_DEFINITION,
                      prototypes=self.per_prototype())

    def figure(self):
        """consistency.png: the inputs, then per prototype the edited images (best patch boxed) and the patches."""
        r = self.result
        n = len(r.names)
        rows = [[Panel(r.x0[i], short_name(name)) for i, name in enumerate(r.names)]]
        labels = ["input x0"]
        for a, e in enumerate(r.edits):
            j = e.prototype
            boxes = r.boxes(a, j)
            rows.append([Panel(r.images[a, i], f"s_{j}: {float(r.s[i, j]):.2f}->{float(r.s_after[a, i, j]):.2f}",
                               boxes[i]) for i in range(n)])
            rows.append([Panel(crop(r.images[a, i], boxes[i]), f"patch p{j}") for i in range(n)])
            labels += [f"add p{j}", f"vis p{j}"]
        return panels_figure(rows, row_labels=labels, cell=1.5,
                             title=f"consistency: s_J := {self.value} on every image; the same concept should appear "
                                   f"in each box")

    def write(self, out_dir: str | Path) -> dict[str, Path]:
        """consistency.png and consistency.json."""
        out = Path(out_dir)
        save_figure(self.figure(), out / "consistency.png")
        write_json(out / "consistency.json", self.to_json())
        return {"figure": out / "consistency.png", "results": out / "consistency.json"}


def run_consistency(pat, plan: EditPlan, progress: bool = False) -> ConsistencyResult:
    return ConsistencyResult(run_plan(pat, plan, progress))


# ------------------------------------------------------------------------------ interpolate
@dataclass(repr=False)
class InterpolationResult(_EditAnalysis):
    """`patronus interpolate`: two images' s and x_T interpolated, the ends checked against the reconstructions."""

    @property
    def endpoint_diff(self) -> list[float]:
        """max |x_hat(alpha) - reconstruction| at alpha = 0 (vs A) and alpha = 1 (vs B)."""
        r = self.result
        return [float((r.path[0] - r.reconstruction[0]).abs().max()),
                float((r.path[-1] - r.reconstruction[1]).abs().max())]

    def __repr__(self) -> str:
        r = self.result
        a, b = (short_name(n) for n in r.names)
        return one_line(f"InterpolationResult({a} -> {b}, {len(r.plan.alphas)} points, endpoints within "
                        f"{max(self.endpoint_diff):.1e} of the reconstructions, {r.sampler} {r.steps} steps)")

    def summary(self) -> str:
        """The endpoints against the reconstructions, and how far s moves from A towards B along the path."""
        r = self.result
        to_b = (r.s_path - r.s[1]).abs().mean(1)
        d = self.endpoint_diff
        return (f"endpoints vs reconstructions: max |diff| {d[0]:.2e}, {d[1]:.2e}\n"
                f"{len(r.plan.alphas)} points; mean |s - s_B| reached: " + ", ".join(f"{float(v):.3f}" for v in to_b))

    def to_json(self) -> dict:
        r = self.result
        return r.meta(seconds=round(r.seconds, 2), alphas=list(r.plan.alphas),
                      endpoint_max_abs_diff_to_reconstruction=self.endpoint_diff,
                      reconstruction_psnr_db=_r(r.reconstruction_psnr(), 3),
                      mean_abs_s_distance_to_A=_r((r.s_path - r.s[0]).abs().mean(1)),
                      mean_abs_s_distance_to_B=_r((r.s_path - r.s[1]).abs().mean(1)),
                      s_requested=[_r(v) for v in r.s_path_requested], s_reached=[_r(v) for v in r.s_path])

    def figure(self):
        """interpolate.png: A, every point of the path, B."""
        r = self.result
        x, imgs, names = r.x0, r.path, r.names
        row = [Panel(x[0], f"A {short_name(names[0])}")] + [Panel(imgs[k], f"alpha={a:.2f}")
                                                            for k, a in enumerate(r.plan.alphas)] \
            + [Panel(x[1], f"B {short_name(names[1])}")]
        return panels_figure([row], cell=1.3, title="interpolation: s = lerp(s_A, s_B), x_T = slerp(x_T^A, x_T^B); "
                                                    "ends = reconstructions")

    def write(self, out_dir: str | Path) -> dict[str, Path]:
        """interpolate.png, interpolate_strip.png (lossless) and interpolate.json."""
        r, out = self.result, Path(out_dir)
        x = r.x0
        save_figure(self.figure(), out / "interpolate.png")
        save_grid(torch.cat([x[:1], r.path, x[1:]]), out / "interpolate_strip.png", nrow=len(r.plan.alphas) + 2,
                  upscale=2)
        write_json(out / "interpolate.json", self.to_json())
        return {"figure": out / "interpolate.png", "strip": out / "interpolate_strip.png",
                "results": out / "interpolate.json"}


def run_interpolate(pat, plan: EditPlan, progress: bool = False) -> InterpolationResult:
    return InterpolationResult(run_plan(pat, plan, progress))


# ------------------------------------------------------------------------------ variations
@dataclass(repr=False)
class VariationsResult(_EditAnalysis):
    """`patronus variations`: each image's s decoded from its inverted x_T and from k random x_T."""

    def __repr__(self) -> str:
        r = self.result
        k = r.variations.shape[1]
        return one_line(f"VariationsResult({len(r.names)} image{'s' * (len(r.names) != 1)} x {k} variations, "
                        f"reconstruction PSNR {float(r.reconstruction_psnr().mean()):.1f} dB, {r.sampler} "
                        f"{r.steps} steps)")

    def summary(self) -> str:
        """One line per image: the reconstruction's PSNR and how far the variations' s move from the image's."""
        r = self.result
        p = r.reconstruction_psnr()
        change = (r.s_variations - r.s[:, None]).abs().mean(2)
        return "\n".join(f"{name}: reconstruction PSNR {float(p[i]):.1f} dB; variations' mean |s - s(x0)| "
                         + ", ".join(f"{float(v):.3f}" for v in change[i]) for i, name in enumerate(r.names))

    def to_json(self) -> dict:
        r = self.result
        var, s_var = r.variations, r.s_variations
        return r.meta(k=var.shape[1], seconds=round(r.seconds, 2),
                      reconstruction_psnr_db=_r(r.reconstruction_psnr(), 3),
                      reconstruction_mean_abs_s_change=_r((r.s_reconstruction - r.s).abs().mean(1)),
                      variation_mean_abs_s_change=[_r(v) for v in (s_var - r.s[:, None]).abs().mean(2)],
                      variation_pixel_std=_r(var.std(1).flatten(1).mean(1)),
                      noise="x_T ~ N(0, I) from torch.Generator().manual_seed(seed)")

    def figure(self):
        """variations.png: per image, input | reconstruction | each variation with its change of s."""
        r = self.result
        x, rec, var, s_var = r.x0, r.reconstruction, r.variations, r.s_variations
        p = r.reconstruction_psnr()
        rows = []
        for i, name in enumerate(r.names):
            rows.append([Panel(x[i], short_name(name)),
                         Panel(rec[i], f"recon (x_T inverted)\nPSNR {float(p[i]):.1f} dB")]
                        + [Panel(var[i, m], f"random x_T #{m}\n|ds|={float((s_var[i, m] - r.s[i]).abs().mean()):.3f}")
                           for m in range(var.shape[1])])
        return panels_figure(rows, cell=1.5, title="variations: the same s decoded from the inverted x_T "
                                                   "(reconstruction) and from random x_T")

    def write(self, out_dir: str | Path) -> dict[str, Path]:
        """variations.png, variations_grid.png (lossless) and variations.json."""
        r, out = self.result, Path(out_dir)
        x, var = r.x0, r.variations
        save_figure(self.figure(), out / "variations.png")
        save_grid(torch.cat([x[:, None], r.reconstruction[:, None], var], 1).reshape(-1, *x.shape[1:]),
                  out / "variations_grid.png", nrow=var.shape[1] + 2, upscale=2)
        write_json(out / "variations.json", self.to_json())
        return {"figure": out / "variations.png", "images": out / "variations_grid.png",
                "results": out / "variations.json"}


def run_variations(pat, plan: EditPlan, progress: bool = False) -> VariationsResult:
    return VariationsResult(run_plan(pat, plan, progress))
