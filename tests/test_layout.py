"""The package layout (docs/architecture.md): every module imports on its own, no import cycles, and the
layers import only downwards.

The import graph is read from the source with `ast` and counts every import, the ones inside functions
too: a function-level import hides a dependency from the reader but not from the program, and a cycle
through one is still a cycle (issue #21 found two that way: checkpoint <-> model/hkd, and the teacher's
edm <-> teacher). Strings handed to importlib (the packages' lazy `__getattr__` exports) are not imports.
"""
from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE_ROOT = Path(__file__).resolve().parent.parent / "hkdviz"

# Small modules everything may use: they import no other hkdviz module (checked below).
LEAF_MODULES = {"hkdviz.atomic", "hkdviz.exports", "hkdviz.inputs", "hkdviz.version"}
# The checkpoint file format sits right above the leaves and below every network (model/, teacher/,
# evaluation/): it builds no module itself, each kind's loader hands it a builder.
CHECKPOINT_FORMAT = "hkdviz.checkpoint"
# Third-party packages model/ may import (besides the standard library).
MODEL_THIRD_PARTY = {"torch", "numpy", "tqdm"}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE_ROOT.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(path): path for path in sorted(PACKAGE_ROOT.rglob("*.py"))}


def imported_names(module: str, path: Path, node: ast.Import | ast.ImportFrom) -> list[str]:
    """Absolute names one import statement reads: hkdviz modules where the name is one, else the
    (sub)package or third-party module it names."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    if node.level:
        package = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
        package = package[:len(package) - (node.level - 1)]
        base = ".".join(package + ([node.module] if node.module else []))
    else:
        base = node.module
    return [f"{base}.{alias.name}" if f"{base}.{alias.name}" in MODULES else base for alias in node.names]


def imports_of(module: str) -> dict[str, int]:
    """{imported name: first line} for every import in `module`, at any depth."""
    path = MODULES[module]
    found: dict[str, int] = {}
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            for name in imported_names(module, path, node):
                found.setdefault(name, node.lineno)
    return found


def hkdviz_imports(module: str) -> dict[str, int]:
    return {name: line for name, line in imports_of(module).items()
            if name.split(".")[0] == "hkdviz" and name in MODULES and name != module}


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    lowest: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = lowest[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(graph[node]):
            if target not in index:
                visit(target)
                lowest[node] = min(lowest[node], lowest[target])
            elif target in on_stack:
                lowest[node] = min(lowest[node], index[target])
        if lowest[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return cycles


def violations(prefix: str, allowed) -> list[str]:
    """'module:line imports name' for every hkdviz import of a module under `prefix` that `allowed(name)` refuses."""
    found = []
    for module in MODULES:
        if module == prefix or module.startswith(prefix + "."):
            found += [f"{module}:{line} imports {name}" for name, line in sorted(hkdviz_imports(module).items())
                      if not allowed(name)]
    return found


def within(name: str, *packages: str) -> bool:
    return any(name == package or name.startswith(package + ".") for package in packages)


def test_find_cycles_finds_a_cycle_and_only_cycles():
    """The cycle finder itself, on known graphs: a 3-cycle with a tail, and a tree."""
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a", "d"}, "d": set()}
    assert find_cycles(graph) == [["a", "b", "c"]]
    assert find_cycles({"a": {"b", "c"}, "b": {"c"}, "c": set()}) == []


def test_relative_imports_resolve_to_modules():
    """The ast reader resolves `from ..x import y` to the module it names (a check of the test's own resolver)."""
    assert "hkdviz.model.config" in hkdviz_imports("hkdviz.model.hkd")
    assert "hkdviz.atomic" in hkdviz_imports("hkdviz.checkpoint")


def test_no_import_cycles():
    graph = {module: set(hkdviz_imports(module)) for module in MODULES}
    cycles = find_cycles(graph)
    assert not cycles, "import cycles among hkdviz modules (function-level imports included): " + "; ".join(
        " <-> ".join(cycle) for cycle in cycles)


def test_leaf_modules_import_no_hkdviz_module():
    for leaf in sorted(LEAF_MODULES):
        assert not hkdviz_imports(leaf), f"{leaf} must stay a leaf, imports {sorted(hkdviz_imports(leaf))}"
    assert set(hkdviz_imports(CHECKPOINT_FORMAT)) <= LEAF_MODULES, (
        f"{CHECKPOINT_FORMAT} may import only {sorted(LEAF_MODULES)}, imports {sorted(hkdviz_imports(CHECKPOINT_FORMAT))}")


def test_model_imports_only_model_and_leaves():
    allowed_hkdviz = lambda name: within(name, "hkdviz.model") or name in LEAF_MODULES | {CHECKPOINT_FORMAT}  # noqa: E731
    assert violations("hkdviz.model", allowed_hkdviz) == []
    standard = set(sys.stdlib_module_names) | {"__future__"}
    third_party = []
    for module in MODULES:
        if within(module, "hkdviz.model"):
            third_party += [f"{module}:{line} imports {name}" for name, line in sorted(imports_of(module).items())
                            if name.split(".")[0] not in standard | MODEL_THIRD_PARTY | {"hkdviz"}]
    assert third_party == []


@pytest.mark.parametrize("package, forbidden", [
    ("hkdviz.data", ("hkdviz.model", "hkdviz.teacher", "hkdviz.evaluation", "hkdviz.train", "hkdviz.analysis",
                     "hkdviz.plot", "hkdviz.widgets", "hkdviz.report", "hkdviz.cli")),
    ("hkdviz.teacher", ("hkdviz.evaluation", "hkdviz.train", "hkdviz.analysis", "hkdviz.plot", "hkdviz.widgets",
                        "hkdviz.report")),
    ("hkdviz.evaluation", ("hkdviz.train", "hkdviz.plot", "hkdviz.widgets", "hkdviz.report")),
    ("hkdviz.analysis", ("hkdviz.train", "hkdviz.evaluation", "hkdviz.plot", "hkdviz.widgets", "hkdviz.report")),
    ("hkdviz.plot", ("hkdviz.train", "hkdviz.teacher", "hkdviz.evaluation", "hkdviz.widgets", "hkdviz.report",
                     "hkdviz.model", "hkdviz.analysis")),
])
def test_packages_import_only_downwards(package, forbidden):
    assert package in MODULES, f"{package} is not a package of hkdviz"
    assert violations(package, lambda name: not within(name, *forbidden)) == []


# docs/architecture.md, "Packages and layers": each module imports only its own layer and those before it.
LAYERS = [("hkdviz.atomic", "hkdviz.exports", "hkdviz.inputs", "hkdviz.version"), ("hkdviz.errors",), ("hkdviz.checkpoint",),
          ("hkdviz.model", "hkdviz"), ("hkdviz.data",), ("hkdviz.teacher",), ("hkdviz.analysis",),
          ("hkdviz.evaluation",), ("hkdviz.plot",), ("hkdviz.train",),
          ("hkdviz.report", "hkdviz.widgets", "hkdviz.cli", "hkdviz.__main__")]
# The two documented exceptions (both inside functions): errors.py maps every package's error class to an
# exit code; `hkdviz lens` reads seed ranges with cli.parse_seeds.
UPWARD_EXCEPTIONS = {("hkdviz.errors", None), ("hkdviz.analysis.lens_cli", "hkdviz.cli")}


def layer_of(module: str) -> int:
    found = [index for index, group in enumerate(LAYERS) for prefix in group
             if module == prefix or (prefix != "hkdviz" and module.startswith(prefix + "."))]
    assert found, f"{module} belongs to no layer of LAYERS (docs/architecture.md): add it"
    return max(found)


def test_the_upward_exceptions_import_inside_functions_only():
    """errors.py and lens_cli.py reach up only from inside functions: importing them loads nothing above."""
    for module in ("hkdviz.errors", "hkdviz.analysis.lens_cli"):
        path = MODULES[module]
        top_level = [name for node in ast.parse(path.read_text(encoding="utf-8")).body
                     if isinstance(node, (ast.Import, ast.ImportFrom))
                     for name in imported_names(module, path, node) if name.split(".")[0] == "hkdviz"]
        assert all(layer_of(name) <= layer_of(module) for name in top_level), (module, top_level)


def test_every_module_imports_only_its_layer_and_those_before():
    upward = [f"{module}:{line} imports {name}" for module in MODULES
              for name, line in sorted(hkdviz_imports(module).items())
              if layer_of(name) > layer_of(module)
              and (module, None) not in UPWARD_EXCEPTIONS and (module, name) not in UPWARD_EXCEPTIONS]
    assert upward == []


def test_every_module_imports_on_its_own():
    """Each module imported first, in a fresh set of hkdviz modules (one interpreter, sys.modules purged of
    hkdviz between modules): a module-level cycle fails whichever of its modules comes first."""
    program = (
        "import importlib, sys, traceback\n"
        "failed = []\n"
        "for name in sys.argv[1:]:\n"
        "    for loaded in [key for key in sys.modules if key == 'hkdviz' or key.startswith('hkdviz.')]:\n"
        "        del sys.modules[loaded]\n"
        "    try:\n"
        "        importlib.import_module(name)\n"
        "    except Exception as error:\n"
        "        failed.append(f'{name}: {type(error).__name__}: {error}')\n"
        "print('\\n'.join(failed))\n"
        "sys.exit(1 if failed else 0)\n")
    names = [name for name in MODULES if not name.endswith("__main__")]
    result = subprocess.run([sys.executable, "-c", program, *names], capture_output=True, text=True, timeout=600,
                            cwd=PACKAGE_ROOT.parent)
    assert result.returncode == 0, result.stdout + result.stderr[-2000:]


@pytest.mark.parametrize("package", ["hkdviz.model", "hkdviz.data", "hkdviz.teacher", "hkdviz.teacher.networks",
                                     "hkdviz.evaluation", "hkdviz.train", "hkdviz.analysis", "hkdviz.report",
                                     "hkdviz.plot", "hkdviz.widgets"])
def test_every_exported_name_resolves(package):
    """Each package's __all__ (eager or lazy exports) names things that exist: a module moved away leaves no
    stale export behind."""
    import importlib
    module = importlib.import_module(package)
    names = getattr(module, "__all__", None) or sorted(module._EXPORTS)  # analysis lists its lazy names only
    assert names, f"{package} exports nothing"
    missing = []
    for name in names:
        try:
            getattr(module, name)
        except (AttributeError, ImportError) as error:
            missing.append(f"{name} ({error})")
    assert missing == [], f"{package} exports names that do not resolve: {missing}"


def test_top_level_names_resolve():
    import hkdviz
    for name in ("load", "build", "HKDModel", "spectrum", "trajectory", "load_teacher", "load_classifier", "Band"):
        assert callable(getattr(hkdviz, name)), name
    assert hkdviz.load.__module__ == "hkdviz.model.hkd"


def test_every_package_directory_is_a_package():
    """pyproject.toml installs what setuptools finds (hkdviz*): a folder of modules without __init__.py
    would be left out of the install."""
    folders = {path.parent for path in PACKAGE_ROOT.rglob("*.py")}
    assert sorted(str(folder.relative_to(PACKAGE_ROOT.parent)) for folder in folders
                  if not (folder / "__init__.py").exists()) == []
