"""Where a prototype fires: similarity maps in pixels and best-patch boxes.

The prototype layer compares prototype p_j with every feature-map unit (h, w) and gives the
per-patch similarity

    S_j(h, w) = log((d_j(h, w) + 1) / (d_j(h, w) + eps)),     s_j = max_{h,w} S_j(h, w).

Unit (h, w) looks at a square of side r centred at (start + w*jump, start + h*jump) in pixel
coordinates (pixel i covers [i, i+1), see :class:`~patronus_diffusion.models.prototypes.ReceptiveField`).
The map is brought to the image through that geometry, not by a plain resize: pixel centre c = q + 1/2
reads the map at the fractional unit index u = (c - start) / jump, interpolated linearly between the two
nearest units and clamped at the border units,

    M(y, x) = sum_{h,w} a_h(y) a_w(x) S(h, w),   a_i(c) = max(0, 1 - |u(c) - i|)  (u clamped to [0, n-1]),

so the map's peak sits on the centre of the best unit's receptive field, whatever the resolution.
The box of the best patch is :meth:`ReceptiveField.box` at the argmax unit.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from ..models.prototypes import ReceptiveField, log_similarity
from ..utils.errors import UsageError
from ..utils.io import atomic_path, write_json
from .figures import Panel, figure_image, panels_figure, save_figure, short_name
from .results import ShowsFigure, one_line
from .tables import write_csv


@dataclass
class WhereResult(ShowsFigure):
    """Where the selected prototypes match in each image.

    prototypes: (B, K) prototype ids per image (all prototypes, a fixed list, or each image's top-k);
    s: (B, K) their similarities; location: (B, K, 2) best unit (row, col); boxes: (B, K, 4) pixel boxes
    (x0, y0, x1, y1), end-exclusive, at ``display_size``; maps: (B, K, S, S) similarity maps in pixels;
    images (B, C, H, W) the images, ``names`` theirs, ``top_k`` how the prototypes were chosen (None: given),
    ``run`` the model's folder and ``receptive_field`` its geometry (what where.json records).
    """

    prototypes: torch.Tensor
    s: torch.Tensor
    location: torch.Tensor
    boxes: torch.Tensor
    maps: torch.Tensor
    display_size: int
    images: torch.Tensor
    names: list[str]
    receptive_field: ReceptiveField
    top_k: int | None = None
    run: str = ""

    def __repr__(self) -> str:
        which = f"top-{self.top_k}" if self.top_k else f"{self.prototypes.shape[1]} chosen"
        return one_line(f"WhereResult({len(self.names)} image{'s' * (len(self.names) != 1)} x {which} prototypes, "
                        f"maps at {self.display_size} px)")

    def matches(self) -> list[dict]:
        """Per image and selected prototype: its id, rank, s, best-match box (x0, y0, x1, y1) and unit (row, col)."""
        return [{"image": name, "prototype": int(self.prototypes[i, k]), "rank": k,
                 "s": round(float(self.s[i, k]), 5), "box": self.boxes[i, k].tolist(),
                 "location": self.location[i, k].tolist()}
                for i, name in enumerate(self.names) for k in range(self.prototypes.shape[1])]

    def summary(self) -> str:
        """One line per image: its prototypes with s and the best patch's box."""
        lines = [f"where {len(self.names)} image(s) match {self.prototypes.shape[1]} prototype(s) each "
                 f"(boxes (x0, y0, x1, y1) at {self.display_size} px):"]
        for i, name in enumerate(self.names):
            lines.append(f"  {name}: " + ", ".join(
                f"p{int(self.prototypes[i, k])} s={float(self.s[i, k]):.2f} {tuple(self.boxes[i, k].tolist())}"
                for k in range(self.prototypes.shape[1])))
        return "\n".join(lines)

    def to_json(self) -> dict:
        """where.json: the run, images, display size, receptive field and every match."""
        rf = self.receptive_field
        return {"run": self.run, "images": self.names, "display_size": self.display_size,
                "receptive_field": {"image_size": rf.image_size, "units": rf.size, "jump": rf.jump, "size": rf.rf,
                                    "start": rf.start},
                "box_convention": "(x0, y0, x1, y1) pixels, end-exclusive", "matches": self.matches()}

    def figure(self):
        """where.png: per image, each selected prototype's map over it with its best patch boxed."""
        size = self.display_size
        x = self.images if size == self.images.shape[-1] else torch.nn.functional.interpolate(
            self.images, size=(size, size), mode="nearest")
        rows = [[Panel(x[i], short_name(name))] + [
            Panel(x[i], f"p{int(self.prototypes[i, k])} s={float(self.s[i, k]):.2f}",
                  tuple(self.boxes[i, k].tolist()), heat=self.maps[i, k].numpy())
            for k in range(self.prototypes.shape[1])] for i, name in enumerate(self.names)]
        return panels_figure(rows, cell=1.6, title="similarity map (jet overlay) through the receptive field; red "
                             f"box = best patch ({'top-' + str(self.top_k) if self.top_k else 'chosen prototypes'})")

    def to_pil(self):
        """where.png as a PIL image."""
        return figure_image(self.figure())

    def write(self, out_dir) -> dict[str, Path]:
        """where.png (maps over the images, best patch boxed), boxes.csv, maps.npz (float32), where.json."""
        out = Path(out_dir)
        save_figure(self.figure(), out / "where.png")
        write_csv(out / "boxes.csv", ["image", "prototype", "rank", "s", "x0", "y0", "x1", "y1", "row", "col"],
                  [[name, int(self.prototypes[i, k]), k, f"{float(self.s[i, k]):.5f}", *self.boxes[i, k].tolist(),
                    *self.location[i, k].tolist()]
                   for i, name in enumerate(self.names) for k in range(self.prototypes.shape[1])])
        with atomic_path(out / "maps.npz") as tmp:
            with open(tmp, "wb") as fh:
                np.savez_compressed(fh, maps=self.maps.numpy().astype(np.float32),
                                    prototypes=self.prototypes.numpy(), images=np.array(self.names))
        write_json(out / "where.json", self.to_json())
        return {"figure": out / "where.png", "boxes": out / "boxes.csv", "maps": out / "maps.npz",
                "results": out / "where.json"}


def interpolation_matrix(rf: ReceptiveField, display_size: int | None = None) -> torch.Tensor:
    """A (S, n) matrix A with A[q, i] = a_i(centre of output pixel q) (see the module docstring).

    Rows sum to 1. ``display_size`` S resamples to another resolution (default: the model's).
    """
    size = display_size or rf.image_size
    centres = (torch.arange(size, dtype=torch.float64) + 0.5) * (rf.image_size / size)
    u = ((centres - rf.start) / rf.jump).clamp(0, rf.size - 1)
    units = torch.arange(rf.size, dtype=torch.float64)
    return (1 - (u[:, None] - units[None, :]).abs()).clamp_min(0).float()


def upsample_maps(maps: torch.Tensor, rf: ReceptiveField, display_size: int | None = None) -> torch.Tensor:
    """Per-unit maps (..., n, n) -> per-pixel maps (..., S, S) through the receptive-field geometry."""
    a = interpolation_matrix(rf, display_size).to(maps.dtype)
    return a @ maps @ a.T


def boxes_of(rf: ReceptiveField, location: torch.Tensor, display_size: int | None = None) -> torch.Tensor:
    """Pixel boxes (..., 4) of unit locations (..., 2) = (row, col), via :meth:`ReceptiveField.box`."""
    flat = location.reshape(-1, 2).tolist()
    boxes = [rf.box(int(h), int(w), display_size) for h, w in flat]
    return torch.tensor(boxes, dtype=torch.long).reshape(*location.shape[:-1], 4)


def select_prototypes(s: torch.Tensor, prototypes: Sequence[int] | None = None,
                      top_k: int | None = None) -> torch.Tensor:
    """(B, K) ids: the given list for every image, each image's ``top_k`` by s, or all prototypes."""
    b, p = s.shape
    if prototypes is not None and top_k is not None:
        raise UsageError("give either a list of prototypes or top_k, not both")
    if prototypes is not None:
        ids = list(prototypes)
        bad = [j for j in ids if not 0 <= j < p]
        if bad:
            raise UsageError(f"prototype id(s) {bad} out of range 0 ... {p - 1}")
        return torch.tensor(ids, dtype=torch.long).expand(b, len(ids)).clone()
    if top_k is not None:
        if not 1 <= top_k <= p:
            raise UsageError(f"--top-k must be between 1 and {p}, got {top_k}")
        return s.topk(top_k, dim=1).indices
    return torch.arange(p).expand(b, p).clone()


def locate(network, x: torch.Tensor, prototypes: Sequence[int] | None = None, top_k: int | None = None,
           display_size: int | None = None) -> WhereResult:
    """Where each selected prototype of a :class:`PrototypeNetwork` matches in a batch of images."""
    rf = network.receptive_field
    with torch.no_grad():
        match = network(x, return_map=True)
    sim = log_similarity(match.distance_map, network.cfg.epsilon)
    return _result(rf, x, match.s, match.location, sim, prototypes, top_k, display_size)


def where(pat, x: torch.Tensor, prototypes: Sequence[int] | None = None, top_k: int | None = None,
          display_size: int | None = None, names: Sequence[str] | None = None) -> WhereResult:
    """:func:`locate` through the :class:`~patronus_diffusion.Patronus` API (batched, checked input)."""
    match = pat.encode(x, return_map=True)
    sim = log_similarity(match.distance_map, pat.config.prototypes.epsilon)
    return _result(pat.receptive_field, x, match.s, match.location, sim, prototypes, top_k, display_size, names,
                   "" if pat.run_dir is None else str(pat.run_dir))


def _result(rf, x, s, location, sim, prototypes, top_k, display_size, names=None, run="") -> WhereResult:
    ids = select_prototypes(s, prototypes, top_k)
    take = lambda t: torch.gather(t, 1, ids.view(*ids.shape, *([1] * (t.ndim - 2))).expand(  # noqa: E731
        *ids.shape, *t.shape[2:]))
    size = display_size or rf.image_size
    loc = take(location)
    names = list(names) if names is not None else [f"image {i}" for i in range(x.shape[0])]
    return WhereResult(prototypes=ids, s=take(s), location=loc, boxes=boxes_of(rf, loc, size),
                       maps=upsample_maps(take(sim), rf, size), display_size=size, images=x, names=names,
                       receptive_field=rf, top_k=top_k, run=run)


def where_report(pat, x: torch.Tensor, names: Sequence[str], prototypes: Sequence[int] | None = None,
                 top_k: int | None = None, display_size: int | None = None) -> WhereResult:
    """:func:`where` of named images, as the `where` command runs it (``display_size`` defaults to the model's
    image size)."""
    return where(pat, x, prototypes=prototypes, top_k=top_k, display_size=display_size or pat.config.data.image_size,
                 names=names)
