"""`patronus explore --classifier`: the picked image's counterfactual for the classifier's attribute (patronus
audit's edit, from the cached inversion) with the classifier's probability before and after; without it nothing
changes; a bad classifier is one line, exit 2, before anything is served."""

import http.client
import json

import numpy as np
import pytest
import torch

from helpers import Brightness, serving
from patronus_diffusion.analysis.audit_flip import load_view
from patronus_diffusion.api import Patronus
from patronus_diffusion.edit import EditPlan, run_plan
from patronus_diffusion.explore.session import ExplorerSession
from patronus_diffusion.utils.errors import UsageError


@pytest.fixture(scope="module")
def trained(tiny_run, tmp_path_factory):
    """`patronus train-classifier`'s classifier of class:1 (a few steps: its record matters here, not its skill)."""
    from patronus_diffusion.evaluation.classifier import train_classifier

    pat = Patronus.load(tiny_run, device="cpu")
    out = tmp_path_factory.mktemp("clf") / "class1.pt"
    train_classifier(pat.config.data, "class:1", out, epochs=1, limit=64, value_range=(0, 1))
    return pat, out


@pytest.fixture(scope="module")
def session(trained):
    pat, path = trained
    view = load_view(pat, path, top_k=1, rank_limit=200)
    return ExplorerSession(pat, steps=3, ref_n=32, classifier=view)


def test_the_counterfactual_is_the_audits_flip_with_the_classifiers_p_before_and_after(session, trained):
    pat, path = trained
    view = session.classifier
    info = session.info()["classifier"]
    assert info["attribute"] == "class:1" and info["target"] == 1 and info["predicts"] == "class 1 (class:1)"
    assert view.classifier.value_range == (0.0, 1.0)  # the record's range, not the audit's default -1,1
    assert info["flip"]["prototypes"][0]["prototype"] == view.flip.prototypes[0]
    labels = view.test_labels
    for index in (int(np.flatnonzero(labels)[0]), int(np.flatnonzero(~labels)[0])):
        picked = session.pick_test(index)
        out = session.counterfactual(picked["key"])
        assert out["has_attribute"] == bool(labels[index]) and out["has_attribute_from"] == "the test split's label"
        assert out["edit"] == ("lowered class:1" if labels[index] else "raised class:1")
        assert out["image"].startswith("data:image/png;base64,")
        e = session.entry(picked["key"])
        # p before: the classifier on the picked image; p after: on the audit's flip decoded from the same inversion
        assert out["p_before"] == pytest.approx(float(view.classifier.probability(e.inverted.x0)[0]), abs=1e-5)
        res = run_plan(session.pat, EditPlan(images=e.inverted.x0, edits=[view.flip.edit(np.array([labels[index]]))],
                                             steps=3, inverted=e.inverted, edit_guidance=0.0))
        assert out["p_after"] == pytest.approx(float(view.classifier.probability(res.images[0])[0]), abs=1e-5)
        j = view.flip.prototypes[0]
        want = view.flip.low[j] if labels[index] else view.flip.high[j]
        assert float(view.flip.targets(np.array([labels[index]]))[j][0]) == pytest.approx(want)
    # an upload has no label: whether it has the attribute is read from its s
    from PIL import Image

    from patronus_diffusion.utils.images import png_bytes

    x = session.pat.load_images(indices=[0])[0, 0]
    up = session.pick_upload(png_bytes(Image.fromarray(((x + 1) * 127.5).round().byte().numpy())), "x.png")
    assert session.counterfactual(up["key"])["has_attribute_from"] == "the image's s (no label)"


def test_the_route_serves_it_and_without_a_classifier_nothing_changes(session, tiny_run):
    with serving(session) as port:
        key = session.pick_test(3)["key"]
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        conn.request("POST", "/api/counterfactual", json.dumps({"key": key}), {"Content-Type": "application/json"})
        r = conn.getresponse()
        body = json.loads(r.read())
        assert r.status == 200 and 0 <= body["p_before"] <= 1 and 0 <= body["p_after"] <= 1, body
    plain = ExplorerSession(Patronus.load(tiny_run, device="cpu"), steps=3, ref_n=32)
    assert plain.info()["classifier"] is None
    with pytest.raises(UsageError, match="without --classifier"):
        plain.counterfactual(plain.pick_test(0)["key"])


def test_a_bad_classifier_is_one_line_exit_2_before_anything_is_served(trained, tiny_run, tmp_path, capsys):
    from patronus_diffusion.cli.main import main

    _, good = trained
    bare = tmp_path / "bare.pt"  # no record beside it: the attribute must be named
    torch.jit.script(Brightness()).save(str(bare))
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a model")
    wrong = tmp_path / "wrong.pt"
    torch.jit.script(torch.nn.Identity()).save(str(wrong))
    broken = tmp_path / "broken.pt"
    torch.jit.script(Brightness()).save(str(broken))
    broken.with_suffix(".json").write_text("{cut")
    cases = [
        (["--classifier", str(tmp_path / "missing.pt")], "does not exist"),
        (["--classifier", str(junk), "--classifier-attribute", "class:1"], "not a TorchScript file"),
        (["--classifier", str(wrong), "--classifier-attribute", "class:1"], "output has shape"),
        (["--classifier", str(bare)], "name one with --classifier-attribute"),
        (["--classifier", str(broken)], "cannot read the classifier's record"),
        (["--classifier", str(good), "--classifier-attribute", "nonesuch"], "unknown attribute"),
        (["--classifier", str(good), "--classifier-range", "1,0"], "LOW < HIGH"),
        (["--classifier", str(good), "--target", "2"], "out of range"),
    ]
    for extra, says in cases:
        code = main(["explore", "--run", str(tiny_run), "--device", "cpu", "--port", "0"] + extra)
        captured = capsys.readouterr()
        err = captured.err.strip()
        assert code == 2 and says in err and len(err.splitlines()) == 1, (extra, err)
        assert "open http" not in captured.out, extra  # nothing was served
