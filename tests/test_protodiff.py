"""ProtoDiffusion: classifier math, class-embedding modes, guidance, prototype files, trainer and CLI."""

import csv
import dataclasses
import json
import math

import pytest
import torch

from patronus_diffusion.config import ConfigError, apply_overrides
from patronus_diffusion.diffusion.guidance import (class_guided_model_fn, combine_guidance, guided_model_fn,
                                                  sample_class_guided)
from patronus_diffusion.diffusion.schedule import NoiseSchedule
from patronus_diffusion.models import build_model
from patronus_diffusion.models.protodiffusion import (ClassEmbedding, PrototypeClassifier, build_for_inference,
                                                      cpl_loss, dce_loss, load_prototypes, prototype_loss,
                                                      save_prototypes, squared_distances)
from patronus_diffusion.presets import get_preset
from patronus_diffusion.training.objectives import fold_low_timesteps, protodiff_objective
from patronus_diffusion.training.trainer import build_optimizer


@pytest.fixture(scope="module")
def pd_cfg(idx_root):
    cfg = apply_overrides(get_preset("protodiff-tiny"), [f"data.root={idx_root}", "data.limit=none"])
    cfg.train.sample_every = 0
    cfg.train.checkpoint_every = 0
    return cfg


@pytest.fixture(scope="module")
def proto_file(pd_cfg, tmp_path_factory):
    g = torch.Generator().manual_seed(3)
    protos = torch.randn(2, 8, generator=g) * torch.tensor([[1.0], [3.0]])
    path, _ = save_prototypes(tmp_path_factory.mktemp("protos") / "prototypes.safetensors", protos,
                              {"class_names": ["horizontal", "vertical"], "dataset": {"dataset": "fashion-mnist"},
                               "accuracy": {"test": 0.9}})
    return path, protos


def _mode_cfg(pd_cfg, mode, proto_file=None, **pc):
    cfg = pd_cfg.copy()
    cfg.protodiff.mode = mode
    cfg.protodiff.prototypes = str(proto_file[0]) if proto_file else None
    for k, v in pc.items():
        setattr(cfg.protodiff, k, v)
    return cfg.validate()


# ------------------------------------------------------------------ classifier math (hand-computed)
def test_distances_and_losses_by_hand():
    f = torch.tensor([[0.0, 0.0], [1.0, 1.0]])
    m = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
    d = squared_distances(f, m)
    torch.testing.assert_close(d, torch.tensor([[1.0, 4.0], [1.0, 2.0]]))
    logits, y = -2.0 * d, torch.tensor([0, 1])
    # row 0: -log(e^-2 / (e^-2 + e^-8)) = log(1 + e^-6); row 1: logits (-2, -4), class 1: log(1 + e^2)
    expect = (math.log1p(math.exp(-6)) + math.log1p(math.exp(2))) / 2
    assert math.isclose(float(dce_loss(logits, y)), expect, rel_tol=1e-6)
    # PL = mean(||f0 - m0||^2, ||f1 - m1||^2) = (1 + 2) / 2
    assert math.isclose(float(prototype_loss(f, m, y)), 1.5, rel_tol=1e-6)


def test_classifier_logits_are_scaled_negative_distances(pd_cfg):
    cc = pd_cfg.protodiff.classifier
    cc = dataclasses.replace(cc, scale=3.0)
    clf = PrototypeClassifier(1, 3, cc).eval()
    x = torch.randn(4, 1, 16, 16)
    out = clf(x)
    brute = ((out.features[:, None, :] - clf.prototypes[None]) ** 2).sum(-1)
    torch.testing.assert_close(out.distances, brute, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(out.logits, -3.0 * out.distances)
    assert (out.features >= 0).all()  # ReLU features, as in the reference
    total, parts = cpl_loss(out, clf.prototypes, torch.tensor([0, 1, 2, 0]), lambda_pl=0.5)
    assert math.isclose(float(total.detach()), parts["dce"] + 0.5 * parts["pl"], rel_tol=1e-5)
    assert clf.predict(x).tolist() == out.distances.argmin(1).tolist()


# ------------------------------------------------------------------ modes: what trains and what is frozen
def _grads(model, labels):
    model.zero_grad(set_to_none=True)
    x = torch.randn(len(labels), 1, 16, 16)
    t = torch.full((len(labels),), 500)
    model(x, t, labels).pow(2).mean().backward()
    return model.classes.table.grad


@pytest.mark.parametrize("mode", ["regular", "proto-frozen", "proto-trainable", "random-frozen"])
def test_each_mode_freezes_or_trains_the_table_it_says(pd_cfg, proto_file, mode):
    torch.manual_seed(0)
    model = build_model(_mode_cfg(pd_cfg, mode, proto_file))
    table = model.classes.table
    protos = proto_file[1]
    if mode in ("proto-frozen", "proto-trainable"):
        assert torch.equal(table.detach(), protos)
    if mode == "random-frozen":
        torch.testing.assert_close(table.detach().norm(dim=1), protos.norm(dim=1))
        assert not torch.allclose(table.detach(), protos)
    g = _grads(model, torch.tensor([0, 1, 0, 1]))
    trainable = mode in ("regular", "proto-trainable")
    assert table.requires_grad == trainable
    if trainable:
        assert g is not None and (g.abs().sum(1) > 0).all()  # every row, class 0 included
    else:
        assert g is None
    # the embedding MLP and the UNet always train
    assert all(p.grad is not None for p in model.classes.mlp.parameters())
    assert model.unet.first.weight.grad is not None
    # the optimiser of the shared trainer sees the table only when it trains
    opt = build_optimizer(model, _mode_cfg(pd_cfg, mode, proto_file))
    in_opt = any(p is table for grp in opt.param_groups for p in grp["params"])
    assert in_opt == trainable
    before = table.detach().clone()
    opt.step()
    assert torch.equal(table.detach(), before) != trainable


def test_padding_idx0_reproduces_the_reference_bug(pd_cfg, proto_file):
    model = build_model(_mode_cfg(pd_cfg, "regular", padding_idx0=True))
    assert torch.equal(model.classes.table[0].detach(), torch.zeros(8))
    g = _grads(model, torch.tensor([0, 1, 0, 1]))
    assert torch.equal(g[0], torch.zeros(8)) and g[1].abs().sum() > 0
    fixed = build_model(_mode_cfg(pd_cfg, "regular"))
    assert _grads(fixed, torch.tensor([0, 1]))[0].abs().sum() > 0


def test_null_condition_uses_no_class_row():
    emb = ClassEmbedding(3, 4, "regular", "zero")
    assert emb.table.shape == (3, 4)  # C rows, nothing reserved
    out = emb(torch.tensor([0, -1, 2]))
    assert torch.equal(out[1], torch.zeros(4)) and out[0].abs().sum() > 0
    learned = ClassEmbedding(3, 4, "regular", "learned")
    with torch.no_grad():
        learned.null.fill_(0.5)
    assert torch.equal(learned(torch.tensor([-1]))[0], torch.full((4,), 0.5))
    learned(torch.tensor([-1, 1])).sum().backward()
    assert learned.null.grad is not None and learned.table.grad[0].abs().sum() == 0
    with pytest.raises(ValueError, match="out of range"):
        emb(torch.tensor([3]))


def test_proto_mode_without_prototypes_is_an_actionable_error(pd_cfg, proto_file):
    with pytest.raises(ConfigError, match="--prototypes"):
        build_model(_mode_cfg(pd_cfg, "proto-frozen"))
    build_for_inference(_mode_cfg(pd_cfg, "proto-frozen"))  # a trained run carries its table
    bad = _mode_cfg(pd_cfg, "proto-frozen", proto_file)
    bad.protodiff.embed_dim = bad.protodiff.classifier.dim = 6
    with pytest.raises(ConfigError, match="shape"):
        build_model(bad)
    with pytest.raises(ConfigError, match="protodiff.mode"):
        apply_overrides(pd_cfg, ["protodiff.mode=frozen"])


# ------------------------------------------------------------------ guidance
class CountingModel(torch.nn.Module):
    """eps = x * (label + 2) + t/1000, label -1 = null; counts calls."""

    def __init__(self):
        super().__init__()
        self.calls = 0

    def forward(self, x, t, y):
        self.calls += 1
        return x * (y.float() + 2)[:, None, None, None] + t.float()[:, None, None, None] / 1000


def test_guidance_zero_is_conditional_and_batched_equals_separate(pd_cfg):
    torch.manual_seed(0)
    model = build_for_inference(_mode_cfg(pd_cfg, "regular")).eval()
    x, t, y = torch.randn(3, 1, 16, 16), torch.tensor([10, 500, 900]), torch.tensor([0, 1, 1])
    with torch.no_grad():
        cond = model(x, t, y)
        uncond = model(x, t, torch.full_like(y, -1))
        assert torch.equal(class_guided_model_fn(model, y, 0.0)(x, t), cond)
        guided = class_guided_model_fn(model, y, 1.8)(x, t)
    torch.testing.assert_close(guided, 2.8 * cond - 1.8 * uncond, rtol=1e-5, atol=1e-5)
    counter = CountingModel()
    fn = class_guided_model_fn(counter, y, 2.0)
    out = fn(x, t)
    assert counter.calls == 1  # both halves in one call
    expect = combine_guidance(x * (y.float() + 2)[:, None, None, None], x * 1.0, 2.0) + \
        t.float()[:, None, None, None] / 1000
    torch.testing.assert_close(out, expect)
    with pytest.raises(ValueError):
        guided_model_fn(counter, y, y, -1.0)


def test_guided_generation_clips_x0_by_default(pd_cfg):
    torch.manual_seed(0)
    model = build_for_inference(_mode_cfg(pd_cfg, "regular")).eval()
    y = torch.tensor([0, 1, 0, 1])
    default = sample_class_guided(model, pd_cfg, y, sampler="ddim", steps=5, seed=1)
    clipped = sample_class_guided(model, pd_cfg, y, sampler="ddim", steps=5, seed=1, clip_x0=True)
    raw = sample_class_guided(model, pd_cfg, y, sampler="ddim", steps=5, seed=1, clip_x0=False)
    assert torch.equal(default, clipped)
    assert not torch.allclose(default, raw)  # an untrained model predicts x0 far outside [-1, 1]


def test_protodiffusion_api_samples_like_the_guided_loop(pd_cfg, tiny_run):
    from patronus_diffusion import ProtoDiffusion
    from patronus_diffusion.runs import CheckpointError

    with pytest.raises(CheckpointError, match="not a ProtoDiffusion run"):
        ProtoDiffusion.load(tiny_run, device="cpu")
    torch.manual_seed(0)
    cfg = _mode_cfg(pd_cfg, "regular")
    pd = ProtoDiffusion(build_for_inference(cfg), cfg, torch.device("cpu"))
    assert pd.num_classes == 2 and pd.info()["mode"] == "regular"
    assert pd.class_labels(3).tolist() == [0, 0, 0, 1, 1, 1] and pd.class_labels(3, 4).tolist() == [0, 0, 0, 1]
    y = pd.class_labels(2)
    a = pd.sample(y, guidance=1.0, sampler="ddim", steps=3, seed=2)
    assert torch.equal(a, sample_class_guided(pd.model, cfg, y, w=1.0, sampler="ddim", steps=3, seed=2))
    chunked = pd.sample(y, guidance=1.0, sampler="ddim", steps=3, seed=2, batch_size=3)
    torch.testing.assert_close(chunked, a, rtol=0, atol=1e-4)  # x_T is drawn before batching


# ------------------------------------------------------------------ objective
def test_objective_drops_conditions_and_folds_low_timesteps(pd_cfg):
    assert fold_low_timesteps(torch.tensor([999, 120, 7, 640]), 0.5, 50).tolist() == [49, 20, 7, 640]
    assert fold_low_timesteps(torch.tensor([999, 120]), 0.0, 50).tolist() == [999, 120]
    torch.manual_seed(0)
    cfg = _mode_cfg(pd_cfg, "regular", p_uncond=1.0)
    model = build_model(cfg)
    sched = NoiseSchedule.from_config(cfg.diffusion)
    x0, t, noise = torch.randn(4, 1, 16, 16), torch.tensor([1, 200, 600, 999]), torch.randn(4, 1, 16, 16)
    import contextlib

    a = protodiff_objective(model, x0, torch.tensor([0, 0, 0, 0]), t, noise, sched, cfg, contextlib.nullcontext())
    b = protodiff_objective(model, x0, torch.tensor([1, 1, 1, 1]), t, noise, sched, cfg, contextlib.nullcontext())
    torch.testing.assert_close(a.per_image, b.per_image)  # p_uncond = 1: labels do not matter
    cfg0 = _mode_cfg(pd_cfg, "regular", p_uncond=0.0)
    c = protodiff_objective(model, x0, torch.tensor([1, 1, 1, 1]), t, noise, sched, cfg0, contextlib.nullcontext())
    assert not torch.allclose(a.per_image, c.per_image)


# ------------------------------------------------------------------ prototype files
def test_prototype_export_import_round_trip(tmp_path):
    protos = torch.randn(4, 5)
    path, meta_path = save_prototypes(tmp_path / "p.safetensors", protos,
                                      {"class_names": list("abcd"), "accuracy": {"test": 0.5}})
    back, meta = load_prototypes(path)
    assert torch.equal(back, protos)
    assert meta["class_names"] == list("abcd") and meta["dim"] == 5 and meta["num_classes"] == 4
    assert json.loads(meta_path.read_text())["accuracy"]["test"] == 0.5
    assert b"pickle" not in path.read_bytes()[:200] and path.read_bytes()[:1] != b"\x80"  # not a pickle
    with pytest.raises(FileNotFoundError, match="train-classifier"):
        load_prototypes(tmp_path / "missing.safetensors")
    with pytest.raises(ValueError, match="class names"):
        save_prototypes(tmp_path / "q.safetensors", protos, {"class_names": ["a"]})


# ------------------------------------------------------------------ training (classifier, trainer, resume)
def test_classifier_learns_the_synthetic_classes(pd_cfg, tmp_path):
    from patronus_diffusion.training.protodiff import load_classifier, train_classifier

    cfg = pd_cfg.copy()
    cfg.protodiff.classifier.epochs = 10
    r = train_classifier(cfg, tmp_path / "clf", device="cpu", progress=False)
    assert r.test_accuracy >= 0.8  # horizontal vs vertical bars (chance: 0.5)
    protos, meta = load_prototypes(r.prototypes)
    assert protos.shape == (2, 8) and meta["accuracy"]["test"] == round(r.test_accuracy, 5)
    assert meta["dataset"]["dataset"] == "fashion-mnist" and len(meta["class_names"]) == 2
    clf, _ = load_classifier(tmp_path / "clf")
    assert torch.equal(clf.prototypes.detach(), protos)


def test_trainer_resume_is_exact_for_protodiffusion(pd_cfg, proto_file, tmp_path):
    from patronus_diffusion.training import latest_checkpoint, train
    from patronus_diffusion.runs import load_weights

    cfg = _mode_cfg(pd_cfg, "proto-trainable", proto_file, p_uncond=0.5, low_t_fraction=0.25)
    train(cfg, tmp_path / "a", max_steps=6, progress=False)
    train(cfg, tmp_path / "b", max_steps=3, progress=False)
    train(cfg, tmp_path / "b", resume=True, max_steps=6, progress=False)
    a = load_weights(latest_checkpoint(tmp_path / "a") / "model.safetensors")
    b = load_weights(latest_checkpoint(tmp_path / "b") / "model.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.equal(a["classes.table"], proto_file[1])  # the trainable table moved


# ------------------------------------------------------------------ CLI end to end
def _cli(*args):
    from patronus_diffusion.cli.main import main

    return main([str(a) for a in args])


def test_cli_classifier_train_sample(idx_root, tmp_path, capsys):
    common = ["--preset", "protodiff-tiny", "--data-root", idx_root, "--set", "data.limit=none", "--no-progress"]
    assert _cli("protodiff", "train-classifier", "--out", tmp_path / "clf", "--epochs", 1, *common) == 0
    protos = tmp_path / "clf" / "prototypes.safetensors"
    assert protos.exists() and (tmp_path / "clf" / "classifier_log.csv").exists()
    run = tmp_path / "run"
    assert _cli("protodiff", "train", "--mode", "proto-frozen", "--prototypes", protos, "--out", run,
                "--steps", 4, *common) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["step"] == 4
    # resuming with another mode is refused with a one-line error (exit 2)
    assert _cli("protodiff", "train", "--mode", "regular", "--out", run, "--steps", 6, "--resume", *common) == 2
    assert "different class embedding" in capsys.readouterr().err
    # --resume alone continues the run's own mode and prototype file
    assert _cli("protodiff", "train", "--out", run, "--steps", 6, "--resume", "--no-progress") == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["step"] == 6
    out = tmp_path / "s"
    assert _cli("protodiff", "sample", "--run", run, "--per-class", 2, "--w", 1.0, "--steps", 2, "--out", out) == 0
    meta = json.loads((out / "sample.json").read_text())
    assert meta["labels"] == [0, 0, 1, 1] and meta["network_evaluations_per_image"] == 4
    assert len(list((out / "images").glob("*.png"))) == 4 and (out / "grid.png").exists()
    assert _cli("protodiff", "sample", "--run", run, "--labels", "1,0,1", "--sampler", "ddpm", "--steps", 2,
                "--out", tmp_path / "s2") == 0
    assert (tmp_path / "s2" / "labels.csv").read_text().splitlines()[1].startswith("0000_class1.png,1")
    assert _cli("protodiff", "sample", "--run", run, "--labels", "5", "--out", tmp_path / "s3") == 2


def test_cli_compare_is_resumable_and_writes_curves(idx_root, tmp_path, monkeypatch, capsys):
    """The full compare loop over 2 seeds with a stub FID (the Inception network is tested by the FID module) and a
    real, quickly trained independent judge."""
    import patronus_diffusion.evaluation.fid as fid
    from patronus_diffusion.evaluation.fid_result import FIDResult

    monkeypatch.setenv("PATRONUS_CACHE", str(tmp_path / "cache"))
    calls = []

    def fake_fid_kid(gen, data_cfg, split="test", n_ref=2000, seed=0, progress=True, cache_dir=None,
                     extractor=None, protocol=None, **kw):
        calls.append((protocol["mode"], protocol["images_seen"]))
        val = float(gen.mean().abs()) * 100 + {"regular": 50.0, "proto-frozen": 10.0}[protocol["mode"]]
        return FIDResult(fid=val, kid=val / 1000, kid_std=0.001, n_generated=len(gen), n_reference=n_ref,
                         protocol={**protocol, "metric": "stub", "reference": {"n": n_ref}})

    monkeypatch.setattr(fid, "fid_kid", fake_fid_kid)
    monkeypatch.setattr(fid, "InceptionFeatures", lambda **kw: None)
    args = ["protodiff", "compare", "--preset", "protodiff-tiny", "--data-root", idx_root, "--set", "data.limit=none",
            "--out", tmp_path / "cmp", "--modes", "regular", "proto-frozen", "--train-steps", 4, "--checkpoints", 2,
            "--seeds", "0,1", "--n-gen", 4, "--steps", 2, "--classifier-epochs", 1, "--judge-epochs", 1,
            "--no-progress"]
    assert _cli(*args) == 0
    log = capsys.readouterr().out  # 2 seeds x 2 checkpoints x 2 modes: the first point leaves 7, the last none
    assert "[compare] 7 point(s) left;" in log and log.rstrip().count("[compare] every point is evaluated") == 1
    b = get_preset("protodiff-tiny").train.batch_size
    per_seed = [(m, n) for n in (2 * b, 4 * b) for m in ("regular", "proto-frozen")]
    assert calls == per_seed * 2  # seed-major, then checkpoint, then mode
    rows = (tmp_path / "cmp" / "curves.csv").read_text().splitlines()
    assert len(rows) == 9 and rows[0].startswith("mode,seed,checkpoint,step,images_seen,train_seconds,"
                                                 "train_cpu_seconds,fid")
    curve = list(csv.DictReader(open(tmp_path / "cmp" / "curves.csv")))
    assert all(float(r["train_cpu_seconds"]) > 0 for r in curve)
    means = list(csv.DictReader(open(tmp_path / "cmp" / "curves_mean.csv")))
    assert len(means) == 4 and all(m["seeds"] == "2" for m in means)
    assert all(0.0 <= float(m["judge_accuracy_mean"]) <= 1.0 for m in means)  # the judge scored every point
    table = list(csv.DictReader(open(tmp_path / "cmp" / "reach_baseline.csv")))
    assert table[1]["mode"] == "proto-frozen" and table[1]["reached"] == "True" and table[1]["seeds_reaching"] == "2/2"
    summary = json.loads((tmp_path / "cmp" / "compare.json").read_text())
    assert summary["seeds"] == [0, 1] and summary["judge"]["architecture"].startswith("JudgeNet")
    for f in ("fid_vs_images.png", "fid_vs_wallclock.png", "samples/regular_seed1_step000002.png"):
        assert (tmp_path / "cmp" / f).exists(), f
    # the seeds really differ: two seeds of one mode are different runs
    w0 = (tmp_path / "cmp" / "runs" / "regular" / "seed0" / "model.safetensors").read_bytes()
    w1 = (tmp_path / "cmp" / "runs" / "regular" / "seed1" / "model.safetensors").read_bytes()
    assert w0 != w1
    assert _cli(*args) == 0 and len(calls) == 8  # re-running skips finished checkpoints
    # the tree keeps its own judge: on a machine without the cache (a carried tree) the same judge scores on
    assert len(list((tmp_path / "cmp" / "judge").glob("*.safetensors"))) == 1
    judge_bytes = next((tmp_path / "cmp" / "judge").glob("*.safetensors")).read_bytes()
    import shutil
    shutil.rmtree(tmp_path / "cache" / "judge")
    (tmp_path / "cmp" / "evals" / "proto-frozen_seed1_step000004.json").unlink()
    assert _cli(*args) == 0 and len(calls) == 9
    assert not (tmp_path / "cache" / "judge").exists()  # not retrained into the machine's cache
    assert next((tmp_path / "cmp" / "judge").glob("*.safetensors")).read_bytes() == judge_bytes
    summary = json.loads((tmp_path / "cmp" / "compare.json").read_text())
    assert summary["judge"]["cache_file"].startswith(str(tmp_path / "cmp" / "judge"))
    paired = (tmp_path / "cmp" / "paired_vs_baseline.csv").read_text()
    assert len(paired.splitlines()) == 3 and summary["baseline_flattening"]["baseline"] == "regular"
    # --report-only rewrites every table from the stored evaluations, training and evaluating nothing
    markdown = (tmp_path / "cmp" / "summary.md").read_text()
    assert "| 4 (" in markdown and "proto-frozen" in markdown
    # the frozen prototype table is the prototypes; the regular mode's random table is not
    last = {r["mode"]: r for r in means if r["step"] == "4"}
    assert float(last["proto-frozen"]["table_cosine_to_prototypes_mean"]) == pytest.approx(1.0, abs=1e-6)
    assert float(last["proto-frozen"]["table_distance_to_prototypes_mean"]) == pytest.approx(0.0, abs=1e-6)
    assert abs(float(last["regular"]["table_cosine_to_prototypes_mean"])) < 0.5
    assert "## The class tables against the prototypes" in markdown
    saved = (tmp_path / "cmp" / "steps_saved_vs_baseline.csv").read_text()
    assert saved.splitlines()[0].startswith("mode,baseline_step,target_fid_mean,pairs,steps_saved_mean")
    for f in ("paired_vs_baseline.csv", "curves_mean.csv", "paired_vs_baseline.png", "summary.md",
              "steps_saved_vs_baseline.csv"):
        (tmp_path / "cmp" / f).unlink()
    # an evaluation stored before tables were measured: the tables are rewritten, with that point's table blank
    old_eval = tmp_path / "cmp" / "evals" / "regular_seed0_step000002.json"
    ev = json.loads(old_eval.read_text())
    old_eval.write_text(json.dumps({k: v for k, v in ev.items() if not k.startswith("table_")}))
    assert _cli("protodiff", "compare", "--out", tmp_path / "cmp", "--report-only") == 0
    means = list(csv.DictReader(open(tmp_path / "cmp" / "curves_mean.csv")))
    blank = next(r for r in means if r["mode"] == "regular" and r["step"] == "2")
    assert blank["table_cosine_to_prototypes_mean"] == "" and blank["fid_mean"] != ""
    old_eval.write_text(json.dumps(ev))
    assert _cli("protodiff", "compare", "--out", tmp_path / "cmp", "--report-only") == 0 and len(calls) == 9
    assert (tmp_path / "cmp" / "paired_vs_baseline.csv").read_text() == paired
    assert (tmp_path / "cmp" / "summary.md").read_text() == markdown
    assert (tmp_path / "cmp" / "steps_saved_vs_baseline.csv").read_text() == saved
    assert (tmp_path / "cmp" / "paired_vs_baseline.png").exists()
    rewritten = json.loads((tmp_path / "cmp" / "compare.json").read_text())
    assert {k: v for k, v in rewritten.items() if k != "classifier_accuracy"} == \
        {k: v for k, v in summary.items() if k != "classifier_accuracy"}
    assert _cli("protodiff", "compare", "--out", tmp_path / "nothing", "--report-only") == 2


def test_reach_baseline_table_by_hand():
    from patronus_diffusion.experiments.protodiff_compare import stage_targets
    from patronus_diffusion.experiments.protodiff_compare_tables import mean_curves, reach_baseline_table

    rows = []
    for seed, shift in ((0, -1.0), (1, 1.0)):  # two seeds scattered +-1 around the same curve
        rows += [{"mode": "regular", "seed": seed, "step": s, "fid": f + shift, "kid": 0.01, "images_seen": s * 10,
                  "train_seconds": 3600 * s, "classifier_accuracy_on_samples": 0.5, "judge_accuracy_on_samples": 0.4}
                 for s, f in ((1, 90.0), (2, 60.0), (3, 50.0))]
        rows += [{"mode": "proto-frozen", "seed": seed, "step": s, "fid": f + shift, "kid": 0.01,
                  "images_seen": s * 10, "train_seconds": 3600 * s, "classifier_accuracy_on_samples": 0.5,
                  "judge_accuracy_on_samples": 0.6} for s, f in ((1, 70.0), (2, 49.5), (3, 45.0))]
    rows += [{"mode": "random-frozen", "seed": 0, "step": 3, "fid": 51.0, "kid": 0.01, "images_seen": 30,
              "train_seconds": 3, "classifier_accuracy_on_samples": 0.5, "judge_accuracy_on_samples": None}]
    means = mean_curves(rows)
    m = next(r for r in means if r["mode"] == "regular" and r["step"] == 3)
    assert m["fid_mean"] == pytest.approx(50.0) and m["fid_std"] == pytest.approx(2 ** 0.5)  # sample std of 49, 51
    t = {r["mode"]: r for r in reach_baseline_table(means, "regular", rows, threads=2)}
    assert t["regular"]["images_seen_to_reach"] == 30 and t["proto-frozen"]["images_seen_to_reach"] == 20
    assert t["proto-frozen"]["cpu_hours_to_reach"] == pytest.approx(4.0)  # 2 h of wall-clock on 2 threads
    for r in rows:  # measured CPU seconds, where every row has them, replace wall-clock x threads
        r["train_cpu_seconds"] = 1800 * r["step"]
    t = {r["mode"]: r for r in reach_baseline_table(mean_curves(rows), "regular", rows, threads=2)}
    assert t["proto-frozen"]["cpu_hours_to_reach"] == pytest.approx(1.0)
    assert t["proto-frozen"]["seeds_reaching"] == "2/2"  # 44 and 46 at step 3 vs the baseline's best mean 50
    assert not t["random-frozen"]["reached"] and t["random-frozen"]["images_seen_to_reach"] == ""
    assert stage_targets(1500, 3) == [500, 1000, 1500]
    with pytest.raises(ValueError):
        stage_targets(2, 3)


def test_paired_differences_and_flattening_by_hand():
    from patronus_diffusion.experiments.protodiff_compare_tables import (baseline_flattening, mean_curves,
                                                                         paired_vs_baseline)

    def row(mode, seed, step, fid, judge=0.5):
        return {"mode": mode, "seed": seed, "step": step, "fid": fid, "kid": 0.0, "images_seen": step * 10,
                "train_seconds": 1.0, "classifier_accuracy_on_samples": 0.5, "judge_accuracy_on_samples": judge}

    # seeds scatter the baseline by +-10 FID, but proto-frozen is 2 FID better in every seed: the pairing sees it
    base = {0: 100.0, 1: 110.0, 2: 90.0}
    rows = [row("regular", s, 1, f) for s, f in base.items()]
    rows += [row("proto-frozen", s, 1, f - d, judge=0.6) for (s, f), d in zip(base.items(), (1.8, 2.0, 2.2))]
    rows += [row("random-frozen", s, 1, f + d) for (s, f), d in zip(base.items(), (-1.0, 0.5, 1.5))]
    rows += [row("proto-trainable", 0, 1, 95.0)]
    rows = rows[2::-1] + rows[3:]  # the baseline's rows in another seed order: pairing is by seed, not position
    t = {r["mode"]: r for r in paired_vs_baseline(rows, "regular")}
    pf = t["proto-frozen"]
    assert pf["fid_diff_mean"] == pytest.approx(-2.0) and pf["fid_diff_std"] == pytest.approx(0.2)
    half = 4.302653 * 0.2 / 3 ** 0.5  # t_{0.975, 2} = 4.3027
    assert pf["fid_diff_ci95_low"] == pytest.approx(-2.0 - half, abs=1e-3)
    assert pf["fid_diff_ci95_high"] == pytest.approx(-2.0 + half, abs=1e-3)
    assert pf["finding"] == "better" and pf["seeds_better"] == "3/3" and pf["judge_diff_mean"] == pytest.approx(0.1)
    assert t["random-frozen"]["finding"] == "no difference shown" and t["random-frozen"]["seeds_better"] == "1/3"
    assert t["proto-trainable"]["pairs"] == 1 and t["proto-trainable"]["finding"] == "one seed"
    assert "regular" not in t
    # unpaired, the same means would hide the effect: std over seeds is 10 against a 2 FID difference
    m = {r["mode"]: r for r in mean_curves(rows) if r["step"] == 1}
    assert m["regular"]["fid_std"] == pytest.approx(10.0)

    curve = [row("regular", 0, s, f) for s, f in ((1, 200.0), (2, 120.0), (3, 104.0), (4, 100.0))]
    flat = baseline_flattening(curve, "regular")
    assert flat["step"] == 3 and flat["flattened"]  # 104 <= 1.05 x 100, confirmed by step 4
    assert [g["fid_gain_per_1000_steps"] for g in flat["gains"]] == [80000.0, 16000.0, 4000.0]
    still = baseline_flattening(curve[:3], "regular")
    assert still["step"] == 3 and not still["flattened"]  # its best point is its last: not seen to flatten
    assert baseline_flattening([], "regular") is None
    # a partial study: seed 1 has only reached step 2, where it sits far lower; mixing it in would make step 2 look
    # flat (mean 100 against 102 at step 4). The curve is the seeds evaluated at every step: seed 0 alone
    partial = curve + [row("regular", 1, 1, 150.0), row("regular", 1, 2, 80.0)]
    flat = baseline_flattening(partial, "regular")
    assert flat["seeds"] == [0] and flat["step"] == 3 and flat["best_fid_mean"] == 100.0
    both = partial + [row("regular", 1, s, f) for s, f in ((3, 90.0), (4, 88.0))]
    assert baseline_flattening(both, "regular")["seeds"] == [0, 1]


def test_steps_saved_reads_the_horizontal_gap_between_curves_by_hand():
    from patronus_diffusion.experiments.protodiff_compare_report import summary_markdown
    from patronus_diffusion.experiments.protodiff_compare_tables import (first_step_reaching, mean_curves,
                                                                         paired_vs_baseline, reach_baseline_table,
                                                                         steps_saved_vs_baseline)

    assert first_step_reaching([(1, 10.0), (2, 5.0)], 7.5) == 1.5  # halfway down the segment
    assert first_step_reaching([(1, 10.0), (2, 5.0)], 12.0) == "before"
    assert first_step_reaching([(1, 10.0), (2, 5.0)], 4.0) == "never"
    assert first_step_reaching([(1, 10.0), (2, 5.0), (3, 8.0), (4, 4.0)], 6.0) == pytest.approx(1.8)  # the first

    def row(mode, seed, step, fid):
        return {"mode": mode, "seed": seed, "step": step, "fid": fid, "kid": 0.0, "images_seen": step * 64,
                "train_seconds": 1.0, "classifier_accuracy_on_samples": 0.5, "judge_accuracy_on_samples": 0.5}

    curves = {("regular", 0): (200.0, 150.0, 110.0, 90.0), ("proto-frozen", 0): (180.0, 130.0, 100.0, 95.0),
              ("regular", 1): (210.0, 160.0, 120.0, 100.0), ("proto-frozen", 1): (150.0, 125.0, 115.0, 99.0),
              ("random-frozen", 0): (205.0, 150.0)}  # evaluated at two steps only
    rows = [row(m, seed, 500 * (i + 1), f) for (m, seed), fids in curves.items() for i, f in enumerate(fids)]
    saved = steps_saved_vs_baseline(rows[::-1], "regular")  # any row order
    t = {(r["mode"], r["baseline_step"]): r for r in saved}
    assert all(r["baseline_step"] > 500 for r in saved)  # no crossing is measured at the first point
    # step 1,000, seed 0: target 150, proto-frozen crosses at 500 + 500 (180 - 150) / (180 - 130) = 800, so 200
    # sooner; seed 1: its first point (150) is already below 160, so the crossing is unmeasured and not averaged
    r = t[("proto-frozen", 1000)]
    assert (r["pairs"], r["steps_saved_mean"], r["crossing_before_first_point"], r["finding"]) == (1, 200.0, 1, "one seed")
    # step 1,500: 1500 - (1000 + 500 * 20 / 30) = 166.7 and 1500 - (1000 + 500 * 5 / 10) = 250, sd 58.9
    r = t[("proto-frozen", 1500)]
    half = 12.7062 * (83.333 / 2 ** 0.5) / 2 ** 0.5  # t_{0.975, 1}
    assert r["steps_saved_mean"] == pytest.approx(208.3, abs=0.05) and r["steps_saved_std"] == pytest.approx(58.9)
    assert r["steps_saved_ci95_low"] == pytest.approx(208.33 - half, abs=0.1)
    assert r["relative_saving_mean"] == pytest.approx((166.667 + 250) / 2 / 1500, abs=1e-4)
    assert (r["seeds_sooner"], r["finding"], r["target_fid_mean"]) == ("2/2", "no difference shown", 115.0)
    # step 2,000: seed 0 never gets to 90 (censored), seed 1 crosses 100 at 1500 + 500 * 15 / 16
    r = t[("proto-frozen", 2000)]
    assert (r["pairs"], r["crossing_after_last_point"], r["steps_saved_mean"]) == (1, 1, pytest.approx(31.2, abs=0.05))
    # random-frozen reaches 150 exactly at 1,000 like the baseline, and is not evaluated past it
    assert t[("random-frozen", 1000)]["steps_saved_mean"] == 0.0 and ("random-frozen", 1500) not in t

    means = mean_curves(rows)
    md = summary_markdown(means, paired_vs_baseline(rows, "regular"), reach_baseline_table(means, "regular", rows),
                          None, "regular", {}, steps_saved_vs_baseline(rows, "regular"))
    table = {line.split(" | ")[0]: line.split(" | ")[1:] for line in md.splitlines() if line.startswith("| ")}
    assert table["| 1,500 (115.0)"] == ["+208 [-321, +738] (+13.9%), 2/2, no difference shown", " |"]  # no random
    assert table["| 1,000 (155.0)"] == ["+200 (+20.0%), 1/1, one seed; 1 before the first point",
                                        "+0 (+0.0%), 0/1, one seed |"]
    assert table["| 2,000 (95.0)"][0] == "+31 (+1.6%), 1/1, one seed; 1 after the last point"


def test_eta_line_counts_points_left_at_the_measured_pace():
    from patronus_diffusion.experiments.protodiff_compare import eta_line

    assert eta_line(30, 4, 4 * 360.0) == "[compare] 30 point(s) left; 6.0 min per point here, so about 3.0 h to go"
    assert eta_line(0, 4, 100.0) == "[compare] every point is evaluated"


def test_table_vs_prototypes_by_hand():
    from patronus_diffusion.experiments.protodiff_compare import table_vs_prototypes

    p = torch.tensor([[3.0, 4.0], [0.0, 2.0]])  # |P| = sqrt(25 + 4)
    same = table_vs_prototypes(p.clone(), p)
    assert same["table_cosine_to_prototypes"] == pytest.approx(1.0) and same["table_distance_to_prototypes"] == 0.0
    t = torch.tensor([[-4.0, 3.0], [0.0, 4.0]])  # row 0 orthogonal, row 1 twice as long in the same direction
    r = table_vs_prototypes(t, p)
    assert r["table_cosine_to_prototypes"] == pytest.approx(0.5)
    assert r["table_distance_to_prototypes"] == pytest.approx((50 + 4) ** 0.5 / 29 ** 0.5)
    assert r["table_norm"] == pytest.approx(41 ** 0.5)


def test_summary_markdown_quotes_the_tables_it_is_given():
    from patronus_diffusion.experiments.protodiff_compare_report import summary_markdown
    from patronus_diffusion.experiments.protodiff_compare_tables import (baseline_flattening, mean_curves,
                                                                         paired_vs_baseline, reach_baseline_table)

    def row(mode, seed, step, fid, judge):
        return {"mode": mode, "seed": seed, "step": step, "fid": fid, "kid": 0.0, "images_seen": step * 64,
                "train_seconds": 1.0, "train_cpu_seconds": 3.6 * step, "classifier_accuracy_on_samples": 0.5,
                "judge_accuracy_on_samples": judge}

    rows = [row("regular", 0, 500, 100.0, 0.5), row("regular", 1, 500, 104.0, 0.7),
            row("regular", 0, 1000, 60.0, 0.8), row("proto-frozen", 0, 500, 97.0, 0.6),
            row("proto-frozen", 1, 500, 99.0, 0.6), row("proto-frozen", 0, 1000, 59.0, 0.8)]
    means = mean_curves(rows)
    paired = paired_vs_baseline(rows, "regular")
    md = summary_markdown(means, paired, reach_baseline_table(means, "regular", rows),
                          baseline_flattening(rows, "regular"), "regular",
                          {"reference": {"n": 2000, "split": "test"}, "n_generated": 1000})
    table = {line.split(" | ")[0]: line.split(" | ")[1:] for line in md.splitlines() if line.startswith("| ")}
    # step 500, two seeds: mean +- sample std of (100, 104) and of the judge (0.5, 0.7); step 1,000: one seed
    assert table["| 500 (32,000)"] == ["102.0 ± 2.8 (0.600), n=2", "98.0 ± 1.4 (0.600), n=2 |"]
    assert table["| 1,000 (64,000)"] == ["60.0 (0.800), n=1", "59.0 (0.800), n=1 |"]
    # paired: differences -3 and -5 -> mean -4, sd sqrt(2), t_{0.975,1} = 12.706 -> half-width 12.706
    assert table["| 500"][0].startswith("-4.00 [-16.71, +8.71], 2/2, no difference shown")
    assert table["| 1,000"][0] == "-1.00, 1/1, one seed |"
    # the baseline's best mean is 60.0 at step 1,000, which proto-frozen reaches at 1,000 too (1 CPU-hour)
    assert table["| proto-frozen"] == ["59.00", "1,000", "64,000", "1.00", "1/2 |"]
    assert "first within 5% of it at step 1,000 (the last point evaluated: not confirmed)" in md
    assert "FID against 2000 images of the test split, 1000 samples per point" in md
    assert "class tables" not in md  # no evaluation measured its table

    # a mode that never reaches the baseline, no judge, a table measured in one seed of two, one point of baseline
    rows = [row("regular", 0, 500, 50.0, None), row("random-frozen", 0, 500, 70.0, None),
            row("random-frozen", 1, 500, 72.0, None)]
    rows[1] |= {"table_cosine_to_prototypes": 0.02, "table_distance_to_prototypes": 1.4}
    means = mean_curves(rows)
    assert all(r["table_cosine_to_prototypes_mean"] is None for r in means)  # not a mean over a subset of seeds
    rows[2] |= {"table_cosine_to_prototypes": 0.04, "table_distance_to_prototypes": 1.6}
    means = mean_curves(rows)
    md = summary_markdown(means, paired_vs_baseline(rows, "regular"), reach_baseline_table(means, "regular", rows),
                          baseline_flattening(rows, "regular"), "regular", {})
    table = {line.split(" | ")[0]: line.split(" | ")[1:] for line in md.splitlines() if line.startswith("| ")}
    assert table["| 500 (32,000)"] == ["50.0, n=1", "71.0 ± 1.4, n=2 |"]  # no judge: no parentheses
    assert "| random-frozen | 71.00 | not reached |  |  | 0/2 |" in md.splitlines()  # no steps, images or hours
    assert "| random-frozen | 500 | 0.0300 | 1.5000 |" in md
    assert "interval by interval: none yet." in md


def test_class_embedding_size_matches_the_reference_and_old_configs_load():
    from patronus_diffusion.config import RunConfig

    emb = ClassEmbedding(10, 128, "regular", "zero")
    assert sum(p.numel() for p in emb.parameters()) == 34_304  # spec: ConditionalEmbedding(10, 128, 128)
    ref = build_for_inference(get_preset("protodiff-cifar10"))
    assert sum(p.numel() for p in ref.unet.parameters()) == 28_173_763  # spec section 2.1: the reference UNet
    old = get_preset("tiny").to_dict()
    del old["protodiff"]  # a config.json written before the ProtoDiffusion family existed
    assert RunConfig.from_dict(old).validate().protodiff.mode == "regular"
    cfg = get_preset("protodiff-cifar10")
    assert RunConfig.from_dict(json.loads(cfg.to_json())).to_dict() == cfg.to_dict()
