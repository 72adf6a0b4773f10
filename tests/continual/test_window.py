"""The retrain window: time order, the held-out part at a time boundary, and refused windows."""

from __future__ import annotations

from datetime import timedelta

import pandas as pd
import pytest

from mlsys_cli.continual.window import Columns, load_window, parse_ratios
from mlsys_cli.errors import InputError, UsageError


def test_parts_are_cut_by_time_and_the_holdout_starts_at_a_boundary(churn):
    w = load_window([str(churn["q3"])], Columns("churned", "snapshot_date"), task="binary")
    times = {name: pd.to_datetime(getattr(w, name)["snapshot_date"]) for name in ("train", "valid", "holdout")}
    assert times["train"].max() <= times["valid"].min() and times["valid"].max() < times["holdout"].min()
    assert len(w.train) + len(w.valid) + len(w.holdout) == w.info["rows"] == len(w.frame)
    # Whole snapshots are held out: at least the 20 % asked for, never part of a month.
    assert len(w.holdout) >= 0.2 * len(w.frame) and w.info["parts"]["holdout"]["start"][8:10] == "01"
    assert w.info["end"].startswith("2025-09-01")


def test_a_data_window_keeps_the_newest_span(churn):
    w = load_window([str(churn["all"])], Columns("churned", "snapshot_date"), span=timedelta(days=92), task="binary")
    assert w.info["start"].startswith("2025-09-01") and w.info["end"].startswith("2025-12-01")


def test_unlabelled_rows_are_left_out_and_counted(churn, tmp_path):
    df = pd.read_parquet(churn["h1"])
    df["churned"] = df["churned"].astype("boolean")
    df.loc[df.index[:40], "churned"] = pd.NA
    df.to_parquet(tmp_path / "late_labels.parquet", index=False)
    w = load_window([str(tmp_path / "late_labels.parquet")], Columns("churned", "snapshot_date"), task="binary")
    assert w.info["unlabelled_rows"] == 40 and w.info["rows"] == len(df) - 40


def test_blank_text_labels_are_unlabelled_rows_not_a_class(churn, tmp_path):
    df = pd.read_parquet(churn["h1"])
    df["churned"] = df["churned"].map({True: "yes", False: "no"}).astype(object)
    df.loc[df.index[:30], "churned"] = ""
    df.loc[df.index[30:40], "churned"] = " "
    df.to_parquet(tmp_path / "blank_labels.parquet", index=False)
    w = load_window([str(tmp_path / "blank_labels.parquet")], Columns("churned", "snapshot_date"), task="binary")
    assert w.info["unlabelled_rows"] == 40 and set(w.frame["churned"]) == {"no", "yes"}


def test_a_changed_schema_is_refused_naming_the_columns(churn, tmp_path):
    schema = [{"name": "plan", "type": "string"}, {"name": "age", "type": "float"}, {"name": "gone", "type": "float"}]
    df = pd.read_parquet(churn["h1"])
    df["age"] = df["age"].astype(str)
    df.to_parquet(tmp_path / "changed.parquet", index=False)
    with pytest.raises(InputError) as info:
        load_window([str(tmp_path / "changed.parquet")], Columns("churned", "snapshot_date", schema))
    assert "missing column(s) gone" in info.value.message and "age (float -> string)" in info.value.message


@pytest.mark.parametrize("column", ["age", "plan"])
def test_a_champion_input_without_a_single_value_is_refused_as_a_lost_column(churn, tmp_path, column):
    """It was trained on without it and promoted, and every later window left it out: the feature lost for good."""
    schema = [{"name": "plan", "type": "string"}, {"name": "age", "type": "float"}]
    df = pd.read_parquet(churn["h1"])
    df[column] = pd.Series([None] * len(df), dtype=object if column == "plan" else float)
    df.to_parquet(tmp_path / "lost.parquet", index=False)
    with pytest.raises(InputError) as info:
        load_window([str(tmp_path / "lost.parquet")], Columns("churned", "snapshot_date", schema), task="binary")
    assert f"entirely missing column(s) {column}" in info.value.message


def test_other_columns_are_ignored_and_reported(churn):
    schema = [{"name": "plan", "type": "string"}, {"name": "age", "type": "float"}]
    w = load_window([str(churn["h1"])], Columns("churned", "snapshot_date", schema), task="binary")
    assert list(w.frame.columns) == ["plan", "age", "churned", "snapshot_date"]
    assert "city" in w.info["ignored_columns"]


def test_too_few_rows_or_one_class(churn, tmp_path):
    df = pd.read_parquet(churn["h1"])
    df.groupby("snapshot_date").head(15).to_parquet(tmp_path / "small.parquet", index=False)  # 6 x 15 rows
    with pytest.raises(InputError, match="needs at least"):
        load_window([str(tmp_path / "small.parquet")], Columns("churned", "snapshot_date"), task="binary")
    df[~df["churned"]].to_parquet(tmp_path / "one.parquet", index=False)
    with pytest.raises(InputError, match=r"one class only \(False\)"):  # the label, not numpy's np.False_
        load_window([str(tmp_path / "one.parquet")], Columns("churned", "snapshot_date"), task="binary")
    with pytest.raises(InputError, match="one class only"):  # no task yet (train's flags): guessed as train does
        load_window([str(tmp_path / "one.parquet")], Columns("churned", "snapshot_date"))
    df.assign(snapshot_date=df["snapshot_date"].iloc[0]).to_parquet(tmp_path / "same.parquet", index=False)
    with pytest.raises(InputError, match="same time"):
        load_window([str(tmp_path / "same.parquet")], Columns("churned", "snapshot_date"), task="binary")


def test_bad_columns_and_ratios(churn):
    with pytest.raises(InputError, match="no time column 'day'"):
        load_window([str(churn["h1"])], Columns("churned", "day"))
    with pytest.raises(InputError, match="no target column 'label'"):
        load_window([str(churn["h1"])], Columns("label", "snapshot_date"))
    with pytest.raises(InputError, match="time column 'plan' does not hold times"):
        load_window([str(churn["h1"])], Columns("churned", "plan"))
    assert parse_ratios("0.8,0,0.2") == (0.8, 0.0, 0.2)
    for bad in ("0.7,0.3", "0.5,0.5,0.5", "1,0,0", "a,b,c", "nan,0.1,0.2", "0.7,nan,0.2", "inf,0,0.2"):
        with pytest.raises(UsageError):
            parse_ratios(bad)


def test_a_window_longer_than_the_data_keeps_every_row(churn, tmp_path):
    """A span beyond what nanosecond times can hold is not subtracted from them (it overflowed)."""
    df = pd.read_parquet(churn["h1"])
    df["snapshot_date"] = pd.to_datetime(df["snapshot_date"]).astype("datetime64[ns]")
    df.to_parquet(tmp_path / "ns.parquet", index=False)
    w = load_window([str(tmp_path / "ns.parquet")], Columns("churned", "snapshot_date"), span=timedelta(days=365_000),
                    task="binary")
    assert w.info["rows"] == len(df)
