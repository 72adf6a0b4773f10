"""Export: every family, transform, calibration and ensemble gives one graph with the bundle's outputs."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from mlsys_cli.deploy.export import SAMPLE_ROWS, TOLERANCE, check_parity, export_model, synthesize_rows, to_onnx
from mlsys_cli.deploy.onnx_model import HASH_KEY, MANIFEST_KEY, OnnxModel, model_digest
from mlsys_cli.deploy.predict import load_model
from mlsys_cli.errors import InputError, UsageError
from mlsys_cli.models.ensemble import EnsembleSpec, ensemble
from mlsys_cli.models.train import TrainSpec, train_model

PARAMS = {"baseline": {}, "linear": {}, "forest": {"n_estimators": 15}, "xgboost": {"n_estimators": 15},
          "hgb": {"max_iter": 15}, "mlp": {"max_epochs": 3}}


@pytest.fixture(scope="module")
def bundles(small_tables, tmp_path_factory):
    """Bundles trained once for the module, keyed (task, family, calibrate)."""
    root = tmp_path_factory.mktemp("export")
    cache = {}

    def get(task: str, family: str, calibrate: str | None = None, features: dict | None = None):
        key = (task, family, calibrate, json.dumps(features, sort_keys=True))
        if key not in cache:
            t = small_tables[task]
            spec = TrainSpec(family=family, target=t["target"], features=features, params=PARAMS[family], calibrate=calibrate)
            bundle, _ = train_model(str(t["train"]), spec, valid=str(t["valid"]))
            path = root / f"{len(cache)}.mlsys"
            bundle.save(path)
            cache[key] = path
        return cache[key]

    return get


def _parity(path, rows):
    bundle = load_model(path)
    return check_parity(bundle, OnnxModel.from_proto(to_onnx(bundle)), rows)


@pytest.mark.parametrize("family", ["baseline", "linear", "forest", "xgboost", "hgb", "mlp"])
def test_every_family_binary(bundles, small_tables, family):
    test = pd.read_parquet(small_tables["binary"]["test"])
    parity = _parity(bundles("binary", family), test)
    assert parity["ok"] and parity["labels_equal"] and parity["rows"] == 250
    assert parity["max_abs_diff"] <= TOLERANCE


@pytest.mark.parametrize("task,family", [
    ("multiclass", "forest"), ("regression", "linear"), ("multiclass", "hgb"), ("regression", "hgb"),
    pytest.param("multiclass", "linear", marks=pytest.mark.slow), pytest.param("multiclass", "xgboost", marks=pytest.mark.slow),
    pytest.param("regression", "xgboost", marks=pytest.mark.slow), pytest.param("regression", "forest", marks=pytest.mark.slow)])
def test_multiclass_and_regression(bundles, small_tables, task, family):
    test = pd.read_parquet(small_tables[task]["test"])
    parity = _parity(bundles(task, family), test)
    assert parity["ok"], parity
    if task == "regression":
        assert parity["max_rel_diff"] <= TOLERANCE


@pytest.mark.slow
@pytest.mark.parametrize("task", ["multiclass", "regression"])
def test_mlp_multiclass_and_regression(bundles, small_tables, task):
    parity = _parity(bundles(task, "mlp"), pd.read_parquet(small_tables[task]["test"]))
    assert parity["ok"], parity


@pytest.mark.parametrize("task,family,method", [
    ("binary", "forest", "isotonic"), pytest.param("binary", "linear", "sigmoid", marks=pytest.mark.slow),
    pytest.param("multiclass", "forest", "isotonic", marks=pytest.mark.slow)])
def test_calibrated_models(bundles, small_tables, task, family, method):
    parity = _parity(bundles(task, family, calibrate=method), pd.read_parquet(small_tables[task]["test"]))
    assert parity["ok"], parity


def test_isotonic_on_boosting_is_checked_piece_by_piece(bundles, small_tables):
    """XGBoost + isotonic: the README's model. Its end-to-end difference is the engines' float32
    ulps times the isotonic slope; each piece is within its own limit, so the export goes through."""
    path = bundles("binary", "xgboost", calibrate="isotonic")
    parity = _parity(path, pd.read_parquet(small_tables["binary"]["valid"]))
    assert parity["ok"] and parity["labels_equal"], parity
    assert parity["uncalibrated_max_abs_diff"] <= TOLERANCE
    assert parity["calibrator_max_abs_diff"] <= 1e-6


def test_an_ensemble_with_a_calibrated_member_is_checked_piece_by_piece(bundles, small_tables, tmp_path):
    t = small_tables["binary"]
    members = [str(bundles("binary", "xgboost", calibrate="isotonic")), str(bundles("binary", "linear"))]
    ensemble(members, str(t["valid"]), EnsembleSpec(method="average"), output=str(tmp_path / "ens.mlsys"))
    parity = _parity(tmp_path / "ens.mlsys", pd.read_parquet(t["test"]))
    assert parity["ok"] and parity["uncalibrated_max_abs_diff"] <= TOLERANCE, parity


def _restamped(proto, edit):
    """The exported graph with its manifest edited, keeping (or recomputing) the stored hash."""
    import onnx

    from mlsys_cli.deploy.onnx_model import stamp

    copy = onnx.ModelProto()
    copy.CopyFrom(proto)
    props = {p.key: p.value for p in copy.metadata_props}
    manifest = json.loads(props[MANIFEST_KEY])
    edit(manifest)
    return copy, manifest, props, stamp


@pytest.mark.parametrize("edit", ["swap_classes", "threshold"])
def test_edited_onnx_metadata_is_refused(bundles, edit):
    """The manifest changes what a prediction means (classes, threshold): it is under the hash."""
    from onnx import helper

    proto = to_onnx(load_model(bundles("binary", "linear")))
    changes = {"swap_classes": lambda m: m.update(classes=m["classes"][::-1]), "threshold": lambda m: m.update(threshold=0.01)}
    copy, manifest, props, _ = _restamped(proto, changes[edit])
    del copy.metadata_props[:]
    helper.set_model_props(copy, {MANIFEST_KEY: json.dumps(manifest, sort_keys=True), HASH_KEY: props[HASH_KEY]})
    with pytest.raises(InputError, match="sha256"):
        OnnxModel.from_proto(copy)


@pytest.mark.parametrize("key", ["task", "classes", "input_schema"])
def test_onnx_metadata_without_what_predictions_need_is_refused(bundles, key):
    proto = to_onnx(load_model(bundles("binary", "linear")))
    copy, manifest, _, stamp = _restamped(proto, lambda m: m.pop(key))
    stamp(copy, manifest)  # a consistent hash: the content itself is refused
    with pytest.raises(InputError, match=key.replace("_", " ") if key != "classes" else "class list"):
        OnnxModel.from_proto(copy)


def test_featurize_transforms_and_unseen_categories(bundles, small_tables):
    """Binning, target encoding of a high-cardinality column, crosses, and categories never seen."""
    features = {"preset": "linear", "bins": 5, "high_cardinality": "target", "cross": ["plan,region"]}
    path = bundles("binary", "linear", features=features)
    test = pd.read_parquet(small_tables["binary"]["test"])
    test.loc[::3, "plan"] = "platinum"
    test.loc[::2, "city"] = "Atlantis"
    test.loc[::5, "age"] = np.nan
    test.loc[::7, "signup_date"] = pd.NaT
    parity = _parity(path, test)
    assert parity["ok"], parity


@pytest.mark.parametrize("method", ["average", "stack", pytest.param("weighted", marks=pytest.mark.slow),
                                    pytest.param("select", marks=pytest.mark.slow)])
def test_ensembles_compose_into_one_graph(bundles, small_tables, tmp_path, method):
    t = small_tables["binary"]
    members = [bundles("binary", f) for f in ("linear", "forest", "xgboost")]
    ensemble(members, str(t["valid"]), EnsembleSpec(method=method), output=str(tmp_path / "ens.mlsys"))
    bundle = load_model(tmp_path / "ens.mlsys")
    proto = to_onnx(bundle)
    assert [o.name for o in proto.graph.output] == ["label", "probabilities"]
    parity = check_parity(bundle, OnnxModel.from_proto(proto), pd.read_parquet(t["test"]))
    assert parity["ok"], parity


@pytest.mark.slow
@pytest.mark.parametrize("task", ["multiclass", "regression"])
def test_stacked_ensembles_other_tasks(bundles, small_tables, tmp_path, task):
    t = small_tables[task]
    members = [bundles(task, f) for f in ("linear", "forest")]
    ensemble(members, str(t["valid"]), EnsembleSpec(method="stack"), output=str(tmp_path / "ens.mlsys"))
    parity = _parity(tmp_path / "ens.mlsys", pd.read_parquet(t["test"]))
    assert parity["ok"], parity


def test_graph_inputs_are_raw_columns_and_manifest_is_stamped(bundles):
    bundle = load_model(bundles("binary", "xgboost"))
    proto = to_onnx(bundle)
    types = {i.name: i.type.tensor_type.elem_type for i in proto.graph.input}
    schema = {c["name"]: c["type"] for c in bundle.input_schema}
    assert set(types) == set(schema)
    expected = {"float": 1, "bool": 1, "string": 8, "datetime": 7}  # FLOAT, STRING, INT64
    assert all(types[name] == expected[kind] for name, kind in schema.items())
    props = {p.key: p.value for p in proto.metadata_props}
    assert json.loads(props[MANIFEST_KEY])["target"] == "churned"
    assert props[HASH_KEY] == model_digest(proto, props[MANIFEST_KEY])
    assert to_onnx(bundle).SerializeToString() == proto.SerializeToString()  # deterministic


def test_binary_threshold_is_the_bundles(bundles, small_tables):
    bundle = load_model(bundles("binary", "linear"))
    bundle.manifest["threshold"] = 0.2
    test = pd.read_parquet(small_tables["binary"]["test"])
    onnx_model = OnnxModel.from_proto(to_onnx(bundle))
    parity = check_parity(bundle, onnx_model, test)
    assert parity["ok"]
    labels = onnx_model.predict(test)["label"]
    assert labels.dtype == bool and labels.sum() > bundle.predict(test)["probabilities"][:, 1].__ge__(0.5).sum()


def test_a_disagreeing_graph_is_detected(bundles, small_tables):
    linear, forest = load_model(bundles("binary", "linear")), load_model(bundles("binary", "forest"))
    parity = check_parity(forest, OnnxModel.from_proto(to_onnx(linear)), pd.read_parquet(small_tables["binary"]["test"]))
    assert not parity["ok"] and parity["max_abs_diff"] > TOLERANCE


def test_synthesized_rows_are_seeded_and_include_unseen(bundles):
    manifest = load_model(bundles("binary", "xgboost")).manifest
    a, b = synthesize_rows(manifest, 300, seed=1), synthesize_rows(manifest, 300, seed=1)
    pd.testing.assert_frame_equal(a, b)
    assert not a.equals(synthesize_rows(manifest, 300, seed=2))
    seen = set(next(c for c in manifest["input_schema"] if c["name"] == "plan")["categories"])
    assert (~a["plan"].dropna().isin(seen)).any()
    assert a["age"].isna().any() and len(a) == 300


def test_export_model_writes_verified_file(bundles, small_tables, tmp_path):
    out = tmp_path / "m.onnx"
    result = export_model(bundles("binary", "xgboost"), out, data=[str(small_tables["binary"]["test"])], rows=100)
    assert result.rows_checked == 100 and result.labels_equal and result.max_abs_diff <= TOLERANCE
    assert result.size_bytes == out.stat().st_size and result.opset["ai.onnx.ml"] >= 3 and not result.warnings
    assert OnnxModel.load(out).manifest["target"] == "churned"
    synthesized = export_model(bundles("binary", "xgboost"), tmp_path / "s.onnx")
    assert synthesized.data == "synthesized" and synthesized.rows_checked == SAMPLE_ROWS and synthesized.warnings
    assert (tmp_path / "s.onnx").read_bytes() == out.read_bytes()


def test_export_refuses_bad_input(bundles, small_tables, tmp_path):
    out = tmp_path / "m.onnx"
    wrong = pd.read_parquet(small_tables["regression"]["test"])
    wrong.to_parquet(tmp_path / "wrong.parquet")
    with pytest.raises(InputError, match="missing from the input"):
        export_model(bundles("binary", "linear"), out, data=[str(tmp_path / "wrong.parquet")])
    with pytest.raises(UsageError):
        export_model(bundles("binary", "linear"), out, rows=0)
    with pytest.raises(InputError, match="not a model"):
        export_model(small_tables["binary"]["test"], out)
    assert not out.exists()


def test_onnx_file_checks(bundles, tmp_path):
    import onnx

    proto = to_onnx(load_model(bundles("binary", "linear")))
    tampered = onnx.ModelProto()
    tampered.CopyFrom(proto)
    next(i for i in tampered.graph.initializer if i.data_type == onnx.TensorProto.DOUBLE).raw_data = b"\0" * 8 * 20
    (tmp_path / "t.onnx").write_bytes(tampered.SerializeToString())
    with pytest.raises(InputError, match="sha256"):
        load_model(tmp_path / "t.onnx")
    bare = onnx.ModelProto()
    bare.CopyFrom(proto)
    del bare.metadata_props[:]
    (tmp_path / "bare.onnx").write_bytes(bare.SerializeToString())
    with pytest.raises(InputError, match="not written by mlsys"):
        load_model(tmp_path / "bare.onnx")
    (tmp_path / "junk.onnx").write_bytes(b"not a protobuf at all \xff\xfe")
    with pytest.raises(InputError):
        load_model(tmp_path / "junk.onnx")
