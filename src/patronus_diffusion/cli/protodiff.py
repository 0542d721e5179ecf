"""`patronus protodiff ...`: the ProtoDiffusion family (prototype classifier, CFG diffusion, guided sampling,
and the measured comparison of the class-embedding modes).

    patronus protodiff train-classifier --out runs/pd/classifier
    patronus protodiff train --mode proto-frozen --prototypes runs/pd/classifier/prototypes.safetensors --out runs/pd/pf
    patronus protodiff sample --run runs/pd/pf --per-class 8 --w 1.8 --out results/pd_samples
    patronus protodiff compare --out results/protodiff_compare        # resumable; run it with nohup
"""

from __future__ import annotations

import csv
import json
import time
from pathlib import Path

import torch

from ..config import PRESETS, ConfigError, PROTODIFF_MODES, RunConfig
from ..diffusion.samplers import SAMPLERS
from ..utils.images import save_grid, save_png, to_uint8
from ..utils.io import atomic_path, write_json, write_text
from .common import add_device, formatter, parse_int_list, print_outputs

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
                     description="Train the classifier (once), then each mode with the same seed, data order and "
                                 "budget; at each checkpoint generate class-balanced guided samples and measure "
                                 "FID/KID (offline Inception) and the classifier's accuracy on them. Re-running "
                                 "skips finished work. Writes curves.csv, fid_vs_images.png, fid_vs_wallclock.png, "
                                 "reach_baseline.csv, compare.json and sample grids into --out.")
    p.add_argument("--out", default="results/protodiff_compare")
    p.add_argument("--modes", nargs="+", default=list(PROTODIFF_MODES), choices=PROTODIFF_MODES)
    p.add_argument("--baseline", default="regular", choices=PROTODIFF_MODES)
    p.add_argument("--train-steps", type=int, default=None, help="optimisation steps per mode; None = the preset's train.max_steps")
    p.add_argument("--checkpoints", type=int, default=3, help="evaluations per mode, evenly spaced in steps")
    p.add_argument("--n-gen", type=int, default=300, help="generated images per evaluation (class-balanced)")
    p.add_argument("--n-ref", type=int, default=2000, help="reference images (test split) for FID/KID")
    p.add_argument("--classifier", help="an existing train-classifier folder; None = train one into OUT/classifier")
    p.add_argument("--classifier-epochs", type=float, help="epochs when the classifier is trained here; None = the preset's")
    _add_sampling_args(p)
    _add_config_args(p, budget=False)
    p.set_defaults(func=cmd_compare)


# ==================================================================================== config
def _base_config(args) -> RunConfig:
    from ..config import apply_overrides, get_preset

    overrides = list(args.set or [])
    for flag, key in (("dataset", "data.dataset"), ("data_root", "data.root"),
                      ("batch_size", "train.batch_size"), ("lr", "train.lr")):
        v = getattr(args, flag, None)
        if v is not None:
            overrides.append(f"{key}={v}")
    if getattr(args, "seed", None) is not None:
        overrides.append(f"train.seed={args.seed}")
    return apply_overrides(get_preset(args.preset), overrides)


# ==================================================================================== train-classifier
def cmd_train_classifier(args) -> int:
    from ..training.protodiff import train_classifier

    cfg = _base_config(args)
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
PROTODIFF_IDENTITY = ("mode", "num_classes", "embed_dim", "null", "padding_idx0")


def train_config(args) -> RunConfig:
    """The preset plus flags; with --resume (and no --set) the run's saved config plus flags."""
    from ..runs import read_run_config

    saved = Path(args.out) / "config.json"
    if args.resume and saved.exists() and not args.set:
        cfg = read_run_config(Path(args.out))
    else:
        cfg = _base_config(args)
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


def check_resume_identity(run_dir: Path, cfg: RunConfig) -> None:
    """A resumed run must keep its mode and table shape (the trainer checks the UNet)."""
    from ..runs import read_run_config

    saved = read_run_config(run_dir).protodiff
    diffs = [f"{k}: {getattr(saved, k)!r} vs {getattr(cfg.protodiff, k)!r}" for k in PROTODIFF_IDENTITY
             if getattr(saved, k) != getattr(cfg.protodiff, k)]
    if diffs:
        raise ConfigError(f"cannot resume {run_dir} with a different class embedding ({'; '.join(diffs)}); "
                          f"use the run's own --mode or train into a new --out")


def cmd_train(args) -> int:
    from ..training import train
    from ..training.protodiff import check_prototypes_fit

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
    if not text:
        return None
    labels = parse_int_list(text, f"--labels must be comma-separated class indices, got {text!r}")
    bad = [v for v in labels if not 0 <= v < num_classes]
    if bad or not labels:
        raise ValueError(f"--labels {bad or text!r}: class indices must lie in 0 ... {num_classes - 1}")
    return labels


def save_labelled_images(x: torch.Tensor, labels: list[int], folder: Path, class_names) -> list[str]:
    names = []
    for i, (arr, y) in enumerate(zip(to_uint8(x), labels)):
        name = f"{i:04d}_class{y}.png"
        save_png(arr, folder / name)
        names.append(name)
    return names


def cmd_sample(args) -> int:
    from ..training.protodiff import class_labels, generate, load_run

    model, cfg, run_dir = load_run(args.run, args.weights, args.device)
    C = cfg.protodiff.num_classes
    given = parse_labels(args.labels, C)
    if given is None and args.per_class < 1:
        raise ValueError("--per-class must be >= 1")
    labels = torch.tensor(given) if given is not None else class_labels(C, args.per_class)
    w = cfg.protodiff.guidance if args.w is None else args.w
    sampler, steps = args.sampler or cfg.sample.sampler, args.steps or cfg.sample.steps
    t0 = time.time()
    imgs = generate(model, cfg, labels, w=w, sampler=sampler, steps=steps, seed=args.seed,
                    batch_size=args.batch_size, progress=True)
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
    from ..training.protodiff import load_prototypes

    if cfg.protodiff.prototypes and Path(cfg.protodiff.prototypes).exists():
        names = load_prototypes(cfg.protodiff.prototypes)[1].get("class_names")
        if names:
            return list(names)
    if cfg.data.dataset == "fashion-mnist":
        from ..data import FASHION_MNIST_CLASSES

        return list(FASHION_MNIST_CLASSES)
    return [str(i) for i in range(cfg.protodiff.num_classes)]


# ==================================================================================== compare
CURVE_FIELDS = ["mode", "checkpoint", "step", "images_seen", "train_seconds", "fid", "kid", "kid_std",
                "classifier_accuracy_on_samples", "sample_seconds", "fid_seconds"]


def stage_targets(total_steps: int, k: int) -> list[int]:
    """k evaluation steps evenly spaced up to total_steps, e.g. (1500, 3) -> [500, 1000, 1500]."""
    if k < 1 or total_steps < k:
        raise ValueError(f"need 1 <= --checkpoints <= --train-steps, got {k} and {total_steps}")
    return [int(round(total_steps * (i + 1) / k)) for i in range(k)]


def _run_step(run_dir: Path) -> int:
    from ..runs import latest_checkpoint, read_checkpoint_state

    ck = latest_checkpoint(run_dir) if run_dir.exists() else None
    return int(read_checkpoint_state(ck, verify=False)["step"]) if ck is not None else 0


def evaluate_checkpoint(run_dir: Path, mode: str, args, classifier, extractor, protocol: dict) -> dict:
    """Class-balanced guided samples -> FID/KID and the prototype classifier's accuracy on them."""
    from ..evaluation.fid import fid_kid
    from ..training.protodiff import class_labels, generate, load_run

    model, cfg, _ = load_run(run_dir, "ema", args.device)
    C = cfg.protodiff.num_classes
    labels = class_labels(C, -(-args.n_gen // C), args.n_gen)
    t0 = time.time()
    imgs = generate(model, cfg, labels, w=protocol["guidance_w"], sampler=protocol["sampler"],
                    steps=protocol["steps"], seed=protocol["seed"], progress=not args.no_progress)
    sample_s = time.time() - t0
    acc = float((classifier.predict(imgs) == labels).float().mean())
    t0 = time.time()
    res = fid_kid(imgs, cfg.data, split="test", n_ref=args.n_ref, seed=0, progress=not args.no_progress,
                  extractor=extractor, protocol={**protocol, "mode": mode})
    per_class = min(10, -(-args.n_gen // C))
    grid_idx = torch.cat([torch.nonzero(labels == c).flatten()[:per_class] for c in range(C)])
    return {"fid": res["fid"], "kid": res["kid"], "kid_std": res["kid_std"], "protocol": res["protocol"],
            "classifier_accuracy_on_samples": acc, "sample_seconds": round(sample_s, 1),
            "fid_seconds": round(time.time() - t0, 1), "grid": imgs[grid_idx], "grid_nrow": per_class}


def _compare_config(args, mode: str, prototypes: Path) -> RunConfig:
    cfg = _base_config(args)
    cfg.protodiff.mode = mode
    cfg.protodiff.prototypes = str(prototypes.resolve())
    cfg.train.sample_every = 0
    cfg.train.max_epochs, cfg.train.max_minutes = None, None
    if args.train_steps:
        cfg.train.max_steps = args.train_steps
    if not cfg.train.max_steps:
        raise ConfigError("give --train-steps (the preset sets no step budget)")
    # a short comparison must not spend its whole budget in the LR warm-up: cap it at 10 % of the steps
    cfg.train.warmup_steps = min(cfg.train.warmup_steps, cfg.train.max_steps // 10)
    cfg.train.checkpoint_every = min(cfg.train.checkpoint_every or 250, 250)
    cfg.train.keep_checkpoints = 1
    return cfg.validate()


def cmd_compare(args) -> int:
    from ..evaluation.fid import InceptionFeatures
    from ..training import train
    from ..training.protodiff import load_classifier, train_classifier

    out = Path(args.out)
    if args.baseline not in args.modes:
        raise ValueError(f"the baseline {args.baseline!r} must be one of --modes")
    # ---- stage A: one classifier shared by every mode (and used to score the samples)
    clf_dir = Path(args.classifier) if args.classifier else out / "classifier"
    if not (clf_dir / "prototypes.safetensors").exists():
        if args.classifier:
            raise FileNotFoundError(f"{clf_dir} holds no prototypes.safetensors")
        cfg = _base_config(args)
        if args.classifier_epochs is not None:
            cfg.protodiff.classifier.epochs = args.classifier_epochs
        print(f"[compare] training the prototype classifier -> {clf_dir}")
        train_classifier(cfg, clf_dir, device=args.device, progress=not args.no_progress)
    classifier, clf_meta = load_classifier(clf_dir, args.device)
    print(f"[compare] classifier accuracy: {clf_meta['accuracy']}")
    base = _compare_config(args, args.modes[0], clf_dir / "prototypes.safetensors")
    targets = stage_targets(base.train.max_steps, args.checkpoints)
    protocol = {"guidance_w": base.protodiff.guidance if args.w is None else args.w,
                "sampler": args.sampler or base.sample.sampler, "steps": args.steps or base.sample.steps,
                "seed": 12345, "weights": "ema", "labels": "class-balanced", "n_generated": args.n_gen}
    extractor = InceptionFeatures(device="cpu")
    # ---- stage B + evaluation, resumable per (mode, checkpoint); checkpoint-major, so a partial run
    # ---- still compares every mode at the same (early) budgets
    for k, target in enumerate(targets, 1):
        for mode in args.modes:
            cfg = _compare_config(args, mode, clf_dir / "prototypes.safetensors")
            run_dir = out / "runs" / mode
            times_path = run_dir / "stage_seconds.json"
            ev_path = out / "evals" / f"{mode}_step{target:06d}.json"
            if ev_path.exists():
                continue
            times = json.loads(times_path.read_text()) if times_path.exists() else {}
            if _run_step(run_dir) < target:
                if _run_step(run_dir) > 0:
                    check_resume_identity(run_dir, cfg)
                print(f"[compare] {mode}: training to step {target} ({k}/{len(targets)})")
                t0 = time.time()
                r = train(cfg, run_dir, resume=_run_step(run_dir) > 0, device=args.device, max_steps=target,
                          progress=not args.no_progress)
                times[str(target)] = times.get(str(target), 0.0) + (time.time() - t0)
                write_json(times_path, times)
                images_seen = r.images_seen
            else:
                images_seen = target * cfg.train.batch_size
            print(f"[compare] {mode}: evaluating step {target}")
            ev = evaluate_checkpoint(run_dir, mode, args, classifier, extractor,
                                     {**protocol, "images_seen": images_seen})
            save_grid(ev.pop("grid"), out / "samples" / f"{mode}_step{target:06d}.png", nrow=ev.pop("grid_nrow"),
                      upscale=2)
            train_s = sum(v for s_, v in times.items() if int(s_) <= target)
            write_json(ev_path, {"mode": mode, "checkpoint": k, "step": target, "images_seen": images_seen,
                                 "train_seconds": round(train_s, 1), **ev})
            print(f"[compare] {mode} step {target}: FID {ev['fid']:.2f}, KID {ev['kid']:.4f}, "
                  f"classifier accuracy on samples {ev['classifier_accuracy_on_samples']:.3f}", flush=True)
            if mode == args.modes[-1]:  # refresh the curves after every round, so a partial run has them
                write_comparison(out, collect_evals(out, args.modes, targets), args.baseline, clf_meta, protocol,
                                 base)
    files = write_comparison(out, collect_evals(out, args.modes, targets), args.baseline, clf_meta, protocol, base)
    print_outputs("[compare] done", files)
    return 0


def collect_evals(out: Path, modes: list[str], targets: list[int]) -> list[dict]:
    rows = []
    for mode in modes:
        for t in targets:
            p = out / "evals" / f"{mode}_step{t:06d}.json"
            if p.exists():
                ev = json.loads(p.read_text())
                rows.append({k: ev.get(k) for k in CURVE_FIELDS} | {"protocol": ev.get("protocol")})
    return rows


def reach_baseline_table(rows: list[dict], baseline: str) -> list[dict]:
    """Per mode: the first checkpoint whose FID <= the baseline's best FID (images seen, training seconds)."""
    base = [r for r in rows if r["mode"] == baseline]
    if not base:
        return []
    best = min(r["fid"] for r in base)
    table = []
    for mode in dict.fromkeys(r["mode"] for r in rows):
        mine = sorted((r for r in rows if r["mode"] == mode), key=lambda r: r["step"])
        hit = next((r for r in mine if r["fid"] <= best), None)
        table.append({"mode": mode, "baseline_best_fid": round(best, 3),
                      "best_fid": round(min(r["fid"] for r in mine), 3),
                      "images_seen_to_reach": hit["images_seen"] if hit else "",
                      "train_seconds_to_reach": hit["train_seconds"] if hit else "",
                      "reached": bool(hit)})
    return table


def _write_csv(path: Path, rows: list[dict], fields: list[str]) -> Path:
    with atomic_path(path) as tmp:
        with open(tmp, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=fields, extrasaction="ignore")
            w.writeheader()
            w.writerows(rows)
    return path


def plot_curves(rows: list[dict], x_key: str, x_label: str, path: Path, scale: float = 1.0) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for mode in dict.fromkeys(r["mode"] for r in rows):
        mine = sorted((r for r in rows if r["mode"] == mode), key=lambda r: r["step"])
        xs = [r[x_key] * scale for r in mine]
        axes[0].plot(xs, [r["fid"] for r in mine], marker="o", label=mode)
        axes[1].errorbar(xs, [r["kid"] * 1e3 for r in mine], yerr=[r["kid_std"] * 1e3 for r in mine], marker="o",
                         capsize=3, label=mode)
    axes[0].set_ylabel("FID (lower is better)")
    axes[1].set_ylabel("KID x 1e3 (lower is better)")
    for ax in axes:
        ax.set_xlabel(x_label)
        ax.grid(alpha=0.3)
    axes[0].legend()
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=120)
    plt.close(fig)
    return path


def write_comparison(out: Path, rows: list[dict], baseline: str, clf_meta: dict, protocol: dict,
                     cfg: RunConfig) -> dict[str, Path]:
    files = {"curves": _write_csv(out / "curves.csv", rows, CURVE_FIELDS)}
    table = reach_baseline_table(rows, baseline)
    files["reach_baseline"] = _write_csv(out / "reach_baseline.csv", table,
                                         ["mode", "baseline_best_fid", "best_fid", "images_seen_to_reach",
                                          "train_seconds_to_reach", "reached"])
    if rows:
        files["fid_vs_images"] = plot_curves(rows, "images_seen", "training images seen", out / "fid_vs_images.png")
        files["fid_vs_wallclock"] = plot_curves(rows, "train_seconds", "training wall-clock (minutes)",
                                                out / "fid_vs_wallclock.png", scale=1 / 60)
    fid_protocol = next((r["protocol"] for r in rows if r.get("protocol")), {})
    write_json(out / "compare.json", {
        "preset": cfg.preset, "dataset": cfg.data.dataset, "image_size": cfg.data.image_size,
        "train_steps": cfg.train.max_steps, "batch_size": cfg.train.batch_size, "seed": cfg.train.seed,
        "classifier_accuracy": clf_meta.get("accuracy"), "baseline": baseline, "sampling": protocol,
        "fid_protocol": {k: fid_protocol.get(k) for k in ("metric", "feature_network", "preprocessing", "reference",
                                                          "small_n", "note")},
        "curves": [{k: r[k] for k in CURVE_FIELDS} for r in rows], "reach_baseline": table,
        "note": "train_seconds is the wall-clock of this machine's training invocations (shared CPU: other jobs "
                "ran beside it); images seen is the load-independent axis."})
    files["summary"] = out / "compare.json"
    return files
