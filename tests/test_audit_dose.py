"""`patronus train-classifier` and `patronus audit-dose` (issue 35): a TorchScript classifier that `audit` loads,
bad inputs refused with nothing written, the dose study end to end on a tiny generator (sets reused in place,
resume, --report-only byte for byte), and the report's checks on made-up points."""

import json
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from patronus_diffusion.data.marks import marked_set
from patronus_diffusion.experiments import audit_dose_report as rep

SET_KW = dict(classes=(0, 1), a_classes=(1,), a_name="vertical", n_train=96, n_test=32)


@pytest.fixture(scope="module")
def sets(idx_root, tmp_path_factory):
    """A clean planted set (named as the benchmark names it) and, beside it, the same images at k = 1."""
    base = tmp_path_factory.mktemp("sets")
    marked_set(base / "patch_rho+0.00", "patch", 0.0, root=str(idx_root), **SET_KW)
    marked_set(base / "patch_rho+1.00", "patch", 1.0, root=str(idx_root), **SET_KW)
    return base


@pytest.fixture(scope="module")
def generator(sets, _tiny_cfg_master, tmp_path_factory, one_thread):
    """The tiny preset trained for 4 steps on the clean set (a generator in shape only)."""
    from patronus_diffusion.config import apply_overrides
    from patronus_diffusion.training import train

    clean = sets / "patch_rho+0.00"
    cfg = apply_overrides(_tiny_cfg_master.copy(), [
        "data.dataset=folder", f"data.root={clean}", f"data.attributes_csv={clean / 'attributes.csv'}",
        "train.sample_every=0", "train.checkpoint_every=0"])
    run = tmp_path_factory.mktemp("gen") / "run"
    train(cfg, run, max_steps=4, progress=False)
    return run


@pytest.fixture(scope="module")
def short_judge():
    """The mark's judge is trained for 40 steps instead of the floor of 200 (as tests/test_audit.py does)."""
    from patronus_diffusion.analysis import audit_models

    floor, audit_models.MIN_JUDGE_STEPS = audit_models.MIN_JUDGE_STEPS, 40
    yield
    audit_models.MIN_JUDGE_STEPS = floor


# ----------------------------------------------------------------------------- train-classifier
def test_train_classifier_writes_torchscript_that_reproduces_its_record_and_audit_loads(
        sets, generator, tmp_path, capsys, one_thread, short_judge, monkeypatch):
    from patronus_diffusion.cli.main import main
    from patronus_diffusion.data import load_dataset
    from patronus_diffusion.data.biased import resolve_attribute

    monkeypatch.setenv("PATRONUS_CACHE", str(tmp_path / "cache"))
    biased, clean = sets / "patch_rho+1.00", sets / "patch_rho+0.00"
    clf = tmp_path / "clf" / "vertical.pt"
    assert main(["train-classifier", "--data-root", str(biased), "--label", "vertical", "--groups", "mark",
                 "--eval-data-root", str(clean), "--image-size", "16", "--epochs", "12", "--batch-size", "32",
                 "--range", "0,1", "--seed", "3", "--out", str(clf), "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert "test accuracy" in printed and "--classifier-range 0,1" in printed
    record = json.loads(clf.with_suffix(".json").read_text())
    assert record["label"] == "vertical" and record["seed"] == 3 and record["epochs"] == 12
    assert record["input"] == {"range": [0.0, 1.0], "size": [16, 16], "channels": 1}
    assert record["data"]["attributes_csv"] == str(biased / "attributes.csv")  # the folder's own CSV by default
    assert record["data"]["n_train_used"] == 96 and record["test"]["n"] == 32
    # on the biased test split the mark equals the label: two cells; on the clean one all four
    assert len(record["test"]["groups"]["mark"]["cells"]) == 2
    cells = record["eval"]["groups"]["mark"]["cells"]
    assert len(cells) == 4 and sum(c["n"] for c in cells) == 32
    assert record["eval"]["groups"]["mark"]["worst_group_accuracy"] == min(c["accuracy"] for c in cells)
    assert record["test_accuracy"] > 0.9, record["test_accuracy"]  # the bars are easy to read

    # the file is TorchScript taking [0, 1]: fed the test split so, it reproduces the recorded accuracy
    from patronus_diffusion.config import DataConfig

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        module = torch.jit.load(str(clf))
    cfg = DataConfig(dataset="folder", root=str(biased), attributes_csv=str(biased / "attributes.csv"), image_size=16)
    test = load_dataset(cfg, "test")
    x = (test.get_batch(range(len(test))) + 1) / 2
    with torch.no_grad():
        pred = module(x).argmax(1).numpy().astype(bool)
    y = resolve_attribute(test, "vertical")
    assert float((pred == y).mean()) == pytest.approx(record["test_accuracy"])

    # and `patronus audit` takes it as it is
    out = tmp_path / "audit"
    assert main(["audit", "--run", str(generator), "--classifier", str(clf), "--classifier-range", "0,1",
                 "--attribute", "mark", "--label", "vertical", "--n", "8", "--steps", "2", "--top-k", "1",
                 "--rank-limit", "96", "--out", str(out), "--device", "cpu", "--no-progress"]) == 0
    saved = json.loads((out / "audit.json").read_text())
    assert saved["classifier"]["sha256"] == record["sha256"] and saved["classifier"]["input_range"] == [0.0, 1.0]
    assert saved["classifier"]["num_classes"] == 2 and saved["classifier"]["target"] == 1


def test_train_classifier_bad_inputs_are_one_line_exit_2_and_write_nothing(sets, tmp_path, capsys):
    from patronus_diffusion.cli.main import main

    good = ["--data-root", str(sets / "patch_rho+0.00"), "--image-size", "16", "--epochs", "1"]
    cases = [
        (good + ["--label", "nonesuch"], "unknown attribute 'nonesuch'"),
        (good + ["--label", "vertical", "--groups", "mark,nonesuch"], "unknown attribute 'nonesuch'"),
        (good + ["--label", "label=5"], "all lack label=5"),
        (["--data-root", str(tmp_path / "missing"), "--label", "vertical"], "does not exist"),
        (good + ["--label", "vertical", "--eval-data-root", str(tmp_path / "missing")], "does not exist"),
        (good + ["--label", "vertical", "--range", "1,0"], "LOW < HIGH"),
        (good + ["--label", "vertical", "--range", "0,x"], "two numbers"),
        (good + ["--label", "vertical", "--epochs", "0"], "--epochs must be positive"),
        (good + ["--label", "vertical", "--limit", "1"], "--limit must be at least 2"),
        (good + ["--label", "vertical", "--device", "nonesuch"], "unknown device"),
    ]
    for k, (args, says) in enumerate(cases):
        out = tmp_path / f"out{k}" / "clf.pt"
        code = main(["train-classifier", *args, "--out", str(out), "--no-progress"])
        err = capsys.readouterr().err.strip()
        assert code == 2 and says in err and len(err.splitlines()) == 1, (args, err)
        assert not out.parent.exists(), args
    folder = tmp_path / "a-folder"
    folder.mkdir()
    assert main(["train-classifier", *good, "--label", "vertical", "--out", str(folder)]) == 2
    assert "is a folder" in capsys.readouterr().err and not any(folder.iterdir())


# ----------------------------------------------------------------------------- the dose study, tiny
def dose_command(run, out, idx_root, *extra):
    return ["audit-dose", "--run", str(run), "--out", str(out), "--data-root", str(idx_root), "--strengths", "1,0",
            "--seeds", "0", "--epochs", "2", "--n", "8", "--steps", "2", "--top-k", "1", "--rank-limit", "96",
            "--n-boot", "200", "--device", "cpu", "--no-progress", *extra]


@pytest.fixture(scope="module")
def study(generator, idx_root, tmp_path_factory, one_thread, short_judge):
    from patronus_diffusion.cli.main import main

    out = tmp_path_factory.mktemp("dose") / "study"
    assert main(dose_command(generator, out, idx_root, "--strengths", "1,0.5,0")) == 0
    return out


def test_dose_study_runs_end_to_end_and_reuses_sets_in_place(study, sets):
    names = sorted(p.stem for p in (study / "points").glob("*.json"))
    assert names == ["k+0.00_seed0", "k+0.50_seed0", "k+1.00_seed0"]
    points = {n: json.loads((study / "points" / f"{n}.json").read_text()) for n in names}
    # k = 0 is the generator's own set, k = 1 the one beside it; only k = 0.5 was built, with the same images
    assert points["k+0.00_seed0"]["set"] == {"path": str(sets / "patch_rho+0.00"), "source": "the generator's own set",
                                             "phi": {"train": 0.0, "test": 0.0}}
    assert points["k+1.00_seed0"]["set"]["source"] == "beside the generator's set"
    assert [p.name for p in (study / "data").iterdir()] == ["patch_rho+0.50"]
    assert points["k+0.50_seed0"]["set"]["phi"]["train"] == pytest.approx(0.5, abs=0.02)
    built = (study / "data" / "patch_rho+0.50" / "attributes.csv").read_text().splitlines()
    clean = (sets / "patch_rho+0.00" / "attributes.csv").read_text().splitlines()
    assert [r.split(",")[:3] for r in built] == [r.split(",")[:3] for r in clean]  # file, split, label
    for n, p in points.items():
        assert (study / "classifiers" / f"{n}.pt").exists() and (study / "audits" / n / "audit.json").exists()
        assert p["audit"]["counts"]["n"] == 8 and p["classifier"]["clean_worst_group_accuracy"] is not None
        assert set(p["audit"]["MAD"]) >= {"edit", "edit_ci95", "null", "null_ci95", "difference", "difference_ci95"}
    report = json.loads((study / "audit_dose.json").read_text())
    assert report["done"] == report["planned"] == 3 and [r["k"] for r in report["by_strength"]] == [0.0, 0.5, 1.0]
    for key in ("mad_rises_with_k", "k0_interval_overlaps_null", "confirmed_at_least_80_percent"):
        assert report["checks"][key]["value"] in ("yes", "no", "n/a"), key
    md = (study / "audit_dose.md").read_text()
    assert "| MAD rises with k |" in md and "| k = 0 interval overlaps null |" in md and "goal 80 %" in md
    rows = (study / "audit_dose.csv").read_text().splitlines()
    assert len(rows) == 4 and rows[0].startswith("name,k,seed,verdict,MAD,MAD_lo,MAD_hi,null")
    assert (study / "audit_dose.png").read_bytes()[:4] == b"\x89PNG"


def test_dose_study_resumes_and_report_only_rewrites_byte_for_byte(study, generator, idx_root, capsys, one_thread,
                                                                   short_judge):
    from patronus_diffusion.cli.main import main

    kept = {p.name: p.stat().st_mtime_ns for p in (study / "points").glob("*.json")}
    clf = study / "classifiers" / "k+0.50_seed0.pt"
    clf_stamp = clf.stat().st_mtime_ns
    lost = study / "points" / "k+0.50_seed0.json"
    old = json.loads(lost.read_text())
    lost.unlink()
    capsys.readouterr()
    assert main(dose_command(generator, study, idx_root, "--strengths", "1,0.5,0")) == 0
    log = capsys.readouterr().out
    assert "3 audit(s) planned, 2 already done" in log and "building the set" not in log
    assert clf.stat().st_mtime_ns == clf_stamp  # the stored classifier is reused, not retrained
    assert json.loads(lost.read_text())["audit"]["MAD"] == old["audit"]["MAD"]  # same classifier, images, edits
    for name, stamp in kept.items():
        if name != lost.name:
            assert (study / "points" / name).stat().st_mtime_ns == stamp, name
    # --report-only writes the tables again from the stored points alone, byte for byte
    tables = {name: (study / name).read_bytes() for name in rep.TABLES}
    for name in tables:
        (study / name).unlink()
    assert main(["audit-dose", "--out", str(study), "--report-only"]) == 0
    for name, data in tables.items():
        assert (study / name).read_bytes() == data, name


def test_dose_study_refuses_bad_input_with_exit_2(study, generator, tiny_run, idx_root, tmp_path, capsys):
    from patronus_diffusion.cli.main import main

    cases = [
        (dose_command(generator, study, idx_root, "--epochs", "3"), "other settings (classifier:"),
        (dose_command(generator, tmp_path / "a", idx_root, "--mark", "stripe"), "use --mark patch"),
        (dose_command(generator, tmp_path / "b", idx_root, "--strengths", "2"), "every strength must lie in [-1, 1]"),
        (dose_command(generator, tmp_path / "c", idx_root, "--seeds", "0,0"), "--seeds must be distinct"),
        (dose_command(generator, tmp_path / "d", idx_root, "--n", "2"), "--n must be at least 4"),
        (dose_command(generator, tmp_path / "e", idx_root, "--range", "1,0"), "LOW < HIGH"),
        (dose_command(tiny_run, tmp_path / "f", idx_root), "not on a planted set of data/marks.py"),
        (["audit-dose", "--out", str(tmp_path / "g")], "give the generator with --run"),
        (["audit-dose", "--out", str(tmp_path / "h"), "--report-only"], "holds no study.json"),
    ]
    for args, says in cases:
        capsys.readouterr()
        code = main(args)
        err = capsys.readouterr().err.strip()
        assert code == 2 and says in err and len(err.splitlines()) == 1, (args[-3:], err)
    assert not any((tmp_path / x).exists() for x in "bcdegh")


def test_a_generator_data_path_relative_to_a_folder_above_the_run_is_found(tmp_path):
    from patronus_diffusion.experiments.audit_dose import _locate

    (tmp_path / "study" / "data" / "s").mkdir(parents=True)
    run = tmp_path / "study" / "runs" / "r"
    run.mkdir(parents=True)
    assert _locate("study/data/s", run) == (tmp_path / "study" / "data" / "s").resolve()
    assert _locate("nowhere/s", run) is None


# ----------------------------------------------------------------------------- the checks, on made-up points
def point(k, seed, mad, null, ci=0.02, confirmed=8, n=8):
    def iv(v):
        return None if v is None else [v - ci, v + ci]

    diff = None if mad is None else mad - null
    return {"name": f"k{k:+.2f}_seed{seed}", "k": k, "seed": seed, "set": {"phi": {"train": k}},
            "audit": {"verdict": "no effect detected",
                      "MAD": {"n": confirmed, "edit": mad, "edit_ci95": iv(mad), "null": null, "null_ci95": iv(null),
                              "difference": diff, "difference_ci95": iv(diff)},
                      "counts": {"n": n, "confirmed": confirmed, "with": n // 2, "without": n - n // 2,
                                 "confirmed_with": confirmed // 2, "confirmed_without": confirmed - confirmed // 2},
                      "judge_test_auroc": 1.0, "seconds": {"judge": 0.0}},
            "classifier": {"test_accuracy": 0.9, "test_auroc": 0.95, "test_worst_group_accuracy": 0.9,
                           "clean_accuracy": 0.8, "clean_worst_group_accuracy": 0.5, "clean_worst_group": "x"},
            "seconds": {"set": 0.0, "classifier": 1.0, "audit": 2.0, "total": 3.0}}


def test_checks_say_yes_only_when_the_dose_response_holds():
    rising = [point(k, s, 0.05 + 0.3 * k + 0.01 * s, 0.05) for k in (0, 0.5, 0.75, 1) for s in (0, 1, 2)]
    c = rep.checks(rising)
    assert c["mad_rises_with_k"]["value"] == "yes" and "per seed: 3 of 3 rise" in c["mad_rises_with_k"]["detail"]
    assert c["k0_interval_overlaps_null"]["value"] == "yes" and c["k0_interval_overlaps_null"]["overlapping"] == 3
    assert c["difference_rises_with_k"]["value"] == "yes"
    assert c["confirmed_at_least_80_percent"]["value"] == "yes"
    # a dip at 0.75 in the mean: not monotone; one seed's rise is kept apart
    dip = [p for p in rising if p["k"] != 0.75] + [point(0.75, s, 0.1, 0.05) for s in (0, 1, 2)]
    assert rep.checks(dip)["mad_rises_with_k"]["value"] == "no"
    # MAD above the null's interval at k = 0 in one seed: no overlap
    off = [p for p in rising if not (p["k"] == 0 and p["seed"] == 1)] + [point(0, 1, 0.2, 0.05)]
    k0 = rep.checks(off)["k0_interval_overlaps_null"]
    assert k0["value"] == "no" and k0["overlapping"] == 2
    # a MAD that rises only with its null is no dose response
    with_null = [point(k, 0, 0.05 + 0.3 * k, 0.05 + 0.3 * k) for k in (0, 0.5, 1)]
    assert rep.checks(with_null)["mad_rises_with_k"]["value"] == "yes"
    assert rep.checks(with_null)["difference_rises_with_k"]["value"] == "no"
    # 6 of 8 confirmed (75 %) misses the goal; no confirmed counterfactual at a k leaves MAD undecided there
    few = [point(k, 0, 0.1 + k, 0.05, confirmed=6) for k in (0, 1)]
    share = rep.checks(few)["confirmed_at_least_80_percent"]
    assert share["value"] == "no" and share["share"] == pytest.approx(0.75) and "12 of 16 (75 %" in share["detail"]
    none = [point(0, 0, None, None, confirmed=0), point(1, 0, 0.3, 0.05)]
    c = rep.checks(none)
    assert c["mad_rises_with_k"]["value"] == "n/a" and c["k0_interval_overlaps_null"]["value"] == "n/a"
    assert rep.checks([])["confirmed_at_least_80_percent"]["value"] == "n/a"


def test_report_tables_from_made_up_points(tmp_path):
    points = [point(k, s, 0.05 + 0.3 * k, 0.05) for k in (0, 1) for s in (0, 1)]
    study = {"spec": {"record_note": "made up", "audit": {"n": 8, "steps": 2, "top_k": 1, "edit_guidance": 0.0,
                                                          "seed": 0},
                      "classifier": {"epochs": 2.0, "range": "0,1"}},
             "generator": {"run": "gen", "weights_sha256": "0" * 64, "data": "d", "a_name": "A",
                           "set_spec": {"kind": "patch", "correlation": 0.0}},
             "plan": [p["name"] for p in points] + ["k+0.50_seed0"]}
    files = rep.write_report(tmp_path, study, points)
    md = files["audit_dose.md"].read_text()
    assert "**made up**" in md and "4 of 5 audits done" in md and "| MAD rises with k | yes |" in md
    assert "| 1 | 2 | 0.350 [0.350, 0.350] | 0.050 | 0.300 |" in md
    rows = files["audit_dose.csv"].read_text().splitlines()
    assert rows[1].split(",")[:5] == ["k+0.00_seed0", "0", "0", "no effect detected", "0.050000"]
    assert np.isclose(json.loads(files["audit_dose.json"].read_text())["by_strength"][1]["MAD_mean"], 0.35)
    assert Path(files["audit_dose.png"]).read_bytes()[:4] == b"\x89PNG"


def test_the_kept_record_rewrites_its_tables_byte_for_byte(tmp_path):
    """docs/records/audit_dose (the real study of stop 33): --report-only rewrites its tables from the stored
    points alone, and the checks the docs quote are the ones it holds."""
    import shutil

    from patronus_diffusion.cli.main import main

    record = Path(__file__).resolve().parents[1] / "docs" / "records" / "audit_dose"
    copy = tmp_path / "audit_dose"
    shutil.copytree(record, copy)
    assert main(["audit-dose", "--out", str(copy), "--report-only"]) == 0
    for name in ("audit_dose.json", "audit_dose.csv", "audit_dose.md"):
        assert (copy / name).read_bytes() == (record / name).read_bytes(), name
    checks = {k: c["value"] for k, c in json.loads((record / "audit_dose.json").read_text())["checks"].items()}
    assert checks == {"mad_rises_with_k": "yes", "k0_interval_overlaps_null": "no",
                      "confirmed_at_least_80_percent": "yes", "difference_rises_with_k": "yes"}
