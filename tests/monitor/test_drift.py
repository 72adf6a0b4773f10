"""monitor.drift: false alarms and detection on seeded data, the sample data's known drift, serve logs,
profiles, windows and every bad input of issue 16."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from mlsys_cli.errors import InputError, UsageError
from mlsys_cli.monitor.drift import DriftOptions, detect, save_profile
from tests.conftest import SAMPLE

FAST = DriftOptions(domain_classifier=False)


def population(n, seed, **shift):
    """Six numeric and three categorical columns; ``shift`` injects one change by name."""
    rng = np.random.default_rng(seed)
    df = pd.DataFrame({
        "normal": rng.normal(size=n), "skewed": rng.lognormal(size=n), "count": rng.poisson(3, n).astype(float),
        "uniform": rng.uniform(size=n), "flag": rng.uniform(size=n) < 0.3, "partly_missing": rng.normal(size=n),
        "color": rng.choice(["red", "green", "blue"], n, p=[0.5, 0.3, 0.2]),
        "city": rng.choice([f"c{i}" for i in range(40)], n), "tier": rng.choice(["a", "b"], n),
    })
    df.loc[rng.uniform(size=n) < 0.05, "partly_missing"] = np.nan
    if "mean" in shift:
        df["normal"] += shift["mean"]
    if "scale" in shift:
        df["skewed"] *= shift["scale"]
    if "mix" in shift:
        df["color"] = rng.choice(["red", "green", "blue"], n, p=shift["mix"])
    if "new" in shift:
        df.loc[rng.uniform(size=n) < shift["new"], "tier"] = "c"
    if "missing" in shift:
        df.loc[rng.uniform(size=n) < shift["missing"], "partly_missing"] = np.nan
    return df


def _write(df, path):
    df.to_parquet(path, index=False)
    return path


def test_a_csv_table_is_compared_as_its_parquet_twin(tmp_path):
    # A CSV is read through DuckDB; its row count was relation.fetchone(), which DuckDB 2 relations lack
    # (an internal error for every CSV current or reference table).
    ref = _write(population(600, 1), tmp_path / "ref.parquet")
    cur = population(600, 2, mean=0.3)
    cur.to_csv(tmp_path / "cur.csv", index=False)
    from_csv = detect(tmp_path / "cur.csv", reference=ref, options=FAST)
    from_parquet = detect(_write(cur, tmp_path / "cur.parquet"), reference=ref, options=FAST)
    assert from_csv.current["rows"] == 600 and from_csv.drift_detected == from_parquet.drift_detected
    assert [f.name for f in from_csv.features if f.drifted] == [f.name for f in from_parquet.features if f.drifted]
    pd.DataFrame(columns=cur.columns).to_csv(tmp_path / "empty.csv", index=False)
    with pytest.raises(InputError, match="no rows to compare"):
        detect(tmp_path / "empty.csv", reference=ref, options=FAST)


def test_csv_column_names_with_quotes_and_spaces_are_compared(tmp_path):
    names = {"normal": 'say "hi"', "color": "colour name", "tier": "tïer"}
    ref = _write(population(600, 1).rename(columns=names), tmp_path / "ref.parquet")
    population(600, 2, mean=0.3).rename(columns=names).to_csv(tmp_path / "cur.csv", index=False)
    report = detect(tmp_path / "cur.csv", reference=ref, options=FAST)
    assert {'say "hi"', "colour name", "tïer"} <= {f.name for f in report.features}
    assert [f.name for f in report.features if f.drifted] == ['say "hi"']


def test_no_false_alarms_over_seeded_trials(tmp_path):
    alarms = 0
    for trial in range(20):
        ref = _write(population(2000, 2 * trial), tmp_path / "ref.parquet")
        cur = _write(population(2000, 2 * trial + 1), tmp_path / "cur.parquet")
        alarms += detect(cur, reference=ref, options=FAST).drift_detected
    assert alarms <= 1  # at most 5% of the trials


@pytest.mark.parametrize("shift, feature", [
    ({"mean": 0.3}, "normal"), ({"scale": 1.5}, "skewed"), ({"mix": [0.3, 0.3, 0.4]}, "color"),
    ({"new": 0.1}, "tier"), ({"missing": 0.25}, "partly_missing"),
])
def test_injected_shifts_are_found_and_only_there(tmp_path, shift, feature):
    ref = _write(population(3000, 0), tmp_path / "ref.parquet")
    cur = _write(population(3000, 1, **shift), tmp_path / "cur.parquet")
    report = detect(cur, reference=ref, options=FAST)
    assert report.drift_detected and report.drifted == [feature], [(f.name, f.reasons) for f in report.features if f.drifted]
    assert report.features[0].name == feature  # drifted first


def test_big_samples_tiny_shift_is_significant_but_not_drift(tmp_path):
    """The effect-size rule: a 0.02-std shift on 200k rows has a tiny p-value and is not reported."""
    ref = _write(population(200_000, 0), tmp_path / "ref.parquet")
    cur = _write(population(200_000, 1, mean=0.02), tmp_path / "cur.parquet")
    report = detect(cur, reference=ref, options=FAST)
    normal = next(f for f in report.features if f.name == "normal")
    assert normal.q_value < 1e-3 and not normal.drifted and not report.drift_detected


def test_domain_classifier_quiet_without_shift_and_names_the_shifted_column(tmp_path):
    opts = DriftOptions(domain_rows=1000, permutations=99)
    ref = _write(population(3000, 0), tmp_path / "ref.parquet")
    same = detect(_write(population(3000, 1), tmp_path / "same.parquet"), reference=ref, options=opts).multivariate
    assert same["ran"] and not same["drifted"] and abs(same["auc"] - 0.5) < 0.06
    moved = detect(_write(population(3000, 1, mean=1.0), tmp_path / "moved.parquet"), reference=ref, options=opts).multivariate
    assert moved["drifted"] and moved["auc"] > 0.65 and moved["separating_features"][0]["feature"] == "normal"


@pytest.fixture(scope="module")
def churn(tmp_path_factory):
    d = tmp_path_factory.mktemp("churn")
    spec = json.loads((SAMPLE / "drift.json").read_text())
    df = pd.read_parquet(SAMPLE / "churn.parquet")
    day = pd.to_datetime(df["snapshot_date"])
    ref = df[(day >= spec["reference_window"][0]) & (day <= spec["reference_window"][1])]
    cur = df[day >= spec["start"]]
    return spec, _write(ref, d / "ref.parquet"), _write(cur, d / "cur.parquet")


def test_sample_data_known_drift(churn):
    spec, ref, cur = churn
    report = detect(cur, reference=ref, options=DriftOptions(domain_classifier=False, time_col=spec["time_column"]))
    drifted = set(report.drifted)
    assert {c["feature"] for c in spec["covariate"]} <= drifted
    device = next(f for f in report.features if f.name == "device")
    assert device.effect["unseen_share"] > 0.1 and device.note.startswith("unseen: 'foldable'")
    # Documented stable columns stay quiet, except tenure: the customer base ages between the windows.
    assert not drifted & (set(spec["stable"]) - {"tenure_months"})
    assert "customer_id" in {s["column"] for s in report.skipped}


def test_profile_round_trip_matches_the_table_reference(churn, tmp_path):
    spec, ref, cur = churn
    opts = DriftOptions(domain_rows=500, permutations=49, time_col=spec["time_column"])
    summary = save_profile(ref, tmp_path / "ref.profile", options=opts)
    assert summary.sample_rows == 500 and summary.rows > 10_000
    from_table = detect(cur, reference=ref, options=opts)
    from_profile = detect(cur, profile=tmp_path / "ref.profile", options=opts)
    assert from_profile.drifted == from_table.drifted
    assert from_profile.multivariate["ran"] and from_profile.multivariate["drifted"]


def test_windows_over_time(churn):
    spec, ref, cur = churn
    report = detect(cur, reference=ref, options=DriftOptions(domain_classifier=False, time_col="snapshot_date", window="1d"))
    days = [w for w in report.windows if w.rows]
    assert [w.start for w in days] == ["2025-10-01", "2025-11-01", "2025-12-01"]
    assert all(w.drift_detected and "device" in w.drifted for w in days)
    empty = [w for w in report.windows if not w.rows]
    assert empty and all(w.drift_detected is None and w.note == "no rows" for w in empty)


def _serve_logs(d, n=600, shadow=200):
    rng = np.random.default_rng(5)
    d.mkdir()
    base = pd.Timestamp("2026-01-01", tz="UTC")
    for i in range(3):
        x = rng.normal(size=n) + (1.5 if i == 2 else 0.0)
        t = pa.table({
            "x": x, "color": rng.choice(["red", "blue"], n),
            "_mlsys_time": pa.array((base + pd.to_timedelta(i * 24 + rng.uniform(0, 23, n), unit="h")).astype("datetime64[us, UTC]")),
            "_mlsys_request_id": [f"r{i}-{k}" for k in range(n)],
            "_mlsys_role": ["shadow"] * shadow + ["primary"] * (n - shadow),
            "_mlsys_latency_ms": rng.uniform(1, 5, n),
        })
        pq.write_table(t, d / f"predictions-2026010{i + 1}T000000-1-{i}.parquet", compression="zstd")
    return d


def test_serve_log_directory(tmp_path):
    logs = _serve_logs(tmp_path / "logs")
    ref = _write(pd.DataFrame({"x": np.random.default_rng(0).normal(size=3000),
                               "color": np.random.default_rng(1).choice(["red", "blue"], 3000)}), tmp_path / "ref.parquet")
    report = detect(logs, reference=ref, options=DriftOptions(domain_classifier=False, time_col="_mlsys_time", window="1d"))
    assert report.current["rows"] == 3 * 400  # shadow rows left out
    assert not any(f.name.startswith("_mlsys_") for f in report.features)
    assert [w.drift_detected for w in report.windows] == [False, False, True]
    with_shadow = detect(logs, reference=ref, options=DriftOptions(domain_classifier=False, include_shadow=True))
    assert with_shadow.current["rows"] == 1800
    # which roles answered the compared rows (the files carry no model or version columns here)
    assert report.current["served_by"] == [{"role": "primary", "model": None, "version": None, "rows": 1200}]
    assert with_shadow.current["served_by"] == [{"role": "primary", "model": None, "version": None, "rows": 1200},
                                                {"role": "shadow", "model": None, "version": None, "rows": 600}]
    assert "served_by" not in detect(ref, reference=ref, options=FAST).current  # not a serve log


def test_a_serve_log_file_of_a_shadow_reading_fewer_columns_is_left_out_with_its_rows(tmp_path):
    """serve writes one file per model: a shadow's file lacks the columns it does not read. Its rows
    are left out by default, so its file must not stop the read (it did: 'no column')."""
    logs = _serve_logs(tmp_path / "logs", shadow=0)
    n = 300
    pq.write_table(pa.table({"x": np.zeros(n), "_mlsys_request_id": [f"s{k}" for k in range(n)],
                             "_mlsys_model": ["narrow"] * n, "_mlsys_version": ["v2"] * n, "_mlsys_role": ["shadow"] * n}),
                   logs / "predictions-20260104T000000-1-9.parquet")
    ref = _write(pd.DataFrame({"x": np.random.default_rng(0).normal(size=3000),
                               "color": np.random.default_rng(1).choice(["red", "blue"], 3000)}), tmp_path / "ref.parquet")
    report = detect(logs, reference=ref, options=FAST)
    assert report.current["rows"] == 3 * 600 and {f.name for f in report.features} == {"x", "color"}
    with pytest.raises(InputError, match=r"no column 'color' \(a serve log of shadow narrow v2\)") as info:
        detect(logs, reference=ref, options=DriftOptions(domain_classifier=False, include_shadow=True))
    assert "give the files of one model" in info.value.hint


# --------------------------------------------------------------------------- bad input


def test_an_exclusion_naming_no_column_is_refused_not_ignored(tmp_path):
    a = _write(pd.DataFrame({"alpha": range(100), "beta": range(100)}), tmp_path / "a.parquet")
    with pytest.raises(InputError, match="no column 'btea' to exclude") as info:
        detect(a, reference=a, options=DriftOptions(domain_classifier=False, exclude=("btea",)))
    assert "alpha, beta" in info.value.hint
    with pytest.raises(InputError, match="no column 'btea' to exclude"):
        save_profile(a, tmp_path / "p.profile", options=DriftOptions(exclude=("btea",)))
    assert not (tmp_path / "p.profile").exists()


def test_disjoint_columns_are_named(tmp_path):
    a = _write(pd.DataFrame({"alpha": range(100), "beta": range(100)}), tmp_path / "a.parquet")
    b = _write(pd.DataFrame({"gamma": range(100)}), tmp_path / "b.parquet")
    with pytest.raises(InputError, match="share no column.*alpha, beta.*gamma"):
        detect(b, reference=a, options=FAST)


def test_type_change_is_a_schema_change(tmp_path):
    ref = population(500, 0)
    cur = population(500, 1)
    cur["count"] = cur["count"].astype(str)
    report = detect(_write(cur, tmp_path / "c.parquet"), reference=_write(ref, tmp_path / "r.parquet"), options=FAST)
    assert {"column": "count", "change": "type changed", "reference": "float", "current": "string"} in report.schema_changes
    assert "count" not in [f.name for f in report.features]


def test_constant_and_all_null_columns(tmp_path):
    n = 500
    ref = pd.DataFrame({"x": np.random.default_rng(0).normal(size=n), "const": 1.0, "empty": np.full(n, np.nan)})
    cur = ref.assign(x=np.random.default_rng(1).normal(size=n))
    report = detect(_write(cur, tmp_path / "c.parquet"), reference=_write(ref, tmp_path / "r.parquet"), options=FAST)
    by = {f.name: f for f in report.features}
    assert not by["const"].drifted and by["const"].decided
    assert not by["empty"].decided and "all values missing" in by["empty"].note
    moved = cur.assign(const=2.0, empty=1.0)
    report = detect(_write(moved, tmp_path / "m.parquet"), reference=tmp_path / "r.parquet", options=FAST)
    by = {f.name: f for f in report.features}
    assert by["const"].drifted and by["empty"].drifted and "missing rate" in by["empty"].reasons[0]


def test_tiny_reference_refuses_to_decide(tmp_path):
    ref = _write(population(5, 0), tmp_path / "r.parquet")
    with pytest.raises(InputError, match="5 rows: too few to decide"):
        detect(_write(population(500, 1), tmp_path / "c.parquet"), reference=ref, options=FAST)


def test_unparseable_time_column_and_window_errors(tmp_path):
    ref = _write(population(200, 0), tmp_path / "r.parquet")
    cur = _write(population(200, 1).assign(when="yesterday"), tmp_path / "c.parquet")
    with pytest.raises(InputError, match="cannot parse"):
        detect(cur, reference=ref, options=DriftOptions(domain_classifier=False, time_col="when", window="1d"))
    with pytest.raises(UsageError, match="--window needs --time-col"):
        DriftOptions(window="1d")
    with pytest.raises(UsageError, match="invalid --window"):
        detect(cur, reference=ref, options=DriftOptions(time_col="when", window="soon"))


def test_profile_from_another_version_is_refused(tmp_path):
    ref = _write(population(200, 0), tmp_path / "r.parquet")
    save_profile(ref, tmp_path / "p.profile", options=DriftOptions(domain_rows=0))
    t = pq.read_table(tmp_path / "p.profile")
    doc = json.loads(t.schema.metadata[b"mlsys-drift-profile"])
    doc["version"] = 99
    pq.write_table(t.replace_schema_metadata({b"mlsys-drift-profile": json.dumps(doc).encode()}), tmp_path / "old.profile")
    with pytest.raises(InputError, match="version 99"):
        detect(ref, profile=tmp_path / "old.profile")
    with pytest.raises(InputError, match="not a drift profile"):
        detect(ref, profile=ref)


def test_reference_arguments(tmp_path):
    ref = _write(population(200, 0), tmp_path / "r.parquet")
    with pytest.raises(UsageError, match="not both"):
        detect(ref, reference=ref, profile=ref)
    with pytest.raises(UsageError, match="no reference"):
        detect(ref)
