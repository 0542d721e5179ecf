"""`patronus audit-dose`: the audit's dose response on planted shortcuts (issue 35)."""

from __future__ import annotations

from ..utils.errors import UsageError
from .common import formatter, print_outputs


def register(sub) -> None:
    from ..experiments.audit_dose import DEFAULT_AUDIT as A
    from ..experiments.audit_dose import DEFAULT_CLASSIFIER as C
    from ..experiments.audit_dose import DEFAULT_SEEDS, DEFAULT_STRENGTHS

    p = sub.add_parser(
        "audit-dose", help="the audit's dose response: classifiers trained where a mark co-occurs with A at strength "
                           "k, each audited by one generator trained on the clean set",
        formatter_class=formatter(),
        description="For every strength k and classifier seed: the generator's own planted set (data/marks.py) with "
                    "phi(A, mark) = k (a set with the same spec already present is used in place), a classifier of "
                    "A trained on its training split (as `train-classifier`, scored on its test split and on the "
                    "clean set's per (A, mark) cell), and `audit --attribute mark --label A` of it with the "
                    "generator (--run: trained on the clean set, k = 0). Writes audit_dose.json/.csv/.md/.png: MAD, "
                    "null and difference with intervals per (k, seed), confirmed counts, and the checks 'MAD rises "
                    "with k' and 'k = 0 interval overlaps null' (yes/no). Re-run the same command to continue; "
                    "--report-only rewrites the report from OUT/points. See docs/audit.md.")
    p.add_argument("--run", metavar="RUN", help="the generator: a Patronus run trained on a clean planted set")
    p.add_argument("--out", default="results/audit-dose", help="the study's folder")
    p.add_argument("--report-only", action="store_true", help="rewrite the report from OUT/study.json and "
                                                              "OUT/points; train and audit nothing")
    g = p.add_argument_group("planted sets")
    g.add_argument("--strengths", default=",".join(f"{k:g}" for k in DEFAULT_STRENGTHS),
                   help="k = phi(A, mark) of the classifiers' training sets, comma-separated, each in [-1, 1]")
    g.add_argument("--seeds", default=",".join(str(s) for s in DEFAULT_SEEDS), help="classifier seeds per k")
    g.add_argument("--mark", help="the mark kind (patch, stripe, dots); it must be the one of the generator's set, "
                                  "which is the default")
    g.add_argument("--data-out", metavar="DIR", help="where sets are built (default: OUT/data)")
    g.add_argument("--data-root", metavar="DIR", help="folder of the Fashion-MNIST IDX files (default: Debian's)")
    g.add_argument("--generator-data", metavar="DIR",
                   help="the generator's set, when its config's data.root cannot be found from here")
    g = p.add_argument_group("classifiers (as `train-classifier`)")
    g.add_argument("--epochs", type=float, default=C["epochs"], help="passes over the training images")
    g.add_argument("--batch-size", type=int, default=C["batch_size"])
    g.add_argument("--lr", type=float, default=C["lr"], help="Adam's learning rate")
    g.add_argument("--range", default=C["range"], metavar="LOW,HIGH", help="the input range of the saved files")
    g.add_argument("--limit", type=int, help="at most this many training images per classifier")
    g = p.add_argument_group("audits (as `audit`)")
    g.add_argument("--n", type=int, default=A["n"], help="test images per audit, half with the mark")
    g.add_argument("--steps", type=int, default=A["steps"], help="DDIM inversion/decoding steps")
    g.add_argument("--top-k", type=int, default=A["top_k"], help="prototypes edited for the mark")
    g.add_argument("--edit-guidance", type=float, default=A["edit_guidance"], help="edit guidance weight w")
    g.add_argument("--threshold", type=float, default=A["threshold"], help="the verdict's tau")
    g.add_argument("--min-judge-auroc", type=float, default=A["min_judge_auroc"],
                   help="the judge must read the mark this well")
    g.add_argument("--rank-limit", type=int, default=A["rank_limit"], help="training images for the ranking")
    g.add_argument("--audit-seed", type=int, default=A["seed"], help="the seed of the audited images (one draw for "
                                                                     "every classifier)")
    g.add_argument("--n-boot", type=int, default=A["n_boot"], help="bootstrap resamples per interval")
    p.add_argument("--record-note", help="a line printed at the top of audit_dose.md (e.g. 'tiny smoke record')")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N | mps")
    p.set_defaults(func=cmd_audit_dose)


def _list(text: str, kind, flag: str, example: str) -> list:
    try:
        return [kind(x) for x in text.replace(" ", "").split(",") if x]
    except ValueError:
        raise UsageError(f"{flag} must be comma-separated numbers, e.g. {example}; got {text!r}") from None


def spec_from_args(args):
    from ..experiments.audit_dose import DoseSpec

    if not args.run:
        raise UsageError("give the generator with --run RUN (or --report-only to rewrite a stored study's report)")
    return DoseSpec(
        run=args.run, mark=args.mark, strengths=_list(args.strengths, float, "--strengths", "1,0.75,0.5,0"),
        seeds=_list(args.seeds, int, "--seeds", "0,1,2"), data_out=args.data_out, data_root=args.data_root,
        generator_data=args.generator_data,
        classifier={"epochs": args.epochs, "batch_size": args.batch_size, "lr": args.lr, "range": args.range,
                    "limit": args.limit},
        audit={"n": args.n, "steps": args.steps, "top_k": args.top_k, "edit_guidance": args.edit_guidance,
               "threshold": args.threshold, "min_judge_auroc": args.min_judge_auroc, "rank_limit": args.rank_limit,
               "seed": args.audit_seed, "n_boot": args.n_boot},
        record_note=args.record_note).validate()


def cmd_audit_dose(args) -> int:
    from ..experiments.audit_dose import rewrite_report, run_dose

    if args.report_only:
        files = rewrite_report(args.out)
    else:
        files = run_dose(spec_from_args(args), args.out, device=args.device, progress=not args.no_progress)
    text = files["audit_dose.md"].read_text()
    print(text.split("## By strength")[0].rstrip())
    print_outputs("wrote", files)
    return 0
