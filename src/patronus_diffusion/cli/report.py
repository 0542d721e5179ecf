"""`patronus report`: one self-contained HTML page about a model (analysis/report.py)."""

from __future__ import annotations

from .common import add_device, add_run, formatter, print_outputs


def register(sub) -> None:
    p = sub.add_parser("report", help="a self-contained HTML report: model card, a card per prototype, quality",
                       formatter_class=formatter(),
                       description="Writes OUT/index.html (opens offline: inline pictures and data, no external "
                                   "files), OUT/report.json and OUT/report.png (a summary panel and the first "
                                   "prototype cards): the model card (training curve, reconstruction, "
                                   "edit benchmark; FID, diagnoses, classifier audits and debias sets found in "
                                   "--results folders, quoted with their intervals and verdicts), a card per "
                                   "prototype (nearest training patches, s histogram, edit strip with its rise, "
                                   "best AUROC, dead/redundant flags; sortable and filterable) and the quality "
                                   "table. --quick uses a small budget.")
    add_run(p)
    p.add_argument("--out", default="results/report")
    p.add_argument("--quick", action="store_true", help="a smaller budget (2 edited images, 20 DDIM steps, ...)")
    p.add_argument("--results", nargs="*", default=[], metavar="DIR",
                   help="earlier result folders to quote (fid.json, class_agreement.json, diagnosis.json, "
                        "edits_eval.json, audit.json, debias.json, debias_eval.json inside); a file that cannot be "
                        "read is listed as such")
    p.add_argument("--no-progress", action="store_true")
    add_device(p)
    p.set_defaults(func=cmd_report)


def cmd_report(args) -> int:
    from ..analysis.report import build_report
    from ..analysis.report_results import check_folders
    from ..api import Patronus

    check_folders(args.results)
    pat = Patronus.load(args.run, args.weights, args.device)
    rep = build_report(pat, quick=args.quick, seed=args.seed, progress=not args.no_progress, results=args.results)
    files = rep.write(args.out)
    print(rep.summary())
    bad = rep.card["earlier_results"]["unreadable"]
    if bad:
        print(f"could not read {len(bad)} result file(s), listed in the page: " + "; ".join(
            f"{u['file']} ({u['reason']})" for u in bad))
    print_outputs("wrote", files)
    return 0
