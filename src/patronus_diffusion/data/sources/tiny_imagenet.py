"""Tiny ImageNet.

``tiny-imagenet-200/``: ``wnids.txt``, ``words.txt``, ``train/<wnid>/images/*.JPEG``,
``val/images/*.JPEG`` + ``val/val_annotations.txt``. Split ``test`` (and ``val``) is the labelled
validation set; the official test set has no labels. Labels index the sorted wnids. Lazy.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ...config import DataConfig
from ..datasets import FolderDataset
from ..errors import DataError
from ._common import _folder_dataset, _image_index, _missing, _read_lines, _root, _split


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
