"""The training loop: one loop for every model family.

Usage (Python)::

    from patronus_diffusion.presets import get_preset
    from patronus_diffusion.training import train
    train(get_preset("cpu-small"), "runs/fmnist", max_minutes=30)     # resume=True continues it

Reproducibility: batches come from a permutation fixed by (seed, epoch); timesteps, noise and condition
drops come from a dedicated generator whose state, with the optimizer and the EMA, is saved in every
checkpoint; dropout draws from torch's global RNG reseeded at every step from (seed, rank, step).
N steps straight and N/2 + resume + N/2 therefore give the same weights, on one process or K ranks.
Multi-GPU: launch with ``torchrun --nproc_per_node=K -m patronus_diffusion.cli.main train ...``; the
global batch is split across ranks (every rank draws the global batch's random numbers and keeps its
slice) and only rank 0 writes.
"""

from __future__ import annotations

import csv
import math
import os
import signal
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm.auto import tqdm

from ..config import ConfigError, RunConfig
from ..data import DataError, batches_per_epoch, iterate_batches, load_dataset
from ..data.datasets import describe_training_data
from ..diffusion.schedule import NoiseSchedule
from ..models import build_model
from ..utils.device import autocast, peak_memory_mb, pick_device
from ..utils.images import save_grid
from ..utils.io import atomic_path, write_json, write_text
from ..runs import (CheckpointError, architecture_differences, file_digest, generator_state, latest_checkpoint,
                         load_into, load_weights, read_checkpoint_state, read_run_config,
                         save_checkpoint, save_weights, set_generator_state, unflatten_optimizer)
from .ema import EMA
from .lr import lr_at
from .objectives import OBJECTIVES, draw_batch

LOG_FIELDS = ["step", "epoch", "images_seen", "loss", "loss_q1", "loss_q2", "loss_q3", "loss_q4", "extra",
              "grad_norm", "lr", "images_per_s", "elapsed_s", "honour", "cluster"]


class _StepBoundaryInterrupt:
    """Defer Ctrl-C to the end of the current optimisation step: the first SIGINT sets a flag that the loop
    turns into KeyboardInterrupt once the step is counted (so the checkpoint saved then never holds weights
    one step ahead of its step counter); a second SIGINT interrupts at once, and if that lands inside the
    update, the trainer saves nothing (the last checkpoint stands). Main thread only."""

    def __init__(self):
        self.requested = False
        self._previous = None

    def install(self) -> None:
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGINT, self._handle)

    def uninstall(self) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)
            self._previous = None

    def _handle(self, signum, frame) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True
        print("\n[patronus] interrupt: finishing this step, then saving a checkpoint (Ctrl-C again to stop now)")

    def raise_if_requested(self) -> None:
        if self.requested:
            raise KeyboardInterrupt


@dataclass
class TrainResult:
    """``step`` and ``images_seen`` count the whole run (all resumes); ``steps_this_invocation`` and
    ``elapsed_s`` only this call."""

    run_dir: Path
    step: int
    images_seen: int
    elapsed_s: float
    last_loss: float
    stopped_by: str
    steps_this_invocation: int = 0


def step_seed(seed: int, rank: int, step: int) -> int:
    """The global-RNG seed of one (rank, step): distinct per rank and step, a function of nothing else."""
    return (seed * 1_000_003 + rank * 7_919 + step * 104_729) % (2**63 - 1)


def _dist_info() -> tuple[int, int]:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    if world > 1 and not torch.distributed.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        torch.distributed.init_process_group(backend)
    return rank, world


def build_optimizer(model: torch.nn.Module, cfg: RunConfig) -> torch.optim.Optimizer:
    tc = cfg.train
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        exempt = not tc.prototype_weight_decay and name.endswith("prototypes.prototypes")
        (no_decay if exempt else decay).append(p)
    groups = [{"params": decay, "weight_decay": tc.weight_decay}]
    if no_decay:
        groups.append({"params": no_decay, "weight_decay": 0.0})
    return torch.optim.AdamW(groups, lr=tc.lr)


class _Logger:
    def __init__(self, path: Path, enabled: bool, resume_step: int | None):
        """``resume_step``: the checkpoint's step when resuming (rows logged after it are dropped, since
        those steps run again), None for a new run (a fresh file)."""
        self.enabled = enabled
        self.path = path
        self.tb = None
        if not enabled:
            return
        if resume_step is None or not path.exists():
            with open(path, "w", newline="") as f:
                csv.writer(f).writerow(LOG_FIELDS)
        else:
            with open(path, newline="") as f:
                rows = list(csv.reader(f))
            kept = [r for r in rows[1:] if r and r[0].isdigit() and int(r[0]) <= resume_step]
            with atomic_path(path) as tmp:
                with open(tmp, "w", newline="") as f:
                    csv.writer(f).writerows([rows[0] if rows else LOG_FIELDS] + kept)
        try:
            from torch.utils.tensorboard import SummaryWriter  # optional

            # purge_step: events after the resumed checkpoint are dropped, as in the CSV (those steps run again)
            self.tb = SummaryWriter(str(path.parent / "tensorboard"),
                                    purge_step=resume_step + 1 if resume_step is not None else None)
        except Exception:  # noqa: BLE001 - tensorboard is optional
            self.tb = None

    def write(self, row: dict) -> None:
        if not self.enabled:
            return
        with open(self.path, "a", newline="") as f:
            csv.writer(f).writerow([row.get(k, "") for k in LOG_FIELDS])
        if self.tb is not None:
            for k, v in row.items():
                if k not in ("step",) and isinstance(v, (int, float)) and v == v:
                    self.tb.add_scalar(f"train/{k}", v, row["step"])


def _require_same_network(source: Path, cfg: RunConfig, what: str, fix: str) -> None:
    """Refuse to load the weights of ``source`` (a run folder) into a network that ``cfg`` builds differently."""
    diffs = architecture_differences(read_run_config(source), cfg)
    if diffs:
        raise ConfigError(f"cannot {what}: the requested config changes the network "
                          f"({'; '.join(diffs[:5])}). {fix}")


def _init_weights(init_from: str | Path, cfg: RunConfig) -> tuple[Path, dict[str, torch.Tensor]]:
    """The EMA weights of ``init_from`` (path and tensors) after checking they fit the network of ``cfg``."""
    from ..runs import resolve_run, weights_file

    src = resolve_run(init_from)
    _require_same_network(src, cfg, f"start from {init_from}",
                          "Use the same preset and --set overrides as that run.")
    path = weights_file(src, "ema")
    return path, load_weights(path)


def train(cfg: RunConfig, run_dir: str | Path, *, resume: bool | str = False, device: str | None = "auto",
          progress: bool = True, max_steps: int | None = None, max_epochs: float | None = None,
          max_minutes: float | None = None, init_from: str | Path | None = None) -> TrainResult:
    """Train ``cfg`` into ``run_dir``; returns when any budget (steps, epochs, minutes) is reached.

    ``max_steps`` and ``max_epochs`` are totals for the run (a resumed run stops at the same point);
    ``max_minutes`` limits this invocation. ``init_from`` (a run directory or ``pretrained:NAME``) starts a
    new run from that model's EMA weights (fine-tuning): the network must be the same, the optimiser, step
    counter and LR warm-up start fresh, and the source is recorded in ``init_from.json``.
    ``resume=True`` continues the run in ``run_dir`` and fails when it holds no checkpoint (a mistyped folder
    must not silently start a new run); ``resume="if-present"`` starts a new run there when there is none.
    """
    cfg = cfg.copy().validate()
    tc = cfg.train
    if max_steps is not None:
        tc.max_steps = max_steps
    if max_epochs is not None:
        tc.max_epochs = max_epochs
    if max_minutes is not None:
        tc.max_minutes = max_minutes
    if tc.max_steps is None and tc.max_epochs is None and tc.max_minutes is None:
        raise ConfigError("no training budget: give --steps, --epochs or --minutes")

    rank, world = _dist_info()
    is_main = rank == 0
    if tc.batch_size % world:
        raise ConfigError(f"train.batch_size={tc.batch_size} is the global batch; it must split evenly over "
                          f"{world} ranks (use a multiple of {world})")
    dev = pick_device(device)
    if world > 1 and dev.type == "cuda":
        dev = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(dev)
    run_dir = Path(run_dir)
    if resume not in (False, True, "if-present"):
        raise ConfigError(f"resume must be False, True or 'if-present', not {resume!r}")
    # repair: a complete checkpoint that an interrupted write left under a temporary name is put back in place
    ckpt = latest_checkpoint(run_dir, repair=True) if resume and run_dir.exists() else None
    if resume is True and ckpt is None:
        raise ConfigError(f"--resume: {run_dir} holds no checkpoint to continue (is the folder name right?); "
                          f"use --resume-if-present to start a new run there when none exists")
    if resume and ckpt is None and is_main:
        print(f"[patronus] no checkpoint in {run_dir}; starting a new run")
    if ckpt is None and (run_dir / "latest.json").exists() and not resume:
        raise ConfigError(f"{run_dir} already holds a run; pass --resume to continue it or choose another --out")
    if ckpt is not None:
        _require_same_network(run_dir, cfg, f"resume {run_dir}",
                              "Drop those overrides, or train into a new --out folder.")
    init_weights = _init_weights(init_from, cfg) if (init_from is not None and ckpt is None) else None

    torch.manual_seed(tc.seed + rank)
    train_ds = load_dataset(cfg.data, "train")
    if len(train_ds) < tc.batch_size:
        raise DataError(f"the training set has {len(train_ds)} images, fewer than train.batch_size={tc.batch_size}; "
                        f"lower the batch size (--batch-size)")
    try:
        preview_ds = test_ds = load_dataset(cfg.data, "test")
    except DataError:
        preview_ds, test_ds = train_ds, None
    if is_main and ckpt is None:
        for line in describe_training_data(train_ds, test_ds, cfg.data):
            print(f"[patronus] {line}")
    schedule = NoiseSchedule.from_config(cfg.diffusion)
    model = build_model(cfg).to(dev)
    if tc.channels_last:
        model = model.to(memory_format=torch.channels_last)
    if init_weights is not None:
        init_path, init_sd = init_weights
        load_into(model, init_sd, init_path)
    elif ckpt is None and cfg.family == "patronus" and cfg.prototypes.init == "patches":
        g_init = torch.Generator().manual_seed(tc.seed + 17)
        pick = torch.randperm(len(train_ds), generator=g_init)[: min(256, len(train_ds))]
        model.prototypes.init_from_patches(train_ds.get_batch(pick).to(dev), g_init)
    ema = EMA(model, tc.ema_decay, tc.ema_warmup)
    opt = build_optimizer(model, cfg)
    # Timesteps, noise and condition drops are drawn for the whole global batch on every rank and then sliced
    # (draw_batch), so K ranks train like one process with the same global batch, up to float summation order.
    # What runs inside the network (dropout, the honour loss's edits) draws from torch's global RNG, reseeded
    # at every step from (seed, rank, step): a resumed run, on any number of ranks, continues bitwise.
    gen = torch.Generator(device="cpu").manual_seed(tc.seed * 7919)
    step, epoch, batch_in_epoch, images_seen = 0, 0, 0, 0

    if ckpt is not None:
        state = read_checkpoint_state(ckpt)
        load_into(model, load_weights(ckpt / "model.safetensors"), ckpt / "model.safetensors")
        load_into(ema.model, load_weights(ckpt / "ema.safetensors"), ckpt / "ema.safetensors")
        opt_state = unflatten_optimizer(load_weights(ckpt / "optimizer.safetensors"), state["optimizer"])
        try:
            opt.load_state_dict(opt_state)
        except (ValueError, KeyError) as e:
            raise CheckpointError(f"optimizer state in {ckpt} does not fit this model: {e}") from None
        ema.num_updates = state["ema_updates"]
        step, epoch, batch_in_epoch = state["step"], state["epoch"], state["batch_in_epoch"]
        images_seen = state["images_seen"]
        set_generator_state(gen, state["rng"]["generator"])
        if is_main:
            print(f"[patronus] resumed {run_dir} from {ckpt.name} (step {step}, epoch {epoch})")

    if is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        write_text(run_dir / "config.json", cfg.to_json())
        if init_weights is not None:
            write_json(run_dir / "init_from.json", {"source": str(init_from), "weights": str(init_path),
                                                    "sha256": file_digest(init_path)})
        skipped = getattr(train_ds.info, "skipped", [])
        if skipped:
            write_text(run_dir / "skipped_images.txt", "\n".join(skipped) + "\n")
            print(f"[patronus] skipped {len(skipped)} unreadable image(s); listed in {run_dir / 'skipped_images.txt'}")

    train_model = model
    if world > 1:
        train_model = torch.nn.parallel.DistributedDataParallel(model, device_ids=[dev] if dev.type == "cuda" else None)
    if tc.compile:
        train_model = torch.compile(train_model)
    objective, preview_fn = OBJECTIVES[cfg.family]
    amp = autocast(dev, tc.precision)
    scaler = torch.amp.GradScaler(dev.type, enabled=tc.precision == "fp16")
    if ckpt is not None and state.get("grad_scaler"):
        scaler.load_state_dict(state["grad_scaler"])

    per_epoch = batches_per_epoch(train_ds, tc.batch_size)
    total = tc.max_steps
    if tc.max_epochs is not None:
        by_epochs = int(math.ceil(tc.max_epochs * per_epoch))
        total = by_epochs if total is None else min(total, by_epochs)
    deadline = time.time() + tc.max_minutes * 60 if tc.max_minutes else None
    # epochs the LR schedule spans: the epoch budget, else the step budget in epochs
    lr_epochs = (int(math.ceil(tc.max_epochs)) if tc.max_epochs is not None else
                 int(math.ceil(total / per_epoch)) if total is not None else None)
    if tc.lr_schedule != "warmup" and lr_epochs is None:
        raise ConfigError(f"train.lr_schedule={tc.lr_schedule} needs --epochs or --steps (it spans the whole run)")

    preview_n = min(16, len(preview_ds))
    pg = torch.Generator().manual_seed(1234)
    preview_idx = torch.randperm(len(preview_ds), generator=pg)[:preview_n]
    preview_x = preview_ds.get_batch(preview_idx).to(dev)
    preview_y = torch.as_tensor(preview_ds.labels[preview_idx.numpy()]).to(dev)
    if is_main and step == 0 and tc.sample_every:
        save_grid(preview_x, run_dir / "samples" / "reference.png", upscale=2)

    logger = _Logger(run_dir / "train_log.csv", is_main, resume_step=step if ckpt is not None else None)
    start_step, start_images = step, images_seen
    window: dict[str, list] = {"loss": [], "t": [], "per": [], "extra": [], "gn": [], "honour": [], "cluster": []}
    t_start = time.time()
    t_window = time.time()
    imgs_window = 0
    stopped_by = "steps"
    last_loss = float("nan")
    bar = tqdm(total=total, initial=step, disable=not (progress and is_main), desc="train", unit="step",
               dynamic_ncols=True)

    saved_step = step if ckpt is not None else None  # the step the newest checkpoint on disk holds

    def checkpoint_now() -> None:
        nonlocal saved_step
        if not is_main or step == saved_step:  # never rewrite a step already saved: nothing new to write
            return
        save_checkpoint(run_dir, step=step, model=model, ema=ema.model, optimizer=opt, config=cfg,
                        keep=tc.keep_checkpoints,
                        state={"epoch": epoch, "batch_in_epoch": batch_in_epoch, "images_seen": images_seen,
                               "ema_updates": ema.num_updates, "elapsed_s": time.time() - t_start,
                               "grad_scaler": scaler.state_dict() if scaler.is_enabled() else None,
                               "rng": {"generator": generator_state(gen)}})
        saved_step = step

    model.train()
    interrupt = _StepBoundaryInterrupt()
    mid_step = False
    try:
        interrupt.install()
        done = total is not None and step >= total
        while not done:
            for b_idx, x0, y in iterate_batches(train_ds, tc.batch_size, tc.seed, epoch, batch_in_epoch,
                                                cfg.data.num_workers, shard=(rank, world)):
                draws = draw_batch(gen, (tc.batch_size, *x0.shape[1:]), schedule, cfg).slice(rank, world)
                torch.manual_seed(step_seed(tc.seed, rank, step))  # dropout & co.: a stream per (rank, step)
                x0, y, t, noise = x0.to(dev, non_blocking=True), y.to(dev), draws.t.to(dev), draws.noise.to(dev)
                if tc.channels_last:
                    x0 = x0.contiguous(memory_format=torch.channels_last)
                for g in opt.param_groups:
                    g["lr"] = lr_at(step, tc.lr_schedule, tc.lr, tc.warmup_steps, per_epoch, lr_epochs)
                out = objective(train_model, x0, y, t, noise, schedule, cfg, amp, cond_u=draws.cond_u)
                loss = out.per_image.mean() + (out.extra if out.extra is not None else 0.0)
                if not torch.isfinite(loss):
                    raise FloatingPointError(f"loss became {float(loss)} at step {step}; lower train.lr or enable "
                                             f"train.grad_clip, then resume from the last checkpoint")
                opt.zero_grad(set_to_none=True)
                scaler.scale(loss).backward()
                scaler.unscale_(opt)
                gn = torch.nn.utils.clip_grad_norm_(model.parameters(), tc.grad_clip or float("inf"))
                mid_step = True  # from here until the counters move, weights and step disagree
                scaler.step(opt)
                scaler.update()
                ema.update(model)
                step += 1
                batch_in_epoch = b_idx + 1
                images_seen += tc.batch_size
                mid_step = False
                imgs_window += tc.batch_size
                last_loss = float(loss.detach())
                window["loss"].append(last_loss)
                window["t"].append(t.cpu())
                window["per"].append(out.per_image.detach().cpu())
                window["gn"].append(float(gn))
                if out.extra is not None:
                    window["extra"].append(float(out.extra.detach()))
                for key in ("honour", "cluster"):
                    if out.logs and key in out.logs:
                        window[key].append(out.logs[key])
                bar.update(1)
                if step % max(tc.log_every, 1) == 0 or step == total:
                    now = time.time()
                    ips = imgs_window / max(now - t_window, 1e-9)
                    row = _log_row(window, schedule.num_timesteps, step, epoch + batch_in_epoch / per_epoch,
                                   images_seen, opt.param_groups[0]["lr"], ips, now - t_start)
                    logger.write(row)
                    bar.set_postfix(loss=f"{row['loss']:.4f}", img_s=f"{ips:.1f}")
                    window = {k: [] for k in window}
                    t_window, imgs_window = now, 0
                if is_main and tc.sample_every and step % tc.sample_every == 0:
                    _save_preview(ema.model, preview_fn, preview_x, preview_y, schedule, cfg, run_dir, step)
                    model.train()
                if tc.checkpoint_every and step % tc.checkpoint_every == 0:
                    checkpoint_now()
                interrupt.raise_if_requested()  # Ctrl-C lands here, between steps, never inside one
                if total is not None and step >= total:
                    done, stopped_by = True, "steps" if tc.max_steps == total else "epochs"
                    break
                if deadline is not None and time.time() >= deadline:
                    done, stopped_by = True, "minutes"
                    break
            else:
                epoch += 1
                batch_in_epoch = 0
    except (KeyboardInterrupt, DataError) as e:
        bar.close()
        if mid_step:  # a second Ctrl-C inside the update: a checkpoint now would hold weights a step ahead
            if is_main:
                print(f"[patronus] stopped inside step {step + 1}; nothing saved, the last checkpoint stands — "
                      f"continue with --resume")
        elif step > 0:
            checkpoint_now()
            if is_main:
                print(f"[patronus] stopped at step {step} ({type(e).__name__}); checkpoint saved — "
                      f"continue with --resume")
        raise
    finally:
        interrupt.uninstall()
    bar.close()
    checkpoint_now()
    if is_main:
        save_weights(run_dir / "model.safetensors", ema.model.state_dict(),
                     metadata={"format": "patronus-ema", "step": str(step)})
        if tc.sample_every:
            _save_preview(ema.model, preview_fn, preview_x, preview_y, schedule, cfg, run_dir, step)
        write_json(run_dir / "train_summary.json", {
            "step": step, "epoch": epoch + batch_in_epoch / per_epoch, "images_seen": images_seen,
            "steps_this_invocation": step - start_step, "images_this_invocation": images_seen - start_images,
            "elapsed_s_this_invocation": time.time() - t_start, "last_loss": last_loss, "stopped_by": stopped_by,
            "peak_memory_mb": peak_memory_mb(dev), "device": str(dev)})
    if world > 1:
        torch.distributed.barrier()
    return TrainResult(run_dir, step, images_seen, time.time() - t_start, last_loss, stopped_by, step - start_step)


def _log_row(window, T, step, epoch, images_seen, lr, ips, elapsed) -> dict:
    t = torch.cat(window["t"]) if window["t"] else torch.zeros(0)
    per = torch.cat(window["per"]) if window["per"] else torch.zeros(0)
    row = {"step": step, "epoch": round(epoch, 4), "images_seen": images_seen,
           "loss": sum(window["loss"]) / max(len(window["loss"]), 1),
           "extra": sum(window["extra"]) / len(window["extra"]) if window["extra"] else "",
           "grad_norm": sum(window["gn"]) / max(len(window["gn"]), 1), "lr": lr,
           "images_per_s": round(ips, 3), "elapsed_s": round(elapsed, 2)}
    for key in ("honour", "cluster"):
        row[key] = sum(window[key]) / len(window[key]) if window[key] else ""
    for q in range(4):
        m = (t >= q * T // 4) & (t < (q + 1) * T // 4)
        row[f"loss_q{q + 1}"] = float(per[m].mean()) if m.any() else ""
    return row


@torch.no_grad()
def _save_preview(ema_model, preview_fn, x, y, schedule, cfg, run_dir: Path, step: int) -> None:
    ema_model.eval()
    imgs = preview_fn(ema_model, x, y, schedule, cfg, seed=0)
    save_grid(imgs, run_dir / "samples" / f"step_{step:06d}.png", upscale=2)
