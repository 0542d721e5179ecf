"""The package as a release installs it: built as a wheel, installed outside the source tree, it holds every
non-Python file the package reads and serves them (an editable install reads them from src/ and hides a gap)."""

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "src" / "patronus_diffusion"

# run inside the installed copy, with the source tree off the path: one JSON line of what it found
PROBE = r"""
import json, os, sys
site, src = sys.argv[1], sys.argv[2]
sys.path[:] = [site] + [p for p in sys.path if p and os.path.realpath(p) != os.path.realpath(src)]
import torch
torch.set_num_threads(1)
import patronus_diffusion
from patronus_diffusion.explore import server
from patronus_diffusion import Patronus
from patronus_diffusion.evaluation.judge import get_judge
from patronus_diffusion.presets import get_preset

out = {"package": patronus_diffusion.__file__, "server": server.__file__,
       "static": {name: server.static_file(name).decode() for name, _ in server.STATIC.values()}}
pat = Patronus.load("pretrained:fashion-mnist", device="cpu")
x = torch.zeros(2, pat.config.data.channels, pat.config.data.image_size, pat.config.data.image_size)
s = pat.encode(x).s
prior = pat.load_prior()
out["model"] = {"run_dir": str(pat.run_dir), "s_shape": list(s.shape), "finite": bool(torch.isfinite(s).all()),
                "prior_dim": prior.dim}
judge = get_judge(get_preset("cpu-small").data, progress=False)
out["judge"] = {"shipped": judge.meta.get("shipped"), "file": judge.meta["cache_file"],
                "accuracy": judge.meta["test_accuracy"]}
print("PROBE " + json.dumps(out))
"""


def _data_files(root: Path) -> list[str]:
    """Every file of the package that is not Python source or bytecode, relative to the package's parent."""
    return sorted(str(p.relative_to(root.parent)) for p in root.rglob("*")
                  if p.is_file() and "__pycache__" not in p.parts and p.suffix not in (".py", ".pyc"))


def _run(cmd, **kw):
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=300, **kw)
    assert r.returncode == 0, f"{' '.join(map(str, cmd))} failed:\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}"
    return r


def test_the_built_wheel_ships_and_serves_every_data_file(tmp_path):
    pytest.importorskip("setuptools")
    pytest.importorskip("wheel")
    expected = _data_files(PACKAGE)
    assert any(f.endswith("explore/static/index.html") for f in expected)  # the walk sees the page
    # build from a copy of what a release holds (the checkout's own build/ and egg-info stay untouched)
    tree = tmp_path / "tree"
    (tree / "src").mkdir(parents=True)
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, tree / name)
    shutil.copytree(PACKAGE, tree / "src" / "patronus_diffusion", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    env = {**os.environ, "PIP_NO_INDEX": "1", "PIP_DISABLE_PIP_VERSION_CHECK": "1", "OMP_NUM_THREADS": "1"}
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(tmp_path / "dist"),
          str(tree)], env=env, cwd=tmp_path)
    (whl,) = (tmp_path / "dist").glob("patronus_diffusion-*.whl")
    shipped = set(zipfile.ZipFile(whl).namelist())
    missing = [f for f in expected if f not in shipped]
    assert not missing, f"the wheel lacks {len(missing)} data file(s) the package holds: {missing}"

    # installed outside the source tree, beside the test environment's torch (nothing is downloaded)
    site = tmp_path / "site"
    _run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(site), str(whl)],
         env=env, cwd=tmp_path)
    cache = tmp_path / "cache"  # an empty cache: the judge must come from the installed package
    probe_env = {**env, "PATRONUS_CACHE": str(cache), "HOME": str(tmp_path)}
    r = _run([sys.executable, "-I", "-c", PROBE, str(site), str(REPO / "src")], env=probe_env, cwd=tmp_path)
    line = next(ln for ln in r.stdout.splitlines() if ln.startswith("PROBE "))
    got = json.loads(line[len("PROBE "):])
    installed = site / "patronus_diffusion"
    assert Path(got["package"]) == installed / "__init__.py"  # the wheel's copy, not src/
    assert Path(got["server"]).parent == installed / "explore"
    for name, text in got["static"].items():  # the explorer's page, script and style, as the server reads them
        assert text == (PACKAGE / "explore" / "static" / name).read_text(), name
    assert set(got["static"]) == {"index.html", "explorer.js", "explorer.css"}
    assert Path(got["model"]["run_dir"]) == installed / "pretrained" / "fashion-mnist"
    assert got["model"]["finite"] and got["model"]["s_shape"][0] == 2
    assert got["model"]["prior_dim"] == got["model"]["s_shape"][1]
    assert got["judge"]["shipped"] is True and Path(got["judge"]["file"]).is_relative_to(installed / "pretrained")
    assert got["judge"]["accuracy"] > 0.85
    assert not cache.exists() or not any(cache.rglob("*.safetensors"))  # nothing trained or cached
