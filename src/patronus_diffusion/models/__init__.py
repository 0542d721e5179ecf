"""Model families. :func:`build_model` rebuilds any of them from a :class:`RunConfig`."""

from __future__ import annotations

import torch.nn as nn

from ..config import ConfigError, RunConfig
from .patronus import PatronusModel
from .prototypes import PrototypeMatch, PrototypeNetwork, ReceptiveField, log_similarity
from .unet import UNet

_FAMILIES: dict[str, type] = {"patronus": PatronusModel}


def register_family(name: str, cls: type) -> None:
    _FAMILIES[name] = cls


def build_model(cfg: RunConfig) -> nn.Module:
    if cfg.family not in _FAMILIES:
        raise ConfigError(f"unknown model family {cfg.family!r}; known: {', '.join(_FAMILIES)}")
    return _FAMILIES[cfg.family](cfg)


__all__ = ["build_model", "register_family", "PatronusModel", "PrototypeNetwork", "PrototypeMatch",
           "ReceptiveField", "UNet", "log_similarity"]

from . import protodiffusion as _protodiffusion  # noqa: E402,F401  registers the "protodiffusion" family
