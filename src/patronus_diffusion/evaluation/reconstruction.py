"""Reconstruction: invert x0 -> x_T (DDIM, or exact EDICT) under the image's own s, decode (x_T, s) back.

PSNR/SSIM of the decoded image against the original measure how exact the inversion is at a step count;
every edit (which decodes the same x_T under an edited s) inherits this error, so it is reported with them.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..utils.images import psnr, save_grid, ssim
from ..utils.io import write_json, write_text


@dataclass
class ReconstructionResult:
    """Originals, one reconstruction per step count, per-image PSNR/SSIM and their means."""

    run: str
    names: list[str]
    originals: torch.Tensor
    reconstructions: dict[int, torch.Tensor] = field(default_factory=dict)
    psnr: dict[int, torch.Tensor] = field(default_factory=dict)
    ssim: dict[int, torch.Tensor] = field(default_factory=dict)
    by_steps: dict[str, dict] = field(default_factory=dict)

    inversion: str = "ddim"

    def to_json(self) -> dict:
        steps = list(self.reconstructions)
        how = ("ddim (eta=0) inversion and decoding" if self.inversion == "ddim"
               else "edict (exact coupled) inversion and decoding")
        return {"run": self.run, "images": self.names, "sampler": how, "inversion": self.inversion,
                "rows_of_reconstructions_png": ["original"] + [f"{k} steps" for k in steps], "by_steps": self.by_steps}

    def write(self, out: str | Path) -> dict[str, Path]:
        """reconstructions.png (rows: originals, then one row per step count), reconstruct.csv, reconstruct.json."""
        out = Path(out)
        grids = [self.originals] + [r.clamp(-1, 1) for r in self.reconstructions.values()]
        save_grid(torch.cat(grids), out / "reconstructions.png", nrow=len(self.names), upscale=2)
        rows = [f"{n},{k},{a:.4f},{b:.5f}" for k in self.reconstructions
                for n, a, b in zip(self.names, self.psnr[k].tolist(), self.ssim[k].tolist())]
        write_text(out / "reconstruct.csv", "image,steps,psnr_db,ssim\n" + "\n".join(rows) + "\n")
        write_json(out / "reconstruct.json", self.to_json())
        return {"grid": out / "reconstructions.png", "per image": out / "reconstruct.csv",
                "summary": out / "reconstruct.json"}


def reconstruct(pat, x: torch.Tensor, names: list[str], step_list: list[int],
                progress: bool = True) -> ReconstructionResult:
    """Invert and decode ``x`` at each step count (the run's ``sample.inversion`` scheme both ways)."""
    res = ReconstructionResult(run=str(pat.run_dir), names=list(names), originals=x,
                               inversion=pat.config.sample.inversion)
    s = pat.encode(x).s
    for k in step_list:
        t0 = time.time()
        x_T = pat.invert(x, s, steps=k, progress=progress)
        rec = pat.decode(x_T, s, steps=k, progress=progress)
        secs = time.time() - t0
        p, q = psnr(rec, x), ssim(rec, x)
        res.reconstructions[k], res.psnr[k], res.ssim[k] = rec, p, q
        res.by_steps[str(k)] = {"psnr_db": round(float(p.mean()), 3), "ssim": round(float(q.mean()), 4),
                                "psnr_db_min": round(float(p.min()), 3), "seconds_per_image": round(secs / len(x), 3),
                                "x_T_std": round(float(x_T.std()), 4)}
    return res
