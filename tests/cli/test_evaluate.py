"""mlsys evaluate: wiring, reports, gates and exit codes, on real bundles trained by mlsys train."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from tests.browser import chromium, plots_in, render_dom  # noqa: F401  (chromium is a fixture)
from tests.conftest import SAMPLE, assert_clean_error, run_cli, run_proc


def _trained(tmp_path_factory, table: str, target: str, rows: int, train_rows: int):
    """A sample of ``table`` cut into train and test halves, and a linear model trained by the CLI."""
    d = tmp_path_factory.mktemp(f"evaluate_{target}")
    df = pd.read_parquet(SAMPLE / table).sample(n=rows, random_state=0).reset_index(drop=True)
    df.iloc[:train_rows].to_parquet(d / "train.parquet")
    df.iloc[train_rows:].reset_index(drop=True).to_parquet(d / "test.parquet")
    result = run_cli("train", d / "train.parquet", "--target", target, "--model", "linear", "--drop", "customer_id",
                     "-o", d / "model.mlsys")
    assert result.code == 0, result.stderr
    return d


@pytest.fixture(scope="module")
def churn(tmp_path_factory):
    return _trained(tmp_path_factory, "churn.parquet", "churned", 2400, 1200)


@pytest.fixture(scope="module")
def ltv(tmp_path_factory):
    return _trained(tmp_path_factory, "ltv.parquet", "ltv", 1200, 800)


def test_json_report_keys(churn):
    result = run_cli("evaluate", churn / "model.mlsys", churn / "test.parquet", "--slice", "plan", "--bootstrap", "50",
                     "--perturb", "0.05", "--invariant", "region", "--expect", "support_calls:+", "--json")
    assert result.code == 0, result.stderr
    d = result.json
    assert set(d) == {"model", "data", "task", "target", "rows", "dropped_missing_target", "primary_metric", "threshold",
                      "metrics", "ci", "bootstrap", "baseline", "best_threshold", "confusion_matrix", "calibration",
                      "slicing", "slices", "worst_slices", "behaviour", "gates", "passed", "out_of_range",
                      "unseen_categories"}
    assert d["task"] == "binary" and d["target"] == "churned" and d["rows"] == 1200
    assert d["metrics"]["auc"] > d["baseline"]["metrics"]["auc"]
    assert d["bootstrap"]["replicates"] == 50 and all(len(v) == 2 for v in d["ci"].values())
    assert {s["slice"] for s in d["slices"]} == set(pd.read_parquet(churn / "test.parquet")["plan"].unique())
    assert [b["test"] for b in d["behaviour"]] == ["perturbation", "invariance", "directional"]
    assert d["passed"] is True and d["gates"] == []


def test_human_output_and_same_seed_same_report(churn, tmp_path):
    args = ("evaluate", churn / "model.mlsys", churn / "test.parquet", "--bootstrap", "30", "--seed", "3")
    human = run_cli(*args)
    assert human.code == 0 and "auc" in human.stdout and "zero_rule" in human.stdout
    a = run_cli(*args, "--report", tmp_path / "a.json")
    b = run_cli(*args, "--report", tmp_path / "b.json")
    assert (tmp_path / "a.json").read_text() == (tmp_path / "b.json").read_text()
    assert a.stdout == b.stdout


def test_failed_gate_exits_4_listing_failures_and_still_writes_reports(churn, tmp_path):
    report, html = tmp_path / "r.json", tmp_path / "r.html"
    result = run_cli("evaluate", churn / "model.mlsys", churn / "test.parquet", "--bootstrap", "20",
                     "--require", "auc>=0.99", "--require", "accuracy>=0.5", "--require", "ece<=0.0001",
                     "--report", report, "--html", html)
    assert_clean_error(result, 4)
    error = [line for line in result.stderr.splitlines() if line.startswith("error:")][0]
    assert "2 of 3" in error and "auc>=0.99" in error and "ece<=0.0001" in error and "accuracy" not in error
    gates = json.loads(report.read_text())["gates"]
    assert [g["passed"] for g in gates] == [False, True, False]
    assert "FAIL" in html.read_text()


def test_passing_gates_exit_0(churn):
    result = run_cli("evaluate", churn / "model.mlsys", churn / "test.parquet", "--bootstrap", "0",
                     "--require", "auc>=0.5", "--json")
    assert result.code == 0 and result.json["passed"] is True


@pytest.mark.parametrize("require", ["auc=>0.8", "auc", "auc>=x", "nope:auc>=0.5"])
def test_bad_require_syntax_is_exit_2(churn, require):
    assert_clean_error(run_cli("evaluate", churn / "model.mlsys", churn / "test.parquet", "--require", require), 2)


@pytest.mark.parametrize("args", [["--require", "rmse<=3"], ["--require", "perturb_flip_rate<=0.1"],
                                  ["--expect", "tenure_months"], ["--threshold", "1.5"]])
def test_unknown_metric_or_bad_option_is_exit_2(churn, args):
    assert_clean_error(run_cli("evaluate", churn / "model.mlsys", churn / "test.parquet", "--bootstrap", "0", *args), 2)


def _write(df, path):
    df.to_parquet(path)
    return path


@pytest.mark.parametrize("change, needle", [
    (lambda df: df.drop(columns=["churned"]), "churned"),
    (lambda df: df.drop(columns=["tenure_months"]), "tenure_months"),
    (lambda df: df.iloc[:0], "no rows"),
    (lambda df: df.assign(churned="maybe"), "maybe"),
])
def test_bad_data_is_exit_3_naming_the_problem(churn, tmp_path, change, needle):
    bad = _write(change(pd.read_parquet(churn / "test.parquet")), tmp_path / "bad.parquet")
    result = run_cli("evaluate", churn / "model.mlsys", bad, "--bootstrap", "0", "--html", tmp_path / "r.html")
    assert_clean_error(result, 3)
    assert needle in result.stderr
    assert not (tmp_path / "r.html").exists()


@pytest.mark.parametrize("value, needle", [(float("inf"), "infinite or too large"), (1e308, "infinite or too large"),
                                           ("lots", "not numeric")])
def test_unusable_regression_target_is_exit_3(ltv, tmp_path, value, needle):
    df = pd.read_parquet(ltv / "test.parquet")
    df["ltv"] = df["ltv"].astype(type(value))
    df.loc[3, "ltv"] = value
    bad = _write(df, tmp_path / "bad.parquet")
    result = run_cli("evaluate", ltv / "model.mlsys", bad, "--bootstrap", "0")
    assert_clean_error(result, 3)
    assert needle in result.stderr, result.stderr


def test_missing_files_and_unknown_slice_are_exit_3(churn, tmp_path):
    assert_clean_error(run_cli("evaluate", tmp_path / "none.mlsys", churn / "test.parquet"), 3)
    assert_clean_error(run_cli("evaluate", churn / "model.mlsys", tmp_path / "none.parquet"), 3)
    result = run_cli("evaluate", churn / "model.mlsys", churn / "test.parquet", "--slice", "no_such_column")
    assert_clean_error(result, 3)
    assert "no_such_column" in result.stderr


def test_infinities_read_as_missing_are_counted(churn, tmp_path):
    df = pd.read_parquet(churn / "test.parquet")
    column = next(c for c in df.columns if c not in ("churned", "customer_id") and df[c].dtype.kind == "f")
    df.loc[:3, column] = float("inf")
    path = _write(df, tmp_path / "inf.parquet")
    result = run_cli("evaluate", churn / "model.mlsys", path, "--bootstrap", "0", "--json")
    assert result.code == 0, result.stderr
    assert result.json["out_of_range"] == {column: 4}
    human = run_cli("evaluate", churn / "model.mlsys", path, "--bootstrap", "0")
    assert f"warning: {column!r}: 4 values are inf or beyond float32 range; treated as missing" in human.stderr


def test_a_column_of_integer_codes_for_text_categories_is_warned_about(churn, tmp_path):
    df = pd.read_parquet(churn / "test.parquet")
    df["plan"] = df["plan"].astype("category").cat.codes.astype("int64") + 1
    path = _write(df, tmp_path / "coded.parquet")
    result = run_cli("evaluate", churn / "model.mlsys", path, "--bootstrap", "0", "--json")
    assert result.code == 0, result.stderr
    assert result.json["unseen_categories"]["plan"] == {"rows": 1200, "unseen": 1200, "given": "integers", "fitted": "text"}
    assert "warning: column 'plan': every value (1200 rows)" in result.stderr  # with --json too
    human = run_cli("evaluate", churn / "model.mlsys", path, "--bootstrap", "0")
    assert ("warning: column 'plan': every value (1200 rows) is a category unseen in training (fitted on text, given integers)"
            in human.stderr), human.stderr


def test_rows_without_a_target_are_dropped_and_counted(churn, tmp_path):
    df = pd.read_parquet(churn / "test.parquet")
    df["churned"] = df["churned"].astype("boolean")
    df.loc[:49, "churned"] = pd.NA
    path = _write(df, tmp_path / "holes.parquet")
    result = run_cli("evaluate", churn / "model.mlsys", path, "--bootstrap", "0", "--json")
    assert result.code == 0, result.stderr
    assert result.json["dropped_missing_target"] == 50 and result.json["rows"] == 1150


@pytest.mark.browser
def test_html_report_renders_in_chromium(churn, ltv, chromium, tmp_path):  # noqa: F811
    binary, regression = tmp_path / "binary.html", tmp_path / "regression.html"
    assert run_cli("evaluate", churn / "model.mlsys", churn / "test.parquet", "--bootstrap", "30", "--slice", "plan",
                   "--slice", "tenure_months", "--invariant", "region", "--html", binary).code == 0
    assert run_cli("evaluate", ltv / "model.mlsys", ltv / "test.parquet", "--bootstrap", "30", "--slice", "plan",
                   "--html", regression).code == 0
    kinds = {}
    for path in (binary, regression):
        plots = plots_in(render_dom(chromium, path))
        assert plots and all(p["points"] > 0 and p["marks"] > 0 for p in plots), plots
        kinds[path.stem] = [p["kind"] for p in plots]
    assert kinds["binary"] == ["roc", "pr", "confusion", "reliability", "slices", "slices"]
    assert kinds["regression"] == ["actual_vs_predicted", "residuals", "slices"]


@pytest.mark.slow
def test_real_process_end_to_end(churn, tmp_path):
    result = run_proc("evaluate", churn / "model.mlsys", churn / "test.parquet", "--bootstrap", "20", "--json",
                      "--require", "auc>=0.6")
    assert result.code == 0, result.stderr
    assert json.loads(result.stdout)["gates"][0]["passed"] is True
