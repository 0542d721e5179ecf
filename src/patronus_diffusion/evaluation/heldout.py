"""Held-out denoising loss: a cheap, low-variance proxy of sample quality for comparing runs."""

from __future__ import annotations

import torch

from ..diffusion.schedule import NoiseSchedule
from ..utils.errors import UsageError


@torch.no_grad()
def heldout_loss(model, images: torch.Tensor, schedule: NoiseSchedule, seed: int = 0, batch: int = 256,
                 cond_fn=None, cond: torch.Tensor | None = None) -> dict[str, float]:
    """Mean eps-MSE on ``images`` at stratified timesteps with fixed noise (same for every model).

    ``cond_fn(model, x0)`` returns the condition; the default is Patronus's s = prototypes(x0).
    ``cond`` instead gives the condition of every image up front (rows aligned with ``images``).
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
        c = cond[i:i + batch].to(dev) if cond is not None else cond_fn(model, x0)
        eps = model(schedule.q_sample(x0, t, noise), t, c)
        losses.append(((eps - noise) ** 2).flatten(1).mean(1).cpu())
    per = torch.cat(losses)
    out = {"loss": float(per.mean())}
    for q in range(4):
        m = (t_all >= q * T // 4) & (t_all < (q + 1) * T // 4)
        out[f"loss_q{q + 1}"] = float(per[m].mean())
    return out


def derangement(n: int, seed: int) -> torch.Tensor:
    """A seeded permutation with no fixed point (every image gets another image's s)."""
    if n < 2:
        raise UsageError("the s-shuffle check needs at least 2 images")
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    return torch.roll(perm, 1)[torch.argsort(perm)]


@torch.no_grad()
def conditioning_gain(model, images: torch.Tensor, schedule: NoiseSchedule, seed: int = 0) -> dict[str, float]:
    """How much does the decoder use s? Held-out eps-MSE with each image's own s = f(x0) versus with the
    s of another image (a seeded derangement), on the same t and noise.

    gain = (L_other - L_own) / L_other: 0 for a decoder that ignores s; larger means s tells the decoder
    more about x0. Cheap (two passes over ``images``), unlike decoding with shuffled s.
    """
    dev = next(model.parameters()).device
    s_all = torch.cat([model.prototypes(images[i:i + 256].to(dev)).s.cpu() for i in range(0, len(images), 256)])
    other = s_all[derangement(len(images), seed)]
    own = heldout_loss(model, images, schedule, seed=seed, cond=s_all)
    shuffled = heldout_loss(model, images, schedule, seed=seed, cond=other)
    gain = {k: (shuffled[k] - own[k]) / shuffled[k] for k in own}
    return {"n": int(len(images)), "loss_own_s": own["loss"], "loss_other_s": shuffled["loss"],
            "gain": gain["loss"], **{f"gain_{k[5:]}": v for k, v in gain.items() if k != "loss"}}
