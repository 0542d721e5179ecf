"""One truth per figure: every figure the README and docs quote about the shipped model carries a marker
``<!-- m:KEY -->`` right after it, and must equal the stored value in the bundle's measured.json at the precision
shown; the model card is generated from the same file."""

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BUNDLE = ROOT / "src" / "patronus_diffusion" / "pretrained" / "fashion-mnist"
MARKER = re.compile(r"([-+]?\d[\d,]*(?:\.\d+)?)\s*(%?)\**\s*<!-- m:([\w.\-]+?)(?:\[(\d+|x\d+)\])? -->")
"""number, optional %, key, and an optional [i] (the i-th entry of a list) or [xK] (the value times K)."""


def _figures() -> dict:
    return json.loads((BUNDLE / "measured.json").read_text())["figures"]


def _quoted(paths):
    for path in paths:
        for m in MARKER.finditer(path.read_text()):
            yield path.name, m.group(1), m.group(2), m.group(3), m.group(4)


def _matches(shown: str, percent: str, value) -> bool:
    number = float(shown.replace(",", ""))
    decimals = len(shown.split(".")[1]) if "." in shown else 0
    if percent:
        value = 100 * value
    return abs(number - value) <= 0.5 * 10 ** -decimals + 1e-9


def test_every_marked_figure_equals_its_stored_value():
    figures = _figures()
    docs = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
    quoted = list(_quoted(docs))
    assert len(quoted) >= 10, "the README quotes the shipped model's figures with markers"
    wrong = []
    for name, shown, percent, key, index in quoted:
        assert key in figures, f"{name}: marker m:{key} names no stored figure"
        value = figures[key]["value"]
        if index is not None and index.startswith("x"):
            value = value * int(index[1:])
        elif index is not None:
            value = value[int(index)]
        if not _matches(shown, percent, value):
            wrong.append(f"{name}: {shown}{percent} quoted for {key}, stored {value}")
    assert not wrong, "\n".join(wrong)


def test_the_checker_catches_a_drifted_figure(tmp_path):
    page = tmp_path / "page.md"
    page.write_text("rise **0.437**<!-- m:x --> and 83.1 %<!-- m:y --> and [0.40, 0.47<!-- m:z[1] -->], "
                    "-0.17<!-- m:k[x1000] -->")
    got = list(_quoted([page]))
    assert [(s, p, k, i) for _, s, p, k, i in got] == [("0.437", "", "x", None), ("83.1", "%", "y", None),
                                                      ("0.47", "", "z", "1"), ("-0.17", "", "k", "x1000")]
    assert _matches("0.437", "", 0.4371) and not _matches("0.437", "", 0.4391)
    assert _matches("83.1", "%", 0.8305) and not _matches("83.1", "%", 0.84)


def test_every_stored_figure_says_how_it_was_made():
    for key, entry in _figures().items():
        assert entry.get("command", "").startswith("patronus "), key
        assert entry.get("result_file") and entry.get("measured"), key


def test_the_model_card_is_written_from_the_stored_figures(tmp_path):
    """model_card.py with no result files keeps every stored figure and writes the card from them."""
    import shutil

    bundle = tmp_path / "bundle"
    shutil.copytree(BUNDLE, bundle, ignore=shutil.ignore_patterns("*.safetensors"))
    before = json.loads((bundle / "measured.json").read_text())
    subprocess.run([sys.executable, str(ROOT / "scripts" / "model_card.py"), str(tmp_path / "no-results"),
                    str(bundle)], check=True, capture_output=True)
    assert json.loads((bundle / "measured.json").read_text()) == before
    card = (bundle / "MODEL_CARD.md").read_text()
    assert (bundle / "MODEL_CARD.md").read_text() == (BUNDLE / "MODEL_CARD.md").read_text(), (
        "the shipped MODEL_CARD.md is not the one measured.json gives: run python scripts/model_card.py")
    fid = before["figures"]["fid.conditional.protocol"]["value"]
    assert fid in card
