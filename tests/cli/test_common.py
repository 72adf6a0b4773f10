"""One validation layer: every option value is checked by its type before a command runs."""

from __future__ import annotations

import pytest

from tests.conftest import assert_clean_error, run_cli

NUMERIC_CLICK_TYPES = ("IntParamType", "FloatParamType", "IntRange", "FloatRange")


def _commands():
    from mlsys_cli.app import commands

    return commands()


def test_every_number_option_is_validated_by_the_shared_types():
    """A plain int/float option would let nan, inf, negatives or 2**70 through: none may exist."""
    from mlsys_cli.cli._common import ByteSize, Duration, Number

    offenders = [f"{name} {param.name}" for name, cmd in _commands().items() for param in cmd.params
                 if type(param.type).__name__ in NUMERIC_CLICK_TYPES]
    assert offenders == []
    typed = {type(p.type) for cmd in _commands().values() for p in cmd.params}
    assert {Number, Duration, ByteSize} <= typed


def test_every_output_option_is_an_output_path():
    """-o/--report/--html/... are parsed by output_path/output_dir (or a parser declared an output),
    so the output guard sees them."""
    from mlsys_cli.cli._outputs import _is_output

    names = {"output", "report", "html", "rejects", "save_model", "trials_out", "artifacts"}
    loose = [f"{name} {p.name}" for name, cmd in _commands().items() for p in cmd.params
             if p.name in names and not _is_output(p)]
    assert loose == []


# One bad value per option kind and command; each must be exit 2 naming the option, before any work.
BAD = [
    ("tune", ["--timeout", "nan"], "--timeout"),
    ("tune", ["--timeout", "inf"], "--timeout"),
    ("tune", ["--timeout", "-5m"], "--timeout"),
    ("tune", ["--trials", "0"], "--trials"),
    ("tune", ["--n-jobs", "-1"], "--n-jobs"),
    ("tune", ["--cv", "1"], "--cv"),
    ("train", ["--seed", str(2**70)], "--seed"),
    ("train", ["--seed", "-1"], "--seed"),
    ("train", ["--param", "learning_rate=nan"], "--param"),
    ("train", ["--param", "learning_rate=1e999"], "--param"),
    ("train", ["--timeout", "1e400"], "--timeout"),
    ("ingest", ["--memory-limit", "-5MB"], "--memory-limit"),
    ("ingest", ["--memory-limit", "nanMB"], "--memory-limit"),
    ("ingest", ["--threads", "0"], "--threads"),
    ("evaluate", ["--perturb", "nan"], "--perturb"),
    ("evaluate", ["--perturb", "-0.1"], "--perturb"),
    ("evaluate", ["--confidence", "1.5"], "--confidence"),
    ("evaluate", ["--threshold", "inf"], "--threshold"),
    ("ensemble", ["--folds", "1"], "--folds"),
    ("ensemble", ["--folds", "0"], "--folds"),
    ("ensemble", ["--top", "0"], "--top"),
    ("export", ["--rows", "0"], "--rows"),
    ("compress", ["--measure-fraction", "nan"], "--measure-fraction"),
    ("featurize", ["--bins", "1"], "--bins"),
    ("predict", ["--batch-rows", "0"], "--batch-rows"),
]
POSITIONAL = {"tune": ["t.parquet"], "train": ["t.parquet", "-o", "m.mlsys"], "ingest": ["t.csv", "-o", "o.parquet"],
              "evaluate": ["m.mlsys", "t.parquet"], "ensemble": ["a.mlsys", "b.mlsys", "--data", "v.parquet"],
              "export": ["m.mlsys", "-o", "m.onnx"], "compress": ["m.mlsys", "--data", "v.parquet", "-o", "s.mlsys"],
              "featurize": ["t.parquet", "-o", "f.mlsys"], "predict": ["m.mlsys", "t.parquet", "-o", "p.parquet"]}


@pytest.mark.parametrize("command,args,option", BAD, ids=[f"{c} {' '.join(a)}" for c, a, _ in BAD])
def test_bad_values_are_usage_errors_naming_the_option(command, args, option, tmp_path):
    result = run_cli(command, *POSITIONAL[command], *args, cwd=tmp_path)
    assert_clean_error(result, 2)
    assert option in result.stderr
    assert list(tmp_path.iterdir()) == []  # refused before anything was read or written


def test_environment_values_are_validated_like_the_command_line(tmp_path, monkeypatch):
    monkeypatch.setenv("MLSYS_SEED", "nan")
    assert_clean_error(run_cli("train", "t.parquet", "-o", "m.mlsys", cwd=tmp_path), 2)


@pytest.mark.parametrize("value,seconds", [("90", 90.0), ("90s", 90.0), ("1.5m", 90.0), ("2h", 7200.0)])
def test_durations(value, seconds):
    from mlsys_cli.cli._common import parse_duration

    assert parse_duration(value) == seconds


@pytest.mark.parametrize("kind", ["under a file", "too long"])
def test_output_paths_that_can_never_be_created_are_usage_errors(kind, tmp_path):
    (tmp_path / "afile").write_text("x")
    target = {"under a file": tmp_path / "afile" / "out.parquet", "too long": tmp_path / ("n" * 300)}[kind]
    (tmp_path / "in.csv").write_text("a\n1\n")
    result = run_cli("ingest", tmp_path / "in.csv", "-o", target)
    assert_clean_error(result, 2)


def test_an_unwritable_output_is_an_input_error_not_a_crash(tmp_path):
    (tmp_path / "in.csv").write_text("a\n1\n")
    assert_clean_error(run_cli("ingest", tmp_path / "in.csv", "-o", "/proc/mlsys-test.parquet"), 3)


@pytest.mark.parametrize("metric,model,zero,flagged", [("auc", 0.5, 0.5, True), ("auc", 0.62, 0.5, False),
                                                       ("log_loss", 0.41, 0.40, True), ("rmse", 9.0, 10.0, False)])
def test_a_model_no_better_than_the_zero_rule_is_flagged(metric, model, zero, flagged):
    from mlsys_cli.cli._checks import baseline_warning

    assert (baseline_warning(metric, model, zero) is not None) == flagged


def test_evaluate_flags_a_model_no_better_than_the_zero_rule(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = [{"x": float((i // 4) % 2), "y": int(i % 4 == 0)} for i in range(200)]  # x says nothing about y
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "t.parquet")
    assert run_cli("train", tmp_path / "t.parquet", "--target", "y", "--model", "linear", "-o", tmp_path / "m.mlsys").code == 0
    result = run_cli("evaluate", tmp_path / "m.mlsys", tmp_path / "t.parquet", "--bootstrap", "0")
    assert result.code == 0 and "no better than the zero-rule baseline on auc" in result.stderr


def test_an_empty_valid_table_and_a_garbage_journal_are_input_errors(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"x": [1.0, 2.0], "y": [0, 1]}), tmp_path / "t.parquet")
    pq.write_table(pa.table({"x": pa.array([], pa.float64()), "y": pa.array([], pa.int64())}), tmp_path / "empty.parquet")
    result = run_cli("train", tmp_path / "t.parquet", "--valid", tmp_path / "empty.parquet", "-o", tmp_path / "m.mlsys")
    assert_clean_error(result, 3)
    assert "--valid" in result.stderr and "no rows" in result.stderr
    (tmp_path / "study.log").write_bytes(b"not json\n\xff\xfe")
    for command in (["tune", tmp_path / "t.parquet", "--target", "y"], ["ensemble", "--from-study", "--study", "s",
                                                                          "--data", tmp_path / "t.parquet"]):
        result = run_cli(*command, "--storage", f"journal:{tmp_path / 'study.log'}")
        assert_clean_error(result, 3)
        assert "not an Optuna journal" in result.stderr
