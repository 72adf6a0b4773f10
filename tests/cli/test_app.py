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
