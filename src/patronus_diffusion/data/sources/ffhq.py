"""FFHQ.

A folder of FFHQ PNGs (``ffhq-256/``, ``thumbnails128x128/``, ``images1024x1024/``; sub-folders are
NOT classes) with an optional ``--attributes-csv``: the ``folder`` loader with FFHQ-specific errors.
"""

from __future__ import annotations

import numpy as np

from ...config import DataConfig
from ..datasets import IMAGE_EXTENSIONS, FolderDataset, load_folder
from ._common import _missing, _root


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
