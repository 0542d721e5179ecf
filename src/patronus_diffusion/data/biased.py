"""Biased datasets: subsets in which two attributes are correlated to a chosen degree.

Attributes A and B are binary (a 0/1 or -1/1 column of an attribute CSV, or a set of classes).
Their correlation is the phi coefficient (Pearson's r of two 0/1 variables)

    phi = (p11 - pA pB) / sqrt(pA (1 - pA) pB (1 - pB)),

where p11 = P(A=1, B=1). For target marginals pA, pB and a target phi the four cell proportions are

    p11 = pA pB + phi sqrt(pA(1-pA) pB(1-pB)),  p10 = pA - p11,  p01 = pB - p11,  p00 = 1 - pA - pB + p11,

and :func:`correlated_subset` draws the largest subset with those proportions from the available
cells (seeded). Three builders use it:

* :func:`build_biased_manifest`: any labelled dataset -> a manifest CSV (file, split, attributes) that
  `patronus train --dataset folder --attributes-csv` reads (IDX datasets are written out as PNGs);
* :func:`celeba_hair_smile`: the paper's CelebA recipe (blond & smiling, black & not smiling,
  brown & smiling), for users who have CelebA on disk;
* :func:`fashion_mnist_shortcut_demo`: offline, built-in: a bright corner mark planted on a subset of
  Fashion-MNIST, tied to footwear at a chosen correlation, plus the unbiased twin (mark independent of
  the class) written the same way.

Attribute specifications (:func:`resolve_attribute`): ``NAME`` (a binary column), ``NAME=v1+v2`` (a
column taking one of these values) or ``class:c1+c2`` (class names or indices).
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..utils.errors import UsageError
from ..utils.io import atomic_path, write_json
from .errors import DataError
from .sources.celeba import (CELEBA_SPLITS, celeba_image_names, celeba_paths, read_celeba_attributes,
                             read_celeba_partition)

DEMO_CLASSES = (0, 1, 7, 9)  # T-shirt/top, Trouser | Sneaker, Ankle boot
DEMO_FOOTWEAR = (7, 9)
DEMO_MARK_SIZE = 6  # px of the 28-px original (about 7 px at 32 px, inside the 15-px receptive field)


# ----------------------------------------------------------------------------- attributes
def _binary(values: np.ndarray, name: str) -> np.ndarray:
    """A 0/1, -1/1 or boolean column as bool (the larger of its two values is True). A column with one value
    is refused, named for what it is: 0 or -1 in every image (never present), or a positive value (always)."""
    finite = values[np.isfinite(values)]
    levels = np.unique(finite)
    if len(levels) > 2:
        raise DataError(f"attribute {name!r} takes {len(levels)} values ({levels[:6].tolist()}...), not 2; "
                        f"name the positive values, e.g. {name}={int(levels[-1])}")
    if len(levels) == 0:
        raise DataError(f"attribute {name!r} has no numeric values")
    if len(levels) == 1:
        v = float(levels[0])
        truth = "always present" if v > 0 else "never present"
        raise DataError(f"attribute {name!r} is {v:g} in every image ({truth}), so it cannot split the data; "
                        f"choose an attribute that some images have and others lack")
    return values == levels.max()


def resolve_attribute(ds, spec: str) -> np.ndarray:
    """Boolean vector (N,) for one item per dataset row from an attribute specification.

    ``NAME`` binary column; ``NAME=v1+v2`` column in a set of values; ``class:c1+c2`` class names or indices;
    ``not:SPEC`` (or ``!SPEC``) the complement of any of these.
    """
    spec = spec.strip()
    for prefix in ("not:", "!"):
        if spec.startswith(prefix):
            return ~resolve_attribute(ds, spec[len(prefix):])
    if spec.startswith("class:"):
        labels = np.asarray(ds.labels)
        if (labels < 0).all():
            raise DataError(f"{spec!r}: this dataset has no class labels; use an attribute column "
                            f"({', '.join(ds.attribute_names) or 'none available'})")
        names = list(ds.class_names)
        wanted = []
        for item in spec[len("class:"):].split("+"):
            item = item.strip()
            if item in names:
                wanted.append(names.index(item))
            elif item.lstrip("-").isdigit():
                wanted.append(int(item))
            else:
                raise DataError(f"unknown class {item!r} in {spec!r}; classes: {', '.join(names) or 'indices only'}")
        return np.isin(labels, wanted)
    column, _, values = spec.partition("=")
    names = list(ds.attribute_names)
    if column not in names:
        raise DataError(f"unknown attribute {column!r}; available: {', '.join(names) or 'none'}"
                        f"{'; or class:NAME+NAME' if len(ds.class_names) else ''}")
    col = np.asarray(ds.attributes[:, names.index(column)], dtype=np.float64)
    if not values:
        return _binary(col, column)
    try:
        wanted = [float(v) for v in values.split("+")]
    except ValueError:
        raise DataError(f"{spec!r}: values after '=' must be numbers joined by '+', e.g. label=7+9") from None
    return np.isin(col, wanted)


def phi(a: np.ndarray, b: np.ndarray) -> float:
    """Phi coefficient (Pearson r) of two binary vectors; 0 when either is constant."""
    a, b = np.asarray(a, float), np.asarray(b, float)
    sa, sb = a.std(), b.std()
    if sa == 0 or sb == 0:
        return 0.0
    return float(((a - a.mean()) * (b - b.mean())).mean() / (sa * sb))


# ----------------------------------------------------------------------------- subsets
def cell_proportions(correlation: float, p_a: float = 0.5, p_b: float = 0.5) -> dict[tuple[int, int], float]:
    """Proportions of the (A, B) cells for marginals p_a, p_b and phi = ``correlation`` (see module docstring)."""
    if not (0 < p_a < 1 and 0 < p_b < 1):
        raise DataError("the marginals of A and B must lie strictly between 0 and 1")
    p11 = p_a * p_b + correlation * math.sqrt(p_a * (1 - p_a) * p_b * (1 - p_b))
    cells = {(1, 1): p11, (1, 0): p_a - p11, (0, 1): p_b - p11, (0, 0): 1 - p_a - p_b + p11}
    if min(cells.values()) < -1e-12:
        lo = max(-math.sqrt(p_a * p_b / ((1 - p_a) * (1 - p_b))), -math.sqrt((1 - p_a) * (1 - p_b) / (p_a * p_b)))
        hi = min(math.sqrt(p_a * (1 - p_b) / ((1 - p_a) * p_b)), math.sqrt((1 - p_a) * p_b / (p_a * (1 - p_b))))
        raise UsageError(f"correlation {correlation} is impossible with P(A)={p_a:.2f}, P(B)={p_b:.2f}; "
                         f"choose one in [{lo:.2f}, {hi:.2f}]")
    return {k: max(v, 0.0) for k, v in cells.items()}


def correlated_subset(a: np.ndarray, b: np.ndarray, correlation: float, n: int | None = None, seed: int = 0,
                      p_a: float = 0.5, p_b: float = 0.5) -> np.ndarray:
    """Sorted indices of a subset in which phi(A, B) ~= ``correlation`` and P(A)=p_a, P(B)=p_b.

    The subset is the largest (or ``n`` items) the four cells allow; each cell is a seeded random draw.
    """
    a, b = np.asarray(a, bool), np.asarray(b, bool)
    props = cell_proportions(correlation, p_a, p_b)
    pools = {(i, j): np.flatnonzero((a == i) & (b == j)) for i in (0, 1) for j in (0, 1)}
    limit = min(len(pools[c]) / p for c, p in props.items() if p > 1e-9)
    total = int(limit) if n is None else min(int(n), int(limit))
    if n is not None and n > limit:
        raise DataError(f"only {int(limit)} items can form a subset with correlation {correlation} "
                        f"(cell sizes {[len(pools[c]) for c in sorted(pools)]}); ask for fewer (--n)")
    if total < 4:
        empty = [f"A={c[0]},B={c[1]}" for c, p in props.items() if p > 1e-9 and not len(pools[c])]
        raise DataError(f"cannot build a subset with correlation {correlation}: cells {empty or 'too small'}; "
                        f"choose another correlation or attributes that co-occur in all needed combinations")
    rng = np.random.default_rng(seed)
    counts = _round_counts(props, total)
    chosen = [rng.choice(pools[c], size=k, replace=False) for c, k in counts.items() if k]
    return np.sort(np.concatenate(chosen)) if chosen else np.zeros(0, int)


def _round_counts(props: dict, total: int) -> dict:
    """Integer cell counts summing to ``total`` (largest-remainder rounding)."""
    raw = {c: p * total for c, p in props.items()}
    counts = {c: int(math.floor(v)) for c, v in raw.items()}
    for c in sorted(raw, key=lambda c: raw[c] - counts[c], reverse=True)[: total - sum(counts.values())]:
        counts[c] += 1
    return counts


# ----------------------------------------------------------------------------- manifests
@dataclass
class ManifestRow:
    file: str
    split: str
    attributes: dict[str, float]


def write_manifest(path: Path, rows: list[ManifestRow], columns: list[str]) -> Path:
    """CSV with columns file, split, *columns (what `--attributes-csv` reads)."""
    with atomic_path(path) as tmp:
        with open(tmp, "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["file", "split", *columns])
            for r in rows:
                w.writerow([r.file, r.split, *[_fmt(r.attributes[c]) for c in columns]])
    return Path(path)


def _fmt(v: float) -> str:
    return str(int(v)) if float(v).is_integer() else f"{v:.6g}"


def _save_gray_png(arr: np.ndarray, path: Path) -> None:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr.squeeze()).save(path, format="PNG")


def _tensor_to_uint8(x) -> np.ndarray:
    return ((x.clamp(-1, 1) + 1) * 127.5).round().byte().permute(1, 2, 0).numpy()


def build_biased_manifest(data_cfg, a_spec: str, b_spec: str, correlation: float, out: str | Path,
                          seed: int = 0, n_train: int | None = None, n_test: int | None = None,
                          p_a: float = 0.5, p_b: float = 0.5) -> dict:
    """From any labelled dataset: a subset per split with phi(A, B) = correlation, written as a manifest.

    Folder datasets: ``OUT/attributes.csv`` names the original files (train with the original --data-root).
    In-memory datasets (IDX): the chosen images are written as PNGs under ``OUT`` (train with --data-root OUT).
    Returns a summary with the achieved correlation per split and the command to train on it.
    """
    from .datasets import FolderDataset
    from .registry import load_dataset

    out = Path(out)
    rows: list[ManifestRow] = []
    summary = {"a": a_spec, "b": b_spec, "requested_correlation": correlation, "seed": seed, "splits": {}}
    columns = ["A", "B", "label"]
    folder = None
    for split, n in (("train", n_train), ("test", n_test)):
        ds = load_dataset(data_cfg, split)
        a, b = resolve_attribute(ds, a_spec), resolve_attribute(ds, b_spec)
        idx = correlated_subset(a, b, correlation, n, seed + (split == "test"), p_a, p_b)
        folder = isinstance(ds, FolderDataset)
        extra = list(ds.attribute_names)
        columns = ["A", "B", "label", *[c for c in extra if c not in ("A", "B", "label", "split")]]
        for i in idx:
            attrs = {"A": float(a[i]), "B": float(b[i]), "label": float(ds.labels[i])}
            attrs.update({c: float(ds.attributes[i, k]) for k, c in enumerate(extra) if c in columns})
            if folder:
                name = ds.sources[i]
            else:
                name = f"images/{split}_{int(i):06d}.png"  # no train/ dir: the CSV decides the split
                _save_gray_png(_tensor_to_uint8(ds.get_batch([int(i)])[0]), out / name)
            rows.append(ManifestRow(name, split, attrs))
        summary["splits"][split] = {"n": int(len(idx)), "correlation": phi(a[idx], b[idx]),
                                    "p_a": float(a[idx].mean()), "p_b": float(b[idx].mean())}
    manifest = write_manifest(out / "attributes.csv", rows, columns)
    root = data_cfg.root if folder else str(out)
    summary["manifest"] = str(manifest)
    summary["train_command"] = (f"patronus train --dataset folder --data-root {root} "
                                f"--attributes-csv {manifest} --out runs/biased")
    write_json(out / "biased.json", summary)
    return summary


# ----------------------------------------------------------------------------- CelebA preset
CELEBA_HAIR = ("Black_Hair", "Blond_Hair", "Brown_Hair")


def read_celeba(root: str | Path) -> tuple[list[str], list[str], np.ndarray, list[str]]:
    """(files, attribute names, attributes in {0,1} int64 (N, 40), split per file) from a CelebA directory.

    Finds the files as the ``celeba`` loader does (:func:`.sources.celeba.celeba_paths`: the official
    ``list_attr_celeba.txt`` + ``list_eval_partition.txt`` or their CSV versions, in ``root``, ``Anno/``,
    ``Eval/`` or a ``celeba/`` sub-folder) and reads them with the same parsers. Files are named relative
    to ``root`` (``img_align_celeba/000001.jpg`` when that folder exists; just the listed name when no
    image folder is there). The split is ``train``, ``val`` or ``test``; ``train`` for a file with no
    partition entry (or when there is no partition list).
    """
    root = Path(root)
    _, img, attr, part = celeba_paths(root)
    if attr is None:
        raise DataError(f"no CelebA attribute list in {root}: expected list_attr_celeba.txt (official) "
                        f"or list_attr_celeba.csv")
    files, names, attrs = read_celeba_attributes(attr)
    partition = read_celeba_partition(part) if part is not None else {}
    splits = [CELEBA_SPLITS[partition[f]] if f in partition else "train" for f in files]
    if img is not None:
        on_disk, _ = celeba_image_names(img, files)
        files = [(img.relative_to(root) / f).as_posix() for f in on_disk]
    return files, names, attrs.astype(np.int64), splits


def celeba_hair_smile(root: str | Path, out: str | Path) -> dict:
    """The paper's biased CelebA (spec §6.9): exactly one hair colour; keep blond & smiling,
    black & not smiling, brown & smiling. Writes OUT/attributes.csv (train with --data-root ROOT)."""
    files, names, attrs, splits = read_celeba(root)
    missing = [c for c in (*CELEBA_HAIR, "Smiling") if c not in names]
    if missing:
        raise DataError(f"CelebA attribute list lacks {missing}")
    col = {n: attrs[:, names.index(n)] for n in names}
    one_hair = sum(col[h] for h in CELEBA_HAIR) == 1
    keep = one_hair & (((col["Blond_Hair"] == 1) & (col["Smiling"] == 1))
                       | ((col["Black_Hair"] == 1) & (col["Smiling"] == 0))
                       | ((col["Brown_Hair"] == 1) & (col["Smiling"] == 1)))
    idx = np.flatnonzero(keep)
    rows = [ManifestRow(files[i], splits[i], {n: float(attrs[i, k]) for k, n in enumerate(names)}) for i in idx]
    manifest = write_manifest(Path(out) / "attributes.csv", rows, names)
    corr = {h: phi(col[h][idx], col["Smiling"][idx]) for h in CELEBA_HAIR}
    summary = {"preset": "celeba-hair-smile", "n": int(len(idx)), "correlation_with_Smiling": corr,
               "manifest": str(manifest),
               "train_command": f"patronus train --preset paper-celeba64 --dataset folder --data-root {root} "
                                f"--attributes-csv {manifest} --out runs/celeba-hair-smile"}
    write_json(Path(out) / "biased.json", summary)
    return summary


# ----------------------------------------------------------------------------- Fashion-MNIST demo
def plant_mark(img: np.ndarray, size: int = DEMO_MARK_SIZE) -> np.ndarray:
    """A copy of a 28x28 uint8 image with a bright ``size``-px square in the top-left corner (1 px margin)."""
    out = img.copy()
    out[1:1 + size, 1:1 + size] = 255
    return out


def assign_mark(a: np.ndarray, correlation: float, seed: int) -> np.ndarray:
    """B (mark) for items with A, so that P(B)=1/2 and phi(A, B) = correlation exactly up to rounding.

    Within A=1, a fraction P(B|A) = 1/2 + correlation * sqrt(pA(1-pA)) / (2 pA) gets the mark
    (that is (1 + correlation)/2 when P(A) = 1/2); the rest of the marks go to A=0 items.
    """
    a = np.asarray(a, bool)
    rng = np.random.default_rng(seed)
    counts = _round_counts(cell_proportions(correlation, float(a.mean()), 0.5), len(a))
    b = np.zeros(len(a), bool)
    for val in (0, 1):
        pool = rng.permutation(np.flatnonzero(a == val))
        b[pool[: counts[(val, 1)]]] = True
    return b


def fashion_mnist_shortcut_demo(out: str | Path, correlation: float = 0.9, n_train: int = 4000,
                                n_test: int = 800, seed: int = 0, root: str | None = None) -> dict:
    """Write OUT/biased and OUT/unbiased: 28x28 PNGs of 4 Fashion-MNIST classes (T-shirt/top, Trouser,
    Sneaker, Ankle boot; half of them footwear) with a planted corner mark.

    In ``biased`` the mark is tied to footwear with phi = ``correlation``; in ``unbiased`` it is
    independent of the class (phi = 0). Both use the same images and P(mark) = 1/2. Each folder has
    ``attributes.csv`` (file, split, label, footwear, mark) and loads with
    ``--dataset folder --data-root OUT/biased --attributes-csv OUT/biased/attributes.csv``.
    """
    from .datasets import fashion_mnist_root
    from .idx import find_idx, read_idx

    cell_proportions(correlation)  # a bad --correlation fails before any data is read
    src = fashion_mnist_root(root)
    out = Path(out)
    summary = {"correlation": correlation, "classes": list(DEMO_CLASSES), "footwear": list(DEMO_FOOTWEAR),
               "mark": f"{DEMO_MARK_SIZE}x{DEMO_MARK_SIZE} px white square, top-left", "seed": seed, "sets": {}}
    for split, prefix, n in (("train", "train", n_train), ("test", "t10k", n_test)):
        images = read_idx(find_idx(src, f"{prefix}-images-idx3-ubyte"))
        labels = read_idx(find_idx(src, f"{prefix}-labels-idx1-ubyte")).astype(np.int64)
        rng = np.random.default_rng(seed + (split == "test"))
        per_class = n // len(DEMO_CLASSES)
        short = {c: int((labels == c).sum()) for c in DEMO_CLASSES if (labels == c).sum() < per_class}
        if short:
            raise DataError(f"{src} has too few {split} images of the demo classes for {n} items "
                            f"({per_class} per class; found {short}): pass a smaller --n-{split}")
        idx = np.sort(np.concatenate([rng.choice(np.flatnonzero(labels == c), per_class, replace=False)
                                      for c in DEMO_CLASSES]))
        footwear = np.isin(labels[idx], DEMO_FOOTWEAR)
        for name, corr in (("biased", correlation), ("unbiased", 0.0)):
            mark = assign_mark(footwear, corr, seed + 7 * (split == "test"))
            rows = []
            for k, i in enumerate(idx):
                img = plant_mark(images[i]) if mark[k] else images[i]
                rel = f"images/{split}_{int(i):05d}.png"
                _save_gray_png(img, out / name / rel)
                rows.append(ManifestRow(rel, split, {"label": float(labels[i]), "footwear": float(footwear[k]),
                                                     "mark": float(mark[k])}))
            path = out / name / "attributes.csv"
            prev = _read_rows(path) if split == "test" else []
            write_manifest(path, prev + rows, ["label", "footwear", "mark"])
            summary["sets"].setdefault(name, {})[split] = {"n": int(len(idx)), "correlation": phi(footwear, mark),
                                                           "p_mark": float(mark.mean())}
    # a negative coupling gets its own run names, so it never resumes (or overwrites) the positive demo's model
    tags = {"biased": "biased" if correlation >= 0 else "opposite", "unbiased": "unbiased"}
    for name in ("biased", "unbiased"):
        tag = tags[name]
        summary["sets"][name]["train_command"] = (
            f"patronus train --preset cpu-small --dataset folder --data-root {out / name} "
            f"--attributes-csv {out / name / 'attributes.csv'} --out runs/demo-{tag} --steps 2000 "
            f"--set unet.cond_norm=layer")
        summary["sets"][name]["diagnose_command"] = (
            f"patronus diagnose --run runs/demo-{tag} --attributes footwear,mark "
            f"--probe-data {out / 'unbiased'} --out results/diagnose-{tag}")
    write_json(out / "demo.json", summary)
    return summary


def _read_rows(path: Path) -> list[ManifestRow]:
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    cols = [c for c in rows[0] if c not in ("file", "split")] if rows else []
    return [ManifestRow(r["file"], r["split"], {c: float(r[c]) for c in cols}) for r in rows]
