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
from typing import Sequence

import numpy as np
import torch

from .editing import Inverted, Reference, faithfulness, resolve_value


@dataclass
class Emergence:
    """Trajectories of s along decoding: t (S,) timesteps in sampling order (high to low);
    s_traj (S, E + 1, B, P) with condition 0 = unedited and condition 1 + k = edit of prototypes[k];
    s_x0 (B, P); targets (K, B) the requested s'_J; final images (E + 1, B, C, H, W)."""

    t: np.ndarray
    prototypes: list[int]
    s_traj: torch.Tensor
    s_x0: torch.Tensor
    targets: torch.Tensor
    final: torch.Tensor

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


def half_rise_timestep(t: np.ndarray, mean_gain: np.ndarray) -> int | None:
    """The first timestep (in sampling order) where the mean gain reaches half its final value."""
    final = float(mean_gain[-1])
    if not np.isfinite(final) or final <= 0:
        return None
    hit = np.nonzero(mean_gain >= 0.5 * final)[0]
    return int(t[hit[0]]) if hit.size else None


class _TrajectoryRecorder:
    """Sampler callback: re-encodes x̂0 at every step. ``pat.decode`` runs batch chunks one after
    another, so a step index of 0 starts a new chunk; chunks are concatenated along the batch."""

    def __init__(self, network):
        self.network = network
        self.chunks: list[list[torch.Tensor]] = []
        self.t: list[int] = []

    def __call__(self, info: dict) -> None:
        if info["i"] == 0:
            self.chunks.append([])
        if len(self.chunks) == 1:
            self.t.append(int(info["t"]))
        with torch.no_grad():
            self.chunks[-1].append(self.network(info["x0"].clamp(-1, 1)).s.cpu())

    def trajectories(self) -> torch.Tensor:
        """(S, N, P) for the N decoded images in batch order."""
        return torch.cat([torch.stack(c) for c in self.chunks], dim=1)


def trace_emergence(pat, inv: Inverted, prototypes: Sequence[int], ref: Reference | None, value: str = "max",
                    steps: int | None = None, sampler: str | None = None, progress: bool = False) -> Emergence:
    """Decode the unedited and every single-prototype edit from the same x_T in one batched call,
    recording s(x̂0(t)) at every step."""
    protos = list(prototypes)
    if not protos:
        raise ValueError("give at least one prototype to trace")
    b = inv.s.shape[0]
    conds = [inv.s]
    targets = []
    for j in protos:
        v = resolve_value(value, j, ref)
        s_edit = inv.s.clone()
        s_edit[:, j] = v
        conds.append(s_edit)
        targets.append(s_edit[:, j])
    s_all = torch.stack(conds)  # (E + 1, B, P)
    e1 = s_all.shape[0]
    rec = _TrajectoryRecorder(pat.model.prototypes)
    x_T = inv.x_T.unsqueeze(0).expand(e1, *inv.x_T.shape).reshape(e1 * b, *inv.x_T.shape[1:])
    final = pat.decode(x_T, s_all.reshape(e1 * b, -1), steps=steps or inv.steps, sampler=sampler,
                       progress=progress, callback=rec).clamp(-1, 1)
    traj = rec.trajectories().reshape(len(rec.t), e1, b, -1)
    return Emergence(t=np.array(rec.t), prototypes=protos, s_traj=traj, s_x0=inv.s, targets=torch.stack(targets),
                     final=final.reshape(e1, b, *inv.x_T.shape[1:]))


def emergence_table(em: Emergence) -> tuple[list[str], list[list]]:
    """CSV rows: one per (prototype, step) with mean and std of both gains and of the unedited drift."""
    header = ["prototype", "step", "t", "gain_vs_unedited_mean", "gain_vs_unedited_std", "gain_vs_x0_mean",
              "gain_vs_x0_std", "unedited_vs_x0_mean", "unedited_vs_x0_std"]
    rows = []
    for k, j in enumerate(em.prototypes):
        a, b, c = em.gain_vs_unedited(k), em.gain_vs_x0(k), em.unedited_vs_x0(k)
        for i, t in enumerate(em.t):
            rows.append([j, i, int(t)] + [round(float(v), 5) for v in (a[i].mean(), a[i].std(unbiased=False),
                                                                         b[i].mean(), b[i].std(unbiased=False),
                                                                         c[i].mean(), c[i].std(unbiased=False))])
    return header, rows


def emergence_summary(em: Emergence) -> list[dict]:
    """Per prototype: requested rise, final gains, t_half, and the final image's faithfulness."""
    out = []
    for k, j in enumerate(em.prototypes):
        g = em.gain_vs_unedited(k).mean(1).numpy()
        f = faithfulness(em.s_x0, em.s_x0.clone().index_put_((torch.arange(em.s_x0.shape[0]), torch.tensor(j)),
                                                              em.targets[k]),
                         em.s_traj[-1, 1 + k], [j])
        out.append({"prototype": j, "requested_change_mean": round(float((em.targets[k] - em.s_x0[:, j]).mean()), 4),
                    "final_gain_vs_unedited_mean": round(float(g[-1]), 4),
                    "final_gain_vs_x0_mean": round(float(em.gain_vs_x0(k)[-1].mean()), 4),
                    "t_half": half_rise_timestep(em.t, g),
                    "rise_median": round(float(f["rise"].nanmedian()), 4),
                    "others_median": round(float(f["others"].median()), 4)})
    return out
