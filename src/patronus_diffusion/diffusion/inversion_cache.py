"""The inversion cache: x_T = invert(x0, s) is the expensive part of every edit, and it depends only on the
weights, the image and s bytes, the step count and the inversion scheme. A loaded model's weights do not change,
so x_T is kept per model object (:attr:`~.pipeline.PatronusPipeline.inversion_cache`, an ordered dict beside its
encoding cache), keyed by :func:`inversion_key`: it goes with the model, and analyses that edit the same images in
one process invert them once.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from typing import Callable

import torch

INVERSION_CACHE_SIZE = 32
"""Inversions kept per model object (the least recently used is dropped first)."""


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
