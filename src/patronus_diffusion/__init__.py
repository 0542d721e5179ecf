"""patronus-diffusion: interpretable diffusion models with prototypes (Patronus, ProtoDiffusion).

    from patronus_diffusion import Patronus
    pat = Patronus.from_pretrained("fashion-mnist")
    res = pat.edit(pat.load_images(paths=["shirt.png"]), "3=max")   # shows itself in a notebook

A walk through every step: ``docs/tour.md``.
"""

__version__ = "0.1.0"

from .edit import Edit, EditPlan, EditResult  # noqa: E402
from .api import Patronus, ProtoDiffusion  # noqa: E402
from .config import RunConfig, apply_overrides  # noqa: E402
from .presets import get_preset  # noqa: E402

__all__ = ["Patronus", "ProtoDiffusion", "Edit", "EditPlan", "EditResult", "RunConfig", "apply_overrides",
           "get_preset", "__version__"]
