"""Tuning: the family scheduler, storages, fixed parameters, budgets, resume, the trials table."""

from __future__ import annotations

import datetime as dt
import json

import numpy as np
import pytest

from mlsys_cli.errors import InputError, UsageError
from mlsys_cli.models.metrics import resolve_metric
from mlsys_cli.models.study import open_storage
from mlsys_cli.models.tuning import TuneJob, tune
from mlsys_cli.models.tuning.problem import Problem
from mlsys_cli.models.tuning.scheduler import choose_family, make_pruner, make_sampler
from mlsys_cli.models.tuning.space import AUTO_EXTRA_DEFAULTS, _grid_values, probe_space, resolve_families, split_fixed


def _trial(number, family, value, seconds, state="COMPLETE", defaults=False):
    import optuna
    from optuna.distributions import CategoricalDistribution
    from optuna.trial import TrialState

    start = dt.datetime(2024, 1, 1) + dt.timedelta(seconds=100 * number)
    return optuna.trial.FrozenTrial(
        number=number, state=getattr(TrialState, state), value=value if state == "COMPLETE" else None,
        datetime_start=start, datetime_complete=start + dt.timedelta(seconds=seconds),
        params={"family": family}, distributions={"family": CategoricalDistribution(["linear", "xgboost", "forest"])},
        user_attrs={"defaults": defaults}, system_attrs={}, intermediate_values={}, trial_id=number,
    )


# --------------------------------------------------------------------------- the auto scheduler


def test_scheduler_starts_every_family_cheapest_first():
    rng = np.random.default_rng(0)
    families = ["linear", "xgboost", "forest"]
    assert choose_family([], families, minimize=False, rng=rng) == "linear"
    assert choose_family([_trial(0, "linear", 0.7, 1)], families, minimize=False, rng=rng) == "xgboost"
    # A family whose trial is still running counts as started (another worker has it).
    running = [_trial(0, "linear", 0.7, 1), _trial(1, "xgboost", None, 1, state="RUNNING")]
    assert choose_family(running, families, minimize=False, rng=rng) == "forest"


def test_scheduler_spends_the_budget_where_it_pays():
    # xgboost is best and improving fast; forest is far behind and slow; linear is cheap but stuck.
    trials = [
        _trial(0, "linear", 0.70, 1), _trial(1, "xgboost", 0.80, 2), _trial(2, "forest", 0.74, 20),
        _trial(3, "xgboost", 0.85, 2), _trial(4, "linear", 0.70, 1), _trial(5, "forest", 0.745, 20),
    ]
    rng = np.random.default_rng(0)
    picks = [choose_family(trials, ["linear", "xgboost", "forest"], minimize=False, rng=rng) for _ in range(2000)]
    share = {f: picks.count(f) / len(picks) for f in ("linear", "xgboost", "forest")}
    assert share["xgboost"] > 0.8, share
    # The others keep the exploration share (10%), no more, spread evenly in time: the slow
    # forest gets fewer draws than cheap linear, but is not written off.
    assert 0 < share["forest"] < share["linear"] < 0.1, share


def test_scheduler_reads_the_direction():
    trials = [_trial(0, "linear", 0.30, 1), _trial(1, "xgboost", 0.60, 1),
              _trial(2, "linear", 0.20, 1), _trial(3, "xgboost", 0.59, 1)]
    rng = np.random.default_rng(1)
    picks = [choose_family(trials, ["linear", "xgboost"], minimize=True, rng=rng) for _ in range(200)]
    assert picks.count("linear") > picks.count("xgboost")


# --------------------------------------------------------------------------- storages


def test_unreachable_postgres_is_an_input_error_without_the_password():
    with pytest.raises(InputError) as err:
        open_storage("postgresql+psycopg://me:s3cret@127.0.0.1:1/db")
    assert "cannot open storage" in err.value.message and "refused" in err.value.message.lower()
    assert "s3cret" not in err.value.message


def test_journal_in_a_missing_directory_is_an_input_error(tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        open_storage(f"journal:{tmp_path}/nope/study.log")


def test_unknown_storage_is_a_usage_error():
    with pytest.raises(UsageError):
        open_storage("study.db")


def test_journal_and_sqlite_storages_open(tmp_path):
    import optuna

    for url in (f"journal:{tmp_path}/s.log", f"sqlite:///{tmp_path}/s.db"):
        study = optuna.create_study(storage=open_storage(url), study_name="s")
        study.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=2)
        assert len(optuna.load_study(study_name="s", storage=open_storage(url)).trials) == 2


# --------------------------------------------------------------------------- search spaces


def test_fixed_params_go_to_their_family():
    from mlsys_cli.models.families import get_family

    fams = ["linear", "xgboost"]
    spaces = {f: probe_space(get_family(f), "binary") for f in fams}
    defaults = {f: get_family(f).default_params("binary") for f in fams}
    per = split_fixed(fams, {"xgboost.max_depth": 3, "C": 0.5}, spaces, defaults)
    assert per == {"linear": {"C": 0.5}, "xgboost": {"max_depth": 3}}
    with pytest.raises(UsageError, match="no searched family"):
        split_fixed(fams, {"nonsense": 1}, spaces, defaults)
    assert split_fixed(["xgboost"], {"max_depth": 3}, spaces, defaults) == {"xgboost": {"max_depth": 3}}


def test_search_spaces_use_log_scales_for_rates_and_regularization():
    from mlsys_cli.models.families import get_family

    space = probe_space(get_family("xgboost"), "binary")
    assert space["learning_rate"].log and space["reg_lambda"].log
    assert probe_space(get_family("linear"), "binary")["C"].log


def test_grid_values():
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    assert _grid_values(FloatDistribution(1e-4, 1e2, log=True)) == pytest.approx([1e-4, 0.1, 100.0])
    assert _grid_values(IntDistribution(2, 10)) == [2, 6, 10]
    assert _grid_values(CategoricalDistribution(["a", "b"])) == ["a", "b"]


def test_family_pruner_compares_a_trial_with_its_own_family():
    import optuna
    from optuna.distributions import CategoricalDistribution
    from optuna.trial import TrialState

    dist = {"family": CategoricalDistribution(["mlp", "xgboost"])}
    study = optuna.create_study(direction="minimize", pruner=make_pruner("median", by_family=True))
    # Finished mlp trials reach a loss of 0.5 at step 10; xgboost trials reach 0.1.
    for i in range(5):
        for fam, loss in (("mlp", 0.5), ("xgboost", 0.1)):
            study.add_trial(optuna.trial.create_trial(params={"family": fam}, distributions=dist, value=loss,
                                                      intermediate_values={s: loss for s in range(11)}))
    def running(loss):
        return optuna.trial.FrozenTrial(
            number=99, state=TrialState.RUNNING, value=None, datetime_start=dt.datetime.now(), datetime_complete=None,
            params={"family": "mlp"}, distributions=dist, user_attrs={}, system_attrs={},
            intermediate_values={s: loss for s in range(11)}, trial_id=99)

    # 0.3 beats every mlp trial, so it goes on, though every xgboost trial beats it.
    assert study.pruner.prune(study, running(0.3)) is False
    assert study.pruner.prune(study, running(0.7)) is True


def test_under_a_budget_a_family_of_cheap_trials_is_not_pruned():
    """The median rule judges a low learning rate at round 5 (on a 1k-row table it pruned 7 of 11
    XGBoost trials, each after 0.03 s): a family whose trials take under cheap_s is not pruned;
    an expensive family still is, and so is every family without a time budget."""
    import optuna
    from optuna.distributions import CategoricalDistribution
    from optuna.trial import TrialState

    dist = {"family": CategoricalDistribution(["mlp", "xgboost"])}
    start = dt.datetime(2024, 1, 1)

    def study_with(pruner):
        study = optuna.create_study(direction="minimize", pruner=pruner)
        # Finished xgboost trials took 0.2 s each, mlp trials 5 s; both reach 0.1 by step 10.
        for fam, seconds in (("xgboost", 0.2), ("mlp", 5.0)):
            for _ in range(5):
                study.add_trial(optuna.trial.FrozenTrial(
                    number=0, state=TrialState.COMPLETE, value=0.1, datetime_start=start,
                    datetime_complete=start + dt.timedelta(seconds=seconds), params={"family": fam}, distributions=dist,
                    user_attrs={}, system_attrs={}, intermediate_values={s: 0.1 for s in range(11)}, trial_id=0))
        return study

    def running(fam):  # a slow learner, far behind at step 10
        return optuna.trial.FrozenTrial(
            number=99, state=TrialState.RUNNING, value=None, datetime_start=dt.datetime.now(), datetime_complete=None,
            params={"family": fam}, distributions=dist, user_attrs={}, system_attrs={},
            intermediate_values={s: 0.9 for s in range(11)}, trial_id=99)

    budgeted = study_with(make_pruner("median", by_family=True, cheap_s=0.6))
    assert budgeted.pruner.prune(budgeted, running("xgboost")) is False
    assert budgeted.pruner.prune(budgeted, running("mlp")) is True
    unbudgeted = study_with(make_pruner("median", by_family=True))
    assert unbudgeted.pruner.prune(unbudgeted, running("xgboost")) is True


def test_sampler_draws_depend_on_trial_number_not_on_worker():
    import optuna

    def draws(seed):
        study = optuna.create_study(sampler=make_sampler("random", seed, ["linear"], minimize=False))
        study.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=3)
        return [t.params["x"] for t in study.trials]

    assert draws(0) == draws(0)
    assert draws(0) != draws(1)
    assert len(set(draws(0))) == 3


def test_unknown_metric_names_the_choices():
    with pytest.raises(UsageError, match="unknown metric 'rmse'") as err:
        resolve_metric("binary", "rmse")
    assert err.value.hint.startswith("choose one of: auc")
    assert resolve_metric("regression", "r2") == ("r2", True)


# --------------------------------------------------------------------------- whole studies


def test_tune_linear_on_a_validation_table(small_tables, tmp_path):
    t = small_tables["binary"]
    result = tune(str(t["train"]), valid=str(t["valid"]), target=t["target"], model="linear", trials=4, seed=0,
                    output=str(tmp_path / "p.json"), trials_out=str(tmp_path / "t.parquet"))
    d = result.to_dict()
    assert d["trials"]["complete"] == 4 and d["trials"]["total"] == 4
    assert d["metric"] == "auc" and d["direction"] == "maximize"
    assert d["best"]["defaults_value"] is not None and d["best"]["value"] >= d["best"]["defaults_value"]
    doc = json.loads((tmp_path / "p.json").read_text())
    assert doc["family"] == "linear" and set(doc["params"]) >= {"C"}
    assert doc["value"] == pytest.approx(d["best"]["value"])
    import pandas as pd

    trials = pd.read_parquet(tmp_path / "t.parquet")
    assert list(trials["number"]) == [0, 1, 2, 3]
    assert set(trials["state"]) == {"complete"} and trials["auc"].max() == pytest.approx(d["best"]["value"])
    assert bool(trials["defaults"].iloc[0]) and (trials["duration_s"] > 0).all()
    # Same seed, same search.
    again = tune(str(t["train"]), valid=str(t["valid"]), target=t["target"], model="linear", trials=4, seed=0)
    assert again.best_params == result.best_params and again.best_value == result.best_value


def test_resume_continues_the_study_and_refuses_another_problem(small_tables, tmp_path):
    t = small_tables["regression"]
    storage = f"journal:{tmp_path}/study.log"
    args = dict(valid=str(t["valid"]), target=t["target"], model="linear", storage=storage, study="ltv")
    first = tune(str(t["train"]), trials=2, **args)
    assert first.trials["total"] == 2 and first.metric == "rmse"
    second = tune(str(t["train"]), trials=4, **args)
    assert second.trials["total"] == 4 and second.trials["this_run"] == 2
    assert second.best_value <= first.best_value
    with pytest.raises(InputError, match="was made for metric='rmse'"):
        tune(str(t["train"]), trials=5, metric="mae", **args)


def test_time_ordered_folds_never_train_on_the_future(small_tables):
    import pandas as pd

    t = small_tables["binary"]
    spec = {"train": str(t["train"]), "target": t["target"], "cv": 3, "time_col": "signup_date", "seed": 0}
    problem = Problem(TuneJob(**spec))
    times = pd.read_parquet(t["train"])["signup_date"].to_numpy()
    assert len(problem.folds) == 3
    for train_idx, valid_idx in problem.folds:
        assert times[train_idx].max() <= times[valid_idx].min()


@pytest.mark.slow
def test_cv_study_records_the_rounds_early_stopping_chose(small_tables):
    t = small_tables["multiclass"]
    result = tune(str(t["train"]), cv=2, target=t["target"], model="xgboost", trials=2, seed=0,
                    params={"n_estimators": 60, "learning_rate": 0.3})
    assert result.metric == "log_loss" and result.direction == "minimize"
    assert result.best_params["n_estimators"] in range(1, 61)  # capped by the fixed --param
    assert "nthread" not in result.best_params  # how a trial runs is not part of the recipe


def test_nothing_to_search_is_a_usage_error(small_tables):
    t = small_tables["binary"]
    with pytest.raises(UsageError, match="nothing to search"):
        tune(str(t["train"]), valid=str(t["valid"]), target=t["target"], model="linear", params={"C": 1.0}, trials=2)
    with pytest.raises(UsageError, match="nothing to search"):
        tune(str(t["train"]), valid=str(t["valid"]), target=t["target"], model="baseline", trials=2)


def test_budget_too_small_for_one_trial(small_tables):
    t = small_tables["binary"]
    with pytest.raises(InputError, match="too small to finish one trial"):
        tune(str(t["train"]), valid=str(t["valid"]), target=t["target"], model="linear", timeout=0.01)


def test_grid_search_stops_when_the_grid_is_done(small_tables):
    t = small_tables["binary"]
    result = tune(str(t["train"]), valid=str(t["valid"]), target=t["target"], model="linear", sampler="grid", trials=10)
    assert result.trials["total"] == 3 and result.stopped_by == "grid"
    assert result.best_params["C"] in (1e-4, 0.1, 100.0)


@pytest.mark.slow
def test_a_trial_running_at_the_deadline_is_stopped_and_scored(small_tables, tmp_path):
    import optuna

    t = small_tables["binary"]
    storage = f"journal:{tmp_path}/s.log"
    # Endless boosting (no early stopping): only the deadline can end the first trial.
    result = tune(str(t["train"]), valid=str(t["valid"]), target=t["target"], model="xgboost", timeout=6,
                    params={"n_estimators": 1_000_000, "early_stopping_rounds": 1_000_000, "learning_rate": 0.001},
                    storage=storage, study="s", features={"drop": ["customer_id"]})
    assert result.stopped_by == "timeout" and result.trials["complete"] >= 1
    trials = optuna.load_study(study_name="s", storage=open_storage(storage)).trials
    assert trials[0].state.name == "COMPLETE" and trials[0].user_attrs["stopped_by"] == "timeout"
    # The best so far is kept and reported.
    assert result.best_value == pytest.approx(max(t.value for t in trials if t.state.name == "COMPLETE"))
    # A trial the deadline cut before it could be scored is not a failure (it used to be, in every run).
    assert all(tr.state.name != "FAIL" for tr in trials) and result.failures == []


def test_search_holds_back_the_refit_of_the_best_trial():
    """With --save-model the search ends early enough to load, featurize, fit and save the best again
    (trials on a sample or folds), or only to save the best trial's model held in memory."""
    from types import SimpleNamespace

    import optuna
    from optuna.distributions import CategoricalDistribution

    from mlsys_cli.models.tuning.budget import REFIT_RATE, SAVE_S, search_deadline

    problem = SimpleNamespace(job=SimpleNamespace(deadline=100.0, refit=True), load_s=1.0,
                              featurize_s={("hgb-features", 0): 2.0, ("linear-features", 0): 7.0},
                              key=lambda family, fold: (f"{family.name}-features", fold))
    assert search_deadline(optuna.create_study(), problem) == 100.0 - SAVE_S  # nothing to refit yet
    start = dt.datetime(2024, 1, 1)
    view = optuna.create_study(direction="maximize")
    view.add_trials([optuna.trial.FrozenTrial(
        number=i, state=optuna.trial.TrialState.COMPLETE, value=v, datetime_start=start,
        datetime_complete=start + dt.timedelta(seconds=9), params={"family": f},
        distributions={"family": CategoricalDistribution(["linear", "hgb"])}, user_attrs={"fit_s": fit},
        system_attrs={}, intermediate_values={}, trial_id=i) for i, (f, v, fit) in enumerate((("linear", 0.7, 0.5), ("hgb", 0.9, 4.0)))])
    # The best trial (hgb, 0.9) fitted in 4 s on features that took 2 s; loading took 1 s. The refit
    # does not score validation rows every round: REFIT_RATE of the trial's fit.
    fit = 4.0 * REFIT_RATE
    assert search_deadline(view, problem) == pytest.approx(100.0 - 1.0 - 2.0 - fit - SAVE_S)
    # The ensemble step's share of a 50 s budget is held back too (with --valid only).
    from mlsys_cli.models.tuning.budget import ENSEMBLE_MAX_S, ENSEMBLE_MIN_S, ensemble_reserve

    assert ensemble_reserve(100.0) == pytest.approx(3.5) and ensemble_reserve(10.0) == ENSEMBLE_MIN_S
    assert ensemble_reserve(300.0) == ENSEMBLE_MAX_S

    problem.job = SimpleNamespace(deadline=100.0, refit=True, ensemble=True, budget_s=50.0, valid="v.parquet")
    assert search_deadline(view, problem) == pytest.approx(100.0 - ensemble_reserve(50.0) - 1.0 - 2.0 - fit - SAVE_S)
    # Trials on a tenth of the rows: the refit costs up to ten times more, at most 30% of the budget.
    problem.row_factor = 10.0
    assert search_deadline(view, problem) == pytest.approx(100.0 - ensemble_reserve(50.0) - 1.0 - 15.0 - SAVE_S)
    problem.row_factor = 2.0
    assert search_deadline(view, problem) == pytest.approx(100.0 - ensemble_reserve(50.0) - 1.0 - 2.0 * (2.0 + fit) - SAVE_S)
    # The best trial's fitted model is held in memory: nothing is refitted, only the final step's share and saving.
    problem.row_factor, problem.holds_models = 1.0, True
    assert search_deadline(view, problem) == pytest.approx(100.0 - ensemble_reserve(50.0) - SAVE_S)
    problem.job.refit = False
    assert search_deadline(view, problem) == 100.0


@pytest.mark.slow
def test_a_slow_trial_gets_at_most_half_the_time_left(small_tables, tmp_path):
    import optuna

    t = small_tables["binary"]
    args = dict(valid=str(t["valid"]), target=t["target"], model="xgboost", storage=f"journal:{tmp_path}/s.log",
                study="s", features={"drop": ["customer_id"]})
    tune(str(t["train"]), trials=1, params={"n_estimators": 20}, **args)
    # Resumed with endless boosting: the study has a result, so each trial may train for half of
    # the time left and is then scored, which leaves room for the next one.
    tune(str(t["train"]), timeout=8, params={"n_estimators": 1_000_000, "early_stopping_rounds": 1_000_000}, **args)
    trials = optuna.load_study(study_name="s", storage=open_storage(args["storage"])).trials
    endless = [tr for tr in trials[1:] if tr.state.name == "COMPLETE"]
    assert len(endless) >= 2, [(tr.number, tr.state, tr.user_attrs) for tr in trials]
    assert all(tr.user_attrs["stopped_by"] == "timeout" for tr in endless)


def test_auto_starts_from_each_default_then_the_library_like_extras(small_tables, tmp_path):
    import pandas as pd

    t = small_tables["binary"]
    n = len(resolve_families("auto")) + len(AUTO_EXTRA_DEFAULTS)
    result = tune(str(t["train"]), valid=str(t["valid"]), target=t["target"], model="auto", trials=n, seed=0,
                    params={"n_estimators": 50}, trials_out=str(tmp_path / "t.parquet"))
    trials = pd.read_parquet(tmp_path / "t.parquet").sort_values("number")
    assert trials["defaults"].all() and len(trials) == n
    extras = trials.iloc[-len(AUTO_EXTRA_DEFAULTS):]
    assert list(extras["family"]) == [f for f, _ in AUTO_EXTRA_DEFAULTS]
    # The overrides are what ran (and what a retrain gets); the family's own defaults stay the baseline.
    params = [json.loads(p) if isinstance(p, str) else p for p in extras["params"]]
    # scikit-learn's HistGradientBoosting exactly as its defaults fit it (no early stopping, 100 iterations).
    assert params[0]["early_stopping"] is False and params[0]["max_iter"] == 100
    assert params[1]["kind"] == "extra" and params[2]["learning_rate"] == 0.3
    # XGBoost's likewise: every round (here the fixed 50), no early stopping on the validation rows.
    assert params[2]["early_stopping_rounds"] == 0 and params[2]["n_estimators"] == 50
    assert result.to_dict()["best"]["defaults_value"] is not None


def test_the_xgboost_library_defaults_trial_trains_every_round_with_validation_rows():
    """Early stopping on the validation log loss cut XGBoost's defaults to 7 rounds on attrition
    (validation AUC 0.811 vs 0.832 with all 100) and to 1 on flights: the trial that stands for the
    library defaults trains its 100 rounds, as the library does; the losses still reach the pruner."""
    from mlsys_cli.models.families import get_family, resolve_params

    family = get_family("xgboost")
    (overrides,) = [o for f, o in AUTO_EXTRA_DEFAULTS if f == "xgboost" and o.get("learning_rate") == 0.3]
    params = resolve_params(family, "binary", overrides)
    assert (params["learning_rate"], params["n_estimators"], params["early_stopping_rounds"]) == (0.3, 100, 0)
    assert (params["max_depth"], params["min_child_weight"], params["subsample"], params["max_bin"]) == (6, 1.0, 1.0, 256)
    rng = np.random.default_rng(0)
    X, y = rng.normal(size=(300, 4)), rng.integers(0, 2, 300)  # noise: the validation loss rises from round 1
    seen = []
    est = family.make("binary", 2, params, 0).fit(X, y, eval_set=(X[:100], rng.integers(0, 2, 100)),
                                                  callback=lambda step, loss: seen.append(step))
    assert est.fit_info_ == {"n_estimators": 100, "best_iteration": 99, "stopped_by": None} and len(seen) == 100
    stopped = family.make("binary", 2, {**params, "early_stopping_rounds": 50}, 0).fit(X, y, eval_set=(X[:100], rng.integers(0, 2, 100)))
    assert stopped.fit_info_["stopped_by"] == "early_stopping" and stopped.fit_info_["n_estimators"] < 100


def test_auto_is_never_worse_than_the_best_default_it_tried(small_tables, tmp_path):
    """Every family's default runs first, cheapest first; with more trials than defaults the answer
    is at least the best default on the validation rows, and nothing failed."""
    import pandas as pd

    t = small_tables["binary"]
    families = resolve_families("auto")
    assert families[:2] == ["linear", "hgb"]
    n = len(families) + len(AUTO_EXTRA_DEFAULTS) + 3
    result = tune(str(t["train"]), valid=str(t["valid"]), target=t["target"], model="auto", trials=n, seed=3,
                  params={"n_estimators": 40, "hgb.max_iter": 40, "mlp.max_epochs": 3}, trials_out=str(tmp_path / "t.parquet"))
    trials = pd.read_parquet(tmp_path / "t.parquet").sort_values("number")
    assert list(trials["family"].iloc[:len(families)]) == families and trials["defaults"].iloc[:len(families)].all()
    assert not trials["defaults"].iloc[-3:].any(), "searched trials follow the defaults"
    defaults = trials[trials["defaults"] & (trials["state"] == "complete")]
    d = result.to_dict()
    assert d["best"]["value"] >= defaults["auc"].max()
    assert d["failures"] == [] and d["trials"]["failed"] == 0
    rows = {r["family"]: r for r in d["families"]}
    assert sum(r["trials"] for r in rows.values()) == n and d["trials_per_s"] > 0
    assert all(r["trials_per_s"] > 0 for r in rows.values() if r["trials"])


def test_save_model_is_the_ensemble_only_where_it_is_better_on_validation(small_tables, tmp_path):
    from mlsys_cli.models.bundle import ModelBundle
    from mlsys_cli.models.combiner import EnsemblePredictor

    t = small_tables["binary"]
    common = dict(valid=str(t["valid"]), target=t["target"], trials=4, seed=0)
    result = tune(str(t["train"]), model="xgboost", params={"n_estimators": 30}, save_model=str(tmp_path / "m.mlsys"), **common)
    final = result.to_dict()["final"]
    # Chosen on the validation rows only: its cross-fitted gain over the best member is positive.
    assert final["model"] == "ensemble" and final["gain"] > 0, final
    assert isinstance(ModelBundle.load(tmp_path / "m.mlsys").predictor, EnsemblePredictor)
    # Without --storage the search held the fitted models of the two best trials per family in
    # memory: the ensemble combines them as they are (nothing stored, nothing retrained).
    assert [m["source"] for m in final["members"]] == ["held", "held"]
    assert result.storage is None and "models" not in result.outputs
    off = tune(str(t["train"]), model="xgboost", params={"n_estimators": 30}, save_model=str(tmp_path / "s.mlsys"),
               ensemble=False, **common)
    assert off.final == {"model": "single", "family": "xgboost", "reason": "--no-ensemble", "source": "held",
                         "refit": {"rows": 750, "seconds": off.final["refit"]["seconds"],
                                   "estimated_s": off.final["refit"]["estimated_s"], "refitted": 1, "of": 1,
                                   "rescaled": off.final["refit"]["rescaled"]}}
    assert not isinstance(ModelBundle.load(tmp_path / "s.mlsys").predictor, EnsemblePredictor)
    # Four nearly equal linear models: the ensemble does not beat its best member, the best trial is saved.
    linear = tune(str(t["train"]), model="linear", save_model=str(tmp_path / "l.mlsys"), **common)
    assert linear.final["model"] == "single" and "gain" in linear.final["reason"]
    assert not isinstance(ModelBundle.load(tmp_path / "l.mlsys").predictor, EnsemblePredictor)
    cv = tune(str(t["train"]), cv=2, target=t["target"], model="linear", trials=2, save_model=str(tmp_path / "c.mlsys"))
    assert cv.final["model"] == "single" and "cross-validation" in cv.final["reason"]


def test_big_tables_under_a_timeout_run_trials_on_a_seeded_row_sample(tmp_path):
    import pandas as pd

    from mlsys_cli.models.families import get_family
    from mlsys_cli.models.tuning.final import no_ensemble_reason
    from mlsys_cli.models.tuning.job import MIN_SAMPLE, SAMPLE_FACTOR, trial_rows
    from mlsys_cli.models.tuning.kept import _not_kept_reason

    rng = np.random.default_rng(0)
    n = SAMPLE_FACTOR * MIN_SAMPLE + 2_000
    frame = pd.DataFrame({"x": rng.normal(size=n), "y": rng.normal(size=n)})
    frame.to_parquet(tmp_path / "train.parquet", index=False)
    frame[:500].to_parquet(tmp_path / "valid.parquet", index=False)
    base = dict(train=str(tmp_path / "train.parquet"), valid=str(tmp_path / "valid.parquet"), target="y",
                model_families=("linear",), refit=True, ensemble=True)
    # No budget, or cross-validation: every row. A budget: 500 rows per second, at least MIN_SAMPLE.
    assert trial_rows(TuneJob(**base), n) is None and trial_rows(TuneJob(**{**base, "valid": None, "budget_s": 5}), n) is None
    assert trial_rows(TuneJob(**base, budget_s=5), n) == MIN_SAMPLE
    assert trial_rows(TuneJob(**base, budget_s=30), n) is None  # 15,000 rows: the table is not big for 30 s
    # A table less than SAMPLE_FACTOR times the sample is not sampled (the trials would hardly be cheaper).
    assert trial_rows(TuneJob(**base, budget_s=5), SAMPLE_FACTOR * MIN_SAMPLE) is None
    problem = Problem(TuneJob(**base, budget_s=5))
    (rows, valid_rows), = problem.folds
    assert valid_rows is None and len(rows) == MIN_SAMPLE == problem.sample_rows
    assert (np.diff(rows) > 0).all() and rows.max() < n  # distinct rows, in table order
    assert problem.row_factor == pytest.approx(n / MIN_SAMPLE)
    # The final refit also takes the validation rows (500) unless --no-refit-valid: its cost is planned on them too.
    assert Problem(TuneJob(**base, budget_s=5, refit_valid=True)).row_factor == pytest.approx((n + 500) / MIN_SAMPLE)
    np.testing.assert_array_equal(Problem(TuneJob(**base, budget_s=5)).folds[0][0], rows)  # seeded
    X, y, *_ = problem.matrices(get_family("linear"), 0)
    assert len(X) == len(y) == MIN_SAMPLE
    # A model fitted on a sample is not kept, and the saved model is the best one refitted on every row.
    assert "sample" in _not_kept_reason(problem, get_family("linear"), 0.1, None)
    assert "retrained on every row" in no_ensemble_reason(None, problem)
    # Nor is a model fitted on the sample held for the final model.
    assert not problem.holds_models
    problem.hold(0, "linear", object(), 0.5)
    assert problem.held == {}
    assert Problem(TuneJob(**base)).sample_rows is None



def test_trials_on_a_row_sample_save_the_best_configuration_refitted_on_train_and_valid(tmp_path):
    """After trials on a row sample the best configuration is retrained on every row: of train and
    valid (the rounds its trial chose, no holdout), as a held model is refitted; with
    --no-refit-valid on the training rows, early stopping on valid. (flights: 0.6109 test AUC for
    the HistGradientBoosting defaults on train, 0.6160 on train + valid.)"""
    import pandas as pd

    from mlsys_cli.models.bundle import ModelBundle
    from mlsys_cli.models.tuning.job import MIN_SAMPLE, SAMPLE_FACTOR

    rng = np.random.default_rng(0)
    n = SAMPLE_FACTOR * MIN_SAMPLE + 2_000
    x = rng.normal(size=(n + 1_000, 2))
    frame = pd.DataFrame({"a": x[:, 0], "b": x[:, 1], "y": x[:, 0] * x[:, 1] + rng.normal(scale=0.1, size=len(x))})
    frame[:n].to_parquet(tmp_path / "train.parquet", index=False)
    frame[n:].to_parquet(tmp_path / "valid.parquet", index=False)
    common = dict(valid=str(tmp_path / "valid.parquet"), target="y", model="hgb", timeout=20, trials=2, seed=0,
                  params={"max_iter": 30})
    on = tune(str(tmp_path / "train.parquet"), save_model=str(tmp_path / "on.mlsys"), **common)
    assert on.trial_rows == MIN_SAMPLE and on.final["source"] == "retrained"
    assert on.final["refit"] == {"rows": n + 1_000}
    recipe = ModelBundle.load(tmp_path / "on.mlsys").manifest["recipe"]
    assert len(recipe["data"]["train"]) == 2 and recipe["data"]["valid"] is None
    assert recipe["params"]["max_iter"] == on.best_params["max_iter"] and recipe["params"]["early_stopping"] is False
    off = tune(str(tmp_path / "train.parquet"), save_model=str(tmp_path / "off.mlsys"), refit_valid=False, **common)
    assert off.final["refit"] == {"rows": n}
    recipe = ModelBundle.load(tmp_path / "off.mlsys").manifest["recipe"]
    assert len(recipe["data"]["train"]) == 1 and recipe["data"]["valid"] is not None


# --------------------------------------------------------------------------- the budget, end to end


def test_the_budget_counts_from_the_given_start_and_reserves_the_exit(small_tables, tmp_path):
    """A run started 3 s before the call (the CLI: its process start) keeps a deadline 3 s earlier
    than one counted from the call; the accounting says where the budget went."""
    import time

    from mlsys_cli.models.tuning.budget import EXIT_S, process_started

    own = process_started()
    assert own is not None and time.time() - 600 < own <= time.time()
    t = small_tables["binary"]
    progress = _ThreadCheck()
    result = tune(str(t["train"]), valid=str(t["valid"]), target=t["target"], model="hgb", timeout=30, trials=2,
                  started=time.time() - 3.0, params={"max_iter": 20}, save_model=str(tmp_path / "m.mlsys"), progress=progress)
    b = result.budget
    assert b["timeout_s"] == 30 and b["startup_s"] >= 3.0 and b["deadline_s"] == pytest.approx(30 - EXIT_S)
    # The search stopped by its own deadline, before the final model was made and written.
    assert b["search_deadline_s"] <= b["deadline_s"] and b["search_end_s"] <= b["outputs_end_s"]
    assert result.elapsed_s >= b["outputs_end_s"] >= 3.0
    # Every trial ran with OpenMP limited to one thread on this small table (fits and predictions).
    assert progress.threads and set(progress.threads) == {1}
    # The saved model is the best trial's own fitted model (or the held models' ensemble): no refit.
    assert result.final["model"] == "ensemble" or result.final["source"] == "held"


class _ThreadCheck:
    """A progress object recording the OpenMP thread limits in force while the trials run."""

    def __init__(self):
        self.threads = []

    def update(self, **_):
        from threadpoolctl import threadpool_info

        self.threads += [i["num_threads"] for i in threadpool_info() if i["user_api"] == "openmp"]


def test_held_models_are_each_familys_best_and_the_final_step_skips_what_cannot_fit(small_tables):
    import time

    from mlsys_cli.models.tuning.final import ENSEMBLE_COST, _no_time_reason
    from mlsys_cli.models.tuning.problem import HELD

    t = small_tables["binary"]
    job = TuneJob(train=str(t["train"]), valid=str(t["valid"]), target=t["target"], model_families=("linear",),
                  refit=True, ensemble=True)
    problem = Problem(job)
    assert problem.holds_models
    for number, value in enumerate((0.70, 0.80, 0.75, 0.60)):
        problem.hold(number, "linear", f"model{number}", value)  # AUC: higher is better
    assert [n for _, n, _ in problem.held["linear"]] == [1, 2][:HELD]
    assert problem.held_model(1) == "model1" and problem.held_model(3) is None
    # Building the members' bundles took 1 s: the ensemble step needs about ENSEMBLE_COST times that.
    members = [("a", None), ("b", None)]
    soon = job.replace(deadline=time.time() + ENSEMBLE_COST / 2)
    problem.job = soon
    assert "no time left for the ensemble step" in _no_time_reason(problem, members, 1.0)
    problem.job = job.replace(deadline=time.time() + 10 * ENSEMBLE_COST)
    assert _no_time_reason(problem, members, 1.0) is None
    problem.job = job  # no deadline, or a single member: nothing to skip for time
    assert _no_time_reason(problem, members, 100.0) is None and _no_time_reason(problem, members[:1], 1.0) is None


@pytest.mark.slow
def test_save_model_is_refitted_on_train_and_valid_with_the_rounds_early_stopping_chose(small_tables, tmp_path):
    """Once chosen on the validation rows, the saved model (each ensemble member) is fitted again
    on train + valid with the rounds it kept, the ensemble's weights unchanged; deterministic."""
    import pandas as pd

    from mlsys_cli.models.bundle import ModelBundle
    from mlsys_cli.models.combiner import EnsemblePredictor

    t = small_tables["regression"]
    test = pd.read_parquet(t["test"])
    common = dict(valid=str(t["valid"]), target=t["target"], model="hgb", trials=3, seed=0, ensemble=False)
    on = tune(str(t["train"]), save_model=str(tmp_path / "on.mlsys"), **common)
    assert on.final["refit"]["rows"] == 500 + 250 and on.final["source"] == "held"
    bundle = ModelBundle.load(tmp_path / "on.mlsys")
    recipe = bundle.manifest["recipe"]
    assert len(recipe["data"]["train"]) == 2 and recipe["data"]["valid"] is None
    # The rounds early stopping chose on the validation rows, no early stopping on the refit.
    assert recipe["params"]["max_iter"] == on.best_params["max_iter"] == recipe["fit"]["n_estimators"]
    assert recipe["params"]["early_stopping"] is False
    off = tune(str(t["train"]), save_model=str(tmp_path / "off.mlsys"), refit_valid=False, **common)
    assert off.final["refit"] == {"rows": None, "reason": "off (--no-refit-valid)"}
    assert (off.best_trial, off.best_params) == (on.best_trial, on.best_params)  # the same search; only the final fit differs
    scores = bundle.predictor.predict_scores(test)
    assert not np.allclose(scores, ModelBundle.load(tmp_path / "off.mlsys").predictor.predict_scores(test))
    again = tune(str(t["train"]), save_model=str(tmp_path / "again.mlsys"), **common)
    assert np.array_equal(scores, ModelBundle.load(tmp_path / "again.mlsys").predictor.predict_scores(test))

    b = small_tables["binary"]
    ens = tune(str(b["train"]), valid=str(b["valid"]), target=b["target"], model="xgboost", params={"n_estimators": 30},
               trials=4, seed=0, save_model=str(tmp_path / "ens.mlsys"))
    assert ens.final["model"] == "ensemble" and ens.final["refit"]["rows"] == 750, ens.final
    saved = ModelBundle.load(tmp_path / "ens.mlsys")
    assert isinstance(saved.predictor, EnsemblePredictor)
    # Every member was refitted on both tables, and the weights are those learned on valid.
    members = saved.manifest["recipe"]["members"]
    assert {m["source"] for m in members} == {"refitted on train + valid"}
    assert all(len(m["recipe"]["data"]["train"]) == 2 and m["recipe"]["data"]["valid"] is None for m in members)
    assert len(saved.manifest["recipe"]["data"]["train"]) == 2
    assert sorted(w for w in saved.predictor.combiner.to_dict()["weights"] if w) == pytest.approx(
        sorted(m["weight"] for m in ens.final["members"] if m["weight"]))


def test_refit_params_fix_the_rounds_and_its_cost_is_reserved_only_when_it_fits():
    from types import SimpleNamespace

    from mlsys_cli.models.tuning.budget import REFIT_RATE
    from mlsys_cli.models.tuning.refit import SHARE, all_rows_params, cost, kept_share, reserve

    # HistGradientBoosting keeps its trial's rounds (no 10% holdout above 10k rows); the MLP trains
    # its best epoch count on every row, without a holdout; the others as they were.
    assert all_rows_params("hgb", {"max_iter": 37}, None) == {"max_iter": 37, "early_stopping": False}
    mlp = SimpleNamespace(fit_info_={"n_epochs": 40, "best_epoch": 28})
    assert all_rows_params("mlp", {"width": 64, "max_epochs": 200}, mlp) == {"width": 64, "max_epochs": 28, "valid_fraction": 0.0}
    assert all_rows_params("linear", {"C": 1.0}, None) == {"C": 1.0}
    assert kept_share(mlp) == pytest.approx(0.7) and kept_share(None) == 1.0
    # A trial that fitted in 2 s (the MLP kept 70% of its epochs) on 500 rows, refitted on 750.
    job = SimpleNamespace(refit_valid=True, budget_s=60.0)
    problem = SimpleNamespace(job=job, holds_models=True, train_df=[0] * 500, valid_df=[0] * 250,
                              held={"mlp": [(0.3, 4, mlp)]}, fit_s={4: 2.0}, featurize_s={("mlp-f", 0): 0.5},
                              key=lambda family, fold: (f"{family.name}-f", fold), held_family=lambda n: "mlp",
                              held_model=lambda n: mlp)
    from mlsys_cli.models.tuning.budget import OVERHEAD_ROW_S
    from mlsys_cli.models.tuning.refit import OVERHEAD_S

    assert cost(problem, [4]) == pytest.approx(1.5 * (REFIT_RATE * 2.0 * 0.7 + 0.5) + OVERHEAD_S + 750 * OVERHEAD_ROW_S)
    assert reserve(problem) == pytest.approx(cost(problem, [4]))
    job.budget_s = cost(problem, [4]) / SHARE / 2  # costlier than its share of the budget: not planned
    assert reserve(problem) == 0.0
    job.budget_s, job.refit_valid = 60.0, False
    assert reserve(problem) == 0.0


def test_writing_a_forest_is_counted_before_the_ensemble_step_and_in_the_search_deadline():
    """A forest's trees grow with the rows and skops writes them node by node: a 32k-row forest
    member made a 60 s run's ensemble step take 30 s. Its writing time is counted."""
    import time
    from types import SimpleNamespace

    from mlsys_cli.models.tuning.budget import SAVE_S, search_deadline
    from mlsys_cli.models.tuning.final import WRITE_NODES_PER_S, _no_time_reason, write_seconds

    trees = [SimpleNamespace(tree_=SimpleNamespace(node_count=50_000)) for _ in range(4)]
    forest = SimpleNamespace(estimator=SimpleNamespace(estimators_=trees))
    assert write_seconds(forest) == pytest.approx(200_000 / WRITE_NODES_PER_S)
    assert write_seconds(SimpleNamespace(estimator=object())) == 0.0 and write_seconds(None) == 0.0
    member = SimpleNamespace(predictor=SimpleNamespace(estimator=forest))
    job = SimpleNamespace(deadline=time.time() + write_seconds(forest) + SAVE_S + 0.5)
    problem = SimpleNamespace(job=job)
    assert "no time left for the ensemble step" in _no_time_reason(problem, [("a", member), ("b", member)], 0.0)
    assert _no_time_reason(problem, [("a", None), ("b", None)], 0.0) is None
    # The best held model is the forest: the search stops early enough to write it.
    held = SimpleNamespace(job=SimpleNamespace(deadline=100.0, refit=True, refit_valid=False), holds_models=True,
                           held={"forest": [(0.1, 3, forest)], "linear": [(0.2, 1, None)]})
    assert search_deadline(None, held) == pytest.approx(100.0 - SAVE_S - write_seconds(forest))


def test_an_ensemble_leaves_out_a_member_too_slow_to_write_instead_of_the_ensemble(monkeypatch):
    """diamonds at 60 s: the second-best family was a forest that needed ~7 s to write of the ~6 s
    left, and the whole ensemble step was skipped. That member is left out (the best never is)
    and the next best trial of another family takes its place."""
    import time
    from types import SimpleNamespace

    import optuna
    from optuna.distributions import CategoricalDistribution

    from mlsys_cli.models.tuning import kept
    from mlsys_cli.models.tuning.final import SAVE_S, TOP, _held_members, write_seconds

    trees = [SimpleNamespace(tree_=SimpleNamespace(node_count=100_000)) for _ in range(7)]
    forest = SimpleNamespace(estimator=SimpleNamespace(estimators_=trees))
    models = {0: "hgb-model", 1: forest, 2: "xgb-model", 3: "mlp-model"}
    families = {0: "hgb", 1: "forest", 2: "xgboost", 3: "mlp"}

    def frozen(n, value):
        return optuna.trial.FrozenTrial(
            number=n, state=optuna.trial.TrialState.COMPLETE, value=value, datetime_start=None, datetime_complete=None,
            params={"family": families[n]}, distributions={"family": CategoricalDistribution(list(families.values()))},
            user_attrs={"params": {"n": n}}, system_attrs={}, intermediate_values={}, trial_id=n)

    done = [frozen(n, value) for n, value in ((0, 540.0), (1, 545.0), (2, 548.0), (3, 560.0))]
    study = SimpleNamespace(get_trials=lambda deepcopy, states: done)
    monkeypatch.setattr(kept, "trial_bundle", lambda t, problem, family, est, value: est)
    left = 6.0  # seconds; the forest needs 7 to be written
    assert write_seconds(forest) > left / TOP
    problem = SimpleNamespace(job=SimpleNamespace(deadline=time.time() + left + SAVE_S, study="s"), higher=False,
                              held_model=models.get)
    assert [est for _, est in _held_members(study, problem, TOP)] == ["hgb-model", "xgb-model", "mlp-model"]
    problem.job.deadline = time.time() + TOP * write_seconds(forest) + SAVE_S + 5.0  # time to write it
    assert [est for _, est in _held_members(study, problem, TOP)] == ["hgb-model", forest, "xgb-model"]
    problem.job.deadline = None
    assert [est for _, est in _held_members(study, problem, TOP)] == ["hgb-model", forest, "xgb-model"]
    # The best trial is never left out (its model is the fallback the step saves).
    problem.job.deadline = time.time() + left + SAVE_S
    done[1] = frozen(1, 500.0)
    assert [est for _, est in _held_members(study, problem, TOP)][0] is forest
