"""The shipped model's figures, from one source: ``measured.json`` in its bundle, and the MODEL_CARD.md made from it.

    python scripts/model_card.py [RESULTS] [BUNDLE]     (defaults: results/pretrained, the package's bundle)

1. Every result file of ``scripts/measure_pretrained.sh`` found under RESULTS updates the figures it measures in
   ``BUNDLE/measured.json`` (value, the command that made it, the result file, the date); figures whose result file
   is absent keep their stored entry, with its own command and date, so a partial re-measure never loses one.
2. MODEL_CARD.md is written from ``measured.json`` alone.

The README and docs quote figures with a marker, ``**0.437**<!-- m:edits.median_rise -->``: the number just before
the marker must be the stored value at the shown precision (tests/test_measured.py), so a quoted figure cannot
drift from its source. The hardware line is stored there too (HARDWARE=... sets it; default: this machine's
CPU count and torch build).
"""

from __future__ import annotations

import csv
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
R = "pretrained:fashion-mnist"


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


# ------------------------------------------------------------------------------ result files -> figures
def _edits(e: dict, default_w: float) -> dict:
    st = e["settings"]
    w = st.get("amplified_edit_guidance") or 0.0
    cmd = (f"patronus evaluate-edits --run {R} --n {st['n_images']} --seed {st['seed']}"
           + ("" if w == default_w else f" --edit-guidance {w:g}"))
    f = {"edits.n_images": e["n_images"], "edits.seed": st["seed"], "edits.steps": st["steps"],
         "edits.median_rise": e["median_rise"], "edits.median_rise_ci95": e["median_rise_ci95"],
         "edits.median_off_target": e["median_off_target"], "edits.median_off_target_ci95": e["median_off_target_ci95"],
         "edits.leak_per_rise": e["leak_per_rise"], "edits.leak_per_rise_ci95": e["leak_per_rise_ci95"],
         "edits.n_prototypes": e["n_prototypes"], "edits.n_prototypes_below_0.2": e["n_prototypes_below_0.2"],
         "edits.prototypes_below_0.2": e["prototypes_below_0.2"], "edits.median_locality": e["median_locality"],
         "edits.median_rise_global_max": e.get("median_rise_global_max"),
         "edits.median_off_target_global_max": e.get("median_off_target_global_max"),
         "edits.median_rise_lower": e.get("median_rise_lower")}
    amp = e.get("amplified")
    if amp:
        f |= {"edits.amplified.edit_guidance": amp["edit_guidance"], "edits.amplified.median_rise": amp["median_rise"],
              "edits.amplified.median_rise_ci95": amp["median_rise_ci95"],
              "edits.amplified.median_off_target": amp["median_off_target"],
              "edits.amplified.leak_per_rise": amp["leak_per_rise"],
              "edits.amplified.median_rise_per_effective_request": amp["median_rise_per_effective_request"]}
    real = e.get("realism")
    if real:
        f |= {"edits.realism.kid_edited": real["edited"]["kid_median"],
              "edits.realism.kid_edited_min": real["edited"]["kid_min"],
              "edits.realism.kid_edited_max": real["edited"]["kid_max"],
              "edits.realism.kid_reconstruction": real["reconstruction"]["kid"]}
    return {k: (v, cmd) for k, v in f.items() if v is not None}


def _steerability(e: dict) -> dict:
    st, settings = e["steerability"], e["settings"]
    cmd = f"patronus evaluate-edits --run {R} --n {settings['n_images']} --seed {settings['seed']}"
    if len(settings["prototypes"]) < 30 or settings["strengths"] != [0.25, 0.5, 1.0, 1.5]:  # a steerability-only run
        cmd += (f" --prototypes {','.join(map(str, settings['prototypes']))} --strengths "
                f"{','.join(f'{a:g}' for a in settings['strengths'])} --no-realism --edit-guidance 0")
    f = {"steerability.median": st["median"], "steerability.pooled": st["pooled"],
         "steerability.pooled_standard_error": st["pooled_standard_error"], "steerability.n_steered": st["n_steered"],
         "steerability.n_edits": st["n_edits"], "steerability.top_k": st["top_k"],
         "steerability.per_class": [[r["name"], r["steerability"], r["n_images"]] for r in st["per_class"]]}
    return {k: (v, cmd) for k, v in f.items() if v is not None}


def _agreement(a: dict) -> dict:
    cmd = (f"patronus evaluate --run {R} --modes none --agreement-n {a['n_images']} --agreement-k {a['per_image']}"
           f" --seed {a.get('seed', 0)}")
    sp = a["pixel_spread_grey_levels"]
    f = {"agreement.value": a["agreement"], "agreement.standard_error": a.get("agreement_standard_error"),
         "agreement.n_images": a["n_images"], "agreement.per_image": a["per_image"], "agreement.seed": a.get("seed", 0),
         "agreement.judge_test_accuracy": a.get("judge_test_accuracy"),
         "agreement.judge_on_sources": a.get("judge_on_sources"),
         "agreement.with_judged_source": a.get("agreement_with_judged_source"),
         "agreement.same_s_other_noise": sp["same_s_other_noise"], "agreement.other_s_same_noise": sp["other_s_same_noise"]}
    return {k: (v, cmd) for k, v in f.items() if v is not None}


def _fid(f: dict, mode: str) -> dict:
    cmd = f"patronus fid --run {R} --mode {mode} --n {f['n_generated']}"
    key = mode.replace("-", "_")
    return {f"fid.{key}": (round(f["fid"], 2), cmd), f"kid.{key}": (f["kid"], cmd),
            f"fid.{key}.protocol": (f["protocol_line"], cmd)}


def figures_from_results(results: Path, default_w: float = 0.0) -> dict[str, tuple[object, str, str]]:
    """key -> (value, command, result file) for every result file present under ``results`` (``default_w``: the
    model's sample.edit_guidance, which evaluate-edits' amplified row takes when no --edit-guidance is given)."""
    out: dict[str, tuple[object, str, str]] = {}

    def add(name: str, found: dict) -> None:
        out.update({k: (v, cmd, name) for k, (v, cmd) in found.items()})

    if (e := _load(results / "edits_eval" / "edits_eval.json")) and "median_rise_ci95" in e:
        add("edits_eval/edits_eval.json", _edits(e, default_w))
    for name in ("edits_eval/edits_eval.json", "steerability/edits_eval.json"):  # the newest file that has it wins
        if (e := _load(results / name)) and e.get("steerability"):
            add(name, _steerability(e))
    if a := _load(results / "agreement" / "class_agreement.json"):
        add("agreement/class_agreement.json", _agreement(a))
    if q := _load(results / "quality" / "quality.json"):
        probe = next((v for k, v in q["probes"].items() if "class" in k or k == "label"), None)
        found = {}
        if probe:
            found |= {"probe.class_accuracy": (round(probe["mean"], 4), f"patronus quality --run {R}"),
                      "probe.class_accuracy_std": (round(probe["std"], 4), f"patronus quality --run {R}")}
        if q.get("s_use"):
            found["s_use.gain"] = (round(q["s_use"]["gain"], 4), f"patronus quality --run {R}")
        add("quality/quality.json", found)
    for mode in ("conditional", "unconditional", "real-sources", "real-train"):
        folder = "fid_" + mode.replace("-", "_")
        if f := _load(results / folder / "fid.json"):
            add(f"{folder}/fid.json", _fid(f, mode))
    if r := _load(results / "reconstruct" / "reconstruct.json"):
        add("reconstruct/reconstruct.json", {f"reconstruct.psnr_db.{k}": (round(v["psnr_db"], 2),
                                                                             f"patronus reconstruct --run {R} --n 16")
                                              for k, v in r["by_steps"].items()})
    return out


def update_measured(results: Path, bundle: Path) -> dict:
    """Merge the figures found under ``results`` into ``bundle/measured.json`` (atomically) and return it."""
    path = bundle / "measured.json"
    stored = _load(path) or {"what": "every figure quoted about this model, with the command and result file that "
                                     "made it (scripts/model_card.py); README/docs quote them with <!-- m:KEY -->",
                             "figures": {}}
    if os.environ.get("HARDWARE"):  # the training machine, stored so the card does not depend on who writes it
        stored["hardware"] = os.environ["HARDWARE"]
    today = time.strftime("%Y-%m-%d")
    default_w = float(((_load(bundle / "config.json") or {}).get("sample") or {}).get("edit_guidance") or 0.0)
    for key, (value, cmd, name) in figures_from_results(results, default_w).items():
        stored["figures"][key] = {"value": value, "command": cmd, "result_file": name, "measured": today}
    stored["figures"] = dict(sorted(stored["figures"].items()))
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(stored, indent=1) + "\n")
    tmp.replace(path)
    return stored


# ------------------------------------------------------------------------------ figures -> MODEL_CARD.md
def card(bundle: Path, measured: dict) -> str:
    cfg, summ = _load(bundle / "config.json"), _load(bundle / "train_summary.json")
    fig = {k: v["value"] for k, v in measured["figures"].items()}
    cmd = {k: v["command"] for k, v in measured["figures"].items()}
    hours = _training_hours(bundle / "train_log.csv")
    import torch

    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    hardware = measured.get("hardware") or f"{os.cpu_count()} CPU cores ({gpu}), torch {torch.__version__}"
    u, p, t, s = cfg["unet"], cfg["prototypes"], cfg["train"], cfg["sample"]
    out = ["# Model card: `pretrained:fashion-mnist`", "",
           "Made by `scripts/train_pretrained.sh` (training) and `scripts/measure_pretrained.sh` (every figure "
           "below); this card by `python scripts/model_card.py` from `measured.json`, where each figure is stored "
           "with the command and result file that made it.", "",
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
           f"{s['ddim_steps']} DDIM steps; `patronus edit` decodes with edit guidance w = "
           f"{s.get('edit_guidance', 0):g} (eps(s') + w (eps(s') - eps(s))); measured figures are unguided unless "
           "named.", "",
           "## Measured", ""]

    def ci(key):
        v = fig.get(key)
        return f" [{v[0]:.3f}, {v[1]:.3f}]" if v else ""

    if "edits.median_rise" in fig:
        out.append(f"- Edits, the decoder's own response (`{cmd['edits.median_rise']}`, w = 0, {fig['edits.steps']} "
                   f"steps, {fig['edits.n_images']} fresh test images, own-max target, true medians with 95 % "
                   f"bootstrap intervals over images): median rise **{fig['edits.median_rise']:.3f}**"
                   f"{ci('edits.median_rise_ci95')} of the requested change, median off-target "
                   f"**{fig['edits.median_off_target']:.3f}**{ci('edits.median_off_target_ci95')}, leak per rise "
                   f"{fig['edits.leak_per_rise']:.3f}{ci('edits.leak_per_rise_ci95')}; "
                   f"{fig['edits.n_prototypes_below_0.2']} of {fig['edits.n_prototypes']} prototypes rise by less than "
                   f"0.2; locality {fig['edits.median_locality']:.2f}.")
        if "edits.median_rise_global_max" in fig:
            out.append(f"  To the paper's global max(s_X): rise {fig['edits.median_rise_global_max']:.3f}, off-target "
                       f"{fig['edits.median_off_target_global_max']:.3f}; lowered to own min: rise "
                       f"{fig['edits.median_rise_lower']:.3f}.")
        if "edits.amplified.median_rise" in fig:
            w = fig["edits.amplified.edit_guidance"]
            out.append(f"  Amplified (edit guidance w = {w:g}, an effective request of {1 + w:g}x): rise "
                       f"{fig['edits.amplified.median_rise']:.3f} ({fig['edits.amplified.median_rise_per_effective_request']:.3f} "
                       f"per effective request), off-target {fig['edits.amplified.median_off_target']:.3f}, leak per "
                       f"rise {fig['edits.amplified.leak_per_rise']:.3f}.")
        if "edits.realism.kid_edited" in fig:
            out.append(f"  Realism (KID x 1e3, matched N): edited {1e3 * fig['edits.realism.kid_edited']:.2f} "
                       f"(range {1e3 * fig['edits.realism.kid_edited_min']:.2f} ... "
                       f"{1e3 * fig['edits.realism.kid_edited_max']:.2f}), reconstructions "
                       f"{1e3 * fig['edits.realism.kid_reconstruction']:.2f}.")
    if "steerability.median" in fig:
        per = ", ".join(f"{n} {v:.2f}" for n, v, _ in fig["steerability.per_class"] if v is not None)
        out.append(f"- Steerability by the independent judge (`{cmd['steerability.median']}`: a class's top "
                   f"{fig['steerability.top_k']} prototypes raised to their own max on images the judge reads as "
                   f"another class, unguided): median over classes **{fig['steerability.median']:.3f}**, pooled "
                   f"{fig['steerability.pooled']:.3f} +- {fig['steerability.pooled_standard_error']:.3f} "
                   f"({fig['steerability.n_steered']} of {fig['steerability.n_edits']}); per class: {per}.")
    if "agreement.value" in fig:
        se = fig.get("agreement.standard_error")
        out.append(f"- Class agreement of generations from s (`{cmd['agreement.value']}`, independent judge at "
                   f"{fig['agreement.judge_test_accuracy']:.3f} on real test images): **{fig['agreement.value']:.3f}**"
                   + (f" +- {se:.3f} (standard error over images and the shared noise columns)" if se else "")
                   + f" (chance 0.1); same s other noise {fig['agreement.same_s_other_noise']} grey levels apart, "
                   f"other s same noise {fig['agreement.other_s_same_noise']}.")
        if "agreement.judge_on_sources" in fig:
            out.append(f"  The judge is right on {fig['agreement.judge_on_sources']:.3f} of the source images "
                       f"themselves; agreement with its reading of each source {fig['agreement.with_judged_source']:.3f}.")
    if "agreement.seed0.value" in fig:
        out.append(f"- Class agreement at image seed 0 (`{cmd['agreement.seed0.value']}`, standard error over images "
                   f"only): {fig['agreement.seed0.value']:.3f} +- {fig['agreement.seed0.standard_error_images_only']:.3f}; "
                   f"the judge is right on {fig['agreement.seed0.judge_on_sources']:.3f} of those sources.")
    if "probe.class_accuracy" in fig:
        out.append(f"- Linear-probe class accuracy on s (`{cmd['probe.class_accuracy']}`): "
                   f"**{fig['probe.class_accuracy']:.3f} +- {fig['probe.class_accuracy_std']:.3f}**.")
    if "s_use.gain" in fig:
        out.append(f"- The decoder's use of s (held-out loss lower with the image's own s): "
                   f"{100 * fig['s_use.gain']:.1f} %.")
    for key, what in (("conditional", "FID, conditional"), ("unconditional", "FID, unconditional"),
                      ("real_sources", "FID of real images, the conditional mode's own source images (the floor of "
                                       "conditional FID)"),
                      ("real_train", "FID of real images, training images (the floor of unconditional FID)")):
        if f"fid.{key}.protocol" in fig:
            out.append(f"- {what} (`{cmd[f'fid.{key}']}`): `{fig[f'fid.{key}.protocol']}`")
    rec = sorted((int(k.rsplit(".", 1)[1]), v) for k, v in fig.items() if k.startswith("reconstruct.psnr_db."))
    if rec:
        out.append("- Reconstruction through DDIM inversion and decoding (`patronus reconstruct --n 16`): PSNR "
                   + " / ".join(f"{v:.1f}" for _, v in rec) + " dB at " + " / ".join(str(k) for k, _ in rec)
                   + " steps.")
    checks = (_load(bundle / "prior" / "prior.json") or {}).get("checks") or {}
    if "frechet_s" in checks:
        f, rng = checks["frechet_s"], checks.get("range", {})
        out.append(f"- Prior over s (`patronus train-prior`, shipped in `prior/`): Frechet distance in s-space "
                   + ", ".join(f"{k} {v:g}" for k, v in f.items())
                   + (f"; {100 * rng['fraction_outside']:.2f} % of sampled entries outside the training range."
                      if "fraction_outside" in rng else "."))
    dates = sorted({(v["measured"], v.get("result_file", "")) for v in measured["figures"].values()})
    out += ["", "## Where each figure comes from", "",
            "Each figure above is stored in `measured.json` with its command, result file and date; measured on: "
            + ", ".join(sorted({d for d, _ in dates})) + "."]
    return "\n".join(out) + "\n"


def main(argv: list[str]) -> int:
    results = Path(argv[0]) if argv else ROOT / "results" / "pretrained"
    bundle = Path(argv[1]) if len(argv) > 1 else ROOT / "src" / "patronus_diffusion" / "pretrained" / "fashion-mnist"
    measured = update_measured(results, bundle)
    text = card(bundle, measured)
    tmp = bundle / "MODEL_CARD.md.tmp"
    tmp.write_text(text)
    tmp.replace(bundle / "MODEL_CARD.md")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
