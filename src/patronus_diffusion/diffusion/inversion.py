"""Deterministic DDIM inversion: x_0 -> x_T, the exact mirror of DDIM (eta = 0) decoding.

Decoding with timesteps tau_S > ... > tau_1 takes S steps (tau_{i+1} -> tau_i, and tau_1 -> clean).
Inversion walks the same grid upwards, clean -> tau_1 -> ... -> tau_S, also in S network
evaluations. Each step re-uses the DDIM update with the roles of the two timesteps swapped,

    x_next = sqrt(abar_next) x0_hat + sqrt(1 - abar_next) eps_hat,

where eps_hat is evaluated at the current point (the usual approximation eps(x_next) ~ eps(x_cur)).
The labels follow the decoder: the step that decoding takes *from* tau_i is inverted with the
model evaluated at tau_i. Decoding (x_T, s) with the same s and step count gives back x_0 up to the
discretisation error, which shrinks as the number of steps grows.

:func:`edict_invert` is the exact alternative (``sample.inversion=edict``): it solves the coupled EDICT
step of :func:`~.samplers.edict` for its inputs, so decoding its state gives x_0 back to float rounding
at any step count, for twice the network evaluations.
"""

from __future__ import annotations

import math

import torch
from tqdm.auto import tqdm

from .samplers import Callback, ModelFn, _tvec, ddim_coefficients, edict_state
from .schedule import NoiseSchedule


@torch.no_grad()
def ddim_invert(model_fn: ModelFn, x0: torch.Tensor, schedule: NoiseSchedule, steps: int, *,
                callback: Callback = None, progress: bool = False) -> torch.Tensor:
    ts = list(reversed(schedule.timesteps(steps)))  # tau_1 = 0 ... tau_S = T-1
    x = x0
    cur = -1  # the clean image: abar = 1
    for i, nxt in enumerate(tqdm(ts, desc="invert", leave=False, disable=not progress)):
        ab_cur, ab_next = schedule.alpha_bar(cur), schedule.alpha_bar(nxt)
        eps = model_fn(x, _tvec(nxt, x)).to(x.dtype)
        x0_hat = x if cur < 0 else (x - math.sqrt(1 - ab_cur) * eps) / math.sqrt(ab_cur)
        x = math.sqrt(ab_next) * x0_hat + math.sqrt(1 - ab_next) * eps
        if callback is not None:
            callback({"i": i, "t": nxt, "x": x, "x0": x0_hat})
        cur = nxt
    return x


@torch.no_grad()
def edict_invert(model_fn: ModelFn, x0: torch.Tensor, schedule: NoiseSchedule, steps: int, *, mix: float = 0.8,
                 callback: Callback = None, progress: bool = False) -> torch.Tensor:
    """Exact inversion of :func:`~.samplers.edict`: x0 -> the state (B, 2C, H, W) that decodes back to x0.

    Each decoding step t -> prev, undone in reverse order (x, y are the state at prev):

        y' = (y - (1 - p) x) / p;   x' = (x - (1 - p) y') / p
        y  = (y' - b eps(x', t)) / a;   x = (x' - b eps(y, t)) / a
    """
    ts = schedule.timesteps(steps)
    x, y = x0, x0
    for k, i in enumerate(tqdm(range(len(ts) - 1, -1, -1), desc="invert", leave=False, disable=not progress)):
        t = ts[i]
        prev = ts[i + 1] if i + 1 < len(ts) else -1
        a, b = ddim_coefficients(schedule, t, prev)
        y = (y - (1 - mix) * x) / mix
        x = (x - (1 - mix) * y) / mix
        y = (y - b * model_fn(x, _tvec(t, x)).to(y.dtype)) / a
        x = (x - b * model_fn(y, _tvec(t, y)).to(x.dtype)) / a
        if callback is not None:
            callback({"i": k, "t": t, "x": x, "x0": x0})
    return edict_state(x, y)
