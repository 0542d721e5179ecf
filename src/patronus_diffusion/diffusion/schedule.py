"""The noise schedule, kept apart from the network and the samplers.

Forward process q(x_t | x_0) = N(sqrt(abar_t) x_0, (1 - abar_t) I) with abar_t = prod_{i<=t} (1 - beta_i),
t = 0 ... T-1. The linear schedule is beta_t = linspace(1e-4, 0.02, T) scaled by 1000/T (DDPM).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch

from ..config import DiffusionConfig
from ..utils.errors import UsageError


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
