"""mlsys featurize: wiring, the features bundle, --apply, and every bad input (exit codes)."""

from __future__ import annotations

import json
import zipfile

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from mlsys_cli.bundle import BundleWriter
from tests.conftest import assert_clean_error, run_cli, run_proc
from tests.features.frames import raw_frame, unseen_frame


@pytest.fixture(scope="module")
def tables(tmp_path_factory):
    d = tmp_path_factory.mktemp("featurize")
    raw_frame(300).to_parquet(d / "train.parquet")
    unseen_frame().to_parquet(d / "new.parquet")
    valid = raw_frame(100, seed=9)
    valid.loc[:60, "num"] = np.nan
    valid.to_parquet(d / "valid.parquet")
    return d


@pytest.fixture(scope="module")
def bundle(tables):
    result = run_cli("featurize", tables / "train.parquet", "--target", "y", "--preset", "linear", "--cross", "cat,city",
                     "--check", tables / "valid.parquet", "-o", tables / "f.mlsys", "--json")
    assert result.code == 0, result.stderr
    return tables / "f.mlsys", result.json


def test_fit_report_and_manifest(bundle):
    path, report = bundle
    assert report["kind"] == "features" and report["task"] == "binary" and report["preset"] == "linear"
    roles = {c["name"]: c["role"] for c in report["columns"]}
    assert roles["cust_id"] == "id" and roles["empty"] == "empty" and roles["const"] == "constant"
    assert [c["column"] for c in report["checks"]] == ["num"]
    manifest = json.loads(zipfile.ZipFile(path).read("manifest.json"))
    assert manifest["kind"] == "features" and manifest["target"] == "y"
    for key in ("input_schema", "roles", "spec", "report", "features", "data", "libraries", "command"):
        assert key in manifest, key
    assert manifest["spec"]["cross"] == ["cat,city"] and manifest["data"][0]["sha256"]
    assert manifest["features"] == report["features"]


def test_apply_streams_batches(bundle, tables):
    path, report = bundle
    out = tables / "X.parquet"
    result = run_cli("featurize", "--apply", path, tables / "new.parquet", "-o", out, "--batch-rows", "25", "--json")
    assert result.code == 0, result.stderr
    assert result.json["batches"] == 3 and result.json["rows"] == 60
    table = pq.read_table(out)
    assert table.column_names == report["features"] + ["y"]
    X = table.drop(["y"]).to_pandas().to_numpy()
    assert np.isfinite(X).all()  # linear: unseen categories, inf, 1e300 and missing values all handled


def test_bundle_is_deterministic(tables):
    outs = []
    for _ in range(2):
        assert run_cli("featurize", tables / "train.parquet", "--target", "y", "--seed", "4", "-o", tables / "d.mlsys").code == 0
        outs.append((tables / "d.mlsys").read_bytes())
    assert outs[0] == outs[1]


def test_human_output_lists_roles(tables):
    result = run_cli("featurize", tables / "train.parquet", "--target", "y", "-o", tables / "h.mlsys")
    assert result.code == 0, result.stderr
    assert "cust_id\tstring\tid" in result.stdout and "empty\tfloat\tempty" in result.stdout


def test_real_process(bundle, tables):
    path, _ = bundle
    result = run_proc("featurize", "--apply", path, tables / "train.parquet", "-o", tables / "Xp.parquet")
    assert result.code == 0, result.stderr
    assert pq.read_metadata(tables / "Xp.parquet").num_rows == 300


@pytest.mark.parametrize("args, code, message", [
    (["--target", "nope"], 3, "target column 'nope' is not in the table"),
    (["--target", "const"], 3, "has one class"),
    (["--target", "y", "--numeric", "ghost"], 3, "no column 'ghost'"),
    (["--target", "y", "--preset", "forests"], 2, "unknown preset"),
    (["--target", "y", "--cross", "cat,num"], 2, "cross two categorical or two numeric"),
    (["--target", "y", "--impute", "magic"], 2, "invalid impute"),
])
def test_bad_fit_inputs(tables, args, code, message):
    out = tables / "bad.mlsys"
    result = run_cli("featurize", tables / "train.parquet", *args, "-o", out)
    assert_clean_error(result, code)
    assert message in result.stderr and not out.exists()


def test_missing_input_file(tables):
    assert_clean_error(run_cli("featurize", tables / "nope.parquet", "--target", "y", "-o", tables / "x.mlsys"), 3)


def test_string_in_numeric_column_at_apply(bundle, tables):
    df = unseen_frame()
    df["num"] = ["n/a?" if i == 4 else ("" if pd.isna(v) else repr(float(v))) for i, v in enumerate(df["num"])]
    df.to_parquet(tables / "strings.parquet")
    result = run_cli("featurize", "--apply", bundle[0], tables / "strings.parquet", "-o", tables / "s.parquet")
    assert_clean_error(result, 3)
    assert "column 'num': expected numeric values, found 'n/a?'" in result.stderr
    assert not (tables / "s.parquet").exists()


def test_missing_column_at_apply(bundle, tables):
    unseen_frame().drop(columns=["city"]).to_parquet(tables / "nocity.parquet")
    result = run_cli("featurize", "--apply", bundle[0], tables / "nocity.parquet", "-o", tables / "n.parquet")
    assert_clean_error(result, 3)
    assert "column 'city' is missing" in result.stderr


def test_bundle_for_another_target(bundle, tables):
    result = run_cli("featurize", "--apply", bundle[0], tables / "new.parquet", "--target", "churned", "-o", tables / "o.parquet")
    assert_clean_error(result, 3)
    assert "fitted for target 'y', not 'churned'" in result.stderr


def test_tampered_truncated_and_wrong_kind_bundles(bundle, tables):
    data = bundle[0].read_bytes()
    (tables / "trunc.mlsys").write_bytes(data[: len(data) // 2])
    with zipfile.ZipFile(bundle[0]) as src, zipfile.ZipFile(tables / "tamper.mlsys", "w") as dst:
        for item in src.infolist():
            body = src.read(item.filename)
            dst.writestr(item, body[:-1] + bytes([body[-1] ^ 1]) if item.filename == "features/featurizer.json" else body)
    BundleWriter("model", {"target": "y"}).write(tables / "model.mlsys")
    for name, message in (("trunc.mlsys", "not a valid mlsys bundle"), ("tamper.mlsys", "fails its sha256 check"),
                          ("model.mlsys", "expected a features bundle")):
        result = run_cli("featurize", "--apply", tables / name, tables / "new.parquet", "-o", tables / "w.parquet")
        assert_clean_error(result, 3)
        assert message in result.stderr, result.stderr


def test_log_option(tables):
    from mlsys_cli.features.bundle import load_features_bundle

    logged = {}
    for choice in ("auto", "skewed", "none"):
        out = tables / f"log_{choice}.mlsys"
        result = run_cli("featurize", tables / "train.parquet", "--target", "y", "--preset", "linear", "--log", choice, "-o", out)
        assert result.code == 0, result.stderr
        fz, _ = load_features_bundle(out)
        logged[choice] = next(b for b in fz.blocks_ if b.columns == ("skewed",)).log_
    assert logged == {"auto": False, "skewed": True, "none": False}
    bad = run_cli("featurize", tables / "train.parquet", "--target", "y", "--log", "always", "-o", tables / "bad.mlsys")
    assert_clean_error(bad, 2)
    assert not (tables / "bad.mlsys").exists()
