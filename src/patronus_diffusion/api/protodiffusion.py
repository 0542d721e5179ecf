"""The Python API of a trained ProtoDiffusion run (class-conditional, classifier-free guidance).

    from patronus_diffusion import ProtoDiffusion
    pd = ProtoDiffusion.load("runs/pd/pf")            # EMA weights of the newest checkpoint
    labels = pd.class_labels(per_class=8)             # [0]*8 + [1]*8 + ... (class-major, balanced)
    x = pd.sample(labels, guidance=1.8, sampler="ddim", steps=50, seed=0)

Images are (B, C, H, W) tensors in [-1, 1] at the model's resolution, one per label; all calls run without
autograd. The guidance convention is the one of :class:`~patronus_diffusion.Patronus` (``guidance=`` there too):
(1 + w) eps(x, y) - w eps(x, null) = eps(y) + w (eps(y) - eps(null)); w = 0 is the conditional model.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import torch

from ..config import RunConfig
from ..diffusion.guidance import sample_class_guided
from ..diffusion.schedule import NoiseSchedule
from ..models.protodiffusion import build_for_inference
from ..runs import CheckpointError, load_into, load_weights, read_run_config, resolve_run, weights_file
from ..utils.device import pick_device
from ..utils.errors import UsageError

FAMILY = "protodiffusion"


class ProtoDiffusion:
    """A trained ProtoDiffusion run: a class-conditional diffusion model whose class embeddings are (or are compared
    with) a classifier's prototypes. :meth:`load` a run, then :meth:`sample` images of given classes with
    classifier-free guidance (``guidance=``, the same keyword and formula as :class:`~patronus_diffusion.Patronus`)."""

    def __init__(self, model: torch.nn.Module, config: RunConfig, device: torch.device, run_dir: Path | None = None):
        self.model = model.eval().requires_grad_(False)
        self.config = config
        self.device = device
        self.run_dir = run_dir
        self.schedule = NoiseSchedule.from_config(config.diffusion)

    @classmethod
    def load(cls, run: str | Path, weights: str = "ema", device: str | None = "auto") -> "ProtoDiffusion":
        """A trained ProtoDiffusion run (EMA weights of the newest checkpoint by default)."""
        run_dir = resolve_run(run)
        cfg = read_run_config(run_dir)
        if cfg.family != FAMILY:
            raise CheckpointError(f"{run_dir} is a {cfg.family!r} run, not a ProtoDiffusion run "
                                  f"(train one with `patronus protodiff train`)")
        model = build_for_inference(cfg)
        path = weights_file(run_dir, weights)
        load_into(model, load_weights(path), path)
        dev = pick_device(device)
        return cls(model.to(dev), cfg, dev, run_dir)

    def to(self, device) -> "ProtoDiffusion":
        """Move the network to ``device``; returns this model (as ``torch.nn.Module.to`` does)."""
        self.device = pick_device(str(device))
        self.model.to(self.device)
        return self

    @property
    def num_classes(self) -> int:
        """How many classes the model was trained on (labels 0 ... num_classes - 1; -1 is the null condition)."""
        return self.config.protodiff.num_classes

    def info(self) -> dict:
        """Run folder, preset, conditioning mode, classes, embedding size, default guidance, image size, summary."""
        pc = self.config.protodiff
        meta = {}
        if self.run_dir is not None and (self.run_dir / "train_summary.json").exists():
            meta = json.loads((self.run_dir / "train_summary.json").read_text())
        return {"run": str(self.run_dir), "preset": self.config.preset, "mode": pc.mode,
                "classes": self.num_classes, "embed_dim": pc.embed_dim, "guidance": pc.guidance,
                "image_size": self.config.data.image_size, "channels": self.config.data.channels, **meta}

    def class_labels(self, per_class: int, max_images: int | None = None) -> torch.Tensor:
        """Class-major balanced labels: [0]*per_class + [1]*per_class + ... (cut to max_images)."""
        y = torch.arange(self.num_classes).repeat_interleave(per_class)
        return y[:max_images] if max_images else y

    @torch.no_grad()
    def sample(self, labels, guidance: float | None = None, sampler: str | None = None, steps: int | None = None,
               seed: int = 0, batch_size: int = 100, progress: bool = False, w: float | None = None,
               **options) -> torch.Tensor:
        """Guided samples, one per label (-1 = unconditional), clamped to [-1, 1].

        ``guidance`` is the classifier-free guidance weight w in (1 + w) eps(x, y) - w eps(x, null) (0 = the
        conditional model; ``w=`` is its deprecated old name). It, ``sampler`` and ``steps`` default to the run's
        ``protodiff.guidance``, ``sample.sampler`` and ``sample.steps``; the x0 prediction is clipped at every step
        unless ``clip_x0=False``. x_T comes from ``seed`` (an image does not depend on ``batch_size``), DDPM noise
        from ``seed + 1``. See :func:`~patronus_diffusion.diffusion.guidance.sample_class_guided`.
        """
        if w is not None:
            if guidance is not None:
                raise UsageError("give the guidance weight once: guidance= (w= is its old name)")
            warnings.warn("ProtoDiffusion.sample(w=...) is deprecated; use guidance=... (the keyword Patronus uses "
                          "for the same formula)", DeprecationWarning, stacklevel=2)
            guidance = w
        return sample_class_guided(self.model, self.config, labels, w=guidance, sampler=sampler, steps=steps,
                                   seed=seed, batch_size=batch_size, progress=progress, **options)
