"""Edits of s, the pattern every Patronus explanation shares, split by role:

    s = f(x0)  ->  x_T = DDIM-invert(x0, s)  ->  s' = edit(s)  ->  x_hat = DDIM(x_T, s')  ->  s(x_hat)

* :mod:`.spec` — what an edit does to s (``"3=max,5=0,7*1.5,2+0.5"``, timed: ``"3=max@0.5:1"``): parse, resolve,
  apply,
* :mod:`.reference` — the seeded reference set X behind ``max`` and quantile values,
* :mod:`.inversion` — the inversion x0 -> (s, x_T), cached on the model object,
* :mod:`.measures` — the one measure of an edit (rise, others, off-target) that every result quotes,
* :mod:`.plan` — :class:`Edit` and :class:`EditPlan` (with named constructors for the analyses' plans),
* :mod:`.result` — :class:`EditResult`, what a plan decoded and measured,
* :mod:`.engine` — :func:`run_plan`: one plan -> one batched decode -> one result.

The package sits above diffusion and evaluation and below the analyses, the API and the commands, which build
plans and turn results into figures and tables.
"""

from ..diffusion.schedule import FULL_WINDOW, WINDOW_RULE, check_window
from .engine import TrajectoryRecorder, decode_batch, decode_guidance, lerp_s, run_plan, sample_variations, slerp
from .inversion import (INVERSION_CACHE_SIZE, Inverted, cached_inversion, clear_inversion_cache, invert_images,
                        inversion_key)
from .measures import measure_edit, summarise_edit
from .plan import Edit, EditPlan
from .reference import Reference, fresh_indices, plausible_max, reference_indices, reference_s, reference_set
from .result import FAITHFULNESS_DEFINITION, Box, EditResult
from .spec import EditOp, apply_ops, edit_s, parse_edit, resolve_op, resolve_value, split_window

__all__ = [
    "Box", "Edit", "EditOp", "EditPlan", "EditResult", "FAITHFULNESS_DEFINITION", "FULL_WINDOW", "INVERSION_CACHE_SIZE",
    "Inverted", "Reference", "TrajectoryRecorder", "WINDOW_RULE", "apply_ops", "cached_inversion", "check_window",
    "clear_inversion_cache", "decode_batch", "decode_guidance", "edit_s", "fresh_indices", "invert_images",
    "inversion_key", "lerp_s", "measure_edit", "parse_edit", "plausible_max", "reference_indices", "reference_s",
    "reference_set", "resolve_op", "resolve_value", "run_plan", "sample_variations", "slerp", "split_window",
    "summarise_edit",
]
