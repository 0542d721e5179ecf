"""Exact inversion at few steps: does EDICT keep the picture, and do edits through it stay the model's edits?

    python benchmarks/exact_inversion.py [--run pretrained:fashion-mnist] [--n 16] [--threads 2]

For N seeded test images, each scheme (DDIM at 10/20/50 steps; EDICT at 10/20 steps over mixing weights p)
inverts the image under its own s and decodes it (1) unedited and (2) with two edits: the most active prototype
lowered to its 1 % quantile over the reference set, and prototype (top + 1) mod P raised to its maximum.
Reported per scheme:
- reconstruction PSNR (dB) of the unedited decode against the image;
- edit PSNR: the edited image against the same edit through DDIM at 100 steps (the reference: 35 dB round trip,
  so the closest thing to "what this decoder does with that s");
- change ratio: mean |edited - unedited| over the reference's (1 = as strong as the reference edit; EDICT can
  damp or amplify edits);
- rise (true median over images of the re-encoded change of the edited prototype over the requested change);
Every decode runs at --edit-guidance (default 0, the decoder's own response); the images are drawn with --seed
apart from the reference set X.
- seconds per image for invert + 3 decodes.
Writes results/exact_inversion.json and prints a markdown table.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from patronus_diffusion.api import Patronus  # noqa: E402
from patronus_diffusion.edit import (  # noqa: E402
    Edit, EditPlan, clear_inversion_cache, fresh_indices, reference_indices, reference_set, run_plan)
from patronus_diffusion.evaluation.stats import true_median  # noqa: E402
from patronus_diffusion.utils.images import psnr  # noqa: E402

SCHEMES = ([("ddim", k, None) for k in (10, 20, 50)] +
           [("edict", k, p) for k in (10, 20) for p in (0.5, 0.6, 0.7, 0.8, 0.93)])


def edits_for(s: torch.Tensor, ref) -> list[Edit]:
    n, p = s.shape
    top = s.argmax(1)
    other = (top + 1) % p
    lo, hi = torch.quantile(ref.s, 0.01, dim=0), ref.s.max(0).values
    s_low, s_high = s.clone(), s.clone()
    rows = torch.arange(n)
    s_low[rows, top] = lo[top]
    s_high[rows, other] = hi[other]
    return [Edit.replace(s_low, [0], "top -> q0.01"), Edit.replace(s_high, [0], "next -> max")], top, other


def run_scheme(pat, x, edits, inversion, steps, mix, edit_guidance: float = 0.0):
    pat.config.sample.inversion = inversion
    if mix is not None:
        pat.config.sample.edict_mix = mix
    clear_inversion_cache(pat)
    t0 = time.perf_counter()
    res = run_plan(pat, EditPlan(images=x, edits=edits, steps=steps, reconstruction=True, edit_guidance=edit_guidance))
    return res, (time.perf_counter() - t0) / x.shape[0]


def rise_of(res, k: int, ids: torch.Tensor) -> float:
    rows = torch.arange(len(ids))
    before = res.s_reconstruction[rows, ids]
    want = res.s_requested[k][rows, ids]
    got = res.s_after[k][rows, ids]
    return true_median((got - before) / (want - before))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", default="pretrained:fashion-mnist")
    ap.add_argument("--n", type=int, default=16)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default="results/exact_inversion.json")
    ap.add_argument("--edit-guidance", type=float, default=0.0,
                    help="edit guidance w of every decode (default 0: the decoder's own response)")
    ap.add_argument("--seed", type=int, default=1, help="image seed (images drawn apart from the reference set X)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    pat = Patronus.load(args.run, device="cpu")
    ref = reference_set(pat, 256, 0)
    n_test = len(pat.dataset("test"))
    idx = fresh_indices(n_test, args.n, args.seed, exclude=reference_indices(n_test, 256, 0))
    x = pat.load_images(indices=idx)
    edits, top, other = edits_for(pat.encode(x).s, ref)
    reference, _ = run_scheme(pat, x, edits, "ddim", 100, None, args.edit_guidance)
    ref_change = [float((reference.images[k] - reference.reconstruction).abs().mean()) for k in range(2)]
    rows = []
    for inversion, steps, mix in SCHEMES:
        res, secs = run_scheme(pat, x, edits, inversion, steps, mix, args.edit_guidance)
        row = {"inversion": inversion, "steps": steps, "mix": mix,
               "reconstruction_psnr_db": round(float(psnr(res.reconstruction, x).mean()), 1),
               "seconds_per_image": round(secs, 3)}
        for k, (name, ids) in enumerate([("lower_top", top), ("raise_next", other)]):
            row[f"{name}_edit_psnr_db"] = round(float(psnr(res.images[k], reference.images[k]).mean()), 1)
            change = float((res.images[k] - res.reconstruction).abs().mean())
            row[f"{name}_change_ratio"] = round(change / max(ref_change[k], 1e-8), 2)
            row[f"{name}_rise"] = round(rise_of(res, k, ids), 4)
        rows.append(row)
        print(row, flush=True)
    out = {"run": args.run, "n": args.n, "images": idx, "command": " ".join(sys.argv),
           "edit_guidance": args.edit_guidance, "rise": "true median over images",
           "reference": {"inversion": "ddim", "steps": 100,
                         "reconstruction_psnr_db": round(float(psnr(reference.reconstruction, x).mean()), 1),
                         "lower_top_rise": round(rise_of(reference, 0, top), 4),
                         "raise_next_rise": round(rise_of(reference, 1, other), 4)},
           "rows": rows}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=1))
    print(f"reference DDIM-100: {out['reference']}")
    print("| scheme | steps | p | recon PSNR | edit PSNR vs DDIM-100 (lower top / raise next) | change ratio | "
          "rise | s/image |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for r in rows:
        print(f"| {r['inversion']} | {r['steps']} | {r['mix'] or ''} | {r['reconstruction_psnr_db']} | "
              f"{r['lower_top_edit_psnr_db']} / {r['raise_next_edit_psnr_db']} | "
              f"{r['lower_top_change_ratio']} / {r['raise_next_change_ratio']} | "
              f"{r['lower_top_rise']} / {r['raise_next_rise']} | {r['seconds_per_image']} |")


if __name__ == "__main__":
    main()
