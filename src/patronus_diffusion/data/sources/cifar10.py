"""CIFAR-10 in either official version.

The binary version (``cifar-10-batches-bin/``: ``data_batch_1.bin`` .. ``data_batch_5.bin`` and
``test_batch.bin``, each a run of 3073-byte records: 1 label byte, then 3072 bytes of a 32x32 image
stored as three planes R, G, B, row-major) or the python version (``cifar-10-batches-py/``:
``data_batch_1`` .. ``data_batch_5``, ``test_batch``, each a pickled dict with ``b"data"`` (uint8
(10000, 3072), the same planar layout) and ``b"labels"``). The pickles are read by
:class:`RestrictedUnpickler`, which rebuilds numpy arrays and plain builtins and refuses everything
else. Loaded into memory (:class:`TensorDataset`).
"""

from __future__ import annotations

import codecs
import pickle
from pathlib import Path

import numpy as np

from ...config import DataConfig
from ..datasets import DatasetInfo, TensorDataset
from ..errors import DataError
from ._common import _WHERE, _missing, _read_lines, _root, _split, _to_tensor

CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")


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
