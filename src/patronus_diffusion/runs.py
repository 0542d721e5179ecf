"""The run layer: run folders, their config, weights and checkpoints. Safetensors + JSON, never pickles.

Everything that reads or writes a run lives here, below models, training, analysis and the API, and imports
only the config and ``utils``. A run directory looks like::

    run/
      config.json                    the RunConfig the model is rebuilt from
      latest.json                    {"checkpoint": "checkpoints/step_000500", "step": 500}
      checkpoints/step_000500/
        model.safetensors            raw weights
        ema.safetensors              EMA weights (used for sampling by default)
        optimizer.safetensors        AdamW moments (hyper-parameters in state.json)
        state.json                   step, epoch, RNG states, config, sha256 and size of every file
      model.safetensors              slim EMA-only export written at the end of training

``pretrained:NAME`` names a run shipped inside the package (``patronus_diffusion/pretrained/NAME``).

:func:`write_checkpoint_dir` is the one checkpoint writer (the trainer's step folders and the prior's
``checkpoint/`` both use it): files are written under a temporary name, checksummed and fsynced, the folder
is renamed into place and its parent fsynced; ``latest.json`` is replaced atomically afterwards. A crash or a
full disk therefore leaves the previous checkpoint usable.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import shutil
import warnings
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from .config import ConfigError, RunConfig
from .utils.errors import UserError
from .utils.io import _UMASK, DiskWriteError, _explain, atomic_path, fsync_dir, replace_dir, write_json, write_text

PRETRAINED_DIR = Path(__file__).parent / "pretrained"
FORMAT_VERSION = 1
ARCHITECTURE_SECTIONS = ("family", "prototypes", "unet", "diffusion")
ARCHITECTURE_DATA_KEYS = ("image_size", "channels")


class CheckpointError(UserError, RuntimeError):
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
    """One safetensors file, written atomically."""
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
def write_checkpoint_dir(final: Path, tensors: dict[str, dict[str, torch.Tensor]], state: dict[str, Any]) -> Path:
    """Write a checkpoint folder ``final`` atomically: one safetensors file per entry of ``tensors``
    (``{"model.safetensors": state_dict, ...}``) and ``state.json`` = ``state`` plus the sha256 and size of each
    file, which :func:`read_checkpoint_state` verifies. An existing folder of that name is replaced."""
    final = Path(final)
    tmp = final.with_name(f".tmp_{final.name}")
    try:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        digests = {}
        for name, sd in tensors.items():
            save_file(_state_dict_for_saving(sd), str(tmp / name))
            digests[name] = {"sha256": sha256(tmp / name), "bytes": (tmp / name).stat().st_size}
        (tmp / "state.json").write_text(json.dumps({"format_version": FORMAT_VERSION, **state, "files": digests},
                                                   indent=1))
        for p in tmp.iterdir():
            os.chmod(p, 0o666 & ~_UMASK)
            with open(p, "rb") as f:
                os.fsync(f.fileno())
        fsync_dir(tmp)
        replace_dir(tmp, final)
        fsync_dir(final.parent)
    except OSError as e:
        shutil.rmtree(tmp, ignore_errors=True)
        raise DiskWriteError(e.errno, _explain(final, e)) from None
    return final


def torch_rng_state() -> dict[str, Any]:
    """torch's global RNG states (CPU and CUDA) as JSON strings."""
    return {"torch": _rng_to_json(torch.get_rng_state()),
            **({"cuda": [_rng_to_json(s) for s in torch.cuda.get_rng_state_all()]} if torch.cuda.is_available() else {})}


def save_checkpoint(run_dir: Path, *, step: int, model: torch.nn.Module, ema: torch.nn.Module | None,
                    optimizer: torch.optim.Optimizer | None, config: RunConfig, state: dict[str, Any],
                    keep: int = 2) -> Path:
    """Write checkpoints/step_XXXXXX (model, EMA, optimizer, state) and point latest.json at it."""
    run_dir = Path(run_dir)
    final = run_dir / "checkpoints" / f"step_{step:06d}"
    files = {"model.safetensors": model.state_dict()}
    if ema is not None:
        files["ema.safetensors"] = ema.state_dict()
    opt_meta = None
    if optimizer is not None:
        files["optimizer.safetensors"], opt_meta = flatten_optimizer(optimizer)
    write_checkpoint_dir(final, files, {"step": step, **state, "rng": {**torch_rng_state(), **state.get("rng", {})},
                                        "optimizer": opt_meta, "config": config.to_dict()})
    write_json(run_dir / "latest.json", {"checkpoint": str(final.relative_to(run_dir)), "step": step})
    _prune(run_dir / "checkpoints", keep, protect=final)
    return final


_STEP_DIR = re.compile(r"step_(\d+)")
# what an interrupted write_checkpoint_dir of step_N can leave (utils.io.replace_dir): the new copy, written and
# checksummed before any rename, and the previous copy of the same step while it is being replaced
_LEFTOVERS = (re.compile(r"\.tmp_step_(\d+)"), re.compile(r"step_(\d+)\.old"))


def checkpoint_dirs(run_dir: Path) -> list[Path]:
    """The complete ``checkpoints/step_N`` folders of a run, oldest first (by N, not by name; ``.old``/``.tmp``
    leftovers of an interrupted write are ignored)."""
    root = Path(run_dir) / "checkpoints"
    if not root.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in root.iterdir() if p.is_dir() and (m := _STEP_DIR.fullmatch(p.name))]
    return [p for _, p in sorted(found)]


def _prune(ck_root: Path, keep: int, protect: Path) -> None:
    if keep <= 0:
        return
    for p in checkpoint_dirs(ck_root.parent)[:-keep]:
        if p != protect:
            shutil.rmtree(p, ignore_errors=True)


def _is_complete(ckpt: Path) -> bool:
    """A checkpoint folder whose state.json is there and whose every file matches its recorded checksum."""
    try:
        read_checkpoint_state(ckpt)
    except (CheckpointError, OSError, KeyError, TypeError):
        return False
    return True


def _leftover_copies(final: Path) -> list[Path]:
    """Complete copies of checkpoint folder ``final`` that an interrupted write left, the newer first: the new
    copy (``.tmp_NAME``, complete only once it was checksummed, before the renames began), then the previous
    one (``NAME.old``)."""
    cands = (final.with_name(f".tmp_{final.name}"), final.with_name(f"{final.name}.old"))
    return [c for c in cands if c.is_dir() and _is_complete(c)]


def _put_back(copy: Path, final: Path) -> Path:
    """Move a recovered copy to its proper name (replacing an older ``final``) and drop the other leftovers."""
    if final.exists():
        replace_dir(copy, final)
    else:
        os.replace(copy, final)
    fsync_dir(final.parent)
    for other in (final.with_name(f".tmp_{final.name}"), final.with_name(f"{final.name}.old")):
        shutil.rmtree(other, ignore_errors=True)
    return final


def _saved_step(ckpt: Path) -> int | None:
    try:
        return int(json.loads((ckpt / "state.json").read_text())["step"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def recover_checkpoint_dir(final: Path, repair: bool = False) -> Path | None:
    """A checkpoint folder that is replaced in place (the prior's ``checkpoint/``): ``final`` when it is there;
    else a complete copy an interrupted write left (see :func:`utils.io.replace_dir`), used where it lies by a
    reader, moved back to ``final`` by a resume (``repair``), with a warning; else None. A resume also prefers a
    complete new copy (``.tmp_NAME``) of a later step than ``final`` (a crash before its first rename)."""
    final = Path(final)
    if final.is_dir():
        if not repair:
            return final
        mine = _saved_step(final)
        copies = [c for c in _leftover_copies(final)[:1] if c.name.startswith(".tmp_") and mine is not None
                  and (_saved_step(c) or -1) > mine]
        if not copies:
            return final
        said = f"{final} holds step {mine}, and an interrupted write left a complete copy of step " \
               f"{_saved_step(copies[0])}, {copies[0].name}"
    else:
        copies = _leftover_copies(final)
        if not copies:
            return None
        said = f"{final} is missing: an interrupted checkpoint write left a complete copy, {copies[0].name}"
    warnings.warn(said + ("; it is moved into place" if repair else "; loading it from there"), stacklevel=2)
    return _put_back(copies[0], final) if repair else copies[0]


def _step_of(path: Path) -> int | None:
    m = _STEP_DIR.fullmatch(path.name)
    return int(m.group(1)) if m else None


def latest_checkpoint(run_dir: Path, repair: bool = False) -> Path | None:
    """The newest complete checkpoint of a run: the one ``latest.json`` names, unless an interrupted write left
    a newer one or the pointer dangles.

    A checkpoint write is: the new folder complete under a temporary name, renamed into place (two renames when
    it replaces a folder of the same step), then ``latest.json`` replaced. A crash at any of these renames leaves
    the previous step (which the pointer still names) and possibly a complete newer copy: a ``step_N`` folder
    newer than the pointer, or ``.tmp_step_N`` / ``step_N.old`` with no ``step_N``. The newest complete one is
    returned (with a warning when the pointer did not name it). ``repair`` (resume) also moves a recovered copy
    into place and points ``latest.json`` at it; readers (``repair=False``) change nothing and consider
    ``.tmp``/``.old`` copies only when the pointer's folder is missing (a ``.tmp`` newer than the pointer may be a
    write still in progress)."""
    run_dir = Path(run_dir)
    pointer = run_dir / "latest.json"
    named, named_text = None, ""
    if pointer.exists():
        try:
            named_text = str(json.loads(pointer.read_text())["checkpoint"])
            named = run_dir / named_text
        except (json.JSONDecodeError, KeyError, TypeError) as e:
            raise CheckpointError(f"{pointer} is damaged ({e}); delete it to fall back to the newest "
                                  f"checkpoint folder") from None
    found: dict[int, Path] = {s: p for p in checkpoint_dirs(run_dir) if (s := _step_of(p)) is not None}
    root = run_dir / "checkpoints"
    dangling = named is not None and not named.is_dir()
    if (repair or dangling or named is None) and root.is_dir():
        steps = {int(m.group(1)) for p in root.iterdir() for rx in _LEFTOVERS if (m := rx.fullmatch(p.name))}
        for s in sorted((s for s in steps if s > max(found, default=-1)), reverse=True):
            copies = _leftover_copies(root / f"step_{s:06d}")
            if copies:  # the newest leftover that is complete
                found[s] = copies[0]
                break
    step = max(found) if found else None
    newest = found[step] if found else None
    named_step = _step_of(named) if named is not None else None
    if named is not None and not dangling and (newest is None or named_step is None or named_step >= step):
        if repair:
            _drop_leftovers(root)
        return named
    if newest is None:
        if dangling:
            warnings.warn(f"{pointer} names {named_text}, which is missing, and no complete checkpoint is left "
                          f"in {root}", stacklevel=2)
        return None
    recovered = _step_of(newest) is None  # a .tmp_/.old copy
    using = f"the complete copy {newest.name} that it left" if recovered else newest.name
    if named is not None or recovered:
        said = (f"{pointer} names {named_text}, which is missing: a checkpoint write was interrupted" if dangling
                else f"{pointer} names {named_text}, but a newer checkpoint is complete: a checkpoint write was "
                     f"interrupted (or is under way)" if named is not None
                else f"{pointer} is missing: a checkpoint write was interrupted")
        warnings.warn(f"{said}; using {using} (step {step})" + ("; moved back into place" if repair and recovered
                                                                 else ""), stacklevel=2)
    if repair:
        if recovered:
            newest = _put_back(newest, root / f"step_{step:06d}")
        write_json(pointer, {"checkpoint": str(newest.relative_to(run_dir)), "step": step})
        _drop_leftovers(root)
    return newest


def _drop_leftovers(root: Path) -> None:
    """Remove every ``.tmp_step_N`` / ``step_N.old`` folder: once the newest complete checkpoint is in place and
    named by latest.json, they are older copies or unfinished writes."""
    if root.is_dir():
        for p in root.iterdir():
            if p.is_dir() and any(rx.fullmatch(p.name) for rx in _LEFTOVERS):
                shutil.rmtree(p, ignore_errors=True)


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


def write_run_config(run_dir: Path, cfg: RunConfig) -> None:
    write_text(Path(run_dir) / "config.json", cfg.to_json())


def read_run_config(run_dir: Path) -> RunConfig:
    path = Path(run_dir) / "config.json"
    if not path.exists():
        raise CheckpointError(f"{run_dir} is not a run directory (no config.json). Train one with "
                              f"`patronus train --out {run_dir}` or pass an existing run.")
    try:
        return RunConfig.from_dict(json.loads(path.read_text())).validate()
    except (json.JSONDecodeError, ConfigError, TypeError) as e:
        raise CheckpointError(f"{path} is damaged or from an incompatible version: {e}") from None


# ------------------------------------------------------------------------------- run names
def resolve_run(run: str | Path) -> Path:
    """A run directory, or ``pretrained:NAME`` for a model shipped with the package."""
    text = str(run)
    if text.startswith("pretrained:"):
        name = text.split(":", 1)[1]
        path = PRETRAINED_DIR / name
        if not (path / "config.json").exists():
            known = sorted(p.name for p in PRETRAINED_DIR.iterdir() if (p / "config.json").exists()) \
                if PRETRAINED_DIR.exists() else []
            raise CheckpointError(f"no pretrained model {name!r}; shipped: {', '.join(known) or 'none'}")
        return path
    path = Path(text)
    if not path.exists():
        raise CheckpointError(f"run {path} does not exist; train one with `patronus train --out {path}` "
                              f"or use pretrained:fashion-mnist")
    return path


def stored_weights_kind(run_dir: Path) -> str:
    """What a run's slim ``model.safetensors`` holds: ``raw`` for a run made by ``import-reference`` (its
    ``import.json`` says so; one written before it named them held raw weights too) or an export of one; else
    ``ema`` (the trainer's export and ``patronus export``)."""
    for name, default in (("import.json", "raw"), ("export.json", "ema")):
        path = Path(run_dir) / name
        if path.exists():
            try:
                kind = json.loads(path.read_text()).get("weights", default)
            except (json.JSONDecodeError, AttributeError) as e:
                raise CheckpointError(f"{path} is damaged ({e})") from None
            return kind if kind in ("ema", "raw") else default
    return "ema"


def weights_file(run_dir: Path, weights: str) -> Path:
    """EMA weights from the newest checkpoint (or the EMA export); ``raw`` for the un-averaged weights. A run
    without checkpoints serves its ``model.safetensors`` for ``ema`` and, when they are raw weights (an
    imported reference), for ``raw`` too."""
    if weights not in ("ema", "raw"):
        raise ConfigError("weights must be 'ema' or 'raw'")
    ckpt = latest_checkpoint(run_dir)
    if ckpt is not None:
        read_checkpoint_state(ckpt)  # verifies checksums
        return ckpt / ("ema.safetensors" if weights == "ema" else "model.safetensors")
    if (run_dir / "model.safetensors").exists():
        if weights == "ema" or stored_weights_kind(run_dir) == "raw":
            return run_dir / "model.safetensors"
        raise CheckpointError(f"{run_dir} holds only EMA weights (an export, no checkpoints): use --weights ema")
    raise CheckpointError(f"{run_dir} has no {'checkpoint' if weights == 'raw' else 'weights'} to load")


# ------------------------------------------------------------------------------- export
def export_run(run: Path, out: Path) -> dict[str, Path]:
    """An inference-only copy of a run (loads like a run): the newest checkpoint's EMA weights (verified), the
    config, training log and summary, the last preview, and ``export.json`` naming the source. Atomic."""
    run, out = Path(run), Path(out)
    read_run_config(run)  # fails clearly on a non-run directory
    ckpt = latest_checkpoint(run)
    state = read_checkpoint_state(ckpt) if ckpt is not None else {}
    src_weights = weights_file(run, "ema")
    kind = "ema" if ckpt is not None else stored_weights_kind(run)  # an imported run's only weights are raw
    numbered = ((_STEP_DIR.fullmatch(p.stem), p) for p in (run / "samples").glob("step_*.png"))
    previews = [p for _, p in sorted((int(m.group(1)), p) for m, p in numbered if m)]
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    shutil.copyfile(src_weights, tmp / "model.safetensors")
    for name in ("config.json", "train_log.csv", "train_summary.json"):
        if (run / name).exists():
            shutil.copyfile(run / name, tmp / name)
    if previews:
        shutil.copyfile(previews[-1], tmp / "samples_final.png")
    write_json(tmp / "export.json", {"source_run": str(run), "checkpoint": str(ckpt) if ckpt else None,
                                     "step": state.get("step"), "weights": kind})
    replace_dir(tmp, out)
    return {"weights": out / "model.safetensors", "config": out / "config.json", "manifest": out / "export.json"}
