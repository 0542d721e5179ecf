"""Train the diffusion prior over s (``patronus train-prior``).

    s = f(x) for every training image      frozen encoder, batched, no autograd, cached to a file
    z = (s - mean) / std                   per prototype, statistics of the training s
    L = E ||eps - eps_phi(sqrt(abar_t) z + sqrt(1 - abar_t) eps, t)||^2,   t ~ U{0..T-1}

Adam with linear warm-up, gradient clipping and an EMA of the weights. The output directory holds

    prior.safetensors   EMA weights ("net.*") + s_mean, s_std, s_min, s_max
    prior.json          PriorConfig, source run and weights, training summary, sample checks
    prior_log.csv       step, loss, lr, seconds
    checkpoint/         full state (weights, EMA, Adam, generator, step) for exact resume

Batches, timesteps and noise come from one seeded generator whose state is checkpointed, so an
interrupted run resumed with ``--resume`` reproduces the straight run.

The encodings are cached in ``$PATRONUS_CACHE/s`` (default ``~/.cache/patronus-diffusion/s``) under a
key of the run directory, the sha256 of its weights file, the split and the data config.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from tqdm.auto import tqdm

from ..config import ConfigError
from ..diffusion.schedule import NoiseSchedule
from ..diffusion.prior import LatentPrior, training_target
from ..models.prior import PRIOR_META, PRIOR_WEIGHTS, PriorConfig, PriorMLP, SStatistics
from ..utils.io import atomic_path, write_json, write_text
from ..runs import (CheckpointError, flatten_optimizer, generator_state, load_into, load_weights,
                    read_checkpoint_state, recover_checkpoint_dir, set_generator_state, sha256,
                    unflatten_optimizer, weights_file, write_checkpoint_dir)
from .ema import EMA
from .lr import warmup_lr

LOG_FIELDS = ["step", "loss", "lr", "seconds"]


# ------------------------------------------------------------------------------------ encoding cache
def s_cache_dir(cache_dir: str | Path | None = None) -> Path:
    import os

    if cache_dir:
        return Path(cache_dir)
    root = os.environ.get("PATRONUS_CACHE")
    return (Path(root) if root else Path.home() / ".cache" / "patronus-diffusion") / "s"


def encoding_key(pat, weights: str, split: str) -> dict:
    wfile = weights_file(pat.run_dir, weights)
    return {"run": str(Path(pat.run_dir).resolve()), "weights": weights, "weights_sha256": sha256(wfile),
            "split": split, "data": asdict(pat.config.data) | {"num_workers": None}}


@torch.no_grad()
def encode_split(pat, split: str = "train", weights: str = "ema", cache_dir: str | Path | None = None,
                 batch_size: int = 512, progress: bool = True) -> tuple[torch.Tensor, dict]:
    """s of every image of ``split`` (N, P), from the cache when the same run/weights/split was encoded before."""
    key = encoding_key(pat, weights, split)
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
    path = s_cache_dir(cache_dir) / f"{Path(pat.run_dir).name}-{split}-{digest}.safetensors"
    if path.exists():
        try:
            t = load_file(str(path))
            meta = json.loads(path.with_suffix(".json").read_text())
            if meta.get("key") == key:
                return t["s"], {**meta, "cache_file": str(path), "from_cache": True}
        except (OSError, ValueError, KeyError, json.JSONDecodeError):
            pass  # damaged cache entry: encode again
    t0 = time.time()
    s = pat.encode_dataset(split, chunk=batch_size, progress=progress, desc=f"encode {split}").s.float().contiguous()
    meta = {"key": key, "n": int(s.shape[0]), "seconds": round(time.time() - t0, 1)}
    with atomic_path(path) as tmp:
        save_file({"s": s}, str(tmp))
    write_json(path.with_suffix(".json"), meta)
    return s, {**meta, "cache_file": str(path), "from_cache": False}


# ------------------------------------------------------------------------------------ checks
def frechet_s(a: torch.Tensor, b: torch.Tensor) -> float:
    """Frechet distance between Gaussian fits of two sets of s vectors (a cheap check of the prior)."""
    from ..evaluation.fid import feature_statistics, frechet_distance

    return frechet_distance(*feature_statistics(a), *feature_statistics(b))


@torch.no_grad()
def heldout_prior_loss(prior: LatentPrior, z: torch.Tensor, seed: int = 0) -> float:
    """eps-MSE of the prior on standardised s at stratified timesteps with fixed noise."""
    g = torch.Generator().manual_seed(seed)
    n, T = z.shape[0], prior.schedule.num_timesteps
    t = (torch.arange(n) * T // n)[torch.randperm(n, generator=g)]
    noise = torch.randn(z.shape, generator=g)
    losses = []
    for i in range(0, n, 1024):
        tb, nb = t[i:i + 1024], noise[i:i + 1024]
        losses.append(((prior.eps(prior.schedule.q_sample(z[i:i + 1024], tb, nb), tb) - nb) ** 2).mean(1))
    return float(torch.cat(losses).mean())


def sample_checks(prior: LatentPrior, s_train: torch.Tensor, s_test: torch.Tensor | None, n: int = 2000,
                  seed: int = 1234) -> dict:
    """Range report and Frechet distances in s-space of n prior samples (cheap: no image is decoded)."""
    s_gen = prior.sample(n, seed=seed)
    g = torch.Generator().manual_seed(seed)
    ref = s_train[torch.randperm(s_train.shape[0], generator=g)[:n]]
    out = {"n": n, "sampler": prior.cfg.sampler, "steps": prior.cfg.sample_steps, "seed": seed,
           "range": prior.stats.range_report(s_gen),
           "frechet_s": {"prior_vs_train": float(f"{frechet_s(s_gen, ref):.4g}")}}
    if s_test is not None:
        test = s_test[torch.randperm(s_test.shape[0], generator=g)[:n]]
        out["frechet_s"]["test_vs_train (floor)"] = float(f"{frechet_s(test, ref):.4g}")
        gauss = prior.stats.unstandardise(torch.randn(n, s_train.shape[1], generator=g))
        out["frechet_s"]["gaussian_vs_train (baseline)"] = float(f"{frechet_s(gauss, ref):.4g}")
    return out


# ------------------------------------------------------------------------------------ training
@dataclass
class PriorResult:
    out: Path
    step: int
    last_loss: float
    seconds: float
    stopped_by: str


def _save_checkpoint(out: Path, step: int, net, ema: EMA, opt, gen: torch.Generator, cfg: PriorConfig,
                     source: dict, elapsed: float) -> None:
    opt_tensors, opt_meta = flatten_optimizer(opt)
    write_checkpoint_dir(out / "checkpoint",
                         {"model.safetensors": net.state_dict(), "ema.safetensors": ema.model.state_dict(),
                          "optimizer.safetensors": opt_tensors},
                         {"step": step, "ema_updates": ema.num_updates, "generator": generator_state(gen),
                          "optimizer": opt_meta, "config": asdict(cfg), "source": source, "elapsed_s": elapsed})


def _architecture(cfg: PriorConfig) -> dict:
    return {k: getattr(cfg, k) for k in ("hidden", "blocks", "time_dim", "timesteps", "beta_start", "beta_end")}


def optimise(net, ema: EMA, opt, gen: torch.Generator, z: torch.Tensor, schedule: NoiseSchedule,
             cfg: PriorConfig, step: int = 0, progress: bool = False, log=None, checkpoint=None):
    """The training loop on standardised vectors z (N, P); returns (step, last mean loss, stopped_by)."""
    deadline = time.time() + cfg.max_minutes * 60 if cfg.max_minutes else None
    n, T = z.shape[0], schedule.num_timesteps
    window, last_loss, stopped_by = [], float("nan"), "steps"
    bar = tqdm(total=cfg.max_steps, initial=step, desc="train prior", disable=not progress, dynamic_ncols=True)
    net.train()
    while step < cfg.max_steps:
        if deadline is not None and time.time() > deadline:
            stopped_by = "minutes"
            break
        idx = torch.randint(0, n, (cfg.batch_size,), generator=gen)
        t = torch.randint(0, T, (cfg.batch_size,), generator=gen)
        noise = torch.randn((cfg.batch_size, z.shape[1]), generator=gen)
        target = training_target(z[idx], noise, t, schedule, cfg.prediction)
        loss = ((net(schedule.q_sample(z[idx], t, noise), t) - target) ** 2).mean()
        for group in opt.param_groups:
            group["lr"] = warmup_lr(step, cfg.lr, cfg.warmup_steps)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if cfg.grad_clip:
            torch.nn.utils.clip_grad_norm_(net.parameters(), cfg.grad_clip)
        opt.step()
        ema.update(net)
        step += 1
        window.append(float(loss.detach()))
        bar.update(1)
        if step % cfg.log_every == 0 or step == cfg.max_steps:
            last_loss = sum(window) / len(window)
            window = []
            bar.set_postfix(loss=f"{last_loss:.4f}")
            if log is not None:
                log(step, last_loss)
        if checkpoint is not None and cfg.checkpoint_every and step % cfg.checkpoint_every == 0:
            checkpoint(step)
    bar.close()
    net.eval()
    if window:
        last_loss = sum(window) / len(window)
    return step, last_loss, stopped_by


def fit_prior(s: torch.Tensor, cfg: PriorConfig | None = None, progress: bool = False) -> LatentPrior:
    """Fit a prior to any set of vectors s (N, P) in memory (no files): the same loop as train_prior."""
    cfg = (cfg or PriorConfig()).validate()
    stats, z, schedule, net, ema, opt, gen = _fresh_training_state(s, cfg)
    optimise(net, ema, opt, gen, z, schedule, cfg, 0, progress)
    return LatentPrior(ema.model, stats, cfg)


def _fresh_training_state(s: torch.Tensor, cfg: PriorConfig):
    """Statistics, standardised data, schedule, network, EMA, optimiser and generator of a new prior fit."""
    stats = SStatistics.of(s)
    schedule = NoiseSchedule.from_config(cfg.diffusion)
    torch.manual_seed(cfg.seed)
    net = PriorMLP(s.shape[1], cfg)
    ema = EMA(net, cfg.ema_decay)
    opt = torch.optim.Adam(net.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    gen = torch.Generator().manual_seed(cfg.seed * 7919 + 1)
    return stats, stats.standardise(s), schedule, net, ema, opt, gen


def train_prior(pat, out: str | Path, cfg: PriorConfig | None = None, *, weights: str = "ema", resume: bool = False,
                progress: bool = True, cache_dir: str | Path | None = None,
                max_steps: int | None = None, max_minutes: float | None = None) -> PriorResult:
    """Encode the training split with the frozen encoder of ``pat`` (a loaded :class:`~patronus_diffusion.Patronus`
    whose ``weights`` these are) and fit the prior into ``out``."""
    cfg = replace(cfg or PriorConfig()).validate()  # a copy: the budgets below must not change the caller's
    if max_steps is not None:
        cfg.max_steps = max_steps
    if max_minutes is not None:
        cfg.max_minutes = max_minutes
    out = Path(out)
    ckpt = out / "checkpoint"
    if ckpt.exists() and not resume:
        raise ConfigError(f"{out} already holds a prior checkpoint; pass --resume to continue it or choose another --out")
    s_train, enc_meta = encode_split(pat, "train", weights, cache_dir, progress=progress)
    try:
        s_test, _ = encode_split(pat, "test", weights, cache_dir, progress=progress)
    except Exception:  # noqa: BLE001 - a dataset without a test split still trains a prior
        s_test = None
    source = {"run": str(pat.run_dir), "weights": weights, "weights_sha256": enc_meta["key"]["weights_sha256"],
              "split": "train", "n_s": int(s_train.shape[0]), "encoding_cache": enc_meta["cache_file"]}
    stats, z, schedule, net, ema, opt, gen = _fresh_training_state(s_train, cfg)
    step, elapsed_before, saved_step = 0, 0.0, None  # saved_step: the step checkpoint/ holds
    # checkpoint/ is replaced at every save (two renames): a crash between them left only complete copies
    # (.tmp_checkpoint, checkpoint.old), which are put back instead of silently starting over
    if resume and recover_checkpoint_dir(ckpt, repair=True) is not None and (ckpt / "state.json").exists():
        state = read_checkpoint_state(ckpt)
        saved = PriorConfig.from_dict(state["config"])
        if _architecture(saved) != _architecture(cfg):
            raise ConfigError(f"{out} was trained with {_architecture(saved)}; resume with the same network settings")
        if state["source"]["weights_sha256"] != source["weights_sha256"]:
            raise CheckpointError(f"{out} was trained on the s of another model ({state['source']['run']}); "
                                  f"use a new --out for this run")
        load_into(net, load_weights(ckpt / "model.safetensors"), ckpt / "model.safetensors")
        load_into(ema.model, load_weights(ckpt / "ema.safetensors"), ckpt / "ema.safetensors")
        opt.load_state_dict(unflatten_optimizer(load_weights(ckpt / "optimizer.safetensors"), state["optimizer"]))
        ema.num_updates, step = state["ema_updates"], state["step"]
        saved_step = step
        set_generator_state(gen, state["generator"])
        elapsed_before = state.get("elapsed_s", 0.0)
    out.mkdir(parents=True, exist_ok=True)
    log_path = out / "prior_log.csv"
    if step == 0 or not log_path.exists():
        write_text(log_path, ",".join(LOG_FIELDS) + "\n")
    else:  # drop rows logged after the checkpoint we resume from (they will be logged again)
        rows = log_path.read_text().splitlines()
        write_text(log_path, "\n".join([rows[0]] + [r for r in rows[1:] if int(r.split(",")[0]) <= step]) + "\n")
    t0 = time.time()

    def log(step_now: int, loss_now: float) -> None:
        with open(log_path, "a") as f:
            f.write(f"{step_now},{loss_now:.6f},{warmup_lr(step_now - 1, cfg.lr, cfg.warmup_steps):.3g},{elapsed_before + time.time() - t0:.1f}\n")

    def checkpoint(step_now: int) -> None:
        nonlocal saved_step
        if step_now == saved_step:  # never rewrite a step already saved (each rewrite is two renames)
            return
        _save_checkpoint(out, step_now, net, ema, opt, gen, cfg, source, elapsed_before + time.time() - t0)
        saved_step = step_now

    step, last_loss, stopped_by = optimise(net, ema, opt, gen, z, schedule, cfg, step, progress, log, checkpoint)
    if last_loss != last_loss:  # nothing trained in this call (resumed at the budget): report the last logged loss
        rows = log_path.read_text().splitlines()[1:]
        last_loss = float(rows[-1].split(",")[1]) if rows else last_loss
    checkpoint(step)
    elapsed = elapsed_before + time.time() - t0
    prior = LatentPrior(ema.model, stats, cfg)
    _export(out, prior, cfg, source, step, last_loss, elapsed, s_train, s_test, schedule, pat)
    return PriorResult(out, step, last_loss, elapsed, stopped_by)


def _export(out: Path, prior: LatentPrior, cfg: PriorConfig, source: dict, step: int, last_loss: float,
            elapsed: float, s_train: torch.Tensor, s_test: torch.Tensor | None, schedule: NoiseSchedule, pat) -> None:
    tensors = {f"net.{k}": v.detach().cpu().contiguous() for k, v in prior.net.state_dict().items()}
    tensors.update(prior.stats.tensors())
    with atomic_path(out / PRIOR_WEIGHTS) as tmp:
        save_file(tensors, str(tmp))
    held = {"train": heldout_prior_loss(prior, prior.stats.standardise(s_train[:10000]))}
    if s_test is not None:
        held["test"] = heldout_prior_loss(prior, prior.stats.standardise(s_test))
    meta = {
        "config": asdict(cfg), "source": source,
        "decoder": {"preset": pat.config.preset, "prototypes": pat.num_prototypes,
                    "images_seen": pat.info().get("images_seen")},
        "training": {"steps": step, "last_loss": round(last_loss, 6), "seconds": round(elapsed, 1),
                     "s_vectors_seen": step * cfg.batch_size,
                     "parameters": sum(p.numel() for p in prior.net.parameters())},
        "heldout_eps_mse": {k: round(v, 5) for k, v in held.items()},
        "checks": sample_checks(prior, s_train, s_test),
    }
    write_json(out / PRIOR_META, meta)


def default_prior_dir(run_dir: str | Path) -> Path:
    """Where ``train-prior`` writes by default and ``sample --unconditional`` looks: RUN/prior."""
    return Path(run_dir) / "prior"


def find_prior(run_dir: str | Path, prior: str | Path | None = None) -> Path:
    path = Path(prior) if prior else default_prior_dir(run_dir)
    if not (path / PRIOR_WEIGHTS).exists():
        hint = f"--prior {path}" if prior else f"--prior DIR (no prior in {path})"
        raise CheckpointError(f"unconditional sampling needs a prior over s: run `patronus train-prior --run "
                              f"{run_dir} --out {path}` first, or pass {hint}")
    return path

