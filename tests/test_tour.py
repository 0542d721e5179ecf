"""docs/tour.md runs: its ```python blocks, in order and in one namespace, on a machine without the Fashion-MNIST
files (the dataset's default location is pointed at an empty folder), so the tour cannot rot. About 10 s on one
CPU thread (one image, 10 steps); a tour that takes over a minute belongs under @pytest.mark.slow."""

import re
from pathlib import Path

import pytest

import patronus_diffusion.data.datasets as datasets
from patronus_diffusion.data import DataError

TOUR = Path(__file__).resolve().parents[1] / "docs" / "tour.md"


def python_blocks(text: str) -> list[str]:
    return re.findall(r"^```python\n(.*?)^```", text, flags=re.S | re.M)


def test_the_tour_runs_without_the_dataset(tmp_path, monkeypatch):
    monkeypatch.setattr(datasets, "FASHION_MNIST_DIR", str(tmp_path / "no-fashion-mnist"))
    monkeypatch.setenv("PATRONUS_CACHE", str(tmp_path / "cache"))
    monkeypatch.chdir(tmp_path)
    blocks = python_blocks(TOUR.read_text())
    assert len(blocks) >= 8
    ns: dict = {"__name__": "__tour__"}
    for i, block in enumerate(blocks):
        try:
            exec(compile(block, f"{TOUR.name}, python block {i + 1}", "exec"), ns)
        except Exception as e:  # noqa: BLE001 - name the block that broke
            pytest.fail(f"docs/tour.md python block {i + 1} failed: {type(e).__name__}: {e}\n{block}")

    # the dataset really was absent: the tour's edits ran on the reference set stored with the model
    with pytest.raises(DataError, match="data_root="):
        ns["pat"].dataset("test")
    assert ns["res"].reference.n == 256
    for name in ("edits.png", "my_shirt.png", "tour-out/where/where.png", "tour-out/edit/edits.json",
                 "tour-out/when/when.png", "my-model/model.safetensors", "my-model/reference_s.safetensors"):
        assert (tmp_path / name).exists(), name
    assert len(repr(ns["res"])) <= 200 and ns["res"]._repr_png_().startswith(b"\x89PNG")
