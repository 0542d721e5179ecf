"""Quality versus cost of a trained run (``patronus evaluate``) and the shared generation helpers.

Generation modes:
  * conditional:   s = f(x) of a seeded random subset of the reference split's images (the paper's
                   protocol: the s of test images), fresh seeded noise x_T, any sampler;
  * unconditional: s sampled from the prior over s (``patronus train-prior``), then decoded the same way.

The table runs every (mode, sampler, steps) setting on the *same* s vectors and the *same* x_T (common
random numbers), so differences between rows come from the sampler, not from the draw. Each row holds
FID and KID against the same cached reference statistics and the wall-clock seconds per image of the
generation alone (Inception time excluded). Reconstruction rows invert and decode test images with DDIM
at several step counts (PSNR/SSIM). The s-use check decodes the same x_T with s kept and with s shuffled
across the batch: a decoder that ignores its condition reconstructs equally well either way. (FID cannot
show this: shuffling s across a batch of fresh-noise samples leaves the distribution of images unchanged.)
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import torch

from ..utils.errors import UsageError
from ..utils.images import psnr, save_grid, ssim
from ..utils.io import write_json, write_text
from .fid import fid_kid
from .heldout import derangement
from .reconstruction import reconstruct
from .stats import two_way_standard_error

DEFAULT_SETTINGS = "ddim:10,ddim:20,ddim:50,ddim:100,dpmpp-2m:10,dpmpp-2m:20"
MODES = ("conditional", "unconditional")


def parse_settings(text: str) -> list[tuple[str, int]]:
    """'ddim:10,dpmpp-2m:20' -> [('ddim', 10), ('dpmpp-2m', 20)]."""
    from ..diffusion.samplers import SAMPLERS

    out = []
    for item in (x.strip() for x in text.split(",") if x.strip()):
        name, _, steps = item.partition(":")
        if name not in SAMPLERS or not steps.isdigit() or int(steps) < 1:
            raise UsageError(f"setting {item!r} must look like SAMPLER:STEPS with SAMPLER in "
                             f"{', '.join(SAMPLERS)}, e.g. ddim:50")
        out.append((name, int(steps)))
    if not out:
        raise UsageError("give at least one SAMPLER:STEPS setting")
    return out


# ------------------------------------------------------------------------------------ generation
def conditional_indices(size: int, n: int, seed: int) -> list[int]:
    """The n images (of a split of ``size``) whose s conditional generation uses: a seeded permutation, cycled
    when n exceeds the split."""
    perm = torch.randperm(size, generator=torch.Generator().manual_seed(seed + 17))
    return perm.repeat(-(-n // size))[:n].tolist()


def conditional_s(pat, n: int, seed: int = 0, split: str = "test") -> tuple[torch.Tensor, list[str]]:
    """s of n images of ``split`` picked by :func:`conditional_indices`."""
    idx = conditional_indices(len(pat.dataset(split)), n, seed)
    s = pat.encode_dataset(split, idx).s
    return s, [f"{split}:{i}" for i in idx]


def unconditional_s(prior, n: int, seed: int = 0) -> tuple[torch.Tensor, dict]:
    """n vectors from the prior (its default sampler and steps) and the range report of them."""
    s = prior.sample(n, seed=seed + 29)
    return s, prior.stats.range_report(s)


def noise_for(pat, n: int, seed: int) -> torch.Tensor:
    d = pat.config.data
    return torch.randn((n, d.channels, d.image_size, d.image_size), generator=torch.Generator().manual_seed(seed))


class GeneratedBatches:
    """The images decoded from (x_T, s), one batch of ``pat.batch_size`` at a time, as an iterable.

    Feeding it to :func:`~.fid.fid_kid` streams generation -> Inception features, so N is bounded by time, not
    memory. ``keep`` first images are kept for a preview grid (``.preview``); ``save_dir`` writes every image as
    a PNG as it is made. ``.seconds`` is the wall-clock time this iterable spent (sampling and PNGs; what the
    consumer does between batches, e.g. Inception, is excluded) and ``.sample_seconds`` the sampling alone."""

    def __init__(self, pat, s: torch.Tensor, x_T: torch.Tensor, sampler: str, steps: int, seed: int = 0,
                 keep: int = 64, save_dir: str | Path | None = None, progress: bool = False):
        self.pat, self.s, self.x_T, self.sampler, self.steps, self.seed = pat, s, x_T, sampler, steps, seed
        self.keep, self.save_dir, self.progress = keep, Path(save_dir) if save_dir else None, progress
        self.batch = max(1, pat.batch_size)
        self.seconds, self.sample_seconds, self.preview, self.n = 0.0, 0.0, [], 0

    def __len__(self) -> int:
        return -(-self.s.shape[0] // self.batch)

    def __iter__(self):
        from tqdm.auto import tqdm

        self.seconds, self.sample_seconds, self.preview, self.n = 0.0, 0.0, [], 0
        for i in tqdm(range(0, self.s.shape[0], self.batch), desc=f"generate {self.sampler}-{self.steps}",
                      leave=False, disable=not self.progress, unit="batch"):
            t0 = time.time()
            images = self.pat.sample(self.s[i:i + self.batch], sampler=self.sampler, steps=self.steps,
                                     seed=self.seed + i, x_T=self.x_T[i:i + self.batch])
            self.sample_seconds += time.time() - t0
            if self.n < self.keep:
                self.preview.append(images[:self.keep - self.n])
            if self.save_dir is not None:
                from ..utils.images import save_png, to_uint8

                for j, arr in enumerate(to_uint8(images)):
                    save_png(arr, self.save_dir / f"{self.n + j:05d}.png")
            self.n += images.shape[0]
            self.seconds += time.time() - t0  # everything this iterable did for the batch, PNGs included
            yield images

    @property
    def preview_images(self) -> torch.Tensor:
        return torch.cat(self.preview) if self.preview else torch.zeros(0)

    @property
    def seconds_per_image(self) -> float:
        """Sampling wall-clock seconds per image."""
        return self.sample_seconds / max(self.n, 1)


def generate(pat, s: torch.Tensor, x_T: torch.Tensor, sampler: str, steps: int, seed: int = 0,
             progress: bool = False) -> tuple[torch.Tensor, float]:
    """All images from (x_T, s) in memory and the wall-clock seconds per image (see :class:`GeneratedBatches`)."""
    batches = GeneratedBatches(pat, s, x_T, sampler, steps, seed, keep=0, progress=progress)
    images = torch.cat(list(batches))
    return images, batches.seconds_per_image


def run_protocol(pat, weights: str, seed: int) -> dict:
    info = pat.info()
    return {"run": str(pat.run_dir), "weights": weights, "seed": seed, "images_seen": info.get("images_seen"),
            "train_steps": info.get("step"), "image_size": pat.config.data.image_size,
            "clip_x0": getattr(pat.config.sample, "clip_x0", False),
            "load_average": round(os.getloadavg()[0], 2), "threads": torch.get_num_threads()}


def real_images(pat, source: str, n: int, seed: int, ref_split: str = "test") -> tuple[torch.Tensor, dict]:
    """n real images scored by FID like generated ones: the floor of the protocol (FID is biased upwards at small
    N, so real data scores well above 0).

    ``source="sources"``: the very images whose s conditional mode generates from (same split and seeded
    indices), i.e. what a perfect conditional generator would reproduce; they may overlap the reference images,
    as conditional generations may. ``source="train"``: seeded training images (test images when the reference is
    the training split), never overlapping the reference: the floor for unconditional generation."""
    if source == "sources":
        ds = pat.dataset(ref_split)
        idx = conditional_indices(len(ds), n, seed)
        return ds.get_batch(idx), {"mode": "real-sources", "seed": seed,
                                   "images": f"the {ref_split} images whose s conditional mode uses (seed {seed}), "
                                             "no model"}
    if source != "train":
        raise UsageError(f"real images come from 'sources' or 'train', not {source!r}")
    split = "test" if ref_split == "train" else "train"
    ds = pat.dataset(split)
    if n > len(ds):
        raise UsageError(f"--n {n} exceeds the {len(ds)} images of the {split} split")
    idx = torch.randperm(len(ds), generator=torch.Generator().manual_seed(seed + 29))[:n].tolist()
    return ds.get_batch(idx), {"mode": "real-train", "seed": seed,
                               "images": f"{split} split, seeded subset (seed {seed}), disjoint from the reference, "
                                         "no model"}


def make_s(pat, mode: str, n: int, seed: int, prior=None, split: str = "test") -> tuple[torch.Tensor, dict]:
    """s vectors for a mode with the protocol entries that describe them."""
    if mode == "conditional":
        s, _ = conditional_s(pat, n, seed, split)
        return s, {"mode": mode, "s_source": f"encoded {split} images (seeded subset, seed {seed})"}
    if mode == "unconditional":
        if prior is None:
            raise UsageError("unconditional generation needs a prior over s: run `patronus train-prior` first "
                             "or pass --prior DIR")
        s, rng = unconditional_s(prior, n, seed)
        return s, {"mode": mode, "s_source": f"prior {prior.path}", "prior_sampler": prior.cfg.sampler,
                   "prior_steps": prior.cfg.sample_steps, "prior_s_outside_train_range": rng["fraction_outside"]}
    raise UsageError(f"mode must be one of {', '.join(MODES)}, not {mode!r}")


# ------------------------------------------------------------------------------------ does s decide the content?
@torch.no_grad()
def class_agreement(pat, judge, n: int = 100, k: int = 4, seed: int = 0, sampler: str | None = None,
                    steps: int | None = None, split: str = "test", progress: bool = False) -> dict:
    """Generate ``k`` images from the s of each of ``n`` seeded test images and judge their class.

    Noise column m (x_T ~ N(0, I) from ``seed + m``) is shared by every image, so the two pixel spreads below
    compare like with like (grey levels, mean |difference| on a 0..255 scale):

    * ``same_s_other_noise``: image i under noise 0 vs noise 1 (what the noise decides);
    * ``other_s_same_noise``: image i vs image pi(i) (a derangement) under the same noise (what s decides).

    ``agreement`` = fraction of the n*k generations the independent judge assigns the source image's label;
    ``judge_test_accuracy`` (on real test images) is its ceiling and ``chance`` its floor;
    ``agreement_standard_error``: the standard error of the mean over the (n images x k noise columns) grid with
    both as random draws (:func:`~.stats.two_way_standard_error`): the k noises are shared by every image, so a
    column that happens to be easy lifts every image at once, which the std over images alone would miss;
    ``agreement_standard_error_images_only`` is that older, smaller figure (std over images / sqrt(n)), kept for
    comparison. Diagnostics of the
    misses: ``per_class`` (agreement per source label, with its number of source images), ``confusion`` (rows:
    source label, columns: the judge's label of the generation, counts), ``judge_on_sources`` (the judge's accuracy
    on the n source images themselves) and ``agreement_with_judged_source`` (the generation gets the label the
    judge gives its source image: the judge's own errors on the source then no longer count against s).
    """
    if n < 2 or k < 2:
        raise UsageError("class agreement needs n >= 2 images and k >= 2 generations per image")
    s, names = conditional_s(pat, n, seed, split)
    source_idx = [int(x.split(":")[1]) for x in names]
    labels = torch.as_tensor(pat.dataset(split).labels)[source_idx]
    if int(labels.min()) < 0:
        raise UsageError(f"class agreement needs labelled {split} images")
    d = pat.config.data
    cols = []
    t0 = time.time()
    for m in range(k):
        z = torch.randn((1, d.channels, d.image_size, d.image_size),
                        generator=torch.Generator().manual_seed(seed + 1000 + m)).expand(n, -1, -1, -1).contiguous()
        cols.append(pat.sample(s, sampler=sampler, steps=steps, seed=seed + m, x_T=z, progress=progress))
    imgs = torch.stack(cols, 1)  # (n, k, C, H, W)
    seconds = time.time() - t0
    judged = judge.predict(imgs.flatten(0, 1)).view(n, k)
    agree = (judged == labels[:, None]).float()
    judged_sources = judge.predict(pat.dataset(split).get_batch(source_idx))
    num_classes = int(judge.meta.get("num_classes", int(labels.max()) + 1))
    pairs = labels[:, None].expand(n, k).flatten() * num_classes + judged.flatten()  # (source, judged) as one index
    confusion = torch.bincount(pairs, minlength=num_classes ** 2).view(num_classes, num_classes)
    class_names = judge.meta.get("class_names") or []
    per_class = {str(c): {"name": class_names[c] if c < len(class_names) else str(c),
                          "agreement": round(float(agree[labels == c].mean()), 4), "images": int((labels == c).sum())}
                 for c in range(num_classes) if bool((labels == c).any())}
    grey = lambda a, b: float(((a - b).abs() * 127.5).mean())  # noqa: E731
    perm = derangement(n, seed)
    per_image = agree.mean(1)
    return {"agreement": round(float(agree.mean()), 4), "agreement_per_image_std": round(float(per_image.std()), 4),
            "agreement_standard_error": round(two_way_standard_error(agree), 4),
            "agreement_standard_error_images_only": round(float(per_image.std()) / n ** 0.5, 4),
            "agreement_per_noise_column": [round(float(v), 4) for v in agree.mean(0)],
            "n_images": n, "per_image": k, "seed": seed, "judge_test_accuracy": judge.meta.get("test_accuracy"),
            "judge_on_sources": round(float((judged_sources == labels).float().mean()), 4),
            "agreement_with_judged_source": round(float((judged == judged_sources[:, None]).float().mean()), 4),
            "per_class": per_class, "confusion": confusion.tolist(),
            "chance": round(1.0 / judge.meta.get("num_classes", 10), 4),
            "pixel_spread_grey_levels": {"same_s_other_noise": round(grey(imgs[:, 0], imgs[:, 1]), 2),
                                         "other_s_same_noise": round(grey(imgs[:, 0], imgs[perm, 0]), 2)},
            "sampler": sampler or pat.config.sample.sampler, "steps": steps or pat.config.sample.steps,
            "seconds": round(seconds, 1), "judge": {k_: judge.meta.get(k_) for k_ in ("architecture", "cache_file")},
            "definition": "fraction of generations from a test image's s (fresh noise) that an independent "
                          "classifier, trained on real images only, assigns that image's label"}


# ------------------------------------------------------------------------------------ checks
def reconstruction_rows(pat, x: torch.Tensor, step_list: list[int], progress: bool = False) -> list[dict]:
    """PSNR/SSIM of DDIM invert + decode at each step count (seconds per image for both passes), as table rows."""
    res = reconstruct(pat, x, [f"{i}" for i in range(len(x))], step_list, progress=progress)
    return [{"steps": k, "n": len(x), "psnr_db": float(res.psnr[k].mean()), "ssim": float(res.ssim[k].mean()),
             "seconds_per_image": res.by_steps[str(k)]["seconds_per_image"]} for k in step_list]


@torch.no_grad()
def s_shuffle_check(pat, x: torch.Tensor, steps: int, seed: int = 0, sampler: str | None = None,
                    sample_steps: int | None = None) -> dict:
    """Does the decoder use s? Paired measurements with s kept and with s shuffled across the batch.

    1. reconstruction: x_T = invert(x, s); PSNR of decode(x_T, s) and of decode(x_T, s[perm]) against x;
    2. consistency: images generated from fresh noise with s are re-encoded; mean |s(x_gen) - s| with the
       s they were made from versus the shuffled pairing (a decoder that ignores s gives equal errors).
    """
    perm = derangement(len(x), seed)
    s = pat.encode(x).s
    x_T = pat.invert(x, s, steps=steps)
    kept, shuffled = pat.decode(x_T, s, steps=steps), pat.decode(x_T, s[perm], steps=steps)
    gen = pat.sample(s, sampler=sampler, steps=sample_steps, seed=seed)
    s_gen = pat.encode(gen).s
    return {
        "n": len(x), "invert_decode_steps": steps,
        "reconstruction_psnr_db": {"s_kept": float(psnr(kept, x).mean()), "s_shuffled": float(psnr(shuffled, x).mean())},
        "reconstruction_ssim": {"s_kept": float(ssim(kept, x).mean()), "s_shuffled": float(ssim(shuffled, x).mean())},
        "regenerated_s_error": {"own_s": float((s_gen - s).abs().mean()),
                                "shuffled_s": float((s_gen - s[perm]).abs().mean())},
        "sampler": sampler or pat.config.sample.sampler, "sample_steps": sample_steps or pat.config.sample.steps,
        "verdict": None,
    }


def _verdict(check: dict) -> str:
    r, e = check["reconstruction_psnr_db"], check["regenerated_s_error"]
    uses = r["s_kept"] - r["s_shuffled"] > 1.0 and e["own_s"] < 0.8 * e["shuffled_s"]
    return ("the decoder uses s" if uses else
            "WARNING: the decoder barely depends on s (shuffled s reconstructs/regenerates about as well)")


# ------------------------------------------------------------------------------------ the table
def evaluate(pat, out: str | Path, *, prior=None, n: int = 200, settings: list[tuple[str, int]] | None = None,
             modes: tuple[str, ...] = MODES, recon_n: int = 32, recon_steps: tuple[int, ...] = (10, 20, 50, 100),
             n_ref: int = 2000, ref_split: str = "test", seed: int = 0, weights: str = "ema",
             cache_dir: str | Path | None = None, progress: bool = True, extractor=None,
             agreement_n: int = 100, agreement_k: int = 4, judge=None) -> dict:
    """Write evaluate.csv/.json/.png, reconstruction.csv, s_shuffle.json and class_agreement.json into ``out``;
    return the summary. ``agreement_n = 0`` (or a dataset without labels) skips the class agreement."""
    from .fid import InceptionFeatures

    out = Path(out)
    settings = settings or parse_settings(DEFAULT_SETTINGS)
    extractor = extractor or (InceptionFeatures(device=pat.device) if modes else None)
    base = run_protocol(pat, weights, seed)
    t_all = time.time()
    # the cheap, paired checks first (no Inception), written at once
    ds = pat.dataset(ref_split)
    idx = torch.randperm(len(ds), generator=torch.Generator().manual_seed(seed + 3))[:recon_n].tolist()
    x = ds.get_batch(idx)
    recon = reconstruction_rows(pat, x, list(recon_steps), progress)
    shuffle = s_shuffle_check(pat, x, steps=max(recon_steps), seed=seed)
    shuffle["verdict"] = _verdict(shuffle)
    write_json(out / "s_shuffle.json", shuffle)
    rows, skipped = [], []
    agreement = None
    if agreement_n > 0 and int(torch.as_tensor(ds.labels).min()) >= 0:
        from .judge import get_judge

        judge = judge or get_judge(pat.config.data, cache_dir=Path(cache_dir) / "judge" if cache_dir else None,
                                   device=pat.device, progress=progress)
        agreement = class_agreement(pat, judge, n=agreement_n, k=agreement_k, seed=seed, split=ref_split,
                                    progress=progress)
        write_json(out / "class_agreement.json", agreement)
    elif agreement_n > 0:
        skipped.append("class agreement: the images have no class labels")
    _write_tables(out, rows, recon)
    for mode in modes:
        if mode == "unconditional" and prior is None:
            skipped.append("unconditional: no prior over s (run `patronus train-prior`)")
            continue
        s, s_meta = make_s(pat, mode, n, seed, prior, ref_split)
        x_T = noise_for(pat, n, seed)
        for sampler, steps in settings:
            batches = GeneratedBatches(pat, s, x_T, sampler, steps, seed)  # fid_kid's bar shows progress
            res = fid_kid(batches, pat.config.data, split=ref_split, n_ref=n_ref, seed=0, progress=progress,
                          cache_dir=cache_dir, extractor=extractor,
                          protocol={**base, **s_meta, "sampler": sampler, "steps": steps})
            sec = batches.seconds_per_image
            save_grid(batches.preview_images, out / "samples" / f"{mode}_{sampler}-{steps}.png", upscale=2)
            rows.append({"mode": mode, "sampler": sampler, "steps": steps, "n": n, "fid": res.fid,
                         "kid": res.kid, "kid_std": res.kid_std, "seconds_per_image": sec,
                         "n_reference": res.n_reference})
            _write_tables(out, rows, recon)  # a partial table survives an interrupted run
            print(f"[evaluate] {res.protocol_line}; {sec:.3f} s/image", flush=True)
    summary = {"protocol": {**base, "n_per_setting": n, "reference": f"{n_ref} {ref_split} images (seed 0)",
                            "common_random_numbers": "every setting of a mode decodes the same s and the same x_T",
                            "seconds_per_image": "generation only, wall clock, batch " + str(pat.batch_size),
                            "small_n": True, "skipped": skipped},
               "generation": rows, "reconstruction": recon, "s_shuffle_check": shuffle, "class_agreement": agreement,
               "recommended": recommend(rows), "wall_minutes": round((time.time() - t_all) / 60, 2)}
    write_json(out / "evaluate.json", summary)
    if rows:
        plot_table(rows, out / "evaluate.png", n)
    return summary


def recommend(rows: list[dict]) -> dict:
    """Per mode, the cheapest setting whose KID is within one std (of the best row) of the best KID."""
    rec = {}
    for mode in {r["mode"] for r in rows}:
        mine = [r for r in rows if r["mode"] == mode]
        best = min(mine, key=lambda r: r["kid"])
        ok = [r for r in mine if r["kid"] <= best["kid"] + best["kid_std"]]
        pick = min(ok, key=lambda r: r["seconds_per_image"])
        rec[mode] = {"sampler": pick["sampler"], "steps": pick["steps"], "kid": pick["kid"], "fid": pick["fid"],
                     "seconds_per_image": pick["seconds_per_image"],
                     "rule": "cheapest setting with KID within one subset-std of the best KID"}
    return rec


def _write_tables(out: Path, rows: list[dict], recon: list[dict]) -> None:
    lines = ["mode,sampler,steps,n,fid,kid,kid_std,seconds_per_image,n_reference"]
    lines += [f"{r['mode']},{r['sampler']},{r['steps']},{r['n']},{r['fid']:.4f},{r['kid']:.6f},{r['kid_std']:.6f},"
              f"{r['seconds_per_image']:.4f},{r['n_reference']}" for r in rows]
    write_text(out / "evaluate.csv", "\n".join(lines) + "\n")
    lines = ["steps,n,psnr_db,ssim,seconds_per_image"]
    lines += [f"{r['steps']},{r['n']},{r['psnr_db']:.4f},{r['ssim']:.5f},{r['seconds_per_image']:.4f}" for r in recon]
    write_text(out / "reconstruction.csv", "\n".join(lines) + "\n")


def plot_table(rows: list[dict], path: Path, n: int) -> Path:
    """FID and KID against seconds per image, one line per (mode, sampler), steps annotated."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg  # the object API: no backend switch, no pyplot state
    from matplotlib.figure import Figure

    from ..utils.io import atomic_path

    fig = Figure(figsize=(10, 4))
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, 2)
    for key in sorted({(r["mode"], r["sampler"]) for r in rows}):
        pts = sorted((r for r in rows if (r["mode"], r["sampler"]) == key), key=lambda r: r["steps"])
        style = "-" if key[0] == "conditional" else "--"
        for ax, metric in zip(axes, ("fid", "kid")):
            xs, ys = [p["seconds_per_image"] for p in pts], [p[metric] for p in pts]
            ax.plot(xs, ys, style, marker="o", label=f"{key[0]} {key[1]}")
            for p, xv, yv in zip(pts, xs, ys):
                ax.annotate(str(p["steps"]), (xv, yv), textcoords="offset points", xytext=(3, 3), fontsize=7)
    for ax, metric in zip(axes, ("FID", "KID")):
        ax.set_xscale("log")
        ax.set_xlabel("seconds per image (generation)")
        ax.set_ylabel(f"{metric} (N={n}, lower is better)")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    fig.suptitle("quality versus cost (numbers: sampler steps)")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=120)
    return path
