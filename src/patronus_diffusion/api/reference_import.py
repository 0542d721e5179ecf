"""Import a checkpoint of the reference Patronus code into a run folder (``patronus import-reference``).

The reference saves ``checkpoints/version_N/ckpt.tar`` = {"model": state_dict, "opt": ..., "scaler": ...} with
torch.save. It is read here with ``torch.load(weights_only=True)`` only: tensors and plain containers, never
arbitrary pickled objects (so ``config.pickle`` beside it, which pickles a ``torch.device``, is not read; the
architecture is inferred from the tensors' shapes and the rest comes from a preset).

The reference module tree and ours differ only in names and in two frozen tensors:

    proactBlock.encoder.features.{2i}        -> prototypes.encoder.net.{2i}      (Conv2d, ReLU at odd indices)
    proactBlock.prototype_vectors (P,D,1,1)  -> prototypes.prototypes (P, D)
    proactBlock.ones (all ones)              -> dropped (we sum z^2 directly; checked to be all ones)
    time_embeddings.time_blocks.0 (table)    -> dropped (we compute the same sinusoid; checked to be equal)
    time_embeddings.time_blocks.{1,3}        -> unet.time_mlp.{0,2}
    cond_embeddings.vector_fc.{0,2}          -> unet.cond_mlp.{0,2}
    first / final.{0,2}                      -> unet.first / unet.final.{0,2}
    encoder_blocks.i (flat: per level its ResnetBlocks, then a DownSample) -> unet.down.L.blocks.k / .sample
    bottleneck_blocks.{0,1}                  -> unet.mid.{0,1}
    decoder_blocks.i (per level, reversed: its ResnetBlocks, then an UpSample) -> unet.up.M.blocks.k / .sample
    ResnetBlock: normlize_1 norm1, conv_1 conv1, dense_1 time_proj, dense_2 cond_proj, normlize_2 norm2,
                 conv_2 conv2, match_input shortcut, attention.group_norm attention.norm,
                 attention.mhsa.in_proj_* attention.qkv.*, attention.mhsa.out_proj attention.proj
    DownSample.downsample -> sample;  UpSample.upsample.1 -> sample (nearest x2 comes first in both)
"""

from __future__ import annotations

import dataclasses
import re
import shutil
import time
from pathlib import Path

import torch

from ..config import ConfigError, RunConfig
from ..models import build_model
from ..models.unet import timestep_embedding
from ..presets import get_preset
from ..runs import CheckpointError, load_into, save_weights, sha256, write_run_config
from ..utils.errors import UsageError
from ..utils.io import replace_dir, write_json

BLOCK_NAMES = {"normlize_1": "norm1", "conv_1": "conv1", "dense_1": "time_proj", "dense_2": "cond_proj",
               "normlize_2": "norm2", "conv_2": "conv2", "match_input": "shortcut",
               "attention.group_norm": "attention.norm", "attention.mhsa.in_proj_weight": "attention.qkv.weight",
               "attention.mhsa.in_proj_bias": "attention.qkv.bias",
               "attention.mhsa.out_proj": "attention.proj"}
REFERENCE_HEADS = 4  # nn.MultiheadAttention(num_heads=4) in the reference; not recorded in the state dict


def read_reference_state(path: str | Path) -> dict[str, torch.Tensor]:
    """The model state dict inside a reference checkpoint (ckpt.tar, or a bare state dict), tensors only."""
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"{path} does not exist")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any unpickling failure is the file's fault: say so
        raise CheckpointError(f"cannot read {path} as a weights-only torch checkpoint ({type(e).__name__}: {e}); "
                              "give the reference's ckpt.tar or a saved state_dict") from None
    if isinstance(obj, dict) and isinstance(obj.get("model"), dict):
        obj = obj["model"]
    elif isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict) or "proactBlock.prototype_vectors" not in obj:
        raise CheckpointError(f"{path} is not a reference Patronus checkpoint (no proactBlock.prototype_vectors)")
    return {k.removeprefix("module."): v for k, v in obj.items() if isinstance(v, torch.Tensor)}


def _indexed(sd: dict, prefix: str) -> dict[int, dict[str, torch.Tensor]]:
    """{i: {rest: tensor}} for keys ``prefix.i.rest``."""
    out: dict[int, dict[str, torch.Tensor]] = {}
    pat = re.compile(re.escape(prefix) + r"\.(\d+)\.(.+)")
    for k, v in sd.items():
        m = pat.fullmatch(k)
        if m:
            out.setdefault(int(m.group(1)), {})[m.group(2)] = v
    return dict(sorted(out.items()))


def _is_resnet(part: dict) -> bool:
    return "conv_1.weight" in part


def infer_config(sd: dict[str, torch.Tensor], preset: str) -> RunConfig:
    """The run config of a reference state dict: the preset's data and training fields, with the architecture
    (widths, blocks per level, attention, prototypes) read off the tensors' shapes."""
    cfg = get_preset(preset)
    if cfg.family != "patronus":
        raise ConfigError(f"--preset {preset} is not a Patronus preset; use the paper-* preset of the dataset")
    first = sd["first.weight"]
    base, channels = int(first.shape[0]), int(first.shape[1])
    enc = _indexed(sd, "encoder_blocks")
    widths, per_level, attn, blocks = [], [], [], 0
    level_attn = False
    for part in enc.values():
        if _is_resnet(part):
            blocks += 1
            level_attn = level_attn or "attention.mhsa.in_proj_weight" in part
            out_ch = int(part["conv_1.weight"].shape[0])
        else:  # a DownSample ends the level
            widths.append(out_ch)
            per_level.append(blocks)
            attn.append(level_attn)
            blocks, level_attn = 0, False
    widths.append(out_ch)
    per_level.append(blocks)
    attn.append(level_attn)
    if len(set(per_level)) != 1 or any(w % base for w in widths):
        raise CheckpointError(f"unexpected reference layout: blocks per level {per_level}, widths {widths}")
    convs = _indexed(sd, "proactBlock.encoder.features")
    enc_channels = tuple(int(c["weight"].shape[0]) for c in convs.values())
    kernels = tuple(int(c["weight"].shape[-1]) for c in convs.values())
    p = cfg.prototypes
    if len(kernels) != len(p.strides):
        raise ConfigError(f"the checkpoint's prototype encoder has {len(kernels)} layers but --preset {preset} "
                          f"has {len(p.strides)}: pick the paper-* preset of its dataset (strides and paddings are "
                          "not stored in the weights)")
    protos = sd["proactBlock.prototype_vectors"]
    cfg.data.channels = channels
    cfg.prototypes = dataclasses.replace(p, channels=enc_channels, kernels=kernels, num_prototypes=int(protos.shape[0]),
                                         metric="l2", init="uniform")
    u = cfg.unet
    cfg.unet = dataclasses.replace(
        u, base_channels=base, channel_mult=tuple(w // base for w in widths), num_res_blocks=per_level[0],
        attention_levels=tuple(attn), mid_attention="bottleneck_blocks.0.attention.mhsa.in_proj_weight" in sd,
        attention_heads=REFERENCE_HEADS, groups=8, dropout=0.1, dropout2d=True, cond_norm="none", cond_mode="add",
        time_emb_mult=int(sd["time_embeddings.time_blocks.1.weight"].shape[0]) // base)
    cfg.preset = f"{preset} (imported from the reference)"
    return cfg.validate()


def _block(ref: dict[str, torch.Tensor], ours: str) -> dict[str, torch.Tensor]:
    out = {}
    for rest, v in ref.items():
        for a, b in BLOCK_NAMES.items():
            if rest == a or rest.startswith(a + "."):
                out[f"{ours}.{b}{rest[len(a):]}"] = v
                break
        else:
            raise CheckpointError(f"unexpected tensor {rest!r} in a reference ResnetBlock")
    return out


def convert_state(sd: dict[str, torch.Tensor], cfg: RunConfig) -> dict[str, torch.Tensor]:
    """Our state dict from the reference one (the mapping of the module docstring), with its checks."""
    out: dict[str, torch.Tensor] = {}
    protos = sd["proactBlock.prototype_vectors"]
    if protos.ndim != 4 or protos.shape[2:] != (1, 1):
        raise CheckpointError(f"proactBlock.prototype_vectors has shape {tuple(protos.shape)}, expected (P, D, 1, 1)")
    ones = sd.get("proactBlock.ones")
    if ones is not None and not torch.all(ones == 1):
        raise CheckpointError("proactBlock.ones is not all ones: this is not the reference's distance")
    out["prototypes.prototypes"] = protos[:, :, 0, 0].clone()
    for i, conv in _indexed(sd, "proactBlock.encoder.features").items():
        for name, v in conv.items():
            out[f"prototypes.encoder.net.{i}.{name}"] = v
    table = sd.get("time_embeddings.time_blocks.0.weight")
    if table is not None:
        ours = timestep_embedding(torch.arange(table.shape[0]), table.shape[1])
        if not torch.allclose(table.float(), ours, atol=1e-4):
            raise CheckpointError("the checkpoint's sinusoidal time table differs from ours: cannot import it")
    for a, b in (("1", "0"), ("3", "2")):
        for name in ("weight", "bias"):
            out[f"unet.time_mlp.{b}.{name}"] = sd[f"time_embeddings.time_blocks.{a}.{name}"]
            out[f"unet.cond_mlp.{b}.{name}"] = sd[f"cond_embeddings.vector_fc.{'0' if a == '1' else '2'}.{name}"]
    for name in ("weight", "bias"):
        out[f"unet.first.{name}"] = sd[f"first.{name}"]
        out[f"unet.final.0.{name}"] = sd[f"final.0.{name}"]
        out[f"unet.final.2.{name}"] = sd[f"final.2.{name}"]
    u = cfg.unet
    levels = len(u.channel_mult)
    down_slots = []
    for lv in range(levels):
        down_slots += [(f"unet.down.{lv}.blocks.{k}", True) for k in range(u.num_res_blocks)]
        if lv < levels - 1:
            down_slots.append((f"unet.down.{lv}.sample", False))
    up_slots = []
    for m, lv in enumerate(reversed(range(levels))):
        up_slots += [(f"unet.up.{m}.blocks.{k}", True) for k in range(u.num_res_blocks + 1)]
        if lv > 0:
            up_slots.append((f"unet.up.{m}.sample", False))
    for prefix, slots, sampler in (("encoder_blocks", down_slots, "downsample"),
                                   ("decoder_blocks", up_slots, "upsample.1")):
        parts = _indexed(sd, prefix)
        if len(parts) != len(slots):
            raise CheckpointError(f"{prefix} has {len(parts)} modules, the inferred architecture {len(slots)}")
        for (ours, resnet), part in zip(slots, parts.values()):
            if resnet != _is_resnet(part):
                raise CheckpointError(f"{prefix}: a {'ResnetBlock' if resnet else 'resampling layer'} was expected "
                                      f"where the checkpoint has {sorted(part)[:2]}")
            if resnet:
                out.update(_block(part, ours))
            else:
                for name in ("weight", "bias"):
                    out[f"{ours}.{name}"] = part[f"{sampler}.{name}"]
    for k, part in _indexed(sd, "bottleneck_blocks").items():
        out.update(_block(part, f"unet.mid.{k}"))
    return out


def import_reference(checkpoint: str | Path, out: str | Path, preset: str = "paper-fmnist",
                     overwrite: bool = False) -> tuple[RunConfig, Path]:
    """Convert a reference checkpoint into a run folder that every command loads (``--run OUT``).

    An existing non-empty ``out`` is replaced only with ``overwrite`` (it may be a trained run)."""
    checkpoint, out = Path(checkpoint), Path(out)
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {out} is a file; give a folder for the run")
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise UsageError(f"{out} already exists and is not empty; choose another --out or pass --force to replace it")
    sd = read_reference_state(checkpoint)
    cfg = infer_config(sd, preset)
    converted = convert_state(sd, cfg)
    model = build_model(cfg)
    load_into(model, converted, checkpoint)  # strict: every tensor of ours is filled, nothing is left over
    used = len(converted) + sum(k in sd for k in ("proactBlock.ones", "time_embeddings.time_blocks.0.weight"))
    if used != len(sd):
        raise CheckpointError(f"{len(sd) - used} tensor(s) of {checkpoint} found no place in the model")
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    write_run_config(tmp, cfg)
    save_weights(tmp / "model.safetensors", model.state_dict())
    write_json(tmp / "import.json", {
        "source": str(checkpoint.resolve()), "source_sha256": sha256(checkpoint), "preset": preset,
        "imported": time.strftime("%Y-%m-%d %H:%M"), "tensors": len(sd), "weights": "raw",
        "note": "the reference's raw (not EMA-averaged) weights; strides and paddings of the prototype encoder come "
                "from the preset, the rest of the architecture from the tensors' shapes"})
    out.parent.mkdir(parents=True, exist_ok=True)
    replace_dir(tmp, out)
    return cfg, out
