"""Checkpoints (save/load equality, damage, mismatch, full disk) and resume equality."""

import contextlib
import errno
import json
import warnings
from pathlib import Path

import pytest
import torch

from helpers import quiet_cfg

from patronus_diffusion.config import ConfigError, apply_overrides
from patronus_diffusion.models import build_model
from patronus_diffusion.training import CheckpointError, latest_checkpoint, train
from patronus_diffusion import runs as ck
from patronus_diffusion.utils.io import DiskWriteError


def _cfg(tiny_cfg, **kw):
    return quiet_cfg(tiny_cfg, **kw)


def _tensors(run):
    path = latest_checkpoint(run)
    return {name: ck.load_weights(path / name) for name in ("model.safetensors", "ema.safetensors",
                                                           "optimizer.safetensors")}


def test_resume_gives_bitwise_identical_weights(tiny_cfg, tmp_path):
    cfg = _cfg(tiny_cfg)
    cfg.unet.dropout = 0.1  # dropout draws from the global RNG, which must be restored too
    train(cfg, tmp_path / "straight", max_steps=12, progress=False)
    train(cfg, tmp_path / "halves", max_steps=6, progress=False)
    train(cfg, tmp_path / "halves", resume=True, max_steps=12, progress=False)
    a, b = _tensors(tmp_path / "straight"), _tensors(tmp_path / "halves")
    for f in a:
        assert a[f].keys() == b[f].keys()
        for k in a[f]:
            assert torch.equal(a[f][k], b[f][k]), (f, k)


def test_resume_across_an_epoch_boundary(tiny_cfg, tmp_path):
    cfg = _cfg(tiny_cfg)  # 128 train images / batch 16 = 8 steps per epoch
    train(cfg, tmp_path / "a", max_steps=11, progress=False)
    train(cfg, tmp_path / "b", max_steps=7, progress=False)
    train(cfg, tmp_path / "b", resume=True, max_steps=11, progress=False)
    a, b = _tensors(tmp_path / "a"), _tensors(tmp_path / "b")
    assert all(torch.equal(a["model.safetensors"][k], b["model.safetensors"][k]) for k in a["model.safetensors"])
    state = json.loads((latest_checkpoint(tmp_path / "b") / "state.json").read_text())
    assert state["epoch"] == 1 and state["batch_in_epoch"] == 3


def test_save_load_equality_and_config_round_trip(tiny_run):
    from patronus_diffusion.runs import read_run_config

    cfg = read_run_config(tiny_run)
    model = build_model(cfg)
    path = latest_checkpoint(tiny_run) / "ema.safetensors"
    ck.load_into(model, ck.load_weights(path), path)
    sd = ck.load_weights(path)
    for k, v in model.state_dict().items():
        assert torch.equal(v, sd[k])
    assert (tiny_run / "model.safetensors").exists()
    header = (tiny_run / "train_log.csv").read_text().splitlines()[0]
    assert "loss_q1" in header and "images_per_s" in header


def test_damaged_checkpoint_is_detected(tiny_cfg, tmp_path):
    run = tmp_path / "r"
    train(_cfg(tiny_cfg), run, max_steps=3, progress=False)
    path = latest_checkpoint(run) / "ema.safetensors"
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="damaged"):
        ck.read_checkpoint_state(latest_checkpoint(run))
    path.write_bytes(b"not a safetensors file")
    with pytest.raises(CheckpointError, match="damaged"):
        ck.load_weights(path)


def test_mismatched_config_is_refused(tiny_cfg, tmp_path):
    run = tmp_path / "r"
    train(_cfg(tiny_cfg), run, max_steps=2, progress=False)
    bigger = apply_overrides(_cfg(tiny_cfg), ["unet.base_channels=16"])
    with pytest.raises(ConfigError, match="unet.base_channels"):
        train(bigger, run, resume=True, max_steps=4, progress=False)
    with pytest.raises(CheckpointError, match="shape mismatch"):
        model = build_model(bigger)
        path = latest_checkpoint(run) / "model.safetensors"
        ck.load_into(model, ck.load_weights(path), path)
    with pytest.raises(ConfigError, match="--resume"):
        train(_cfg(tiny_cfg), run, max_steps=4, progress=False)


def test_full_disk_leaves_previous_checkpoint_intact(tiny_cfg, tmp_path, monkeypatch):
    run = tmp_path / "r"
    train(_cfg(tiny_cfg), run, max_steps=2, progress=False)
    before = latest_checkpoint(run)
    pointer = (run / "latest.json").read_text()

    def no_space(*a, **k):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(ck, "save_file", no_space)
    with pytest.raises(DiskWriteError, match="disk is full"):
        train(_cfg(tiny_cfg), run, resume=True, max_steps=4, progress=False)
    assert (run / "latest.json").read_text() == pointer
    assert latest_checkpoint(run) == before
    ck.read_checkpoint_state(before)  # still verifies
    assert not list((run / "checkpoints").glob(".tmp*"))


def test_full_disk_midway_through_a_checkpoint_keeps_the_previous_one(tiny_cfg, tmp_path, monkeypatch):
    """The disk fills after the first tensor file of the new checkpoint is written, not on the first byte."""
    run = tmp_path / "r"
    train(_cfg(tiny_cfg), run, max_steps=2, progress=False)
    before, pointer = latest_checkpoint(run), (run / "latest.json").read_text()
    original, calls = ck.save_file, {"n": 0}

    def fills_up(*a, **k):
        calls["n"] += 1
        if calls["n"] == 2:
            raise OSError(errno.ENOSPC, "No space left on device")
        return original(*a, **k)

    monkeypatch.setattr(ck, "save_file", fills_up)
    with pytest.raises(DiskWriteError, match="disk is full"):
        train(_cfg(tiny_cfg), run, resume=True, max_steps=4, progress=False)
    assert calls["n"] == 2  # one file of the new checkpoint had been written when the disk filled
    assert (run / "latest.json").read_text() == pointer and latest_checkpoint(run) == before
    ck.read_checkpoint_state(before)
    assert [p.name for p in (run / "checkpoints").iterdir()] == [before.name]  # no half-written folder left


def test_checkpoint_folders_sort_by_step_and_ignore_leftovers(tmp_path):
    root = tmp_path / "checkpoints"
    for name in ("step_999999", "step_1000000", "step_000002", "step_000002.old", ".tmp_step_000003", "step_abc"):
        (root / name).mkdir(parents=True)
    (root / "step_000007").write_text("a file, not a folder")
    assert [p.name for p in ck.checkpoint_dirs(tmp_path)] == ["step_000002", "step_999999", "step_1000000"]


def test_checkpoint_and_atomic_writes_fsync_their_directories(tiny_cfg, tmp_path, monkeypatch):
    from patronus_diffusion.utils import io

    synced = []
    monkeypatch.setattr(io, "fsync_dir", lambda p: synced.append(Path(p)))
    monkeypatch.setattr(ck, "fsync_dir", lambda p: synced.append(Path(p)))
    io.write_json(tmp_path / "a" / "latest.json", {"step": 1})
    assert synced == [tmp_path / "a"]
    synced.clear()
    final = ck.write_checkpoint_dir(tmp_path / "checkpoints" / "step_000001", {"m.safetensors": {"w": torch.ones(2)}},
                                    {"step": 1})
    assert final.parent in synced and any(p.name.startswith(".tmp_") for p in synced)


def test_fp16_grad_scaler_state_survives_a_resume(tiny_cfg, tmp_path, monkeypatch):
    """With fp16 the GradScaler's scale and growth tracker are part of the training state: a resumed run must
    continue them, not restart at the default scale (growth_interval 2 makes the difference visible)."""
    import functools

    monkeypatch.setattr(torch.amp, "GradScaler", functools.partial(torch.amp.GradScaler, growth_interval=2))
    cfg = _cfg(tiny_cfg)
    cfg.train.precision = "fp16"
    train(cfg, tmp_path / "straight", max_steps=6, progress=False)
    train(cfg, tmp_path / "cut", max_steps=3, progress=False)
    train(cfg, tmp_path / "cut", resume=True, max_steps=6, progress=False)
    a, b = (json.loads((latest_checkpoint(tmp_path / r) / "state.json").read_text())["grad_scaler"]
            for r in ("straight", "cut"))
    assert a is not None and a["scale"] > 65536.0  # it grew, so there was something to restore
    assert a == b


def test_budget_is_required(tiny_cfg, tmp_path):
    cfg = _cfg(tiny_cfg)
    cfg.train.max_steps = None
    with pytest.raises(ConfigError, match="budget"):
        train(cfg, tmp_path / "x", progress=False)


def test_loss_decreases_on_tiny_data(tiny_cfg, tmp_path):
    import csv

    train(_cfg(tiny_cfg, log_every=5), tmp_path / "r", max_steps=40, progress=False)
    rows = list(csv.DictReader(open(tmp_path / "r" / "train_log.csv")))
    assert float(rows[-1]["loss"]) < 0.6 * float(rows[0]["loss"])


def test_distinct_loss_is_logged_when_enabled(tiny_cfg, tmp_path):
    import csv

    cfg = _cfg(tiny_cfg, distinct_weight=1.0, distinct_margin=1.0, log_every=2)
    train(cfg, tmp_path / "r", max_steps=4, progress=False)
    rows = list(csv.DictReader(open(tmp_path / "r" / "train_log.csv")))
    assert float(rows[-1]["extra"]) > 0


def test_decorrelation_penalty_enters_the_loss_and_reaches_the_encoder(tiny_cfg):
    from patronus_diffusion.diffusion.schedule import NoiseSchedule
    from patronus_diffusion.models import build_model
    from patronus_diffusion.training.objectives import patronus_objective

    torch.manual_seed(0)
    cfg = _cfg(tiny_cfg, decorrelate_weight=1.0)
    model = build_model(cfg)
    schedule = NoiseSchedule.from_config(cfg.diffusion)
    x0 = torch.rand(8, cfg.data.channels, cfg.data.image_size, cfg.data.image_size) * 2 - 1
    t = torch.randint(0, schedule.num_timesteps, (8,))
    out = patronus_objective(model, x0, None, t, torch.randn_like(x0), schedule, cfg, contextlib.nullcontext())
    assert out.extra is not None and float(out.extra) > 0 and "decorrelate" in out.logs
    out.extra.backward()
    enc = [p.grad for n, p in model.named_parameters() if n.startswith("prototypes.")]
    assert any(g is not None and float(g.abs().sum()) > 0 for g in enc)
    unet = [p.grad for n, p in model.named_parameters() if not n.startswith("prototypes.")]
    assert all(g is None or float(g.abs().sum()) == 0 for g in unet)  # it acts on s only
    with pytest.raises(ConfigError, match="decorrelate_weight"):
        _cfg(tiny_cfg, decorrelate_weight=-1.0).validate()


def _torchrun(idx_root, out, steps, *overrides, resume=False):
    """Train the tiny preset on 2 CPU ranks (gloo); returns the CompletedProcess."""
    import os
    import shutil
    import subprocess
    import sys

    torchrun = shutil.which("torchrun", path=os.path.dirname(sys.executable))
    if torchrun is None:
        pytest.skip("torchrun not installed beside this python")
    env = dict(os.environ, OMP_NUM_THREADS="1")
    cmd = [torchrun, "--nproc_per_node=2", "--standalone", "-m", "patronus_diffusion.cli.main", "train",
           "--preset", "tiny", "--out", str(out), "--steps", str(steps), "--no-progress",
           "--data-root", str(idx_root), *(["--resume"] if resume else []),
           "--set", "data.limit=none", "train.sample_every=0", "train.checkpoint_every=0", *overrides]
    p = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=240)
    assert p.returncode == 0, p.stderr[-2000:]
    return p


def _max_diff(run_a, run_b):
    a, b = ck.load_weights(run_a / "model.safetensors"), ck.load_weights(run_b / "model.safetensors")
    assert a.keys() == b.keys()
    return max(float((a[k] - b[k]).abs().max()) for k in a)


@pytest.mark.slow
def test_torchrun_two_ranks_train_like_one_process(tiny_cfg, idx_root, tmp_path):
    """DDP on CPU (gloo): 2 ranks x half the batch give the weights of 1 process x the whole batch, condition
    dropout included (the drop decisions are drawn for the global batch, like t and the noise)."""
    cfg = _cfg(tiny_cfg, cond_dropout=0.3)
    train(cfg, tmp_path / "single", max_steps=4, progress=False)
    p = _torchrun(idx_root, tmp_path / "ddp", 4, "train.cond_dropout=0.3")
    assert p.stdout.count('"step": 4') == 1  # only rank 0 reports
    worst = _max_diff(tmp_path / "single", tmp_path / "ddp")
    train(_cfg(tiny_cfg, cond_dropout=0.0), tmp_path / "nodrop", max_steps=4, progress=False)
    drop_matters = _max_diff(tmp_path / "single", tmp_path / "nodrop")  # what the drop decisions change
    train(cfg, tmp_path / "three", max_steps=3, progress=False)
    one_step = _max_diff(tmp_path / "single", tmp_path / "three")  # what a single step changes
    assert worst < 1e-4 < min(one_step, drop_matters), (worst, one_step, drop_matters)


@pytest.mark.slow
def test_torchrun_resume_with_dropout_is_bitwise(idx_root, tmp_path):
    """2 ranks with dropout: 4 steps straight == 2 steps + --resume + 2 steps, bitwise (each rank's dropout
    stream is a function of (seed, rank, step), not a state only rank 0 could save)."""
    _torchrun(idx_root, tmp_path / "straight", 4, "unet.dropout=0.3")
    _torchrun(idx_root, tmp_path / "halves", 2, "unet.dropout=0.3", "train.checkpoint_every=2")
    _torchrun(idx_root, tmp_path / "halves", 4, "unet.dropout=0.3", "train.checkpoint_every=2", resume=True)
    assert _max_diff(tmp_path / "straight", tmp_path / "halves") == 0.0


def test_per_step_seeds_differ_between_ranks_and_steps():
    from patronus_diffusion.training.trainer import step_seed

    seeds = {step_seed(0, r, k) for r in range(8) for k in range(2000)}
    assert len(seeds) == 8 * 2000
    assert step_seed(1, 0, 0) != step_seed(0, 0, 0)


def test_atomic_writes_get_normal_file_permissions(tmp_path):
    import os

    from patronus_diffusion.utils.io import write_json

    write_json(tmp_path / "a.json", {"x": 1})
    umask = os.umask(0)
    os.umask(umask)
    assert (tmp_path / "a.json").stat().st_mode & 0o777 == 0o666 & ~umask


def test_checkpoint_files_get_normal_permissions(tiny_run):
    import os

    umask = os.umask(0)
    os.umask(umask)
    for f in list(latest_checkpoint(tiny_run).iterdir()) + [tiny_run / "model.safetensors", tiny_run / "config.json"]:
        assert f.stat().st_mode & 0o777 == 0o666 & ~umask, f


def test_patch_init_runs_at_a_fresh_start_only(tiny_cfg, tmp_path):
    cfg = _cfg(tiny_cfg)
    cfg.prototypes.init = "patches"
    train(cfg, tmp_path / "a", max_steps=2, progress=False)
    train(cfg, tmp_path / "b", max_steps=1, progress=False)
    train(cfg, tmp_path / "b", resume=True, max_steps=2, progress=False)  # resume must not re-initialise
    a, b = _tensors(tmp_path / "a"), _tensors(tmp_path / "b")
    assert all(torch.equal(a["model.safetensors"][k], b["model.safetensors"][k]) for k in a["model.safetensors"])
    uniform = _cfg(tiny_cfg)
    train(uniform, tmp_path / "u", max_steps=2, progress=False)
    u = _tensors(tmp_path / "u")["model.safetensors"]["prototypes.prototypes"]
    assert not torch.allclose(u, a["model.safetensors"]["prototypes.prototypes"])


def test_init_from_starts_from_the_source_ema_weights(tiny_cfg, tmp_path):
    cfg = _cfg(tiny_cfg)
    train(cfg, tmp_path / "src", max_steps=3, progress=False)
    frozen = _cfg(tiny_cfg)
    frozen.train.lr = 0.0  # no update: the fine-tuned weights must be exactly the source's EMA weights
    train(frozen, tmp_path / "ft", max_steps=1, progress=False, init_from=tmp_path / "src")
    src_ema = _tensors(tmp_path / "src")["ema.safetensors"]
    ft = _tensors(tmp_path / "ft")["model.safetensors"]
    assert all(torch.equal(src_ema[k], ft[k]) for k in src_ema)
    assert json.loads((latest_checkpoint(tmp_path / "ft") / "state.json").read_text())["step"] == 1
    record = json.loads((tmp_path / "ft" / "init_from.json").read_text())
    assert record["source"] == str(tmp_path / "src") and len(record["sha256"]) == 64
    with pytest.raises(ConfigError, match="unet.base_channels"):
        train(apply_overrides(_cfg(tiny_cfg), ["unet.base_channels=16"]), tmp_path / "bad", max_steps=1,
              progress=False, init_from=tmp_path / "src")


def test_cli_init_from_without_preset_inherits_the_source_network(tiny_cfg, tmp_path):
    """`patronus train --init-from RUN` with no --preset fine-tunes with RUN's own config (here a
    non-default cond_norm and the tiny network), with fresh budgets."""
    from patronus_diffusion.cli.main import main
    from patronus_diffusion.runs import read_run_config

    src = apply_overrides(_cfg(tiny_cfg), ["unet.cond_norm=layer"])
    train(src, tmp_path / "src", max_steps=2, progress=False)
    assert main(["train", "--init-from", str(tmp_path / "src"), "--out", str(tmp_path / "ft"), "--steps", "1",
                 "--no-progress"]) == 0
    got = read_run_config(tmp_path / "ft")
    assert got.unet.cond_norm == "layer" and got.unet.base_channels == tiny_cfg.unet.base_channels
    assert got.train.max_steps == 1


def test_ctrl_c_stops_at_a_step_boundary_and_resumes_bitwise(tiny_cfg, tmp_path, monkeypatch):
    """SIGINT during step 5 finishes that step, saves a checkpoint whose weights match its step counter, and
    resuming reproduces the straight run exactly (no batch applied twice)."""
    import signal

    from patronus_diffusion.training.ema import EMA

    cfg = _cfg(tiny_cfg, log_every=1)
    train(cfg, tmp_path / "straight", max_steps=9, progress=False)
    original = EMA.update
    calls = {"n": 0}

    def update_then_interrupt(self, model):  # runs after the optimiser step, before the step counter moves
        original(self, model)
        calls["n"] += 1
        if calls["n"] == 5:
            signal.raise_signal(signal.SIGINT)

    monkeypatch.setattr(EMA, "update", update_then_interrupt)
    with pytest.raises(KeyboardInterrupt):
        train(cfg, tmp_path / "cut", max_steps=9, progress=False)
    state = json.loads((latest_checkpoint(tmp_path / "cut") / "state.json").read_text())
    assert state["step"] == 5
    monkeypatch.setattr(EMA, "update", original)
    # a stale log row written after the checkpoint must not survive the resume
    with open(tmp_path / "cut" / "train_log.csv", "a") as f:
        f.write("6,0,0,999\n")
    train(cfg, tmp_path / "cut", resume=True, max_steps=9, progress=False)
    a, b = _tensors(tmp_path / "straight"), _tensors(tmp_path / "cut")
    assert all(torch.equal(a["model.safetensors"][k], b["model.safetensors"][k]) for k in a["model.safetensors"])
    steps = [r.split(",")[0] for r in (tmp_path / "cut" / "train_log.csv").read_text().splitlines()[1:]]
    assert steps == [str(i) for i in range(1, 10)]


def test_a_second_ctrl_c_inside_the_update_saves_nothing_and_resume_stays_bitwise(tiny_cfg, tmp_path, monkeypatch):
    """An immediate interrupt after the optimiser step but before the counter moves (what a second Ctrl-C can
    do): no checkpoint may be written then, since its weights would be a step ahead of its step count."""
    from patronus_diffusion.training.ema import EMA

    cfg = _cfg(tiny_cfg, log_every=1)
    cfg.train.checkpoint_every = 2
    train(cfg, tmp_path / "straight", max_steps=7, progress=False)
    original = EMA.update
    calls = {"n": 0}

    def update_then_stop(self, model):
        original(self, model)
        calls["n"] += 1
        if calls["n"] == 5:
            raise KeyboardInterrupt  # inside step 5, like a second SIGINT

    monkeypatch.setattr(EMA, "update", update_then_stop)
    with pytest.raises(KeyboardInterrupt):
        train(cfg, tmp_path / "cut", max_steps=7, progress=False)
    state = json.loads((latest_checkpoint(tmp_path / "cut") / "state.json").read_text())
    assert state["step"] == 4  # the last periodic checkpoint, not a step-5 counter with step-5 weights + 1
    monkeypatch.setattr(EMA, "update", original)
    train(cfg, tmp_path / "cut", resume=True, max_steps=7, progress=False)
    a, b = _tensors(tmp_path / "straight"), _tensors(tmp_path / "cut")
    assert all(torch.equal(a["model.safetensors"][k], b["model.safetensors"][k]) for k in a["model.safetensors"])


def _train_cli(idx_root, out, steps, *, resume=False):
    import os
    import subprocess
    import sys

    cmd = [sys.executable, "-m", "patronus_diffusion.cli.main", "train", "--preset", "tiny", "--out", str(out),
           "--steps", str(steps), "--no-progress", "--data-root", str(idx_root),
           *(["--resume-if-present"] if resume else []),
           "--set", "data.limit=none", "train.sample_every=0", "train.checkpoint_every=1", "train.log_every=1",
           "train.keep_checkpoints=2", "unet.dropout=0.2"]
    return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            env=dict(os.environ, OMP_NUM_THREADS="1"))


@pytest.mark.slow
def test_kill_9_at_random_moments_then_resume_is_bitwise(idx_root, tmp_path):
    """SIGKILL lands anywhere (mid-step, mid-checkpoint write, at start-up); re-running with resume continues
    from the last complete checkpoint, and the end result is bitwise the uninterrupted run's, log included."""
    import random
    import time

    steps = 14
    t0 = time.time()
    straight = _train_cli(idx_root, tmp_path / "straight", steps)
    assert straight.wait(timeout=300) == 0, straight.stderr.read()[-2000:]
    duration = time.time() - t0
    rng = random.Random(0)
    kills = 0
    for _ in range(4):  # four interrupted attempts at random moments of a whole run's duration
        p = _train_cli(idx_root, tmp_path / "killed", steps, resume=True)
        try:
            p.wait(timeout=rng.uniform(0.2, 0.9) * duration)
        except Exception:  # still running: kill it hard
            p.kill()
            p.wait()
            kills += 1
    p = _train_cli(idx_root, tmp_path / "killed", steps, resume=True)
    assert p.wait(timeout=300) == 0, p.stderr.read()[-2000:]
    assert kills >= 1  # the test has to have interrupted something to mean anything
    a, b = _tensors(tmp_path / "straight"), _tensors(tmp_path / "killed")
    for f in a:
        for k in a[f]:
            assert torch.equal(a[f][k], b[f][k]), (f, k)

    def log(run):  # step, epoch, images seen, loss: what must not depend on interruptions
        rows = (run / "train_log.csv").read_text().splitlines()[1:]
        return [r.split(",")[:4] for r in rows]

    assert log(tmp_path / "killed") == log(tmp_path / "straight")
    assert not [p for p in (tmp_path / "killed" / "checkpoints").iterdir() if not p.name.startswith("step_")]


# ------------------------------------------------------------------------------------ data-parallel slicing
def _interleave(parts):
    """Rows rank::world of each part back into one global batch."""
    world = len(parts)
    out = torch.empty((sum(p.shape[0] for p in parts), *parts[0].shape[1:]), dtype=parts[0].dtype)
    for r, p in enumerate(parts):
        out[r::world] = p
    return out


def test_each_rank_decodes_only_its_slice_and_the_slices_make_the_global_batch(tiny_cfg):
    from patronus_diffusion.data import load_dataset
    from patronus_diffusion.data.datasets import iterate_batches

    ds = load_dataset(tiny_cfg.data, "train")
    requested = []
    original = ds.get_batch
    ds.get_batch = lambda idx: (requested.append(len(idx)), original(idx))[1]
    whole = list(iterate_batches(ds, 12, seed=3, epoch=1, start_batch=1))
    requested.clear()
    world = 3
    ranks = [list(iterate_batches(ds, 12, seed=3, epoch=1, start_batch=1, shard=(r, world))) for r in range(world)]
    assert set(requested) == {4}  # a rank never decodes the global batch of 12
    for k, (b_idx, x, y) in enumerate(whole):
        assert all(rk[k][0] == b_idx for rk in ranks)
        assert torch.equal(_interleave([rk[k][1] for rk in ranks]), x)
        assert torch.equal(_interleave([rk[k][2] for rk in ranks]), y)


def test_random_draws_are_global_then_sliced_with_low_t_folding_on_the_global_batch(tiny_cfg):
    from patronus_diffusion.diffusion.schedule import NoiseSchedule
    from patronus_diffusion.training.objectives import draw_batch

    cfg = tiny_cfg.copy()
    cfg.family = "protodiffusion"
    cfg.protodiff.low_t_fraction, cfg.protodiff.low_t_max = 0.5, 5
    schedule = NoiseSchedule.from_config(cfg.diffusion)
    draws = draw_batch(torch.Generator().manual_seed(0), torch.Size((12, 1, 16, 16)), schedule, cfg)
    assert (draws.t[:6] < 5).all()  # the first half of the *global* batch is folded, as in one process
    world = 4
    parts = [draws.slice(r, world) for r in range(world)]
    for name in ("t", "noise", "cond_u"):
        assert torch.equal(_interleave([getattr(p, name) for p in parts]), getattr(draws, name)), name
    again = draw_batch(torch.Generator().manual_seed(0), torch.Size((12, 1, 16, 16)), schedule, cfg)
    assert torch.equal(again.noise, draws.noise)  # every rank draws the same global numbers from the same seed


# ------------------------------------------------------------------ a fault at any rename of a checkpoint write
class _Crash(BaseException):
    """A crash (power cut, kill -9) at a rename: nothing after it runs, no except-OSError clean-up either."""


def _renames_of_checkpoints(src, dst) -> bool:
    return any("checkpoints" in Path(p).parts or Path(p).name == "latest.json" for p in (src, dst))


def _fault_at(monkeypatch, k: int | None, kind: str, which=_renames_of_checkpoints) -> list:
    """os.replace / os.rename raise at the k-th call (1-based) that renames a checkpoint folder or latest.json
    (``which``; k None: count only); returns the list of those calls."""
    import os

    calls = []
    for name in ("replace", "rename"):
        real = getattr(os, name)

        def patched(src, dst, *a, _real=real, **kw):
            if which(src, dst):
                calls.append((Path(src).name, Path(dst).name))
                if len(calls) == k:
                    if kind == "crash":
                        raise _Crash(f"crash at rename {k}: {Path(src).name} -> {Path(dst).name}")
                    raise OSError(errno.EIO, "Input/output error")
            return _real(src, dst, *a, **kw)

        monkeypatch.setattr(os, name, patched)
    return calls


def _newest_complete_step(run) -> int:
    """The oracle: the highest step of which some folder in checkpoints/ (step_N, .tmp_step_N or step_N.old)
    is complete, by its own checksums."""
    import re

    best = -1
    for p in (Path(run) / "checkpoints").iterdir():
        m = re.fullmatch(r"(?:\.tmp_)?step_(\d+)(?:\.old)?", p.name)
        if m and p.is_dir():
            try:
                ck.read_checkpoint_state(p)
            except CheckpointError:
                continue
            best = max(best, int(m.group(1)))
    return best


@pytest.mark.parametrize("kind", ["crash", "error"])
def test_a_fault_at_any_checkpoint_rename_of_a_run_resumes_from_the_newest_complete_step(tiny_cfg, tmp_path,
                                                                                         monkeypatch, kind):
    """Training 4 -> 6 with a checkpoint every 2 steps, interrupted at each rename of its checkpoint writes in
    turn: the resume starts from the newest complete step (warning when latest.json did not name it), puts it
    back in place and ends bitwise equal to the straight run."""
    import shutil
    import warnings

    cfg = _cfg(tiny_cfg, checkpoint_every=2)
    train(cfg, tmp_path / "straight", max_steps=6, progress=False)
    train(cfg, tmp_path / "base", max_steps=4, progress=False)
    shutil.copytree(tmp_path / "base", tmp_path / "clean")
    with monkeypatch.context() as m:
        renames = _fault_at(m, None, kind)
        train(cfg, tmp_path / "clean", resume=True, max_steps=6, progress=False)
    assert renames == [(".tmp_step_000006", "step_000006"), (renames[1][0], "latest.json")]  # no re-save of 6
    want = _tensors(tmp_path / "straight")
    for k in range(1, len(renames) + 1):
        run = tmp_path / f"fault{k}"
        shutil.copytree(tmp_path / "base", run)
        with monkeypatch.context() as m:
            _fault_at(m, k, kind)
            with pytest.raises((_Crash, DiskWriteError)):
                train(cfg, run, resume=True, max_steps=6, progress=False)
        newest = _newest_complete_step(run)
        named = json.loads((run / "latest.json").read_text())["step"]
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            result = train(cfg, run, resume=True, max_steps=6, progress=False)
        assert result.steps_this_invocation == 6 - newest, (k, newest)
        interrupted = [w for w in caught if "interrupted" in str(w.message)]
        assert bool(interrupted) == (newest != named), (k, [str(w.message) for w in caught])
        got = _tensors(run)
        assert all(torch.equal(want[f][t], got[f][t]) for f in want for t in want[f]), k
        left = sorted(p.name for p in (run / "checkpoints").iterdir())
        assert "step_000006" in left and all(n.startswith("step_") and n[5:].isdigit() for n in left), (k, left)
        assert json.loads((run / "latest.json").read_text())["step"] == 6


def _tiny_save(run, step, model, cfg):
    with torch.no_grad():
        model.weight.fill_(float(step))
    return ck.save_checkpoint(run, step=step, model=model, ema=model, optimizer=None, config=cfg,
                              state={"epoch": 0}, keep=2)


@pytest.mark.parametrize("kind", ["crash", "error"])
@pytest.mark.parametrize("op", ["rewrite step 4", "write step 6"])
def test_a_fault_at_any_rename_of_a_checkpoint_write_leaves_the_newest_complete_step_found(tiny_cfg, tmp_path,
                                                                                          monkeypatch, kind, op):
    """The re-save of a step already on disk (two folder renames, then latest.json) and the write of a new
    step (one rename, then latest.json), interrupted at each rename in turn: a reader finds a complete
    checkpoint, never older than the one latest.json named before; a resume (repair) finds the newest
    complete step, puts it back under its own name and points latest.json at it; a warning says when the
    pointer dangled."""
    import shutil
    import warnings

    model = torch.nn.Linear(3, 2)
    base = tmp_path / "base"
    for step in (2, 4):
        _tiny_save(base, step, model, tiny_cfg)
    target = 4 if op == "rewrite step 4" else 6
    shutil.copytree(base, tmp_path / "clean")
    with monkeypatch.context() as m:
        renames = _fault_at(m, None, kind)
        _tiny_save(tmp_path / "clean", target, model, tiny_cfg)
    assert len(renames) == (3 if target == 4 else 2), renames
    for k in range(1, len(renames) + 1):
        run = tmp_path / f"fault{k}"
        shutil.copytree(base, run)
        with monkeypatch.context() as m:
            _fault_at(m, k, kind)
            with pytest.raises((_Crash, DiskWriteError)):
                _tiny_save(run, target, model, tiny_cfg)
        newest = _newest_complete_step(run)
        assert newest in (4, target), (k, newest)
        named = run / json.loads((run / "latest.json").read_text())["checkpoint"]
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            read = ck.latest_checkpoint(run)
        state = ck.read_checkpoint_state(read)  # complete
        assert 4 <= state["step"] <= newest, (k, read)
        assert bool(caught) == (read != named), (k, read, [str(w.message) for w in caught])
        if caught:
            assert "interrupted" in str(caught[0].message)
            assert ("which is missing" in str(caught[0].message)) == (not named.is_dir())
        assert ck.load_weights(read / "model.safetensors")["weight"].eq(float(state["step"])).all()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            resumed = ck.latest_checkpoint(run, repair=True)
        assert resumed == run / "checkpoints" / f"step_{newest:06d}", (k, resumed)
        assert ck.read_checkpoint_state(resumed)["step"] == newest
        assert json.loads((run / "latest.json").read_text())["checkpoint"] == f"checkpoints/step_{newest:06d}"
        left = [p.name for p in (run / "checkpoints").iterdir()]
        assert all(n.startswith("step_") and n[5:].isdigit() for n in left), (k, left)  # no .tmp_/.old left
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # repaired: the pointer names a folder that is there
            assert ck.latest_checkpoint(run) == resumed


def test_the_trainer_never_rewrites_a_step_it_already_saved(tiny_cfg, tmp_path, monkeypatch):
    """The final checkpoint of a run whose last step a periodic checkpoint saved is not written again (that
    re-save replaced the folder with two renames, and a crash between them lost the step)."""
    from patronus_diffusion.training import trainer

    saved = []
    real = trainer.save_checkpoint
    monkeypatch.setattr(trainer, "save_checkpoint", lambda run, *, step, **kw: (saved.append(step),
                                                                               real(run, step=step, **kw))[1])
    cfg = _cfg(tiny_cfg, checkpoint_every=2)
    train(cfg, tmp_path / "r", max_steps=4, progress=False)
    assert saved == [2, 4]
    train(cfg, tmp_path / "r", resume=True, max_steps=4, progress=False)  # nothing left to train
    train(cfg, tmp_path / "r", resume=True, max_steps=5, progress=False)
    assert saved == [2, 4, 5]


def test_a_dangling_pointer_warns_and_falls_back_to_the_newest_complete_step(tiny_cfg, tmp_path):
    import shutil

    run = tmp_path / "r"
    train(_cfg(tiny_cfg, checkpoint_every=2), run, max_steps=4, progress=False)
    shutil.rmtree(run / "checkpoints" / "step_000004")
    with pytest.warns(UserWarning, match=r"latest.json names checkpoints/step_000004, which is missing.*step_000002"):
        assert latest_checkpoint(run) == run / "checkpoints" / "step_000002"
    with pytest.warns(UserWarning, match="which is missing"):
        result = train(_cfg(tiny_cfg, checkpoint_every=2), run, resume=True, max_steps=4, progress=False)
    assert result.steps_this_invocation == 2
    shutil.rmtree(run / "checkpoints")
    with pytest.warns(UserWarning, match="no complete checkpoint is left"):
        assert latest_checkpoint(run) is None


@pytest.mark.parametrize("kind", ["crash", "error"])
def test_a_fault_at_any_rename_of_a_prior_checkpoint_resumes_from_the_newest_complete_step(tiny_run, tmp_path,
                                                                                          monkeypatch, kind):
    """The prior's checkpoint/ folder is replaced at every save (two renames): interrupted at each, the resume
    starts from the newest complete copy (it silently started over at step 0 when checkpoint/ was missing)."""
    import dataclasses
    import re
    import shutil

    from patronus_diffusion import Patronus
    from patronus_diffusion.models.prior import PriorConfig
    from patronus_diffusion.training import prior as prior_mod

    cfg = PriorConfig(hidden=16, blocks=1, time_dim=8, batch_size=32, max_steps=20, log_every=5,
                      checkpoint_every=10, warmup_steps=2, sample_steps=2)
    pat = Patronus.load(tiny_run, device="cpu")
    cache = tmp_path / "cache"

    def fit(out, **kw):
        return prior_mod.train_prior(pat, out, dataclasses.replace(cfg), cache_dir=cache, progress=False, **kw)

    fit(tmp_path / "base", max_steps=10)
    starts = []
    real_optimise = prior_mod.optimise
    monkeypatch.setattr(prior_mod, "optimise", lambda *a, **kw: (starts.append(a[7]), real_optimise(*a, **kw))[1])

    def is_prior_checkpoint(src, dst):
        return any(re.fullmatch(r"(\.tmp_)?checkpoint(\.old)?", Path(p).name) for p in (src, dst))

    shutil.copytree(tmp_path / "base", tmp_path / "clean")
    with monkeypatch.context() as m:
        renames = _fault_at(m, None, kind, is_prior_checkpoint)
        fit(tmp_path / "clean", resume=True, max_steps=20)
    assert renames == [("checkpoint", "checkpoint.old"), (".tmp_checkpoint", "checkpoint")]  # step 20, once
    for k in range(1, len(renames) + 1):
        out = tmp_path / f"fault{k}"
        shutil.copytree(tmp_path / "base", out)
        with monkeypatch.context() as m:
            _fault_at(m, k, kind, is_prior_checkpoint)
            with pytest.raises((_Crash, DiskWriteError)):
                fit(out, resume=True, max_steps=20)
        complete = {}
        for name in ("checkpoint", ".tmp_checkpoint", "checkpoint.old"):
            try:
                complete[name] = ck.read_checkpoint_state(out / name)["step"]
            except CheckpointError:
                pass
        starts.clear()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            fit(out, resume=True, max_steps=20)
        assert starts == [max(complete.values())], (k, complete, starts)
        assert sorted(p.name for p in out.iterdir() if "checkpoint" in p.name) == ["checkpoint"], k
        assert ck.read_checkpoint_state(out / "checkpoint")["step"] == 20
