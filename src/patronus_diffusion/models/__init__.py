"""Model families. :func:`build_model` rebuilds any of them from a :class:`RunConfig`."""

from __future__ import annotations

import torch.nn as nn

from ..config import ConfigError, RunConfig
from .patronus import PatronusModel
from .protodiffusion import ProtoDiffusionModel
from .prototypes import PrototypeMatch, PrototypeNetwork, ReceptiveField, log_similarity
from .unet import UNet

FAMILIES: dict[str, type] = {"patronus": PatronusModel, "protodiffusion": ProtoDiffusionModel}


def build_model(cfg: RunConfig) -> nn.Module:
    if cfg.family not in FAMILIES:
        raise ConfigError(f"unknown model family {cfg.family!r}; known: {', '.join(FAMILIES)}")
    return FAMILIES[cfg.family](cfg)


__all__ = ["FAMILIES", "build_model", "PatronusModel", "ProtoDiffusionModel", "PrototypeNetwork", "PrototypeMatch",
           "ReceptiveField", "UNet", "log_similarity"]
