"""Statistics every figure of the toolkit is made with: a true median, bootstrap intervals, the standard error of
a mean over a grid whose rows and columns are both random (images x shared noises), and the mean, sample standard
deviation and Student-t interval of a few repeated runs (seeds).

Why not ``torch.median``: for an even count it returns the *lower* of the two middle values, so a median of 16
images or 30 prototypes is biased downwards by up to half a gap. :func:`true_median` averages the two middle
values, as the statistical definition does.
"""

from __future__ import annotations

import math
from typing import Callable

import numpy as np
import torch


def _as_array(values) -> np.ndarray:
    if isinstance(values, torch.Tensor):
        return values.detach().to("cpu", torch.float64).numpy()
    return np.asarray([np.nan if v is None else v for v in values] if isinstance(values, (list, tuple)) else values,
                      dtype=np.float64)


def true_median(values, digits: int | None = None) -> float | None:
    """The median of the defined entries (NaN and None left out): the middle value, or the mean of the two middle
    values for an even count. None when nothing is defined or the median is infinite."""
    a = _as_array(values).ravel()
    a = a[~np.isnan(a)]
    if not a.size:
        return None
    m = float(np.median(a))
    if not math.isfinite(m):
        return None
    return round(m, digits) if digits is not None else m


def count_defined(values) -> int:
    """How many entries are defined (not NaN / None): the N a median was taken over."""
    a = _as_array(values).ravel()
    return int((~np.isnan(a)).sum())


def median_of_medians(matrix) -> float | None:
    """median over rows of (median over the row's defined columns): rows = prototypes, columns = images."""
    a = _as_array(matrix)
    return true_median([true_median(row) for row in a])


def bootstrap_interval(matrix, statistic: Callable[[np.ndarray], float | None] = median_of_medians,
                       n_boot: int = 1000, level: float = 0.95, seed: int = 0) -> tuple[float, float] | None:
    """Percentile bootstrap interval of ``statistic`` over the *last axis* of ``matrix`` (e.g. prototypes x images,
    or measures x prototypes x images; the images are resampled with replacement, the same draw for every row, so
    rows keep their pairing).

    Returns (low, high) at ``level``, or None when the statistic is undefined on the data."""
    a = _as_array(matrix)
    if a.ndim == 1:
        a = a[None, :]
    n = a.shape[-1]
    if n < 2 or statistic(a) is None:
        return None
    rng = np.random.default_rng(seed)
    draws = []
    for _ in range(n_boot):
        v = statistic(a[..., rng.integers(0, n, n)])
        if v is not None:
            draws.append(v)
    if not draws:
        return None
    lo, hi = np.quantile(draws, [(1 - level) / 2, 1 - (1 - level) / 2])
    return float(lo), float(hi)


def mean_std(values) -> tuple[float | None, float | None]:
    """Mean and sample standard deviation (n - 1) of the defined values (None left out): (None, None) with none,
    std 0.0 with one. In float64 through torch, so tables written from it stay byte for byte what they were."""
    vals = [float(v) for v in values if v is not None]
    if not vals:
        return None, None
    t = torch.tensor(vals, dtype=torch.float64)
    return float(t.mean()), float(t.std(unbiased=True)) if len(vals) > 1 else 0.0


def t_interval(mean: float, sd: float, n: int, level: float = 0.95) -> tuple[float | None, float | None]:
    """Student-t confidence interval of a mean of n values with sample std ``sd``: mean +- t_{(1 + level) / 2,
    n - 1} sd / sqrt(n); (None, None) with fewer than two values."""
    if n < 2:
        return None, None
    from scipy.stats import t as student_t

    half = float(student_t.ppf(0.5 + level / 2, n - 1)) * sd / n ** 0.5
    return mean - half, mean + half


def two_way_standard_error(grid) -> float:
    """Standard error of the grand mean of a (rows x columns) grid in which rows and columns are both random draws
    (crossed random effects: images x noises shared by every image).

    With row means r_i, column means c_k and grand mean m of an n x k grid, the two-way ANOVA mean squares
        MS_row = k sum (r_i - m)^2 / (n - 1),  MS_col = n sum (c_k - m)^2 / (k - 1),
        MS_err = sum (a_ik - r_i - c_k + m)^2 / ((n - 1)(k - 1))
    estimate the variance components s_row^2 = (MS_row - MS_err) / k, s_col^2 = (MS_col - MS_err) / n,
    s_err^2 = MS_err (each clipped at 0), and
        Var(m) = s_row^2 / n + s_col^2 / k + s_err^2 / (n k).
    A single column (k = 1) or row falls back to the one-way standard error over the other axis."""
    a = _as_array(grid)
    if a.ndim == 1:
        a = a[:, None]
    n, k = a.shape
    if n < 2 and k < 2:
        return float("nan")
    if k == 1 or n == 1:
        v = a.ravel()
        return float(v.std(ddof=1) / math.sqrt(v.size))
    m = a.mean()
    r, c = a.mean(1), a.mean(0)
    ms_row = k * ((r - m) ** 2).sum() / (n - 1)
    ms_col = n * ((c - m) ** 2).sum() / (k - 1)
    ms_err = ((a - r[:, None] - c[None, :] + m) ** 2).sum() / ((n - 1) * (k - 1))
    s_row = max((ms_row - ms_err) / k, 0.0)
    s_col = max((ms_col - ms_err) / n, 0.0)
    return float(math.sqrt(s_row / n + s_col / k + ms_err / (n * k)))
