"""patronus-diffusion: interpretable diffusion models with prototypes (Patronus, ProtoDiffusion)."""

__version__ = "0.1.0"

from .api import Patronus  # noqa: E402
from .config import RunConfig, apply_overrides, get_preset  # noqa: E402

__all__ = ["Patronus", "RunConfig", "apply_overrides", "get_preset", "__version__"]
