"""Learning-rate schedules: ProtoDiffusion's warm-up + cosine, continuous and the reference's own trace."""

import csv
import math

import pytest

from patronus_diffusion.training.lr import protodiff_lr, warmup_lr

# The reference code's LR at 1500 epochs, base 2e-4, as executed (spec section 3.1)
REFERENCE_TRACE = {0: 2.0e-4, 75: 5.0e-4, 76: 2.0e-4, 300: 1.89e-4, 750: 1.16e-4, 1000: 6.4e-5, 1250: 2.2e-5,
                   1499: 1.3e-6}


def test_reference_trace_is_reproduced_behind_its_flag():
    for epoch, want in REFERENCE_TRACE.items():
        got = protodiff_lr(epoch, 2e-4, 1500, reference_trace=True)
        assert got == pytest.approx(want, rel=0.03), (epoch, got, want)


def test_continuous_version_has_no_jump_and_ends_at_zero():
    lrs = [protodiff_lr(e, 2e-4, 1500) for e in range(1500)]
    assert lrs[0] == pytest.approx(2e-4) and lrs[75] == pytest.approx(5e-4) == max(lrs)
    assert all(abs(b - a) <= 4e-6 + 1e-12 for a, b in zip(lrs, lrs[1:]))  # warm-up steps of 3e-4 / 75, no jump
    assert abs(lrs[76] - lrs[75]) < 1e-7  # the cosine starts where the warm-up ends (the reference drops to 2e-4)
    assert lrs[-1] < 1e-8 and all(b <= a for a, b in zip(lrs[75:], lrs[76:]))


def test_warmup_is_linear_then_constant():
    assert [warmup_lr(s, 1.0, 4) for s in range(6)] == [0.25, 0.5, 0.75, 1.0, 1.0, 1.0]
    assert warmup_lr(0, 3.0, 0) == 3.0


@pytest.mark.parametrize("schedule", ["protodiff-reference"])
def test_a_short_run_follows_the_schedule_step_by_step(tiny_cfg, tmp_path, schedule):
    from patronus_diffusion.training import train

    cfg = tiny_cfg.copy()
    cfg.train.sample_every = cfg.train.checkpoint_every = 0
    cfg.train.log_every = 1
    cfg.train.lr_schedule = schedule
    cfg.train.max_steps = None
    train(cfg, tmp_path / "r", max_epochs=20, progress=False)  # 128 images / 16 = 8 steps per epoch
    rows = list(csv.DictReader(open(tmp_path / "r" / "train_log.csv")))
    assert len(rows) == 160
    for r in rows:
        step = int(r["step"]) - 1  # the row of step k logs the LR its update used
        want = protodiff_lr(step // 8, cfg.train.lr, 20, reference_trace=schedule == "protodiff-reference")
        assert math.isclose(float(r["lr"]), want, rel_tol=1e-9), (step, r["lr"], want)
