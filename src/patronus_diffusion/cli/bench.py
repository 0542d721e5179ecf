"""`patronus bench`: throughput and memory of a preset, as JSON.

Measures, on random data of the preset's shape (no dataset needed):
  * training images/s (full step: prototype encoder or class table + UNet forward/backward + AdamW + EMA),
  * UNet forward images/s and UNet evaluations/s at a batch size,
  * seconds for one DDIM invert + decode of one image at K steps,
  * peak memory (max RSS on CPU; max allocated on CUDA), load average, threads.
Options toggle the choices worth measuring: channels-last, autocast precision, torch.compile, threads.
"""

from __future__ import annotations

import json
import os
import time

import torch

from ..config import apply_overrides
from ..presets import PRESETS, get_preset
from .common import formatter


def register(sub) -> None:
    p = sub.add_parser("bench", help="measure training/sampling throughput and memory of a preset (JSON)",
                       formatter_class=formatter(), description=__doc__)
    p.add_argument("--preset", default="cpu-small", choices=PRESETS)
    p.add_argument("--batch-size", type=int, default=None, help="training batch (default: the preset's, max 64)")
    p.add_argument("--forward-batch", type=int, default=64, help="batch for the UNet forward measurement")
    p.add_argument("--invert-steps", type=int, default=50, help="K for one invert+decode of one image")
    p.add_argument("--iters", type=int, default=5, help="timed iterations per measurement (after 2 warm-up)")
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's choice)")
    p.add_argument("--channels-last", action="store_true")
    p.add_argument("--precision", choices=["fp32", "bf16", "fp16"], default="fp32")
    p.add_argument("--compile", action="store_true", help="torch.compile the UNet (slow to start)")
    p.add_argument("--set", nargs="*", action="extend", default=[], metavar="KEY=VALUE")
    p.add_argument("--device", default="auto")
    p.add_argument("--compare", action="store_true",
                   help="also run each speed choice (channels-last, 1 thread, compile, and bf16 when asked with "
                        "--precision bf16) in the same process and report its ratio to the baseline")
    p.set_defaults(func=cmd_bench)


def _timeit(fn, iters: int, warmup: int = 2) -> float:
    for _ in range(warmup):
        fn()
    t0 = time.perf_counter()
    for _ in range(iters):
        fn()
    return (time.perf_counter() - t0) / iters


def run_bench(preset: str, batch_size: int | None = None, forward_batch: int = 64, invert_steps: int = 50,
              iters: int = 5, threads: int | None = None, channels_last: bool = False, precision: str = "fp32",
              compile: bool = False, overrides: list[str] | None = None, device: str = "auto") -> dict:
    from ..diffusion.inversion import ddim_invert
    from ..diffusion.samplers import ddim
    from ..diffusion.schedule import NoiseSchedule
    from ..models import build_model
    from ..training.ema import EMA
    from ..training.trainer import build_optimizer
    from ..utils.device import autocast, peak_memory_mb, pick_device

    if threads:
        torch.set_num_threads(threads)
    cfg = apply_overrides(get_preset(preset), overrides or [])
    dev = pick_device(device)
    torch.manual_seed(0)
    if cfg.family == "protodiffusion":  # condition = the class-embedding table row of a random label
        from ..models.protodiffusion import build_for_inference

        model = build_for_inference(cfg).to(dev)  # the table's values do not change the speed
        n_classes = model.num_classes
        condition = lambda xx: model.classes(torch.randint(0, n_classes, (xx.shape[0],), device=dev))  # noqa: E731
    else:  # Patronus: condition = the prototype similarities s of the clean image (the encoder trains too)
        model = build_model(cfg).to(dev)
        condition = lambda xx: model.prototypes(xx).s  # noqa: E731
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    unet = torch.compile(model.unet) if compile else model.unet
    ema = EMA(model, 0.999)
    opt = build_optimizer(model, cfg)
    sched = NoiseSchedule.from_config(cfg.diffusion)
    d = cfg.data
    bs = batch_size or min(cfg.train.batch_size, 64)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    x = torch.randn(bs, d.channels, d.image_size, d.image_size, device=dev).contiguous(memory_format=fmt)
    amp = autocast(dev, precision)

    def train_step():
        t = torch.randint(0, sched.num_timesteps, (bs,), device=dev)
        noise = torch.randn_like(x)
        s = condition(x)
        with amp:
            eps = unet(sched.q_sample(x, t, noise), t, s)
        loss = ((eps.float() - noise) ** 2).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        ema.update(model)

    def sync():
        if dev.type == "cuda":
            torch.cuda.synchronize()

    t_compile = time.perf_counter()
    model.train()
    train_step()
    sync()
    t_compile = time.perf_counter() - t_compile
    sec_train = _timeit(lambda: (train_step(), sync()), iters)

    model.eval()
    fb = forward_batch
    xf = torch.randn(fb, d.channels, d.image_size, d.image_size, device=dev).contiguous(memory_format=fmt)
    tf = torch.randint(0, sched.num_timesteps, (fb,), device=dev)
    with torch.no_grad():
        sf = condition(xf)

        def fwd():
            with amp:
                unet(xf, tf, sf)
            sync()

        sec_fwd = _timeit(fwd, iters)
        x1, s1 = xf[:1], sf[:1]
        fn = lambda z, t: unet(z, t, s1).float()  # noqa: E731
        t0 = time.perf_counter()
        with amp:
            xt = ddim_invert(fn, x1, sched, invert_steps)
            ddim(fn, xt, sched, invert_steps)
        sync()
        sec_inv = time.perf_counter() - t0

    params = sum(p.numel() for p in model.parameters())
    return {
        "preset": preset, "device": str(dev), "threads": torch.get_num_threads(), "precision": precision,
        "channels_last": channels_last, "compile": compile, "params": params,
        "unet_params": sum(p.numel() for p in model.unet.parameters()),
        "image_shape": [d.channels, d.image_size, d.image_size],
        "train_batch": bs, "train_images_per_s": round(bs / sec_train, 2),
        "train_step_s": round(sec_train, 4),
        "forward_batch": fb, "unet_forward_images_per_s": round(fb / sec_fwd, 2),
        "unet_evals_per_s": round(fb / sec_fwd, 2),
        "invert_decode_steps": invert_steps, "invert_decode_one_image_s": round(sec_inv, 3),
        "first_step_s": round(t_compile, 2),
        "peak_memory_mb": round(peak_memory_mb(dev), 1),
        "load_average_1m": round(os.getloadavg()[0], 2),
        "torch": torch.__version__,
    }


RATIO_KEYS = ("train_images_per_s", "unet_forward_images_per_s")


def compare_choices(args) -> dict:
    """Baseline plus one variant per speed choice, all in this process; ratios > 1 mean faster."""
    common = dict(batch_size=args.batch_size, forward_batch=args.forward_batch, invert_steps=args.invert_steps,
                  iters=args.iters, overrides=args.set, device=args.device)
    default_threads = torch.get_num_threads()
    variants = {"baseline": {}, "channels_last": {"channels_last": True}, "threads_1": {"threads": 1},
                "compile": {"compile": True}}
    if args.precision != "fp32":
        variants[args.precision] = {"precision": args.precision}
    results = {}
    for name, opts in variants.items():
        torch.set_num_threads(default_threads)
        results[name] = run_bench(args.preset, **common, **opts)
    torch.set_num_threads(default_threads)
    base = results["baseline"]
    ratios = {name: {k: round(r[k] / base[k], 3) for k in RATIO_KEYS} for name, r in results.items()}
    return {"preset": args.preset, "ratios_to_baseline": ratios, "runs": results}


def cmd_bench(args) -> int:
    if args.compare:
        print(json.dumps(compare_choices(args), indent=2))
        return 0
    res = run_bench(args.preset, args.batch_size, args.forward_batch, args.invert_steps, args.iters, args.threads,
                    args.channels_last, args.precision, args.compile, args.set, args.device)
    print(json.dumps(res, indent=2))
    return 0
