"""Edit plans: which images, which edits (resolved when made), and what else to decode from the same inversion.

An :class:`Edit` is one edited version of every image of a plan, s' = its operations applied to s(x0) (or an
explicit s'). An :class:`EditPlan` holds the images, the edits, the steps and sampler, the reference set X, and
what else to decode from the same inverted x_T: the unedited reconstruction, an interpolation path between two
images, seeded variations, step-by-step traces. Its named constructors build the plans of the edit analyses
(:meth:`EditPlan.edit`, :meth:`~EditPlan.sweep`, :meth:`~EditPlan.consistency`, :meth:`~EditPlan.interpolation`,
:meth:`~EditPlan.noise_variations`, :meth:`~EditPlan.emergence`), resolving every value at once so a bad one fails
before any inversion. :func:`~.engine.run_plan` runs a plan.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace as with_fields
from typing import Sequence

import numpy as np
import torch

from ..diffusion.schedule import check_window
from ..utils.errors import UsageError
from .inversion import Inverted
from .reference import Reference, reference_set
from .spec import EditOp, edit_s, parse_edit, resolve_op, resolve_value, split_window


# ------------------------------------------------------------------------------ edits
@dataclass(frozen=True, eq=False)
class Edit:
    """One edited version of every image of a plan: s' = the operations applied in order to s(x0).

    ``values[i]`` is the resolved number of ``ops[i]`` (set: the target s'_J; scale: the factor; add: the
    delta): a float, or a (B,) tensor of per-image values. Values are resolved when the edit is made, so a
    bad value fails before any inversion runs. ``given`` replaces the operations by an explicit s' (B, P);
    ``measured`` lists the prototypes whose rise is measured (default: the edited ones).

    ``window`` = (LO, HI) makes it a timed edit: s' conditions the decoder only at the sampling steps whose timestep
    t has LO <= t/T < HI (fractions of the schedule: 1 = pure noise, where decoding starts; 0 = the clean image),
    the image's unedited s at every other step. (0, 1) is the plain edit, (LO, LO) the reconstruction; None (the
    default) is every step.
    """

    label: str
    ops: tuple[EditOp, ...] = ()
    values: tuple = ()
    given: torch.Tensor | None = None
    measured: tuple[int, ...] | None = None
    window: tuple[float, float] | None = None

    def __post_init__(self) -> None:
        if self.window is not None:
            object.__setattr__(self, "window", check_window(self.window))

    @classmethod
    def parse(cls, spec: str, num_prototypes: int, reference: Reference | None = None) -> "Edit":
        """``"3=max,5=0,7*1.5,2+0.5"`` (values: a number, max, 1.5max or q0.9 over the reference set X), optionally
        timed: ``"3=max@0.5:1"`` (see ``window``)."""
        ops = tuple(parse_edit(spec, num_prototypes))
        return cls(label=spec, ops=ops, values=tuple(resolve_op(op, reference) for op in ops),
                   window=split_window(spec)[1])

    @classmethod
    def set(cls, prototype: int, value, reference: Reference | None = None, label: str | None = None,
            window: tuple[float, float] | None = None) -> "Edit":
        """s_J := value, where value is a number, a token (max, 1.5max, q0.9) or a (B,) tensor per image."""
        if isinstance(value, torch.Tensor):
            v, text = value.detach().flatten().float(), "per-image"
        else:
            v, text = resolve_value(value, prototype, reference), str(value)
        edit = cls(label=label if label is not None else f"{prototype}={text}",
                   ops=(EditOp(int(prototype), "set", text),), values=(v,))
        return edit if window is None else edit.timed(window, relabel=label is None)

    @classmethod
    def set_all(cls, values: dict, label: str) -> "Edit":
        """s_J := values[J] for every J given (numbers or (B,) tensors), applied together."""
        edits = [cls.set(j, v) for j, v in values.items()]
        return cls(label=label, ops=tuple(e.ops[0] for e in edits), values=tuple(e.values[0] for e in edits))

    @classmethod
    def replace(cls, s_edit: torch.Tensor, measured: Sequence[int], label: str = "s'",
                window: tuple[float, float] | None = None) -> "Edit":
        """An explicit s' (B, P) whose rise is measured over ``measured`` (timed by ``window``, when given)."""
        return cls(label=label, given=s_edit, measured=tuple(int(j) for j in measured), window=window)

    def timed(self, window: tuple[float, float] | None, relabel: bool = True) -> "Edit":
        """This edit limited to a window of timesteps (LO, HI) (None: every step); ``relabel`` writes the window into
        the label as a spec would (``3=max@0.5:1``)."""
        if window is None:
            return with_fields(self, window=None)
        lo, hi = check_window(window)
        base = self.label.rsplit("@", 1)[0] if self.window is not None else self.label
        label = f"{base}@{lo:g}:{hi:g}" if relabel else self.label
        return with_fields(self, window=(lo, hi), label=label)

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

    # -------------------------------------------------------------- named plans (values resolved when made)
    @classmethod
    def edit(cls, x: torch.Tensor, specs: Sequence[str], num_prototypes: int, reference: Reference | None,
             window: tuple[float, float] | None = None, **plan) -> "EditPlan":
        """Each spec (``"3=max,5=0"``, ``"7*2"``, ``"2+0.5"``) is one edited version of every image, next to the
        reconstruction. ``window`` times every edit (an edit with its own ``@LO:HI`` and a window is refused).
        ``plan``: the other fields (names, steps, sampler, seed, ...)."""
        edits = [Edit.parse(spec, num_prototypes, reference) for spec in specs]
        if window is not None:
            timed = [e.label for e in edits if e.window is not None]
            if timed:
                raise UsageError(f"edit {timed[0]!r} has its own window (@LO:HI) and --window gives another; give one")
            edits = [e.timed(window) for e in edits]
        return cls(images=x, edits=edits, reference=reference, reconstruction=True, **plan)

    @classmethod
    def sweep(cls, x: torch.Tensor, prototypes: Sequence[int], values: Sequence[str], reference: Reference | None,
              **plan) -> "EditPlan":
        """s_J := every value (number, max, 1.5max, q0.9) for every prototype J: edits J-major, values inner."""
        edits = [Edit.set(j, tok, reference, label=str(tok)) for j in prototypes for tok in values]
        return cls(images=x, edits=edits, reference=reference, **plan)

    @classmethod
    def consistency(cls, x: torch.Tensor, prototypes: Sequence[int], value: str, reference: Reference | None,
                    **plan) -> "EditPlan":
        """s_J := value on every image, one edit per prototype J."""
        return cls(images=x, edits=[Edit.set(j, value, reference) for j in prototypes], reference=reference, **plan)

    @classmethod
    def interpolation(cls, x: torch.Tensor, n_alphas: int, **plan) -> "EditPlan":
        """Two images A, B: ``n_alphas`` points s = lerp(s_A, s_B), x_T = slerp(x_T^A, x_T^B), endpoints included,
        next to the two reconstructions."""
        if x.shape[0] != 2:
            raise UsageError(f"interpolation needs exactly 2 images, got {x.shape[0]}")
        if n_alphas < 2:
            raise UsageError("interpolation needs at least 2 points (the two endpoints)")
        return cls(images=x, alphas=[float(a) for a in np.linspace(0, 1, n_alphas)], reconstruction=True, **plan)

    @classmethod
    def noise_variations(cls, x: torch.Tensor, k: int, **plan) -> "EditPlan":
        """Each image's s decoded from its inverted x_T (the reconstruction) and from ``k`` seeded random x_T."""
        if k < 1:
            raise UsageError("variations need k >= 1")
        return cls(images=x, reconstruction=True, variations=k, **plan)

    @classmethod
    def emergence(cls, x: torch.Tensor, prototypes: Sequence[int], value: str, reference: Reference | None,
                  **plan) -> "EditPlan":
        """The unedited and every single-prototype edit s_J := value, decoded from the same x_T, traced: s of the
        predicted x0 at every sampling step."""
        protos = list(prototypes)
        if not protos:
            raise UsageError("give at least one prototype to trace")
        return cls(images=x, edits=[Edit.set(j, value, reference) for j in protos], reference=reference,
                   reconstruction=True, trace=True, **plan)

    def resolved(self, pat) -> "EditPlan":
        """This plan with every spec string (``"3=max"``) parsed into an :class:`Edit` for ``pat``'s prototypes,
        its values resolved with the plan's reference set X (``pat``'s default one, :func:`~.reference.reference_set`,
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
