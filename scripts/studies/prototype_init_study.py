"""Does the prototype initialisation decide whether the P similarities collapse onto one feature?

Trains cpu-small twice with the same seed, data order and budget, once with the reference's U[0, 1)
prototypes and once with prototypes placed on real patch features (``prototypes.init=patches``), then
measures on 2,000 test images: the mean off-diagonal correlation of s over the data (1 = all prototypes
move together), how many prototypes are ever an image's best match, and a 5-fold linear-probe class
accuracy on s. Prints JSON.

    OMP_NUM_THREADS=1 python scripts/studies/prototype_init_study.py --steps 300 --out runs/init_study
"""

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from patronus_diffusion import Patronus
from patronus_diffusion.analysis.quality import linear_probe_scores, targets_from_dataset
from patronus_diffusion.config import apply_overrides
from patronus_diffusion.presets import get_preset
from patronus_diffusion.training import train


def s_statistics(run: Path, n: int = 2000) -> dict:
    pat = Patronus.load(run, device="cpu")
    ds = pat.dataset("test")
    x = ds.get_batch(list(range(n)))
    s = pat.encode(x).s.numpy()
    c = np.corrcoef(s.T)
    off = c[~np.eye(len(c), dtype=bool)]
    z = (s - s.mean(0)) / (s.std(0) + 1e-12)
    target = [t for t in targets_from_dataset(ds.labels[:n], ds.class_names, np.zeros((n, 0)), ()) if t.kind == "class"][0]
    return {"s_mean": float(s.mean()), "s_max": float(s.max()), "corr_offdiag_mean": float(off.mean()),
            "corr_offdiag_min": float(off.min()), "prototypes_ever_best": int(len(np.unique(z.argmax(1)))),
            "probe_accuracy": float(np.mean(linear_probe_scores(s, target)))}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--out", default="runs/init_study")
    args = ap.parse_args()
    results = {}
    for init in ("uniform", "patches"):
        cfg = apply_overrides(get_preset("cpu-small"), [f"prototypes.init={init}", "train.sample_every=0",
                                                         "train.checkpoint_every=0"])
        cfg.train.max_epochs = None
        run = Path(args.out) / init
        train(cfg, run, max_steps=args.steps, progress=False, resume=True)
        results[init] = s_statistics(run)
        print(json.dumps({init: results[init]}), flush=True)
    print(json.dumps({"steps": args.steps, "results": results}, indent=2))


if __name__ == "__main__":
    torch.manual_seed(0)
    main()
