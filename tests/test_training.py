"""Checkpoints (save/load equality, damage, mismatch, full disk) and resume equality."""

import contextlib
import errno
import json
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
