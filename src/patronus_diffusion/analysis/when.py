"""When a prototype emerges during generation (paper §"Trace prototype emergence"; spec §6.7).

For each image i: s_i = f(x0_i), x_T^i = DDIM-invert(x0_i, s_i), and the edit s'_i with s_J set
to a target (default max(s_X)). Decoding (x_T^i, s'_i) with DDIM eta = 0, the sampler predicts a
clean image x̂0(t) at every step; re-encoding it gives s_J(x̂0(t)). The edited and the unedited
trajectory (same x_T, condition s_i) run side by side in one batch, and

    gain_vs_unedited_J(t) = s_J(x̂0(t); s'_i) - s_J(x̂0(t); s_i)
    gain_vs_x0_J(t)       = s_J(x̂0(t); s'_i) - s_J(x0_i)

are averaged (mean +- std over images) for every step. The step at which the mean gain first reaches
half of its final value (``t_half``) summarises when the prototype appears: large t = early in
generation (coarse layout), small t = late (fine detail).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from ..edit import EditPlan, EditResult, Inverted, Reference, measure_edit, run_plan
from ..evaluation.stats import true_median
from ..utils.images import save_grid
from ..utils.io import write_json
from .figures import band_figure, figure_image, save_figure
from .results import ShowsFigure, one_line
from .tables import write_csv


@dataclass
class WhenResult(ShowsFigure):
    """When each edited prototype emerges: trajectories of s along decoding, from one traced engine run.

    t (S,) timesteps in sampling order (high to low); s_traj (S, E + 1, B, P) with condition 0 = unedited and
    condition 1 + k = edit of prototypes[k]; s_x0 (B, P); targets (K, B) the requested s'_J; final images
    (E + 1, B, C, H, W); ``result`` the engine's :class:`~.engine.EditResult` of the traced plan (images, names,
    steps, sampler, provenance)."""

    t: np.ndarray
    prototypes: list[int]
    s_traj: torch.Tensor
    s_x0: torch.Tensor
    targets: torch.Tensor
    final: torch.Tensor
    result: EditResult

    def gain_vs_unedited(self, k: int) -> torch.Tensor:
        """(S, B) s_J of the edited minus the unedited trajectory, J = prototypes[k]."""
        j = self.prototypes[k]
        return self.s_traj[:, 1 + k, :, j] - self.s_traj[:, 0, :, j]

    def gain_vs_x0(self, k: int) -> torch.Tensor:
        """(S, B) s_J of the edited trajectory minus s_J of the input image."""
        j = self.prototypes[k]
        return self.s_traj[:, 1 + k, :, j] - self.s_x0[None, :, j]

    def unedited_vs_x0(self, k: int) -> torch.Tensor:
        j = self.prototypes[k]
        return self.s_traj[:, 0, :, j] - self.s_x0[None, :, j]

    @property
    def value(self) -> str:
        """The target every prototype was set to (e.g. "max")."""
        return self.result.edits[0].ops[0].value

    def per_prototype(self) -> list[dict]:
        """Per prototype: requested rise, final gains, t_half, and the final image's faithfulness."""
        out = []
        for k, j in enumerate(self.prototypes):
            g = self.gain_vs_unedited(k).mean(1).numpy()
            edited = self.s_x0.clone().index_put_((torch.arange(self.s_x0.shape[0]), torch.tensor(j)), self.targets[k])
            f = measure_edit(self.s_x0, edited, self.s_traj[-1, 1 + k], [j])
            out.append({"prototype": j,
                        "requested_change_mean": round(float((self.targets[k] - self.s_x0[:, j]).mean()), 4),
                        "final_gain_vs_unedited_mean": round(float(g[-1]), 4),
                        "final_gain_vs_x0_mean": round(float(self.gain_vs_x0(k)[-1].mean()), 4),
                        "t_half": half_rise_timestep(self.t, g),
                        "rise_median": true_median(f["rise"], 4), "others_median": true_median(f["others"], 4),
                        "baseline": "x0"})
        return out

    def table(self) -> tuple[list[str], list[list]]:
        """when.csv: one row per (prototype, step) with mean and std of both gains and of the unedited drift."""
        header = ["prototype", "step", "t", "gain_vs_unedited_mean", "gain_vs_unedited_std", "gain_vs_x0_mean",
                  "gain_vs_x0_std", "unedited_vs_x0_mean", "unedited_vs_x0_std"]
        rows = []
        for k, j in enumerate(self.prototypes):
            a, b, c = self.gain_vs_unedited(k), self.gain_vs_x0(k), self.unedited_vs_x0(k)
            for i, t in enumerate(self.t):
                rows.append([j, i, int(t)] + [round(float(v), 5) for v in (a[i].mean(), a[i].std(unbiased=False),
                                                                             b[i].mean(), b[i].std(unbiased=False),
                                                                             c[i].mean(), c[i].std(unbiased=False))])
        return header, rows

    def __repr__(self) -> str:
        r = self.result
        halves = [row["t_half"] for row in self.per_prototype()]
        return one_line(f"WhenResult({len(r.names)} image{'s' * (len(r.names) != 1)}, prototypes {self.prototypes} "
                        f":= {self.value}, t_half {halves}, {r.sampler} {r.steps} steps)")

    def summary(self) -> str:
        """One line per prototype: its final gain against the request, t_half and rise (what `when` prints)."""
        return "\n".join(f"p{r['prototype']}: final gain {r['final_gain_vs_unedited_mean']:+.3f} (requested "
                         f"{r['requested_change_mean']:+.3f}), t_half {r['t_half']}, rise {r['rise_median']}"
                         for r in self.per_prototype())

    def figure(self):
        """when.png: the mean +- std gain of every traced prototype against t, vs the unedited trajectory and vs
        the input image."""
        per = self.per_prototype()
        curves_u, curves_x = {}, {}
        for k, j in enumerate(self.prototypes):
            a, b = self.gain_vs_unedited(k), self.gain_vs_x0(k)
            label = f"+p{j} (t_half {per[k]['t_half']})"
            curves_u[label] = (a.mean(1).numpy(), a.std(1, unbiased=False).numpy())
            curves_x[label] = (b.mean(1).numpy(), b.std(1, unbiased=False).numpy())
        return band_figure(self.t, curves_u, more=[curves_x], ylabel="s_J improvement",
                           title=f"When prototypes emerge: s_J of the predicted x0 after s_J := {self.value} "
                                 f"({len(self.result.names)} images, mean +- std, {self.result.steps} steps)",
                           ax_titles=["vs the unedited trajectory (same x_T)", "vs s_J of the input image x0"])

    def to_pil(self):
        """when.png (the emergence curves) as a PIL image."""
        return figure_image(self.figure())

    def final_image(self, upscale: int = 2):
        """The final images as a PIL grid: a row per image, columns unedited | +p_J for each traced prototype."""
        from ..utils.images import grid_image

        final = self.final  # (1 + K, B, C, H, W)
        return grid_image(final.transpose(0, 1).reshape(-1, *final.shape[2:]), nrow=final.shape[0], upscale=upscale)

    def write(self, out_dir) -> dict[str, Path]:
        """when.png (the curves), when.csv, when.json and final.png (rows: unedited, then each +p_J)."""
        r, out = self.result, Path(out_dir)
        header, rows = self.table()
        write_csv(out / "when.csv", header, rows)
        save_figure(self.figure(), out / "when.png")
        save_grid(self.final.reshape(-1, *r.x0.shape[1:]), out / "final.png", nrow=len(r.names), upscale=2)
        write_json(out / "when.json", r.meta(prototypes=self.prototypes, value=self.value,
                                             seconds=round(r.seconds, 2), per_prototype=self.per_prototype(),
                                             final_png_rows=["unedited"] + [f"+p{j}" for j in self.prototypes]))
        return {"curves": out / "when.png", "table": out / "when.csv", "results": out / "when.json",
                "final images": out / "final.png"}


def half_rise_timestep(t: np.ndarray, mean_gain: np.ndarray) -> int | None:
    """The first timestep (in sampling order) where the mean gain reaches half its final value."""
    final = float(mean_gain[-1])
    if not np.isfinite(final) or final <= 0:
        return None
    hit = np.nonzero(mean_gain >= 0.5 * final)[0]
    return int(t[hit[0]]) if hit.size else None


def default_prototypes(pat, x: torch.Tensor, k: int = 4) -> list[int]:
    """The ``k`` prototypes with the lowest mean s over the images: the largest rise when set to max(s_X)."""
    return pat.encode(x).s.mean(0).argsort()[: min(k, pat.num_prototypes)].tolist()


def emergence_of(res: EditResult) -> WhenResult:
    """The :class:`WhenResult` of a traced plan with the reconstruction (condition 0) and single-prototype edits."""
    protos = [e.prototype for e in res.edits]
    targets = torch.stack([res.s_requested[k, :, j] for k, j in enumerate(protos)])
    return WhenResult(t=res.t, prototypes=protos, s_traj=res.trajectory, s_x0=res.s, targets=targets,
                      final=torch.cat([res.reconstruction[None], res.images]), result=res)


def trace_emergence(pat, inv: Inverted, prototypes: Sequence[int], ref: Reference | None, value: str = "max",
                    steps: int | None = None, sampler: str | None = None, progress: bool = False) -> WhenResult:
    """Decode the unedited and every single-prototype edit from the same x_T in one batched call,
    recording s(x̂0(t)) at every step."""
    plan = EditPlan.emergence(inv.x0, prototypes, value, ref, steps=steps or inv.steps, sampler=sampler)
    plan.inverted = inv
    return emergence_of(run_plan(pat, plan, progress))


def run_when(pat, plan: EditPlan, progress: bool = False) -> WhenResult:
    """Run a traced plan (:meth:`EditPlan.emergence`) and read its emergence curves."""
    return emergence_of(run_plan(pat, plan, progress))
