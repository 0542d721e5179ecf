"""Editing commands: edit, extrapolate, interpolate, consistency, variations, evaluate-edits.

Each command parses its flags, builds an edit plan (every value resolved, so a bad one fails before any
inversion), makes one analysis call (patronus_diffusion.analysis.edits / evaluate_edits, on the edit
engine), writes the result (figure PNG, JSON/CSV) and prints the summary and the file list.
"""

from __future__ import annotations

import argparse

from ..utils.errors import UsageError
from .common import formatter, print_outputs, select_images
from .edit_args import (
    add_edit_args,
    edit_inputs,
    load_model,
    parse_prototypes,
    parse_window,
    plan_args,
    reference_of,
)

DEFAULT_EXTRAPOLATION = "0,0.25max,0.5max,0.75max,max,1.25max,1.5max"
DEFAULT_STRENGTHS = "0.25,0.5,1,1.5"


def register(sub) -> None:
    p = sub.add_parser("edit", help="edit s (set / scale / add any entries) and decode the images again",
                       formatter_class=formatter(), description=(
                           "Each --edit is one edited version of every image: comma-separated J=VALUE (VALUE a "
                           "number, max, 1.5max or q0.9 = quantile of s_J over X), J*FACTOR or J+DELTA. Writes "
                           "edit.png (input, reconstruction, edits; box = best patch of the first edited prototype), "
                           "edit_grid.png (lossless), edits.json (faithfulness per edit: median and per image) and "
                           "s.csv into --out."))
    add_edit_args(p, 4)
    p.add_argument("--edit", action="append", required=True, metavar="SPEC",
                   help="e.g. 3=max or 3=max,5=0 or 7*2; a spec ending in @LO:HI is timed (see --window)")
    p.add_argument("--window", default=None, metavar="LO,HI",
                   help="timed edits: the edited s conditions only the decoding steps whose timestep t has "
                        "LO <= t/T < HI (fractions of the schedule: 1 = pure noise, where decoding starts; 0 = the "
                        "clean image), the unedited s every other step. 0,1 = every step (the plain edit), 0.5,1 = "
                        "the first half (coarse layout), 0,0.5 = the second half (detail). Applies to every --edit "
                        "(or write it into one spec: 3=max@0.5:1)")
    p.add_argument("--out", default="results/edit")
    p.set_defaults(func=cmd_edit)

    p = sub.add_parser("extrapolate", help="sweep prototypes over a range of values (paper: 0 ... 3)",
                       formatter_class=formatter(), description=(
                           "For each image and each prototype J: set s_J to every value in --values and decode. "
                           "Writes extrapolate.png (rows image x prototype, columns values), extrapolate.json "
                           "(s_J reached and faithfulness per value) into --out."))
    add_edit_args(p, 1)
    p.add_argument("--prototypes", required=True, help="comma-separated ids, e.g. 0,3,17")
    p.add_argument("--values", default=DEFAULT_EXTRAPOLATION, help="comma-separated values (number, max, 1.5max, q0.9)")
    p.add_argument("--out", default="results/extrapolate")
    p.set_defaults(func=cmd_extrapolate)

    p = sub.add_parser("interpolate", help="interpolate two images: lerp s, slerp x_T",
                       formatter_class=formatter(), description=(
                           "Give exactly two images (--images A B, --indices a,b or --n 2). Decodes s(alpha) = "
                           "lerp(s_A, s_B) from x_T(alpha) = slerp(x_T^A, x_T^B) in one batch. Writes "
                           "interpolate.png, interpolate_strip.png (lossless) and interpolate.json (s along the "
                           "path, endpoint agreement with the reconstructions) into --out."))
    add_edit_args(p, 2)
    p.add_argument("--alphas", type=int, default=10, help="number of interpolation points, endpoints included")
    p.add_argument("--out", default="results/interpolate")
    p.set_defaults(func=cmd_interpolate)

    p = sub.add_parser("consistency", help="the same prototype edit across several images, boxes and patches",
                       formatter_class=formatter(), description=(
                           "For each prototype J: s_J := VALUE on every image; one row of edited images with the "
                           "best patch boxed, one row of the patches. Writes consistency.png and consistency.json "
                           "(boxes, s_J, faithfulness) into --out."))
    add_edit_args(p, 5)
    p.add_argument("--prototypes", required=True, help="comma-separated ids")
    p.add_argument("--value", default="max", help="target for s_J: number, max, 1.5max or q0.9")
    p.add_argument("--out", default="results/consistency")
    p.set_defaults(func=cmd_consistency)

    p = sub.add_parser("variations", help="one s, several x_T: what s fixes and what the noise varies",
                       formatter_class=formatter(), description=(
                           "For each image: its reconstruction (inverted x_T) and --k decodings of its s from "
                           "seeded random x_T. Writes variations.png, variations_grid.png (lossless) and "
                           "variations.json (reconstruction PSNR, |s(variation) - s(x0)|) into --out."))
    add_edit_args(p, 3)
    p.add_argument("--k", type=int, default=5, help="variations per image")
    p.add_argument("--out", default="results/variations")
    p.set_defaults(func=cmd_variations)

    p = sub.add_parser("evaluate-edits", help="how faithful are prototype edits: rise, off-target change, locality",
                       formatter_class=formatter(), description=(
                           "On --n seeded test images: raise each prototype J from s_J(recon) towards a target "
                           "(its own max over the reference set X, and the global max(s_X)) by each --strengths "
                           "fraction; decode from the inverted x_T and measure rise = (s_J(edit) - s_J(recon)) / "
                           "(value - s_J(recon)), off-target = mean_k!=J |s_k(edit) - s_k(recon)| / |requested "
                           "change|, locality = mean pixel change inside J's receptive-field box / outside it "
                           "(recon = the unedited decode from the same x_T). The headline is the decoder's own "
                           "response: every edit decoded unguided (w = 0), true medians with 95 % bootstrap "
                           "intervals over images, the leak per rise and the prototypes below 0.2 counted; "
                           "--edit-guidance adds an 'amplified' row apart. The images never come from the "
                           "reference set X. Writes edits_eval.json, edits_eval.csv and edits_eval.png into --out."))
    add_edit_args(p, 8)
    p.add_argument("--prototypes", default="all", help="'all' or comma-separated ids, e.g. 3,11")
    p.add_argument("--strengths", default=DEFAULT_STRENGTHS,
                   help="comma-separated fractions of the way to the target, swept for the own-max target; the "
                        "max(s_X) and own-min targets run at the strength nearest 1 only")
    p.add_argument("--sweep-all-targets", action="store_true",
                   help="sweep every strength for the max(s_X) and own-min targets too (twice the decodes)")
    p.add_argument("--realism", action=argparse.BooleanOptionalAction, default=None,
                   help="measure KID against real test images of the headline edits and of the reconstructions at "
                        "matched N (edits scored in rounds of one edit per image): a rise bought with artefacts shows "
                        "as a higher KID than the reconstructions' (costs Inception time). Default: on, skipped with a "
                        "note when it cannot run (fewer than 2 images, FID weights not installed); --realism makes "
                        "those an error")
    p.add_argument("--realism-ref", type=int, default=2000, help="real test images for --realism")
    p.add_argument("--steerability", action=argparse.BooleanOptionalAction, default=None,
                   help="per class, raise its top prototypes (by AUROC over the reference set) to their own max on "
                        "images an independent judge (trained on real images only) reads as another class, and "
                        "report the share it then reads as the class (CB-AE's steerability). Default: on when the "
                        "test split has class labels and a judge is shipped or cached (Fashion-MNIST's ships); "
                        "--steerability trains one when none is stored")
    p.add_argument("--top-k", type=int, default=3, help="prototypes raised per class for --steerability")
    p.add_argument("--out", default="results/evaluate-edits")
    for action in p._actions:
        if action.dest == "edit_guidance":
            action.help = ("w of the *amplified* row: the own-max edits at the headline strength decoded again with "
                           "eps(s') + W (eps(s') - eps(s)), reported apart with its effective request (1 + W) and leak "
                           "per rise. The headline is always the decoder's own response (w = 0). Default: the run's "
                           "sample.edit_guidance; 0 = no amplified row")
    p.set_defaults(func=cmd_evaluate_edits)


def cmd_edit(args) -> int:
    from ..analysis.edits import run_edit
    from ..edit import EditPlan

    window = parse_window(args.window)
    pat, x, names, common = edit_inputs(args)
    plan = EditPlan.edit(x, args.edit, pat.num_prototypes, reference_of(pat, args), window=window, **common)
    result = run_edit(pat, plan, progress=not args.no_progress)
    files = result.write(args.out)
    print(result.summary())
    print_outputs(f"{len(plan.edits)} edit(s) x {len(names)} image(s) in {result.result.seconds:.1f} s", files)
    return 0


def cmd_extrapolate(args) -> int:
    from ..analysis.edits import run_extrapolate
    from ..edit import EditPlan

    pat, x, names, common = edit_inputs(args)
    ref = reference_of(pat, args)
    protos = parse_prototypes(args.prototypes, pat.num_prototypes)
    tokens = [v.strip() for v in args.values.split(",") if v.strip()]
    if not tokens:
        raise UsageError("--values is empty; e.g. --values 0,1,2,3 or 0,0.5max,max")
    result = run_extrapolate(pat, EditPlan.sweep(x, protos, tokens, ref, **common), progress=not args.no_progress)
    files = result.write(args.out)
    print_outputs(f"{len(protos)} prototype(s) x {len(tokens)} values x {len(names)} image(s) in "
                  f"{result.result.seconds:.1f} s", files)
    return 0


def cmd_interpolate(args) -> int:
    from ..analysis.edits import run_interpolate
    from ..edit import EditPlan

    pat = load_model(args)
    x, names = select_images(pat, args)
    if len(names) != 2:
        raise UsageError(f"interpolate needs exactly two images, got {len(names)}; use --indices A,B, "
                         f"--images A B or --n 2")
    if args.alphas < 2:
        raise UsageError("--alphas must be at least 2 (the two endpoints)")
    result = run_interpolate(pat, EditPlan.interpolation(x, args.alphas, **plan_args(pat, args, names)),
                             progress=not args.no_progress)
    files = result.write(args.out)
    d = result.endpoint_diff
    print(f"endpoints vs reconstructions: max |diff| {d[0]:.2e}, {d[1]:.2e}")
    print_outputs(f"{args.alphas} interpolation points in {result.result.seconds:.1f} s", files)
    return 0


def cmd_consistency(args) -> int:
    from ..analysis.edits import run_consistency
    from ..edit import EditPlan

    pat, x, names, common = edit_inputs(args)
    ref = reference_of(pat, args)
    protos = parse_prototypes(args.prototypes, pat.num_prototypes)
    result = run_consistency(pat, EditPlan.consistency(x, protos, args.value, ref, **common),
                             progress=not args.no_progress)
    files = result.write(args.out)
    print_outputs(f"{len(protos)} prototype(s) x {len(names)} image(s) in {result.result.seconds:.1f} s", files)
    return 0


def cmd_variations(args) -> int:
    from ..analysis.edits import run_variations
    from ..edit import EditPlan

    pat = load_model(args)
    x, names = select_images(pat, args)
    if args.k < 1:
        raise UsageError("--k must be at least 1")
    result = run_variations(pat, EditPlan.noise_variations(x, args.k, **plan_args(pat, args, names)),
                            progress=not args.no_progress)
    files = result.write(args.out)
    print_outputs(f"{len(names)} image(s) x {args.k} variations in {result.result.seconds:.1f} s", files)
    return 0


def _strengths(text: str) -> list[float]:
    try:
        values = [float(v) for v in text.replace(" ", "").split(",") if v]
    except ValueError:
        raise UsageError(f"--strengths must be comma-separated numbers, e.g. {DEFAULT_STRENGTHS}; "
                         f"got {text!r}") from None
    if not values:
        raise UsageError(f"--strengths is empty; e.g. --strengths {DEFAULT_STRENGTHS}")
    return values


def cmd_evaluate_edits(args) -> int:
    from ..analysis.edit_judges import class_steerability, measure_realism
    from ..analysis.evaluate_edits import EvaluationPlan, evaluate_edits
    from ..evaluation.fid import inception_path

    if args.realism is not False and args.realism_ref < 2:
        raise UsageError("--realism-ref must be at least 2")
    pat, x, names, common = edit_inputs(args)
    realism, why_not = args.realism is not False, None
    if realism and x.shape[0] < 2:
        why_not = f"KID needs at least 2 images (--n 2 or more), got {x.shape[0]}"
    elif realism:
        try:
            inception_path()
        except FileNotFoundError as e:
            why_not = str(e)
    if realism and why_not:
        if args.realism:  # asked for by name: an error, before any work
            raise UsageError(f"--realism: {why_not}")
        print(f"realism skipped: {why_not}")
        realism = False
    ref = reference_of(pat, args)
    protos = None if args.prototypes.strip().lower() == "all" else parse_prototypes(args.prototypes,
                                                                                    pat.num_prototypes)
    plan = EvaluationPlan(images=x, reference=ref, prototypes=protos, strengths=_strengths(args.strengths),
                          swept=None if args.sweep_all_targets else ("own_max",), **common)
    judge, ref_labels = _steerability_inputs(pat, ref, args)
    ev = evaluate_edits(pat, plan, progress=not args.no_progress)
    if realism:
        ev.realism = measure_realism(pat, ev, args.realism_ref, progress=not args.no_progress)
    if judge is not None:
        ev.steerability = class_steerability(pat, ev, judge, ref_labels, args.top_k, progress=not args.no_progress)
    files = ev.write(args.out)
    print(f"{len(ev.prototypes)} prototype(s) x {len(ev.index) // max(len(ev.prototypes), 1)} (target, strength) "
          f"pair(s) x {len(names)} image(s) in {ev.seconds:.1f} s")
    for line in ev.lines():
        print(line)
    print_outputs("wrote", files)
    return 0


def _steerability_inputs(pat, ref, args):
    """(judge, class labels of the reference set X) for --steerability, or (None, None) when it does not run."""
    import numpy as np
    import torch

    from ..edit import reference_indices
    from ..evaluation.judge import get_judge, stored_judge

    if args.steerability is False:
        return None, None
    if args.top_k < 1:
        raise UsageError(f"--top-k must be at least 1, got {args.top_k}")
    ds = pat.dataset(ref.split)
    labels = torch.as_tensor(np.asarray(getattr(ds, "labels", np.zeros(0)), dtype=np.int64))
    if labels.numel() == 0 or int(labels.min()) < 0:
        if args.steerability:
            raise UsageError(f"--steerability needs class labels; the {ref.split} split has none")
        return None, None
    judge = stored_judge(pat.config.data, device=pat.device)
    if judge is None and args.steerability:
        judge = get_judge(pat.config.data, device=pat.device, progress=not args.no_progress)
    if judge is None:
        print("steerability skipped: no judge is shipped or cached for this dataset (--steerability trains one)")
        return None, None
    return judge, labels[reference_indices(len(ds), ref.n, ref.seed)]
