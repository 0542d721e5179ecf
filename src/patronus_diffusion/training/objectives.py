"""Per-family training objectives and preview samplers, so one training loop serves every family.

An objective maps a batch to per-image losses; the trainer averages, logs per timestep quartile,
and adds any regulariser the objective returns.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from ..config import RunConfig
from ..data import DataError
from ..diffusion.guidance import sample_class_guided
from ..diffusion.samplers import get_sampler
from ..diffusion.schedule import NoiseSchedule
from ..models.prototypes import prototype_distinct_loss, similarity_correlation_loss


@dataclass
class LossOutput:
    per_image: torch.Tensor  # (B,) denoising loss of each image
    extra: torch.Tensor | None = None  # regulariser already weighted
    logs: dict[str, float] | None = None


def _unwrap(model: torch.nn.Module) -> torch.nn.Module:
    return getattr(model, "module", model)


@dataclass
class BatchDraws:
    """The per-image random numbers of one training step, drawn for the whole *global* batch.

    t (timesteps), noise and cond_u (uniforms on [0, 1): a row gets the null condition when cond_u < p) come
    from the trainer's dedicated generator, so K data-parallel ranks slicing these draws see exactly what one
    process with the global batch sees, and a resumed run continues the same stream.
    """
    t: torch.Tensor
    noise: torch.Tensor
    cond_u: torch.Tensor

    def slice(self, rank: int, world: int) -> "BatchDraws":
        return BatchDraws(self.t[rank::world], self.noise[rank::world], self.cond_u[rank::world])


def draw_batch(gen: torch.Generator, shape: torch.Size, schedule: NoiseSchedule, cfg: RunConfig) -> BatchDraws:
    """t ~ U{0..T-1} (ProtoDiffusion: the first low_t_fraction of the global batch folded to t mod low_t_max),
    noise ~ N(0, I) and the condition-drop uniforms, for a global batch of ``shape``."""
    t = torch.randint(0, schedule.num_timesteps, (shape[0],), generator=gen)
    if cfg.family == "protodiffusion":
        t = fold_low_timesteps(t, cfg.protodiff.low_t_fraction, cfg.protodiff.low_t_max)
    noise = torch.randn(shape, generator=gen)
    return BatchDraws(t, noise, torch.rand(shape[0], generator=gen))


def patronus_objective(model, x0, labels, t, noise, schedule: NoiseSchedule, cfg: RunConfig, amp,
                       cond_u: torch.Tensor | None = None) -> LossOutput:
    """L = mean ||eps - eps_theta(x_t, t, s(x_0))||^2 (+ the weighted regularisers of ``cfg.train``).

    s is computed from the clean x_0 in fp32; gradients reach the UNet, the encoder and the prototypes.
    Options that make s steer the decoder (all off in the reference):

    - ``cond_dropout`` p: a row gets the null condition with probability p (classifier-free guidance on s),
      decided by ``cond_u`` < p (:class:`BatchDraws`; drawn from torch's global RNG when not given);
    - ``honour_weight``: extra rows with one prototype of s edited, whose predicted clean image must re-encode to
      the edited s (:func:`honour_loss`); they run in the same network call as the batch;
    - ``cluster_weight``: :func:`cluster_cost` keeps prototypes near real patches;
    - ``decorrelate_weight``: the mean squared correlation of s between prototypes over the batch
      (:func:`~..models.prototypes.similarity_correlation_loss`).
    """
    inner = _unwrap(model)
    tc = cfg.train
    need_map = tc.cluster_weight > 0
    match = inner.prototypes(x0, return_map=need_map)
    s = match.s
    x_t = schedule.q_sample(x0, t, noise)
    b = x0.shape[0]
    if cond_u is None:
        cond_u = torch.rand(b)
    uncond = cond_u.to(x0.device) < tc.cond_dropout if tc.cond_dropout > 0 else None
    honour = _honour_batch(x0, s.detach(), schedule, tc) if tc.honour_weight > 0 else None
    x_in, t_in, s_in = x_t, t, s
    contrast = honour is not None and tc.honour_mode == "contrast"
    if honour is not None:  # edited rows (and, for the contrast, the same x_t unedited) in the same network call
        reps = 2 if contrast else 1
        x_in, t_in = torch.cat([x_t] + [honour["x_t"]] * reps), torch.cat([t] + [honour["t"]] * reps)
        s_in = torch.cat([s, honour["s"]] + ([honour["s_base"]] if contrast else []))
        if uncond is not None:
            uncond = torch.cat([uncond, torch.zeros(reps * honour["t"].shape[0], dtype=torch.bool,
                                                    device=x0.device)])
    with amp:
        eps_all = model(x_in, t_in, s_in, uncond) if uncond is not None else model(x_in, t_in, s_in)
    eps = eps_all[:b]
    per = ((eps.float() - noise) ** 2).flatten(1).mean(1)
    extra, logs = torch.zeros((), device=x0.device), {}
    if tc.distinct_weight > 0:
        d = prototype_distinct_loss(inner.prototypes.prototypes, tc.distinct_margin, tc.distinct_metric)
        extra = extra + tc.distinct_weight * d
        logs["distinct"] = float(d.detach())
    if tc.decorrelate_weight > 0:
        r2 = similarity_correlation_loss(s)
        extra = extra + tc.decorrelate_weight * r2
        logs["decorrelate"] = float(r2.detach())
    if need_map:
        c = cluster_cost(match.distance_map)
        extra = extra + tc.cluster_weight * c
        logs["cluster"] = float(c.detach())
    if honour is not None:
        k = honour["t"].shape[0]
        h = (honour_contrast_loss(inner.prototypes, honour, eps_all[b:b + k].float(), eps_all[b + k:].float(),
                                  schedule, s.detach()) if contrast
             else honour_loss(inner.prototypes, honour, eps_all[b:].float(), schedule, s.detach()))
        extra = extra + tc.honour_weight * h
        logs["honour"] = float(h.detach())
    return LossOutput(per, extra if logs else None, logs)


def cluster_cost(distance_map: torch.Tensor) -> torch.Tensor:
    """Unsupervised ProtoPNet cluster cost on squared patch distances d (B, P, H, W), scale-free:

        [ mean_b min_{j,h,w} d_{b,j,h,w}  +  mean_j min_{b,h,w} d_{b,j,h,w} ]  /  mean(d)

    The first term puts every image near some prototype, the second every prototype near some real patch of
    the batch. Dividing by the mean distance makes it blind to a uniform rescaling of the feature space, so it
    cannot be lowered by shrinking all features towards one point.
    """
    flat_b = distance_map.flatten(1)  # (B, P*H*W)
    per_image = flat_b.min(1).values.mean()
    per_proto = distance_map.transpose(0, 1).flatten(1).min(1).values.mean()
    return (per_image + per_proto) / distance_map.mean().clamp_min(1e-6)


def _honour_batch(x0: torch.Tensor, s: torch.Tensor, schedule: NoiseSchedule, tc) -> dict[str, torch.Tensor]:
    """Rows for the honour loss: the first ``honour_fraction`` of the batch, each with one random prototype J
    set to the batch's largest or smallest s_J (so raising and lowering are both asked), noised at t drawn
    uniformly from ``honour_t``."""
    k = max(1, int(round(tc.honour_fraction * x0.shape[0])))
    dev = x0.device
    j = torch.randint(0, s.shape[1], (k,), device=dev)
    raise_it = torch.rand(k, device=dev) < 0.5
    value = torch.where(raise_it, s.max(0).values[j], s.min(0).values[j])
    target = s[:k].clone()
    target[torch.arange(k, device=dev), j] = value
    lo, hi = tc.honour_t
    t = torch.randint(lo, hi, (k,), device=dev)
    noise = torch.randn_like(x0[:k])
    return {"x_t": schedule.q_sample(x0[:k], t, noise), "t": t, "s": target, "s_base": s[:k], "j": j}


def _reencode_prediction(prototypes: torch.nn.Module, x_t: torch.Tensor, t: torch.Tensor, eps: torch.Tensor,
                         schedule: NoiseSchedule) -> torch.Tensor:
    """s of the predicted clean image x0_hat = (x_t - sqrt(1 - abar) eps) / sqrt(abar), read by the prototype
    network with its parameters detached (only the UNet learns from it)."""
    ab = schedule.alphas_cumprod.to(eps.device)[t].float().view(-1, 1, 1, 1)
    x0_hat = (x_t - (1 - ab).sqrt() * eps) / ab.sqrt()
    frozen = {k: v.detach() for k, v in prototypes.named_parameters()}
    return torch.func.functional_call(prototypes, frozen, (x0_hat,)).s


def honour_contrast_loss(prototypes: torch.nn.Module, honour: dict[str, torch.Tensor], eps_edit: torch.Tensor,
                         eps_base: torch.Tensor, schedule: NoiseSchedule, s_batch: torch.Tensor) -> torch.Tensor:
    """The contrastive honour loss: the same x_t decoded under the edited s' and under s; with J the edited
    coordinate and sd_J its batch std (detached),

        mean_b huber( ((s_J(x0_hat(s')) - s_J(x0_hat(s))) - (s'_J - s_J)) / sd_J )

    Only the change of the edited prototype between the two predictions is asked for, so a decoder that ignores
    s (both predictions equal) pays the full requested change; the encoder is frozen in the term."""
    k = honour["j"].shape[0]
    rows, j = torch.arange(k, device=eps_edit.device), honour["j"]
    both = _reencode_prediction(prototypes, honour["x_t"].repeat(2, 1, 1, 1), honour["t"].repeat(2),
                                torch.cat([eps_edit, eps_base]), schedule)  # one encoder pass for both
    got = both[:k][rows, j] - both[k:][rows, j]
    want = honour["s"][rows, j] - honour["s_base"][rows, j]
    sd = s_batch.std(0).clamp_min(1e-6)[j]
    return torch.nn.functional.huber_loss((got - want) / sd, torch.zeros_like(got), delta=1.0)


def honour_loss(prototypes: torch.nn.Module, honour: dict[str, torch.Tensor], eps: torch.Tensor,
                schedule: NoiseSchedule, s_batch: torch.Tensor) -> torch.Tensor:
    """Does the decoder draw what the (edited) s asks for?  With x0_hat = (x_t - sqrt(1 - abar) eps) / sqrt(abar)
    the predicted clean image under the edited s', the loss is

        mean_{b, k} huber( (s_k(x0_hat) - s'_k) / sd_k ),   sd_k = std of s_k over the batch (detached),

    read by the prototype network with its parameters *detached*: only the UNet learns from it, so the encoder
    cannot collapse s to make the term small. Dividing by sd_k makes each prototype count alike whatever its range;
    the Huber loss (quadratic below 1 sd, linear above) keeps a young decoder's huge errors from dominating.
    """
    s_hat = _reencode_prediction(prototypes, honour["x_t"], honour["t"], eps, schedule)
    sd = s_batch.std(0).clamp_min(1e-6)
    return torch.nn.functional.huber_loss((s_hat - honour["s"]) / sd, torch.zeros_like(s_hat), delta=1.0)


@torch.no_grad()
def patronus_preview(model, x0, labels, schedule: NoiseSchedule, cfg: RunConfig, seed: int) -> torch.Tensor:
    """Decode fresh noise with the s of fixed reference images (the reference's training previews)."""
    s = model.prototypes(x0).s
    g = torch.Generator(device="cpu").manual_seed(seed)
    x_T = torch.randn(x0.shape, generator=g).to(x0.device)
    fn = lambda x, t: model(x, t, s)  # noqa: E731
    return get_sampler(cfg.sample.sampler)(fn, x_T, schedule, cfg.sample.steps,
                                         clip_x0=cfg.sample.clip_x0).clamp(-1, 1)


# ---------------------------------------------------------------------------- ProtoDiffusion
def fold_low_timesteps(t: torch.Tensor, fraction: float, low_max: int) -> torch.Tensor:
    """Map the first floor(B * fraction) timesteps to t mod low_max (deterministic given t)."""
    k = int(t.shape[0] * fraction)
    if k == 0:
        return t
    t = t.clone()
    t[:k] = t[:k] % low_max
    return t


def protodiff_objective(model, x0, labels, t, noise, schedule: NoiseSchedule, cfg: RunConfig, amp,
                        cond_u: torch.Tensor | None = None) -> LossOutput:
    """L = mean ||eps - eps_theta(x_t, t, y')||^2 with y' = -1 (null) where cond_u < p_uncond, else y.

    The reference's over-sampling of small t (a fraction ``low_t_fraction`` of the batch folded to t mod
    low_t_max, off by default) is applied to the global batch by :func:`draw_batch`, before ranks slice it.
    ``cond_u`` comes from :class:`BatchDraws` (torch's global RNG when not given).
    """
    pc = cfg.protodiff
    if labels.numel() and int(labels.min()) < 0:
        raise DataError("some training images have no class label (-1); ProtoDiffusion needs labelled data")
    if cond_u is None:
        cond_u = torch.rand(labels.shape[0])
    drop = cond_u.to(labels.device) < pc.p_uncond
    y = torch.where(drop, torch.full_like(labels, -1), labels)
    x_t = schedule.q_sample(x0, t, noise)
    with amp:
        eps = model(x_t, t, y)
    per = ((eps.float() - noise) ** 2).flatten(1).mean(1)
    return LossOutput(per, None, {"uncond_fraction": float(drop.float().mean())})


@torch.no_grad()
def protodiff_preview(model, x0, labels, schedule: NoiseSchedule, cfg: RunConfig, seed: int) -> torch.Tensor:
    """One guided sample per class (the first 16 classes), with the config's sampler and w."""
    y = torch.arange(min(cfg.protodiff.num_classes, 16))
    return sample_class_guided(model, cfg, y, seed=seed)


# One (objective, preview) pair per model family; the trainer looks up OBJECTIVES[cfg.family].
OBJECTIVES: dict[str, tuple[Callable, Callable]] = {
    "patronus": (patronus_objective, patronus_preview),
    "protodiffusion": (protodiff_objective, protodiff_preview),
}
