"""The root command: global options, config files, exit codes, broken pipes."""

from __future__ import annotations

import subprocess
import sys

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tests.conftest import assert_clean_error, run_cli, run_proc


@pytest.fixture
def table(tmp_path):
    path = tmp_path / "t.parquet"
    pq.write_table(pa.table({"a": [1.0, None, 3.0], "b": ["x", "y", None]}), path)
    return path


def test_config_file_sets_option_defaults(tmp_path, table):
    cfg = tmp_path / "mlsys.toml"
    cfg.write_text("[info]\njson = true\n")
    result = run_cli("--config", cfg, "info", table)
    assert result.code == 0
    assert result.json["rows"] == 3


def test_config_file_errors_are_clean(tmp_path, table):
    bad = tmp_path / "bad.toml"
    bad.write_text("[info\n")
    assert_clean_error(run_cli("--config", bad, "info", table), 3)
    unknown = tmp_path / "unknown.toml"
    unknown.write_text("[frobnicate]\nx = 1\n")
    assert_clean_error(run_cli("--config", unknown, "info", table), 3)
    assert_clean_error(run_cli("--config", tmp_path / "missing.toml", "info", table), 3)


def test_quiet_keeps_the_result_and_drops_the_logs(table):
    quiet, plain = run_cli("-q", "info", table), run_cli("info", table)
    assert quiet.code == 0 and quiet.stdout == plain.stdout != ""
    assert quiet.stderr == ""
    assert run_cli("-q", "info", table, "--json").json["rows"] == 3


def test_report_file_is_written(tmp_path, table):
    report = tmp_path / "r.json"
    result = run_cli("info", table, "--report", report)
    assert result.code == 0
    assert '"rows": 3' in report.read_text()


def test_broken_pipe_is_silent(tmp_path):
    # Output far larger than a pipe buffer, read by a consumer that stops after one byte.
    wide = tmp_path / "wide.parquet"
    pq.write_table(pa.table({f"column_{i:05d}": [1.0] for i in range(3000)}), wide)
    proc = subprocess.run(
        f"{sys.executable} -m mlsys_cli info {wide} --json | true; exit ${{PIPESTATUS[0]}}",
        shell=True, executable="/bin/bash", capture_output=True, text=True,
    )
    assert proc.stderr == ""
    assert proc.returncode == 141


def test_a_library_warning_is_one_warning_line_without_source_location():
    # What a third-party warning looks like from the real entry point (main installs the format).
    code = ("import sys, warnings; from mlsys_cli import app; "
            "app.run = lambda argv=None: warnings.warn('The least populated class\\nhas 2 members', UserWarning) or 0; "
            "app.main()")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.splitlines() == ["warning: UserWarning: The least populated class"]


def test_real_process_error_has_no_traceback(tmp_path):
    result = run_proc("info", tmp_path / "nope.parquet")
    assert_clean_error(result, 3)


def test_garbage_parquet_is_input_error(tmp_path):
    junk = tmp_path / "junk.parquet"
    junk.write_bytes(b"\x00\x01garbage" * 10)
    assert_clean_error(run_cli("info", junk), 3)


def test_global_flags_anywhere(table):
    assert run_cli("info", table, "-q").stdout == run_cli("-q", "info", table).stdout
    assert run_cli("info", "-q", table, "--json").json["rows"] == 3


def test_environment_sets_options(tmp_path):
    """MLSYS_<COMMAND>_<OPTION> is an option default: the same seed gives the same split."""
    src = tmp_path / "src.parquet"
    pq.write_table(pa.table({"x": list(range(200)), "y": [i % 2 for i in range(200)]}), src)
    by_flag = run_proc("split", src, "-o", tmp_path / "flag", "--seed", "11")
    by_env = run_proc("split", src, "-o", tmp_path / "env", env={"MLSYS_SPLIT_SEED": "11"})
    default = run_proc("split", src, "-o", tmp_path / "default")
    assert by_flag.code == by_env.code == default.code == 0, by_env.stderr
    rows = {name: pq.read_table(tmp_path / name / "train.parquet").column("x").to_pylist()
            for name in ("flag", "env", "default")}
    assert rows["env"] == rows["flag"]
    assert rows["env"] != rows["default"]


def _interrupted_ingest(tmp_path, signum):
    """Start an ingest whose query runs for minutes; signal it once its output is being written."""
    import os
    import signal
    import time

    raw = tmp_path / "raw.csv"
    raw.write_text("a,b\n" + "".join(f"{i},{i % 3}\n" for i in range(100)))
    out = tmp_path / "out" / "o.parquet"
    slow = "SELECT * FROM input WHERE (SELECT sum(range) FROM range(100000000000)) > 0"
    proc = subprocess.Popen([sys.executable, "-m", "mlsys_cli", "ingest", str(raw), "-o", str(out), "--sql", slow],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    # Event-driven, not timed: wait for the temporary output of the COPY, then signal.
    while proc.poll() is None and not any(p.name.endswith(".parquet.tmp") for p in out.parent.glob(".*")):
        time.sleep(0.05)
    os.kill(proc.pid, signum)
    stdout, stderr = proc.communicate(timeout=120)
    return proc.returncode, stderr, tmp_path


@pytest.mark.parametrize("signame,code", [("SIGINT", 130), ("SIGTERM", 143)])
def test_a_signal_during_a_query_exits_128_plus_n_and_cleans_up(tmp_path, signame, code):
    """DuckDB turns Ctrl-C into "Query interrupted"; whatever a library makes of it, it is 130."""
    import signal

    status, stderr, root = _interrupted_ingest(tmp_path, getattr(signal, signame))
    assert status == code, stderr
    assert stderr.strip().splitlines() == ["error: interrupted"]
    assert sorted(p.name for p in root.iterdir()) == ["raw.csv"]  # no output, temporaries or new directory


def test_usage_errors_are_one_lowercase_error_line_with_the_usage_as_hint():
    result = run_cli("train", "--bogus")
    assert_clean_error(result, 2)
    assert "Error:" not in result.stderr and "{" not in result.stderr
    assert "hint: usage: mlsys train [OPTIONS] TRAIN..." in result.stderr


def test_help_usage_lines_name_arguments_plainly():
    result = run_cli("predict", "--help")
    assert "Usage: mlsys predict [OPTIONS] MODEL DATA..." in result.stdout


def test_root_options_are_not_read_from_the_environment(table):
    """MLSYS_VERSION=1 (a CI variable) must not turn every command into --version."""
    result = run_proc("info", table, env={"MLSYS_VERSION": "1", "MLSYS_QUIET": "1", "MLSYS_VERBOSE": "3"})
    assert result.code == 0 and "rows: 3" in result.stdout and not result.stdout.startswith("mlsys ")
