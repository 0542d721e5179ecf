"""Patronus: a prototype network that turns a clean image into s, and a UNet conditioned on s."""

from __future__ import annotations

import torch
import torch.nn as nn

from ..config import RunConfig
from .prototypes import PrototypeMatch, PrototypeNetwork
from .unet import UNet


class PatronusModel(nn.Module):
    """eps_theta(x_t, t, s) with s = prototypes(x_0). s is always passed explicitly."""

    def __init__(self, cfg: RunConfig):
        super().__init__()
        d = cfg.data
        self.prototypes = PrototypeNetwork(d.channels, d.image_size, cfg.prototypes)
        self.unet = UNet(d.channels, cfg.unet, cond_dim=cfg.prototypes.num_prototypes)

    def encode(self, x0: torch.Tensor, return_map: bool = False) -> PrototypeMatch:
        return self.prototypes(x0, return_map=return_map)

    def forward(self, x_t: torch.Tensor, t: torch.Tensor, s: torch.Tensor,
                uncond: torch.Tensor | None = None) -> torch.Tensor:
        """eps(x_t, t, s); rows of the bool mask ``uncond`` get the null condition (classifier-free guidance)."""
        return self.unet(x_t, t, s, uncond)
