"""Write MODEL_CARD.md of the shipped model from its bundle and the result files of scripts/measure_pretrained.sh.

    python scripts/model_card.py [RESULTS] [BUNDLE]     (defaults: results/pretrained, the package's bundle)

Every figure is read from a result file (named next to it), none is typed in; a section whose file is missing
says so. The hardware line comes from HARDWARE (default: this machine's CPU count and torch build).
"""

from __future__ import annotations

import csv
import json
import os
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]


def _load(path: Path) -> dict | None:
    return json.loads(path.read_text()) if path.is_file() else None


def _training_hours(log: Path) -> float | None:
    """Wall hours of training, summed over the logged intervals (steps x batch / images per s)."""
    if not log.is_file():
        return None
    rows, prev, secs = list(csv.DictReader(log.open())), 0, 0.0
    batch = None
    for r in rows:
        step, ips = int(r["step"]), float(r["images_per_s"] or 0)
        if batch is None and step:
            batch = int(r["images_seen"]) // step
        if ips > 0:
            secs += (step - prev) * (batch or 64) / ips
        prev = step
    return secs / 3600


def card(results: Path, bundle: Path) -> str:
    cfg, summ = _load(bundle / "config.json"), _load(bundle / "train_summary.json")
    hours = _training_hours(bundle / "train_log.csv")
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    hardware = os.environ.get("HARDWARE", f"{os.cpu_count()} CPU cores ({gpu}), torch {torch.__version__}")
    u, p, t, s = cfg["unet"], cfg["prototypes"], cfg["train"], cfg["sample"]
    out = ["# Model card: `pretrained:fashion-mnist`", "",
           "Made by `scripts/train_pretrained.sh` (training) and `scripts/measure_pretrained.sh` (every figure "
           "below); this card by `python scripts/model_card.py`.", "",
           "## What it is", "",
           f"- Patronus on Fashion-MNIST ({cfg['data']['image_size']} px, grey), preset `{cfg['preset']}`: "
           f"{p['num_prototypes']} prototypes (init `{p['init']}`, metric `{p['metric']}`), UNet base "
           f"{u['base_channels']} channels x {tuple(u['channel_mult'])}, conditioning `{u['cond_mode']}` on "
           f"`{u['cond_norm']}`-normalised s.",
           f"- Trained {summ['epoch']:g} epochs = {summ['step']:,} steps of {t['batch_size']} "
           f"({summ['images_seen']:,} images), lr {t['lr']:g}, EMA {t['ema_decay']}; weights shipped: EMA.",
           f"- Hardware: {hardware}; about {hours:.1f} h of training wall clock on 2 threads, resumed across "
           "sessions from carried checkpoints." if hours else f"- Hardware: {hardware}.",
           f"- Inference defaults: sampler `{s['sampler']}`, {s['steps']} steps; edits invert and decode with "
           f"{s['ddim_steps']} DDIM steps, edit guidance w = {s.get('edit_guidance', 0):g} "
           "(eps(s') + w (eps(s') - eps(s))).", "",
           "## Measured", ""]
    e = _load(results / "edits_eval" / "edits_eval.json")
    if e:
        st = e["settings"]
        out.append(f"- Edits (`patronus evaluate-edits --n {st['n_images']}`, {st['steps']} steps, edit guidance "
                   f"{st['edit_guidance'] or 0:g}): median rise **{e['median_rise']:.3f}** of the requested change at "
                   f"median off-target **{e['median_off_target']:.3f}** (raise to own max; lowered to own min: rise "
                   f"{e['median_rise_lower']:.3f}), locality {e['median_locality']:.2f}.")
    a = _load(results / "agreement" / "class_agreement.json")
    if a:
        sp = a["pixel_spread_grey_levels"]
        out.append(f"- Class agreement of generations from s (`patronus evaluate --agreement-n {a['n_images']} "
                   f"--agreement-k {a['per_image']}`, independent judge at {a['judge_test_accuracy']:.3f} on real "
                   f"test images): **{a['agreement']:.3f}**"
                   + (f" +- {a['agreement_standard_error']:.3f} (standard error over images)"
                      if "agreement_standard_error" in a else "")
                   + f" (chance {a['chance']}); same s other noise "
                   f"{sp['same_s_other_noise']} grey levels apart, other s same noise {sp['other_s_same_noise']}.")
        if "per_class" in a:
            worst = sorted(a["per_class"].values(), key=lambda v: v["agreement"])[:3]
            out.append(f"  The judge is right on {a['judge_on_sources']:.3f} of the source images themselves; agreement "
                       f"with its reading of each source {a['agreement_with_judged_source']:.3f}; lowest classes "
                       + ", ".join(f"{v['name']} {v['agreement']:.2f}" for v in worst) + ".")
    q = _load(results / "quality" / "quality.json")
    if q:
        probe = next((v for k, v in q["probes"].items() if "class" in k or k == "label"), None)
        if probe:
            out.append(f"- Linear-probe class accuracy on s (`patronus quality`): **{probe['mean']:.3f} +- "
                       f"{probe['std']:.3f}**.")
        if q.get("s_use"):
            out.append(f"- The decoder's use of s (held-out loss lower with the image's own s): "
                       f"{100 * q['s_use']['gain']:.1f} %.")
    for mode in ("conditional", "unconditional"):
        f = _load(results / f"fid_{mode}" / "fid.json")
        if f:
            out.append(f"- FID, {mode} (`patronus fid --mode {mode} --n {f['n_generated']}`): `{f['protocol_line']}`")
    for mode, what in (("sources", "the conditional mode's own source images (the floor of conditional FID)"),
                       ("train", "training images (the floor of unconditional FID)")):
        f = _load(results / f"fid_real_{mode}" / "fid.json")
        if f:
            out.append(f"- FID of {f['n_generated']} real images, {what}, by the same protocol (`patronus fid "
                       f"--mode real-{mode} --n {f['n_generated']}`): `{f['protocol_line']}`")
    r = _load(results / "reconstruct" / "reconstruct.json")
    if r:
        by = r["by_steps"]
        out.append("- Reconstruction through " + r["sampler"] + " (`patronus reconstruct --n 16`): PSNR "
                   + " / ".join(f"{by[k]['psnr_db']:.1f}" for k in by) + " dB at " + " / ".join(by) + " steps.")
    checks = (_load(bundle / "prior" / "prior.json") or {}).get("checks") or {}
    if "frechet_s" in checks:
        f, rng = checks["frechet_s"], checks.get("range", {})
        out.append(f"- Prior over s (`patronus train-prior`, shipped in `prior/`): Frechet distance in s-space "
                   + ", ".join(f"{k} {v:g}" for k, v in f.items())
                   + (f"; {100 * rng['fraction_outside']:.2f} % of sampled entries outside the training range."
                      if "fraction_outside" in rng else "."))
    missing = [n for n in ("edits_eval/edits_eval.json", "agreement/class_agreement.json", "quality/quality.json",
                           "fid_conditional/fid.json", "reconstruct/reconstruct.json")
               if not (results / n).is_file()]
    if missing:
        out.append(f"- Not measured yet (missing in {results}): {', '.join(missing)}.")
    return "\n".join(out) + "\n"


def main(argv: list[str]) -> int:
    results = Path(argv[0]) if argv else ROOT / "results" / "pretrained"
    bundle = Path(argv[1]) if len(argv) > 1 else ROOT / "src" / "patronus_diffusion" / "pretrained" / "fashion-mnist"
    text = card(results, bundle)
    tmp = bundle / "MODEL_CARD.md.tmp"
    tmp.write_text(text)
    tmp.replace(bundle / "MODEL_CARD.md")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
