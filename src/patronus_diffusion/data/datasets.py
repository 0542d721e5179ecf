"""Datasets: every item is (image in [-1, 1] of shape (C, S, S), label, index).

Two kinds share one interface (their base :class:`DescribedDataset` carries the :class:`DatasetInfo`):

* :class:`TensorDataset` keeps all images in memory, already preprocessed (IDX files, small sets).
* :class:`FolderDataset` reads image files lazily (any folder of PNG/JPEG/WebP/BMP, recursive).

A third kind, ``ArrayDataset`` (a memory-mapped uint8 array, in :mod:`.sources._common`), serves STL-10.
This module has the generic loaders (IDX files, image folders); the papers' datasets are in
:mod:`.sources`, and :mod:`.registry` maps every ``--dataset`` name to its loader.

All expose ``labels`` (int array, -1 when unknown), ``class_names``, ``sources`` (file name or
``split:index`` of each item) and ``attributes`` / ``attribute_names`` (a float array (N, A) joined
from an attribute CSV, or empty), which the analyses use without touching the pixels.
"""

from __future__ import annotations

import csv
import hashlib
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageOps

from ..config import DataConfig
from ..utils.errors import UsageError
from .errors import DataError
from .idx import find_idx, read_idx

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif", ".tif", ".tiff")
FASHION_MNIST_DIR = "/usr/share/datasets/fashion-mnist"
FASHION_MNIST_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker",
                         "Bag", "Ankle boot")


# --------------------------------------------------------------------------- preprocessing
# Full-scale value of the PIL modes that hold more than 8 bits per pixel (16-bit grey PNG/TIFF, 32-bit int, float).
HIGH_DEPTH_SCALE = {"I;16": 65535.0, "I;16B": 65535.0, "I;16L": 65535.0, "I;16N": 65535.0, "I": 65535.0, "F": 1.0}


def _high_depth_to_float(img: Image.Image) -> Image.Image:
    """A >8-bit grey image as mode "F" with values in [0, 1], scaled by its bit depth (not clipped at 255):
    16-bit modes by 65535, 32-bit "I" by 65535 (by 2^32 - 1 when a value exceeds 16 bits), float "F" taken as
    [0, 1] intensities (clipped)."""
    arr = np.asarray(img, dtype=np.float64)
    scale = HIGH_DEPTH_SCALE[img.mode]
    if img.mode == "I" and arr.size and arr.max() > 65535:
        scale = 2.0 ** 32 - 1
    if img.mode == "F" and arr.size and (arr.min() < 0.0 or arr.max() > 1.0):
        # one fixed text, so Python shows it once however many such images a folder holds
        warnings.warn("float images hold values outside the [0, 1] intensities they are read as; those values are "
                      "clipped (rescale such images, e.g. 0..255 floats or CT Hounsfield units, to [0, 1] first)",
                      stacklevel=3)
    return Image.fromarray(np.clip(arr / scale, 0.0, 1.0).astype(np.float32), mode="F")


def pil_to_tensor(img: Image.Image, channels: int, size: int, resize: str) -> torch.Tensor:
    """PIL image -> float tensor (C, size, size) in [-1, 1] using the given resize policy.

    Transparency is composited onto white; 16-bit and float grey images keep their full range (a 16-bit value
    v becomes v / 65535, not min(v, 255) / 255); grey becomes RGB by repeating it when ``channels`` is 3.
    """
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        bg = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        img = Image.alpha_composite(bg, rgba)
    high = img.mode in HIGH_DEPTH_SCALE
    img = _high_depth_to_float(img) if high else img.convert("L" if channels == 1 else "RGB")
    if resize == "center-crop":
        img = ImageOps.fit(img, (size, size), method=Image.BICUBIC, centering=(0.5, 0.5))
    elif resize == "squash":
        img = img.resize((size, size), Image.BICUBIC)
    elif resize == "pad":
        img = ImageOps.pad(img, (size, size), method=Image.BICUBIC, color=0)
    else:
        raise UsageError(f"unknown resize policy {resize!r}")
    arr = np.asarray(img, dtype=np.float32)
    if arr.ndim == 2:
        arr = arr[:, :, None]
    if high:
        arr = np.repeat(np.clip(arr, 0.0, 1.0) * 255.0, channels, axis=2)
    return torch.from_numpy(np.ascontiguousarray(arr)).permute(2, 0, 1) / 127.5 - 1.0


def uint8_batch_to_tensor(arr: np.ndarray, size: int) -> torch.Tensor:
    """(N, H, W[, C]) uint8 -> (N, C, size, size) float in [-1, 1], bicubic resize, clamped."""
    x = torch.from_numpy(np.array(arr, copy=True)).float()
    x = x[:, None] if x.ndim == 3 else x.permute(0, 3, 1, 2)
    x = x / 127.5 - 1.0
    if x.shape[-1] != size or x.shape[-2] != size:
        x = F.interpolate(x, size=(size, size), mode="bicubic", align_corners=False, antialias=size < x.shape[-1])
    return x.clamp_(-1.0, 1.0).contiguous()


# --------------------------------------------------------------------------- datasets
@dataclass
class DatasetInfo:
    name: str
    split: str
    root: str
    class_names: tuple[str, ...] = ()
    attribute_names: tuple[str, ...] = ()
    skipped: list[str] = field(default_factory=list)
    split_rule: str = ""
    """How the split was chosen (folders: sub-folders, the CSV's split column, or a name hash)."""


class DescribedDataset(torch.utils.data.Dataset):
    """The base of every dataset here: one that carries its :class:`DatasetInfo` in ``self.info`` (name,
    split, root, class and attribute names, skipped files) and exposes its class and attribute names.
    Subclasses also set ``labels``, ``attributes`` and ``sources`` and provide ``get_batch``."""

    info: DatasetInfo

    @property
    def class_names(self):
        return self.info.class_names

    @property
    def attribute_names(self):
        return self.info.attribute_names


class TensorDataset(DescribedDataset):
    def __init__(self, images: torch.Tensor, labels: np.ndarray, info: DatasetInfo,
                 attributes: np.ndarray | None = None, sources: list[str] | None = None):
        self.images = images
        self.labels = np.asarray(labels, dtype=np.int64)
        self.info = info
        self.attributes = attributes if attributes is not None else np.zeros((len(images), 0), np.float32)
        self.sources = sources or [f"{info.split}:{i}" for i in range(len(images))]

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int):
        return self.images[i], int(self.labels[i]), i

    def get_batch(self, indices) -> torch.Tensor:
        return self.images[torch.as_tensor(indices, dtype=torch.long)]


class FolderDataset(DescribedDataset):
    def __init__(self, files: list[Path], root: Path, cfg: DataConfig, info: DatasetInfo, labels: np.ndarray,
                 attributes: np.ndarray):
        self.files, self.root, self.cfg, self.info = files, root, cfg, info
        self.labels = np.asarray(labels, dtype=np.int64)
        self.attributes = attributes
        self.sources = [str(f.relative_to(root)) for f in files]

    def __len__(self) -> int:
        return len(self.files)

    def load(self, i: int) -> torch.Tensor:
        path = self.files[i]
        try:
            with Image.open(path) as img:
                img.load()
                return pil_to_tensor(img, self.cfg.channels, self.cfg.image_size, self.cfg.resize)
        except (OSError, ValueError, SyntaxError) as e:
            raise DataError(f"cannot read image {path}: {e}. Delete or replace the file, or pass "
                            f"--skip-bad-images to leave unreadable files out.") from None

    def __getitem__(self, i: int):
        return self.load(i), int(self.labels[i]), i

    def get_batch(self, indices) -> torch.Tensor:
        return torch.stack([self.load(int(i)) for i in indices])


Dataset = TensorDataset | FolderDataset


# --------------------------------------------------------------------------- loaders
def _idx_dataset(name: str, root: Path, split: str, cfg: DataConfig, class_names) -> TensorDataset:
    prefix = {"train": "train", "test": "t10k"}.get(split)
    if prefix is None:
        raise DataError(f"{name} has splits 'train' and 'test', not {split!r}")
    images = read_idx(find_idx(root, f"{prefix}-images-idx3-ubyte"))
    labels = read_idx(find_idx(root, f"{prefix}-labels-idx1-ubyte")).astype(np.int64)
    if len(images) != len(labels):
        raise DataError(f"{root}: {len(images)} images but {len(labels)} labels in the {split} split")
    if cfg.limit:
        images, labels = images[: cfg.limit], labels[: cfg.limit]
    if cfg.channels != 1:
        images = np.repeat(images[..., None], cfg.channels, axis=-1)
    return TensorDataset(uint8_batch_to_tensor(images, cfg.image_size), labels,
                         DatasetInfo(name, split, str(root), tuple(class_names)))


def fashion_mnist_root(root: str | None) -> Path:
    path = Path(root or FASHION_MNIST_DIR)
    if not path.exists():
        raise DataError(
            f"Fashion-MNIST not found at {path}. Install it offline with `sudo apt-get install dataset-fashion-mnist` "
            f"(files under {FASHION_MNIST_DIR}), or pass --data-root DIR with the four IDX files.")
    return path


def load_fashion_mnist(cfg: DataConfig, split: str) -> TensorDataset:
    return _idx_dataset("fashion-mnist", fashion_mnist_root(cfg.root), split, cfg, FASHION_MNIST_CLASSES)


def load_mnist(cfg: DataConfig, split: str) -> TensorDataset:
    if not cfg.root:
        raise DataError("MNIST needs --data-root DIR holding the official IDX files "
                        "(train-images-idx3-ubyte[.gz], train-labels-idx1-ubyte[.gz], t10k-...)")
    return _idx_dataset("mnist", Path(cfg.root), split, cfg, [str(i) for i in range(10)])


def _name_hash(rel: str) -> int:
    return int(hashlib.sha1(rel.encode()).hexdigest(), 16)


def _hash_split(files: list[Path], root: Path, split: str) -> list[Path]:
    """Deterministic 90/10 split of a folder without train/test sub-folders: the 10 % of files
    (at least one) with the smallest name hash are the test split. A single file serves both."""
    if len(files) < 2:
        return files
    ranked = sorted(files, key=lambda p: _name_hash(str(p.relative_to(root))))
    n_test = max(1, len(files) // 10)
    chosen = set(ranked[:n_test]) if split == "test" else set(ranked[n_test:])
    return [p for p in files if p in chosen]


def _verify_image(path: Path) -> str | None:
    try:
        if path.stat().st_size == 0:
            return "empty file"
        with Image.open(path) as img:
            img.verify()
    except Exception as e:  # noqa: BLE001 - PIL raises many exception types for broken files
        return str(e) or type(e).__name__
    return None


def read_attribute_csv(path: Path) -> tuple[list[str], dict[str, dict[str, str]]]:
    """Read a CSV whose first column (or a column named file/filename/image/path) names the image."""
    try:
        with open(path, newline="") as f:
            rows = list(csv.DictReader(f))
    except OSError as e:
        raise DataError(f"cannot read attribute CSV {path}: {e}") from None
    if not rows:
        raise DataError(f"attribute CSV {path} has no rows")
    cols = list(rows[0].keys())
    key = next((c for c in cols if c.lower() in ("file", "filename", "image", "image_id", "path", "img_filename")),
               cols[0])
    return [c for c in cols if c != key], {r[key]: r for r in rows}


def _to_float(v: str) -> float:
    try:
        return float(v)
    except (TypeError, ValueError):
        return float("nan")


def _images_under(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file())


def _csv_rows_for(table: dict[str, dict[str, str]], files: list[Path], others: list[Path], base: Path,
                  root: Path) -> tuple[dict[Path, dict[str, str]], list[str]]:
    """The CSV's row of each image under ``root`` ({path: row}), and the CSV keys that name no image under
    ``base`` at all. A key is a path relative to ``base`` or to ``root`` (the split folder), else its file name
    names the image of that name when only one image has it. ``others``: the images of ``base`` outside
    ``root`` (the other split folder); a row naming one of them belongs to the other split, it is not missing."""

    def index(paths: list[Path], split_dirs: bool) -> dict[str, Path]:
        names: dict[str, list[Path]] = {}
        for p in paths:
            names.setdefault(p.name, []).append(p)
        found = {n: ps[0] for n, ps in names.items() if len(ps) == 1}  # a repeated name identifies no file
        for p in paths:
            parts = p.relative_to(base).parts
            found[str(Path(*parts))] = p
            if split_dirs and len(parts) > 1:
                found[str(Path(*parts[1:]))] = p  # relative to its split folder
        return found

    here, there = index(files, root != base), index(others, True)
    rows: dict[Path, dict[str, str]] = {}
    missing = []
    for key, row in table.items():
        tries = (key, str(Path(key)), Path(key).name)
        p = next((here[k] for k in tries if k in here), None)
        if p is not None:
            rows.setdefault(p, row)
        elif not any(k in there for k in tries):
            missing.append(key)
    return rows, missing


def load_folder(cfg: DataConfig, split: str) -> FolderDataset:
    if not cfg.root:
        raise DataError("the folder dataset needs --data-root DIR (a folder of images, searched recursively)")
    base = Path(cfg.root)
    if not base.is_dir():
        raise DataError(f"image folder {base} does not exist")
    has_split_dirs = (base / "train").is_dir()
    if has_split_dirs and not (base / split).is_dir():
        # the folder itself would hold every training image: it is no test split
        raise DataError(f"{base} has a train/ sub-folder but no {split}/ beside it: add {base / split}, or put "
                        f"all images in one folder without train/ (a fixed 10 % of them is then the test split)")
    root = base / split if has_split_dirs else base
    files = _images_under(root)
    attr_names: list[str] = []
    rows: dict[Path, dict[str, str]] = {}
    split_column = False
    if cfg.attributes_csv:
        attr_names, table = read_attribute_csv(Path(cfg.attributes_csv))
        split_column = "split" in attr_names
        others = [p for p in _images_under(base) if not p.is_relative_to(root)] if has_split_dirs else []
        rows, missing = _csv_rows_for(table, files, others, base, root)
        if missing and not cfg.skip_bad_images:
            raise DataError(f"{len(missing)} file(s) named in {cfg.attributes_csv} are not under {base}, "
                            f"e.g. {missing[:3]}; fix the CSV or pass --skip-bad-images")
        if split_column:
            wanted = (split, {"train": "0", "val": "1", "test": "2"}.get(split))
            rows = {p: r for p, r in rows.items() if (r["split"] or "").strip() in wanted}
        files = sorted(rows)
        attr_names = [a for a in attr_names if a != "split"]
    if not has_split_dirs and not split_column:
        # the same fixed split with or without an attribute CSV (over the images the CSV names)
        files = _hash_split(files, root, split)
    if not files:
        raise DataError(f"no images ({', '.join(IMAGE_EXTENSIONS)}) found for split {split!r} under {root}")
    skipped = []
    good = []
    for p in files:
        problem = _verify_image(p)
        if problem is None:
            good.append(p)
        elif cfg.skip_bad_images:
            skipped.append(f"{p}: {problem}")
        else:
            raise DataError(f"cannot read image {p}: {problem}. Delete or replace it, or pass --skip-bad-images "
                            f"to leave unreadable files out (they are counted and listed).")
    files = good[: cfg.limit] if cfg.limit else good
    if not files:
        raise DataError(f"every image under {root} was unreadable ({len(skipped)} skipped)")
    # labels: sub-folder names (one level below root), when there are several
    parents = sorted({p.parent.relative_to(root).parts[0] for p in files if p.parent != root})
    class_names: tuple[str, ...] = tuple(parents) if len(parents) > 1 and not cfg.attributes_csv else ()
    lookup = {c: i for i, c in enumerate(class_names)}
    labels = np.array([lookup.get(p.relative_to(root).parts[0], -1) if class_names else -1 for p in files])
    attrs = np.zeros((len(files), len(attr_names)), np.float32)
    if attr_names:
        for i, p in enumerate(files):
            attrs[i] = [_to_float(rows[p][a]) for a in attr_names]
    rule = ("the train/ and test/ sub-folders" if has_split_dirs else
            "the split column of the attribute CSV" if split_column
            else "a fixed 10 % of the files, chosen by a hash of their names, is the test split")
    info = DatasetInfo("folder", split, str(base), class_names, tuple(attr_names), skipped, rule)
    return FolderDataset(files, base, cfg, info, labels, attrs)


def is_far_below(size: tuple[int, int], image_size: int) -> bool:
    """True for an image whose short side is under half the model's resolution (upscaling blurs it)."""
    return min(size) < image_size / 2


def describe_training_data(train_ds, test_ds, cfg: DataConfig) -> list[str]:
    """What a training run found, in a few lines: counts, split rule, conversion, and for image folders the
    file modes, transparency and images far below the model's resolution (they are upscaled)."""
    info = train_ds.info
    lines = [f"data: {info.name} at {info.root}: {len(train_ds)} train / "
             f"{len(test_ds) if test_ds is not None else 0} test images"
             + (f" (split: {info.split_rule})" if info.split_rule else "")]
    conv = f"converted to {cfg.channels} channel(s) at {cfg.image_size}x{cfg.image_size} px ({cfg.resize})"
    if isinstance(train_ds, FolderDataset):
        modes: dict[str, int] = {}
        alpha, small, smallest = 0, 0, None
        for f in train_ds.files:
            with Image.open(f) as img:
                modes[img.mode] = modes.get(img.mode, 0) + 1
                alpha += img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info)
                short = min(img.size)
                if is_far_below(img.size, cfg.image_size):
                    small += 1
                    smallest = img.size if smallest is None or short < min(smallest) else smallest
        conv += "; file modes " + ", ".join(f"{m} {n}" for m, n in sorted(modes.items()))
        if alpha:
            conv += f"; {alpha} with transparency, composited onto white"
        lines.append(conv)
        if small:
            lines.append(f"warning: {small} image(s) are smaller than half the model's {cfg.image_size} px "
                         f"(smallest {smallest[0]}x{smallest[1]}): they are upscaled and will look blurred")
    else:
        lines.append(conv)
    if info.class_names:
        shown = ", ".join(info.class_names[:10]) + (" ..." if len(info.class_names) > 10 else "")
        lines.append(f"{len(info.class_names)} classes" + (" (sub-folder names)" if isinstance(train_ds, FolderDataset)
                                                         else "") + f": {shown}")
    if info.attribute_names:
        lines.append(f"{len(info.attribute_names)} attributes: {', '.join(info.attribute_names[:10])}")
    return lines  # skipped files are reported by the trainer, with the file that lists them


def iterate_batches(ds: Dataset, batch_size: int, seed: int, epoch: int, start_batch: int = 0,
                    num_workers: int = 0, drop_last: bool = True, shard: tuple[int, int] = (0, 1)):
    """Yield (batch_index, images, labels) for one epoch in a permutation fixed by (seed, epoch).

    Resuming at ``start_batch`` reproduces exactly the batches a straight run would have seen.
    ``shard=(rank, world)`` keeps rows rank, rank + world, ... of each global batch of ``batch_size``, so a
    data-parallel rank decodes only its own slice.
    """
    rank, world = shard
    g = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    perm = torch.randperm(len(ds), generator=g)
    n_batches = max(len(ds) // batch_size, 1) if drop_last else -(-len(ds) // batch_size)
    batches = [perm[i * batch_size:(i + 1) * batch_size][rank::world] for i in range(start_batch, n_batches)]
    if num_workers > 0 and isinstance(ds, FolderDataset):
        loader = torch.utils.data.DataLoader(ds, batch_sampler=[b.tolist() for b in batches],
                                             num_workers=num_workers, persistent_workers=False)
        for k, (x, y, _) in enumerate(loader):
            yield start_batch + k, x, y
    else:
        for k, b in enumerate(batches):
            yield start_batch + k, ds.get_batch(b), torch.as_tensor(ds.labels[b.numpy()])


def batches_per_epoch(ds: Dataset, batch_size: int) -> int:
    return max(len(ds) // batch_size, 1) if len(ds) >= batch_size else 1
