"""Contract over every registered command: help, docstring, reference page, completions."""

from __future__ import annotations

import subprocess
import sys

import pytest

from mlsys_cli.app import COMMANDS
from tests.conftest import ROOT, run_cli


def _registered() -> list[str]:
    from mlsys_cli.app import commands

    return list(commands())


REGISTERED = _registered()


def test_commands_are_in_lifecycle_list():
    assert REGISTERED == [c for c in COMMANDS if c in REGISTERED]
    assert "info" in REGISTERED


@pytest.mark.parametrize("name", REGISTERED)
def test_help(name):
    result = run_cli(name, "--help")
    assert result.code == 0, result.stderr
    assert f"commands/{name}.md" in result.stdout


@pytest.mark.parametrize("name", REGISTERED)
def test_docstring_summary(name):
    import importlib

    doc = importlib.import_module(f"mlsys_cli.cli.{name}").command.__doc__
    summary = doc.strip().splitlines()[0]
    assert 0 < len(summary) <= 60 and summary.endswith(".")
    assert "Examples:" in doc


@pytest.mark.parametrize("name", REGISTERED)
def test_documented(name):
    page = ROOT / "commands" / f"{name}.md"
    assert page.is_file(), f"commands/{name}.md is missing"
    text = page.read_text()
    for heading in ("## Synopsis", "## Options", "## Exit status", "## Examples"):
        assert heading in text, f"{page.name} lacks {heading}"


def test_completions_current():
    from mlsys_cli.completions import INDEX, render, render_index

    assert INDEX.read_text() == render_index(), "cli/_index.py is stale: python -m mlsys_cli.completions completions"

    for name, text in render().items():
        path = ROOT / "completions" / name
        assert path.read_text() == text, f"completions/{name} is stale: python -m mlsys_cli.completions completions"


def test_bash_completion_script_is_valid():
    subprocess.run(["bash", "-n", str(ROOT / "completions" / "mlsys.bash")], check=True)


def test_version():
    result = run_cli("--version")
    assert result.code == 0 and result.stdout.startswith("mlsys ")


def test_unknown_command_is_usage_error():
    result = run_cli("frobnicate")
    assert result.code == 2


def test_unknown_option_is_usage_error():
    result = run_cli("info", "--no-such-flag", "x")
    assert result.code == 2
