"""The result of one edit plan: the decoded images, s requested and reached, the measures, and their display.

:class:`EditResult` shows itself in a notebook (``repr``, :meth:`~EditResult.to_pil`, ``_repr_png_``), sums itself
up (:meth:`~EditResult.summary`, :meth:`~EditResult.faithfulness`) and gives every result file its provenance
(:meth:`~EditResult.meta`). The analyses' reports write it (e.g. ``analysis/edits.py``'s ``EditsResult.write``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from .inversion import Inverted
from .measures import BASELINES, DEFINITIONS as MEASURE_DEFINITIONS, summarise_edit
from .plan import Edit, EditPlan
from .reference import Reference

Box = tuple[int, int, int, int]

FAITHFULNESS_DEFINITION = {**MEASURE_DEFINITIONS, "baselines": BASELINES}
"""The one measure of an edit (:mod:`.measures`), quoted by every result that reports it."""


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
        """:func:`~.measures.summarise_edit` of edit e (or of all edits together)."""
        off = self.off_target
        if e is None:
            return summarise_edit(self.rise, self.others, off, self.baseline)
        return summarise_edit(self.rise[e], self.others[e], None if off is None else off[e], self.baseline)

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

    def to_json(self) -> dict:
        """The numbers without the tensors: per edit its label and median rise / others / off-target (with the
        baseline they were measured against), and the run's images, steps, sampler and seconds."""
        edits = []
        for k, e in enumerate(self.edits):
            f = self.faithfulness(k)
            edits.append({"edit": e.label, **({"window": list(e.window)} if e.window is not None else {}),
                          **{key: f[key] for key in ("rise_median", "n_rise", "others_median",
                                                     "off_target_median") if key in f}})
        return {"images": int(self.x0.shape[0]), "edits": edits, "baseline": self.baseline, "steps": self.steps,
                "sampler": self.sampler, "seconds": round(self.seconds + self.invert_seconds, 3)}

    def summary(self) -> str:
        """A line per edit: its median rise, the median change of the other prototypes and the off-target change,
        against the baseline they were measured from (the numbers of :meth:`to_json`)."""
        j = self.to_json()
        lines = [f"{j['images']} image(s), {j['sampler']} {j['steps']} steps, measured against {j['baseline']}"]
        for e in j["edits"]:
            parts = [f"{k.removesuffix('_median').replace('_', '-')} {e[k]:.3f}" for k in
                     ("rise_median", "others_median", "off_target_median") if e.get(k) is not None]
            lines.append(f"  {e['edit']}: " + (", ".join(parts) if parts else "no measured change"))
        return "\n".join(lines)

    def write(self, out) -> dict:
        """``edits.png`` (:meth:`to_pil`) and ``edits.json`` (provenance and :meth:`to_json`) in the folder ``out``,
        each written atomically; returns them by role."""
        from pathlib import Path

        from ..utils.io import atomic_path, write_json

        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        with atomic_path(out / "edits.png") as tmp:
            self.to_pil().save(tmp, format="PNG")
        write_json(out / "edits.json", self.meta(numbers=self.to_json()))
        return {"figure": out / "edits.png", "results": out / "edits.json"}

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
