"""The two networks an audit needs besides Patronus: the user's classifier and an outside judge of the attribute.

**The classifier** is the user's TorchScript file (``torch.jit.load``; pickled models and state dicts are refused:
loading them would run arbitrary code). Patronus images are in [-1, 1] at the run's size and channels;
:class:`Classifier` converts them explicitly to what the classifier takes: a value range (``-1,1``, ``0,1``,
``0,255``: any ``lo,hi``), a size (bilinear resize, antialiased when shrinking) and channels (grey -> RGB by
repetition, RGB -> grey by the ITU-R 601 luma weights 0.299, 0.587, 0.114). Its output must be logits: (B, K)
for K >= 2 classes (softmax) or (B,) / (B, 1) for one binary logit (sigmoid, the probability of class 1).
:func:`load_classifier` runs it once on two images and turns every way it can fail on this input into one line
(not TorchScript, wrong output shape or type, a shape it cannot take, a device it cannot run on, a bad target).

**The judge** decides whether a counterfactual really flipped the attribute. For ``class:`` attributes it is the
project's class judge (:func:`patronus_diffusion.evaluation.judge.get_judge`: the shipped Fashion-MNIST judge, or
one trained and cached for the run's data), reading p(A) as the judge's softmax mass on A's classes. For an
attribute column it is a :class:`~patronus_diffusion.evaluation.judge.JudgeNet` with two outputs trained on the
run's *real* training images only (never a generated one, never the prototype encoder), class-weighted, with its
own seed, cached next to the class judges (``$PATRONUS_CACHE/judge``) under a key of the data, the attribute and
the settings.
"""

from __future__ import annotations

import hashlib
import json
import time
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..data.errors import DataError
from ..utils.errors import UsageError

LUMA = (0.299, 0.587, 0.114)
ATTRIBUTE_JUDGE_VERSION = 1
MIN_JUDGE_STEPS = 200  # a judge of a small dataset still sees this many batches
JUDGE_MEMORY = 256 * 2**20  # bytes of training images an attribute judge loads at most (a seeded subset beyond)


# ----------------------------------------------------------------------------- flags
def parse_range(text: str | tuple | None) -> tuple[float, float]:
    """``"-1,1"`` -> (-1.0, 1.0); the classifier's input range, low < high."""
    if text is None:
        return (-1.0, 1.0)
    if isinstance(text, (tuple, list)):
        parts = list(text)
    else:
        parts = [p for p in str(text).replace(" ", "").split(",")]
    try:
        lo, hi = (float(p) for p in parts)
    except ValueError:
        raise UsageError(f"--classifier-range must be two numbers LOW,HIGH such as -1,1 or 0,1; got {text!r}") from None
    if not (np.isfinite(lo) and np.isfinite(hi) and lo < hi):
        raise UsageError(f"--classifier-range needs LOW < HIGH, both finite; got {text!r}")
    return (lo, hi)


def parse_size(value) -> tuple[int, int] | None:
    """``32`` or ``"32"`` -> (32, 32); ``"24x32"`` -> (24, 32) (height x width); None: the run's size."""
    if value is None:
        return None
    text = str(value).lower().replace(" ", "")
    try:
        h, w = (int(p) for p in text.split("x")) if "x" in text else (int(text),) * 2
    except ValueError:
        raise UsageError(f"--classifier-size must be N or HxW in pixels, e.g. 224 or 24x32; got {value!r}") from None
    if h < 1 or w < 1:
        raise UsageError(f"--classifier-size must be positive, got {value!r}")
    return (h, w)


def check_channels(value) -> int | None:
    if value is None:
        return None
    if value not in (1, 3):
        raise UsageError(f"--classifier-channels must be 1 (grey) or 3 (RGB), got {value}")
    return int(value)


# ----------------------------------------------------------------------------- the classifier
def _cause(e: BaseException) -> str:
    """The line of an exception that says what went wrong: TorchScript puts its own traceback first and the
    original error last; torch's archive errors append a long paragraph after their first sentence."""
    lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
    text = lines[-1] if len(lines) > 1 and "TorchScript interpreter" in lines[0] else (lines[0] if lines else "")
    text = text.split(". This is an internal")[0].strip() or type(e).__name__
    return text[:240]


def _not_torchscript(path: Path, e: BaseException) -> str:
    """Why ``path`` is not a TorchScript archive, in words."""
    import zipfile

    if not zipfile.is_zipfile(path):
        why = "it is not a zip archive, as TorchScript files are"
    else:
        with zipfile.ZipFile(path) as z:
            names = z.namelist()
        if any(n.endswith("/data.pkl") for n in names) and not any(n.endswith("/constants.pkl") for n in names):
            why = "it is a torch.save pickle (a state dict or a pickled model)"
        else:
            why = _cause(e)
    return (f"{path} is not a TorchScript file: {why}. Save the classifier with torch.jit.script(model).save(path) "
            f"or torch.jit.trace(model, example).save(path); pickles are not loaded, as unpickling can run code")


@dataclass
class Classifier:
    """The user's TorchScript classifier with its explicit input conversion and the probability it is audited on.

    ``kind`` is ``"softmax"`` ((B, K) logits, p = softmax[:, target]) or ``"sigmoid"`` (one logit, p = sigmoid for
    target 1, 1 - sigmoid for target 0)."""

    module: torch.jit.ScriptModule
    path: Path
    sha256: str
    device: torch.device
    value_range: tuple[float, float]
    size: tuple[int, int]
    channels: int
    run_channels: int
    kind: str = "softmax"
    num_classes: int = 2
    target: int = 1

    def prepare(self, images: torch.Tensor) -> torch.Tensor:
        """Images in [-1, 1] (the run's size and channels) -> the classifier's input (range, size, channels)."""
        x = images.to(self.device, torch.float32)
        if self.channels != x.shape[1]:
            if x.shape[1] == 1:
                x = x.repeat(1, self.channels, 1, 1)
            else:
                w = torch.tensor(LUMA, device=x.device).view(1, 3, 1, 1)
                x = (x * w).sum(1, keepdim=True)
        if tuple(x.shape[-2:]) != self.size:
            shrink = self.size[0] < x.shape[-2] or self.size[1] < x.shape[-1]
            x = F.interpolate(x, size=self.size, mode="bilinear", align_corners=False, antialias=shrink)
        lo, hi = self.value_range
        return lo + (x.clamp(-1, 1) + 1) / 2 * (hi - lo)

    @torch.no_grad()
    def logits(self, images: torch.Tensor) -> torch.Tensor:
        return self.module(self.prepare(images))

    @torch.no_grad()
    def probability(self, images: torch.Tensor, batch: int = 256) -> np.ndarray:
        """p(target | image) for every image (N,), float64."""
        out = []
        for i in range(0, images.shape[0], batch):
            z = self.logits(images[i:i + batch]).float()
            if self.kind == "softmax":
                p = torch.softmax(z, 1)[:, self.target]
            else:
                p = torch.sigmoid(z.reshape(-1))
                p = p if self.target == 1 else 1 - p
            out.append(p.cpu().double())
        return torch.cat(out).numpy() if out else np.zeros(0)

    def describe(self) -> dict:
        return {"file": str(self.path), "sha256": self.sha256, "output": (
                    f"(B, {self.num_classes}) logits, softmax" if self.kind == "softmax" else "one logit, sigmoid"),
                "num_classes": self.num_classes, "target": self.target, "input_range": list(self.value_range),
                "input_size": list(self.size), "input_channels": self.channels,
                "conversion": self.conversion()}

    def conversion(self) -> str:
        steps = []
        if self.channels != self.run_channels:
            steps.append("grey -> RGB (repeated)" if self.run_channels == 1 else "RGB -> grey (luma 0.299, 0.587, "
                                                                                "0.114)")
        steps.append(f"resize to {self.size[0]}x{self.size[1]} (bilinear)")
        steps.append(f"[-1, 1] -> [{self.value_range[0]:g}, {self.value_range[1]:g}]")
        return "; ".join(steps)


def load_classifier(path: str | Path, device: torch.device, run_size: int, run_channels: int, sample: torch.Tensor,
                    value_range=None, size=None, channels=None, target: int | None = None) -> Classifier:
    """Load, convert and check the user's TorchScript classifier on ``sample`` (a few of the run's images).

    Every failure that the file or the flags cause is a :class:`UsageError` of one line."""
    path = Path(path)
    if not path.exists():
        raise UsageError(f"classifier file {path} does not exist")
    if path.is_dir():
        raise UsageError(f"--classifier {path} is a folder; give the TorchScript file (torch.jit.save)")
    value_range = parse_range(value_range)
    size = parse_size(size) or (run_size, run_size)
    channels = check_channels(channels) or run_channels
    if target is not None and target < 0:
        raise UsageError(f"--target must be a class index >= 0, got {target}")
    try:
        with warnings.catch_warnings():  # torch 2.9+ marks TorchScript deprecated; the user's file is still one
            warnings.simplefilter("ignore", DeprecationWarning)
            module = torch.jit.load(str(path), map_location=device)
    except Exception as e:  # noqa: BLE001 - the user's file: every way torch.jit.load refuses it is a bad input
        raise UsageError(_not_torchscript(path, e)) from None
    module.eval()
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    clf = Classifier(module, path, digest, device, value_range, size, channels, run_channels)
    x = sample[:2]
    prepared = clf.prepare(x)
    try:
        with torch.no_grad():
            out = module(prepared)
    except Exception as e:  # noqa: BLE001 - the user's network failing on this input is a bad input, not our bug
        raise UsageError(f"the classifier fails on input of shape {tuple(prepared.shape)} in "
                         f"[{value_range[0]:g}, {value_range[1]:g}] on device {device} ({_cause(e)}); set "
                         f"--classifier-size, --classifier-channels or --classifier-range to what it takes, or "
                         f"--device to where it runs") from None
    if not isinstance(out, torch.Tensor):
        raise UsageError(f"the classifier returns a {type(out).__name__}, not a tensor of logits; wrap it so that "
                         f"it returns (B, K) logits or (B,) / (B, 1) binary logits")
    shape = tuple(out.shape)
    if not out.is_floating_point():
        raise UsageError(f"the classifier returns {out.dtype} values of shape {shape}; it must return float logits")
    b = x.shape[0]
    if out.ndim == 1 or (out.ndim == 2 and shape[1] == 1):
        kind, k = "sigmoid", 2
    elif out.ndim == 2 and shape[1] >= 2:
        kind, k = "softmax", shape[1]
    else:
        raise UsageError(f"the classifier's output has shape {shape} for a batch of {b}; it must be (B, K) logits "
                         f"or (B,) / (B, 1) binary logits")
    if shape[0] != b:
        raise UsageError(f"the classifier returns {shape[0]} rows for a batch of {b} images (output shape {shape}); "
                         f"it must return one row per image")
    if not torch.isfinite(out).all():
        raise UsageError("the classifier returns NaN or infinite logits on the run's images; check its input range "
                         "(--classifier-range)")
    if kind == "softmax" and target is None and k > 2:
        raise UsageError(f"the classifier has {k} classes: name the class to audit with --target (0 ... {k - 1})")
    target = 1 if target is None else target
    if target >= k:
        raise UsageError(f"--target {target} is out of range for a classifier with {k} classes (0 ... {k - 1})")
    if kind == "softmax":
        o = out.float()
        if bool(((o >= 0) & (o <= 1)).all()) and bool(torch.allclose(o.sum(1), torch.ones(b, device=o.device),
                                                                     atol=1e-4)):
            warnings.warn("the classifier's outputs look like probabilities (in [0, 1], rows summing to 1); the "
                          "audit applies softmax and expects logits", stacklevel=2)
    clf.kind, clf.num_classes, clf.target = kind, k, target
    return clf


# ----------------------------------------------------------------------------- the judge
@dataclass
class AttributeJudge:
    """p(A) of an image by a network outside Patronus; ``meta`` says which network and how well it reads A."""

    net: torch.nn.Module
    classes: list[int] | None  # class judge: A's classes; None: a binary attribute judge (output 1 = A)
    meta: dict

    @torch.no_grad()
    def probability(self, images: torch.Tensor, batch: int = 512) -> np.ndarray:
        dev = next(self.net.parameters()).device
        out = []
        for i in range(0, images.shape[0], batch):
            p = torch.softmax(self.net(images[i:i + batch].to(dev).float()), 1)
            p = p[:, self.classes].sum(1) if self.classes is not None else p[:, 1]
            out.append(p.cpu().double())
        return torch.cat(out).numpy() if out else np.zeros(0)


def class_judge(data_cfg, classes: list[int], device, progress: bool = False,
                cache_dir: str | Path | None = None) -> AttributeJudge:
    """The project's class judge (shipped, cached, or trained now) reading p(A) = its softmax mass on A's classes."""
    from ..evaluation.judge import get_judge

    j = get_judge(data_cfg, cache_dir=cache_dir, device=device, progress=progress)
    names = list(j.meta.get("class_names") or [])
    return AttributeJudge(j.net, sorted(int(c) for c in classes), {
        "kind": "class judge", "classes": [names[c] if c < len(names) else c for c in sorted(classes)],
        "file": j.meta.get("cache_file"), "shipped": bool(j.meta.get("shipped")),
        "class_test_accuracy": j.meta.get("test_accuracy")})


def _attribute_key(data_cfg, attribute: str, settings) -> dict:
    d = asdict(data_cfg) | {"num_workers": None, "skip_bad_images": None}
    return {"version": ATTRIBUTE_JUDGE_VERSION, "attribute": attribute, "data": d, "settings": asdict(settings),
            "min_steps": MIN_JUDGE_STEPS, "memory": JUDGE_MEMORY}


def attribute_judge(data_cfg, attribute: str, train_ds, y: np.ndarray, device, settings=None,
                    cache_dir: str | Path | None = None, progress: bool = False) -> AttributeJudge:
    """A binary judge of ``attribute`` (y: its 0/1 value per item of ``train_ds``, the run's real training images),
    loaded from the cache when one with the same key is there, else trained and cached."""
    from ..evaluation.judge import JudgeNet, JudgeSettings, judge_dir
    from ..runs import load_into, load_weights, save_weights
    from ..utils.io import write_json

    settings = settings or JudgeSettings()
    key = _attribute_key(data_cfg, attribute, settings)
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
    safe = "".join(c if c.isalnum() or c in "-_" else "_" for c in attribute)[:40]
    stem = judge_dir(cache_dir) / f"{data_cfg.dataset}-{data_cfg.image_size}px-attr-{safe}-{digest}"
    weights, meta_path = stem.with_suffix(".safetensors"), stem.with_suffix(".json")
    net = JudgeNet(data_cfg.channels, 2)
    if weights.exists() and meta_path.exists():
        meta = json.loads(meta_path.read_text())
        if meta.get("key") == key:
            load_into(net, load_weights(weights), weights)
            return AttributeJudge(net.to(device).eval().requires_grad_(False), None,
                                  {**meta, "file": str(weights), "from_cache": True})
    y = np.asarray(y, bool)
    if y.all() or not y.any():
        raise DataError(f"attribute {attribute!r} is {'present in every' if y.all() else 'absent from every'} "
                        f"training image: no judge of it can be trained")
    # the training images, loaded once: a seeded subset when they would take more than JUDGE_MEMORY bytes
    keep = np.arange(len(y))
    per_image = 4 * data_cfg.channels * data_cfg.image_size ** 2
    if len(keep) * per_image > JUDGE_MEMORY:
        keep = np.sort(np.random.default_rng(settings.seed).choice(keep, JUDGE_MEMORY // per_image, replace=False))
    images = torch.cat([train_ds.get_batch(keep[i:i + 512].tolist()) for i in range(0, len(keep), 512)])
    y = y[keep]
    if y.all() or not y.any():
        raise DataError(f"the {len(keep)} training images drawn for the judge of {attribute!r} all "
                        f"{'have' if y.all() else 'lack'} it; no judge of it can be trained")
    torch.manual_seed(settings.seed)
    net = net.to(device)
    opt = torch.optim.Adam(net.parameters(), lr=settings.lr)
    g = torch.Generator().manual_seed(settings.seed)
    n = len(y)
    batch = min(settings.batch_size, n)
    steps = max(int(settings.epochs * n / batch), MIN_JUDGE_STEPS)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=settings.lr, total_steps=steps)
    labels = torch.as_tensor(y.astype(np.int64))
    weight = torch.tensor([n / (2 * (~y).sum()), n / (2 * y.sum())], dtype=torch.float32, device=device)
    t0, perm = time.time(), torch.zeros(0, dtype=torch.long)
    net.train()
    from tqdm.auto import tqdm

    for _ in tqdm(range(steps), desc=f"train judge of {attribute}", disable=not progress, leave=False):
        if perm.numel() < batch:
            perm = torch.cat([perm, torch.randperm(n, generator=g)])
        idx, perm = perm[:batch], perm[batch:]
        x = images[idx].to(device)
        loss = F.cross_entropy(net(x), labels[idx].to(device), weight=weight)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
    net.eval().requires_grad_(False)
    meta = {"key": key, "kind": "attribute judge", "attribute": attribute, "n_train": n,
            "n_train_split": int(len(train_ds)),
            "n_train_with": int(y.sum()), "steps": steps, "seconds": round(time.time() - t0, 1),
            "architecture": "JudgeNet (evaluation/judge.py) with 2 outputs, class-weighted cross-entropy, trained "
                            "on the run's real training images only"}
    save_weights(weights, net.state_dict())
    write_json(meta_path, meta)
    return AttributeJudge(net, None, {**meta, "file": str(weights), "from_cache": False})
