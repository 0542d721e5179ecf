"""Explanation commands: explain (prototype gallery), where (similarity maps), when (emergence during sampling).
Each writes a figure (PNG), machine-readable results (JSON/CSV) and prints the file list; the analyses live
in patronus_diffusion.analysis (explain, where, when, on the edit engine). Editing commands: cli/edit.py.
"""

from __future__ import annotations

import time

from .common import formatter, print_outputs, select_images
from .edit_args import (
    add_edit_args,
    edit_inputs,
    load_model,
    parse_prototypes,
    reference_of,
    steps_of,
)


def register(sub) -> None:
    p = sub.add_parser("explain", help="prototype gallery: what each prototype means (Patronus + ProtoPNet views)",
                       formatter_class=formatter(), description=(
                           "For every prototype J: set s_J := max(s_X) on reference test images, decode from their "
                           "inverted x_T, show the image where s_J is highest with its best patch boxed, next to the "
                           "k nearest training patches. Writes overview.png, prototypes/pJJ.png, enhanced.png, "
                           "explain.json (max(s_X), s statistics, boxes, nearest sources, faithfulness) and "
                           "prototypes.csv into --out. --seed fixes the reference set X (its first --n-images "
                           "are the edited images) and the searched subsets."))
    add_edit_args(p, 8, images=False, ref_seed=False)
    p.add_argument("--prototypes", help="comma-separated ids (default: all)")
    p.add_argument("--n-images", type=int, default=8, help="reference images edited per prototype")
    p.add_argument("--k-nearest", type=int, default=5, help="nearest training patches per prototype")
    p.add_argument("--patch-images", type=int, default=10000,
                   help="training images searched for nearest patches (seeded subset; 0 = all)")
    p.add_argument("--stats-images", type=int, default=2000, help="test images for s statistics (0 = all)")
    p.add_argument("--out", default="results/explain")
    p.set_defaults(func=cmd_explain)

    p = sub.add_parser("where", help="where prototypes fire: similarity maps and best-patch boxes",
                       formatter_class=formatter(), description=(
                           "Similarity maps of the top-k (or the given) prototypes, brought to pixels through the "
                           "receptive field, with the best patch boxed. Writes where.png, where.json, boxes.csv and "
                           "maps.npz (pixel maps, float32) into --out. No diffusion steps: fast."))
    add_edit_args(p, 4)
    g = p.add_mutually_exclusive_group()
    g.add_argument("--prototypes", help="comma-separated ids shown for every image")
    g.add_argument("--top-k", type=int, default=None, help="each image's k highest prototypes (default 4)")
    p.add_argument("--display-size", type=int, default=None, help="pixel size of maps and boxes (default: model's)")
    p.add_argument("--out", default="results/where")
    p.set_defaults(func=cmd_where)

    p = sub.add_parser("when", help="when a prototype emerges: s_J of the predicted x0 at every sampling step",
                       formatter_class=formatter(), description=(
                           "Edit s_J := VALUE for each given prototype and decode from the inverted x_T next to the "
                           "unedited trajectory; re-encode the sampler's predicted x0 at every step. Writes "
                           "when.png (mean +- std over images vs t), when.csv (the curves), when.json (t_half, "
                           "faithfulness) and final.png into --out."))
    add_edit_args(p, 8)
    p.add_argument("--prototypes", help="comma-separated ids (default: the 4 with the largest requested rise)")
    p.add_argument("--value", default="max", help="target for s_J: number, max, 1.5max or q0.9")
    p.add_argument("--out", default="results/when")
    p.set_defaults(func=cmd_when)


# ------------------------------------------------------------------------------ explain
def cmd_explain(args) -> int:
    from ..analysis.explain import build_gallery

    t0 = time.time()
    pat = load_model(args)
    gallery = build_gallery(pat, parse_prototypes(args.prototypes, pat.num_prototypes), n_ref=args.ref_n,
                            seed=args.seed, steps=steps_of(pat, args), progress=not args.no_progress,
                            n_images=args.n_images, k_nearest=args.k_nearest, patch_images=args.patch_images,
                            stats_images=args.stats_images, sampler=args.sampler)
    files = gallery.write(args.out)
    print(gallery.summary(seconds=time.time() - t0))
    print_outputs("wrote", files)
    return 0


# ------------------------------------------------------------------------------ where
def cmd_where(args) -> int:
    from ..analysis.where import where_report

    pat = load_model(args)
    x, names = select_images(pat, args)
    protos = parse_prototypes(args.prototypes, pat.num_prototypes)
    top_k = None if protos is not None else (args.top_k or min(4, pat.num_prototypes))
    result = where_report(pat, x, names, prototypes=protos, top_k=top_k, display_size=args.display_size)
    files = result.write(args.out)
    print_outputs(f"maps of {result.prototypes.shape[1]} prototype(s) for {len(names)} image(s)", files)
    return 0


# ------------------------------------------------------------------------------ when
def cmd_when(args) -> int:
    from ..analysis.when import default_prototypes, run_when
    from ..edit import EditPlan

    pat, x, names, common = edit_inputs(args)
    ref = reference_of(pat, args)
    protos = parse_prototypes(args.prototypes, pat.num_prototypes) or default_prototypes(pat, x)
    result = run_when(pat, EditPlan.emergence(x, protos, args.value, ref, **common), progress=not args.no_progress)
    files = result.write(args.out)
    print(result.summary())
    print_outputs("wrote", files)
    return 0
