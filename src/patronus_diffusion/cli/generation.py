"""Generation-quality commands: train-prior, fid, evaluate."""

from __future__ import annotations

import json
import time
from pathlib import Path

import torch

from ..utils.errors import UsageError
from .common import add_device, add_run, add_sampler, formatter, print_outputs


def register(sub) -> None:
    p = sub.add_parser("train-prior", help="train the diffusion prior over s (for unconditional sampling)",
                       formatter_class=formatter(),
                       description="Encode the training split once with the run's frozen encoder (cached), "
                                   "standardise s and fit a residual-MLP diffusion model over it, with EMA. Writes "
                                   "prior.safetensors, prior.json (config, source, range and Frechet checks), "
                                   "prior_log.csv and checkpoint/ into --out (default RUN/prior). Resumable.")
    add_run(p)
    p.add_argument("--out", help="prior directory (default: RUN/prior, where `sample --unconditional` looks)")
    p.add_argument("--steps", type=int, help="total optimisation steps (default 6000)")
    p.add_argument("--minutes", type=float, help="wall-clock budget for this invocation")
    p.add_argument("--batch-size", type=int)
    p.add_argument("--lr", type=float)
    p.add_argument("--set", nargs="*", action="extend", default=[], metavar="KEY=VALUE",
                   help="prior settings, e.g. hidden=512 blocks=6 ema_decay=0.9995 sample_steps=100")
    p.add_argument("--resume", action="store_true", help="continue from --out/checkpoint")
    p.add_argument("--cache-dir", help="where encodings of the training set are cached (default $PATRONUS_CACHE/s)")
    p.add_argument("--no-progress", action="store_true")
    add_device(p)
    p.set_defaults(func=cmd_train_prior)

    p = sub.add_parser("fid", help="FID/KID of generated images with the TF-Inception FID network (offline)",
                       formatter_class=formatter(),
                       description="Generate N images (conditional: s of test images; unconditional: s from the "
                                   "prior) and compute FID and KID against cached reference statistics of the "
                                   "dataset split. --mode real-sources / real-train score real images the same way, "
                                   "no model: the conditional mode's own source images (what a perfect conditional "
                                   "generator would reproduce) or training images disjoint from the reference; "
                                   "these are the floors at this N and reference set (FID is biased upwards at "
                                   "small N). Writes fid.json (values + full protocol), samples.png and, with "
                                   "--save-images, lossless PNGs. Inception runs at about 4 images/s on 2 cores.")
    add_run(p)
    p.add_argument("--mode", choices=["conditional", "unconditional", "real-sources", "real-train"],
                   default="conditional",
                   help="conditional: s of test images; unconditional: s from the prior; real-sources: the test "
                        "images whose s conditional mode uses, scored as they are (the floor for conditional FID); "
                        "real-train: seeded training images (the floor for unconditional FID)")
    p.add_argument("--n", type=int, default=1000, help="number of generated images")
    add_sampler(p)
    p.add_argument("--prior", help="prior directory for --mode unconditional (default RUN/prior)")
    p.add_argument("--n-ref", type=int, default=2000, help="reference images (0 = the whole split)")
    p.add_argument("--ref-split", default="test", help="reference split (also the source of s when conditional)")
    p.add_argument("--cache-dir", help="reference statistics cache (default $PATRONUS_CACHE/fid)")
    p.add_argument("--save-images", action="store_true", help="also write every generated image as PNG")
    p.add_argument("--out", default="results/fid")
    p.add_argument("--no-progress", action="store_true")
    add_device(p)
    p.set_defaults(func=cmd_fid)

    p = sub.add_parser("evaluate", help="quality-versus-cost table: FID/KID per sampler/steps, reconstruction, s-use",
                       formatter_class=formatter(),
                       description="For each mode and SAMPLER:STEPS setting, generate --n images (same s and x_T "
                                   "for every setting), measure FID/KID and seconds per image; invert+decode test "
                                   "images at several step counts (PSNR/SSIM); check that the decoder uses s "
                                   "(s kept vs shuffled). Writes evaluate.csv, evaluate.png, evaluate.json, "
                                   "reconstruction.csv, s_shuffle.json and samples/*.png into --out.")
    add_run(p)
    p.add_argument("--n", type=int, default=200, help="generated images per setting (small-N: compare at equal N)")
    p.add_argument("--settings", default="ddim:10,ddim:20,ddim:50,ddim:100,dpmpp-2m:10,dpmpp-2m:20")
    p.add_argument("--modes", default="conditional,unconditional",
                   help="generation modes of the FID/KID table; 'none' skips the table (reconstruction, s-use "
                        "and class agreement only)")
    p.add_argument("--prior", help="prior directory (default RUN/prior; unconditional rows are skipped without one)")
    p.add_argument("--recon-n", type=int, default=32, help="test images for the reconstruction rows")
    p.add_argument("--recon-steps", default="10,20,50,100")
    p.add_argument("--n-ref", type=int, default=2000)
    p.add_argument("--ref-split", default="test")
    p.add_argument("--cache-dir", help="reference statistics cache (default $PATRONUS_CACHE/fid)")
    p.add_argument("--agreement-n", type=int, default=100,
                   help="test images whose s generates --agreement-k images each, judged by an independent "
                        "classifier trained on real images (class agreement; 0 skips it)")
    p.add_argument("--agreement-k", type=int, default=4, help="generations per image for the class agreement")
    p.add_argument("--out", default="results/evaluate")
    p.add_argument("--no-progress", action="store_true")
    add_device(p)
    p.set_defaults(func=cmd_evaluate)


def _ints(text: str, flag: str) -> list[int]:
    try:
        return [int(v) for v in str(text).split(",") if v.strip()]
    except ValueError:
        raise UsageError(f"{flag} must be comma-separated integers, got {text!r}") from None


def _load_prior(pat, prior_dir: str | None, required: bool):
    return pat.load_prior(prior_dir, required)


# ------------------------------------------------------------------------------------ train-prior
def cmd_train_prior(args) -> int:
    from ..api import Patronus
    from ..models.prior import PriorConfig
    from ..training.prior import default_prior_dir, train_prior

    pat = Patronus.load(args.run, weights=args.weights, device=args.device)
    out = Path(args.out) if args.out else default_prior_dir(pat.run_dir)
    overrides = list(args.set or [])
    for flag, key in (("batch_size", "batch_size"), ("lr", "lr")):
        if getattr(args, flag) is not None:
            overrides.append(f"{key}={getattr(args, flag)}")
    overrides.append(f"seed={args.seed}")
    cfg = PriorConfig().override(overrides)
    r = train_prior(pat, out, cfg, weights=args.weights, resume=args.resume, progress=not args.no_progress, cache_dir=args.cache_dir, max_steps=args.steps,
                    max_minutes=args.minutes)
    meta = json.loads((out / "prior.json").read_text())
    checks = meta["checks"]
    print(json.dumps({"prior": str(out), "step": r.step, "minutes": round(r.seconds / 60, 2),
                      "last_loss": round(r.last_loss, 5), "stopped_by": r.stopped_by,
                      "heldout_eps_mse": meta["heldout_eps_mse"],
                      "sampled_s_outside_train_range": round(checks["range"]["fraction_outside"], 5),
                      "frechet_s": checks["frechet_s"]}))
    return 0


# ------------------------------------------------------------------------------------ fid
def cmd_fid(args) -> int:
    from ..api import Patronus
    from ..evaluation.fid import InceptionFeatures, fid_kid
    from ..evaluation.generation import GeneratedBatches, make_s, noise_for, real_images, run_protocol
    from ..utils.images import save_grid

    if args.n < 2:
        raise UsageError("--n must be at least 2 (FID needs a covariance)")
    pat = Patronus.load(args.run, args.weights, args.device)
    extractor = InceptionFeatures(device=pat.device)
    out = Path(args.out)
    t0 = time.time()
    batches = None  # generated images stream batch by batch; real ones are one tensor
    if args.mode.startswith("real-"):
        if args.save_images:
            raise UsageError(f"--save-images has nothing to save with --mode {args.mode}: the images are the dataset's")
        images, protocol = real_images(pat, args.mode.removeprefix("real-"), args.n, args.seed, args.ref_split)
    else:
        prior = _load_prior(pat, args.prior, required=args.mode == "unconditional")
        sampler, steps = args.sampler or pat.config.sample.sampler, args.steps or pat.config.sample.steps
        s, s_meta = make_s(pat, args.mode, args.n, args.seed, prior, args.ref_split)
        images = batches = GeneratedBatches(pat, s, noise_for(pat, args.n, args.seed), sampler, steps, args.seed,
                                            save_dir=out / "images" if args.save_images else None)
        protocol = {**run_protocol(pat, args.weights, args.seed), **s_meta, "sampler": sampler, "steps": steps,
                    "streamed": "generation -> Inception features one batch at a time"}
    res = fid_kid(images, pat.config.data, split=args.ref_split, n_ref=args.n_ref or None, seed=0,
                  progress=not args.no_progress, cache_dir=args.cache_dir, protocol=protocol, extractor=extractor)
    generation_seconds, preview = 0.0, images[:64] if batches is None else batches.preview_images
    if batches is not None:
        generation_seconds = batches.seconds
        res.protocol["generation_seconds_per_image"] = round(batches.seconds_per_image, 4)
    files = {"samples": save_grid(preview, out / "samples.png", upscale=2)}
    if args.save_images:
        files["images"] = out / "images"
    res.protocol["fid_seconds"] = round(time.time() - t0 - generation_seconds, 1)
    files.update(res.write(out))
    print(res.protocol_line)
    print_outputs("wrote", files)
    return 0


# ------------------------------------------------------------------------------------ evaluate
def cmd_evaluate(args) -> int:
    from ..api import Patronus
    from ..evaluation.generation import MODES, evaluate, parse_settings

    modes = tuple(m.strip() for m in args.modes.split(",") if m.strip())
    if modes == ("none",):
        modes = ()
    bad = [m for m in modes if m not in MODES]
    if bad or (not modes and args.modes.strip() != "none"):
        raise UsageError(f"--modes must be a comma-separated subset of {', '.join(MODES)}, got {args.modes!r}")
    if args.n < 2 or args.recon_n < 2:
        raise UsageError("--n and --recon-n must be at least 2")
    settings = parse_settings(args.settings)
    pat = Patronus.load(args.run, args.weights, args.device)
    prior = _load_prior(pat, args.prior, required=False) if "unconditional" in modes else None
    res = evaluate(pat, args.out, prior=prior, n=args.n, settings=settings, modes=modes, recon_n=args.recon_n,
                   recon_steps=tuple(_ints(args.recon_steps, "--recon-steps")), n_ref=args.n_ref,
                   ref_split=args.ref_split, seed=args.seed, weights=args.weights, cache_dir=args.cache_dir,
                   progress=not args.no_progress, agreement_n=args.agreement_n, agreement_k=args.agreement_k)
    out = Path(args.out)
    if res["generation"]:
        print(f"{'mode':<14}{'setting':<14}{'FID':>9}{'KID x1e3':>10}{'s/image':>10}")
    for r in res["generation"]:
        print(f"{r['mode']:<14}{r['sampler'] + '-' + str(r['steps']):<14}{r['fid']:>9.2f}{r['kid'] * 1e3:>10.2f}"
              f"{r['seconds_per_image']:>10.3f}")
    for r in res["reconstruction"]:
        print(f"reconstruction {r['steps']:>4} steps: PSNR {r['psnr_db']:.2f} dB  SSIM {r['ssim']:.4f}  "
              f"({r['seconds_per_image']:.3f} s/image)")
    sh = res["s_shuffle_check"]
    print(f"s-use check: reconstruction PSNR {sh['reconstruction_psnr_db']['s_kept']:.2f} dB with s kept vs "
          f"{sh['reconstruction_psnr_db']['s_shuffled']:.2f} dB shuffled -> {sh['verdict']}")
    ca = res["class_agreement"]
    if ca is not None:
        print(f"class agreement of generations from s: {ca['agreement']:.3f} +- {ca['agreement_standard_error']:.3f} "
              f"(standard error over the {ca['n_images']} images; judge accuracy on real test images "
              f"{ca['judge_test_accuracy']}, chance {ca['chance']}); pixel spread same s / other noise "
              f"{ca['pixel_spread_grey_levels']['same_s_other_noise']}, other s / same noise "
              f"{ca['pixel_spread_grey_levels']['other_s_same_noise']} grey levels")
        worst = sorted(ca["per_class"].items(), key=lambda kv: kv[1]["agreement"])[:3]
        print(f"  with the judge's own label of each source image: {ca['agreement_with_judged_source']:.3f} (judge "
              f"right on {ca['judge_on_sources']:.3f} of the sources); lowest classes: "
              + ", ".join(f"{v['name']} {v['agreement']:.2f}" for _, v in worst))
    for note in res["protocol"]["skipped"]:
        print(f"skipped {note}")
    print_outputs("wrote", {"table": out / "evaluate.csv", **({"plot": out / "evaluate.png"} if res["generation"] else {}),
                            "summary": out / "evaluate.json",
                            "reconstruction": out / "reconstruction.csv", "s-use check": out / "s_shuffle.json",
                            **({"class agreement": out / "class_agreement.json"} if ca is not None else {})})
    return 0


def sample_unconditional(pat, args) -> tuple[torch.Tensor, list[str], dict]:
    """s for `patronus sample --unconditional`: drawn from the prior (RUN/prior unless --prior)."""
    prior = _load_prior(pat, getattr(args, "prior", None), required=True)
    s = prior.sample(args.n, seed=args.seed + 29)
    return s, [f"prior{i}" for i in range(len(s))], {"prior": str(prior.path),
                                                     "prior_sampler": prior.cfg.sampler,
                                                     "prior_steps": prior.cfg.sample_steps,
                                                     "s_range": prior.stats.range_report(s)}
