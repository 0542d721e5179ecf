"""Image helpers: [-1, 1] tensors <-> uint8, lossless PNG grids and data URIs, PSNR/SSIM."""

from __future__ import annotations

import base64
import io
import math
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from .io import atomic_path


def to_uint8(x: torch.Tensor) -> np.ndarray:
    """(B, C, H, W) in [-1, 1] -> (B, H, W, C) uint8 by a fixed affine map with rounding (never min-max)."""
    x = ((x.detach().float().cpu().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return x.permute(0, 2, 3, 1).numpy()


def make_grid(x: torch.Tensor, nrow: int | None = None, pad: int = 2, pad_value: int = 255) -> np.ndarray:
    imgs = to_uint8(x)
    b, h, w, c = imgs.shape
    nrow = nrow or max(1, int(math.ceil(math.sqrt(b))))
    ncol = int(math.ceil(b / nrow))
    grid = np.full((ncol * (h + pad) + pad, nrow * (w + pad) + pad, c), pad_value, np.uint8)
    for i in range(b):
        r, col = divmod(i, nrow)
        grid[pad + r * (h + pad): pad + r * (h + pad) + h, pad + col * (w + pad): pad + col * (w + pad) + w] = imgs[i]
    return grid


def save_png(arr: np.ndarray, path: str | Path, upscale: int = 1) -> Path:
    img = Image.fromarray(arr[..., 0] if arr.shape[-1] == 1 else arr)
    if upscale > 1:
        img = img.resize((img.width * upscale, img.height * upscale), Image.NEAREST)
    with atomic_path(path) as tmp:
        img.save(tmp, format="PNG")
    return Path(path)


def save_grid(x: torch.Tensor, path: str | Path, nrow: int | None = None, upscale: int = 1) -> Path:
    return save_png(make_grid(x, nrow), path, upscale)


def psnr(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Per-image PSNR in dB of images in [-1, 1] (computed on the [0, 1] scale)."""
    mse = (((a.clamp(-1, 1) - b.clamp(-1, 1)) / 2) ** 2).flatten(1).mean(1)
    return 10 * torch.log10(1.0 / mse.clamp_min(1e-12))


def ssim(a: torch.Tensor, b: torch.Tensor, window: int = 7) -> torch.Tensor:
    """Per-image mean SSIM (uniform window, on the [0, 1] scale, averaged over channels)."""
    a, b = (a.clamp(-1, 1) + 1) / 2, (b.clamp(-1, 1) + 1) / 2
    c1, c2 = 0.01**2, 0.03**2
    k = torch.ones(a.shape[1], 1, window, window, device=a.device) / window**2
    f = lambda z: F.conv2d(z, k, groups=a.shape[1])  # noqa: E731
    mu_a, mu_b = f(a), f(b)
    va, vb, cov = f(a * a) - mu_a**2, f(b * b) - mu_b**2, f(a * b) - mu_a * mu_b
    s = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / ((mu_a**2 + mu_b**2 + c1) * (va + vb + c2))
    return s.flatten(1).mean(1)


def png_uri(images: torch.Tensor, upscale: int = 2) -> str:
    """A row of images (N, C, H, W) in [-1, 1] as one PNG data URI."""
    arr = to_uint8(images)  # (N, H, W, C) uint8
    row = np.concatenate(list(arr), axis=1)
    row = row[..., 0] if row.shape[-1] == 1 else row
    img = Image.fromarray(row)
    if upscale > 1:
        img = img.resize((img.width * upscale, img.height * upscale), Image.NEAREST)
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def grid_image(x: torch.Tensor, nrow: int, upscale: int = 1) -> Image.Image:
    """Images (N, C, H, W) in [-1, 1] as one PIL grid of ``nrow`` columns, enlarged ``upscale`` times (nearest)."""
    arr = make_grid(x, nrow=nrow)
    img = Image.fromarray(arr[..., 0] if arr.shape[-1] == 1 else arr)
    return img.resize((img.width * upscale, img.height * upscale), Image.NEAREST) if upscale > 1 else img


def png_bytes(img: Image.Image) -> bytes:
    """A PIL image as PNG bytes (what a notebook's ``_repr_png_`` returns)."""
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()
