"""patronus audit: a user's TorchScript classifier audited with prototype counterfactuals of one attribute.

The end-to-end tests use a closed-form decoder (as tests/test_quality.py does for the diagnosis: a gradient-trained
tiny UNet does not learn to use s within a test budget): x0 | s ~ N(W s + b, sigma^2 I), ridge-regressed on the
training split, with its exact denoiser, on 12-px images of a vertical or horizontal bar (the task), a corner mark
(the audited attribute, independent of the bar) and a grey nuisance block (on exactly half of every (bar, mark) cell,
so tied to neither). Prototype 0 is pushed onto the mark, the others onto the nuisance block, so A's edit paints or
erases the mark and the null edit changes the nuisance block. Two TorchScript classifiers: one reads only the mark
corner, one only the bar.

The decoder's W must give the nuisance prototypes no weight on the bar, or the null edit moves the bar reader for
reasons of the fixture's own: the nuisance block is balanced in every cell (drawn at random it correlates with the bar
in the sample, and the regression then credits bar pixels to the nuisance columns), and W is solved in float64.
Prototypes 1-5 are one vector, so their five columns of s are equal (up to the encoder's rounding: 3e-4 apart when it
runs on 2 threads) and the ridge system has a 4-dimensional near-null space (condition number ~3e7). In float32 the
rounding of the normal equations outweighs the ridge there, so the split among the five columns is noise that follows
the thread count: weights on the nuisance block of 0.65, 0.39, 0.20, -0.37, -0.64 instead of 0.047 each, and up to
0.2 per unit of s on the bar pixels, which cancel when all five move together and show when a null edit moves one.
"""

import json

import numpy as np
import pytest
import torch

from patronus_diffusion.data import biased as B
from helpers import GaussianDenoiser, closed_form_patronus, closed_form_setup, planted_bar_images as planted_images

SIZE = 12


# ----------------------------------------------------------------------------- planted data and decoder
def write_planted(root, n=96, seed=0):
    """vertical (the task) and mark (the attribute) independent, P = 1/2 each; a nuisance block on exactly half of
    each (vertical, mark) cell, so independent of both in the sample too."""
    from PIL import Image

    from patronus_diffusion.data.marks import independent_half

    rows = []
    for split in ("train", "test"):
        k = seed + (split == "test")
        vertical = np.arange(n) % 2 == 1
        mark = B.assign_mark(vertical, 0.0, k)
        nuisance = independent_half(2 * vertical + mark, k + 50)
        imgs = planted_images(vertical, mark, nuisance, np.random.default_rng(k))
        for i in range(n):
            rel = f"images/{split}_{i:03d}.png"
            (root / "images").mkdir(parents=True, exist_ok=True)
            Image.fromarray(imgs[i]).save(root / rel)
            rows.append(B.ManifestRow(rel, split, {"vertical": float(vertical[i]), "mark": float(mark[i])}))
    B.write_manifest(root / "attributes.csv", rows, ["vertical", "mark"])
    return root


def fitted_model(root, tiny_cfg):
    cfg, net, ds, x, z = closed_form_setup(root, tiny_cfg)
    mark = ds.attributes[:, 1] > 0
    nuisance = (x[:, 0, 0:2, 9:12] > -0.5).flatten(1).all(1).numpy()
    last = z.shape[-1] - 1
    with torch.no_grad():
        net.prototypes[0] = z[int(np.flatnonzero(mark)[0]), :, 0, 0]  # the mark (top-left unit)
        net.prototypes[1:] = z[int(np.flatnonzero(nuisance)[0]), :, 0, last]  # the nuisance block (top right)
    return closed_form_patronus(cfg, net, x)


# ----------------------------------------------------------------------------- classifiers (TorchScript)
class MarkReader(torch.nn.Module):
    """(B, 2) logits from the mark corner alone: class 1 when it is bright."""

    def forward(self, x):
        v = 6.0 * x[:, 0, 0:3, 0:3].mean((1, 2))
        return torch.stack([-v, v], 1)


class BarReader(torch.nn.Module):
    """One logit from the bar alone, for 3-channel 24-px images in [0, 1]: vertical bars cross row 11 (22-23 at
    24 px) at columns 8-10, horizontal ones cross column 7 (14-15) at rows 8-10."""

    def forward(self, x):
        g = x.mean(1)
        return 10.0 * (g[:, 22:24, 16:22].mean((1, 2)) - g[:, 16:22, 14:16].mean((1, 2)))


def script(module, path):
    torch.jit.script(module).save(str(path))
    return path


@pytest.fixture(scope="module")
def planted(tmp_path_factory, _tiny_cfg_master):
    """The planted model, a folder for classifiers, and a judge cache shared by this module's tests. The judge of
    the mark is trained for 40 steps instead of the floor of 200 (it reads the planted mark with AUROC 1 after 30)."""
    from patronus_diffusion.analysis import audit_models

    tmp = tmp_path_factory.mktemp("audit")
    root = write_planted(tmp / "data")
    floor, audit_models.MIN_JUDGE_STEPS = audit_models.MIN_JUDGE_STEPS, 40
    yield fitted_model(root, _tiny_cfg_master.copy()), tmp
    audit_models.MIN_JUDGE_STEPS = floor


# ----------------------------------------------------------------------------- the audit on planted decoders
def test_the_planted_decoder_gives_the_nuisance_prototypes_their_block_and_nothing_on_the_bar(planted):
    """What the null test below relies on: an edit of one nuisance prototype moves the nuisance block and not the bar
    regions the bar reader averages, whatever the thread count the decoder is fitted under."""
    pat, _ = planted
    ds = pat.dataset("train")
    x = ds.get_batch(range(len(ds)))
    threads = torch.get_num_threads()
    try:
        fits = []
        for k in (1, 2):  # s encoded and W solved under k threads
            torch.set_num_threads(k)
            s = pat.model.prototypes(x).s
            fits.append(GaussianDenoiser(pat.model.prototypes, pat.schedule, x, s).w.view(-1, SIZE, SIZE))
    finally:
        torch.set_num_threads(threads)
    # s itself moves by up to 3e-4 with the thread count, W by as much; in float32 W moved by 0.7
    assert torch.allclose(fits[0], fits[1], atol=2e-3), (fits[0] - fits[1]).abs().max()
    w = pat.model.w.view(-1, SIZE, SIZE)[1:6]  # the five nuisance columns (prototypes 1-5: one vector)
    block = w[:, 0:2, 9:12].mean((1, 2))
    assert block.min() > 0.04 and block.max() < 1.05 * block.min(), block  # shared equally, ~0.047 each
    bar = torch.stack([w[:, 11, 8:11].mean(1), w[:, 8:11, 7].mean(1)], 1)  # the bar reader's two regions
    assert bar.abs().max() < 1e-3, bar
    vertical = np.asarray(ds.attributes)[:, 0] > 0
    # the nuisance block is balanced in every (bar, mark) cell: s_1 does not correlate with the bar (0.105 at random)
    assert abs(np.corrcoef(s[:, 1].numpy(), vertical)[0, 1]) < 1e-3


def test_a_classifier_that_reads_the_attribute_moves_beyond_the_null_one_that_ignores_it_does_not(planted):
    from patronus_diffusion.analysis.audit import audit

    pat, tmp = planted
    kw = dict(n=24, top_k=1, steps=10, label="vertical", n_boot=500, judge_cache=tmp / "judges")
    shortcut = audit(pat, script(MarkReader(), tmp / "mark.pt"), "mark", **kw)
    honest = audit(pat, script(BarReader(), tmp / "bar.pt"), "mark", classifier_range="0,1", classifier_size=24,
                   classifier_channels=3, **kw)
    for r in (shortcut, honest):
        rep = r.report
        assert rep["prototypes"]["edited"][0]["prototype"] == 0 and rep["prototypes"]["null"][0]["prototype"] != 0
        assert rep["judge"]["kind"] == "attribute judge" and rep["judge"]["test_auroc"] > 0.95
        assert rep["counts"]["confirmed"] >= 0.8 * rep["counts"]["n"], rep["counts"]  # the flips are real
        assert rep["counts"]["with"] == rep["counts"]["without"] == 12
    s, h = shortcut.report["measures"], honest.report["measures"]
    # the mark reader: its MAD is far above the null's, both signed changes point the right way
    assert s["MAD"]["edit"] > 0.5 and s["MAD"]["null"] < 0.1, s["MAD"]
    assert s["MAD"]["difference_ci95"][0] > 0.4
    assert s["MD_with"]["edit"] < -0.5 and s["MD_without"]["edit"] > 0.5
    assert shortcut.report["verdict"] == "uses the attribute", shortcut.report["reason"]
    assert s["auroc_attribute"]["real"]["auroc"] > 0.95 and s["auroc_attribute"]["counterfactual"]["auroc"] > 0.95
    # the bar reader: MAD at the null level, no verdict of use; it reads its label on real and counterfactual images
    assert abs(h["MAD"]["difference"]) < 0.05 and h["MAD"]["difference_ci95"][0] < 0.05, h["MAD"]
    assert honest.report["verdict"] in ("no effect detected", "effect below tau"), honest.report["reason"]
    assert h["auroc_label"]["real"]["auroc"] > 0.95 and h["auroc_label"]["counterfactual"]["auroc"] > 0.95
    assert s["auroc_label"]["real"]["auroc"] < 0.8  # the mark reader cannot read the label on balanced images
    assert honest.report["classifier"]["input_size"] == [24, 24] and honest.report["classifier"]["input_channels"] == 3
    # not:mark runs the same intervention (mark's prototypes, the same judge) and reads the groups the other way
    negated = audit(pat, tmp / "mark.pt", "not:mark", **kw)
    n_ = negated.report["measures"]
    assert negated.report["verdict"] == "uses the attribute" and negated.report["intervention"] == "mark"
    assert negated.report["prototypes"]["edited"] == shortcut.report["prototypes"]["edited"]
    assert n_["MD_with"]["edit"] > 0.5 and n_["MD_without"]["edit"] < -0.5, n_


def test_the_result_writes_json_csv_and_a_figure_and_has_a_short_repr(planted):
    from patronus_diffusion.analysis.audit import audit

    pat, tmp = planted
    r = audit(pat, script(MarkReader(), tmp / "mark.pt"), "mark", n=8, top_k=1, steps=5, n_boot=200,
              judge_cache=tmp / "judges")
    text = repr(r)
    assert len(text) <= 200 and "uses the attribute" in text and "confirmed" in text, text
    summary = r.summary()
    assert summary.startswith("uses the attribute (tau = ") and "confirmed by the judge: " in summary, summary
    assert r.to_json() is r.report
    files = r.write(tmp / "written")
    saved = json.loads(files["audit.json"].read_text())
    assert saved["verdict"] == r.report["verdict"] and saved["edit_guidance"] == 0.0
    rows = files["audit.csv"].read_text().splitlines()
    assert len(rows) == 1 + 8 and rows[0].startswith("image,has_attribute,edit,p_x")
    assert r.to_pil().size[0] > 100 and r._repr_png_()[:4] == b"\x89PNG"
    assert files["audit.png"].read_bytes()[:4] == b"\x89PNG"
    # the figure names what it shows and says how many were confirmed
    assert "confirmed by the judge" in r.figure_title() and "edit guidance w = 0" in r.figure_title()


# ----------------------------------------------------------------------------- the command and its bad inputs
class TwoClass(torch.nn.Module):
    def forward(self, x):
        v = x.mean((1, 2, 3))
        return torch.stack([-v, v], 1)


class WrongShape(torch.nn.Module):
    def forward(self, x):
        return x[:, :, :2, :2]


class FixedInput(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = torch.nn.Linear(3 * 32 * 32, 2)

    def forward(self, x):
        return self.fc(x.flatten(1))


class OnGPU(torch.nn.Module):
    def forward(self, x):
        return x.cuda().mean((1, 2, 3))


class FiveClass(torch.nn.Module):
    def forward(self, x):
        return x.mean((2, 3)).repeat(1, 5)


class NaNs(torch.nn.Module):
    def forward(self, x):
        return x.mean((1, 2, 3)) / 0.0 * 0.0


class Integers(torch.nn.Module):
    def forward(self, x):
        return (x.mean((2, 3)) > 0).long().repeat(1, 2)


class ReturnsTuple(torch.nn.Module):
    def forward(self, x):
        v = x.mean((1, 2, 3))
        return v, v


def test_every_bad_input_is_one_line_exit_2_and_nothing_written(tiny_run, tmp_path, capsys, monkeypatch):
    from patronus_diffusion.cli.main import main

    monkeypatch.setenv("PATRONUS_CACHE", str(tmp_path / "cache"))
    good = script(TwoClass(), tmp_path / "good.pt")
    pickled = tmp_path / "pickled.pt"
    torch.save(TwoClass().state_dict(), pickled)
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a model")
    cases = [
        (["--classifier", str(pickled)], "not a TorchScript file: it is a torch.save pickle"),
        (["--classifier", str(junk)], "not a TorchScript file: it is not a zip archive"),
        (["--classifier", str(tmp_path)], "is a folder"),
        (["--classifier", str(tmp_path / "missing.pt")], "does not exist"),
        (["--classifier", str(script(WrongShape(), tmp_path / "w.pt"))], "output has shape"),
        (["--classifier", str(script(ReturnsTuple(), tmp_path / "t.pt"))], "not a tensor"),
        (["--classifier", str(script(NaNs(), tmp_path / "nan.pt"))], "NaN or infinite logits"),
        (["--classifier", str(script(Integers(), tmp_path / "int.pt"))], "must return float logits"),
        (["--classifier", str(script(FixedInput(), tmp_path / "f.pt"))],
         "fails on input of shape (2, 1, 16, 16) in [-1, 1] on device cpu (RuntimeError: mat1 and mat2 shapes"),
        (["--classifier", str(script(OnGPU(), tmp_path / "g.pt"))], "on device cpu (RuntimeError: PyTorch is not"),
        (["--classifier", str(script(FiveClass(), tmp_path / "five.pt"))], "name the class to audit with --target"),
        (["--classifier", str(good), "--target", "2"], "out of range"),
        (["--classifier", str(good), "--attribute", "nonesuch"], "unknown attribute"),
        (["--classifier", str(good), "--classifier-range", "1,0"], "LOW < HIGH"),
        (["--classifier", str(good), "--classifier-range", "0,x"], "two numbers"),
        (["--classifier", str(good), "--classifier-size", "0"], "positive"),
        (["--classifier", str(good), "--classifier-channels", "2"], "1 (grey) or 3 (RGB)"),
        (["--classifier", str(good), "--n", "2"], "--n must be at least 4"),
        (["--classifier", str(good), "--n", "400"], "lower --n"),
        (["--classifier", str(good), "--edit-guidance", "-1"], "edit-guidance"),
        (["--classifier", str(good), "--label", "nonesuch"], "unknown attribute"),
        (["--classifier", str(good), "--device", "nonesuch"], "unknown device 'nonesuch'"),
        (["--classifier", str(good), "--top-k", "6"], "lower --top-k"),
    ]
    if not torch.cuda.is_available():
        cases.append((["--classifier", str(good), "--device", "cuda"], "CUDA is not available"))
    for k, (extra, says) in enumerate(cases):
        out = tmp_path / f"out{k}"
        args = ["audit", "--run", str(tiny_run), "--attribute", "class:1", "--n", "4", "--out", str(out),
                "--device", "cpu", "--no-progress"]
        code = main(args + extra)
        err = capsys.readouterr().err.strip()
        assert code == 2 and says in err and len(err.splitlines()) == 1, (extra, err)
        assert not out.exists(), extra
    # the five-class classifier is accepted with a target in range: the audit then runs and writes its files
    out = tmp_path / "ok"
    code = main(["audit", "--run", str(tiny_run), "--classifier", str(tmp_path / "five.pt"), "--target", "4",
                 "--attribute", "class:1", "--n", "4", "--steps", "2", "--top-k", "1", "--out", str(out),
                 "--device", "cpu", "--no-progress"])
    printed = capsys.readouterr().out
    assert code == 0 and (out / "audit.json").exists() and (out / "audit.csv").exists() and (out / "audit.png").exists()
    saved = json.loads((out / "audit.json").read_text())
    assert saved["classifier"]["target"] == 4 and saved["classifier"]["num_classes"] == 5
    assert saved["verdict"] in ("uses the attribute", "inconclusive", "effect below tau", "no effect detected")
    assert saved["verdict"] in printed


def test_audit_help_names_the_flags_and_the_measures(capsys):
    from patronus_diffusion.cli.main import main

    with pytest.raises(SystemExit) as done:
        main(["audit", "--help"])
    assert done.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    for needle in ("--classifier-range", "--classifier-size", "--classifier-channels", "--target", "--edit-guidance",
                   "TorchScript", "MAD", "null counterfactual", "judge", "--label"):
        assert needle in text, needle
