"""patronus debias: a generated set in which A and B are independent as outside judges read them, and debias-eval.

The end-to-end tests use a closed-form decoder (as tests/test_audit.py does): x0 | s ~ N(W [s, 1], sigma^2 I),
ridge-regressed on the training split, with its exact denoiser, on 12-px images of a vertical or horizontal bar
(B = ``vertical``), a corner mark (A = ``mark``, tied to the bar at phi = 0.75 in the training split, independent in
the test split), a grey nuisance block and a blind ``coin`` column no image shows. Prototype 0 sits on the mark,
1 and 2 on the two bars, the others on the nuisance block, so that s decides both attributes.
"""

import json

import numpy as np
import pytest
import torch

from patronus_diffusion.data import biased as B
from helpers import closed_form_patronus, closed_form_setup, planted_bar_images as planted_images

SIZE = 12


# ----------------------------------------------------------------------------- planted data and decoder
def write_planted(root, n_train=128, n_test=96, rho=0.75, seed=0):
    from PIL import Image

    rows = []
    for split, n, r in (("train", n_train, rho), ("test", n_test, 0.0)):
        k = seed + (split == "test")
        vertical = np.arange(n) % 2 == 1
        mark = B.assign_mark(vertical, r, k)
        rng = np.random.default_rng(k + 50)
        nuisance, coin = rng.random(n) < 0.5, rng.random(n) < 0.5
        imgs = planted_images(vertical, mark, nuisance, np.random.default_rng(k))
        (root / "images").mkdir(parents=True, exist_ok=True)
        for i in range(n):
            rel = f"images/{split}_{i:03d}.png"
            Image.fromarray(imgs[i]).save(root / rel)
            rows.append(B.ManifestRow(rel, split, {"vertical": float(vertical[i]), "mark": float(mark[i]),
                                                   "coin": float(coin[i])}))
    B.write_manifest(root / "attributes.csv", rows, ["vertical", "mark", "coin"])
    return root


def planted_model(root, tiny_cfg):
    cfg, net, ds, x, z = closed_form_setup(root, tiny_cfg)
    names = list(ds.attribute_names)
    vertical, mark = ds.attributes[:, names.index("vertical")] > 0, ds.attributes[:, names.index("mark")] > 0
    nuisance = (x[:, 0, 0:2, 9:12] > -0.5).flatten(1).all(1).numpy()
    last = z.shape[-1] - 1
    with torch.no_grad():
        net.prototypes[0] = z[int(np.flatnonzero(mark)[0]), :, 0, 0]
        net.prototypes[1] = z[int(np.flatnonzero(vertical)[0]), :, last, last]
        net.prototypes[2] = z[int(np.flatnonzero(~vertical)[0]), :, last, last]
        net.prototypes[3:] = z[int(np.flatnonzero(nuisance)[0]), :, 0, last]
    return closed_form_patronus(cfg, net, x)


class Reader(torch.nn.Module):
    """A hand-made judge: (B, 2) logits from the mark corner (``what="mark"``) or from the pixels only one bar
    covers (row 7 for vertical bars, columns 7 and 11 for horizontal ones)."""

    def __init__(self, what):
        super().__init__()
        self.what = what
        self.dummy = torch.nn.Parameter(torch.zeros(1))

    def forward(self, x):
        g = x[:, 0]
        if self.what == "mark":
            v = 10.0 * (g[:, 0:3, 0:3].mean((1, 2)) + 0.2)
        else:
            v = 10.0 * (g[:, 7, 8:11].mean(1) - torch.cat([g[:, 8:11, 7], g[:, 8:11, 11]], 1).mean(1))
        return torch.stack([-v, v], 1)


def readers():
    from patronus_diffusion.analysis.audit_models import AttributeJudge

    return (AttributeJudge(Reader("mark"), None, {"kind": "hand-made"}),
            AttributeJudge(Reader("vertical"), None, {"kind": "hand-made"}))


@pytest.fixture(scope="module", autouse=True)
def _one_thread_here(one_thread):
    """Every test of this module on one torch thread (conftest's one_thread)."""


@pytest.fixture(scope="module")
def planted(tmp_path_factory, _tiny_cfg_master):
    """The planted model and a judge cache shared by this module; attribute judges train for 40 steps instead of
    the floor of 200 (they read the planted mark and bar with AUROC 1 after about 30)."""
    from patronus_diffusion.analysis import audit_models

    tmp = tmp_path_factory.mktemp("debias")
    root = write_planted(tmp / "data")
    floor, audit_models.MIN_JUDGE_STEPS = audit_models.MIN_JUDGE_STEPS, 40
    yield planted_model(root, _tiny_cfg_master.copy()), tmp
    audit_models.MIN_JUDGE_STEPS = floor


# ----------------------------------------------------------------------------- phi
def test_phi_and_its_interval_on_a_constructed_case():
    from patronus_diffusion.analysis.debias import phi_interval

    # cells (a, b): 30 x (1, 1), 10 x (1, 0), 10 x (0, 1), 30 x (0, 0): phi = (30*30 - 10*10) / 40^2 = 0.5
    a = np.array([1] * 30 + [1] * 10 + [0] * 10 + [0] * 30, bool)
    b = np.array([1] * 30 + [0] * 10 + [1] * 10 + [0] * 30, bool)
    r = phi_interval(a, b, n_boot=1000)
    assert r["phi"] == pytest.approx(0.5, abs=1e-12)
    assert r["cells"] == {"1,1": 30, "1,0": 10, "0,1": 10, "0,0": 30} and r["n"] == 80
    lo, hi = r["ci95"]
    assert 0.25 < lo < 0.5 < hi < 0.7, r["ci95"]
    # equal cells: exactly 0, the interval around it; a negative tie is negative
    bal = phi_interval(np.array([1, 1, 0, 0] * 10, bool), np.array([1, 0, 1, 0] * 10, bool), n_boot=500)
    assert bal["phi"] == 0.0 and bal["ci95"][0] < 0 < bal["ci95"][1]
    assert phi_interval(a, ~b, n_boot=200)["phi"] == pytest.approx(-0.5)
    assert np.corrcoef(a, b)[0, 1] == pytest.approx(r["phi"])


# ----------------------------------------------------------------------------- end to end
def test_debias_fills_every_cell_and_writes_a_folder_the_loader_reads(planted):
    from patronus_diffusion.analysis.debias import debias
    from patronus_diffusion.config import apply_overrides
    from patronus_diffusion.data import load_dataset
    from patronus_diffusion.data.biased import phi, resolve_attribute

    pat, tmp = planted
    out = tmp / "set"
    r = debias(pat, "mark", "vertical", n=16, out=out, batch=16, confidence=0.7, judge_cache=tmp / "judges",
               n_boot=300)
    rep = r.report
    assert rep["complete"] and not rep["unfilled"] and rep["n_written"] == 16
    assert all(c["accepted"] == 4 for c in rep["cells"].values()), rep["cells"]
    assert rep["phi_judges"]["phi"] == 0.0 and rep["phi_judges"]["cells"] == {k: 4 for k in ("1,1", "1,0", "0,1",
                                                                                               "0,0")}
    assert rep["phi_training"] > 0.6  # the run's own data is tied
    assert rep["judges"]["a"]["test_auroc"] > 0.95 and rep["judges"]["b"]["test_auroc"] > 0.95
    assert rep["prototypes"]["edited"][0]["prototype"] == 0 and rep["prototypes"]["ranking"].startswith("within")
    check = rep["phi_check_judges"]
    assert check is not None and abs(check["phi"]) <= 0.3 and check["agreement_a"] >= 0.8, check
    # the rare cells were filled by edits, not by copying the rare real images
    rare = [rep["cells"][k]["from_sources_with_target_a"] for k in ("1,0", "0,1")]
    assert max(rare) <= 2, rep["cells"]
    files = r.write(out)
    assert {p.name for p in out.iterdir()} >= {"images", "attributes.csv", "debias.json", "debias.png",
                                                "debias-state.json"}
    # the folder loads with the toolkit's own loader, as `--dataset folder --attributes-csv` reads it
    cfg = apply_overrides(pat.config.copy(), [f"data.root={out}", f"data.attributes_csv={out / 'attributes.csv'}"])
    ds = load_dataset(cfg.data, "train")
    assert len(ds) == 16 and {"mark", "vertical", "target_mark", "p_vertical", "source"} <= set(ds.attribute_names)
    a, b = resolve_attribute(ds, "mark"), resolve_attribute(ds, "vertical")
    assert phi(a, b) == pytest.approx(json.loads(files["debias.json"].read_text())["phi_judges"]["phi"])
    # what was judged is what was written: the judges read the loaded PNGs as the CSV says
    from patronus_diffusion.analysis.debias_judges import make_judge

    y = resolve_attribute(pat.dataset("train"), "mark")
    judge = make_judge(pat, "mark", y, tmp / "judges")
    assert np.array_equal(judge.probability(ds.get_batch(range(len(ds)))) >= 0.5, a)
    assert np.allclose(judge.probability(ds.get_batch(range(len(ds)))),
                       ds.attributes[:, list(ds.attribute_names).index("p_mark")], atol=1e-5)
    text = repr(r)
    assert len(text) <= 200 and "16/16" in text and "phi +0.000" in text, text
    assert set(r.summary()) >= {"phi_judges", "cells", "acceptance", "judges"}
    assert r.to_pil().size[0] > 200 and r._repr_png_()[:4] == b"\x89PNG"


def test_a_rerun_counts_the_images_already_written_and_continues_in_attempt_order(planted, monkeypatch):
    from patronus_diffusion.analysis import debias as D

    pat, tmp = planted
    kw = dict(batch=8, judges=readers(), check_judges=False, n_boot=200)
    out = tmp / "resume"
    first = D.debias(pat, "mark", "vertical", n=8, out=out, **kw)
    first.write(out)
    calls = []
    real = D._generate
    monkeypatch.setattr(D, "_generate", lambda *a, **k: calls.append(len(a[2])) or real(*a, **k))
    again = D.debias(pat, "mark", "vertical", n=8, out=out, **kw)
    assert calls == [] and again.rows == first.rows  # nothing generated: all 8 were there
    gone = out / first.rows[5]["file"]
    gone.unlink()
    redone = D.debias(pat, "mark", "vertical", n=8, out=out, **kw)
    assert sum(calls) >= 1 and redone.rows == first.rows and gone.exists()  # the same image, made again
    assert torch.equal(redone.images, first.images)
    calls.clear()
    more = D.debias(pat, "mark", "vertical", n=16, out=out, **kw)
    assert sum(calls) >= 8 and more.report["n_written"] == 16
    kept = [r for r in more.rows if r["file"] in {f["file"] for f in first.rows}]
    assert kept == first.rows  # the first two of every cell stay what they were
    # the same settings from scratch give the same set (seeded)
    fresh = D.debias(pat, "mark", "vertical", n=16, out=tmp / "fresh", **kw)
    assert [r["file"] for r in fresh.rows] == [r["file"] for r in more.rows]
    assert torch.equal(fresh.images, more.images)


def test_inversion_mode_fills_the_cells_too(planted):
    from patronus_diffusion.analysis.debias import debias

    pat, tmp = planted
    r = debias(pat, "mark", "vertical", n=8, mode="inversion", judges=readers(), check_judges=False, n_boot=200)
    assert r.report["complete"] and r.report["mode"] == "inversion" and r.report["phi_judges"]["phi"] == 0.0
    assert all(row["seed"] is None for row in r.rows)
    assert len({row["source"] for row in r.rows if row["target_b"] == 1}) == 4  # one try per source image


def test_an_unfilled_cell_is_reported_never_silently_short(planted, monkeypatch):
    from patronus_diffusion.analysis import debias as D

    pat, tmp = planted

    def no_mark(pat_, ds, jobs, *rest):  # a decoder that cannot draw the mark: cells with mark = 1 stay empty
        x = ds.get_batch([j[4] for j in jobs]).clone()
        x[:, :, 0:3, 0:3] = -1
        return x

    monkeypatch.setattr(D, "_generate", no_mark)
    with pytest.warns(UserWarning, match="unfilled"):
        r = D.debias(pat, "mark", "vertical", n=8, max_attempts=5, judges=readers(), check_judges=False, n_boot=200)
    rep = r.report
    assert not rep["complete"] and sorted(rep["unfilled"]) == ["mark=1,vertical=0", "mark=1,vertical=1"]
    assert rep["cells"]["1,1"]["attempts"] == 5 and rep["cells"]["1,1"]["accepted"] == 0
    assert rep["cells"]["0,0"]["accepted"] == 2 and rep["n_written"] == 4
    assert "UNFILLED" in repr(r)


# ----------------------------------------------------------------------------- the command and its bad inputs
def test_every_bad_input_is_one_line_exit_2_and_nothing_written(planted, tiny_run, tmp_path, capsys, monkeypatch):
    from patronus_diffusion.api import Patronus
    from patronus_diffusion.cli.main import main

    pat, tmp = planted
    monkeypatch.setenv("PATRONUS_CACHE", str(tmp / "cache"))
    monkeypatch.setattr(Patronus, "load", classmethod(lambda cls, *a, **k: pat))
    full = tmp_path / "full"
    full.mkdir()
    (full / "notes.txt").write_text("mine")
    other = tmp_path / "other"  # a debias folder made with other settings
    assert main(["debias", "--run", "planted", "--decouple", "mark,vertical", "--n", "8", "--out", str(other),
                 "--no-check-judges", "--judge-cache", str(tmp / "judges"), "--no-progress"]) == 0
    capsys.readouterr()
    before = sorted(p.name for p in other.rglob("*"))
    cases = [
        (["--decouple", "nonesuch,vertical"], "unknown attribute 'nonesuch'"),
        (["--decouple", "mark,mark"], "two different attributes"),
        (["--decouple", "mark,not:mark"], "two different attributes"),
        (["--decouple", "mark"], "two attributes A,B"),
        (["--n", "10"], "multiple of 4"),
        (["--n", "4"], "at least 8"),
        (["--max-attempts", "1"], "at least n/4"),
        (["--confidence", "1.5"], "--confidence"),
        (["--mode", "nonesuch"], "--mode must be one of"),
        (["--ranking", "nonesuch"], "--ranking must be one of"),
        (["--decouple", "coin,vertical"], "the judge of coin reads it on the run's test images with AUROC"),
        (["--out", str(full)], "is not empty and holds no debias set"),
        (["--out", str(other), "--top-k", "1"], "other settings (top_k: 2)"),
        (["--device", "nonesuch"], "unknown device 'nonesuch'"),
        (["--n", "400", "--mode", "inversion"], "lower --n"),
    ]
    for k, (extra, says) in enumerate(cases):
        out = tmp_path / f"out{k}"
        args = ["debias", "--run", "planted", "--decouple", "mark,vertical", "--n", "8", "--out", str(out),
                "--judge-cache", str(tmp / "judges"), "--no-progress", *extra]
        code = main(args)
        err = capsys.readouterr().err.strip()
        assert code == 2 and says in err and len(err.splitlines()) == 1, (extra, err)
        assert not out.exists(), extra
    assert sorted(p.name for p in full.iterdir()) == ["notes.txt"]
    assert sorted(p.name for p in other.rglob("*")) == before
    # the real loader path: an attribute the tiny run's data does not have
    monkeypatch.undo()
    monkeypatch.setenv("PATRONUS_CACHE", str(tmp / "cache"))
    code = main(["debias", "--run", str(tiny_run), "--decouple", "class:1,nonesuch", "--n", "8", "--out",
                 str(tmp_path / "tiny"), "--device", "cpu", "--no-progress"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "unknown attribute 'nonesuch'" in err and len(err.splitlines()) == 1, err
    assert not (tmp_path / "tiny").exists()


def test_the_command_prints_the_cells_and_writes_fid_when_asked(planted, capsys, monkeypatch):
    from patronus_diffusion.analysis import debias as D
    from patronus_diffusion.api import Patronus
    from patronus_diffusion.cli.main import main

    pat, tmp = planted

    class Features:  # a stand-in for the Inception network: pixel statistics as features
        name, preprocessing = "test features", "none"

        def __call__(self, images, progress=False, desc=""):
            x = images.flatten(1)
            return torch.cat([x, x.mean(1, keepdim=True)], 1)

    monkeypatch.setenv("PATRONUS_CACHE", str(tmp / "cache"))
    monkeypatch.setattr(Patronus, "load", classmethod(lambda cls, *a, **k: pat))
    monkeypatch.setattr("patronus_diffusion.evaluation.fid.InceptionFeatures", lambda *a, **k: Features())
    out = tmp / "cli"
    code = main(["debias", "--run", "planted", "--decouple", "mark,vertical", "--n", "16", "--fid", "--fid-n-ref",
                 "64", "--confidence", "0.7", "--out", str(out), "--judge-cache", str(tmp / "judges"),
                 "--no-progress"])
    printed = capsys.readouterr().out
    assert code == 0 and "DebiasResult(mark x vertical: 16/16" in printed and "mark=0, vertical=1: 4/4" in printed
    saved = json.loads((out / "debias.json").read_text())
    f = saved["fid"]
    assert f["n_generated"] == 16 and f["n_reference"] == 64 and f["real_floor"]["n"] == 16 and f["fid"] >= 0
    assert "FID" in printed and saved["phi_check_judges"]["phi"] is not None
    lines = (out / "attributes.csv").read_text().splitlines()
    assert len(lines) == 17 and lines[0].startswith("file,split,mark,vertical,target_mark,target_vertical")
    assert all(",train," in ln for ln in lines[1:])


# ----------------------------------------------------------------------------- debias-eval
def test_debias_eval_trains_every_variant_per_seed_and_resumes(planted, tmp_path, capsys, monkeypatch):
    from patronus_diffusion.analysis.debias import debias
    from patronus_diffusion.cli.main import main
    from patronus_diffusion.experiments import debias_eval as E
    from patronus_diffusion.utils.io import write_text

    pat, tmp = planted
    out = tmp / "eval-set"
    if not (out / "debias.json").exists():
        debias(pat, "mark", "vertical", n=16, out=out, judges=readers(), check_judges=False, n_boot=200).write(out)
    run = tmp_path / "run"  # a run folder as debias-eval reads it: only the config's data section is used
    write_text(run / "config.json", pat.config.to_json())
    study = tmp_path / "study"
    args = ["debias-eval", "--run", str(run), "--debias", str(out), "--out", str(study), "--seeds", "2", "--steps",
            "20", "--batch-size", "16", "--no-progress", "--device", "cpu"]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "worst-group" in printed and "real+debias" in printed
    saved = json.loads((study / "debias_eval.json").read_text())
    assert set(saved["variants"]) == set(E.VARIANTS) and saved["test_per_cell"] >= 10
    for v, x in saved["variants"].items():
        assert x["seeds"] == [0, 1] and x["worst_group"]["mean"] <= x["mean_group"]["mean"] + 1e-9
        assert x["worst_group"]["ci95"] is not None
    assert saved["variants"]["real+debias"]["train"]["n_debias"] == 16
    assert saved["variants"]["real"]["train"]["phi_a_b"] > 0.6
    assert saved["variants"]["real-balanced"]["train"]["sampling"] == "group-balanced"
    from patronus_diffusion.evaluation.classifier import ARCHITECTURE

    assert saved["classifier"]["network"] == ARCHITECTURE  # train-classifier's network, not one of its own
    assert set(saved["compared_with_real"]) == {"real+debias", "debias", "real-balanced"}
    assert len((study / "debias_eval.csv").read_text().splitlines()) == 1 + 2 * len(E.VARIANTS)
    assert (study / "debias_eval.png").read_bytes()[:4] == b"\x89PNG"
    assert "## Against the biased real data" in (study / "debias_eval.md").read_text()
    # a re-run trains nothing; a third seed trains only its own classifiers
    trained = []
    real = E.fit_classifier
    monkeypatch.setattr(E, "fit_classifier", lambda *a, **k: trained.append(k["seed"]) or real(*a, **k))
    assert main(args) == 0 and trained == []
    assert main([*args[:8], "3", *args[9:]]) == 0 and trained == [2] * len(E.VARIANTS)
    capsys.readouterr()
    # other settings on the same study, and bad flags, are one line each
    for extra, says in ((["--steps", "21"], "other settings"), (["--variants", "debias"], "must include real"),
                        (["--variants", "real,nonesuch"], "--variants must name"),
                        (["--test-per-cell", "500", "--out", str(tmp_path / "other")], "too few images in a cell")):
        code = main([*args, *extra])
        err = capsys.readouterr().err.strip()
        assert code == 2 and says in err and len(err.splitlines()) == 1, (extra, err)
    assert not (tmp_path / "other").exists()


def test_t_interval_and_verdict():
    from patronus_diffusion.experiments.debias_eval import t_interval, verdict

    d = t_interval([0.1, 0.2, 0.3])
    # mean 0.2, sd 0.1, t(0.975, 2) = 4.303: half-width 0.2484
    assert d["mean"] == pytest.approx(0.2) and d["ci95"] == pytest.approx([0.2 - 0.24843, 0.2 + 0.24843], abs=1e-4)
    assert verdict(d, "x")[0] == "no difference detected"
    assert verdict(t_interval([0.1, 0.11, 0.12]), "x")[0] == "helps"
    assert verdict(t_interval([-0.1, -0.11, -0.12]), "x")[0] == "hurts"
    assert verdict(t_interval([0.1]), "x")[0] == "too few seeds"


def test_help_names_the_rule_and_the_files(capsys):
    from patronus_diffusion.cli.main import main

    for cmd, needles in (("debias", ("--decouple", "--confidence", "--max-attempts", "attributes.csv", "phi",
                                     "--mode", "unfilled")),
                         ("debias-eval", ("worst-group", "balanced", "--seeds", "real+debias"))):
        with pytest.raises(SystemExit) as done:
            main([cmd, "--help"])
        assert done.value.code == 0
        text = " ".join(capsys.readouterr().out.split())
        for needle in needles:
            assert needle in text, (cmd, needle)
