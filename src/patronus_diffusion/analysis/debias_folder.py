"""The folder of a debias set (:mod:`.debias`): its four cells, its CSV column names, the images it writes and reads
back, and ``debias-state.json``, what a re-run continues from.

A set is written image by image as attempts are accepted (:func:`save_image`, 8-bit PNG); the state names only
files already written. :func:`open_folder` refuses a folder that is neither new, empty nor a debias set made with
the same settings; :func:`reload_written` reads back what is there and drops a cell's rows from its first missing
file on, so the set stays in attempt order.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import torch

from ..utils.errors import UsageError

CELLS = ((1, 1), (1, 0), (0, 1), (0, 0))  # (a, b), the attributes as named (base sense)
STATE_FILE = "debias-state.json"
RESERVED = ("file", "split", "source", "seed", "attempt")  # the set's own columns; an attribute may not take them


# ----------------------------------------------------------------------------- attribute and column names
def base_attribute(spec: str) -> str:
    """The attribute without ``not:`` / ``!`` (decoupling A from B is decoupling not:A from B)."""
    spec = spec.strip()
    while True:
        for prefix in ("not:", "!"):
            if spec.startswith(prefix):
                spec = spec[len(prefix):].strip()
                break
        else:
            return spec


def column_name(spec: str) -> str:
    """The attribute CSV column that holds ``spec``'s judged value: the column itself, or for ``class:...`` and
    ``NAME=v`` specs a name made of letters, digits and underscores (``class:7+9`` -> ``class_7_9``)."""
    base = base_attribute(spec)
    return base if re.fullmatch(r"[A-Za-z0-9_\-]+", base) else re.sub(r"[^A-Za-z0-9]+", "_", base).strip("_")


def clashing_columns(col_a: str, col_b: str) -> bool:
    """Whether the two attribute columns clash with each other or with the set's own columns."""
    own = [c for c in (col_a, col_b) if c in RESERVED or c.startswith(("target_", "p_", "source_"))]
    return bool(own) or col_a == col_b


# ----------------------------------------------------------------------------- images
def read_images(ds, idx) -> torch.Tensor:
    """The images of dataset ``ds`` at ``idx``, read in chunks of 512 (an empty tensor for no index)."""
    idx = [int(i) for i in idx]
    if not idx:
        return torch.zeros(0)
    return torch.cat([ds.get_batch(idx[i:i + 512]) for i in range(0, len(idx), 512)])


def quantize(x: torch.Tensor) -> torch.Tensor:
    """Images in [-1, 1] rounded to the 8-bit values their PNG holds (what the folder loader reads back)."""
    return ((x.float().clamp(-1, 1) + 1) * 127.5).round() / 127.5 - 1.0


def save_image(x: torch.Tensor, path: Path) -> None:
    """One (C, H, W) image in [-1, 1] as an 8-bit PNG, written atomically."""
    from PIL import Image

    from ..utils.images import to_uint8
    from ..utils.io import atomic_path

    arr = to_uint8(x[None])[0]
    img = Image.fromarray(arr[..., 0] if arr.shape[-1] == 1 else arr)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        img.save(tmp, format="PNG")


def load_image(path: Path, channels: int) -> torch.Tensor:
    """A PNG written by :func:`save_image`, back as (C, H, W) in [-1, 1]."""
    from PIL import Image

    with Image.open(path) as img:
        arr = np.asarray(img.convert("L" if channels == 1 else "RGB"), dtype=np.float32)
    arr = arr[:, :, None] if arr.ndim == 2 else arr
    return torch.from_numpy(arr).permute(2, 0, 1) / 127.5 - 1.0


# ----------------------------------------------------------------------------- the state
def new_state(identity: dict) -> dict:
    """The state of a set not begun: no attempt and no accepted row in any cell."""
    return {"identity": identity, "cells": {f"{ca},{cb}": {"attempts": 0, "decoded": 0, "accepted": []}
                                            for ca, cb in CELLS}}


def open_folder(out: Path | None, identity: dict, need: int) -> dict | None:
    """The stored state of a debias folder being continued, None for a new one; refuses a folder that is neither."""
    if out is None or not out.exists():
        return None
    if not out.is_dir():
        raise UsageError(f"--out {out} is a file; give a folder")
    state_path = out / STATE_FILE
    if not state_path.exists():
        if any(out.iterdir()):
            raise UsageError(f"--out {out} is not empty and holds no debias set ({STATE_FILE}); choose an empty or "
                             f"new folder")
        return None
    state, stored = _read_state(state_path)
    _refuse_other_settings(out, stored, identity)
    most = max(len(c["accepted"]) for c in state["cells"].values())
    if most > need:
        raise UsageError(f"{out} already holds {most} images in a cell; --n must be at least {4 * most} to continue it")
    return state


def _read_state(state_path: Path) -> tuple[dict, dict]:
    """The stored state and the settings it was made with."""
    try:
        state = json.loads(state_path.read_text())
        return state, state["identity"]
    except (json.JSONDecodeError, KeyError, OSError):
        raise UsageError(f"{state_path} is damaged; move the folder away and start again") from None


def _refuse_other_settings(out: Path, stored: dict, identity: dict) -> None:
    if stored != identity:
        diff = sorted(k for k in set(stored) | set(identity) if stored.get(k) != identity.get(k))
        said = ", ".join(f"{k}: {stored.get(k)!r}" for k in diff)
        raise UsageError(f"{out} holds a debias set made with other settings ({said}); use those settings to continue "
                         f"it, or choose another --out")


def reload_written(state: dict, out: Path | None, channels: int) -> dict[str, torch.Tensor]:
    """The images already written, by file; a cell's rows from its first missing file on are dropped and their
    attempts made again, so the set stays in attempt order."""
    done: dict[str, torch.Tensor] = {}
    for cell in state["cells"].values():
        keep = []
        for row in cell["accepted"]:
            if out is None or not (out / row["file"]).exists():
                break
            done[row["file"]] = load_image(out / row["file"], channels)
            keep.append(row)
        if len(keep) < len(cell["accepted"]):
            cell["attempts"] = cell["decoded"] = (keep[-1]["attempt"] + 1) if keep else 0
        cell["accepted"] = keep
    return done
