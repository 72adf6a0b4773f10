"""mlsys predict: wiring, streaming in batches, and every bad input of issue 3 (exit codes)."""

from __future__ import annotations

import json
import zipfile

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from tests.conftest import assert_clean_error, run_cli, run_proc


def _frame(n, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=n)
    return pd.DataFrame({
        "id": np.arange(n), "x": x, "color": rng.choice(["red", "blue", "green"], n),
        "y": np.where(x + rng.normal(scale=0.7, size=n) > 0, "yes", "no"),
    })


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    d = tmp_path_factory.mktemp("predict_cli")
    _frame(400).to_parquet(d / "train.parquet", index=False)
    big = _frame(5000, seed=1)
    big.loc[7, "color"] = "purple"  # a category the model never saw
    big.to_parquet(d / "big.parquet", index=False, row_group_size=1000)
    result = run_cli("train", d / "train.parquet", "--target", "y", "--drop", "id", "--param", "n_estimators=20",
                     "-o", d / "m.mlsys")
    assert result.code == 0, result.stderr
    assert run_cli("featurize", d / "train.parquet", "--target", "y", "-o", d / "f.mlsys").code == 0
    return d


def test_streams_in_batches_and_matches_one_batch(setup, tmp_path):
    d = setup
    small = run_cli("predict", d / "m.mlsys", d / "big.parquet", "-o", tmp_path / "a.parquet", "--keep", "id",
                    "--batch-rows", "700", "--json")
    assert small.code == 0, small.stderr
    report = small.json
    assert report["rows"] == 5000 and report["batches"] == 8  # ceil(5000 / 700): never the whole table at once
    assert report["columns"] == ["id", "label", "proba_no", "proba_yes"]
    assert sum(report["summary"]["label_counts"].values()) == 5000
    whole = run_cli("predict", d / "m.mlsys", d / "big.parquet", "-o", tmp_path / "b.parquet", "--keep", "id",
                    "--batch-rows", "100000", "--json")
    assert whole.code == 0 and whole.json["batches"] <= 5
    a, b = pq.read_table(tmp_path / "a.parquet").to_pandas(), pq.read_table(tmp_path / "b.parquet").to_pandas()
    pd.testing.assert_frame_equal(a, b)
    assert a["id"].tolist() == list(range(5000))
    assert set(a["label"]) <= {"no", "yes"} and np.allclose(a["proba_no"] + a["proba_yes"], 1.0)


def test_human_output(setup, tmp_path):
    result = run_cli("predict", setup / "m.mlsys", setup / "train.parquet", "-o", tmp_path / "p.parquet")
    assert result.code == 0, result.stderr
    assert "400 predictions" in result.stdout and "label_counts" in result.stdout


def _tampered(src, dst):
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w") as zout:
        for info in zin.infolist():
            data = zin.read(info.filename)
            if info.filename.endswith(".ubj"):
                data = data[:-1] + bytes([data[-1] ^ 1])
            zout.writestr(info, data)


@pytest.mark.parametrize("model,needle", [
    (lambda d, p: p.write_bytes((d / "m.mlsys").read_bytes()[:300]), "m.mlsys"),
    (lambda d, p: _tampered(d / "m.mlsys", p), "m.mlsys"),
    (lambda d, p: p.write_bytes((d / "f.mlsys").read_bytes()), "features bundle, expected a model bundle"),
    (lambda d, p: p.write_text("not a model"), "not a model"),
    (lambda d, p: None, "no such file"),
])
def test_bad_model_file_is_exit_3(setup, tmp_path, model, needle):
    path = tmp_path / "m.mlsys"
    model(setup, path)
    result = run_cli("predict", path, setup / "train.parquet", "-o", tmp_path / "p.parquet")
    assert_clean_error(result, 3)
    assert needle in result.stderr, result.stderr
    assert not (tmp_path / "p.parquet").exists()


@pytest.mark.parametrize("mutate,needle", [
    (lambda df: df.drop(columns="x"), "column 'x' is missing"),
    (lambda df: df.assign(x=df["x"].astype(str).where(df.index != 1500, "abc")), "column 'x'"),
])
def test_schema_mismatch_is_exit_3_and_writes_nothing(setup, tmp_path, mutate, needle):
    # The bad value sits in a later batch: rows already predicted must not leave a half file.
    mutate(_frame(2000, seed=2)).to_parquet(tmp_path / "in.parquet", index=False)
    result = run_cli("predict", setup / "m.mlsys", tmp_path / "in.parquet", "-o", tmp_path / "p.parquet",
                     "--batch-rows", "500")
    assert_clean_error(result, 3)
    assert needle in result.stderr, result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.parquet"]


def test_extra_columns_ignored_nan_and_inf_predicted(setup, tmp_path):
    df = _frame(50, seed=3).assign(extra="ignored")
    df.loc[0, "x"], df.loc[1, "x"], df.loc[2, "color"] = np.nan, np.inf, None
    df.to_parquet(tmp_path / "in.parquet", index=False)
    df.loc[3, "x"] = -np.inf
    df.to_parquet(tmp_path / "in.parquet", index=False)
    result = run_cli("predict", setup / "m.mlsys", tmp_path / "in.parquet", "-o", tmp_path / "p.parquet", "--json",
                     "--batch-rows", "2")
    assert result.code == 0, result.stderr
    out = pq.read_table(tmp_path / "p.parquet").to_pandas()
    assert len(out) == 50 and np.isfinite(out["proba_yes"]).all()
    # The infinities read as missing are counted over every batch, as featurize counts them.
    assert json.loads(result.stdout)["out_of_range"] == {"x": 2}
    human = run_cli("predict", setup / "m.mlsys", tmp_path / "in.parquet", "-o", tmp_path / "p.parquet")
    assert "warning: 'x': 2 values are inf or beyond float32 range; treated as missing" in human.stderr


@pytest.mark.parametrize("codes, given", [({"red": 1, "blue": 2, "green": 3}, "integers"),
                                          ({"red": True, "blue": False, "green": True}, "booleans")])
def test_a_column_of_codes_for_text_categories_is_predicted_with_a_warning(setup, tmp_path, codes, given):
    """Numbers can be categories (zip codes): not refused; but every value unseen was exit 0 without a word."""
    df = _frame(40, seed=4)
    df["color"] = df["color"].map(codes)
    df.to_parquet(tmp_path / "in.parquet", index=False)
    result = run_cli("predict", setup / "m.mlsys", tmp_path / "in.parquet", "-o", tmp_path / "p.parquet",
                     "--batch-rows", "16", "--json")
    assert result.code == 0, result.stderr
    assert result.json["unseen_categories"] == {"color": {"rows": 40, "unseen": 40, "given": given, "fitted": "text"}}
    assert "warning: column 'color': every value (40 rows)" in result.stderr  # with --json too
    human = run_cli("predict", setup / "m.mlsys", tmp_path / "in.parquet", "-o", tmp_path / "p.parquet")
    assert (f"warning: column 'color': every value (40 rows) is a category unseen in training (fitted on text, given {given})"
            in human.stderr), human.stderr
    plain = run_cli("predict", setup / "m.mlsys", setup / "big.parquet", "-o", tmp_path / "p.parquet", "--json")
    # One new category among 5,000 rows is counted, not warned about.
    assert plain.json["unseen_categories"] == {"color": {"rows": 5000, "unseen": 1, "given": "text", "fitted": "text"}}
    assert "every value" not in run_cli("predict", setup / "m.mlsys", setup / "big.parquet", "-o", tmp_path / "p.parquet").stderr


def test_directory_of_files_whose_column_types_differ_is_refused_before_predicting(setup, tmp_path):
    parts = tmp_path / "parts"
    parts.mkdir()
    _frame(30, seed=5).to_parquet(parts / "a.parquet", index=False)
    coded = _frame(30, seed=6)
    coded["color"] = coded["color"].map({"red": 1, "blue": 2, "green": 3})  # category codes: every row 'unseen'
    coded.to_parquet(parts / "b.parquet", index=False)
    result = run_cli("predict", setup / "m.mlsys", parts, "-o", tmp_path / "p.parquet")
    assert_clean_error(result, 3)
    assert "b.parquet: column 'color' is int64" in result.stderr and not (tmp_path / "p.parquet").exists()
    # Columns the model does not read may differ (serve logs of several models); it predicts every row.
    _frame(30, seed=6).assign(extra=1.0).to_parquet(parts / "b.parquet", index=False)
    result = run_cli("predict", setup / "m.mlsys", parts, "-o", tmp_path / "p.parquet", "--json")
    assert result.code == 0, result.stderr
    assert result.json["rows"] == 60


@pytest.mark.parametrize("args,code", [
    (["--keep", "nope"], 3),
    (["--keep", "label"], 2),
    (["--batch-rows", "0"], 2),
])
def test_option_errors(setup, tmp_path, args, code):
    result = run_cli("predict", setup / "m.mlsys", setup / "train.parquet", "-o", tmp_path / "p.parquet", *args)
    assert_clean_error(result, code)
    assert not (tmp_path / "p.parquet").exists()


def test_missing_input_table_is_exit_3(setup, tmp_path):
    result = run_cli("predict", setup / "m.mlsys", tmp_path / "nope.parquet", "-o", tmp_path / "p.parquet")
    assert_clean_error(result, 3)


@pytest.mark.slow
def test_real_process_csv_input(setup, tmp_path):
    _frame(120, seed=4).to_csv(tmp_path / "in.csv", index=False)
    result = run_proc("predict", setup / "m.mlsys", tmp_path / "in.csv", "-o", tmp_path / "p.parquet", "--keep", "id",
                      "--batch-rows", "50", "--json")
    assert result.code == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["rows"] == 120 and report["batches"] == 3
    assert pq.read_table(tmp_path / "p.parquet").num_rows == 120


@pytest.mark.parametrize("command", ["predict", "train"])
def test_output_that_is_a_directory_is_a_usage_error(setup, tmp_path, command):
    """``-o out/`` (or an existing directory) names no file: exit 2, nothing written under a wrong name."""
    d = setup
    args = ([d / "m.mlsys", d / "big.parquet"] if command == "predict"
            else [d / "train.parquet", "--target", "y", "--param", "n_estimators=5"])
    for out, code in ((f"{tmp_path / 'sub'}/", 2), (str(tmp_path), 3)):
        result = run_cli(command, *args, "-o", out)
        assert_clean_error(result, code)
        assert "directory; give a file name" in result.stderr, result.stderr
    assert list(tmp_path.iterdir()) == []
