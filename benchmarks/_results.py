"""Write a benchmark's results page, keeping the hand-written notes below the marker line.

A rerun replaces the measured part of ``benchmarks/results/NAME.md`` and keeps everything after
``<!-- notes -->`` (observations of a run, the machine's load, what changed), so that context
survives the next measurement.
"""

from __future__ import annotations

import json
import subprocess
import sys
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


# Runs a command in a child process and reports its wall time and peak RSS (RUSAGE_CHILDREN).
MEASURE = """
import json, resource, subprocess, sys, time
t = time.perf_counter()
code = subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL).returncode
wall = time.perf_counter() - t
print(json.dumps({"code": code, "seconds": wall, "rss_mb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024}))
"""


def measure(cmd: list[str]) -> dict:
    """Wall seconds, peak RSS and exit code of ``cmd`` run in a fresh process."""
    proc = subprocess.run([sys.executable, "-c", MEASURE, *cmd], capture_output=True, text=True, check=True)
    result = json.loads(proc.stdout)
    if result["code"] != 0:
        raise SystemExit(f"failed: {' '.join(cmd)}")
    return result
