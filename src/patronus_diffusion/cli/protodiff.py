"""`patronus protodiff ...`: the ProtoDiffusion family (prototype classifier, CFG diffusion, guided sampling,
and the measured comparison of the class-embedding modes).

    patronus protodiff train-classifier --out runs/pd/classifier
    patronus protodiff train --mode proto-frozen --prototypes runs/pd/classifier/prototypes.safetensors --out runs/pd/pf
    patronus protodiff sample --run runs/pd/pf --per-class 8 --w 1.8 --out results/pd_samples
    patronus protodiff compare --out results/protodiff_compare        # resumable; run it with nohup
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import torch

from ..config import PROTODIFF_MODES, RunConfig
from ..diffusion.samplers import SAMPLERS
from ..presets import PRESETS
from ..utils.errors import UsageError
from ..utils.images import save_grid, save_png, to_uint8
from ..utils.io import write_json, write_text
from .common import add_device, config_from_args, formatter, parse_ids, parse_int_list, print_outputs

PD_PRESETS = [p for p in PRESETS if p.startswith("protodiff")]
DEFAULT_PRESET = "protodiff-fmnist-cpu"


# ==================================================================================== parsers
def _add_config_args(p, budget: bool = True) -> None:
    p.add_argument("--preset", default=DEFAULT_PRESET, choices=PD_PRESETS, help="starting configuration")
    p.add_argument("--dataset", help="fashion-mnist | mnist | folder | ... (overrides the preset)")
    p.add_argument("--data-root", help="directory of the data")
    p.add_argument("--set", nargs="*", action="extend", default=[], metavar="KEY=VALUE",
                   help="any config override, e.g. protodiff.num_classes=200 train.lr=2e-4")
    if budget:
        p.add_argument("--steps", type=int, help="total optimisation steps for the run")
        p.add_argument("--epochs", type=float, help="total epochs for the run")
        p.add_argument("--minutes", type=float, help="wall-clock budget for this invocation")
        p.add_argument("--batch-size", type=int)
        p.add_argument("--lr", type=float)
    p.add_argument("--no-progress", action="store_true")
    add_device(p)


def _add_sampling_args(p, steps_default=None) -> None:
    p.add_argument("--w", type=float, default=None,
                   help="guidance weight w in (1+w) eps(x,y) - w eps(x,null); 0 = conditional; None = the config's "
                        "protodiff.guidance (1.8)")
    p.add_argument("--sampler", choices=sorted(SAMPLERS), default=None, help="sampler; None = the config's sample.sampler")
    p.add_argument("--steps", type=int, default=steps_default, help="sampler steps (network evaluations per image, x2 with guidance); None = the config's")


def register(sub) -> None:
    group = sub.add_parser("protodiff", help="ProtoDiffusion: prototype class embeddings for guided diffusion",
                           formatter_class=formatter(),
                           description="The second model family: a prototype classifier whose class prototypes "
                                       "initialise the class-embedding table of a classifier-free-guidance diffusion "
                                       "model. Commands: train-classifier, train, sample, compare.")
    group.set_defaults(func=lambda _args: group.print_help())
    s = group.add_subparsers(dest="protodiff_command", metavar="COMMAND")

    p = s.add_parser("train-classifier", help="train the prototype classifier and export its prototypes",
                     formatter_class=formatter(),
                     description="Train a convolutional prototype-learning classifier from scratch (loss = distance "
                                 "cross-entropy + lambda * prototype loss), select the epoch on a held-out part of "
                                 "the training split, report test accuracy. Writes prototypes.safetensors + "
                                 "prototypes.json (class names, dataset identity, accuracy, dim), "
                                 "classifier.safetensors + classifier.json and classifier_log.csv into --out.")
    p.add_argument("--out", required=True, help="output folder")
    _add_config_args(p, budget=False)
    p.add_argument("--epochs", type=float, help="classifier epochs; None = the preset's")
    p.add_argument("--lambda", dest="lambda_pl", type=float, help="prototype-loss weight lambda")
    p.add_argument("--scale", type=float, help="s in logits = -s * squared distance")
    p.add_argument("--dim", type=int, help="prototype dimension D (= class-embedding dimension)")
    p.set_defaults(func=cmd_train_classifier)

    p = s.add_parser("train", help="train a class-conditional CFG diffusion model (resumable)",
                     formatter_class=formatter(),
                     description="Train with the shared trainer (EMA, checkpoints, exact resume). Modes: regular "
                                 "(random table, trained), proto-frozen, proto-trainable (table = prototypes), "
                                 "random-frozen (frozen random table with the prototypes' norms: a control). Writes "
                                 "config.json, train_log.csv, samples/ (one image per class), checkpoints/ and "
                                 "model.safetensors into --out.")
    p.add_argument("--out", required=True, help="run directory")
    p.add_argument("--mode", choices=PROTODIFF_MODES,
                   help="class-embedding mode (default: proto-frozen; with --resume, the run's own mode)")
    p.add_argument("--prototypes", help="prototypes.safetensors from train-classifier (proto-* and random-frozen)")
    p.add_argument("--p-uncond", type=float, help="probability of the null condition in training (default 0.1)")
    p.add_argument("--null", choices=["zero", "learned"], help="null condition: zero vector or a learned one")
    p.add_argument("--resume", action="store_true", help="continue from the latest checkpoint in --out")
    _add_config_args(p)
    p.set_defaults(func=cmd_train)

    p = s.add_parser("sample", help="guided samples per class or for given labels", formatter_class=formatter(),
                     description="Classifier-free-guided sampling; conditional and unconditional halves run as one "
                                 "batched network call. Writes grid.png (one row per class), images/*.png "
                                 "(lossless, fixed [-1,1] -> [0,255] map), labels.csv and sample.json (protocol).")
    p.add_argument("--run", required=True, help="a run directory written by `patronus protodiff train`")
    p.add_argument("--weights", choices=["ema", "raw"], default="ema")
    p.add_argument("--per-class", type=int, default=8, help="images per class (all classes)")
    p.add_argument("--labels", help="comma-separated class indices instead of --per-class, e.g. 0,0,3,7")
    _add_sampling_args(p)
    p.add_argument("--batch-size", type=int, default=100)
    p.add_argument("--out", default="results/protodiff_sample")
    add_device(p)
    p.set_defaults(func=cmd_sample)

    p = s.add_parser("compare", help="train every mode on the same budget and measure FID over training",
                     formatter_class=formatter(),
                     description="Train the prototype classifier (once), then every mode from each of --seeds (the "
                                 "seed sets initialisation and data order; all modes get the same seeds) on the "
                                 "same budget. At each checkpoint, generate --n-gen class-balanced guided samples "
                                 "from the same x_T and labels for every mode and measure FID/KID against the test "
                                 "split (offline Inception), the accuracy of an INDEPENDENT JUDGE on them (a plain "
                                 "CNN trained on real images only, another architecture and seed, never used to "
                                 "make prototypes; cached in ~/.cache/patronus-diffusion/judge and kept in "
                                 "OUT/judge, which every resume uses) and the prototype "
                                 "classifier's own accuracy (which may favour the proto modes). Re-running skips "
                                 "finished work. Writes curves.csv (per seed; with how prototype-like each class "
                                 "table is: cosine and distance to the prototypes), curves_mean.csv (mean +- std "
                                 "over seeds), reach_baseline.csv (steps, images and CPU-hours each mode needs to reach "
                                 "the baseline's best mean FID), paired_vs_baseline.csv/.png (each mode's FID minus "
                                 "the baseline's, paired by seed, with a 95% t-interval), steps_saved_vs_baseline.csv "
                                 "(how many fewer steps each mode needs to reach the FID the baseline has at each "
                                 "of its steps, paired by seed: the claim read directly), fid_vs_images.png, "
                                 "fid_vs_wallclock.png, summary.md (these tables in Markdown, ready to quote), "
                                 "compare.json (also: where the baseline's curve flattens) "
                                 "and sample grids into --out. --report-only rewrites these from OUT/evals alone.")
    p.add_argument("--out", default="results/protodiff_compare")
    p.add_argument("--modes", nargs="+", default=list(PROTODIFF_MODES), choices=PROTODIFF_MODES)
    p.add_argument("--baseline", default="regular", choices=PROTODIFF_MODES)
    p.add_argument("--train-steps", type=int, default=None, help="optimisation steps per mode; None = the preset's train.max_steps")
    p.add_argument("--checkpoints", type=int, default=3, help="evaluations per mode, evenly spaced in steps")
    p.add_argument("--seeds", default="0,1,2", help="comma-separated training seeds; every mode is trained from each "
                                                     "(they replace --seed, which then has no effect here)")
    p.add_argument("--judge-epochs", type=float, default=None,
                   help="epochs of the independent judge when it is not cached yet (default: 2)")
    p.add_argument("--n-gen", type=int, default=1000, help="generated images per evaluation (class-balanced)")
    p.add_argument("--n-ref", type=int, default=2000, help="reference images (test split) for FID/KID")
    p.add_argument("--classifier", help="an existing train-classifier folder; None = train one into OUT/classifier")
    p.add_argument("--classifier-epochs", type=float, help="epochs when the classifier is trained here; None = the preset's")
    p.add_argument("--report-only", action="store_true",
                   help="rewrite the tables, plots and compare.json of --out from its stored evaluations; train and "
                        "evaluate nothing (the other options are then ignored)")
    _add_sampling_args(p)
    _add_config_args(p, budget=False)
    p.set_defaults(func=cmd_compare)


# ==================================================================================== train-classifier
def cmd_train_classifier(args) -> int:
    from ..training.protodiff import train_classifier

    cfg = config_from_args(args, default_preset=DEFAULT_PRESET, budgets=False)
    cc = cfg.protodiff.classifier
    cc.seed = args.seed
    if args.epochs is not None:
        cc.epochs = args.epochs
    if args.lambda_pl is not None:
        cc.lambda_pl = args.lambda_pl
    if args.scale is not None:
        cc.scale = args.scale
    if args.dim is not None:
        cc.dim = cfg.protodiff.embed_dim = args.dim
    cfg.validate()
    r = train_classifier(cfg, args.out, device=args.device, progress=not args.no_progress)
    print(json.dumps({"prototypes": str(r.prototypes), "val_accuracy": round(r.val_accuracy, 4),
                      "test_accuracy": None if r.test_accuracy is None else round(r.test_accuracy, 4),
                      "best_epoch": r.best_epoch, "minutes": round(r.seconds / 60, 2)}))
    return 0


# ==================================================================================== train
def train_config(args) -> RunConfig:
    """The preset plus flags; with --resume (and no --set) the run's saved config plus flags."""
    from ..runs import read_run_config

    saved = Path(args.out) / "config.json"
    if args.resume and saved.exists() and not args.set:
        cfg = read_run_config(Path(args.out))
    else:
        cfg = config_from_args(args, default_preset=DEFAULT_PRESET, budgets=False)
        cfg.protodiff.mode = "proto-frozen"
    pc = cfg.protodiff
    if args.mode is not None:
        pc.mode = args.mode
    if args.prototypes:
        pc.prototypes = str(Path(args.prototypes).resolve())
    if args.p_uncond is not None:
        pc.p_uncond = args.p_uncond
    if args.null is not None:
        pc.null = args.null
    if args.steps is not None or args.epochs is not None or args.minutes is not None:
        cfg.train.max_steps, cfg.train.max_epochs, cfg.train.max_minutes = args.steps, args.epochs, args.minutes
    return cfg.validate()


def cmd_train(args) -> int:
    from ..training import train
    from ..training.protodiff import check_prototypes_fit, check_resume_identity

    cfg = train_config(args)
    meta = check_prototypes_fit(cfg)
    if args.resume and (Path(args.out) / "config.json").exists():
        check_resume_identity(Path(args.out), cfg)
    if meta:
        acc = meta.get("accuracy", {})
        print(f"[protodiff] mode {cfg.protodiff.mode}: table from {cfg.protodiff.prototypes} "
              f"(classifier test accuracy {acc.get('test')})")
    r = train(cfg, args.out, resume=args.resume, device=args.device, progress=not args.no_progress)
    print(json.dumps({"run": str(r.run_dir), "mode": cfg.protodiff.mode, "step": r.step,
                      "images_seen": r.images_seen, "minutes": round(r.elapsed_s / 60, 2),
                      "last_loss": round(r.last_loss, 5), "stopped_by": r.stopped_by}))
    return 0


# ==================================================================================== sample
def parse_labels(text: str | None, num_classes: int) -> list[int] | None:
    return parse_ids(text, num_classes, "--labels", "class indices")


def save_labelled_images(x: torch.Tensor, labels: list[int], folder: Path, class_names) -> list[str]:
    names = []
    for i, (arr, y) in enumerate(zip(to_uint8(x), labels)):
        name = f"{i:04d}_class{y}.png"
        save_png(arr, folder / name)
        names.append(name)
    return names


def cmd_sample(args) -> int:
    from ..api import ProtoDiffusion

    pd = ProtoDiffusion.load(args.run, args.weights, args.device)
    cfg, run_dir = pd.config, pd.run_dir
    given = parse_labels(args.labels, pd.num_classes)
    if given is None and args.per_class < 1:
        raise UsageError("--per-class must be >= 1")
    labels = torch.tensor(given) if given is not None else pd.class_labels(args.per_class)
    w = cfg.protodiff.guidance if args.w is None else args.w
    sampler, steps = args.sampler or cfg.sample.sampler, args.steps or cfg.sample.steps
    t0 = time.time()
    imgs = pd.sample(labels, guidance=w, sampler=sampler, steps=steps, seed=args.seed, batch_size=args.batch_size,
                     progress=True)
    secs = time.time() - t0
    out = Path(args.out)
    class_names = _class_names(cfg)
    files = {"grid": save_grid(imgs, out / "grid.png", nrow=args.per_class if given is None else None, upscale=2)}
    names = save_labelled_images(imgs, labels.tolist(), out / "images", class_names)
    write_text(out / "labels.csv", "file,label,class_name\n" + "".join(
        f"{n},{y},{class_names[y] if y < len(class_names) else y}\n" for n, y in zip(names, labels.tolist())))
    files["images"], files["labels"] = out / "images", out / "labels.csv"
    nfe = steps * (1 if w == 0 else 2)
    write_json(out / "sample.json", {
        "run": str(run_dir), "mode": cfg.protodiff.mode, "weights": args.weights, "guidance_w": w,
        "guidance_convention": "(1 + w) eps(x, y) - w eps(x, null); w = 0 is conditional",
        "sampler": sampler, "steps": steps, "network_evaluations_per_image": nfe, "seed": args.seed,
        "n_images": len(imgs), "labels": labels.tolist(), "class_names": list(class_names),
        "grid_layout": "one row per class" if given is None else "in --labels order",
        "png": "lossless, uint8 = round((x + 1) * 127.5)", "seconds": round(secs, 2),
        "seconds_per_image": round(secs / max(len(imgs), 1), 4)})
    files["protocol"] = out / "sample.json"
    print_outputs(f"{len(imgs)} images (w={w:g}, {sampler} {steps} steps) in {secs:.1f} s", files)
    return 0


def _class_names(cfg: RunConfig) -> list[str]:
    from ..models.protodiffusion import load_prototypes

    if cfg.protodiff.prototypes and Path(cfg.protodiff.prototypes).exists():
        names = load_prototypes(cfg.protodiff.prototypes)[1].get("class_names")
        if names:
            return list(names)
    if cfg.data.dataset == "fashion-mnist":
        from ..data import FASHION_MNIST_CLASSES

        return list(FASHION_MNIST_CLASSES)
    return [str(i) for i in range(cfg.protodiff.num_classes)]


# ==================================================================================== compare
def cmd_compare(args) -> int:
    from ..evaluation.judge import JudgeSettings
    from ..experiments.protodiff_compare import rewrite_comparison, run_protodiff_compare

    if args.report_only:
        print_outputs("[compare] rewritten", rewrite_comparison(args.out).files)
        return 0
    seeds = parse_int_list(args.seeds, f"--seeds must be comma-separated integers, got {args.seeds!r}")
    judge = JudgeSettings(epochs=args.judge_epochs) if args.judge_epochs is not None else None
    res = run_protodiff_compare(
        config_from_args(args, default_preset=DEFAULT_PRESET, budgets=False), args.out, modes=args.modes,
        baseline=args.baseline, train_steps=args.train_steps, checkpoints=args.checkpoints, seeds=seeds,
        judge_settings=judge, n_gen=args.n_gen,
        n_ref=args.n_ref, classifier=args.classifier, classifier_epochs=args.classifier_epochs, w=args.w,
        sampler=args.sampler, steps=args.steps, device=args.device, progress=not args.no_progress)
    print_outputs("[compare] done", res.files)
    return 0
