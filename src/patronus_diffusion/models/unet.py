"""The conditional denoising UNet, eps_theta(x_t, t, c).

The condition c is any vector per image: Patronus passes the prototype similarities s (dimension
P); ProtoDiffusion passes a class embedding (dimension 128). c goes through its own MLP
(Linear -> SiLU -> Linear) and is added, through a separate Linear layer, inside *every*
residual block next to the time embedding:

    h = conv1(SiLU(GN(x))) + W_t SiLU(e_t) + W_c SiLU(e_c)

``unet.cond_mode=film`` instead scales and shifts the normalised features (AdaGN):

    h = conv1(SiLU(GN(x))) + W_t SiLU(e_t);   h = GN(h) (1 + gamma) + beta,   (gamma, beta) = W_c SiLU(e_c)

For classifier-free guidance, a "null" condition sets e_c = 0 for the rows of an ``uncond`` mask.

With the Patronus defaults (base 64, mults 1-2-4-4, 2 blocks, attention only in the bottleneck,
GroupNorm(8), Dropout2d 0.1) this reproduces the reference architecture parameter for parameter.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..config import ConfigError, UNetConfig
from ..utils.errors import UsageError


def timestep_embedding(t: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """Sinusoidal embedding [sin(t f_k), cos(t f_k)] with f_k = exp(-k ln(max_period) / (dim/2 - 1))."""
    half = dim // 2
    k = torch.arange(half, device=t.device, dtype=torch.float32)
    freqs = torch.exp(-math.log(max_period) * k / max(half - 1, 1))
    args = t.float()[:, None] * freqs[None]
    return torch.cat([torch.sin(args), torch.cos(args)], dim=1)


class SelfAttention(nn.Module):
    """GroupNorm -> multi-head self-attention over all positions -> residual add."""

    def __init__(self, channels: int, heads: int, groups: int):
        super().__init__()
        if channels % heads:
            raise ConfigError(f"attention channels {channels} not divisible by heads {heads}")
        self.heads = heads
        self.norm = nn.GroupNorm(groups, channels)
        self.qkv = nn.Linear(channels, 3 * channels)
        self.proj = nn.Linear(channels, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        seq = self.norm(x).flatten(2).transpose(1, 2)  # (B, HW, C)
        q, k, v = self.qkv(seq).chunk(3, dim=-1)
        split = lambda a: a.view(b, h * w, self.heads, c // self.heads).transpose(1, 2)  # noqa: E731
        out = F.scaled_dot_product_attention(split(q), split(k), split(v))
        out = self.proj(out.transpose(1, 2).reshape(b, h * w, c))
        return x + out.transpose(1, 2).reshape(b, c, h, w)


class ResBlock(nn.Module):
    """GN-SiLU-Conv, + time and condition projections, GN-SiLU-Dropout-Conv, + shortcut, [attention]."""

    def __init__(self, c_in: int, c_out: int, emb_dim: int, cond: bool, cfg: UNetConfig, attention: bool):
        super().__init__()
        self.norm1 = nn.GroupNorm(cfg.groups, c_in)
        self.conv1 = nn.Conv2d(c_in, c_out, 3, padding=1)
        self.time_proj = nn.Linear(emb_dim, c_out)
        self.film = cond and cfg.cond_mode == "film"
        self.cond_proj = nn.Linear(emb_dim, 2 * c_out if self.film else c_out) if cond else None
        self.norm2 = nn.GroupNorm(cfg.groups, c_out)
        self.dropout = (nn.Dropout2d if cfg.dropout2d else nn.Dropout)(cfg.dropout)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1)
        self.shortcut = nn.Conv2d(c_in, c_out, 1) if c_in != c_out else nn.Identity()
        self.attention = SelfAttention(c_out, cfg.attention_heads, cfg.groups) if attention else None

    def forward(self, x: torch.Tensor, t_emb: torch.Tensor, c_emb: torch.Tensor | None) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        bias = self.time_proj(F.silu(t_emb))
        cond = self.cond_proj(F.silu(c_emb)) if self.cond_proj is not None and c_emb is not None else None
        if cond is not None and not self.film:
            bias = bias + cond
        h = self.norm2(h + bias[:, :, None, None])
        if cond is not None and self.film:
            gamma, beta = cond.chunk(2, dim=1)
            h = h * (1 + gamma[:, :, None, None]) + beta[:, :, None, None]
        h = self.conv2(self.dropout(F.silu(h)))
        h = h + self.shortcut(x)
        return self.attention(h) if self.attention is not None else h


class UNet(nn.Module):
    """eps_theta(x, t, cond). ``cond_dim=None`` builds an unconditional UNet."""

    def __init__(self, in_channels: int, cfg: UNetConfig, cond_dim: int | None):
        super().__init__()
        self.cfg = cfg
        self.cond_dim = cond_dim
        ch = cfg.base_channels
        emb = ch * cfg.time_emb_mult
        self.time_mlp = nn.Sequential(nn.Linear(ch, emb), nn.SiLU(), nn.Linear(emb, emb))
        self.cond_mlp = (nn.Sequential(nn.Linear(cond_dim, emb), nn.SiLU(), nn.Linear(emb, emb))
                         if cond_dim else None)
        if cfg.cond_norm not in ("none", "layer"):
            raise ConfigError(f"unet.cond_norm must be 'none' or 'layer', got {cfg.cond_norm!r}")
        if cfg.cond_mode not in ("add", "film"):
            raise ConfigError(f"unet.cond_mode must be 'add' or 'film', got {cfg.cond_mode!r}")
        self.cond_norm = (nn.LayerNorm(cond_dim, elementwise_affine=False)
                          if cond_dim and cfg.cond_norm == "layer" else nn.Identity())
        has_cond = cond_dim is not None
        block = lambda a, b, attn: ResBlock(a, b, emb, has_cond, cfg, attn)  # noqa: E731

        self.first = nn.Conv2d(in_channels, ch, 3, padding=1)
        levels = [ch * m for m in cfg.channel_mult]
        skips = [ch]
        self.down = nn.ModuleList()
        cur = ch
        for i, c in enumerate(levels):
            blocks = nn.ModuleList()
            for _ in range(cfg.num_res_blocks):
                blocks.append(block(cur, c, cfg.attention_levels[i]))
                cur = c
                skips.append(cur)
            sample = None
            if i < len(levels) - 1:
                sample = nn.Conv2d(cur, cur, 3, stride=2, padding=1)
                skips.append(cur)
            self.down.append(nn.ModuleDict({"blocks": blocks, "sample": sample or nn.Identity()}))

        self.mid = nn.ModuleList([block(cur, cur, cfg.mid_attention), block(cur, cur, False)])

        self.up = nn.ModuleList()
        for i, c in reversed(list(enumerate(levels))):
            blocks = nn.ModuleList()
            for _ in range(cfg.num_res_blocks + 1):
                blocks.append(block(cur + skips.pop(), c, cfg.attention_levels[i]))
                cur = c
            sample = nn.Conv2d(cur, cur, 3, padding=1) if i > 0 else nn.Identity()
            self.up.append(nn.ModuleDict({"blocks": blocks, "sample": sample}))
        self.final = nn.Sequential(nn.GroupNorm(cfg.groups, cur), nn.SiLU(), nn.Conv2d(cur, in_channels, 3, padding=1))

    def forward(self, x: torch.Tensor, t: torch.Tensor, cond: torch.Tensor | None = None,
                uncond: torch.Tensor | None = None) -> torch.Tensor:
        """eps(x, t, cond); rows where the bool mask ``uncond`` (B,) is true get the null condition (e_c = 0)."""
        if self.cond_dim is not None:
            if cond is None:
                raise UsageError("this UNet is conditional: pass the condition vector explicitly")
            if cond.shape != (x.shape[0], self.cond_dim):
                raise UsageError(f"condition must have shape ({x.shape[0]}, {self.cond_dim}), got {tuple(cond.shape)}")
        if t.ndim == 0:
            t = t.expand(x.shape[0])
        t_emb = self.time_mlp(timestep_embedding(t, self.cfg.base_channels).to(x.dtype))
        c_emb = self.cond_mlp(self.cond_norm(cond.to(t_emb.dtype))) if self.cond_mlp is not None else None
        if c_emb is not None and uncond is not None:
            c_emb = torch.where(uncond.to(c_emb.device)[:, None], torch.zeros_like(c_emb), c_emb)

        h = self.first(x)
        hs = [h]
        for level in self.down:
            for blk in level["blocks"]:
                h = blk(h, t_emb, c_emb)
                hs.append(h)
            if not isinstance(level["sample"], nn.Identity):
                h = level["sample"](h)
                hs.append(h)
        for blk in self.mid:
            h = blk(h, t_emb, c_emb)
        for level in self.up:
            for blk in level["blocks"]:
                h = blk(torch.cat([h, hs.pop()], dim=1), t_emb, c_emb)
            if not isinstance(level["sample"], nn.Identity):
                h = level["sample"](F.interpolate(h, scale_factor=2.0, mode="nearest"))
        return self.final(h)
