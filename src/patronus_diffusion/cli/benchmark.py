"""`patronus diagnose-benchmark`: measure the shortcut detector on planted couplings (issue 37 part 2)."""

from __future__ import annotations

from ..utils.errors import UsageError
from .common import formatter, print_outputs


def register(sub) -> None:
    from ..data.marks import MARK_KINDS
    from ..experiments.diagnose_benchmark import DEFAULT_DIAGNOSE as D
    from ..experiments.diagnose_benchmark import DEFAULT_KINDS, DEFAULT_SEEDED, DEFAULT_STRENGTHS

    p = sub.add_parser(
        "diagnose-benchmark", help="measure `diagnose` as a detector: planted marks at several strengths, both "
                                   "namings, the scan and an outside judge per model",
        formatter_class=formatter(),
        description="For every mark kind and strength rho: a Fashion-MNIST set with the mark tied to A (footwear) "
                    "at phi = rho, an independent control mark and a blind coin column; a model trained on it with "
                    "a fixed step budget; diagnose (A, mark) and (not:A, mark), scan every attribute pair, and let "
                    "an outside judge (a CNN trained on real images only) read the mark edit. Writes summary.md, "
                    "models.csv, pairs.csv, detection.csv, verdicts.csv, dose_response.csv/.png, one JSON per "
                    "model in OUT/evals (the record). Re-run the same command to continue an interrupted study; "
                    "--report-only rewrites the tables from OUT/evals. See docs/diagnose_benchmark.md.")
    p.add_argument("--out", default="results/diagnose-benchmark", help="the study's folder")
    p.add_argument("--report-only", action="store_true",
                   help="rewrite the tables and figure from OUT/benchmark.json and OUT/evals; train nothing")
    g = p.add_argument_group("planted couplings")
    g.add_argument("--marks", default=",".join(DEFAULT_KINDS),
                   help=f"mark kinds, comma-separated, of {', '.join(MARK_KINDS)}")
    g.add_argument("--strengths", default=",".join(f"{r:g}" for r in DEFAULT_STRENGTHS),
                   help="planted strengths rho = phi(A, mark), comma-separated, each in [-1, 1]")
    g.add_argument("--train-seeds", type=int, default=2, help="training seeds at each of --seeded-strengths")
    g.add_argument("--seeded-strengths", default=None,
                   help="the strengths that get --train-seeds seeds (the others one) (default: those of "
                        f"{','.join(f'{r:g}' for r in DEFAULT_SEEDED)} among --strengths)")
    g.add_argument("--first-train-seed", type=int, default=0,
                   help="training seeds are this, this + 1, ...: pilot on one seed, report on others")
    g.add_argument("--a-name", default="footwear", help="the name of attribute A (a set of classes)")
    g.add_argument("--classes", default="0,1,7,9", help="the classes the sets are drawn from, equally")
    g.add_argument("--a-classes", default="7,9", help="the classes that make up A (Sneaker, Ankle boot)")
    g.add_argument("--n-train", type=int, default=4000, help="train images per set")
    g.add_argument("--n-test", type=int, default=800, help="test images per set")
    g.add_argument("--data-seed", type=int, default=0, help="seed of the image choice and the mark assignment")
    g.add_argument("--data-root", help="folder of the Fashion-MNIST IDX files (default: Debian's)")
    g.add_argument("--no-blind", action="store_true", help="leave out the blind coin column (fewer scan pairs)")
    g = p.add_argument_group("training (the same budget for every model)")
    g.add_argument("--train-steps", type=int, default=1000, help="training steps per model")
    g.add_argument("--init-from", default="pretrained:fashion-mnist",
                   help="fine-tune from this run's EMA weights (its own config); 'none' with --preset")
    g.add_argument("--preset", help="train from scratch with this preset instead (needs --init-from none)")
    g.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="config override, repeatable")
    g = p.add_argument_group("diagnosis (as `patronus diagnose`)")
    g.add_argument("--n", type=int, default=D["n_images"], help="edited images per seed")
    g.add_argument("--seeds", type=int, default=D["seeds"], help="diagnosis repetitions (images, probe)")
    g.add_argument("--top-k", type=int, default=D["top_k"], help="prototypes raised per attribute")
    g.add_argument("--steps", type=int, default=D["steps"], help="DDIM inversion/decoding steps")
    g.add_argument("--threshold", type=float, default=D["threshold"], help="verdict threshold tau")
    g.add_argument("--min-probe-auroc", type=float, default=D["min_probe_auroc"],
                   help="a direction is tested only when the probe reads both attributes this well")
    g.add_argument("--min-own-effect", type=float, default=D["min_own_effect"],
                   help="a direction is tested only when raising an attribute's top prototypes moves the probe's "
                        "reading of it by at least this (mean change of probability), as `diagnose --min-own-effect`")
    g.add_argument("--edit-guidance", type=float, default=D["edit_guidance"], help="edit guidance weight w")
    g.add_argument("--probe-limit", type=int, default=D["probe_limit"], help="clean images per split for ranking")
    g.add_argument("--probe-epochs", type=int, default=D["probe_epochs"], help="epochs of the diagnosis' probe")
    g.add_argument("--scan", choices=["pairwise", "shared"], default="shared",
                   help="the scan of every attribute pair, as `diagnose --scan --scan-mode`: shared (the default of "
                        "both: each attribute edited once, about K edit passes for K attributes) or pairwise (one "
                        "diagnosis per pair)")
    g.add_argument("--steer-n", type=int, default=48, help="clean test images without the mark the judge reads "
                                                           "after the mark edit, per model")
    g.add_argument("--judge-epochs", type=float, default=4.0, help="epochs of each outside judge")
    p.add_argument("--record-note", help="a line printed at the top of summary.md (e.g. 'tiny smoke record')")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N | mps")
    p.add_argument("--seed", type=int, default=0, help="the diagnosis seed (images, probes), the same for every model")
    p.set_defaults(func=cmd_diagnose_benchmark)


def _floats(text: str, flag: str) -> list[float]:
    try:
        return [float(x) for x in text.replace(" ", "").split(",") if x]
    except ValueError:
        raise UsageError(f"{flag} must be comma-separated numbers, e.g. 0,0.5,1; got {text!r}") from None


def _ints(text: str, flag: str) -> list[int]:
    try:
        return [int(x) for x in text.replace(" ", "").split(",") if x]
    except ValueError:
        raise UsageError(f"{flag} must be comma-separated integers, e.g. 0,1,7,9; got {text!r}") from None


def _seeded_strengths(args) -> list[float]:
    """The strengths that get every training seed: as given, else the defaults that the study plants."""
    from ..experiments.diagnose_benchmark import DEFAULT_SEEDED

    if args.seeded_strengths is not None:
        return _floats(args.seeded_strengths, "--seeded-strengths")
    strengths = _floats(args.strengths, "--strengths")
    return [r for r in DEFAULT_SEEDED if float(r) in strengths]


def spec_from_args(args):
    from ..experiments.diagnose_benchmark import BenchmarkSpec

    init_from = None if str(args.init_from).lower() == "none" else args.init_from
    if args.preset and init_from:
        raise UsageError("--preset trains from scratch: pass --init-from none with it")
    return BenchmarkSpec(
        mark_kinds=[k for k in args.marks.replace(" ", "").split(",") if k],
        strengths=_floats(args.strengths, "--strengths"), train_seeds=args.train_seeds,
        seeded_strengths=_seeded_strengths(args),
        first_train_seed=args.first_train_seed, train_steps=args.train_steps, init_from=init_from,
        preset=args.preset, overrides=list(args.set), a_name=args.a_name,
        classes=_ints(args.classes, "--classes"), a_classes=_ints(args.a_classes, "--a-classes"),
        n_train=args.n_train, n_test=args.n_test, data_seed=args.data_seed, data_root=args.data_root,
        blind=not args.no_blind,
        diagnose={"n_images": args.n, "seeds": args.seeds, "top_k": args.top_k, "steps": args.steps,
                  "threshold": args.threshold, "min_probe_auroc": args.min_probe_auroc,
                  "min_own_effect": args.min_own_effect, "edit_guidance": args.edit_guidance,
                  "probe_limit": args.probe_limit, "probe_epochs": args.probe_epochs},
        scan=args.scan,
        steer_n=args.steer_n, judge_epochs=args.judge_epochs, seed=args.seed, record_note=args.record_note,
    ).validate()


def cmd_diagnose_benchmark(args) -> int:
    from ..experiments.diagnose_benchmark import rewrite_report, run_benchmark

    if args.report_only:
        files = rewrite_report(args.out)
    else:
        files = run_benchmark(spec_from_args(args), args.out, device=args.device, progress=not args.no_progress)
    print(open(files["summary.md"]).read().split("## Dose response")[0].rstrip())
    print_outputs("wrote", files)
    return 0
