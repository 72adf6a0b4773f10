"""ONNX parity: the featurizer's graph computes what transform() computes, on every path."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from mlsys_cli.features import Featurizer
from mlsys_cli.features.onnx import run
from mlsys_cli.features.schema import canonicalize
from tests.conftest import SAMPLE
from tests.features.frames import raw_frame, unseen_frame

SETTINGS = [
    {"preset": "trees"},
    {"preset": "linear", "cross": ["cat,city", "num,skewed"]},
    {"preset": "mlp", "bins": 4, "high_cardinality": "hashing"},
    {"preset": "linear", "scaling": "robust", "high_cardinality": "ordinal", "impute": "mean"},
    {"preset": "trees", "scaling": "minmax", "impute": "constant", "bins": 5},
]


def _assert_parity(fz, df):
    expected = fz.transform(df)
    got = run(fz.to_onnx(), fz, canonicalize(df, fz.input_schema_))
    assert got.dtype == np.float32 and got.shape == expected.shape
    np.testing.assert_array_equal(np.isnan(got), np.isnan(expected))
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-5, equal_nan=True)


@pytest.mark.parametrize("settings", SETTINGS, ids=lambda s: ",".join(f"{k}={v}" for k, v in s.items()))
def test_parity_with_unseen_and_missing_values(settings):
    fz = Featurizer(target="y", **settings).fit(raw_frame(400))
    _assert_parity(fz, unseen_frame())


@pytest.mark.parametrize("name, target, settings", [
    ("churn", "churned", {"preset": "trees", "cross": ["plan,region"]}),
    ("churn", "churned", {"preset": "linear", "cross": ["monthly_charges,tenure_months"]}),
    ("segments", "segment", {"preset": "mlp", "cross": ["channel,region"]}),
    ("ltv", "ltv", {"preset": "linear", "bins": 8}),
])
def test_parity_on_sample_tables(name, target, settings):
    df = pd.read_parquet(SAMPLE / f"{name}.parquet").head(1500)
    train, test = df.iloc[:1000], df.iloc[1000:].copy()
    strings = [c for c in test.columns if test[c].dtype == object or str(test[c].dtype) in ("str", "string")]
    for i, column in enumerate(c for c in test.columns if c != target):
        test[column] = test[column].astype(object)
        test.iloc[i::17, test.columns.get_loc(column)] = None  # missing values in every column
    for column in strings:
        test.iloc[3::29, test.columns.get_loc(column)] = "unseen-value"
    fz = Featurizer(target=target, **settings).fit(train)
    _assert_parity(fz, test)


def test_graph_inputs_follow_the_canonical_table():
    fz = Featurizer(target="y").fit(raw_frame(200))
    model = fz.to_onnx()
    types = {i.name: i.type.tensor_type.elem_type for i in model.graph.input}
    from onnx import TensorProto

    assert types == {"num": TensorProto.FLOAT, "skewed": TensorProto.FLOAT, "count": TensorProto.FLOAT,
                     "flag": TensorProto.FLOAT, "cat": TensorProto.STRING, "city": TensorProto.STRING,
                     "when": TensorProto.INT64, "day": TensorProto.INT64}
    assert [o.name for o in model.graph.output] == ["features"]


@pytest.mark.parametrize("preset", ["trees", "linear"])
def test_parity_with_a_time_of_day_column(preset):
    # A TIME column is one float graph input (seconds since midnight), scaled and imputed like a number.
    import datetime as dt

    df = raw_frame(300)
    rng = np.random.default_rng(3)
    df["at"] = [dt.time(int(s) // 3600, int(s) // 60 % 60, int(s) % 60) for s in rng.integers(0, 86400, len(df))]
    fz = Featurizer(target="y", preset=preset).fit(df)
    assert {"name": "at", "type": "time", "role": "numeric"} in fz.input_schema_
    test = unseen_frame()
    test["at"] = ["00:00", "23:59:59", None, "12:30:00.25"] * (len(test) // 4) + [None] * (len(test) % 4)
    _assert_parity(fz, test)
