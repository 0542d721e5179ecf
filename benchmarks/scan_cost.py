"""What does `patronus diagnose --scan` cost: the pairwise scan (one diagnosis per pair) against the shared scan?

    OMP_NUM_THREADS=1 python benchmarks/scan_cost.py [--run pretrained:fashion-mnist] [--ks 4,8,16] [--n 4]
        [--seeds 1] [--steps 3] [--probe-limit 200] [--probe-epochs 1] [--threads 1]
        [--gpu-evals-per-s 20000] [--out results/bench/scan_cost.json]

Builds a small folder dataset from the run's own images (--probe-limit train and test images each) with
max(--ks) synthetic binary columns: bit0, bit1, bit2 of the class index (attributes the images show, so the probe
reads them and the edits move them) and coin flips for the rest (cost does not depend on what a column means:
every pass runs whatever the verdict). Then, for each K, scans the first K columns both ways, on the same clean
data, with the same images per direction, seeds, steps and probe settings, from an empty inversion cache, and
counts:

* seconds (wall clock, this machine: quote its load);
* UNet image evaluations (a forward hook on the denoiser adds the rows of every call: inversion + decoding),
  of them the inversion's, and the seconds spent inside the UNet;
* images inverted (rows given to the DDIM inversion), probes trained.

It prints the table with the pairwise/shared ratio per K, checks the counts against their formulas, and projects
a 40-attribute scan at the diagnosis' defaults (--n 24, --seeds 3, --steps 25): UNet evaluations by formula; CPU
hours from the seconds per UNet image evaluation measured here at batch 64; probe training scaled from the
seconds per (image x epoch) measured here; GPU minutes from an ASSUMED throughput (--gpu-evals-per-s, not
measured here: no GPU was used). Writes the figures to --out.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from patronus_diffusion.analysis import scan as scan_mod  # noqa: E402
from patronus_diffusion.analysis import shortcut  # noqa: E402
from patronus_diffusion.analysis import verdicts  # noqa: E402
from patronus_diffusion.api import Patronus  # noqa: E402
from patronus_diffusion.config import DataConfig  # noqa: E402
from patronus_diffusion.data import biased  # noqa: E402
from patronus_diffusion.diffusion import pipeline  # noqa: E402


class Meter:
    """Counts UNet rows and seconds (forward hooks), inverted images and probes while it is installed."""

    def __init__(self, pat):
        self.reset()
        self._in_inversion = False
        self._t = 0.0
        pat.model.register_forward_pre_hook(self._pre)
        pat.model.register_forward_hook(self._post)
        real_invert, real_probe = pipeline.ddim_invert, shortcut.train_probe

        def invert(fn, x0, *a, **k):
            self.inverted += int(x0.shape[0])
            self._in_inversion = True
            try:
                return real_invert(fn, x0, *a, **k)
            finally:
                self._in_inversion = False

        def probe(*a, **k):
            t0 = time.perf_counter()
            out = real_probe(*a, **k)
            self.probes += 1
            self.probe_seconds += time.perf_counter() - t0
            return out

        pipeline.ddim_invert = invert
        shortcut.train_probe = probe
        scan_mod.train_probe = probe

    def reset(self):
        self.unet_rows = self.inversion_rows = self.inverted = self.probes = 0
        self.unet_seconds = self.probe_seconds = 0.0

    def _pre(self, module, inputs):
        self._t = time.perf_counter()

    def _post(self, module, inputs, output):
        rows = int(inputs[0].shape[0])
        self.unet_rows += rows
        self.inversion_rows += rows if self._in_inversion else 0
        self.unet_seconds += time.perf_counter() - self._t


def synthetic_folder(pat, root: Path, n: int, k: int) -> tuple[DataConfig, list[str]]:
    """``n`` train and ``n`` test images of the run's data as PNGs, with ``k`` binary columns."""
    from PIL import Image

    names = ["bit0", "bit1", "bit2"][:k] + [f"coin{c}" for c in range(max(0, k - 3))]
    rng = np.random.default_rng(0)
    rows = []
    for split in ("train", "test"):
        ds = pat.dataset(split)
        idx = list(range(min(n, len(ds))))
        x = ds.get_batch(idx)
        labels = np.asarray(ds.labels)[idx]
        for i, img in zip(idx, x):
            rel = f"images/{split}_{i:05d}.png"
            (root / "images").mkdir(parents=True, exist_ok=True)
            arr = ((img.clamp(-1, 1) + 1) * 127.5).round().byte().permute(1, 2, 0).numpy().squeeze()
            Image.fromarray(arr).save(root / rel)
            values = {f"bit{b}": float((int(labels[i]) >> b) & 1) for b in range(3)}
            values.update({f"coin{c}": float(rng.integers(0, 2)) for c in range(max(0, k - 3))})
            rows.append(biased.ManifestRow(rel, split, values))
    biased.write_manifest(root / "attributes.csv", rows, names)
    cfg = DataConfig(**{**pat.config.data.__dict__, "dataset": "folder", "root": str(root),
                        "attributes_csv": str(root / "attributes.csv"), "limit": None})
    return cfg, names


def seconds_per_eval(pat, batch: int = 64, calls: int = 3) -> float:
    x = torch.randn(batch, pat.config.data.channels, pat.config.data.image_size, pat.config.data.image_size)
    s, t = torch.rand(batch, pat.num_prototypes), torch.full((batch,), 500)
    with torch.no_grad():
        pat.model(x, t, s)
        t0 = time.perf_counter()
        for _ in range(calls):
            pat.model(x, t, s)
    return (time.perf_counter() - t0) / (batch * calls)


def seconds_per_assess(n_units: int, n_clean: int, seeds: int) -> float:
    """One pair's verdict (:func:`~.verdicts.assess`: 2,000 bootstrap resamples of both directions, with the probe's
    cross-talk on ``n_clean`` clean test images per seed), on synthetic effects of ``n_units`` (seed, image) units."""
    rng = np.random.default_rng(0)
    eff = lambda: rng.normal(0.1, 0.05, n_units)  # noqa: E731
    a = {"dA_A": eff() + 0.3, "dB_A": eff(), "dA_0A": eff(), "dB_0A": eff()}
    b = {"dB_B": eff() + 0.3, "dA_B": eff(), "dB_0B": eff(), "dA_0B": eff()}
    y = rng.integers(0, 2, (n_clean, 2))
    probs = [np.clip(y * 0.8 + rng.normal(0.1, 0.05, y.shape), 0, 1) for _ in range(seeds)]
    t0 = time.perf_counter()
    verdicts.assess(a, b, 0.2, ("A", "B"), probe_auroc=(0.9, 0.9), clean=(probs, y))
    return time.perf_counter() - t0


def pairwise_evals(k: int, n: int, seeds: int, steps: int) -> int:
    """Per pair and seed: two directions, each an inversion of n images and a decode of 3n rows (reconstruction,
    edit, null edit); the first seed decodes n more (the figure's other edit)."""
    return k * (k - 1) // 2 * steps * n * (8 * seeds + 1)


def shared_evals(k: int, n: int, seeds: int, steps: int, union: float) -> float:
    """Per seed: the union of the picked images inverted and reconstructed once, 2n edit rows per attribute."""
    return seeds * steps * (2 * union + 2 * k * n)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--run", default="pretrained:fashion-mnist")
    ap.add_argument("--ks", default="4,8,16")
    ap.add_argument("--n", type=int, default=4, help="edited images per direction and seed (both scans)")
    ap.add_argument("--seeds", type=int, default=1)
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--probe-limit", type=int, default=200, help="clean train and test images")
    ap.add_argument("--probe-epochs", type=int, default=1)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--gpu-evals-per-s", type=float, default=20000.0,
                    help="ASSUMED UNet image evaluations per second on one GPU, for the projection only")
    ap.add_argument("--project-k", type=int, default=40)
    ap.add_argument("--out", default="results/bench/scan_cost.json")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    ks = [int(k) for k in args.ks.split(",")]
    pat = Patronus.load(args.run, device="cpu")
    meter = Meter(pat)
    kw = dict(n_images=args.n, seeds=args.seeds, top_k=2, steps=args.steps, probe_limit=args.probe_limit,
              probe_epochs=args.probe_epochs, seed=0, progress=False)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        cfg, names = synthetic_folder(pat, Path(tmp), args.probe_limit, max(ks))
        scan_mod.scan_shared(pat, names[:2], cfg, **{**kw, "steps": 1})  # warm-up (data loading, first calls)
        for k in ks:
            for mode in ("shared", "pairwise"):
                pat.clear_caches()
                meter.reset()
                t0 = time.perf_counter()
                if mode == "shared":
                    rep = scan_mod.scan_shared(pat, names[:k], cfg, **kw).report
                    found = [r["verdict"] for r in rep["pairs"]]
                    union = rep["cost"]["inverted_images"] / args.seeds
                    assert meter.unet_rows == rep["cost"]["unet_image_evaluations"], (meter.unet_rows, rep["cost"])
                else:
                    found = [r["verdict"] for r in scan_mod.scan_pairs(pat, names[:k], cfg, **kw).pairs]
                    union = None
                seconds = time.perf_counter() - t0
                formula = (shared_evals(k, args.n, args.seeds, args.steps, union) if mode == "shared"
                           else pairwise_evals(k, args.n, args.seeds, args.steps))
                rows.append({"k": k, "mode": mode, "pairs": k * (k - 1) // 2, "seconds": seconds,
                             "unet_evals": meter.unet_rows, "unet_evals_formula": formula,
                             "inversion_evals": meter.inversion_rows, "inverted_images": meter.inverted,
                             "unet_seconds": meter.unet_seconds, "probes": meter.probes,
                             "probe_seconds": meter.probe_seconds, "union_images_per_seed": union,
                             "verdicts": {v: found.count(v) for v in sorted(set(found))}})
                print(f"K={k:>2} {mode:>8}: {seconds:7.1f} s, {meter.unet_rows:>6} UNet evals "
                      f"(formula {formula:.0f}), {meter.inverted:>4} images inverted, {meter.probes:>3} probes",
                      flush=True)

    by = {(r["k"], r["mode"]): r for r in rows}
    print("\n| K | pairs | pairwise s | shared s | ratio s | pairwise UNet evals | shared UNet evals | ratio evals "
          "| images inverted (pairwise / shared) | probes (pairwise / shared) |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for k in ks:
        p, s = by[(k, "pairwise")], by[(k, "shared")]
        print(f"| {k} | {p['pairs']} | {p['seconds']:.1f} | {s['seconds']:.1f} | {p['seconds'] / s['seconds']:.1f}x "
              f"| {p['unet_evals']} | {s['unet_evals']} | {p['unet_evals'] / s['unet_evals']:.1f}x "
              f"| {p['inverted_images']} / {s['inverted_images']} | {p['probes']} / {s['probes']} |")

    # projection at the diagnosis' defaults
    K, n, seeds, steps, limit, epochs = args.project_k, 24, 3, 25, 4000, 8
    big = max(ks)
    share = by[(big, "shared")]["union_images_per_seed"] / (big * args.n)  # union / (K n) measured at the largest K
    spe = seconds_per_eval(pat)
    probe_rate = by[(big, "pairwise")]["probe_seconds"] / max(1, by[(big, "pairwise")]["probes"]) / (
        args.probe_limit * args.probe_epochs)  # seconds per (image x epoch)
    bootstrap = seconds_per_assess(n * seeds, limit, seeds)  # one per pair in both scans
    proj = {}
    for mode, evals, probes in (("pairwise", pairwise_evals(K, n, seeds, steps), K * (K - 1) // 2 * seeds),
                                ("shared (union as measured)", shared_evals(K, n, seeds, steps, share * K * n), seeds),
                                ("shared (upper bound: no image shared)", shared_evals(K, n, seeds, steps, K * n),
                                 seeds)):
        proj[mode] = {"unet_evals": evals, "cpu_unet_hours": evals * spe / 3600, "probes": probes,
                      "cpu_probe_hours": probes * probe_rate * limit * epochs / 3600,
                      "cpu_bootstrap_hours": K * (K - 1) // 2 * bootstrap / 3600,
                      "gpu_unet_minutes_assumed": evals / args.gpu_evals_per_s / 60}
    print(f"\nProjection: K = {K} attributes at --n {n} --seeds {seeds} --steps {steps} --probe-limit {limit} "
          f"(probe epochs {epochs}); CPU: {spe * 1e3:.2f} ms per UNet image evaluation measured here at batch 64 on "
          f"{args.threads} thread(s), probes at {probe_rate * 1e6:.1f} us per image x epoch measured here, one "
          f"pair's bootstrap verdict {bootstrap:.2f} s measured here (both scans run one per pair; the pairwise scan "
          f"also one of 200 resamples per pair and seed, not counted); GPU: an "
          f"ASSUMED {args.gpu_evals_per_s:,.0f} UNet image evaluations per second (not measured)")
    print("| scan | UNet evals | CPU UNet h | probes | CPU probe h | CPU bootstrap h | GPU UNet min (assumed "
          "throughput) |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for mode, v in proj.items():
        print(f"| {mode} | {v['unet_evals']:,.0f} | {v['cpu_unet_hours']:.1f} | {v['probes']} | "
              f"{v['cpu_probe_hours']:.2f} | {v['cpu_bootstrap_hours']:.2f} | {v['gpu_unet_minutes_assumed']:.1f} |")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"command": " ".join(sys.argv), "settings": vars(args), "rows": rows,
                               "projection": proj, "seconds_per_unet_eval_batch64": spe,
                               "probe_seconds_per_image_epoch": probe_rate, "seconds_per_pair_verdict": bootstrap,
                               "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
                               "load_average": os.getloadavg()}, indent=2))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
