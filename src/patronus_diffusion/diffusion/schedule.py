"""The noise schedule, kept apart from the network and the samplers.

Forward process q(x_t | x_0) = N(sqrt(abar_t) x_0, (1 - abar_t) I) with abar_t = prod_{i<=t} (1 - beta_i),
t = 0 ... T-1. The linear schedule is beta_t = linspace(1e-4, 0.02, T) scaled by 1000/T (DDPM).

A window of timesteps (a timed edit's, :func:`check_window`) is given as fractions of T: a sampling step at
timestep t lies in the window (LO, HI) when LO <= t / T < HI, so (0, 1) holds every step, (LO, LO) none, and
(0, 0.5) and (0.5, 1) split the steps between them. 1 is the pure-noise end where decoding starts, 0 the clean image.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import torch

from ..config import DiffusionConfig
from ..utils.errors import UsageError

FULL_WINDOW = (0.0, 1.0)
"""The window that holds every sampling step."""
WINDOW_RULE = ("a timed edit's s' conditions the sampling steps whose timestep t has LO <= t/T < HI (T = the "
               "schedule's timesteps; 1 = pure noise), the image's unedited s every other step")


def check_window(window) -> tuple[float, float]:
    """(LO, HI) as two floats with 0 <= LO <= HI <= 1, or a :class:`UsageError` that says what a window is."""
    what = ("a window is two numbers LO, HI with 0 <= LO <= HI <= 1 (fractions of the schedule's T: a step at "
            "timestep t is in it when LO <= t/T < HI; 1 = pure noise, 0 = the clean image)")
    if isinstance(window, (str, bytes)):
        raise UsageError(f"{what}; got {window!r}")
    try:
        lo, hi = (float(v) for v in window)
    except (TypeError, ValueError, OverflowError):
        raise UsageError(f"{what}; got {window!r}") from None
    if not (math.isfinite(lo) and math.isfinite(hi)):
        raise UsageError(f"{what}; got {lo:g}, {hi:g} (not finite)")
    if not 0.0 <= lo <= 1.0 or not 0.0 <= hi <= 1.0:
        raise UsageError(f"{what}; got {lo:g}, {hi:g} (outside 0 ... 1)")
    if lo > hi:
        raise UsageError(f"{what}; got {lo:g}, {hi:g} (LO is after HI)")
    return lo, hi


@dataclass
class NoiseSchedule:
    betas: torch.Tensor  # float64, (T,)

    @classmethod
    def from_config(cls, cfg: DiffusionConfig) -> "NoiseSchedule":
        if cfg.schedule != "linear":
            raise UsageError(f"diffusion.schedule {cfg.schedule!r} is not supported (only 'linear')")
        scale = 1000.0 / cfg.timesteps
        betas = torch.linspace(cfg.beta_start * scale, cfg.beta_end * scale, cfg.timesteps, dtype=torch.float64)
        return cls(betas)

    @property
    def num_timesteps(self) -> int:
        return self.betas.shape[0]

    @property
    def alphas_cumprod(self) -> torch.Tensor:
        return torch.cumprod(1.0 - self.betas, dim=0)

    def alpha_bar(self, t: int) -> float:
        """abar_t as a Python float; t = -1 means the clean image (abar = 1)."""
        return 1.0 if t < 0 else float(self.alphas_cumprod[t])

    def q_sample(self, x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """x_t = sqrt(abar_t) x_0 + sqrt(1 - abar_t) eps, for a batch of integer timesteps t."""
        ab = self.alphas_cumprod.to(x0.device)[t].to(x0.dtype).view(-1, *([1] * (x0.ndim - 1)))
        return ab.sqrt() * x0 + (1 - ab).sqrt() * noise

    def timesteps(self, steps: "int | Sequence[int]") -> list[int]:
        """``steps`` timesteps from T-1 down to 0, evenly spaced (both ends included).

        Example: T = 1000, steps = 5 gives [999, 749, 500, 250, 0]. ``steps = T`` gives every timestep.
        An explicit strictly decreasing list of timesteps is returned as it is (after validation).
        """
        T = self.num_timesteps
        if not isinstance(steps, int):
            ts = [int(t) for t in steps]
            if not ts or any(a <= b for a, b in zip(ts, ts[1:])) or ts[0] >= T or ts[-1] < 0:
                raise UsageError(f"explicit timesteps must be strictly decreasing within [0, {T - 1}], got {ts[:5]}...")
            return ts
        if not 1 <= steps <= T:
            raise UsageError(f"number of steps must be between 1 and {T}, got {steps}")
        if steps == 1:
            return [T - 1]
        ts = torch.linspace(T - 1, 0, steps, dtype=torch.float64).round().long().tolist()
        return ts

    def in_window(self, t: "int | torch.Tensor", window: "tuple[float, float] | torch.Tensor"):
        """Whether timestep(s) t lie in a window (LO <= t / T < HI); ``window`` a pair or (B, 2) rows with t (B,)."""
        w = torch.as_tensor(window, dtype=torch.float64)
        frac = torch.as_tensor(t, dtype=torch.float64).cpu() / self.num_timesteps
        return (w[..., 0] <= frac) & (frac < w[..., 1])

    def window_steps(self, steps: "int | Sequence[int]", window) -> list[int]:
        """The timesteps of a ``steps``-step decode that lie in ``window`` (:func:`check_window`)."""
        lo, hi = check_window(window)
        return [t for t in self.timesteps(steps) if bool(self.in_window(t, (lo, hi)))]
