"""patronus-diffusion: interpretable diffusion models with prototypes (Patronus, ProtoDiffusion)."""

__version__ = "0.1.0"

from .api import Patronus, ProtoDiffusion  # noqa: E402
from .config import RunConfig, apply_overrides  # noqa: E402
from .presets import get_preset  # noqa: E402

__all__ = ["Patronus", "ProtoDiffusion", "RunConfig", "apply_overrides", "get_preset", "__version__"]
