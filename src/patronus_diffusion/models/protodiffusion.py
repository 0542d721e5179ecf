"""ProtoDiffusion (Baykal et al., ACML 2023): class prototypes as the class embeddings of a CFG diffusion model.

Two networks live here.

* :class:`PrototypeClassifier` (stage A), a convolutional prototype-learning classifier (Yang et al. 2018):
  features f(x) in R^D, one learnable prototype m_k in R^D per class,

      d_k(x) = ||f(x) - m_k||^2,    logits z_k = -s d_k(x),
      L = L_DCE + lambda L_PL,  L_DCE = -log softmax(z)_y,  L_PL = mean_i ||f(x_i) - m_{y_i}||^2.

  Prediction is argmin_k d_k. The prototypes are exported as a plain (C, D) tensor
  (:func:`save_prototypes`), never as a pickled module.

* :class:`ProtoDiffusionModel` (stage B): eps_theta(x_t, t, y) = UNet(x_t, t, e(y)) with
  e(y) = MLP(table[y]) (Linear-SiLU-Linear, D -> D) and e(null) = 0 (``null=zero``, the reference) or a
  separate learned vector (``null=learned``). The null condition never uses a class row: label -1 means
  "unconditional". The table (C, D) is set by ``protodiff.mode``:

  ==================  =================================================  ==========
  mode                initial table                                      trained?
  ==================  =================================================  ==========
  regular             N(0, 1) (like nn.Embedding)                        yes
  proto-frozen        the classifier's prototypes                        no
  proto-trainable     the classifier's prototypes                        yes
  random-frozen       random directions scaled to the prototypes' norms  no
  ==================  =================================================  ==========

  The embedding MLP and the UNet always train.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..config import ClassifierConfig, ConfigError, RunConfig
from ..utils.errors import UsageError
from .unet import UNet

PROTOTYPE_FORMAT = "protodiff-prototypes-v1"
TRAINABLE_TABLE_MODES = ("regular", "proto-trainable")
PROTOTYPE_MODES = ("proto-frozen", "proto-trainable", "random-frozen")


# ---------------------------------------------------------------------------- stage A: the CPL classifier
@dataclass
class ClassifierOutput:
    features: torch.Tensor  # (B, D) f(x)
    distances: torch.Tensor  # (B, C) squared Euclidean distances d_k
    logits: torch.Tensor  # (B, C) -scale * d_k


def squared_distances(features: torch.Tensor, prototypes: torch.Tensor) -> torch.Tensor:
    """d_ik = ||f_i||^2 + ||m_k||^2 - 2 f_i . m_k, clamped at 0. features (B, D), prototypes (C, D)."""
    d = (features**2).sum(1, keepdim=True) + (prototypes**2).sum(1)[None] - 2 * features @ prototypes.T
    return d.clamp_min(0.0)


def dce_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Distance-based cross-entropy: mean_i -log softmax(-s d(x_i))_{y_i} (logits already hold -s d)."""
    return F.cross_entropy(logits, labels)


def prototype_loss(features: torch.Tensor, prototypes: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """L_PL = mean_i ||f(x_i) - m_{y_i}||^2 (squared norm summed over D, averaged over the batch)."""
    return ((features - prototypes[labels]) ** 2).sum(1).mean()


def cpl_loss(out: ClassifierOutput, prototypes: torch.Tensor, labels: torch.Tensor,
             lambda_pl: float) -> tuple[torch.Tensor, dict[str, float]]:
    """L = L_DCE + lambda * L_PL, with both parts for logging."""
    dce = dce_loss(out.logits, labels)
    pl = prototype_loss(out.features, prototypes, labels)
    return dce + lambda_pl * pl, {"dce": float(dce.detach()), "pl": float(pl.detach())}


class PrototypeClassifier(nn.Module):
    """Conv stages -> global average pool -> Linear(D) [-> ReLU]; one prototype per class."""

    def __init__(self, in_channels: int, num_classes: int, cfg: ClassifierConfig):
        super().__init__()
        if num_classes < 2:
            raise ConfigError(f"a classifier needs at least 2 classes, got {num_classes}")
        layers: list[nn.Module] = []
        c_in = in_channels
        for c in cfg.channels:
            layers += [nn.Conv2d(c_in, c, 3, padding=1, bias=False), nn.BatchNorm2d(c), nn.ReLU(inplace=True),
                       nn.MaxPool2d(2)]
            c_in = c
        self.features = nn.Sequential(*layers)
        self.project = nn.Linear(c_in, cfg.dim)
        self.feature_relu = cfg.feature_relu
        self.scale = cfg.scale
        # Kaiming-normal over the (D, C) matrix as in the reference: fan-in = C, std = sqrt(2 / C).
        self.prototypes = nn.Parameter(torch.randn(num_classes, cfg.dim) * math.sqrt(2.0 / num_classes))

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        f = self.project(self.features(x).mean(dim=(2, 3)))
        return F.relu(f) if self.feature_relu else f

    def forward(self, x: torch.Tensor) -> ClassifierOutput:
        f = self.embed(x)
        d = squared_distances(f, self.prototypes)
        return ClassifierOutput(f, d, -self.scale * d)

    @torch.no_grad()
    def predict(self, x: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
        """argmin_k d_k for every image (eval mode, batched)."""
        was = self.training
        self.eval()
        dev = self.prototypes.device
        out = torch.cat([self(x[i:i + batch_size].to(dev)).distances.argmin(1).cpu()
                         for i in range(0, x.shape[0], batch_size)])
        self.train(was)
        return out


# ---------------------------------------------------------------------------- prototype files
def save_prototypes(path: str | Path, prototypes: torch.Tensor, meta: dict) -> tuple[Path, Path]:
    """Write ``path`` (safetensors, one tensor "prototypes" of shape (C, D)) and ``path`` .json beside it."""
    from safetensors.torch import save_file

    from ..utils.io import atomic_path, write_json

    path = Path(path)
    protos = prototypes.detach().float().cpu().contiguous()
    meta = {"format": PROTOTYPE_FORMAT, "num_classes": protos.shape[0], "dim": protos.shape[1], **meta}
    if len(meta.get("class_names") or []) not in (0, protos.shape[0]):
        raise UsageError(f"{len(meta['class_names'])} class names for {protos.shape[0]} prototypes")
    with atomic_path(path) as tmp:
        save_file({"prototypes": protos}, str(tmp), metadata={"format": PROTOTYPE_FORMAT})
    json_path = path.with_suffix(".json")
    write_json(json_path, meta)
    return path, json_path


def load_prototypes(path: str | Path) -> tuple[torch.Tensor, dict]:
    """Read a prototype file written by :func:`save_prototypes`; returns ((C, D) tensor, metadata)."""
    import json

    from ..runs import CheckpointError, load_weights

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"prototype file {path} does not exist; make one with "
                                f"`patronus protodiff train-classifier --out DIR` (it writes DIR/prototypes.safetensors)")
    tensors = load_weights(path)
    if "prototypes" not in tensors or tensors["prototypes"].ndim != 2:
        raise CheckpointError(f"{path} holds no (C, D) tensor named 'prototypes'; was it written by "
                              f"`patronus protodiff train-classifier`?")
    meta_path = path.with_suffix(".json")
    meta = json.loads(meta_path.read_text()) if meta_path.exists() else {}
    return tensors["prototypes"].float(), meta


# ---------------------------------------------------------------------------- stage B: the diffusion model
class ClassEmbedding(nn.Module):
    """e(y) = Linear(SiLU(Linear(table[y]))) for y >= 0; e(-1) = the null condition (zero or learned)."""

    def __init__(self, num_classes: int, dim: int, mode: str, null: str, padding_idx0: bool = False):
        super().__init__()
        self.mode, self.padding_idx0 = mode, padding_idx0
        self.table = nn.Parameter(torch.randn(num_classes, dim), requires_grad=mode in TRAINABLE_TABLE_MODES)
        if padding_idx0 and mode == "regular":
            with torch.no_grad():
                self.table[0].zero_()
        self.mlp = nn.Sequential(nn.Linear(dim, dim), nn.SiLU(), nn.Linear(dim, dim))
        self.null = nn.Parameter(torch.zeros(dim)) if null == "learned" else None

    @property
    def num_classes(self) -> int:
        return self.table.shape[0]

    def install(self, table: torch.Tensor) -> None:
        """Copy a (C, D) table in (prototypes or a control); the freezing is kept as the mode says."""
        if tuple(table.shape) != tuple(self.table.shape):
            raise ConfigError(f"the prototype table has shape {tuple(table.shape)} but the model expects "
                              f"(protodiff.num_classes, protodiff.embed_dim) = {tuple(self.table.shape)}; "
                              f"set those two to match the prototype file")
        with torch.no_grad():
            self.table.copy_(table)

    def forward(self, labels: torch.Tensor) -> torch.Tensor:
        labels = labels.long()
        if labels.numel() and int(labels.max()) >= self.num_classes:
            raise UsageError(f"class label {int(labels.max())} is out of range: this model has "
                             f"{self.num_classes} classes (0 ... {self.num_classes - 1}; -1 = unconditional)")
        table = self.table
        if self.padding_idx0:  # reference behaviour: row 0 receives no gradient
            keep = torch.zeros_like(table[:, :1], dtype=torch.bool)
            keep[0] = True
            table = torch.where(keep, table.detach(), table)
        e = self.mlp(table[labels.clamp_min(0)])
        null = self.null if self.null is not None else torch.zeros_like(e[0])
        return torch.where((labels < 0)[:, None], null.to(e.dtype).expand_as(e), e)


def random_table_like(prototypes: torch.Tensor, seed: int) -> torch.Tensor:
    """Random unit directions (seeded) scaled to the prototypes' row norms: same norms, no semantics."""
    g = torch.Generator().manual_seed(seed)
    r = torch.randn(prototypes.shape, generator=g)
    return r / r.norm(dim=1, keepdim=True) * prototypes.norm(dim=1, keepdim=True)


class ProtoDiffusionModel(nn.Module):
    """eps_theta(x_t, t, y) for class labels y (-1 = null). Built from a RunConfig (family protodiffusion).

    In the proto-* and random-frozen modes the table is read from ``protodiff.prototypes`` (required when
    ``load_table``); :func:`build_for_inference` skips that, because trained weights carry the table.
    """

    def __init__(self, cfg: RunConfig, load_table: bool = True):
        super().__init__()
        pc, d = cfg.protodiff, cfg.data
        self.classes = ClassEmbedding(pc.num_classes, pc.embed_dim, pc.mode, pc.null, pc.padding_idx0)
        self.unet = UNet(d.channels, cfg.unet, cond_dim=pc.embed_dim)
        if pc.mode in PROTOTYPE_MODES and load_table:
            if not pc.prototypes:
                raise ConfigError(f"protodiff.mode={pc.mode} needs a prototype file: pass --prototypes "
                                  f"DIR/prototypes.safetensors (from `patronus protodiff train-classifier`)")
            protos, _ = load_prototypes(pc.prototypes)
            table = random_table_like(protos, cfg.train.seed) if pc.mode == "random-frozen" else protos
            self.classes.install(table)

    @property
    def num_classes(self) -> int:
        return self.classes.num_classes

    def forward(self, x_t: torch.Tensor, t: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        if labels.shape != (x_t.shape[0],):
            raise UsageError(f"labels must have shape ({x_t.shape[0]},), got {tuple(labels.shape)}")
        return self.unet(x_t, t, self.classes(labels.to(x_t.device)))


def build_for_inference(cfg: RunConfig) -> ProtoDiffusionModel:
    """The model's shape only: the table comes from the trained weights, not the prototype file."""
    return ProtoDiffusionModel(cfg, load_table=False)
