"""Loaders for the papers' datasets, read from their OFFICIAL on-disk distribution formats.

Nothing here downloads: every loader reads ``cfg.root`` (``--data-root DIR``) and, when the expected files
are not there, raises a :class:`DataError` naming the files or folders it looked for and where the
dataset is published. ``DIR`` may be the dataset's own folder (e.g. ``cifar-10-batches-bin``) or the folder
that holds it. Registered names (see ``docs/datasets.md``):

``cifar10``
    The binary version (``cifar-10-batches-bin/``: ``data_batch_1.bin`` .. ``data_batch_5.bin`` and
    ``test_batch.bin``, each a run of 3073-byte records: 1 label byte, then 3072 bytes of a 32x32 image
    stored as three planes R, G, B, row-major) or the python version (``cifar-10-batches-py/``:
    ``data_batch_1`` .. ``data_batch_5``, ``test_batch``, each a pickled dict with ``b"data"`` (uint8
    (10000, 3072), the same planar layout) and ``b"labels"``). The pickles are read by
    :class:`RestrictedUnpickler`, which rebuilds numpy arrays and plain builtins and refuses everything
    else. Loaded into memory (:class:`TensorDataset`).
``stl10``
    ``stl10_binary/``: ``{train,test,unlabeled}_X.bin`` (uint8, N x 3 x 96 x 96, each channel plane stored
    column-major), ``{train,test}_y.bin`` (uint8 labels 1..10, mapped to 0..9), ``class_names.txt``.
    Memory-mapped and converted per batch (:class:`ArrayDataset`); split ``unlabeled`` has labels -1.
``celeba``
    ``img_align_celeba/*.jpg`` + ``list_attr_celeba.txt`` (40 attributes in {-1, 1}, kept as 0/1) +
    ``list_eval_partition.txt`` (0 train, 1 val, 2 test); also the official Drive layout
    ``Img/img_align_celeba/`` + ``Anno/`` + ``Eval/``, torchvision's ``celeba/`` folder and Kaggle's CSV
    versions. Read lazily (:class:`FolderDataset`); the 178x218 images become square by ``cfg.resize``.
``tiny-imagenet``
    ``tiny-imagenet-200/``: ``wnids.txt``, ``words.txt``, ``train/<wnid>/images/*.JPEG``,
    ``val/images/*.JPEG`` + ``val/val_annotations.txt``. Split ``test`` (and ``val``) is the labelled
    validation set; the official test set has no labels. Labels index the sorted wnids. Lazy.
``chexpert`` (``chexpert-uncertain-one``, ``chexpert-uncertain-nan``)
    ``CheXpert-v1.0-small/`` or ``CheXpert-v1.0/`` with ``train.csv`` and ``valid.csv`` whose ``Path``
    column is relative to the folder that holds the dataset folder. The 14 findings become float
    attributes (1, 0, NaN for blank; the uncertain -1 becomes 0, 1 or NaN by ``uncertain``), plus
    ``Sex_Male``, ``Age`` and ``Frontal``. Grey X-rays, read lazily. Split ``test`` reads ``valid.csv``.
``ffhq``
    A folder of FFHQ PNGs (``ffhq-256/``, ``thumbnails128x128/``, ``images1024x1024/``; sub-folders are
    NOT classes) with an optional ``--attributes-csv``: the ``folder`` loader with FFHQ-specific errors.

Every loader honours ``cfg.limit`` (the first N items of the split) and ``cfg.skip_bad_images`` (files
that are missing or do not decode are left out and listed in ``ds.info.skipped``; without it they raise
a :class:`DataError` naming the file).
"""

from __future__ import annotations

import codecs
import csv
import os
import pickle
import warnings
from pathlib import Path
from typing import Callable, Iterable

import numpy as np
import torch

from ..config import DataConfig
from .datasets import (IMAGE_EXTENSIONS, DatasetInfo, _Described, FolderDataset, TensorDataset, _verify_image, load_folder,
                       register_dataset, uint8_batch_to_tensor)
from .errors import DataError

CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
STL10_CLASSES = ("airplane", "bird", "car", "cat", "deer", "dog", "horse", "monkey", "ship", "truck")
CHEXPERT_FINDINGS = ("No Finding", "Enlarged Cardiomediastinum", "Cardiomegaly", "Lung Opacity", "Lung Lesion",
                     "Edema", "Consolidation", "Pneumonia", "Atelectasis", "Pneumothorax", "Pleural Effusion",
                     "Pleural Other", "Fracture", "Support Devices")

_WHERE = {
    "cifar10": "https://www.cs.toronto.edu/~kriz/cifar.html (cifar-10-binary.tar.gz or cifar-10-python.tar.gz; "
               "extract with `tar xzf`)",
    "stl10": "https://cs.stanford.edu/~acoates/stl10/ (stl10_binary.tar.gz; extract with `tar xzf`)",
    "celeba": "https://mmlab.ie.cuhk.edu.hk/projects/CelebA.html ('Align&Cropped Images': Img/img_align_celeba.zip, "
              "Anno/list_attr_celeba.txt, Eval/list_eval_partition.txt; unzip the images)",
    "tiny-imagenet": "http://cs231n.stanford.edu/tiny-imagenet-200.zip (unzip it)",
    "chexpert": "https://stanfordmlgroup.github.io/competitions/chexpert/ (free registration; "
                "CheXpert-v1.0-small.zip, unzip it)",
    "ffhq": "https://github.com/NVlabs/ffhq-dataset (images1024x1024 or thumbnails128x128; any folder of the PNGs, "
            "e.g. resized to ffhq-256/)",
}
_SPLIT_ALIASES = {"valid": "val", "validation": "val", "eval": "val"}


# ----------------------------------------------------------------------------- shared helpers
def _root(cfg: DataConfig, name: str, expected: str) -> Path:
    """``cfg.root`` as an existing directory, or a DataError that says what to put there."""
    if not cfg.root:
        raise DataError(f"{name} needs --data-root DIR (data.root) holding {expected}. Nothing is downloaded; "
                        f"get it from {_WHERE[name]}")
    root = Path(cfg.root).expanduser()
    if not root.is_dir():
        raise DataError(f"{name}: data root {root} is not a directory; expected it to hold {expected}. "
                        f"Get the dataset from {_WHERE[name]}")
    return root


def _missing(name: str, root: Path, expected: str) -> DataError:
    kinds = (".tar.gz", ".tgz", ".zip", ".7z", ".tar")
    found = [*root.iterdir(), *(p for k in kinds for p in root.glob(f"*/*{k}"))]
    archives = sorted({str(p.relative_to(root)) for p in found if p.name.endswith(kinds)})
    hint = f" Found archive(s) {archives}: extract them into {root} first." if archives else ""
    return DataError(f"{name}: {expected} not found under {root}.{hint} Get it from {_WHERE[name]}")


def _split(name: str, split: str, allowed: Iterable[str]) -> str:
    s = _SPLIT_ALIASES.get(split, split)
    allowed = tuple(allowed)
    if s not in allowed:
        raise DataError(f"{name} has splits {', '.join(map(repr, allowed))}, not {split!r}")
    return s


def _fit_channels(arr: np.ndarray, channels: int) -> np.ndarray:
    """uint8 (N, H, W, 3) -> (N, H, W, 3) or grey (N, H, W) with the ITU-R 601 luma weights PIL uses."""
    if channels == 3:
        return arr
    if channels == 1:
        rgb = arr.astype(np.uint32)
        return ((rgb[..., 0] * 299 + rgb[..., 1] * 587 + rgb[..., 2] * 114 + 500) // 1000).astype(np.uint8)
    raise DataError(f"data.channels must be 1 or 3, not {channels}")


def _to_tensor(arr: np.ndarray, cfg: DataConfig, chunk: int = 4096) -> torch.Tensor:
    """uint8 (N, H, W, 3) -> float (N, C, S, S) in [-1, 1], converted in chunks to bound peak memory."""
    if len(arr) == 0:
        return torch.zeros((0, cfg.channels, cfg.image_size, cfg.image_size))
    return torch.cat([uint8_batch_to_tensor(_fit_channels(arr[i:i + chunk], cfg.channels), cfg.image_size)
                      for i in range(0, len(arr), chunk)])


def _screen(files: list[Path], cfg: DataConfig, existing: Callable[[Path], bool] | None = None
            ) -> tuple[list[int], list[str]]:
    """Indices (into ``files``) of the items to use, honouring ``cfg.limit`` and ``cfg.skip_bad_images``.

    Missing files raise a DataError naming them (or are skipped). Without ``skip_bad_images`` images are
    decoded lazily, so a corrupt one raises a DataError naming it when it is read; with it, each candidate
    is verified here and only readable ones are kept (until ``limit`` are found).
    """
    exists = existing or (lambda p: p.is_file())
    limit = cfg.limit or None
    if not cfg.skip_bad_images:
        chosen = list(range(len(files)))[:limit]
        missing = [str(files[i]) for i in chosen if not exists(files[i])]
        if missing:
            raise DataError(f"{len(missing)} image file(s) listed by the dataset's annotation are missing, e.g. "
                            f"{missing[:3]}. Re-extract the archive, or pass --skip-bad-images to leave them out.")
        return chosen, []
    good, skipped = [], []
    for i, p in enumerate(files):
        problem = "missing file" if not exists(p) else _verify_image(p)
        if problem is None:
            good.append(i)
            if limit and len(good) >= limit:
                break
        else:
            skipped.append(f"{p}: {problem}")
    return good, skipped


def _folder_dataset(name: str, split: str, base: Path, cfg: DataConfig, files: list[Path], labels: np.ndarray,
                    attributes: np.ndarray, class_names=(), attribute_names=(), existing=None) -> FolderDataset:
    idx, skipped = _screen(files, cfg, existing)
    if not idx:
        raise DataError(f"{name}: no readable images for split {split!r} under {base}"
                        + (f" ({len(skipped)} skipped, e.g. {skipped[:2]})" if skipped else ""))
    info = DatasetInfo(name, split, str(base), tuple(class_names), tuple(attribute_names), skipped)
    return FolderDataset([files[i] for i in idx], base, cfg, info, labels[idx], attributes[idx].astype(np.float32))


def _read_lines(path: Path) -> list[str]:
    try:
        return path.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError as e:
        raise DataError(f"cannot read {path}: {e}") from None


class ArrayDataset(_Described):
    """uint8 images (N, H, W, 3), typically a read-only memory map of a binary file, converted to
    float (C, S, S) in [-1, 1] only when a batch is asked for. Same interface as :class:`TensorDataset`."""

    def __init__(self, array: np.ndarray, labels: np.ndarray, info: DatasetInfo, cfg: DataConfig,
                 sources: list[str] | None = None):
        self.array, self.info, self.cfg = array, info, cfg
        self.labels = np.asarray(labels, dtype=np.int64)
        self.attributes = np.zeros((len(array), 0), np.float32)
        self.sources = sources or [f"{info.split}:{i}" for i in range(len(array))]

    def __len__(self) -> int:
        return len(self.array)

    def __getitem__(self, i: int):
        return self.get_batch([i])[0], int(self.labels[i]), i

    def get_batch(self, indices) -> torch.Tensor:
        idx = np.asarray(indices, dtype=np.int64).reshape(-1)
        order = np.argsort(idx, kind="stable")  # read the map in file order, then restore the asked order
        arr = np.empty((len(idx), *self.array.shape[1:]), np.uint8)
        arr[order] = self.array[idx[order]]
        return uint8_batch_to_tensor(_fit_channels(arr, self.cfg.channels), self.cfg.image_size)


# ----------------------------------------------------------------------------- restricted unpickling
def _latin1_encode(obj, encoding="utf-8", errors="strict"):
    """``_codecs.encode`` as numpy uses it for array bytes in protocol-2 pickles written by Python 3;
    only the latin-1 codec is allowed."""
    if not (isinstance(obj, str) and isinstance(encoding, str) and codecs.lookup(encoding).name == "iso8859-1"):
        raise pickle.UnpicklingError(f"refusing _codecs.encode with encoding {encoding!r}")
    return obj.encode("latin-1", errors)


def _safe_globals() -> dict[tuple[str, str], object]:
    try:
        from numpy._core import multiarray as ma, numeric as nu
    except ImportError:  # numpy < 2
        from numpy.core import multiarray as ma, numeric as nu  # type: ignore[no-redef]
    table: dict[tuple[str, str], object] = {}
    for pkg in ("numpy.core", "numpy._core"):  # files name either, whichever numpy wrote them
        table[(f"{pkg}.multiarray", "_reconstruct")] = ma._reconstruct  # arrays, protocols 0..4
        table[(f"{pkg}.multiarray", "scalar")] = ma.scalar
        table[(f"{pkg}.numeric", "_frombuffer")] = nu._frombuffer  # arrays, protocol 5
    table[("numpy", "ndarray")] = np.ndarray
    table[("numpy", "dtype")] = np.dtype
    table[("_codecs", "encode")] = _latin1_encode
    for mod in ("builtins", "__builtin__"):  # Python 2 pickles name the builtins module __builtin__
        for t in (list, dict, tuple, set, frozenset, bytes, bytearray, str, int, float, complex, bool):
            table[(mod, t.__name__)] = t
    return table


class RestrictedUnpickler(pickle.Unpickler):
    """An unpickler for data files such as CIFAR's python batches: it resolves only numpy's array and
    dtype reconstruction and plain builtin containers/scalars. Any other global (``os.system``,
    ``builtins.eval``, ``subprocess.Popen``, ...) raises :class:`pickle.UnpicklingError` before it can
    be called, so a hostile file cannot run code."""

    _allowed: dict[tuple[str, str], object] | None = None

    def find_class(self, module: str, name: str):
        if RestrictedUnpickler._allowed is None:
            RestrictedUnpickler._allowed = _safe_globals()
        obj = RestrictedUnpickler._allowed.get((module, name))
        if obj is None:
            raise pickle.UnpicklingError(f"refusing to load global {module}.{name}: only numpy arrays and builtin "
                                         f"containers are allowed in a data file")
        return obj


def restricted_load(path: Path):
    """Unpickle a data file with :class:`RestrictedUnpickler` (Python 2 strings become bytes)."""
    try:
        with open(path, "rb") as f:
            return RestrictedUnpickler(f, encoding="bytes").load()
    except pickle.UnpicklingError as e:
        raise DataError(f"{path} is not a plain data pickle ({e}); refusing to load it. Use the official file.") \
            from None
    except Exception as e:  # noqa: BLE001 - a corrupt pickle can fail in many ways; name the file
        raise DataError(f"cannot read pickled batch {path}: {type(e).__name__}: {e}. The file is corrupt or "
                        f"truncated; re-extract it.") from None


# ----------------------------------------------------------------------------- CIFAR-10
_CIFAR_RECORD = 1 + 3072


def _cifar_dir(root: Path) -> tuple[Path, str]:
    for d in (root, root / "cifar-10-batches-bin"):
        if (d / "data_batch_1.bin").exists() or (d / "test_batch.bin").exists():
            return d, "bin"
    for d in (root, root / "cifar-10-batches-py"):
        if (d / "data_batch_1").exists() or (d / "test_batch").exists():
            return d, "py"
    raise _missing("cifar10", root, "cifar-10-batches-bin/ (data_batch_1.bin .. data_batch_5.bin, test_batch.bin) "
                                    "or cifar-10-batches-py/ (data_batch_1 .. data_batch_5, test_batch)")


def _cifar_planar(flat: np.ndarray) -> np.ndarray:
    """(N, 3072) planar R|G|B rows of 32x32 -> (N, 32, 32, 3)."""
    return flat.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)


def read_cifar_bin(path: Path, limit: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """One binary CIFAR-10 batch -> (uint8 (N, 32, 32, 3), labels (N,)); at most ``limit`` records."""
    try:
        size = path.stat().st_size
        if size == 0 or size % _CIFAR_RECORD:
            raise DataError(f"{path} is corrupt or truncated: {size} bytes is not a whole number of "
                            f"{_CIFAR_RECORD}-byte records (1 label byte + 3072 image bytes); re-extract it")
        n = size // _CIFAR_RECORD if limit is None else min(limit, size // _CIFAR_RECORD)
        raw = np.fromfile(path, dtype=np.uint8, count=n * _CIFAR_RECORD).reshape(n, _CIFAR_RECORD)
    except OSError as e:
        raise DataError(f"cannot read CIFAR-10 batch {path}: {e}") from None
    labels = raw[:, 0].astype(np.int64)
    if labels.size and labels.max() > 9:
        raise DataError(f"{path}: label byte {int(labels.max())} is not a CIFAR-10 class (0..9); is it CIFAR-100? "
                        f"The file is not a CIFAR-10 binary batch")
    return _cifar_planar(raw[:, 1:]), labels


def read_cifar_py(path: Path, limit: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """One python-version CIFAR-10 batch (a pickled dict) -> (uint8 (N, 32, 32, 3), labels (N,))."""
    d = restricted_load(path)
    if not isinstance(d, dict):
        raise DataError(f"{path}: expected a pickled dict with b'data' and b'labels', got {type(d).__name__}")
    data = d.get(b"data", d.get("data"))
    labels = d.get(b"labels", d.get("labels"))
    if not isinstance(data, np.ndarray) or labels is None:
        raise DataError(f"{path}: the pickled dict lacks b'data' (uint8 N x 3072) or b'labels'")
    data = np.asarray(data, dtype=np.uint8)
    if data.ndim != 2 or data.shape[1] != 3072 or len(data) != len(labels):
        raise DataError(f"{path}: b'data' has shape {data.shape} for {len(labels)} labels; expected (N, 3072)")
    labels = np.asarray(labels, dtype=np.int64)
    if labels.size and (labels.min() < 0 or labels.max() > 9):
        raise DataError(f"{path}: labels outside 0..9; not a CIFAR-10 batch")
    if limit is not None:
        data, labels = data[:limit], labels[:limit]
    return _cifar_planar(data), labels


def _cifar_classes(d: Path, kind: str) -> tuple[str, ...]:
    if kind == "bin" and (d / "batches.meta.txt").exists():
        names = [ln.strip() for ln in _read_lines(d / "batches.meta.txt") if ln.strip()]
    elif kind == "py" and (d / "batches.meta").exists():
        meta = restricted_load(d / "batches.meta")
        raw = meta.get(b"label_names", meta.get("label_names")) if isinstance(meta, dict) else None
        names = [n.decode() if isinstance(n, bytes) else str(n) for n in (raw or [])]
    else:
        names = []
    return tuple(names) if len(names) == 10 else CIFAR10_CLASSES


def load_cifar10(cfg: DataConfig, split: str) -> TensorDataset:
    """CIFAR-10 from the binary or the python version (see the module docstring). Splits: train, test."""
    root = _root(cfg, "cifar10", "cifar-10-batches-bin/ or cifar-10-batches-py/")
    split = _split("cifar10", split, ("train", "test"))
    d, kind = _cifar_dir(root)
    ext, reader = (".bin", read_cifar_bin) if kind == "bin" else ("", read_cifar_py)
    names = [f"data_batch_{i}{ext}" for i in range(1, 6)] if split == "train" else [f"test_batch{ext}"]
    absent = [n for n in names if not (d / n).is_file()]
    if absent:
        raise DataError(f"cifar10: missing {absent} in {d} (the {split} split needs {names}). Re-extract the "
                        f"archive from {_WHERE['cifar10']}")
    images, labels, sources = [], [], []
    left = cfg.limit or None
    for n in names:
        x, y = reader(d / n, left)
        images.append(x)
        labels.append(y)
        sources += [f"{n}:{i}" for i in range(len(y))]
        if left is not None:
            left -= len(y)
            if left <= 0:
                break
    x = np.concatenate(images)
    info = DatasetInfo("cifar10", split, str(d), _cifar_classes(d, kind))
    return TensorDataset(_to_tensor(x, cfg), np.concatenate(labels), info, sources=sources)


# ----------------------------------------------------------------------------- STL-10
_STL_PIXELS = 3 * 96 * 96


def load_stl10(cfg: DataConfig, split: str) -> ArrayDataset:
    """STL-10 binary version (see the module docstring). Splits: train (5000), test (8000), unlabeled."""
    root = _root(cfg, "stl10", "stl10_binary/ (train_X.bin, train_y.bin, test_X.bin, test_y.bin, class_names.txt)")
    split = _split("stl10", split, ("train", "test", "unlabeled"))
    d = root if (root / "train_X.bin").exists() or (root / "test_X.bin").exists() else root / "stl10_binary"
    xpath = d / f"{split}_X.bin"
    if not xpath.is_file():
        raise _missing("stl10", root, f"stl10_binary/{xpath.name}")
    size = xpath.stat().st_size
    if size == 0 or size % _STL_PIXELS:
        raise DataError(f"{xpath} is corrupt or truncated: {size} bytes is not a whole number of 3x96x96 images")
    n = size // _STL_PIXELS
    if cfg.limit:
        n = min(n, cfg.limit)
    try:
        raw = np.memmap(xpath, dtype=np.uint8, mode="r", shape=(n, 3, 96, 96))
    except (OSError, ValueError) as e:
        raise DataError(f"cannot map {xpath}: {e}") from None
    images = raw.transpose(0, 3, 2, 1)  # planes are column-major: raw[n, c, x, y] -> image[n, y, x, c]
    if split == "unlabeled":
        labels = np.full(n, -1, np.int64)
    else:
        ypath = d / f"{split}_y.bin"
        if not ypath.is_file():
            raise _missing("stl10", root, f"stl10_binary/{ypath.name} (the labels of {xpath.name})")
        y = np.fromfile(ypath, dtype=np.uint8).astype(np.int64)
        if len(y) != size // _STL_PIXELS:
            raise DataError(f"{ypath} has {len(y)} labels but {xpath.name} has {size // _STL_PIXELS} images")
        if y.size and (y.min() < 1 or y.max() > 10):
            raise DataError(f"{ypath}: labels must be 1..10, found {int(y.min())}..{int(y.max())}")
        labels = y[:n] - 1
    names = [ln.strip() for ln in _read_lines(d / "class_names.txt") if ln.strip()] \
        if (d / "class_names.txt").exists() else []
    info = DatasetInfo("stl10", split, str(d), tuple(names) if len(names) == 10 else STL10_CLASSES)
    return ArrayDataset(images, labels, info, cfg, [f"{xpath.name}:{i}" for i in range(n)])


# ----------------------------------------------------------------------------- CelebA
def _first(candidates: Iterable[Path]) -> Path | None:
    return next((p for p in candidates if p.exists()), None)


def _image_index(folder: Path) -> dict[str, str]:
    """File name and stem -> file name of the images in one folder (one directory listing)."""
    out: dict[str, str] = {}
    with os.scandir(folder) as it:
        for e in it:
            if e.name.lower().endswith(IMAGE_EXTENSIONS):
                out[e.name] = e.name
                out.setdefault(e.name.rsplit(".", 1)[0], e.name)
    return out


def read_celeba_annotations(attr: Path, part: Path) -> tuple[list[str], list[str], np.ndarray, np.ndarray]:
    """(file names, 40 attribute names, attributes in {0, 1} float32 (N, 40), partition (N,) in {0, 1, 2}).

    ``list_attr_celeba.txt``: a count line, a line of attribute names, then ``000001.jpg -1 1 ...``;
    ``list_eval_partition.txt``: ``000001.jpg 0`` (0 train, 1 val, 2 test). Kaggle's CSV versions
    (``image_id,...`` headers) are read too.
    """
    lines = _read_lines(attr)
    sep = "," if attr.suffix == ".csv" else None
    header, first = (lines[0], 1) if sep else (lines[1] if len(lines) > 1 else "", 2)
    names = header.split(sep)[1:] if sep else header.split()
    body = [ln.split(sep, 1) for ln in lines[first:] if ln.strip()]  # [file, "v v v ..."]
    files = [r[0].strip() for r in body]
    text = " ".join(r[1] if len(r) == 2 else "x" for r in body)
    try:  # a bad token stops the parse early (older numpy warns, newer raises); the size check sees it
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            values = np.fromstring(text.replace(",", " "), dtype=np.int8, sep=" ") if body else np.zeros(0, np.int8)
    except ValueError:
        values = np.zeros(0, np.int8)
    if not names or values.size != len(body) * len(names) or (np.abs(values) > 1).any():
        # slow path, only to name the first bad line
        bad = next((k for k, r in enumerate(body) if len(r) != 2 or len(r[1].replace(",", " ").split()) != len(names)
                    or not set(r[1].replace(",", " ").split()) <= {"-1", "0", "1"}), 0)
        raise DataError(f"{attr} is not a CelebA attribute list (data line {bad + 1}: expected a file name and "
                        f"{len(names)} values of -1/1); re-extract it")
    values = values.reshape(len(body), len(names))
    partition: dict[str, int] = {}
    for k, ln in enumerate(_read_lines(part)):
        cells = ln.replace(",", " ").split()
        if len(cells) == 2 and cells[1] in ("0", "1", "2"):
            partition[cells[0]] = int(cells[1])
        elif cells and not (k == 0 and part.suffix == ".csv"):  # a CSV starts with a header line
            raise DataError(f"{part} line {k + 1} is not '<file> <0|1|2>'; re-extract it")
    split = np.array([partition.get(f, -1) for f in files], np.int64)
    if (split < 0).any():
        raise DataError(f"{part} has no partition for {int((split < 0).sum())} file(s) of {attr.name}, "
                        f"e.g. {files[int(np.argmax(split < 0))]}")
    return files, names, (values > 0).astype(np.float32), split


def _celeba_layout(root: Path) -> tuple[Path, Path, Path]:
    bases = [root, root / "celeba", root / "CelebA"]
    base = next((b for b in bases if b.is_dir() and (_first(b / d for d in ("img_align_celeba", "Img")))), root)
    img = _first([base / "img_align_celeba" / "img_align_celeba", base / "img_align_celeba",
                  base / "Img" / "img_align_celeba", base / "Img" / "img_align_celeba_png"])
    ann_dirs = [base, base / "Anno", base / "Eval"]
    attr = _first(d / f"list_attr_celeba.{e}" for d in ann_dirs for e in ("txt", "csv"))
    part = _first(d / f"list_eval_partition.{e}" for d in ann_dirs for e in ("txt", "csv"))
    expected = ("img_align_celeba/*.jpg, list_attr_celeba.txt and list_eval_partition.txt (or the official "
                "Img/img_align_celeba/, Anno/list_attr_celeba.txt, Eval/list_eval_partition.txt)")
    if img is None or not img.is_dir():
        raise _missing("celeba", base, "the image folder img_align_celeba/ (" + expected + ")")
    if attr is None:
        raise _missing("celeba", base, "list_attr_celeba.txt (" + expected + ")")
    if part is None:
        raise _missing("celeba", base, "list_eval_partition.txt, which defines the train/val/test split ("
                       + expected + ")")
    return img, attr, part


def load_celeba(cfg: DataConfig, split: str) -> FolderDataset:
    """Aligned & cropped CelebA (178x218 JPEGs) with its 40 binary attributes; splits train, val, test.

    ``cfg.resize`` makes the images square: the paper presets ``squash`` them to 64x64 as the reference
    does (faces get narrower); ``center-crop`` (a 178x178 crop, then resize) is the common alternative.
    Labels are -1 (CelebA has no classes); the attributes are 0/1 floats named as in the list.
    """
    root = _root(cfg, "celeba", "img_align_celeba/ + list_attr_celeba.txt + list_eval_partition.txt")
    split = _split("celeba", split, ("train", "val", "test"))
    img, attr, part = _celeba_layout(root)
    files, names, attrs, parts = read_celeba_annotations(attr, part)
    keep = np.flatnonzero(parts == ("train", "val", "test").index(split))
    present = _image_index(img)
    paths = [img / present.get(files[i], present.get(files[i].rsplit(".", 1)[0], files[i])) for i in keep]
    names_present = set(present.values())
    return _folder_dataset("celeba", split, root, cfg, paths, np.full(len(keep), -1, np.int64), attrs[keep],
                           attribute_names=names, existing=lambda p: p.name in names_present)


# ----------------------------------------------------------------------------- Tiny ImageNet
def _tiny_dir(root: Path) -> Path:
    for d in (root, root / "tiny-imagenet-200"):
        if (d / "wnids.txt").exists():
            return d
    raise _missing("tiny-imagenet", root, "tiny-imagenet-200/ (wnids.txt, words.txt, train/<wnid>/images/*.JPEG, "
                                          "val/images/*.JPEG, val/val_annotations.txt)")


def _tiny_class_names(d: Path, wnids: list[str]) -> tuple[str, ...]:
    words: dict[str, str] = {}
    if (d / "words.txt").exists():
        wanted = set(wnids)
        for ln in _read_lines(d / "words.txt"):
            wnid, _, text = ln.partition("\t")
            if wnid in wanted:
                words[wnid] = text.split(",")[0].strip() or wnid
    names = [words.get(w, w) for w in wnids]
    dup = {n for n in names if names.count(n) > 1}
    return tuple(f"{n} ({w})" if n in dup else n for n, w in zip(names, wnids))


def load_tiny_imagenet(cfg: DataConfig, split: str) -> FolderDataset:
    """Tiny ImageNet (200 classes of 64x64 JPEGs). Splits: train (100k), test = val (10k, labelled).

    Labels index the sorted wnids (as an ImageFolder would); class names are the first synonym in
    words.txt. Training files are interleaved across classes (1st of each class, then 2nd, ...) so
    that ``cfg.limit`` gives a class-balanced subset.
    """
    root = _root(cfg, "tiny-imagenet", "tiny-imagenet-200/ (wnids.txt, words.txt, train/, val/)")
    split = _split("tiny-imagenet", "val" if split == "test" else split, ("train", "val"))
    d = _tiny_dir(root)
    wnids = sorted({ln.strip() for ln in _read_lines(d / "wnids.txt") if ln.strip()})
    if not wnids:
        raise DataError(f"{d / 'wnids.txt'} lists no classes")
    index = {w: k for k, w in enumerate(wnids)}
    files: list[Path] = []
    labels: list[int] = []
    names_present: set[Path] = set()
    if split == "train":
        per_class = []
        for w in wnids:
            folder = d / "train" / w / "images"
            folder = folder if folder.is_dir() else d / "train" / w
            if not folder.is_dir():
                raise _missing("tiny-imagenet", d, f"train/{w}/images/ (class {w} of wnids.txt)")
            per_class.append([folder / n for n in sorted(set(_image_index(folder).values()))])
        for k in range(max(len(c) for c in per_class)):
            for c, paths in enumerate(per_class):
                if k < len(paths):
                    files.append(paths[k])
                    labels.append(c)
        names_present = set(files)
    else:
        ann = d / "val" / "val_annotations.txt"
        folder = d / "val" / "images"
        if not ann.exists() or not folder.is_dir():
            raise _missing("tiny-imagenet", d, "val/images/ and val/val_annotations.txt")
        present = _image_index(folder)
        for k, ln in enumerate(_read_lines(ann)):
            cells = ln.split("\t")
            if not ln.strip():
                continue
            if len(cells) < 2 or cells[1] not in index:
                raise DataError(f"{ann} line {k + 1}: expected '<file>\\t<wnid from wnids.txt>\\t...', got {ln!r}")
            files.append(folder / cells[0])
            labels.append(index[cells[1]])
        names_present = {folder / n for n in present.values()}
    return _folder_dataset("tiny-imagenet", "test" if split == "val" else split, d, cfg, files,
                           np.asarray(labels, np.int64), np.zeros((len(files), 0), np.float32),
                           class_names=_tiny_class_names(d, wnids), existing=lambda p: p in names_present)


# ----------------------------------------------------------------------------- CheXpert
UNCERTAIN_POLICIES = {"zero": 0.0, "one": 1.0, "nan": float("nan")}


def _chexpert_dir(root: Path) -> Path:
    if (root / "train.csv").exists() or (root / "valid.csv").exists():
        return root
    for name in ("CheXpert-v1.0-small", "CheXpert-v1.0"):
        if (root / name).is_dir():
            return root / name
    raise _missing("chexpert", root, "CheXpert-v1.0-small/ or CheXpert-v1.0/ (train.csv, valid.csv, train/, valid/)")


def _cell(v: str | None) -> float:
    try:
        return float(v) if v not in (None, "") else float("nan")
    except ValueError:
        return float("nan")


def load_chexpert(cfg: DataConfig, split: str, uncertain: str = "zero") -> FolderDataset:
    """CheXpert chest X-rays with the 14 findings as attributes. Splits: train (train.csv), test = valid.

    Finding values: 1 positive, 0 negative, blank -> NaN (not mentioned), -1 (uncertain) -> ``uncertain``:
    ``zero`` (default, the "U-Zeros" policy), ``one`` ("U-Ones") or ``nan`` (leave it out). Also
    ``Sex_Male`` (1 male, 0 female, NaN unknown), ``Age`` and ``Frontal`` (1 frontal, 0 lateral) where the
    CSV has those columns. Labels are -1 (multi-label data). The ``Path`` column is relative to the
    folder that holds the dataset folder; a renamed dataset folder is tolerated.
    """
    if uncertain not in UNCERTAIN_POLICIES:
        raise DataError(f"chexpert: uncertain must be one of {sorted(UNCERTAIN_POLICIES)}, not {uncertain!r}")
    root = _root(cfg, "chexpert", "CheXpert-v1.0-small/ (train.csv, valid.csv and the images they name)")
    split = _split("chexpert", "val" if split == "test" else split, ("train", "val"))
    d = _chexpert_dir(root)
    table = d / ("train.csv" if split == "train" else "valid.csv")
    if not table.exists():
        raise _missing("chexpert", d, table.name)
    rows = list(csv.DictReader(_read_lines(table)))
    if not rows or "Path" not in rows[0]:
        raise DataError(f"{table} has no 'Path' column (or no rows); is it the official CheXpert CSV?")
    cols = rows[0].keys()
    findings = [f for f in CHEXPERT_FINDINGS if f in cols]
    extra = [n for n, c in (("Sex_Male", "Sex"), ("Age", "Age"), ("Frontal", "Frontal/Lateral")) if c in cols]
    u = UNCERTAIN_POLICIES[uncertain]
    attrs = np.full((len(rows), len(findings) + len(extra)), np.nan, np.float32)
    files = []
    for i, r in enumerate(rows):
        parts = Path(r["Path"]).parts
        files.append(d.joinpath(*parts[1:]) if parts and parts[0].startswith("CheXpert") else d.parent / r["Path"])
        vals = [_cell(r[f]) for f in findings]
        attrs[i, :len(findings)] = [u if v == -1 else v for v in vals]
        for k, name in enumerate(extra):
            if name == "Sex_Male":
                v = {"Male": 1.0, "Female": 0.0}.get(r["Sex"], np.nan)
            elif name == "Age":
                v = _cell(r["Age"])
            else:
                v = {"Frontal": 1.0, "Lateral": 0.0}.get(r["Frontal/Lateral"], np.nan)
            attrs[i, len(findings) + k] = v
    base = d.parent
    suffix = {"zero": "", "one": "-uncertain-one", "nan": "-uncertain-nan"}[uncertain]
    ds = _folder_dataset("chexpert" + suffix, "test" if split == "val" else split, base, cfg, files,
                         np.full(len(files), -1, np.int64), attrs, attribute_names=findings + extra)
    return ds


# ----------------------------------------------------------------------------- FFHQ
def load_ffhq(cfg: DataConfig, split: str) -> FolderDataset:
    """FFHQ: a folder of face PNGs (any resolution, searched recursively) with an optional attribute CSV.

    The ``folder`` loader does the work: train/test sub-folders if present, else the CSV's ``split``
    column, else a fixed 90/10 split by file-name hash. Sub-folders such as ``00000/``, ``01000/`` of the
    official release are not classes: labels are -1.
    """
    root = _root(cfg, "ffhq", "the FFHQ PNGs (e.g. ffhq-256/*.png or images1024x1024/*/*.png)")
    if not any(p.suffix.lower() in IMAGE_EXTENSIONS for p in root.rglob("*")):
        raise _missing("ffhq", root, "any image file (PNG) in the folder or its sub-folders")
    ds = load_folder(cfg, split)
    ds.info.name = "ffhq"
    if not cfg.attributes_csv:
        ds.info.class_names = ()
        ds.labels = np.full(len(ds), -1, np.int64)
    return ds


# ----------------------------------------------------------------------------- registration
FORMAT_LOADERS: dict[str, Callable[[DataConfig, str], object]] = {
    "cifar10": load_cifar10,
    "stl10": load_stl10,
    "celeba": load_celeba,
    "tiny-imagenet": load_tiny_imagenet,
    "chexpert": load_chexpert,
    "chexpert-uncertain-one": lambda cfg, split: load_chexpert(cfg, split, uncertain="one"),
    "chexpert-uncertain-nan": lambda cfg, split: load_chexpert(cfg, split, uncertain="nan"),
    "ffhq": load_ffhq,
}
for _name, _loader in FORMAT_LOADERS.items():
    register_dataset(_name, _loader)

__all__ = ["ArrayDataset", "CHEXPERT_FINDINGS", "CIFAR10_CLASSES", "FORMAT_LOADERS", "RestrictedUnpickler",
           "STL10_CLASSES", "load_celeba", "load_chexpert", "load_cifar10", "load_ffhq", "load_stl10",
           "load_tiny_imagenet", "read_celeba_annotations", "read_cifar_bin", "read_cifar_py", "restricted_load"]
