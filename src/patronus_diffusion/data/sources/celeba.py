"""CelebA, aligned & cropped.

``img_align_celeba/*.jpg`` + ``list_attr_celeba.txt`` (40 attributes in {-1, 1}, kept as 0/1) +
``list_eval_partition.txt`` (0 train, 1 val, 2 test); also the official Drive layout
``Img/img_align_celeba/`` + ``Anno/`` + ``Eval/``, torchvision's ``celeba/`` folder and Kaggle's CSV
versions. Read lazily (:class:`FolderDataset`); the 178x218 images become square by ``cfg.resize``.

The layout detection (:func:`celeba_paths`) and the annotation readers (:func:`read_celeba_attributes`,
:func:`read_celeba_partition`) also serve :func:`patronus_diffusion.data.biased.read_celeba`.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Iterable

import numpy as np

from ...config import DataConfig
from ..datasets import FolderDataset
from ..errors import DataError
from ._common import _folder_dataset, _image_index, _missing, _read_lines, _root, _split

CELEBA_SPLITS = ("train", "val", "test")  # the partition numbers 0, 1, 2


def _first(candidates: Iterable[Path]) -> Path | None:
    return next((p for p in candidates if p.exists()), None)


def read_celeba_attributes(attr: Path) -> tuple[list[str], list[str], np.ndarray]:
    """(file names, 40 attribute names, attributes in {0, 1} float32 (N, 40)) from ``list_attr_celeba.txt``:
    a count line, a line of attribute names, then ``000001.jpg -1 1 ...``; or from Kaggle's CSV version
    (an ``image_id,...`` header)."""
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
    return files, names, (values > 0).astype(np.float32)


def read_celeba_partition(part: Path) -> dict[str, int]:
    """File name -> partition (0 train, 1 val, 2 test) from ``list_eval_partition.txt`` (``000001.jpg 0``)
    or its CSV version (a header line, then ``000001.jpg,0``)."""
    partition: dict[str, int] = {}
    for k, ln in enumerate(_read_lines(part)):
        cells = ln.replace(",", " ").split()
        if len(cells) == 2 and cells[1] in ("0", "1", "2"):
            partition[cells[0]] = int(cells[1])
        elif cells and not (k == 0 and part.suffix == ".csv"):  # a CSV starts with a header line
            raise DataError(f"{part} line {k + 1} is not '<file> <0|1|2>'; re-extract it")
    return partition


def read_celeba_annotations(attr: Path, part: Path) -> tuple[list[str], list[str], np.ndarray, np.ndarray]:
    """(file names, 40 attribute names, attributes in {0, 1} float32 (N, 40), partition (N,) in {0, 1, 2}).

    ``list_attr_celeba.txt`` (:func:`read_celeba_attributes`) and ``list_eval_partition.txt``
    (:func:`read_celeba_partition`), or Kaggle's CSV versions; every listed file must have a partition.
    """
    files, names, attrs = read_celeba_attributes(attr)
    partition = read_celeba_partition(part)
    split = np.array([partition.get(f, -1) for f in files], np.int64)
    if (split < 0).any():
        raise DataError(f"{part} has no partition for {int((split < 0).sum())} file(s) of {attr.name}, "
                        f"e.g. {files[int(np.argmax(split < 0))]}")
    return files, names, attrs, split


def celeba_paths(root: Path) -> tuple[Path, Path | None, Path | None, Path | None]:
    """Where the CelebA copy under ``root`` keeps its parts, in any supported layout: (base folder, image
    folder, attribute list, partition list), None for a part that is not there."""
    bases = [root, root / "celeba", root / "CelebA"]
    base = next((b for b in bases if b.is_dir() and (_first(b / d for d in ("img_align_celeba", "Img")))), root)
    img = _first([base / "img_align_celeba" / "img_align_celeba", base / "img_align_celeba",
                  base / "Img" / "img_align_celeba", base / "Img" / "img_align_celeba_png"])
    ann_dirs = [base, base / "Anno", base / "Eval"]
    attr = _first(d / f"list_attr_celeba.{e}" for d in ann_dirs for e in ("txt", "csv"))
    part = _first(d / f"list_eval_partition.{e}" for d in ann_dirs for e in ("txt", "csv"))
    return base, (img if img is not None and img.is_dir() else None), attr, part


def _celeba_layout(root: Path) -> tuple[Path, Path, Path]:
    """(image folder, attribute list, partition list), or a DataError naming the first part missing."""
    base, img, attr, part = celeba_paths(root)
    expected = ("img_align_celeba/*.jpg, list_attr_celeba.txt and list_eval_partition.txt (or the official "
                "Img/img_align_celeba/, Anno/list_attr_celeba.txt, Eval/list_eval_partition.txt)")
    if img is None:
        raise _missing("celeba", base, "the image folder img_align_celeba/ (" + expected + ")")
    if attr is None:
        raise _missing("celeba", base, "list_attr_celeba.txt (" + expected + ")")
    if part is None:
        raise _missing("celeba", base, "list_eval_partition.txt, which defines the train/val/test split ("
                       + expected + ")")
    return img, attr, part


def celeba_image_names(img: Path, files: Iterable[str]) -> tuple[list[str], set[str]]:
    """(the image in ``img`` each listed file name refers to: that name, or the same stem with another
    extension (PNG copies), or the listed name when neither is there; the names of all images in ``img``).
    One directory listing."""
    present = _image_index(img)
    return [present.get(f, present.get(f.rsplit(".", 1)[0], f)) for f in files], set(present.values())


def load_celeba(cfg: DataConfig, split: str) -> FolderDataset:
    """Aligned & cropped CelebA (178x218 JPEGs) with its 40 binary attributes; splits train, val, test.

    ``cfg.resize`` makes the images square: the paper presets ``squash`` them to 64x64 as the reference
    does (faces get narrower); ``center-crop`` (a 178x178 crop, then resize) is the common alternative.
    Labels are -1 (CelebA has no classes); the attributes are 0/1 floats named as in the list.
    """
    root = _root(cfg, "celeba", "img_align_celeba/ + list_attr_celeba.txt + list_eval_partition.txt")
    split = _split("celeba", split, CELEBA_SPLITS)
    img, attr, part = _celeba_layout(root)
    files, names, attrs, parts = read_celeba_annotations(attr, part)
    keep = np.flatnonzero(parts == CELEBA_SPLITS.index(split))
    on_disk, names_present = celeba_image_names(img, [files[i] for i in keep])
    return _folder_dataset("celeba", split, root, cfg, [img / n for n in on_disk], np.full(len(keep), -1, np.int64),
                           attrs[keep], attribute_names=names, existing=lambda p: p.name in names_present)
