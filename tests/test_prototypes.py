"""Math invariants of the prototype layer: receptive fields, distances, similarity, argmin."""

import math

import pytest
import torch

from patronus_diffusion.config import PrototypeConfig
from patronus_diffusion.presets import get_preset
from patronus_diffusion.models.prototypes import (PrototypeNetwork, ReceptiveField, log_similarity,
                                                  prototype_distinct_loss)


@pytest.mark.parametrize("preset,size,expect", [
    ("paper-fmnist", 32, (10, 2, 15, 6.5)),
    ("paper-celeba64", 64, (26, 2, 15, 6.5)),
    ("paper-chexpert", 224, (43, 4, 61, 27.5)),
])
def test_receptive_field_matches_reference(preset, size, expect):
    p = get_preset(preset).prototypes
    rf = ReceptiveField.of_layers(size, p.kernels, p.strides, p.paddings)
    assert (rf.size, rf.jump, rf.rf, rf.start) == expect


def test_reference_box_is_the_full_15px_field():
    rf = ReceptiveField.of_layers(32, (3, 3, 3, 3), (2, 1, 1, 1), (1, 0, 0, 0))
    assert rf.box(0, 0) == (0, 0, 14, 14)  # 2*0-1 clipped to 0 ... 2*0+13 inclusive
    assert rf.box(3, 5) == (9, 5, 24, 20)  # cols 2*5-1..2*5+13, rows 2*3-1..2*3+13
    assert rf.box(9, 9) == (17, 17, 32, 32)


def _brute_force_support(net: PrototypeNetwork, size: int, channels: int, h: int, w: int):
    """Pixels whose value changes feature unit (h, w): gradient support with all-positive weights/input."""
    with torch.no_grad():
        for m in net.encoder.modules():
            if isinstance(m, torch.nn.Conv2d):
                m.weight.uniform_(0.01, 0.1)
                m.bias.fill_(0.01)
    x = torch.rand(1, channels, size, size).add_(0.1).requires_grad_(True)
    net.encoder(x)[0, :, h, w].sum().backward()
    nz = (x.grad[0].abs().sum(0) > 0).nonzero()
    ys, xs = nz[:, 0], nz[:, 1]
    return int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1


@pytest.mark.parametrize("preset,size", [("paper-fmnist", 32), ("paper-celeba64", 64), ("paper-chexpert", 224)])
def test_box_equals_brute_force_gradient_support(preset, size):
    cfg = get_preset(preset)
    cfg.prototypes.channels = tuple(min(c, 8) for c in cfg.prototypes.channels)  # thin: same geometry, faster
    net = PrototypeNetwork(1, size, cfg.prototypes)
    n = net.receptive_field.size
    for h, w in [(0, 0), (n // 2, n // 3), (n - 1, n - 1), (1, n - 2)]:
        assert net.box(h, w) == _brute_force_support(net, size, 1, h, w), (h, w)


def test_box_rescales_to_display_resolution():
    rf = ReceptiveField.of_layers(32, (3, 3, 3, 3), (2, 1, 1, 1), (1, 0, 0, 0))
    assert rf.box(3, 5, display_size=64) == tuple(2 * v for v in rf.box(3, 5))


def test_similarity_range_and_monotonicity():
    d = torch.cat([torch.zeros(1), torch.logspace(-6, 6, 200)])
    s = log_similarity(d)
    assert math.isclose(float(s[0]), math.log(1e4), rel_tol=1e-6)
    assert (s > 0).all() and (s <= math.log(1e4) + 1e-6).all()
    assert (s[1:] < s[:-1]).all()


def test_distances_minimum_and_locations_match_brute_force():
    torch.manual_seed(0)
    cfg = PrototypeConfig(num_prototypes=5)
    net = PrototypeNetwork(1, 32, cfg)
    x = torch.rand(3, 1, 32, 32) * 2 - 1
    z = net.encoder(x)  # (B, D, H, W)
    brute = ((z[:, None] - net.prototypes[None, :, :, None, None]) ** 2).sum(2)  # (B, P, H, W)
    torch.testing.assert_close(net.distances(z), brute, rtol=1e-4, atol=1e-3)
    out = net(x, return_map=True)
    flat = brute.flatten(2)
    torch.testing.assert_close(out.distance, flat.min(2).values, rtol=1e-4, atol=1e-3)
    for b in range(3):
        for j in range(5):
            r, c = out.location[b, j].tolist()
            assert math.isclose(float(brute[b, j, r, c]), float(flat[b, j].min()), rel_tol=1e-4, abs_tol=1e-3)
    torch.testing.assert_close(out.s, log_similarity(out.distance))


def test_cosine_metric_is_two_minus_two_cos_and_ignores_feature_scale():
    torch.manual_seed(2)
    net = PrototypeNetwork(1, 32, PrototypeConfig(num_prototypes=4, metric="cosine"))
    z = net.encoder(torch.rand(2, 1, 32, 32) * 2 - 1)
    zn = z / z.norm(dim=1, keepdim=True).clamp_min(1e-6)
    pn = net.prototypes / net.prototypes.norm(dim=1, keepdim=True)
    cos = torch.einsum("bdhw,pd->bphw", zn, pn)
    d = net.distances(z)
    torch.testing.assert_close(d, 2 - 2 * cos, rtol=1e-4, atol=1e-4)
    assert (d >= 0).all() and (d <= 4 + 1e-5).all()
    torch.testing.assert_close(net.distances(37.0 * z), d, rtol=1e-4, atol=1e-4)  # the scale of z does not matter
    s = log_similarity(d)
    assert (s >= math.log(5 / 4) - 1e-5).all()


def test_prototype_equal_to_a_patch_gives_max_similarity_at_that_patch():
    torch.manual_seed(1)
    net = PrototypeNetwork(1, 32, PrototypeConfig(num_prototypes=3))
    x = torch.rand(1, 1, 32, 32)
    z = net.encoder(x)
    with torch.no_grad():
        net.prototypes[1] = z[0, :, 4, 7]
    out = net(x)
    assert out.location[0, 1].tolist() == [4, 7]
    # the expanded distance ||z||^2 - 2<z,p> + ||p||^2 leaves a float32 residue of ~1e-5, so s ~ 9.07, not 9.21
    assert float(out.s[0, 1]) > math.log(1e4) - 0.2
    assert float(out.s[0, 1]) == float(out.s.max())


def test_distinct_loss_zero_for_orthogonal_and_positive_for_duplicates():
    eye = torch.eye(4, 8)
    assert float(prototype_distinct_loss(eye, margin=0.5)) == 0.0
    dup = torch.stack([eye[0], eye[0], eye[1], eye[2]])
    # prototypes 0 and 1 coincide: D = 0 for both, so 2 of 4 terms equal the margin
    assert math.isclose(float(prototype_distinct_loss(dup, margin=0.5)), 0.25, abs_tol=1e-6)
    anti = torch.stack([eye[0], -eye[0], eye[1], eye[2]])  # |cos| counts anti-parallel as close
    assert math.isclose(float(prototype_distinct_loss(anti, margin=0.5)), 0.25, abs_tol=1e-6)


def test_patch_init_puts_every_prototype_on_a_distinct_real_patch():
    from patronus_diffusion.models.prototypes import PrototypeNetwork

    cfg = PrototypeConfig(num_prototypes=6)
    net = PrototypeNetwork(1, 32, cfg)
    x = torch.rand(4, 1, 32, 32) * 2 - 1
    idx = net.init_from_patches(x, torch.Generator().manual_seed(0))
    assert len(set(idx.tolist())) == 6
    m = net(x)
    best = m.distance.min(dim=0).values  # each prototype matches its source patch exactly in some image
    assert torch.all(best < 1e-3), best
    # s at the source patch is near log(1/eps) = 9.21 (float cancellation in ||z||^2 - 2<z,p> + ||p||^2 aside)
    assert torch.all(m.s.max(dim=0).values > 8.5) and float(m.s.median()) < 1.0


def test_similarity_correlation_loss_by_hand():
    from patronus_diffusion.models.prototypes import similarity_correlation_loss

    # orthogonal centred columns: uncorrelated -> 0, whatever each column's scale and offset
    base = torch.tensor([[1.0, 1.0], [1.0, -1.0], [-1.0, 1.0], [-1.0, -1.0]])
    s = base * torch.tensor([3.0, 0.01]) + torch.tensor([5.0, -2.0])
    assert float(similarity_correlation_loss(s)) < 1e-10
    # a duplicated column (r = 1) and an anti-correlated one (r = -1): each off-diagonal pair counts r^2 = 1
    x = torch.randn(16, 1, dtype=torch.float64)
    s3 = torch.cat([x, 2 * x + 1, -x], 1)
    assert math.isclose(float(similarity_correlation_loss(s3)), 1.0, abs_tol=1e-5)
    # a column that does not vary contributes nothing (and no NaN)
    s4 = torch.cat([x, torch.ones_like(x)], 1)
    assert float(similarity_correlation_loss(s4)) == 0.0


def test_similarity_correlation_loss_gradient_decorrelates():
    from patronus_diffusion.models.prototypes import similarity_correlation_loss

    torch.manual_seed(0)
    x = torch.randn(64, 1)
    s = torch.cat([x, x + 0.3 * torch.randn(64, 1), torch.randn(64, 1)], 1).requires_grad_(True)
    before = float(similarity_correlation_loss(s.detach()))
    opt = torch.optim.Adam([s], lr=0.05)
    for _ in range(200):
        opt.zero_grad()
        similarity_correlation_loss(s).backward()
        opt.step()
    assert float(similarity_correlation_loss(s)) < 0.2 * before
