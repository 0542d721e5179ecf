"""What the source loaders share: where each dataset is published, the data-root and split checks,
the missing-file errors, conversion of uint8 arrays to tensors, screening of image files
(``cfg.limit``, ``cfg.skip_bad_images``), and :class:`ArrayDataset` (a memory-mapped uint8 array)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable, Iterable

import numpy as np
import torch

from ...config import DataConfig
from ..datasets import (IMAGE_EXTENSIONS, DatasetInfo, DescribedDataset, FolderDataset, _verify_image,
                        uint8_batch_to_tensor)
from ..errors import DataError

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


def _image_index(folder: Path) -> dict[str, str]:
    """File name and stem -> file name of the images in one folder (one directory listing)."""
    out: dict[str, str] = {}
    with os.scandir(folder) as it:
        for e in it:
            if e.name.lower().endswith(IMAGE_EXTENSIONS):
                out[e.name] = e.name
                out.setdefault(e.name.rsplit(".", 1)[0], e.name)
    return out


class ArrayDataset(DescribedDataset):
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
