"""Generate the sample datasets shipped with mlsys (seeded, byte-identical on rerun).

Usage::

    python sample_data/make_sample_data.py            # writes next to this script
    python sample_data/make_sample_data.py -o DIR     # writes into DIR

Writes ``churn.parquet`` (customers observed monthly over 2025, with a known drift from
October), ``churn_raw.csv`` (a raw export of part of it with documented defects),
``segments.parquet`` (multiclass), ``ltv.parquet`` (regression), and two machine-readable
descriptions: ``drift.json`` and ``churn_raw_defects.json``. See README.md beside this file.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from mlsys_cli.fsutil import atomic_path, atomic_write_bytes, atomic_write_text

SEED = 42
YEAR = 2025
ACTIVE_TARGET = 2000
DRIFT_START = pd.Timestamp(f"{YEAR}-10-01")

PLANS = ["basic", "standard", "premium", "family"]
PLAN_P = [0.38, 0.32, 0.18, 0.12]
PLAN_PRICE = {"basic": 35.0, "standard": 60.0, "premium": 95.0, "family": 80.0}
REGIONS = ["north", "south", "east", "west", "central", "coastal", "mountain", "islands"]
REGION_P = [0.2, 0.18, 0.16, 0.15, 0.12, 0.1, 0.06, 0.03]
DEVICES = ["android", "ios", "web", "smart_tv", "tablet"]
DEVICE_P = [0.42, 0.33, 0.12, 0.07, 0.06]
NEW_DEVICE = "foldable"
CONTRACTS = ["month-to-month", "one-year", "two-year"]
CONTRACT_P = [0.55, 0.27, 0.18]
N_CITIES = 300

# The drift that starts in October (documented in README.md and drift.json).
PRICE_INCREASE = 1.15
SUPPORT_RATE_FACTOR = 1.6
PRICE_SENSITIVITY = (0.45, 1.35)  # logit slope per 30 currency units above 70, before / from October
FOLDABLE_SWITCH = 0.12  # share of active customers who switch to the new device in October
FOLDABLE_NEW = 0.25  # share of customers signing up from October on the new device


def _cities(rng: np.random.Generator) -> tuple[list[str], np.ndarray]:
    syllables = ["ka", "lo", "mar", "ten", "vi", "sa", "ber", "go", "ri", "an", "del", "po", "su", "tor", "wen", "ly"]
    names: list[str] = []
    while len(names) < N_CITIES:
        name = "".join(rng.choice(syllables, size=rng.integers(2, 4))).capitalize()
        if name not in names:
            names.append(name)
    weights = 1.0 / np.arange(1, N_CITIES + 1) ** 1.1  # Zipf-like: a few big cities, a long tail
    return names, weights / weights.sum()


def _new_customers(rng: np.random.Generator, n: int, start_id: int, month: pd.Timestamp, cities, city_p) -> pd.DataFrame:
    """Static attributes of ``n`` customers; those joining before January have a signup history."""
    ids = [f"C{start_id + i:06d}" for i in range(n)]
    if month.month == 1 and start_id == 0:
        # The initial base signed up over the previous four years.
        days = rng.integers(1, 4 * 365, size=n)
        signup = month - pd.to_timedelta(days, unit="D")
    else:
        days = rng.integers(0, 28, size=n)
        signup = month - pd.to_timedelta(days + 1, unit="D")
    signup = signup + pd.to_timedelta(rng.integers(0, 86400, size=n), unit="s")
    plan = rng.choice(PLANS, size=n, p=PLAN_P)
    device = rng.choice(DEVICES, size=n, p=DEVICE_P)
    if month >= DRIFT_START:
        device = np.where(rng.random(n) < FOLDABLE_NEW, NEW_DEVICE, device)
    age = np.clip(rng.normal(41, 13, size=n), 18, 85).round()
    return pd.DataFrame({
        "customer_id": ids,
        "signup_date": signup.values.astype("datetime64[s]"),
        "plan": plan,
        "region": rng.choice(REGIONS, size=n, p=REGION_P),
        "city": rng.choice(cities, size=n, p=city_p),
        "device": device,
        "age": age,
        "contract": rng.choice(CONTRACTS, size=n, p=CONTRACT_P),
        "autopay": rng.random(n) < 0.48,
        "paperless_billing": rng.random(n) < 0.6,
        "base_charge": np.array([PLAN_PRICE[p] for p in plan]) * rng.lognormal(0.0, 0.22, size=n),
        "engagement": rng.gamma(2.0, 1.0, size=n),
        "total_charges": np.zeros(n),
    })


def _churn_logit(snap: pd.DataFrame, drifted: bool) -> np.ndarray:
    """The label model: non-linear in tenure, support calls and inactivity, with interactions."""
    price = (snap["monthly_charges"].to_numpy() - 70.0) / 30.0
    tenure = snap["tenure_months"].to_numpy()
    calls = snap["support_calls"].to_numpy()
    login = snap["last_login_days"].to_numpy()
    m2m = (snap["contract"] == "month-to-month").to_numpy()
    two_year = (snap["contract"] == "two-year").to_numpy()
    age = snap["age"].to_numpy()
    slope = PRICE_SENSITIVITY[1] if drifted else PRICE_SENSITIVITY[0]
    z = -3.0
    z = z + 1.3 * m2m - 1.1 * two_year
    z = z + 1.4 * np.exp(-tenure / 5.0)  # new customers churn most, then it flattens
    z = z + np.where(calls >= 3, 1.5, 0.25 * calls)  # a threshold: the third call is the breaking point
    z = z + np.where(np.isnan(login), 0.6, np.where(login > 21, 1.6, login / 40.0))
    z = z + slope * price + 0.7 * m2m * (price > 0.5)  # expensive month-to-month plans leave
    z = z - 0.5 * snap["autopay"].to_numpy()
    z = z + np.where(np.isnan(age), 0.0, 1.2 * ((age - 45.0) / 20.0) ** 2 - 0.4)  # young and old leave
    usage = np.log(snap["data_usage_gb"].to_numpy() + 0.5)
    z = z + 0.9 * (usage - 2.3) ** 2 - 0.8  # both idle and saturated users leave
    z = z + 0.8 * (calls >= 2) * ~snap["autopay"].to_numpy()  # unresolved billing trouble
    return z


def make_churn(rng: np.random.Generator) -> pd.DataFrame:
    """Customers observed on the first day of each month of 2025; churned = leaves after this month."""
    cities, city_p = _cities(rng)
    months = pd.date_range(f"{YEAR}-01-01", periods=12, freq="MS")
    active = _new_customers(rng, ACTIVE_TARGET, 0, months[0], cities, city_p)
    next_id = ACTIVE_TARGET
    snapshots = []
    for month in months:
        drifted = month >= DRIFT_START
        if month == DRIFT_START:
            switch = rng.random(len(active)) < FOLDABLE_SWITCH
            active.loc[switch, "device"] = NEW_DEVICE
        n = len(active)
        snap = active.copy()
        snap["snapshot_date"] = month
        tenure = ((month - snap["signup_date"]).dt.days // 30).clip(lower=0).astype("int64")
        snap["tenure_months"] = tenure
        charges = snap["base_charge"].to_numpy() * rng.lognormal(0.0, 0.05, size=n)
        if drifted:
            charges = charges * PRICE_INCREASE
        snap["monthly_charges"] = charges.round(2)
        prior = np.where(active["total_charges"].to_numpy() > 0, active["total_charges"].to_numpy(),
                         snap["base_charge"].to_numpy() * tenure)
        snap["total_charges"] = (prior + charges).round(2)
        active["total_charges"] = snap["total_charges"].to_numpy()
        rate = 0.35 + 0.25 * (snap["plan"] == "basic").to_numpy() + 0.2 * (snap["device"] == NEW_DEVICE).to_numpy()
        snap["support_calls"] = rng.poisson(rate * (SUPPORT_RATE_FACTOR if drifted else 1.0)).astype("int64")
        login = rng.exponential(4.0 / snap["engagement"].to_numpy()).round(0)
        login[rng.random(n) < 0.04] = np.nan
        snap["last_login_days"] = login
        snap["data_usage_gb"] = (snap["engagement"].to_numpy() * rng.lognormal(2.0, 0.5, size=n)).round(2)
        age = snap["age"].to_numpy().copy()
        age[rng.random(n) < 0.05] = np.nan
        snap["age"] = age
        p = 1.0 / (1.0 + np.exp(-_churn_logit(snap, drifted)))
        snap["churned"] = rng.random(n) < p
        snapshots.append(snap)
        stay = ~snap["churned"].to_numpy()
        active = active.loc[stay].reset_index(drop=True)
        joins = max(0, ACTIVE_TARGET - len(active) + int(rng.integers(-40, 41)))
        if month != months[-1]:
            joining = _new_customers(rng, joins, next_id, month + pd.offsets.MonthBegin(1), cities, city_p)
            next_id += joins
            active = pd.concat([active, joining], ignore_index=True)
    df = pd.concat(snapshots, ignore_index=True)
    df["snapshot_date"] = df["snapshot_date"].dt.date
    columns = ["customer_id", "snapshot_date", "signup_date", "plan", "region", "city", "device", "age",
               "tenure_months", "monthly_charges", "total_charges", "support_calls", "last_login_days",
               "data_usage_gb", "autopay", "paperless_billing", "contract", "churned"]
    return df[columns]


def make_segments(rng: np.random.Generator, n: int = 3000) -> pd.DataFrame:
    """Shoppers in four segments, a softmax of non-linear scores of mixed-type features."""
    age = np.clip(rng.normal(42, 14, size=n), 18, 90).round()
    income = rng.lognormal(10.8, 0.55, size=n).round(-2)
    household = rng.choice([1, 2, 3, 4, 5, 6], size=n, p=[0.28, 0.32, 0.16, 0.15, 0.06, 0.03])
    channel = rng.choice(["store", "web", "app", "phone"], size=n, p=[0.4, 0.3, 0.22, 0.08])
    region = rng.choice(REGIONS, size=n, p=REGION_P)
    visits = rng.poisson(3 + (channel == "app") * 3).astype("int64")
    basket = (rng.gamma(2.0, 20.0, size=n) * (1 + household / 6)).round(2)
    organic = rng.random(n) < 0.3
    scores = np.stack([
        1.5 - income / 40000 + 0.1 * visits,                              # budget
        -0.5 + 0.8 * (household >= 3) + 0.02 * basket,                    # family
        -1.0 + 1.2 * (np.abs(age - 38) < 12) + (channel != "store") * 0.9,  # professional
        -2.5 + income / 45000 + 1.0 * organic,                            # premium
    ], axis=1)
    scores = scores + rng.gumbel(0.0, 0.6, size=scores.shape)
    segment = np.array(["budget", "family", "professional", "premium"])[scores.argmax(axis=1)]
    basket[rng.random(n) < 0.04] = np.nan
    age[rng.random(n) < 0.03] = np.nan
    joined = pd.Timestamp("2021-01-01") + pd.to_timedelta(rng.integers(0, 4 * 365 * 86400, size=n), unit="s")
    return pd.DataFrame({
        "shopper_id": [f"S{i:05d}" for i in range(n)], "joined_at": joined.values.astype("datetime64[s]"),
        "age": age, "income": income, "household_size": household.astype("int64"), "channel": channel,
        "region": region, "visits_per_month": visits, "avg_basket": basket, "organic_food": organic,
        "segment": segment,
    })


def make_ltv(rng: np.random.Generator, n: int = 3000) -> pd.DataFrame:
    """Customer lifetime value: log-normal, multiplicative in plan, tenure and engagement."""
    plan = rng.choice(PLANS, size=n, p=PLAN_P)
    price = np.array([PLAN_PRICE[p] for p in plan]) * rng.lognormal(0.0, 0.15, size=n)
    tenure = rng.integers(1, 60, size=n)
    channel = rng.choice(["organic", "paid_search", "referral", "partner", "social"], size=n)
    referrals = rng.poisson(0.6, size=n).astype("int64")
    autopay = rng.random(n) < 0.5
    age = np.clip(rng.normal(40, 12, size=n), 18, 85).round()
    region = rng.choice(REGIONS, size=n, p=REGION_P)
    log_ltv = (np.log(price * 12) + 0.5 * np.log1p(tenure) + 0.25 * autopay + 0.15 * np.minimum(referrals, 3)
               + 0.3 * (channel == "referral") - 0.2 * (channel == "social") - 0.004 * np.abs(age - 40)
               + rng.normal(0.0, 0.35, size=n))
    monthly = price.round(2)
    monthly[rng.random(n) < 0.03] = np.nan
    signup = pd.Timestamp("2020-01-01") + pd.to_timedelta(rng.integers(0, 5 * 365 * 86400, size=n), unit="s")
    return pd.DataFrame({
        "customer_id": [f"L{i:05d}" for i in range(n)], "signup_date": signup.values.astype("datetime64[s]"),
        "plan": plan, "region": region, "acquisition_channel": channel, "age": age,
        "tenure_months": tenure.astype("int64"), "monthly_charges": monthly, "referrals": referrals,
        "autopay": autopay, "ltv": np.exp(log_ltv).round(2),
    })


RAW_NAMES = {
    "customer_id": "Customer ID", "snapshot_date": "Snapshot Date", "signup_date": "Signup Date", "plan": "Plan",
    "region": "Region", "city": "City", "device": "Device", "age": "Age", "tenure_months": "Tenure (Months)",
    "monthly_charges": "Monthly Charges", "total_charges": "Total Charges", "support_calls": "Support Calls",
    "last_login_days": "Last Login Days", "data_usage_gb": "Data Usage (GB)", "autopay": "AutoPay",
    "paperless_billing": "Paperless Billing", "contract": "Contract", "churned": "Churned",
}


def _raw_value(value) -> str:
    if isinstance(value, (bool, np.bool_)):
        return "Yes" if value else "No"
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return ""
    if isinstance(value, pd.Timestamp):
        return value.strftime("%Y-%m-%d %H:%M:%S")
    if isinstance(value, float):
        return f"{value:g}" if value.is_integer() else f"{value:.2f}"
    return str(value)


def make_raw_csv(rng: np.random.Generator, churn: pd.DataFrame, n: int = 5000) -> tuple[bytes, dict]:
    """A raw export of ``n`` churn rows (the first months) with documented defects injected."""
    rows = churn.iloc[np.sort(rng.choice(min(len(churn), 3 * n), size=n, replace=False))]
    records = [[_raw_value(v) for v in rec] for rec in rows.astype(object).itertuples(index=False, name=None)]
    col = {name: i for i, name in enumerate(churn.columns)}
    picks = rng.choice(np.arange(10, n - 10), size=11, replace=False)
    extra, short = picks[:3], picks[3:5]
    bad_numbers = {int(picks[5]): ("monthly_charges", "79.9O"), int(picks[6]): ("age", "thirty-two"),
                   int(picks[7]): ("total_charges", "#VALUE!")}
    duplicates = picks[8:11]
    for i in extra:
        records[i] = records[i] + ["unexpected"]
    for i in short:
        records[i] = records[i][:-3]
    for i, (name, text) in bad_numbers.items():
        records[i][col[name]] = text
    out: list[list[str]] = []
    defects: dict = {"wrong_field_count": [], "unparseable_number": [], "duplicate_of": []}
    for i, rec in enumerate(records):
        out.append(rec)
        line = len(out) + 1  # 1-based file lines; line 1 is the header
        if i in extra or i in short:
            defects["wrong_field_count"].append({"line": line, "fields": len(rec), "expected": len(col)})
        if i in bad_numbers:
            defects["unparseable_number"].append({"line": line, "column": RAW_NAMES[bad_numbers[i][0]],
                                                  "value": bad_numbers[i][1]})
        if i in duplicates:
            out.append(list(rec))
            defects["duplicate_of"].append({"line": line + 1, "duplicate_of_line": line})
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow([RAW_NAMES[c] for c in churn.columns])
    writer.writerows(out)
    meta = {
        "file": "churn_raw.csv", "header_line": 1, "data_lines": len(out), "source_rows": n,
        "columns": [RAW_NAMES[c] for c in churn.columns], "missing_marker": "", "booleans": ["Yes", "No"],
        "bad_lines": sorted(d["line"] for k in ("wrong_field_count", "unparseable_number") for d in defects[k]),
        **defects,
    }
    return buf.getvalue().encode(), meta


def drift_description() -> dict:
    return {
        "table": "churn.parquet", "time_column": "snapshot_date", "target": "churned",
        "start": DRIFT_START.date().isoformat(), "reference_window": [f"{YEAR}-01-01", f"{YEAR}-09-01"],
        "current_window": [DRIFT_START.date().isoformat(), f"{YEAR}-12-01"],
        "covariate": [
            {"feature": "monthly_charges", "kind": "scale", "factor": PRICE_INCREASE,
             "note": "price increase: every charge from October is 15% higher"},
            {"feature": "total_charges", "kind": "derived", "note": "accumulates the higher monthly charges"},
            {"feature": "support_calls", "kind": "rate", "factor": SUPPORT_RATE_FACTOR,
             "note": "Poisson rate of support calls x1.6"},
            {"feature": "device", "kind": "new_category", "value": NEW_DEVICE,
             "note": f"{FOLDABLE_SWITCH:.0%} of active customers switch in October; {FOLDABLE_NEW:.0%} of new signups"},
        ],
        "concept": [
            {"feature": "monthly_charges", "kind": "coefficient", "before": PRICE_SENSITIVITY[0],
             "after": PRICE_SENSITIVITY[1],
             "note": "price sensitivity of churn triples (logit slope per 30 above 70)"},
        ],
        "stable": ["plan", "region", "city", "age", "tenure_months", "autopay", "paperless_billing", "contract"],
    }


def _write_parquet(df: pd.DataFrame, path: Path) -> None:
    table = pa.Table.from_pandas(df, preserve_index=False).replace_schema_metadata(None)
    # Plain string columns (pandas 3 hands Arrow large_string) read everywhere, older readers too.
    schema = pa.schema([f.with_type(pa.string()) if pa.types.is_large_string(f.type) else f for f in table.schema])
    table = table.cast(schema)
    with atomic_path(path, suffix=".parquet") as tmp:
        pq.write_table(table, tmp, compression="zstd")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-o", "--output", type=Path, default=Path(__file__).resolve().parent)
    out = parser.parse_args(argv).output
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(SEED)
    churn = make_churn(rng)
    _write_parquet(churn, out / "churn.parquet")
    raw, defects = make_raw_csv(rng, churn)
    atomic_write_bytes(out / "churn_raw.csv", raw)
    atomic_write_text(out / "churn_raw_defects.json", json.dumps(defects, indent=2) + "\n")
    atomic_write_text(out / "drift.json", json.dumps(drift_description(), indent=2) + "\n")
    _write_parquet(make_segments(rng), out / "segments.parquet")
    _write_parquet(make_ltv(rng), out / "ltv.parquet")


if __name__ == "__main__":
    main()
