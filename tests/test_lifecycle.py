"""The offline loop as real processes, once per task the recipes do not cover.

The churn recipe (tests/test_recipes.py) carries the binary task; here the multiclass
``segments`` and the regression ``ltv`` sample tables go split -> train -> (ensemble) ->
predict -> evaluate with a gate -> export -> predict on the ONNX file, each step a separate
``mlsys`` process reading the files the previous one wrote, and the ONNX predictions must
equal the bundle's. ``info`` then describes every artifact the loop produced.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from tests.conftest import SAMPLE, assert_clean_error, run_proc

# One xdist worker runs the module: its fixtures train a whole lifecycle per task, once.
pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("lifecycle")]

# Loose floors: they prove the gate is evaluated on a sensible model, not a tuned score.
CASES = {
    "multiclass": {"table": "segments.parquet", "target": "segment", "id": "shopper_id",
                   "by": "stratified:segment", "members": ["xgboost"],
                   "require": ["accuracy>=0.5", "f1_macro>=0.3"], "impossible": "accuracy>=0.999"},
    "regression": {"table": "ltv.parquet", "target": "ltv", "id": "customer_id", "by": "random",
                   "members": ["xgboost", "linear"], "require": ["r2>=0.3"], "impossible": "r2>=0.999"},
}


def ok(*args, **kwargs):
    """Run mlsys as a process and insist on success (the output is in the assertion message)."""
    result = run_proc(*args, **kwargs)
    assert result.code == 0, (args, result.code, result.stdout[-2000:], result.stderr[-3000:])
    return result


@pytest.fixture(scope="module", params=sorted(CASES))
def loop(request, tmp_path_factory):
    """Run the loop for one task once; the tests below inspect what it left behind."""
    task, case = request.param, CASES[request.param]
    root = tmp_path_factory.mktemp(f"lifecycle_{task}")
    target = case["target"]
    data = root / "data"
    ok("split", SAMPLE / case["table"], "--by", case["by"], "--ratios", "0.6,0.2,0.2", "--target", target,
       "--strict", "--seed", "3", "-o", data, "--report", data / "split.json")
    models = []
    for family in case["members"]:
        path = root / f"{family}.mlsys"
        params = ["--param", "n_estimators=60"] if family == "xgboost" else []
        ok("train", data / "train.parquet", "--valid", data / "valid.parquet", "--target", target,
           "--model", family, "--drop", case["id"], *params, "--seed", "3", "-o", path,
           "--report", root / f"{family}.json")
        models.append(path)
    model = models[0]
    if len(models) > 1:
        model = root / "ensemble.mlsys"
        ok("ensemble", *models, "--data", data / "valid.parquet", "--method", "weighted", "--seed", "3",
           "-o", model, "--report", root / "ensemble.json")
    ok("predict", model, data / "test.parquet", "--keep", case["id"], "-o", root / "bundle_pred.parquet",
       "--report", root / "predict_bundle.json")
    gates = [arg for r in case["require"] for arg in ("--require", r)]
    evaluation = ok("evaluate", model, data / "test.parquet", "--target", target, *gates, "--seed", "3",
                    "--html", root / "evaluate.html", "--json")
    ok("export", model, "-o", root / "model.onnx", "--report", root / "export.json")
    ok("predict", root / "model.onnx", data / "test.parquet", "--keep", case["id"],
       "-o", root / "onnx_pred.parquet", "--report", root / "predict_onnx.json")
    return {"task": task, "case": case, "root": root, "data": data, "model": model, "members": models,
            "evaluation": evaluation.json}


def test_gate_passes_and_reports(loop):
    report = loop["evaluation"]
    assert report["task"] == loop["task"] and report["passed"] is True
    assert [g["requirement"] for g in report["gates"]] == loop["case"]["require"]
    assert all(g["passed"] for g in report["gates"])
    assert (loop["root"] / "evaluate.html").read_text().lstrip().lower().startswith("<!doctype html")


def test_gate_that_cannot_pass_exits_4(loop):
    result = run_proc("evaluate", loop["model"], loop["data"] / "test.parquet", "--target", loop["case"]["target"],
                      "--require", loop["case"]["impossible"], "--seed", "3")
    assert_clean_error(result, 4)


def test_onnx_predictions_equal_the_bundle(loop):
    test = pd.read_parquet(loop["data"] / "test.parquet")
    bundle = pd.read_parquet(loop["root"] / "bundle_pred.parquet")
    onnx = pd.read_parquet(loop["root"] / "onnx_pred.parquet")
    assert len(bundle) == len(onnx) == len(test) > 0
    assert list(bundle.columns) == list(onnx.columns)
    key = loop["case"]["id"]
    assert bundle[key].tolist() == onnx[key].tolist() == test[key].tolist()
    if loop["task"] == "regression":
        assert list(bundle.columns) == [key, "prediction"]
        np.testing.assert_allclose(onnx["prediction"], bundle["prediction"], rtol=1e-5)
    else:
        classes = sorted(test[loop["case"]["target"]].unique())
        assert list(bundle.columns) == [key, "label", *[f"proba_{c}" for c in classes]]
        assert onnx["label"].tolist() == bundle["label"].tolist()
        proba = [c for c in bundle.columns if c.startswith("proba_")]
        np.testing.assert_allclose(onnx[proba].to_numpy(), bundle[proba].to_numpy(), atol=1e-5)
        np.testing.assert_allclose(onnx[proba].sum(axis=1), 1.0, atol=1e-5)


def test_onnx_file_loads_in_onnxruntime(loop):
    import onnxruntime as ort

    session = ort.InferenceSession(str(loop["root"] / "model.onnx"), providers=["CPUExecutionProvider"])
    outputs = {o.name for o in session.get_outputs()}
    assert outputs >= ({"prediction"} if loop["task"] == "regression" else {"label", "probabilities"})
    names = {i.name for i in session.get_inputs()}
    assert loop["case"]["target"] not in names and names


def test_info_describes_every_artifact(loop):
    root, data = loop["root"], loop["data"]
    tables = [data / "train.parquet", data / "valid.parquet", data / "test.parquet",
              root / "bundle_pred.parquet", root / "onnx_pred.parquet"]
    models = [*dict.fromkeys([*loop["members"], loop["model"]]), root / "model.onnx"]
    described = {path: ok("info", path, "--json").json for path in [*tables, *models]}
    for path in models:
        manifest = described[path]
        assert manifest["task"] == loop["task"] and manifest["target"] == loop["case"]["target"], path
    for path in tables:
        assert described[path]["rows"] == len(pd.read_parquet(path)), path
    # Predictions carry lineage back through predict to the split that made the test table.
    commands = [step["command"] for step in described[root / "onnx_pred.parquet"]["lineage"]]
    assert commands[0] == "predict" and "split" in commands, commands
