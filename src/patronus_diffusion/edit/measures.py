"""The measure of an edit: the one place its formula lives (``patronus edit``, ``explain``, ``when`` and
``evaluate-edits`` all call it; JSON outputs quote :data:`DEFINITIONS` and name the baseline they used).

An edit asks for s' (s with some entries changed) and decodes x_hat from the image's inverted noise x_T. With a
baseline b (``"recon"``: s of the unedited decode from the same x_T, so the inversion error is not charged to the
edit; ``"x0"``: s of the input image itself, when no reconstruction was decoded) and J the edited prototypes:

    rise       = mean_J (s_J(x_hat) - b_J) / (s'_J - b_J)                 1 = exactly what was asked
    others     = mean_{k not in J} |s_k(x_hat) - b_k|                      absolute change of the rest
    off-target = others / mean_J |s'_J - b_J|                             0 = nothing else moved (per unit asked)
    leak per rise = off-target / rise                                     what each unit of rise drags along

Entries whose requested change |s'_J - b_J| <= ``MIN_CHANGE`` are left out of the rise (NaN when none is left).
Medians over images and prototypes are true medians (:func:`~..evaluation.stats.true_median`).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from ..evaluation.stats import bootstrap_interval, count_defined, true_median

MIN_CHANGE = 1e-3
LOW_RISE = 0.2
"""A prototype whose median rise stays below this is counted as one the decoder barely follows."""
N_BOOT = 1000
"""Bootstrap draws of every interval over images."""
MIN_RISE_FOR_LEAK = 0.05
"""Leak per rise is left undefined where the median rise is below this (a ratio to a rise near 0 measures nothing)."""
BASELINES = {"recon": "s of the unedited image decoded from the same inverted x_T (inversion error not charged)",
             "x0": "s of the input image itself (no reconstruction decoded; inversion error included)"}
DEFINITIONS = {
    "rise": "mean over the edited J of (s_J(edited) - b_J) / (s'_J - b_J), b = the baseline's s; "
            f"entries with |s'_J - b_J| <= {MIN_CHANGE:g} left out (null when none is left)",
    "others": "mean over the prototypes k not edited of |s_k(edited) - b_k|",
    "off_target": "others divided by mean over the edited J of |s'_J - b_J| (per unit of requested change)",
    "leak_per_rise": "off_target / rise (the share of off-target change per unit of rise)",
    "medians": "true medians (the mean of the two middle values for an even count), NaN entries left out",
}


def _requested(s_base: torch.Tensor, s_requested: torch.Tensor, idx: list[int]) -> torch.Tensor:
    return s_requested[:, idx] - s_base[:, idx]


def edit_rise(s_base_j: torch.Tensor, s_edit_j: torch.Tensor, value: torch.Tensor,
              min_change: float = MIN_CHANGE) -> torch.Tensor:
    """(s_J(edited) - b_J) / (value - b_J) per image for one prototype; NaN where the requested change is tiny."""
    req = torch.as_tensor(value, dtype=torch.float32) - s_base_j
    ok = req.abs() > min_change
    return torch.where(ok, (s_edit_j - s_base_j) / torch.where(ok, req, torch.ones_like(req)),
                       torch.full_like(req, float("nan")))


def measure_edit(s_base: torch.Tensor, s_requested: torch.Tensor, s_after: torch.Tensor, edited: Sequence[int],
                 min_change: float = MIN_CHANGE) -> dict[str, torch.Tensor]:
    """rise, others and off_target (each (B,)) of one edit of B images, against the baseline ``s_base`` (B, P).

    See the module docstring; ``s_requested`` is s' (B, P), ``s_after`` s of the decoded images (B, P)."""
    idx = list(edited)
    req = _requested(s_base, s_requested, idx)
    got = s_after[:, idx] - s_base[:, idx]
    valid = req.abs() > min_change
    ratio = torch.where(valid, got / torch.where(valid, req, torch.ones_like(req)), torch.zeros_like(req))
    count = valid.sum(1)
    nan = torch.full_like(req[:, 0], float("nan"))
    rise = torch.where(count > 0, ratio.sum(1) / count.clamp_min(1), nan)
    mask = torch.ones(s_base.shape[1], dtype=torch.bool)
    mask[idx] = False
    others = (s_after[:, mask] - s_base[:, mask]).abs().mean(1) if mask.any() else torch.zeros(s_base.shape[0])
    size = req.abs().mean(1)
    off = torch.where(size > min_change, others / torch.where(size > min_change, size, torch.ones_like(size)), nan)
    return {"rise": rise, "others": others, "off_target": off}


def off_target(s_base: torch.Tensor, s_edit: torch.Tensor, j: int, value: torch.Tensor,
               min_change: float = MIN_CHANGE) -> torch.Tensor:
    """Off-target change per unit asked of a single-prototype edit (s_J := value): :func:`measure_edit`'s
    ``off_target`` for J = {j}."""
    s_req = s_base.clone()
    s_req[:, j] = torch.as_tensor(value, dtype=s_base.dtype)
    return measure_edit(s_base, s_req, s_edit, [j], min_change)["off_target"]


def _finite_list(t: torch.Tensor, digits: int = 4) -> list:
    return [None if v != v or v in (float("inf"), float("-inf")) else round(float(v), digits)
            for v in t.flatten().tolist()]


def summarise_edit(rise: torch.Tensor, others: torch.Tensor, off: torch.Tensor | None = None,
                   baseline: str = "x0") -> dict:
    """The numbers of a set of edited images: true medians with their counts, the per-image values and the
    baseline they were measured against (``recon`` or ``x0``)."""
    out = {"baseline": baseline, "rise_median": true_median(rise, 4), "n_rise": count_defined(rise),
           "others_median": true_median(others, 4)}
    if off is not None:
        out["off_target_median"] = true_median(off, 4)
    out |= {"rise": _finite_list(rise), "others": _finite_list(others)}
    if off is not None:
        out["off_target"] = _finite_list(off)
    return out


# ------------------------------------------------------------------------------ a row of edits: prototypes x images
def _per_prototype_median(block: np.ndarray) -> float | None:
    """median over prototypes (rows) of the median over images (columns): the headline statistic."""
    return true_median([true_median(row) for row in block])


def _leak_per_rise(block: np.ndarray) -> float | None:
    """block (2, J, B) = (rise, off-target): median off-target / median rise over prototypes; undefined (None)
    where the median rise is below ``MIN_RISE_FOR_LEAK`` (a ratio to a rise near 0 measures nothing)."""
    r, o = _per_prototype_median(block[0]), _per_prototype_median(block[1])
    return None if r is None or o is None or r < MIN_RISE_FOR_LEAK else o / r


def _interval(values: np.ndarray, statistic=_per_prototype_median, seed: int = 0) -> list | None:
    ci = bootstrap_interval(values, statistic, n_boot=N_BOOT, seed=seed)
    return None if ci is None else [round(ci[0], 4), round(ci[1], 4)]


def _r4(v: float | None) -> float | None:
    return None if v is None else round(v, 4)


def row_numbers(rise: torch.Tensor, off: torch.Tensor, seed: int = 0) -> dict:
    """The numbers of one row (rise and off-target, (J, B)): true medians over prototypes of the per-prototype
    medians over images, their bootstrap intervals over images, the leak per rise and the counts."""
    per_rise = [true_median(r) for r in rise]
    rise_np, off_np = rise.double().numpy(), off.double().numpy()
    both = np.stack([rise_np, off_np])
    low = [j for j, v in enumerate(per_rise) if v is not None and v < LOW_RISE]
    return {"median_rise": _r4(_per_prototype_median(rise_np)), "median_rise_ci95": _interval(rise_np, seed=seed),
            "median_off_target": _r4(_per_prototype_median(off_np)),
            "median_off_target_ci95": _interval(off_np, seed=seed),
            "leak_per_rise": _r4(_leak_per_rise(both)), "leak_per_rise_ci95": _interval(both, _leak_per_rise, seed),
            "n_prototypes": count_defined(per_rise), "n_images": int(rise.shape[1]),
            "n_prototypes_below_0.2": len(low), "prototype_positions_below_0.2": low}
