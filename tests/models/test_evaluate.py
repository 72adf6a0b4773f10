"""models/evaluate.py: bootstrap metrics, calibration, slices, behavioural tests, gates."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from mlsys_cli.errors import ExitCode, InputError, UsageError
from mlsys_cli.models import evaluate as ev
from mlsys_cli.models.metrics import compute_metrics


class SklearnModel:
    """A model with the interface evaluate takes (predict, task, classes, input_schema, ...),
    backed by a fitted scikit-learn estimator on a few numeric columns."""

    def __init__(self, task, target, columns, estimator, classes=None, manifest=None):
        self.task, self.target, self.columns, self.estimator = task, target, list(columns), estimator
        self.classes = classes
        self.input_schema = [{"name": c, "type": "float", "role": "numeric"} for c in columns]
        self.manifest = manifest or {}

    def predict(self, df):
        missing = [c for c in self.columns if c not in df.columns]
        if missing:
            raise InputError(f"column {missing[0]!r} is missing from the input")
        X = df[self.columns].to_numpy(dtype=float)
        if self.task == "regression":
            return {"prediction": self.estimator.predict(X)}
        proba = self.estimator.predict_proba(X)
        return {"probabilities": proba, "label": np.asarray(self.classes)[proba.argmax(axis=1)]}


def _binary(n=3000, seed=0):
    from sklearn.linear_model import LogisticRegression

    rng = np.random.default_rng(seed)
    df = pd.DataFrame({"a": rng.normal(size=n), "b": rng.normal(size=n), "noise": rng.normal(size=n),
                       "plan": rng.choice(["basic", "pro", "team"], size=n)})
    p = 1 / (1 + np.exp(-(1.5 * df["a"] - 1.0 * df["b"])))
    y = rng.random(n) < p
    # In plan "team" the label is a coin flip: a slice where the model is no better than chance.
    team = (df["plan"] == "team").to_numpy()
    y[team] = rng.random(team.sum()) < 0.5
    df["churned"] = y
    est = LogisticRegression().fit(df[["a", "b"]].to_numpy()[~team], y[~team])
    return SklearnModel("binary", "churned", ["a", "b"], est, classes=[False, True]), df


def _multiclass(n=1500, seed=1):
    from sklearn.linear_model import LogisticRegression

    rng = np.random.default_rng(seed)
    df = pd.DataFrame({"a": rng.normal(size=n), "b": rng.normal(size=n)})
    score = df["a"] + 0.5 * rng.normal(size=n)
    df["segment"] = np.where(score < -0.5, "budget", np.where(score < 0.6, "family", "premium"))
    est = LogisticRegression().fit(df[["a", "b"]].to_numpy(), df["segment"])
    return SklearnModel("multiclass", "segment", ["a", "b"], est, classes=list(est.classes_)), df


def _regression(n=1500, seed=2):
    from sklearn.linear_model import Ridge

    rng = np.random.default_rng(seed)
    df = pd.DataFrame({"a": rng.normal(size=n), "b": rng.normal(size=n)})
    df["ltv"] = 100 + 30 * df["a"] - 10 * df["b"] + rng.normal(scale=5, size=n)
    est = Ridge().fit(df[["a", "b"]].to_numpy(), df["ltv"])
    return SklearnModel("regression", "ltv", ["a", "b"], est, manifest={"reference": {"target": {"mean": 100.0}}}), df


def _encoded(model, df):
    out = model.predict(df)
    if model.task == "regression":
        return df[model.target].to_numpy(float), out["prediction"], out
    y = np.array([model.classes.index(v) for v in df[model.target]])
    return y, out["probabilities"], out


# --------------------------------------------------------------------------- weighted metrics


@pytest.mark.parametrize("make", [_binary, _multiclass, _regression])
def test_weighted_metrics_equal_compute_metrics_on_the_resampled_rows(make):
    model, df = make()
    y, scored, _ = _encoded(model, df)
    # Ties in the scores exercise the tie handling of the AUC.
    scored = np.round(scored, 2) if model.task != "regression" else scored
    if model.task != "regression":
        scored = scored / scored.sum(axis=1, keepdims=True)
    rng = np.random.default_rng(7)
    idx = rng.integers(0, len(y), size=len(y))
    W = np.vstack([np.ones(len(y)), np.bincount(idx, minlength=len(y))]).astype(float)
    got = ev.weighted_metrics(model.task, W, y, scored, threshold=0.4)
    labels = y if model.task == "regression" else [model.classes[i] for i in y]
    for row, rows in ((0, np.arange(len(y))), (1, idx)):
        expected = compute_metrics(model.task, [labels[i] for i in rows] if model.task != "regression" else y[rows],
                                   scored[rows], model.classes, threshold=0.4)
        for name, value in expected.items():
            assert got[name][row] == pytest.approx(value, rel=1e-9, abs=1e-12), (name, row)


def test_weighted_auc_is_undefined_without_both_classes():
    W = np.ones((1, 4))
    assert np.isnan(ev.weighted_auc(W, np.array([1.0, 1, 1, 1]), np.array([0.1, 0.2, 0.3, 0.4])))[0]


def test_bootstrap_weights_are_resamples_and_deterministic():
    a = np.vstack(list(ev.bootstrap_weights(50, 30, seed=3)))
    b = np.vstack(list(ev.bootstrap_weights(50, 30, seed=3)))
    c = np.vstack(list(ev.bootstrap_weights(50, 30, seed=4)))
    assert a.shape == (30, 50) and (a.sum(axis=1) == 50).all()
    assert np.array_equal(a, b) and not np.array_equal(a, c)


# --------------------------------------------------------------------------- calibration


def test_ece_matches_its_definition_and_separates_good_from_bad_calibration():
    rng = np.random.default_rng(0)
    p = rng.random(20_000)
    calibrated = (rng.random(20_000) < p).astype(float)
    overconfident = (rng.random(20_000) < 0.5 + (p - 0.5) * 0.3).astype(float)
    ones = np.ones((1, len(p)))
    good = ev.weighted_ece(ones, p, calibrated)[0]
    bad = ev.weighted_ece(ones, p, overconfident)[0]
    assert good < 0.02 < 0.1 < bad
    table = ev.reliability_table(p, overconfident)
    assert sum(r["rows"] for r in table) == len(p) and len(table) == ev.CALIBRATION_BINS
    direct = sum(r["rows"] / len(p) * abs(r["mean_predicted"] - r["observed"]) for r in table)
    assert bad == pytest.approx(direct, rel=1e-12)
    assert ev.reliability_table([1.0, 0.0], [1, 0])[-1]["bin"] == ev.CALIBRATION_BINS - 1  # 1.0 lands in the last bin


# --------------------------------------------------------------------------- slices


def test_slice_groups_numeric_quantiles_categories_and_missing():
    df = pd.DataFrame({"x": [float(i) for i in range(99)] + [np.nan],
                       "c": ["a"] * 50 + ["b"] * 30 + [f"r{i}" for i in range(19)] + [None]})
    numeric = ev.slice_groups(df, "x", bins=4)
    assert len(numeric) == 5 and numeric[-1][0] == "(missing)"
    assert sum(m.sum() for _, m in numeric) == 100
    assert numeric[0][0].startswith("[0, ") and numeric[3][0].endswith("]")
    cats = ev.slice_groups(df, "c", max_groups=4)
    assert [label for label, _ in cats] == ["a", "b", "r0", "(other)", "(missing)"]
    assert sum(m.sum() for _, m in cats) == 100
    with pytest.raises(InputError):
        ev.slice_groups(df, "nope")


def test_bad_slice_is_flagged_and_good_slices_are_not():
    model, df = _binary()
    result = ev.evaluate(model, df, ev.EvaluateOptions(slices=["plan"], bootstrap=100))
    flagged = {s["slice"] for s in result.slices if s["flagged"]}
    assert flagged == {"team"}
    assert result.slices[0]["slice"] == "team"  # worst first
    assert result.worst_slices == [s for s in result.slices if s["slice"] == "team"]


def test_slices_of_a_predictive_numeric_column_are_not_all_flagged():
    # Within any quartile of a strong feature the AUC is lower than overall; the reference is
    # the mean of the slices, so none of them stands out.
    model, df = _binary()
    df = df[df["plan"] != "team"]
    result = ev.evaluate(model, df, ev.EvaluateOptions(slices=["a"], bootstrap=100))
    assert all(s["value"] < result.metrics["auc"] for s in result.slices)
    assert not any(s["flagged"] for s in result.slices)


# --------------------------------------------------------------------------- the evaluation


def test_binary_evaluation_intervals_baseline_threshold():
    model, df = _binary()
    result = ev.evaluate(model, df, ev.EvaluateOptions(bootstrap=200, seed=5))
    d = result.to_dict()
    assert d["task"] == "binary" and d["rows"] == len(df) and d["primary_metric"] == "auc"
    for name, value in d["metrics"].items():
        lo, hi = d["ci"][name]
        assert lo <= value <= hi, name
    assert d["metrics"]["auc"] > d["baseline"]["metrics"]["auc"] == 0.5
    assert d["baseline"]["prior_from"] == "evaluation data"
    assert 0 < d["best_threshold"]["threshold"] < 1
    assert d["best_threshold"]["f1"] >= d["metrics"]["f1"] - 1e-12
    assert sum(map(sum, d["confusion_matrix"]["matrix"])) == len(df)
    assert d["calibration"]["method"] == "positive_class" and d["calibration"]["bins"] == 15
    assert ev.evaluate(model, df, ev.EvaluateOptions(bootstrap=200, seed=5)).to_dict() == d
    assert ev.evaluate(model, df, ev.EvaluateOptions(bootstrap=200, seed=6)).to_dict()["ci"] != d["ci"]


def test_threshold_changes_the_decision_metrics_only():
    model, df = _binary()
    low = ev.evaluate(model, df, ev.EvaluateOptions(threshold=0.2, bootstrap=0)).metrics
    high = ev.evaluate(model, df, ev.EvaluateOptions(threshold=0.8, bootstrap=0)).metrics
    assert low["auc"] == high["auc"] and low["recall"] > high["recall"] and low["precision"] < high["precision"]


def test_multiclass_uses_top_label_calibration():
    model, df = _multiclass()
    result = ev.evaluate(model, df, ev.EvaluateOptions(bootstrap=50))
    assert result.calibration["method"] == "top_label"
    assert set(result.metrics) == {"accuracy", "log_loss", "f1_macro", "f1_weighted", "auc_ovr", "ece"}
    assert len(result.confusion_matrix["matrix"]) == 3 and result.threshold is None


def test_regression_uses_the_training_mean_from_the_manifest():
    model, df = _regression()
    result = ev.evaluate(model, df, ev.EvaluateOptions(bootstrap=50))
    assert result.baseline["prior_from"] == "training data" and result.baseline["prior"] == 100.0
    assert result.calibration is None and result.metrics["r2"] > 0.9
    assert result.metrics["rmse"] < result.baseline["metrics"]["rmse"]


def test_rows_without_a_target_are_dropped_and_counted():
    model, df = _regression()
    df.loc[:9, "ltv"] = np.nan
    result = ev.evaluate(model, df, ev.EvaluateOptions(bootstrap=0))
    assert result.dropped_missing_target == 10 and result.rows == len(df) - 10


def test_rows_with_a_blank_text_target_are_dropped_and_counted_like_nulls():
    model, df = _multiclass()
    df.loc[:4, "segment"] = ""
    df.loc[5:9, "segment"] = "   "
    df.loc[10:11, "segment"] = None
    result = ev.evaluate(model, df, ev.EvaluateOptions(bootstrap=0))
    assert result.dropped_missing_target == 12 and result.rows == len(df) - 12


@pytest.mark.parametrize("mutate, message", [
    (lambda df: df.drop(columns=["churned"]), "target column 'churned'"),
    (lambda df: df.iloc[:0], "no rows"),
    (lambda df: df.assign(churned=None), "every value of the target"),
    (lambda df: df.drop(columns=["b"]), "'b'"),
    (lambda df: df.assign(churned="maybe"), "maybe"),
])
def test_bad_data_is_an_input_error(mutate, message):
    model, df = _binary(n=200)
    with pytest.raises(InputError, match=message) as info:
        ev.evaluate(model, mutate(df), ev.EvaluateOptions(bootstrap=0))
    assert info.value.exit_code == ExitCode.INPUT


def test_unknown_slice_column_is_an_input_error():
    model, df = _binary(n=200)
    with pytest.raises(InputError, match="'region'"):
        ev.evaluate(model, df, ev.EvaluateOptions(slices=["region"], bootstrap=0))


# --------------------------------------------------------------------------- behavioural tests


def test_invariance_holds_for_an_unused_column_and_fails_for_a_used_one():
    model, df = _binary()
    result = ev.evaluate(model, df, ev.EvaluateOptions(bootstrap=0, behaviour=ev.BehaviourSpec(invariant=["noise", "a"])))
    by_col = {b.column: b for b in result.behaviour}
    assert by_col["noise"].rate == 0 and by_col["noise"].passed
    assert by_col["a"].rate > 0.2 and not by_col["a"].passed


def test_perturbation_flips_few_predictions_for_small_noise_and_more_for_large():
    model, df = _binary()
    small = ev.evaluate(model, df, ev.EvaluateOptions(bootstrap=0, behaviour=ev.BehaviourSpec(perturb=0.01))).behaviour[0]
    large = ev.evaluate(model, df, ev.EvaluateOptions(bootstrap=0, behaviour=ev.BehaviourSpec(perturb=1.0))).behaviour[0]
    assert small.test == "perturbation" and small.column == "2 numeric inputs" and small.detail.endswith("on a, b")
    assert small.rate < 0.02 and small.passed
    assert large.rate > small.rate and not large.passed


def test_directional_expectation_detects_the_wrong_direction():
    model, df = _binary()
    result = ev.evaluate(model, df, ev.EvaluateOptions(bootstrap=0, behaviour=ev.BehaviourSpec(expect=["a:+", "b:+", "b:-"])))
    rates = [(b.column, b.rate, b.passed) for b in result.behaviour]
    assert rates == [("a:+", 0.0, True), ("b:+", 1.0, False), ("b:-", 0.0, True)]


def test_directional_expectation_on_an_ignored_column_is_not_met():
    model, df = _binary()
    (result,) = ev.evaluate(model, df, ev.EvaluateOptions(bootstrap=0,
                                                          behaviour=ev.BehaviourSpec(expect=["noise:+"]))).behaviour
    assert result.rate == 0.0 and result.mean_abs_delta == 0.0
    assert not result.passed and "ignores noise" in result.detail


def test_directional_expectation_needs_a_class_for_multiclass():
    model, df = _multiclass()
    with pytest.raises(UsageError, match="needs the class"):
        ev.evaluate(model, df, ev.EvaluateOptions(bootstrap=0, behaviour=ev.BehaviourSpec(expect=["a:+"])))
    result = ev.evaluate(model, df, ev.EvaluateOptions(bootstrap=0,
                                                       behaviour=ev.BehaviourSpec(expect=["a:+:premium", "a:-:budget"])))
    assert all(b.passed for b in result.behaviour)


# --------------------------------------------------------------------------- gates


@pytest.mark.parametrize("text, parsed", [
    ("auc>=0.8", ("", "auc", ">=", 0.8)),
    (" ece <= .05 ", ("", "ece", "<=", 0.05)),
    ("slice_min:auc>0.7", ("slice_min", "auc", ">", 0.7)),
    ("ci_low:r2>=1e-1", ("ci_low", "r2", ">=", 0.1)),
])
def test_parse_requirement(text, parsed):
    req = ev.parse_requirement(text)
    assert (req.scope, req.metric, req.op, req.value) == parsed


@pytest.mark.parametrize("text", ["auc", "auc=>0.8", "auc>=high", ">=0.8", "auc>=0.8;rm", "bogus:auc>=1", ""])
def test_bad_requirement_syntax_is_a_usage_error(text):
    with pytest.raises(UsageError) as info:
        ev.parse_requirement(text)
    assert info.value.exit_code == ExitCode.USAGE


@pytest.mark.parametrize("req, kwargs", [
    ("rmse<=1", {}),                       # not a binary metric
    ("perturb_flip_rate<=0.1", {}),        # the test was not requested
    ("slice_min:auc>=0.5", {}),            # no --slice
])
def test_requirement_on_an_unavailable_metric_is_a_usage_error(req, kwargs):
    model, df = _binary(n=200)
    with pytest.raises(UsageError):
        ev.evaluate(model, df, ev.EvaluateOptions(requirements=[req], bootstrap=0, **kwargs))


def test_gates_report_observed_values_and_pass_or_fail():
    model, df = _binary()
    result = ev.evaluate(model, df, ev.EvaluateOptions(slices=["plan"], bootstrap=100, requirements=[
        "auc>=0.7", "auc>=0.99", "ci_low:auc>=0.5", "slice_min:auc>=0.7", "ece<=0.5", "invariance_flip_rate<=0.01"],
        behaviour=ev.BehaviourSpec(invariant=["noise"])))
    outcome = {g["requirement"]: g["passed"] for g in result.gates}
    assert outcome == {"auc>=0.7": True, "auc>=0.99": False, "ci_low:auc>=0.5": True, "slice_min:auc>=0.7": False,
                       "ece<=0.5": True, "invariance_flip_rate<=0.01": True}
    assert not result.passed and [g["requirement"] for g in result.failed_gates] == ["auc>=0.99", "slice_min:auc>=0.7"]
    slice_min = next(g for g in result.gates if g["scope"] == "slice_min")
    assert slice_min["observed"] == min(s["metrics"]["auc"] for s in result.slices)


# --------------------------------------------------------------------------- HTML


@pytest.mark.parametrize("make, kinds", [
    (_binary, {"roc", "pr", "confusion", "reliability", "slices"}),
    (_multiclass, {"confusion", "reliability"}),
    (_regression, {"actual_vs_predicted", "residuals"}),
])
def test_html_report_has_the_plots_of_its_task(make, kinds, tmp_path):
    from tests.browser import plots_in

    model, df = make()
    slices = ["plan"] if "plan" in df else []
    result = ev.evaluate(model, df, ev.EvaluateOptions(bootstrap=20, slices=slices, behaviour=ev.BehaviourSpec(invariant=["a"])))
    path = tmp_path / "eval.html"
    ev.write_html(result, path)
    plots = plots_in(path.read_text())
    assert {p["kind"] for p in plots} == kinds
    assert all(p["points"] > 0 for p in plots)
    assert "Behavioural tests" in path.read_text()


@pytest.mark.parametrize("reference, classes, prior", [
    ({"kind": "numeric", "mean": 0.25}, [False, True], [0.75, 0.25]),
    ({"kind": "categorical", "top": {"a": 30, "b": 10}, "other": 0}, ["a", "b"], [0.75, 0.25]),
    ({"kind": "categorical", "top": {"a": 30}, "other": 10}, ["a", "b"], None),   # incomplete counts
    ({"kind": "numeric", "mean": 0.25}, ["no", "yes"], None),                     # a mean of strings means nothing
])
def test_training_prior_from_the_manifest_reference(reference, classes, prior):
    got, source = ev._train_prior({"reference": {"target": reference}}, "binary", classes)
    assert got == prior and source == ("training data" if prior else None)


def test_labels_that_differ_by_surrounding_spaces_are_shown_quoted_with_the_reason():
    # " yes" and "no " printed bare ("labels the model does not know:  yes, no ") looked like the model's own.
    from sklearn.linear_model import LogisticRegression

    model, df = _binary(n=200)
    model = SklearnModel("binary", "churned", ["a", "b"], LogisticRegression().fit(df[["a", "b"]], df["churned"].map(str)),
                         classes=["False", "True"])
    with pytest.raises(InputError) as info:
        ev.evaluate(model, df.assign(churned=df["churned"].map({True: " True", False: "False "})), ev.EvaluateOptions(bootstrap=0))
    assert info.value.message.endswith("does not know: ' True', 'False '")
    assert info.value.hint == "the model's classes: False, True (the labels differ by surrounding spaces: strip them)"
