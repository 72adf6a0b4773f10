"""Layering: domain packages never print and never import typer or rich; dependencies point down."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "mlsys_cli"
ORDER = ["data", "features", "models", "deploy", "monitor", "continual"]


def _modules(pkg):
    return sorted((SRC / pkg).rglob("*.py"))


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


@pytest.mark.parametrize("pkg", ORDER)
def test_dependencies_point_down_the_lifecycle(pkg):
    later = ORDER[ORDER.index(pkg) + 1:]
    for path in _modules(pkg):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("mlsys_cli."):
                stage = node.module.split(".")[1]
                assert stage not in later, f"{path}: {pkg} imports later stage {node.module}"


def test_cli_modules_are_thin():
    for path in sorted((SRC / "cli").glob("*.py")):
        lines = len(path.read_text().splitlines())
        assert lines < 250, f"{path.name} has {lines} lines; move the work into its domain module"
