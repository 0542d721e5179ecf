"""Explanations, edits and diagnostics built on a trained Patronus model (:class:`patronus_diffusion.Patronus`)."""
