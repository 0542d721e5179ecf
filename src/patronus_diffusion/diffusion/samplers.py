"""Samplers for an eps-prediction model, all with one signature.

    sampler(model_fn, x_T, schedule, steps, *, generator=None, callback=None, progress=False, **options) -> x_0

``model_fn(x, t)`` returns the predicted noise for a batch x at integer timesteps t (shape (B,));
conditioning (s, class embeddings, guidance) is bound into it by the caller. ``steps`` is the number
of network evaluations (or an explicit decreasing list of timesteps). ``callback(info)`` is called after every step with a dict holding ``i``,
``t``, ``x`` (the new state) and ``x0`` (the model's prediction of the clean image at this step).

Every sampler evaluates the model at ``schedule.timesteps(steps)`` (T-1 ... 0) and returns its
final clean-image prediction, so the same ``steps`` means the same cost for every sampler.
"""

from __future__ import annotations

import math
from typing import Callable

import torch
from tqdm.auto import tqdm

from ..utils.errors import UsageError
from .schedule import NoiseSchedule

ModelFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
Callback = Callable[[dict], None] | None


def _tvec(t: int, x: torch.Tensor) -> torch.Tensor:
    return torch.full((x.shape[0],), t, device=x.device, dtype=torch.long)


def predict_x0(x: torch.Tensor, eps: torch.Tensor, abar: float) -> torch.Tensor:
    """x0_hat = (x_t - sqrt(1 - abar_t) eps) / sqrt(abar_t)."""
    return (x - math.sqrt(1.0 - abar) * eps) / math.sqrt(abar)


def _maybe_clip(x0: torch.Tensor, clip: bool) -> torch.Tensor:
    return x0.clamp(-1, 1) if clip else x0


def _iter(ts, progress: bool, desc: str):
    return tqdm(list(enumerate(ts)), desc=desc, leave=False, disable=not progress)


@torch.no_grad()
def ddim(model_fn: ModelFn, x_T: torch.Tensor, schedule: NoiseSchedule, steps: int, *, eta: float = 0.0,
         generator: torch.Generator | None = None, callback: Callback = None, progress: bool = False,
         clip_x0: bool = False) -> torch.Tensor:
    """DDIM (Song et al. 2021). eta = 0: deterministic ODE sampler; eta = 1: DDPM posterior variance.

    x_{prev} = sqrt(abar_prev) x0_hat + sqrt(1 - abar_prev - sigma^2) eps_hat + sigma z, with
    sigma = eta sqrt((1 - abar_prev) / (1 - abar_t)) sqrt(1 - abar_t / abar_prev).
    """
    ts = schedule.timesteps(steps)
    x = x_T
    for i, t in _iter(ts, progress, "ddim"):
        prev = ts[i + 1] if i + 1 < len(ts) else -1
        ab, ab_prev = schedule.alpha_bar(t), schedule.alpha_bar(prev)
        eps = model_fn(x, _tvec(t, x)).to(x.dtype)
        x0 = _maybe_clip(predict_x0(x, eps, ab), clip_x0)
        if clip_x0:
            eps = (x - math.sqrt(ab) * x0) / math.sqrt(1.0 - ab)
        sigma = eta * math.sqrt((1 - ab_prev) / (1 - ab) * (1 - ab / ab_prev)) if prev >= 0 else 0.0
        x = math.sqrt(ab_prev) * x0 + math.sqrt(max(1.0 - ab_prev - sigma**2, 0.0)) * eps
        if sigma > 0:
            x = x + sigma * torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
        if callback is not None:
            callback({"i": i, "t": t, "x": x, "x0": x0})
    return x


@torch.no_grad()
def ddpm(model_fn: ModelFn, x_T: torch.Tensor, schedule: NoiseSchedule, steps: int, *,
         generator: torch.Generator | None = None, callback: Callback = None, progress: bool = False,
         clip_x0: bool = False, variance: str = "small") -> torch.Tensor:
    """Ancestral DDPM sampling (Ho et al. 2020) over respaced timesteps.

    Between consecutive sampled timesteps t > t' the effective beta is 1 - abar_t / abar_t'. The
    posterior mean is used with variance ``small`` = beta_tilde = (1 - abar_t')/(1 - abar_t) beta
    (recommended, and safe to respace) or ``large`` = beta (the reference's choice at 1000 steps).
    """
    if variance not in ("small", "large"):
        raise UsageError("variance must be 'small' or 'large'")
    ts = schedule.timesteps(steps)
    x = x_T
    for i, t in _iter(ts, progress, "ddpm"):
        prev = ts[i + 1] if i + 1 < len(ts) else -1
        ab, ab_prev = schedule.alpha_bar(t), schedule.alpha_bar(prev)
        beta = 1.0 - ab / ab_prev
        eps = model_fn(x, _tvec(t, x)).to(x.dtype)
        x0 = _maybe_clip(predict_x0(x, eps, ab), clip_x0)
        # posterior mean of q(x_prev | x_t, x0)
        mean = (math.sqrt(ab_prev) * beta / (1 - ab)) * x0 + (math.sqrt(1 - beta) * (1 - ab_prev) / (1 - ab)) * x
        if prev >= 0:
            var = beta * (1 - ab_prev) / (1 - ab) if variance == "small" else beta
            mean = mean + math.sqrt(var) * torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
        x = mean
        if callback is not None:
            callback({"i": i, "t": t, "x": x, "x0": x0})
    return x


@torch.no_grad()
def dpmpp_2m(model_fn: ModelFn, x_T: torch.Tensor, schedule: NoiseSchedule, steps: int, *,
             generator: torch.Generator | None = None, callback: Callback = None, progress: bool = False,
             clip_x0: bool = False) -> torch.Tensor:
    """DPM-Solver++(2M) (Lu et al. 2022), multistep second order in the data prediction.

    With alpha_t = sqrt(abar_t), sigma_t = sqrt(1 - abar_t), lambda_t = log(alpha_t / sigma_t), h = lambda_t' - lambda_t:
    first step x_t' = (sigma_t'/sigma_t) x_t - alpha_t' (e^{-h} - 1) D, D = x0_hat(t);
    later steps use D = (1 + 1/(2r)) x0_hat(t) - 1/(2r) x0_hat(t_prev), r = h_prev / h.
    The last evaluation (t = 0) returns its x0 prediction. ``generator`` is unused (deterministic).
    """
    ts = schedule.timesteps(steps)
    x = x_T
    x0_prev, h_prev = None, None

    def lam(t: int) -> float:
        ab = schedule.alpha_bar(t)
        return 0.5 * math.log(ab / (1 - ab))

    for i, t in _iter(ts, progress, "dpm++2m"):
        ab = schedule.alpha_bar(t)
        eps = model_fn(x, _tvec(t, x)).to(x.dtype)
        x0 = _maybe_clip(predict_x0(x, eps, ab), clip_x0)
        if i + 1 < len(ts):
            nxt = ts[i + 1]
            ab_n = schedule.alpha_bar(nxt)
            h = lam(nxt) - lam(t)
            if x0_prev is None:
                d = x0  # first step: first order (DPM-Solver++ 1 = DDIM)
            else:
                r = h_prev / h
                d = (1 + 1 / (2 * r)) * x0 - (1 / (2 * r)) * x0_prev
            x = math.sqrt((1 - ab_n) / (1 - ab)) * x - math.sqrt(ab_n) * math.expm1(-h) * d
            x0_prev, h_prev = x0, h
        else:
            x = x0
        if callback is not None:
            callback({"i": i, "t": t, "x": x, "x0": x0})
    return x


def ddim_coefficients(schedule: NoiseSchedule, t: int, prev: int) -> tuple[float, float]:
    """(a, b) of the deterministic DDIM step written as x_prev = a x_t + b eps(x_t, t):
    a = sqrt(abar_prev / abar_t), b = sqrt(1 - abar_prev) - sqrt(abar_prev (1 - abar_t) / abar_t)."""
    ab, ab_prev = schedule.alpha_bar(t), schedule.alpha_bar(prev)
    return math.sqrt(ab_prev / ab), math.sqrt(1 - ab_prev) - math.sqrt(ab_prev * (1 - ab) / ab)


def edict_state(x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
    """An EDICT state: the two sequences (x, y) stacked along channels, (B, 2C, H, W); plain noise has y = x."""
    return torch.cat([x, x if y is None else y], dim=1)


@torch.no_grad()
def edict(model_fn: ModelFn, x_T: torch.Tensor, schedule: NoiseSchedule, steps: int, *, mix: float = 0.8,
          generator: torch.Generator | None = None, callback: Callback = None, progress: bool = False,
          clip_x0: bool = False) -> torch.Tensor:
    """EDICT decoding (Wallace et al. 2023): two coupled DDIM sequences, exactly invertible in closed form.

    With (a, b) of :func:`ddim_coefficients` and the mixing weight p, each step t -> prev is

        x' = a x + b eps(y, t);   y' = a y + b eps(x', t)
        x'' = p x' + (1 - p) y';  y'' = p y' + (1 - p) x''

    and every line can be solved for its left-hand input, so :func:`~.inversion.edict_invert` walks back
    exactly (to float rounding) at any step count. Costs 2 network evaluations per step. ``x_T`` is a state
    (B, 2C, H, W) of :func:`edict_state` (from ``edict_invert``, or plain noise with x = y). Returns x (B, C, H, W).
    ``clip_x0`` and ``generator`` are accepted for the shared signature and unused (clipping breaks exactness).
    """
    ts = schedule.timesteps(steps)
    if x_T.shape[1] % 2:
        raise UsageError(f"edict decodes a (B, 2C, H, W) state of two sequences; got {x_T.shape[1]} channels "
                         "(wrap plain noise with edict_state(noise))")
    x, y = x_T.chunk(2, dim=1)
    for i, t in _iter(ts, progress, "edict"):
        prev = ts[i + 1] if i + 1 < len(ts) else -1
        a, b = ddim_coefficients(schedule, t, prev)
        eps_y = model_fn(y, _tvec(t, y)).to(x.dtype)
        x0 = predict_x0(y, eps_y, schedule.alpha_bar(t))  # the model's own prediction at this step (as ddim's)
        x = a * x + b * eps_y
        y = a * y + b * model_fn(x, _tvec(t, x)).to(y.dtype)
        x = mix * x + (1 - mix) * y
        y = mix * y + (1 - mix) * x
        if callback is not None:
            callback({"i": i, "t": t, "x": x, "x0": x0})
    return x


SAMPLERS: dict[str, Callable[..., torch.Tensor]] = {"ddim": ddim, "ddpm": ddpm, "dpmpp-2m": dpmpp_2m}
"""Samplers that start from plain noise (B, C, H, W): every ``--sampler`` choice."""
EXACT_DECODERS: dict[str, Callable[..., torch.Tensor]] = {"edict": edict}
"""Decoders of an exact inversion's state (``sample.inversion``): same signature, but x_T is their own state."""


def get_sampler(name: str) -> Callable[..., torch.Tensor]:
    if name in EXACT_DECODERS:
        return EXACT_DECODERS[name]
    if name not in SAMPLERS:
        raise UsageError(f"unknown sampler {name!r}; choose one of: {', '.join(SAMPLERS)}")
    return SAMPLERS[name]
