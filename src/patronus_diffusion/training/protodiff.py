"""ProtoDiffusion training: stage A (the prototype classifier) and stage B (the CFG diffusion objective).

Stage A::

    from patronus_diffusion.training.protodiff import train_classifier
    res = train_classifier(get_preset("protodiff-fmnist-cpu"), "runs/clf")   # runs/clf/prototypes.safetensors

Stage B uses the shared trainer (EMA, checkpoints, exact resume): this module registers the
``protodiffusion`` objective, so ``training.train(cfg, run_dir)`` trains any mode::

    cfg.protodiff.mode, cfg.protodiff.prototypes = "proto-frozen", "runs/clf/prototypes.safetensors"
    train(cfg, "runs/pf", max_steps=1500)

Per training example: with probability p_uncond the label becomes -1 (null condition); a fraction
``low_t_fraction`` of the batch has its timestep folded to t mod low_t_max (uniform on [0, low_t_max)
when T is a multiple of low_t_max), the reference's over-sampling of small t (off by default).
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
from ..diffusion.guidance import class_guided_model_fn
from ..diffusion.samplers import get_sampler
from ..diffusion.schedule import NoiseSchedule
from ..models.protodiffusion import (PrototypeClassifier, build_for_inference, cpl_loss, load_prototypes,
                                     save_prototypes)
from ..utils.device import pick_device
from ..utils.io import atomic_path, write_json
from ..runs import CheckpointError, load_into, load_weights, read_run_config, save_weights
from .objectives import LossOutput, register_objective

FAMILY = "protodiffusion"


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


# ============================================================================ stage B
def fold_low_timesteps(t: torch.Tensor, fraction: float, low_max: int) -> torch.Tensor:
    """Map the first floor(B * fraction) timesteps to t mod low_max (deterministic given t)."""
    k = int(t.shape[0] * fraction)
    if k == 0:
        return t
    t = t.clone()
    t[:k] = t[:k] % low_max
    return t


def protodiff_objective(model, x0, labels, t, noise, schedule: NoiseSchedule, cfg: RunConfig, amp) -> LossOutput:
    """L = mean ||eps - eps_theta(x_t, t, y')||^2 with y' = -1 (null) with probability p_uncond, else y.

    The drop mask comes from torch's global RNG, which checkpoints save and restore (exact resume).
    """
    pc = cfg.protodiff
    if labels.numel() and int(labels.min()) < 0:
        raise DataError("some training images have no class label (-1); ProtoDiffusion needs labelled data")
    drop = torch.rand(labels.shape[0]) < pc.p_uncond
    y = torch.where(drop.to(labels.device), torch.full_like(labels, -1), labels)
    t = fold_low_timesteps(t, pc.low_t_fraction, pc.low_t_max)
    x_t = schedule.q_sample(x0, t, noise)
    with amp:
        eps = model(x_t, t, y)
    per = ((eps.float() - noise) ** 2).flatten(1).mean(1)
    return LossOutput(per, None, {"uncond_fraction": float(drop.float().mean())})


def class_labels(num_classes: int, per_class: int, max_images: int | None = None) -> torch.Tensor:
    """Class-major balanced labels: [0]*per_class + [1]*per_class + ... (cut to max_images)."""
    y = torch.arange(num_classes).repeat_interleave(per_class)
    return y[:max_images] if max_images else y


@torch.no_grad()
def generate(model, cfg: RunConfig, labels: torch.Tensor, *, w: float | None = None, sampler: str | None = None,
             steps: int | None = None, seed: int = 0, batch_size: int = 100, progress: bool = False,
             **options) -> torch.Tensor:
    """Guided samples, one per label, clamped to [-1, 1].

    The guided x0 prediction is clipped to [-1, 1] at every step (``cfg.sample.clip_x0``, default on;
    ``clip_x0=False`` turns it off): without it, guided deterministic sampling of a young model saturates
    into all-white or all-black images. x_T for all images is drawn first from ``seed`` (so an image does
    not depend on the batch size); the stochastic DDPM sampler draws its noise from ``seed + 1``.
    """
    w = cfg.protodiff.guidance if w is None else w
    name = sampler or cfg.sample.sampler
    fn = get_sampler(name)
    steps = steps or cfg.sample.steps
    schedule = NoiseSchedule.from_config(cfg.diffusion)
    d = cfg.data
    labels = torch.as_tensor(labels, dtype=torch.long)
    x_T = torch.randn((len(labels), d.channels, d.image_size, d.image_size), generator=torch.Generator().manual_seed(seed))
    dev = next(model.parameters()).device
    options.setdefault("clip_x0", cfg.sample.clip_x0)
    if name == "ddpm":
        options.setdefault("generator", torch.Generator(device=dev).manual_seed(seed + 1))
    model.eval()
    out = []
    chunks = range(0, len(labels), batch_size)
    for i in tqdm(chunks, desc=f"{name} w={w:g}", disable=not progress or len(chunks) < 2, leave=False):
        mf = class_guided_model_fn(model, labels[i:i + batch_size].to(dev), w)
        out.append(fn(mf, x_T[i:i + batch_size].to(dev), schedule, steps,
                      progress=progress and len(chunks) == 1, **options).clamp(-1, 1).cpu())
    return torch.cat(out) if out else x_T[:0]


@torch.no_grad()
def protodiff_preview(model, x0, labels, schedule: NoiseSchedule, cfg: RunConfig, seed: int) -> torch.Tensor:
    """One guided sample per class (the first 16 classes), with the config's sampler and w."""
    y = torch.arange(min(cfg.protodiff.num_classes, 16))
    return generate(model, cfg, y, seed=seed)


def load_run(run: str | Path, weights: str = "ema", device: str | None = "auto"):
    """(model, cfg, run_dir) of a trained ProtoDiffusion run (EMA weights of the newest checkpoint by default)."""
    from ..runs import resolve_run, weights_file

    run_dir = resolve_run(run)
    cfg = read_run_config(run_dir)
    if cfg.family != FAMILY:
        raise CheckpointError(f"{run_dir} is a {cfg.family!r} run, not a ProtoDiffusion run "
                              f"(train one with `patronus protodiff train`)")
    model = build_for_inference(cfg)
    path = weights_file(run_dir, weights)
    load_into(model, load_weights(path), path)
    return model.to(pick_device(device)).eval().requires_grad_(False), cfg, run_dir


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


register_objective(FAMILY, protodiff_objective, protodiff_preview)
