"""Sampling the diffusion prior over s: its targets, the eps it implies, and the trained prior as an object.

The prior network (:class:`~patronus_diffusion.models.prior.PriorMLP`) predicts ``v`` or ``eps`` for
standardised s vectors z; here that output becomes the eps-model_fn of the core samplers, so the prior is
sampled with the same DDIM / DDPM / DPM-Solver++ code as images.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from ..models.prior import PRIOR_META, PRIOR_WEIGHTS, PriorConfig, PriorMLP, SStatistics
from ..utils.errors import UsageError
from .samplers import get_sampler
from .schedule import NoiseSchedule


def _abar(schedule: NoiseSchedule, t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return schedule.alphas_cumprod.to(like.device)[t].to(like.dtype)[:, None]


def training_target(z0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor, schedule: NoiseSchedule,
                    prediction: str) -> torch.Tensor:
    """eps, or v = sqrt(abar_t) eps - sqrt(1 - abar_t) z0."""
    if prediction == "eps":
        return noise
    ab = _abar(schedule, t, z0)
    return ab.sqrt() * noise - (1 - ab).sqrt() * z0


def output_to_eps(out: torch.Tensor, z_t: torch.Tensor, t: torch.Tensor, schedule: NoiseSchedule,
                  prediction: str) -> torch.Tensor:
    """The eps the core samplers expect: eps = sqrt(abar_t) v + sqrt(1 - abar_t) z_t for v-prediction."""
    if prediction == "eps":
        return out
    ab = _abar(schedule, t, z_t)
    return ab.sqrt() * out + (1 - ab).sqrt() * z_t


class LatentPrior:
    """A trained prior: ``sample(n, seed)`` returns s vectors in the encoder's scale."""

    def __init__(self, net: PriorMLP, stats: SStatistics, cfg: PriorConfig, meta: dict | None = None,
                 path: Path | None = None):
        self.net = net.eval().requires_grad_(False)
        self.stats, self.cfg, self.meta, self.path = stats, cfg, meta or {}, path
        self.schedule = NoiseSchedule.from_config(cfg.diffusion)

    @property
    def dim(self) -> int:
        return self.net.dim

    def eps(self, z_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """The eps-model_fn of the core samplers, whatever the network predicts."""
        return output_to_eps(self.net(z_t, t), z_t, t, self.schedule, self.cfg.prediction)

    @torch.no_grad()
    def sample(self, n: int, seed: int = 0, sampler: str | None = None, steps: int | None = None,
               clip: bool = False, progress: bool = False) -> torch.Tensor:
        """n vectors s = std * z + mean with z from the prior's sampler started at seeded N(0, I) noise.

        ``clip`` clamps s to the per-prototype [min, max] of the training s (off by default, so the
        range report measures the sampler itself).
        """
        if n < 1:
            raise UsageError(f"number of s vectors must be >= 1, got {n}")
        g = torch.Generator().manual_seed(seed)
        z_T = torch.randn((n, self.dim), generator=g)
        fn = get_sampler(sampler or self.cfg.sampler)
        opts = {"generator": torch.Generator().manual_seed(seed + 1)} if (sampler or self.cfg.sampler) == "ddpm" else {}
        z = fn(self.eps, z_T, self.schedule, steps or self.cfg.sample_steps, progress=progress, **opts)
        s = self.stats.unstandardise(z)
        return torch.maximum(torch.minimum(s, self.stats.max), self.stats.min) if clip else s


def load_prior(path: str | Path) -> LatentPrior:
    """Load a prior directory written by ``patronus train-prior`` (prior.safetensors + prior.json)."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    from ..runs import CheckpointError, load_into

    path = Path(path)
    w, m = path / PRIOR_WEIGHTS, path / PRIOR_META
    if not w.exists() or not m.exists():
        raise CheckpointError(f"{path} holds no trained prior ({PRIOR_WEIGHTS} + {PRIOR_META}); train one with "
                              f"`patronus train-prior --run RUN --out {path}`")
    try:
        meta = json.loads(m.read_text())
        cfg = PriorConfig.from_dict(meta["config"])
        tensors = load_file(str(w))
    except (json.JSONDecodeError, KeyError, SafetensorError, OSError) as e:
        raise CheckpointError(f"{path} is damaged ({e}); retrain the prior") from None
    stats = SStatistics.from_tensors(tensors)
    net = PriorMLP(int(stats.mean.shape[0]), cfg)
    load_into(net, {k[4:]: v for k, v in tensors.items() if k.startswith("net.")}, w)
    return LatentPrior(net, stats, cfg, meta, path)
