"""Exponential moving average of model weights."""

from __future__ import annotations

import copy

import torch


class EMA:
    """shadow <- decay * shadow + (1 - decay) * weights, with warm-up decay min(decay, (1+n)/(10+n))."""

    def __init__(self, model: torch.nn.Module, decay: float, warmup: bool = True):
        self.decay, self.warmup = decay, warmup
        self.model = copy.deepcopy(model).eval().requires_grad_(False)
        self.num_updates = 0

    def current_decay(self) -> float:
        n = self.num_updates
        return min(self.decay, (1 + n) / (10 + n)) if self.warmup else self.decay

    @torch.no_grad()
    def update(self, model: torch.nn.Module) -> None:
        d = self.current_decay()
        self.num_updates += 1
        src = model.state_dict()
        for k, v in self.model.state_dict().items():
            if v.dtype.is_floating_point:
                v.lerp_(src[k].detach(), 1.0 - d)
            else:
                v.copy_(src[k])
