"""The s of the reference set X stored beside a model's weights, so that edits of one's own images need no dataset
(the shipped model has it; ``scripts/make_reference_s.py`` writes it).

Two files sit in the model's folder: :data:`REFERENCE_S_FILE` (the (n, P) tensor ``s``) and
:data:`REFERENCE_S_META` (which set it is: n, seed, split, dataset, limit, and the sha256 of the weights file that
encoded it). Stored s is only ever served for the very weights that encoded it and the very set asked for.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import torch

from ..config import DataConfig
from ..runs import load_weights, sha256

REFERENCE_S_FILE = "reference_s.safetensors"
"""s of the reference set X, stored beside a model's weights (the shipped model has it: edits need no dataset)."""
REFERENCE_S_META = "reference_s.json"
"""Which set that is (n, seed, split, dataset) and which weights encoded it (sha256 of the weights file)."""


def read_stored_reference(folder: Path | None, weights_path: Path | None,
                          num_prototypes: int) -> tuple[dict | None, torch.Tensor | None]:
    """(meta, s) stored in ``folder``, or (None, None) when absent, encoded by other weights than
    ``weights_path``'s (by sha256), or not (n, ``num_prototypes``)."""
    if folder is None or not (folder / REFERENCE_S_FILE).exists() or not (folder / REFERENCE_S_META).exists():
        return None, None
    meta = json.loads((folder / REFERENCE_S_META).read_text())
    current = sha256(weights_path) if weights_path is not None else None
    if meta.get("weights_sha256") != current:
        return None, None
    s = load_weights(folder / REFERENCE_S_FILE)["s"].float()
    if s.ndim != 2 or s.shape[1] != num_prototypes:
        return None, None
    return meta, s


def is_the_set_asked_for(meta: dict | None, n: int, seed: int, split: str, data: DataConfig) -> bool:
    """True when the stored set is X of (n, seed, split) drawn from the configured dataset (name and limit)."""
    return (meta is not None and (meta.get("n"), meta.get("seed"), meta.get("split")) == (n, seed, split)
            and meta.get("dataset") == data.dataset and meta.get("limit") == data.limit)


def without_dataset_advice(message: str, meta: dict | None) -> str:
    """A data error's command-line advice (``--data-root DIR``) in the Python API's words, plus how to work
    without the dataset (own images; the stored reference set ``meta``, when there is one)."""
    text = re.sub(r"--data-root DIR( \(data\.root\))?", "data_root=DIR (a keyword of Patronus.from_pretrained)",
                  message)
    hint = (" Without the dataset, load your own images with pat.load_images(paths=[...]); edits use the "
            "reference set X stored with the model")
    return text + hint + (f" (n={meta['n']}, seed={meta['seed']}, split={meta['split']})." if meta else ".")
