from ..runs import CheckpointError, latest_checkpoint
from .trainer import TrainResult, train
from . import protodiff as _protodiff  # noqa: E402,F401  registers the "protodiffusion" objective

__all__ = ["CheckpointError", "TrainResult", "latest_checkpoint", "train"]
