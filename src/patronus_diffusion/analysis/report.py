"""A self-contained HTML report of a Patronus model: a model card, a card per prototype and its quality.

Everything is computed through the analyses that already exist, with a bounded budget, and drawn into ONE
``index.html`` that opens offline: pictures are inline ``data:`` PNGs, the data is inline JSON, and there is no
external script, font or stylesheet. ``report.json`` beside it holds the numbers the page was built from.

Per prototype J (the gallery, :func:`~.explain.build_gallery`, and the edit benchmark,
:func:`~.evaluate_edits.evaluate_edits`, on the same reference set X):

* the nearest training patches (ProtoPNet's view of what J means), with their distances;
* the histogram of s_J over a seeded set of test images, with quantiles and how often J is an image's top one;
* an edit strip: s_J raised from the reconstruction's value towards J's own plausible maximum at several
  strengths, decoded from the inverted x_T, with the measured rise (1 = the requested change happened);
* its emergence ("when") curve: the same edit (s_J at its own maximum) decoded with the predicted clean image
  re-encoded at every sampling step; the curve is the mean gain of s_J over the unedited decode along t, and
  t_half the step where it first reaches half its final value (:mod:`.when`);
* its best attribute/class AUROC (when the data has labels), and flags: dead, or redundant with another prototype.

:class:`ModelReport` follows the result convention (:mod:`.results`): a one-line repr, ``summary()``, ``write(out)``
(index.html, report.json, report.png) and ``to_pil()``, the summary panel and the first prototype cards
(:mod:`.report_figure`).
"""

from __future__ import annotations

import base64
import csv
import html
import io
import json
import platform
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from ..edit import Edit, EditPlan, fresh_indices, reference_indices, run_plan
from ..evaluation.stats import true_median
from ..utils.errors import UsageError
from ..utils.images import png_uri
from ..utils.io import write_json, write_text
from .evaluate_edits import EvaluationPlan, evaluate_edits
from .explain import build_gallery, crop_patches, encode_subset, seeded_indices
from .figures import new_figure
from .quality import run_quality
from .report_results import check_folders, earlier_html, earlier_results
from .report_figure import is_flagged, report_figure
from .results import ShowsFigure, one_line
from .when import emergence_of, half_rise_timestep

BUDGETS = {
    "quick": {"n_images": 2, "patch_images": 2000, "stats_images": 500, "quality_limit": 2000, "steps": 20,
              "strengths": [0.5, 1.0], "folds": 3},
    "full": {"n_images": 8, "patch_images": 10000, "stats_images": 2000, "quality_limit": 10000, "steps": 50,
             "strengths": [0.25, 0.5, 1.0, 1.5], "folds": 5},
}


# ------------------------------------------------------------------------------ pictures as data URIs
def figure_uri(draw, size=(3.2, 1.6)) -> str:
    """A small matplotlib figure drawn by ``draw(ax)`` as a PNG data URI."""
    fig = new_figure(figsize=size, dpi=100)  # the object API: the process's matplotlib backend stays as it is
    ax = fig.subplots()
    draw(ax)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


# ------------------------------------------------------------------------------ the report
@dataclass(repr=False)
class ModelReport(ShowsFigure):
    """The model card, one record per prototype (numbers, and its pictures as ``img_*`` data URIs), the quality
    numbers and how the report was made (:func:`build_report`)."""

    card: dict
    prototypes: list[dict]
    quality: dict | None
    provenance: dict
    pictures: dict = field(default_factory=dict)  # data URIs, not written to report.json

    def flagged(self) -> list[int]:
        """Prototypes that are dead or redundant with another one."""
        return [p["prototype"] for p in self.prototypes if is_flagged(p)]

    def __repr__(self) -> str:
        b, rec = self.card.get("edit_benchmark", {}), self.card.get("reconstruction", {})
        return one_line(f"ModelReport({Path(str(self.card.get('run'))).name}: {len(self.prototypes)} prototype cards, "
                        f"median rise {b.get('median_rise')}, off-target {b.get('median_off_target')}, "
                        f"reconstruction {rec.get('psnr_db')} dB, {len(self.flagged())} flagged)")

    def summary(self) -> str:
        """The headline (what ``patronus report`` prints), the flagged prototypes and the probes."""
        b, rec = self.card["edit_benchmark"], self.card["reconstruction"]
        lines = [f"{len(self.prototypes)} prototype cards; median rise {b['median_rise']}, off-target "
                 f"{b['median_off_target']}; reconstruction {rec['psnr_db']} dB at {rec['steps']} steps; "
                 f"{self.provenance['timings']['total_seconds']} s"]
        flagged = self.flagged()
        lines.append("flagged (dead or redundant): " + (", ".join(f"p{j}" for j in flagged) if flagged else "none"))
        probes = (self.quality or {}).get("probes", {})
        if probes:
            lines.append("probes on s: " + ", ".join(f"{k} {v['mean']:.3f}" for k, v in probes.items()))
        return "\n".join(lines)

    def to_json(self) -> dict:
        strip = lambda d: {k: v for k, v in d.items() if not k.startswith("img_")}  # noqa: E731
        return {"card": self.card, "prototypes": [strip(p) for p in self.prototypes], "quality": self.quality,
                "provenance": self.provenance}

    def figure(self):
        """report.png: the summary panel over every prototype and the first prototype cards."""
        return report_figure(self)

    def to_pil(self):
        from .figures import figure_image

        return figure_image(self.figure(), dpi=100)

    def write(self, out: str | Path) -> dict[str, Path]:
        """index.html (the page), report.json (its numbers) and report.png (:meth:`figure`) into ``out``."""
        from .figures import save_figure

        out = Path(out)
        write_json(out / "report.json", self.to_json())
        write_text(out / "index.html", render_html(self))
        save_figure(self.figure(), out / "report.png", dpi=100)
        return {"page": out / "index.html", "data": out / "report.json", "figure": out / "report.png"}


def _train_curve(run_dir: Path):
    path = run_dir / "train_log.csv"
    if not path.exists():
        return None, None
    rows = list(csv.DictReader(open(path)))
    steps = [int(r["step"]) for r in rows if r.get("loss")]
    loss = [float(r["loss"]) for r in rows if r.get("loss")]
    if not steps:
        return None, None

    def draw(ax):
        ax.plot(steps, loss, linewidth=1)
        ax.set_xlabel("step", fontsize=7)
        ax.set_ylabel("training loss", fontsize=7)
        ax.set_yscale("log")
        ax.tick_params(labelsize=6)
        ax.grid(alpha=0.3)

    return figure_uri(draw, (4.0, 1.8)), {"steps": steps[-1], "last_loss": loss[-1], "rows": len(steps)}


def build_report(pat, quick: bool = False, seed: int = 0, progress: bool = True,
                 results: list[str | Path] | None = None, budget: dict | None = None) -> ModelReport:
    """Compute every section with the ``quick`` or ``full`` budget of :data:`BUDGETS` (``budget``: entries of it
    to change, e.g. ``{"steps": 2}``)."""
    check_folders(results)  # a --results path that is not there: said before anything is computed
    t_all = time.time()
    unknown = sorted(set(budget or {}) - set(BUDGETS["full"]))
    if unknown:
        raise UsageError(f"unknown budget entries {unknown}; choose from {', '.join(BUDGETS['full'])}")
    budget = {**BUDGETS["quick" if quick else "full"], **(budget or {})}
    timings = {}
    t0 = time.time()
    gallery = build_gallery(pat, seed=seed, steps=budget["steps"], progress=progress, n_images=budget["n_images"],
                            patch_images=budget["patch_images"], stats_images=budget["stats_images"])
    timings["gallery_seconds"] = round(time.time() - t0, 1)
    ds = pat.dataset("test")
    stats_idx = seeded_indices(len(ds), budget["stats_images"], seed + 1)
    s_stats, _, _ = encode_subset(pat, "test", stats_idx)  # the gallery's statistics set: a cache hit
    # the benchmark's images: as many as the gallery's, drawn apart from the reference set X (the gallery shows X's)
    ref = gallery.reference
    bench_idx = fresh_indices(len(ds), gallery.result.x0.shape[0], seed,
                              exclude=reference_indices(len(ds), ref.n, ref.seed))
    x = ds.get_batch(bench_idx)
    t0 = time.time()
    ev = evaluate_edits(pat, EvaluationPlan(images=x, reference=ref, strengths=budget["strengths"],
                                            names=[f"test:{i}" for i in bench_idx], steps=budget["steps"], seed=seed,
                                            kinds=("own_max", "own_min"), edit_guidance=0.0), progress)
    timings["edit_benchmark_seconds"] = round(time.time() - t0, 1)
    t0 = time.time()
    own_max = {p["prototype"]: p["targets"]["own_max"] for p in ev.per_prototype()}
    em = emergence_of(run_plan(pat, EditPlan(
        images=x, edits=[Edit.set(j, float(own_max[j]), label=f"{j}=own max") for j in gallery.prototypes],
        reference=gallery.reference, reconstruction=True, trace=True, steps=budget["steps"]), progress))
    timings["emergence_seconds"] = round(time.time() - t0, 1)
    t0 = time.time()
    q = run_quality(pat, limit=budget["quality_limit"], folds=budget["folds"], seed=seed, progress=progress)
    timings["quality_seconds"] = round(time.time() - t0, 1)
    quality, matrix = q.report, q.matrix
    names = quality["tad_targets"]
    redundant: dict[int, list[int]] = {}
    for i, j, _ in quality["redundancy"]["s_correlated_pairs"] + quality["redundancy"]["cosine_pairs"]:
        redundant.setdefault(int(i), []).append(int(j))
        redundant.setdefault(int(j), []).append(int(i))
    dead = {int(j) for v in quality["dead"].values() if isinstance(v, list) for j in v}
    per_proto = {p["prototype"]: p for p in ev.per_prototype()}
    records = []
    for r, j in enumerate(gallery.prototypes):
        near = gallery.near
        patches = crop_patches(gallery.near_images[r], near.boxes[r]) if near.index.shape[1] else None
        a = ev.prototypes.index(j)
        strip = [ev.result.x0[0], ev.base.reconstruction[0]] + [ev.result.images[ev.edit_index(a, 0, s), 0]
                                                               for s in range(len(ev.strengths))]
        vals = s_stats[:, j].numpy()
        best_target = None
        if len(names):
            col = np.maximum(matrix[:, j], 1 - matrix[:, j])
            if np.isfinite(col).any():
                t = int(np.nanargmax(col))
                best_target = {"target": names[t], "auroc": round(float(matrix[t, j]), 4)}
        rec = gallery.record(r)
        p = per_proto[j]
        gain = em.gain_vs_unedited(em.prototypes.index(j)).mean(1).numpy()
        t_half = half_rise_timestep(em.t, gain)
        records.append({
            "prototype": j, "s_mean": rec["s_mean"], "s_quantiles": rec["s_quantiles"],
            "top_fraction": rec["top_fraction"], "own_max": p["targets"]["own_max"],
            "rise": p["rise_median"], "rise_lower": p.get("rise_lower_median"),
            "off_target": p["off_target_median"], "locality": p["locality_median"],
            "rise_by_strength": {str(ev.strengths[s]): _median(ev.rise[a, 0, s]) for s in range(len(ev.strengths))},
            "nearest": [{"source": rec["nearest_patches"][m]["source"], "distance": rec["nearest_patches"][m]["distance"],
                         "label": rec["nearest_patches"][m]["label"]} for m in range(len(rec["nearest_patches"]))],
            "best_auroc": best_target, "dead": j in dead, "redundant_with": sorted(set(redundant.get(j, []))),
            "img_patches": png_uri(patches, 4) if patches is not None else "",
            "img_strip": png_uri(torch.stack(strip).clamp(-1, 1), 3),
            "emergence": {"t_half": t_half, "final_gain": round(float(gain[-1]), 5),
                          "requested_change": round(float((em.targets[em.prototypes.index(j)] - em.s_x0[:, j]).mean()), 5)},
            "img_hist": figure_uri(lambda ax, v=vals, j=j: _hist(ax, v, j), (2.6, 1.4)),
            "img_when": figure_uri(lambda ax, g=gain, th=t_half: _when(ax, em.t, g, th), (2.6, 1.4)),
        })
    curve, log = _train_curve(Path(pat.run_dir)) if pat.run_dir is not None else (None, None)
    info = pat.info()
    rec_psnr = float(-10 * torch.log10(((ev.base.reconstruction - x) / 2).pow(2).flatten(1).mean(1)).mean())
    card = {
        "run": str(pat.run_dir), "preset": pat.config.preset, "dataset": pat.config.data.dataset,
        "image": f"{pat.config.data.channels} x {pat.config.data.image_size} x {pat.config.data.image_size}",
        "prototypes": pat.num_prototypes, "parameters": sum(q.numel() for q in pat.model.parameters()),
        "conditioning": f"cond_norm={pat.config.unet.cond_norm}, cond_mode={getattr(pat.config.unet, 'cond_mode', 'add')}",
        "images_seen": info.get("images_seen"), "train_steps": info.get("step"),
        "training_device": info.get("device"), "training": log,
        "reconstruction": {"psnr_db": round(rec_psnr, 2), "steps": ev.result.steps, "images": len(x)},
        "max_s_X": round(gallery.reference.max, 5),
        "edit_benchmark": {k: v for k, v in ev.to_json().items() if k.startswith("median_")},
        "earlier_results": earlier_results(results or []),
    }
    provenance = {"command": "patronus report" + (" --quick" if quick else ""), "made": time.strftime("%Y-%m-%d %H:%M"),
                  "budget": budget, "timings": {**timings, "total_seconds": round(time.time() - t_all, 1)},
                  "host": {"python": platform.python_version(), "torch": torch.__version__,
                           "threads": torch.get_num_threads(), "machine": platform.machine()},
                  "reference": gallery.reference.to_json(), "edit_images": gallery.sources,
                  "emergence": "s_J := its own max, traced over the same images and steps as the edit strip"}
    pictures = {"train_curve": curve} if curve else {}
    return ModelReport(card=card, prototypes=records, quality=_quality_json(quality), provenance=provenance,
                       pictures=pictures)


def _median(t: torch.Tensor):
    """True median of the finite entries (None when there is none)."""
    return true_median(t[torch.isfinite(t)], 4)


def _when(ax, t: np.ndarray, gain: np.ndarray, t_half: int | None) -> None:
    ax.plot(t, gain, color="#2f6fdf", linewidth=1.2)
    ax.axhline(0, color="#999", linewidth=0.6)
    if t_half is not None:
        ax.axvline(t_half, color="#c0392b", linewidth=0.8, linestyle=":")
    ax.set_xlim(float(t.max()), float(t.min()))  # generation runs from t = T (left) to 0 (right)
    ax.set_xlabel("t", fontsize=7)
    ax.set_ylabel("gain of s_J", fontsize=7)
    ax.tick_params(labelsize=6)


def _hist(ax, vals: np.ndarray, j: int) -> None:
    ax.hist(vals, bins=30, color="#4a6fa5")
    for q in (0.5, 0.9, 0.99):
        ax.axvline(float(np.quantile(vals, q)), color="#c0392b", linewidth=0.8, linestyle=":")
    ax.set_title(f"s_{j} over {len(vals)} test images (dotted: q0.5, q0.9, q0.99)", fontsize=6)
    ax.tick_params(labelsize=5)


def _quality_json(q: dict) -> dict:
    return {"probes": q["probes"], "tad": q["tad"], "attributes_captured": q["attributes_captured"],
            "cosine_pairs": len(q["redundancy"]["cosine_pairs"]),
            "s_correlated_pairs": len(q["redundancy"]["s_correlated_pairs"]),
            "dead": {k: v for k, v in q["dead"].items() if isinstance(v, list)}, "n_images": q["n_images"],
            "decoder_use_of_s": q.get("s_use")}


# ------------------------------------------------------------------------------ HTML
CSS = """body{font-family:system-ui,sans-serif;margin:1.5em;color:#222;background:#fafafa}
h1{font-size:1.4em}h2{font-size:1.15em;margin-top:1.6em;border-bottom:1px solid #ccc}
table{border-collapse:collapse;font-size:.85em}td,th{border:1px solid #ddd;padding:.25em .5em;text-align:left}
.cards{display:flex;flex-wrap:wrap;gap:.8em}.card{background:#fff;border:1px solid #ccc;border-radius:6px;
padding:.6em;width:330px;font-size:.8em}.card.flagged{border-color:#c0392b}.card h3{margin:.1em 0 .4em;font-size:1em}
.card img{max-width:100%;image-rendering:pixelated;display:block;margin:.2em 0}.flag{color:#c0392b;font-weight:bold}
.controls{margin:.6em 0;font-size:.9em}.muted{color:#777;font-size:.8em}"""

JS = """function sortCards(key){const box=document.getElementById('cards');const cards=[...box.children];
cards.sort((a,b)=>parseFloat(b.dataset[key]||-1e9)-parseFloat(a.dataset[key]||-1e9));cards.forEach(c=>box.appendChild(c));}
function filterCards(){const only=document.getElementById('flagged').checked;
for(const c of document.getElementById('cards').children){c.style.display=(!only||c.classList.contains('flagged'))?'':'none';}}"""


def _fmt(v, digits: int = 3) -> str:
    if v is None:
        return "n/a"
    if isinstance(v, float):
        return f"{v:.{digits}f}"
    return html.escape(str(v))


def _labelled(v, digits: int = 3) -> str:
    """A value as words a reader can read (HTML-escaped): a dict as "key value; ...", with a mean and std as
    "mean ± std" and other lists as comma-separated values, numbers to ``digits`` decimals; never raw JSON."""
    if isinstance(v, dict):
        parts = []
        if "mean" in v and "std" in v:
            parts.append(f"{_fmt(v['mean'], digits)} &plusmn; {_fmt(v['std'], digits)}")
            v = {k: x for k, x in v.items() if k not in ("mean", "std")}
        parts += [f"{html.escape(str(k).replace('_', ' '))} {_labelled(x, digits)}" for k, x in v.items()]
        return "; ".join(parts) or "none"
    if isinstance(v, (list, tuple)):
        return ", ".join(_labelled(x, digits) for x in v) or "none"
    return _fmt(v, digits)


def _card_html(p: dict) -> str:
    flags = []
    if p["dead"]:
        flags.append("dead")
    if p["redundant_with"]:
        flags.append("redundant with " + ", ".join(f"p{k}" for k in p["redundant_with"]))
    rise_row = ", ".join(f"x{k}: {_fmt(v, 2)}" for k, v in p["rise_by_strength"].items())
    auroc = (f"{html.escape(p['best_auroc']['target'])} {p['best_auroc']['auroc']:.3f}" if p["best_auroc"] else "n/a")
    data = " ".join(f'data-{k}="{v if v is not None else -1e9}"' for k, v in
                    (("rise", p["rise"]), ("mean", p["s_mean"]), ("top", p["top_fraction"]),
                     ("emerge", p["emergence"]["t_half"]),
                     ("auroc", p["best_auroc"]["auroc"] if p["best_auroc"] else None)))
    nearest = "; ".join(f"{html.escape(n['label'])} d={n['distance']:.3g}" for n in p["nearest"][:5])
    return (f'<div class="card{" flagged" if flags else ""}" {data} id="p{p["prototype"]}">'
            f'<h3>prototype {p["prototype"]}</h3>'
            + (f'<div class="flag">{html.escape("; ".join(flags))}</div>' if flags else "")
            + f'<div>nearest training patches</div><img alt="nearest patches of p{p["prototype"]}" '
              f'class="patches" src="{p["img_patches"]}"><div class="muted">{nearest}</div>'
            + f'<img alt="s histogram of p{p["prototype"]}" src="{p["img_hist"]}">'
            + f'<div>mean s {_fmt(p["s_mean"])}, '
              + ", ".join(f"{k} {_fmt(v)}" for k, v in p["s_quantiles"].items())
              + f', own max {_fmt(p["own_max"])}; top prototype of '
              f'{100 * p["top_fraction"]:.1f} % of images</div>'
            + f'<div>edit strip (input, reconstruction, then s_J towards its own max at {html.escape(rise_row)})</div>'
            + f'<img alt="edit strip of p{p["prototype"]}" class="strip" src="{p["img_strip"]}">'
            + f'<div>emergence: gain of s_J over the unedited decode along generation (t = T ... 0), t_half '
              f'{p["emergence"]["t_half"] if p["emergence"]["t_half"] is not None else "n/a"}</div>'
            + f'<img alt="emergence curve of p{p["prototype"]}" class="when" src="{p["img_when"]}">'
            + f'<div><b>rise {_fmt(p["rise"])}</b> (1 = as asked; lowered to its own min: {_fmt(p["rise_lower"])}), '
              f'off-target {_fmt(p["off_target"])}, '
              f'locality {_fmt(p["locality"], 2)}; best AUROC: {auroc}</div></div>')


def render_html(rep: ModelReport) -> str:
    c, q, prov = rep.card, rep.quality, rep.provenance
    rows = "".join(f"<tr><th>{html.escape(k.replace('_', ' '))}</th><td>{_labelled(v)}</td></tr>"
                   for k, v in c.items() if k not in ("earlier_results",))
    fids = "".join(f"<li>{html.escape(f['protocol_line'] or str(f['fid']))} <span class='muted'>"
                   f"({html.escape(f['file'])})</span></li>" for f in c["earlier_results"]["fid"])
    agree = "".join(f"<li><b>class agreement {a['agreement']:.3f}</b>"
                    + (f" &plusmn; {a['agreement_standard_error']:.3f}" if a.get("agreement_standard_error") else "")
                    + f" (chance {a['chance']}): generations from the s "
                    f"of {a['n_images']} test images x {a['per_image']} noises, judged by an independent classifier "
                    f"({a['judge_test_accuracy']:.3f} on real test images"
                    + (f", {a['judge_on_sources']:.3f} on these source images" if a.get("judge_on_sources") else "")
                    + ") <span class='muted'>"
                    f"({html.escape(a['file'])})</span></li>" for a in c["earlier_results"]["class_agreement"])
    diags = "".join(f"<li>{html.escape(str(d['a']))} / {html.escape(str(d['b']))}: <b>{html.escape(str(d['verdict']))}</b> "
                    f"{html.escape(str(d['reason']))}</li>" for d in c["earlier_results"]["diagnosis"])
    probes = "".join(f"<tr><td>{html.escape(k)}</td><td>{html.escape(v['metric'])}</td><td>{v['mean']:.3f} "
                     f"&plusmn; {v['std']:.3f}</td></tr>" for k, v in (q or {}).get("probes", {}).items())
    curve = (f'<img alt="training loss" src="{rep.pictures["train_curve"]}">' if "train_curve" in rep.pictures
             else "<p class='muted'>no train_log.csv in the run</p>")
    data_json = json.dumps(rep.to_json()).replace("</", "<\\/")
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Patronus report: {html.escape(c['run'])}</title>
<style>{CSS}</style></head><body>
<h1>Patronus model report</h1>
<p class="muted">made by <code>{html.escape(prov['command'])}</code> on {html.escape(prov['made'])}, in
{prov['timings']['total_seconds']} s; budget: {_labelled(prov['budget'])}.
Emergence curves: {html.escape(prov['emergence'])}.</p>
<h2>Model card</h2><table>{rows}</table>{curve}
<h3>FID / KID and class agreement from earlier result files</h3><ul>{fids + agree or "<li class='muted'>none given (pass --results DIR with `patronus fid` / `patronus evaluate` output)</li>"}</ul>
<h2>Quality</h2><p class="muted">linear probes on s ({q['n_images'] if q else 0} training images), TAD,
redundancy and dead prototypes (<code>patronus quality</code> with the report's budget)</p>
<table><tr><th>target</th><th>metric</th><th>value</th></tr>{probes}</table>
<p>TAD {_labelled(q['tad'] if q else None)}; cosine-redundant pairs {q['cosine_pairs'] if q else 'n/a'};
s-correlated pairs {q['s_correlated_pairs'] if q else 'n/a'}; dead prototypes: {_labelled(q['dead'] if q else {})};
decoder's use of s: {_labelled(q.get('decoder_use_of_s') if q else None)}</p>
<h3>Shortcut diagnosis</h3><ul>{diags or "<li class='muted'>none given (pass --results DIR with a diagnosis.json)</li>"}</ul>
{earlier_html(c["earlier_results"])}
<h2>Prototypes</h2>
<p class="muted">edits: <code>patronus evaluate-edits</code> on the images {html.escape(', '.join(prov['edit_images']))};
reference set X: {_labelled(prov['reference'])}</p>
<div class="controls">sort by <button onclick="sortCards('rise')">rise</button>
<button onclick="sortCards('mean')">mean s</button><button onclick="sortCards('top')">top fraction</button>
<button onclick="sortCards('auroc')">AUROC</button>
<button onclick="sortCards('emerge')" title="t_half, largest first: the earliest in generation">emergence</button>
<label><input type="checkbox" id="flagged" onchange="filterCards()"> flagged only</label></div>
<div class="cards" id="cards">{''.join(_card_html(p) for p in rep.prototypes)}</div>
<script type="application/json" id="report-data">{data_json}</script>
<script>{JS}</script>
</body></html>
"""


__all__ = ["BUDGETS", "ModelReport", "build_report", "render_html"]
