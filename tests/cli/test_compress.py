"""mlsys compress: wiring, output files, exit codes and bad input."""

from __future__ import annotations

import json
import zipfile

import pytest

from tests.conftest import assert_clean_error, run_cli, run_proc


@pytest.fixture(scope="module")
def made(small_tables, tmp_path_factory) -> dict:
    """Small binary models trained through the CLI: xgboost, linear, and a baseline without an ONNX form."""
    root = tmp_path_factory.mktemp("compress_cli")
    t = small_tables["binary"]
    out = {"root": root, "data": t["test"], "valid": t["valid"], "train": t["train"]}
    for name, args in {"xgb": ["--model", "xgboost", "--param", "n_estimators=30", "--param", "max_depth=3"],
                       "linear": ["--model", "linear"],
                       "stratified": ["--model", "baseline", "--param", "strategy=stratified"]}.items():
        r = run_cli("train", t["train"], "--valid", t["valid"], "--target", "churned", *args, "-o", root / f"{name}.mlsys", "-q")
        assert r.code == 0, r.stderr
        out[name] = root / f"{name}.mlsys"
    return out


def test_compress_writes_the_kept_bundle_and_reports_every_candidate(made):
    out = made["root"] / "small.mlsys"
    r = run_cli("compress", made["xgb"], "--data", made["data"], "--technique", "pruning", "--max-metric-drop", "0.05",
                "--repeats", "20", "--batch-rows", "100", "-o", out, "--json")
    assert r.code == 0, r.stderr
    d = r.json
    assert {"model", "output", "metric", "original", "candidates", "kept", "verdict", "skipped", "rows"} <= set(d)
    assert d["metric"] == "auc" and d["candidates"] and all(c["technique"] == "pruning" for c in d["candidates"])
    for c in d["candidates"]:
        assert {"name", "auc", "drop", "onnx_bytes", "size_ratio", "single_row_ms", "speedup", "batch_ms", "qualifies", "kept"} <= set(c)
    if d["kept"]:
        assert out.is_file() and d["output"] == str(out)
        assert run_cli("info", out, "--json").json["recipe"]["compress"]["technique"] == "pruning"
    else:
        assert out.read_bytes() == made["xgb"].read_bytes()


def test_the_human_view_is_a_table_and_a_verdict(made, tmp_path):
    r = run_cli("compress", made["linear"], "--data", made["data"], "--technique", "pruning", "--repeats", "10",
                "-o", tmp_path / "x.mlsys")
    assert r.code == 0, r.stderr
    assert r.stdout.startswith("# candidates measured on 125 held-out rows (auc")
    assert "verdict: no candidate" in r.stdout and "original is kept" in r.stdout
    assert "warning: pruning: nothing to prune in a linear model" in r.stderr


def test_require_gain_exits_4_and_writes_nothing(made, tmp_path):
    out = tmp_path / "none.mlsys"
    r = run_cli("compress", made["linear"], "--data", made["data"], "--technique", "pruning", "--repeats", "10",
                "--require-gain", "-o", out)
    assert_clean_error(r, 4)
    assert "nothing written" in r.stderr and not out.exists()


@pytest.mark.parametrize("args, message", [
    ([], "--data is required"),
    (["--data", "DATA"], "-o/--output is required"),
    (["--data", "DATA", "-o", "x.txt"], "must end in .mlsys"),
    (["--data", "DATA", "-o", "x.mlsys", "--technique", "magic"], "unknown technique 'magic'"),
    (["--data", "DATA", "-o", "x.mlsys", "--prefer", "colour"], "invalid --prefer"),
    (["--data", "DATA", "-o", "x.mlsys", "--max-metric-drop", "lots"], "invalid --max-metric-drop"),
])
def test_usage_errors_exit_2(made, tmp_path, args, message):
    args = [str(made["data"]) if a == "DATA" else (str(tmp_path / a) if a.startswith("x.") else a) for a in args]
    r = run_cli("compress", made["xgb"], *args)
    assert_clean_error(r, 2)
    assert message in r.stderr


def test_data_of_one_class_is_refused_not_measured_as_undefined(made, tmp_path):
    """Every candidate's AUC was empty and the verdict "no candidate is within the budget", exit 0."""
    import pandas as pd

    bad = tmp_path / "one.parquet"
    pd.read_parquet(made["data"]).assign(churned=False).to_parquet(bad, index=False)
    r = run_cli("compress", made["xgb"], "--data", bad, "--technique", "pruning", "-o", tmp_path / "x.mlsys")
    assert_clean_error(r, 3)
    assert "the target 'churned' holds one class only (False)" in r.stderr and not (tmp_path / "x.mlsys").exists()


def test_distillation_of_a_model_trained_without_a_column_of_the_data(made, tmp_path):
    """Students were fitted on every --data column, then fed rows of the teacher's inputs only: a
    column the teacher was trained without (--drop) made distillation exit 3 on valid input."""
    t = made["train"]
    r = run_cli("train", t, "--valid", made["valid"], "--target", "churned", "--model", "linear", "--drop", "region",
                "-o", tmp_path / "dropped.mlsys", "-q")
    assert r.code == 0, r.stderr
    r = run_cli("compress", tmp_path / "dropped.mlsys", "--data", made["data"], "--technique", "distillation",
                "--max-metric-drop", "1", "-o", tmp_path / "small.mlsys", "--json")
    assert r.code == 0, r.stderr
    assert any(c["technique"] == "distillation" for c in r.json["candidates"])


def test_a_model_piece_without_an_onnx_form_is_named(made, tmp_path):
    r = run_cli("compress", made["stratified"], "--data", made["data"], "-o", tmp_path / "x.mlsys")
    assert_clean_error(r, 3)
    assert "'stratified' has no ONNX form" in r.stderr and not (tmp_path / "x.mlsys").exists()


def test_a_tampered_bundle_is_refused(made, tmp_path):
    bad = tmp_path / "tampered.mlsys"
    with zipfile.ZipFile(made["xgb"]) as src, zipfile.ZipFile(bad, "w") as dst:
        for item in src.infolist():
            data = src.read(item)
            if item.filename.endswith(".ubj"):
                data = data[:-8] + b"\x00" * 8
            dst.writestr(item, data)
    r = run_cli("compress", bad, "--data", made["data"], "-o", tmp_path / "x.mlsys")
    assert_clean_error(r, 3)


def test_an_onnx_file_not_written_by_mlsys_is_refused(made, tmp_path):
    import onnx
    from onnx import helper

    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [None, 1])],
                              [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [None, 1])])
    path = tmp_path / "foreign.onnx"
    path.write_bytes(helper.make_model(graph).SerializeToString())
    r = run_cli("compress", path, "--data", made["data"], "-o", tmp_path / "x.onnx")
    assert_clean_error(r, 3)
    assert "not written by mlsys" in r.stderr


def test_data_with_another_schema_is_refused(made, tmp_path):
    import pandas as pd

    bad = tmp_path / "other.parquet"
    pd.read_parquet(made["data"]).drop(columns=["tenure_months"]).to_parquet(bad, index=False)
    r = run_cli("compress", made["xgb"], "--data", bad, "-o", tmp_path / "x.mlsys")
    assert_clean_error(r, 3)
    assert "does not match the model's input schema" in r.stderr and "tenure_months" in r.stderr
    assert not (tmp_path / "x.mlsys").exists()


def test_labels_of_another_type_are_exit_3_not_an_internal_error(made, tmp_path):
    import pandas as pd

    df = pd.read_parquet(made["data"])
    bad = tmp_path / "text_labels.parquet"
    df.assign(churned=df["churned"].astype(str)).to_parquet(bad, index=False)  # the model's labels are booleans
    r = run_cli("compress", made["linear"], "--data", bad, "-o", tmp_path / "x.mlsys")
    assert_clean_error(r, 3)
    assert "the target holds labels the model does not know: False, True" in r.stderr
    assert "these labels are str with the same text" in r.stderr
    assert not (tmp_path / "x.mlsys").exists()


@pytest.mark.slow
def test_the_real_process_distills_and_writes_html(made, tmp_path):
    out, html, report = tmp_path / "small.mlsys", tmp_path / "c.html", tmp_path / "r.json"
    r = run_proc("compress", made["xgb"], "--data", made["data"], "--transfer", made["train"], "--technique", "distillation",
                 "--max-metric-drop", "0.05", "--repeats", "20", "--html", html, "--report", report, "-o", out)
    assert r.code == 0, r.stderr
    assert "Traceback" not in r.stderr
    d = json.loads(report.read_text())
    assert d["rows"]["transfer"] == 125 + 500 and d["rows"]["augmented"] == 2 * 625
    assert {c["technique"] for c in d["candidates"]} == {"distillation"}
    assert out.is_file() and html.read_text().count('data-kind="scatter"') == 2


@pytest.mark.nn
@pytest.mark.slow
def test_an_mlp_gets_quantized_and_factorized_graphs(made, small_tables, tmp_path):
    t = small_tables["binary"]
    mlp = tmp_path / "mlp.mlsys"
    r = run_cli("train", t["train"], "--valid", t["valid"], "--target", "churned", "--model", "mlp", "--param", "width=64",
                "--param", "max_epochs=5", "-o", mlp, "-q")
    assert r.code == 0, r.stderr
    out = tmp_path / "mlp.onnx"
    r = run_cli("compress", mlp, "--data", made["data"], "--technique", "quantization", "--technique", "low-rank",
                "--max-metric-drop", "1", "--repeats", "20", "-o", out, "--json")
    assert r.code == 0, r.stderr
    d = r.json
    details = {c["detail"] for c in d["candidates"]}
    assert {"int8 dynamic (neural layers)", "fp16 (neural layers)"} <= details
    assert any(x.startswith("truncated SVD") for x in details)
    assert all(c["format"] == "onnx" for c in d["candidates"])
    from mlsys_cli.deploy.onnx_model import OnnxModel

    assert OnnxModel(out).task == "binary"


def test_an_mlsys_onnx_file_gets_only_the_graph_techniques(made, tmp_path):
    onnx_path = tmp_path / "xgb.onnx"
    assert run_cli("export", made["xgb"], "-o", onnx_path, "-q").code == 0
    assert_clean_error(run_cli("compress", onnx_path, "--data", made["data"], "-o", tmp_path / "x.mlsys"), 2)
    out = tmp_path / "x.onnx"
    r = run_cli("compress", onnx_path, "--data", made["data"], "--repeats", "10", "-o", out, "--json")
    assert r.code == 0, r.stderr
    d = r.json
    assert d["candidates"] == [] and d["kept"] is None
    assert {s["technique"] for s in d["skipped"]} == {"pruning", "distillation", "quantization", "low-rank"}
    assert out.read_bytes() == onnx_path.read_bytes()


def test_values_the_model_reads_as_missing_or_unknown_are_counted_and_warned_about(made, tmp_path):
    """compress measured on such --data with exit 0 and not a word, while predict/evaluate warn."""
    import pandas as pd

    df = pd.read_parquet(made["data"])
    df["plan"] = df["plan"].astype("category").cat.codes.astype("int64") + 1
    df["monthly_charges"] = 1e308
    df.to_parquet(tmp_path / "odd.parquet", index=False)
    r = run_cli("compress", made["xgb"], "--data", tmp_path / "odd.parquet", "--technique", "pruning", "--max-metric-drop", "0.05",
                "--repeats", "10", "--batch-rows", "50", "-o", tmp_path / "small.mlsys", "--json")
    assert r.code == 0, r.stderr
    assert r.json["out_of_range"] == {"monthly_charges": len(df)}
    assert r.json["unseen_categories"]["plan"]["unseen"] == len(df)
    assert "warning: 'monthly_charges': 250 values are inf or beyond float32 range; treated as missing" in r.stderr, r.stderr
    assert "warning: column 'plan': every value (250 rows) is a category unseen in training" in r.stderr
