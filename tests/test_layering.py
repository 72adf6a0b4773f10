"""Layering: domain packages never print and never import typer or rich; dependencies point down.

Every import counts: ``import a.b``, ``from a import b`` (an edge to the module ``a.b`` when
it is one, else to ``a``), relative imports, ``importlib.import_module("a.b")`` with a literal
name, at module level or inside a function. The layers (ARCHITECTURE.md):

    ui              app, console, completions, describe, __main__, cli/*   may import anything
    infrastructure  mlsys_cli (package), errors, fsutil, interrupts, bundle, htmlreport  only each other
    domain          data < features < models < deploy < monitor < continual  earlier + infrastructure

and the import graph has no cycle.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "mlsys_cli"
ORDER = ["data", "features", "models", "deploy", "monitor", "continual"]
INFRASTRUCTURE = {"mlsys_cli", "mlsys_cli.errors", "mlsys_cli.fsutil", "mlsys_cli.interrupts", "mlsys_cli.bundle",
                  "mlsys_cli.htmlreport"}
UI = {"mlsys_cli.app", "mlsys_cli.console", "mlsys_cli.completions", "mlsys_cli.describe", "mlsys_cli.__main__"}


def _modules(pkg):
    return sorted((SRC / pkg).rglob("*.py"))


def module_names(root: Path = SRC) -> dict[str, Path]:
    """Dotted module name -> file, for every module of the package."""
    out = {}
    for path in root.rglob("*.py"):
        parts = path.relative_to(root.parent).with_suffix("").parts
        out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return out


def imports(source: str, module: str, known: set[str], is_package: bool = False) -> set[str]:
    """The mlsys_cli modules ``module`` (with this ``source``) imports, anywhere in the file."""
    out = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = module.split(".")[: None if is_package else -1]
                parent = parent[: len(parent) - node.level + 1]
                base = ".".join(parent + ([node.module] if node.module else []))
            out.update(f"{base}.{a.name}" if f"{base}.{a.name}" in known else base for a in node.names)
        elif (isinstance(node, ast.Call) and getattr(node.func, "attr", getattr(node.func, "id", None)) == "import_module"
              and node.args and isinstance(node.args[0], ast.Constant)):
            out.add(str(node.args[0].value))
    return {m for m in out if m in known and m != module}


def import_graph(root: Path = SRC) -> dict[str, set[str]]:
    names = module_names(root)
    return {m: imports(p.read_text(), m, set(names), p.name == "__init__.py") for m, p in names.items()}


def layer(module: str) -> tuple[str, int]:
    """``("ui", 0)``, ``("infrastructure", 0)`` or ``("domain", position in ORDER)``."""
    if module in UI or module.startswith("mlsys_cli.cli"):
        return "ui", 0
    if module in INFRASTRUCTURE:
        return "infrastructure", 0
    return "domain", ORDER.index(module.split(".")[1])


def violation(src: str, dst: str) -> str | None:
    """Why ``src`` may not import ``dst`` (None when it may)."""
    (kind, pos), (dkind, dpos) = layer(src), layer(dst)
    if kind == "ui" or dkind == "infrastructure":
        return None
    if dkind == "ui":
        return "imports the UI layer"
    if kind == "infrastructure":
        return "infrastructure imports a domain package"
    return "imports a later stage" if dpos > pos else None


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while comp[-1:] != [v]:
                comp.append(stack.pop())
            if len(comp) > 1:
                found.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


GRAPH = import_graph()


@pytest.mark.parametrize("pkg", ORDER)
def test_domain_does_not_print_or_use_ui(pkg):
    for path in _modules(pkg):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                names = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
                for name in names:
                    assert name.split(".")[0] not in ("typer", "rich"), f"{path}: imports {name}"
                    assert not name.startswith("mlsys_cli.console") and not name.startswith("mlsys_cli.cli"), f"{path}: imports {name}"
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "print":
                raise AssertionError(f"{path}:{node.lineno}: print()")


def test_every_module_has_a_layer():
    for module in GRAPH:
        assert layer(module)[0] in ("ui", "infrastructure", "domain"), module


@pytest.mark.parametrize("pkg", [*ORDER, "infrastructure"])
def test_dependencies_point_down_the_lifecycle(pkg):
    mine = sorted(m for m in GRAPH if (m in INFRASTRUCTURE if pkg == "infrastructure" else m.startswith(f"mlsys_cli.{pkg}")))
    assert mine
    bad = [f"{m} -> {d}: {why}" for m in mine for d in sorted(GRAPH[m]) if (why := violation(m, d))]
    assert not bad, "\n".join(bad)


# Lazy-import cycles that came with the serve and drift packages, left to their owners (reported
# to the lead): listed so that any other cycle fails here, and this list can only shrink.
KNOWN_CYCLES: list[list[str]] = []


def test_no_import_cycles():
    found = cycles(GRAPH)
    assert [c for c in found if c not in KNOWN_CYCLES] == []
    assert not [c for c in found if c[0].startswith(("mlsys_cli.models", "mlsys_cli.data", "mlsys_cli.features"))]


def test_no_module_imports_another_modules_private_names():
    names = module_names()
    bad = []
    for module, path in names.items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("mlsys_cli"):
                bad += [f"{module}: from {node.module} import {a.name}" for a in node.names
                        if a.name.startswith("_") and not a.name.startswith("__") and f"{node.module}.{a.name}" not in names]
            elif (isinstance(node, ast.Attribute) and node.attr.startswith("_") and not node.attr.startswith("__")
                  and isinstance(node.value, ast.Name) and node.value.id in _module_aliases(path)):
                bad.append(f"{module}:{node.lineno}: {node.value.id}.{node.attr}")
    assert not bad, "\n".join(bad)


def _module_aliases(path: Path) -> set[str]:
    """Local names bound to mlsys_cli modules in a file (``from mlsys_cli.models import train as tr``)."""
    known = set(module_names())
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("mlsys_cli"):
            out.update(a.asname or a.name for a in node.names if f"{node.module}.{a.name}" in known)
        elif isinstance(node, ast.Import):
            out.update(a.asname for a in node.names if a.asname and a.name in known)
    return out


def test_the_checker_sees_every_form_of_import():
    known = {"mlsys_cli", "mlsys_cli.console", "mlsys_cli.models", "mlsys_cli.models.train", "mlsys_cli.deploy.export",
             "mlsys_cli.models.tune", "mlsys_cli.models.tuning", "mlsys_cli.models.tuning.space"}
    source = ("from mlsys_cli import console\n"
              "def f():\n    import importlib\n    importlib.import_module('mlsys_cli.deploy.export')\n"
              "from mlsys_cli.models import train as tr\nfrom . import tune\nfrom .tuning import space\n")
    assert imports(source, "mlsys_cli.models.ensemble", known) == {
        "mlsys_cli.console", "mlsys_cli.deploy.export", "mlsys_cli.models.train", "mlsys_cli.models.tune",
        "mlsys_cli.models.tuning.space"}
    assert violation("mlsys_cli.models.ensemble", "mlsys_cli.console") == "imports the UI layer"
    assert violation("mlsys_cli.models.ensemble", "mlsys_cli.deploy.export") == "imports a later stage"
    assert violation("mlsys_cli.bundle", "mlsys_cli.models.train") == "infrastructure imports a domain package"
    assert violation("mlsys_cli.deploy.export", "mlsys_cli.models.train") is None
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_cli_modules_are_thin():
    for path in sorted((SRC / "cli").glob("*.py")):
        lines = len(path.read_text().splitlines())
        assert lines < 250, f"{path.name} has {lines} lines; move the work into its domain module"
