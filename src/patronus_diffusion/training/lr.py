"""Learning-rate schedules, one function per schedule, shared by every training loop."""

from __future__ import annotations

import math

from ..config import ConfigError


def warmup_lr(step: int, base_lr: float, warmup_steps: int) -> float:
    """Linear warm-up then constant: lr(step) = base_lr * min(1, (step + 1) / warmup_steps).

    ``step`` counts optimiser steps from 0; ``warmup_steps = 0`` gives the constant base_lr at once.
    """
    return base_lr * min(1.0, (step + 1) / warmup_steps) if warmup_steps > 0 else base_lr


LR_SCHEDULES = ("warmup", "protodiff", "protodiff-reference")


def protodiff_lr(epoch: int, base_lr: float, total_epochs: int, reference_trace: bool = False,
                 multiplier: float = 2.5) -> float:
    """ProtoDiffusion's schedule, stepped once per epoch (spec section 3.1): a linear warm-up from base_lr to
    ``multiplier`` x base_lr over W = total_epochs // 20 epochs, then a cosine to 0.

    Continuous (the default): lr = m b (1 + cos(pi (e - W) / (E - W))) / 2 after the warm-up, so the cosine
    starts where the warm-up ends. ``reference_trace`` reproduces the reference code's discontinuous trace
    instead: its cosine restarts from b (not m b) with T_max = E, evaluated at e - W, so at E = 1500 it reads
    2.0e-4 at epoch 0, 5.0e-4 at 75, 2.0e-4 at 76, 1.16e-4 at 750 and 1.3e-6 at 1499.
    """
    warm = max(total_epochs // 20, 1)
    if epoch <= warm:
        return base_lr * (1 + (multiplier - 1) * epoch / warm)
    if reference_trace:
        return base_lr * (1 + math.cos(math.pi * (epoch - warm) / total_epochs)) / 2
    span = max(total_epochs - warm, 1)
    return multiplier * base_lr * (1 + math.cos(math.pi * min(epoch - warm, span) / span)) / 2


def lr_at(step: int, schedule: str, base_lr: float, warmup_steps: int, steps_per_epoch: int,
          total_epochs: int | None) -> float:
    """The learning rate of optimiser step ``step`` under a named schedule (``train.lr_schedule``)."""
    if schedule == "warmup":
        return warmup_lr(step, base_lr, warmup_steps)
    if total_epochs is None:
        raise ConfigError(f"train.lr_schedule={schedule} needs an epoch budget (--epochs or --steps)")
    return protodiff_lr(step // max(steps_per_epoch, 1), base_lr, total_epochs,
                        reference_trace=schedule == "protodiff-reference")
