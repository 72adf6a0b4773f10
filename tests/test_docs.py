"""The documentation runs: every ```sh block of README.md and commands/*.md, on the sample data.

Each page runs in its own temporary directory, block after block in order, like a user
following it (README: one directory for the whole tour). The README's directory starts with
``sample_data/`` (a copy of the repository's) and nothing else. A command page's directory also
holds what the README's first two steps make, ``data/all.parquet`` and ``data/{train,valid,test}.parquet``
(``mlsys ingest sample_data/churn_raw.csv --dedupe`` then ``mlsys split --by time:snapshot_date
--target churned``); anything else a page uses, it makes in its own blocks. A block preceded by the line ``<!-- norun: REASON -->`` is not run (a server
that does not exit, a remote database, installing the tool itself); every other block must exit 0
under ``bash -euo pipefail`` with the installed ``mlsys`` first on PATH. Pages added later
(serve, drift, retrain, registry...) are picked up by the glob.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import ROOT, SAMPLE

FENCE = re.compile(r"^```sh[ \t]*\n(.*?)^```[ \t]*$", re.MULTILINE | re.DOTALL)
NORUN = re.compile(r"<!--\s*norun:\s*(.+?)\s*-->\s*$")
PAGES = ["README.md", *sorted(str(p.relative_to(ROOT)) for p in (ROOT / "commands").glob("*.md"))]
BLOCK_TIMEOUT = 600


@dataclass(frozen=True)
class Block:
    page: str
    line: int
    code: str
    norun: str | None


def blocks(page: str) -> list[Block]:
    """The ```sh blocks of a page, each with the reason it is not run (None: it runs)."""
    text = (ROOT / page).read_text(encoding="utf-8")
    found = []
    for match in FENCE.finditer(text):
        before = text[:match.start()].rstrip("\n").splitlines()
        marker = NORUN.search(before[-1]) if before else None
        found.append(Block(page, text.count("\n", 0, match.start()) + 1, match.group(1),
                           marker.group(1) if marker else None))
    return found


def test_the_parser_finds_blocks_and_norun_markers(tmp_path, monkeypatch):
    page = tmp_path / "page.md"
    page.write_text("text\n\n```sh\necho one\n```\n\n<!-- norun: needs a server -->\n```sh\nserve forever\n```\n"
                    "    mlsys indented (not a block)\n```\nnot sh\n```\n")
    monkeypatch.setattr(sys.modules[__name__], "ROOT", tmp_path)
    found = blocks("page.md")
    assert [(b.code, b.norun) for b in found] == [("echo one\n", None), ("serve forever\n", "needs a server")]


def test_every_command_page_has_examples_that_run():
    """A page whose examples are all norun (or absent) proves nothing about the command."""
    for page in PAGES[1:]:
        assert any(b.norun is None for b in blocks(page)), f"{page}: no ```sh example block that runs"


def _environment() -> dict[str, str]:
    bin_dir = str(Path(sys.executable).parent)
    env = {**os.environ, "PATH": bin_dir + os.pathsep + os.environ.get("PATH", ""), "NO_COLOR": "1"}
    return {k: v for k, v in env.items() if not k.startswith("MLSYS_")}  # the pages' own defaults


def _run(code: str, cwd: Path, where: str) -> None:
    proc = subprocess.run(["bash", "-euo", "pipefail", "-c", code], cwd=cwd, env=_environment(),
                          capture_output=True, text=True, timeout=BLOCK_TIMEOUT)
    assert proc.returncode == 0, (f"{where}: exit {proc.returncode}\n{code}\n"
                                  f"--- stdout\n{proc.stdout[-3000:]}\n--- stderr\n{proc.stderr[-3000:]}")


@pytest.fixture(scope="module")
def workspace(tmp_path_factory) -> Path:
    """sample_data/ and the tables the README's first two steps make (a command page's starting point)."""
    root = tmp_path_factory.mktemp("docs")
    shutil.copytree(SAMPLE, root / "sample_data", ignore=shutil.ignore_patterns("*.py"))
    _run("mlsys ingest sample_data/churn_raw.csv -o data/all.parquet --dedupe -q >/dev/null\n"
         "mlsys split data/all.parquet --by time:snapshot_date --target churned -o data -q >/dev/null\n", root, "workspace")
    return root


@pytest.mark.slow
@pytest.mark.parametrize("page", PAGES)
def test_page_runs(page, workspace, tmp_path):
    work = tmp_path / "work"
    if page == "README.md":
        work.mkdir()
        shutil.copytree(workspace / "sample_data", work / "sample_data")
    else:
        shutil.copytree(workspace, work)
    for block in blocks(page):
        if block.norun:
            continue
        _run(block.code, work, f"{page}:{block.line}")
