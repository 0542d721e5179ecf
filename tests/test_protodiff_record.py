"""The 3-seed ProtoDiffusion comparison quoted in the docs is data, not prose.

``docs/records/protodiff_compare_seeds`` keeps the study's stored evaluations and compare.json; rewriting its
report from them must give back the summary kept beside them, and every table row of that summary must appear,
as written, in docs/protodiffusion.md.
"""

import shutil
from pathlib import Path

import pytest

from patronus_diffusion.experiments.protodiff_compare import rewrite_comparison

ROOT = Path(__file__).resolve().parents[1]
RECORD = ROOT / "docs" / "records" / "protodiff_compare_seeds"
DOCS = ROOT / "docs" / "protodiffusion.md"


def _table_rows(markdown: str) -> list[str]:
    """Data rows of the Markdown tables: lines that start with '|' and hold a digit (not headers or rules)."""
    return [line for line in markdown.splitlines()
            if line.startswith("| ") and any(c.isdigit() for c in line) and not line.startswith("| ---")]


@pytest.fixture(scope="module")
def rewritten(tmp_path_factory):
    if not RECORD.exists():
        pytest.fail(f"{RECORD} is missing: the docs quote it")
    out = tmp_path_factory.mktemp("record")
    shutil.copytree(RECORD / "evals", out / "evals")
    shutil.copy(RECORD / "compare.json", out / "compare.json")
    rewrite_comparison(out)
    return out


def test_record_covers_three_complete_seeds():
    evals = sorted((RECORD / "evals").glob("*.json"))
    assert len(evals) == 4 * 3 * 8, "4 modes x 3 seeds x 8 points"


@pytest.mark.parametrize("name", ["summary.md", "paired_vs_baseline.csv", "steps_saved_vs_baseline.csv",
                                  "reach_baseline.csv", "curves_mean.csv"])
def test_report_rewritten_from_the_record_matches_what_is_kept(rewritten, name):
    assert (rewritten / name).read_text() == (RECORD / name).read_text()


def test_docs_quote_the_record_tables_verbatim(rewritten):
    docs = DOCS.read_text()
    rows = _table_rows((rewritten / "summary.md").read_text())
    assert len(rows) >= 24
    missing = [r for r in rows if r not in docs]
    assert not missing, f"docs/protodiffusion.md does not quote {len(missing)} row(s), first: {missing[0]}"
