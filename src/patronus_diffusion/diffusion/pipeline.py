"""The Patronus inference pipeline: network + noise schedule + samplers, batched and without autograd.

Images are (B, C, H, W) tensors in [-1, 1] at the model's resolution; :meth:`PatronusPipeline.load_images`
makes them from files or dataset indices. Encodings of dataset splits are cached per pipeline object
(:meth:`PatronusPipeline.encode_dataset`), since the weights never change after loading; so are inversions
(:meth:`PatronusPipeline.invert`, :mod:`.inversion_cache`). The s of the reference set X stored beside the weights
is read here too (:meth:`PatronusPipeline.shipped_reference_s`, :mod:`.stored_reference`).

Everything the layers above call on a model object (the edit engine, the analyses) is defined here or below, so
calls only ever go down the layers; the API's ``Patronus`` adds loading, saving, devices and options on top.
"""

from __future__ import annotations

import warnings
from collections import OrderedDict
from pathlib import Path
from typing import Callable, Sequence

import torch
from PIL import Image
from tqdm.auto import tqdm

from ..config import RunConfig
from ..data import DataError, load_dataset, pil_to_tensor
from ..data.datasets import is_far_below
from ..models.prototypes import PrototypeMatch
from ..utils.errors import UsageError
from .guidance import combine_guidance
from .inversion import ddim_invert, edict_invert
from .inversion_cache import cached_inversion, inversion_key
from .samplers import edict_state, get_sampler
from .schedule import NoiseSchedule, check_window
from .stored_reference import is_the_set_asked_for, read_stored_reference, without_dataset_advice


def window_rows(window, batch: int) -> torch.Tensor:
    """A timed condition's window as (batch, 2) float64 rows: one (LO, HI) pair for every row, or one per row."""
    if isinstance(window, torch.Tensor) and window.ndim == 2:
        if window.shape != (batch, 2):
            raise UsageError(f"per-row windows must have shape ({batch}, 2), got {tuple(window.shape)}")
        return torch.tensor([check_window(w) for w in window.tolist()], dtype=torch.float64).reshape(batch, 2)
    return torch.tensor([check_window(window)], dtype=torch.float64).expand(batch, 2).clone()


class PatronusPipeline:
    """A Patronus network (prototype encoder + conditional UNet) with its noise schedule and config: the
    batched, autograd-free operations every analysis is built from (encode, invert, decode, sample).

    ``model_fn(s)`` binds s (and, with guidance w > 0, classifier-free guidance
    eps(s) + w (eps(s) - eps(null)) in one batched call) into the eps(x, t) that any sampler takes, so the
    network, the schedule and the sampler stay separate. Loading a run is the API's job
    (:meth:`patronus_diffusion.Patronus.load`)."""

    def __init__(self, model: torch.nn.Module, config: RunConfig, device: torch.device,
                 run_dir: Path | None = None, batch_size: int = 64):
        self.model = model.eval().requires_grad_(False)
        self.config = config
        self.device = device
        self.run_dir = run_dir
        self.batch_size = batch_size
        self.schedule = NoiseSchedule.from_config(config.diffusion)
        self._encodings: dict[tuple, PrototypeMatch] = {}
        self._inversions: OrderedDict[str, torch.Tensor] = OrderedDict()
        self._datasets: dict[str, object] = {}
        self._reference: tuple | None = None  # the stored reference set, once read: (meta, s)
        self.weights_path: Path | None = None  # the weights file loaded (stored reference s must match it)
        self._python_words = False  # data errors name Python keywords (data_root=), not CLI flags

    @property
    def device(self) -> torch.device:
        """Where the network's weights are (``Patronus.to`` moves them)."""
        p = next(self.model.parameters(), None)
        return p.device if p is not None else self._device

    @device.setter
    def device(self, value) -> None:
        self._device = torch.device(value)

    @property
    def num_prototypes(self) -> int:
        """P, the number of prototypes (the length of s)."""
        return self.config.prototypes.num_prototypes

    @property
    def receptive_field(self):
        """Which pixel box each unit of the prototype layer sees (``.box(row, col)`` of a best-match location)."""
        return self.model.prototypes.receptive_field

    # ------------------------------------------------------------------ images in
    def check_images(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` as float32 after checking it is a (B, C, H, W) batch at this model's size, in [-1, 1]."""
        d = self.config.data
        want = (d.channels, d.image_size, d.image_size)
        if not isinstance(x, torch.Tensor) or x.ndim != 4 or tuple(x.shape[1:]) != want:
            got = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
            raise UsageError(f"expected images of shape (B, {want[0]}, {want[1]}, {want[2]}) in [-1, 1], got {got}; "
                             f"load files with Patronus.load_images(paths=...) to convert and resize them")
        if x.numel() and (x.min() < -1.5 or x.max() > 1.5):
            raise UsageError(f"images must be scaled to [-1, 1] (got range [{float(x.min()):.2f}, "
                             f"{float(x.max()):.2f}]); use x / 127.5 - 1 for uint8 pixels")
        return x.float()

    def dataset(self, split: str = "test"):
        """The run's dataset split (loaded once per object). Without the dataset, load your own images with
        :meth:`load_images` (``paths=[...]``); edits use the reference set stored with the model."""
        if split not in self._datasets:
            try:
                self._datasets[split] = load_dataset(self.config.data, split)
            except DataError as e:
                if not self._python_words:
                    raise
                raise DataError(without_dataset_advice(str(e), self._stored_reference()[0])) from None
        return self._datasets[split]

    def shipped_reference_s(self, n: int = 256, seed: int = 0, split: str = "test") -> torch.Tensor | None:
        """s (n, P) of the reference set X stored with the model (``reference_s.safetensors``), or None.

        It is used when it is the set asked for (same n, seed, split and dataset, encoded by these very weights)
        and the dataset it came from is the one configured: with ``data_root`` set, the dataset there is used
        when it can be read."""
        meta, s = self._stored_reference()
        if not is_the_set_asked_for(meta, n, seed, split, self.config.data):
            return None
        if self.config.data.root is not None:
            try:
                self.dataset(split)
                return None  # the configured dataset is readable: X comes from it
            except DataError:
                pass
        return s.clone()

    def _stored_reference(self) -> tuple[dict | None, torch.Tensor | None]:
        """(meta, s) stored beside the weights (:func:`~.stored_reference.read_stored_reference`), read once."""
        if self._reference is None:
            self._reference = read_stored_reference(self.run_dir, self.weights_path, self.num_prototypes)
        return self._reference

    def load_images(self, paths: Sequence[str | Path] | None = None, indices: Sequence[int] | None = None,
                    split: str = "test") -> torch.Tensor:
        """Images from files (converted with the run's resize policy) or from dataset indices."""
        d = self.config.data
        if paths:
            out, small = [], []
            for p in paths:
                try:
                    with Image.open(p) as img:
                        img.load()
                        if is_far_below(img.size, d.image_size):
                            small.append(f"{Path(p).name} ({img.size[0]}x{img.size[1]})")
                        out.append(pil_to_tensor(img, d.channels, d.image_size, d.resize))
                except FileNotFoundError:
                    raise DataError(f"image {p} does not exist") from None
                except (OSError, ValueError, SyntaxError) as e:
                    raise DataError(f"cannot read image {p}: {e}") from None
            if small:
                warnings.warn(f"{len(small)} of {len(paths)} image(s) are smaller than half the model's "
                              f"{d.image_size} px and are upscaled (they will look blurred): "
                              f"{', '.join(small[:5])}{' ...' if len(small) > 5 else ''}", stacklevel=2)
            return torch.stack(out)
        if indices is not None:
            ds = self.dataset(split)
            bad = [i for i in indices if not 0 <= int(i) < len(ds)]
            if bad:
                raise DataError(f"indices {bad} are outside the {split} split (0 ... {len(ds) - 1})")
            return ds.get_batch(list(indices))
        raise UsageError("give paths or indices")

    # ------------------------------------------------------------------ core calls
    def _chunks(self, *tensors):
        n = tensors[0].shape[0]
        for i in range(0, n, self.batch_size):
            yield [t[i:i + self.batch_size] if t is not None else None for t in tensors]

    def model_fn(self, s: torch.Tensor, guidance: float | None = None, against: torch.Tensor | None = None,
                 window=None, outside: torch.Tensor | None = None
                 ) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
        """eps(x, t) with the condition s bound (batch sizes of x and s must match).

        With a guidance weight w > 0 (``guidance``, default the run's ``sample.guidance``) it is classifier-free
        guidance on s, eps(s) + w (eps(s) - eps(null)), the conditional and null halves in one network call of 2B
        rows; w = 0 is the plain conditional call.

        With ``against`` (one row per row of s) the guidance is on the difference of two conditions instead,
        eps(s) + w (eps(s) - eps(against)): for an edit s' of an image's own s, ``against`` = s amplifies exactly
        what the edit changes (rows where s == against decode as the plain conditional model). It needs no null
        condition, so it works for every model.

        With ``window`` (LO, HI), or one such pair per row as a (B, 2) tensor, the condition is timed: a step at
        timestep t is conditioned on s where LO <= t / T < HI (:func:`~.schedule.check_window`) and on ``outside``
        (one row per row of s, e.g. the unedited s of an edit) at every other step; guidance, as above, applies to
        whichever condition a row has at that step. A window of (0, 1) is the plain conditional call on s, exactly.
        """
        if window is not None:
            return self._timed_model_fn(s, guidance, against, window, outside)
        s = s.to(self.device, torch.float32)
        if against is not None and against.shape != s.shape:
            raise UsageError(f"the guidance condition has shape {tuple(against.shape)}; s has {tuple(s.shape)}")
        default = self.config.sample.edit_guidance if against is not None else self.config.sample.guidance
        w = default if guidance is None else float(guidance)
        if w < 0:
            raise UsageError(f"guidance weight must be >= 0 (0 = plain conditional decoding), got {w}")
        if w == 0:
            return lambda x, t: self.model(x, t, s)
        if against is not None:
            against = against.to(self.device, torch.float32)
            edited = (s != against).any(1)  # rows whose difference is zero skip the second evaluation
            if not bool(edited.any()):
                return lambda x, t: self.model(x, t, s)
            pair = torch.cat([s, against[edited]])
            b = s.shape[0]

            def fn_difference(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
                eps = self.model(torch.cat([x, x[edited]]), torch.cat([t, t[edited]]), pair)
                out = eps[:b].clone()
                out[edited] = combine_guidance(eps[:b][edited], eps[b:], w)
                return out

            return fn_difference
        if self.config.train.cond_dropout <= 0:
            raise UsageError(f"guidance {w:g} needs a model trained with train.cond_dropout > 0 (a learned null s); "
                             f"this run was trained without it")
        b = s.shape[0]
        s2 = torch.cat([s, s])
        uncond = torch.cat([torch.zeros(b, dtype=torch.bool), torch.ones(b, dtype=torch.bool)]).to(self.device)

        def fn(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
            eps_c, eps_u = self.model(torch.cat([x, x]), torch.cat([t, t]), s2, uncond).chunk(2)
            return combine_guidance(eps_c, eps_u, w)

        return fn

    def _timed_model_fn(self, s, guidance, against, window, outside):
        """eps(x, t) conditioned on s inside each row's window and on ``outside`` elsewhere (:meth:`model_fn`)."""
        if outside is None:
            raise UsageError("a timed condition (window=) needs the condition outside its window (outside=)")
        s = self.check_s(s)
        outside = self.check_s(outside, s.shape[0])
        rows = window_rows(window, s.shape[0])
        fns: dict[tuple[bool, ...], Callable] = {}  # one bound model_fn per pattern of rows inside their window

        def fn(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
            inside = self.schedule.in_window(t, rows)
            key = tuple(inside.tolist())
            if key not in fns:
                fns[key] = self.model_fn(torch.where(inside[:, None], s, outside), guidance, against)
            return fns[key](x, t)

        return fn

    def check_s(self, s: torch.Tensor, batch: int | None = None) -> torch.Tensor:
        """``s`` as a float32 (B, P) tensor after checking its shape (and its B against ``batch``, when given)."""
        s = torch.as_tensor(s, dtype=torch.float32)
        if s.ndim != 2 or s.shape[1] != self.num_prototypes or (batch is not None and s.shape[0] != batch):
            raise UsageError(f"s must have shape ({batch if batch is not None else 'B'}, {self.num_prototypes}), "
                             f"got {tuple(s.shape)}")
        return s

    @torch.no_grad()
    def encode(self, images: torch.Tensor, return_map: bool = False) -> PrototypeMatch:
        """s, min distances and best-match locations of every prototype, for every image."""
        x = self.check_images(images)
        parts = [self.model.prototypes(c.to(self.device), return_map=return_map) for (c,) in self._chunks(x)]
        cat = lambda name: torch.cat([getattr(p, name).cpu() for p in parts])  # noqa: E731
        return PrototypeMatch(s=cat("s"), distance=cat("distance"), location=cat("location"),
                              distance_map=cat("distance_map") if return_map else None)

    @torch.no_grad()
    def encode_dataset(self, data="test", indices: Sequence[int] | None = None, chunk: int = 1024,
                       progress: bool = False, desc: str = "encode") -> PrototypeMatch:
        """s, distances and locations of dataset items, loaded and encoded ``chunk`` images at a time.

        ``data`` is a split name of the run's dataset (results are cached on this object, keyed by split and
        indices, so analyses in one process encode each image once) or any dataset object (not cached).
        ``indices`` defaults to every item.
        """
        ds = self.dataset(data) if isinstance(data, str) else data
        idx = list(range(len(ds))) if indices is None else [int(i) for i in indices]
        key = (data, tuple(idx)) if isinstance(data, str) else None
        if key is not None and key in self._encodings:
            return self._encodings[key]
        parts = [self.encode(ds.get_batch(idx[i:i + chunk]))
                 for i in tqdm(range(0, len(idx), chunk), desc=desc, leave=False, disable=not progress)]
        cat = lambda name: torch.cat([getattr(p, name) for p in parts]) if parts else torch.zeros(0)  # noqa: E731
        out = PrototypeMatch(s=cat("s"), distance=cat("distance"), location=cat("location"))
        if key is not None:
            self._encodings[key] = out
        return out

    @property
    def inversion_cache(self) -> OrderedDict:
        """x_T of recent inversions of this object's weights, least recently used first, keyed by the images' and
        s's bytes, the steps and the scheme (:meth:`invert` fills and reads it)."""
        return self._inversions

    def clear_caches(self) -> None:
        """Forget cached inversions and dataset encodings (they are only ever valid for these weights)."""
        self._inversions.clear()
        self._encodings.clear()

    @property
    def exact_inversion(self) -> bool:
        """True with ``sample.inversion=edict``: invert and decode with EDICT's exact coupled scheme."""
        return self.config.sample.inversion == "edict"

    @property
    def inversion_tag(self) -> str:
        """What decides an inversion's result besides images, s and steps (part of the inversion cache key)."""
        return f"edict:{self.config.sample.edict_mix}" if self.exact_inversion else "ddim"

    @property
    def decode_sampler(self) -> str:
        """The sampler that decodes an inverted x_T: ``edict`` with ``sample.inversion=edict``, else
        ``sample.decode_sampler``."""
        return "edict" if self.exact_inversion else self.config.sample.decode_sampler

    @torch.no_grad()
    def invert(self, images: torch.Tensor, s: torch.Tensor | None = None, steps: int | None = None,
               progress: bool = False, callback=None, cache: bool = True) -> torch.Tensor:
        """Deterministic inversion x_0 -> x_T under the images' own s (or the given s).

        ``sample.inversion=ddim``: x_T is (B, C, H, W); ``edict``: an exact EDICT state (B, 2C, H, W) that
        :meth:`decode` (with its default sampler) turns back into the images. The result is cached on this model
        (by the bytes of images and s, the steps and the scheme: :attr:`inversion_cache`), so inverting the same
        images again costs nothing; each call returns its own copy. ``cache=False`` (or a ``callback``) always
        runs it."""
        x = self.check_images(images)
        s = self.encode(x).s if s is None else self.check_s(s, x.shape[0])
        steps = steps or self.config.sample.ddim_steps
        if callback is not None or not cache:
            return self._run_inversion(x, s, steps, progress, callback)
        return cached_inversion(self._inversions, inversion_key(x, s, steps, self.inversion_tag),
                                lambda: self._run_inversion(x, s, steps, progress))

    def _run_inversion(self, x: torch.Tensor, s: torch.Tensor, steps: int, progress: bool = False,
                       callback=None) -> torch.Tensor:
        """The inversion itself (:meth:`invert` without its cache), in chunks of ``batch_size`` images."""
        fn, opts = ((edict_invert, {"mix": self.config.sample.edict_mix}) if self.exact_inversion
                    else (ddim_invert, {}))
        out = [fn(self.model_fn(sc), xc.to(self.device), self.schedule, steps, progress=progress,
                  callback=callback, **opts).cpu() for xc, sc in self._chunks(x, s)]
        return torch.cat(out)

    def _decoder_input(self, x_T: torch.Tensor, sampler: str) -> torch.Tensor:
        """x_T as the sampler reads it: EDICT takes a two-sequence state; every other sampler plain noise."""
        c = self.config.data.channels
        if sampler == "edict":
            if x_T.shape[1] == c:
                return edict_state(x_T)
            if x_T.shape[1] == 2 * c:
                return x_T
        elif x_T.shape[1] == c:
            return x_T
        elif x_T.shape[1] == 2 * c:
            raise UsageError(f"this x_T is an EDICT state ({x_T.shape[1]} channels, from sample.inversion=edict); "
                             f"decode it with the edict sampler, not {sampler!r}")
        raise UsageError(f"x_T has {x_T.shape[1]} channels; this model's images have {c}")

    @torch.no_grad()
    def decode(self, x_T: torch.Tensor, s: torch.Tensor, steps: int | None = None, sampler: str | None = None,
               progress: bool = False, callback=None, guidance: float | None = None,
               against: torch.Tensor | None = None, window=None, outside: torch.Tensor | None = None,
               **options) -> torch.Tensor:
        """Generate images from (x_T, s); DDIM eta=0 by default, the exact inverse of :meth:`invert`.

        ``guidance`` is the classifier-free guidance weight on s (None = the run's ``sample.guidance``); with
        ``against`` (one condition per row) it guides on the difference eps(s) - eps(against) (:meth:`model_fn`).
        ``window`` (LO, HI) (or one pair per row, (B, 2)) times the condition: s conditions the steps whose timestep
        t has LO <= t / T < HI, ``outside`` (one row per row of s) every other step (a timed edit)."""
        s = self.check_s(s, x_T.shape[0])
        if against is not None:
            against = self.check_s(against, x_T.shape[0])
        if window is not None:
            window = window_rows(window, x_T.shape[0])
            if outside is None:
                raise UsageError("a timed condition (window=) needs the condition outside its window (outside=)")
            outside = self.check_s(outside, x_T.shape[0])
        sampler = sampler or self.decode_sampler
        fn = get_sampler(sampler)
        x_T = self._decoder_input(x_T, sampler)
        if sampler == "edict":
            options.setdefault("mix", self.config.sample.edict_mix)
        steps = steps or self.config.sample.ddim_steps
        out = [fn(self.model_fn(sc, guidance, ac, wc, oc), xc.to(self.device), self.schedule, steps,
                  progress=progress, callback=callback, **options).cpu()
               for xc, sc, ac, wc, oc in self._chunks(x_T, s, against, window, outside)]
        return torch.cat(out)

    @torch.no_grad()
    def sample(self, s: torch.Tensor, sampler: str | None = None, steps: int | None = None, seed: int = 0,
               x_T: torch.Tensor | None = None, progress: bool = False, clamp: bool = True,
               guidance: float | None = None, **options) -> torch.Tensor:
        """Generate one image per row of s from fresh noise (seeded), with any sampler.

        x0 predictions are clipped to [-1, 1] at every step unless ``clip_x0=False`` is passed (or the run's
        ``sample.clip_x0`` is false): without it, deterministic samplers from pure noise saturate on young models.
        ``guidance`` is the classifier-free guidance weight on s (None = the run's ``sample.guidance``).
        """
        s = self.check_s(s)
        if x_T is None:
            d = self.config.data
            g = torch.Generator().manual_seed(seed)
            x_T = torch.randn((s.shape[0], d.channels, d.image_size, d.image_size), generator=g)
        if sampler == "ddpm" or (sampler is None and self.config.sample.sampler == "ddpm"):
            options.setdefault("generator", torch.Generator(device=self.device).manual_seed(seed + 1))
        options.setdefault("clip_x0", self.config.sample.clip_x0)
        out = self.decode(x_T, s, steps=steps or self.config.sample.steps, sampler=sampler or self.config.sample.sampler,
                          progress=progress, guidance=guidance, **options)
        return out.clamp(-1, 1) if clamp else out

    @torch.no_grad()
    def reconstruct(self, images: torch.Tensor, steps: int | None = None, progress: bool = False):
        """(reconstruction, x_T, s): invert then decode with the same s and number of steps."""
        x = self.check_images(images)
        s = self.encode(x).s
        x_T = self.invert(x, s, steps, progress=progress)
        return self.decode(x_T, s, steps, progress=progress), x_T, s
