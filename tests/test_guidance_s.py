"""Classifier-free guidance on s in the Patronus API: eps(s) + w (eps(s) - eps(null)), one batched call."""

import pytest
import torch

from patronus_diffusion import Patronus
from patronus_diffusion.config import apply_overrides
from patronus_diffusion.models import build_model


@pytest.fixture
def guided(tiny_cfg):
    """A tiny untrained Patronus with a null condition (train.cond_dropout = 0.1), conditioning weights non-zero."""
    cfg = apply_overrides(tiny_cfg, ["train.cond_dropout=0.1"])
    torch.manual_seed(0)
    model = build_model(cfg)
    with torch.no_grad():
        for p in model.unet.parameters():  # give the condition path non-zero weights
            p.add_(0.05 * torch.randn_like(p))
    return Patronus(model, cfg, torch.device("cpu"))


class _Calls:
    def __init__(self, module):
        self.rows = []
        module.register_forward_hook(lambda m, args, out: self.rows.append(args[0].shape[0]))


def test_guidance_zero_is_the_plain_conditional_call(guided):
    x, t, s = torch.randn(3, 1, 16, 16), torch.tensor([10, 500, 900]), torch.rand(3, 6)
    with torch.no_grad():
        plain = guided.model(x, t, s)
        assert torch.equal(guided.model_fn(s)(x, t), plain)  # sample.guidance defaults to 0
        assert torch.equal(guided.model_fn(s, guidance=0.0)(x, t), plain)


def test_guidance_matches_the_formula_in_one_batched_call(guided):
    x, t, s = torch.randn(3, 1, 16, 16), torch.tensor([10, 500, 900]), torch.rand(3, 6)
    w = 1.5
    with torch.no_grad():
        eps_c = guided.model(x, t, s)
        eps_u = guided.model(x, t, s, torch.ones(3, dtype=torch.bool))
        calls = _Calls(guided.model)
        out = guided.model_fn(s, guidance=w)(x, t)
    assert calls.rows == [6]  # conditional and null halves: one network call of 2B rows
    assert not torch.allclose(eps_c, eps_u)
    torch.testing.assert_close(out, eps_c + w * (eps_c - eps_u), rtol=0, atol=1e-5)
    # the config's sample.guidance is the default weight
    guided.config.sample.guidance = w
    with torch.no_grad():
        torch.testing.assert_close(guided.model_fn(s)(x, t), out, rtol=0, atol=1e-6)


def test_sample_and_decode_pass_guidance(guided):
    s = torch.rand(2, 6)
    a = guided.sample(s, sampler="ddim", steps=3, seed=1)
    assert torch.equal(a, guided.sample(s, sampler="ddim", steps=3, seed=1, guidance=0))
    b = guided.sample(s, sampler="ddim", steps=3, seed=1, guidance=2.0)
    assert b.shape == a.shape and not torch.allclose(a, b)
    x_T = torch.randn(2, 1, 16, 16)
    assert not torch.allclose(guided.decode(x_T, s, steps=3), guided.decode(x_T, s, steps=3, guidance=2.0))


def test_guidance_needs_a_null_condition(tiny_cfg):
    pat = Patronus(build_model(tiny_cfg), tiny_cfg, torch.device("cpu"))  # trained without cond_dropout
    with pytest.raises(ValueError, match="cond_dropout"):
        pat.model_fn(torch.rand(1, 6), guidance=1.0)
    with pytest.raises(ValueError, match=">= 0"):
        pat.model_fn(torch.rand(1, 6), guidance=-1.0)


# ---------------------------------------------------------------- guidance on the edit difference
@pytest.fixture
def plain(tiny_cfg):
    """A tiny untrained Patronus trained *without* condition dropout (no null s), condition path non-zero."""
    torch.manual_seed(0)
    model = build_model(tiny_cfg)
    with torch.no_grad():
        for p in model.unet.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return Patronus(model, tiny_cfg, torch.device("cpu"))


def test_edit_difference_guidance_matches_the_formula_without_a_null(plain):
    x, t = torch.randn(3, 1, 16, 16), torch.tensor([10, 500, 900])
    s = torch.rand(3, 6)
    s_edit = s.clone()
    s_edit[:, 2] += 1.0
    w = 2.0
    with torch.no_grad():
        eps_e, eps_s = plain.model(x, t, s_edit), plain.model(x, t, s)
        calls = _Calls(plain.model)
        out = plain.model_fn(s_edit, guidance=w, against=s)(x, t)
        same = plain.model_fn(s, guidance=w, against=s)(x, t)
    assert calls.rows == [6, 3]  # both ends of the difference in one call of 2B rows; no difference, no second end
    assert not torch.allclose(eps_e, eps_s)
    torch.testing.assert_close(out, eps_e + w * (eps_e - eps_s), rtol=0, atol=1e-5)
    torch.testing.assert_close(same, eps_s, rtol=0, atol=1e-5)  # no edit, no guidance: the plain model
    with pytest.raises(ValueError, match="shape"):
        plain.model_fn(s, guidance=w, against=s[:2])
    # mixed rows: only the edited ones get a second evaluation and the guidance
    mixed = s.clone()
    mixed[1, 2] += 1.0
    with torch.no_grad():
        calls.rows.clear()
        out = plain.model_fn(mixed, guidance=w, against=s)(x, t)
        eps_m = plain.model(x, t, mixed)
    assert calls.rows == [4, 3]  # the guided call: 3 rows + the 1 edited row; then the plain reference call
    torch.testing.assert_close(out[1], eps_m[1] + w * (eps_m[1] - eps_s[1]), rtol=0, atol=1e-5)
    torch.testing.assert_close(out[[0, 2]], eps_s[[0, 2]], rtol=0, atol=1e-5)
    # without a weight, against= takes the run's sample.edit_guidance (not the CFG weight sample.guidance)
    plain.config.sample.edit_guidance = w
    with torch.no_grad():
        torch.testing.assert_close(plain.model_fn(s_edit, against=s)(x, t), eps_e + w * (eps_e - eps_s),
                                   rtol=0, atol=1e-5)


def test_engine_edit_guidance_amplifies_edits_and_keeps_the_reconstruction(plain):
    from patronus_diffusion.edit import Edit, EditPlan, run_plan

    torch.manual_seed(1)
    x = torch.rand(2, 1, 16, 16) * 2 - 1
    edit = [Edit.set(1, 3.0)]
    base = run_plan(plain, EditPlan(images=x, edits=edit, reconstruction=True, steps=3))
    guided = run_plan(plain, EditPlan(images=x, edits=edit, reconstruction=True, steps=3, edit_guidance=3.0,
                                      inverted=base.inverted))
    torch.testing.assert_close(guided.reconstruction, base.reconstruction, rtol=0, atol=1e-5)
    assert not torch.allclose(guided.images, base.images, atol=1e-3)
    assert guided.meta()["edit_guidance"] == 3.0 and "edit_guidance" not in base.meta()
    with pytest.raises(ValueError, match="cannot be combined"):
        run_plan(plain, EditPlan(images=x, edits=edit, steps=3, edit_guidance=1.0, guidance=1.0))
    with pytest.raises(ValueError, match=">= 0"):
        run_plan(plain, EditPlan(images=x, edits=edit, steps=3, edit_guidance=-1.0))


def test_the_runs_sample_edit_guidance_is_the_default_and_zero_turns_it_off(plain):
    from patronus_diffusion.edit import Edit, EditPlan, run_plan

    torch.manual_seed(2)
    x = torch.rand(2, 1, 16, 16) * 2 - 1
    edit = [Edit.set(1, 3.0)]
    base = run_plan(plain, EditPlan(images=x, edits=edit, steps=2))
    explicit = run_plan(plain, EditPlan(images=x, edits=edit, steps=2, edit_guidance=1.5, inverted=base.inverted))
    plain.config.sample.edit_guidance = 1.5
    by_default = run_plan(plain, EditPlan(images=x, edits=edit, steps=2, inverted=base.inverted))
    off = run_plan(plain, EditPlan(images=x, edits=edit, steps=2, edit_guidance=0.0, inverted=base.inverted))
    assert by_default.meta()["edit_guidance"] == 1.5
    assert not torch.allclose(explicit.images, base.images, atol=1e-4)
    torch.testing.assert_close(by_default.images, explicit.images, rtol=0, atol=1e-6)
    torch.testing.assert_close(off.images, base.images, rtol=0, atol=1e-6)
    assert "edit_guidance" not in off.meta()


def test_edit_guidance_and_cfg_on_s_cannot_be_combined(guided):
    from patronus_diffusion.edit import Edit, EditPlan, run_plan
    from patronus_diffusion.config import ConfigError

    x = torch.rand(1, 1, 16, 16) * 2 - 1
    guided.config.sample.guidance = 1.0  # the run decodes with CFG on s by default
    with pytest.raises(ValueError, match="cannot be combined"):
        run_plan(guided, EditPlan(images=x, edits=[Edit.set(0, 1.0)], steps=2, edit_guidance=1.0))
    guided.config.sample.edit_guidance = 1.0  # and a config with both is refused as a whole
    with pytest.raises(ConfigError, match="cannot both"):
        guided.config.validate()
