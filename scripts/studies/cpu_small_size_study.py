"""Choose the cpu-small UNet by quality per CPU-minute.

Each candidate gets the same CPU budget: its training throughput is measured first (all candidates
back to back, `patronus bench` style), and it then trains for throughput x minutes worth of images
(same data order, seed, LR, batch), so that other load on the machine during training cannot bias
the comparison. Its EMA model is then scored by held-out denoising loss on 2,000 test images (fixed
timesteps and noise). Prints JSON; the README quotes the result.

    python scripts/studies/cpu_small_size_study.py --minutes 3 --out runs/size_study
"""

import argparse
import json
import time
from pathlib import Path


from patronus_diffusion.config import apply_overrides
from patronus_diffusion.presets import get_preset
from patronus_diffusion.data import load_dataset
from patronus_diffusion.diffusion.schedule import NoiseSchedule
from patronus_diffusion.evaluation.heldout import heldout_loss
from patronus_diffusion.models import build_model
from patronus_diffusion.training import train
from patronus_diffusion.runs import load_weights

CANDIDATES = {
    "32ch-1.2.2-1blk": ["unet.base_channels=32", "unet.channel_mult=1,2,2", "unet.num_res_blocks=1"],
    "32ch-1.2.2-2blk": ["unet.base_channels=32", "unet.channel_mult=1,2,2", "unet.num_res_blocks=2"],
    "48ch-1.2.2-1blk": ["unet.base_channels=48", "unet.channel_mult=1,2,2", "unet.num_res_blocks=1"],
    "64ch-1.2.2-1blk": ["unet.base_channels=64", "unet.channel_mult=1,2,2", "unet.num_res_blocks=1"],
}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--minutes", type=float, default=3.0)
    ap.add_argument("--out", default="runs/size_study")
    ap.add_argument("--only", nargs="*", default=None)
    args = ap.parse_args()
    base = get_preset("cpu-small")
    test = load_dataset(base.data, "test").images[:2000]
    schedule = NoiseSchedule.from_config(base.diffusion)
    from patronus_diffusion.cli.bench import run_bench

    names = [n for n in CANDIDATES if not args.only or n in args.only]
    speed = {n: run_bench("cpu-small", iters=6, invert_steps=2, overrides=CANDIDATES[n])["train_images_per_s"]
             for n in names}
    print(json.dumps({"train_images_per_s": speed}), flush=True)
    results = {}
    for name in names:
        ov = CANDIDATES[name]
        cfg = apply_overrides(base, ov + ["train.sample_every=0", "train.checkpoint_every=0"])
        cfg.train.max_epochs = None
        steps = int(speed[name] * args.minutes * 60 / cfg.train.batch_size)
        run = Path(args.out) / name
        t0 = time.time()
        r = train(cfg, run, max_steps=steps, progress=False)
        model = build_model(cfg)
        model.load_state_dict(load_weights(run / "model.safetensors"))
        model.eval()
        results[name] = {"params": sum(p.numel() for p in model.unet.parameters()), "steps": r.step,
                         "bench_images_per_s": speed[name],
                         "images_seen": r.images_seen, "train_s": round(r.elapsed_s, 1),
                         "images_per_s": round(r.images_seen / r.elapsed_s, 1),
                         **{f"heldout_{k}": round(v, 5) for k, v in heldout_loss(model, test, schedule).items()},
                         "wall_s": round(time.time() - t0, 1)}
        print(json.dumps({name: results[name]}), flush=True)
    print(json.dumps({"minutes_per_candidate": args.minutes, "results": results}, indent=2))


if __name__ == "__main__":
    main()
