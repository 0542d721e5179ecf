"""Does a mark's own edit work without footwear as well as with it? A candidate coupling signal (issue 37, stop 35).

In every diagnose-benchmark model the mark's steerability (the outside judge's share of images it reads as marked
after the mark's top prototypes are raised) falls as the planted strength rho rises. This one-off study splits that
share by footwear: among clean test images without the mark, with footwear and without, raise B's top-k prototypes
(ranked on the clean train images) to their plausible maximum and let an outside judge (trained on real clean
images only) read B. The gap steer(B | footwear) - steer(B | no footwear) of the planted mark, against the same gap
of the control mark (independent of footwear in every training set) in the same model, is the candidate signal:
a model that learned "the mark comes with footwear" would paint it on footwear but not elsewhere.

Tuning seed only (training seed 0, image seed 0): the study's models of a diagnose-benchmark folder.

    PYTHONPATH=src python scripts/studies/conditional_steerability.py \\
        --study results/scratch-pilot-1 --model patch_rho+1.00_seed0 --out results/cond-steer
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch


def _batch(ds) -> torch.Tensor:
    return torch.cat([ds.get_batch(list(range(i, min(i + 512, len(ds))))) for i in range(0, len(ds), 512)])


def main(argv=None) -> int:
    from patronus_diffusion.analysis.shortcut import rank_prototypes
    from patronus_diffusion.api import Patronus
    from patronus_diffusion.data import load_dataset
    from patronus_diffusion.data.biased import resolve_attribute
    from patronus_diffusion.data.marks import control_kind
    from patronus_diffusion.edit import Edit, EditPlan, run_plan
    from patronus_diffusion.experiments.diagnose_benchmark import _clean_cfg
    from patronus_diffusion.experiments.diagnose_benchmark_eval import _share, attribute_judge
    from patronus_diffusion.utils.io import write_json

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--study", type=Path, required=True, help="a diagnose-benchmark --out folder")
    p.add_argument("--model", required=True, help="e.g. patch_rho+1.00_seed0")
    p.add_argument("--kind", default="patch")
    p.add_argument("--n", type=int, default=48, help="images per footwear group and mark")
    p.add_argument("--top-k", type=int, default=2)
    p.add_argument("--steps", type=int, default=25)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=Path("results/cond-steer"))
    a = p.parse_args(argv)
    torch.manual_seed(a.seed)

    pat = Patronus.load(a.study / "runs" / a.model, device="cpu")
    clean = a.study / "data" / f"{a.kind}_rho+0.00"
    cfg = _clean_cfg(pat, clean)
    tr, te = load_dataset(cfg, "train"), load_dataset(cfg, "test")
    xtr, xte = _batch(tr), _batch(te)
    foot_te = np.asarray(resolve_attribute(te, "footwear"))
    s_train = pat.encode(xtr).s.numpy().astype(np.float64)
    values = s_train.max(0)
    rng = np.random.default_rng(a.seed)
    out = {"model": a.model, "study": str(a.study), "n_per_group": a.n, "top_k": a.top_k, "steps": a.steps,
           "control_kind": control_kind(a.kind), "marks": {}}
    for attr in ("mark", "other_mark"):
        judge = attribute_judge(a.study / "judges" / f"{a.kind}_{attr}_cond_{cfg.image_size}px.safetensors", attr,
                                (xtr, np.asarray(resolve_attribute(tr, attr))),
                                (xte, np.asarray(resolve_attribute(te, attr))), 4.0)
        y_tr = np.asarray(resolve_attribute(tr, attr))
        y_te = np.asarray(resolve_attribute(te, attr))
        protos = [j for j, _ in rank_prototypes(s_train, y_tr)[:a.top_k]]
        row = {"prototypes": protos, "judge_test_accuracy": judge.meta["test_accuracy"]}
        for group, f in (("with_footwear", 1), ("without_footwear", 0)):
            pool = np.flatnonzero((y_te == 0) & (foot_te == f))
            pick = np.sort(rng.choice(pool, min(a.n, len(pool)), replace=False))
            plan = EditPlan(images=xte[pick], steps=a.steps, reconstruction=True,
                            edits=[Edit.set_all({j: float(values[j]) for j in protos}, f"raise {attr}")],
                            edit_guidance=0.0)
            res = run_plan(pat, plan)
            m_edit, m_rec = judge.read(res.images[0]), judge.read(res.reconstruction)
            row[group] = {"steered": _share(int(m_edit[~m_rec].sum()), int((~m_rec).sum())),
                          "marked_reconstruction": _share(int(m_rec.sum()), len(pick))}
        row["gap"] = row["with_footwear"]["steered"]["share"] - row["without_footwear"]["steered"]["share"]
        out["marks"][attr] = row
        print(f"{a.model} {attr}: steered with footwear {row['with_footwear']['steered']['k']}/"
              f"{row['with_footwear']['steered']['n']}, without {row['without_footwear']['steered']['k']}/"
              f"{row['without_footwear']['steered']['n']}, gap {row['gap']:+.3f}", flush=True)
    out["gap_beyond_control"] = out["marks"]["mark"]["gap"] - out["marks"]["other_mark"]["gap"]
    write_json(a.out / f"{a.model}.json", out)
    print(f"{a.model}: gap of the planted mark beyond the control's {out['gap_beyond_control']:+.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
