"""The final model chosen by k-fold cross-validation on train + valid (tuning/select): real
folds and fits on small seeded tables, and the decision on out-of-fold predictions."""

from __future__ import annotations

import time
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest


def trial(number: int, family: str, value: float, params: dict, defaults: bool = False, fit_s: float = 0.01):
    import optuna
    from optuna.distributions import CategoricalDistribution

    attrs = {"params": params, "fit_s": fit_s, **({"defaults": True} if defaults else {})}
    return optuna.trial.FrozenTrial(
        number=number, state=optuna.trial.TrialState.COMPLETE, value=value, datetime_start=None,
        datetime_complete=None, params={"family": family},
        distributions={"family": CategoricalDistribution(["linear", "hgb", "xgboost", "forest", "mlp"])},
        user_attrs=attrs, system_attrs={}, intermediate_values={}, trial_id=number)


def regression_problem(tmp_path, seed: int = 0, n_train: int = 160, n_valid: int = 40):
    """A real tune Problem on a seeded table whose target is linear in x1 and x2 plus noise."""
    from mlsys_cli.models.tuning.command import make_job
    from mlsys_cli.models.tuning.job import TuneRequest
    from mlsys_cli.models.tuning.problem import Problem

    rng = np.random.default_rng(seed)
    n = n_train + n_valid
    X = rng.normal(size=(n, 3))
    frame = pd.DataFrame({"x1": X[:, 0], "x2": X[:, 1], "x3": X[:, 2], "y": 3 * X[:, 0] - 2 * X[:, 1] + rng.normal(scale=0.5, size=n)})
    frame.iloc[:n_train].to_parquet(tmp_path / "train.parquet", index=False)
    frame.iloc[n_train:].to_parquet(tmp_path / "valid.parquet", index=False)
    job = make_job(str(tmp_path / "train.parquet"), TuneRequest(valid=str(tmp_path / "valid.parquet"), target="y", timeout=60.0),
                   started=time.time(), refit=True)
    return Problem(job)


def test_the_folds_score_each_candidate_out_of_fold_on_train_and_valid_deterministically(tmp_path):
    from mlsys_cli.models.tuning import select

    problem = regression_problem(tmp_path)
    # On the validation rows a shallow 3-iteration HGB happens to score best; on every row by
    # k-fold the linear model (the true shape) is better by far.
    trials = [trial(1, "hgb", 1.0, {"max_iter": 3, "learning_rate": 0.1}), trial(0, "linear", 1.2, {}, defaults=True)]
    scored = select.cross_validate(problem, trials, None)
    assert [t.number for t in scored.trials] == [1, 0] and scored.P.shape == (2, 200) and scored.skipped == []
    again = select.cross_validate(problem, trials, None)
    np.testing.assert_array_equal(scored.P, again.P)
    chosen = select.decide(problem, scored)
    assert chosen.members == (0,) and chosen.combiner is None
    record = chosen.to_dict()
    assert record["method"] == "cv" and record["folds"] == select.CV_FOLDS and record["rows"] == 200
    assert record["best_single"] == 0 and [c["trial"] for c in record["candidates"]] == [1, 0]
    cv = {c["trial"]: c["cv"] for c in record["candidates"]}
    assert cv[0] < cv[1] < np.std(problem.train_df["y"])
    # Three folds (where five do not fit in the share): every row still scored out of fold, the
    # record and the refit estimate follow (three folds of 2/3 of the rows: a fold's seconds x 3/2).
    three = select.cross_validate(problem, trials, None, select.CV_FOLDS_MIN)
    assert three.P.shape == (2, 200) and three.folds == 3 and select.decide(problem, three).to_dict()["folds"] == 3
    assert select.refit_seconds(problem, three, 0) == pytest.approx(three.fit_s[1] / 2 + select.post_fit_seconds(problem))
    # A candidate whose folds would pass the stop is left out (its estimate: 1,000 s of trials).
    slow = trial(2, "hgb", 0.9, {"max_iter": 5}, fit_s=1000.0)
    scored = select.cross_validate(problem, [slow] + trials, time.time() + 120.0)
    assert scored.skipped == [2] and [t.number for t in scored.trials] == [1, 0]


def test_the_ensemble_is_chosen_only_when_its_cross_fitted_out_of_fold_score_beats_the_best_candidate():
    """Two candidates with independent errors: their average beats either (an ensemble); a
    candidate that only adds noise to a better one: the better one alone. Validation values
    point the other way in both cases, as on the benchmark's small tables."""
    from mlsys_cli.models.tuning import select

    rng = np.random.default_rng(3)
    y = rng.normal(size=400)
    frame = pd.DataFrame({"y": y})
    job = SimpleNamespace(seed=0, train="t", ensemble=True)
    problem = SimpleNamespace(task="regression", classes=None, metric="rmse", higher=False, target="y", job=job,
                              train_df=frame.iloc[:300], valid_df=frame.iloc[300:])
    a, b = y + rng.normal(scale=1.0, size=400), y + rng.normal(scale=1.0, size=400)
    t = [trial(5, "xgboost", 0.9, {}), trial(6, "mlp", 1.0, {}), trial(0, "hgb", 1.1, {}, defaults=True)]
    noisy = y + rng.normal(scale=3.0, size=400)
    scored = select.Scored(t, np.stack([a, b, noisy]), [1.0, 1.0, 1.0], [], 3.0)
    chosen = select.decide(problem, scored)
    assert {5, 6} <= set(chosen.members) and chosen.members[:2] in ((5, 6), (6, 5)) and chosen.combiner is not None and chosen.record["gain"] > 0
    assert chosen.record["chosen"] == "ensemble"
    # The validation-best candidate (trial 5) is pure noise around the truth; trial 6 is the truth.
    scored = select.Scored(t[:2], np.stack([noisy, y + rng.normal(scale=0.1, size=400)]), [1.0, 1.0], [], 2.0)
    chosen = select.decide(problem, scored)
    assert chosen.members == (6,) and chosen.record["chosen"] == "single" and chosen.record["best_single"] == 6
    # --no-ensemble: the best single candidate, whatever an ensemble would gain.
    job.ensemble = False
    chosen = select.decide(problem, select.Scored(t[:2], np.stack([a, b]), [1.0, 1.0], [], 2.0))
    assert len(chosen.members) == 1 and chosen.record["ensemble_cv"] is None


def test_the_refit_of_the_cross_validated_choice_is_estimated_from_its_folds():
    from mlsys_cli.models.tuning import select
    from mlsys_cli.models.tuning.budget import post_fit_seconds

    problem = SimpleNamespace(train_df=[0] * 80, valid_df=[0] * 20)
    scored = select.Scored([trial(3, "hgb", 1.0, {}), trial(7, "linear", 1.0, {})], np.zeros((2, 100)), [8.0, 2.0], [], 10.0)
    # Five folds of 8 s in all: 1.6 s each on 4/5 of the rows, so 2 s on all of them.
    assert select.refit_seconds(problem, scored, 3) == pytest.approx(2.0 + post_fit_seconds(problem))
    assert select.refit_seconds(problem, scored, 7) == pytest.approx(0.5 + post_fit_seconds(problem))


def test_a_candidate_not_held_is_refitted_with_the_epochs_its_trial_recorded():
    from mlsys_cli.models.tuning.refit import all_rows_params, fitted_model

    problem = SimpleNamespace(held_model=lambda n: None)
    t = trial(4, "mlp", 1.0, {"max_epochs": 200})
    assert all_rows_params("mlp", t.user_attrs["params"], fitted_model(problem, t))["max_epochs"] == 200
    t.user_attrs["best_epoch"] = 17
    assert all_rows_params("mlp", t.user_attrs["params"], fitted_model(problem, t)) == {"max_epochs": 17, "valid_fraction": 0.0}


def test_the_folds_decide_only_when_they_scored_the_two_best_families_best_trials():
    """diamonds: the best trial's folds ran past their estimate and only a linear defaults trial,
    2x worse, fitted after it; an 'ensemble' of those two is no better choice than the validation rows'."""
    from mlsys_cli.models.tuning import select

    problem = SimpleNamespace(higher=False)
    planned = [trial(1, "hgb", 541.0, {}, defaults=True), trial(9, "xgboost", 545.0, {}), trial(0, "linear", 1119.0, {}, defaults=True)]

    def scored(*numbers):
        return select.Scored([t for t in planned if t.number in numbers], np.zeros((len(numbers), 10)), [1.0] * len(numbers), [], 1.0)

    assert not select._enough(problem, planned, scored(1, 0))
    assert select._enough(problem, planned, scored(1, 9))
    assert select._enough(problem, planned, scored(1, 9, 0))
    assert not select._enough(problem, planned, scored(1))


def test_when_the_folds_of_a_best_candidate_do_not_fit_the_reason_names_it(tmp_path, monkeypatch):
    from mlsys_cli.models.tuning import select

    problem = regression_problem(tmp_path)
    # The best candidate's folds are estimated at 1,000 s of trials: left out, the two others scored.
    slow = trial(2, "hgb", 0.9, {"max_iter": 5}, fit_s=1000.0)
    others = [trial(1, "hgb", 1.0, {"max_iter": 3, "learning_rate": 0.1}), trial(0, "linear", 1.2, {}, defaults=True)]
    monkeypatch.setattr(select, "selection_plan", lambda study, problem: (select.CV_FOLDS, [slow, others[1]]))
    monkeypatch.setattr(select, "selection_candidates", lambda study, problem: [slow, *others])
    assert select.choose(None, problem) is None
    assert problem.selection_skipped == ("the folds of trial 2 (of the 2 best candidates: trials 2, 0) did not fit in the "
                                         "time left (2 candidates scored)")


def test_a_time_ordered_split_is_not_cross_validated_by_random_folds_and_the_report_says_why(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    from mlsys_cli.models.tuning import select
    from mlsys_cli.models.tuning.budget import selection_plan
    from mlsys_cli.models.tuning.problem import Problem

    problem = regression_problem(tmp_path)
    assert problem.split_order is None and select.selection_applies(problem)
    # The validation rows come later: their month is beyond every training row's.
    train, valid = pd.read_parquet(tmp_path / "train.parquet"), pd.read_parquet(tmp_path / "valid.parquet")
    train["month"] = np.arange(len(train)) % 8 + 1
    valid["month"] = np.arange(len(valid)) % 2 + 9
    train.to_parquet(tmp_path / "train.parquet", index=False)
    valid.to_parquet(tmp_path / "valid.parquet", index=False)
    ordered = Problem(problem.job)
    assert ordered.split_order == "100% of the validation rows' month lie beyond the training rows' range"
    trials = [trial(1, "hgb", 1.0, {"max_iter": 3}), trial(0, "linear", 1.2, {}, defaults=True)]
    study = SimpleNamespace(get_trials=lambda deepcopy=False, states=None: trials)
    assert not select.selection_applies(ordered) and selection_plan(study, ordered)[1] == []
    assert select.choose(study, ordered) is None
    assert ordered.selection_skipped == ("random folds would mix the validation rows into training: "
                                         "100% of the validation rows' month lie beyond the training rows' range")
    # A split mlsys made by time says so in its lineage, whatever the columns.
    table = pq.read_table(tmp_path / "train.parquet").drop(["month"])
    meta = {b"mlsys": b'{"command": "split", "extra": {"by": "time:snapshot_date"}, "role": "train"}'}
    pq.write_table(table.replace_schema_metadata(meta), tmp_path / "train.parquet")
    pq.write_table(pa.Table.from_pandas(valid.drop(columns=["month"]), preserve_index=False), tmp_path / "valid.parquet")
    by_time = Problem(problem.job)
    assert by_time.split_order == f"the split is by time:snapshot_date (mlsys split lineage of {tmp_path / 'train.parquet'})"
    assert not select.selection_applies(by_time)


def test_a_saved_ensemble_is_not_reported_with_the_advice_to_use_its_best_member_alone():
    from mlsys_cli.models.ensemble import _verdict
    from mlsys_cli.models.tuning.final import saved_verdict

    gain = {"value": 0.0021, "ci95": [-0.0008, 0.0051], "best_member": "mlsys-tune#trial47(xgboost)"}
    worth, verdict = _verdict("auc", True, gain, 4.4)
    assert not worth and verdict.endswith("use mlsys-tune#trial47(xgboost) alone")
    text = saved_verdict({"gain": 0.0021, "metric": "auc", "verdict": verdict})
    assert text.startswith("saved: gain +0.0021 in auc above 0 on the validation rows (tune's rule), though the 95% CI")
    assert "alone" not in text and "at 4.4x the latency" in text
    worth, verdict = _verdict("auc", True, {**gain, "value": 0.02, "ci95": [0.01, 0.03]}, 1.5)
    assert worth and saved_verdict({"gain": 0.02, "metric": "auc", "verdict": verdict}) == verdict
