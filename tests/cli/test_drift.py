"""mlsys drift: wiring, outputs (JSON, Parquet, HTML in Chromium), exit codes and bad input."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from tests.browser import chromium, plots_in, render_dom  # noqa: F401  (chromium is a fixture)
from tests.conftest import assert_clean_error, run_cli, run_proc


def _frame(n, seed, shift=0.0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=n) + shift
    return pd.DataFrame({"x": x, "z": rng.uniform(size=n), "color": rng.choice(["red", "blue", "green"], n),
                         "day": pd.Timestamp("2026-01-01") + pd.to_timedelta(rng.integers(0, 3, n), unit="D"),
                         "y": np.where(x + rng.normal(size=n) > 0, "yes", "no")})


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("drift_cli")
    _frame(2000, 0).to_parquet(d / "ref.parquet", index=False)
    _frame(1500, 1).to_parquet(d / "same.parquet", index=False)
    _frame(1500, 2, shift=1.0).to_parquet(d / "moved.parquet", index=False)
    assert run_cli("train", d / "ref.parquet", "--target", "y", "--model", "linear", "--drop", "day", "-o", d / "m.mlsys").code == 0
    return d


def test_no_drift_exit_0_and_json_keys(files):
    r = run_cli("drift", files / "same.parquet", "--reference", files / "ref.parquet", "--json", "--fail-on-drift")
    assert r.code == 0, r.stderr
    d = r.json
    assert d["drift_detected"] is False and d["drifted"] == []
    assert {"reference", "current", "features", "multivariate", "model", "windows", "schema_changes", "skipped",
            "options", "seconds"} <= set(d)
    assert d["multivariate"]["ran"] and not d["multivariate"]["drifted"]


def test_drift_exit_4_with_outputs(files, tmp_path, chromium):  # noqa: F811
    r = run_proc("drift", files / "moved.parquet", "--reference", files / "ref.parquet", "--time-col", "day",
                 "--window", "1d", "--fail-on-drift", "--html", tmp_path / "r.html", "-o", tmp_path / "r.parquet")
    assert r.code == 4 and "error: drift detected: x" in r.stderr and "Traceback" not in r.stderr
    table = pq.read_table(tmp_path / "r.parquet").to_pandas()
    assert table.loc[table.feature == "x", "drifted"].item() and not table.loc[table.feature == "z", "drifted"].item()
    dom = render_dom(chromium, tmp_path / "r.html")
    plots = plots_in(dom)
    assert [p["kind"] for p in plots].count("drift-histogram") == 2  # x and z
    assert [p["kind"] for p in plots].count("drift-categories") == 2  # color and y
    assert all(p["marks"] > 0 for p in plots)
    assert "Over time" in dom and "2026-01-03" in dom and "DRIFT DETECTED" in dom


def test_a_column_lost_entirely_reads_drifted_and_only_drifted_rows_are_flagged_in_html(files, tmp_path):
    """Every value missing: no distribution to test, but its missing rate drifted and the headline
    counts it; the table said "undecided". The HTML flagged every row (its "no" text is truthy)."""
    import re

    pd.read_parquet(files / "same.parquet").assign(x=np.nan).to_parquet(tmp_path / "lost.parquet", index=False)
    r = run_cli("drift", tmp_path / "lost.parquet", "--reference", files / "ref.parquet", "--html", tmp_path / "r.html")
    assert r.code == 0, r.stderr
    rows = {line.split("\t")[0]: line.split("\t")[1] for line in r.stdout.splitlines() if "\t" in line}
    assert rows["x"] == "True" and rows["z"] == "False", r.stdout
    flagged = re.findall(r'<tr class="flag"><td>([^<]*)</td>', (tmp_path / "r.html").read_text())
    assert flagged == ["x"]


def test_model_reference_and_checks(files):
    r = run_cli("drift", files / "moved.parquet", "--model", files / "m.mlsys", "--json")
    assert r.code == 0, r.stderr
    d = r.json
    assert d["reference"]["kind"] == "model"
    assert "x" in d["drifted"] and any(n.startswith("prediction:proba_") for n in d["drifted"])
    assert d["model"]["metrics"]["current"]["auc"] is not None and "change" in d["model"]["metrics"]
    assert set(d["model"]["estimate"]["estimated"]) == {"accuracy", "auc"}
    label = next(f for f in d["features"] if f["name"] == "label:y")
    assert label["decided"]
    assert d["features"][0]["name"] == "x"  # drifted, and the model's most important input
    assert d["multivariate"]["ran"] is False and "holds no rows" in d["multivariate"]["note"]


def test_save_profile_then_compare(files, tmp_path):
    r = run_cli("drift", "--save-profile", tmp_path / "ref.profile", files / "ref.parquet", "--json")
    assert r.code == 0 and r.json["rows"] == 2000
    r = run_cli("drift", files / "moved.parquet", "--profile", tmp_path / "ref.profile", "--json")
    assert r.code == 0 and "x" in r.json["drifted"]


def test_tty_table_lists_drifted_first(files):
    r = run_cli("drift", files / "moved.parquet", "--reference", files / "ref.parquet", "--no-domain")
    assert r.code == 0
    rows = [line.split("\t") for line in r.stdout.splitlines() if line and not line.startswith("#")]
    header = rows.index(next(row for row in rows if row[0] == "feature"))
    assert rows[header + 1][:2] == ["x", "True"]


@pytest.mark.parametrize("args, code, message", [
    (["{d}/same.parquet"], 2, "no reference"),
    (["{d}/same.parquet", "--reference", "{d}/ref.parquet", "--profile", "{d}/ref.parquet"], 2, "not both"),
    (["{d}/same.parquet", "--reference", "{d}/ref.parquet", "--window", "1d"], 2, "--window needs --time-col"),
    (["{d}/same.parquet", "--reference", "{d}/ref.parquet", "--alpha", "2"], 2, "--alpha '2'"),
    (["{d}/same.parquet", "--reference", "{d}/ref.parquet", "--backend", "spark"], 2, "invalid backend"),
    (["{d}/nope.parquet", "--reference", "{d}/ref.parquet"], 3, "no such file"),
    (["{d}/same.parquet", "--profile", "{d}/ref.parquet"], 3, "not a drift profile"),
    (["{d}/same.parquet", "--reference", "{d}/ref.parquet", "--time-col", "color", "--window", "1d"], 3, "cannot parse"),
    (["{d}/same.parquet", "--reference", "{d}/ref.parquet", "--time-col", "missing", "--window", "1d"], 3, "no time column"),
])
def test_bad_input(files, args, code, message):
    r = run_cli("drift", *[a.format(d=files) for a in args])
    assert_clean_error(r, code)
    assert message in r.stderr


def test_empty_current_table(files, tmp_path):
    _frame(10, 0).iloc[:0].to_parquet(tmp_path / "empty.parquet", index=False)
    r = run_cli("drift", tmp_path / "empty.parquet", "--reference", files / "ref.parquet")
    assert_clean_error(r, 3)
    assert "no rows to compare" in r.stderr


def test_nothing_half_written_on_error(files, tmp_path):
    r = run_cli("drift", files / "same.parquet", "--profile", files / "ref.parquet", "-o", tmp_path / "out.parquet",
                "--html", tmp_path / "r.html")
    assert r.code == 3 and not list(tmp_path.iterdir())


def test_serve_logs_with_logged_outputs(files, tmp_path):
    """A directory of serve logs: _mlsys_* columns are metadata; the logged outputs are the predictions."""
    import pyarrow as pa

    logs = tmp_path / "logs"
    logs.mkdir()
    df = _frame(900, 3, shift=1.0)
    p = 1 / (1 + np.exp(-2 * df["x"].to_numpy()))
    table = pa.Table.from_pandas(df.drop(columns=["day", "y"]), preserve_index=False).append_column(
        "_mlsys_time", pa.array(pd.Timestamp("2026-02-01", tz="UTC") + pd.to_timedelta(np.arange(900), unit="min"))
    ).append_column("_mlsys_role", pa.array(["primary"] * 900)).append_column(
        "_mlsys_label", pa.array(np.where(p >= 0.5, "yes", "no"))).append_column(
        "_mlsys_proba_no", pa.array(1 - p)).append_column("_mlsys_proba_yes", pa.array(p))
    for i in range(3):
        pq.write_table(table.slice(300 * i, 300), logs / f"predictions-20260201T00000{i}-1-{i}.parquet")
    r = run_cli("drift", logs, "--model", files / "m.mlsys", "--time-col", "_mlsys_time", "--window", "5h", "--json")
    assert r.code == 0, r.stderr
    d = r.json
    assert d["model"]["outputs"] == "logged outputs" and "metrics" not in d["model"]
    assert "prediction:proba_yes" in d["drifted"] and "x" in d["drifted"]
    assert not any(f["name"].startswith("_mlsys_") for f in d["features"])
    assert [w["rows"] for w in d["windows"]] == [300, 300, 300]  # 5h windows aligned to the epoch


@pytest.mark.parametrize("values", [[53.5, 20.25], [1e30, 3.0]], ids=["fractions", "huge"])
def test_current_floats_in_a_reference_int_column_are_compared_not_an_internal_error(tmp_path, values):
    """A serve log holds any float32 a client sent for an int64 column of the training table (audit F3)."""
    rng = np.random.default_rng(0)
    ref = pd.DataFrame({"age": rng.integers(18, 80, 600), "plan": rng.choice(["a", "b"], 600)})
    cur = pd.DataFrame({"age": np.resize(np.array(values), 600) + rng.integers(0, 3, 600), "plan": rng.choice(["a", "b"], 600)})
    ref.to_parquet(tmp_path / "ref.parquet", index=False)
    cur.to_parquet(tmp_path / "cur.parquet", index=False)
    result = run_cli("drift", tmp_path / "cur.parquet", "--reference", tmp_path / "ref.parquet", "--json")
    assert result.code == 0, result.stderr
    report = result.json
    assert report["drifted"] == ["age"]  # the ages moved: drift, reported
    assert report["multivariate"]["ran"] and report["multivariate"]["auc"] > 0.9


def test_model_reference_names_only_changes_to_the_columns_the_model_reads(files, tmp_path):
    # A column the model does not read (one it was trained without, one added since) is no schema
    # change of the model's input (each was listed as "new in current", one warning per column).
    df = pd.read_parquet(files / "moved.parquet").assign(note="n", customer_id=range(1500))
    df.to_parquet(tmp_path / "cur.parquet", index=False)
    r = run_cli("drift", tmp_path / "cur.parquet", "--model", files / "m.mlsys", "--json")
    assert r.code == 0, r.stderr
    assert r.json["schema_changes"] == [] and "new in current" not in r.stderr
    # Against a reference table, a column it lacks is still new.
    r = run_cli("drift", tmp_path / "cur.parquet", "--reference", files / "ref.parquet", "--json")
    assert {c["column"] for c in r.json["schema_changes"] if c["change"] == "new in current"} == {"note", "customer_id"}


def test_an_onnx_model_is_named_as_not_a_bundle_not_a_damaged_one(files, tmp_path):
    """drift --model model.onnx said 'not a valid mlsys bundle ... truncated or damaged' (audit F6)."""
    assert run_cli("export", files / "m.mlsys", "-o", tmp_path / "m.onnx").code == 0
    result = run_cli("drift", files / "moved.parquet", "--model", tmp_path / "m.onnx")
    assert_clean_error(result, 3)
    assert "not an mlsys bundle" in result.stderr and "ONNX export" in result.stderr
    assert "damaged" not in result.stderr
