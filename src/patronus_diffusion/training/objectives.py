"""Per-family training objectives and preview samplers, so one training loop serves every family.

An objective maps a batch to per-image losses; the trainer averages, logs per timestep quartile,
and adds any regulariser the objective returns.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from ..config import RunConfig
from ..diffusion.samplers import get_sampler
from ..diffusion.schedule import NoiseSchedule
from ..models.prototypes import prototype_distinct_loss


@dataclass
class LossOutput:
    per_image: torch.Tensor  # (B,) denoising loss of each image
    extra: torch.Tensor | None = None  # regulariser already weighted
    logs: dict[str, float] | None = None


def _unwrap(model: torch.nn.Module) -> torch.nn.Module:
    return getattr(model, "module", model)


def patronus_objective(model, x0, labels, t, noise, schedule: NoiseSchedule, cfg: RunConfig, amp) -> LossOutput:
    """L = mean ||eps - eps_theta(x_t, t, s(x_0))||^2 (+ weighted prototype-distinct loss).

    s is computed from the clean x_0 in fp32; gradients reach the UNet, the encoder and the prototypes.
    """
    inner = _unwrap(model)
    s = inner.prototypes(x0).s
    x_t = schedule.q_sample(x0, t, noise)
    with amp:
        eps = model(x_t, t, s)
    per = ((eps.float() - noise) ** 2).flatten(1).mean(1)
    extra, logs = None, {}
    tc = cfg.train
    if tc.distinct_weight > 0:
        d = prototype_distinct_loss(inner.prototypes.prototypes, tc.distinct_margin, tc.distinct_metric)
        extra = tc.distinct_weight * d
        logs["distinct"] = float(d.detach())
    return LossOutput(per, extra, logs)


@torch.no_grad()
def patronus_preview(model, x0, labels, schedule: NoiseSchedule, cfg: RunConfig, seed: int) -> torch.Tensor:
    """Decode fresh noise with the s of fixed reference images (the reference's training previews)."""
    s = model.prototypes(x0).s
    g = torch.Generator(device="cpu").manual_seed(seed)
    x_T = torch.randn(x0.shape, generator=g).to(x0.device)
    fn = lambda x, t: model(x, t, s)  # noqa: E731
    return get_sampler(cfg.sample.sampler)(fn, x_T, schedule, cfg.sample.steps,
                                         clip_x0=cfg.sample.clip_x0).clamp(-1, 1)


OBJECTIVES: dict[str, tuple[Callable, Callable]] = {"patronus": (patronus_objective, patronus_preview)}


def register_objective(family: str, objective: Callable, preview: Callable) -> None:
    OBJECTIVES[family] = (objective, preview)
