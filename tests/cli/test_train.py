"""mlsys train: wiring, options, determinism, and every bad input of issue 3 (exit codes)."""

from __future__ import annotations

import hashlib
import json
import zipfile

import numpy as np
import pandas as pd
import pytest

from tests.conftest import assert_clean_error, run_cli, run_proc


def _frame(n=300, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=n)
    return pd.DataFrame({
        "x": x, "color": rng.choice(["red", "blue", "green"], n), "w": rng.uniform(0.5, 2.0, n),
        "y": (x + rng.normal(scale=0.7, size=n) > 0.8).astype(int),
    })


@pytest.fixture(scope="module")
def tables(tmp_path_factory):
    d = tmp_path_factory.mktemp("train_cli")
    _frame().to_parquet(d / "train.parquet", index=False)
    _frame(150, seed=1).to_parquet(d / "valid.parquet", index=False)
    return d


def _manifest(path):
    return json.loads(zipfile.ZipFile(path).read("manifest.json"))


def _sha(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_report_shows_model_beside_baselines(small_tables, tmp_path):
    t = small_tables["binary"]
    out = tmp_path / "m.mlsys"
    result = run_cli("train", t["train"], "--valid", t["valid"], "--target", t["target"], "--model", "xgboost",
                     "--param", "n_estimators=30", "-o", out, "--json")
    assert result.code == 0, result.stderr
    d = result.json
    assert d["output"] == str(out) and d["model"] == "xgboost" and d["task"] == "binary"
    assert d["evaluated_on"] == "valid" and d["primary_metric"] == "auc"
    assert set(d["baselines"]) == {"zero_rule", "random"} and d["baselines"]["zero_rule"]["auc"] == 0.5
    assert d["metrics"]["valid"]["auc"] > d["baselines"]["random"]["auc"]
    assert d["top_features"] and d["seconds"] > 0 and d["rows"] == {"train": 500, "valid": 250}
    assert _manifest(out)["kind"] == "model"
    human = run_cli("train", t["train"], "--valid", t["valid"], "--target", t["target"], "--model", "linear",
                    "-o", tmp_path / "h.mlsys")
    assert human.code == 0, human.stderr
    assert "zero_rule" in human.stdout and "random" in human.stdout and "top features" in human.stdout


def test_same_seed_same_bundle_bytes(tables, tmp_path):
    # The same command line twice (the manifest records it, output path included).
    digests = set()
    out = tmp_path / "m.mlsys"
    for _ in range(2):
        result = run_cli("train", tables / "train.parquet", "--valid", tables / "valid.parquet", "--target", "y",
                         "--param", "n_estimators=25", "--seed", "3", "-o", out)
        assert result.code == 0, result.stderr
        digests.add(_sha(out))
    assert len(digests) == 1


def test_params_file_then_param_overrides(tables, tmp_path):
    (tmp_path / "params.json").write_text(json.dumps({"family": "xgboost", "params": {"max_depth": 2, "n_estimators": 7}}))
    result = run_cli("train", tables / "train.parquet", "--target", "y", "--params", tmp_path / "params.json",
                     "--param", "n_estimators=5", "-o", tmp_path / "m.mlsys", "--json")
    assert result.code == 0, result.stderr
    assert result.json["model"] == "xgboost"
    assert result.json["params"]["max_depth"] == 2 and result.json["params"]["n_estimators"] == 5
    assert _manifest(tmp_path / "m.mlsys")["recipe"]["params"]["n_estimators"] == 5
    clash = run_cli("train", tables / "train.parquet", "--target", "y", "--params", tmp_path / "params.json",
                    "--model", "linear", "-o", tmp_path / "c.mlsys")
    assert_clean_error(clash, 2)
    assert not (tmp_path / "c.mlsys").exists()


def test_weights_and_calibration_are_recorded(tables, tmp_path):
    out = tmp_path / "m.mlsys"
    result = run_cli("train", tables / "train.parquet", "--valid", tables / "valid.parquet", "--target", "y",
                     "--model", "linear", "--class-weight", "balanced", "--sample-weight", "w",
                     "--calibrate", "isotonic", "-o", out, "--json")
    assert result.code == 0, result.stderr
    assert result.json["calibrate"] == "isotonic"
    manifest = _manifest(out)
    recipe = manifest["recipe"]
    assert (recipe["class_weight"], recipe["sample_weight"], recipe["calibrate"]) == ("balanced", "w", "isotonic")
    assert "w" not in {c["name"] for c in manifest["input_schema"]}  # a weight column is not a feature
    assert any(name.startswith("calibrator/") for name in zipfile.ZipFile(out).namelist())


def test_timeout_stops_boosting(tables, tmp_path):
    result = run_cli("train", tables / "train.parquet", "--target", "y", "--param", "n_estimators=5000",
                     "--param", "learning_rate=0.001", "--timeout", "0.01s", "-o", tmp_path / "m.mlsys", "--json")
    assert result.code == 0, result.stderr
    assert result.json["fit"]["stopped_by"] == "timeout" and result.json["fit"]["n_estimators"] < 5000


def _one_class(d):
    return d.assign(y=1)


@pytest.mark.parametrize("mutate,needle", [
    (lambda d: d.drop(columns="y"), "no target column 'y'"),
    (_one_class, "one class"),
    (lambda d: d.assign(y=d["y"].astype(float).where(d.index != 4)), "missing or infinite"),
    (lambda d: d.assign(y=np.where(d.index == 4, np.inf, d["x"])), "missing or infinite"),
    (lambda d: d.assign(y=np.where(d.index == 4, 1e308, d["x"])), "too large"),
    (lambda d: d.assign(y=np.where(d.index == 4, -1e39, d["x"])), "too large"),
    (lambda d: d.iloc[:0], "no rows"),
])
def test_bad_training_table_is_exit_3_and_writes_nothing(tmp_path, mutate, needle):
    mutate(_frame()).to_parquet(tmp_path / "t.parquet", index=False)
    result = run_cli("train", tmp_path / "t.parquet", "--target", "y", "--model", "linear", "-o", tmp_path / "m.mlsys")
    assert_clean_error(result, 3)
    assert needle in result.stderr, result.stderr
    assert list(tmp_path.iterdir()) == [tmp_path / "t.parquet"]


def test_constant_and_empty_columns_are_warned_about_not_refused(tmp_path):
    _frame().assign(empty=np.nan, flat="same").to_parquet(tmp_path / "t.parquet", index=False)
    result = run_cli("train", tmp_path / "t.parquet", "--target", "y", "--model", "linear", "-o", tmp_path / "m.mlsys", "--json")
    assert result.code == 0, result.stderr
    warnings = " ".join(result.json["warnings"])
    assert "'empty' is entirely missing" in warnings and "'flat' is constant" in warnings
    # --json keeps stdout one JSON document; the warnings still reach stderr (DESIGN.md §3: logs there
    # in both modes). They were only in the JSON.
    assert "warning: column 'flat' is constant" in result.stderr, result.stderr


def test_infinities_in_train_and_valid_are_counted(tmp_path):
    train, valid = _frame(), _frame(150, seed=1)
    train.loc[:2, "x"], valid.loc[0, "x"], valid.loc[1, "w"] = np.inf, -np.inf, 1e300
    train.to_parquet(tmp_path / "t.parquet", index=False)
    valid.to_parquet(tmp_path / "v.parquet", index=False)
    result = run_cli("train", tmp_path / "t.parquet", "--valid", tmp_path / "v.parquet", "--target", "y",
                     "--model", "linear", "-o", tmp_path / "m.mlsys", "--json")
    assert result.code == 0, result.stderr
    warnings = result.json["warnings"]
    assert "'x' (train): 3 values are inf or beyond float32 range; treated as missing" in warnings
    assert "'x' (valid): 1 values are inf or beyond float32 range; treated as missing" in warnings
    assert "'w' (valid): 1 values are inf or beyond float32 range; treated as missing" in warnings


@pytest.fixture(scope="module")
def bundles(tables):
    """A features bundle for y, one for another target, and a model bundle."""
    d = tables
    assert run_cli("featurize", d / "train.parquet", "--target", "y", "-o", d / "f.mlsys").code == 0
    assert run_cli("featurize", d / "train.parquet", "--target", "x", "-o", d / "fx.mlsys").code == 0
    assert run_cli("train", d / "train.parquet", "--target", "y", "--model", "baseline", "-o", d / "m.mlsys").code == 0
    return d


def _tampered(src, dst):
    """Copy a bundle with one byte of a non-manifest member flipped (the zip stays readable)."""
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w") as zout:
        for info in zin.infolist():
            data = zin.read(info.filename)
            if info.filename != "manifest.json" and data:
                data = bytes([data[0] ^ 1]) + data[1:]
            zout.writestr(info, data)


@pytest.mark.parametrize("make,needle", [
    (lambda d, p: None, "fitted for target 'x'"),
    (lambda d, p: p.write_bytes((d / "f.mlsys").read_bytes()[:200]), "f.mlsys"),
    (lambda d, p: _tampered(d / "f.mlsys", p), "f.mlsys"),
    (lambda d, p: p.write_bytes((d / "m.mlsys").read_bytes()), "model bundle, expected a features bundle"),
    (lambda d, p: None, "no such file"),
])
def test_bad_features_bundle_is_exit_3(bundles, tmp_path, make, needle):
    name = {"fitted for target 'x'": "fx.mlsys"}.get(needle)
    features = bundles / name if name else tmp_path / "f.mlsys"
    make(bundles, features)
    result = run_cli("train", bundles / "train.parquet", "--target", "y", "--features", features, "-o", tmp_path / "m.mlsys")
    assert_clean_error(result, 3)
    assert needle in result.stderr, result.stderr
    assert not (tmp_path / "m.mlsys").exists()


def test_features_bundle_is_used_as_fitted(bundles, tmp_path):
    result = run_cli("train", bundles / "train.parquet", "--target", "y", "--features", bundles / "f.mlsys",
                     "--param", "n_estimators=5", "-o", tmp_path / "m.mlsys")
    assert result.code == 0, result.stderr
    assert "bundle" in _manifest(tmp_path / "m.mlsys")["recipe"]["features"]


@pytest.mark.parametrize("args", [
    ["--param", "nope=1"],
    ["--param", "novalue"],
    ["--model", "svm"],
    ["--task", "ranking"],
    ["--calibrate", "isotonic"],  # needs --valid
    ["--class-weight", "heavy"],
    ["--timeout", "soon"],
])
def test_usage_errors_are_exit_2(tables, tmp_path, args):
    result = run_cli("train", tables / "train.parquet", "--target", "y", *args, "-o", tmp_path / "m.mlsys")
    assert_clean_error(result, 2)
    assert not (tmp_path / "m.mlsys").exists()


def test_missing_inputs_are_exit_3(tables, tmp_path):
    for args in (["train", tmp_path / "nope.parquet", "--target", "y"],
                 ["train", tables / "train.parquet", "--target", "y", "--valid", tmp_path / "nope.parquet"],
                 ["train", tables / "train.parquet", "--target", "y", "--sample-weight", "nope"]):
        result = run_cli(*args, "-o", tmp_path / "m.mlsys")
        assert_clean_error(result, 3)
    assert not (tmp_path / "m.mlsys").exists()


@pytest.mark.slow
def test_real_process_regression(small_tables, tmp_path):
    t = small_tables["regression"]
    result = run_proc("train", t["train"], "--valid", t["valid"], "--target", t["target"], "--model", "xgboost",
                      "-o", tmp_path / "m.mlsys", "--json")
    assert result.code == 0, result.stderr
    d = json.loads(result.stdout)
    assert d["task"] == "regression" and d["primary_metric"] == "rmse"
    assert d["metrics"]["valid"]["rmse"] < d["baselines"]["zero_rule"]["rmse"]


@pytest.mark.parametrize("model,param,needle", [
    ("xgboost", "learning_rate=-0.1", "learning_rate"),
    ("linear", "C=0", "'C' parameter"),
    ("forest", "n_estimators=-3", "'n_estimators' parameter"),
    ("xgboost", "max_depth=-1", "max_depth"),
])
def test_out_of_range_parameters_are_usage_errors(tmp_path, model, param, needle):
    _frame().to_parquet(tmp_path / "t.parquet", index=False)
    result = run_cli("train", tmp_path / "t.parquet", "--target", "y", "--model", model, "--param", param, "-o", tmp_path / "m.mlsys")
    assert_clean_error(result, 2)
    assert needle in result.stderr, result.stderr
    assert not (tmp_path / "m.mlsys").exists()


def test_non_finite_value_in_a_params_file_is_a_usage_error(tmp_path):
    _frame().to_parquet(tmp_path / "t.parquet", index=False)
    (tmp_path / "p.json").write_text('{"family": "xgboost", "params": {"learning_rate": NaN}}')
    result = run_cli("train", tmp_path / "t.parquet", "--target", "y", "--params", tmp_path / "p.json", "-o", tmp_path / "m.mlsys")
    assert_clean_error(result, 2)
    assert "finite" in result.stderr
