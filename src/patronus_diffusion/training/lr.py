"""Learning-rate schedules, one function per schedule, shared by every training loop."""

from __future__ import annotations


def warmup_lr(step: int, base_lr: float, warmup_steps: int) -> float:
    """Linear warm-up then constant: lr(step) = base_lr * min(1, (step + 1) / warmup_steps).

    ``step`` counts optimiser steps from 0; ``warmup_steps = 0`` gives the constant base_lr at once.
    """
    return base_lr * min(1.0, (step + 1) / warmup_steps) if warmup_steps > 0 else base_lr
