"""Kill a real ``mlsys retrain`` process around every change of state it makes in the registry and
check, after each kill, that the registry is whole and that the next writer repairs the rest.

The points: just before each call that changes what a reader sees (a rename or replace, a
directory created or removed, a history line written, the lock file truncated or written) and
just before the call after it, i.e. every distinct state on disk, including the temporaries.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import pytest

from mlsys_cli.continual import registry as r
from mlsys_cli.fsutil import sha256_file
from tests.conftest import ROOT, run_cli


def _run_killed(k: int, reg, data, count_file):
    args = ["retrain", "--registry", str(reg), "--data", str(data), "--time-col", "snapshot_date", "--bootstrap", "0"]
    return subprocess.run([sys.executable, "-m", "tests.continual.killer", str(k), str(reg), str(count_file), *args],
                          cwd=ROOT, capture_output=True, text=True, timeout=300, env={**os.environ, "NO_COLOR": "1"})


def whole(reg) -> dict:
    """Invariants that hold at every instant, whatever was killed when."""
    assert json.loads((reg / "registry.json").read_text())["format"] == "mlsys-registry"
    versions = {}
    for path in sorted((reg / "versions").iterdir()):
        if path.name.startswith("."):
            continue  # a temporary: invisible to readers, removed by the next writer
        meta = json.loads((path / "meta.json").read_text())
        assert meta["version"] == path.name and meta["status"] in ("promoted", "rejected")
        assert sha256_file(path / "model.mlsys") == meta["sha256"], path
        versions[path.name] = meta
    champion = json.loads((reg / "champion.json").read_text())
    assert champion["version"] in versions and champion["sha256"] == versions[champion["version"]]["sha256"]
    lines = (reg / "history.jsonl").read_bytes().split(b"\n")
    events = [json.loads(line) for line in lines[:-1]]  # the last piece may be a partial line
    listing = r.list_versions(reg)  # a reader never fails on a killed writer's leftovers
    assert listing.champion == champion["version"]
    return {"versions": versions, "champion": champion["version"], "events": events}


TRANSITIONS = ("rename", "replace", "mkdir", "rmtree", "unlink", "write", "pwrite", "ftruncate")


@pytest.mark.slow
def test_killed_at_every_registry_write(seeded_registry, churn, tmp_path):
    template = tmp_path / "template"
    shutil.copytree(seeded_registry, template)
    count_file = tmp_path / "count"
    full = tmp_path / "full"
    shutil.copytree(template, full)
    done = _run_killed(0, full, churn["q3"], count_file)
    assert done.returncode == 0, done.stderr  # the uninterrupted run promotes v0002
    ops = json.loads(count_file.read_text())
    assert {"rename", "replace", "write"} <= set(ops)
    points = sorted({k for i, op in enumerate(ops, 1) if op in TRANSITIONS for k in (i, i + 1) if k <= len(ops)})

    def one(k):
        reg = tmp_path / f"k{k}"
        shutil.copytree(template, reg)
        proc = _run_killed(k, reg, churn["q3"], count_file)
        return k, reg, proc.returncode

    with ThreadPoolExecutor(max_workers=2) as pool:
        outcomes = list(pool.map(one, points))
    seen_states = set()
    for k, reg, code in outcomes:
        assert code == -9, (k, code)
        before = whole(reg)
        seen_states.add((before["champion"], tuple(before["versions"])))
        # The next writer (here a prune that keeps everything) recovers, then the registry is tidy.
        repaired = run_cli("registry", "prune", reg, "--keep", "100", "--json")
        assert repaired.code == 0, (k, repaired.stderr)
        after = whole(reg)
        assert not [p for p in reg.rglob("*") if p.name.startswith(".") and p.name != ".lock"], k
        assert after["champion"] == ("v0002" if "v0002" in after["versions"] else "v0001"), k
        logged = {e.get("version") for e in after["events"] if e["event"] in ("retrain", "recover")}
        assert set(after["versions"]) <= logged, k
        assert after["events"][-1]["champion"] == after["champion"], k
        assert r.Registry(reg).history().partial_bytes == 0
    # The kills landed before the version existed, between the version and the pointer, and after.
    assert {("v0001", ("v0001",)), ("v0001", ("v0001", "v0002")), ("v0002", ("v0001", "v0002"))} <= seen_states



@pytest.mark.slow
def test_a_first_run_killed_before_its_marker_leaves_a_registry_the_next_run_starts(tmp_path):
    """Until ``registry.json`` is in place a new registry holds only a first writer's leftovers
    (the lock file, the marker's temporary); the next writer must take them for a new registry,
    not refuse the directory as something else. The run fails on its missing data right after
    the registry is set up, so every kill point before and around the marker is quick to reach."""
    count_file = tmp_path / "count"

    def run(k, reg):
        args = ["retrain", "--registry", str(reg), "--data", str(tmp_path / "missing.parquet"), "--target", "churned"]
        return subprocess.run([sys.executable, "-m", "tests.continual.killer", str(k), str(reg), str(count_file), *args],
                              cwd=ROOT, capture_output=True, text=True, timeout=300)

    done = run(0, tmp_path / "full")
    assert done.returncode == 3 and "missing.parquet" in done.stderr, done.stderr
    ops = json.loads(count_file.read_text())
    marker = ops.index("replace") + 1  # the first replace puts registry.json in place
    with ThreadPoolExecutor(max_workers=2) as pool:
        codes = list(pool.map(lambda k: run(k, tmp_path / f"k{k}").returncode, range(1, marker + 2)))
    assert codes == [-9] * (marker + 1)
    for k in range(1, marker + 2):
        reg = tmp_path / f"k{k}"
        with r.Registry(reg).writer(create=True) as writer:  # what the next retrain does first
            assert writer.registry.versions() == []
        assert {p.name for p in reg.iterdir()} <= {".lock", "registry.json", "versions", "history.jsonl"}, k
        assert (reg / "registry.json").is_file() and r.list_versions(reg).champion is None, k


def _small_registry(reg):
    """v0001 promoted, v0002 and v0003 rejected, v0004 promoted: no training needed."""
    for status in ("promoted", "rejected", "rejected", "promoted"):
        with r.Registry(reg).writer(create=True) as w:
            version = w.add_version(lambda path: path.write_bytes(status.encode()), {"status": status, "reason": "test"})
            if status == "promoted":
                w.promote(version)
            w.append({"event": "retrain", "decision": status, "version": version.version,
                      "champion": r.Registry(reg).champion().version})


@pytest.mark.slow
@pytest.mark.parametrize("args", [("prune", "--keep", "1"), ("rollback",), ("promote", "v0002")])
def test_registry_writers_killed_at_every_point(args, tmp_path):
    template = tmp_path / "template"
    _small_registry(template)
    count_file = tmp_path / "count"

    def run(k, reg):
        shutil.copytree(template, reg)
        return subprocess.run([sys.executable, "-m", "tests.continual.killer", str(k), str(reg), str(count_file),
                               "registry", *args[:1], str(reg), *args[1:]], cwd=ROOT, capture_output=True, text=True,
                              timeout=300)

    assert run(0, tmp_path / "full").returncode == 0
    ops = json.loads(count_file.read_text())
    with ThreadPoolExecutor(max_workers=2) as pool:
        codes = list(pool.map(lambda k: run(k, tmp_path / f"k{k}").returncode, range(1, len(ops) + 1)))
    assert codes == [-9] * len(ops)
    for k in range(1, len(ops) + 1):
        reg = tmp_path / f"k{k}"
        whole(reg)
        r.prune(reg, keep=100)  # the next writer recovers
        after = whole(reg)
        assert not [p for p in reg.rglob("*") if p.name.startswith(".") and p.name != ".lock"], k
        assert after["events"][-1]["champion"] == after["champion"], k
        logged = {e["version"] for e in after["events"] if e["event"] in ("retrain", "recover") and e.get("version")}
        removed = {v for e in after["events"] for v in e.get("removed") or []}
        assert logged - removed == set(after["versions"]), k
