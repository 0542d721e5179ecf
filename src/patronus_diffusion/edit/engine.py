"""The edit engine: an edit plan -> one batched run -> an edit result, for every edit-based analysis.

Every Patronus explanation edits the prototype-similarity vector s of real images and decodes them again:

    s = f(x0)  ->  x_T = DDIM-invert(x0, s)  ->  s'_e = edit_e(s)  ->  x_hat_e = DDIM(x_T, s'_e)  ->  s(x_hat_e)

Only s changes; x_T keeps the image's remaining detail, so each decoded image differs from the reconstruction by
what the edited prototypes stand for. :func:`run_plan` inverts the images of an :class:`~.plan.EditPlan` once
(cached on the model object: :func:`~.inversion.invert_images`), decodes the reconstruction, every edit and the
interpolation path in ONE batched decode call (the model chunks it by its batch size), re-encodes everything in
ONE encode call, and measures every edit with the one measure of :mod:`.measures` (rise, others, off-target),
against s(reconstruction) when the plan decodes one, else against s(x0); the :class:`~.result.EditResult` names
the baseline. The analyses build plans and turn results into figures and tables; none decodes on its own.
"""

from __future__ import annotations

import time
from dataclasses import replace as with_fields

import numpy as np
import torch

from ..diffusion.schedule import FULL_WINDOW
from ..utils.errors import UsageError
from .inversion import invert_images
from .measures import measure_edit
from .plan import EditPlan
from .result import EditResult


# ------------------------------------------------------------------------------ decoding primitives
class TrajectoryRecorder:
    """Sampler callback: re-encodes the predicted x0 at every step. ``pat.decode`` runs batch chunks one
    after another, so a step index of 0 starts a new chunk; chunks are concatenated along the batch."""

    def __init__(self, network):
        self.network = network
        self.chunks: list[list[torch.Tensor]] = []
        self.t: list[int] = []

    def __call__(self, info: dict) -> None:
        if info["i"] == 0:
            self.chunks.append([])
        if len(self.chunks) == 1:
            self.t.append(int(info["t"]))
        with torch.no_grad():
            self.chunks[-1].append(self.network(info["x0"].clamp(-1, 1)).s.cpu())

    def trajectories(self) -> torch.Tensor:
        """(S, N, P) for the N decoded images in batch order."""
        return torch.cat([torch.stack(c) for c in self.chunks], dim=1)


def decode_batch(pat, x_T: torch.Tensor, s: torch.Tensor, steps: int, sampler: str | None = None,
                 progress: bool = False, callback=None, guidance: float | None = None,
                 against: torch.Tensor | None = None, window: torch.Tensor | None = None,
                 outside: torch.Tensor | None = None) -> torch.Tensor:
    """The engine's one decode call: rows of (x_T, s) -> images in [-1, 1] (the model chunks the batch).

    ``against`` (one row per row of s) turns ``guidance`` into guidance on the difference eps(s) - eps(against).
    ``window`` (one (LO, HI) row per row of s) times each row's condition: s on the steps with LO <= t/T < HI,
    ``outside`` (the row's unedited s) on the others."""
    opts = {} if guidance is None else {"guidance": guidance}
    if guidance and against is not None:
        opts["against"] = against
    if window is not None:
        opts.update(window=window, outside=outside)
    return pat.decode(x_T, s, steps=steps, sampler=sampler, progress=progress, callback=callback,
                      **opts).clamp(-1, 1)


def sample_variations(pat, s: torch.Tensor, k: int, seed: int = 0, steps: int | None = None,
                      sampler: str | None = None, progress: bool = False) -> torch.Tensor:
    """Decode each row of s from ``k`` seeded x_T ~ N(0, I): (B, k, C, H, W), one batched call."""
    d = pat.config.data
    g = torch.Generator().manual_seed(seed)
    x_T = torch.randn((s.shape[0] * k, d.channels, d.image_size, d.image_size), generator=g)
    out = pat.sample(s.repeat_interleave(k, 0), sampler=sampler or pat.decode_sampler,
                     steps=steps or pat.config.sample.ddim_steps, seed=seed, x_T=x_T, progress=progress)
    return out.reshape(s.shape[0], k, d.channels, d.image_size, d.image_size)


def slerp(a: torch.Tensor, b: torch.Tensor, alpha: float) -> torch.Tensor:
    """Spherical interpolation of two noise tensors (flattened per row):

    slerp = [sin((1-alpha) theta) a + sin(alpha theta) b] / sin theta,  cos theta = <a, b> / (|a| |b|);
    exact endpoints at alpha = 0 and 1; falls back to lerp when a and b are (anti)parallel.
    """
    if alpha == 0.0:
        return a.clone()
    if alpha == 1.0:
        return b.clone()
    af, bf = a.flatten(1).double(), b.flatten(1).double()
    cos = (af * bf).sum(1) / (af.norm(dim=1) * bf.norm(dim=1)).clamp_min(1e-12)
    theta = torch.arccos(cos.clamp(-1, 1))[:, None]
    sin = torch.sin(theta)
    lerp = (1 - alpha) * af + alpha * bf
    sl = (torch.sin((1 - alpha) * theta) * af + torch.sin(alpha * theta) * bf) / sin.clamp_min(1e-12)
    out = torch.where(sin > 1e-6, sl, lerp)
    return out.to(a.dtype).reshape(a.shape)


def lerp_s(s_a: torch.Tensor, s_b: torch.Tensor, alpha: float) -> torch.Tensor:
    """(1 - alpha) s_A + alpha s_B, with exact endpoints (no rounding at alpha = 0 or 1)."""
    a = float(alpha)
    return s_a.clone() if a == 0 else s_b.clone() if a == 1 else (1 - a) * s_a + a * s_b


# ------------------------------------------------------------------------------ the run
def decode_guidance(pat, guidance: float | None = None, edit_guidance: float | None = None) -> tuple[float, float]:
    """(w of classifier-free guidance on s, w of guidance on the edit difference) that :func:`run_plan` decodes a
    plan with: each the plan's value, else the run's ``sample.guidance`` / ``sample.edit_guidance``; the run's
    edit guidance is not applied while CFG on s is in force, and both given is an error."""
    sample_cfg = pat.config.sample  # duck-typed: a stand-in model may carry only some keys
    cfg_w = float(guidance) if guidance is not None else float(getattr(sample_cfg, "guidance", 0.0))
    if edit_guidance is None:  # the run's default (sample.edit_guidance), unless CFG on s is in force
        edit_guidance = 0.0 if cfg_w else float(getattr(sample_cfg, "edit_guidance", 0.0))
    if edit_guidance and cfg_w:
        raise UsageError(f"edit guidance {edit_guidance:g} and classifier-free guidance on s ({cfg_w:g}, "
                         f"--guidance or the run's sample.guidance) cannot be combined; set one of them to 0")
    return cfg_w, float(edit_guidance)


def run_plan(pat, plan: EditPlan, progress: bool = False) -> EditResult:
    """Invert (cached), decode every planned condition in one batched call, re-encode, measure."""
    _, edit_w = decode_guidance(pat, plan.guidance, plan.edit_guidance)
    if plan.edit_guidance is None:
        plan = with_fields(plan, edit_guidance=edit_w or None)
    plan.check(pat.num_prototypes)  # spec strings are checked before the reference set is encoded for them
    plan = plan.resolved(pat)
    steps = plan.steps or (plan.inverted.steps if plan.inverted is not None else pat.config.sample.ddim_steps)
    t0 = time.time()
    inv = plan.inverted if plan.inverted is not None else invert_images(pat, plan.images, steps, progress=progress)
    invert_seconds = time.time() - t0

    # One decode batch, in this row order: [reconstruction] + edits (B rows each, from the images' own x_T),
    # then the interpolation path (one row per alpha); the variations follow from their own noise.
    t0 = time.time()
    b, p = inv.s.shape
    shape = tuple(inv.x0.shape[1:])  # of the images; x_T may be an EDICT state with twice the channels
    x_shape = tuple(inv.x_T.shape[1:])
    r, e, alphas = int(plan.reconstruction), len(plan.edits), [float(a) for a in plan.alphas]
    conds = [inv.s] * r + [edit.apply(inv.s) for edit in plan.edits]
    n_cond = len(conds) * b
    xs, ss, against = [], [], []
    if conds:
        xs.append(inv.x_T.unsqueeze(0).expand(len(conds), *inv.x_T.shape).reshape(n_cond, *x_shape))
        ss.append(torch.stack(conds).reshape(n_cond, p))
        against.append(inv.s.repeat(len(conds), 1))  # each row's unedited s (the edit difference's other end)
    if alphas:
        xs.append(torch.cat([slerp(inv.x_T[:1], inv.x_T[1:], a) for a in alphas]))
        ss.append(torch.stack([lerp_s(inv.s[0], inv.s[1], a) for a in alphas]))
        against.append(ss[-1])  # the path is no edit: its difference is zero
    recorder = TrajectoryRecorder(pat.model.prototypes) if plan.trace and xs else None
    w, vs = (plan.edit_guidance, torch.cat(against)) if plan.edit_guidance else (plan.guidance, None)
    # timed edits: each row's window (every step for the reconstruction, untimed edits and the path); outside its
    # window a row is conditioned on its unedited s (the same rows as the edit difference's other end)
    window = None
    if any(edit.window is not None for edit in plan.edits):
        rows = [FULL_WINDOW] * (r * b) + [edit.window or FULL_WINDOW for edit in plan.edits for _ in range(b)]
        window = torch.tensor(rows + [FULL_WINDOW] * len(alphas), dtype=torch.float64)
    decoded = (decode_batch(pat, torch.cat(xs), torch.cat(ss), steps, plan.sampler, progress, recorder, w, vs,
                            window, torch.cat(against) if window is not None else None)
               if xs else inv.x_T.new_zeros((0, *shape)))
    var = (sample_variations(pat, inv.s, plan.variations, plan.seed, steps, plan.sampler, progress)
           if plan.variations else None)

    # One re-encode of everything decoded.
    everything = decoded if var is None else torch.cat([decoded, var.reshape(-1, *shape)])
    if everything.shape[0]:
        match = pat.encode(everything)
        s_all, loc_all = match.s, getattr(match, "location", None)
    else:
        s_all, loc_all = inv.s.new_zeros((0, p)), None
    imgs = decoded[:n_cond].reshape(len(conds), b, *shape)
    s_cond = s_all[:n_cond].reshape(len(conds), b, p)
    loc_cond = None if loc_all is None else loc_all[:n_cond].reshape(len(conds), b, p, 2)

    # Faithfulness of every edit against the reconstruction's s when one was decoded (the inversion error is not
    # charged to the edit), else against s(x0); the result names which.
    s_req = torch.stack(conds[r:]) if e else inv.s.new_zeros((0, b, p))
    s_base = s_cond[0] if r else inv.s
    fs = [measure_edit(s_base, s_req[k], s_cond[r + k], edit.prototypes) for k, edit in enumerate(plan.edits)]
    res = EditResult(
        plan=plan, inverted=inv, run=str(getattr(pat, "run_dir", None)),
        sampler=plan.sampler or pat.decode_sampler,
        receptive_field=getattr(pat, "receptive_field", None) if loc_all is not None else None,
        images=imgs[r:], s_requested=s_req, s_after=s_cond[r:], location=None if loc_cond is None else loc_cond[r:],
        rise=torch.stack([f["rise"] for f in fs]) if e else torch.zeros(0, b),
        others=torch.stack([f["others"] for f in fs]) if e else torch.zeros(0, b),
        off_target=torch.stack([f["off_target"] for f in fs]) if e else torch.zeros(0, b),
        baseline="recon" if r else "x0", invert_seconds=invert_seconds)
    if r:
        res.reconstruction, res.s_reconstruction = imgs[0], s_cond[0]
        res.location_reconstruction = None if loc_cond is None else loc_cond[0]
    if alphas:
        res.path, res.s_path = decoded[n_cond:], s_all[n_cond:decoded.shape[0]]
        res.s_path_requested = ss[-1]
    if var is not None:
        res.variations = var
        res.s_variations = s_all[decoded.shape[0]:].reshape(b, plan.variations, p)
    if recorder is not None:
        res.t = np.array(recorder.t)
        res.trajectory = recorder.trajectories()[:, :n_cond].reshape(len(recorder.t), len(conds), b, p)
    res.seconds = time.time() - t0
    return res
