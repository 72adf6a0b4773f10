"""ColumnTable: the featurizer fitted one column at a time is the one fitted on the whole frame."""

from __future__ import annotations

import numpy as np
import pytest

from mlsys_cli.features import Featurizer
from mlsys_cli.features.columns import KEEP, ColumnTable, ColumnTypes
from mlsys_cli.features.schema import canonical_column, logical_type, nested_columns
from tests.features.frames import raw_frame


def column_table(frame, loads: list[str]) -> ColumnTable:
    """``frame`` as a ColumnTable; ``loads`` records every column loaded, in order."""
    def load(name):
        loads.append(name)
        return frame[name].copy()

    types = ColumnTypes({n: logical_type(frame[n]) for n in frame.columns}, frozenset(nested_columns(frame)))
    return ColumnTable(list(frame.columns), len(frame), load, types)


@pytest.mark.parametrize("params", [
    {"target": "y", "preset": "trees"},
    {"target": "y", "preset": "mlp", "bins": 4, "cross": ["cat,city", "num,count"]},
    {"target": "skewed", "preset": "linear", "scaling": "robust", "high_cardinality": "target"},
    {"target": "y", "preset": "linear", "impute": "mean", "scaling": "minmax", "high_cardinality": "hashing"},
])
def test_the_fit_on_a_column_table_equals_the_fit_on_the_frame(params):
    frame = raw_frame(500)
    frame[params["target"]] = frame[params["target"]].astype(object)
    frame.loc[frame.index[::7], params["target"]] = None  # rows without a target are left out of both fits
    loads: list[str] = []
    whole = Featurizer(**params).fit(frame)
    by_column = Featurizer(**params).fit(column_table(frame, loads))
    assert by_column.get_state() == whole.get_state()
    assert set(loads) == set(frame.columns)


def test_only_a_few_converted_columns_are_kept():
    frame = raw_frame(200)
    loads: list[str] = []
    table = column_table(frame, loads)
    data = table.canonical([{"name": n, "type": table.logical_type(n)} for n in ("num", "cat", "city", "when")], canonical_column)
    for name in ("num", "cat", "city", "when", "when"):
        data[name]
    assert loads == ["num", "cat", "city", "when"] and len(data._cache) == KEEP


def test_a_mask_of_a_masked_view_selects_the_table_rows():
    frame = raw_frame(50)
    table = column_table(frame, [])
    first = np.arange(50) % 2 == 0
    second = np.arange(25) < 10
    assert table[first][second]["num"].equals(frame["num"][first][second])
    assert len(table[first][second]) == 10 and table.drop(["num"]).columns == [c for c in frame.columns if c != "num"]
