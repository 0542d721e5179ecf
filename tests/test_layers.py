"""The architecture's one-way data flow, checked on the source: a layer imports only from layers below it, no
modules import each other in a circle, and no module grows past 500 lines."""

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

MAX_LINES = 500
TOO_LONG_FOR_NOW: set[str] = set()  # a module being split may wait here; the test fails on any other over MAX_LINES


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


# ------------------------------------------------------------------------------ module size
def test_no_module_exceeds_the_line_limit():
    lines = {str(p.relative_to(ROOT)): len(p.read_text().splitlines()) for p in ROOT.rglob("*.py")}
    too_long = {name: n for name, n in lines.items() if n > MAX_LINES and name not in TOO_LONG_FOR_NOW}
    assert not too_long, f"split these modules (at most {MAX_LINES} lines each): {too_long}"


# ------------------------------------------------------------------------------ import circles
def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imported_modules(path: Path, modules: set[str], source: str | None = None) -> set[str]:
    """Modules of patronus_diffusion (dotted, relative to the package; "" = its __init__) that one module imports,
    anywhere in it (inside functions too), by relative or absolute imports: ``from .x import y`` names module
    ``x.y`` when that is a module, else ``x``."""
    me = _module_name(path)
    package = me.split(".") if path.name == "__init__.py" and me else (me.split(".")[:-1] if me else [])
    found = set()
    for node in ast.walk(ast.parse(path.read_text() if source is None else source)):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[:len(package) - (node.level - 1)]
                target = base + (node.module.split(".") if node.module else [])
            elif node.module == "patronus_diffusion" or (node.module or "").startswith("patronus_diffusion."):
                target = node.module.split(".")[1:]
            else:
                continue
            for alias in node.names:
                sub = ".".join(target + [alias.name])
                found.add(sub if sub in modules else ".".join(target))
        elif isinstance(node, ast.Import):
            found |= {".".join(a.name.split(".")[1:]) for a in node.names if a.name.startswith("patronus_diffusion")}
    return (found & modules) - {me}


def _import_graph() -> dict[str, set[str]]:
    paths = {_module_name(p): p for p in ROOT.rglob("*.py")}
    return {name: _imported_modules(path, set(paths)) for name, path in paths.items()}


def _a_circle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import circle of the graph (a list of modules, the first repeated at the end), or None."""
    state: dict[str, int] = {}  # 1 = on the current path, 2 = done
    for start in sorted(graph):
        if start in state:
            continue
        path, stack = [start], [iter(sorted(graph[start]))]
        state[start] = 1
        while stack:
            nxt = next(stack[-1], None)
            if nxt is None:
                state[path.pop()] = 2
                stack.pop()
            elif state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            elif nxt not in state:
                state[nxt] = 1
                path.append(nxt)
                stack.append(iter(sorted(graph[nxt])))
    return None


def test_modules_never_import_each_other_in_a_circle():
    graph = _import_graph()
    assert "edit.engine" in graph and "edit.plan" in graph["edit.engine"]  # the graph sees relative imports
    circle = _a_circle(graph)
    assert circle is None, "import circle: " + " -> ".join(circle)


def test_the_circle_finder_finds_circles_and_the_graph_reads_every_import_form():
    assert _a_circle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == ["a", "b", "c", "a"]
    assert _a_circle({"a": {"b", "c"}, "b": {"c"}, "c": set()}) is None
    modules = {"edit", "edit.plan", "edit.spec", "analysis.when", "utils.errors", "api", "api.patronus", ""}
    src = ("from .spec import parse_edit\nfrom . import plan\nfrom ..utils.errors import UsageError\n"
           "from .. import api\nimport patronus_diffusion.analysis.when\nfrom patronus_diffusion.api import x\n"
           "def f():\n    from patronus_diffusion import edit\n")
    assert _imported_modules(ROOT / "edit" / "engine.py", modules, src) == {
        "edit.spec", "edit.plan", "utils.errors", "api", "analysis.when", "edit"}


def test_patronus_edit_calls_only_down_the_layers(tiny_run, tmp_path):
    """`patronus edit`, traced with sys.setprofile: every call between packages goes to a lower layer. The engine's
    duck-typed calls on the model object (encode, invert with its cache, the dataset, the stored reference set)
    land in diffusion/, never in an override in api/ (issue 34: no call climbs)."""
    import sys

    from patronus_diffusion.cli.main import main

    calls = set()

    def profile(frame, event, arg):
        if event == "call" and frame.f_back is not None:
            callee, caller = frame.f_globals.get("__name__", ""), frame.f_back.f_globals.get("__name__", "")
            if callee.startswith("patronus_diffusion.") and caller.startswith("patronus_diffusion."):
                calls.add((caller.split(".", 1)[1], callee.split(".", 1)[1]))

    sys.setprofile(profile)
    try:
        code = main(["edit", "--run", str(tiny_run), "--n", "1", "--edit", "0=max", "--steps", "2", "--ref-n", "8",
                     "--no-progress", "--out", str(tmp_path / "edit")])
    finally:
        sys.setprofile(None)
    assert code == 0
    rank = lambda module: RANKS.get(module.split(".")[0].removesuffix(".py"), -1)  # noqa: E731
    climbs = {(a, b) for a, b in calls if a.split(".")[0] != b.split(".")[0] and rank(b) > rank(a)}
    assert not climbs, sorted(climbs)
    assert {c[0].split(".")[0] for c in calls} >= {"cli", "edit", "diffusion", "analysis"}  # the trace saw the path
