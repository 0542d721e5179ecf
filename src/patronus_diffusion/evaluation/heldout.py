"""Held-out denoising loss: a cheap, low-variance proxy of sample quality for comparing runs."""

from __future__ import annotations

import torch

from ..diffusion.schedule import NoiseSchedule


@torch.no_grad()
def heldout_loss(model, images: torch.Tensor, schedule: NoiseSchedule, seed: int = 0, batch: int = 256,
                 cond_fn=None) -> dict[str, float]:
    """Mean eps-MSE on ``images`` at stratified timesteps with fixed noise (same for every model).

    ``cond_fn(model, x0)`` returns the condition; the default is Patronus's s = prototypes(x0).
    Returns the overall mean and the mean per timestep quartile.
    """
    g = torch.Generator().manual_seed(seed)
    n, T = images.shape[0], schedule.num_timesteps
    t_all = (torch.arange(n) * T // n)[torch.randperm(n, generator=g)]
    noise_all = torch.randn(images.shape, generator=g)
    cond_fn = cond_fn or (lambda m, x: m.prototypes(x).s)
    dev = next(model.parameters()).device
    losses = []
    for i in range(0, n, batch):
        x0 = images[i:i + batch].to(dev)
        t, noise = t_all[i:i + batch].to(dev), noise_all[i:i + batch].to(dev)
        eps = model(schedule.q_sample(x0, t, noise), t, cond_fn(model, x0))
        losses.append(((eps - noise) ** 2).flatten(1).mean(1).cpu())
    per = torch.cat(losses)
    out = {"loss": float(per.mean())}
    for q in range(4):
        m = (t_all >= q * T // 4) & (t_all < (q + 1) * T // 4)
        out[f"loss_q{q + 1}"] = float(per[m].mean())
    return out
