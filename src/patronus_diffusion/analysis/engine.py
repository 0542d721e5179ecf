"""The edit engine: an edit plan -> one batched run -> an edit result, for every edit-based analysis.

Every Patronus explanation edits the prototype-similarity vector s of real images and decodes them again:

    s = f(x0)  ->  x_T = DDIM-invert(x0, s)  ->  s'_e = edit_e(s)  ->  x_hat_e = DDIM(x_T, s'_e)  ->  s(x_hat_e)

:class:`EditPlan` says which images, which edits (which prototypes, which values, already resolved),
how many steps and which sampler, and what else to decode from the same inversion: the unedited
reconstruction, an interpolation path between two images, seeded variations, step-by-step traces.
:func:`run_plan` inverts the images once (cached per model object, images, s and steps:
:func:`~.editing.invert_images`), decodes the reconstruction, every edit and the path in ONE batched
decode call (the model chunks it by its batch size), re-encodes everything in ONE encode call, and
measures every edit's faithfulness with the one measure of :mod:`.measures` (rise, others, off-target),
against s(reconstruction) when the plan decodes one, else against s(x0); the result names the baseline.

The :class:`EditResult` holds the decoded images, s requested and reached, best-match locations
(hence receptive-field boxes), rise/others, the reconstruction, the reference set X and the seconds.
The analyses (:mod:`.edits`, :mod:`.explain`, :mod:`.when`, :mod:`.evaluate_edits`,
:mod:`.shortcut`) build plans and turn results into figures and tables; none decodes on its own.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace as with_fields
from typing import Sequence

import numpy as np
import torch

from ..utils.errors import UsageError
from .editing import (
    EditOp,
    Inverted,
    Reference,
    edit_s,
    faithfulness,
    faithfulness_summary,
    invert_images,
    lerp_s,
    parse_edit,
    reference_set,
    resolve_op,
    resolve_value,
    slerp,
)
from .measures import BASELINES, DEFINITIONS as MEASURE_DEFINITIONS

Box = tuple[int, int, int, int]

FAITHFULNESS_DEFINITION = {**MEASURE_DEFINITIONS, "baselines": BASELINES}
"""The one measure of an edit (:mod:`.measures`), quoted by every result that reports it."""


# ------------------------------------------------------------------------------ edits
@dataclass(frozen=True, eq=False)
class Edit:
    """One edited version of every image of a plan: s' = the operations applied in order to s(x0).

    ``values[i]`` is the resolved number of ``ops[i]`` (set: the target s'_J; scale: the factor; add: the
    delta): a float, or a (B,) tensor of per-image values. Values are resolved when the edit is made, so a
    bad value fails before any inversion runs. ``given`` replaces the operations by an explicit s' (B, P);
    ``measured`` lists the prototypes whose rise is measured (default: the edited ones).
    """

    label: str
    ops: tuple[EditOp, ...] = ()
    values: tuple = ()
    given: torch.Tensor | None = None
    measured: tuple[int, ...] | None = None

    @classmethod
    def parse(cls, spec: str, num_prototypes: int, reference: Reference | None = None) -> "Edit":
        """``"3=max,5=0,7*1.5,2+0.5"`` (values: a number, max, 1.5max or q0.9 over the reference set X)."""
        ops = tuple(parse_edit(spec, num_prototypes))
        return cls(label=spec, ops=ops, values=tuple(resolve_op(op, reference) for op in ops))

    @classmethod
    def set(cls, prototype: int, value, reference: Reference | None = None, label: str | None = None) -> "Edit":
        """s_J := value, where value is a number, a token (max, 1.5max, q0.9) or a (B,) tensor per image."""
        if isinstance(value, torch.Tensor):
            v, text = value.detach().flatten().float(), "per-image"
        else:
            v, text = resolve_value(value, prototype, reference), str(value)
        return cls(label=label if label is not None else f"{prototype}={text}",
                   ops=(EditOp(int(prototype), "set", text),), values=(v,))

    @classmethod
    def set_all(cls, values: dict, label: str) -> "Edit":
        """s_J := values[J] for every J given (numbers or (B,) tensors), applied together."""
        edits = [cls.set(j, v) for j, v in values.items()]
        return cls(label=label, ops=tuple(e.ops[0] for e in edits), values=tuple(e.values[0] for e in edits))

    @classmethod
    def replace(cls, s_edit: torch.Tensor, measured: Sequence[int], label: str = "s'") -> "Edit":
        """An explicit s' (B, P) whose rise is measured over ``measured``."""
        return cls(label=label, given=s_edit, measured=tuple(int(j) for j in measured))

    @property
    def prototypes(self) -> list[int]:
        """The prototypes whose faithfulness is measured: the edited ones, sorted."""
        return list(self.measured) if self.measured is not None else sorted({op.prototype for op in self.ops})

    @property
    def prototype(self) -> int:
        """The first edited prototype (the one boxed in figures)."""
        return self.ops[0].prototype if self.ops else (self.prototypes[0] if self.prototypes else 0)

    def apply(self, s: torch.Tensor) -> torch.Tensor:
        if self.given is not None:
            return self.given.to(s.dtype).clone()
        out = s
        for op, v in zip(self.ops, self.values):
            out = edit_s(out, [op.prototype], v.to(s.dtype)[:, None] if isinstance(v, torch.Tensor) else v, op.mode)
        return out


# ------------------------------------------------------------------------------ the plan
@dataclass
class EditPlan:
    """What to decode from one set of images and their inverted x_T (see the module docstring).

    images (B, C, H, W) in [-1, 1]; ``edits`` E edited versions of every image; ``reconstruction``: decode
    s(x0) unedited too; ``alphas``: interpolation points between image 0 and image 1 (s = lerp(s_A, s_B),
    x_T = slerp(x_T^A, x_T^B)); ``variations``: decodes of s(x0) from that many seeded x_T ~ N(0, I) per
    image; ``trace``: record s of the predicted x0 at every sampling step (reconstruction and edits).
    ``steps``/``sampler`` default to the run's sample.ddim_steps and sample.decode_sampler; ``seed`` is
    the noise seed of the variations (and is reported with the results); ``inverted`` skips the inversion.
    ``guidance`` w > 0 decodes (reconstruction, edits, path) with classifier-free guidance on s,
    eps(s') + w (eps(s') - eps(null)), for models trained with ``train.cond_dropout``; the inversion stays
    unguided, and rise is then measured against the guided reconstruction from the same x_T.
    ``edit_guidance`` w > 0 decodes every edit s' with guidance on the edit difference,
    eps(s') + w (eps(s') - eps(s)), s = the image's own unedited s: it amplifies what the edit changes, needs no
    null condition, and leaves the reconstruction (s' = s) the plain conditional decode, so rise is measured
    against the same reconstruction as without it. It costs two network evaluations per edited row and step.
    """

    images: torch.Tensor
    edits: list[Edit] = field(default_factory=list)
    names: list[str] | None = None
    steps: int | None = None
    sampler: str | None = None
    reference: Reference | None = None
    reconstruction: bool = False
    alphas: list[float] = field(default_factory=list)
    variations: int = 0
    seed: int = 0
    trace: bool = False
    guidance: float | None = None
    edit_guidance: float | None = None
    inverted: Inverted | None = None

    def __post_init__(self) -> None:
        if isinstance(self.edits, (str, Edit)):
            self.edits = [self.edits]
        bad = [type(e).__name__ for e in self.edits if not isinstance(e, (str, Edit))]
        if bad:
            raise UsageError(f"edits must be Edit objects or specs like '3=max' or '3=max,11=0', got {bad[0]}")

    @property
    def batch(self) -> int:
        return int(self.images.shape[0])

    def resolved(self, pat) -> "EditPlan":
        """This plan with every spec string (``"3=max"``) parsed into an :class:`Edit` for ``pat``'s prototypes,
        its values resolved with the plan's reference set X (``pat``'s default one, :func:`~.editing.reference_set`,
        when a spec needs one and the plan has none)."""
        if not any(isinstance(e, str) for e in self.edits):
            return self
        p = pat.num_prototypes
        ref = self.reference
        if ref is None and any(_needs_reference(e, p) for e in self.edits if isinstance(e, str)):
            ref = reference_set(pat)
        edits = [Edit.parse(e, p, ref) if isinstance(e, str) else e for e in self.edits]
        return with_fields(self, edits=edits, reference=ref)

    def check(self, num_prototypes: int) -> None:
        """Every cheap check, before any inversion: prototype ids, per-image value counts, image counts."""
        if self.steps is not None and self.steps < 1:
            raise UsageError("steps must be at least 1")
        if self.edit_guidance is not None and self.edit_guidance < 0:
            raise UsageError(f"the edit-guidance weight must be >= 0 (0 = none), got {self.edit_guidance}")
        b = self.batch
        for e in self.edits:
            if isinstance(e, str):  # a spec run_plan parses (its values need the reference set)
                parse_edit(e, num_prototypes)
                continue
            bad = [op.prototype for op in e.ops if not 0 <= op.prototype < num_prototypes]
            bad += [j for j in (e.measured or ()) if not 0 <= j < num_prototypes]
            if bad:
                raise UsageError(f"edit {e.label!r}: prototype id(s) {bad} out of range 0 ... {num_prototypes - 1}")
            for v in e.values:
                if isinstance(v, torch.Tensor) and v.numel() != b:
                    raise UsageError(f"edit {e.label!r}: {v.numel()} per-image values for {b} images")
            if e.given is not None and tuple(e.given.shape) != (b, num_prototypes):
                raise UsageError(f"edit {e.label!r}: s' must have shape ({b}, {num_prototypes}), "
                                 f"got {tuple(e.given.shape)}")
        if self.alphas and b != 2:
            raise UsageError(f"interpolation needs exactly 2 images, got {b}")
        if self.variations < 0:
            raise UsageError("the number of variations must not be negative")


def _needs_reference(spec: str, num_prototypes: int) -> bool:
    """True when a spec sets a value given relative to the reference set X (max, 1.5max, q0.9)."""
    for op in parse_edit(spec, num_prototypes):
        if op.mode == "set":
            try:
                float(op.value)
            except ValueError:
                return True
    return False


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
                 against: torch.Tensor | None = None) -> torch.Tensor:
    """The engine's one decode call: rows of (x_T, s) -> images in [-1, 1] (the model chunks the batch).

    ``against`` (one row per row of s) turns ``guidance`` into guidance on the difference eps(s) - eps(against)."""
    opts = {} if guidance is None else {"guidance": guidance}
    if guidance and against is not None:
        opts["against"] = against
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


# ------------------------------------------------------------------------------ the result
@dataclass
class EditResult:
    """Everything one plan decoded, re-encoded and measured.

    images (E, B, C, H, W) edit e of image i; s_requested / s_after (E, B, P) s' asked for and s of the
    decoded image; location (E, B, P, 2) best-match unit of every prototype there; rise / others /
    off_target (E, B) faithfulness (:mod:`.measures`) against ``baseline``: s(reconstruction) when the plan
    decoded one ("recon"), else s(x0) ("x0"). reconstruction (B, C, H, W) with s_reconstruction (B, P) when planned;
    path (A, C, H, W) with s_path_requested / s_path (A, P) for an interpolation; variations
    (B, k, C, H, W) with s_variations (B, k, P); t (S,) and trajectory (S, R + E, B, P) for a trace
    (condition 0 = the reconstruction when planned). seconds: decoding and re-encoding; invert_seconds:
    the inversion (near 0 when cached).
    """

    plan: EditPlan
    inverted: Inverted
    run: str
    sampler: str
    receptive_field: object | None
    images: torch.Tensor
    s_requested: torch.Tensor
    s_after: torch.Tensor
    location: torch.Tensor | None
    rise: torch.Tensor
    others: torch.Tensor
    off_target: torch.Tensor | None = None
    baseline: str = "x0"
    reconstruction: torch.Tensor | None = None
    s_reconstruction: torch.Tensor | None = None
    location_reconstruction: torch.Tensor | None = None
    path: torch.Tensor | None = None
    s_path_requested: torch.Tensor | None = None
    s_path: torch.Tensor | None = None
    variations: torch.Tensor | None = None
    s_variations: torch.Tensor | None = None
    t: np.ndarray | None = None
    trajectory: torch.Tensor | None = None
    seconds: float = 0.0
    invert_seconds: float = 0.0

    @property
    def x0(self) -> torch.Tensor:
        return self.inverted.x0

    @property
    def s(self) -> torch.Tensor:
        """s(x0) of the input images (B, P)."""
        return self.inverted.s

    @property
    def x_T(self) -> torch.Tensor:
        """The inverted noise every edit was decoded from (B, C, H, W)."""
        return self.inverted.x_T

    @property
    def steps(self) -> int:
        return self.inverted.steps

    @property
    def edits(self) -> list[Edit]:
        return self.plan.edits

    @property
    def reference(self) -> Reference | None:
        return self.plan.reference

    @property
    def names(self) -> list[str]:
        return self.plan.names or [f"image {i}" for i in range(self.x0.shape[0])]

    def box(self, e: int, i: int, j: int | None = None) -> Box:
        """Receptive-field box of prototype j's best match in edit e of image i (j: the edit's first prototype)."""
        j = self.edits[e].prototype if j is None else j
        h, w = self.location[e, i, j].tolist()
        return self.receptive_field.box(int(h), int(w))

    def boxes(self, e: int, j: int | None = None) -> list[Box]:
        return [self.box(e, i, j) for i in range(self.images.shape[1])]

    def faithfulness(self, e: int | None = None) -> dict:
        """:func:`~.editing.faithfulness_summary` of edit e (or of all edits together)."""
        off = self.off_target
        if e is None:
            return faithfulness_summary(self.rise, self.others, off, self.baseline)
        return faithfulness_summary(self.rise[e], self.others[e], None if off is None else off[e], self.baseline)

    def reconstruction_psnr(self) -> torch.Tensor:
        from ..utils.images import psnr

        return psnr(self.reconstruction, self.x0)

    # -------------------------------------------------------------- display (notebooks)
    def __repr__(self) -> str:
        b, e = self.x0.shape[0], len(self.edits)
        labels = ", ".join(x.label for x in self.edits)
        labels = labels if len(labels) <= 60 else labels[:57] + "..."
        rise = self.faithfulness()["rise_median"] if e else None
        tail = f", median rise {rise:.2f} vs {self.baseline}" if rise is not None else ""
        return (f"EditResult({b} image{'s' * (b != 1)} x {e} edit{'s' * (e != 1)} [{labels}], {self.sampler} "
                f"{self.steps} steps{tail})")

    def summary(self) -> dict:
        """The numbers without the tensors: per edit its label and median rise / others / off-target (with the
        baseline they were measured against), and the run's images, steps, sampler and seconds."""
        edits = []
        for k, e in enumerate(self.edits):
            f = self.faithfulness(k)
            edits.append({"edit": e.label, **{key: f[key] for key in ("rise_median", "n_rise", "others_median",
                                                                       "off_target_median") if key in f}})
        return {"images": int(self.x0.shape[0]), "edits": edits, "baseline": self.baseline, "steps": self.steps,
                "sampler": self.sampler, "seconds": round(self.seconds + self.invert_seconds, 3)}

    def to_pil(self, upscale: int = 2):
        """One PIL image: a row per input image, columns input | reconstruction (when decoded) | each edit."""
        from ..utils.images import grid_image

        cols = [self.x0[None]] + ([self.reconstruction[None]] if self.reconstruction is not None else [])
        cols.append(self.images)
        grid = torch.cat(cols).transpose(0, 1).reshape(-1, *self.x0.shape[1:])
        return grid_image(grid, nrow=sum(c.shape[0] for c in cols), upscale=upscale)

    def _repr_png_(self) -> bytes:
        from ..utils.images import png_bytes

        return png_bytes(self.to_pil())

    def meta(self, **more) -> dict:
        """The provenance every result file starts with: run, images, seed, steps, sampler, reference set X."""
        m = {"run": self.run, "images": self.names, "seed": self.plan.seed, "steps": self.steps,
             "sampler": self.sampler}
        if self.reference is not None:
            m["reference"] = self.reference.to_json()
        if self.plan.guidance:
            m["guidance"] = self.plan.guidance
        if self.plan.edit_guidance:
            m["edit_guidance"] = self.plan.edit_guidance
        m.update(more)
        return m


# ------------------------------------------------------------------------------ the run
def run_plan(pat, plan: EditPlan, progress: bool = False) -> EditResult:
    """Invert (cached), decode every planned condition in one batched call, re-encode, measure."""
    sample_cfg = pat.config.sample  # duck-typed: a stand-in model may carry only some keys
    cfg_w = plan.guidance if plan.guidance is not None else float(getattr(sample_cfg, "guidance", 0.0))
    if plan.edit_guidance is None:  # the run's default (sample.edit_guidance), unless CFG on s is in force
        default = 0.0 if cfg_w else float(getattr(sample_cfg, "edit_guidance", 0.0))
        plan = with_fields(plan, edit_guidance=default or None)
    if plan.edit_guidance and cfg_w:
        raise UsageError(f"edit guidance {plan.edit_guidance:g} and classifier-free guidance on s ({cfg_w:g}, "
                         f"--guidance or the run's sample.guidance) cannot be combined; set one of them to 0")
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
    decoded = (decode_batch(pat, torch.cat(xs), torch.cat(ss), steps, plan.sampler, progress, recorder, w, vs)
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
    fs = [faithfulness(s_base, s_req[k], s_cond[r + k], edit.prototypes) for k, edit in enumerate(plan.edits)]
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


# ------------------------------------------------------------------------------ the older entry points, on the engine
@dataclass
class EditOutcome:
    """Decoded edits and their faithfulness: images (E, B, C, H, W), s_after (E, B, P),
    rise/others (E, B) as in :func:`~.editing.faithfulness` (against s(x0), the inputs' own s)."""

    images: torch.Tensor
    s_requested: torch.Tensor
    s_after: torch.Tensor
    rise: torch.Tensor
    others: torch.Tensor


def run_edits(pat, inv: Inverted, s_list: torch.Tensor, edited: Sequence[Sequence[int]],
              steps: int | None = None, sampler: str | None = None, progress: bool = False) -> EditOutcome:
    """Decode every edited s' (E, B, P) from the images' inverted x_T (one batched call), re-encode the
    results, and measure each edit's faithfulness over the prototypes listed in ``edited[e]``."""
    if len(edited) != s_list.shape[0]:
        raise UsageError(f"{s_list.shape[0]} edits but {len(edited)} lists of edited prototypes")
    plan = EditPlan(images=inv.x0, edits=[Edit.replace(s_list[k], edited[k], f"edit {k}") for k in range(len(edited))],
                    steps=steps or inv.steps, sampler=sampler, inverted=inv)
    res = run_plan(pat, plan, progress)
    return EditOutcome(images=res.images, s_requested=res.s_requested, s_after=res.s_after, rise=res.rise,
                       others=res.others)


def decode_many(pat, x_T: torch.Tensor, s_list: torch.Tensor, steps: int, sampler: str | None = None,
                progress: bool = False) -> torch.Tensor:
    """Decode E conditions per x_T in one batched call: x_T (B, ...), s_list (E, B, P) -> (E, B, C, H, W)."""
    e, b = s_list.shape[:2]
    flat_x = x_T.unsqueeze(0).expand(e, *x_T.shape).reshape(e * b, *x_T.shape[1:])
    out = decode_batch(pat, flat_x, s_list.reshape(e * b, -1), steps, sampler, progress)
    return out.reshape(e, b, *out.shape[1:])


def decode_edit(pat, inv: Inverted, s_edit: torch.Tensor, steps: int | None = None,
                progress: bool = False) -> torch.Tensor:
    """Decode the inverted x_T of every image under its edited s' (DDIM eta = 0, batched)."""
    return decode_batch(pat, inv.x_T, s_edit, steps or inv.steps, progress=progress)


def interpolate(pat, inv: Inverted, alphas: Sequence[float], steps: int | None = None, sampler: str | None = None,
                progress: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Between image A = row 0 and B = row 1 of ``inv``: s(alpha) = lerp(s_A, s_B), x_T(alpha) =
    slerp(x_T^A, x_T^B); all alphas decoded in one batch. Returns (images (A, C, H, W), s (A, P));
    alpha = 0 and 1 are exactly the two reconstructions' conditions."""
    if inv.s.shape[0] != 2:
        raise UsageError(f"interpolation needs exactly 2 images, got {inv.s.shape[0]}")
    res = run_plan(pat, EditPlan(images=inv.x0, alphas=list(alphas), steps=steps or inv.steps, sampler=sampler,
                                 inverted=inv), progress)
    return res.path, res.s_path_requested


variations = sample_variations
