"""Does guidance away from the average s make generations keep their source's class?

A model trained without condition dropout has no null s for classifier-free guidance. The training-free
stand-in is guidance on the difference to the mean s of the training set,

    eps~(x, t) = eps(x, t, s) + w (eps(x, t, s) - eps(x, t, mean s)),

which amplifies whatever makes this image's s differ from the average (``Patronus.sample(..., against=...)``,
the same difference guidance the edits use). Per weight w it measures the class agreement of
:func:`~patronus_diffusion.evaluation.generation.class_agreement` (the independent judge on k generations from
each of n test images' s) and its two pixel spreads. Prints one JSON line per w; docs/steering.md quotes it.

    python scripts/studies/mean_s_guidance.py --run pretrained:fashion-mnist --n 100 --w 0,1,2,3
"""

import argparse
import json
import time

import torch

from patronus_diffusion.api import Patronus
from patronus_diffusion.evaluation.generation import class_agreement
from patronus_diffusion.evaluation.judge import get_judge


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--run", default="pretrained:fashion-mnist")
    ap.add_argument("--n", type=int, default=100, help="test images whose s is generated from")
    ap.add_argument("--k", type=int, default=4, help="generations per image (fresh noise each)")
    ap.add_argument("--w", default="0,1,2,3", help="comma-separated guidance weights (0 = plain conditional)")
    ap.add_argument("--n-mean", type=int, default=2000, help="seeded training images whose mean s is the contrast")
    args = ap.parse_args()

    pat = Patronus.load(args.run)
    judge = get_judge(pat.config.data, device=pat.device, progress=False)
    train_size = len(pat.dataset("train"))
    idx = torch.randperm(train_size, generator=torch.Generator().manual_seed(0))[:args.n_mean].tolist()
    mean_s = pat.encode_dataset("train", idx).s.mean(0, keepdim=True)
    plain_sample = pat.sample
    for w in (float(v) for v in args.w.split(",")):
        def guided_sample(s, **kw):
            if w > 0:
                kw.update(guidance=w, against=mean_s.expand_as(s))
            return plain_sample(s, **kw)

        pat.sample = guided_sample  # class_agreement generates through pat.sample
        t0 = time.time()
        r = class_agreement(pat, judge, n=args.n, k=args.k)
        print(json.dumps({"w": w, "agreement": r["agreement"], "pixel_spread": r["pixel_spread_grey_levels"],
                          "judge_test_accuracy": r["judge_test_accuracy"], "n": args.n, "k": args.k,
                          "sampler": r["sampler"], "steps": r["steps"], "seconds": round(time.time() - t0, 1)}),
              flush=True)


if __name__ == "__main__":
    main()
