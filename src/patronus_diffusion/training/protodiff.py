"""ProtoDiffusion training, stage A (the prototype classifier), and the checks stage B runs before training.

Stage A::

    from patronus_diffusion.training.protodiff import train_classifier
    res = train_classifier(get_preset("protodiff-fmnist-cpu"), "runs/clf")   # runs/clf/prototypes.safetensors

Stage B uses the shared trainer (EMA, checkpoints, exact resume) with the ``protodiffusion`` entry of
:data:`~patronus_diffusion.training.objectives.OBJECTIVES`, so ``training.train(cfg, run_dir)`` trains any mode::

    cfg.protodiff.mode, cfg.protodiff.prototypes = "proto-frozen", "runs/clf/prototypes.safetensors"
    train(cfg, "runs/pf", max_steps=1500)

Guided sampling of a trained run: :class:`patronus_diffusion.ProtoDiffusion` (``api/protodiffusion.py``).
"""

from __future__ import annotations

import csv
import hashlib
import json
import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from ..config import ConfigError, RunConfig
from ..data import DataError, load_dataset
from ..models.protodiffusion import PrototypeClassifier, cpl_loss, load_prototypes, save_prototypes
from ..utils.device import pick_device
from ..utils.io import atomic_path, write_json
from ..runs import CheckpointError, load_into, load_weights, read_run_config, save_weights


# ============================================================================ stage A
@dataclass
class ClassifierResult:
    out_dir: Path
    prototypes: Path
    val_accuracy: float
    test_accuracy: float | None
    best_epoch: int
    seconds: float


def dataset_identity(cfg: RunConfig, ds) -> dict:
    """What the prototypes were learned on: name, root, resolution, size and a fingerprint of the labels."""
    labels = np.asarray(ds.labels, dtype=np.int64)
    return {"dataset": cfg.data.dataset, "root": str(ds.info.root), "image_size": cfg.data.image_size,
            "channels": cfg.data.channels, "train_images": int(len(ds)),
            "labels_sha256": hashlib.sha256(labels.tobytes()).hexdigest()[:16]}


def _labelled(ds, split: str) -> np.ndarray:
    labels = np.asarray(ds.labels)
    if len(labels) == 0 or labels.min() < 0:
        raise DataError(f"the {split} split has images without class labels; ProtoDiffusion needs one class per "
                        f"image (IDX labels, or one sub-folder per class)")
    return labels


def split_train_val(n: int, val_fraction: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A seeded permutation: the first round(n * val_fraction) indices (>= 1) validate, the rest train."""
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    n_val = max(1, int(round(n * val_fraction))) if val_fraction > 0 else 0
    return perm[n_val:], perm[:n_val]


def evaluate_classifier(model: PrototypeClassifier, images: torch.Tensor, labels) -> float:
    """Top-1 accuracy of argmin-distance prediction."""
    if len(images) == 0:
        return float("nan")
    pred = model.predict(images)
    return float((pred == torch.as_tensor(np.asarray(labels))).float().mean())


def train_classifier(cfg: RunConfig, out_dir: str | Path, *, device: str | None = "auto",
                     progress: bool = True) -> ClassifierResult:
    """Train the CPL classifier on the training split (a validation part held out), keep the epoch with the
    best validation accuracy, report test accuracy, and export the prototypes.

    Writes into ``out_dir``: prototypes.safetensors (+ .json: class names, dataset identity, accuracy, D,
    lambda, scale), classifier.safetensors (+ classifier.json: its config) and classifier_log.csv.
    """
    cc, pc = cfg.protodiff.classifier, cfg.protodiff
    out_dir = Path(out_dir)
    dev = pick_device(device)
    torch.manual_seed(cc.seed)
    train_ds = load_dataset(cfg.data, "train")
    labels = _labelled(train_ds, "train")
    n_classes = pc.num_classes
    if int(labels.max()) >= n_classes:
        raise ConfigError(f"the data has labels up to {int(labels.max())} but protodiff.num_classes={n_classes}; "
                          f"pass --set protodiff.num_classes={int(labels.max()) + 1}")
    tr_idx, val_idx = split_train_val(len(train_ds), cc.val_fraction, cc.seed)
    if len(tr_idx) < cc.batch_size:
        raise DataError(f"{len(tr_idx)} training images after holding out validation, fewer than the classifier "
                        f"batch size {cc.batch_size}; lower protodiff.classifier.batch_size")
    try:
        test_ds = load_dataset(cfg.data, "test")
        test_labels = _labelled(test_ds, "test")
    except DataError:
        test_ds, test_labels = None, None

    model = PrototypeClassifier(cfg.data.channels, n_classes, cc).to(dev)
    opt = torch.optim.SGD(model.parameters(), lr=cc.lr, momentum=cc.momentum, weight_decay=cc.weight_decay)
    per_epoch = len(tr_idx) // cc.batch_size
    total = max(1, int(math.ceil(cc.epochs * per_epoch)))
    milestones = [int(m * total) for m in cc.lr_milestones]
    sched = torch.optim.lr_scheduler.MultiStepLR(opt, milestones, gamma=0.1)
    val_x = train_ds.get_batch(val_idx)
    val_y = labels[val_idx.numpy()]
    g = torch.Generator().manual_seed(cc.seed + 1)
    out_dir.mkdir(parents=True, exist_ok=True)
    log_rows, best = [], {"acc": -1.0, "epoch": 0, "state": None}
    eval_points = sorted({min(total, int(round((k + 1) * per_epoch))) for k in range(int(math.ceil(cc.epochs)))}
                         | {total})
    t0, step, perm, pos = time.time(), 0, None, 0
    bar = tqdm(total=total, desc="classifier", unit="step", disable=not progress, dynamic_ncols=True)
    model.train()
    window = {"loss": [], "dce": [], "pl": [], "correct": 0, "seen": 0}
    while step < total:
        if perm is None or pos + cc.batch_size > len(perm):
            perm, pos = tr_idx[torch.randperm(len(tr_idx), generator=g)], 0
        b = perm[pos:pos + cc.batch_size]
        pos += cc.batch_size
        x, y = train_ds.get_batch(b).to(dev), torch.as_tensor(labels[b.numpy()]).to(dev)
        out = model(x)
        loss, parts = cpl_loss(out, model.prototypes, y, cc.lambda_pl)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        step += 1
        window["loss"].append(float(loss.detach()))
        window["dce"].append(parts["dce"])
        window["pl"].append(parts["pl"])
        window["correct"] += int((out.distances.argmin(1) == y).sum())
        window["seen"] += len(y)
        bar.update(1)
        if step in eval_points:
            acc = evaluate_classifier(model, val_x, val_y)
            row = {"step": step, "epoch": round(step / per_epoch, 3), "loss": np.mean(window["loss"]),
                   "dce": np.mean(window["dce"]), "pl": np.mean(window["pl"]),
                   "train_accuracy": window["correct"] / max(window["seen"], 1), "val_accuracy": acc,
                   "lr": opt.param_groups[0]["lr"], "elapsed_s": round(time.time() - t0, 1)}
            log_rows.append(row)
            bar.set_postfix(val_acc=f"{acc:.4f}", loss=f"{row['loss']:.3f}")
            if acc > best["acc"]:
                best = {"acc": acc, "epoch": len(log_rows),
                        "state": {k: v.detach().clone() for k, v in model.state_dict().items()}}
            window = {"loss": [], "dce": [], "pl": [], "correct": 0, "seen": 0}
    bar.close()
    model.load_state_dict(best["state"])
    test_acc = evaluate_classifier(model, test_ds.get_batch(range(len(test_ds))), test_labels) \
        if test_ds is not None else None
    seconds = time.time() - t0
    _write_log(out_dir / "classifier_log.csv", log_rows)
    names = list(train_ds.class_names)
    meta = {"class_names": names[:n_classes] if len(names) >= n_classes else [str(i) for i in range(n_classes)],
            "dataset": dataset_identity(cfg, train_ds),
            "accuracy": {"validation": round(best["acc"], 5),
                         "test": round(test_acc, 5) if test_acc is not None else None,
                         "validation_images": int(len(val_idx)),
                         "test_images": int(len(test_ds)) if test_ds is not None else 0},
            "best_epoch": best["epoch"], "lambda_pl": cc.lambda_pl, "scale": cc.scale,
            "normalisation": "images in [-1, 1] (x / 127.5 - 1)", "seconds": round(seconds, 1),
            "init": "trained from scratch (no ImageNet weights offline)"}
    proto_path, _ = save_prototypes(out_dir / "prototypes.safetensors", model.prototypes, meta)
    save_weights(out_dir / "classifier.safetensors", model.state_dict(), metadata={"format": "protodiff-classifier"})
    write_json(out_dir / "classifier.json", {"data": {"image_size": cfg.data.image_size,
                                                      "channels": cfg.data.channels},
                                             "num_classes": n_classes, "classifier": _asdict(cc), **meta})
    return ClassifierResult(out_dir, proto_path, best["acc"], test_acc, best["epoch"], seconds)


def _asdict(obj) -> dict:
    import dataclasses

    return dataclasses.asdict(obj)


def _write_log(path: Path, rows: list[dict]) -> None:
    with atomic_path(path) as tmp:
        with open(tmp, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=list(rows[0].keys()) if rows else ["step"])
            w.writeheader()
            w.writerows(rows)


def load_classifier(out_dir: str | Path, device: str | None = "cpu") -> tuple[PrototypeClassifier, dict]:
    """Rebuild the stage-A classifier from classifier.json + classifier.safetensors (no pickle)."""
    from ..config import ClassifierConfig, _from_dict

    out_dir = Path(out_dir)
    path = out_dir / "classifier.json"
    if not path.exists():
        raise CheckpointError(f"{out_dir} holds no classifier.json; train one with "
                              f"`patronus protodiff train-classifier --out {out_dir}`")
    meta = json.loads(path.read_text())
    cc = _from_dict(ClassifierConfig, meta["classifier"], "classifier.")
    model = PrototypeClassifier(meta["data"]["channels"], meta["num_classes"], cc)
    load_into(model, load_weights(out_dir / "classifier.safetensors"), out_dir / "classifier.safetensors")
    return model.to(pick_device(device)).eval(), meta


# ============================================================================ stage B checks
def check_prototypes_fit(cfg: RunConfig) -> dict:
    """Fail early if the prototype file does not fit the config; returns its metadata."""
    pc = cfg.protodiff
    if not pc.prototypes:
        return {}
    protos, meta = load_prototypes(pc.prototypes)
    if tuple(protos.shape) != (pc.num_classes, pc.embed_dim):
        raise ConfigError(f"{pc.prototypes} holds {protos.shape[0]} prototypes of dimension {protos.shape[1]}, but "
                          f"the config has protodiff.num_classes={pc.num_classes}, embed_dim={pc.embed_dim}")
    ds = meta.get("dataset", {})
    if ds and ds.get("dataset") != cfg.data.dataset:
        raise ConfigError(f"{pc.prototypes} was learned on {ds.get('dataset')!r}, but this run trains on "
                          f"{cfg.data.dataset!r}; train a classifier on this dataset first")
    return meta


PROTODIFF_IDENTITY = ("mode", "num_classes", "embed_dim", "null", "padding_idx0")


def check_resume_identity(run_dir: Path, cfg: RunConfig) -> None:
    """A resumed run must keep its mode and table shape (the trainer checks the UNet)."""
    saved = read_run_config(run_dir).protodiff
    diffs = [f"{k}: {getattr(saved, k)!r} vs {getattr(cfg.protodiff, k)!r}" for k in PROTODIFF_IDENTITY
             if getattr(saved, k) != getattr(cfg.protodiff, k)]
    if diffs:
        raise ConfigError(f"cannot resume {run_dir} with a different class embedding ({'; '.join(diffs)}); "
                          f"use the run's own --mode or train into a new --out")
