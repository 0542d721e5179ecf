"""A small binary classifier of one attribute, trained on real images and saved as TorchScript
(`patronus train-classifier`): the network `patronus audit` audits, made from the toolkit's own data.

It learns ``label`` (an attribute spec: a binary column of the attribute CSV, ``NAME=v1+v2``, ``class:c1+c2`` or
``not:SPEC``) from a dataset's training split, on real images only, and is scored on the test split: accuracy,
AUROC, and with ``groups`` the accuracy in every (label, group attribute) cell and the worst of them (the
worst-group accuracy, which a shortcut lowers). ``eval_cfg`` names a second dataset whose test split is scored the
same way, e.g. the unbiased twin of a biased training set.

The saved module takes images in ``value_range`` (``0,1`` or ``-1,1``: any LOW,HIGH; it maps them to [-1, 1]
itself) at the training size and channels, and returns (B, 2) logits, class 1 = the label holds. Architecture:
[Conv3x3 ReLU MaxPool] with 16 and 32 channels, Conv3x3(64) ReLU, global average pooling, Linear(64, 2); Adam,
unweighted cross-entropy, a seeded shuffle. The ``.pt`` file and a ``.json`` beside it (what it was trained on,
how, and how well it does) are each written atomically, after every input has been checked.

:func:`fit_classifier` is the training itself, on images already in memory, for a number of steps, optionally
with sampling weights; ``patronus debias-eval`` trains its classifiers with it.
"""

from __future__ import annotations

import hashlib
import math
import time
import warnings
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from ..data import load_dataset
from ..data.biased import resolve_attribute
from ..data.errors import DataError
from ..utils.errors import UsageError

ARCHITECTURE = ("[Conv3x3 ReLU MaxPool2] x (16, 32), Conv3x3(64) ReLU, global average pool, Linear(64, 2); "
                "input mapped from its range to [-1, 1] inside the module")


class SmallClassifier(nn.Module):
    """(B, C, H, W) images in [lo, hi] -> (B, 2) logits. Any size works (global pooling); it is trained at one."""

    def __init__(self, channels: int, lo: float = 0.0, hi: float = 1.0):
        super().__init__()
        self.register_buffer("lo", torch.tensor(float(lo)))
        self.register_buffer("hi", torch.tensor(float(hi)))
        self.features = nn.Sequential(
            nn.Conv2d(channels, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 3, padding=1), nn.ReLU())
        self.head = nn.Linear(64, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = (x - self.lo) / (self.hi - self.lo) * 2.0 - 1.0
        return self.head(self.features(x).mean((2, 3)))


def parse_input_range(text) -> tuple[float, float]:
    """``"0,1"`` -> (0.0, 1.0): the value range the saved classifier takes (LOW < HIGH, both finite)."""
    parts = list(text) if isinstance(text, (tuple, list)) else str(text).replace(" ", "").split(",")
    try:
        lo, hi = (float(p) for p in parts)
    except (TypeError, ValueError):
        raise UsageError(f"--range must be two numbers LOW,HIGH such as 0,1 or -1,1; got {text!r}") from None
    if not (math.isfinite(lo) and math.isfinite(hi) and lo < hi):
        raise UsageError(f"--range needs LOW < HIGH, both finite; got {text!r}")
    return lo, hi


def check_settings(epochs: float, batch_size: int, lr: float, limit: int | None, out: str | Path | None) -> None:
    """Every cheap check of the settings, before any data is read."""
    if not epochs > 0:
        raise UsageError(f"--epochs must be positive, got {epochs}")
    if batch_size < 1:
        raise UsageError(f"--batch-size must be at least 1, got {batch_size}")
    if not lr > 0:
        raise UsageError(f"--lr must be positive, got {lr}")
    if limit is not None and limit < 2:
        raise UsageError(f"--limit must be at least 2 training images, got {limit}")
    if out is not None:
        out = Path(out)
        if out.is_dir():
            raise UsageError(f"--out {out} is a folder; give the file to write, e.g. {out / 'classifier.pt'}")
        if out.suffix == ".json":
            raise UsageError(f"--out {out} ends in .json, the name of the record written beside the model; "
                             f"give a .pt file")


def auroc(y: np.ndarray, p: np.ndarray) -> float | None:
    """P(score of a positive > score of a negative) + ties / 2 (Mann-Whitney); None with one class."""
    from scipy.stats import rankdata

    y = np.asarray(y, bool)
    n1, n0 = int(y.sum()), int((~y).sum())
    if not n1 or not n0:
        return None
    r = rankdata(np.asarray(p, np.float64))
    return float((r[y].sum() - n1 * (n1 + 1) / 2) / (n1 * n0))


def _images(ds, idx, lo: float, hi: float) -> torch.Tensor:
    idx = [int(i) for i in idx]
    x = torch.cat([ds.get_batch(idx[i:i + 512]) for i in range(0, len(idx), 512)])
    return lo + (x.clamp(-1, 1) + 1) / 2 * (hi - lo)


@torch.no_grad()
def probabilities(net: nn.Module, x: torch.Tensor, device, batch: int = 512) -> np.ndarray:
    """p(class 1) of every image of ``x`` (in the classifier's range), evaluated in batches on ``device``."""
    out = [torch.softmax(net(x[i:i + batch].to(device)), 1)[:, 1].cpu().double() for i in range(0, len(x), batch)]
    return torch.cat(out).numpy()


def group_accuracy(y: np.ndarray, pred: np.ndarray, g: np.ndarray, name: str, label: str) -> dict:
    """Accuracy in every non-empty (label, group) cell and the worst of them."""
    cells = []
    for lv in (True, False):
        for gv in (True, False):
            m = (y == lv) & (g == gv)
            if m.any():
                cells.append({"label": int(lv), name: int(gv), "n": int(m.sum()),
                              "accuracy": float((pred[m] == y[m]).mean())})
    worst = min(cells, key=lambda c: c["accuracy"])
    return {"cells": cells, "worst_group_accuracy": worst["accuracy"],
            "worst_group": f"{label}={worst['label']}, {name}={worst[name]}"}


def _scores(net, ds, y: np.ndarray, groups: dict[str, np.ndarray], label: str, lo: float, hi: float,
            device) -> dict:
    p = probabilities(net, _images(ds, range(len(ds)), lo, hi), device)
    pred = p >= 0.5
    out = {"n": int(len(y)), "positive_rate": float(y.mean()), "accuracy": float((pred == y).mean()),
           "auroc": auroc(y, p)}
    if groups:
        out["groups"] = {g: group_accuracy(y, pred, v, g, label) for g, v in groups.items()}
    return out


def fit_classifier(x: torch.Tensor, y: np.ndarray, *, value_range=(0.0, 1.0), steps: int, batch_size: int = 128,
                   lr: float = 3e-3, seed: int = 0, weights: torch.Tensor | None = None,
                   device: str | torch.device = "cpu", progress: bool = False,
                   desc: str = "train classifier") -> SmallClassifier:
    """A :class:`SmallClassifier` of ``y`` trained on the images ``x`` (in ``value_range``) for ``steps`` batches
    of ``min(batch_size, len(x))``: Adam at a constant ``lr``, unweighted cross-entropy. Batches follow a seeded
    shuffle (each image once per pass), or with ``weights`` (one per image) are drawn with replacement in
    proportion to them (e.g. group-balanced sampling). ``seed`` sets the initialisation and the batches. Returned
    in eval mode without gradients, on ``device``."""
    from tqdm.auto import tqdm

    lo, hi = parse_input_range(value_range)
    device = torch.device(device)
    labels = torch.as_tensor(np.asarray(y).astype(np.int64))
    torch.manual_seed(seed)
    net = SmallClassifier(x.shape[1], lo, hi).to(device)
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    g = torch.Generator().manual_seed(seed)
    n, batch = len(labels), min(batch_size, len(labels))
    perm = torch.zeros(0, dtype=torch.long)
    net.train()
    for _ in tqdm(range(steps), desc=desc, disable=not progress, leave=False):
        if weights is not None:
            b = torch.multinomial(weights, batch, replacement=True, generator=g)
        else:
            if perm.numel() < batch:
                perm = torch.cat([perm, torch.randperm(n, generator=g)])
            b, perm = perm[:batch], perm[batch:]
        loss = F.cross_entropy(net(x[b].to(device)), labels[b].to(device))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return net.eval().requires_grad_(False)


def read_record(path: str | Path) -> dict | None:
    """The record :func:`train_classifier` writes beside the classifier ``path`` (``path`` with suffix ``.json``),
    or None when there is none; a record that cannot be read is a one-line :class:`UsageError`."""
    import json

    rec = Path(path).with_suffix(".json")
    if Path(path).suffix == ".json" or not rec.is_file():
        return None
    try:
        data = json.loads(rec.read_text())
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise UsageError(f"cannot read the classifier's record {rec} ({type(e).__name__}: "
                         f"{str(e).splitlines()[0][:120] if str(e) else 'empty'}); remove it or write it again with "
                         f"`patronus train-classifier`") from None
    if not isinstance(data, dict) or not isinstance(data.get("label", ""), str) or not isinstance(
            data.get("input", {}), dict):
        raise UsageError(f"{rec} is not a record of `patronus train-classifier` (a JSON object with label and input)")
    return data


def _describe(cfg, train_ds, test_ds) -> dict:
    return {"dataset": cfg.dataset, "root": cfg.root, "attributes_csv": cfg.attributes_csv,
            "image_size": cfg.image_size, "channels": cfg.channels, "resize": cfg.resize,
            "n_train_split": int(len(train_ds)), "n_test": int(len(test_ds)),
            "split_rule": getattr(train_ds.info, "split_rule", "")}


def train_classifier(data_cfg, label: str, out: str | Path, *, epochs: float = 5.0, seed: int = 0,
                     value_range=(0.0, 1.0), limit: int | None = None, groups=(), eval_cfg=None,
                     batch_size: int = 128, lr: float = 3e-3, device: str | torch.device = "cpu",
                     progress: bool = False) -> dict:
    """Train the classifier of ``label`` on ``data_cfg``'s training split and write ``out`` (TorchScript) and
    ``out`` with suffix ``.json`` (the returned record). Every input is checked before training starts."""
    from ..utils.io import atomic_path, write_json

    t0, c0 = time.time(), time.process_time()
    out = Path(out)
    lo, hi = parse_input_range(value_range)
    check_settings(epochs, batch_size, lr, limit, out)
    groups = [g for g in ([groups] if isinstance(groups, str) else list(groups)) if g]
    train_ds, test_ds = load_dataset(data_cfg, "train"), load_dataset(data_cfg, "test")
    y_train = resolve_attribute(train_ds, label)
    y_test = resolve_attribute(test_ds, label)
    g_test = {g: resolve_attribute(test_ds, g) for g in groups}
    ev = None
    if eval_cfg is not None:
        ev_ds = load_dataset(eval_cfg, "test")
        ev = (ev_ds, resolve_attribute(ev_ds, label), {g: resolve_attribute(ev_ds, g) for g in groups})
    idx = np.arange(len(train_ds))
    if limit is not None and len(idx) > limit:
        idx = np.sort(np.random.default_rng(seed).choice(idx, limit, replace=False))
    y = y_train[idx]
    if y.all() or not y.any():
        raise DataError(f"the {len(idx)} training images all {'have' if y.all() else 'lack'} {label}: no classifier "
                        f"of it can be trained" + ("; raise --limit" if limit is not None else ""))

    device = torch.device(device)
    x = _images(train_ds, idx, lo, hi)
    n, batch = len(idx), min(batch_size, len(idx))
    steps = max(1, math.ceil(epochs * n / batch))
    net = fit_classifier(x, y, value_range=(lo, hi), steps=steps, batch_size=batch_size, lr=lr, seed=seed,
                         device=device, progress=progress, desc=f"train classifier of {label}")
    train_acc = float(((probabilities(net, x, device) >= 0.5) == y).mean())
    test = _scores(net, test_ds, y_test, g_test, label, lo, hi, device)
    record = {
        "file": str(out), "label": label, "output": f"(B, 2) logits; class 1 = {label}",
        "data": _describe(data_cfg, train_ds, test_ds) | {"n_train_used": int(n)},
        "seed": int(seed), "epochs": float(epochs), "steps": int(steps), "batch_size": int(batch), "lr": float(lr),
        "limit": limit, "input": {"range": [lo, hi], "size": [data_cfg.image_size] * 2,
                                  "channels": data_cfg.channels},
        "architecture": ARCHITECTURE, "train_accuracy": train_acc, "train_positive_rate": float(y.mean()),
        "test_accuracy": test["accuracy"], "test_auroc": test["auroc"], "test": test,
    }
    if groups:
        record["worst_group_accuracy"] = min(v["worst_group_accuracy"] for v in test["groups"].values())
    if ev is not None:
        ev_ds, y_ev, g_ev = ev
        record["eval"] = {"data": {"dataset": eval_cfg.dataset, "root": eval_cfg.root,
                                   "attributes_csv": eval_cfg.attributes_csv, "n_test": int(len(ev_ds))},
                          **_scores(net, ev_ds, y_ev, g_ev, label, lo, hi, device)}
    record["audit_flags"] = f"--classifier {out} --classifier-range {lo:g},{hi:g}"
    net = net.cpu()
    with atomic_path(out) as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # torch 2.9+ marks TorchScript deprecated; audit takes it
        torch.jit.script(net).save(str(tmp))
    record["sha256"] = hashlib.sha256(out.read_bytes()).hexdigest()
    record["seconds"] = round(time.time() - t0, 2)
    record["cpu_seconds"] = round(time.process_time() - c0, 2)
    write_json(out.with_suffix(".json"), record)
    return record
