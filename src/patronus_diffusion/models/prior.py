"""A diffusion prior over the prototype vector s, for unconditional sampling.

Patronus generates from (x_T, s). To generate without a reference image, s itself must be sampled:
a small diffusion model learns p(z) of the *standardised* vectors z = (s - mean) / std of the
training set (per prototype), with the usual eps-prediction loss ||eps - eps_phi(z_t, t)||^2 and
z_t = sqrt(abar_t) z + sqrt(1 - abar_t) eps. Sampling runs any core sampler (DDIM eta = 0, DPM-Solver++
2M, ...) on z, then s = z * std + mean; the decoder turns s into an image.

The network (:class:`PriorMLP`) is a residual MLP: s is a set of P scalars without a spatial order,
so a 1-D convolution over the prototype index (the reference's choice) has no locality to exploit.

    h_0 = W_in z
    h_{k+1} = h_k + W_2 Dropout(SiLU(LN(W_1 SiLU(LN(h_k)) + W_t e_t)))      (K blocks, W_2 zero-initialised)
    eps = W_out SiLU(LN(h_K))

with e_t = MLP(sinusoid(t)). :class:`~patronus_diffusion.diffusion.prior.LatentPrior` bundles the network, the schedule and the
statistics of s (mean, std, min, max) and samples s.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..config import ConfigError, DiffusionConfig, set_field
from ..utils.errors import UsageError
from .unet import timestep_embedding


PRIOR_SAMPLERS = ("ddim", "ddpm", "dpmpp-2m")
"""The core samplers (``diffusion.samplers.SAMPLERS``; a test keeps the two lists equal)."""


@dataclass
class PriorConfig:
    """Network, schedule and training settings of the prior (saved as prior.json)."""

    hidden: int = 256
    blocks: int = 4
    time_dim: int = 128
    dropout: float = 0.0
    timesteps: int = 1000
    beta_start: float = 1e-4
    beta_end: float = 0.02
    batch_size: int = 256
    lr: float = 1e-3
    weight_decay: float = 0.0
    warmup_steps: int = 200
    grad_clip: float = 1.0
    ema_decay: float = 0.999
    max_steps: int = 6000
    max_minutes: float | None = None
    seed: int = 0
    log_every: int = 100
    checkpoint_every: int = 1000
    sampler: str = "ddim"
    """Default sampler for s (any core sampler; DDIM eta = 0 is deterministic given the noise)."""
    sample_steps: int = 50
    prediction: str = "v"
    """What the network predicts: ``v`` = sqrt(abar) eps - sqrt(1 - abar) z (default) or ``eps``.
    With ``v`` the implied x0 = sqrt(abar) z_t - sqrt(1 - abar) v stays bounded at high noise, where an
    eps error is amplified by 1/sqrt(abar) (~150 at t = T-1); eps = sqrt(abar) v + sqrt(1 - abar) z_t."""

    def validate(self) -> "PriorConfig":
        if self.prediction not in ("v", "eps"):
            raise ConfigError(f"prior prediction must be 'v' or 'eps', not {self.prediction!r}")
        if self.hidden < 1 or self.blocks < 1 or self.time_dim < 2 or self.time_dim % 2:
            raise ConfigError("prior hidden and blocks must be >= 1 and time_dim an even number >= 2")
        if self.batch_size < 2:
            raise ConfigError(f"prior batch_size must be >= 2, got {self.batch_size}")
        if self.sampler not in PRIOR_SAMPLERS:
            raise ConfigError(f"prior sampler must be one of {', '.join(PRIOR_SAMPLERS)}, not {self.sampler!r}")
        return self

    @property
    def diffusion(self) -> DiffusionConfig:
        return DiffusionConfig(timesteps=self.timesteps, beta_start=self.beta_start, beta_end=self.beta_end)

    @classmethod
    def from_dict(cls, d: dict) -> "PriorConfig":
        known = {f.name for f in fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ConfigError(f"unknown prior config key(s) {sorted(unknown)}; known: {sorted(known)}")
        return cls(**d).validate()

    def override(self, items: list[str] | None) -> "PriorConfig":
        """Apply ``key=value`` strings (types follow the defaults)."""
        out = replace(self)
        for item in items or []:
            if "=" not in item:
                raise ConfigError(f"prior override {item!r} must look like key=value, e.g. hidden=256")
            k, v = item.split("=", 1)
            k = k.strip().removeprefix("prior.")
            set_field(out, k, v, f"prior.{k}", f"known: {sorted(f.name for f in fields(self))}")
        return out.validate()


class ResidualBlock(nn.Module):
    def __init__(self, width: int, emb_dim: int, dropout: float):
        super().__init__()
        self.norm1 = nn.LayerNorm(width)
        self.fc1 = nn.Linear(width, width)
        self.time = nn.Linear(emb_dim, width)
        self.norm2 = nn.LayerNorm(width)
        self.dropout = nn.Dropout(dropout)
        self.fc2 = nn.Linear(width, width)
        nn.init.zeros_(self.fc2.weight)
        nn.init.zeros_(self.fc2.bias)

    def forward(self, h: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        u = self.fc1(F.silu(self.norm1(h))) + self.time(emb)
        return h + self.fc2(self.dropout(F.silu(self.norm2(u))))


class PriorMLP(nn.Module):
    """eps_phi(z_t, t) for standardised prototype vectors z of dimension P."""

    def __init__(self, dim: int, cfg: PriorConfig):
        super().__init__()
        self.dim, self.time_dim = dim, cfg.time_dim
        emb = 4 * cfg.time_dim
        self.time_mlp = nn.Sequential(nn.Linear(cfg.time_dim, emb), nn.SiLU(), nn.Linear(emb, emb), nn.SiLU())
        self.inp = nn.Linear(dim, cfg.hidden)
        self.blocks = nn.ModuleList(ResidualBlock(cfg.hidden, emb, cfg.dropout) for _ in range(cfg.blocks))
        self.out_norm = nn.LayerNorm(cfg.hidden)
        self.out = nn.Linear(cfg.hidden, dim)

    def forward(self, z: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        if z.ndim != 2 or z.shape[1] != self.dim:
            raise UsageError(f"the prior expects s of shape (B, {self.dim}), got {tuple(z.shape)}")
        emb = self.time_mlp(timestep_embedding(t, self.time_dim))
        h = self.inp(z)
        for block in self.blocks:
            h = block(h, emb)
        return self.out(F.silu(self.out_norm(h)))


@dataclass
class SStatistics:
    """Per-prototype statistics of the training s: standardisation and the range check."""

    mean: torch.Tensor
    std: torch.Tensor
    min: torch.Tensor
    max: torch.Tensor

    @classmethod
    def of(cls, s: torch.Tensor) -> "SStatistics":
        s = s.double()
        return cls(s.mean(0).float(), s.std(0).clamp_min(1e-6).float(), s.min(0).values.float(),
                   s.max(0).values.float())

    def standardise(self, s: torch.Tensor) -> torch.Tensor:
        return (s - self.mean) / self.std

    def unstandardise(self, z: torch.Tensor) -> torch.Tensor:
        return z * self.std + self.mean

    def tensors(self) -> dict[str, torch.Tensor]:
        return {"s_mean": self.mean, "s_std": self.std, "s_min": self.min, "s_max": self.max}

    @classmethod
    def from_tensors(cls, t: dict[str, torch.Tensor]) -> "SStatistics":
        return cls(t["s_mean"], t["s_std"], t["s_min"], t["s_max"])

    def range_report(self, s: torch.Tensor) -> dict:
        """Fraction of entries of s outside the per-prototype [min, max] of the training s."""
        below, above = s < self.min, s > self.max
        return {"fraction_outside": float((below | above).float().mean()), "fraction_below_min": float(below.float().mean()),
                "fraction_above_max": float(above.float().mean()), "n": int(s.shape[0])}


PRIOR_WEIGHTS = "prior.safetensors"
PRIOR_META = "prior.json"
