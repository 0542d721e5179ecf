"""Training options that make s steer the decoder (issue: prototypes that steer the generator)."""

import csv

import pytest
import torch

from helpers import quiet_cfg

from patronus_diffusion.config import ConfigError, apply_overrides
from patronus_diffusion.diffusion.schedule import NoiseSchedule
from patronus_diffusion.models import build_model
from patronus_diffusion.training import objectives as obj
from patronus_diffusion.training import train


def _quiet(cfg, **train_fields):
    return quiet_cfg(cfg, **{"log_every": 2, **train_fields})


def test_film_conditioning_changes_eps_with_s_and_add_mode_is_unchanged(tiny_cfg):
    torch.manual_seed(0)
    add = build_model(tiny_cfg).eval()
    film_cfg = apply_overrides(tiny_cfg, ["unet.cond_mode=film"])
    film = build_model(film_cfg).eval()
    # film doubles each block's condition projection (scale and shift)
    blk_add, blk_film = add.unet.mid[0], film.unet.mid[0]
    assert blk_film.cond_proj.out_features == 2 * blk_add.cond_proj.out_features
    x, t = torch.randn(2, 1, 16, 16), torch.tensor([10, 500])
    s = torch.rand(2, 6)
    s2 = s.clone()
    s2[:, 3] += 1.0
    with torch.no_grad():
        for m in (add, film):
            for p in m.unet.parameters():  # give the condition path non-zero weights
                p.add_(0.05 * torch.randn_like(p))
            assert not torch.allclose(m(x, t, s), m(x, t, s2))


def test_null_condition_ignores_s(tiny_cfg):
    torch.manual_seed(0)
    m = build_model(tiny_cfg).eval()
    x, t = torch.randn(2, 1, 16, 16), torch.tensor([10, 500])
    null = torch.ones(2, dtype=torch.bool)
    with torch.no_grad():
        a = m(x, t, torch.rand(2, 6), null)
        b = m(x, t, torch.rand(2, 6) * 5, null)
        c = m(x, t, torch.rand(2, 6))
    assert torch.equal(a, b) and not torch.allclose(a, c)


def test_cluster_cost_is_scale_free_and_zero_only_at_exact_matches():
    d = torch.rand(4, 3, 5, 5) + 0.5
    assert torch.allclose(obj.cluster_cost(d), obj.cluster_cost(7.0 * d))
    exact = d.clone()
    exact[:, :, 0, 0] = 0.0  # every image has a patch on every prototype
    assert float(obj.cluster_cost(exact)) == 0.0
    assert float(obj.cluster_cost(d)) > 0.0


def _honour_setup(tiny_cfg, seed: int):
    """A tiny model, 8 random images, their s and one honour batch."""
    cfg = _quiet(tiny_cfg, honour_weight=1.0)
    m = build_model(cfg)
    sched = NoiseSchedule.from_config(cfg.diffusion)
    x0 = torch.rand(8, 1, 16, 16) * 2 - 1
    s = m.prototypes(x0).s.detach()
    torch.manual_seed(seed)
    return cfg, m, sched, s, obj._honour_batch(x0, s, sched, cfg.train)


def test_honour_loss_reaches_only_the_unet(tiny_cfg):
    """The encoder is frozen inside the honour term: its gradient must be exactly zero there."""
    cfg, m, sched, s, batch = _honour_setup(tiny_cfg, 0)
    assert batch["t"].min() >= cfg.train.honour_t[0] and batch["t"].max() < cfg.train.honour_t[1]
    changed = (batch["s"] != s[: batch["s"].shape[0]]).sum(1)
    assert torch.all(changed <= 1)  # one prototype edited per row
    eps = m(batch["x_t"], batch["t"], batch["s"])
    loss = obj.honour_loss(m.prototypes, batch, eps, sched, s)
    loss.backward()
    assert all(p.grad is None or float(p.grad.abs().sum()) == 0.0 for p in m.prototypes.parameters())
    assert any(p.grad is not None and float(p.grad.abs().sum()) > 0 for p in m.unet.parameters())


def test_contrast_honour_charges_a_decoder_that_ignores_s_the_full_change(tiny_cfg):
    """Closed form: with the same eps under s' and s (a decoder that ignores s), the two predictions re-encode to the
    same s, so the loss is huber(requested change / sd) per row; the encoder stays frozen."""
    cfg, m, sched, s, batch = _honour_setup(tiny_cfg, 1)
    eps = torch.randn_like(batch["x_t"])
    got = obj.honour_contrast_loss(m.prototypes, batch, eps, eps, sched, s)
    rows = torch.arange(batch["j"].shape[0])
    change = (batch["s"][rows, batch["j"]] - batch["s_base"][rows, batch["j"]]) / s.std(0).clamp_min(1e-6)[batch["j"]]
    want = torch.nn.functional.huber_loss(-change, torch.zeros_like(change), delta=1.0)
    assert torch.allclose(got, want, atol=1e-6) and float(want) > 0
    # through a real UNet: the gradient reaches the UNet only
    eps_e = m(batch["x_t"], batch["t"], batch["s"])
    eps_b = m(batch["x_t"], batch["t"], batch["s_base"])
    obj.honour_contrast_loss(m.prototypes, batch, eps_e, eps_b, sched, s).backward()
    assert all(p.grad is None or float(p.grad.abs().sum()) == 0.0 for p in m.prototypes.parameters())
    assert any(p.grad is not None and float(p.grad.abs().sum()) > 0 for p in m.unet.parameters())


def test_steering_options_train_and_log(tiny_cfg, tmp_path):
    cfg = apply_overrides(_quiet(tiny_cfg), ["train.honour_weight=0.1", "train.cluster_weight=0.1",
                                             "train.cond_dropout=0.2", "unet.cond_mode=film"])
    train(cfg, tmp_path / "r", max_steps=4, progress=False)
    rows = list(csv.DictReader(open(tmp_path / "r" / "train_log.csv")))
    assert float(rows[-1]["honour"]) > 0 and float(rows[-1]["cluster"]) > 0
    contrast = apply_overrides(_quiet(tiny_cfg), ["train.honour_weight=0.1", "train.honour_mode=contrast"])
    train(contrast, tmp_path / "c", max_steps=4, progress=False)
    rows = list(csv.DictReader(open(tmp_path / "c" / "train_log.csv")))
    assert float(rows[-1]["honour"]) > 0


def test_bad_steering_options_are_rejected(tiny_cfg):
    for bad in (["unet.cond_mode=cross"], ["train.cond_dropout=1.0"], ["sample.guidance=2"],
                ["train.honour_weight=1", "train.honour_t=500,100"], ["train.honour_mode=both"]):
        with pytest.raises(ConfigError):
            apply_overrides(tiny_cfg, bad)


def test_repeated_set_flags_all_apply():
    from patronus_diffusion.cli.main import build_parser

    args = build_parser().parse_args(["train", "--out", "x", "--set", "train.lr=1", "--set", "train.seed=3"])
    assert args.set == ["train.lr=1", "train.seed=3"]
