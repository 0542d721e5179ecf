"""Argument helpers shared by the command modules."""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from ..diffusion.samplers import SAMPLERS
from ..utils.errors import UsageError


class _DefaultsFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows "(default: X)" only where it says something: not for None/False defaults, and not when the help
    text already states its default (e.g. "default: the run's config")."""

    def _get_help_string(self, action):
        text = action.help or ""
        if "default" in text or action.default in (None, False, argparse.SUPPRESS) or action.default == []:
            return text
        return super()._get_help_string(action)


def formatter():
    return _DefaultsFormatter


def add_run(p: argparse.ArgumentParser, required: bool = True) -> None:
    p.add_argument("--run", required=required, metavar="RUN",
                   help="a run directory written by `patronus train`, or pretrained:fashion-mnist")
    p.add_argument("--weights", choices=["ema", "raw"], default="ema", help="EMA or raw weights")


def add_device(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N | mps")
    p.add_argument("--seed", type=int, default=0, help="random seed (results are deterministic given it)")


def add_inversion(p: argparse.ArgumentParser) -> None:
    p.add_argument("--inversion", choices=("ddim", "edict"), default=None,
                   help="inversion scheme (default: the run's sample.inversion, ddim): ddim is approximate at few "
                        "steps; edict is exact at any step count for twice the network evaluations")


def apply_inversion(pat, args):
    """Set the loaded model's inversion scheme from --inversion (when given); returns the model."""
    if getattr(args, "inversion", None):
        pat.config.sample.inversion = args.inversion
    return pat


def add_sampler(p: argparse.ArgumentParser, steps: int | None = None, default: str | None = None) -> None:
    p.add_argument("--sampler", choices=sorted(SAMPLERS), default=default,
                   help="sampler (default: the run's config, dpmpp-2m)")
    p.add_argument("--steps", type=int, default=steps, help="network evaluations (default: the run's config)")


def add_images(p: argparse.ArgumentParser, default_n: int = 8) -> None:
    g = p.add_argument_group("input images (files, dataset indices, or N seeded picks: --seed; never images of the "
                                  "reference set X)")
    g.add_argument("--images", nargs="+", metavar="PATH", help="image files")
    g.add_argument("--indices", type=str, help="comma-separated dataset indices, e.g. 0,5,17")
    g.add_argument("--split", default="test", help="dataset split for --indices/--n")
    g.add_argument("--n", type=int, default=default_n, help="number of images when neither --images nor --indices")


def parse_int_list(text: str, error: str) -> list[int]:
    """'0, 5,17' -> [0, 5, 17]; raises ValueError(error) when an entry is not an integer."""
    try:
        return [int(x) for x in str(text).replace(" ", "").split(",") if x]
    except ValueError:
        raise UsageError(error) from None


def parse_ids(text: str | None, n: int, what: str, noun: str) -> list[int] | None:
    """'0,3,17' -> [0, 3, 17], each checked to lie in 0 ... n-1; None or '' -> None (the command's default).
    ``what`` names the flag and ``noun`` the kind of id in the error messages."""
    if not text:
        return None
    ids = parse_int_list(text, f"{what} must be comma-separated {noun}, e.g. 0,3,17; got {text!r}")
    bad = [j for j in ids if not 0 <= j < n]
    if bad or not ids:
        raise UsageError(f"{what}: {noun} {bad or '[]'} out of range 0 ... {n - 1}")
    return ids


def parse_indices(text: str | None) -> list[int] | None:
    if not text:
        return None
    return parse_int_list(text, f"--indices must be comma-separated integers, got {text!r}")


def select_images(pat, args) -> tuple[torch.Tensor, list[str]]:
    """Images and their names from --images / --indices / --n (seeded pick from the split)."""
    if args.images:
        return pat.load_images(paths=args.images), [Path(p).name for p in args.images]
    idx = parse_indices(args.indices)
    if idx is None:
        from ..edit import fresh_indices, reference_indices

        ds = pat.dataset(args.split)
        # never the reference set X of the command (when it has one, on the same split), whose targets they would see
        has_ref = getattr(args, "ref_n", None) is not None and args.split == "test"
        ref = reference_indices(len(ds), args.ref_n, getattr(args, "ref_seed", 0)) if has_ref else ()
        idx = fresh_indices(len(ds), args.n, args.seed, exclude=ref)
    return pat.load_images(indices=idx, split=args.split), [f"{args.split}:{i}" for i in idx]


def print_outputs(title: str, files: dict[str, Path]) -> None:
    print(title)
    for k, v in files.items():
        print(f"  {k:<18} {v}")


# ------------------------------------------------------------------------------------ config from flags
_FLAG_KEYS = (("dataset", "data.dataset"), ("data_root", "data.root"), ("attributes_csv", "data.attributes_csv"),
              ("batch_size", "train.batch_size"), ("lr", "train.lr"), ("precision", "train.precision"))


def config_from_args(args, default_preset: str = "cpu-small", budgets: bool = True):
    """The RunConfig a command's flags describe: ``--preset`` (or, with ``--init-from`` and no ``--preset``, the
    source run's own config with its budgets cleared, so fine-tuning needs no knowledge of how it was built),
    then the shortcut flags (``--dataset``, ``--data-root``, ``--batch-size``, ...), ``--seed`` and ``--set``.
    With ``budgets``, ``--steps/--epochs/--minutes`` replace the preset's budget when any is given."""
    from ..config import apply_overrides
    from ..presets import get_preset
    from ..runs import read_run_config, resolve_run

    if getattr(args, "preset", None) is None and getattr(args, "init_from", None):
        cfg = read_run_config(resolve_run(args.init_from))
        cfg.train.max_steps = cfg.train.max_epochs = cfg.train.max_minutes = None
    else:
        cfg = get_preset(getattr(args, "preset", None) or default_preset)
    overrides = list(getattr(args, "set", None) or [])
    overrides += [f"{key}={getattr(args, flag)}" for flag, key in _FLAG_KEYS if getattr(args, flag, None) is not None]
    if getattr(args, "skip_bad_images", False):
        overrides.append("data.skip_bad_images=true")
    if getattr(args, "seed", None) is not None:
        overrides.append(f"train.seed={args.seed}")
    cfg = apply_overrides(cfg, overrides)
    if budgets and any(getattr(args, k, None) is not None for k in ("steps", "epochs", "minutes")):
        cfg.train.max_steps, cfg.train.max_epochs, cfg.train.max_minutes = args.steps, args.epochs, args.minutes
    return cfg
