"""mlsys export: wiring, the report, exit codes, and the ONNX file used alone by info and predict."""

from __future__ import annotations

import pandas as pd
import pytest

from tests.conftest import assert_clean_error


@pytest.fixture(scope="module")
def model(small_tables, tmp_path_factory):
    from mlsys_cli.models.train import TrainSpec, train_model

    t = small_tables["binary"]
    bundle, _ = train_model(str(t["train"]), TrainSpec(family="xgboost", target=t["target"], params={"n_estimators": 10}),
                            valid=str(t["valid"]))
    path = tmp_path_factory.mktemp("cli_export") / "m.mlsys"
    bundle.save(path)
    return path


@pytest.fixture(scope="module")
def exported(model, small_tables, tmp_path_factory):
    from tests.conftest import run_cli

    out = tmp_path_factory.mktemp("cli_export_onnx") / "m.onnx"
    result = run_cli("export", model, "--data", small_tables["binary"]["valid"], "-o", out, "--json")
    assert result.code == 0, result.stderr
    return out, result.json


def test_export_report(exported, model):
    out, report = exported
    assert report["output"] == str(out) and report["model"] == str(model)
    assert report["rows_checked"] == 250 and report["labels_equal"] and report["max_abs_diff"] <= report["tolerance"] == 1e-5
    assert report["size_bytes"] == out.stat().st_size and report["load_seconds"] > 0
    assert report["outputs"] == ["label", "probabilities"] and "plan" in report["inputs"]
    assert report["opset"]["ai.onnx"] >= 17 and report["warnings"] == []


def test_info_reads_the_onnx_file_alone(cli, exported):
    out, report = exported
    result = cli("info", out, "--json")
    assert result.code == 0, result.stderr
    info = result.json
    assert info["kind"] == "onnx" and info["target"] == "churned" and info["task"] == "binary"
    assert info["onnx"]["sha256"] == report["sha256"]
    assert [o["name"] for o in info["onnx"]["outputs"]] == ["label", "probabilities"]
    human = cli("info", out)
    assert human.code == 0 and "onnx graph" in human.stdout


def test_predict_with_onnx_equals_bundle(cli, exported, model, small_tables, tmp_path):
    out, _ = exported
    test = small_tables["binary"]["test"]
    assert cli("predict", out, test, "-o", tmp_path / "onnx.parquet", "--keep", "customer_id").code == 0
    assert cli("predict", model, test, "-o", tmp_path / "bundle.parquet", "--keep", "customer_id").code == 0
    a, b = pd.read_parquet(tmp_path / "onnx.parquet"), pd.read_parquet(tmp_path / "bundle.parquet")
    assert list(a.columns) == list(b.columns) == ["customer_id", "label", "proba_False", "proba_True"]
    assert a["label"].tolist() == b["label"].tolist() and a["customer_id"].tolist() == b["customer_id"].tolist()
    assert (a[["proba_False", "proba_True"]] - b[["proba_False", "proba_True"]]).abs().max().max() <= 1e-5


def test_without_data_checks_synthesised_rows(cli, model, tmp_path):
    result = cli("export", model, "-o", tmp_path / "m.onnx", "--rows", "300")
    assert result.code == 0, result.stderr
    assert "synthesised" in result.stderr and "ONNX parity verified" in result.stdout and (tmp_path / "m.onnx").exists()


def test_zoned_times_export_from_synthesised_rows_and_onnx_refuses_naive_ones(cli, tmp_path):
    import numpy as np

    rng = np.random.default_rng(0)
    when = pd.Timestamp("2024-03-01", tz="Europe/Berlin") + pd.to_timedelta(rng.integers(0, 86400 * 30, 300), unit="s")
    df = pd.DataFrame({"x": rng.normal(size=300), "when": when})
    df["y"] = (df["x"] + (df["when"].dt.hour > 12) > 0.5).astype(int)
    df.to_parquet(tmp_path / "t.parquet", index=False)
    df.assign(when=df["when"].dt.tz_localize(None)).to_parquet(tmp_path / "naive.parquet", index=False)
    assert cli("train", tmp_path / "t.parquet", "--target", "y", "--model", "linear", "-o", tmp_path / "m.mlsys").code == 0
    result = cli("export", tmp_path / "m.mlsys", "-o", tmp_path / "m.onnx", "--rows", "200")
    assert result.code == 0, result.stderr
    for model in ("m.mlsys", "m.onnx"):
        result = cli("predict", tmp_path / model, tmp_path / "naive.parquet", "-o", tmp_path / "p.parquet")
        assert_clean_error(result, 3)
        assert "Europe/Berlin" in result.stderr and not (tmp_path / "p.parquet").exists()


def test_bad_input(cli, model, small_tables, tmp_path):
    out = tmp_path / "m.onnx"
    assert_clean_error(cli("export", tmp_path / "missing.mlsys", "-o", out), 3)
    assert_clean_error(cli("export", model, "-o", out, "--data", small_tables["regression"]["test"]), 3)
    assert_clean_error(cli("export", model, "-o", out, "--rows", "0"), 2)
    assert_clean_error(cli("export", model, "-o", out, "--threads", "0"), 2)
    tampered = tmp_path / "tampered.mlsys"
    data = bytearray(model.read_bytes())
    at = data.index(b"model/")  # a member name in the zip directory: flip a byte of member data before it
    data[at // 2] ^= 0xFF
    tampered.write_bytes(bytes(data))
    assert_clean_error(cli("export", tampered, "-o", out), 3)
    assert not out.exists()


def test_foreign_or_changed_onnx_is_refused(cli, exported, small_tables, tmp_path):
    import onnx
    from onnx import TensorProto, helper

    out, _ = exported
    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 1])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 1])])
    foreign = tmp_path / "foreign.onnx"
    onnx.save(helper.make_model(graph), foreign)
    for args in (("info", foreign), ("predict", foreign, small_tables["binary"]["test"], "-o", tmp_path / "p.parquet")):
        result = cli(*args)
        assert_clean_error(result, 3)
        assert "not written by mlsys" in result.stderr
    changed = onnx.load(out)
    changed.graph.node[-1].name = "renamed"
    onnx.save(changed, tmp_path / "changed.onnx")
    assert_clean_error(cli("info", tmp_path / "changed.onnx"), 3)
    assert not (tmp_path / "p.parquet").exists()


@pytest.mark.slow
def test_real_process(proc, exported, small_tables, tmp_path):
    out, _ = exported
    result = proc("predict", out, small_tables["binary"]["test"], "-o", tmp_path / "p.parquet", "--json")
    assert result.code == 0, result.stderr
    assert result.json["rows"] == 250
