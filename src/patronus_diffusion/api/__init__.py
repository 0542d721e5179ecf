"""The Python API of trained runs: :class:`Patronus` (prototype-similarity vector s conditions the decoder) and
:class:`ProtoDiffusion` (class prototypes condition a classifier-free-guidance model)."""

from .patronus import Patronus, StalePriorWarning
from .protodiffusion import ProtoDiffusion

__all__ = ["Patronus", "ProtoDiffusion", "StalePriorWarning"]
