"""The one table of dataset names (``--dataset NAME``, ``data.dataset``) and their loaders.

Every built-in dataset is listed here explicitly; importing a loader module registers nothing. A loader
is ``loader(cfg: DataConfig, split: str)`` and returns a :class:`DescribedDataset`. The official formats
are described in the :mod:`.sources` modules and in ``docs/datasets.md``.
"""

from __future__ import annotations

from functools import partial
from typing import Callable

from ..config import DataConfig
from .datasets import DescribedDataset, load_fashion_mnist, load_folder, load_mnist
from .errors import DataError
from .sources.celeba import load_celeba
from .sources.chexpert import load_chexpert
from .sources.cifar10 import load_cifar10
from .sources.ffhq import load_ffhq
from .sources.stl10 import load_stl10
from .sources.tiny_imagenet import load_tiny_imagenet

LOADERS: dict[str, Callable[[DataConfig, str], DescribedDataset]] = {
    "fashion-mnist": load_fashion_mnist,
    "mnist": load_mnist,
    "folder": load_folder,
    "cifar10": load_cifar10,
    "stl10": load_stl10,
    "celeba": load_celeba,
    "tiny-imagenet": load_tiny_imagenet,
    "chexpert": load_chexpert,
    "chexpert-uncertain-one": partial(load_chexpert, uncertain="one"),
    "chexpert-uncertain-nan": partial(load_chexpert, uncertain="nan"),
    "ffhq": load_ffhq,
}


def dataset_names() -> list[str]:
    return sorted(LOADERS)


def load_dataset(cfg: DataConfig, split: str = "train") -> DescribedDataset:
    if cfg.dataset not in LOADERS:
        raise DataError(f"unknown dataset {cfg.dataset!r}; known: {', '.join(dataset_names())}")
    ds = LOADERS[cfg.dataset](cfg, split)
    if len(ds) == 0:
        raise DataError(f"dataset {cfg.dataset!r} split {split!r} is empty")
    x = ds[0][0]
    if x.shape[0] != cfg.channels:
        raise DataError(f"dataset gives {x.shape[0]}-channel images but data.channels={cfg.channels}")
    return ds
