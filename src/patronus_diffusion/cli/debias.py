"""`patronus debias` (a generated set in which A and B are independent) and `patronus debias-eval` (does it help a
classifier?); issue 35 part 2. See docs/debias.md."""

from __future__ import annotations

from .common import add_device, add_run, formatter, print_outputs


def register(sub) -> None:
    from ..analysis.debias import DEFAULT_CONFIDENCE, DEFAULT_MIN_JUDGE_AUROC, MODES, RANKINGS

    p = sub.add_parser(
        "debias", help="generate a set in which attributes A and B are independent, as outside judges read them",
        formatter_class=formatter(),
        description="Fill the four (A, B) cells with n/4 generated images each: take a real training image with "
                    "B = b, set A's top prototypes (ranked by AUROC for A within each value of B) to their plausible "
                    "maximum (a = 1) or minimum (a = 0), decode (from fresh seeded noise, or from the image's "
                    "inversion), and keep the image only when both outside judges (a CNN trained on the run's real "
                    "images, or the class judge for class: attributes) read it as the target cell with probability "
                    ">= --confidence. A cell stops at --max-attempts and is then reported unfilled. Writes "
                    "images/*.png, attributes.csv (the folder format: --dataset folder --data-root OUT "
                    "--attributes-csv OUT/attributes.csv; split = train), debias.json (phi(A, B) by the judges with "
                    "a bootstrap interval, and by a second pair of judges; attempts and acceptance per cell; "
                    "FID/KID with --fid) and debias.png. Re-run the same command to continue.")
    add_run(p)
    p.add_argument("--decouple", required=True, metavar="A,B",
                   help="the two attributes: A is edited, B comes from the real source image (columns of the run's "
                        "attribute CSV, NAME=v1+v2 or class:c1+c2)")
    p.add_argument("--n", type=int, default=400, help="images, a multiple of 4 (n/4 per cell)")
    p.add_argument("--mode", default="sample",
                   help=f"how an edited s is decoded: {' or '.join(MODES)} (sample: from fresh seeded noise with the "
                        f"run's sampler; inversion: from the source image's own DDIM inversion, one try per image)")
    p.add_argument("--confidence", type=float, default=DEFAULT_CONFIDENCE,
                   help="a judge must give the target at least this probability (at most 1 - it for absence)")
    p.add_argument("--max-attempts", type=int,
                   help="attempts per cell before it is reported unfilled (default: 20 per image of the cell)")
    p.add_argument("--top-k", type=int, default=2, help="A's prototypes that are edited")
    p.add_argument("--ranking", default="within",
                   help=f"how A's prototypes are ranked: {' or '.join(RANKINGS)} (within: the mean AUROC for A "
                        f"within B = 1 and within B = 0; plain: the AUROC over all images)")
    p.add_argument("--steps", type=int, help="sampler steps (default: the run's sample.steps; 25 for inversion)")
    p.add_argument("--edit-guidance", type=float, default=0.0,
                   help="decode s' with eps(s') + w (eps(s') - eps(s)), s the source's own: amplifies the edit")
    p.add_argument("--min-judge-auroc", type=float, default=DEFAULT_MIN_JUDGE_AUROC,
                   help="each judge must read its attribute on the run's test images at least this well")
    p.add_argument("--no-check-judges", action="store_true",
                   help="skip the second pair of judges (another seed) that re-reads phi of the written set")
    p.add_argument("--fid", action="store_true",
                   help="FID/KID of the set against the run's real test images, and the floor of as many real "
                        "training images")
    p.add_argument("--fid-n-ref", type=int, default=2000, help="real test images for FID/KID")
    p.add_argument("--batch", type=int, default=64, help="attempts decoded per batch")
    p.add_argument("--rank-limit", type=int, default=4000, help="training images for ranking A's prototypes")
    p.add_argument("--judge-cache", metavar="DIR", help="folder of cached judges (default: $PATRONUS_CACHE/judge)")
    p.add_argument("--out", required=True, help="the set's folder (new, empty, or a debias folder to continue)")
    p.add_argument("--no-progress", action="store_true")
    add_device(p)
    p.set_defaults(func=cmd_debias)

    from ..experiments.debias_eval import VARIANTS

    q = sub.add_parser(
        "debias-eval", help="does a debias set help? worst-group accuracy of a classifier of B with and without it",
        formatter_class=formatter(),
        description="Train the small CNN of `patronus train-classifier` for B (the debias set's second attribute), "
                    "with the same training code, on the run's biased real training "
                    "data (real), on it plus the debias set (real+debias), on the debias set alone (debias) and on "
                    "the real data with group-balanced sampling (real-balanced), with --seeds seeds each and the "
                    "same steps, and evaluate on a balanced real test set (equal (A, B) groups): worst-group and "
                    "mean accuracy with 95% t-intervals over seeds, and each variant minus real, paired by seed. "
                    "Writes debias_eval.json/.csv/.md/.png and OUT/evals/ (one file per classifier: re-run to "
                    "continue).")
    add_run(q)
    q.add_argument("--debias", required=True, metavar="DIR", help="the folder written by `patronus debias`")
    q.add_argument("--out", required=True, help="the study's folder")
    q.add_argument("--variants", default=",".join(VARIANTS), help="comma-separated, of " + ", ".join(VARIANTS))
    q.add_argument("--seeds", type=int, default=3, help="classifier seeds per variant")
    q.add_argument("--first-seed", type=int, default=0, help="seeds are this, this + 1, ...")
    q.add_argument("--steps", type=int, default=1000, help="training steps per classifier (the same for all)")
    q.add_argument("--batch-size", type=int, default=64)
    q.add_argument("--lr", type=float, default=1e-3)
    q.add_argument("--test-per-cell", type=int,
                   help="real test images per (A, B) group (default: as many as the smallest group has)")
    q.add_argument("--test-data", metavar="DIR",
                   help="take the balanced test set from this folder set's test split (e.g. the rho = 0 set of a "
                        "diagnose-benchmark) instead of the run's")
    q.add_argument("--test-seed", type=int, default=0, help="seed of the balanced test draw")
    q.add_argument("--no-progress", action="store_true")
    q.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N | mps")
    q.set_defaults(func=cmd_debias_eval)


def cmd_debias(args) -> int:
    import warnings

    import torch

    from ..analysis.debias import check_settings, debias, parse_pair
    from ..api import Patronus
    from ..utils.device import pick_device

    a, b = parse_pair(args.decouple)
    check_settings(args.n, args.top_k, args.steps, args.confidence, args.min_judge_auroc, args.max_attempts,
                   args.batch, args.mode, args.edit_guidance, args.rank_limit, args.ranking)
    if args.fid_n_ref < 2:
        from ..utils.errors import UsageError

        raise UsageError(f"--fid-n-ref must be at least 2, got {args.fid_n_ref}")
    device = pick_device(args.device)
    torch.manual_seed(args.seed)
    pat = Patronus.load(args.run, weights=args.weights, device=str(device))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = debias(pat, a, b, n=args.n, out=args.out, mode=args.mode, top_k=args.top_k, steps=args.steps,
                        edit_guidance=args.edit_guidance, confidence=args.confidence,
                        min_judge_auroc=args.min_judge_auroc, max_attempts=args.max_attempts, batch=args.batch,
                        rank_limit=args.rank_limit, ranking=args.ranking, seed=args.seed,
                        check_judges=not args.no_check_judges, fid=args.fid, fid_n_ref=args.fid_n_ref,
                        judge_cache=args.judge_cache, progress=not args.no_progress)
    files = result.write(args.out)
    import sys

    for w in caught:
        if issubclass(w.category, UserWarning):
            print(f"patronus debias: warning: {w.message}", file=sys.stderr)
    r = result.report
    print(repr(result))
    for key, c in r["cells"].items():
        ca, cb = key.split(",")
        acc = "n/a" if c["acceptance"] is None else f"{c['acceptance']:.2f}"
        print(f"  {r['column_a']}={ca}, {r['column_b']}={cb}: {c['accepted']}/{c['needed']} in {c['attempts']} "
              f"attempts (acceptance {acc}; {c['from_sources_with_target_a']} from sources that had "
              f"{r['column_a']}={ca}; training share {c['training_share']:.1%})")
    pc = r["phi_check_judges"]
    if pc:
        print(f"  phi by the check judges (another seed): {pc['phi']:+.3f}"
              + ("" if pc["ci95"] is None else f" [{pc['ci95'][0]:+.3f}, {pc['ci95'][1]:+.3f}]")
              + f"; they agree with the judges on {pc['agreement_a']:.0%} ({r['column_a']}) and "
                f"{pc['agreement_b']:.0%} ({r['column_b']})")
    if r["fid"] and "fid" in r["fid"]:
        f = r["fid"]
        print(f"  FID {f['fid']:.2f}, KID {f['kid'] * 1e3:.2f}e-3 (N = {f['n_generated']} vs {f['n_reference']} real "
              f"test images); the floor of {f['real_floor']['n']} real training images: FID "
              f"{f['real_floor']['fid']:.2f}, KID {f['real_floor']['kid'] * 1e3:.2f}e-3")
    print(f"  judges' test AUROC: {r['judges']['a']['test_auroc']:.3f} ({r['column_a']}), "
          f"{r['judges']['b']['test_auroc']:.3f} ({r['column_b']}); edited prototypes "
          f"{[e['prototype'] for e in r['prototypes']['edited']]} ({r['prototypes']['ranking']})")
    print_outputs("wrote", files)
    return 0


def cmd_debias_eval(args) -> int:
    from ..experiments.debias_eval import EvalSpec, run_debias_eval
    from ..runs import read_run_config, resolve_run
    from ..utils.device import pick_device

    spec = EvalSpec(variants=[v for v in args.variants.replace(" ", "").split(",") if v], seeds=args.seeds,
                    first_seed=args.first_seed, steps=args.steps, batch_size=args.batch_size, lr=args.lr,
                    test_per_cell=args.test_per_cell, test_data=args.test_data, test_seed=args.test_seed).validate()
    device = pick_device(args.device)
    cfg = read_run_config(resolve_run(args.run))
    files = run_debias_eval(cfg.data, args.debias, args.out, spec, device=str(device), progress=not args.no_progress)
    text = files["debias_eval.md"].read_text()
    print(text.split("## Reading it")[0].rstrip())
    print_outputs("wrote", files)
    return 0
