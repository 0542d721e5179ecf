"""KID computed per subset equals the textbook estimator built from full kernels (same seeded subsets)."""

import numpy as np
import torch

from patronus_diffusion.evaluation.fid import kernel_inception_distance


def _full_kernel_kid(a, b, subsets, m, seed):
    d = a.shape[1]
    a, b = a.double(), b.double()
    k_aa, k_bb, k_ab = (a @ a.T / d + 1) ** 3, (b @ b.T / d + 1) ** 3, (a @ b.T / d + 1) ** 3
    g = torch.Generator().manual_seed(seed)
    vals = []
    for _ in range(subsets):
        i, j = torch.randperm(a.shape[0], generator=g)[:m], torch.randperm(b.shape[0], generator=g)[:m]
        kaa, kbb = k_aa[i][:, i], k_bb[j][:, j]
        off = lambda k: (k.sum() - k.diagonal().sum()) / (m * (m - 1))  # noqa: E731
        vals.append(float(off(kaa) + off(kbb) - 2 * k_ab[i][:, j].mean()))
    return float(np.mean(vals)), float(np.std(vals))


def test_subset_kid_matches_full_kernel_estimator():
    g = torch.Generator().manual_seed(1)
    a, b = torch.randn(120, 16, generator=g), torch.randn(90, 16, generator=g) + 0.3
    got = kernel_inception_distance(a, b, subsets=7, subset_size=50, seed=3)
    want = _full_kernel_kid(a, b, 7, 50, 3)
    assert np.allclose(got, want, rtol=1e-9, atol=1e-12)
