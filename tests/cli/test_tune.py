"""mlsys tune: wiring, outputs, exit codes, and workers sharing one study (journal, PostgreSQL)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pandas as pd
import pytest

from tests.conftest import assert_clean_error, run_cli, run_proc


def _base(t):
    return [t["train"], "--valid", t["valid"], "--target", t["target"], "--drop", "customer_id"]


def test_json_report_and_outputs(small_tables, tmp_path):
    t = small_tables["binary"]
    result = run_cli("tune", *_base(t), "--model", "linear", "--trials", "3", "--json",
                     "-o", tmp_path / "params.json", "--trials-out", tmp_path / "trials.parquet",
                     "--html", tmp_path / "tune.html", "--save-model", tmp_path / "best.mlsys")
    assert result.code == 0, result.stderr
    d = result.json
    assert {"study", "metric", "direction", "best", "trials", "families", "stopped_by", "outputs"} <= set(d)
    assert d["best"]["family"] == "linear" and d["trials"]["complete"] == 3
    assert set(d["outputs"]) == {"params", "trials", "html", "model"}
    # Three linear trials: their ensemble is no better on the validation rows, the best one is saved.
    assert d["final"]["model"] == "single" and "gain" in d["final"]["reason"]
    trials = pd.read_parquet(tmp_path / "trials.parquet")
    assert len(trials) == 3 and {"number", "state", "family", "auc", "duration_s", "params"} <= set(trials.columns)
    page = (tmp_path / "tune.html").read_text()
    assert 'data-kind="history"' in page and "Parameter importances" in page
    # The params file is what train reads.
    trained = run_cli("train", t["train"], "--valid", t["valid"], "--target", t["target"], "--drop", "customer_id",
                      "--params", tmp_path / "params.json", "-o", tmp_path / "again.mlsys", "--json")
    assert trained.code == 0, trained.stderr
    assert trained.json["model"] == "linear"
    assert trained.json["params"]["C"] == pytest.approx(d["best"]["params"]["C"])
    info = run_cli("info", tmp_path / "best.mlsys", "--json")
    assert info.code == 0 and info.json["task"] == "binary"


def test_saved_model_refitted_on_train_and_valid_exports_with_parity(small_tables, tmp_path):
    t = small_tables["binary"]
    args = [*_base(t), "--model", "xgboost", "--param", "n_estimators=30", "--trials", "4", "--json"]
    result = run_cli("tune", *args, "--save-model", tmp_path / "m.mlsys")
    assert result.code == 0, result.stderr
    assert result.json["final"]["refit"]["rows"] == 750, result.json["final"]
    # export checks the ONNX graph against the bundle on the rows given and refuses a mismatch.
    exported = run_cli("export", tmp_path / "m.mlsys", "-o", tmp_path / "m.onnx", "--data", t["test"], "--json")
    assert exported.code == 0, exported.stderr
    off = run_cli("tune", *args, "--save-model", tmp_path / "s.mlsys", "--no-refit-valid")
    assert off.code == 0 and off.json["final"]["refit"] == {"rows": None, "reason": "off (--no-refit-valid)"}


def test_human_output(small_tables):
    result = run_cli("tune", *_base(small_tables["regression"])[:-2], "--model", "linear", "--trials", "2")
    assert result.code == 0, result.stderr
    assert "best of study" in result.stdout and "family\ttrials" in result.stdout


def test_columns_left_out_are_named_as_train_names_them(small_tables, tmp_path):
    t = small_tables["regression"]
    for part in ("train", "valid"):
        df = pd.read_parquet(t[part])
        df["year"] = 2025
        df["empty"] = float("nan")
        df.to_parquet(tmp_path / f"{part}.parquet", index=False)
    args = [tmp_path / "train.parquet", "--valid", tmp_path / "valid.parquet", "--target", t["target"], "--model", "linear",
            "--trials", "1"]
    result = run_cli("tune", *args)
    assert result.code == 0, result.stderr
    assert "column 'year' is constant" in result.stderr and "column 'empty' is entirely missing" in result.stderr
    doc = run_cli("tune", *args, "--json").json
    assert sorted(w.split("'")[1] for w in doc["warnings"]) == ["empty", "year"]


@pytest.mark.parametrize("args, code, text", [
    (["--model", "nonsense"], 2, "unknown model family"),
    (["--model", "linear", "--param", "C=1.0"], 2, "nothing to search"),
    (["--model", "linear", "--sampler", "bayes"], 2, "unknown sampler"),
    (["--model", "linear", "--cv", "3"], 2, "--valid or --cv"),
    (["--model", "linear", "--metric", "rmse"], 2, "unknown metric"),
    (["--model", "linear", "--timeout", "0.01s"], 3, "too small to finish one trial"),
    (["--model", "linear", "--storage", "postgresql+psycopg://u:pw@127.0.0.1:1/x"], 3, "cannot open storage"),
    (["--model", "linear", "--storage", "journal:/no/such/dir/s.log"], 3, "cannot open storage"),
    (["--model", "linear", "--keep-models", "-1"], 2, "--keep-models '-1': must be >= 0"),
    (["--model", "linear", "--keep-models", "0", "--artifacts", "models"], 2, "--artifacts keeps fitted models"),
])
def test_bad_input(small_tables, args, code, text):
    result = run_cli("tune", *_base(small_tables["binary"]), *args)
    assert_clean_error(result, code)
    assert text in result.stderr


def test_missing_target(small_tables):
    t = small_tables["binary"]
    result = run_cli("tune", t["train"], "--valid", t["valid"], "--target", "nope", "--model", "linear")
    assert_clean_error(result, 3)
    assert "no target column 'nope'" in result.stderr


def _start(args, cwd):
    env = {**os.environ, "NO_COLOR": "1"}
    return subprocess.Popen([sys.executable, "-m", "mlsys_cli", "tune", *map(str, args)], cwd=cwd, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def _check_shared_study(storage, study, n_trials=None):
    import optuna

    from mlsys_cli.models.study import open_storage

    trials = optuna.load_study(study_name=study, storage=open_storage(storage)).get_trials(deepcopy=False)
    numbers = [t.number for t in trials]
    assert sorted(numbers) == list(range(len(trials))), "each trial number once"
    if n_trials is not None:
        # Each worker checks the count before it asks for a trial: at most one trial per extra worker more.
        assert n_trials <= len(trials) <= n_trials + 1
    assert all(t.state.name == "COMPLETE" for t in trials), [t.state for t in trials]
    workers = {t.user_attrs["worker"] for t in trials}
    assert len(workers) == 2, workers
    params = [json.dumps(t.user_attrs["params"], sort_keys=True) for t in trials]
    assert len(set(params)) == len(params), "no configuration was run twice"
    return trials


def _two_workers(small_tables, tmp_path, storage):
    t = small_tables["binary"]
    # Both workers run trials until 12 s after their own start (a trial budget would let the worker
    # that starts first finish the study alone when the other's start-up is slow on a loaded machine).
    args = [*_base(t), "--model", "linear", "--trials", "100000", "--timeout", "12s", "--storage", storage,
            "--study", "shared", "--json"]
    procs = [_start(args, tmp_path) for _ in range(2)]
    outs = [p.communicate(timeout=600) for p in procs]
    for p, (out, err) in zip(procs, outs):
        assert p.returncode == 0, err.decode()
    trials = _check_shared_study(storage, "shared")
    # The report of the worker that stops last accounts for every trial of the study.
    assert max(json.loads(out)["trials"]["total"] for out, _ in outs) == len(trials)


@pytest.mark.slow
def test_two_processes_share_a_journal_study(small_tables, tmp_path):
    _two_workers(small_tables, tmp_path, f"journal:{tmp_path}/study.log")


@pytest.mark.slow
@pytest.mark.postgres
def test_two_processes_share_a_postgres_study(small_tables, tmp_path, postgres_url):
    _two_workers(small_tables, tmp_path, postgres_url)


@pytest.mark.slow
def test_n_jobs_starts_worker_processes(small_tables, tmp_path):
    storage = f"journal:{tmp_path}/jobs.log"
    result = run_proc("tune", *_base(small_tables["binary"]), "--model", "linear", "--trials", "6", "--n-jobs", "2",
                      "--storage", storage, "--study", "jobs", "--json", cwd=tmp_path)
    assert result.code == 0, result.stderr
    assert result.json["workers"] == 2
    _check_shared_study(storage, "jobs", 6)


def test_cv_by_a_time_column_with_nulls_is_an_input_error(small_tables, tmp_path):
    t = small_tables["binary"]
    df = pd.read_parquet(t["train"])
    time_col = "when"
    df[time_col] = pd.date_range("2025-01-01", periods=len(df), freq="h")
    df.loc[df.index[:5], time_col] = pd.NaT
    df.to_parquet(tmp_path / "t.parquet", index=False)
    result = run_cli("tune", tmp_path / "t.parquet", "--target", t["target"], "--model", "linear", "--cv", "3",
                     "--time-col", time_col, "--trials", "1", "-o", tmp_path / "p.json")
    assert_clean_error(result, 3)
    assert "missing in 5 rows" in result.stderr
    assert not (tmp_path / "p.json").exists()


def _children(pid: int) -> list[int]:
    out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout
    return [int(p) for p in out.split()]


@pytest.mark.slow
def test_ctrl_c_during_a_parallel_tune_stops_the_workers_in_order(small_tables, tmp_path):
    import signal
    import time

    proc = subprocess.Popen([sys.executable, "-m", "mlsys_cli", "tune", *map(str, _base(small_tables["binary"])),
                             "--model", "forest", "--timeout", "120s", "--n-jobs", "2", "-o", str(tmp_path / "p.json")],
                            cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env={**os.environ, "NO_COLOR": "1"})
    try:
        give_up = time.time() + 90
        while not _children(proc.pid) and time.time() < give_up and proc.poll() is None:
            time.sleep(0.1)
        workers = _children(proc.pid)
        assert workers, "no worker process started"
        time.sleep(2)  # let the worker load and start trials
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, err.decode()
    lines = err.decode().strip().splitlines()
    assert lines[-1].startswith("error: interrupted") and "Traceback" not in err.decode()
    assert all(not os.path.exists(f"/proc/{w}") or open(f"/proc/{w}/stat").read().split()[2] == "Z" for w in workers)
    assert not (tmp_path / "p.json").exists()
