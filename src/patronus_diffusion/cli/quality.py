"""Prototype-quality and shortcut commands: quality, make-biased, diagnose."""

from __future__ import annotations

import dataclasses

import json
from pathlib import Path

import torch

from ..config import DataConfig
from ..utils.errors import UsageError
from .common import add_device, add_run, formatter, print_outputs


def register(sub) -> None:
    from ..analysis.verdicts import DEFAULT_MIN_OWN_EFFECT

    p = sub.add_parser("quality", help="score what the prototypes capture (probes, AUROC matrix, TAD, dead)",
                       formatter_class=formatter(),
                       description="Encode the first --limit images of a split and write quality.json, quality.md "
                                   "(table), probes.csv (5-fold linear-probe ROC-AUC per binary attribute, accuracy "
                                   "per class label), prototype_auroc.csv/.png (target x prototype AUROC), "
                                   "redundancy.csv; TAD, attributes captured and dead prototypes are in quality.json.")
    add_run(p)
    p.add_argument("--split", default="train", help="split to encode (the reference uses train)")
    p.add_argument("--limit", type=int, default=10000, help="first N images in file order (0 = all)")
    p.add_argument("--folds", type=int, default=5, help="cross-validation folds")
    p.add_argument("--cos-threshold", type=float, default=0.9, help="prototype pairs with cosine above this")
    p.add_argument("--corr-threshold", type=float, default=0.9, help="pairs whose s correlate above this")
    p.add_argument("--data-root", help="score on other data of the same kind (folder datasets)")
    p.add_argument("--attributes-csv", help="labels from this attribute CSV (folder datasets)")
    p.add_argument("--out", default="results/quality")
    p.add_argument("--no-progress", action="store_true")
    add_device(p)
    p.set_defaults(func=cmd_quality)

    p = sub.add_parser("make-biased", help="build a dataset in which two attributes are correlated",
                       formatter_class=formatter(),
                       description="--demo: the built-in Fashion-MNIST planted-shortcut demo (OUT/biased and "
                                   "OUT/unbiased). --preset celeba-hair-smile: the paper's CelebA recipe. Otherwise: "
                                   "a subset of --dataset with phi(A, B) = --correlation. Attributes: NAME (binary "
                                   "column), NAME=v1+v2, or class:c1+c2. Writes attributes.csv (a manifest that "
                                   "`patronus train --dataset folder --attributes-csv` reads) and a JSON summary.")
    p.add_argument("--demo", action="store_true", help="the offline Fashion-MNIST shortcut demonstration")
    p.add_argument("--preset", choices=["celeba-hair-smile"], help="named recipe (needs CelebA under --data-root)")
    p.add_argument("--dataset", default="fashion-mnist", help="source dataset for the generic builder")
    p.add_argument("--data-root", help="directory of the source data")
    p.add_argument("--attributes-csv", help="attribute CSV of a folder source")
    p.add_argument("--a", help="attribute A, e.g. Blond_Hair or class:Sneaker+Ankle boot")
    p.add_argument("--b", help="attribute B")
    p.add_argument("--correlation", type=float, default=1.0, help="target phi(A, B) in the subset (-1 ... 1)")
    p.add_argument("--n-train", type=int, help="items in the train split (default: demo 4000, else the maximum)")
    p.add_argument("--n-test", type=int, help="items in the test split (default: demo 800, else the maximum)")
    p.add_argument("--image-size", type=int, default=32, help="size at which IDX sources are written (generic)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="data/biased")
    p.set_defaults(func=cmd_make_biased)

    p = sub.add_parser("diagnose", help="detect a shortcut between two attributes with causal prototype edits",
                       formatter_class=formatter(),
                       description="Rank prototypes for A and B on clean data, raise each attribute's top "
                                   "prototypes on clean test images without it (half with the other attribute), "
                                   "and measure with an independent probe how much the other attribute changes, "
                                   "with its sign, beyond what a null edit changes it (the least associated "
                                   "prototypes raised by a request of the same size, on the same images). The "
                                   "score of a direction is leak - null leak; its 95% bootstrap interval gives one "
                                   "of these verdicts: 'shortcut' (beyond +-tau), 'coupling below tau' (excludes 0, "
                                   "within +-tau), 'no coupling detected' (holds 0, within +-tau), 'inconclusive' "
                                   "(across tau, or no tested direction); a claimed coupling that the run's own "
                                   "training labels do not hold (their phi within chance, or of the other sign) "
                                   "reads 'entanglement': the model ties A and B by itself, its data gave it no "
                                   "such shortcut. A direction is tested only when its edit "
                                   "moves its own attribute by >= --min-own-effect and the probe reads both "
                                   "attributes on clean test images (AUROC >= --min-probe-auroc); a probe that "
                                   "cannot see gives no "
                                   "verdict. Naming A as not:A runs the same intervention and negates the reading: "
                                   "the same verdict with the opposite sign. Writes diagnosis.json (score, leak, "
                                   "null leak with intervals, verdict and reason, evidence per direction, the "
                                   "settings), effects.csv, rankings.csv and diagnosis.png. --scan measures every "
                                   "pair of binary attributes instead and ranks them (scan.json, scan.csv; see "
                                   "--scan-mode for how and at what cost).")
    add_run(p)
    p.add_argument("--attributes", help="A,B (attribute names, NAME=v1+v2, class:c1+c2 or not:SPEC); with --scan, "
                                        "the attributes to scan (two or more; default: every binary column)")
    p.add_argument("--scan", action="store_true",
                   help="measure every pair of the binary attributes (of --probe-data, else the run's data) and "
                        "rank them by |score|, strongest first; every pair gets the diagnosis' score, interval "
                        "and verdict (and, with --scan-mode shared, every ordered pair its direction's)")
    p.add_argument("--scan-mode", choices=["shared", "pairwise"], default="shared",
                   help="shared (the default): each image is inverted once, each attribute edited once (its top "
                        "prototypes and its null edit) and ONE probe per seed reads all attributes, so K attributes "
                        "cost about K edit passes (16 attributes: 1/15 of pairwise's UNet passes or less; "
                        "benchmarks/scan_cost.py) with the same score, interval and four verdicts per pair. It "
                        "differs from pairwise in which images are edited (picked once per attribute, each other "
                        "attribute present and absent among them) and in its null edit (the prototypes least "
                        "associated with all attributes), and it leaves a pair untested where the clean data "
                        "correlate it (|phi| > --max-phi). pairwise: one full diagnosis per pair, K(K-1)/2 of them: "
                        "the reference, to confirm a pair, and the way to scan a run's own correlated data without "
                        "--probe-data (it decorrelates them pair by pair)")
    p.add_argument("--max-phi", type=float, default=0.2,
                   help="--scan-mode shared: a pair whose clean training images correlate beyond this |phi| is "
                        "untested (a prototype of one attribute could rank among the other's)")
    p.add_argument("--probe-data", help="folder of clean images (A and B independent); default: the run's own "
                                        "data subsampled to phi(A, B) = 0")
    p.add_argument("--probe-csv", help="attribute CSV of --probe-data (default: PROBE_DATA/attributes.csv)")
    p.add_argument("--n", type=int, default=24, help="edited images per seed")
    p.add_argument("--seeds", type=int, default=3, help="repetitions (other images, new probe)")
    p.add_argument("--top-k", type=int, default=2, help="prototypes raised per attribute (the paper uses 2); the "
                                                        "null edit raises as many")
    p.add_argument("--steps", type=int, default=25, help="DDIM inversion/decoding steps")
    p.add_argument("--edit-scale", type=float, default=1.0,
                   help="raise the prototypes to this multiple of their plausible maximum max_X s_j (1 = the "
                        "paper's manipulation; > 1 extrapolates, for models whose s range is small)")
    p.add_argument("--edit-guidance", type=float, default=0.0,
                   help="decode each edit s' with eps(s') + w (eps(s') - eps(s)). The default 0 is the decoder's "
                        "own conditional: the diagnosis then reads what the model itself ties together, whatever "
                        "the run's sample.edit_guidance (0.7 for cpu-small) says. w > 0 amplifies everything the "
                        "edit changes, off-target change included (on the shipped model: off-target 0.096 at w "
                        "0.7 against 0.062 at w 0, docs/steering.md), so a larger own effect can come with a "
                        "larger leak; use it only for a decoder "
                        "that hardly reacts to s, and read the null leak beside it. Written into diagnosis.json "
                        "and the figure")
    p.add_argument("--threshold", type=float, default=0.2, help="verdict threshold tau on the score (leak beyond the "
                                                               "null edit's, per unit of the own change)")
    p.add_argument("--min-probe-auroc", type=float, default=0.75,
                   help="a direction is tested only when every seed's probe reads both attributes on clean test "
                        "images with at least this AUROC (in (0.5, 1]); below it the probe cannot see the "
                        "attribute, and the verdict is inconclusive, never 'no coupling'")
    p.add_argument("--min-own-effect", type=float, default=DEFAULT_MIN_OWN_EFFECT,
                   help="a direction is tested only if raising an attribute's top prototypes moves the probe's "
                        "reading of it by at least X (mean change of probability); the score divides by this "
                        "change, so a weak edit inflates it. The default was chosen on the diagnose-benchmark pilot "
                        "(training seed 0), see docs/diagnose_benchmark.md")
    p.add_argument("--probe-limit", type=int, default=4000, help="clean images per split for ranking and probe")
    p.add_argument("--out", default="results/diagnose")
    p.add_argument("--no-progress", action="store_true")
    add_device(p)
    p.set_defaults(func=cmd_diagnose)


def _load(args):
    from ..api import Patronus

    torch.manual_seed(args.seed)
    return Patronus.load(args.run, weights=args.weights, device=args.device)


def cmd_quality(args) -> int:
    from ..analysis.quality import run_quality

    pat = _load(args)
    ds = None
    if args.data_root or args.attributes_csv:
        cfg = dataclasses.replace(pat.config.data)  # an editable copy (a loaded config may be frozen)
        if args.data_root:
            cfg.root = args.data_root
        if args.attributes_csv:
            cfg.attributes_csv = args.attributes_csv
        from ..data import load_dataset

        ds = load_dataset(cfg, args.split)
    result = run_quality(pat, args.split, args.limit or None, args.folds, args.seed, args.cos_threshold,
                         args.corr_threshold, dataset=ds, progress=not args.no_progress)
    files = result.write(args.out)
    print(result.summary(), end="")
    print_outputs("wrote", files)
    return 0


def cmd_make_biased(args) -> int:
    from ..data import biased

    if args.demo:
        summary = biased.fashion_mnist_shortcut_demo(args.out, args.correlation, args.n_train or 4000,
                                                     args.n_test or 800, args.seed, args.data_root)
        for name in ("biased", "unbiased"):
            print(f"{name}: phi(footwear, mark) = {summary['sets'][name]['train']['correlation']:.3f}; train with\n"
                  f"  {summary['sets'][name]['train_command']}\nthen diagnose with\n"
                  f"  {summary['sets'][name]['diagnose_command']}")
    elif args.preset == "celeba-hair-smile":
        if not args.data_root:
            raise UsageError("--preset celeba-hair-smile needs --data-root CELEBA_DIR (with list_attr_celeba.txt)")
        summary = biased.celeba_hair_smile(args.data_root, args.out)
        print(json.dumps({k: summary[k] for k in ("n", "correlation_with_Smiling")}))
        print(f"train with\n  {summary['train_command']}")
    else:
        if not (args.a and args.b):
            raise UsageError("give --a and --b (or --demo, or --preset celeba-hair-smile)")
        cfg = DataConfig(dataset=args.dataset, root=args.data_root, attributes_csv=args.attributes_csv,
                         image_size=args.image_size, channels=1 if args.dataset in ("fashion-mnist", "mnist") else 3)
        summary = biased.build_biased_manifest(cfg, args.a, args.b, args.correlation, args.out, args.seed,
                                               args.n_train, args.n_test)
        for split, s in summary["splits"].items():
            print(f"{split}: {s['n']} items, phi(A, B) = {s['correlation']:.3f}")
        print(f"train with\n  {summary['train_command']}")
    print(f"wrote {args.out}")
    return 0


def _diagnose_settings(args) -> dict:
    return {"n_images": args.n, "seeds": args.seeds, "top_k": args.top_k, "steps": args.steps,
            "edit_scale": args.edit_scale, "threshold": args.threshold, "edit_guidance": args.edit_guidance,
            "min_probe_auroc": args.min_probe_auroc, "min_own_effect": args.min_own_effect}


def cmd_diagnose(args) -> int:
    from ..analysis.shortcut import check_settings, diagnose

    specs = [s.strip() for s in (args.attributes or "").split(",") if s.strip()]
    if not args.scan and len(specs) != 2:
        raise UsageError(f"--attributes needs exactly two attributes A,B (or pass --scan), got {specs}")
    if args.scan and len(specs) == 1:
        raise UsageError(f"--scan --attributes needs two or more attributes (or none: every binary column), got "
                         f"{specs}")
    if args.scan and len(set(specs)) != len(specs):
        raise UsageError(f"--attributes names an attribute twice: {args.attributes}")
    check_settings(**_diagnose_settings(args))  # bad values fail here, before a model loads or a file is written
    if not 0 < args.max_phi <= 1:
        raise UsageError(f"--max-phi must lie in (0, 1], got {args.max_phi}")
    pat = _load(args)
    probe_cfg = None
    if args.probe_data:
        csv = args.probe_csv or str(Path(args.probe_data) / "attributes.csv")
        if not Path(csv).exists():
            raise FileNotFoundError(f"no attribute CSV {csv}; pass --probe-csv")
        probe_cfg = dataclasses.replace(pat.config.data, dataset="folder", root=args.probe_data, attributes_csv=csv,
                                        limit=None)
    if args.scan:
        return _scan(pat, probe_cfg, args)
    result = diagnose(pat, specs[0], specs[1], probe_cfg, probe_limit=args.probe_limit, seed=args.seed,
                      progress=not args.no_progress, **_diagnose_settings(args))
    files = result.write(args.out)
    print(result.summary())
    print_outputs("wrote", files)
    return 0


def _scan(pat, probe_cfg, args) -> int:
    from ..analysis.scan import binary_attributes, scan_pairs, scan_shared

    specs = [s.strip() for s in (args.attributes or "").split(",") if s.strip()]
    names = specs or binary_attributes(pat, probe_cfg)
    if len(names) < 2:
        raise UsageError(f"--scan needs at least two binary attribute columns; found {names or 'none'}")
    kw = dict(progress=not args.no_progress, probe_limit=args.probe_limit, seed=args.seed, **_diagnose_settings(args))
    if args.scan_mode == "shared":
        result = scan_shared(pat, names, probe_cfg, max_phi=args.max_phi, **kw)
    else:
        result = scan_pairs(pat, names, probe_cfg, **kw)
    files = result.write(args.out)
    print(result.summary())
    print_outputs(f"{len(result.pairs)} pair(s) of {len(names)} attributes ({args.scan_mode} scan)", files)
    return 0
