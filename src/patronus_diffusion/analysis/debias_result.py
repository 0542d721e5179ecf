"""The result of :func:`.debias.debias`: the generated set, its report, its figure and the files it is written to.

Written (:meth:`DebiasResult.write`): ``images/*.png`` (those not written yet), ``attributes.csv`` (the folder
dataset's format: ``file``, ``split`` = train, the judged A and B columns and the bookkeeping columns),
``debias.json``, ``debias.png`` and ``debias-state.json`` (what makes a re-run continue).
"""

from __future__ import annotations

import io
import textwrap
from dataclasses import dataclass, field
from pathlib import Path

import torch

from .debias_folder import CELLS, STATE_FILE, save_image

FIGURE_PAIRS = 8  # real sources and generated images shown per cell
ROW_KEYS = ("file", "split", "a", "b", "target_a", "target_b", "p_a", "p_b", "source", "source_a", "source_b", "seed",
            "attempt")  # a row's fields in the order of attributes.csv's columns


@dataclass
class DebiasResult:
    """The generated set: ``report`` (JSON-able), ``rows`` (one dict per image, attempt order per cell),
    ``images`` ((N, C, H, W) in [-1, 1], 8-bit exact) and ``sources`` (the real source image of each)."""

    report: dict
    rows: list[dict]
    images: torch.Tensor
    sources: torch.Tensor
    state: dict = field(default_factory=dict)

    def __repr__(self) -> str:
        r = self.report
        p = r["phi_judges"]
        ci = "" if p["ci95"] is None else f" [{p['ci95'][0]:+.2f}, {p['ci95'][1]:+.2f}]"
        v = "n/a" if p["phi"] is None else f"{p['phi']:+.3f}"
        short = "" if not r["unfilled"] else f", {len(r['unfilled'])} cell(s) UNFILLED"
        text = (f"DebiasResult({r['a'][:32]} x {r['b'][:32]}: {r['n_written']}/{r['n']} images, phi {v}{ci} by the "
                f"judges, acceptance {r['acceptance']:.2f}{short})")
        return text[:200]

    def summary(self) -> dict:
        r = self.report
        return {k: r[k] for k in ("a", "b", "n", "n_written", "complete", "unfilled", "phi_judges", "phi_check_judges",
                                  "acceptance", "cells", "judges", "fid", "mode", "rule")}

    # ------------------------------------------------------------------------- the figure
    def figure(self):
        """Per cell, up to 8 real sources (row 1) and what was generated from them (row 2), with counts."""
        from matplotlib.figure import Figure

        fig = Figure(figsize=(11, 6.2), dpi=100)
        axes = fig.subplots(2, 2)
        for ax, (a, b) in zip(axes.ravel(), CELLS):
            self._draw_cell(ax, a, b)
        fig.suptitle(_figure_title(self.report), fontsize=9)
        fig.tight_layout()
        return fig

    def _draw_cell(self, ax, a: int, b: int) -> None:
        from ..utils.images import make_grid

        cell = self.report["cells"][f"{a},{b}"]
        idx = [i for i, row in enumerate(self.rows) if (row["target_a"], row["target_b"]) == (a, b)][:FIGURE_PAIRS]
        ax.set_axis_off()
        ax.set_title(f"A={a}, B={b} (training share {cell['training_share']:.1%}): {cell['accepted']}/"
                     f"{cell['needed']} in {cell['attempts']} attempts\nrow 1: real sources, row 2: generated",
                     fontsize=8)
        if not idx:
            ax.text(0.5, 0.5, "no accepted image", ha="center", va="center", transform=ax.transAxes)
            return
        grey = self.images.shape[1] == 1
        grid = make_grid(torch.cat([self.sources[idx], self.images[idx]]), nrow=len(idx))
        ax.imshow(grid[..., 0] if grey else grid, cmap="gray" if grey else None, vmin=0, vmax=255)

    def png(self) -> bytes:
        buf = io.BytesIO()
        self.figure().savefig(buf, format="png")
        return buf.getvalue()

    def _repr_png_(self) -> bytes:
        return self.png()

    def to_pil(self):
        from PIL import Image

        return Image.open(io.BytesIO(self.png())).convert("RGB")

    # ------------------------------------------------------------------------- the files
    def csv_columns(self) -> list[str]:
        ca, cb = self.report["column_a"], self.report["column_b"]
        return ["file", "split", ca, cb, f"target_{ca}", f"target_{cb}", f"p_{ca}", f"p_{cb}", "source",
                f"source_{ca}", f"source_{cb}", "seed", "attempt"]

    def write(self, out: str | Path) -> dict[str, Path]:
        """images/*.png (those not there yet), attributes.csv, debias.json, debias.png, debias-state.json."""
        from ..utils.io import atomic_path, write_json
        from .tables import write_csv

        out = Path(out)
        files = {"attributes.csv": out / "attributes.csv", "debias.json": out / "debias.json",
                 "debias.png": out / "debias.png", "images": out / "images", "state": out / STATE_FILE}
        png = self.png()  # drawn before anything is written
        self._write_missing_images(out)
        write_csv(files["attributes.csv"], self.csv_columns(),
                  ([_csv_value(row[k]) for k in ROW_KEYS] for row in self.rows))
        write_json(files["debias.json"], self.report)
        with atomic_path(files["debias.png"]) as tmp:
            Path(tmp).write_bytes(png)
        if self.state:
            write_json(files["state"], self.state)
        return files

    def _write_missing_images(self, out: Path) -> None:
        for i, row in enumerate(self.rows):
            if not (out / row["file"]).exists():
                save_image(self.images[i], out / row["file"])


def _csv_value(v):
    return "" if v is None else f"{v:.6f}" if isinstance(v, float) else v


def _figure_title(r: dict) -> str:
    p, pc = r["phi_judges"], r["phi_check_judges"]
    line = f"phi(A, B) by the judges {_num(p['phi'])} {_ci(p['ci95'])}"
    if pc:
        line += f"; by the check judges {_num(pc['phi'])} {_ci(pc['ci95'])}"
    head = (f"debias set of A = {r['column_a']}, B = {r['column_b']}: {r['n_written']} of {r['n']} images, mode "
            f"{r['mode']}, acceptance {r['acceptance']:.2f}")
    return "\n".join(textwrap.fill(t, 150) for t in (head, line))


def _num(v) -> str:
    return "n/a" if v is None else f"{v:+.3f}"


def _ci(pair) -> str:
    return "" if pair is None else f"[{pair[0]:+.3f}, {pair[1]:+.3f}]"
