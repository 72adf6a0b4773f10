"""The mlp family: training on the three tasks, determinism, early stopping, timeout, persistence."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="the nn extra (torch) is not installed")

from mlsys_cli.bundle import BundleReader, BundleWriter  # noqa: E402
from mlsys_cli.errors import InputError, UsageError  # noqa: E402
from mlsys_cli.models.families import get_family  # noqa: E402
from mlsys_cli.models.mlp import MLPEstimator  # noqa: E402

pytestmark = pytest.mark.nn

FAMILY = get_family("mlp")
SMALL = {"width": 32, "max_epochs": 60, "patience": 8, "batch_size": 64}


def _data(task: str, n: int = 600, seed: int = 0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 6))
    X[:, 5] *= 1000.0  # a badly scaled column: the network standardizes its inputs itself
    if task == "binary":
        y = (X[:, 0] + X[:, 1] ** 2 + 0.3 * rng.normal(size=n) > 1).astype(int)
    elif task == "multiclass":
        y = np.digitize(X[:, 0] - X[:, 2], [-0.7, 0.7])
    else:
        y = 50.0 + 10.0 * X[:, 0] + 5.0 * X[:, 1] * X[:, 2] + rng.normal(size=n)
    cut = int(n * 0.75)
    return X[:cut], y[:cut], X[cut:], y[cut:]


def _fit(task: str, **params):
    X, y, Xv, yv = _data(task)
    n_classes = 1 if task == "regression" else int(y.max()) + 1
    est = FAMILY.make(task, n_classes, {**SMALL, **params}, seed=7)
    return est.fit(X, y, eval_set=(Xv, yv)), Xv, yv


@pytest.fixture(scope="module")
def fitted():
    return {task: _fit(task) for task in ("binary", "multiclass", "regression")}


def test_binary_learns_and_beats_the_prior(fitted):
    from sklearn.metrics import roc_auc_score

    est, Xv, yv = fitted["binary"]
    proba = est.predict_proba(Xv)
    assert proba.shape == (len(Xv), 2)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, atol=1e-6)
    assert roc_auc_score(yv, proba[:, 1]) > 0.9
    assert set(np.unique(est.predict(Xv))) <= {0, 1}


def test_multiclass_uses_softmax_over_all_classes(fitted):
    est, Xv, yv = fitted["multiclass"]
    proba = est.predict_proba(Xv)
    assert proba.shape == (len(Xv), 3)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, atol=1e-6)
    assert (est.predict(Xv) == yv).mean() > 0.8


def test_regression_standardizes_the_target_internally(fitted):
    est, Xv, yv = fitted["regression"]
    pred = est.predict(Xv)
    assert pred.shape == (len(Xv),)
    assert est.y_mean_ == pytest.approx(50.0, abs=2.0) and est.y_std_ > 5.0
    rmse = float(np.sqrt(np.mean((pred - yv) ** 2)))
    assert rmse < 0.5 * float(np.std(yv))
    assert est.best_score_ == pytest.approx(rmse, rel=1e-3)  # the reported loss is RMSE in target units
    with pytest.raises(UsageError):
        est.predict_proba(Xv)


def test_two_fits_with_one_seed_give_identical_weights():
    a, Xv, _ = _fit("binary", max_epochs=5)
    b, _, _ = _fit("binary", max_epochs=5)
    assert a.weights_bytes() == b.weights_bytes()
    np.testing.assert_array_equal(a.predict_proba(Xv), b.predict_proba(Xv))
    X, y, Xv, yv = _data("binary")
    c = FAMILY.make("binary", 2, {**SMALL, "max_epochs": 5}, seed=8).fit(X, y, eval_set=(Xv, yv))
    assert c.weights_bytes() != a.weights_bytes()


def test_fit_leaves_global_torch_state_alone():
    threads, deterministic = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    _fit("binary", max_epochs=2)
    assert torch.equal(torch.rand(3), expected)
    assert torch.get_num_threads() == threads
    assert torch.are_deterministic_algorithms_enabled() == deterministic


def test_early_stopping_restores_the_best_weights():
    # A wide net with a high learning rate on few noisy rows overfits quickly: the valid loss
    # turns up, training stops `patience` epochs later, and the kept weights are the best epoch's.
    rng = np.random.default_rng(1)
    X, Xv = rng.normal(size=(80, 6)), rng.normal(size=(200, 6))
    y, yv = (rng.random(80) < 0.5).astype(int), (Xv[:, 0] > 0).astype(int)
    y[:40] = (X[:40, 0] > 0)
    est = MLPEstimator("binary", 2, width=128, lr=0.01, dropout=0.0, weight_decay=0.0, batch_size=16,
                       max_epochs=300, patience=5, seed=0).fit(X, y, eval_set=[(Xv, yv)])
    assert est.stop_reason_ == "early_stopping"
    assert est.n_epochs_ == est.best_epoch_ + 5 < 300
    losses = [h["valid_loss"] for h in est.history_]
    assert est.best_score_ == min(losses) == losses[est.best_epoch_ - 1]
    assert losses[-1] > est.best_score_
    from sklearn.metrics import log_loss

    assert log_loss(yv, est.predict_proba(Xv)) == pytest.approx(est.best_score_, rel=1e-4)


def test_timeout_is_honoured_between_batches():
    X, y, Xv, yv = _data("regression", n=4000)
    est = FAMILY.make("regression", 1, {"width": 256, "batch_size": 16, "max_epochs": 10_000, "patience": 10_000}, seed=0)
    est.fit(X, y, eval_set=(Xv, yv), timeout=1.0)
    assert est.stop_reason_ == "timeout"
    assert est.fit_seconds_ < 4.0  # one batch plus one validation pass past the budget at most
    assert est.best_score_ is not None and np.isfinite(est.predict(Xv)).all()


def test_progress_and_pruning_callback_see_every_epoch():
    class Progress:
        def __init__(self):
            self.calls = []

        def update(self, completed=None, total=None, description=None):
            self.calls.append((completed, total, description))

    class Pruned(Exception):
        pass

    seen = []

    def callback(epoch, loss):
        seen.append((epoch, loss))
        if epoch == 3:
            raise Pruned

    X, y, Xv, yv = _data("multiclass")
    progress = Progress()
    est = FAMILY.make("multiclass", 3, SMALL, seed=0)
    with pytest.raises(Pruned):
        est.fit(X, y, eval_set=(Xv, yv), progress=progress, callback=callback)
    assert [e for e, _ in seen] == [1, 2, 3]
    assert all(np.isfinite(loss) for _, loss in seen)
    assert [c[0] for c in progress.calls] == [0, 1, 2, 3] and progress.calls[-1][1] == SMALL["max_epochs"]


def test_fit_info_has_the_family_keys(fitted):
    est, _, _ = fitted["binary"]
    info = est.fit_info_
    assert info["stopped_by"] in ("early_stopping", None) and info["n_epochs"] == len(est.history_)
    assert info["best_epoch"] == est.best_epoch_ and info["best_valid_loss"] == est.best_score_


def test_without_eval_set_a_seeded_share_is_held_out():
    X, y, _, _ = _data("binary")
    est = FAMILY.make("binary", 2, {**SMALL, "max_epochs": 3}, seed=0).fit(X, y)
    assert all(h["valid_loss"] is not None for h in est.history_)
    none = FAMILY.make("binary", 2, {**SMALL, "max_epochs": 3, "valid_fraction": 0.0}, seed=0).fit(X, y)
    assert none.stop_reason_ == "max_epochs" and none.best_score_ is None and none.n_epochs_ == 3


def test_sample_weights_shift_the_decision():
    # --class-weight reaches every family as sample weights (models/train.py), so this covers both.
    X, y, Xv, _ = _data("binary")
    params = {**SMALL, "max_epochs": 15, "valid_fraction": 0.0}
    plain = FAMILY.make("binary", 2, params, seed=0).fit(X, y)
    weighted = FAMILY.make("binary", 2, params, seed=0).fit(X, y, sample_weight=np.where(y == 1, 10.0, 1.0))
    assert weighted.predict_proba(Xv)[:, 1].mean() > plain.predict_proba(Xv)[:, 1].mean() + 0.1
    # Only relative weights matter: scaling them all changes nothing.
    scaled = FAMILY.make("binary", 2, params, seed=0).fit(X, y, sample_weight=np.where(y == 1, 30.0, 3.0))
    np.testing.assert_allclose(scaled.predict_proba(Xv), weighted.predict_proba(Xv), atol=1e-5)


@pytest.mark.parametrize("task", ["binary", "multiclass", "regression"])
def test_save_load_round_trip_through_a_bundle(fitted, task, tmp_path):
    est, Xv, _ = fitted[task]
    writer = BundleWriter("model", {"task": task})
    FAMILY.save(est, writer, prefix="members/0/")
    path = writer.write(tmp_path / "m.mlsys")
    reader = BundleReader(path, kind="model")
    assert {"members/0/mlp.safetensors", "members/0/mlp.json"} <= set(reader.names())
    loaded = FAMILY.load(reader, prefix="members/0/", spec=None)
    np.testing.assert_array_equal(loaded.predict(Xv), est.predict(Xv))
    if task != "regression":
        np.testing.assert_array_equal(loaded.predict_proba(Xv), est.predict_proba(Xv))
    assert loaded.weights_bytes() == est.weights_bytes()
    assert loaded.best_epoch_ == est.best_epoch_ and loaded.history_ == est.history_
    # Deterministic bytes: saving the loaded model gives the same bundle.
    again = BundleWriter("model", {"task": task})
    FAMILY.save(loaded, again, prefix="members/0/")
    assert again.to_bytes() == writer.to_bytes()


def test_a_tampered_config_is_refused(fitted, tmp_path):
    est, _, _ = fitted["binary"]
    config = est.config()
    config["n_features"] = 3
    with pytest.raises(InputError, match="invalid mlp model"):
        MLPEstimator.from_parts(config, est.weights_bytes())
    with pytest.raises(InputError, match="invalid mlp model"):
        MLPEstimator.from_parts(est.config(), est.weights_bytes()[:-10])


def test_torch_module_matches_predict_proba_and_exports_to_onnx(fitted):
    import onnxruntime as ort

    from mlsys_cli.deploy.onnx_families import family_to_onnx

    for task in ("binary", "multiclass", "regression"):
        est, Xv, _ = fitted[task]
        module = est.to_torch_module()
        assert not module.training
        with torch.no_grad():
            out = module(torch.from_numpy(Xv.astype(np.float32))).numpy()
        expected = est.predict_proba(Xv) if task != "regression" else est.predict(Xv)[:, None]
        np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-5)
        graph = family_to_onnx("mlp", est, Xv.shape[1], task, est.n_classes)
        session = ort.InferenceSession(graph.SerializeToString(), providers=["CPUExecutionProvider"])
        (onnx_out,) = session.run(None, {"features": Xv.astype(np.float32)})
        assert session.get_outputs()[0].name == ("prediction" if task == "regression" else "probabilities")
        np.testing.assert_allclose(onnx_out, expected, rtol=1e-4, atol=1e-4)


def test_inputs_beyond_the_training_range_are_clamped_in_predict_and_onnx(fitted):
    """A ReLU network extrapolates without bound: rows far outside the training range (a
    time-ordered validation set) are predicted as at the edge of the range, in torch and ONNX."""
    import onnxruntime as ort

    from mlsys_cli.deploy.onnx_families import family_to_onnx

    for task in ("binary", "regression"):
        est, Xv, _ = fitted[task]
        far = Xv[:20] * 50.0 + np.sign(Xv[:20]) * 1e4
        edge = np.clip(far, est.x_lo_, est.x_hi_)
        assert not np.allclose(far, edge)
        predict = est.predict_proba if task != "regression" else est.predict
        np.testing.assert_allclose(predict(far), predict(edge), rtol=1e-6, atol=1e-6)
        graph = family_to_onnx("mlp", est, far.shape[1], task, est.n_classes)
        session = ort.InferenceSession(graph.SerializeToString(), providers=["CPUExecutionProvider"])
        (onnx_out,) = session.run(None, {"features": far.astype(np.float32)})
        np.testing.assert_allclose(onnx_out.reshape(len(far), -1).squeeze(), predict(edge).squeeze(), rtol=1e-4, atol=1e-4)


def test_clamping_helps_on_a_shifted_validation_set():
    """Validation rows shifted beyond the training range: early stopping and scoring see them
    clamped, and the model ranks them better than an unclamped one."""
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(3)
    X = rng.uniform(0, 1, size=(1500, 4))
    y = (X[:, 0] - 0.5 * X[:, 1] + 0.2 * rng.normal(size=1500) > 0.3).astype(int)
    Xv = rng.uniform(0, 1, size=(800, 4))
    yv = (Xv[:, 0] - 0.5 * Xv[:, 1] + 0.2 * rng.normal(size=800) > 0.3).astype(int)
    Xv[:, 2:] += 30.0  # two irrelevant columns drift far beyond anything seen in training
    est = FAMILY.make("binary", 2, SMALL, seed=1).fit(X, y, eval_set=(Xv, yv))
    clamped = roc_auc_score(yv, est.predict_proba(Xv)[:, 1])
    unclamped = MLPEstimator.from_parts({k: v for k, v in est.config().items() if k != "x_range"}, est.weights_bytes())
    assert unclamped.x_lo_ is None  # a bundle written before clamping loads and predicts unclamped
    assert clamped > 0.85
    assert clamped > roc_auc_score(yv, unclamped.predict_proba(Xv)[:, 1]) + 0.02


def test_importances_are_a_normalized_first_layer_proxy(fitted):
    est, _, _ = fitted["regression"]
    imp = FAMILY.importances(est)
    assert imp.shape == (6,) and imp.sum() == pytest.approx(1.0) and (imp >= 0).all()
    # Columns 0-2 drive the target, 3-5 are noise: the proxy should rank the drivers first.
    assert imp[:3].min() > imp[3:].max()


def test_warm_start_continues_from_the_fitted_weights():
    X, y, Xv, yv = _data("regression")
    est = FAMILY.make("regression", 1, {**SMALL, "max_epochs": 5}, seed=0).fit(X, y, eval_set=(Xv, yv))
    before = est.best_score_
    est.set_params(warm_start=True, max_epochs=5)
    est.fit(X, y, eval_set=(Xv, yv))
    assert est.best_score_ < before


@pytest.mark.parametrize("params, error", [
    ({"nope": 1}, UsageError), ({"dropout": 1.5}, UsageError), ({"width": 0}, UsageError),
    ({"valid_fraction": 1.0}, UsageError), ({"batch_size": 2.5}, UsageError),
])
def test_bad_params_are_usage_errors(params, error):
    with pytest.raises(error):
        FAMILY.make("binary", 2, params, seed=0)


def test_bad_data_is_an_input_error():
    X, y, _, _ = _data("binary")
    est = FAMILY.make("binary", 2, SMALL, seed=0)
    bad = X.copy()
    bad[3, 2] = np.nan
    with pytest.raises(InputError, match="finite"):
        est.fit(bad, y)
    with pytest.raises(InputError, match="class codes"):
        est.fit(X, y + 5)
    with pytest.raises(InputError, match="sample weights"):
        est.fit(X, y, sample_weight=-np.ones(len(y)))
    fitted = est.set_params(max_epochs=1).fit(X, y)
    with pytest.raises(InputError, match="expects 6 features"):
        fitted.predict(X[:, :4])


def test_without_torch_the_error_names_the_extra():
    code = (
        "import sys; sys.modules['torch'] = None\n"
        "from mlsys_cli.errors import InputError\n"
        "from mlsys_cli.models.families import get_family\n"
        "try:\n"
        "    get_family('mlp').make('binary', 2, {}, 0)\n"
        "except InputError as exc:\n"
        "    print(exc.exit_code, exc.message)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "3 the mlp family needs the nn extra: pip install 'mlsys[nn]'"
