"""Reference statistics: fixed histogram edges, quantiles, categories, JSON-safe, raw or canonical."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from mlsys_cli.data.profile import QUANTILES, categorical_profile, numeric_profile, profile_frame, profile_values


def test_numeric_profile_bins_every_value():
    x = np.r_[np.arange(1000, dtype=float), [np.nan] * 10, [np.inf]]
    p = numeric_profile(x)
    assert p["count"] == 1011 and p["nulls"] == 11 and p["null_rate"] == pytest.approx(11 / 1011)
    assert len(p["histogram"]["counts"]) == len(p["histogram"]["edges"]) + 1 == 10
    assert sum(p["histogram"]["counts"]) == 1000
    assert max(p["histogram"]["counts"]) - min(p["histogram"]["counts"]) <= 1, "decile edges: equal bins"
    assert p["quantiles"]["levels"] == list(QUANTILES)
    assert p["quantiles"]["values"][0] == 0.0 and p["quantiles"]["values"][-1] == 999.0
    assert p["min"] == 0.0 and p["max"] == 999.0 and p["mean"] == pytest.approx(499.5)


def test_new_data_falls_into_the_reference_bins():
    ref = numeric_profile(np.linspace(0, 1, 101))
    edges = np.array(ref["histogram"]["edges"])
    new = np.array([-5.0, 0.5, 99.0])
    bins = np.searchsorted(edges, new, side="right")
    assert bins.min() == 0 and bins.max() == len(edges)


def test_empty_and_discrete_columns():
    assert numeric_profile(np.full(5, np.nan))["histogram"] == {"edges": [], "counts": [0]}
    p = numeric_profile(np.array([0.0, 1.0, 1.0, 1.0]))
    assert sum(p["histogram"]["counts"]) == 4 and p["histogram"]["edges"] == sorted(set(p["histogram"]["edges"]))


def test_categorical_profile_top_and_other():
    values = ["a"] * 5 + ["b"] * 3 + ["c"] * 3 + ["d"] + [None, ""]
    p = categorical_profile(values, top=2)
    assert p["top"] == {"a": 5, "b": 3} and p["other"] == 4
    assert p["nulls"] == 2 and p["n_unique"] == 4 and p["count"] == 14


def test_profile_frame_raw_and_canonical_agree():
    raw = pd.DataFrame({
        "n": [1, 2, None, 4], "b": [True, False, None, True], "s": ["x", None, "y", "x"],
        "d": pd.to_datetime(["2024-01-01", None, "2024-01-03", "2024-01-04"]),
    })
    schema = [{"name": "n", "type": "float"}, {"name": "b", "type": "bool"}, {"name": "s", "type": "string"},
              {"name": "d", "type": "datetime"}]
    from mlsys_cli.features.schema import canonicalize

    a, b = profile_frame(raw, schema), profile_frame(canonicalize(raw, schema), schema)
    assert a == b
    assert a["d"]["min"] == pd.Timestamp("2024-01-01").timestamp() and a["d"]["nulls"] == 1
    assert a["b"]["mean"] == pytest.approx(2 / 3) and a["s"]["top"] == {"x": 2, "y": 1}
    json.dumps(a, allow_nan=False)


def test_profile_values():
    assert profile_values(np.array([0.1, 0.9]))["kind"] == "numeric"
    assert profile_values(np.array(["yes", "no", "yes"], dtype=object))["top"] == {"yes": 2, "no": 1}


def test_values_near_the_float64_limit_give_finite_edges_and_quantiles():
    # A quantile between -1e308 and 1e308 overflowed the interpolation: a NaN edge and a None median.
    x = np.r_[np.full(50, -1e308), np.full(50, 1e308)]
    with np.errstate(all="raise"):
        p = numeric_profile(x)
    values = p["quantiles"]["values"] + p["histogram"]["edges"] + p["sketch"]["edges"]
    assert all(v is not None and np.isfinite(v) for v in values), values
    assert p["quantiles"]["values"][QUANTILES.index(0.5)] == 0.0
    assert sum(p["sketch"]["counts"]) == len(x)
    y = np.random.default_rng(0).normal(size=1000)
    assert numeric_profile(y)["quantiles"]["values"] == [float(v) for v in np.quantile(y, QUANTILES)]
