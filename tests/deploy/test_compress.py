"""deploy.compress: candidates of each technique, the keep decision, and whole runs on small models."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from mlsys_cli.deploy import compress as cz
from mlsys_cli.errors import InputError, UsageError
from mlsys_cli.models.bundle import ModelBundle


def _train(tables: dict, model: str, params: dict, path) -> ModelBundle:
    from mlsys_cli.models.train import TrainSpec, train_model

    bundle, _ = train_model(tables["train"], TrainSpec(family=model, target=tables["target"], params=params), valid=tables["valid"])
    bundle.save(path)
    return ModelBundle.load(path)


@pytest.fixture(scope="module")
def models(small_tables, tmp_path_factory) -> dict:
    """Small binary models (xgboost, forest, linear) and their averaging ensemble, saved."""
    from mlsys_cli.models.ensemble import EnsembleSpec, build_ensemble

    root = tmp_path_factory.mktemp("compress_models")
    t = small_tables["binary"]
    out = {"tables": t, "root": root}
    out["xgboost"] = _train(t, "xgboost", {"n_estimators": 40, "max_depth": 3, "early_stopping_rounds": 40}, root / "xgb.mlsys")
    out["forest"] = _train(t, "forest", {"n_estimators": 40, "max_depth": 6}, root / "forest.mlsys")
    out["linear"] = _train(t, "linear", {}, root / "linear.mlsys")
    ens, _ = build_ensemble([(str(root / n), out[k]) for n, k in (("xgb.mlsys", "xgboost"), ("forest.mlsys", "forest"),
                                                                   ("linear.mlsys", "linear"))],
                            [str(t["valid"])], EnsembleSpec(method="average", folds=3))
    ens.save(root / "ens.mlsys")
    out["ens"] = ModelBundle.load(root / "ens.mlsys")
    return out


def _frame(models: dict) -> pd.DataFrame:
    return pd.read_parquet(models["tables"]["test"])


# --------------------------------------------------------------------------- pruning


def test_truncated_boosting_equals_the_first_rounds(models):
    pred = models["xgboost"].predictor
    total = pred.estimator.estimator.get_booster().num_boosted_rounds()
    pruned = dict(cz.prune_single(pred))
    assert pruned and all("boosting rounds" in d for d in pruned)
    detail, small = next(iter(pruned.items()))
    k = int(detail.split()[1])
    assert k < total and small.estimator.estimator.get_booster().num_boosted_rounds() == k
    X = pred.featurizer.transform(_frame(models))
    expected = pred.estimator.estimator.predict_proba(X, iteration_range=(0, k))
    np.testing.assert_allclose(small.scores_from_features(X), expected, rtol=0, atol=1e-7)


def test_dropped_trees_average_the_first_trees(models):
    pred = models["forest"].predictor
    for detail, small in cz.prune_single(pred):
        k = int(detail.split()[0])
        X = pred.featurizer.transform(_frame(models))
        first = np.mean([t.predict_proba(X.astype(np.float32)) for t in pred.estimator.estimator.estimators_[:k]], axis=0)
        np.testing.assert_allclose(small.scores_from_features(X), first, atol=1e-9)
        assert small.spec["params"]["n_estimators"] == k
    # the original is untouched
    assert len(pred.estimator.estimator.estimators_) == 40


def test_an_ensemble_prunes_members_and_drops_them(models):
    details = [d for d, _ in cz.prune(models["ens"].predictor)]
    assert "member 3 of 3 (linear) alone" in details
    assert any(d.startswith("member 1 of 3 (xgboost) alone, first") for d in details)
    assert any(d.startswith("every member pruned to") for d in details)
    assert list(cz.prune_single(models["linear"].predictor)) == []


@pytest.mark.nn
@pytest.mark.slow
def test_mlp_magnitude_pruning_shrinks_the_layers_and_round_trips(models, tmp_path):
    mlp = _train(models["tables"], "mlp", {"width": 32, "max_epochs": 5}, tmp_path / "mlp.mlsys")
    pruned = dict(cz.prune_single(mlp.predictor))
    detail, small = next(iter(pruned.items()))
    assert small.estimator.width == int(detail.split()[0]) < 32
    assert [m.weight.shape[0] for m in small.estimator.net_ if hasattr(m, "weight")][:-1] == [small.estimator.width] * 2
    path = tmp_path / "small.mlsys"
    ModelBundle(dict(mlp.manifest), small).save(path)
    df = _frame(models)
    np.testing.assert_allclose(ModelBundle.load(path).predictor.predict_scores(df), small.predict_scores(df), atol=1e-6)


# --------------------------------------------------------------------------- distillation and graph transforms


def test_a_student_learns_the_teachers_soft_predictions(models):
    teacher = models["xgboost"].predictor
    df = _frame(models)
    rows = pd.concat([df, cz.augment(df, 500, [c["name"] for c in teacher.input_schema], seed=0)], ignore_index=True)
    (detail, student), = cz.distill(teacher, "binary", 2, rows, df, "churned", seed=0,
                                     students=[("xgboost", {"n_estimators": 40, "max_depth": 2, "learning_rate": 0.3})])
    assert detail == "xgboost student, 40 trees of depth 2"
    assert student.featurizer is teacher.featurizer  # the same preset: the teacher's fitted featurizer is reused
    t, s = teacher.predict_scores(df)[:, 1], student.predict_scores(df)[:, 1]
    assert np.corrcoef(t, s)[0, 1] > 0.9 and np.abs(t - s).mean() < 0.1


def test_soft_targets_give_one_weighted_copy_per_class():
    P = np.array([[0.25, 0.75], [1.0, 0.0]])
    rows, labels, weights = cz.soft_targets("binary", P)
    assert rows.tolist() == [0, 0, 1, 1] and labels.tolist() == [0, 1, 0, 1] and weights.tolist() == [0.25, 0.75, 1.0, 0.0]
    np.testing.assert_allclose(np.bincount(rows, weights), [1.0, 1.0])
    rows, values, weights = cz.soft_targets("regression", np.array([1.5, 2.5]))
    assert values.tolist() == [1.5, 2.5] and weights is None


def test_augmented_rows_draw_every_value_from_its_column(models):
    df = _frame(models)
    cols = ["plan", "age", "snapshot_date"]
    a = cz.augment(df, 300, cols, seed=1)
    assert len(a) == 300 and list(a.columns) == list(df.columns)
    for c in cols:
        assert a[c].dtype == df[c].dtype
        assert set(a[c].dropna().astype(str)) <= set(df[c].dropna().astype(str))
    pd.testing.assert_frame_equal(a, cz.augment(df, 300, cols, seed=1))


def _gemm_model(W: np.ndarray, b: np.ndarray):
    import onnx
    from onnx import helper, numpy_helper

    node = helper.make_node("Gemm", ["x", "W", "b"], ["y"], transB=1)
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [None, W.shape[1]])],
                              [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [None, W.shape[0]])],
                              [numpy_helper.from_array(W, "W"), numpy_helper.from_array(b, "b")])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_low_rank_replaces_a_dense_layer_by_its_truncated_svd():
    import onnxruntime as ort

    rng = np.random.default_rng(0)
    W = rng.normal(size=(48, 64)).astype(np.float32)  # torch layout [out, in], exported with transB=1
    b = rng.normal(size=48).astype(np.float32)
    factored = cz.low_rank(_gemm_model(W, b), 0.25)
    assert [n.op_type for n in factored.graph.node] == ["MatMul", "MatMul", "Add"]
    assert sum(int(np.prod(i.dims)) for i in factored.graph.initializer) == 12 * (64 + 48) + 48
    x = rng.normal(size=(5, 64)).astype(np.float32)
    y = ort.InferenceSession(factored.SerializeToString()).run(None, {"x": x})[0]
    U, S, Vt = np.linalg.svd(W.T.astype(np.float64), full_matrices=False)
    expected = x @ (U[:, :12] * S[:12]) @ Vt[:12] + b
    np.testing.assert_allclose(y, expected, rtol=1e-4, atol=1e-4)
    # a layer too small to gain from factorization is left alone
    assert cz.low_rank(_gemm_model(W[:4, :4], b[:4]), 0.5) is None


# --------------------------------------------------------------------------- the decision


def _decided(candidates: list[dict], output_format: str = "mlsys", prefer: str = "size") -> cz.Compressor:
    comp = cz.Compressor(0.01, prefer=prefer)
    comp.metric_, comp.higher_ = "auc", True
    comp.original_ = {"auc": 0.80, "onnx_bytes": 1000, "single_row_ms": 1.0}
    comp.candidates_ = [{"name": n, "auc": m, "onnx_bytes": s, "single_row_ms": t, "format": f} for n, m, s, t, f in candidates]
    comp._plan = [cz.Candidate(c["name"], "pruning", "") for c in comp.candidates_]
    return comp.decide(output_format)


def test_decide_keeps_the_smallest_candidate_within_the_budget_that_is_not_slower():
    comp = _decided([("worse but tiny", 0.70, 10, 0.1, "mlsys"), ("larger", 0.80, 2000, 0.5, "mlsys"),
                     ("slower", 0.80, 100, 2.0, "mlsys"), ("onnx only", 0.80, 50, 0.2, "onnx"),
                     ("ok big", 0.795, 500, 0.3, "mlsys"), ("ok small", 0.792, 300, 0.9, "mlsys")])
    rows = {r["name"]: r for r in comp.candidates_}
    assert rows["worse but tiny"]["why_not"] == "metric drop too large"
    assert "larger" in rows["larger"]["why_not"] and "slower" in rows["slower"]["why_not"]
    assert "ONNX only" in rows["onnx only"]["why_not"]
    assert comp.kept_.name == "ok small" and rows["ok small"]["kept"] and rows["ok small"]["size_ratio"] == pytest.approx(1000 / 300, rel=1e-3)
    assert _decided(comp_rows := [("onnx only", 0.80, 50, 0.2, "onnx"), ("ok small", 0.792, 300, 0.9, "mlsys")],
                    "onnx").kept_.name == "onnx only"
    assert _decided(comp_rows, "onnx", prefer="latency").kept_.name == "onnx only"
    assert _decided([("ok big", 0.795, 500, 0.3, "mlsys"), ("ok small", 0.792, 300, 0.9, "mlsys")],
                    prefer="latency").kept_.name == "ok big"


def test_decide_keeps_nothing_when_no_candidate_qualifies():
    comp = _decided([("same", 0.80, 1000, 1.0, "mlsys"), ("worse", 0.70, 10, 0.1, "mlsys")])
    assert comp.kept_ is None and not any(r["kept"] for r in comp.candidates_)
    assert "no gain" in comp.candidates_[0]["why_not"]


def test_max_metric_drop_parses_absolute_and_relative():
    assert cz.parse_drop("0.005") == (0.005, False)
    assert cz.parse_drop("1%") == (0.01, True)
    for bad in ("-1", "abc", "x%"):
        with pytest.raises(UsageError):
            cz.parse_drop(bad)


# --------------------------------------------------------------------------- whole runs


@pytest.fixture(scope="module")
def ensemble_run(models):
    out = models["root"] / "small.mlsys"
    html = models["root"] / "compress.html"
    result = cz.compress(models["root"] / "ens.mlsys", str(models["tables"]["test"]), output=out,
                         techniques=["pruning"], max_metric_drop=0.05, repeats=20, batch_rows=100, html=html)
    return result, out, html


def _table(d: dict) -> str:
    rows = [d["original"], *d["candidates"]]
    return "\n".join(f"{r.get('name', 'original')}: {r['auc']} {r['onnx_bytes']} {r['single_row_ms']} {r.get('why_not')}" for r in rows)


def test_compressing_an_ensemble_writes_a_smaller_bundle_within_the_budget(ensemble_run):
    result, out, _ = ensemble_run
    d = result.to_dict()
    assert d["kept"] is not None and d["output_format"] == "mlsys", _table(d)
    kept = next(r for r in d["candidates"] if r["kept"])
    assert kept["drop"] <= d["max_metric_drop"] and kept["onnx_bytes"] < d["original"]["onnx_bytes"]
    assert {r["technique"] for r in d["candidates"]} == {"pruning"}
    assert d["rows"] == {"data": 250, "measure": 125, "transfer": 125, "augmented": 0}
    bundle = ModelBundle.load(out)
    assert out.stat().st_size < (out.parent / "ens.mlsys").stat().st_size
    assert bundle.manifest["recipe"]["compress"]["technique"] == kept["technique"]
    # the written bundle is the measured candidate: the same graph (its manifest gains the file's member hashes)
    assert len(cz.export_graph(bundle).SerializeToString(deterministic=True)) == pytest.approx(kept["onnx_bytes"], rel=0.05)
    skipped = {s["technique"]: s["reason"] for s in d["skipped"]}
    assert skipped == {} or "tree ensembles" in " ".join(skipped.values())


def test_tree_models_have_no_quantization_candidate_and_say_why(models, tmp_path):
    result = cz.compress(models["root"] / "xgb.mlsys", str(models["tables"]["test"]), output=tmp_path / "x.onnx",
                         techniques=["quantization", "low-rank"], repeats=10, batch_rows=50)
    assert result.candidates == [] and result.kept is None
    reasons = {s["technique"]: s["reason"] for s in result.skipped}
    assert set(reasons) == {"quantization", "low-rank"} and "does not cover tree ensembles" in reasons["quantization"]
    # nothing qualified: the ONNX output is the original's plain export
    from mlsys_cli.deploy.onnx_model import OnnxModel

    assert OnnxModel(tmp_path / "x.onnx").size_bytes == result.original["onnx_bytes"]


def test_the_measurements_are_deterministic_for_a_seed(models, tmp_path):
    runs = [cz.compress(models["root"] / "xgb.mlsys", str(models["tables"]["test"]), output=tmp_path / f"{i}.mlsys",
                        techniques=["pruning"], repeats=10, batch_rows=50, seed=3) for i in range(2)]
    keys = [[(r["name"], r["auc"], r["onnx_bytes"]) for r in run.candidates] for run in runs]
    assert keys[0] == keys[1] and keys[0]


def test_nothing_qualifies_keeps_the_original_or_writes_nothing(models, tmp_path):
    src = models["root"] / "linear.mlsys"
    result = cz.compress(src, str(models["tables"]["test"]), output=tmp_path / "copy.mlsys", techniques=["pruning"], repeats=10)
    assert result.kept is None and "unchanged copy" in result.verdict
    assert (tmp_path / "copy.mlsys").read_bytes() == src.read_bytes()
    result = cz.compress(src, str(models["tables"]["test"]), output=tmp_path / "none.mlsys", techniques=["pruning"],
                         repeats=10, require_gain=True)
    assert result.output is None and not (tmp_path / "none.mlsys").exists() and "nothing written" in result.verdict


def test_data_that_does_not_match_the_model_is_refused(models):
    df = _frame(models)
    cz.check_data(df, models["ens"], "test")
    with pytest.raises(InputError, match="missing column.*plan"):
        cz.check_data(df.drop(columns=["plan"]), models["ens"], "test")
    with pytest.raises(InputError, match="no target column"):
        cz.check_data(df.drop(columns=["churned"]), models["ens"], "test")
    with pytest.raises(InputError, match="does not match"):
        cz.check_data(df.assign(age="old"), models["ens"], "test")


def test_the_html_page_has_the_table_and_both_scatter_plots(ensemble_run):
    result, _, html = ensemble_run
    page = html.read_text()
    assert page.count('data-kind="scatter"') == 2
    assert "ONNX bytes" in page and result.verdict.split(":")[0] in page
