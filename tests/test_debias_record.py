"""The debias study's record (docs/records/debias_study, docs/debias.md "Measured"): its tables are rewritten byte for
byte from the stored evaluations, and the figures docs/debias.md quotes are the record's."""

import json
import re
import shutil
from pathlib import Path

import pytest

from patronus_diffusion.experiments.debias_eval import rewrite_report
from patronus_diffusion.utils.errors import UsageError

ROOT = Path(__file__).resolve().parents[1]
RECORD = ROOT / "docs" / "records" / "debias_study"
STUDIES = sorted(p.parent for p in RECORD.glob("*/eval/debias_eval.json"))


def test_the_record_holds_a_study():
    assert STUDIES, f"no debias_eval.json under {RECORD}"


@pytest.mark.parametrize("study", STUDIES, ids=lambda p: p.parent.name)
def test_the_tables_are_rewritten_byte_for_byte_from_the_stored_evaluations(study, tmp_path):
    work = tmp_path / "eval"
    shutil.copytree(study, work)
    for name in ("debias_eval.csv", "debias_eval.md"):  # the JSON keeps its header; its summary is recomputed
        (work / name).write_text("stale")
    files = rewrite_report(work, figure_too=False)
    for name, path in files.items():
        assert path.read_bytes() == (study / name).read_bytes(), name


def test_a_study_with_a_missing_evaluation_is_refused_in_one_line(tmp_path):
    work = tmp_path / "eval"
    shutil.copytree(STUDIES[0], work)
    next((work / "evals").glob("real_seed*.json")).unlink()
    with pytest.raises(UsageError, match="lacks real_seed"):
        rewrite_report(work)


def test_the_docs_quote_the_record():
    """Every `name: value` figure docs/debias.md quotes from the record matches it."""
    doc = " ".join((ROOT / "docs" / "debias.md").read_text().split())  # line breaks as spaces
    for study in STUDIES:
        r = json.loads((study / "debias_eval.json").read_text())
        s = json.loads((study.parent / "debias.json").read_text())
        real = r["variants"]["real"]["worst_group"]
        mixed = r["compared_with_real"]["real+debias"]["worst_group"]
        phi = s["phi_check_judges"]
        for figure in (f"{real['mean']:.3f} [{real['ci95'][0]:.3f}, {real['ci95'][1]:.3f}]",
                       f"{mixed['mean']:+.3f} [{mixed['ci95'][0]:+.3f}, {mixed['ci95'][1]:+.3f}]",
                       f"{phi['phi']:+.3f} [{phi['ci95'][0]:+.3f}, {phi['ci95'][1]:+.3f}]"):
            assert figure in doc, (study.parent.name, figure)
        assert re.search(re.escape(study.parent.name), doc)
    readme = " ".join((ROOT / "README.md").read_text().split())
    phi = json.loads((RECORD / "patch_rho+0.75_seed1" / "debias.json").read_text())["phi_check_judges"]
    assert f"{phi['phi']:+.3f} [{phi['ci95'][0]:+.3f}, {phi['ci95'][1]:+.3f}]" in readme
