"""The cached inversion: x0 -> s = f(x0) and x_T = DDIM-invert(x0, s), the expensive part of every edit.

x_T depends only on the weights, the image and s bytes, the step count and the inversion scheme, and a loaded
model's weights do not change, so x_T is kept per model object, keyed by :func:`inversion_key`. The cache lives on
the model object itself (``pat.inversion_cache``, an ordered dict beside its encoding cache; see
:class:`~patronus_diffusion.diffusion.pipeline.PatronusPipeline`): it goes with the model, and analyses that edit
the same images in one process invert them once. An object without one (a stand-in model) is simply not cached.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from dataclasses import dataclass
from typing import Callable

import torch

INVERSION_CACHE_SIZE = 32
"""Inversions kept per model object (the least recently used is dropped first)."""


@dataclass
class Inverted:
    """Images with their prototype vectors and inverted noise: everything an edit needs."""

    x0: torch.Tensor  # (B, C, H, W) in [-1, 1]
    s: torch.Tensor  # (B, P)
    x_T: torch.Tensor  # (B, C, H, W), or an EDICT state (B, 2C, H, W)
    steps: int


def inversion_key(x0: torch.Tensor, s: torch.Tensor, steps: int, scheme: str = "ddim") -> str:
    """Hash of the images' and s's float32 bytes (with their shapes), the step count and the inversion scheme."""
    h = hashlib.sha256()
    for t in (x0, s):
        a = t.detach().to("cpu", torch.float32).contiguous()
        h.update(repr(tuple(a.shape)).encode())
        h.update(a.numpy().tobytes())
    h.update(f"steps={int(steps)} scheme={scheme}".encode())
    return h.hexdigest()


def cached_inversion(store: OrderedDict, key: str, invert: Callable[[], torch.Tensor]) -> torch.Tensor:
    """The x_T stored under ``key`` (now the most recent), else ``invert()``'s, stored (beyond
    :data:`INVERSION_CACHE_SIZE` the least recently used is dropped). A copy either way: changing it leaves the
    cache alone."""
    if key in store:
        store.move_to_end(key)
    else:
        store[key] = invert()
        while len(store) > INVERSION_CACHE_SIZE:
            store.popitem(last=False)
    return store[key].clone()


def invert_images(pat, x0: torch.Tensor, steps: int | None = None, progress: bool = False) -> Inverted:
    """Encode s = f(x0) and invert x0 -> x_T deterministically under that s.

    x_T comes from (and goes to) the model object's own ``inversion_cache`` (objects without one are not cached);
    every call returns its own copy of x_T."""
    steps = steps or pat.config.sample.ddim_steps
    s = pat.encode(x0).s
    store = getattr(pat, "inversion_cache", None)

    def invert() -> torch.Tensor:
        return pat.invert(x0, s, steps=steps, progress=progress)

    x_T = invert() if store is None else cached_inversion(store, inversion_key(x0, s, steps, pat.inversion_tag),
                                                          invert)
    return Inverted(x0=x0, s=s, x_T=x_T, steps=steps)


def clear_inversion_cache(pat) -> None:
    """Forget the inversions cached on one model object."""
    store = getattr(pat, "inversion_cache", None)
    if store is not None:
        store.clear()
