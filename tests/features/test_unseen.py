"""Unseen categories counted per column: tables and JSON values alike, and the all-unseen warning."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from mlsys_cli.features.unseen import CATEGORY_LIMIT, UnseenCategories, add_unseen, unseen_categories, unseen_warnings

SCHEMA = [{"name": "x", "type": "float"}, {"name": "c", "type": "string", "categories": ["red", "green", ""]},
          {"name": "zip", "type": "string", "categories": ["94110", "10001"]}]


@pytest.mark.parametrize("values, given", [
    ([1, 2, 3, 1, 2, 3], "integers"),
    ([True, False, True, True, False, False], "booleans"),
    ([1.5, 2.5, 1.5, 2.5, 1.5, 2.5], "numbers"),
    (["RED", "Green", "RED", "RED", "Green", "RED"], "text"),
])
def test_a_column_whose_every_value_is_unseen_is_named_with_the_kinds(values, given):
    df = pd.DataFrame({"x": np.zeros(len(values)), "c": values, "zip": ["94110"] * len(values)})
    counts = unseen_categories(df, SCHEMA)
    assert counts == {"c": {"rows": 6, "unseen": 6, "given": given, "fitted": "text"}}
    # JSON values (serve) count as the table does.
    assert UnseenCategories(SCHEMA).columns({k: df[k].tolist() for k in df}) == counts
    assert UnseenCategories(SCHEMA).records(df.to_dict("records")) == counts
    (line,) = unseen_warnings(counts)
    assert line.startswith("column 'c': every value (6 rows) is a category unseen in training")
    assert ("(fitted on text, given " + given + ")" in line) == (given != "text")


def test_seen_missing_and_few_rows_do_not_warn():
    df = pd.DataFrame({"c": ["red", None, "blue", np.nan, "green"], "zip": [94110, 10001, 94110, 10001, 2]})
    counts = unseen_categories(df, SCHEMA)
    # Missing values are not categories; whole numbers are the categories they print as ('94110').
    assert counts == {"c": {"rows": 3, "unseen": 1, "given": "text", "fitted": "text"},
                      "zip": {"rows": 5, "unseen": 1, "given": "integers", "fitted": "numbers"}}
    assert unseen_warnings(counts) == []
    few = unseen_categories(pd.DataFrame({"c": [1, 2, 3, 4]}), SCHEMA)
    assert few["c"]["unseen"] == 4 and unseen_warnings(few) == []


def test_counts_add_up_over_batches_and_a_cut_category_list_is_not_counted():
    one = unseen_categories(pd.DataFrame({"c": [1, 2, 3]}), SCHEMA)
    two = unseen_categories(pd.DataFrame({"c": [4, 5, 6]}), SCHEMA)
    total = add_unseen(add_unseen({}, one), two)
    assert total == {"c": {"rows": 6, "unseen": 6, "given": "integers", "fitted": "text"}}
    assert unseen_warnings(total)
    mixed = add_unseen(total, unseen_categories(pd.DataFrame({"c": [True]}), SCHEMA))
    assert mixed["c"]["given"] is None and "fitted on" not in unseen_warnings(mixed)[0]
    cut = [{"name": "c", "type": "string", "categories": [f"k{i}" for i in range(CATEGORY_LIMIT)]}]
    assert unseen_categories(pd.DataFrame({"c": [1, 2, 3, 4, 5]}), cut) == {}
