"""CheXpert chest X-rays (``chexpert``, ``chexpert-uncertain-one``, ``chexpert-uncertain-nan``).

``CheXpert-v1.0-small/`` or ``CheXpert-v1.0/`` with ``train.csv`` and ``valid.csv`` whose ``Path``
column is relative to the folder that holds the dataset folder. The 14 findings become float
attributes (1, 0, NaN for blank; the uncertain -1 becomes 0, 1 or NaN by ``uncertain``), plus
``Sex_Male``, ``Age`` and ``Frontal``. Grey X-rays, read lazily. Split ``test`` reads ``valid.csv``.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from ...config import DataConfig
from ..datasets import FolderDataset
from ..errors import DataError
from ._common import _folder_dataset, _missing, _read_lines, _root, _split

CHEXPERT_FINDINGS = ("No Finding", "Enlarged Cardiomediastinum", "Cardiomegaly", "Lung Opacity", "Lung Lesion",
                     "Edema", "Consolidation", "Pneumonia", "Atelectasis", "Pneumothorax", "Pleural Effusion",
                     "Pleural Other", "Fracture", "Support Devices")
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
