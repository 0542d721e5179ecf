"""The inversion of an edit: x0 -> s = f(x0) and x_T = invert(x0, s), the expensive part of every edit.

The model inverts and caches: ``pat.invert`` keeps x_T per model object, keyed by
:func:`~patronus_diffusion.diffusion.inversion_cache.inversion_key`
(:class:`~patronus_diffusion.diffusion.pipeline.PatronusPipeline`), so analyses that edit the same images in one
process invert them once. A stand-in model whose ``invert`` keeps no cache is simply not cached.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..diffusion.inversion_cache import INVERSION_CACHE_SIZE, cached_inversion, inversion_key

__all__ = ["INVERSION_CACHE_SIZE", "Inverted", "cached_inversion", "clear_inversion_cache", "invert_images",
           "inversion_key"]


@dataclass
class Inverted:
    """Images with their prototype vectors and inverted noise: everything an edit needs."""

    x0: torch.Tensor  # (B, C, H, W) in [-1, 1]
    s: torch.Tensor  # (B, P)
    x_T: torch.Tensor  # (B, C, H, W), or an EDICT state (B, 2C, H, W)
    steps: int


def invert_images(pat, x0: torch.Tensor, steps: int | None = None, progress: bool = False) -> Inverted:
    """Encode s = f(x0) and invert x0 -> x_T deterministically under that s.

    x_T comes from (and goes to) the model object's own inversion cache (``pat.invert`` keeps it); every call
    returns its own copy of x_T."""
    steps = steps or pat.config.sample.ddim_steps
    s = pat.encode(x0).s
    return Inverted(x0=x0, s=s, x_T=pat.invert(x0, s, steps=steps, progress=progress), steps=steps)


def clear_inversion_cache(pat) -> None:
    """Forget the inversions cached on one model object."""
    store = getattr(pat, "inversion_cache", None)
    if store is not None:
        store.clear()
