"""data.info: describe_table counts rows and missing values of any column name."""

from __future__ import annotations

import pandas as pd
import pytest

from mlsys_cli.data.info import describe_table


@pytest.mark.parametrize("suffix", ["csv", "parquet"])
def test_column_names_with_quotes_spaces_and_accents_are_counted(tmp_path, suffix):
    names = ['say "hi"', "it's", "x y", "é"]
    df = pd.DataFrame({n: [1.0, None, 3.0] for n in names})
    path = tmp_path / f"t.{suffix}"
    df.to_csv(path, index=False) if suffix == "csv" else df.to_parquet(path, index=False)
    info = describe_table(path)
    assert info.rows == 3
    assert [(c["name"], c["nulls"]) for c in info.columns] == [(n, 1) for n in names]
