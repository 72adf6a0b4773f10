"""The model bundle: round trip, reproducible bytes, refusal of tampered or wrong-kind files."""

from __future__ import annotations

import hashlib
import io
import zipfile

import numpy as np
import pandas as pd
import pytest

from mlsys_cli.errors import InputError
from mlsys_cli.models.bundle import ModelBundle
from mlsys_cli.models.predictors import PREDICTORS, Calibrator, load_predictor
from mlsys_cli.models.train import TrainSpec, train_model

FAST = {"n_estimators": 20}


@pytest.fixture(scope="module")
def binary_bundle(small_tables, tmp_path_factory):
    t = small_tables["binary"]
    bundle, _ = train_model(str(t["train"]), TrainSpec(family="xgboost", target=t["target"], params=FAST), valid=str(t["valid"]))
    path = tmp_path_factory.mktemp("bundle") / "model.mlsys"
    bundle.save(path)
    return bundle, path


def test_roundtrip_predicts_the_same(binary_bundle, small_tables):
    bundle, path = binary_bundle
    loaded = ModelBundle.load(path)
    test = pd.read_parquet(small_tables["binary"]["test"])
    a, b = bundle.predict(test), loaded.predict(test)
    assert np.array_equal(a["probabilities"], b["probabilities"]) and np.array_equal(a["label"], b["label"])
    assert loaded.task == "binary" and loaded.target == "churned" and loaded.classes == [False, True]
    frame = loaded.predict_frame(test)
    assert list(frame.columns) == ["label", "proba_False", "proba_True"] == loaded.output_columns()
    assert frame["label"].dtype == bool
    np.testing.assert_allclose(frame[["proba_False", "proba_True"]].sum(axis=1), 1.0)


def test_manifest_has_exactly_the_documented_keys(binary_bundle):
    _, path = binary_bundle
    m = ModelBundle.load(path).manifest
    assert set(m) == {"format", "kind", "mlsys_version", "task", "target", "classes", "input_schema", "recipe",
                      "metrics", "reference", "importance", "libraries", "predictor", "members"}
    assert {"family", "params", "seed", "features", "task", "class_weight", "calibrate", "command", "data"} <= set(m["recipe"])
    assert m["recipe"]["params"]["n_estimators"] == 20 and m["recipe"]["params"]["max_depth"] == 6
    assert set(m["metrics"]["baselines"]) == {"zero_rule", "random"}
    assert set(m["reference"]["features"]) == {c["name"] for c in m["input_schema"]}
    assert set(m["reference"]["predictions"]) == {"label", "proba_False", "proba_True"}
    assert m["predictor"]["kind"] == "single" and "xgboost" in m["libraries"]


def test_same_inputs_same_bytes(small_tables, tmp_path):
    t = small_tables["multiclass"]
    digests = []
    for i in range(2):
        bundle, _ = train_model(str(t["train"]), TrainSpec(family="forest", target=t["target"], params={"n_estimators": 10}, seed=5))
        bundle.save(tmp_path / f"m{i}.mlsys")
        digests.append(hashlib.sha256((tmp_path / f"m{i}.mlsys").read_bytes()).hexdigest())
    assert digests[0] == digests[1]


def _rewrite_member(src, dst, name, change):
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w") as zout:
        for info in zin.infolist():
            data = zin.read(info.filename)
            zout.writestr(info, change(data) if info.filename == name else data)


def test_one_changed_byte_in_a_member_is_refused(binary_bundle, tmp_path):
    _, path = binary_bundle
    bad = tmp_path / "bad.mlsys"
    _rewrite_member(path, bad, "model/booster.ubj", lambda d: d[:100] + bytes([d[100] ^ 1]) + d[101:])
    with pytest.raises(InputError, match="sha256"):
        ModelBundle.load(bad)


def test_truncated_bundle_is_refused(binary_bundle, tmp_path):
    _, path = binary_bundle
    bad = tmp_path / "cut.mlsys"
    bad.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(InputError):
        ModelBundle.load(bad)


def test_features_bundle_is_not_a_model(tmp_path):
    from mlsys_cli.bundle import BundleWriter

    BundleWriter("features", {"target": "y"}).write(tmp_path / "f.mlsys")
    with pytest.raises(InputError, match="features bundle, expected a model bundle"):
        ModelBundle.load(tmp_path / "f.mlsys")


def test_unknown_predictor_kind_is_refused():
    class Reader:
        path = "x.mlsys"

    with pytest.raises(InputError, match="unknown predictor kind"):
        load_predictor(Reader(), "", {"kind": "quantum"})
    assert "single" in PREDICTORS


@pytest.mark.parametrize("method", ["isotonic", "sigmoid"])
def test_calibrator_improves_miscalibrated_scores(method):
    from sklearn.metrics import brier_score_loss

    rng = np.random.default_rng(0)
    true_p = rng.uniform(0.05, 0.95, 4000)
    y = (rng.uniform(size=4000) < true_p).astype(int)
    skewed = true_p ** 3  # systematically under-confident about the positive class
    proba = np.column_stack([1 - skewed, skewed])
    cal = Calibrator(method).fit(proba[:2000], y[:2000])
    fixed = cal.transform(proba[2000:])
    np.testing.assert_allclose(fixed.sum(axis=1), 1.0)
    assert brier_score_loss(y[2000:], fixed[:, 1]) < brier_score_loss(y[2000:], skewed[2000:]) - 0.01


def test_multiclass_calibrator_rows_sum_to_one():
    rng = np.random.default_rng(1)
    raw = rng.uniform(size=(300, 3))
    proba = raw / raw.sum(axis=1, keepdims=True)
    y = rng.integers(0, 3, 300)
    out = Calibrator("isotonic").fit(proba, y).transform(proba)
    np.testing.assert_allclose(out.sum(axis=1), 1.0)
    assert len(Calibrator("isotonic").fit(proba, y).models_) == 3


def test_bundle_bytes_are_a_zip_with_hashed_members(binary_bundle):
    _, path = binary_bundle
    with zipfile.ZipFile(io.BytesIO(path.read_bytes())) as zf:
        names = set(zf.namelist())
    assert {"manifest.json", "features/featurizer.json", "model/booster.ubj"} <= names
    assert not any(n.endswith(".skops") for n in names)  # an XGBoost bundle needs no skops at all
    assert not any(n.endswith((".pkl", ".pickle", ".joblib")) for n in names)
