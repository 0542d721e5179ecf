"""Schedule values, sampler golden values and cross-checks, DDIM inversion round trip."""

import math

import pytest
import torch

from patronus_diffusion.config import DiffusionConfig
from patronus_diffusion.diffusion.inversion import ddim_invert, edict_invert
from patronus_diffusion.diffusion.samplers import SAMPLERS, ddim, ddpm, dpmpp_2m, edict, edict_state, get_sampler
from patronus_diffusion.diffusion.schedule import NoiseSchedule

SCHED = NoiseSchedule.from_config(DiffusionConfig())


def test_linear_schedule_values():
    b = SCHED.betas
    assert b.shape == (1000,) and math.isclose(float(b[0]), 1e-4) and math.isclose(float(b[-1]), 0.02)
    ab = SCHED.alphas_cumprod
    torch.testing.assert_close(ab, torch.cumprod(1 - b, 0))
    assert math.isclose(float(ab[-1]), 4.0358e-5, rel_tol=1e-3)  # well-known value of the DDPM schedule
    assert SCHED.alpha_bar(-1) == 1.0


def test_timestep_spacing():
    assert SCHED.timesteps(5) == [999, 749, 500, 250, 0]
    assert SCHED.timesteps(1000) == list(range(999, -1, -1))
    with pytest.raises(ValueError):
        SCHED.timesteps(0)
    with pytest.raises(ValueError):
        SCHED.timesteps([10, 20])


def gaussian_eps_model(mu: torch.Tensor, var: float):
    """Exact eps-predictor for data ~ N(mu, var I): E[eps | x_t] = sqrt(1-ab) (x_t - sqrt(ab) mu) / (ab var + 1 - ab)."""
    ab_all = SCHED.alphas_cumprod.float()

    def fn(x, t):
        ab = ab_all[t].view(-1, *([1] * (x.ndim - 1)))
        return (1 - ab).sqrt() * (x - ab.sqrt() * mu) / (ab * var + 1 - ab)

    return fn


@pytest.mark.parametrize("name", sorted(SAMPLERS) + ["edict"])
def test_samplers_share_one_signature_and_hit_the_data_distribution(name):
    torch.manual_seed(0)
    mu = torch.full((1, 2, 4, 4), 0.5)
    fn = gaussian_eps_model(mu, var=0.04)
    x_T = torch.randn(512, 2, 4, 4)
    # Discretisation shrinks the spread of this narrow Gaussian at coarse steps (DDIM-50 gives 0.177,
    # DDPM-50 with beta_tilde 0.158); with enough steps every sampler must reach std 0.2.
    steps = 1000 if name == "ddpm" else 200
    if name == "edict":
        x_T = edict_state(x_T)  # EDICT decodes a two-sequence state; plain noise starts with x = y
    seen = []
    out = get_sampler(name)(fn, x_T, SCHED, steps, generator=torch.Generator().manual_seed(0),
                         callback=lambda info: seen.append(info["t"]), progress=False)
    assert seen == SCHED.timesteps(steps)
    assert abs(float(out.mean()) - 0.5) < 0.03
    assert abs(float(out.std()) - 0.2) < 0.01


def test_ddim_eta1_equals_ddpm_posterior_variance():
    torch.manual_seed(0)
    fn = gaussian_eps_model(torch.zeros(1, 1, 4, 4), 0.5)
    x_T = torch.randn(4, 1, 4, 4)
    a = ddim(fn, x_T, SCHED, 20, eta=1.0, generator=torch.Generator().manual_seed(3))
    b = ddpm(fn, x_T, SCHED, 20, generator=torch.Generator().manual_seed(3), variance="small")
    torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)


def test_ddim_golden_value_with_constant_eps():
    """eps_hat = 0 means x0_hat = x_t / sqrt(abar_t) at every step: the result is x_T / sqrt(abar_999)."""
    x_T = torch.ones(1, 1, 2, 2)
    out = ddim(lambda x, t: torch.zeros_like(x), x_T, SCHED, 10)
    torch.testing.assert_close(out, x_T / math.sqrt(SCHED.alpha_bar(999)))


try:  # only the diffusers cross-checks skip without it; the rest of this file always runs
    import diffusers
except ImportError:
    diffusers = None
needs_diffusers = pytest.mark.skipif(diffusers is None, reason="diffusers cross-check (pip install '.[crosscheck]')")


def _dummy(x, t):
    return torch.sin(3 * x) * 0.5 + 0.001 * t.float().view(-1, 1, 1, 1)


def _diffusers_loop(sched, x):
    for t in sched.timesteps:
        eps = _dummy(x, torch.full((x.shape[0],), int(t)))
        x = sched.step(eps, t, x).prev_sample
    return x


@needs_diffusers
def test_ddim_matches_diffusers_ddim_scheduler():
    ref = diffusers.DDIMScheduler(num_train_timesteps=1000, beta_schedule="linear", clip_sample=False,
                                  set_alpha_to_one=True, timestep_spacing="trailing")
    ref.set_timesteps(10)
    x = torch.randn(2, 1, 8, 8, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    ours = ddim(_dummy, x, SCHED, ref.timesteps.tolist())
    torch.testing.assert_close(ours, _diffusers_loop(ref, x).to(ours.dtype), rtol=1e-4, atol=1e-4)


@needs_diffusers
@pytest.mark.parametrize("steps", [8, 20])
def test_dpmpp_2m_matches_diffusers_dpm_solver(steps):
    ref = diffusers.DPMSolverMultistepScheduler(num_train_timesteps=1000, beta_schedule="linear",
                                                algorithm_type="dpmsolver++", solver_order=2,
                                                final_sigmas_type="zero", lower_order_final=True)
    ref.set_timesteps(steps)
    x = torch.randn(2, 1, 8, 8, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    ours = dpmpp_2m(_dummy, x, SCHED, ref.timesteps.tolist())
    torch.testing.assert_close(ours, _diffusers_loop(ref, x).to(ours.dtype), rtol=1e-4, atol=1e-4)


# ------------------------------------------------------------------------------ inversion
def test_inversion_round_trip_error_shrinks_with_steps():
    torch.manual_seed(0)
    mu = torch.zeros(1, 1, 8, 8)
    fn = gaussian_eps_model(mu, var=0.25)
    x0 = (torch.rand(6, 1, 8, 8) * 2 - 1) * 0.9
    errs = {}
    for k in (10, 50, 200):
        x_T = ddim_invert(fn, x0, SCHED, k)
        rec = ddim(fn, x_T, SCHED, k)
        errs[k] = float((rec - x0).abs().max())
    assert errs[200] < errs[50] < errs[10]
    assert errs[200] < 0.02  # first-order scheme: measured 0.27 / 0.049 / 0.012 at 10 / 50 / 200 steps


@pytest.mark.parametrize("steps", [5, 10, 20])
def test_edict_inversion_is_exact_at_few_steps_even_for_a_nonlinear_model(steps):
    torch.manual_seed(0)
    w = torch.randn(3, 3, dtype=torch.float64) * 0.5

    def fn(x, t):  # a nonlinear, t-dependent eps model: exactness must not rest on linearity
        scale = (1 + t.double() / 1000).view(-1, 1, 1, 1)
        return torch.tanh(torch.einsum("ij,bjhw->bihw", w, x) * scale)

    x0 = (torch.rand(4, 3, 8, 8, dtype=torch.float64) * 2 - 1) * 0.9
    state = edict_invert(fn, x0, SCHED, steps)
    assert state.shape == (4, 6, 8, 8)
    rec = edict(fn, state, SCHED, steps)
    assert float((rec - x0).abs().max()) < 1e-8
    # plain DDIM inversion of the same model at the same steps is far from exact
    assert float((ddim(fn, ddim_invert(fn, x0, SCHED, steps), SCHED, steps) - x0).abs().max()) > 1e-3


@pytest.mark.parametrize("name", ["ddim", "edict"])
def test_reported_x0_is_the_model_prediction_at_every_step(name):
    """For data that is one point x*, the exact eps model predicts x0 = x* from any x_t: every step's reported x0
    must be x* (EDICT's too, though its state mixes two sequences)."""
    star = torch.linspace(-0.8, 0.8, 16).view(1, 1, 4, 4)
    ab_all = SCHED.alphas_cumprod.double()

    def fn(x, t):
        ab = ab_all[t].view(-1, 1, 1, 1)
        return (x - ab.sqrt() * star.double()) / (1 - ab).sqrt()

    x_T = torch.randn(3, 1, 4, 4, dtype=torch.float64)
    if name == "edict":
        x_T = edict_state(x_T, torch.randn(3, 1, 4, 4, dtype=torch.float64))
    seen = []
    get_sampler(name)(fn, x_T, SCHED, 6, callback=lambda info: seen.append(info["x0"]))
    assert len(seen) == 6 and all(torch.allclose(x0, star.double().expand_as(x0), atol=1e-6) for x0 in seen)


def test_edict_rejects_a_plain_noise_tensor_of_odd_channels():
    with pytest.raises(Exception, match="edict_state"):
        edict(lambda x, t: x, torch.zeros(1, 1, 4, 4), SCHED, 3)


def test_inversion_is_deterministic_and_reports_every_step():
    fn = gaussian_eps_model(torch.zeros(1, 1, 4, 4), 0.3)
    x0 = torch.rand(2, 1, 4, 4)
    seen = []
    a = ddim_invert(fn, x0, SCHED, 7, callback=lambda i: seen.append(i["t"]))
    b = ddim_invert(fn, x0, SCHED, 7)
    assert torch.equal(a, b)
    assert seen == sorted(SCHED.timesteps(7))
