"""Deterministic DDIM inversion: x_0 -> x_T, the exact mirror of DDIM (eta = 0) decoding.

Decoding with timesteps tau_S > ... > tau_1 takes S steps (tau_{i+1} -> tau_i, and tau_1 -> clean).
Inversion walks the same grid upwards, clean -> tau_1 -> ... -> tau_S, also in S network
evaluations. Each step re-uses the DDIM update with the roles of the two timesteps swapped,

    x_next = sqrt(abar_next) x0_hat + sqrt(1 - abar_next) eps_hat,

where eps_hat is evaluated at the current point (the usual approximation eps(x_next) ~ eps(x_cur)).
The labels follow the decoder: the step that decoding takes *from* tau_i is inverted with the
model evaluated at tau_i. Decoding (x_T, s) with the same s and step count gives back x_0 up to the
discretisation error, which shrinks as the number of steps grows.
"""

from __future__ import annotations

import math

import torch
from tqdm.auto import tqdm

from .samplers import Callback, ModelFn, _tvec
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
