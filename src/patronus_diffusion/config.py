"""One configuration object for training and inference.

A run is described by :class:`RunConfig`, a tree of small dataclasses. It is written as
``config.json`` into every run directory and into every checkpoint, and the model is always
rebuilt from it (:func:`patronus_diffusion.models.build_model`), so training, sampling and the
analyses can never drift apart.

Named starting points live in :mod:`patronus_diffusion.presets`; any field can be overridden with a dotted
``key=value`` string (:func:`apply_overrides`), e.g. ``train.lr=2e-4`` or ``unet.channel_mult=1,2,2``.
"""

from __future__ import annotations

import copy
import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any

from .utils.errors import UserError, UsageError


class ConfigError(UserError, ValueError):
    """A configuration value is missing, unknown or inconsistent."""


class FrozenConfigError(UsageError, AttributeError):
    """An assignment to the frozen config of a loaded model (change settings through a copy instead)."""


class _Freezable:
    """Config sections whose fields cannot be assigned once :meth:`RunConfig.freeze` has run.

    A loaded model's settings are part of the model object (diffusers freezes its component configs the same way):
    :meth:`RunConfig.copy` gives an editable copy, ``Patronus.with_options(...)`` a model copy with other sample
    settings."""

    def __setattr__(self, name: str, value) -> None:
        if self.__dict__.get("_frozen", False):
            section = self.__dict__.get("_section", "")
            hint = (f"pat.with_options({name}=...) gives a model copy with other sample settings" if section == "sample"
                    else "config.copy() gives an editable copy")
            raise FrozenConfigError(f"this config is frozen (the settings of a loaded model); cannot set "
                                    f"{section + '.' if section else ''}{name}: {hint}")
        object.__setattr__(self, name, value)

    def __delattr__(self, name: str) -> None:
        if self.__dict__.get("_frozen", False):
            raise FrozenConfigError(f"this config is frozen (the settings of a loaded model); cannot delete {name}")
        object.__delattr__(self, name)

    def _set_frozen(self, frozen: bool, section: str) -> None:
        object.__setattr__(self, "_frozen", frozen)
        object.__setattr__(self, "_section", section)
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if isinstance(value, _Freezable):
                value._set_frozen(frozen, f"{section}.{f.name}" if section else f.name)

    @property
    def frozen(self) -> bool:
        """True when assignments raise :class:`FrozenConfigError` (the config of a loaded model)."""
        return self.__dict__.get("_frozen", False)


@dataclass
class DataConfig(_Freezable):
    dataset: str = "fashion-mnist"
    """fashion-mnist | mnist | folder | cifar10 | stl10 | celeba | tiny-imagenet | chexpert | ffhq (the names in
    ``patronus_diffusion.data.registry.LOADERS``)."""
    root: str | None = None
    """Directory of the data. ``None`` uses the dataset's default location (Fashion-MNIST: Debian's package)."""
    image_size: int = 32
    channels: int = 1
    resize: str = "center-crop"
    """How a non-square image becomes square: ``center-crop`` (resize the short side, crop), ``squash`` or ``pad``."""
    attributes_csv: str | None = None
    """Optional CSV joined to a folder dataset by file name; its columns are kept with each item."""
    skip_bad_images: bool = False
    limit: int | None = None
    """Use only the first ``limit`` items (tiny runs, tests)."""
    num_workers: int = 0


@dataclass
class PrototypeConfig(_Freezable):
    """The ProtoPNet-style encoder f (a Conv-ReLU stack) and the P prototypes of dimension D."""

    channels: tuple[int, ...] = (32, 64, 64, 128)
    kernels: tuple[int, ...] = (3, 3, 3, 3)
    strides: tuple[int, ...] = (2, 1, 1, 1)
    paddings: tuple[int, ...] = (1, 0, 0, 0)
    num_prototypes: int = 30
    epsilon: float = 1e-4
    """The 1e-4 of s = log((d + 1) / (d + epsilon)); s then lies in (0, log(1/epsilon)]."""
    init_std: float = 0.1
    init: str = "uniform"
    """Prototype initialisation: ``uniform`` (U[0, 1), the reference) or ``patches`` (farthest-point picks among the
    encoder features of real training patches, so that every prototype starts inside the feature cloud)."""
    metric: str = "l2"
    """How a patch z is compared with a prototype p: ``l2`` (the reference: d = ||z - p||^2 on raw features) or
    ``cosine`` (d = ||z/|z| - p/|p|||^2 = 2 - 2 cos(z, p) in [0, 4], so s = log((d + 1)/(d + eps)) spans
    [0.22, 9.21] whatever the scale the encoder's features drift to; see docs/steering.md)."""

    @property
    def dim(self) -> int:
        return self.channels[-1]


@dataclass
class UNetConfig(_Freezable):
    base_channels: int = 64
    channel_mult: tuple[int, ...] = (1, 2, 4, 4)
    num_res_blocks: int = 2
    attention_levels: tuple[bool, ...] = (False, False, False, False)
    """Self-attention after every residual block of these resolution levels (ProtoDiffusion uses all)."""
    mid_attention: bool = True
    attention_heads: int = 4
    dropout: float = 0.1
    dropout2d: bool = True
    """Drop whole channels (the Patronus reference) instead of single activations."""
    groups: int = 8
    time_emb_mult: int = 4
    cond_norm: str = "none"
    """none | layer. ``layer`` LayerNorm-s the condition vector (no affine) before its MLP. Patronus' s has a
    tiny spread (std ~0.02 around ~0.04 on CPU-trained models), so a plain Linear needs many thousand Adam
    steps to grow weights large enough to use it; normalising per image gives the MLP O(1) inputs at once.
    The reference has no such layer ("none")."""
    cond_mode: str = "add"
    """add | film. How the condition embedding enters each residual block: ``add`` (the reference) adds a
    projection of it to the feature map next to the time embedding; ``film`` scales and shifts the normalised
    features, h = GN(h) (1 + gamma(c)) + beta(c) (AdaGN), so s can switch features on and off, not only bias them."""


@dataclass
class DiffusionConfig(_Freezable):
    timesteps: int = 1000
    beta_start: float = 1e-4
    beta_end: float = 0.02
    schedule: str = "linear"


@dataclass
class TrainConfig(_Freezable):
    batch_size: int = 128
    lr: float = 1e-5
    weight_decay: float = 0.01
    prototype_weight_decay: bool = True
    """AdamW's decay also acts on the prototype vectors (as in the reference); set False to exempt them."""
    warmup_steps: int = 0
    lr_schedule: str = "warmup"
    """warmup (linear from 0 over warmup_steps, then constant) | protodiff (ProtoDiffusion's: per epoch, linear
    warm-up from lr to 2.5 lr over epochs/20, then a cosine to 0) | protodiff-reference (the reference code's
    discontinuous trace of it: the cosine restarts from lr). See training/lr.py."""
    grad_clip: float | None = None
    ema_decay: float = 0.9999
    ema_warmup: bool = True
    """Use decay min(ema_decay, (1 + n) / (10 + n)) so early EMA weights are not dominated by the random init."""
    distinct_weight: float = 0.0
    distinct_margin: float = 0.2
    distinct_metric: str = "cosine"
    decorrelate_weight: float = 0.0
    """Weight of the redundancy penalty on s: the mean squared correlation between prototypes over the batch
    (models/prototypes.py: similarity_correlation_loss), so that prototypes vary independently across images and
    one of them raised alone is not far from anything the decoder saw. 0 turns it off (the reference)."""
    cluster_weight: float = 0.0
    """Weight of the unsupervised cluster cost that keeps prototypes near real patches (ProtoPNet's cluster cost
    without labels): mean over images of the distance to the nearest prototype plus mean over prototypes of the
    distance to the nearest patch in the batch, both in units of the batch's median patch distance."""
    honour_weight: float = 0.0
    """Weight of the loss that makes the decoder honour s: on a quarter of each batch, one prototype of s is
    edited, the clean image is predicted at a moderate t under the edited s and re-encoded by the (frozen)
    prototype encoder, which must read back the edited s. 0 turns it off (the reference)."""
    honour_t: tuple[int, ...] = (100, 600)
    """The [low, high) timestep range of the honour loss."""
    honour_fraction: float = 0.25
    """Fraction of each batch that gets an edited s for the honour loss."""
    honour_mode: str = "match"
    """``match``: the re-encoded s of the image predicted under the edited s' must equal s' (all coordinates);
    ``contrast``: the same x_t is also decoded under the unedited s, and only the *difference* of the edited
    coordinate between the two predictions must equal the requested change (ignoring s cannot satisfy it)."""
    cond_dropout: float = 0.0
    """Probability that a training image is conditioned on a learned null vector instead of its s (classifier-free
    guidance on s at decode time needs it; ``sample.guidance`` then sets the weight)."""
    precision: str = "fp32"
    """fp32 | bf16 | fp16 (autocast of the UNet; the prototype encoder always runs in fp32)."""
    max_steps: int | None = None
    max_epochs: float | None = None
    max_minutes: float | None = None
    seed: int = 0
    log_every: int = 50
    sample_every: int = 1000
    checkpoint_every: int = 500
    keep_checkpoints: int = 2
    channels_last: bool = False
    compile: bool = False


@dataclass
class SampleConfig(_Freezable):
    """Defaults for sampling and inversion; chosen by measurement (see README)."""

    sampler: str = "dpmpp-2m"
    """Sampler from fresh noise."""
    steps: int = 20
    """Its number of network evaluations."""
    ddim_steps: int = 50
    """DDIM steps of an inversion *and* of decoding an inverted x_T (edits, reconstructions): the two must match
    for the round trip to be exact. Called ``invert_steps`` before; old config files load unchanged."""
    decode_sampler: str = "ddim"
    """The sampler that decodes an inverted x_T (with ``inversion=ddim``; ``edict`` inverts and decodes with EDICT)."""
    inversion: str = "ddim"
    """``ddim``: plain DDIM inversion (approximate: the round trip loses detail at few steps) or ``edict``: exact
    coupled inversion (Wallace et al. 2023; twice the network evaluations, exact at any step count)."""
    edict_mix: float = 0.8
    """EDICT's mixing weight p in (0, 1). Any p keeps the round trip exact, but it decides how edits behave
    (benchmarks/exact_inversion.py, docs/explore.md): the EDICT paper's 0.93 amplifies edits 3-18x and wrecks the
    image at 10-20 steps; 0.8 at 20 steps gives edits closest to DDIM-100's; at 10 steps 0.5-0.6 (0.8 amplifies 2x).
    Below ~0.6 at 20+ steps the inversion's (1/p)^(2 steps) growth overflows float32 precision."""
    clip_x0: bool = True
    """Clip the predicted clean image to [-1, 1] at every step when sampling from fresh noise (standard DDPM
    practice; the reference never clips). Decoding an inverted x_T never clips, so reconstructions stay exact."""
    guidance: float = 0.0
    """Classifier-free guidance weight w on s: eps = eps(s) + w (eps(s) - eps(null)). Needs a model trained with
    ``train.cond_dropout`` > 0; 0 is plain conditional decoding (and keeps inversion exact)."""
    edit_guidance: float = 0.0
    """Guidance weight w on the edit difference for every edit command: an edit s' of an image's own s decodes
    with eps(s') + w (eps(s') - eps(s)). It amplifies what the edit changes, needs no null condition, leaves the
    reconstruction (s' = s) untouched, and costs two network evaluations per edited image and step. 0 = off;
    ``--edit-guidance`` overrides it per command (measured in docs/steering.md)."""


@dataclass
class ClassifierConfig(_Freezable):
    """ProtoDiffusion's stage A: a convolutional prototype-learning (CPL) classifier trained from scratch.

    Each stage is Conv3x3 -> BatchNorm -> ReLU -> MaxPool2; then global average pooling -> Linear(dim)
    [-> ReLU]. Defaults follow the reference's CPL template (SGD 0.01, momentum 0.9, wd 1e-4, LR / 10 at
    2/3 and 5/6 of training, lambda 0.001, scale 2); epochs are fewer because it trains on a CPU.
    """

    channels: tuple[int, ...] = (32, 64, 128)
    dim: int = 128
    """Prototype (= class-embedding) dimension D."""
    feature_relu: bool = True
    """ReLU after the projection, as in the reference (features are then non-negative)."""
    scale: float = 2.0
    """s in logits_k = -s * ||f(x) - m_k||^2."""
    lambda_pl: float = 0.001
    """Weight of the prototype loss mean_i ||f(x_i) - m_{y_i}||^2 added to the distance cross-entropy."""
    epochs: float = 30.0
    batch_size: int = 50
    lr: float = 0.01
    momentum: float = 0.9
    weight_decay: float = 1e-4
    lr_milestones: tuple[float, ...] = (0.6667, 0.8333)
    """Fractions of the training at which the LR is divided by 10 (the template's epochs 20 and 25 of 30)."""
    val_fraction: float = 0.1
    """Held out from the training split to select the best epoch (the test split is only reported)."""
    seed: int = 0


@dataclass
class ProtoDiffConfig(_Freezable):
    """The ProtoDiffusion family: class-embedding table -> MLP -> UNet condition, classifier-free guidance."""

    mode: str = "regular"
    """regular (random, trained) | proto-frozen | proto-trainable | random-frozen (random directions with the
    prototypes' row norms, frozen: the control that separates semantic geometry from mere freezing)."""
    num_classes: int = 10
    embed_dim: int = 128
    prototypes: str | None = None
    """Prototype file written by `patronus protodiff train-classifier` (needed by the proto-* and random-frozen
    modes when a run starts; a trained run carries its table in its weights)."""
    p_uncond: float = 0.1
    """Probability that a training example gets the null condition instead of its class."""
    null: str = "zero"
    """zero (the reference: an all-zero vector after the embedding MLP) | learned (a separate trained vector)."""
    guidance: float = 1.8
    """Default guidance weight w in eps = (1 + w) eps(x, y) - w eps(x, null); w = 0 is purely conditional."""
    low_t_fraction: float = 0.0
    """Fraction of each batch whose timestep is folded into [0, low_t_max) (the reference uses 0.1)."""
    low_t_max: int = 50
    padding_idx0: bool = False
    """Bug-compatible with the reference: class 0's row starts at zero (regular) and never receives gradient."""
    classifier: ClassifierConfig = field(default_factory=ClassifierConfig)


PROTODIFF_MODES = ("regular", "proto-frozen", "proto-trainable", "random-frozen")


@dataclass
class RunConfig(_Freezable):
    preset: str = "custom"
    family: str = "patronus"
    data: DataConfig = field(default_factory=DataConfig)
    prototypes: PrototypeConfig = field(default_factory=PrototypeConfig)
    unet: UNetConfig = field(default_factory=UNetConfig)
    diffusion: DiffusionConfig = field(default_factory=DiffusionConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    sample: SampleConfig = field(default_factory=SampleConfig)
    protodiff: ProtoDiffConfig = field(default_factory=ProtoDiffConfig)

    # ---------------------------------------------------------------- serialisation
    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "RunConfig":
        return _from_dict(cls, d, "")

    def copy(self) -> "RunConfig":
        """A deep, editable copy (also of a frozen config)."""
        out = copy.deepcopy(self)
        out._set_frozen(False, "")
        return out

    def freeze(self) -> "RunConfig":
        """Make this config read-only in place (every section; returns it): an assignment then raises
        :class:`FrozenConfigError`. Loaded models freeze theirs; :meth:`copy` gives an editable copy."""
        self._set_frozen(True, "")
        return self

    def validate(self) -> "RunConfig":
        p, u = self.prototypes, self.unet
        n = len(p.channels)
        if not (len(p.kernels) == len(p.strides) == len(p.paddings) == n):
            raise ConfigError(
                f"prototypes.channels/kernels/strides/paddings must have the same length; got "
                f"{len(p.channels)}/{len(p.kernels)}/{len(p.strides)}/{len(p.paddings)}"
            )
        if len(u.attention_levels) != len(u.channel_mult):
            raise ConfigError(
                f"unet.attention_levels has {len(u.attention_levels)} entries but unet.channel_mult has "
                f"{len(u.channel_mult)}; give one True/False per level"
            )
        factor = 2 ** (len(u.channel_mult) - 1)
        if self.data.image_size % factor:
            raise ConfigError(
                f"data.image_size={self.data.image_size} must be divisible by {factor} "
                f"(the UNet halves the resolution {len(u.channel_mult) - 1} times)"
            )
        for c in (u.base_channels * m for m in u.channel_mult):
            if c % u.groups:
                raise ConfigError(f"unet channel count {c} is not divisible by unet.groups={u.groups}")
        if self.train.precision not in ("fp32", "bf16", "fp16"):
            raise ConfigError(f"train.precision must be fp32, bf16 or fp16, not {self.train.precision!r}")
        if p.init not in ("uniform", "patches"):
            raise ConfigError(f"prototypes.init must be uniform or patches, not {p.init!r}")
        if p.metric not in ("l2", "cosine"):
            raise ConfigError(f"prototypes.metric must be l2 or cosine, not {p.metric!r}")
        if u.cond_norm not in ("none", "layer"):
            raise ConfigError(f"unet.cond_norm must be none or layer, not {u.cond_norm!r}")
        if u.cond_mode not in ("add", "film"):
            raise ConfigError(f"unet.cond_mode must be add or film, not {u.cond_mode!r}")
        tc = self.train
        if tc.lr_schedule not in ("warmup", "protodiff", "protodiff-reference"):
            raise ConfigError(f"train.lr_schedule must be warmup, protodiff or protodiff-reference, not "
                              f"{tc.lr_schedule!r}")
        if tc.honour_mode not in ("match", "contrast"):
            raise ConfigError(f"train.honour_mode must be match or contrast, not {tc.honour_mode!r}")
        if tc.honour_weight > 0 and (len(tc.honour_t) != 2 or
                                     not 0 <= tc.honour_t[0] < tc.honour_t[1] <= self.diffusion.timesteps):
            raise ConfigError(f"train.honour_t must be two timesteps low,high with 0 <= low < high <= "
                              f"{self.diffusion.timesteps}, got {tc.honour_t}")
        if not 0.0 < tc.honour_fraction <= 1.0:
            raise ConfigError(f"train.honour_fraction must lie in (0, 1], got {tc.honour_fraction}")
        for name in ("distinct_weight", "cluster_weight", "honour_weight", "decorrelate_weight"):
            if getattr(tc, name) < 0:
                raise ConfigError(f"train.{name} must be >= 0 (0 turns it off), got {getattr(tc, name)}")
        if not 0.0 <= tc.cond_dropout < 1.0:
            raise ConfigError(f"train.cond_dropout must lie in [0, 1), got {tc.cond_dropout}")
        if self.sample.inversion not in ("ddim", "edict"):
            raise ConfigError(f"sample.inversion must be ddim or edict, not {self.sample.inversion!r}")
        if not 0 < self.sample.edict_mix < 1:
            raise ConfigError(f"sample.edict_mix must lie in (0, 1), not {self.sample.edict_mix}")
        if self.sample.edit_guidance < 0:
            raise ConfigError(f"sample.edit_guidance must be >= 0 (0 = off), not {self.sample.edit_guidance}")
        if self.sample.edit_guidance and self.sample.guidance:
            raise ConfigError("sample.edit_guidance and sample.guidance cannot both be > 0 (the edit difference and "
                              "the null condition are two different guidances); set one to 0")
        if self.sample.guidance and self.family == "patronus" and tc.cond_dropout == 0:
            raise ConfigError("sample.guidance needs a model trained with train.cond_dropout > 0 (a learned null s)")
        if self.data.resize not in ("center-crop", "squash", "pad"):
            raise ConfigError(f"data.resize must be center-crop, squash or pad, not {self.data.resize!r}")
        if self.family == "protodiffusion":
            _validate_protodiff(self.protodiff)
        return self


def _validate_protodiff(pc: ProtoDiffConfig) -> None:
    if pc.mode not in PROTODIFF_MODES:
        raise ConfigError(f"protodiff.mode must be one of {', '.join(PROTODIFF_MODES)}, not {pc.mode!r}")
    if pc.null not in ("zero", "learned"):
        raise ConfigError(f"protodiff.null must be zero or learned, not {pc.null!r}")
    if not 0.0 <= pc.p_uncond <= 1.0:
        raise ConfigError(f"protodiff.p_uncond must lie in [0, 1], got {pc.p_uncond}")
    if not 0.0 <= pc.low_t_fraction <= 1.0 or pc.low_t_max < 1:
        raise ConfigError("protodiff.low_t_fraction must lie in [0, 1] and protodiff.low_t_max be >= 1")
    if pc.num_classes < 1 or pc.embed_dim < 1:
        raise ConfigError("protodiff.num_classes and protodiff.embed_dim must be positive")
    if pc.classifier.dim != pc.embed_dim:
        raise ConfigError(f"protodiff.classifier.dim={pc.classifier.dim} must equal protodiff.embed_dim="
                          f"{pc.embed_dim} (the prototypes become the class-embedding table)")


# Fields renamed since configs were first written: (section prefix, old name) -> new name.
RENAMED = {("sample.", "invert_steps"): "ddim_steps"}


def _from_dict(cls, d: dict[str, Any], prefix: str):
    if not isinstance(d, dict):
        raise ConfigError(f"config section {prefix or 'root'} must be an object, got {type(d).__name__}")
    d = {RENAMED.get((prefix, k), k): v for k, v in d.items()}
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = set(d) - set(fields)
    if unknown:
        raise ConfigError(f"unknown config key(s) {sorted(prefix + k for k in unknown)}")
    kwargs = {}
    for name, value in d.items():
        f = fields[name]
        default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
        if dataclasses.is_dataclass(default):
            kwargs[name] = _from_dict(type(default), value, f"{prefix}{name}.")
        elif isinstance(default, tuple) and isinstance(value, list):
            kwargs[name] = tuple(value)
        else:
            kwargs[name] = value
    return cls(**kwargs)


def _parse_value(raw: str, current: Any, key: str, nullable: bool = True) -> Any:
    """Parse an override string to the type of the field's current value. "none"/"null" give None only
    for ``nullable`` (optional) fields; a plain string field keeps the word (e.g. unet.cond_norm=none)."""
    if isinstance(current, bool):
        if raw.lower() in ("1", "true", "yes", "on"):
            return True
        if raw.lower() in ("0", "false", "no", "off"):
            return False
        raise ConfigError(f"{key} expects true/false, got {raw!r}")
    if isinstance(current, tuple):
        items = [x for x in raw.replace("(", "").replace(")", "").split(",") if x.strip()]
        proto = current[0] if current else 0
        return tuple(_parse_value(x.strip(), proto, key, nullable) for x in items)
    if raw.lower() in ("none", "null") and nullable:
        return None
    try:
        if isinstance(current, int):
            return int(raw)
        if isinstance(current, float):
            return float(raw)
    except ValueError:
        raise ConfigError(f"{key} expects a {type(current).__name__}, got {raw!r}") from None
    if current is None:  # optional field: guess int, then float, then string
        for conv in (int, float):
            try:
                return conv(raw)
            except ValueError:
                pass
    return raw


def apply_overrides(cfg: RunConfig, overrides: list[str] | None) -> RunConfig:
    """Return a copy of ``cfg`` with ``section.key=value`` overrides applied."""
    cfg = cfg.copy()
    for item in overrides or []:
        if "=" not in item:
            raise ConfigError(f"override {item!r} must look like section.key=value, e.g. train.lr=2e-4")
        key, raw = item.split("=", 1)
        parts = key.strip().split(".")
        obj = cfg
        for p in parts[:-1]:
            if not hasattr(obj, p) or not dataclasses.is_dataclass(getattr(obj, p)):
                raise ConfigError(f"unknown config section {p!r} in {key!r}")
            obj = getattr(obj, p)
        set_field(obj, parts[-1], raw, key, "see `patronus presets --show NAME` for all keys")
    return cfg.validate()


def set_field(obj, name: str, raw: str, key: str, hint: str) -> None:
    """Set dataclass field ``name`` of ``obj`` from the override string ``raw``, typed like its current value
    (the one parser of ``--set`` values for every config: runs, priors)."""
    fields = {f.name: f for f in dataclasses.fields(obj)} if dataclasses.is_dataclass(obj) else {}
    if name not in fields:
        raise ConfigError(f"unknown config key {key!r}; {hint}")
    nullable = any(word in str(fields[name].type) for word in ("None", "Any"))
    setattr(obj, name, _parse_value(raw.strip(), getattr(obj, name), key, nullable))
