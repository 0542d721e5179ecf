"""The reference set X: a fixed, seeded random subset of a split whose s gives "max" and quantile edits their
numbers (the reference draws max(s_X) from one unseeded batch; here it is reproducible and saved with every result).

The images an edit is measured on come from a random stream of their own (:func:`fresh_indices`), never from X.
"""

from __future__ import annotations

import hashlib
import warnings
from dataclasses import dataclass
from typing import Sequence

import torch

from ..utils.errors import UsageError


def reference_indices(n_total: int, n: int = 256, seed: int = 0) -> list[int]:
    """The reference set X: the first ``n`` of the permutation of range(n_total) seeded by ``seed``."""
    g = torch.Generator().manual_seed(seed)
    return torch.randperm(n_total, generator=g)[: min(n, n_total)].tolist()


IMAGE_STREAM = "patronus:images"
"""Images a command edits or measures are drawn from a random stream of their own, never the reference set's."""


def fresh_indices(n_total: int, n: int, seed: int = 0, exclude: Sequence[int] = ()) -> list[int]:
    """``n`` indices of range(n_total) drawn with ``seed`` from the images' own stream, skipping ``exclude`` (the
    reference set X), so the images an edit is measured on are never the ones its targets were taken from.

    When fewer than ``n`` indices lie outside ``exclude`` (a tiny split), the rest come from it, with a warning."""
    key = int.from_bytes(hashlib.sha256(f"{IMAGE_STREAM}:{int(seed)}".encode()).digest()[:7], "little")
    perm = torch.randperm(n_total, generator=torch.Generator().manual_seed(key)).tolist()
    skip = set(exclude)
    picked = [i for i in perm if i not in skip][:n]
    if len(picked) < min(n, n_total):
        picked += [i for i in perm if i in skip][: min(n, n_total) - len(picked)]
        warnings.warn(f"only {n_total - len(skip & set(perm))} images lie outside the reference set; "
                      f"{len(picked) - (n_total - len(skip & set(perm)))} of the {len(picked)} picked come from it",
                      stacklevel=2)
    return picked


def reference_s(pat, n: int = 256, seed: int = 0, split: str = "test") -> torch.Tensor:
    """s of a fixed, seeded random subset X of ``n`` images of ``split`` (shape (n, P)): :func:`reference_indices`.

    A model that stores the s of this very set beside its weights (``pat.shipped_reference_s``: the shipped
    model's ``reference_s.safetensors``) serves it without the dataset."""
    shipped = getattr(pat, "shipped_reference_s", None)
    s = shipped(n, seed, split) if callable(shipped) else None
    if s is not None:
        return s
    ds = pat.dataset(split)
    return pat.encode_dataset(split, reference_indices(len(ds), n, seed)).s


def plausible_max(s_ref: torch.Tensor, quantile: float | None = None) -> float:
    """max(s_X) over all entries of the reference s (or a quantile of them, e.g. 0.99, to ignore outliers)."""
    if quantile is None:
        return float(s_ref.max())
    return float(torch.quantile(s_ref.flatten().double(), quantile))


@dataclass
class Reference:
    """The fixed, seeded reference set X behind "max" and quantile edits (saved with every result)."""

    s: torch.Tensor  # (n, P)
    n: int
    seed: int
    split: str

    @property
    def max(self) -> float:
        return plausible_max(self.s)

    def quantile(self, q: float, prototype: int | None = None) -> float:
        """Quantile q of s_J over X for one prototype J (or of all entries when ``prototype`` is None)."""
        if not 0.0 <= q <= 1.0:
            raise UsageError(f"quantile must lie in [0, 1], got {q}")
        vals = self.s.flatten() if prototype is None else self.s[:, prototype]
        return float(torch.quantile(vals.double(), q))

    def to_json(self) -> dict:
        return {"split": self.split, "n": self.n, "seed": self.seed, "max_s_X": round(self.max, 6),
                "rule": "max over every entry of s of a seeded random subset X of the split"}


def reference_set(pat, n: int = 256, seed: int = 0, split: str = "test") -> Reference:
    """:func:`reference_s` wrapped with its provenance."""
    s = reference_s(pat, n=n, seed=seed, split=split)
    return Reference(s=s, n=int(s.shape[0]), seed=seed, split=split)
