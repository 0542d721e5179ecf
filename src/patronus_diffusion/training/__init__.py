from ..runs import CheckpointError, latest_checkpoint
from .trainer import TrainResult, train

__all__ = ["CheckpointError", "TrainResult", "latest_checkpoint", "train"]
