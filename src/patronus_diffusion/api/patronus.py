"""The Python API of a trained Patronus run.

    from patronus_diffusion import Patronus
    pat = Patronus.load("runs/demo/run")            # or "pretrained:fashion-mnist"
    x = pat.load_images(indices=[0, 1, 2])          # test images, in [-1, 1]
    enc = pat.encode(x)                             # enc.s (B, P), enc.location (B, P, 2)
    x_T = pat.invert(x, steps=50)                   # deterministic DDIM inversion
    rec = pat.decode(x_T, enc.s, steps=50)          # reconstruction
    gen = pat.sample(enc.s, sampler="dpmpp-2m", steps=20, seed=0)
    gen = pat.sample(enc.s, guidance=1.5)           # classifier-free guidance on s (needs train.cond_dropout > 0)

:class:`Patronus` is the inference pipeline (:class:`~patronus_diffusion.diffusion.pipeline.PatronusPipeline`:
encode, invert, decode, sample) plus loading from a run folder or a ``pretrained:`` name.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from ..diffusion.pipeline import PatronusPipeline
from ..models import build_model
from ..runs import CheckpointError, load_into, load_weights, read_run_config, resolve_run, sha256, weights_file
from ..utils.errors import UsageError
from ..utils.device import pick_device


class Patronus(PatronusPipeline):
    """A trained Patronus model: :meth:`load` a run folder or ``pretrained:NAME``, then encode, invert, decode,
    sample (the pipeline's methods)."""

    # ------------------------------------------------------------------ loading
    @classmethod
    def load(cls, run: str | Path, weights: str = "ema", device: str | None = "auto",
             batch_size: int = 64) -> "Patronus":
        run_dir = resolve_run(run)
        cfg = read_run_config(run_dir)
        if cfg.family != "patronus":
            raise CheckpointError(f"{run_dir} is a {cfg.family!r} run, not a Patronus model")
        dev = pick_device(device)
        model = build_model(cfg)
        path = weights_file(run_dir, weights)
        load_into(model, load_weights(path), path)
        return cls(model.to(dev), cfg, dev, run_dir, batch_size)

    def info(self) -> dict:
        meta = {}
        if self.run_dir is not None and (self.run_dir / "train_summary.json").exists():
            meta = json.loads((self.run_dir / "train_summary.json").read_text())
        return {"run": str(self.run_dir), "preset": self.config.preset, "prototypes": self.num_prototypes,
                "image_size": self.config.data.image_size, "channels": self.config.data.channels, **meta}

    # ------------------------------------------------------------------ the prior over s
    def load_prior(self, prior_dir: str | Path | None = None, required: bool = True):
        """The run's prior over s (``RUN/prior`` or ``prior_dir``); None when absent and not ``required``.

        Warns on stderr when the prior was fitted to the s of other weights (the run was trained further)."""
        from ..diffusion.prior import load_prior
        from ..training.prior import PRIOR_WEIGHTS, default_prior_dir, find_prior

        if not required and not prior_dir and not (default_prior_dir(self.run_dir) / PRIOR_WEIGHTS).exists():
            return None
        prior = load_prior(find_prior(self.run_dir, prior_dir))
        if prior.dim != self.num_prototypes:
            raise UsageError(f"the prior samples {prior.dim}-dimensional s but the run has {self.num_prototypes} "
                             f"prototypes; train a prior for this run")
        self.prior_is_stale(prior)
        return prior

    def prior_is_stale(self, prior) -> bool:
        """Warn when the prior was fitted to the s of other weights (e.g. the run was trained further since)."""
        fitted = prior.meta.get("source", {}).get("weights_sha256")
        try:
            current = sha256(weights_file(self.run_dir, prior.meta.get("source", {}).get("weights", "ema")))
        except Exception:  # noqa: BLE001 - a missing file is reported by the load itself
            return False
        if fitted and fitted != current:
            print(f"patronus: warning: the prior in {prior.path} was fitted to the s of other weights than "
                  f"{self.run_dir}'s current ones; retrain it with `patronus train-prior --run {self.run_dir}`",
                  file=sys.stderr)
            return True
        return False
