"""The Python API of a trained Patronus model.

    from patronus_diffusion import Patronus
    pat = Patronus.from_pretrained("fashion-mnist")    # the shipped model, or a run / saved folder
    pat = pat.to("cuda")                               # optional; returns the model
    x = pat.load_images(paths=["my_shirt.png"])        # your own images (or indices=[0, 1] of the dataset)
    enc = pat.encode(x)                                # enc.s (B, P), enc.location (B, P, 2)
    res = pat.edit(x, "3=max", "3=max,11=0")           # an EditResult: shows itself in a notebook
    res.rise, res.images                               # faithfulness per edit and image, decoded images
    x_T = pat.invert(x, steps=50)                      # deterministic DDIM inversion (cached per model)
    rec = pat.decode(x_T, enc.s, steps=50)             # reconstruction
    gen = pat.sample(enc.s, sampler="dpmpp-2m", steps=20, seed=0)
    fast = pat.with_options(inversion="edict", ddim_steps=10)   # a copy with other sample settings
    pat.save_pretrained("my-model")                    # a folder from_pretrained loads

:class:`Patronus` is the inference pipeline (:class:`~patronus_diffusion.diffusion.pipeline.PatronusPipeline`:
encode, invert with its cache, decode, sample, the dataset and the stored reference set) plus loading, saving,
devices, options and the edit engine as methods. It overrides nothing the layers below call on a model object, so
every call of an edit goes down the layers.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import shutil
import warnings
from pathlib import Path

import torch

from ..config import SampleConfig
from ..diffusion.pipeline import PatronusPipeline
from ..diffusion.stored_reference import REFERENCE_S_FILE, REFERENCE_S_META
from ..edit import EditPlan, EditResult, run_plan
from ..models import build_model
from ..runs import (PRETRAINED_DIR, CheckpointError, load_into, load_weights, read_run_config, resolve_run,
                    save_weights, sha256, weights_file)
from ..utils.device import pick_device
from ..utils.errors import UsageError
from ..utils.io import replace_dir, write_json, write_text

__all__ = ["Patronus", "REFERENCE_S_FILE", "REFERENCE_S_META", "StalePriorWarning", "resolve_pretrained",
           "shipped_names"]


class StalePriorWarning(UserWarning):
    """The prior over s was fitted to the s of other weights than the model's current ones."""


def shipped_names() -> list[str]:
    """Names of the models shipped inside the package (``Patronus.from_pretrained(NAME)``)."""
    if not PRETRAINED_DIR.exists():
        return []
    return sorted(p.name for p in PRETRAINED_DIR.iterdir() if (p / "config.json").exists())


def resolve_pretrained(name_or_dir: str | Path) -> Path:
    """The folder of a shipped model's plain name (``"fashion-mnist"``, or ``"pretrained:fashion-mnist"``) or of a
    run / saved model (any folder with a ``config.json``; a folder wins over a shipped name)."""
    text = str(name_or_dir)
    path = Path(text).expanduser()
    if (path / "config.json").exists():
        return path
    if text.startswith("pretrained:"):
        return resolve_run(text)
    if "/" not in text and (PRETRAINED_DIR / text / "config.json").exists():
        return PRETRAINED_DIR / text
    shipped = ", ".join(shipped_names()) or "none"
    if path.is_dir():
        raise CheckpointError(f"{path} is not a run or a saved model (no config.json); shipped models: {shipped}")
    raise CheckpointError(f"{text!r} is neither a folder nor a shipped model; shipped: {shipped} "
                          f"(e.g. Patronus.from_pretrained('fashion-mnist'))")


class Patronus(PatronusPipeline):
    """A trained Patronus model: a prototype encoder s = f(x) and a diffusion decoder conditioned on s.

    Load it with :meth:`from_pretrained` (the shipped ``"fashion-mnist"`` model, or a run / saved folder), then

    * :meth:`encode` images to s (similarity to each of P prototypes) and best-match locations,
    * :meth:`edit` images (``"3=max"``: raise prototype 3 to the largest s of the reference set X) and get one
      :class:`~patronus_diffusion.edit.EditResult`, or :meth:`run` any
      :class:`~patronus_diffusion.edit.EditPlan`,
    * :meth:`invert` images to noise x_T, :meth:`decode` (x_T, s) back, :meth:`sample` from fresh noise.

    Images are (B, C, H, W) tensors in [-1, 1] (:meth:`load_images` reads files); every method returns CPU tensors
    and runs without autograd. The model's :attr:`config` is frozen after :meth:`from_pretrained`: change sample
    settings with :meth:`with_options`, which returns a copy sharing the weights. Inversions and encodings are
    cached on the object (:meth:`clear_caches`).

    >>> pat = Patronus.from_pretrained("fashion-mnist", device="cpu")
    >>> res = pat.edit(pat.load_images(paths=["shirt.png"]), "3=max")   # doctest: +SKIP
    """

    def __init__(self, model: torch.nn.Module, config, device: torch.device, run_dir: Path | None = None,
                 batch_size: int = 64):
        super().__init__(model, config, device, run_dir, batch_size)
        self.weights = "ema"

    # ------------------------------------------------------------------ loading and saving
    @classmethod
    def from_pretrained(cls, name_or_dir: str | Path, *, weights: str = "ema", device: str | None = "auto",
                        data_root: str | Path | None = None, batch_size: int = 64) -> "Patronus":
        """Load a model: ``"fashion-mnist"`` (shipped with the package; ``"pretrained:fashion-mnist"`` works too),
        or the folder of a training run or of :meth:`save_pretrained`.

        :param weights: ``"ema"`` (the averaged weights, default) or ``"raw"`` (a run's un-averaged weights).
        :param device: ``"auto"`` (CUDA, then MPS, then CPU), ``"cpu"``, ``"cuda"``, ``"cuda:1"``, ...
        :param data_root: where the model's dataset lives, when it is not in its default place. Only dataset
            indices (``load_images(indices=...)``) and analyses over the dataset need it: edits of your own images
            use the reference set stored with the model.
        :param batch_size: images per network call.
        :return: the model; its :attr:`config` is frozen (see :meth:`with_options`).
        """
        pat = cls._load(resolve_pretrained(name_or_dir), weights, device, batch_size, data_root)
        pat.config.freeze()
        pat._python_words = True
        return pat

    @classmethod
    def load(cls, run: str | Path, weights: str = "ema", device: str | None = "auto",
             batch_size: int = 64) -> "Patronus":
        """Load a run folder or ``pretrained:NAME`` the way the command line does (``--run``, ``--weights``,
        ``--device``).

        Unlike :meth:`from_pretrained`, the config stays editable (the commands set options on it) and data
        errors name the command-line flags; in Python prefer :meth:`from_pretrained`."""
        return cls._load(resolve_run(run), weights, device, batch_size, None)

    @classmethod
    def _load(cls, run_dir: Path, weights: str, device, batch_size: int, data_root) -> "Patronus":
        cfg = read_run_config(run_dir)
        if cfg.family != "patronus":
            raise CheckpointError(f"{run_dir} is a {cfg.family!r} run, not a Patronus model"
                                  + (" (load it with ProtoDiffusion.load)" if cfg.family == "protodiffusion" else ""))
        if data_root is not None:
            cfg.data.root = str(data_root)
        dev = pick_device(device)
        model = build_model(cfg)
        path = weights_file(run_dir, weights)
        load_into(model, load_weights(path), path)
        pat = cls(model.to(dev), cfg, dev, run_dir, batch_size)
        pat.weights, pat.weights_path = weights, path
        return pat

    def save_pretrained(self, out: str | Path) -> dict[str, Path]:
        """Write this model as a folder that :meth:`from_pretrained` loads: ``model.safetensors`` (the weights),
        ``config.json`` and ``export.json`` (where it came from).

        When the weights are the ones loaded (unchanged), the file is copied byte for byte, and the prior over s
        (``prior/``), the reference set X and the prototypes' nearest training patches stored with them come along. The folder is written beside ``out``
        and renamed into place, so ``out`` is never half-written."""
        out = Path(out)
        sd = self.model.state_dict()
        unchanged = self.weights_path is not None and _same_tensors(load_weights(self.weights_path), sd)
        tmp = out.with_name(out.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        try:
            if unchanged:
                shutil.copyfile(self.weights_path, tmp / "model.safetensors")
            else:
                save_weights(tmp / "model.safetensors", sd)
            write_text(tmp / "config.json", self.config.to_json())
            write_json(tmp / "export.json", {"source_run": str(self.run_dir), "weights": self.weights,
                                             "weights_unchanged": unchanged, "saved_by": "Patronus.save_pretrained"})
            if unchanged and self.run_dir is not None:
                from ..analysis.explain import PATCHES_FILE, PATCHES_META

                for name in (REFERENCE_S_FILE, REFERENCE_S_META, PATCHES_FILE, PATCHES_META):
                    if (self.run_dir / name).exists():
                        shutil.copyfile(self.run_dir / name, tmp / name)
                if (self.run_dir / "prior").is_dir():
                    shutil.copytree(self.run_dir / "prior", tmp / "prior")
            replace_dir(tmp, out)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return {"weights": out / "model.safetensors", "config": out / "config.json", "manifest": out / "export.json"}

    def info(self) -> dict:
        """Run folder, preset, number of prototypes, image size and channels, and the run's training summary."""
        meta = {}
        if self.run_dir is not None and (self.run_dir / "train_summary.json").exists():
            meta = json.loads((self.run_dir / "train_summary.json").read_text())
        return {"run": str(self.run_dir), "preset": self.config.preset, "prototypes": self.num_prototypes,
                "image_size": self.config.data.image_size, "channels": self.config.data.channels, **meta}

    def __repr__(self) -> str:
        d = self.config.data
        return (f"Patronus({self.run_dir.name if self.run_dir else 'unsaved'}: {self.num_prototypes} prototypes, "
                f"{d.channels}x{d.image_size}x{d.image_size} {d.dataset}, {self.config.preset}, on {self.device})")

    # ------------------------------------------------------------------ devices and options
    def to(self, device) -> "Patronus":
        """Move the network (and every other module this object holds) to ``device``; returns this model, as
        ``torch.nn.Module.to`` does. Cached encodings and inversions stay valid: like every result, they are
        kept on the CPU. Copies from :meth:`with_options` share the weights, so they move along."""
        dev = pick_device(str(device))
        for value in vars(self).values():
            if isinstance(value, torch.nn.Module):
                value.to(dev)
        self.device = dev
        return self

    def with_options(self, **sample_overrides) -> "Patronus":
        """A copy of this model with other sample settings, e.g. ``pat.with_options(inversion="edict",
        edict_mix=0.6, ddim_steps=10)``: keys are the fields of the config's ``sample`` section (sampler, steps,
        ddim_steps, decode_sampler, inversion, edict_mix, clip_x0, guidance, edit_guidance).

        The copy shares the weights and the caches (an inversion's key includes its scheme) and gets a new,
        frozen config; this model and its config are not changed."""
        fields = {f.name: f for f in dataclasses.fields(SampleConfig)}
        unknown = sorted(set(sample_overrides) - set(fields))
        if unknown:
            raise UsageError(f"unknown sample option(s) {unknown}; choose from {', '.join(fields)}")
        cfg = self.config.copy()
        for name, value in sample_overrides.items():
            setattr(cfg.sample, name, _typed(name, value, getattr(cfg.sample, name)))
        new = copy.copy(self)
        new.config = cfg.validate().freeze()
        return new

    # ------------------------------------------------------------------ edits
    def edit(self, images: torch.Tensor, *specs, progress: bool = False, **plan) -> EditResult:
        """Edit s of every image and decode it again: one result for all edits, decoded in one batch.

        ``specs``: one edited version of every image each, e.g. ``"3=max"`` (s_3 := max of s over the reference
        set X), ``"3=max,11=0"`` (both at once), ``"7*1.5"``, ``"2+0.5"``, ``"5=q0.9"``, or
        :class:`~patronus_diffusion.edit.Edit` objects. ``plan``: other
        :class:`~patronus_diffusion.edit.EditPlan` fields (steps, sampler, names, reference,
        edit_guidance, trace, ...); the unedited reconstruction is decoded too unless ``reconstruction=False``."""
        if not specs:
            raise UsageError("give at least one edit, e.g. pat.edit(x, '3=max')")
        plan.setdefault("reconstruction", True)
        return run_plan(self, EditPlan(images=images, edits=list(specs), **plan), progress)

    def run(self, plan: EditPlan, progress: bool = False) -> EditResult:
        """Run any :class:`~patronus_diffusion.edit.EditPlan` (edits, interpolation, variations,
        traces) on this model: the images are inverted once (cached), everything is decoded in one batch."""
        return run_plan(self, plan, progress)

    # ------------------------------------------------------------------ the prior over s
    def load_prior(self, prior_dir: str | Path | None = None, required: bool = True):
        """The run's prior over s (``RUN/prior`` or ``prior_dir``); None when absent and not ``required``.

        Warns (:class:`StalePriorWarning`) when the prior was fitted to the s of other weights."""
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
        """True, with a :class:`StalePriorWarning`, when the prior was fitted to the s of other weights (e.g. the
        run was trained further since)."""
        fitted = prior.meta.get("source", {}).get("weights_sha256")
        try:
            current = sha256(weights_file(self.run_dir, prior.meta.get("source", {}).get("weights", "ema")))
        except Exception:  # noqa: BLE001 - a missing file is reported by the load itself
            return False
        if fitted and fitted != current:
            warnings.warn(f"the prior in {prior.path} was fitted to the s of other weights than {self.run_dir}'s "
                          f"current ones; retrain it with `patronus train-prior --run {self.run_dir}`",
                          StalePriorWarning, stacklevel=2)
            return True
        return False


def _same_tensors(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k].detach().cpu()) for k in a)


def _typed(name: str, value, current):
    """An option value checked against the type of the field it replaces (ints for ints, numbers for floats)."""
    ok = (isinstance(value, bool) if isinstance(current, bool)
          else isinstance(value, int) and not isinstance(value, bool) if isinstance(current, int)
          else isinstance(value, (int, float)) and not isinstance(value, bool) if isinstance(current, float)
          else isinstance(value, str))
    if not ok:
        raise UsageError(f"sample option {name} expects a {type(current).__name__}, got {value!r}")
    return float(value) if isinstance(current, float) else value
