"""The results of the shortcut diagnosis (:func:`~.shortcut.diagnose`) and of the scans over attribute pairs
(:func:`~.scan.scan_shared`, :func:`~.scan.scan_pairs`), after the convention of :mod:`.results`: their files,
their printout, their figure.

The diagnosis figure is the paper's: direction A's first images, x0 | reconstruction | +A with the box of A's top
prototype | its patch | +B | patch | the null edit, titled with the probe probabilities of the attributes as
named. The boxes are found when the result is made (:func:`figure_data`), so the result draws without the model.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from ..utils.io import write_json, write_text
from .figures import figure_image, new_figure, save_figure
from .results import ShowsFigure, one_line
from .tables import write_csv
from .verdicts import CLAIMS, ENTANGLEMENT

FIGURE_ROWS = 4


def figure_data(pat, report: dict, first: dict, signs: tuple[int, int], rows: int = FIGURE_ROWS) -> dict:
    """What the figure draws from the first seed's direction A (``first``: :func:`~.shortcut.direction_effects`):
    its first ``rows`` images of every column, the probe probabilities of the attributes as named (not:X reads
    1 - p(X)), and the best-patch box of each marked prototype (A's top one on +A, B's on +B, the null edit's on the
    null edit), found with the model ``pat``."""
    imgs = first["images"]
    n = min(rows, len(imgs["x0"]))
    marks = {"own": report["prototypes"]["edited_a"][0], "also": report["prototypes"]["edited_b"][0],
             "null": report["null_edit"]["prototypes"][0]}

    def named(p):
        p = np.asarray(p)[:n]
        return np.stack([p[:, k] if signs[k] > 0 else 1 - p[:, k] for k in (0, 1)], 1)

    def boxes(x: torch.Tensor, proto: int) -> list[tuple[int, int, int, int]]:
        loc = pat.encode(x).location[:, proto]
        return [tuple(pat.model.prototypes.box(int(h), int(w))) for h, w in loc.tolist()]

    return {"images": {k: v[:n] for k, v in imgs.items()}, "marks": {k: j for k, j in marks.items() if k in imgs},
            "boxes": {k: boxes(imgs[k][:n], j) for k, j in marks.items() if k in imgs},
            "probs": {"x0": named(first["p_orig"]), "rec": named(first["p_rec"]),
                      **{k: named(p) for k, p in first["p"].items()}}}


@dataclass(repr=False)
class DiagnosisResult(ShowsFigure):
    """One diagnosis of a pair (A, B): ``report`` holds every number (what diagnosis.json holds, plus the
    per-image effects of effects.csv), ``figure_rows`` what the figure draws (:func:`figure_data`)."""

    report: dict
    figure_rows: dict = field(default_factory=dict)

    def to_json(self) -> dict:
        """diagnosis.json: the report without the per-image effects."""
        return {k: v for k, v in self.report.items() if k != "per_image"}

    def __repr__(self) -> str:
        r = self.report
        if r["deciding_direction"]:
            lo, hi = r["ci95"]
            measured = f"score {r['score']:+.2f} [{lo:+.2f}, {hi:+.2f}] ({r['deciding_direction']})"
        else:
            measured = "no direction tested"
        return one_line(f"DiagnosisResult({r['a']!r} vs {r['b']!r}: {r['verdict']}, {measured}; "
                        f"{r['n_images_per_seed']} images x {r['seeds']} seeds, w = {r['edit_guidance']:g})")

    def summary(self) -> str:
        """The verdict and why, every direction's leak, null leak and score, the edits' effects and the probe's
        AUROC (what `diagnose` prints)."""
        r = self.report
        eff, base = r["effects"], r["intervention"]
        lo, hi = r["ci95"]
        measured = (f"score {r['score']:+.3f} [{lo:+.3f}, {hi:+.3f}], seed std {r['seed_std']:.3f}"
                    if r["deciding_direction"] else "no direction is tested")
        lines = [f"{r['verdict']} (tau = {r['threshold']:g}): {measured}; edit guidance w = {r['edit_guidance']:g}",
                 f"  because {r['reason']}"]
        for d in r["directions"].values():
            state = d["verdict"] if d["tested"] else "untested: " + "; ".join(d["untested_because"])
            lines.append(f"  {d['edited']} -> {d['other']}: leak {d['leak']:+.3f} {_ci(d['leak_ci95'])}, null edit "
                         f"{d['null_leak']:+.3f} {_ci(d['null_ci95'])}, score {d['score']:+.3f} {_ci(d['ci95'])}: "
                         f"{state}")
        lines += [f"  raise {base['a']} (prototypes {r['prototypes']['edited_a']}): d{base['a']} {eff['dA_A']:+.3f}, "
                  f"d{base['b']} {eff['dB_A']:+.3f}; null edit (prototypes {r['null_edit']['prototypes']}): "
                  f"d{base['b']} {eff['dB_0A']:+.3f}",
                  f"  raise {base['b']} (prototypes {r['prototypes']['edited_b']}): d{base['b']} {eff['dB_B']:+.3f}, "
                  f"d{base['a']} {eff['dA_B']:+.3f}; null edit: d{base['a']} {eff['dA_0B']:+.3f}",
                  f"  probe test AUROC (lowest over seeds): {r['probe_test_auroc_min']} "
                  f"(needs >= {r['min_probe_auroc']:g}); a direction is tested only if its edit moves its own "
                  f"attribute by >= {r.get('min_own_effect', 0.1):g}"]
        return "\n".join(lines)

    def figure_title(self) -> str:
        """The figure's title: verdict, tau, score with its interval and deciding direction, the null leak, and the
        settings the edits were decoded with (edit guidance, images, seeds)."""
        r = self.report
        lo, hi = r["ci95"]
        head = f"{r['a']} vs {r['b']}: {r['verdict']} (tau = +-{r['threshold']:g})"
        key = r.get("deciding_direction_key")
        if key:
            d = r["directions"][key]
            head += (f"; score {r['score']:+.2f} [{lo:+.2f}, {hi:+.2f}] ({r['deciding_direction']}: leak "
                     f"{d['leak']:+.2f}, null edit {d['null_leak']:+.2f}, probe cross-talk "
                     f"{d['probe_crosstalk']:+.2f})")
        else:
            head += "; no direction tested"
        return (f"{head}\nedit guidance w = {r['edit_guidance']:g}, probe AUROC >= {r['min_probe_auroc']:g} "
                f"(lowest: {r['probe_test_auroc_min']['a']:.2f}, {r['probe_test_auroc_min']['b']:.2f}), "
                f"{r['n_images_per_seed']} images x {r['seeds']} seeds, {r['steps']} steps")

    def figure(self):
        """diagnosis.png (module docstring)."""
        from matplotlib.patches import Rectangle

        data, base = self.figure_rows, self.report["intervention"]
        imgs, marks, boxes, probs = data["images"], data["marks"], data["boxes"], data["probs"]
        cols = [("x0", "x0", None), ("recon.", "rec", None), (f"+{base['a']} (p{marks['own']})", "own", "box"),
                (f"patch p{marks['own']}", "own", "patch")]
        if "also" in imgs:
            cols += [(f"+{base['b']} (p{marks['also']})", "also", "box"), (f"patch p{marks['also']}", "also", "patch")]
        cols += [(f"null edit (p{marks['null']})", "null", "box")]
        n = len(imgs["x0"])
        fig = new_figure(figsize=(1.9 * len(cols), 2.0 * n + 0.4), dpi=100)
        axes = fig.subplots(n, len(cols), squeeze=False)
        for i in range(n):
            for c, (title, key, mark) in enumerate(cols):
                ax = axes[i, c]
                img = ((imgs[key][i].clamp(-1, 1) + 1) / 2).permute(1, 2, 0).numpy()
                img = img[..., 0] if img.shape[-1] == 1 else img
                kw = {"cmap": "gray", "vmin": 0, "vmax": 1} if img.ndim == 2 else {}
                if mark == "patch":
                    x0, y0, x1, y1 = boxes[key][i]
                    ax.imshow(img[y0:y1, x0:x1], **kw)
                else:
                    ax.imshow(img, **kw)
                    if mark == "box":
                        x0, y0, x1, y1 = boxes[key][i]
                        ax.add_patch(Rectangle((x0 - 0.5, y0 - 0.5), x1 - x0, y1 - y0, fill=False, edgecolor="red",
                                               linewidth=2))
                label = f"pA={probs[key][i, 0]:.2f} pB={probs[key][i, 1]:.2f}" if mark != "patch" else ""
                ax.set_title(f"{title}\n{label}" if i == 0 else label, fontsize=7)
                ax.axis("off")
        fig.suptitle(self.figure_title(), fontsize=8)
        fig.tight_layout()
        return fig

    def to_pil(self):
        """diagnosis.png as a PIL image."""
        return figure_image(self.figure(), dpi=100)

    def write(self, out: str | Path) -> dict[str, Path]:
        """diagnosis.json, effects.csv (per image), rankings.csv, diagnosis.png into ``out``."""
        out, r = Path(out), self.report
        files = {"diagnosis.json": out / "diagnosis.json", "effects.csv": out / "effects.csv",
                 "rankings.csv": out / "rankings.csv", "diagnosis.png": out / "diagnosis.png"}
        per, base = r["per_image"], r["intervention"]
        write_json(files["diagnosis.json"], self.to_json())
        write_text(files["effects.csv"], "direction,unit,d_own,d_other,d_other_null_edit\n" + "".join(
            f"{name},{i},{per[own][i]:.5f},{per[other][i]:.5f},{per[null][i]:.5f}\n"
            for name, own, other, null in ((f"{base['a']}->{base['b']}", "dA_A", "dB_A", "dB_0A"),
                                           (f"{base['b']}->{base['a']}", "dB_B", "dA_B", "dA_0B"))
            for i in range(len(per[own]))))
        write_text(files["rankings.csv"], "attribute,rank,prototype,auroc\n" + "".join(
            f"{name},{k},{d['prototype']},{d['auroc']:.4f}\n" for name, key in ((r["a"], "a"), (r["b"], "b"))
            for k, d in enumerate(r["prototypes"][key])))
        save_figure(self.figure(), files["diagnosis.png"], dpi=100)
        return files


def _ci(pair) -> str:
    return f"[{pair[0]:+.3f}, {pair[1]:+.3f}]"


@dataclass(repr=False)
class ScanResult(ShowsFigure):
    """Every pair of a set of attributes, ranked by the size of its coupling: ``report`` is what scan.json holds
    (``mode`` "shared" or "pairwise", ``pairs`` strongest first, with the shared scan one row per ordered pair in
    ``directions`` and its cost)."""

    report: dict

    @property
    def pairs(self) -> list[dict]:
        return self.report["pairs"]

    def to_json(self) -> dict:
        return self.report

    def __repr__(self) -> str:
        r, pairs = self.report, self.pairs
        counts = {}
        for p in pairs:
            counts[p["verdict"]] = counts.get(p["verdict"], 0) + 1
        top = (f"; top {pairs[0]['a']}/{pairs[0]['b']} {pairs[0]['verdict']}"
               + ("" if pairs[0]["score"] is None else f" {pairs[0]['score']:+.2f}")) if pairs else ""
        return one_line(f"ScanResult({r['mode']}, {len(pairs)} pair(s): "
                        + ", ".join(f"{n} {v}" for v, n in counts.items()) + f"{top})")

    def summary(self) -> str:
        """One line per pair (strongest coupling first), and the shared scan's cost (what `diagnose --scan`
        prints)."""
        lines = []
        for r in self.pairs:
            if r["score"] is None:
                lines.append(f"{r['a']:>16} / {r['b']:<16} skipped: {r['reason']}")
                continue
            lines.append(f"{r['a']:>16} / {r['b']:<16} score {r['score']:+.3f} [{r['ci95'][0]:+.3f}, "
                         f"{r['ci95'][1]:+.3f}] {r['verdict']}")
        if self.report["mode"] == "shared":
            c = self.report["cost"]
            lines.append(f"cost: {c['inverted_images']} images inverted, {c['edit_passes']} edit passes, "
                         f"{c['probes']} probe(s), {c['unet_image_evaluations']} UNet image evaluations")
        return "\n".join(lines)

    def figure(self):
        """scan.png: every measured pair's score with its 95 % interval, strongest first, and +-tau."""
        rows = [p for p in self.pairs if p["score"] is not None and np.isfinite(p["score"])]
        tau = self.report.get("threshold")
        fig = new_figure(figsize=(6.5, 0.35 * max(len(rows), 1) + 1.4), dpi=100)
        ax = fig.subplots()
        ys = np.arange(len(rows))[::-1]
        for y, p in zip(ys, rows):
            lo, hi = p["ci95"]
            color = ("tab:red" if p["verdict"] in CLAIMS else "tab:orange" if p["verdict"] == ENTANGLEMENT
                     else "tab:blue")
            ax.errorbar([p["score"]], [y], xerr=[[p["score"] - lo], [hi - p["score"]]], fmt="o", capsize=3,
                        color=color)
        ax.set_yticks(ys, [f"{p['a']} / {p['b']}: {p['verdict']}" for p in rows], fontsize=7)
        if not rows:
            ax.text(0.5, 0.5, "no pair has a measured score (see scan.json for why)", ha="center", va="center",
                    transform=ax.transAxes, fontsize=8)
        ax.axvline(0.0, color="k", linewidth=0.8)
        if tau:
            for v in (-tau, tau):
                ax.axvline(v, color="grey", linewidth=0.8, linestyle=":")
        ax.set_xlabel("score (the leak beyond its references), 95 % interval")
        ax.set_title(f"{self.report['mode']} scan, {len(self.pairs)} pair(s); red: a coupling is claimed; orange: "
                     f"one the training labels lack (entanglement)"
                     + (f"; dotted: +-tau = {tau:g}" if tau else ""), fontsize=8)
        ax.grid(alpha=0.3, axis="x")
        fig.tight_layout()
        return fig

    def to_pil(self):
        """scan.png as a PIL image."""
        return figure_image(self.figure(), dpi=100)

    def write(self, out: str | Path) -> dict[str, Path]:
        """scan.json, scan.csv (one row per pair) and, for the shared scan, scan_directions.csv (one row per
        ordered pair)."""
        out = Path(out)
        write_json(out / "scan.json", self.report)
        num = lambda v, fmt=".4f": "" if v is None else format(v, fmt)  # noqa: E731
        files = {"ranking": out / "scan.json", "table": write_csv(
            out / "scan.csv", ["a", "b", "score", "ci_low", "ci_high", "verdict", "deciding_direction",
                               "train_label_phi"],
            [[r["a"], r["b"], num(r["score"]), num(r["ci95"][0]), num(r["ci95"][1]), r["verdict"],
              r["deciding_direction"] or "", num((r.get("training_labels") or {}).get("phi"))]
             for r in self.pairs])}
        if self.report["mode"] == "shared":
            files["directions"] = write_csv(
                out / "scan_directions.csv",
                ["edited", "other", "score", "ci_low", "ci_high", "verdict", "leak", "null_leak", "probe_crosstalk",
                 "own_effect", "edited_images", "edited_with_other", "untested_because"],
                [[d["a"], d["b"], num(d["score"]), num(d["ci95"][0]), num(d["ci95"][1]), d["verdict"], num(d["leak"]),
                  num(d["null_leak"]), num(d["probe_crosstalk"]), num(d["own_effect"]), d["edited_images"],
                  d["edited_with_other"], "; ".join(d["untested_because"])] for d in self.report["directions"]])
        return files
