"""Planted marks of several kinds, for measuring the shortcut detector (`patronus diagnose-benchmark`).

:mod:`.biased` plants one kind of mark (a white corner square) tied to footwear. This module adds kinds and
builds the benchmark's data sets from the same machinery (:func:`.biased.assign_mark` draws the planted mark so
that phi(A, mark) = the chosen correlation with P(mark) = 1/2):

* ``patch``: a white 6 x 6 px square in the top-left corner (the demo's mark);
* ``stripe``: a white vertical bar, 2 px wide and 14 px tall, along the right edge;
* ``dots``: four white 2 x 2 px dots on a 2 x 2 grid in the top-right corner.

Geometry is given on the 28-px grid of Fashion-MNIST and scaled to other image sizes; the three kinds never
overlap, so a set can carry one kind as the planted mark and another as an independent control.

A set (:func:`marked_set`) holds, per image, the class ``label``, attribute A (a set of classes, e.g. footwear),
``mark`` (the planted kind, phi(A, mark) = correlation), ``other_mark`` (another kind, independent of A and of
mark: half of every (A, mark) cell carries it) and, optionally, ``coin``: a fair coin drawn the same way that no
image shows (a *blind* attribute: no probe can read it, so no diagnosis may call its pairs uncoupled).
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np

from ..utils.errors import UsageError
from ..utils.io import atomic_path, write_json
from .biased import ManifestRow, assign_mark, cell_proportions, phi, write_manifest
from .errors import DataError

GRID = 28  # the geometry below is given on this grid and scaled to the image's size


def _patch(out: np.ndarray, s) -> None:
    out[s(1):s(7), s(1):s(7)] = 255


def _stripe(out: np.ndarray, s) -> None:
    out[s(10):s(24), s(25):s(27)] = 255


def _dots(out: np.ndarray, s) -> None:
    for r in (1, 5):
        for c in (21, 25):
            out[s(r):s(r + 2), s(c):s(c + 2)] = 255


MARK_KINDS = {"patch": (_patch, "white 6x6 px square, top-left corner"),
              "stripe": (_stripe, "white vertical bar 2x14 px, right edge (rows 10-23)"),
              "dots": (_dots, "four white 2x2 px dots on a 2x2 grid (4 px apart), top-right corner")}


def check_kind(kind: str) -> str:
    if kind not in MARK_KINDS:
        raise UsageError(f"unknown mark kind {kind!r}; choose from {', '.join(MARK_KINDS)}")
    return kind


def control_kind(kind: str) -> str:
    """The kind planted as the independent control beside ``kind`` (the next one in :data:`MARK_KINDS`)."""
    names = list(MARK_KINDS)
    return names[(names.index(check_kind(kind)) + 1) % len(names)]


def paint(img: np.ndarray, kind: str) -> np.ndarray:
    """A copy of a (H, W) uint8 image with the mark ``kind`` painted on (geometry scaled from the 28-px grid)."""
    out = np.array(img, copy=True)
    scale = out.shape[0] / GRID
    MARK_KINDS[check_kind(kind)][0](out, lambda v: int(round(v * scale)))
    return out


def independent_half(strata: np.ndarray, seed: int) -> np.ndarray:
    """A boolean column that is True for half (rounded down, the odd one out drawn) of every stratum: independent
    of whatever the integer codes ``strata`` encode, with P(True) = 1/2 up to rounding."""
    strata = np.asarray(strata)
    rng = np.random.default_rng(seed)
    out = np.zeros(len(strata), bool)
    for code in np.unique(strata):
        pool = rng.permutation(np.flatnonzero(strata == code))
        k = len(pool) // 2 + (rng.random() < 0.5 if len(pool) % 2 else 0)
        out[pool[:k]] = True
    return out


def _save_png(arr: np.ndarray, path: Path) -> None:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    with atomic_path(path) as tmp:
        Path(tmp).write_bytes(buf.getvalue())


def set_spec(kind: str, correlation: float, *, classes, a_classes, a_name: str, n_train: int, n_test: int,
             seed: int, blind: bool) -> dict:
    """What a set is made of (stored in its marks.json; a set whose stored spec differs is rebuilt)."""
    return {"kind": kind, "control_kind": control_kind(kind), "correlation": float(correlation),
            "classes": [int(c) for c in classes], "a_classes": [int(c) for c in a_classes], "a_name": a_name,
            "n_train": int(n_train), "n_test": int(n_test), "seed": int(seed), "blind": bool(blind)}


def marked_set(out: str | Path, kind: str, correlation: float, *, classes=(0, 1, 7, 9), a_classes=(7, 9),
               a_name: str = "footwear", n_train: int = 4000, n_test: int = 800, seed: int = 0,
               root: str | None = None, blind: bool = True) -> dict:
    """Write OUT/images/*.png and OUT/attributes.csv (file, split, label, A, mark, other_mark[, coin]) from the
    Fashion-MNIST IDX files in ``root`` (Debian's copy by default), and OUT/marks.json last: its presence with
    the same spec marks the set complete, and calling again then does nothing.

    ``n_train``/``n_test`` images per split, the same number from each of ``classes`` (the same images for every
    kind and correlation at one ``seed``); A = the image's class is in ``a_classes``; ``mark`` (kind ``kind``)
    has phi(A, mark) = ``correlation`` and P(mark) = 1/2; ``other_mark`` (:func:`control_kind`) and ``coin``
    take half of every cell of the attributes before them."""
    from .datasets import fashion_mnist_root
    from .idx import find_idx, read_idx

    out = Path(out)
    if not set(a_classes) <= set(classes) or not a_classes or len(set(a_classes)) == len(set(classes)):
        raise UsageError(f"the classes of A ({list(a_classes)}) must be some, not all, of --classes {list(classes)}")
    if a_name in ("file", "split", "label", "mark", "other_mark", "coin"):
        raise UsageError(f"--a-name {a_name!r} is a column name the set uses itself; choose another")
    cell_proportions(correlation)  # an impossible correlation fails before any data is read
    spec = set_spec(kind, correlation, classes=classes, a_classes=a_classes, a_name=a_name, n_train=n_train,
                    n_test=n_test, seed=seed, blind=blind)
    done = out / "marks.json"
    if done.exists():
        stored = json.loads(done.read_text())
        if stored.get("spec") == spec:
            return stored
    src = fashion_mnist_root(root)
    columns = ["label", a_name, "mark", "other_mark"] + (["coin"] if blind else [])
    rows: list[ManifestRow] = []
    summary = {"spec": spec, "marks": {"mark": MARK_KINDS[kind][1], "other_mark": MARK_KINDS[spec["control_kind"]][1]},
               "columns": columns, "splits": {}}
    for split, prefix, n in (("train", "train", n_train), ("test", "t10k", n_test)):
        images = read_idx(find_idx(src, f"{prefix}-images-idx3-ubyte"))
        labels = read_idx(find_idx(src, f"{prefix}-labels-idx1-ubyte")).astype(np.int64)
        per_class = n // len(classes)
        short = {c: int((labels == c).sum()) for c in classes if (labels == c).sum() < per_class}
        if short or per_class < 2:
            raise DataError(f"{src} has too few {split} images of classes {list(classes)} for {n} images "
                            f"({per_class} per class; found {short or 'enough'}): ask for a size that fits")
        rng = np.random.default_rng(seed + (split == "test"))
        idx = np.sort(np.concatenate([rng.choice(np.flatnonzero(labels == c), per_class, replace=False)
                                      for c in classes]))
        a = np.isin(labels[idx], a_classes)
        off = 7 * (split == "test")
        mark = assign_mark(a, correlation, seed + off)
        other = independent_half(2 * a + mark, seed + 11 + off)
        coin = independent_half(4 * a + 2 * mark + other, seed + 13 + off)
        cols = {a_name: a, "mark": mark, "other_mark": other, "coin": coin}
        for k, i in enumerate(idx):
            img = images[i]
            if mark[k]:
                img = paint(img, kind)
            if other[k]:
                img = paint(img, spec["control_kind"])
            rel = f"images/{split}_{int(i):05d}.png"
            _save_png(img, out / rel)
            rows.append(ManifestRow(rel, split, {"label": float(labels[i]),
                                                 **{c: float(cols[c][k]) for c in columns[1:]}}))
        names = columns[1:]
        summary["splits"][split] = {
            "n": int(len(idx)), **{f"p_{c}": float(cols[c].mean()) for c in names},
            "phi": {f"{x},{y}": phi(cols[x], cols[y]) for j, x in enumerate(names) for y in names[j + 1:]}}
    write_manifest(out / "attributes.csv", rows, columns)
    write_json(done, summary)
    return summary
