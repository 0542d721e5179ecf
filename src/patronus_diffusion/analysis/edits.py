"""Edit analyses on the edit engine: edit, extrapolate, consistency, interpolate, variations.

Each analysis is a plan (a named constructor of :class:`~..edit.EditPlan`: :meth:`~..edit.EditPlan.edit`,
``sweep``, ``consistency``, ``interpolation``, ``noise_variations``; each resolves every value, so a bad one fails
before any inversion), a run (``run_*``: one :func:`~..edit.run_plan`) and a report whose ``write(out_dir)``
draws the figure(s), writes the JSON/CSV files and returns them by role. Faithfulness, as everywhere, is the one
measure of :mod:`~..edit.measures` (rise, others, off-target against the baseline each result names).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import torch

from ..edit import FAITHFULNESS_DEFINITION, WINDOW_RULE, EditPlan, EditResult, run_plan
from ..utils.images import psnr, save_grid
from ..utils.io import write_json
from .figures import Panel, crop, save_panels, short_name
from .tables import write_csv


def _r(t: torch.Tensor, digits: int = 5) -> list:
    return [round(float(v), digits) for v in t]


def write_s_table(path: Path, names: Sequence[str], conditions: Sequence[str], s: torch.Tensor) -> Path:
    """s.csv: one row per (image, condition), columns s0 ... s{P-1}; s is (C, B, P)."""
    rows = [[name, cond] + [f"{v:.5f}" for v in s[c, i].tolist()]
            for i, name in enumerate(names) for c, cond in enumerate(conditions)]
    return write_csv(path, ["image", "condition"] + [f"s{j}" for j in range(s.shape[-1])], rows)


# ------------------------------------------------------------------------------ edit
@dataclass
class EditReport:
    result: EditResult

    def records(self) -> list[dict]:
        r = self.result
        return [{"edit": e.label, "operations": [str(o) for o in e.ops],
                 **({"window": {"t_over_T": list(e.window), "rule": WINDOW_RULE}} if e.window is not None else {}),
                 "requested": {str(o.prototype): _r(r.s_requested[k, :, o.prototype]) for o in e.ops},
                 "reached": {str(o.prototype): _r(r.s_after[k, :, o.prototype]) for o in e.ops},
                 "faithfulness": r.faithfulness(k)} for k, e in enumerate(r.edits)]

    def write(self, out_dir: str | Path) -> dict[str, Path]:
        r, out = self.result, Path(out_dir)
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
        save_panels(rows, out / "edit.png", cell=1.6, title="input | reconstruction | edits (red box: best patch of "
                                                             "the first edited prototype)")
        save_grid(torch.cat([x[None], rec[None], r.images]).transpose(0, 1).reshape(-1, *x.shape[1:]),
                  out / "edit_grid.png", nrow=len(r.edits) + 2, upscale=2)
        write_s_table(out / "s.csv", r.names, ["input", "reconstruction"] + [e.label for e in r.edits],
                      torch.cat([r.s[None], r.s_reconstruction[None], r.s_after]))
        write_json(out / "edits.json", r.meta(seconds=round(r.seconds, 2),
                                              reconstruction_psnr_db=_r(r.reconstruction_psnr(), 3),
                                              faithfulness_definition=FAITHFULNESS_DEFINITION,
                                              edits=self.records()))
        return {"figure": out / "edit.png", "images": out / "edit_grid.png", "results": out / "edits.json",
                "s": out / "s.csv"}


def run_edit(pat, plan: EditPlan, progress: bool = False) -> EditReport:
    return EditReport(run_plan(pat, plan, progress))


# ------------------------------------------------------------------------------ extrapolate
@dataclass
class ExtrapolationReport:
    result: EditResult

    @property
    def prototypes(self) -> list[int]:
        return list(dict.fromkeys(e.prototype for e in self.result.edits))

    @property
    def values(self) -> list[str]:
        first = self.prototypes[0]
        return [e.ops[0].value for e in self.result.edits if e.prototype == first]

    def write(self, out_dir: str | Path) -> dict[str, Path]:
        r, out = self.result, Path(out_dir)
        x, protos, tokens = r.x0, self.prototypes, self.values
        nv = len(tokens)
        rows, row_labels, results = [], [], []
        for i, name in enumerate(r.names):
            for a, j in enumerate(protos):
                row = []
                for b, tok in enumerate(tokens):
                    e = a * nv + b
                    row.append(Panel(r.images[e, i], f"s_{j}={float(r.s_requested[e, i, j]):.2f} ({tok})\n"
                                                     f"got {float(r.s_after[e, i, j]):.2f}", r.box(e, i, j)))
                rows.append(row)
                row_labels.append(f"{short_name(name)}\np{j} (s={float(r.s[i, j]):.2f})")
        for e, edit in enumerate(r.edits):
            j = edit.prototype
            results.append({"prototype": j, "value": edit.ops[0].value, "requested": _r(r.s_requested[e, :, j]),
                            "reached": _r(r.s_after[e, :, j]), "faithfulness": r.faithfulness(e)})
        save_panels(rows, out / "extrapolate.png", row_labels=row_labels, cell=1.5,
                    title=f"extrapolation: s_J set to each value (max(s_X) = {r.reference.max:.2f}), decoded from "
                          f"the inverted x_T")
        save_grid(r.images.reshape(len(protos), nv, len(r.names), *x.shape[1:]).permute(2, 0, 1, 3, 4, 5)
                  .reshape(-1, *x.shape[1:]), out / "extrapolate_grid.png", nrow=nv, upscale=2)
        write_json(out / "extrapolate.json", r.meta(prototypes=protos, values=tokens, seconds=round(r.seconds, 2),
                                                    s_x0={str(j): _r(r.s[:, j]) for j in protos},
                                                    faithfulness_definition=FAITHFULNESS_DEFINITION, sweep=results))
        return {"figure": out / "extrapolate.png", "images": out / "extrapolate_grid.png",
                "results": out / "extrapolate.json"}


def run_extrapolate(pat, plan: EditPlan, progress: bool = False) -> ExtrapolationReport:
    return ExtrapolationReport(run_plan(pat, plan, progress))


# ------------------------------------------------------------------------------ consistency
@dataclass
class ConsistencyReport:
    result: EditResult

    def write(self, out_dir: str | Path) -> dict[str, Path]:
        r, out = self.result, Path(out_dir)
        n = len(r.names)
        rows = [[Panel(r.x0[i], short_name(name)) for i, name in enumerate(r.names)]]
        labels, results = ["input x0"], []
        value = r.edits[0].ops[0].value if r.edits else ""
        for a, e in enumerate(r.edits):
            j = e.prototype
            boxes = r.boxes(a, j)
            rows.append([Panel(r.images[a, i], f"s_{j}: {float(r.s[i, j]):.2f}->{float(r.s_after[a, i, j]):.2f}",
                               boxes[i]) for i in range(n)])
            rows.append([Panel(crop(r.images[a, i], boxes[i]), f"patch p{j}") for i in range(n)])
            labels += [f"add p{j}", f"vis p{j}"]
            results.append({"prototype": j, "value": e.ops[0].value,
                            "requested": round(float(r.s_requested[a, 0, j]), 5), "boxes": [list(b) for b in boxes],
                            "reached": _r(r.s_after[a, :, j]), "faithfulness": r.faithfulness(a)})
        save_panels(rows, out / "consistency.png", row_labels=labels, cell=1.5,
                    title=f"consistency: s_J := {value} on every image; the same concept should appear in each box")
        write_json(out / "consistency.json", r.meta(seconds=round(r.seconds, 2),
                                                    faithfulness_definition=FAITHFULNESS_DEFINITION,
                                                    prototypes=results))
        return {"figure": out / "consistency.png", "results": out / "consistency.json"}


def run_consistency(pat, plan: EditPlan, progress: bool = False) -> ConsistencyReport:
    return ConsistencyReport(run_plan(pat, plan, progress))


# ------------------------------------------------------------------------------ interpolate
@dataclass
class InterpolationReport:
    result: EditResult

    @property
    def endpoint_diff(self) -> list[float]:
        """max |x_hat(alpha) - reconstruction| at alpha = 0 (vs A) and alpha = 1 (vs B)."""
        r = self.result
        return [float((r.path[0] - r.reconstruction[0]).abs().max()),
                float((r.path[-1] - r.reconstruction[1]).abs().max())]

    def write(self, out_dir: str | Path) -> dict[str, Path]:
        r, out = self.result, Path(out_dir)
        x, imgs, names, alphas = r.x0, r.path, r.names, r.plan.alphas
        row = [Panel(x[0], f"A {short_name(names[0])}")] + [Panel(imgs[k], f"alpha={a:.2f}")
                                                            for k, a in enumerate(alphas)] \
            + [Panel(x[1], f"B {short_name(names[1])}")]
        save_panels([row], out / "interpolate.png", cell=1.3,
                    title="interpolation: s = lerp(s_A, s_B), x_T = slerp(x_T^A, x_T^B); ends = reconstructions")
        save_grid(torch.cat([x[:1], imgs, x[1:]]), out / "interpolate_strip.png", nrow=len(alphas) + 2, upscale=2)
        write_json(out / "interpolate.json", r.meta(
            seconds=round(r.seconds, 2), alphas=list(alphas),
            endpoint_max_abs_diff_to_reconstruction=self.endpoint_diff,
            reconstruction_psnr_db=_r(r.reconstruction_psnr(), 3),
            mean_abs_s_distance_to_A=_r((r.s_path - r.s[0]).abs().mean(1)),
            mean_abs_s_distance_to_B=_r((r.s_path - r.s[1]).abs().mean(1)),
            s_requested=[_r(v) for v in r.s_path_requested], s_reached=[_r(v) for v in r.s_path]))
        return {"figure": out / "interpolate.png", "strip": out / "interpolate_strip.png",
                "results": out / "interpolate.json"}


def run_interpolate(pat, plan: EditPlan, progress: bool = False) -> InterpolationReport:
    return InterpolationReport(run_plan(pat, plan, progress))


# ------------------------------------------------------------------------------ variations
@dataclass
class VariationsReport:
    result: EditResult

    def write(self, out_dir: str | Path) -> dict[str, Path]:
        r, out = self.result, Path(out_dir)
        x, rec, var, s_var = r.x0, r.reconstruction, r.variations, r.s_variations
        k = var.shape[1]
        p = r.reconstruction_psnr()
        rows = []
        for i, name in enumerate(r.names):
            rows.append([Panel(x[i], short_name(name)),
                         Panel(rec[i], f"recon (x_T inverted)\nPSNR {float(p[i]):.1f} dB")]
                        + [Panel(var[i, m], f"random x_T #{m}\n|ds|={float((s_var[i, m] - r.s[i]).abs().mean()):.3f}")
                           for m in range(k)])
        save_panels(rows, out / "variations.png", cell=1.5,
                    title="variations: the same s decoded from the inverted x_T (reconstruction) and from random x_T")
        save_grid(torch.cat([x[:, None], rec[:, None], var], 1).reshape(-1, *x.shape[1:]),
                  out / "variations_grid.png", nrow=k + 2, upscale=2)
        write_json(out / "variations.json", r.meta(
            k=k, seconds=round(r.seconds, 2), reconstruction_psnr_db=_r(p, 3),
            reconstruction_mean_abs_s_change=_r((r.s_reconstruction - r.s).abs().mean(1)),
            variation_mean_abs_s_change=[_r(v) for v in (s_var - r.s[:, None]).abs().mean(2)],
            variation_pixel_std=_r(var.std(1).flatten(1).mean(1)),
            noise="x_T ~ N(0, I) from torch.Generator().manual_seed(seed)"))
        return {"figure": out / "variations.png", "images": out / "variations_grid.png",
                "results": out / "variations.json"}


def run_variations(pat, plan: EditPlan, progress: bool = False) -> VariationsReport:
    return VariationsReport(run_plan(pat, plan, progress))
