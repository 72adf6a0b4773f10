"""The shipped sample data: reproducible from its script, and the documented properties hold."""

from __future__ import annotations

import csv
import json
import subprocess
import sys

import pytest

from mlsys_cli.fsutil import sha256_file

from .conftest import SAMPLE

GENERATED = ["churn.parquet", "churn_raw.csv", "churn_raw_defects.json", "drift.json", "segments.parquet", "ltv.parquet"]


@pytest.fixture(scope="module")
def churn():
    import pandas as pd

    df = pd.read_parquet(SAMPLE / "churn.parquet")
    df["month"] = pd.to_datetime(df["snapshot_date"])
    return df


@pytest.fixture(scope="module")
def drift():
    return json.loads((SAMPLE / "drift.json").read_text())


def test_generator_reproduces_the_committed_files_byte_for_byte(tmp_path):
    subprocess.run([sys.executable, str(SAMPLE / "make_sample_data.py"), "-o", str(tmp_path)], check=True)
    for name in GENERATED:
        assert sha256_file(tmp_path / name) == sha256_file(SAMPLE / name), name


def test_all_files_together_are_small():
    assert sum((SAMPLE / name).stat().st_size for name in GENERATED) < 3_000_000


def test_churn_schema_and_shape(churn):
    import pyarrow.parquet as pq

    schema = pq.read_schema(SAMPLE / "churn.parquet")
    types = {f.name: str(f.type) for f in schema}
    assert types["snapshot_date"] == "date32[day]"
    assert types["signup_date"].startswith("timestamp")
    assert types["autopay"] == types["paperless_billing"] == types["churned"] == "bool"
    assert 22_000 <= len(churn) <= 26_000
    assert churn["month"].dt.month.nunique() == 12
    assert churn.groupby("month").size().between(1_800, 2_200).all()
    assert not churn.duplicated(["customer_id", "snapshot_date"]).any()
    assert churn["customer_id"].nunique() > 3_000  # customers join and leave
    assert set(churn["plan"]) == {"basic", "standard", "premium", "family"}
    assert churn["region"].nunique() == 8
    assert churn["city"].nunique() >= 250
    top = churn["city"].value_counts(normalize=True)
    assert top.iloc[0] > 10 * top.iloc[100]  # Zipf-like: a long tail
    assert 0.03 < churn["age"].isna().mean() < 0.07
    assert churn["last_login_days"].isna().mean() > 0.02
    assert churn["monthly_charges"].skew() > 0.3


def test_churned_customers_leave(churn):
    last = churn.groupby("customer_id")["month"].transform("max")
    churned = churn[churn["churned"]]
    assert (churned["month"] == last[churned.index]).all()


def test_class_balance(churn):
    assert 0.10 <= churn["churned"].mean() <= 0.15


def test_covariate_drift_starts_in_october(churn, drift):
    import pandas as pd

    start = pd.Timestamp(drift["start"])
    before, after = churn[churn["month"] < start], churn[churn["month"] >= start]
    assert before["monthly_charges"].mean() * 1.05 < after["monthly_charges"].mean()
    # The same customers in September and October: every charge rises by the documented factor.
    sep = churn[churn["month"] == start - pd.DateOffset(months=1)].set_index("customer_id")["monthly_charges"]
    oct_ = churn[churn["month"] == start].set_index("customer_id")["monthly_charges"]
    ratio = (oct_ / sep).dropna().median()
    factor = next(d["factor"] for d in drift["covariate"] if d["feature"] == "monthly_charges")
    assert abs(ratio - factor) < 0.02
    assert after["support_calls"].mean() > 1.4 * before["support_calls"].mean()
    new = next(d["value"] for d in drift["covariate"] if d["kind"] == "new_category")
    assert (before["device"] == new).sum() == 0
    assert (after["device"] == new).mean() > 0.05


def test_price_sensitivity_of_churn_rises_in_october(churn, drift):
    import pandas as pd

    start = pd.Timestamp(drift["start"])

    def quartile_ratio(part):
        hi = part["monthly_charges"] >= part["monthly_charges"].quantile(0.75)
        lo = part["monthly_charges"] <= part["monthly_charges"].quantile(0.25)
        return part.loc[hi, "churned"].mean() / part.loc[lo, "churned"].mean()

    before, after = quartile_ratio(churn[churn["month"] < start]), quartile_ratio(churn[churn["month"] >= start])
    assert after > 2 * before
    concept = drift["concept"][0]
    assert concept["after"] > concept["before"]


def test_label_is_learnable_beyond_a_linear_model(churn):
    """A boosted model beats a linear one on January-September, and both beat chance clearly."""
    import numpy as np
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score

    pre = churn[churn["month"] < "2025-10-01"]
    X = pre[["age", "tenure_months", "monthly_charges", "support_calls", "last_login_days", "data_usage_gb", "autopay"]]
    X = X.assign(m2m=(pre["contract"] == "month-to-month"), two_year=(pre["contract"] == "two-year")).astype(float)
    y = pre["churned"].to_numpy()
    train = np.random.default_rng(0).random(len(X)) < 0.7
    boosted = HistGradientBoostingClassifier(max_iter=200, learning_rate=0.05, random_state=0).fit(X[train], y[train])
    filled = X.fillna(X[train].median())
    mu, sd = filled[train].mean(), filled[train].std()
    linear = LogisticRegression(max_iter=1000).fit((filled[train] - mu) / sd, y[train])
    auc_boosted = roc_auc_score(y[~train], boosted.predict_proba(X[~train])[:, 1])
    auc_linear = roc_auc_score(y[~train], linear.predict_proba((filled[~train] - mu) / sd)[:, 1])
    assert 0.78 < auc_boosted < 0.92
    assert auc_boosted > auc_linear + 0.02
    assert auc_linear > 0.7


def test_raw_csv_defects_are_where_documented():
    meta = json.loads((SAMPLE / "churn_raw_defects.json").read_text())
    with open(SAMPLE / "churn_raw.csv", newline="") as fh:
        lines = list(csv.reader(fh))
    header = lines[0]
    assert header == meta["columns"] and "Customer ID" in header and "Monthly Charges" in header
    assert len(lines) - 1 == meta["data_lines"]
    wrong = {d["line"] for d in meta["wrong_field_count"]}
    assert wrong == {i + 1 for i, row in enumerate(lines) if len(row) != len(header)}
    for d in meta["unparseable_number"]:
        row = lines[d["line"] - 1]
        value = row[header.index(d["column"])]
        assert value == d["value"]
        with pytest.raises(ValueError):
            float(value)
    for d in meta["duplicate_of"]:
        assert lines[d["line"] - 1] == lines[d["duplicate_of_line"] - 1]
    dupes = len(lines) - 1 - len({tuple(r) for r in lines[1:]})
    assert dupes == len(meta["duplicate_of"]) == 3
    assert sorted(wrong | {d["line"] for d in meta["unparseable_number"]}) == meta["bad_lines"]
    assert len(meta["bad_lines"]) == 8


def test_multiclass_and_regression_tables():
    import pandas as pd

    seg = pd.read_parquet(SAMPLE / "segments.parquet")
    assert 2_500 <= len(seg) <= 3_500
    counts = seg["segment"].value_counts(normalize=True)
    assert len(counts) == 4 and counts.min() > 0.03
    assert seg.isna().any().any()
    ltv = pd.read_parquet(SAMPLE / "ltv.parquet")
    assert 2_500 <= len(ltv) <= 3_500
    assert (ltv["ltv"] > 0).all() and ltv["ltv"].skew() > 1
    for df in (seg, ltv):
        kinds = {str(t) for t in df.dtypes}
        assert {"bool", "float64", "int64"} <= kinds and any(k.startswith("datetime") for k in kinds)
