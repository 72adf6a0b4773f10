"""data.split: every split kind, its guarantees, the leakage checks, balancing, determinism."""

from __future__ import annotations

import datetime as dt

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mlsys_cli.data import io
from mlsys_cli.data.split import parse_by, parse_ratios, split_table
from mlsys_cli.errors import InputError, UsageError
from mlsys_cli.fsutil import sha256_file

PARTS = ("train", "valid", "test")


def make_table(n: int = 600, seed: int = 0, n_groups: int = 120):
    """A small churn-like table: ids, groups with several rows, dates with ties, an imbalanced target."""
    import numpy as np
    import pyarrow as pa

    rng = np.random.default_rng(seed)
    day = dt.date(2025, 1, 1)
    return pa.table({
        "row_id": [f"r{i:05d}" for i in range(n)],
        "customer": [f"c{g:04d}" for g in rng.integers(0, n_groups, n)],
        "day": [day + dt.timedelta(days=int(d)) for d in rng.integers(0, 40, n)],
        "amount": rng.gamma(2.0, 10.0, n).round(2),
        "plan": rng.choice(["basic", "pro", "team"], n),
        "label": rng.random(n) < 0.2,
    })


@pytest.fixture
def table_path(tmp_path):
    import pyarrow.parquet as pq

    path = tmp_path / "all.parquet"
    pq.write_table(make_table(), path)
    return path


def read(path):
    import pyarrow.parquet as pq

    return pq.read_table(path).to_pandas()


def test_parse_by():
    assert parse_by("random") == ("random", None)
    assert parse_by("time:snapshot_date") == ("time", "snapshot_date")
    assert parse_by("Group:customer_id") == ("group", "customer_id")
    for bad in ("shuffle", "time", "time:", "random:x", "stratified: ", ""):
        with pytest.raises(UsageError):
            parse_by(bad)


def test_parse_ratios():
    assert parse_ratios("0.7,0.15,0.15") == [0.7, 0.15, 0.15]
    assert parse_ratios("0.8,0.2") == [0.8, 0.2]
    for bad in ("0.7,0.2", "1", "0.5,0.25,0.15,0.1", "1.2,-0.2", "0.7,x,0.3", "1,0", "nan,0.5,0.5"):
        with pytest.raises(UsageError):
            parse_ratios(bad)


def test_random_split_partitions_the_table_in_order(table_path, tmp_path):
    result = split_table(table_path, tmp_path / "out", seed=7)
    source = read(table_path)
    parts = {p: read(tmp_path / "out" / f"{p}.parquet") for p in PARTS}
    assert sum(len(df) for df in parts.values()) == len(source)
    assert sorted(id_ for df in parts.values() for id_ in df["row_id"]) == sorted(source["row_id"])
    for df in parts.values():  # the input's row order is kept within each part
        assert list(df["row_id"]) == sorted(df["row_id"])
        assert list(df.columns) == list(source.columns)
    d = result.to_dict()
    assert [p["rows"] for p in d["parts"]] == [len(parts[p]) for p in PARTS]
    for p, want in zip(d["parts"], (0.7, 0.15, 0.15)):
        assert abs(p["ratio"] - want) < 0.01 and p["requested"] == want
    assert d["checks"]["duplicates"]["status"] == "ok" and not d["leakage"]


def test_same_seed_same_bytes_other_seed_other_split(table_path, tmp_path):
    split_table(table_path, tmp_path / "a", seed=3)
    split_table(table_path, tmp_path / "b", seed=3)
    split_table(table_path, tmp_path / "c", seed=4)
    for p in PARTS:
        assert sha256_file(tmp_path / "a" / f"{p}.parquet") == sha256_file(tmp_path / "b" / f"{p}.parquet")
    assert set(read(tmp_path / "a" / "test.parquet")["row_id"]) != set(read(tmp_path / "c" / "test.parquet")["row_id"])


def test_lineage_records_role_seed_target_and_input(table_path, tmp_path):
    split_table(table_path, tmp_path / "out", by="stratified:label", seed=5, target="label")
    for p in PARTS:
        lineage = io.read_lineage(tmp_path / "out" / f"{p}.parquet")
        assert lineage["command"] == "split" and lineage["role"] == p
        assert lineage["seed"] == 5 and lineage["target"] == "label"
        assert lineage["inputs"][0]["sha256"] == sha256_file(table_path)
        assert lineage["rows"] == len(read(tmp_path / "out" / f"{p}.parquet"))
        assert lineage["extra"]["by"] == "stratified:label"


def test_two_ratios_write_train_and_test_only(table_path, tmp_path):
    result = split_table(table_path, tmp_path / "out", ratios="0.8,0.2")
    assert sorted(f.name for f in (tmp_path / "out").iterdir()) == ["test.parquet", "train.parquet"]
    assert [p["name"] for p in result.parts] == ["train", "test"]


def test_stratified_keeps_class_ratios(tmp_path):
    import pyarrow.parquet as pq

    pq.write_table(make_table(n=2000, seed=1), tmp_path / "t.parquet")
    result = split_table(tmp_path / "t.parquet", tmp_path / "out", by="stratified:label", seed=2)
    source = read(tmp_path / "t.parquet")
    for part, want in zip(PARTS, (0.7, 0.15, 0.15)):
        df = read(tmp_path / "out" / f"{part}.parquet")
        for cls in (True, False):
            share = (df["label"] == cls).sum() / (source["label"] == cls).sum()
            assert abs(share - want) < 0.005
    assert set(result.parts[0]["classes"]) == {"true", "false"}


def test_stratified_on_one_class_is_refused(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = make_table().set_column(5, "label", pa.array([True] * 600))
    pq.write_table(table, tmp_path / "t.parquet")
    with pytest.raises(InputError, match="only one class"):
        split_table(tmp_path / "t.parquet", tmp_path / "out", by="stratified:label")
    assert not (tmp_path / "out").exists()


def test_time_split_puts_no_future_in_train_and_never_cuts_a_timestamp(table_path, tmp_path):
    result = split_table(table_path, tmp_path / "out", by="time:day")
    parts = [read(tmp_path / "out" / f"{p}.parquet") for p in PARTS]
    assert parts[0]["day"].max() < parts[1]["day"].min()
    assert parts[1]["day"].max() < parts[2]["day"].min()
    assert result.checks["time_overlap"]["status"] == "ok"
    assert result.parts[0]["time_max"] < result.parts[1]["time_min"]
    assert abs(result.parts[0]["ratio"] - 0.7) < 0.05  # 40 distinct days: the cut is on a day boundary


def test_time_split_on_iso_strings_and_numbers(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = make_table()
    days = table.column("day").to_pylist()
    table = table.append_column("day_text", pa.array([d.isoformat() for d in days]))
    table = table.append_column("day_num", pa.array([d.toordinal() for d in days]))
    pq.write_table(table, tmp_path / "t.parquet")
    split_table(tmp_path / "t.parquet", tmp_path / "a", by="time:day")
    split_table(tmp_path / "t.parquet", tmp_path / "b", by="time:day_text")
    split_table(tmp_path / "t.parquet", tmp_path / "c", by="time:day_num")
    for p in PARTS:
        ids = [list(read(tmp_path / d / f"{p}.parquet")["row_id"]) for d in "abc"]
        assert ids[0] == ids[1] == ids[2]


def test_time_column_that_is_not_a_time(table_path, tmp_path):
    with pytest.raises(InputError, match="is not a time"):
        split_table(table_path, tmp_path / "out", by="time:plan")
    with pytest.raises(InputError, match="is not a time"):
        split_table(table_path, tmp_path / "out", by="time:label")
    assert not (tmp_path / "out").exists()


def test_time_split_refuses_missing_times_and_too_few_times(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = make_table(n=50)
    days = table.column("day").to_pylist()
    pq.write_table(table.set_column(2, "day", pa.array([None] + days[1:])), tmp_path / "nulls.parquet")
    with pytest.raises(InputError, match="missing in 1 rows"):
        split_table(tmp_path / "nulls.parquet", tmp_path / "out", by="time:day")
    two_days = [days[0] if i % 2 else days[1] for i in range(50)]
    pq.write_table(table.set_column(2, "day", pa.array(two_days)), tmp_path / "two.parquet")
    with pytest.raises(InputError, match="too few distinct times"):
        split_table(tmp_path / "two.parquet", tmp_path / "out", by="time:day")
    assert not (tmp_path / "out").exists()
    split_table(tmp_path / "two.parquet", tmp_path / "out", by="time:day", ratios="0.5,0.5")


def test_group_split_keeps_every_group_in_one_part(table_path, tmp_path):
    result = split_table(table_path, tmp_path / "out", by="group:customer", seed=1)
    groups = [set(read(tmp_path / "out" / f"{p}.parquet")["customer"]) for p in PARTS]
    assert not (groups[0] & groups[1]) and not (groups[0] & groups[2]) and not (groups[1] & groups[2])
    assert result.checks["group_overlap"] == {"status": "ok", "column": "customer", "groups": 0,
                                              "checked": "by construction"}
    assert abs(result.parts[0]["ratio"] - 0.7) < 0.05  # ~5 rows per group: ratios met approximately


def test_leakage_checks_find_group_and_time_overlap_in_a_random_split(table_path, tmp_path):
    result = split_table(table_path, tmp_path / "out", group="customer", time="day")
    assert result.leakage
    assert result.checks["group_overlap"]["status"] == "found" and result.checks["group_overlap"]["groups"] > 10
    overlap = result.checks["time_overlap"]
    assert overlap["status"] == "found" and overlap["rows"] > 0 and overlap["train_max"] > overlap["holdout_min"]


def test_strict_refuses_leakage_and_writes_nothing(table_path, tmp_path):
    with pytest.raises(InputError, match="group overlap"):
        split_table(table_path, tmp_path / "out", group="customer", strict=True)
    assert not (tmp_path / "out").exists()
    split_table(table_path, tmp_path / "out", by="group:customer", group="customer", strict=True)
    assert (tmp_path / "out" / "train.parquet").exists()


def test_duplicates_stay_together_and_are_found_across_parts(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    base = make_table(n=300)
    # Every row twice: under a new id (a near duplicate) and at a later day (a re-load).
    later = [d + dt.timedelta(days=60) for d in base.column("day").to_pylist()]
    copies = base.set_column(0, "row_id", pa.array([f"x{i:05d}" for i in range(300)]))
    copies = copies.set_column(2, "day", pa.array(later))
    pq.write_table(pa.concat_tables([base, copies]), tmp_path / "t.parquet")
    random = split_table(tmp_path / "t.parquet", tmp_path / "r", ignore=["row_id", "day"])
    assert random.checks["duplicates"] == {"status": "ok", "rows": 0, "keys": 0, "ignore": ["row_id", "day"],
                                           "checked": "by construction"}
    # Ignoring the time column lets equal rows get different times: they must be counted.
    timed = split_table(tmp_path / "t.parquet", tmp_path / "t", by="time:day", ignore=["row_id", "day"])
    assert timed.checks["duplicates"]["status"] == "found" and timed.checks["duplicates"]["rows"] > 100
    assert timed.checks["duplicates"]["checked"] == "counted"
    plain = split_table(tmp_path / "t.parquet", tmp_path / "p", by="time:day")
    assert plain.checks["duplicates"]["status"] == "ok"


def test_duplicates_by_construction_agree_with_counting(tmp_path):
    """The skipped count would have found nothing: recount the written parts of every kind."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    base = make_table(n=400)
    pq.write_table(pa.concat_tables([base, base.slice(0, 150)]), tmp_path / "t.parquet")
    for by in ("random", "stratified:label", "group:customer", "time:day"):
        result = split_table(tmp_path / "t.parquet", tmp_path / by.split(":")[0], by=by, ratios="0.5,0.5")
        assert result.checks["duplicates"]["checked"] == "by construction"
        rows = [set(map(tuple, read(tmp_path / by.split(":")[0] / f"{p}.parquet").itertuples(index=False)))
                for p in ("train", "test")]
        assert not rows[0] & rows[1], by
        if by.startswith("group"):
            assert result.checks["group_overlap"]["checked"] == "by construction"
            groups = [set(read(tmp_path / "group" / f"{p}.parquet")["customer"]) for p in ("train", "test")]
            assert not groups[0] & groups[1]


@pytest.mark.parametrize("by, within", [("random", None), ("stratified", "plan")])
def test_binned_cuts_equal_the_exact_cuts(tmp_path, by, within):
    """The histogram path (big tables) picks exactly the cuts of the full sort, with tied keys too."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    from mlsys_cli.data.split import _Splitter

    table = make_table(n=20_000, n_groups=3000)
    seconds = pc.multiply(pa.array(range(20_000)), 7919)  # a distinct "timestamp" per row, out of order
    table = table.append_column("ts", pc.cast(pc.cast(pc.bit_wise_and(seconds, 0xFFFFF), pa.int64()), pa.timestamp("s")))
    pq.write_table(pa.concat_tables([table, table.slice(0, 2000)]), tmp_path / "t.parquet")
    sp = _Splitter(tmp_path / "t.parquet", ignore=())
    day, ts = sp.time_key("day")[0], sp.time_key("ts")[0]
    for seed, fractions in ((0, [0.7, 0.85]), (5, [0.5]), (11, [0.01, 0.999])):
        for key, hashed in ((sp.row_hash(seed), True), (f"hash({seed}, customer)", True), (day, False), (ts, False)):
            exact = {c: cuts for c, (cuts, _) in sp.cuts(key, fractions, within=within).items()}
            binned = sp.binned_cuts(key, fractions, within, sp.bin_expr(key, hashed))
            assert binned is None or binned == exact, (key, fractions)
            if hashed or key == ts:  # many distinct keys: the histogram path must not give way
                assert binned == exact


def test_binned_cuts_give_way_when_a_part_would_be_empty(tmp_path):
    import pyarrow.parquet as pq

    from mlsys_cli.data.split import _Splitter

    pq.write_table(make_table(n=50, n_groups=2), tmp_path / "t.parquet")
    sp = _Splitter(tmp_path / "t.parquet", ignore=())
    # Two groups cannot fill three parts: the histogram path declines rather than cut badly.
    assert sp.binned_cuts("hash(0, customer)", [0.4, 0.6], None, sp.bin_expr("hash(0, customer)", True)) is None
    assert sp.bin_expr("CAST(1 AS DOUBLE)", False) is None  # one value: nothing to bin


@pytest.mark.parametrize("method", ["under", "over"])
def test_balance_changes_train_only(table_path, tmp_path, method):
    plain = split_table(table_path, tmp_path / "plain", by="stratified:label", seed=9, target="label")
    result = split_table(table_path, tmp_path / "bal", by="stratified:label", seed=9, target="label", balance=method)
    train = read(tmp_path / "bal" / "train.parquet")
    counts = train["label"].value_counts()
    assert counts[True] == counts[False]
    before = plain.parts[0]["classes"]
    assert counts[True] == (min if method == "under" else max)(before.values())
    assert result.balance["before"] == before and result.balance["rows"] == len(train)
    assert result.parts[0]["rows_before_balance"] == plain.parts[0]["rows"]
    for p in ("valid", "test"):
        assert sha256_file(tmp_path / "bal" / f"{p}.parquet") != ""
        assert read(tmp_path / "bal" / f"{p}.parquet").equals(read(tmp_path / "plain" / f"{p}.parquet"))
    lineage = io.read_lineage(tmp_path / "bal" / "train.parquet")
    assert lineage["extra"]["balance"] == method and lineage["rows"] == len(train)
    assert set(train["row_id"]) <= set(read(tmp_path / "plain" / "train.parquet")["row_id"])
    again = split_table(table_path, tmp_path / "again", by="stratified:label", seed=9, target="label", balance=method)
    assert again.balance == result.balance
    assert sha256_file(tmp_path / "again" / "train.parquet") == sha256_file(tmp_path / "bal" / "train.parquet")


def test_balance_needs_a_target_and_a_known_method(table_path, tmp_path):
    with pytest.raises(UsageError, match="--target"):
        split_table(table_path, tmp_path / "out", balance="under")
    with pytest.raises(UsageError, match="--balance"):
        split_table(table_path, tmp_path / "out", target="label", balance="smote")
    with pytest.raises(InputError, match="not a class column"):
        split_table(table_path, tmp_path / "out", target="amount", balance="under")
    assert not (tmp_path / "out").exists()


def test_a_directory_of_parquet_files(tmp_path):
    import pyarrow.parquet as pq

    table = make_table()
    (tmp_path / "in").mkdir()
    pq.write_table(table.slice(0, 300), tmp_path / "in" / "a.parquet")
    pq.write_table(table.slice(300), tmp_path / "in" / "b.parquet")
    result = split_table(tmp_path / "in", tmp_path / "out", by="group:customer")
    assert result.rows == 600 and len(result.inputs) == 2


def test_regression_target_reports_no_classes(tmp_path):
    from tests.conftest import SAMPLE

    result = split_table(SAMPLE / "ltv.parquet", tmp_path / "out", target="ltv", ratios="0.8,0.2")
    assert result.rows == 3000 and "classes" not in result.parts[0]


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(n=st.integers(8, 80), seed=st.integers(0, 2**31), kind=st.sampled_from(["random", "stratified:label", "group:customer", "time:day"]))
def test_every_kind_partitions_any_table(tmp_path_factory, n, seed, kind):
    """Property: the parts are disjoint, cover the input exactly, and none is empty."""
    import pyarrow.parquet as pq

    tmp = tmp_path_factory.mktemp("prop")
    table = make_table(n=n, seed=seed % 1000, n_groups=max(4, n // 3))
    pq.write_table(table, tmp / "t.parquet")
    try:
        result = split_table(tmp / "t.parquet", tmp / "out", by=kind, seed=seed, ratios="0.6,0.4")
    except InputError as exc:  # tiny tables may hold too few groups, days or rows of a class
        assert "too few" in exc.message or "would be empty" in exc.message or "only one class" in exc.message
        assert not (tmp / "out").exists()
        return
    ids = [list(read(tmp / "out" / f"{p}.parquet")["row_id"]) for p in ("train", "test")]
    assert all(ids) and sorted(ids[0] + ids[1]) == sorted(table.column("row_id").to_pylist())
    assert sum(p["rows"] for p in result.parts) == n


def test_big_random_and_group_splits_take_the_histogram_path(tmp_path):
    """From BINNED_CUT_ROWS rows on: exact ratios, a partition of the input, groups kept whole."""
    import duckdb

    from mlsys_cli.data.split import BINNED_CUT_ROWS

    n = BINNED_CUT_ROWS + 20_000
    duckdb.execute(f"COPY (SELECT i AS row_id, 'c' || (i % 9000) AS customer, i % 7 = 0 AS label, "
                   f"TIMESTAMP '2025-01-01' + to_seconds((i * 7919) % {n}) AS ts FROM range({n}) t(i)) "
                   f"TO '{tmp_path / 'big.parquet'}' (FORMAT parquet)")
    result = split_table(tmp_path / "big.parquet", tmp_path / "r", seed=3, target="label")
    assert [p["rows"] for p in result.parts] == [round(0.7 * n), round(0.85 * n) - round(0.7 * n), n - round(0.85 * n)]
    ids = [read(tmp_path / "r" / f"{p}.parquet")["row_id"] for p in PARTS]
    assert sum(map(len, ids)) == n and len(set().union(*map(set, ids))) == n
    assert all(list(i) == sorted(i) for i in ids)  # input order kept
    grouped = split_table(tmp_path / "big.parquet", tmp_path / "g", by="group:customer", seed=3)
    groups = [set(read(tmp_path / "g" / f"{p}.parquet")["customer"]) for p in PARTS]
    assert not (groups[0] & groups[1] or groups[0] & groups[2] or groups[1] & groups[2])
    assert abs(grouped.parts[0]["ratio"] - 0.7) < 0.01
    timed = split_table(tmp_path / "big.parquet", tmp_path / "t", by="time:ts")
    assert [p["rows"] for p in timed.parts] == [p["rows"] for p in result.parts]  # distinct times: exact ratios
    assert timed.parts[0]["time_max"] < timed.parts[1]["time_min"] <= timed.parts[1]["time_max"] < timed.parts[2]["time_min"]
