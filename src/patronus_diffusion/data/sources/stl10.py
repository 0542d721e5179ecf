"""STL-10, binary version.

``stl10_binary/``: ``{train,test,unlabeled}_X.bin`` (uint8, N x 3 x 96 x 96, each channel plane stored
column-major), ``{train,test}_y.bin`` (uint8 labels 1..10, mapped to 0..9), ``class_names.txt``.
Memory-mapped and converted per batch (:class:`ArrayDataset`); split ``unlabeled`` has labels -1.
"""

from __future__ import annotations

import numpy as np

from ...config import DataConfig
from ..datasets import DatasetInfo
from ..errors import DataError
from ._common import ArrayDataset, _missing, _read_lines, _root, _split

STL10_CLASSES = ("airplane", "bird", "car", "cat", "deer", "dog", "horse", "monkey", "ship", "truck")
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
