"""An independent judge: a plain CNN classifier trained on real images only, to ask "does the class show?".

Generated images are scored by a network that took no part in making them: it never saw a generated image,
shares no weights or architecture with the Patronus prototype encoder or ProtoDiffusion's CPL classifier,
and has its own seed. Two measures use it:

* class agreement (Patronus): generate K images from the s of each of N test images with fresh noise; the
  fraction whose judged class equals the source image's label. s "decides the content" when it is high.
* class accuracy (ProtoDiffusion): the fraction of class-guided samples judged as the class they were asked for.

Architecture: Conv3x3(16) BN ReLU, MaxPool, [Conv3x3(32) BN ReLU] x2, MaxPool, Conv3x3(64) BN ReLU, global
average pool, Linear(64, 128) ReLU Dropout(0.3) Linear(128, C); softmax cross-entropy, Adam with a one-cycle
LR peaking at 1e-3, 2 epochs by default (about a minute on one CPU core for Fashion-MNIST).
Trained once per (dataset, resolution, seed) and cached as safetensors + JSON in ``$PATRONUS_CACHE/judge``.
The Fashion-MNIST judge at 32 px with the default settings ships with the package (``pretrained/judges/``), so
every machine scores with the same network: trained again elsewhere (another thread count), a judge comes out
slightly different and class agreements move by about 0.01.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F
from tqdm.auto import tqdm

from ..config import DataConfig
from ..runs import PRETRAINED_DIR, load_into, load_weights, save_weights
from ..utils.io import write_json

JUDGE_VERSION = 1
SHIPPED_JUDGES = PRETRAINED_DIR / "judges"  # judges shipped with the package, named as in a cache folder


class JudgeNet(nn.Module):
    def __init__(self, channels: int, num_classes: int):
        super().__init__()

        def block(a: int, b: int) -> list[nn.Module]:
            return [nn.Conv2d(a, b, 3, padding=1), nn.BatchNorm2d(b), nn.ReLU()]

        self.features = nn.Sequential(*block(channels, 16), nn.MaxPool2d(2), *block(16, 32), *block(32, 32),
                                      nn.MaxPool2d(2), *block(32, 64))
        self.head = nn.Sequential(nn.Linear(64, 128), nn.ReLU(), nn.Dropout(0.3), nn.Linear(128, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x).mean((2, 3)))


@dataclass
class JudgeSettings:
    epochs: float = 2.0
    batch_size: int = 128
    lr: float = 1e-3
    seed: int = 12345
    """Deliberately not the training seed of any model it judges."""


class Judge:
    """A trained judge with its metadata (test accuracy on real images, how it was trained)."""

    def __init__(self, net: JudgeNet, meta: dict):
        self.net = net.eval().requires_grad_(False)
        self.meta = meta

    @torch.no_grad()
    def predict(self, images: torch.Tensor, batch_size: int = 512) -> torch.Tensor:
        """Class index per image (images in [-1, 1], the judge's resolution and channels)."""
        dev = next(self.net.parameters()).device
        out = [self.net(images[i:i + batch_size].to(dev).float()).argmax(1).cpu()
               for i in range(0, images.shape[0], batch_size)]
        return torch.cat(out) if out else torch.zeros(0, dtype=torch.long)

    def accuracy(self, images: torch.Tensor, labels: torch.Tensor) -> float:
        return float((self.predict(images) == torch.as_tensor(labels)).float().mean())


def judge_dir(cache_dir: str | Path | None = None) -> Path:
    if cache_dir:
        return Path(cache_dir)
    root = os.environ.get("PATRONUS_CACHE")
    return (Path(root) if root else Path.home() / ".cache" / "patronus-diffusion") / "judge"


def _key(data_cfg: DataConfig, settings: JudgeSettings) -> dict:
    d = asdict(data_cfg) | {"num_workers": None, "skip_bad_images": None}
    return {"version": JUDGE_VERSION, "data": d, "settings": asdict(settings)}


def judge_files(data_cfg: DataConfig, settings: JudgeSettings | None = None,
                cache_dir: str | Path | None = None) -> tuple[Path, Path]:
    """(weights, metadata) paths of the judge for this data config and settings in the cache folder."""
    key = _key(data_cfg, settings or JudgeSettings())
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
    stem = judge_dir(cache_dir) / f"{data_cfg.dataset}-{data_cfg.image_size}px-{digest}"
    return stem.with_suffix(".safetensors"), stem.with_suffix(".json")


def get_judge(data_cfg: DataConfig, settings: JudgeSettings | None = None, cache_dir: str | Path | None = None,
              device: str | torch.device = "cpu", progress: bool = True) -> Judge:
    """The judge for this data config and settings: from ``cache_dir`` when given, else the one shipped with the
    package, else the machine's cache; trained (on the train split, labels required) and cached when none has it."""
    from ..data import DataError, load_dataset

    settings = settings or JudgeSettings()
    key = _key(data_cfg, settings)
    weights, meta_path = judge_files(data_cfg, settings, cache_dir)
    # a folder the caller names (a results tree's own copy) first; else the package's judge before the machine's
    # cache, so every machine scores with the same network
    for folder in ((weights.parent, SHIPPED_JUDGES) if cache_dir else (SHIPPED_JUDGES, weights.parent)):
        stored = _load_stored(folder / weights.name, key, data_cfg.channels, device)
        if stored is not None:
            return stored
    train_ds, test_ds = load_dataset(data_cfg, "train"), load_dataset(data_cfg, "test")
    labels = torch.as_tensor(train_ds.labels)
    if labels.numel() == 0 or int(labels.min()) < 0:
        raise DataError(f"the judge needs class labels; dataset {data_cfg.dataset!r} has unlabelled images")
    num_classes = int(labels.max()) + 1
    net, seconds = _fit(train_ds, labels, num_classes, data_cfg.channels, settings, device, progress)
    judge = Judge(net, {})
    test_labels = torch.as_tensor(test_ds.labels)
    test_x = torch.cat([test_ds.get_batch(list(range(i, min(i + 1024, len(test_ds)))))
                        for i in range(0, len(test_ds), 1024)])
    meta = {"key": key, "num_classes": num_classes, "class_names": list(getattr(train_ds, "class_names", []) or []),
            "test_accuracy": round(judge.accuracy(test_x, test_labels), 4), "n_test": len(test_ds),
            "n_train": len(train_ds), "seconds": round(seconds, 1),
            "architecture": "JudgeNet: 4 conv3x3 (16, 32, 32, 64) + BN + ReLU, 2 max-pools, GAP, MLP 128"}
    save_weights(weights, net.state_dict())
    write_json(meta_path, meta)
    judge.meta = {**meta, "cache_file": str(weights), "from_cache": False}
    return judge


def stored_judge(data_cfg: DataConfig, settings: JudgeSettings | None = None,
                 device: str | torch.device = "cpu") -> Judge | None:
    """The judge shipped with the package or cached on this machine for this data config, or None (never trains)."""
    settings = settings or JudgeSettings()
    key = _key(data_cfg, settings)
    weights, _ = judge_files(data_cfg, settings, None)
    for folder in (SHIPPED_JUDGES, weights.parent):
        stored = _load_stored(folder / weights.name, key, data_cfg.channels, device)
        if stored is not None:
            return stored
    return None


def _load_stored(weights: Path, key: dict, channels: int, device) -> Judge | None:
    """The judge stored at ``weights`` (+ its .json) when its key matches, else None."""
    meta_path = weights.with_suffix(".json")
    if not (weights.exists() and meta_path.exists()):
        return None
    meta = json.loads(meta_path.read_text())
    if meta.get("key") != key:
        return None
    net = JudgeNet(channels, meta["num_classes"])
    load_into(net, load_weights(weights), weights)
    return Judge(net.to(device), {**meta, "cache_file": str(weights), "from_cache": True,
                                  "shipped": weights.parent == SHIPPED_JUDGES})


def copy_judge(judge: Judge, folder: str | Path) -> Path:
    """Copy a judge's weights and metadata into ``folder`` (a results tree's own copy); returns its weights path."""
    src = Path(judge.meta["cache_file"])
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    if src.parent.resolve() != folder.resolve():
        for f in (src, src.with_suffix(".json")):  # weights first: the metadata's presence marks a whole copy
            tmp = folder / f".{f.name}.tmp"
            shutil.copy2(f, tmp)
            os.replace(tmp, folder / f.name)
    return folder / src.name


def _fit(ds, labels: torch.Tensor, num_classes: int, channels: int, settings: JudgeSettings,
         device, progress: bool) -> tuple[JudgeNet, float]:
    torch.manual_seed(settings.seed)
    net = JudgeNet(channels, num_classes).to(device)
    opt = torch.optim.Adam(net.parameters(), lr=settings.lr)
    g = torch.Generator().manual_seed(settings.seed)
    n = len(ds)
    steps = int(settings.epochs * (n // settings.batch_size))
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=settings.lr, total_steps=max(steps, 1))
    t0 = time.time()
    net.train()
    perm = torch.zeros(0, dtype=torch.long)
    for step in tqdm(range(steps), desc="train judge", disable=not progress, leave=False):
        if perm.numel() < settings.batch_size:
            perm = torch.cat([perm, torch.randperm(n, generator=g)])
        idx, perm = perm[: settings.batch_size], perm[settings.batch_size:]
        x = ds.get_batch(idx.tolist()).to(device)
        loss = F.cross_entropy(net(x), labels[idx].to(device))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
    return net.eval(), time.time() - t0
