"""`patronus report --results`: audits, debias sets and debias evaluations quoted as labelled values with their
intervals and verdicts; a result file that cannot be read is listed as such, never a traceback.

The result files are written by the real writers (AuditResult.write, DebiasResult.write, debias_eval.write_report)
from small hand-made reports; each report is first read back by its own class's summary and figure title, so a
key the writers do not have would fail here rather than pass unnoticed."""

import json
import re

import numpy as np
import pytest
import torch

from patronus_diffusion.analysis.report_results import check_folders, earlier_html, earlier_results
from patronus_diffusion.utils.errors import UsageError


def _measure(edit, null, lo, hi, n=20):
    return {"n": n, "edit": edit, "edit_ci95": [edit - 0.05, edit + 0.05], "null": null,
            "null_ci95": [null - 0.02, null + 0.02], "difference": edit - null, "difference_ci95": [lo, hi]}


def write_audit(out):
    from patronus_diffusion.analysis.audit import VERDICT_RULES, AuditResult

    auc = {"auroc": 0.97, "ci95": [0.93, 0.99], "n": 24}
    report = {
        "attribute": "mark", "intervention": "mark", "negated": False, "label": "vertical", "run": "runs/x",
        "classifier": {"file": "/tmp/shortcut.pt", "target": 1, "num_classes": 2},
        "verdict": "uses the attribute", "reason": "flipping mark moves the classifier", "threshold": 0.05,
        "verdict_rules": VERDICT_RULES,
        "counts": {"n": 24, "with": 12, "without": 12, "confirmed": 22, "confirmed_with": 11, "confirmed_without": 11},
        "measures": {"MAD": _measure(0.6125, 0.0311, 0.4102, 0.7233), "MD_with": _measure(-0.6, -0.01, -0.7, -0.5),
                     "MD_without": _measure(0.62, 0.02, 0.5, 0.7), "MAD_reconstruction": 0.004,
                     "auroc_attribute": {"real": auc, "counterfactual": {**auc, "auroc": 0.955}}},
        "judge": {"kind": "attribute judge", "test_auroc": 0.998},
        "prototypes": {"edited": [{"prototype": 0}], "null": [{"prototype": 3}]},
        "steps": 10, "edit_guidance": 0.0, "figure": {"rows": [], "confirmed_only": True},
    }
    r = AuditResult(report, {"image": np.array(["test:0"]), "p_x": np.array([0.5])})
    assert "uses the attribute" in r.summary() and "MAD 0.613" in r.figure_title()
    return r.write(out)["audit.json"]


def write_debias(out):
    from patronus_diffusion.analysis.debias_result import DebiasResult

    cells = {f"{a},{b}": {"needed": 4, "accepted": 4 if (a, b) != (1, 0) else 2, "attempts": 9, "decoded": 9,
                          "acceptance": 0.44, "training_share": 0.25} for a in (1, 0) for b in (1, 0)}
    report = {"a": "mark", "b": "vertical", "column_a": "mark", "column_b": "vertical", "n": 16, "n_written": 14,
              "complete": False, "unfilled": ["mark=1,vertical=0"], "mode": "sample", "acceptance": 0.3889,
              "attempts": 36, "phi_training": 0.8123, "cells": cells,
              "phi_judges": {"phi": 0.0417, "ci95": [-0.4731, 0.5]},
              "phi_check_judges": {"phi": 0.1, "ci95": [-0.4, 0.6], "n": 14, "agreement_a": 0.93,
                                   "agreement_b": 1.0},
              "fid": {"fid": 45.2, "kid": 0.0123, "real_floor": {"fid": 20.1}}}
    images = torch.zeros(0, 1, 12, 12)
    r = DebiasResult(report, [], images, images.clone())
    assert "14/16 images" in repr(r)
    return r.write(out)["debias.json"]


def write_debias_eval(out, debias_report):
    from patronus_diffusion.experiments import debias_eval as E

    def test(worst, mean):
        groups = {g: {"n": 10, "accuracy": worst if g == "1,0" else mean} for g in ("1,1", "1,0", "0,1", "0,0")}
        return {"groups": groups, "worst_group": worst, "mean_group": mean, "overall": mean}

    train = {"n": 100, "n_real": 100, "n_debias": 0, "phi_a_b": 0.8, "sampling": "shuffled"}
    evals = [{"variant": v, "seed": s, "test": test(w + 0.01 * s, 0.9), "on_debias_set": test(0.5, 0.7), "seconds": 1,
              "train": train} for v, w in (("real", 0.41), ("real+debias", 0.71)) for s in (0, 1, 2)]
    spec = E.EvalSpec(variants=["real", "real+debias"], seeds=3, steps=20)
    sets = {"a": "mark", "b": "vertical", "report": debias_report, "test_per_cell": 10,
            "test_source": "the run's test split"}
    return E.write_report(out, evals, spec, sets)["debias_eval.json"]


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    root = tmp_path_factory.mktemp("results")
    write_audit(root / "audit")
    debias_json = write_debias(root / "debias")
    write_debias_eval(root / "debias-eval", json.loads(debias_json.read_text()))
    return root


def test_audits_debias_sets_and_their_evaluation_are_quoted_with_intervals_and_verdicts(results):
    found = earlier_results([results])
    assert [len(found[k]) for k in ("audit", "debias", "debias_eval", "unreadable")] == [1, 1, 1, 0], found
    page = earlier_html(found)
    # the audit: verdict, MAD against the null in probability, the difference's interval, confirmations
    assert "p(class 1) for <i>mark</i>: <b>uses the attribute</b> (tau = 0.05)" in page
    assert "MAD 0.613 (mean |change| of p, in probability) against the null edit's 0.031" in page
    assert "difference +0.581, 95% interval [+0.410, +0.723]" in page
    assert "22 of 24 counterfactuals confirmed by the judge (judge test AUROC 0.998)" in page
    assert "real 0.970, counterfactual 0.955" in page and "<code>shortcut.pt</code>" in page
    # the debias set: its status, phi by the judges with its interval, in the training data, FID
    assert "incomplete</b> (unfilled: mark=1,vertical=0): 14 of 16 images (mode sample)" in page
    assert "phi(A, B) by the judges +0.042, 95% interval [-0.473, +0.500]" in page
    assert "in the training data +0.812" in page and "agreement with the judges: a 0.930, b 1.000" in page
    assert "acceptance 0.389 of 36 attempts" in page and "FID 45.20, KID 0.0123" in page
    assert "floor: FID 20.10" in page
    # the evaluation: accuracies with their t-intervals, the verdicts against real
    assert re.search(r"real: worst-group accuracy 0\.420, 95% interval \[0\.\d{3}, 0\.\d{3}\]", page), page
    assert "real+debias minus real, worst-group accuracy: <b>helps</b>: " in page
    assert "real+debias minus real, mean-group accuracy: <b>too few seeds</b>" not in page
    assert "10 balanced real test images per group" in page
    assert not re.search(r"\{&quot;|\{\"|\[\{", page), "raw JSON in the page"
    json.dumps(found)  # what report.json holds


def test_unreadable_files_are_listed_and_missing_folders_refused(results, tmp_path):
    bad = tmp_path / "bad"
    (bad / "a").mkdir(parents=True)
    (bad / "a" / "audit.json").write_text("{not json")
    (bad / "debias.json").write_text(json.dumps({"a": "mark"}))
    (bad / "debias_eval.json").write_text("[1, 2]")
    (bad / "other.json").write_text("{not json either, but not a result file}")  # not one of the known names
    (bad / "diagnosis.json").write_text(json.dumps({"verdict": "shortcut", "a": "x", "b": "y", "reason": "r"}))
    found = earlier_results([bad, results / "audit" / "audit.json"])
    why = {u["file"].split("/")[-1]: u["reason"] for u in found["unreadable"]}
    assert set(why) == {"audit.json", "debias.json", "debias_eval.json"}, why
    assert why["audit.json"].startswith("not JSON (")
    assert why["debias.json"] == "not a result of patronus debias: it has no b"
    assert why["debias_eval.json"] == "not a result of patronus debias-eval: it holds JSON but not an object"
    assert len(found["audit"]) == 1 and len(found["diagnosis"]) == 1  # a file given by itself is read too
    page = earlier_html(found)
    assert page.count("<li class='flag'>could not read ") == 3 and "it has no b" in page
    with pytest.raises(UsageError, match="does not exist"):
        check_folders([tmp_path / "missing"])
    with pytest.raises(UsageError, match="is a file, not one the report reads"):
        check_folders([bad / "other.json"])
    assert "none given" in earlier_html(earlier_results([]))


def test_report_refuses_a_missing_results_folder_before_loading_the_model(tmp_path, capsys):
    from patronus_diffusion.cli.main import main

    code = main(["report", "--run", str(tmp_path / "no-run"), "--results", str(tmp_path / "missing"),
                 "--out", str(tmp_path / "r")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and "does not exist" in err and "missing" in err
    assert not (tmp_path / "r").exists()
