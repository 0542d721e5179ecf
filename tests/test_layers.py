"""The architecture's one-way data flow, checked on the source: a layer imports only from layers below it."""

import ast
from pathlib import Path

import patronus_diffusion

ROOT = Path(patronus_diffusion.__file__).parent

# bottom to top; a package may import from strictly lower ranks only (packages of one rank do not import each other)
RANKS = {
    "utils": 0, "config": 1, "presets": 2, "runs": 2,
    "data": 3, "models": 4, "diffusion": 5, "evaluation": 6, "edit": 7, "training": 8, "analysis": 8,
    "api": 9, "experiments": 10, "explore": 11, "cli": 12,
}


def _imported_packages(path: Path, source: str | None = None) -> set[str]:
    """Top-level packages of patronus_diffusion that one module imports (relative or absolute imports)."""
    here = list(path.relative_to(ROOT).parts[:-1])
    found = set()
    for node in ast.walk(ast.parse(path.read_text() if source is None else source)):
        if isinstance(node, ast.ImportFrom) and node.level:
            base = here[:len(here) - (node.level - 1)]
            target = base + (node.module.split(".") if node.module else [])
            # `from .. import api` at the package root names the packages in its import list
            found |= {target[0]} if target else {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module == "patronus_diffusion":
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("patronus_diffusion."):
            found.add(node.module.split(".")[1])
        elif isinstance(node, ast.Import):
            found |= {a.name.split(".")[1] for a in node.names if a.name.startswith("patronus_diffusion.")}
    return {p.removesuffix(".py") for p in found}


def test_every_package_has_a_rank():
    packages = {p.name.removesuffix(".py") for p in ROOT.iterdir()
                if (p.is_dir() and any(p.glob("*.py"))) or (p.suffix == ".py" and p.name != "__init__.py")}
    assert packages == set(RANKS), "give a new package its place in RANKS (and the README's Design section)"


def test_lower_layers_never_import_upper_ones():
    violations = []
    for path in ROOT.rglob("*.py"):
        parts = path.relative_to(ROOT).parts
        if parts == ("__init__.py",):
            continue  # the package root re-exports the public API
        me = parts[0].removesuffix(".py")
        for other in _imported_packages(path) - {me}:
            if other in RANKS and RANKS[other] >= RANKS[me]:
                violations.append(f"{path.relative_to(ROOT)} imports {other}")
    assert not violations, "upward or sideways imports:\n" + "\n".join(sorted(violations))


def test_the_checker_sees_relative_and_absolute_imports():
    src = ("from ..cli import main\nfrom . import unet\nimport patronus_diffusion.api\n"
           "from patronus_diffusion.data import x\nfrom .. import training\nfrom patronus_diffusion import explore\n"
           "import torch\n")
    assert _imported_packages(ROOT / "models" / "probe.py", src) == {"cli", "models", "api", "data", "training",
                                                                      "explore"}
