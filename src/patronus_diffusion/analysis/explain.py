"""What each prototype means: the Patronus gallery next to the ProtoPNet view (spec §6.5).

Patronus view (the paper's method), for every prototype J:

1. X = a fixed, seeded random subset of the test split; max(s_X) = the largest entry of s over X.
2. Take the first ``n_images`` images of X, encode s = f(x0) and invert x_T = DDIM-invert(x0, s) once.
3. s' = s with s_J := max(s_X); decode x̂ = DDIM(x_T, s') for all prototypes and images in one batch.
4. Re-encode x̂; the image with the highest s_J(x̂) shows J, boxed at its best-matching patch
   (:meth:`ReceptiveField.box`), and that patch is cropped.

ProtoPNet view: the ``k`` training images whose best patch is nearest to p_J (smallest
d_J = min_{h,w} ||f(x)_{h,w} - p_J||^2, one patch per image), with their boxes and crops.

Statistics over the data (a seeded subset of the test split): mean and quantiles of s_J, and how
often J is an image's top prototype. Faithfulness of the max-edits (rise of s_J as a fraction of the
requested change; mean |change| of the other prototypes) is reported per prototype and overall.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import torch

from ..edit import Edit, EditPlan, EditResult, Reference, reference_set, run_plan
from ..utils.errors import UsageError
from ..utils.images import save_grid
from ..utils.io import write_json
from .figures import Panel, crop, figure_image, panels_figure, save_figure, save_panels
from .results import ShowsFigure, one_line
from .tables import write_csv
from .where import boxes_of

QUANTILES = (0.05, 0.25, 0.5, 0.75, 0.95)


# ------------------------------------------------------------------------------ data statistics
def seeded_indices(n_total: int, n: int, seed: int) -> list[int]:
    """The first ``n`` of a seeded permutation of range(n_total) (all of them when n <= 0 or n >= n_total)."""
    g = torch.Generator().manual_seed(seed)
    perm = torch.randperm(n_total, generator=g)
    return perm[: n if 0 < n < n_total else n_total].tolist()


def encode_subset(pat, ds, indices: Sequence[int], chunk: int = 2048, progress: bool = False, desc: str = ""):
    """(s, distance, location) of images of dataset ``ds`` (a split name is cached by the model object)."""
    m = pat.encode_dataset(ds, indices, chunk=chunk, progress=progress, desc=desc or "encode")
    return m.s, m.distance, m.location


def s_statistics(s: torch.Tensor) -> dict[str, torch.Tensor]:
    """Per-prototype mean, quantiles and top-prototype frequency of s (N, P)."""
    q = torch.quantile(s.double(), torch.tensor(QUANTILES, dtype=torch.float64), dim=0).float()
    top = torch.bincount(s.argmax(1), minlength=s.shape[1]).float() / s.shape[0]
    return {"mean": s.mean(0), "quantiles": q, "top_fraction": top}


# ------------------------------------------------------------------------------ nearest training patches
@dataclass
class NearestPatches:
    """For each prototype (row of the tensors), the k nearest images' best patches.

    index (K, k) dataset indices; location (K, k, 2) unit (row, col); distance (K, k) squared
    feature distance to p_J; boxes (K, k, 4) pixel boxes."""

    prototypes: list[int]
    index: torch.Tensor
    location: torch.Tensor
    distance: torch.Tensor
    boxes: torch.Tensor
    split: str
    searched: int


def nearest_patches(pat, prototypes: Sequence[int], k: int = 5, n_images: int = 0, seed: int = 0,
                    split: str = "train", progress: bool = False, ds=None) -> NearestPatches:
    """ProtoPNet's view: the k images of ``split`` (all, or a seeded subset of ``n_images``) whose
    best-matching patch is nearest to each prototype, one patch per image."""
    ds = ds if ds is not None else pat.dataset(split)
    idx = seeded_indices(len(ds), n_images, seed)
    _, dist, loc = encode_subset(pat, ds, idx, progress=progress, desc=f"nearest patches ({split})")
    protos = list(prototypes)
    k = min(k, len(idx))
    d = dist[:, protos].T  # (K, N)
    best_d, best_i = d.topk(k, dim=1, largest=False)
    locs = torch.stack([loc[best_i[r], j] for r, j in enumerate(protos)])
    index = torch.tensor(idx)[best_i]
    return NearestPatches(prototypes=protos, index=index, location=locs, distance=best_d,
                          boxes=boxes_of(pat.receptive_field, locs), split=split, searched=len(idx))


def crop_patches(images: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
    """The pixels of each image (N, C, H, W) inside its end-exclusive box (N, 4), as (N, C, h, w): a patch clipped
    at the image border is smaller, so every crop is padded (with black) to the largest one (the report's strips)."""
    crops = [crop(img, tuple(int(v) for v in box.tolist())) for img, box in zip(images, boxes)]
    h = max(c.shape[-2] for c in crops)
    w = max(c.shape[-1] for c in crops)
    return torch.stack([torch.nn.functional.pad(c, (0, w - c.shape[-1], 0, h - c.shape[-2]), value=-1.0)
                        for c in crops])


PATCHES_FILE = "prototype_patches.safetensors"
"""Every prototype's nearest training patches as 8-bit crops, stored beside a model's weights (the shipped model has
them: the explorer shows them without the dataset)."""
PATCHES_META = "prototype_patches.json"
"""Which patches those are (k, the images searched, seed, split, dataset, labels) and which weights found them."""


@dataclass
class PrototypePatches:
    """Every prototype's ``k`` nearest training patches (:func:`nearest_patches`), cropped: what the report's
    prototype cards and the explorer show beside prototype J.

    crops (P, k, C, h, w) in [-1, 1] (8-bit values); distance (P, k) squared feature distance to p_J; index (P, k)
    dataset indices; labels (P, k) class names; ``source``: "dataset" (found now) or the stored file's name."""

    crops: torch.Tensor
    distance: torch.Tensor
    index: torch.Tensor
    labels: list[list[str]]
    split: str
    searched: int
    seed: int
    source: str

    @property
    def k(self) -> int:
        return int(self.crops.shape[1])

    def settings(self) -> dict:
        return {"k": self.k, "split": self.split, "images_searched": self.searched, "seed": self.seed,
                "source": self.source}


def prototype_patches(pat, k: int = 5, n_images: int = 10000, seed: int = 0, split: str = "train",
                      stored: bool = True) -> PrototypePatches:
    """Every prototype's ``k`` nearest training patches among ``n_images`` seeded images of ``split`` (the full
    report's setting), cropped. With ``stored``, a model whose folder holds these very patches (``PATCHES_FILE``,
    found by the same weights with the same settings: the shipped model's) serves them without the dataset;
    otherwise they are found in the dataset (a DataError when it is missing)."""
    if stored:
        found = stored_patches(pat, k, n_images, seed, split)
        if found is not None:
            return found
    ds = pat.dataset(split)
    near = nearest_patches(pat, range(pat.num_prototypes), k, n_images, seed, split, ds=ds)
    images = ds.get_batch(near.index.flatten().tolist())
    crops = crop_patches(images, near.boxes.reshape(-1, 4))
    crops = (crops.clamp(-1, 1).add(1).mul(127.5).round() / 127.5 - 1)  # 8-bit values, as stored and shown
    return PrototypePatches(crops=crops.reshape(*near.index.shape, *crops.shape[1:]), distance=near.distance,
                            index=near.index, labels=[[_label(ds, int(i)) for i in row] for row in near.index],
                            split=split, searched=near.searched, seed=seed, source="dataset")


def _patch_key(pat, k: int, n_images: int, seed: int, split: str) -> dict:
    d = pat.config.data
    return {"k": k, "n_images": n_images, "seed": seed, "split": split, "dataset": d.dataset, "limit": d.limit,
            "image_size": d.image_size, "num_prototypes": pat.num_prototypes}


def save_patches(pat, folder: str | Path, patches: PrototypePatches, n_images: int) -> Path:
    """Store ``patches`` (found in the dataset for ``pat``) beside its weights in ``folder``: ``PATCHES_FILE`` and
    ``PATCHES_META`` (with the sha256 of the weights file that found them)."""
    from safetensors.torch import save_file

    from ..runs import sha256
    from ..utils.io import atomic_path

    folder = Path(folder)
    u8 = patches.crops.clamp(-1, 1).add(1).mul(127.5).round().to(torch.uint8)
    with atomic_path(folder / PATCHES_FILE) as tmp:
        save_file({"crops": u8.contiguous(), "distance": patches.distance.float().contiguous(),
                   "index": patches.index.long().contiguous()}, str(tmp))
    write_json(folder / PATCHES_META, {
        **_patch_key(pat, patches.k, n_images, patches.seed, patches.split), "images_searched": patches.searched,
        "weights_sha256": sha256(pat.weights_path), "labels": patches.labels,
        "rule": "analysis.explain.nearest_patches: the k images of a seeded subset of the split whose best patch is "
                "nearest to p_J, cropped at that patch's receptive-field box",
        "made_by": "scripts/make_prototype_patches.py"})
    return folder / PATCHES_FILE


def stored_patches(pat, k: int = 5, n_images: int = 10000, seed: int = 0,
                   split: str = "train") -> PrototypePatches | None:
    """The patches stored beside the model's weights when they are the ones asked for, found by these very weights
    (same sha256); else None."""
    from ..runs import load_weights, sha256

    folder, weights = getattr(pat, "run_dir", None), getattr(pat, "weights_path", None)
    if folder is None or weights is None:
        return None
    folder = Path(folder)
    if not (folder / PATCHES_FILE).exists() or not (folder / PATCHES_META).exists():
        return None
    meta = json.loads((folder / PATCHES_META).read_text())
    if any(meta.get(key) != value for key, value in _patch_key(pat, k, n_images, seed, split).items()):
        return None
    if meta.get("weights_sha256") != sha256(weights):
        return None
    t = load_weights(folder / PATCHES_FILE)
    crops = t["crops"].float() / 127.5 - 1
    if crops.ndim != 5 or tuple(crops.shape[:2]) != (pat.num_prototypes, k):
        return None
    return PrototypePatches(crops=crops, distance=t["distance"], index=t["index"], labels=meta.get("labels"),
                            split=split, searched=int(meta.get("images_searched", 0)), seed=seed,
                            source=PATCHES_FILE)


# ------------------------------------------------------------------------------ the gallery
@dataclass(repr=False)
class ExplainResult(ShowsFigure):
    """The prototype gallery (`patronus explain`), before drawing: the reference set X, s statistics, nearest
    training patches, and the engine's result of the max-edits (edit r = prototype ``prototypes[r]``)."""

    run: str
    prototypes: list[int]
    reference: Reference
    stats: dict[str, torch.Tensor]
    stats_images: int
    near: NearestPatches
    near_images: torch.Tensor  # (K, k, C, H, W)
    near_sources: list[list[str]]
    near_labels: list[list[str]]
    result: EditResult
    sources: list[str]
    epsilon: float
    settings: dict
    timings: dict = field(default_factory=dict)
    t_start: float = 0.0

    def record(self, r: int) -> dict:
        """The explain.json entry of prototype ``prototypes[r]``."""
        j, res, ref, stats, near = self.prototypes[r], self.result, self.reference, self.stats, self.near
        s_after_j = res.s_after[r, :, j]
        best = int(s_after_j.argmax())
        locs = res.location[r, :, j]
        boxes = boxes_of(res.receptive_field, locs)
        return {
            "prototype": j, "max_s_X": round(ref.max, 5),
            "s_mean": round(float(stats["mean"][j]), 5),
            "s_quantiles": {f"q{q:g}": round(float(stats["quantiles"][i, j]), 5) for i, q in enumerate(QUANTILES)},
            "top_fraction": round(float(stats["top_fraction"][j]), 5),
            "best_image": {"source": self.sources[best], "s_before": round(float(res.s[best, j]), 5),
                           "s_after": round(float(s_after_j[best]), 5), "box": boxes[best].tolist(),
                           "location": locs[best].tolist()},
            "boxes": [b.tolist() for b in boxes],
            "s_after": [round(float(v), 5) for v in s_after_j],
            "faithfulness": res.faithfulness(r),
            "nearest_patches": [
                {"source": self.near_sources[r][m], "index": int(i), "label": self.near_labels[r][m],
                 "distance": round(float(d), 6),
                 "s": round(float(torch.log((d + 1) / (d + self.epsilon))), 5),
                 "box": near.boxes[r, m].tolist(), "location": near.location[r, m].tolist()}
                for m, (i, d) in enumerate(zip(near.index[r], near.distance[r]))],
        }

    def to_json(self, records: list[dict] | None = None) -> dict:
        """explain.json: the reference set, settings, overall and per-prototype faithfulness, timings (with the
        figures' seconds once written) and every prototype's :meth:`record`."""
        records = [self.record(r) for r in range(len(self.prototypes))] if records is None else records
        overall = self.result.faithfulness()
        return {
            "run": self.run, "prototypes": self.prototypes, "reference": self.reference.to_json(),
            "settings": self.settings,
            "faithfulness": {"rise_median": overall["rise_median"], "others_median": overall["others_median"],
                             "per_prototype_rise_median": {str(r["prototype"]): r["faithfulness"]["rise_median"]
                                                           for r in records},
                             "definition": "rise = (s_J(x_hat) - s_J(x0)) / (max(s_X) - s_J(x0)); "
                                           "others = mean_k!=J |s_k(x_hat) - s_k(x0)|; medians over prototypes x "
                                           "images"},
            "timings": {**self.timings, "total_seconds": round(time.time() - self.t_start, 2)},
            "files": {"overview": "overview.png", "per_prototype": "prototypes/pJJ.png", "enhanced": "enhanced.png",
                      "table": "prototypes.csv"},
            "per_prototype": records,
        }

    def __repr__(self) -> str:
        f, res = self.result.faithfulness(), self.result
        num = lambda v: "n/a" if v is None else f"{v:.3f}"  # noqa: E731
        return one_line(f"ExplainResult({len(self.prototypes)} prototypes x {len(self.sources)} images, max(s_X) "
                        f"{self.reference.max:.2f}, median rise {num(f['rise_median'])}, others "
                        f"{num(f['others_median'])}, {res.sampler} {res.steps} steps)")

    def summary(self, seconds: float | None = None) -> str:
        """The reference set and the faithfulness of the max-edits (what `explain` prints, with the ``seconds`` it
        took)."""
        f, ref = self.result.faithfulness(), self.reference.to_json()
        took = "" if seconds is None else f" in {seconds:.1f} s"
        return (f"{len(self.prototypes)} prototypes{took}; max(s_X) = {ref['max_s_X']:.3f} (X: {ref['n']} "
                f"{ref['split']} images, seed {ref['seed']})\n"
                f"edit faithfulness (s_J := max(s_X)): median rise {f['rise_median']} of the requested change; "
                f"median mean |change| of the other prototypes {f['others_median']}")

    def figure(self):
        """overview.png: per prototype its best edited image (patch boxed), that patch and the 3 nearest
        training images, in blocks of ten rows."""
        return _overview(self._overview_cells(), self.reference, len(self.sources), self.result.steps)

    def to_pil(self):
        """overview.png as a PIL image."""
        return figure_image(self.figure())

    def _overview_cells(self) -> list[list[Panel]]:
        res, near, cells = self.result, self.near, []
        for r, j in enumerate(self.prototypes):
            s_after_j = res.s_after[r, :, j]
            best = int(s_after_j.argmax())
            best_img = res.images[r, best]
            best_box = tuple(boxes_of(res.receptive_field, res.location[r, best, j][None])[0].tolist())
            nn_cells = [Panel(self.near_images[r, m], f"NN{m + 1} d={float(near.distance[r, m]):.2g}",
                              tuple(near.boxes[r, m].tolist())) for m in range(min(3, near.index.shape[1]))]
            cells.append([Panel(best_img, f"p{j}  s={float(s_after_j[best]):.2f}", best_box, highlight=False),
                          Panel(crop(best_img, best_box), f"p{j} patch")] + nn_cells)
        return cells

    def write(self, out_dir: str | Path) -> dict[str, Path]:
        """overview.png, prototypes/pJJ.png, enhanced.png, explain.json, prototypes.csv; returns them by role."""
        t0 = time.time()
        out, res, ref, near = Path(out_dir), self.result, self.reference, self.near
        x0 = res.x0
        records = []
        for r, j in enumerate(self.prototypes):
            rec = self.record(r)
            records.append(rec)
            s_after_j = res.s_after[r, :, j]
            best = int(s_after_j.argmax())
            boxes = boxes_of(res.receptive_field, res.location[r, :, j])
            _prototype_figure(out / "prototypes" / f"p{j:02d}.png", j, ref, x0, res.s, res.images[r], s_after_j,
                              boxes, best, self.sources, near, r, self.near_images[r], rec["faithfulness"])
        save_figure(self.figure(), out / "overview.png")
        save_grid(res.images.reshape(-1, *x0.shape[1:]), out / "enhanced.png", nrow=len(self.sources), upscale=2)
        self.timings["figures_seconds"] = round(time.time() - t0, 2)
        write_json(out / "explain.json", self.to_json(records))
        write_csv(out / "prototypes.csv", *_table(records))
        return {"overview": out / "overview.png", "per prototype": out / "prototypes",
                "edited images": out / "enhanced.png", "results": out / "explain.json",
                "table": out / "prototypes.csv"}


def build_gallery(pat, prototypes: Sequence[int] | None = None, n_ref: int = 256, seed: int = 0,
                  steps: int | None = None, progress: bool = True, *, n_images: int = 8, k_nearest: int = 5,
                  patch_images: int = 10000, stats_images: int = 2000, split: str = "test",
                  patch_split: str = "train", sampler: str | None = None) -> ExplainResult:
    """Encode the statistics and nearest patches, and run the max-edits of ``prototypes`` (default: all)
    on the first ``n_images`` of the reference set X through the edit engine (one batched decode)."""
    t_start = time.time()
    P = pat.num_prototypes
    protos = list(range(P)) if prototypes is None else list(prototypes)
    bad = [j for j in protos if not 0 <= j < P]
    if bad or not protos:
        raise UsageError(f"prototype id(s) {bad or '[]'} invalid; choose from 0 ... {P - 1}")
    if n_images < 1:
        raise UsageError("n_images must be at least 1")
    steps = steps or pat.config.sample.ddim_steps
    timings = {}

    t0 = time.time()
    ref = reference_set(pat, n=n_ref, seed=seed, split=split)
    ds = pat.dataset(split)
    stats_idx = seeded_indices(len(ds), stats_images, seed + 1)
    # by split name, so the encoding is cached on the model and reused (e.g. by the report)
    s_data, _, _ = encode_subset(pat, split, stats_idx, progress=progress, desc=f"statistics ({split})")
    patch_ds = ds if patch_split == split else pat.dataset(patch_split)
    near = nearest_patches(pat, protos, k_nearest, patch_images, seed, patch_split, progress, ds=patch_ds)
    timings["encode_seconds"] = round(time.time() - t0, 2)

    # Patronus view: the first n_images of X, every max-edit decoded in one batch.
    ref_idx = seeded_indices(len(ds), n_ref, seed)[:n_images]
    x0 = ds.get_batch(ref_idx)
    sources = [ds.sources[i] for i in ref_idx]
    plan = EditPlan(images=x0, edits=[Edit.set(j, ref.max, label=f"{j}=max(s_X)") for j in protos], names=sources,
                    steps=steps, sampler=sampler, reference=ref, seed=seed)
    res = run_plan(pat, plan, progress)
    timings["invert_seconds"] = round(res.invert_seconds, 2)
    timings["decode_seconds"] = round(res.seconds, 2)
    near_imgs = patch_ds.get_batch(near.index.flatten().tolist()).reshape(*near.index.shape, *x0.shape[1:])
    settings = {"n_images": len(ref_idx), "image_sources": sources, "steps": steps,
                "sampler": res.sampler, "edit": "s_J := max(s_X)",
                "k_nearest": k_nearest, "patch_split": patch_split, "patch_images_searched": near.searched,
                "stats_split": split, "stats_images": len(stats_idx), "seed": seed}
    return ExplainResult(run=res.run, prototypes=protos, reference=ref, stats=s_statistics(s_data),
                   stats_images=len(stats_idx), near=near, near_images=near_imgs,
                         near_sources=[[patch_ds.sources[int(i)] for i in row] for row in near.index],
                         near_labels=[[_label(patch_ds, int(i)) for i in row] for row in near.index],
                         result=res, sources=sources, epsilon=pat.config.prototypes.epsilon, settings=settings,
                         timings=timings, t_start=t_start)


def explain_gallery(pat, out_dir: str | Path, prototypes: Sequence[int] | None = None, n_ref: int = 256,
                    seed: int = 0, steps: int | None = None, progress: bool = True, *, n_images: int = 8,
                    k_nearest: int = 5, patch_images: int = 10000, stats_images: int = 2000, split: str = "test",
                    patch_split: str = "train", sampler: str | None = None) -> ExplainResult:
    """Build the gallery of ``prototypes`` (default: all), write it into ``out_dir`` and return it.

    Files: ``overview.png`` (every prototype: edited image with box, patch, 3 nearest training images),
    ``prototypes/pJJ.png`` (one figure per prototype), ``enhanced.png`` (lossless grid: rows =
    prototypes, columns = the edited reference images), ``explain.json`` and ``prototypes.csv``.
    """
    gallery = build_gallery(pat, prototypes, n_ref, seed, steps, progress, n_images=n_images, k_nearest=k_nearest,
                            patch_images=patch_images, stats_images=stats_images, split=split,
                            patch_split=patch_split, sampler=sampler)
    gallery.write(out_dir)
    return gallery


def _label(ds, i: int) -> str:
    lab = int(ds.labels[i])
    names = ds.class_names
    return names[lab] if 0 <= lab < len(names) else str(lab)


def _table(records: list[dict]) -> tuple[list[str], list[list]]:
    """prototypes.csv: one row per prototype (header, rows)."""
    qs = [f"q{q:g}" for q in QUANTILES]
    header = ["prototype", "max_s_X", "s_mean", *[f"s_{q}" for q in qs], "top_fraction", "best_source", "s_before",
              "s_after", "box_x0", "box_y0", "box_x1", "box_y1", "rise_median", "others_median", "nearest_sources",
              "nearest_distances"]
    rows = []
    for r in records:
        b = r["best_image"]
        rows.append([r["prototype"], r["max_s_X"], r["s_mean"], *[r["s_quantiles"][q] for q in qs], r["top_fraction"],
                     b["source"], b["s_before"], b["s_after"], *b["box"], r["faithfulness"]["rise_median"],
                     r["faithfulness"]["others_median"], ";".join(n["source"] for n in r["nearest_patches"]),
                     ";".join(f"{n['distance']:.4g}" for n in r["nearest_patches"])])
    return header, rows


def _prototype_figure(path, j, ref: Reference, x0, s0, enhanced, s_after_j, boxes, best, sources,
                      near: NearestPatches, r, near_imgs, f) -> None:
    n = x0.shape[0]
    row_in = [Panel(x0[i], f"{sources[i]}\ns_{j}={float(s0[i, j]):.2f}") for i in range(n)]
    row_enh = [Panel(enhanced[i], f"s_{j}->{float(s_after_j[i]):.2f}" + ("  best" if i == best else ""),
                     tuple(boxes[i].tolist()), highlight=(i == best)) for i in range(n)]
    k = near.index.shape[1]
    best_patch = crop(enhanced[best], tuple(boxes[best].tolist()))
    row_patch = [Panel(best_patch, "Patronus patch")] + [
        Panel(crop(near_imgs[m], tuple(near.boxes[r, m].tolist())), f"NN{m + 1} patch") for m in range(k)]
    row_nn = [Panel(None)] + [Panel(near_imgs[m], f"{near.split}:{int(near.index[r, m])}\nd={float(near.distance[r, m]):.3g}",
                                    tuple(near.boxes[r, m].tolist())) for m in range(k)]
    rise = f["rise_median"]
    title = (f"prototype p{j}: s_{j} := max(s_X) = {ref.max:.2f} on {n} test images (best boxed in gold)\n"
             f"faithfulness: median rise {'n/a' if rise is None else f'{rise:.2f}'} of the requested change, "
             f"others change {f['others_median']:.3f}")
    save_panels([row_in, row_enh, row_patch, row_nn], path, title=title,
                row_labels=["input x0", f"s_{j}=max", "patches", "nearest\ntraining"])


def _overview(cells: list[list[Panel]], ref: Reference, n_images: int, steps: int):
    """Prototypes in blocks of ten rows, blocks side by side (a blank column between blocks)."""
    per_block = 10
    blocks = math.ceil(len(cells) / per_block)
    width = max(len(c) for c in cells)
    rows = []
    for r in range(min(per_block, len(cells))):
        row: list[Panel] = []
        for b in range(blocks):
            k = b * per_block + r
            part = cells[k] if k < len(cells) else []
            row += part + [Panel(None)] * (width - len(part))
            if b < blocks - 1:
                row.append(Panel(None))
        rows.append(row)
    return panels_figure(rows, cell=1.15, fontsize=6.5,
                         title=f"Prototype gallery. Per prototype J: edited image (s_J := max(s_X) = {ref.max:.2f}; "
                               f"best of {n_images} test images, {steps} steps), red box = best patch\n"
                               f"| that patch | the 3 training images nearest to p_J (ProtoPNet view, d = squared "
                               f"distance)")
