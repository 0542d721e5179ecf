"""`patronus diagnose-benchmark` (issue 37 part 2): the planted marks, the detector's measures on hand-made
evaluations, the whole study end to end at a tiny size (resume, --report-only, a changed setting refused), and
the committed tiny smoke record, whose tables --report-only must rewrite byte for byte."""

import csv
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from patronus_diffusion.data.marks import MARK_KINDS, independent_half, marked_set, paint
from patronus_diffusion.experiments import diagnose_benchmark_report as rep
from patronus_diffusion.experiments.diagnose_benchmark import BenchmarkSpec, plan_points, rewrite_report

ROOT = Path(__file__).resolve().parents[1]
RECORD = ROOT / "docs" / "records" / "diagnose_benchmark_tiny"


# ----------------------------------------------------------------------------- marks
def test_mark_kinds_are_distinct_and_never_overlap():
    blank = np.zeros((28, 28), np.uint8)
    masks = {k: paint(blank, k) > 0 for k in MARK_KINDS}
    for k, m in masks.items():
        assert 8 <= m.sum() <= 40, k
    kinds = list(masks)
    for i, a in enumerate(kinds):
        for b in kinds[i + 1:]:
            assert not (masks[a] & masks[b]).any(), (a, b)
    assert paint(np.zeros((56, 56), np.uint8), "patch").sum() == 4 * masks["patch"].sum() * 255  # scaled geometry


def test_independent_half_is_independent_of_its_strata():
    strata = np.repeat([0, 1, 2, 3], [40, 60, 10, 90])
    col = independent_half(strata, 3)
    for code in range(4):
        assert col[strata == code].sum() == (strata == code).sum() // 2


def test_marked_set_plants_the_strength_and_keeps_controls_independent(idx_root, tmp_path):
    s = marked_set(tmp_path / "s", "stripe", -0.5, classes=(0, 1), a_classes=(1,), a_name="vertical", n_train=96,
                   n_test=32, root=str(idx_root))
    tr = s["splits"]["train"]
    assert tr["n"] == 96 and tr["phi"]["vertical,mark"] == pytest.approx(-0.5, abs=0.02)
    for pair in ("vertical,other_mark", "mark,other_mark", "vertical,coin", "mark,coin", "other_mark,coin"):
        assert abs(tr["phi"][pair]) < 0.1, (pair, tr["phi"][pair])
    assert s["spec"]["control_kind"] == "dots"
    header = (tmp_path / "s" / "attributes.csv").read_text().splitlines()[0]
    assert header == "file,split,label,vertical,mark,other_mark,coin"
    stamp = (tmp_path / "s" / "marks.json").stat().st_mtime_ns
    marked_set(tmp_path / "s", "stripe", -0.5, classes=(0, 1), a_classes=(1,), a_name="vertical", n_train=96,
               n_test=32, root=str(idx_root))
    assert (tmp_path / "s" / "marks.json").stat().st_mtime_ns == stamp  # a complete set is not rebuilt


# ----------------------------------------------------------------------------- the measures, on made-up evaluations
def fake_eval(rho, planted, others=(0.0, 0.0), blind="inconclusive", kind="patch", seed=0,
              naming=("shortcut", "shortcut"), not_sign=-1):
    """A model's evaluation with the planted pair's (score, verdict), the uncoupled pairs' scores (verdict from
    their size) and the blind pairs' verdict."""
    score, verdict = planted

    def row(a, b, s, v):
        return {"a": a, "b": b, "score": s, "ci95": [s - 0.05, s + 0.05], "verdict": v}

    def v_of(s):
        return "no coupling detected" if abs(s) < 0.05 else "coupling below tau"

    rows = [row("A", "mark", score, verdict), row("A", "other_mark", others[0], v_of(others[0])),
            row("mark", "other_mark", others[1], v_of(others[1])), row("A", "coin", float("nan"), blind)]
    nam = {"a_b": {"a": "A", "b": "mark", "score": score, "ci95": [score - 0.05, score + 0.05], "verdict": naming[0],
                   "tested_directions": ["mark -> A"]},
           "nota_b": {"a": "not:A", "b": "mark", "score": not_sign * score, "ci95": [-score - 0.05, -score + 0.05], "verdict": naming[1],
                      "tested_directions": ["mark -> not:A"]}}
    return {"name": f"{kind}_{rho}_{seed}", "kind": kind, "rho": rho, "train_seed": seed, "a_name": "A",
            "names": ["A", "mark", "other_mark", "coin"], "scan": {"rows": rows}, "naming": nam,
            "judge": {"steered": {"k": 7, "n": 10, "share": 0.7}, "marked_reconstruction": {"k": 1, "n": 11},
                      "marked_original": {"k": 0, "n": 11}, "a_leak": {"value": 0.1},
                      "judge_test_accuracy": {"mark": 0.99, "a": 0.98}}, "train": {"seconds": 1.0},
            "seconds": {"evaluate": 1.0, "total": 2.0}}


def _measure(rows, start):
    return next(r for r in rows if r["measure"].startswith(start))


def test_wilson_interval_matches_known_values():
    lo, hi = rep.wilson(0, 10)
    assert lo == 0.0 and hi == pytest.approx(0.2775, abs=1e-4)
    lo, hi = rep.wilson(5, 10)
    assert (lo, hi) == pytest.approx((0.2366, 0.7634), abs=1e-4)


def test_detector_measures_count_what_they_say():
    evals = [fake_eval(0.0, (0.01, "no coupling detected")),
             fake_eval(0.9, (0.8, "shortcut")),
             fake_eval(0.5, (0.1, "no coupling detected"), others=(0.1, 0.0)),  # missed, and a tie with an uncoupled
             fake_eval(-0.9, (-0.6, "shortcut"), naming=("shortcut", "inconclusive"))]
    h = rep.detection(evals)
    # planted |score| 0.8, 0.1, 0.6 against uncoupled 0.01, 0, 0, 0, 0, 0.1, 0, 0, 0 (rho = 0's own pair included)
    neg = [0.01, 0, 0, 0, 0, 0.1, 0, 0, 0]
    expected = np.mean([[1.0 if p > q else 0.5 if p == q else 0.0 for q in neg] for p in (0.8, 0.1, 0.6)])
    assert _measure(h, "AUROC of abs(score)")["value"] == pytest.approx(expected) and expected < 1
    p1 = _measure(h, "precision@1 of the scan (planted")
    assert (p1["k"], p1["n"]) == (2, "3")  # the tie at rho 0.5 is no hit
    assert _measure(h, "precision@1 of the scan, models with abs(rho) >= 0.75")["k"] == 2
    fc = _measure(h, "false 'shortcut'/'coupling below tau' on uncoupled")
    assert (fc["k"], fc["n"]) == (1, "9")  # the 0.1 'coupling below tau' on an uncoupled pair
    fn = _measure(h, "false 'no coupling detected' on planted")
    assert (fn["k"], fn["n"]) == (1, "3")
    assert _measure(h, "false 'no coupling detected' on blind")["k"] == 0
    na = _measure(h, "naming agreement")
    assert (na["k"], na["n"]) == (3, "4")  # the last model's verdict differs under not:A
    assert _measure(h, "steerability")["value"] == pytest.approx(0.7)
    signs = _measure(h, "claimed couplings of planted pairs with the sign of rho")
    assert (signs["k"], signs["n"]) == (3, "3")  # the naming diagnoses claim a shortcut at every rho != 0 here
    flipped = rep.detection([fake_eval(-0.9, (0.6, "shortcut"))])
    assert _measure(flipped, "claimed couplings of planted pairs")["k"] == 0
    assert _measure(h, "unedited reconstructions")["k"] == 4
    judged = rep.judge_table(evals)
    assert [(j["rho"], j["steered_k"], j["steered_n"]) for j in judged] == [(-0.9, 7, 10), (0.0, 7, 10), (0.5, 7, 10),
                                                                          (0.9, 7, 10)]
    blind = rep.detection([fake_eval(0.9, (0.8, "shortcut"), blind="no coupling detected")])
    assert _measure(blind, "false 'no coupling detected' on blind")["k"] == 1
    same_sign = fake_eval(0.9, (0.8, "shortcut"), not_sign=+1)
    assert rep.naming_agrees(same_sign) is False
    unmeasured = fake_eval(0.9, (float("nan"), "inconclusive"), naming=("inconclusive", "inconclusive"))
    assert rep.naming_agrees(unmeasured) is None  # two unmeasured diagnoses agree on nothing
    assert _measure(rep.detection([unmeasured]), "naming agreement")["n"] == "0"


def test_stored_verdicts_are_checked_against_the_training_phi_they_record():
    """Evaluations stored before the training-label check get it in the report, from their recorded phi: a claim on
    a pair whose labels are uncoupled becomes 'entanglement' (counted apart from false claims), a claim the labels
    hold stays, not:A negates the phi, and a row already checked is left as stored."""
    ev = fake_eval(0.9, (0.8, "shortcut"), others=(0.0, -0.6), naming=("shortcut", "shortcut"))
    ev["scan"]["rows"][2]["verdict"] = "shortcut"  # (mark, other_mark) claimed, as the study's four were
    ev["data"] = {"train": {"A,mark": 0.9, "A,other_mark": 0.0, "mark,other_mark": 0.0, "A,coin": 0.0}}
    checked = rep.with_label_check(ev, 4000)
    rows = {(r["a"], r["b"]): r for r in checked["scan"]["rows"]}
    assert rows[("A", "mark")]["verdict"] == "shortcut" and rows[("A", "mark")]["training_labels"]["phi"] == 0.9
    assert rows[("mark", "other_mark")]["verdict"] == "entanglement"
    assert rows[("mark", "other_mark")]["verdict_before_label_check"] == "shortcut"
    assert checked["naming"]["nota_b"]["training_labels"]["phi"] == -0.9  # phi(not:A, mark)
    assert checked["naming"]["nota_b"]["verdict"] == "shortcut"  # score -0.8, labels -0.9: the same way
    assert ev["scan"]["rows"][2]["verdict"] == "shortcut"  # the stored evaluation is not changed
    again = rep.with_label_check(checked, 4000)
    assert again["scan"]["rows"] == checked["scan"]["rows"]
    h = rep.detection([checked])
    assert _measure(h, "false 'shortcut'/'coupling below tau' on uncoupled")["k"] == 0
    assert _measure(h, "'entanglement' on uncoupled pairs")["k"] == 1
    assert _measure(h, "the same claims by the interval rules alone")["k"] == 1
    missing = rep.with_label_check({**ev, "data": {"train": {}}}, 4000)  # no recorded phi: not checked, said so
    row = next(r for r in missing["scan"]["rows"] if r["b"] == "other_mark" and r["a"] == "mark")
    assert row["verdict"] == "shortcut" and row["training_labels"] is None and "not checked" in row["reason"]


def test_rank_is_pessimistic_and_unmeasured_pairs_rank_last():
    ev = fake_eval(0.75, (0.3, "shortcut"), others=(0.3, 0.0))
    rows = {(r["a"], r["b"]): r["rank"] for r in rep.pair_rows(ev)}
    assert rows[("A", "mark")] == 2 and rows[("A", "other_mark")] == 2  # a tie ranks both second
    assert rows[("A", "coin")] == 4
    assert rep.abs_interval(-0.3, -0.1) == (0.1, 0.3) and rep.abs_interval(-0.1, 0.2) == (0.0, 0.2)


def test_plan_is_seed_major_with_extra_seeds_where_they_decide():
    spec = BenchmarkSpec(mark_kinds=["patch", "dots"], strengths=[0, 0.5, 1], train_seeds=2, seeded_strengths=[0.5],
                         first_train_seed=3).validate()
    names = [p.name for p in plan_points(spec)]
    assert names == ["patch_rho+0.00_seed3", "patch_rho+0.50_seed3", "patch_rho+1.00_seed3", "dots_rho+0.00_seed3",
                     "dots_rho+0.50_seed3", "dots_rho+1.00_seed3", "patch_rho+0.50_seed4", "dots_rho+0.50_seed4"]


# ----------------------------------------------------------------------------- end to end, tiny
def tiny_command(idx_root, out, *extra):
    return ["diagnose-benchmark", "--out", str(out), "--preset", "tiny", "--init-from", "none",
            "--data-root", str(idx_root), "--classes", "0,1", "--a-classes", "1", "--a-name", "vertical",
            "--marks", "patch", "--strengths", "0,1", "--train-seeds", "1", "--seeded-strengths", "",
            "--n-train", "96", "--n-test", "32", "--train-steps", "4", "--n", "4", "--seeds", "1", "--top-k", "1",
            "--steps", "3", "--probe-limit", "96", "--probe-epochs", "2", "--steer-n", "4", "--judge-epochs", "30",
            "--scan", "pairwise", "--device", "cpu", "--no-progress", *extra]


@pytest.fixture(scope="module")
def tiny_study(idx_root, tmp_path_factory, one_thread):
    from patronus_diffusion.cli.main import main

    out = tmp_path_factory.mktemp("bench") / "study"
    assert main(tiny_command(idx_root, out)) == 0
    return out


def test_tiny_study_runs_end_to_end(tiny_study):
    out = tiny_study
    evals = sorted((out / "evals").glob("*.json"))
    assert [p.stem for p in evals] == ["patch_rho+0.00_seed0", "patch_rho+1.00_seed0"]
    ev = json.loads(evals[1].read_text())
    assert ev["data"]["train"]["vertical,mark"] == pytest.approx(1.0)
    assert ev["naming"]["a_b"]["a"] == "vertical" and ev["naming"]["nota_b"]["a"] == "not:vertical"
    assert len(ev["scan"]["rows"]) == 6  # 4 attributes: vertical, mark, other_mark, coin
    classes = sorted(rep.pair_class(ev, r["a"], r["b"]) for r in ev["scan"]["rows"])
    assert classes == ["blind"] * 3 + ["planted"] + ["uncoupled"] * 2
    j = ev["judge"]
    assert j["n"] == 4 and 0 <= j["steered"]["k"] <= 4 and j["judge_test_accuracy"]["mark"] > 0.8
    for name in rep.TABLES + ("dose_response.png",):
        assert (out / name).stat().st_size > 0, name
    summary = (out / "summary.md").read_text()
    assert "2 of 2 planned models evaluated" in summary and "| AUROC of abs(score), planted vs uncoupled" in summary


def test_tiny_study_resumes_and_rewrites_its_tables(tiny_study, idx_root, capsys, one_thread):
    from patronus_diffusion.cli.main import main

    out = tiny_study
    stamps = {p.name: p.stat().st_mtime_ns for p in (out / "evals").glob("*.json")}
    tables = {name: (out / name).read_text() for name in rep.TABLES}
    # an evaluation lost after its stages were stored: the model is re-assembled from work/ without a new diagnosis
    lost = out / "evals" / "patch_rho+1.00_seed0.json"
    kept = lost.read_text()
    lost.unlink()
    capsys.readouterr()
    assert main(tiny_command(idx_root, out)) == 0
    log = capsys.readouterr().out
    assert "2 model(s) planned, 1 already evaluated" in log and "diagnose_a_b:" not in log and "scan:" not in log
    assert json.loads(lost.read_text())["naming"] == json.loads(kept)["naming"]
    assert (out / "evals" / "patch_rho+0.00_seed0.json").stat().st_mtime_ns == stamps["patch_rho+0.00_seed0.json"]
    assert main(["diagnose-benchmark", "--out", str(out), "--report-only"]) == 0
    for name, text in tables.items():
        assert (out / name).read_text() == text, name


def test_changed_settings_and_bad_input_are_refused_with_exit_2(tiny_study, idx_root, tmp_path, capsys):
    from patronus_diffusion.cli.main import main

    capsys.readouterr()
    assert main(tiny_command(idx_root, tiny_study, "--train-steps", "5")) == 2
    assert "other settings (train_steps: 4)" in capsys.readouterr().err
    assert main(["diagnose-benchmark", "--out", str(tmp_path / "x"), "--marks", "triangle"]) == 2
    assert "unknown mark kind 'triangle'" in capsys.readouterr().err
    assert main(["diagnose-benchmark", "--out", str(tmp_path / "x"), "--seeded-strengths", "0.3"]) == 2
    assert "not among --strengths" in capsys.readouterr().err
    lock = tiny_study / ".lock"
    lock.write_text(str(os.getppid()))  # a live process holds the study
    assert main(tiny_command(idx_root, tiny_study)) == 2
    assert f"in use by process {os.getppid()}" in capsys.readouterr().err
    lock.write_text("999999999")  # a process that has ended: its lock is taken over (and nothing is left to do)
    assert main(tiny_command(idx_root, tiny_study)) == 0 and not lock.exists()
    assert main(["diagnose-benchmark", "--out", str(tmp_path / "none"), "--report-only"]) == 2
    assert "holds no benchmark.json" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


def test_tiny_study_with_the_shared_scan(idx_root, tmp_path, one_thread):
    """The adapter's other route: the shared scan (analysis/scan.py, issue 37 part 4) where it is installed."""
    pytest.importorskip("patronus_diffusion.analysis.scan")
    from patronus_diffusion.cli.main import main

    out = tmp_path / "shared"
    cmd = tiny_command(idx_root, out, "--scan", "shared")
    cmd[cmd.index("--strengths") + 1] = "1"
    assert main(cmd) == 0
    ev = json.loads((out / "evals" / "patch_rho+1.00_seed0.json").read_text())
    assert ev["scan"]["mode"] == "shared" and len(ev["scan"]["rows"]) == 6
    assert "shared scan over" in (out / "summary.md").read_text()


# ----------------------------------------------------------------------------- the committed tiny record
@pytest.fixture(scope="module")
def rewritten(tmp_path_factory):
    if not RECORD.exists():
        pytest.fail(f"{RECORD} is missing")
    out = tmp_path_factory.mktemp("record")
    shutil.copytree(RECORD / "evals", out / "evals")
    shutil.copy(RECORD / "benchmark.json", out / "benchmark.json")
    rewrite_report(out)
    return out


def test_record_is_labelled_a_tiny_smoke_record_not_results():
    spec = json.loads((RECORD / "benchmark.json").read_text())["spec"]
    assert spec["preset"] == "tiny" and "tiny smoke record, not results" in spec["record_note"].lower()
    assert "tiny smoke record, not results" in (RECORD / "summary.md").read_text().splitlines()[2].lower()


@pytest.mark.parametrize("name", rep.TABLES)
def test_record_tables_are_rewritten_byte_for_byte(rewritten, name):
    assert (rewritten / name).read_text() == (RECORD / name).read_text()


PILOT = ROOT / "docs" / "records" / "diagnose_benchmark_pilot"


def assert_rewritten_byte_for_byte(record: Path, tmp_path: Path) -> None:
    """--report-only on a copy of ``record``'s benchmark.json and evals/ gives its stored tables byte for byte."""
    out = tmp_path / record.name
    shutil.copytree(record / "evals", out / "evals")
    shutil.copy(record / "benchmark.json", out / "benchmark.json")
    rewrite_report(out)
    for name in rep.TABLES:
        assert (out / name).read_text() == (record / name).read_text(), name


def test_the_pilot_record_rewrites_its_tables_and_holds_the_two_false_verdicts(tmp_path):
    """The pilot of stop 33 (training seed 0, the tuning seed): --report-only rewrites its tables byte for byte, and
    it holds what changed two rules: a false 'shortcut' at rho = 0 (own effect 0.105, under the old floor of 0.1)
    and a false 'no coupling detected' at rho = 1 (one tested direction)."""
    assert_rewritten_byte_for_byte(PILOT, tmp_path)
    evals = {json.loads(f.read_text())["name"]: json.loads(f.read_text()) for f in (PILOT / "evals").glob("*.json")}
    rho0, rho1 = evals["patch_rho+0.00_seed0"], evals["patch_rho+1.00_seed0"]
    assert rho0["naming"]["a_b"]["verdict"] == "shortcut" and rho1["naming"]["a_b"]["verdict"] == "no coupling detected"


def test_the_documented_pilot_command_parses_with_the_default_seeded_strengths():
    """The pilot of docs/diagnose_benchmark.md plants rho in {0, 1}: the seeded strengths default to those planted."""
    from patronus_diffusion.cli.benchmark import spec_from_args
    from patronus_diffusion.cli.main import build_parser

    args = build_parser().parse_args(["diagnose-benchmark", "--marks", "patch", "--strengths", "0,1",
                                      "--train-seeds", "1"])
    assert spec_from_args(args).seeded_strengths == [0.0]
    args = build_parser().parse_args(["diagnose-benchmark"])
    assert spec_from_args(args).seeded_strengths == [0.0, 0.5, 0.75]


def test_the_own_effect_floor_is_a_study_setting_and_old_studies_keep_theirs(tmp_path):
    """--min-own-effect goes into the study's diagnose settings (default: the diagnosis' own, 0.25); a stored study
    whose benchmark.json predates the setting was diagnosed with the old floor 0.1 and keeps its identity with it:
    continuing it needs that floor, the new default is refused as another setting."""
    from patronus_diffusion.analysis.verdicts import DEFAULT_MIN_OWN_EFFECT
    from patronus_diffusion.cli.benchmark import spec_from_args
    from patronus_diffusion.cli.main import build_parser
    from patronus_diffusion.experiments.diagnose_benchmark import (LEGACY_MIN_OWN_EFFECT, BenchmarkSpec, load_study,
                                                                    open_study)
    from patronus_diffusion.utils.errors import UsageError

    assert spec_from_args(build_parser().parse_args(["diagnose-benchmark"])).diagnose["min_own_effect"] == 0.25
    assert DEFAULT_MIN_OWN_EFFECT == 0.25 and LEGACY_MIN_OWN_EFFECT == 0.1
    args = build_parser().parse_args(["diagnose-benchmark", "--min-own-effect", "0.3"])
    assert spec_from_args(args).diagnose["min_own_effect"] == 0.3
    with pytest.raises(UsageError, match="min-own-effect"):
        spec_from_args(build_parser().parse_args(["diagnose-benchmark", "--min-own-effect", "0"]))
    stored = json.loads((RECORD / "benchmark.json").read_text())
    assert "min_own_effect" not in stored["spec"]["diagnose"]  # the record predates the setting
    shutil.copy(RECORD / "benchmark.json", tmp_path / "benchmark.json")
    spec, _ = load_study(tmp_path)
    assert spec.diagnose["min_own_effect"] == 0.1
    again = BenchmarkSpec.from_dict(stored["spec"])
    assert open_study(again, tmp_path)  # the same settings: it continues
    newer = BenchmarkSpec.from_dict({**stored["spec"], "diagnose": {**stored["spec"]["diagnose"],
                                                                    "min_own_effect": 0.25}})
    with pytest.raises(UsageError, match="other settings"):
        open_study(newer, tmp_path)


STUDY = ROOT / "docs" / "records" / "diagnose_benchmark"


def test_the_study_record_rewrites_its_tables_and_the_docs_quote_it(tmp_path):
    """The study's record (training seeds 1-2, image seed 1): --report-only rewrites its tables byte for byte, and
    the headline figures docs/diagnose_benchmark.md quotes are the record's."""
    assert_rewritten_byte_for_byte(STUDY, tmp_path)
    doc = " ".join((ROOT / "docs" / "diagnose_benchmark.md").read_text().split())
    rows = {r["measure"]: r for r in csv.DictReader((STUDY / "detection.csv").open())}
    n_models = len(list((STUDY / "evals").glob("*.json")))
    assert f"## Measured: {n_models} of 18 models" in doc
    auroc = rows["AUROC of abs(score), planted vs uncoupled pairs (scan)"]
    readme = " ".join((ROOT / "README.md").read_text().split())
    for text in (doc, readme):
        assert f"{float(auroc['value']):.3f} [{float(auroc['ci_low']):.3f}, {float(auroc['ci_high']):.3f}]" in text
    false_sc = rows["false 'shortcut'/'coupling below tau' on uncoupled pairs (scan)"]
    assert f"{false_sc['k']} of {false_sc['n']}" in doc


def test_the_lever_record_is_what_the_docs_quote():
    """The tuning seed's amplified-edit diagnoses (docs/records/diagnose_benchmark_lever): the scores, intervals and
    verdicts docs/diagnose_benchmark.md quotes are the stored diagnosis.json's."""
    doc = " ".join((ROOT / "docs" / "diagnose_benchmark.md").read_text().split())
    for g in (1, 2):
        d = json.loads((ROOT / "docs" / "records" / "diagnose_benchmark_lever" / f"edit_guidance_{g}" /
                        "diagnosis.json").read_text())
        assert d["edit_guidance"] == g and d["verdict"] == "inconclusive"
        assert f"{d['score']:+.3f} [{d['ci95'][0]:+.3f}, {d['ci95'][1]:+.3f}]" in doc


SCRATCH = ROOT / "docs" / "records" / "diagnose_benchmark_scratch_pilot"


def test_the_scratch_pilot_record_rewrites_its_tables_and_the_docs_quote_it(tmp_path):
    """The from-scratch pilot (stop 35, training seed 0, the tuning seed): its tables rewrite byte for byte, its
    evaluations carry the training-label check of their day (none re-checked by the report), and the figures
    docs/diagnose_benchmark.md quotes are the record's."""
    assert_rewritten_byte_for_byte(SCRATCH, tmp_path)
    spec = json.loads((SCRATCH / "benchmark.json").read_text())["spec"]
    assert spec["init_from"] is None and spec["preset"] == "cpu-small" and spec["train_steps"] == 1500
    evals = {json.loads(f.read_text())["name"]: json.loads(f.read_text()) for f in (SCRATCH / "evals").glob("*.json")}
    assert all("training_labels" in r for ev in evals.values() for r in ev["scan"]["rows"])
    doc = " ".join((ROOT / "docs" / "diagnose_benchmark.md").read_text().split())
    for name, ev in evals.items():
        steer = ev["judge"]["steered"]
        assert f"{steer['k']} of {steer['n']}" in doc, name
        for d in ev["naming"]["a_b"]["directions"].values():
            assert f"{d['own_effect']:+.3f}" in doc, (name, d["edited"])
    tangled = [r for ev in evals.values() for r in ev["scan"]["rows"] if r["verdict"] == "entanglement"]
    assert len(tangled) == 1 and not tangled[0]["training_labels"]["coupled"]
    r = tangled[0]
    assert f"{r['score']:+.2f} [{r['ci95'][0]:+.2f}, {r['ci95'][1]:+.2f}]" in doc
