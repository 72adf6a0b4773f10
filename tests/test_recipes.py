"""Every recipe in recipes/ (and the quick start) run for real, with the venv's ``mlsys`` on PATH.

The lifecycle Makefile is built once per module in a temporary OUT (from a copy of the raw CSV,
so touching it leaves the repository alone); the tests check its outputs, that Make's
timestamps drive reruns, the gate, and the CI workflow's steps against that build. The nightly
script runs on a small window of the churn sample.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from tests.conftest import ROOT, SAMPLE

# One xdist worker runs the module: its lifecycle fixture builds every recipe step once.
pytestmark = pytest.mark.xdist_group("recipes")

RECIPES = ROOT / "recipes"
LIFECYCLE = RECIPES / "lifecycle.mk"
NIGHTLY = RECIPES / "nightly-retrain.sh"
WORKFLOW = RECIPES / "github-actions.yml"
ENV = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}", "NO_COLOR": "1",
       "MAKEFLAGS": ""}
# Small but real: one tuning trial under a budget that does not bind (reproducible on a loaded
# machine; tune's search itself is tested in tests/models/test_tune.py), and only the quickest
# compression technique.
SETTINGS = ["SEED=7", "BUDGET=5m", "TRIALS=1", "TECHNIQUES=pruning"]
# In Make's (serial) order: each model right after the features it needs.
MLSYS_STEPS = ["ingest", "split", "featurize", "tune", "train", "featurize", "train", "ensemble", "evaluate",
               "compress", "export", "predict", "info", "info", "drift", "retrain"]


def run(args, cwd=ROOT, env=None, timeout=900):
    proc = subprocess.run([str(a) for a in args], cwd=cwd, env={**ENV, **(env or {})}, capture_output=True,
                          text=True, timeout=timeout)
    return proc


def make(out: Path, raw: Path, *args: str, timeout: float = 900):
    return run(["make", "-f", LIFECYCLE, f"OUT={out}", f"RAW={raw}", *SETTINGS, *args], timeout=timeout)


def mlsys_commands(make_output: str) -> list[str]:
    """The mlsys subcommands a make run executed (or would execute, with -n), in order."""
    return re.findall(r"^\S*mlsys (\w+) ", make_output, flags=re.M)


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    root = tmp_path_factory.mktemp("lifecycle")
    raw = root / "raw" / "churn_raw.csv"
    raw.parent.mkdir()
    shutil.copy(SAMPLE / "churn_raw.csv", raw)
    out = root / "out"
    proc = make(out, raw)
    assert proc.returncode == 0, (proc.stdout[-4000:], proc.stderr[-4000:])
    return {"out": out, "raw": raw, "log": proc.stdout}


# ------------------------------------------------------------------ lifecycle.mk


@pytest.mark.slow
def test_lifecycle_runs_every_step_in_order(built):
    assert mlsys_commands(built["log"]) == MLSYS_STEPS


@pytest.mark.slow
def test_lifecycle_outputs_are_valid(built):
    import onnxruntime as ort

    out = built["out"]
    ingest = json.loads((out / "data/ingest.json").read_text())
    assert ingest["rows_written"] == 4992 and ingest["rows_rejected"] == 8  # sample_data/README.md
    rejects = pd.read_parquet(out / "data/rejects.parquet")  # one row per error, several per bad line
    assert rejects["line"].nunique() == 8 and set(rejects["reason"]) and set(rejects["raw_line"])

    split = json.loads((out / "data/split.json").read_text())
    assert split["leakage"] is False and [p["name"] for p in split["parts"]] == ["train", "valid", "test"]
    train, test = (pd.read_parquet(out / f"data/{p}.parquet") for p in ("train", "test"))
    assert train["snapshot_date"].max() < test["snapshot_date"].min()

    gate = json.loads((out / "evaluate/evaluate.json").read_text())
    assert gate["passed"] is True and gate["gates"] and all(g["passed"] for g in gate["gates"])
    assert {s["column"] for s in gate["slices"]} == {"plan", "contract"}
    assert (out / "evaluate/evaluate.html").stat().st_size > 1000
    assert not (out / "evaluate/evaluate.failed.json").exists()

    session = ort.InferenceSession(str(out / "deploy/model.onnx"), providers=["CPUExecutionProvider"])
    assert {"label", "probabilities"} <= {o.name for o in session.get_outputs()}
    predictions = pd.read_parquet(out / "deploy/predictions.parquet")
    assert len(predictions) == len(test)
    assert predictions["customer_id"].tolist() == test["customer_id"].tolist()
    assert {"label", "proba_True"} <= set(predictions.columns)
    assert predictions["proba_True"].between(0, 1).all()

    # Every step left a JSON report next to its outputs.
    for report in ["data/ingest.json", "data/split.json", "features/trees.json", "features/linear.json",
                   "models/tune.json", "models/xgboost.json", "models/linear.json", "models/ensemble.json",
                   "evaluate/evaluate.json", "deploy/compress.json", "deploy/export.json", "deploy/predict.json",
                   "deploy/info.json", "deploy/lineage.json", "monitor/drift.json", "continual/retrain.json"]:
        assert json.loads((out / report).read_text()), report
    # The registry got its first champion from the tuned xgboost recipe, judged on the newest rows.
    retrained = json.loads((out / "continual/retrain.json").read_text())
    assert retrained["decision"] == "promoted" and retrained["version"] == "v0001", retrained["reason"]
    assert json.loads((out / "continual/models/champion.json").read_text())["version"] == "v0001"
    # The predictions trace back through every table to the raw file.
    lineage = json.loads((out / "deploy/lineage.json").read_text())["lineage"]
    assert [step["command"] for step in lineage] == ["predict", "split", "ingest"]
    assert str(built["raw"]) in json.dumps(lineage)


@pytest.mark.slow
def test_second_run_does_nothing(built):
    proc = make(built["out"], built["raw"])
    assert proc.returncode == 0, proc.stderr
    assert "Nothing to be done" in proc.stdout and mlsys_commands(proc.stdout) == []
    assert make(built["out"], built["raw"], "-q").returncode == 0  # make -q: 0 means up to date


TARGETS = ["data/all.parquet", "data/rejects.parquet", "data/train.parquet", "data/valid.parquet",
           "data/test.parquet", "features/trees.mlsys", "features/linear.mlsys", "models/params.json",
           "models/xgboost.mlsys", "models/linear.mlsys", "models/ensemble.mlsys", "evaluate/evaluate.json",
           "evaluate/evaluate.html", "deploy/compressed.mlsys", "deploy/model.onnx", "deploy/predictions.parquet",
           "deploy/info.json", "deploy/lineage.json", "monitor/drift.json", "continual/retrain.json"]


@pytest.mark.slow
def test_touching_inputs_rebuilds_downstream(built):
    out, raw = built["out"], built["raw"]
    up_to_date = lambda target: make(out, raw, "-q", f"{out}/{target}").returncode  # noqa: E731
    assert [up_to_date(t) for t in TARGETS] == [0] * len(TARGETS)
    before = raw.stat()
    try:
        os.utime(raw, None)  # now: newer than every output
        # Every output is now out of date (make -q exits 1). make -n is no proof here: GNU Make
        # 4.3's dry run does not count a grouped target (&:) as remade, so it lists ingest only.
        assert [up_to_date(t) for t in TARGETS] == [1] * len(TARGETS)
        assert mlsys_commands(make(out, raw, "-n").stdout)[:1] == ["ingest"]
    finally:
        os.utime(raw, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert make(out, raw, "-q").returncode == 0

    # For real at the cheap end, through a grouped target: a new compressed bundle is exported,
    # re-predicted and re-described; nothing upstream reruns.
    old = {p.name: p.stat().st_mtime_ns for p in (out / "deploy").iterdir()}
    os.utime(out / "deploy/compressed.mlsys", None)
    proc = make(out, raw)
    assert proc.returncode == 0, proc.stderr
    assert mlsys_commands(proc.stdout) == ["export", "predict", "info", "info"]
    for name in ("model.onnx", "export.json", "predictions.parquet", "info.json", "lineage.json"):
        assert (out / "deploy" / name).stat().st_mtime_ns > old[name], name
    assert (out / "deploy/compress.json").stat().st_mtime_ns == old["compress.json"]
    assert make(out, raw, "-q").returncode == 0


@pytest.mark.slow
def test_rerun_gives_identical_tables(built, tmp_path):
    out = tmp_path / "out"
    shutil.copytree(built["out"], out)
    proc = make(out, built["raw"], "-W", str(built["raw"]), f"{out}/data/test.parquet")
    assert proc.returncode == 0, proc.stderr
    assert mlsys_commands(proc.stdout) == ["ingest", "split"]
    for name in ("all", "rejects", "train", "valid", "test"):
        again, first = (pd.read_parquet(d / f"data/{name}.parquet") for d in (out, built["out"]))
        pd.testing.assert_frame_equal(again, first)


@pytest.mark.slow
def test_failed_gate_stops_the_run_and_keeps_the_report(built, tmp_path):
    out = tmp_path / "out"
    shutil.copytree(built["out"], out)  # copy2 keeps the timestamps: the copy is up to date
    proc = make(out, built["raw"], "-W", f"{out}/models/ensemble.mlsys", "gate", "REQUIRE=auc>=0.99")
    assert proc.returncode != 0
    assert mlsys_commands(proc.stdout) == ["evaluate"]
    assert "mlsys evaluate exited 4" in proc.stderr
    assert not (out / "evaluate/evaluate.json").exists()
    failed = json.loads((out / "evaluate/evaluate.failed.json").read_text())
    assert failed["passed"] is False and failed["gates"][0]["requirement"] == "auc>=0.99"
    # Nothing downstream may be trusted now: the next run evaluates again before deploying.
    assert make(out, built["raw"], "-q").returncode == 1


def test_lifecycle_defaults():
    text = LIFECYCLE.read_text()
    for line in ("MLSYS ?= mlsys", "OUT ?= build/lifecycle", "SEED ?= 7", "BUDGET ?= 20s"):
        assert re.search(rf"^{re.escape(line)}$", text, flags=re.M), line
    proc = run(["make", "-f", LIFECYCLE, "-n", "OUT=/nonexistent/out"])
    assert proc.returncode == 0, proc.stderr
    assert mlsys_commands(proc.stdout) == MLSYS_STEPS
    assert "--report" in proc.stdout and "--seed 7" in proc.stdout and "--timeout 20s" in proc.stdout
    clean = run(["make", "-f", LIFECYCLE, "-n", "clean", "OUT=/nonexistent/out"])
    assert clean.stdout.strip() == "rm -rf /nonexistent/out"


# ------------------------------------------------------------------ github-actions.yml


def _workflow() -> dict:
    import yaml

    return yaml.safe_load(WORKFLOW.read_text())


def test_workflow_structure():
    flow = _workflow()
    assert "pull_request" in flow[True]  # YAML 1.1 reads the key `on` as True
    steps = flow["jobs"]["gate"]["steps"]
    uses = [s.get("uses", "") for s in steps]
    assert any(u.startswith("actions/checkout@") for u in uses)
    assert any(u.startswith("actions/setup-python@") for u in uses)
    gate = next(s for s in steps if "mlsys evaluate" in s.get("run", ""))
    assert "--require" in gate["run"] and "--html" in gate["run"]
    upload = next(s for s in steps if s.get("uses", "").startswith("actions/upload-artifact@"))
    assert upload["if"] == "always()" and "gate.html" in upload["with"]["path"]
    assert any("pip install" in s.get("run", "") for s in steps)


def test_workflow_is_valid_against_the_actions_schema():
    """Validated against the GitHub workflow schema that check-jsonschema vendors (no network)."""
    errors = _schema_errors(WORKFLOW.read_text())
    assert errors == []
    # The validation can fail: a job without runs-on and a step with both uses and run.
    broken = WORKFLOW.read_text().replace("    runs-on: ubuntu-latest\n", "").replace(
        "      - uses: actions/checkout@v4\n", "      - uses: actions/checkout@v4\n        run: echo both\n")
    assert len(_schema_errors(broken)) >= 1


def _schema_errors(text: str) -> list[str]:
    from importlib.resources import files

    import jsonschema
    from ruamel.yaml import YAML

    schema = json.loads(files("check_jsonschema.builtin_schemas.vendor").joinpath("github-workflows.json").read_text())
    document = YAML(typ="safe").load(text)  # YAML 1.2: the key `on` stays a string
    validator = jsonschema.validators.validator_for(schema)(schema)
    return [error.message for error in validator.iter_errors(document)]


def _workflow_scripts() -> list[str]:
    """Every run step except the installation (the test runs the venv's mlsys)."""
    return [s["run"] for s in _workflow()["jobs"]["gate"]["steps"] if s.get("run") and "pip install" not in s["run"]]


@pytest.mark.slow
def test_workflow_steps_run(built, tmp_path):
    """The workflow's steps, through bash as Actions runs them, against the build."""
    flow = _workflow()
    env = {k: str(v) for k, v in flow["env"].items()}
    env.update(OUT=str(built["out"]), RAW=str(built["raw"]), REGISTRY=str(tmp_path / "registry"))
    steps = _workflow_scripts()
    assert len(steps) == 5
    for script in steps:
        proc = run(["bash", "-eo", "pipefail", "-c", script], env=env)
        assert proc.returncode == 0, (script, proc.stdout[-2000:], proc.stderr[-2000:])
    assert json.loads((built["out"] / "gate.json").read_text())["passed"] is True
    assert (built["out"] / "gate.html").is_file()
    assert json.loads((built["out"] / "retrain.json").read_text())["decision"] == "promoted"
    assert json.loads((built["out"] / "drift.json").read_text())["drift_detected"] is False
    # The drift gate fails the job through mlsys's exit 4 when the columns that age are compared too.
    drift = next(s for s in steps if s.lstrip().startswith("mlsys drift"))
    aged = run(["bash", "-eo", "pipefail", "-c", drift.replace("--exclude tenure_months", "")], env=env)
    assert aged.returncode == 4, aged.stderr[-2000:]
    assert "Traceback" not in aged.stderr
    assert "v0001\t*\tpromoted" in proc.stdout  # the registry listing of the retrain step
    # The same gate on a bar the model cannot reach fails the job through mlsys's exit 4.
    # A second run of the retrain step on the same data: a decision, not a failure.
    again = run(["bash", "-eo", "pipefail", "-c", steps[-1]], env=env)
    assert again.returncode == 0 and "retrain: exit " in again.stdout
    gate = next(s for s in steps if s.lstrip().startswith("mlsys evaluate"))
    proc = run(["bash", "-eo", "pipefail", "-c", gate.replace('"auc>=0.70"', '"auc>=0.99"')], env=env)
    assert proc.returncode == 4, proc.stderr[-2000:]
    assert proc.stderr.count("error: ") == 1 and "Traceback" not in proc.stderr


# ------------------------------------------------------------------ nightly-retrain.sh


@pytest.fixture(scope="module")
def window(tmp_path_factory) -> Path:
    """Nine months of 400 customers: a small, realistic window for the nightly job."""
    df = pd.read_parquet(SAMPLE / "churn.parquet")
    ids = sorted(df["customer_id"].unique())[:400]
    df = df[df["customer_id"].isin(ids) & (df["snapshot_date"] < pd.Timestamp("2025-10-01").date())]
    path = tmp_path_factory.mktemp("window") / "window.parquet"
    df.to_parquet(path, index=False)
    return path


def nightly(home: Path, data: Path, **settings: str):
    env = {"NIGHTLY_HOME": str(home), "REGISTRY": str(home / "models"), "MODEL": "linear", **settings}
    return run(["bash", NIGHTLY, data], env=env, timeout=600)


def _log(home: Path) -> str:
    return "".join(p.read_text() for p in sorted((home / "logs").glob("nightly-*.log")))


def _reports(home: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted((home / "reports").glob("*.json"))]


@pytest.mark.slow
def test_nightly_retrains_into_the_registry_and_branches_on_the_outcome(window, tmp_path):
    home = tmp_path / "state"
    first = nightly(home, window)
    assert first.returncode == 0, _log(home)[-3000:]
    assert first.stdout == "" and first.stderr == ""  # cron mails nothing: it all went to the log
    assert "retrained: the challenger is the champion now" in _log(home)
    champion = json.loads((home / "models/champion.json").read_text())
    assert champion["version"] == "v0001"

    quiet = nightly(home, window, TRIGGERS="schedule:7d")
    assert quiet.returncode == 10 and quiet.stderr == "", _log(home)[-3000:]
    assert "not needed: no trigger fired" in _log(home) and _reports(home)[-1]["decision"] == "not_needed"

    rejected = nightly(home, window, TRIGGERS="always", REQUIRE="auc>=0.99")
    assert rejected.returncode == 11 and rejected.stderr == "", _log(home)[-3000:]
    assert "challenger rejected and kept in the registry" in _log(home)
    assert json.loads((home / "models/champion.json").read_text()) == champion
    meta = json.loads((home / "models/versions/v0002/meta.json").read_text())
    assert meta["status"] == "rejected" and meta["reason"].startswith("the challenger fails --require: auc>=0.99")
    assert [r["decision"] for r in _reports(home)] == ["promoted", "not_needed", "rejected"]

    # Bad input fails loudly (stderr, so cron mails it), with mlsys's status, and changes nothing.
    broken = tmp_path / "broken.parquet"
    pd.read_parquet(window).drop(columns=["plan"]).to_parquet(broken, index=False)
    failed = nightly(home, broken, TRIGGERS="always")
    assert failed.returncode == 3
    assert "nightly-retrain: mlsys retrain exited 3" in failed.stderr
    assert "missing column(s) plan" in _log(home)
    assert len(list((home / "models/versions").iterdir())) == 2


@pytest.mark.slow
def test_nightly_lock_and_usage(window, tmp_path):
    home = tmp_path / "state"
    home.mkdir()
    with open(home / "nightly.lock", "w") as held:
        fcntl.flock(held, fcntl.LOCK_EX)  # another run in progress
        busy = nightly(home, window)
    assert busy.returncode == 5 and "another run holds" in busy.stderr
    assert not (home / "models").exists()
    usage = run(["bash", NIGHTLY], env={"NIGHTLY_HOME": str(home)})
    assert usage.returncode == 2 and "usage:" in usage.stderr


def test_scripts_are_valid_bash():
    for script in (NIGHTLY, ROOT / "scripts/quickstart.sh"):
        subprocess.run(["bash", "-n", str(script)], check=True)
        assert script.read_text().startswith("#!/usr/bin/env bash\n")
        assert "set -euo pipefail" in script.read_text()
        assert os.access(script, os.X_OK), script
    assert re.search(r"^#\s+\S+ \S+ \S+ \S+ \S+\s+.*nightly-retrain\.sh", NIGHTLY.read_text(), flags=re.M)
    assert "flock -n" in NIGHTLY.read_text()


# ------------------------------------------------------------------ quick start and root Makefile


def test_quickstart_installs_torch_first_then_runs_the_recipe():
    text = (ROOT / "scripts/quickstart.sh").read_text()
    torch, package = text.index("'torch==2.13.0'"), text.index("-e '.[nn,test]'")
    assert torch < package < text.index("make -f recipes/lifecycle.mk MLSYS=.venv/bin/mlsys")
    assert "python\" -m venv .venv" in text.replace("$PYTHON", "python")


def test_root_makefile_targets():
    proc = run(["make", "-n", "lifecycle", "test", "completions", "bench", "quickstart", "PYTHON=py"])
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout
    assert "make -f recipes/lifecycle.mk" in lines or "-f recipes/lifecycle.mk" in lines
    assert "py -m pytest -q" in lines and "py -m mlsys_cli.completions completions" in lines
    assert "benchmarks/bench_*.py" in lines and "scripts/quickstart.sh" in lines
