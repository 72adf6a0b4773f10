"""Batch prediction: streamed output equals in-memory prediction; schema problems are refused."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from mlsys_cli.data.io import read_lineage
from mlsys_cli.deploy.predict import load_model, predict_file
from mlsys_cli.errors import InputError, UsageError
from mlsys_cli.models.train import TrainSpec, train_model


@pytest.fixture(scope="module")
def models(small_tables, tmp_path_factory):
    root = tmp_path_factory.mktemp("predict")
    out = {}
    for task in ("binary", "regression"):
        t = small_tables[task]
        bundle, _ = train_model(str(t["train"]), TrainSpec(family="xgboost", target=t["target"], params={"n_estimators": 20}))
        bundle.save(root / f"{task}.mlsys")
        out[task] = root / f"{task}.mlsys"
    return out


def test_streamed_batches_equal_one_prediction(models, small_tables, tmp_path):
    test = pd.read_parquet(small_tables["binary"]["test"])
    result = predict_file(models["binary"], small_tables["binary"]["test"], tmp_path / "p.parquet",
                          keep=["customer_id"], batch_rows=64)
    assert result.batches == 4 and result.rows == len(test) == 250
    got = pd.read_parquet(tmp_path / "p.parquet")
    assert list(got.columns) == ["customer_id", "label", "proba_False", "proba_True"] == result.columns
    expected = load_model(models["binary"]).predict_frame(test)
    pd.testing.assert_frame_equal(got.drop(columns="customer_id"), expected)
    assert got["customer_id"].tolist() == test["customer_id"].tolist()
    assert sum(result.summary["label_counts"].values()) == 250


def test_lineage_is_stamped(models, small_tables, tmp_path):
    predict_file(models["regression"], small_tables["regression"]["test"], tmp_path / "p.parquet")
    lineage = read_lineage(tmp_path / "p.parquet")
    assert lineage["command"] == "predict" and lineage["rows"] == 250 and lineage["target"] == "ltv"
    assert [i["path"] for i in lineage["inputs"]] == [str(models["regression"]), str(small_tables["regression"]["test"])]
    assert pq.read_table(tmp_path / "p.parquet").column_names == ["prediction"]


def test_csv_input_and_extra_columns(models, small_tables, tmp_path):
    test = pd.read_parquet(small_tables["regression"]["test"]).assign(unused="x")
    test.to_csv(tmp_path / "t.csv", index=False)
    result = predict_file(models["regression"], tmp_path / "t.csv", tmp_path / "p.parquet")
    assert result.rows == 250 and result.summary["min"] <= result.summary["mean"] <= result.summary["max"]


def test_unseen_categories_are_predicted(models, small_tables, tmp_path):
    test = pd.read_parquet(small_tables["binary"]["test"]).assign(plan="platinum", city="Atlantis")
    test.to_parquet(tmp_path / "t.parquet", index=False)
    predict_file(models["binary"], tmp_path / "t.parquet", tmp_path / "p.parquet")
    assert np.isfinite(pd.read_parquet(tmp_path / "p.parquet")["proba_True"]).all()


def test_empty_input_writes_an_empty_table(models, small_tables, tmp_path):
    pd.read_parquet(small_tables["binary"]["test"]).iloc[:0].to_parquet(tmp_path / "e.parquet", index=False)
    result = predict_file(models["binary"], tmp_path / "e.parquet", tmp_path / "p.parquet", keep=["customer_id"])
    got = pq.read_table(tmp_path / "p.parquet")
    assert result.rows == 0 and got.num_rows == 0 and got.column_names == result.columns


@pytest.mark.parametrize("mutate,message", [
    (lambda d: d.drop(columns="age"), "column 'age' is missing"),
    (lambda d: d.assign(age=d["age"].astype(str).where(d.index != 100, "old")), "'age'"),
])
def test_schema_mismatch_is_refused_and_nothing_is_written(models, small_tables, tmp_path, mutate, message):
    mutate(pd.read_parquet(small_tables["binary"]["test"])).to_parquet(tmp_path / "t.parquet", index=False)
    with pytest.raises(InputError, match=message):
        predict_file(models["binary"], tmp_path / "t.parquet", tmp_path / "p.parquet", batch_rows=64)
    assert not list(tmp_path.glob("p.parquet*")) and not list(tmp_path.glob(".p.parquet*"))


def test_keep_problems(models, small_tables, tmp_path):
    with pytest.raises(InputError, match="--keep column 'nope'"):
        predict_file(models["binary"], small_tables["binary"]["test"], tmp_path / "p.parquet", keep=["nope"])
    with pytest.raises(UsageError, match="clashes"):
        predict_file(models["binary"], small_tables["binary"]["test"], tmp_path / "p.parquet", keep=["label"])


def test_load_model_refuses_what_is_not_a_model(tmp_path):
    (tmp_path / "x.mlsys").write_bytes(b"hello")
    with pytest.raises(InputError, match="not a model"):
        load_model(tmp_path / "x.mlsys")
    with pytest.raises(InputError, match="no such file"):
        load_model(tmp_path / "missing.mlsys")


def test_probabilities_sum_to_one_on_every_path(small_tables, tmp_path):
    # Predictors and graphs compute in float32 (rows summed to 1 only within ~1e-7): the bundle's
    # and the ONNX file's outputs are renormalised in float64, the same way, on every path.
    from mlsys_cli.deploy.export import export_model

    t = small_tables["multiclass"]
    bundle, _ = train_model(str(t["train"]), TrainSpec(family="xgboost", target=t["target"], params={"n_estimators": 20}))
    bundle.save(tmp_path / "m.mlsys")
    export_model(tmp_path / "m.mlsys", tmp_path / "m.onnx", data=[str(t["test"])])
    test = pd.read_parquet(t["test"])
    for path in ("m.mlsys", "m.onnx"):
        proba = load_model(tmp_path / path).predict(test)["probabilities"]
        assert proba.shape[0] == 250 and proba.shape[1] >= 3 and np.abs(proba.sum(axis=1) - 1).max() <= 1e-12
        predict_file(tmp_path / path, t["test"], tmp_path / "p.parquet")
        written = pd.read_parquet(tmp_path / "p.parquet").filter(like="proba_").to_numpy()
        np.testing.assert_array_equal(written, proba)
