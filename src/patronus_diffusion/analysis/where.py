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
from .figures import Panel, figure_image, panels_figure, save_panels, short_name
from .tables import write_csv


@dataclass
class WhereResult:
    """Where the selected prototypes match in each image.

    prototypes: (B, K) prototype ids per image (all prototypes, a fixed list, or each image's top-k);
    s: (B, K) their similarities; location: (B, K, 2) best unit (row, col); boxes: (B, K, 4) pixel boxes
    (x0, y0, x1, y1), end-exclusive, at ``display_size``; maps: (B, K, S, S) similarity maps in pixels.
    """

    prototypes: torch.Tensor
    s: torch.Tensor
    location: torch.Tensor
    boxes: torch.Tensor
    maps: torch.Tensor
    display_size: int


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
    return _result(rf, match.s, match.location, sim, prototypes, top_k, display_size)


def where(pat, x: torch.Tensor, prototypes: Sequence[int] | None = None, top_k: int | None = None,
          display_size: int | None = None) -> WhereResult:
    """:func:`locate` through the :class:`~patronus_diffusion.Patronus` API (batched, checked input)."""
    match = pat.encode(x, return_map=True)
    sim = log_similarity(match.distance_map, pat.config.prototypes.epsilon)
    return _result(pat.receptive_field, match.s, match.location, sim, prototypes, top_k, display_size)


def _result(rf, s, location, sim, prototypes, top_k, display_size) -> WhereResult:
    ids = select_prototypes(s, prototypes, top_k)
    take = lambda t: torch.gather(t, 1, ids.view(*ids.shape, *([1] * (t.ndim - 2))).expand(  # noqa: E731
        *ids.shape, *t.shape[2:]))
    size = display_size or rf.image_size
    loc = take(location)
    return WhereResult(prototypes=ids, s=take(s), location=loc, boxes=boxes_of(rf, loc, size),
                       maps=upsample_maps(take(sim), rf, size), display_size=size)


# ------------------------------------------------------------------------------ the `where` report
@dataclass
class WhereReport:
    """:class:`WhereResult` of named images, with what its files need (run, receptive field, selection)."""

    result: WhereResult
    images: torch.Tensor
    names: list[str]
    top_k: int | None
    run: str
    receptive_field: ReceptiveField

    def __repr__(self) -> str:
        res = self.result
        which = f"top-{self.top_k}" if self.top_k else f"{res.prototypes.shape[1]} chosen"
        return (f"WhereReport({len(self.names)} image{'s' * (len(self.names) != 1)} x {which} prototypes, "
                f"maps at {res.display_size} px)")

    def summary(self) -> list[dict]:
        """Per image and selected prototype: its id, s, best-match box (x0, y0, x1, y1) and unit (row, col)."""
        res = self.result
        return [{"image": name, "prototype": int(res.prototypes[i, k]), "s": round(float(res.s[i, k]), 5),
                 "box": res.boxes[i, k].tolist(), "location": res.location[i, k].tolist()}
                for i, name in enumerate(self.names) for k in range(res.prototypes.shape[1])]

    def to_pil(self):
        """The where.png figure as a PIL image: per image, each selected prototype's map with its best patch."""
        res = self.result
        size = res.display_size
        x = self.images if size == self.images.shape[-1] else torch.nn.functional.interpolate(
            self.images, size=(size, size), mode="nearest")
        rows = [[Panel(x[i], short_name(name))] + [
            Panel(x[i], f"p{int(res.prototypes[i, k])} s={float(res.s[i, k]):.2f}", tuple(res.boxes[i, k].tolist()),
                  heat=res.maps[i, k].numpy()) for k in range(res.prototypes.shape[1])]
            for i, name in enumerate(self.names)]
        return figure_image(panels_figure(rows, cell=1.6))

    def _repr_png_(self) -> bytes:
        from ..utils.images import png_bytes

        return png_bytes(self.to_pil())

    def write(self, out_dir) -> dict:
        """where.png (maps over the images, best patch boxed), boxes.csv, maps.npz (float32), where.json."""
        res, x, names, out = self.result, self.images, self.names, Path(out_dir)
        size = res.display_size
        x_show = x if size == x.shape[-1] else torch.nn.functional.interpolate(x, size=(size, size), mode="nearest")
        rows, records, csv_rows = [], [], []
        for i, name in enumerate(names):
            row = [Panel(x_show[i], short_name(name))]
            for k in range(res.prototypes.shape[1]):
                j, s, box = int(res.prototypes[i, k]), float(res.s[i, k]), tuple(res.boxes[i, k].tolist())
                row.append(Panel(x_show[i], f"p{j} s={s:.2f}", box, heat=res.maps[i, k].numpy()))
                records.append({"image": name, "prototype": j, "rank": k, "s": round(s, 5), "box": list(box),
                                "location": res.location[i, k].tolist()})
                csv_rows.append([name, j, k, f"{s:.5f}", *box, *res.location[i, k].tolist()])
            rows.append(row)
        save_panels(rows, out / "where.png", cell=1.6, title="similarity map (jet overlay) through the receptive "
                    f"field; red box = best patch ({'top-' + str(self.top_k) if self.top_k else 'chosen prototypes'})")
        write_csv(out / "boxes.csv", ["image", "prototype", "rank", "s", "x0", "y0", "x1", "y1", "row", "col"],
                  csv_rows)
        with atomic_path(out / "maps.npz") as tmp:
            with open(tmp, "wb") as fh:
                np.savez_compressed(fh, maps=res.maps.numpy().astype(np.float32), prototypes=res.prototypes.numpy(),
                                    images=np.array(names))
        rf = self.receptive_field
        write_json(out / "where.json", {"run": self.run, "images": names, "display_size": size,
                                        "receptive_field": {"image_size": rf.image_size, "units": rf.size,
                                                            "jump": rf.jump, "size": rf.rf, "start": rf.start},
                                        "box_convention": "(x0, y0, x1, y1) pixels, end-exclusive",
                                        "matches": records})
        return {"figure": out / "where.png", "boxes": out / "boxes.csv", "maps": out / "maps.npz",
                "results": out / "where.json"}


def where_report(pat, x: torch.Tensor, names: Sequence[str], prototypes: Sequence[int] | None = None,
                 top_k: int | None = None, display_size: int | None = None) -> WhereReport:
    """:func:`where` of named images (``display_size`` defaults to the model's image size)."""
    size = display_size or pat.config.data.image_size
    res = where(pat, x, prototypes=prototypes, top_k=top_k, display_size=size)
    return WhereReport(result=res, images=x, names=list(names), top_k=top_k, run=str(pat.run_dir),
                       receptive_field=pat.receptive_field)
