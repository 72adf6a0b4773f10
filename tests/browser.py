"""Load an HTML file in a real headless Chromium: the DOM it renders and a screenshot.

Used by the tests of every ``--html`` report. Chromium runs with networking features off and a
throw-away profile; the pages are local files that must need nothing from the network.

    from tests.browser import chromium, render_dom, screenshot

    dom = render_dom(chromium_path, "report.html")        # serialised DOM after rendering
    screenshot(chromium_path, "report.html", "shot.png")  # PNG of the page
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from html.parser import HTMLParser
from pathlib import Path

import pytest

from tests.conftest import missing_service

CANDIDATES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
FLAGS = (
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-extensions",
    "--disable-default-apps", "--mute-audio", "--hide-scrollbars",
)


def find_chromium() -> str | None:
    """The path of a Chromium/Chrome binary, or None."""
    env = os.environ.get("MLSYS_CHROMIUM")
    if env and Path(env).is_file():
        return env
    for name in CANDIDATES:
        found = shutil.which(name)
        if found:
            return found
    return None


@pytest.fixture(scope="session")
def chromium() -> str:
    """The Chromium binary; the test fails (with the install hint) when none is installed."""
    path = find_chromium()
    if path is None:
        missing_service("no chromium binary on PATH (install Debian's chromium; .ci/run does)")
    return path


def _run(binary: str, url: str, extra: list[str], timeout: float) -> subprocess.CompletedProcess:
    with tempfile.TemporaryDirectory(prefix="mlsys-chromium-") as profile:
        cmd = [binary, *FLAGS, f"--user-data-dir={profile}", *extra, url]
        return subprocess.run(cmd, capture_output=True, timeout=timeout,
                              env={**os.environ, "HOME": profile})


def render_dom(binary: str, path: str | os.PathLike, timeout: float = 90) -> str:
    """The DOM Chromium builds from ``path``, serialised (``--dump-dom``)."""
    url = Path(path).resolve().as_uri()
    proc = _run(binary, url, ["--dump-dom", "--virtual-time-budget=2000"], timeout)
    dom = proc.stdout.decode("utf-8", errors="replace")
    assert proc.returncode == 0 and "<html" in dom, proc.stderr.decode(errors="replace")[-2000:]
    return dom


def screenshot(binary: str, path: str | os.PathLike, png: str | os.PathLike, size: tuple[int, int] = (1200, 3000),
               timeout: float = 90) -> Path:
    """A PNG screenshot of ``path`` rendered at ``size`` (width, height)."""
    url = Path(path).resolve().as_uri()
    png = Path(png).resolve()
    proc = _run(binary, url, [f"--screenshot={png}", f"--window-size={size[0]},{size[1]}"], timeout)
    assert proc.returncode == 0 and png.is_file() and png.stat().st_size > 0, proc.stderr.decode(errors="replace")[-2000:]
    return png


class _Plots(HTMLParser):
    """Collects every ``<svg class="plot">`` and the data marks inside it."""

    MARKS = {"polyline", "circle", "rect", "path"}

    def __init__(self) -> None:
        super().__init__()
        self.plots: list[dict] = []
        self._depth = 0

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "svg" and "plot" in (a.get("class") or "").split():
            self.plots.append({"kind": a.get("data-kind"), "points": int(a.get("data-points") or 0), "marks": 0})
            self._depth = 1
            return
        if self._depth:
            if tag == "svg":
                self._depth += 1
            cls = (a.get("class") or "").split()
            if tag in self.MARKS and {"series", "point", "bar", "cell", "count"} & set(cls):
                self.plots[-1]["marks"] += 1

    def handle_endtag(self, tag):
        if self._depth and tag == "svg":
            self._depth -= 1


def plots_in(dom: str) -> list[dict]:
    """Each plot in a rendered DOM: ``{"kind", "points", "marks"}`` (marks = data elements drawn)."""
    parser = _Plots()
    parser.feed(dom)
    return parser.plots
