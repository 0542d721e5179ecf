"""The prototype layer: what s is, where each prototype matches, and how that maps to pixels.

Given a clean image x0, a small Conv-ReLU encoder f gives a feature map z = f(x0) of shape
(D, H', W'). Each of the P learnable prototypes p_j in R^D is compared with every 1x1 patch
z_{h,w} by squared Euclidean distance

    d_{j,h,w} = ||z_{h,w} - p_j||^2 = ||z_{h,w}||^2 - 2 <z_{h,w}, p_j> + ||p_j||^2   (clamped at 0)

and only the best-matching patch counts: d_j = min_{h,w} d_{j,h,w}, whose argmin (h*, w*) is the
prototype's location. The similarity is the ProtoPNet log-activation

    s_j = log((d_j + 1) / (d_j + eps)),   eps = 1e-4,

which is 0 for a far prototype and log(1/eps) ~ 9.21 for an exact match, and decreases
monotonically with d_j. The vector s = (s_1, ..., s_P) conditions the diffusion model.

With ``prototypes.metric=cosine`` both z_{h,w} and p_j are scaled to unit length first, so
d = 2 - 2 cos(z, p) lies in [0, 4] and s in [log(5/4), log(1/eps)]. On raw features (``l2``, the
reference) the encoder's features grow during training until every d_j is ~25-50, where s ~ 1/d is
~0.03, varies by ~0.004 between images and ds/dd ~ -1/d^2 gives the prototypes almost no gradient.

Where a prototype fires in pixels follows from receptive-field arithmetic (:class:`ReceptiveField`):
unit (h, w) of the last layer sees a square of side r centred at (start + w*jump, start + h*jump).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..config import ConfigError, PrototypeConfig
from ..data.errors import DataError


# ------------------------------------------------------------------------------ receptive field
@dataclass(frozen=True)
class ReceptiveField:
    """Receptive field of the last encoder layer, in input pixels.

    size: output feature-map side n; jump: effective stride j (pixels between neighbouring units);
    rf: receptive-field side r in pixels; start: centre of unit 0 in continuous pixel coordinates,
    where pixel i covers [i, i + 1) (so the first pixel's centre is 0.5).
    """

    image_size: int
    size: int
    jump: float
    rf: float
    start: float

    @classmethod
    def of_layers(cls, image_size: int, kernels, strides, paddings) -> "ReceptiveField":
        """Standard RF recursion, layer by layer, starting from [n, j, r, start] = [img, 1, 1, 0.5]:

        n' = floor((n - k + 2p) / s) + 1;  j' = j s;  r' = r + (k - 1) j;  start' = start + ((k - 1)/2 - p) j.
        """
        n, j, r, start = image_size, 1.0, 1.0, 0.5
        for k, s, p in zip(kernels, strides, paddings):
            n = (n - k + 2 * p) // s + 1
            start = start + ((k - 1) / 2 - p) * j
            r = r + (k - 1) * j
            j = j * s
        if n < 1:
            raise ConfigError(f"encoder reduces a {image_size}-px image to nothing; use a larger image or fewer layers")
        return cls(image_size=image_size, size=int(n), jump=j, rf=r, start=start)

    def box(self, h: int, w: int, display_size: int | None = None) -> tuple[int, int, int, int]:
        """Pixel box (x0, y0, x1, y1), end-exclusive and clipped to the image, seen by unit (h, w).

        The centre of unit i is c = start + i * jump; its box is [c - r/2, c + r/2). With the
        32-px reference encoder (start 6.5, jump 2, r 15) unit i covers pixels 2i-1 ... 2i+13.
        ``display_size`` rescales the box to an image shown at another resolution.
        """
        def span(i: int) -> tuple[float, float]:
            c = self.start + i * self.jump
            return max(c - self.rf / 2, 0.0), min(c + self.rf / 2, float(self.image_size))

        (x0, x1), (y0, y1) = span(w), span(h)
        scale = 1.0 if display_size is None else display_size / self.image_size
        return (int(math.floor(x0 * scale)), int(math.floor(y0 * scale)),
                int(math.ceil(x1 * scale)), int(math.ceil(y1 * scale)))


# ------------------------------------------------------------------------------ modules
class PrototypeEncoder(nn.Module):
    """f: a stack of Conv2d -> ReLU (a ReLU after the last conv too, so features are >= 0)."""

    def __init__(self, in_channels: int, cfg: PrototypeConfig):
        super().__init__()
        layers: list[nn.Module] = []
        c_in = in_channels
        for c_out, k, s, p in zip(cfg.channels, cfg.kernels, cfg.strides, cfg.paddings):
            conv = nn.Conv2d(c_in, c_out, k, stride=s, padding=p)
            nn.init.normal_(conv.weight, 0.0, cfg.init_std)
            layers += [conv, nn.ReLU()]
            c_in = c_out
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


@dataclass
class PrototypeMatch:
    """Result of matching the prototypes against a batch of images.

    s: (B, P) similarities; distance: (B, P) min squared distances d_j;
    location: (B, P, 2) the (row, col) of the best-matching patch in the feature map;
    distance_map: (B, P, H', W') all patch distances (only when requested).
    """

    s: torch.Tensor
    distance: torch.Tensor
    location: torch.Tensor
    distance_map: torch.Tensor | None = None


def log_similarity(d: torch.Tensor, eps: float = 1e-4) -> torch.Tensor:
    """s = log((d + 1) / (d + eps)); d >= 0 gives s in (0, log(1/eps)], strictly decreasing in d."""
    return torch.log((d + 1.0) / (d + eps))


class PrototypeNetwork(nn.Module):
    """Encoder f plus P prototype vectors; maps a clean image to its similarity vector s."""

    def __init__(self, in_channels: int, image_size: int, cfg: PrototypeConfig):
        super().__init__()
        self.cfg = cfg
        self.encoder = PrototypeEncoder(in_channels, cfg)
        # Uniform [0, 1) init as in ProtoPNet/Patronus; stored (P, D).
        self.prototypes = nn.Parameter(torch.rand(cfg.num_prototypes, cfg.dim))
        self.receptive_field = ReceptiveField.of_layers(image_size, cfg.kernels, cfg.strides, cfg.paddings)

    @property
    def num_prototypes(self) -> int:
        return self.prototypes.shape[0]

    def compared(self, z: torch.Tensor, dim: int) -> torch.Tensor:
        """The vectors the metric compares: z itself (``l2``) or z scaled to unit length along ``dim`` (``cosine``)."""
        return F.normalize(z, dim=dim, eps=1e-6) if self.cfg.metric == "cosine" else z

    def distances(self, z: torch.Tensor) -> torch.Tensor:
        """Squared L2 distance of every patch of z (B, D, H, W) to every prototype: (B, P, H, W)."""
        b, d, h, w = z.shape
        zf = self.compared(z.flatten(2), dim=1)  # (B, D, HW)
        z2 = (zf * zf).sum(1, keepdim=True)  # (B, 1, HW)
        p = self.compared(self.prototypes, dim=1)
        p2 = (p * p).sum(1)[None, :, None]  # (1, P, 1)
        cross = torch.einsum("pd,bdn->bpn", p, zf)
        return F.relu(z2 - 2 * cross + p2).view(b, -1, h, w)

    def forward(self, x: torch.Tensor, return_map: bool = False) -> PrototypeMatch:
        dmap = self.distances(self.encoder(x))
        flat = dmap.flatten(2)
        dmin, idx = flat.min(dim=2)
        w = dmap.shape[-1]
        loc = torch.stack([idx // w, idx % w], dim=-1)
        return PrototypeMatch(
            s=log_similarity(dmin, self.cfg.epsilon), distance=dmin, location=loc,
            distance_map=dmap if return_map else None,
        )

    @torch.no_grad()
    def init_from_patches(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Set the prototypes to the features of P real patches of the images ``x``; returns their flat indices.

        With the reference's U[0, 1) init the prototypes start far from every patch feature z (||z||^2 is often
        10x ||p||^2), so each d_j is decided by the same low-norm background patch, every s_j is ~1/d_j of one
        shared quantity, and the P similarities move together. Here prototype 1 is a random patch and each next
        one is the patch farthest (squared L2) from those already chosen, so the P starting points are real,
        diverse features: d_j = 0 at their source patch and s_j = log(1/eps) there.
        """
        z = self.compared(self.encoder(x).permute(0, 2, 3, 1).reshape(-1, self.prototypes.shape[1]), dim=1)
        if z.shape[0] < self.num_prototypes:
            raise DataError(f"{z.shape[0]} patches are fewer than {self.num_prototypes} prototypes; use more images")
        first = int(torch.randint(0, z.shape[0], (1,), generator=generator))
        chosen = [first]
        d = ((z - z[first]) ** 2).sum(1)
        for _ in range(self.num_prototypes - 1):
            nxt = int(d.argmax())
            chosen.append(nxt)
            d = torch.minimum(d, ((z - z[nxt]) ** 2).sum(1))
        idx = torch.tensor(chosen)
        self.prototypes.copy_(z[idx])
        return idx

    def box(self, row: int, col: int, display_size: int | None = None) -> tuple[int, int, int, int]:
        return self.receptive_field.box(int(row), int(col), display_size)


def prototype_distinct_loss(prototypes: torch.Tensor, margin: float, metric: str = "cosine") -> torch.Tensor:
    """mean_i ReLU(margin - min_{j != i} D_ij): pushes each prototype away from its nearest neighbour.

    cosine: D = 1 - |cos(p_i, p_j)| (anti-parallel counts as close, as in the reference);
    euclidean: D = ||p_i - p_j||.
    """
    p = prototypes.flatten(1)
    if metric == "cosine":
        pn = F.normalize(p, dim=1)
        dist = 1.0 - (pn @ pn.T).abs()
    elif metric == "euclidean":
        dist = torch.cdist(p, p)
    else:
        raise ConfigError(f"distinct metric must be 'cosine' or 'euclidean', not {metric!r}")
    dist = dist + torch.diag(torch.full((p.shape[0],), float("inf"), device=p.device, dtype=dist.dtype))
    return F.relu(margin - dist.min(dim=1).values).mean()


def similarity_correlation_loss(s: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """mean_{j != k} r_jk^2, r the Pearson correlation of prototypes j and k over the batch's s (B, P).

    Redundancy reduction on s (Barlow Twins / VICReg's covariance term, on correlations so it is scale-free):
    when prototypes move together across images, the decoder never sees one of them change alone, which is
    exactly what an edit of s asks of it. Zero when the batch's columns are uncorrelated; for independent
    columns its expectation is about 1 / (B - 1). Prototypes that do not vary in the batch contribute 0.
    """
    if s.ndim != 2 or s.shape[0] < 2 or s.shape[1] < 2:
        return s.new_zeros(())
    s = s.float()
    z = s - s.mean(0, keepdim=True)
    z = z / z.pow(2).sum(0, keepdim=True).sqrt().clamp_min(eps)
    r = z.T @ z  # (P, P) correlation matrix
    p = r.shape[0]
    off = r - torch.diag(torch.diagonal(r))
    return off.pow(2).sum() / (p * (p - 1))
