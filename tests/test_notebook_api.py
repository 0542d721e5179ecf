"""The notebook user's path (issue 34): from_pretrained / .to / with_options / save_pretrained, a frozen config, edits of
your own images without the dataset (the reference set ships with the model), EditPlan taking spec strings, results
that show themselves, and no hidden state (matplotlib's backend, the caller's config, stderr prints, module-global
caches)."""

import inspect
import json
import os
import pydoc
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path

import pytest
import torch
from PIL import Image

import patronus_diffusion
import patronus_diffusion.data.datasets as datasets
from patronus_diffusion import EditPlan, Patronus, ProtoDiffusion
from patronus_diffusion import edit as E
from patronus_diffusion.api import StalePriorWarning
from patronus_diffusion.api import protodiffusion as pd_module
from patronus_diffusion.analysis.explain import PATCHES_FILE, PATCHES_META, stored_patches
from patronus_diffusion.api.patronus import REFERENCE_S_FILE, REFERENCE_S_META
from patronus_diffusion.config import ConfigError, FrozenConfigError
from patronus_diffusion.data import DataError
from patronus_diffusion.diffusion.pipeline import PatronusPipeline
from patronus_diffusion.edit import Edit, run_plan
from patronus_diffusion.runs import PRETRAINED_DIR, CheckpointError, load_weights
from patronus_diffusion.utils.errors import UsageError

SRC = Path(patronus_diffusion.__file__).parent
FMNIST = Path(datasets.FASHION_MNIST_DIR)


@pytest.fixture(scope="module")
def shipped():
    return Patronus.from_pretrained("fashion-mnist", device="cpu")


@pytest.fixture(scope="module")
def tiny(tiny_run):
    return Patronus.from_pretrained(tiny_run, device="cpu")


@pytest.fixture
def no_dataset(tmp_path, monkeypatch):
    """Fashion-MNIST's default location is an empty folder: a machine without the dataset."""
    monkeypatch.setattr(datasets, "FASHION_MNIST_DIR", str(tmp_path / "no-fashion-mnist"))


def own_image(path: Path) -> Path:
    """A user's own picture: a grey sweater on black, 28 x 28, written as PNG."""
    img = Image.new("L", (28, 28), 0)
    img.paste(190, (6, 5, 22, 25))
    img.save(path)
    return path


class Counter:
    def __init__(self, fn):
        self.fn, self.calls = fn, 0

    def __call__(self, *a, **k):
        self.calls += 1
        return self.fn(*a, **k)


# ------------------------------------------------------------------------------ help()
def test_help_shows_docstrings_and_no_comment_banners():
    for obj in (Patronus, Patronus.load, Patronus.from_pretrained, ProtoDiffusion, ProtoDiffusion.sample):
        text = pydoc.render_doc(obj, renderer=pydoc.plaintext)
        assert not [line for line in text.splitlines() if line.strip().startswith("# --")], obj
    missing = [name for name, value in inspect.getmembers(Patronus) if not name.startswith("_")
               and (inspect.isfunction(value) or inspect.ismethod(value) or isinstance(value, property))
               and not inspect.getdoc(value)]
    assert not missing, f"public members of Patronus without a docstring: {missing}"
    assert "from_pretrained" in inspect.getdoc(Patronus) and "data_root" in inspect.getdoc(Patronus.from_pretrained)


def test_the_package_root_exports_the_notebook_names():
    for name in ("Patronus", "ProtoDiffusion", "Edit", "EditPlan", "EditResult"):
        assert name in patronus_diffusion.__all__ and hasattr(patronus_diffusion, name)


# ------------------------------------------------------------------------------ from_pretrained / to / save_pretrained
def test_from_pretrained_takes_the_plain_name_the_prefixed_name_and_folders(shipped, tiny_run, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "fashion-mnist").mkdir()  # a folder of that name without a config.json does not hide the model
    prefixed = Patronus.from_pretrained("pretrained:fashion-mnist", device="cpu")
    assert shipped.run_dir == prefixed.run_dir == PRETRAINED_DIR / "fashion-mnist"
    assert all(torch.equal(a, b) for a, b in zip(shipped.model.state_dict().values(),
                                                 prefixed.model.state_dict().values()))
    run = Patronus.from_pretrained(tiny_run, device="cpu")
    assert run.run_dir == Path(tiny_run) and run.num_prototypes == run.config.prototypes.num_prototypes
    with pytest.raises(CheckpointError, match="shipped: fashion-mnist"):
        Patronus.from_pretrained("fashion-mnist-xl")
    assert len(repr(shipped)) <= 200 and "30 prototypes" in repr(shipped)


def test_to_moves_every_module_returns_the_model_and_its_copies_follow(tiny_run):
    pat = Patronus.from_pretrained(tiny_run, device="cpu")
    copy = pat.with_options(ddim_steps=3)
    assert pat.to("cpu") is pat and pat.device == torch.device("cpu")
    assert pat.to("meta") is pat  # a device every machine has; the weights move, the object stays
    assert all(p.device.type == "meta" for p in pat.model.parameters())
    assert pat.device.type == "meta" and copy.device.type == "meta"  # copies share the weights


def test_the_loaded_config_is_frozen_and_with_options_gives_a_copy(shipped):
    cfg = shipped.config
    with pytest.raises(FrozenConfigError, match="with_options"):
        cfg.sample.inversion = "edict"
    with pytest.raises(AttributeError):  # FrozenConfigError is an AttributeError too, like dataclasses' frozen error
        cfg.data.root = "/elsewhere"
    exact = shipped.with_options(inversion="edict", edict_mix=0.6, ddim_steps=10)
    assert (exact.config.sample.inversion, exact.config.sample.edict_mix, exact.config.sample.ddim_steps) == \
        ("edict", 0.6, 10)
    assert (cfg.sample.inversion, cfg.sample.edict_mix) == ("ddim", 0.8) and exact.config.frozen and cfg.frozen
    assert exact.model is shipped.model and exact.inversion_cache is shipped.inversion_cache
    with pytest.raises(UsageError, match="unknown sample option"):
        shipped.with_options(inversoin="edict")
    with pytest.raises(UsageError, match="expects a int"):
        shipped.with_options(ddim_steps="10")
    with pytest.raises(ConfigError, match="edict_mix"):
        shipped.with_options(edict_mix=1.5)
    editable = cfg.copy()
    editable.sample.inversion = "edict"
    assert not editable.frozen and cfg.sample.inversion == "ddim"


def test_the_command_line_loader_keeps_an_editable_config_and_its_flags(tiny_run):
    pat = Patronus.load(tiny_run, device="cpu")
    pat.config.sample.inversion = "edict"  # `--inversion` sets it on the command's own model
    assert pat.exact_inversion and not pat.config.frozen


def test_save_pretrained_writes_a_folder_from_pretrained_loads_atomically(tiny_run, tmp_path):
    pat = Patronus.from_pretrained(tiny_run, device="cpu")
    out = tmp_path / "mine"
    files = pat.save_pretrained(out)
    assert files["weights"].exists() and json.loads(files["config"].read_text()) == json.loads(pat.config.to_json())
    again = Patronus.from_pretrained(out, device="cpu")
    assert again.config.to_dict() == pat.config.to_dict()
    assert all(torch.equal(a, b) for a, b in zip(pat.model.state_dict().values(), again.model.state_dict().values()))
    (out / "stale.txt").write_text("from before")  # saving over a folder replaces it as a whole
    pat.save_pretrained(out)
    assert not (out / "stale.txt").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mine"]  # no .tmp / .old left behind


def test_saving_the_shipped_model_keeps_its_reference_set_and_prior_only_for_unchanged_weights(tmp_path):
    pat = Patronus.from_pretrained("fashion-mnist", device="cpu")
    pat.save_pretrained(tmp_path / "same")
    for name in (REFERENCE_S_FILE, REFERENCE_S_META, PATCHES_FILE, PATCHES_META, "prior"):
        assert (tmp_path / "same" / name).exists(), name
    assert Patronus.from_pretrained(tmp_path / "same").shipped_reference_s() is not None
    assert stored_patches(Patronus.from_pretrained(tmp_path / "same")) is not None
    name, param = next(iter(pat.model.named_parameters()))
    with torch.no_grad():
        param.add_(0.01)  # other weights: the stored s would describe a model no longer there
    pat.save_pretrained(tmp_path / "changed")
    assert not (tmp_path / "changed" / REFERENCE_S_FILE).exists() and not (tmp_path / "changed" / "prior").exists()
    assert not (tmp_path / "changed" / PATCHES_FILE).exists()
    assert torch.equal(load_weights(tmp_path / "changed" / "model.safetensors")[name], param)


# ------------------------------------------------------------------------------ without the dataset
def test_a_max_edit_of_your_own_image_needs_no_dataset(shipped, no_dataset, tmp_path):
    pat = Patronus.from_pretrained("fashion-mnist", device="cpu")
    x = pat.load_images(paths=[own_image(tmp_path / "mine.png")])
    res = pat.edit(x, "3=max", "5=q0.9", steps=2)
    stored = load_weights(PRETRAINED_DIR / "fashion-mnist" / REFERENCE_S_FILE)["s"]
    assert res.reference.n == 256 and torch.equal(res.reference.s, stored)
    assert res.s_requested[0, 0, 3] == pytest.approx(float(stored.max()))
    meta = json.loads((PRETRAINED_DIR / "fashion-mnist" / REFERENCE_S_META).read_text())
    assert (meta["n"], meta["seed"], meta["split"], meta["dataset"]) == (256, 0, "test", "fashion-mnist")


def test_data_errors_from_the_api_name_the_keyword_not_the_flag(no_dataset):
    pat = Patronus.from_pretrained("fashion-mnist", device="cpu")
    for call in (lambda: pat.load_images(indices=[0]), lambda: E.reference_set(pat, n=100)):
        with pytest.raises(DataError) as err:
            call()
        assert "data_root=" in str(err.value) and "--data-root" not in str(err.value)
        assert "load_images(paths=" in str(err.value)


@pytest.mark.skipif(not (FMNIST / "t10k-images-idx3-ubyte.gz").exists(), reason="needs the Fashion-MNIST files")
def test_the_stored_reference_set_is_the_one_the_dataset_gives():
    from_data = Patronus.from_pretrained("fashion-mnist", device="cpu", data_root=str(FMNIST))
    assert from_data.shipped_reference_s() is None  # a readable data_root is used, not the stored s
    ref = E.reference_set(from_data)
    stored = load_weights(PRETRAINED_DIR / "fashion-mnist" / REFERENCE_S_FILE)["s"]
    torch.testing.assert_close(ref.s, stored, atol=1e-5, rtol=0)


# ------------------------------------------------------------------------------ EditPlan with spec strings
def test_edit_plan_takes_spec_strings(tiny):
    x = tiny.load_images(indices=[0, 1])
    ref = E.reference_set(tiny, n=16)
    res = run_plan(tiny, EditPlan(images=x, edits=["0=max", "1=q0.5,2*1.5"], steps=2, reference=ref))
    want = run_plan(tiny, EditPlan(images=x, edits=[Edit.parse("0=max", tiny.num_prototypes, ref),
                                                    Edit.parse("1=q0.5,2*1.5", tiny.num_prototypes, ref)],
                                   steps=2, reference=ref))
    assert [e.label for e in res.edits] == ["0=max", "1=q0.5,2*1.5"]
    assert torch.equal(res.s_requested, want.s_requested) and torch.equal(res.images, want.images)
    default = tiny.run(EditPlan(images=x, edits="0=max", steps=2))  # no reference given: the model's default X
    assert default.reference is not None and default.reference.n == min(256, len(tiny.dataset("test")))
    with pytest.raises(UsageError, match="Edit objects or specs"):
        EditPlan(images=x, edits=[3])
    inv = Counter(tiny.invert)
    tiny.invert = inv
    try:
        with pytest.raises(UsageError, match="out of range"):
            run_plan(tiny, EditPlan(images=x, edits=["99=max"], steps=2))
        with pytest.raises(UsageError, match="1.5max"):
            run_plan(tiny, EditPlan(images=x, edits=["0=maxx"], steps=2))
        assert inv.calls == 0  # refused before any inversion
    finally:
        del tiny.invert


# ------------------------------------------------------------------------------ results show themselves
def test_results_have_a_one_line_repr_a_summary_and_a_picture(shipped, no_dataset, tmp_path):
    from patronus_diffusion.analysis.when import run_when
    from patronus_diffusion.analysis.where import where_report

    x = shipped.load_images(paths=[own_image(tmp_path / "a.png"), own_image(tmp_path / "b.png")])
    res = shipped.edit(x, "3=max", "3=max,11=0", steps=2)
    where = where_report(shipped, x, ["a", "b"], top_k=2)
    when = run_when(shipped, EditPlan.emergence(x, [3], "max", E.reference_set(shipped), steps=2))
    for result in (res, where, when):
        text = repr(result)
        assert len(text) <= 200 and "\n" not in text and "tensor" not in text, text
        assert result._repr_png_().startswith(b"\x89PNG")
        assert isinstance(result.summary(), str) and result.summary()
        assert sorted(p.name for p in result.write(tmp_path / type(result).__name__).values())
    json.dumps(res.to_json())  # numbers, not tensors
    assert res.to_pil().size == ((4 * 34 + 2) * 2, (2 * 34 + 2) * 2)  # input | recon | 2 edits; 2 rows; 2x
    assert res.to_json()["edits"][1]["edit"] == "3=max,11=0" and res.to_json()["baseline"] == "recon"


# ------------------------------------------------------------------------------ no hidden state
def test_importing_or_drawing_never_switches_the_matplotlib_backend(tmp_path):
    script = textwrap.dedent(f"""
        import importlib, pkgutil, sys
        import matplotlib
        import numpy as np, torch
        import patronus_diffusion
        names = [m.name for m in pkgutil.walk_packages(patronus_diffusion.__path__, "patronus_diffusion.")]
        for name in names:
            importlib.import_module(name)
        assert matplotlib.get_backend() == "svg", ("import", matplotlib.get_backend())
        from patronus_diffusion.analysis import figures, quality, report
        figures.save_panels([[figures.Panel(torch.zeros(1, 8, 8), "x", (0, 0, 4, 4))]], {str(tmp_path)!r} + "/a.png")
        figures.band_plot(np.arange(3), {{"c": (np.zeros(3), np.ones(3))}}, {str(tmp_path)!r} + "/b.png", "t", "y")
        report.figure_uri(lambda ax: ax.plot([0, 1]))
        figures.save_figure(quality.auroc_figure(np.zeros((2, 3)), ["a", "b"]), {str(tmp_path)!r} + "/c.png")
        assert matplotlib.get_backend() == "svg", ("drawing", matplotlib.get_backend())
        assert "matplotlib.pyplot" not in sys.modules
        print(len(names))
    """)
    env = {**os.environ, "MPLBACKEND": "svg", "OMP_NUM_THREADS": "1"}
    out = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    assert int(out.stdout.split()[-1]) > 50 and (tmp_path / "c.png").exists()


def test_the_library_warns_through_warnings_not_stderr_prints():
    offenders = [f"{p.relative_to(SRC)}:{i}" for p in SRC.rglob("*.py") if p.relative_to(SRC).parts[0] != "cli"
                 for i, line in enumerate(p.read_text().splitlines(), 1) if "file=sys.stderr" in line]
    assert not offenders, f"warn with warnings.warn (notebooks can filter it), not stderr prints: {offenders}"


def test_a_stale_prior_is_a_warning(shipped):
    class Prior:
        path = "elsewhere/prior"
        meta = {"source": {"weights_sha256": "0" * 64, "weights": "ema"}}

    with pytest.warns(StalePriorWarning, match="train-prior"):
        assert shipped.prior_is_stale(Prior())
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert shipped.load_prior() is not None  # the shipped prior was fitted to the shipped weights


def test_the_explorer_leaves_the_callers_model_alone(tiny_run):
    from patronus_diffusion.explore.session import ExplorerSession

    pat = Patronus.load(tiny_run, device="cpu")
    before = pat.config.to_dict()
    session = ExplorerSession(pat, steps=3, ref_n=8)
    assert pat.config.to_dict() == before and session.pat.model is pat.model
    assert session.pat.config.sample.inversion == "edict" and pat.config.sample.inversion == "ddim"
    x = pat.load_images(indices=[0, 1])
    x_T = pat.invert(x, steps=2)
    assert x_T.shape == x.shape  # a plain DDIM x_T, not an EDICT state
    assert pat.decode(x_T, pat.encode(x).s, steps=2, sampler="ddim").shape == x.shape


def test_invert_twice_inverts_once_and_the_cache_lives_on_the_model(tiny, monkeypatch):
    raw = Counter(PatronusPipeline._run_inversion)  # the inversion itself, without the cache
    monkeypatch.setattr(PatronusPipeline, "_run_inversion", lambda self, *a, **k: raw(self, *a, **k))
    tiny.clear_caches()
    x = tiny.load_images(indices=[2, 3])
    a = tiny.invert(x, steps=2)
    b = tiny.invert(x.clone(), steps=2)
    assert raw.calls == 1 and torch.equal(a, b)
    b += 1  # each call gets its own copy
    assert torch.equal(tiny.invert(x, steps=2), a) and raw.calls == 1
    assert torch.equal(E.invert_images(tiny, x, steps=2).x_T, a) and raw.calls == 1  # one cache for both entries
    assert len(tiny.inversion_cache) == 1
    tiny.invert(x, steps=2, callback=lambda info: None)  # a callback wants to see every step: it runs
    tiny.invert(x, steps=3)  # other steps
    assert raw.calls == 3
    other = Patronus.from_pretrained(tiny.run_dir, device="cpu")
    other.invert(x, steps=2)
    assert raw.calls == 4  # the cache is per model object
    tiny.clear_caches()
    tiny.invert(x, steps=2)
    assert raw.calls == 5


# ------------------------------------------------------------------------------ one guidance keyword
def test_protodiffusion_takes_guidance_like_patronus(monkeypatch):
    assert "guidance" in inspect.signature(Patronus.sample).parameters
    assert "guidance" in inspect.signature(ProtoDiffusion.sample).parameters
    seen = []
    monkeypatch.setattr(pd_module, "sample_class_guided", lambda model, config, labels, w=None, **k: seen.append(w))
    pd = ProtoDiffusion.__new__(ProtoDiffusion)
    pd.model, pd.config = None, None
    pd.sample([0, 1], guidance=1.5)
    pd.sample([0, 1], 0.5)  # positionally, as before
    with pytest.warns(DeprecationWarning, match="guidance="):
        pd.sample([0, 1], w=2.0)
    assert seen == [1.5, 0.5, 2.0]
    with pytest.raises(UsageError, match="once"):
        pd.sample([0, 1], guidance=1.0, w=1.0)
