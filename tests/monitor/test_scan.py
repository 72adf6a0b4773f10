"""monitor.scan: the binning kernel equals searchsorted exactly; dictionary batches count like strings."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from mlsys_cli.monitor.scan import Binner, Cells, Counts


def _percentile_edges(values):
    return np.unique(np.quantile(values, np.linspace(0, 1, 101)[1:-1]))


@pytest.mark.parametrize("kind", ["normal", "lognormal", "poisson", "uniform", "far mode"])
def test_binner_is_searchsorted_exactly(kind):
    rng = np.random.default_rng(len(kind))
    draw = {"normal": lambda n: rng.normal(size=n), "lognormal": lambda n: rng.lognormal(size=n),
            "poisson": lambda n: rng.poisson(3, n).astype(float), "uniform": lambda n: rng.uniform(size=n),
            "far mode": lambda n: np.r_[rng.normal(size=n - n // 50), rng.normal(1e6, 1, n // 50)]}[kind]
    edges = _percentile_edges(draw(5000))
    binner = Binner(edges)
    # Values on, just above and just below every edge, far outside, infinite and missing.
    x = np.r_[draw(20_000) * rng.choice([1.0, 3.0], 20_000), edges, np.nextafter(edges, np.inf),
              np.nextafter(edges, -np.inf), [np.inf, -np.inf, 1e300, -1e300, np.nan]]
    want = np.searchsorted(edges, x, side="right")
    got = binner.codes(x)
    present = ~np.isnan(x)
    assert np.array_equal(got[present], want[present])
    # Percentile edges of a smooth distribution take the grid; a far second mode crowds the bulk's
    # edges into one grid cell, and the exact fallback (searchsorted) takes over.
    assert (binner.steps > 0) == (kind != "far mode"), binner.steps


def test_binner_falls_back_when_edges_crowd_the_grid():
    edges = np.r_[np.linspace(0, 1e-9, 50), 1.0]  # 50 edges within one grid cell
    binner = Binner(edges)
    x = np.r_[np.linspace(-1, 2, 1001), edges]
    assert binner.steps == 0 and np.array_equal(binner.codes(x), np.searchsorted(edges, x, side="right"))


def test_dictionary_batches_count_like_plain_strings():
    cells = Cells("c", "string", categories=("a", "b"))
    values = ["a", "b", None, "", "z", "a", "z", "y"]
    plain, encoded = Counts(cells), Counts(cells)
    plain.add(pa.array(values, pa.string()), None)
    encoded.add(pa.array(values, pa.string()).dictionary_encode(), None)
    assert plain.total.tolist() == encoded.total.tolist() == [2, 1, 3, 2]  # a, b, unseen, missing ("" too)
    assert plain.unseen == encoded.unseen == {"z": 2, "y": 1}


def test_read_ahead_yields_in_order_raises_the_readers_error_and_stops_early():
    import threading

    from mlsys_cli.errors import InputError
    from mlsys_cli.monitor.scan import read_ahead

    assert list(read_ahead(iter(range(100)))) == list(range(100))

    def failing():
        yield 1
        raise InputError("broken file")

    got = []
    with pytest.raises(InputError, match="broken file"):
        for item in read_ahead(failing()):
            got.append(item)
    assert got == [1]

    produced = []
    stopped = threading.Event()

    def endless():
        try:
            for i in range(10_000):
                produced.append(i)
                yield i
        finally:
            stopped.set()

    for item in read_ahead(endless(), depth=2):
        if item == 3:
            break
    # The reader stops within a few items of the consumer, not after 10,000.
    assert stopped.wait(5) and len(produced) < 10


def test_files_that_type_a_column_differently_are_named(tmp_path):
    """Arrow names only the column; the error names the odd file and both types (local and Dask drift)."""
    import pyarrow.parquet as pq

    from mlsys_cli.errors import InputError
    from mlsys_cli.monitor.scan import Source

    pq.write_table(pa.table({"age": [1.0, 2.0], "x": [1, 2]}), tmp_path / "a.parquet")
    pq.write_table(pa.table({"age": [1.5, 2.5]}), tmp_path / "b.parquet")  # a missing column is no problem
    pq.write_table(pa.table({"age": ["old", "young"], "x": [3, 4]}), tmp_path / "c.parquet")
    with pytest.raises(InputError) as info:
        Source([str(tmp_path / "*.parquet")])
    assert f"{tmp_path / 'c.parquet'}: column 'age' is string, {tmp_path / 'a.parquet'} has double" in info.value.message
    assert "b.parquet" not in info.value.message


def test_a_compared_column_missing_from_one_file_is_named_not_an_internal_error(tmp_path):
    # Reading it as a Parquet dictionary raised a bare KeyError (exit 1) before the file's columns were checked.
    import pyarrow.parquet as pq

    from mlsys_cli.errors import InputError
    from mlsys_cli.monitor.scan import Source

    pq.write_table(pa.table({"age": [1.0, 2.0], "city": ["a", "b"]}), tmp_path / "a.parquet")
    pq.write_table(pa.table({"age": [1.5, 2.5]}), tmp_path / "b.parquet")
    source = Source([str(tmp_path / "*.parquet")])
    with pytest.raises(InputError, match=r"b\.parquet: no column 'city'"):
        list(source.batches(["age", "city"], dictionary=["city"]))


def test_categories_in_one_file_and_plain_strings_in_another_are_one_column(tmp_path):
    # Drift refused them ("do not share one schema") while train, split and info read them: one rule now (data.io).
    import pyarrow.parquet as pq

    from mlsys_cli.monitor.scan import Source

    pq.write_table(pa.table({"city": ["a", "b"]}), tmp_path / "a.parquet")
    pq.write_table(pa.table({"city": pa.array(["b", "c"]).dictionary_encode()}), tmp_path / "b.parquet")
    source = Source([str(tmp_path / "*.parquet")])
    assert source.types() == {"city": "string"}
    assert [v for b in source.batches(["city"], dictionary=["city"]) for v in b.column(0).to_pylist()] == ["a", "b", "b", "c"]
