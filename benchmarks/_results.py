"""Write a benchmark's results page, keeping the hand-written notes below the marker line.

A rerun replaces the measured part of ``benchmarks/results/NAME.md`` and keeps everything after
``<!-- notes -->`` (observations of a run, the machine's load, what changed), so that context
survives the next measurement.
"""

from __future__ import annotations

from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"
MARKER = "<!-- notes -->"


def write_results(name: str, text: str) -> Path:
    """Write ``text`` as ``results/<name>.md``, followed by the notes of the previous page."""
    path = RESULTS / f"{name}.md"
    notes = ""
    if path.exists():
        old = path.read_text()
        if MARKER in old:
            notes = "\n" + MARKER + old.split(MARKER, 1)[1]
    RESULTS.mkdir(exist_ok=True)
    path.write_text(text + notes)
    return path
