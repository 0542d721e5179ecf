"""The explorer's state and computations, without any web code (``explore/server.py`` serves them).

An :class:`ExplorerSession` holds one loaded Patronus model and the images the user picked. Picking an
image (a test index, an upload, a prior sample) encodes it and inverts it **once** through the edit
engine's cached inversion; every slider move is then one :func:`~..edit.run_plan` call that
decodes the cached x_T under the requested s and re-encodes the result, so the page can show the
requested s next to the s the decoded image really has ("did the edit take?").

Slider ranges come from the seeded reference set X of the edit commands: per prototype J from the
1 % quantile of s_J over X to max(s_J over X), the value some real image reaches, not 0 ... max.
The default scheme is exact EDICT inversion at 10 steps with mixing weight p = 0.6 (``docs/explore.md``,
``benchmarks/exact_inversion.py``): the picked image comes back exactly at any step count, so few steps keep a
slider update fast without losing the image; p = 0.6 is the weight whose edits at 10 steps stay closest to
DDIM-100's (they come out about half as strong), where the EDICT paper's 0.93 wrecks them.

Beside each slider the page shows that prototype's nearest training patches, the report's prototype cards'
(:func:`~..analysis.explain.prototype_patches`: stored with the shipped model, else found in the dataset once per
session; without either the page says why). A slider edit may be timed: the edited s conditions only the steps
whose timestep t has LO <= t/T < HI, the unedited s the others (the edit engine's ``Edit.window``). Every decode
uses the guidance :func:`~..edit.decode_guidance` gives for the session's ``guidance`` and the run's settings, and
:meth:`ExplorerSession.info` states it.

Started with a classifier (``patronus explore --classifier FILE``: a
:class:`~..analysis.audit_flip.ClassifierView`), :meth:`ExplorerSession.counterfactual` shows the picked image with
the classifier's attribute flipped as ``patronus audit`` flips it, decoded from the cached inversion, and the
classifier's probability of its target class before and after. Whether the image has the attribute comes from the
test split's label, else (uploads, prior samples) from its s
(:meth:`~..analysis.audit_flip.AttributeFlip.guess_present`).
"""

from __future__ import annotations

import io
import math
import threading
import time
import uuid
from collections import OrderedDict
from dataclasses import dataclass

import torch
from PIL import Image, UnidentifiedImageError

from ..data import DataError, pil_to_tensor
from ..diffusion.samplers import edict_state
from ..edit import (FULL_WINDOW, WINDOW_RULE, Edit, EditPlan, Inverted, check_window, decode_guidance, invert_images,
                    reference_set, run_plan)
from ..utils.errors import UsageError
from ..utils.images import png_uri

MAX_UPLOAD_BYTES = 4 * 1024 * 1024
"""Uploads larger than this are refused (4 MiB; the model works at its own small resolution anyway)."""
MAX_UPLOAD_PIXELS = 25_000_000
"""Uploads with more pixels than this are refused before decoding (decompression bombs)."""
UPLOAD_MODES = {"1", "L", "LA", "P", "PA", "RGB", "RGBA", "RGBX", "CMYK", "I", "I;16", "I;16B", "I;16L", "F"}
"""Image modes an upload may have; others (YCbCr, LAB, HSV, ...) get a message asking for RGB or grey."""
MAX_ENTRIES = 64  # picked images kept (least recently used dropped first)
MAX_CHANNELS = 1024  # (page, image) pairs whose latest slider request is remembered (least recently used dropped)
MAX_CLIENT_CHARS = 64  # a page's client id (the page sends ~11 characters)


class UploadError(UsageError):
    """An upload the explorer cannot use; the message is shown in the page."""


@dataclass
class Entry:
    """One picked image with its cached inversion."""

    key: str
    name: str
    inverted: Inverted

    @property
    def s(self) -> torch.Tensor:
        return self.inverted.s[0]


def read_upload(data: bytes, channels: int, size: int, resize: str) -> torch.Tensor:
    """Bytes of an uploaded file -> (1, C, size, size) in [-1, 1], or an :class:`UploadError` saying why not."""
    if not data:
        raise UploadError("the upload is empty")
    if len(data) > MAX_UPLOAD_BYTES:
        raise UploadError(f"the upload is {len(data) / 2**20:.1f} MiB; the limit is {MAX_UPLOAD_BYTES // 2**20} MiB")
    try:
        with Image.open(io.BytesIO(data)) as img:
            if img.width * img.height > MAX_UPLOAD_PIXELS:
                raise UploadError(f"the image has {img.width} x {img.height} pixels; the limit is "
                                  f"{MAX_UPLOAD_PIXELS:,} pixels")
            if img.mode not in UPLOAD_MODES:
                raise UploadError(f"images of mode {img.mode} are not supported; save it as an RGB or greyscale "
                                  "PNG or JPEG")
            img.load()
            if img.mode == "CMYK":
                img = img.convert("RGB")
            x = pil_to_tensor(img, channels, size, resize)[None]
    except UploadError:
        raise
    except UnidentifiedImageError:
        raise UploadError("this file is not an image the explorer can read (PNG, JPEG, GIF, BMP, TIFF or WebP)") \
            from None
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as e:
        raise UploadError(f"cannot read this image: {e}") from None
    if not torch.isfinite(x).all():
        raise UploadError("the image holds NaN or infinite pixel values")
    return x



class ExplorerSession:
    """Picked images, their cached inversions, and slider updates of one model (thread-safe)."""

    def __init__(self, pat, steps: int = 10, inversion: str = "edict", mix: float | None = None, ref_n: int = 256,
                 ref_seed: int = 0, prior=None, guidance: float | None = None, classifier=None):
        if steps < 1:
            raise UsageError("--steps must be at least 1")
        if mix is None:  # the measured best: 0.6 at 10 steps, 0.8 beyond (0.6 overflows float32 at 20+ steps)
            mix = 0.6 if steps <= 10 else 0.8
        if not 0 < mix < 1:
            raise UsageError(f"--mix must lie in (0, 1), got {mix}")
        # a copy with the explorer's inversion settings (sharing the weights): the caller's model stays as it was
        pat = self.pat = pat.with_options(inversion=inversion, edict_mix=mix)
        self.steps = steps
        self.guidance = guidance
        self.cfg_w, self.edit_w = decode_guidance(pat, guidance, None)  # what every slider decode applies
        self.prior = prior
        self.classifier = classifier  # an analysis.audit_flip.ClassifierView, or None
        self.reference = reference_set(pat, ref_n, ref_seed)
        self._patches: dict | None = None  # computed on the first request, then kept
        self._patches_lock = threading.Lock()
        self._entries: OrderedDict[str, Entry] = OrderedDict()
        self._lock = threading.Lock()
        self._latest: OrderedDict[str, int] = OrderedDict()  # "client:key" -> newest seq seen, LRU, MAX_CHANNELS
        self._latest_lock = threading.Lock()
        try:  # without the dataset the page still takes uploads and prior samples (X is stored with the model)
            self.test_size, self.no_test_images = len(pat.dataset("test")), None
        except DataError as e:
            self.test_size, self.no_test_images = 0, f"no test images ({_first_sentence(e)})"

    # ---------------------------------------------------------------- model facts for the page
    def slider_ranges(self) -> list[dict]:
        """Per prototype: [low, high] = [1 % quantile, max] of s_J over the reference set X, and its median."""
        s = self.reference.s
        lo, mid, hi = (torch.quantile(s, q, dim=0) for q in (0.01, 0.5, 1.0))
        return [{"id": j, "min": round(float(lo[j]), 5), "median": round(float(mid[j]), 5),
                 "max": round(float(hi[j]), 5)} for j in range(s.shape[1])]

    def info(self) -> dict:
        pat = self.pat
        d = pat.config.data
        return {"run": str(pat.run_dir), "dataset": d.dataset, "image_size": d.image_size, "channels": d.channels,
                "num_prototypes": pat.num_prototypes, "steps": self.steps,
                "inversion": pat.config.sample.inversion, "edict_mix": pat.config.sample.edict_mix,
                "test_images": self.test_size, "no_test_images": self.no_test_images,
                "prior": self.prior is not None, "max_upload_mib": MAX_UPLOAD_BYTES // 2**20,
                "reference": self.reference.to_json(), "sliders": self.slider_ranges(),
                "guidance": self.guidance_text(),
                "classifier": self.classifier.describe() if self.classifier is not None else None,
                "window": {"T": pat.schedule.num_timesteps, "timesteps": pat.schedule.timesteps(self.steps),
                           "rule": WINDOW_RULE}}

    def guidance_text(self) -> dict:
        """What guidance decodes the sliders' edits (:func:`~..edit.decode_guidance`), in numbers and in words."""
        if self.cfg_w:
            source = "--guidance" if self.guidance is not None else "the run's sample.guidance"
            text = (f"decoded with classifier-free guidance on s, w = {self.cfg_w:g} ({source}): "
                    f"eps(s') + {self.cfg_w:g} (eps(s') - eps(null)); no edit guidance")
        elif self.edit_w:
            text = (f"decoded with edit guidance w = {self.edit_w:g} (the run's sample.edit_guidance): "
                    f"eps(s') + {self.edit_w:g} (eps(s') - eps(s)) amplifies what the sliders change")
        else:
            text = "decoded with edit guidance w = 0 (the decoder's own response)"
        return {"guidance": self.cfg_w, "edit_guidance": self.edit_w, "text": text}

    def patches(self) -> dict:
        """Every prototype's nearest training patches as one small PNG strip each (the report's prototype cards:
        :func:`~..analysis.explain.prototype_patches`), computed once per session and kept; without the patches
        (no stored file, no dataset) ``available`` is false and ``reason`` says why in one line."""
        from ..analysis.explain import prototype_patches

        with self._patches_lock:
            if self._patches is None:
                split = "train"
                try:
                    pp = prototype_patches(self.pat, split=split)
                except DataError as e:
                    self._patches = {"available": False, "reason": f"no nearest training patches: this model stores "
                                     f"none and its {split} split cannot be read ({_first_sentence(e)})"}
                else:
                    self._patches = {"available": True, **pp.settings(), "prototypes": [
                        {"id": j, "src": png_uri(pp.crops[j], upscale=1),
                         "nearest": [{"label": str(pp.labels[j][m]), "distance": round(float(pp.distance[j, m]), 5)}
                                     for m in range(pp.k)]} for j in range(pp.crops.shape[0])]}
            return self._patches

    def thumbnails(self, offset: int = 0, count: int = 48) -> dict:
        """Test images offset ... offset + count - 1 as small data URIs, for the picking grid."""
        if not self.test_size:
            return {"offset": 0, "total": 0, "images": [], "reason": self.no_test_images}
        offset = max(0, min(int(offset), self.test_size - 1))
        idx = list(range(offset, min(offset + max(1, min(int(count), 200)), self.test_size)))
        x = self.pat.load_images(indices=idx)
        return {"offset": offset, "total": self.test_size,
                "images": [{"index": i, "src": png_uri(x[k:k + 1], upscale=1)} for k, i in enumerate(idx)]}

    # ---------------------------------------------------------------- picking
    def _add(self, x: torch.Tensor, name: str, s: torch.Tensor | None = None,
             x_T: torch.Tensor | None = None) -> dict:
        """Invert x once (or take the given x_T, for a generated image) and remember it."""
        with self._lock:
            t0 = time.time()
            if x_T is None:
                inv = invert_images(self.pat, x, self.steps)
            else:
                inv = Inverted(x0=x, s=s, x_T=x_T, steps=self.steps)
            key = uuid.uuid4().hex[:12]
            self._entries[key] = Entry(key, name, inv)
            while len(self._entries) > MAX_ENTRIES:
                self._entries.popitem(last=False)
            seconds = time.time() - t0
            match = self.pat.encode(x)
        return {"key": key, "name": name, "image": png_uri(x, upscale=1), "s": _floats(inv.s[0]),
                "boxes": self._boxes(match.location[0]), "invert_seconds": round(seconds, 3)}

    def pick_test(self, index: int) -> dict:
        if not self.test_size:
            raise UsageError(f"{self.no_test_images}: upload an image or sample one from the prior")
        if not 0 <= int(index) < self.test_size:
            raise UsageError(f"test image {index} does not exist (0 ... {self.test_size - 1})")
        return self._add(self.pat.load_images(indices=[int(index)]), f"test:{int(index)}")

    def pick_upload(self, data: bytes, filename: str = "upload") -> dict:
        d = self.pat.config.data
        x = read_upload(data, d.channels, d.image_size, d.resize)
        return self._add(x, f"upload:{filename}")

    def sample_prior(self, seed: int = 0) -> dict:
        """s from the run's prior, an image decoded from fresh seeded noise; the sliders then edit it."""
        if self.prior is None:
            raise UsageError("this run has no prior over s; train one with `patronus train-prior --run RUN`")
        if not 0 <= int(seed) < 2**63:
            raise UsageError(f"the seed must lie in 0 ... 2^63 - 1, got {seed}")
        s = self.prior.sample(1, seed=seed, clip=True)
        d = self.pat.config.data
        noise = torch.randn((1, d.channels, d.image_size, d.image_size), generator=torch.Generator().manual_seed(seed))
        with self._lock:
            x = self.pat.decode(noise, s, steps=self.steps, guidance=self.guidance).clamp(-1, 1)
        x_T = edict_state(noise) if self.pat.decode_sampler == "edict" else noise  # as inversions are stored
        return self._add(x, f"prior:{seed}", s=s, x_T=x_T)

    def entry(self, key: str) -> Entry:
        if key not in self._entries:
            raise UsageError("this image is no longer loaded (the server was restarted or forgot it); pick it again")
        self._entries.move_to_end(key)
        return self._entries[key]

    # ---------------------------------------------------------------- slider updates
    def render(self, key: str, s: list[float], seq: int = 0, client: str = "", window=None) -> dict:
        """Decode the picked image's cached x_T under the requested s, re-encode it.

        ``window`` (LO, HI) times the edit: the requested s conditions the steps with LO <= t/T < HI, the picked
        image's own s the others (None or (0, 1): every step). Requests carry a sequence number per client; one that
        waits for the model while a newer one of the same client arrived is dropped (``{"stale": true}``), so a
        dragged slider never queues up work.
        """
        want = self._check_s(s)  # validate everything before anything is remembered
        window = self._check_window(window)
        if not isinstance(client, str) or len(client) > MAX_CLIENT_CHARS:
            raise UsageError(f"the client id must be a string of at most {MAX_CLIENT_CHARS} characters")
        seq = int(seq)
        chan = f"{client}:{key}"
        with self._latest_lock:
            if key not in self._entries:
                raise UsageError("this image is no longer loaded (the server was restarted or forgot it); "
                                 "pick it again")
            self._latest[chan] = max(self._latest.pop(chan, -1), seq)  # (re)inserted last: most recently used
            while len(self._latest) > MAX_CHANNELS:
                self._latest.popitem(last=False)
        with self._lock:
            if seq < self._latest.get(chan, -1):
                return {"stale": True, "seq": seq}
            e = self.entry(key)
            t0 = time.time()
            changed = [j for j in range(want.shape[1]) if abs(float(want[0, j] - e.s[j])) > 1e-9]
            timed = None if window == FULL_WINDOW else window
            plan = EditPlan(images=e.inverted.x0, edits=[Edit.replace(want, changed or [0], "slider", timed)],
                            steps=self.steps, inverted=e.inverted, guidance=self.guidance)
            res = run_plan(self.pat, plan)
            seconds = time.time() - t0
        return {"seq": seq, "image": png_uri(res.images[0], upscale=1), "s_requested": _floats(want[0]),
                "s_reached": _floats(res.s_after[0, 0]), "boxes": self._boxes(res.location[0, 0]),
                "window": list(window), "window_steps": self.pat.schedule.window_steps(self.steps, window),
                "seconds": round(seconds, 3)}

    def interpolate(self, key_a: str, key_b: str, alpha: float) -> dict:
        """The image between two picked ones: s = lerp(s_A, s_B), x_T = slerp(x_T^A, x_T^B)."""
        if not 0.0 <= float(alpha) <= 1.0:
            raise UsageError("alpha must lie in [0, 1]")
        with self._lock:
            a, b = self.entry(key_a), self.entry(key_b)
            both = Inverted(x0=torch.cat([a.inverted.x0, b.inverted.x0]), s=torch.cat([a.inverted.s, b.inverted.s]),
                            x_T=torch.cat([a.inverted.x_T, b.inverted.x_T]), steps=self.steps)
            t0 = time.time()
            res = run_plan(self.pat, EditPlan(images=both.x0, alphas=[float(alpha)], steps=self.steps,
                                              inverted=both, guidance=self.guidance))
            seconds = time.time() - t0
        return {"image": png_uri(res.path[0:1], upscale=1), "s_requested": _floats(res.s_path_requested[0]),
                "s_reached": _floats(res.s_path[0]), "alpha": float(alpha), "seconds": round(seconds, 3)}

    def counterfactual(self, key: str) -> dict:
        """The picked image with the classifier's attribute flipped (the audit's edit, from the cached inversion)
        and the classifier's probability of its target class on the image and on the counterfactual."""
        view = self.classifier
        if view is None:
            raise UsageError("this explorer was started without --classifier: no counterfactual to show")
        with self._lock:
            e = self.entry(key)
            index = int(e.name[5:]) if e.name.startswith("test:") else None
            if index is not None and view.test_labels is not None:
                present, source = bool(view.test_labels[index]), "the test split's label"
            else:
                present, source = bool(view.flip.guess_present(e.s[None].numpy())[0]), "the image's s (no label)"
            t0 = time.time()
            out = view.counterfactual(self.pat, e.inverted.x0, present, self.steps, inverted=e.inverted,
                                      guidance=self.guidance)
            seconds = time.time() - t0
        return {"key": key, "image": png_uri(out["image"], upscale=1), "attribute": view.attribute,
                "has_attribute": present, "has_attribute_from": source, "edit": out["direction"],
                "prototypes": view.flip.prototypes, "target": view.classifier.target,
                "p_before": _round(out["p_before"]), "p_after": _round(out["p_after"]),
                "s_reached": _floats(out["s_after"]), "seconds": round(seconds, 3)}

    def _check_s(self, s) -> torch.Tensor:
        p = self.pat.num_prototypes
        try:
            if isinstance(s, (str, bytes, dict)) or any(isinstance(v, (bool, str, bytes)) for v in s):
                raise TypeError
            t = torch.tensor([float(v) for v in s], dtype=torch.float32)
        except (TypeError, ValueError):
            raise UsageError("s must be a list of numbers") from None
        if t.numel() != p or not torch.isfinite(t).all():
            raise UsageError(f"s must hold {p} finite numbers, got {t.numel()}")
        return t[None]

    @staticmethod
    def _check_window(window) -> tuple[float, float]:
        """A render's window: None or [] is every step; else two numbers 0 <= LO <= HI <= 1."""
        if window is None or (isinstance(window, (list, tuple)) and len(window) == 0):
            return FULL_WINDOW
        if isinstance(window, (list, tuple)) and any(isinstance(v, (bool, str, bytes)) for v in window):
            raise UsageError("the window must be two numbers [LO, HI]")
        try:
            return check_window(window)
        except UsageError as e:
            raise UsageError(f"bad window: {e}") from None

    def _boxes(self, location: torch.Tensor) -> list[list[int]]:
        """Receptive-field box (x0, y0, x1, y1) in model pixels of every prototype's best match."""
        return [list(self.pat.receptive_field.box(int(r), int(c))) for r, c in location.tolist()]


def _first_sentence(e: Exception) -> str:
    """The first sentence of an error's message (the page shows one line; the rest says how to install)."""
    return str(e).strip().splitlines()[0].split(". ")[0].rstrip(".")


def _round(v: float, digits: int = 5) -> float | None:
    return round(v, digits) if math.isfinite(v) else None


def _floats(t: torch.Tensor, digits: int = 5) -> list[float | None]:
    """Rounded numbers for JSON; a non-finite value (a decoder gone wrong) becomes null, never a bare NaN."""
    return [round(v, digits) if math.isfinite(v) else None for v in map(float, t.flatten().tolist())]
