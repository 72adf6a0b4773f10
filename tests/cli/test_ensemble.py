"""mlsys ensemble: wiring, the report, the bundle in predict/evaluate/info, exit codes."""

from __future__ import annotations

import pytest

from tests.conftest import assert_clean_error, run_cli, run_proc


@pytest.fixture(scope="module")
def bundles(small_tables, tmp_path_factory):
    root = tmp_path_factory.mktemp("ens_members")
    t, r = small_tables["binary"], small_tables["regression"]
    out = {}
    for name, args in {
        "linear": [t["train"], "--target", "churned", "--drop", "customer_id", "--model", "linear"],
        "xgb": [t["train"], "--valid", t["valid"], "--target", "churned", "--drop", "customer_id", "--model", "xgboost",
                "--param", "n_estimators=40", "--param", "max_depth=3"],
        "ridge": [r["train"], "--target", r["target"], "--model", "linear"],
    }.items():
        result = run_cli("train", *args, "-o", root / f"{name}.mlsys")
        assert result.code == 0, result.stderr
        out[name] = root / f"{name}.mlsys"
    return out


def test_select_json_report_and_the_bundle_everywhere(bundles, small_tables, tmp_path):
    t = small_tables["binary"]
    out = tmp_path / "ens.mlsys"
    result = run_cli("ensemble", bundles["linear"], bundles["xgb"], "--data", t["valid"], "--method", "select",
                     "-o", out, "--json")
    assert result.code == 0, result.stderr
    d = result.json
    assert {"output", "method", "members", "ensemble", "gain", "worth_it", "verdict", "combiner"} <= set(d)
    assert d["method"] == "select" and d["metric"] == "auc" and len(d["members"]) == 2
    assert d["verdict"].startswith(("worth it", "not worth it"))
    assert sum(d["combiner"]["weights"]) == pytest.approx(1.0)
    info = run_cli("info", out, "--json")
    assert info.code == 0, info.stderr
    predicted = run_cli("predict", out, t["test"], "-o", tmp_path / "p.parquet")
    assert predicted.code == 0, predicted.stderr
    evaluated = run_cli("evaluate", out, t["test"], "--json")
    assert evaluated.code == 0, evaluated.stderr
    assert 0.5 < evaluated.json["metrics"]["auc"] <= 1.0


def test_human_report_says_whether_it_is_worth_it(bundles, small_tables):
    result = run_cli("ensemble", bundles["linear"], bundles["xgb"], "--data", small_tables["binary"]["valid"])
    assert result.code == 0, result.stderr
    assert "verdict: " in result.stdout and "worth it" in result.stdout
    assert "ensemble (average, cross-fitted)" in result.stdout


@pytest.mark.slow
def test_from_study(small_tables, tmp_path):
    t = small_tables["binary"]
    storage = f"journal:{tmp_path}/s.log"
    tuned = run_cli("tune", t["train"], "--valid", t["valid"], "--target", "churned", "--drop", "customer_id",
                    "--model", "linear", "--trials", "3", "--storage", storage, "--study", "s")
    assert tuned.code == 0, tuned.stderr
    # tune kept its best trials' models: no --train is needed, nothing is retrained.
    result = run_cli("ensemble", "--from-study", "--storage", storage, "--study", "s", "--top", "2",
                     "--data", t["valid"], "--method", "weighted", "--timeout", "5m", "-o", tmp_path / "e.mlsys", "--json")
    assert result.code == 0, result.stderr
    assert len(result.json["members"]) == 2 and all("#trial" in m["model"] for m in result.json["members"])
    assert [m["source"] for m in result.json["members"]] == ["kept", "kept"]
    assert result.json["stopped_by"] is None and result.json["skipped"] == []


@pytest.mark.parametrize("case, code, text", [
    ("single", 2, "at least two member models"),
    ("method", 2, "unknown ensemble method"),
    ("no-data", 2, "--data is required"),
    ("train-data", 3, "is the training data of member"),
    ("tasks", 3, "members disagree on the task"),
    ("no-target", 3, "no target column 'churned'"),
    ("one-class", 3, "the target 'churned' holds one class only (False)"),  # was a TypeError: exit 1
    ("missing", 3, "error: "),
    ("study-without-name", 2, "--from-study needs --study"),
    ("timeout", 2, "--timeout '0': must be a positive"),
    # The same member twice was accepted (exit 0), by path, by another path to it, or as a copy.
    ("twice", 2, "is given twice"),
    ("other-path", 2, "(same sha256)"),
    ("copy", 2, "(same sha256)"),
])
def test_bad_input(bundles, small_tables, tmp_path, case, code, text):
    import pandas as pd

    t = small_tables["binary"]
    pair = [bundles["linear"], bundles["xgb"]]
    data = ["--data", t["valid"]]
    if case == "no-target":
        path = tmp_path / "nt.parquet"
        pd.read_parquet(t["valid"]).drop(columns=["churned"]).to_parquet(path)
        data = ["--data", path]
    if case == "one-class":
        path = tmp_path / "one.parquet"
        pd.read_parquet(t["valid"]).assign(churned=False).to_parquet(path)
        data = ["--data", path]
    copy = tmp_path / "copy.mlsys"
    if case == "copy":
        import shutil

        shutil.copyfile(bundles["linear"], copy)
    other = bundles["linear"].parent / ".." / bundles["linear"].parent.name / "linear.mlsys"
    args = {
        "twice": [bundles["linear"], bundles["xgb"], bundles["linear"], *data],
        "other-path": [bundles["linear"], other, *data], "copy": [bundles["linear"], copy, *data],
        "single": [bundles["linear"], *data], "method": [*pair, *data, "--method", "vote"], "no-data": pair,
        "train-data": [*pair, "--data", t["train"]], "tasks": [bundles["linear"], bundles["ridge"], *data],
        "no-target": [*pair, *data], "one-class": [*pair, *data], "missing": [bundles["linear"], tmp_path / "nope.mlsys", *data],
        "study-without-name": ["--from-study", *data], "timeout": [*pair, *data, "--timeout", "0"],
    }[case]
    result = run_cli("ensemble", *args)
    assert_clean_error(result, code)
    assert text in result.stderr
    if case == "tasks":
        assert str(bundles["ridge"]) in result.stderr


@pytest.mark.slow
def test_tampered_member_in_the_real_process(bundles, small_tables, tmp_path):
    import zipfile

    bad = tmp_path / "bad.mlsys"
    with zipfile.ZipFile(bundles["linear"]) as src, zipfile.ZipFile(bad, "w") as dst:
        for item in src.infolist():
            data = src.read(item)
            dst.writestr(item, data + b"x" if item.filename.endswith(".skops") and "model" in item.filename else data)
    result = run_proc("ensemble", bundles["xgb"], bad, "--data", small_tables["binary"]["valid"], "-o", tmp_path / "e.mlsys")
    assert_clean_error(result, 3)
    assert not (tmp_path / "e.mlsys").exists()


def test_values_the_members_read_as_missing_or_unknown_are_counted_and_warned_about(bundles, small_tables, tmp_path):
    """ensemble fitted on such --data with exit 0 and not a word, while predict/evaluate warn."""
    import pandas as pd

    df = pd.read_parquet(small_tables["binary"]["valid"])
    df["plan"] = df["plan"].astype("category").cat.codes.astype("int64") + 1
    df["monthly_charges"] = -1e308
    df.to_parquet(tmp_path / "odd.parquet", index=False)
    r = run_cli("ensemble", bundles["linear"], bundles["xgb"], "--data", tmp_path / "odd.parquet", "--json")
    assert r.code == 0, r.stderr
    assert r.json["out_of_range"] == {"monthly_charges": len(df)}
    assert r.json["unseen_categories"]["plan"]["unseen"] == len(df)
    assert f"warning: 'monthly_charges': {len(df)} values are inf or beyond float32 range" in r.stderr, r.stderr
    assert f"warning: column 'plan': every value ({len(df)} rows) is a category unseen in training" in r.stderr
