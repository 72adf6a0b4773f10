"""monitor.streamed: a large reference is profiled in two passes (sampled edges, exact counts) and
decides like the exact, sorted profile."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from mlsys_cli.monitor import reference
from mlsys_cli.monitor import streamed as streamed_module
from mlsys_cli.monitor.drift import DriftOptions, detect
from mlsys_cli.monitor.scan import Source
from tests.monitor.test_drift import population


def test_streamed_profile_counts_every_row_exactly(tmp_path, monkeypatch):
    df = population(6000, 0)
    df.loc[::7, "color"] = ""  # empty strings are missing, as in the exact profile
    df.loc[::11, "uniform"] = np.inf  # infinite values are missing too (not the maximum)
    df.loc[5::13, "uniform"] = -np.inf
    path = tmp_path / "ref.parquet"
    df.to_parquet(path, index=False, row_group_size=1000)
    columns = [c for c in df.columns]
    exact = reference.from_table(path, columns, 0, 0)
    monkeypatch.setattr(streamed_module, "EDGE_ROWS", 500)
    streamed = reference.from_table(path, columns, 300, 0)
    assert streamed.rows == exact.rows == 6000 and streamed.sample.num_rows == 300
    for c in columns:
        e, s = exact.profiles[c], streamed.profiles[c]
        assert (e["kind"], e["count"], e["nulls"]) == (s["kind"], s["count"], s["nulls"]), c
        if e["kind"] == "categorical":
            assert e["sketch"] == s["sketch"] and e["n_unique"] == s["n_unique"], c
            continue
        assert (e["min"], e["max"]) == (s["min"], s["max"]), c
        assert math.isclose(e["mean"], s["mean"], rel_tol=1e-9, abs_tol=1e-12), c
        assert math.isclose(e["std"], s["std"], rel_tol=1e-9), c
        assert sum(s["sketch"]["counts"]) == 6000 - s["nulls"] and sum(s["histogram"]["counts"]) == 6000 - s["nulls"]
        if c not in ("count", "flag"):  # continuous: edges from 500 sampled rows, each cell about 1% of the rows
            shares = np.array(s["sketch"]["counts"]) / (6000 - s["nulls"])
            assert shares.max() < 0.05, c


def test_streamed_reference_decides_like_the_exact_one(tmp_path, monkeypatch):
    ref = tmp_path / "ref.parquet"
    population(4000, 0).to_parquet(ref, index=False)
    cur = tmp_path / "cur.parquet"
    population(4000, 1, mean=0.3, new=0.1).to_parquet(cur, index=False)
    options = DriftOptions(domain_rows=500, permutations=49)
    exact = detect(cur, reference=ref, options=options)
    monkeypatch.setattr(streamed_module, "EDGE_ROWS", 1000)
    streamed = detect(cur, reference=ref, options=options)
    assert sorted(exact.drifted) == sorted(streamed.drifted) == ["normal", "tier"]
    assert exact.multivariate == streamed.multivariate  # the same seeded rows either way
    by_name = {f.name: f for f in exact.features}
    for f in streamed.features:
        assert abs(f.effect["psi"] - by_name[f.name].effect["psi"]) < 0.05, f.name


def test_source_reads_strings_as_dictionaries_when_asked(tmp_path):
    path = tmp_path / "t.parquet"
    pd.DataFrame({"s": ["a", "b", None] * 10, "x": np.arange(30.0)}).to_parquet(path, index=False)
    batch = next(Source(path).batches(["s", "x"], dictionary=["s"]))
    assert str(batch.schema.field("s").type).startswith("dictionary") and batch.column("x").type == "double"
    assert not str(next(Source(path).batches(["s"])).column("s").type).startswith("dictionary")
