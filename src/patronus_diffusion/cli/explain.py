"""Explanation and editing commands: explain, where, when, edit, extrapolate, interpolate, consistency,
variations. Each writes a figure (PNG), machine-readable results (JSON/CSV) and prints the file list.

Every edit follows s = f(x0) -> x_T = DDIM-invert(x0, s) -> s' -> DDIM(x_T, s'), batched; "max" means
max(s_X) over a fixed, seeded reference set X (--ref-n, --ref-seed), which is saved with the results.
"""

from __future__ import annotations

import csv
import io
import time
from pathlib import Path

import numpy as np
import torch

from ..diffusion.samplers import SAMPLERS
from ..utils.images import psnr, save_grid
from ..utils.io import write_json, write_text
from .common import add_device, add_images, add_run, formatter, parse_int_list, print_outputs, select_images

DEFAULT_EXTRAPOLATION = "0,0.25max,0.5max,0.75max,max,1.25max,1.5max"


# ------------------------------------------------------------------------------ arguments
def _common(p, n: int, images: bool = True, ref_seed: bool = True) -> None:
    add_run(p)
    if images:
        add_images(p, default_n=n)
    add_device(p)
    p.add_argument("--steps", type=int, default=None,
                   help="DDIM steps for inversion and decoding (default: the run's sample.invert_steps)")
    p.add_argument("--sampler", default=None, choices=sorted(SAMPLERS), help="decoding sampler (default: the run's sample.decode_sampler, "
                                                   "ddim; eta=0 DDIM is the exact mirror of the inversion)")
    p.add_argument("--ref-n", type=int, default=256, help="size of the reference set X for max(s_X) and quantiles")
    if ref_seed:
        p.add_argument("--ref-seed", type=int, default=0, help="seed of the reference set X (fixed while --seed "
                                                               "changes the picked images)")
    p.add_argument("--batch-size", type=int, default=64, help="images per network call (edits are chunked)")
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")


def _protos(text: str | None, P: int, what: str = "--prototypes") -> list[int] | None:
    if text is None or text == "":
        return None
    ids = parse_int_list(text, f"{what} must be comma-separated prototype ids, e.g. 0,3,17; got {text!r}")
    bad = [j for j in ids if not 0 <= j < P]
    if bad or not ids:
        raise ValueError(f"{what}: prototype id(s) {bad or '[]'} out of range 0 ... {P - 1}")
    return ids


def register(sub) -> None:
    p = sub.add_parser("explain", help="prototype gallery: what each prototype means (Patronus + ProtoPNet views)",
                       formatter_class=formatter(), description=(
                           "For every prototype J: set s_J := max(s_X) on reference test images, decode from their "
                           "inverted x_T, show the image where s_J is highest with its best patch boxed, next to the "
                           "k nearest training patches. Writes overview.png, prototypes/pJJ.png, enhanced.png, "
                           "explain.json (max(s_X), s statistics, boxes, nearest sources, faithfulness) and "
                           "prototypes.csv into --out. --seed fixes the reference set X (its first --n-images "
                           "are the edited images) and the searched subsets."))
    _common(p, 8, images=False, ref_seed=False)
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
    _common(p, 4)
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
    _common(p, 8)
    p.add_argument("--prototypes", help="comma-separated ids (default: the 4 with the largest requested rise)")
    p.add_argument("--value", default="max", help="target for s_J: number, max, 1.5max or q0.9")
    p.add_argument("--out", default="results/when")
    p.set_defaults(func=cmd_when)

    p = sub.add_parser("edit", help="edit s (set / scale / add any entries) and decode the images again",
                       formatter_class=formatter(), description=(
                           "Each --edit is one edited version of every image: comma-separated J=VALUE (VALUE a "
                           "number, max, 1.5max or q0.9 = quantile of s_J over X), J*FACTOR or J+DELTA. Writes "
                           "edit.png (input, reconstruction, edits; box = best patch of the first edited prototype), "
                           "edit_grid.png (lossless), edits.json (faithfulness per edit: median and per image) and "
                           "s.csv into --out."))
    _common(p, 4)
    p.add_argument("--edit", action="append", required=True, metavar="SPEC", help="e.g. 3=max or 3=max,5=0 or 7*2")
    p.add_argument("--out", default="results/edit")
    p.set_defaults(func=cmd_edit)

    p = sub.add_parser("extrapolate", help="sweep prototypes over a range of values (paper: 0 ... 3)",
                       formatter_class=formatter(), description=(
                           "For each image and each prototype J: set s_J to every value in --values and decode. "
                           "Writes extrapolate.png (rows image x prototype, columns values), extrapolate.json "
                           "(s_J reached and faithfulness per value) into --out."))
    _common(p, 1)
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
    _common(p, 2)
    p.add_argument("--alphas", type=int, default=10, help="number of interpolation points, endpoints included")
    p.add_argument("--out", default="results/interpolate")
    p.set_defaults(func=cmd_interpolate)

    p = sub.add_parser("consistency", help="the same prototype edit across several images, boxes and patches",
                       formatter_class=formatter(), description=(
                           "For each prototype J: s_J := VALUE on every image; one row of edited images with the "
                           "best patch boxed, one row of the patches. Writes consistency.png and consistency.json "
                           "(boxes, s_J, faithfulness) into --out."))
    _common(p, 5)
    p.add_argument("--prototypes", required=True, help="comma-separated ids")
    p.add_argument("--value", default="max", help="target for s_J: number, max, 1.5max or q0.9")
    p.add_argument("--out", default="results/consistency")
    p.set_defaults(func=cmd_consistency)

    p = sub.add_parser("variations", help="one s, several x_T: what s fixes and what the noise varies",
                       formatter_class=formatter(), description=(
                           "For each image: its reconstruction (inverted x_T) and --k decodings of its s from "
                           "seeded random x_T. Writes variations.png, variations_grid.png (lossless) and "
                           "variations.json (reconstruction PSNR, |s(variation) - s(x0)|) into --out."))
    _common(p, 3)
    p.add_argument("--k", type=int, default=5, help="variations per image")
    p.add_argument("--out", default="results/variations")
    p.set_defaults(func=cmd_variations)


# ------------------------------------------------------------------------------ shared pieces
def _load(args):
    from ..api import Patronus

    if args.batch_size < 1:
        raise ValueError("--batch-size must be at least 1")
    torch.manual_seed(args.seed)
    return Patronus.load(args.run, args.weights, args.device, batch_size=args.batch_size)


def _steps(pat, args) -> int:
    if args.steps is not None and args.steps < 1:
        raise ValueError("--steps must be at least 1")
    return args.steps or pat.config.sample.invert_steps


def _reference(pat, args):
    from ..analysis.editing import reference_set

    return reference_set(pat, n=args.ref_n, seed=args.ref_seed)


def _meta(pat, args, names, steps, ref=None, **more) -> dict:
    m = {"run": str(pat.run_dir), "images": names, "seed": args.seed, "steps": steps,
         "sampler": args.sampler or pat.config.sample.decode_sampler}
    if ref is not None:
        m["reference"] = ref.to_json()
    m.update(more)
    return m


def _invert(pat, args, x, steps):
    from ..analysis.editing import invert_images

    return invert_images(pat, x, steps, progress=not args.no_progress)


def _short(name: str) -> str:
    return name if len(name) <= 14 else "..." + name[-11:]


def _box(pat, img: torch.Tensor, j: int) -> tuple[int, int, int, int]:
    """Best-patch box of prototype j in one image (re-encoded)."""
    loc = pat.encode(img[None]).location[0, j]
    return pat.receptive_field.box(int(loc[0]), int(loc[1]))


def _boxes(pat, imgs: torch.Tensor, j: int) -> list[tuple[int, int, int, int]]:
    locs = pat.encode(imgs).location[:, j]
    return [pat.receptive_field.box(int(h), int(w)) for h, w in locs.tolist()]


# ------------------------------------------------------------------------------ explain
def cmd_explain(args) -> int:
    from ..analysis.explain import explain_gallery

    t0 = time.time()
    pat = _load(args)
    res = explain_gallery(pat, args.out, _protos(args.prototypes, pat.num_prototypes), n_ref=args.ref_n,
                          seed=args.seed, steps=_steps(pat, args), progress=not args.no_progress,
                          n_images=args.n_images, k_nearest=args.k_nearest, patch_images=args.patch_images,
                          stats_images=args.stats_images, sampler=args.sampler)
    f = res["faithfulness"]
    out = Path(args.out)
    print(f"{len(res['prototypes'])} prototypes in {time.time() - t0:.1f} s; max(s_X) = "
          f"{res['reference']['max_s_X']:.3f} (X: {res['reference']['n']} {res['reference']['split']} images, "
          f"seed {res['reference']['seed']})")
    print(f"edit faithfulness (s_J := max(s_X)): median rise {f['rise_median']} of the requested change; "
          f"median mean |change| of the other prototypes {f['others_median']}")
    print_outputs("wrote", {"overview": out / "overview.png", "per prototype": out / "prototypes",
                            "edited images": out / "enhanced.png", "results": out / "explain.json",
                            "table": out / "prototypes.csv"})
    return 0


# ------------------------------------------------------------------------------ where
def cmd_where(args) -> int:
    from ..analysis.figures import Panel, save_panels
    from ..analysis.where import where

    pat = _load(args)
    x, names = select_images(pat, args)
    protos = _protos(args.prototypes, pat.num_prototypes)
    top_k = None if protos is not None else (args.top_k or min(4, pat.num_prototypes))
    size = args.display_size or pat.config.data.image_size
    res = where(pat, x, prototypes=protos, top_k=top_k, display_size=size)
    x_show = x if size == x.shape[-1] else torch.nn.functional.interpolate(x, size=(size, size), mode="nearest")
    rows, records, csv_rows = [], [], []
    for i, name in enumerate(names):
        row = [Panel(x_show[i], _short(name))]
        for k in range(res.prototypes.shape[1]):
            j, s, box = int(res.prototypes[i, k]), float(res.s[i, k]), tuple(res.boxes[i, k].tolist())
            row.append(Panel(x_show[i], f"p{j} s={s:.2f}", box, heat=res.maps[i, k].numpy()))
            records.append({"image": name, "prototype": j, "rank": k, "s": round(s, 5), "box": list(box),
                            "location": res.location[i, k].tolist()})
            csv_rows.append([name, j, k, f"{s:.5f}", *box, *res.location[i, k].tolist()])
        rows.append(row)
    out = Path(args.out)
    save_panels(rows, out / "where.png", cell=1.6, title="similarity map (jet overlay) through the receptive "
                f"field; red box = best patch ({'top-' + str(top_k) if top_k else 'chosen prototypes'})")
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["image", "prototype", "rank", "s", "x0", "y0", "x1", "y1", "row", "col"])
    w.writerows(csv_rows)
    write_text(out / "boxes.csv", buf.getvalue())
    from ..utils.io import atomic_path

    with atomic_path(out / "maps.npz") as tmp:
        with open(tmp, "wb") as fh:
            np.savez_compressed(fh, maps=res.maps.numpy().astype(np.float32), prototypes=res.prototypes.numpy(),
                                images=np.array(names))
    rf = pat.receptive_field
    write_json(out / "where.json", {"run": str(pat.run_dir), "images": names, "display_size": size,
                                    "receptive_field": {"image_size": rf.image_size, "units": rf.size,
                                                        "jump": rf.jump, "size": rf.rf, "start": rf.start},
                                    "box_convention": "(x0, y0, x1, y1) pixels, end-exclusive",
                                    "matches": records})
    print_outputs(f"maps of {res.prototypes.shape[1]} prototype(s) for {len(names)} image(s)",
                  {"figure": out / "where.png", "boxes": out / "boxes.csv", "maps": out / "maps.npz",
                   "results": out / "where.json"})
    return 0


# ------------------------------------------------------------------------------ when
def cmd_when(args) -> int:
    from ..analysis.figures import band_plot
    from ..analysis.when import emergence_summary, emergence_table, trace_emergence

    pat = _load(args)
    x, names = select_images(pat, args)
    steps = _steps(pat, args)
    ref = _reference(pat, args)
    protos = _protos(args.prototypes, pat.num_prototypes)
    if protos is None:
        s = pat.encode(x).s
        protos = s.mean(0).argsort()[: min(4, pat.num_prototypes)].tolist()
    inv = _invert(pat, args, x, steps)
    t0 = time.time()
    em = trace_emergence(pat, inv, protos, ref, args.value, steps, args.sampler, progress=not args.no_progress)
    secs = time.time() - t0
    out = Path(args.out)
    header, rows = emergence_table(em)
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(header)
    w.writerows(rows)
    write_text(out / "when.csv", buf.getvalue())
    summary = emergence_summary(em)
    curves_u, curves_x = {}, {}
    for k, j in enumerate(protos):
        a, b = em.gain_vs_unedited(k), em.gain_vs_x0(k)
        label = f"+p{j} (t_half {summary[k]['t_half']})"
        curves_u[label] = (a.mean(1).numpy(), a.std(1, unbiased=False).numpy())
        curves_x[label] = (b.mean(1).numpy(), b.std(1, unbiased=False).numpy())
    band_plot(em.t, curves_u, out / "when.png", more=[curves_x], ylabel="s_J improvement",
              title=f"When prototypes emerge: s_J of the predicted x0 after s_J := {args.value} "
                    f"({len(names)} images, mean +- std, {steps} steps)",
              ax_titles=["vs the unedited trajectory (same x_T)", "vs s_J of the input image x0"])
    save_grid(em.final.reshape(-1, *x.shape[1:]), out / "final.png", nrow=len(names), upscale=2)
    write_json(out / "when.json", _meta(pat, args, names, steps, ref, prototypes=protos, value=args.value,
                                        seconds=round(secs, 2), per_prototype=summary,
                                        final_png_rows=["unedited"] + [f"+p{j}" for j in protos]))
    for r in summary:
        print(f"p{r['prototype']}: final gain {r['final_gain_vs_unedited_mean']:+.3f} (requested "
              f"{r['requested_change_mean']:+.3f}), t_half {r['t_half']}, rise {r['rise_median']}")
    print_outputs("wrote", {"curves": out / "when.png", "table": out / "when.csv", "results": out / "when.json",
                            "final images": out / "final.png"})
    return 0


# ------------------------------------------------------------------------------ edit
def cmd_edit(args) -> int:
    from ..analysis.editing import apply_ops, faithfulness_summary, parse_edit, run_edits
    from ..analysis.figures import Panel, save_panels

    pat = _load(args)
    x, names = select_images(pat, args)
    steps = _steps(pat, args)
    ref = _reference(pat, args)
    edits = [parse_edit(spec, pat.num_prototypes) for spec in args.edit]
    inv = _invert(pat, args, x, steps)
    s_list = torch.stack([inv.s] + [apply_ops(inv.s, ops, ref) for ops in edits])  # row 0: reconstruction
    t0 = time.time()
    res = run_edits(pat, inv, s_list, [[]] + [sorted({op.prototype for op in ops}) for ops in edits],
                    steps=steps, sampler=args.sampler, progress=not args.no_progress)
    secs = time.time() - t0
    rows, results = [], []
    for i, name in enumerate(names):
        row = [Panel(x[i], _short(name)), Panel(res.images[0, i], f"reconstruction\nPSNR "
                                                                  f"{float(psnr(res.images[0, i:i + 1], x[i:i + 1])):.1f}")]
        for e, ops in enumerate(edits, start=1):
            j = ops[0].prototype
            row.append(Panel(res.images[e, i], f"{args.edit[e - 1]}\ns_{j}: {float(inv.s[i, j]):.2f}->"
                                               f"{float(res.s_after[e, i, j]):.2f} (asked {float(s_list[e, i, j]):.2f})",
                             _box(pat, res.images[e, i], j)))
        rows.append(row)
    for e, ops in enumerate(edits, start=1):
        results.append({"edit": args.edit[e - 1], "operations": [str(o) for o in ops],
                        "requested": {str(o.prototype): [round(float(v), 5) for v in s_list[e, :, o.prototype]]
                                      for o in ops},
                        "reached": {str(o.prototype): [round(float(v), 5) for v in res.s_after[e, :, o.prototype]]
                                    for o in ops},
                        "faithfulness": faithfulness_summary(res.rise[e], res.others[e])})
    out = Path(args.out)
    save_panels(rows, out / "edit.png", cell=1.6, title="input | reconstruction | edits (red box: best patch of "
                                                         "the first edited prototype)")
    save_grid(torch.cat([x[None], res.images]).transpose(0, 1).reshape(-1, *x.shape[1:]), out / "edit_grid.png",
              nrow=len(edits) + 2, upscale=2)
    _write_s_table(out / "s.csv", names, ["input", "reconstruction"] + args.edit,
                   torch.cat([inv.s[None], res.s_after]))
    write_json(out / "edits.json", _meta(pat, args, names, steps, ref, seconds=round(secs, 2),
                                         reconstruction_psnr_db=[round(float(v), 3) for v in psnr(res.images[0], x)],
                                         faithfulness_definition=FAITHFULNESS_DEFINITION, edits=results))
    for r in results:
        f = r["faithfulness"]
        print(f"{r['edit']}: median rise {f['rise_median']}, median change of others {f['others_median']}")
    print_outputs(f"{len(edits)} edit(s) x {len(names)} image(s) in {secs:.1f} s",
                  {"figure": out / "edit.png", "images": out / "edit_grid.png", "results": out / "edits.json",
                   "s": out / "s.csv"})
    return 0


FAITHFULNESS_DEFINITION = ("rise = (s_J(x_hat) - s_J(x0)) / (s'_J - s_J(x0)) averaged over edited J (1 = exactly "
                           "the requested change; changes below 1e-3 give null); others = mean over unedited k of "
                           "|s_k(x_hat) - s_k(x0)|; medians over images")


def _write_s_table(path: Path, names, conditions, s: torch.Tensor) -> None:
    """s.csv: one row per (image, condition), columns s0 ... s{P-1}; s is (C, B, P)."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["image", "condition"] + [f"s{j}" for j in range(s.shape[-1])])
    for i, name in enumerate(names):
        for c, cond in enumerate(conditions):
            w.writerow([name, cond] + [f"{v:.5f}" for v in s[c, i].tolist()])
    write_text(path, buf.getvalue())


# ------------------------------------------------------------------------------ extrapolate
def cmd_extrapolate(args) -> int:
    from ..analysis.editing import faithfulness_summary, resolve_value, run_edits
    from ..analysis.figures import Panel, save_panels

    pat = _load(args)
    x, names = select_images(pat, args)
    steps = _steps(pat, args)
    ref = _reference(pat, args)
    protos = _protos(args.prototypes, pat.num_prototypes)
    tokens = [v.strip() for v in args.values.split(",") if v.strip()]
    if not tokens:
        raise ValueError("--values is empty; e.g. --values 0,1,2,3 or 0,0.5max,max")
    inv = _invert(pat, args, x, steps)
    s_list, edited, labels = [], [], []
    for j in protos:
        for tok in tokens:
            s_e = inv.s.clone()
            s_e[:, j] = resolve_value(tok, j, ref)
            s_list.append(s_e)
            edited.append([j])
            labels.append((j, tok))
    t0 = time.time()
    res = run_edits(pat, inv, torch.stack(s_list), edited, steps=steps, sampler=args.sampler,
                    progress=not args.no_progress)
    secs = time.time() - t0
    rows, row_labels, results = [], [], []
    nv = len(tokens)
    for i, name in enumerate(names):
        for a, j in enumerate(protos):
            row = []
            for b, tok in enumerate(tokens):
                e = a * nv + b
                row.append(Panel(res.images[e, i], f"s_{j}={float(s_list[e][i, j]):.2f} ({tok})\n"
                                                   f"got {float(res.s_after[e, i, j]):.2f}",
                                 _box(pat, res.images[e, i], j)))
            rows.append(row)
            row_labels.append(f"{_short(name)}\np{j} (s={float(inv.s[i, j]):.2f})")
    for e, (j, tok) in enumerate(labels):
        results.append({"prototype": j, "value": tok, "requested": [round(float(v), 5) for v in s_list[e][:, j]],
                        "reached": [round(float(v), 5) for v in res.s_after[e, :, j]],
                        "faithfulness": faithfulness_summary(res.rise[e], res.others[e])})
    out = Path(args.out)
    save_panels(rows, out / "extrapolate.png", row_labels=row_labels, cell=1.5,
                title=f"extrapolation: s_J set to each value (max(s_X) = {ref.max:.2f}), decoded from the inverted x_T")
    save_grid(res.images.reshape(len(protos), nv, len(names), *x.shape[1:]).permute(2, 0, 1, 3, 4, 5)
              .reshape(-1, *x.shape[1:]), out / "extrapolate_grid.png", nrow=nv, upscale=2)
    write_json(out / "extrapolate.json", _meta(pat, args, names, steps, ref, prototypes=protos, values=tokens,
                                               seconds=round(secs, 2), s_x0={str(j): [round(float(v), 5) for v in
                                                                                     inv.s[:, j]] for j in protos},
                                               faithfulness_definition=FAITHFULNESS_DEFINITION, sweep=results))
    print_outputs(f"{len(protos)} prototype(s) x {nv} values x {len(names)} image(s) in {secs:.1f} s",
                  {"figure": out / "extrapolate.png", "images": out / "extrapolate_grid.png",
                   "results": out / "extrapolate.json"})
    return 0


# ------------------------------------------------------------------------------ interpolate
def cmd_interpolate(args) -> int:
    from ..analysis.editing import interpolate
    from ..analysis.figures import Panel, save_panels

    pat = _load(args)
    x, names = select_images(pat, args)
    if len(names) != 2:
        raise ValueError(f"interpolate needs exactly two images, got {len(names)}; use --indices A,B, "
                         f"--images A B or --n 2")
    if args.alphas < 2:
        raise ValueError("--alphas must be at least 2 (the two endpoints)")
    steps = _steps(pat, args)
    inv = _invert(pat, args, x, steps)
    alphas = [float(a) for a in np.linspace(0, 1, args.alphas)]
    t0 = time.time()
    imgs, s = interpolate(pat, inv, alphas, steps, args.sampler, progress=not args.no_progress)
    secs = time.time() - t0
    rec = pat.decode(inv.x_T, inv.s, steps=steps, sampler=args.sampler).clamp(-1, 1)
    s_out = pat.encode(imgs).s
    end_diff = [float((imgs[0] - rec[0]).abs().max()), float((imgs[-1] - rec[1]).abs().max())]
    row = [Panel(x[0], f"A {_short(names[0])}")] + [Panel(imgs[k], f"alpha={a:.2f}") for k, a in enumerate(alphas)] \
        + [Panel(x[1], f"B {_short(names[1])}")]
    out = Path(args.out)
    save_panels([row], out / "interpolate.png", cell=1.3,
                title="interpolation: s = lerp(s_A, s_B), x_T = slerp(x_T^A, x_T^B); ends = reconstructions")
    save_grid(torch.cat([x[:1], imgs, x[1:]]), out / "interpolate_strip.png", nrow=len(alphas) + 2, upscale=2)
    d_a = (s_out - inv.s[0]).abs().mean(1)
    d_b = (s_out - inv.s[1]).abs().mean(1)
    write_json(out / "interpolate.json", _meta(
        pat, args, names, steps, seconds=round(secs, 2), alphas=alphas,
        endpoint_max_abs_diff_to_reconstruction=end_diff,
        reconstruction_psnr_db=[round(float(v), 3) for v in psnr(rec, x)],
        mean_abs_s_distance_to_A=[round(float(v), 5) for v in d_a],
        mean_abs_s_distance_to_B=[round(float(v), 5) for v in d_b],
        s_requested=[[round(float(v), 5) for v in r] for r in s],
        s_reached=[[round(float(v), 5) for v in r] for r in s_out]))
    print(f"endpoints vs reconstructions: max |diff| {end_diff[0]:.2e}, {end_diff[1]:.2e}")
    print_outputs(f"{len(alphas)} interpolation points in {secs:.1f} s",
                  {"figure": out / "interpolate.png", "strip": out / "interpolate_strip.png",
                   "results": out / "interpolate.json"})
    return 0


# ------------------------------------------------------------------------------ consistency
def cmd_consistency(args) -> int:
    from ..analysis.editing import faithfulness_summary, resolve_value, run_edits
    from ..analysis.figures import Panel, crop, save_panels

    pat = _load(args)
    x, names = select_images(pat, args)
    steps = _steps(pat, args)
    ref = _reference(pat, args)
    protos = _protos(args.prototypes, pat.num_prototypes)
    inv = _invert(pat, args, x, steps)
    s_list = []
    for j in protos:
        s_e = inv.s.clone()
        s_e[:, j] = resolve_value(args.value, j, ref)
        s_list.append(s_e)
    t0 = time.time()
    res = run_edits(pat, inv, torch.stack(s_list), [[j] for j in protos], steps=steps, sampler=args.sampler,
                    progress=not args.no_progress)
    secs = time.time() - t0
    rows = [[Panel(x[i], _short(n)) for i, n in enumerate(names)]]
    labels = ["input x0"]
    results = []
    for a, j in enumerate(protos):
        boxes = _boxes(pat, res.images[a], j)
        rows.append([Panel(res.images[a, i], f"s_{j}: {float(inv.s[i, j]):.2f}->{float(res.s_after[a, i, j]):.2f}",
                           boxes[i]) for i in range(len(names))])
        rows.append([Panel(crop(res.images[a, i], boxes[i]), f"patch p{j}") for i in range(len(names))])
        labels += [f"add p{j}", f"vis p{j}"]
        results.append({"prototype": j, "value": args.value, "requested": round(float(s_list[a][0, j]), 5),
                        "boxes": [list(b) for b in boxes],
                        "reached": [round(float(v), 5) for v in res.s_after[a, :, j]],
                        "faithfulness": faithfulness_summary(res.rise[a], res.others[a])})
    out = Path(args.out)
    save_panels(rows, out / "consistency.png", row_labels=labels, cell=1.5,
                title=f"consistency: s_J := {args.value} on every image; the same concept should appear in each box")
    write_json(out / "consistency.json", _meta(pat, args, names, steps, ref, seconds=round(secs, 2),
                                               faithfulness_definition=FAITHFULNESS_DEFINITION, prototypes=results))
    print_outputs(f"{len(protos)} prototype(s) x {len(names)} image(s) in {secs:.1f} s",
                  {"figure": out / "consistency.png", "results": out / "consistency.json"})
    return 0


# ------------------------------------------------------------------------------ variations
def cmd_variations(args) -> int:
    from ..analysis.editing import variations
    from ..analysis.figures import Panel, save_panels

    pat = _load(args)
    x, names = select_images(pat, args)
    if args.k < 1:
        raise ValueError("--k must be at least 1")
    steps = _steps(pat, args)
    inv = _invert(pat, args, x, steps)
    t0 = time.time()
    rec = pat.decode(inv.x_T, inv.s, steps=steps, sampler=args.sampler, progress=not args.no_progress).clamp(-1, 1)
    var = variations(pat, inv.s, args.k, args.seed, steps, args.sampler, progress=not args.no_progress)
    secs = time.time() - t0
    b, k = var.shape[:2]
    s_var = pat.encode(var.reshape(b * k, *x.shape[1:])).s.reshape(b, k, -1)
    s_rec = pat.encode(rec).s
    p = psnr(rec, x)
    rows = []
    for i, name in enumerate(names):
        rows.append([Panel(x[i], _short(name)), Panel(rec[i], f"recon (x_T inverted)\nPSNR {float(p[i]):.1f} dB")]
                    + [Panel(var[i, m], f"random x_T #{m}\n|ds|={float((s_var[i, m] - inv.s[i]).abs().mean()):.3f}")
                       for m in range(k)])
    out = Path(args.out)
    save_panels(rows, out / "variations.png", cell=1.5,
                title="variations: the same s decoded from the inverted x_T (reconstruction) and from random x_T")
    save_grid(torch.cat([x[:, None], rec[:, None], var], 1).reshape(-1, *x.shape[1:]), out / "variations_grid.png",
              nrow=k + 2, upscale=2)
    write_json(out / "variations.json", _meta(
        pat, args, names, steps, k=k, seconds=round(secs, 2),
        reconstruction_psnr_db=[round(float(v), 3) for v in p],
        reconstruction_mean_abs_s_change=[round(float(v), 5) for v in (s_rec - inv.s).abs().mean(1)],
        variation_mean_abs_s_change=[[round(float(v), 5) for v in r] for r in (s_var - inv.s[:, None]).abs().mean(2)],
        variation_pixel_std=[round(float(v), 5) for v in var.std(1).flatten(1).mean(1)],
        noise="x_T ~ N(0, I) from torch.Generator().manual_seed(seed)"))
    print_outputs(f"{len(names)} image(s) x {k} variations in {secs:.1f} s",
                  {"figure": out / "variations.png", "images": out / "variations_grid.png",
                   "results": out / "variations.json"})
    return 0
