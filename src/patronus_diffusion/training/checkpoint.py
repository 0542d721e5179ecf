"""Checkpoints: safetensors for tensors, JSON for everything else; never pickles.

A run directory looks like::

    run/
      config.json                    the RunConfig the model is rebuilt from
      latest.json                    {"checkpoint": "checkpoints/step_000500", "step": 500}
      checkpoints/step_000500/
        model.safetensors            raw weights
        ema.safetensors              EMA weights (used for sampling by default)
        optimizer.safetensors        AdamW moments (+ optimizer.json for hyper-parameters)
        state.json                   step, epoch, RNG states, config, sha256 of every file
      model.safetensors              slim EMA-only export written at the end of training

A checkpoint directory is written under a temporary name, fsynced, then renamed; ``latest.json``
is replaced atomically afterwards, so a crash or a full disk leaves the previous checkpoint usable.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from ..config import ConfigError, RunConfig
from ..utils.io import _UMASK, DiskWriteError, _explain, replace_dir, write_json

FORMAT_VERSION = 1
ARCHITECTURE_SECTIONS = ("family", "prototypes", "unet", "diffusion")
ARCHITECTURE_DATA_KEYS = ("image_size", "channels")


class CheckpointError(RuntimeError):
    """A checkpoint is missing, damaged, or does not match the model it should load into."""


# ------------------------------------------------------------------------------- helpers
def sha256(path: Path) -> str:
    return file_digest(path, "sha256")


def file_digest(path: Path, algorithm: str = "sha256") -> str:
    """Hex digest of a file, read in 1 MiB chunks."""
    h = hashlib.new(algorithm)
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _state_dict_for_saving(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v.detach().to("cpu").contiguous() for k, v in sd.items()}


def save_weights(path: Path, sd: dict[str, torch.Tensor], metadata: dict[str, str] | None = None) -> None:
    from ..utils.io import atomic_path

    with atomic_path(path) as tmp:
        save_file(_state_dict_for_saving(sd), str(tmp), metadata=metadata)


def load_weights(path: Path) -> dict[str, torch.Tensor]:
    if not path.exists():
        raise CheckpointError(f"missing weights file {path}")
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError) as e:
        raise CheckpointError(f"{path} is damaged or not a safetensors file ({e}). Use an earlier checkpoint "
                              f"(see the run's checkpoints/ folder) or retrain.") from None


def load_into(module: torch.nn.Module, sd: dict[str, torch.Tensor], source: Path) -> None:
    """Strict load with an error that lists what differs."""
    own = module.state_dict()
    missing = sorted(set(own) - set(sd))
    unexpected = sorted(set(sd) - set(own))
    wrong = [f"{k}: checkpoint {tuple(sd[k].shape)} vs model {tuple(own[k].shape)}"
             for k in own if k in sd and sd[k].shape != own[k].shape]
    if missing or unexpected or wrong:
        parts = []
        if wrong:
            parts.append(f"{len(wrong)} shape mismatch(es), e.g. {wrong[:3]}")
        if missing:
            parts.append(f"{len(missing)} missing tensor(s), e.g. {missing[:3]}")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected tensor(s), e.g. {unexpected[:3]}")
        raise CheckpointError(f"{source} does not fit the model built from this config: {'; '.join(parts)}. "
                              f"Load it with the config.json it was saved with.")
    module.load_state_dict(sd)


def _rng_to_json(state: torch.Tensor) -> str:
    return base64.b64encode(state.numpy().tobytes()).decode()


def _rng_from_json(s: str) -> torch.Tensor:
    return torch.frombuffer(bytearray(base64.b64decode(s)), dtype=torch.uint8).clone()


def flatten_optimizer(opt: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    sd = opt.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, Any] = {}
    for idx, st in sd["state"].items():
        for k, v in st.items():
            if isinstance(v, torch.Tensor):
                tensors[f"{idx}.{k}"] = v
            else:
                scalars[f"{idx}.{k}"] = v
    return tensors, {"param_groups": sd["param_groups"], "scalars": scalars}


def unflatten_optimizer(tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> dict[str, Any]:
    state: dict[int, dict[str, Any]] = {}
    for key, v in list(tensors.items()) + list(meta.get("scalars", {}).items()):
        idx, name = key.split(".", 1)
        state.setdefault(int(idx), {})[name] = v
    return {"state": state, "param_groups": meta["param_groups"]}


# ------------------------------------------------------------------------------- save / load
def save_checkpoint(run_dir: Path, *, step: int, model: torch.nn.Module, ema: torch.nn.Module | None,
                    optimizer: torch.optim.Optimizer | None, config: RunConfig, state: dict[str, Any],
                    keep: int = 2) -> Path:
    """Write checkpoints/step_XXXXXX atomically and point latest.json at it."""
    run_dir = Path(run_dir)
    ck_root = run_dir / "checkpoints"
    final = ck_root / f"step_{step:06d}"
    tmp = ck_root / f".tmp_step_{step:06d}"
    try:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        files = {"model.safetensors": model.state_dict()}
        if ema is not None:
            files["ema.safetensors"] = ema.state_dict()
        opt_meta = None
        if optimizer is not None:
            opt_tensors, opt_meta = flatten_optimizer(optimizer)
            files["optimizer.safetensors"] = opt_tensors
        digests = {}
        for name, sd in files.items():
            save_file(_state_dict_for_saving(sd), str(tmp / name))
            digests[name] = {"sha256": sha256(tmp / name), "bytes": (tmp / name).stat().st_size}
        full_state = {
            "format_version": FORMAT_VERSION,
            "step": step,
            **state,
            "rng": {"torch": _rng_to_json(torch.get_rng_state()),
                    **({"cuda": [_rng_to_json(s) for s in torch.cuda.get_rng_state_all()]}
                       if torch.cuda.is_available() else {}),
                    **state.get("rng", {})},
            "optimizer": opt_meta,
            "files": digests,
            "config": config.to_dict(),
        }
        (tmp / "state.json").write_text(json.dumps(full_state, indent=1))
        for p in tmp.iterdir():
            os.chmod(p, 0o666 & ~_UMASK)
            with open(p, "rb") as f:
                os.fsync(f.fileno())
        replace_dir(tmp, final)
        write_json(run_dir / "latest.json", {"checkpoint": str(final.relative_to(run_dir)), "step": step})
    except OSError as e:
        shutil.rmtree(tmp, ignore_errors=True)
        raise DiskWriteError(e.errno, _explain(final, e)) from None
    _prune(ck_root, keep, protect=final)
    return final


def _prune(ck_root: Path, keep: int, protect: Path) -> None:
    if keep <= 0:
        return
    ckpts = sorted(p for p in ck_root.glob("step_*") if p.is_dir())
    for p in ckpts[:-keep]:
        if p != protect:
            shutil.rmtree(p, ignore_errors=True)


def latest_checkpoint(run_dir: Path) -> Path | None:
    run_dir = Path(run_dir)
    pointer = run_dir / "latest.json"
    if pointer.exists():
        try:
            path = run_dir / json.loads(pointer.read_text())["checkpoint"]
        except (json.JSONDecodeError, KeyError) as e:
            raise CheckpointError(f"{pointer} is damaged ({e}); delete it to fall back to the newest "
                                  f"checkpoint folder") from None
        if path.is_dir():
            return path
    ckpts = sorted(p for p in (run_dir / "checkpoints").glob("step_*") if p.is_dir())
    return ckpts[-1] if ckpts else None


def read_checkpoint_state(ckpt: Path, verify: bool = True) -> dict[str, Any]:
    state_path = ckpt / "state.json"
    try:
        state = json.loads(state_path.read_text())
    except FileNotFoundError:
        raise CheckpointError(f"{ckpt} has no state.json: it is not a complete checkpoint") from None
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{state_path} is damaged ({e})") from None
    if verify:
        for name, meta in state.get("files", {}).items():
            p = ckpt / name
            if not p.exists():
                raise CheckpointError(f"{p} is missing from the checkpoint")
            if p.stat().st_size != meta["bytes"] or sha256(p) != meta["sha256"]:
                raise CheckpointError(f"{p} is damaged (its checksum does not match state.json). Use an earlier "
                                      f"checkpoint in {ckpt.parent} or retrain.")
    return state


def restore_rng(state: dict[str, Any]) -> None:
    rng = state.get("rng", {})
    if "torch" in rng:
        torch.set_rng_state(_rng_from_json(rng["torch"]))
    if "cuda" in rng and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([_rng_from_json(s) for s in rng["cuda"]])


def generator_state(g: torch.Generator) -> str:
    return _rng_to_json(g.get_state())


def set_generator_state(g: torch.Generator, s: str) -> None:
    g.set_state(_rng_from_json(s))


def architecture_differences(a: RunConfig, b: RunConfig) -> list[str]:
    """Config fields that change the network's shape (everything else may differ on resume)."""
    da, db = a.to_dict(), b.to_dict()
    diffs = []
    for sec in ARCHITECTURE_SECTIONS:
        va, vb = da[sec], db[sec]
        if isinstance(va, dict):
            diffs += [f"{sec}.{k}: {va[k]!r} vs {vb.get(k)!r}" for k in va if va[k] != vb.get(k)]
        elif va != vb:
            diffs.append(f"{sec}: {va!r} vs {vb!r}")
    diffs += [f"data.{k}: {da['data'][k]!r} vs {db['data'][k]!r}" for k in ARCHITECTURE_DATA_KEYS
              if da["data"][k] != db["data"][k]]
    return diffs


def read_run_config(run_dir: Path) -> RunConfig:
    path = Path(run_dir) / "config.json"
    if not path.exists():
        raise CheckpointError(f"{run_dir} is not a run directory (no config.json). Train one with "
                              f"`patronus train --out {run_dir}` or pass an existing run.")
    try:
        return RunConfig.from_dict(json.loads(path.read_text())).validate()
    except (json.JSONDecodeError, ConfigError, TypeError) as e:
        raise CheckpointError(f"{path} is damaged or from an incompatible version: {e}") from None
