"""Core commands: train, sample, reconstruct, demo, presets."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import numpy as np
import torch

from ..presets import PRESETS, get_preset
from ..utils.images import save_grid
from ..utils.errors import UsageError
from ..utils.io import write_json, write_text
from .common import (
    add_device,
    add_images,
    add_inversion,
    add_run,
    add_sampler,
    apply_inversion,
    config_from_args,
    formatter,
    parse_int_list,
    print_outputs,
    select_images,
)


def register(sub) -> None:
    p = sub.add_parser("train", help="train a Patronus model (resumable)", formatter_class=formatter(),
                       description="Train a prototype-conditioned diffusion model. Writes config.json, "
                                   "train_log.csv, samples/*.png, checkpoints/ and model.safetensors into --out. "
                                   "Re-run the same command with --resume to continue.")
    p.add_argument("--preset", default=None, choices=PRESETS,
                   help="starting configuration (default: cpu-small; with --init-from, the source run's config)")
    p.add_argument("--out", required=True, help="run directory")
    p.add_argument("--resume", action="store_true",
                   help="continue from the latest checkpoint in --out (an error when there is none)")
    p.add_argument("--resume-if-present", action="store_true",
                   help="continue when --out holds a checkpoint, else start a new run there (for scripts)")
    p.add_argument("--init-from", metavar="RUN",
                   help="fine-tune: start from the EMA weights of RUN (a run folder or pretrained:NAME) with the "
                        "same network; optimiser and step counter start fresh")
    p.add_argument("--steps", type=int, help="total optimisation steps for the run")
    p.add_argument("--epochs", type=float, help="total epochs for the run")
    p.add_argument("--minutes", type=float, help="wall-clock budget for this invocation")
    p.add_argument("--dataset", help="fashion-mnist | mnist | folder | ... (overrides the preset)")
    p.add_argument("--data-root", help="directory of the data")
    p.add_argument("--attributes-csv", help="CSV of per-image attributes joined by file name (folder datasets)")
    p.add_argument("--skip-bad-images", action="store_true", help="leave unreadable images out (counted, listed)")
    p.add_argument("--batch-size", type=int)
    p.add_argument("--lr", type=float)
    p.add_argument("--precision", choices=["fp32", "bf16", "fp16"], help="autocast for the UNet (GPU)")
    p.add_argument("--set", nargs="*", action="extend", default=[], metavar="KEY=VALUE",
                   help="any config override, e.g. train.ema_decay=0.999 unet.base_channels=48")
    p.add_argument("--no-progress", action="store_true")
    add_device(p)
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("sample", help="generate images from prototype vectors s", formatter_class=formatter(),
                       description="Generate images conditioned on s: the s of test images (default), of given "
                                   "images, or rows of a .npy/.csv file. Writes grid.png, images/*.png (lossless), "
                                   "s.csv and sample.json (the full protocol).")
    add_run(p)
    add_images(p, default_n=16)
    p.add_argument("--s-file", help=".npy or .csv file with one s vector (P values) per row")
    p.add_argument("--per-s", type=int, default=1, help="images per s vector (different noise)")
    p.add_argument("--unconditional", action="store_true",
                   help="draw --n s vectors from the prior over s (`patronus train-prior`) instead of encoding images")
    p.add_argument("--prior", help="prior directory for --unconditional (default: RUN/prior)")
    add_sampler(p)
    p.add_argument("--no-clip", action="store_true",
                   help="do not clip the predicted clean image to [-1, 1] at each step (the reference's behaviour)")
    p.add_argument("--out", default="results/sample")
    add_device(p)
    p.set_defaults(func=cmd_sample)

    p = sub.add_parser("reconstruct", help="invert images to x_T and decode them back; report PSNR/SSIM",
                       formatter_class=formatter(),
                       description="DDIM-invert images under their own s and decode (x_T, s) again, at one or more "
                                   "step counts. Writes reconstructions.png, reconstruct.csv (per image) and "
                                   "reconstruct.json (means).")
    add_run(p)
    add_images(p, default_n=8)
    p.add_argument("--steps", default="50,100", help="comma-separated inversion/decoding step counts")
    p.add_argument("--out", default="results/reconstruct")
    add_inversion(p)
    add_device(p)
    p.set_defaults(func=cmd_reconstruct)

    p = sub.add_parser("demo", help="the main job: train on Fashion-MNIST, then sample and reconstruct",
                       formatter_class=formatter(),
                       description="Train the cpu-demo preset on Fashion-MNIST for a fixed number of steps (--steps: "
                                   "the same model on every machine; about 6 min on a quiet 2-core CPU), then write a "
                                   "grid generated from test images' s, reconstructions with PSNR at 50 and 100 "
                                   "inversion steps, the explanation gallery of every prototype (explain/), the edit "
                                   "benchmark of evaluate-edits (edits_eval/: does raising a prototype do what it "
                                   "says?) and summary.json into --out.")
    p.add_argument("--out", default="results/demo")
    p.add_argument("--steps", type=int, default=None,
                   help="training steps of this invocation (default 400; a repeated demo continues its run by as many)")
    p.add_argument("--minutes", type=float, default=None,
                   help="also stop training after this many minutes (off by default: with it the model you get "
                        "depends on the machine's speed and load)")
    p.add_argument("--gallery-images", type=int, default=4,
                   help="reference images edited per prototype in the closing explanation gallery (0 skips it)")
    p.add_argument("--edit-images", type=int, default=8,
                   help="test images of the closing edit benchmark (evaluate-edits: every prototype raised to its "
                        "own max, 20 steps; 0 skips it)")
    p.add_argument("--preset", default="cpu-demo", choices=PRESETS,
                   help="cpu-demo: cpu-small with 10 prototypes, whose edits steer after 400 steps (30 do not)")
    p.add_argument("--set", nargs="*", action="extend", default=[], metavar="KEY=VALUE")
    p.add_argument("--n", type=int, default=8, help="images to reconstruct")
    p.add_argument("--fresh", action="store_true", help="delete an earlier demo run in --out first")
    p.add_argument("--no-reports", action="store_true",
                   help="skip the closing HTML reports of the demo's model and of pretrained:fashion-mnist")
    add_device(p)
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("export", help="write an inference-only bundle of a run (EMA weights + config + log)",
                       formatter_class=formatter(),
                       description="Copy a run's EMA weights (from its newest checkpoint, checksum-verified), "
                                   "config.json, train_log.csv, train_summary.json and the newest preview grid into "
                                   "--out. The bundle loads like a run (Patronus.load(OUT)); it is how "
                                   "pretrained:fashion-mnist is made.")
    p.add_argument("--run", required=True, help="a run directory written by `patronus train`")
    p.add_argument("--out", required=True, help="bundle directory (replaced atomically)")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("presets", help="list presets or show one as JSON", formatter_class=formatter())
    p.add_argument("--show", metavar="NAME", help="print the full config of a preset")
    p.set_defaults(func=cmd_presets)


# ------------------------------------------------------------------------------------ train
def cmd_train(args) -> int:
    from ..training import train

    cfg = config_from_args(args)
    resume = "if-present" if args.resume_if_present else args.resume
    if resume and (Path(args.out) / "config.json").exists() and args.preset is None and not args.set:
        # `--resume` alone continues the saved config (budgets from the command line still apply)
        from ..runs import read_run_config

        saved = read_run_config(Path(args.out))
        for k in ("max_steps", "max_epochs", "max_minutes"):
            setattr(saved.train, k, getattr(cfg.train, k))
        cfg = saved
    r = train(cfg, args.out, resume=resume, device=args.device, progress=not args.no_progress,
              init_from=args.init_from)
    if os.environ.get("RANK", "0") != "0":  # torchrun: only rank 0 reports
        return 0
    print(json.dumps({"run": str(r.run_dir), "step": r.step, "images_seen": r.images_seen,
                      "steps_this_invocation": r.steps_this_invocation,
                      "minutes_this_invocation": round(r.elapsed_s / 60, 2), "last_loss": round(r.last_loss, 5),
                      "stopped_by": r.stopped_by}))
    return 0


# ------------------------------------------------------------------------------------ sample
def _read_s_file(path: str) -> torch.Tensor:
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"s file {p} does not exist")
    if p.suffix == ".npy":
        arr = np.load(p, allow_pickle=False)
    else:
        arr = np.loadtxt(p, delimiter=",", ndmin=2)
    return torch.as_tensor(np.atleast_2d(arr), dtype=torch.float32)


def _write_s_csv(path: Path, s: torch.Tensor, names: list[str]) -> None:
    header = "source," + ",".join(f"s{j}" for j in range(s.shape[1]))
    rows = [f"{n}," + ",".join(f"{v:.6f}" for v in row.tolist()) for n, row in zip(names, s)]
    write_text(path, header + "\n" + "\n".join(rows) + "\n")


def _save_images(x: torch.Tensor, folder: Path, names: list[str]) -> None:
    from ..utils.images import save_png, to_uint8

    for arr, n in zip(to_uint8(x), names):
        save_png(arr, folder / f"{n}.png")


def cmd_sample(args) -> int:
    from ..api import Patronus

    pat = Patronus.load(args.run, args.weights, args.device)
    prior_meta = None
    if getattr(args, "unconditional", False):
        from .generation import sample_unconditional

        s, names, prior_meta = sample_unconditional(pat, args)
        x_ref = None
    elif args.s_file:
        s = pat.check_s(_read_s_file(args.s_file))
        names = [f"s{i}" for i in range(len(s))]
        x_ref = None
    else:
        x_ref, names = select_images(pat, args)
        s = pat.encode(x_ref).s
    s_rep = s.repeat_interleave(args.per_s, 0)
    t0 = time.time()
    clip = pat.config.sample.clip_x0 and not args.no_clip
    imgs = pat.sample(s_rep, sampler=args.sampler, steps=args.steps, seed=args.seed, progress=True, clip_x0=clip)
    secs = time.time() - t0
    out = Path(args.out)
    nrow = args.per_s if args.per_s > 1 else None
    files = {"grid": save_grid(imgs, out / "grid.png", nrow=nrow, upscale=2)}
    if x_ref is not None:
        files["references"] = save_grid(x_ref, out / "references.png", upscale=2)
    img_names = [f"{i:04d}_{n.replace(':', '-')}_{k}" for i, n in enumerate(names) for k in range(args.per_s)]
    _save_images(imgs, out / "images", img_names)
    files["images"] = out / "images"
    _write_s_csv(out / "s.csv", s, names)
    files["s"] = out / "s.csv"
    meta = {"run": str(pat.run_dir), "weights": args.weights, "sampler": args.sampler or pat.config.sample.sampler,
            "steps": args.steps or pat.config.sample.steps, "clip_x0": clip, "seed": args.seed, "n_images": len(imgs),
            "s_source": args.s_file or f"{args.split} images", "sources": names, "seconds": round(secs, 2),
            "seconds_per_image": round(secs / len(imgs), 4)}
    if prior_meta is not None:
        meta.update({"s_source": "prior over s (unconditional)", **prior_meta})
    write_json(out / "sample.json", meta)
    files["protocol"] = out / "sample.json"
    print_outputs(f"{len(imgs)} images in {secs:.1f} s", files)
    return 0


# ------------------------------------------------------------------------------------ reconstruct
def cmd_reconstruct(args) -> int:
    from ..api import Patronus
    from ..evaluation.reconstruction import reconstruct

    pat = apply_inversion(Patronus.load(args.run, args.weights, args.device), args)
    x, names = select_images(pat, args)
    step_list = parse_int_list(str(args.steps), f"--steps must be comma-separated integers, got {args.steps!r}")
    res = reconstruct(pat, x, names, step_list)
    files = res.write(args.out)
    for k, v in res.by_steps.items():
        print(f"{k:>5} steps: PSNR {v['psnr_db']:.2f} dB  SSIM {v['ssim']:.4f}  ({v['seconds_per_image']} s/image)")
    print_outputs("wrote", files)
    return 0


def cmd_demo(args) -> int:
    from ..experiments.demo import run_demo

    from ..experiments.demo import DEMO_STEPS

    steps = DEMO_STEPS if args.steps is None else args.steps
    if steps < 1:
        raise UsageError(f"--steps must be at least 1, got {steps}")
    if args.minutes is not None and args.minutes <= 0:
        raise UsageError(f"--minutes must be positive, got {args.minutes}")
    summary, files = run_demo(args.out, preset=args.preset, overrides=args.set, steps=steps, minutes=args.minutes,
                              seed=args.seed,
                              n_reconstruct=args.n, gallery_images=args.gallery_images, edit_images=args.edit_images,
                              fresh=args.fresh,
                              device=args.device, reports=not args.no_reports)
    print_outputs(f"[demo] done in {summary['wall_minutes']} min; results in {args.out}/", files)
    print(f"[demo] reconstruction PSNR: 50 steps {summary['reconstruction_psnr_db']['50']} dB, "
          f"100 steps {summary['reconstruction_psnr_db']['100']} dB")
    for name, r in summary.get("reports", {}).items():
        print(f"[demo] open {r['page']} in a browser ({name})")
    print(f"[demo] move the prototypes yourself: patronus explore --run {Path(args.out) / 'run'}   "
          "(or --run pretrained:fashion-mnist)")
    return 0


def cmd_export(args) -> int:
    from ..runs import export_run

    files = export_run(Path(args.run), Path(args.out))
    print_outputs(f"exported {args.run} -> {args.out}", files)
    return 0


def cmd_presets(args) -> int:
    if args.show:
        print(get_preset(args.show).to_json())
        return 0
    for name in PRESETS:
        c = get_preset(name)
        print(f"{name:<16} {c.data.dataset:<14} {c.data.image_size:>4}px  P={c.prototypes.num_prototypes:<4} "
              f"unet {c.unet.base_channels}ch x{c.unet.channel_mult}  lr {c.train.lr:g}  batch {c.train.batch_size}")
    return 0
