"""Planning the end of a budgeted ``tune --save-model``: what the search holds back for the
final step, the refit of the members that fit, and the reserve handed back to the search once
the final model is chosen. Costs and clocks are injected: no timing is measured here."""

from __future__ import annotations

from types import SimpleNamespace

import pytest


def frozen(number: int, family: str, value: float):
    import optuna
    from optuna.distributions import CategoricalDistribution

    return optuna.trial.FrozenTrial(
        number=number, state=optuna.trial.TrialState.COMPLETE, value=value, datetime_start=None,
        datetime_complete=None, params={"family": family},
        distributions={"family": CategoricalDistribution(["hgb", "xgboost", "mlp", "linear"])},
        user_attrs={"params": {"n": number}}, system_attrs={}, intermediate_values={}, trial_id=number)


def held_problem(costs: dict[int, float], families: dict[int, str], values: dict[int, float], budget_s: float = 60.0):
    """A problem holding one model per trial, each trial's refit costing ``costs`` seconds (fit
    seconds on as many training as validation rows, so the refit scales them by 2; no
    featurizing), lower values better (RMSE)."""
    from mlsys_cli.models.tuning.budget import OVERHEAD_ROW_S, OVERHEAD_S, REFIT_RATE

    held: dict[str, list] = {}
    for n, fam in families.items():
        held.setdefault(fam, []).append((values[n], n, None))
    job = SimpleNamespace(deadline=1000.0, refit=True, refit_valid=True, ensemble=True, budget_s=budget_s, valid="v")
    return SimpleNamespace(
        job=job, holds_models=True, held=held, higher=False, train_df=[0] * 100, valid_df=[0] * 100,
        fit_s={n: (c - OVERHEAD_S - 200 * OVERHEAD_ROW_S) / 2 / REFIT_RATE for n, c in costs.items()}, featurize_s={}, final_plan=None, sample_rows=None, selection_skipped=None,
        key=lambda family, fold: (family.name, fold), held_family=families.get, held_model=lambda n: None)


def study_of(trials):
    trials = list(trials)
    return SimpleNamespace(get_trials=lambda deepcopy=False, states=None: list(trials))


FAMILIES = {0: "hgb", 1: "xgboost", 2: "mlp", 3: "xgboost"}
VALUES = {0: 5.0, 1: 4.8, 2: 4.9, 3: 4.85}


def test_the_search_plans_the_refit_of_the_ensembles_candidates_within_the_share():
    from mlsys_cli.models.tuning.budget import SHARE, cost, planned, reserve, within_share

    costs = {0: 2.0, 1: 3.0, 2: 4.0, 3: 1.0}
    problem = held_problem(costs, FAMILIES, VALUES)
    study = study_of(frozen(n, FAMILIES[n], VALUES[n]) for n in FAMILIES)
    assert cost(problem, [2]) == pytest.approx(4.0)
    # The candidates are the best of each family first (xgboost 1, mlp 2, hgb 0), not trial 3.
    assert planned(problem, study) == [1, 2, 0]
    assert reserve(problem, study) == pytest.approx(3.0 + 4.0 + 2.0)
    # Without the study (or the ensemble off) only the best trial's refit is planned.
    assert planned(problem) == [1]
    # A member whose refit passes what the share has left is passed over; a cheaper one after it still fits.
    assert within_share(problem, [1, 2, 0], 5.5) == [1, 0]
    problem.job.budget_s = 5.5 / SHARE
    assert reserve(problem, study) == pytest.approx(3.0 + 2.0)
    problem.job.refit_valid = False
    assert reserve(problem, study) == 0.0


def test_once_the_final_model_is_chosen_the_search_gets_back_what_it_does_not_need():
    """A single final model frees the ensemble step's share and the other candidates' refit; an
    ensemble of two frees the third candidate's refit. That is the time the resumed search gets."""
    from mlsys_cli.models.tuning.budget import SAVE_S, ensemble_reserve, search_deadline

    costs = {0: 2.0, 1: 3.0, 2: 4.0, 3: 1.0}
    problem = held_problem(costs, FAMILIES, VALUES)
    study = study_of(frozen(n, FAMILIES[n], VALUES[n]) for n in FAMILIES)
    undecided = search_deadline(study, problem)
    assert undecided == pytest.approx(1000.0 - ensemble_reserve(60.0) - 9.0 - SAVE_S)
    problem.final_plan = "single"
    assert search_deadline(study, problem) == pytest.approx(1000.0 - 3.0 - SAVE_S)
    assert search_deadline(study, problem) - undecided == pytest.approx(ensemble_reserve(60.0) + 6.0)
    problem.final_plan = (1, 0)
    assert search_deadline(study, problem) == pytest.approx(1000.0 - 3.0 - 2.0 - SAVE_S)
    # Trials on a row sample are never ensembled: no share was held back for it.
    problem.final_plan, problem.sample_rows, problem.holds_models = None, 10_000, False
    problem.load_s, problem.row_factor = 0.0, 1.0
    assert search_deadline(study_of([]), problem) == pytest.approx(1000.0 - SAVE_S)


def test_the_refit_refits_the_members_that_fit_best_first_and_keeps_the_others(monkeypatch):
    from mlsys_cli.models.tuning import refit

    costs = {0: 2.0, 1: 3.0, 2: 6.0}
    problem = held_problem(costs, {0: "hgb", 1: "xgboost", 2: "mlp"}, {0: 5.0, 1: 4.8, 2: 4.9})
    clock = [1000.0]  # each refit takes exactly its estimate
    monkeypatch.setattr(refit, "time", SimpleNamespace(time=lambda: clock[0]))
    # The best (3 s) fits, then the mlp (6 s) does not fit the 2.5 s left, hgb (2 s) does.
    problem.job.deadline = clock[0] + refit.SAVE_S + 5.5
    fitted = []

    def fake_fit(problem, trial, stop):
        fitted.append(trial.number)
        if clock[0] + costs[trial.number] > stop:  # cut at its stop, as the families' fits are
            clock[0] = stop
            return None
        clock[0] += costs[trial.number]
        return SimpleNamespace(predictor=f"refit{trial.number}", manifest={"recipe": {"data": {"train": ["train", "valid"]}}})

    monkeypatch.setattr(refit, "fit_all_rows", fake_fit)
    members = [(1, "p1"), (2, "p2"), (0, "p0")]
    ens = SimpleNamespace(kind="ensemble", members=["p1", "p2", "p0"], input_schema=[{"name": "x"}])
    manifest = {"recipe": {"members": [{"model": "a"}, {"model": "b"}, {"model": "c"}], "data": {"train": ["train"]}}}
    bundle = SimpleNamespace(predictor=ens, manifest=manifest)
    study = study_of(frozen(n, "hgb", 1.0) for n in (0, 1, 2))
    monkeypatch.setattr("mlsys_cli.models.bundle.ModelBundle", lambda manifest, predictor: SimpleNamespace(manifest=manifest, predictor=predictor))
    out, done = refit.refit_final(study, problem, bundle, members)
    assert fitted == [1, 0]
    assert (done["refitted"], done["of"], done["rows"]) == (2, 3, 200) and done["estimated_s"] == pytest.approx(11.0)
    assert out.predictor.members == ["refit1", "p2", "refit0"]
    sources = [m.get("source") for m in out.manifest["recipe"]["members"]]
    assert sources == ["refitted on train + valid", None, "refitted on train + valid"]
    assert out.manifest["recipe"]["data"]["train"] == ["train", "valid"]
    # Saving writes the members: a forest member's nodes (grown by the rows the refit adds) leave less time.
    from mlsys_cli.models.tuning.budget import WRITE_NODES_PER_S

    trees = [SimpleNamespace(tree_=SimpleNamespace(node_count=int(0.5 * WRITE_NODES_PER_S)))]  # 0.5 s, 1 s refitted
    forest = SimpleNamespace(estimator=SimpleNamespace(estimator=SimpleNamespace(estimators_=trees)))
    fitted.clear()
    problem.job.deadline = clock[0] + refit.SAVE_S + 5.5  # 1.5 s to write it: after the best, 1.5 s left
    ens.members = ["p1", "p2", forest]
    manifest["recipe"]["members"] = [{"model": "a"}, {"model": "b"}, {"model": "c"}]
    out, done = refit.refit_final(study, problem, SimpleNamespace(predictor=ens, manifest=manifest),
                                  [(1, "p1"), (2, "p2"), (0, forest)])
    # hgb's 2 s estimate passes the 1.5 s left, but the search is over and its fit stops at the
    # deadline: it is tried (here cut short, so it stays as fitted on the training rows).
    assert fitted == [1, 0] and done["refitted"] == 1 and clock[0] <= problem.job.deadline
    assert out.predictor.members == ["refit1", "p2", forest]
    # A linear member's fit cannot be cut: only started where its estimate fits.
    fitted.clear()
    problem.held_family = {0: "linear", 1: "xgboost", 2: "mlp"}.get
    linear_study = study_of([frozen(0, "linear", 1.0), frozen(1, "hgb", 1.0), frozen(2, "hgb", 1.0)])
    problem.job.deadline = clock[0] + refit.SAVE_S + 5.5
    ens.members = ["p1", "p2", forest]
    manifest["recipe"]["members"] = [{"model": "a"}, {"model": "b"}, {"model": "c"}]
    out, done = refit.refit_final(linear_study, problem, SimpleNamespace(predictor=ens, manifest=manifest),
                                  [(1, "p1"), (2, "p2"), (0, forest)])
    assert fitted == [1] and done["refitted"] == 1
    # Nothing fits: the bundle is saved as chosen, and the report says why.
    problem.job.deadline = clock[0] + refit.SAVE_S + 1.0
    same, done = refit.refit_final(study, problem, SimpleNamespace(predictor=SimpleNamespace(kind="mlp")), [(1, "p1")])
    assert done["rows"] is None and done["refitted"] == 0 and "no time" in done["reason"]


class StudyStub:
    """The trials of a study so far (lower values better); trials run while resumed are appended."""

    def __init__(self, trials):
        self.trials = list(trials)

    def get_trials(self, deepcopy=False, states=None):
        return list(self.trials)

    @property
    def best_trial(self):
        return min(self.trials, key=lambda t: (t.value, t.number))


@pytest.mark.parametrize("model, resumed_value, expected", [
    ("single", 4.5, "single:3"),       # a better trial found while resumed becomes the final model
    ("single", None, "single:1"),      # nothing better: the same best trial
    ("ensemble", 4.75, "ensemble"),    # better than the best member by less than the ensemble's gain
    ("ensemble", 4.6, "single:3"),     # better than the ensemble's cross-fitted score: that trial
])
def test_the_reserve_is_handed_back_to_the_search_once_the_final_model_is_chosen(monkeypatch, model, resumed_value, expected):
    from mlsys_cli.models.tuning import command, final

    study = StudyStub(frozen(n, FAMILIES[n], VALUES[n]) for n in (0, 1, 2))
    problem = held_problem({0: 1.0, 1: 1.0, 2: 1.0}, FAMILIES, VALUES)
    problem.job.workers, problem.job.engine = 1, None

    predictors = {n: object() for n in (0, 1, 2)}

    def member(n):
        return (f"trial{n}", SimpleNamespace(predictor=predictors[n], manifest={"recipe": {"study": {"trial": n}}}))

    def fake_choose(study, problem, family):
        if model == "single":
            return final.Choice("single:1", [member(1)], {"model": "single", "reason": "gain not above 0"})
        # The ensemble kept trials 1 and 2 of its three candidates; its cross-fitted gain is 0.1.
        ens = SimpleNamespace(predictor=SimpleNamespace(members=[predictors[1], predictors[2]]))
        return final.Choice(ens, [member(1), member(2), member(0)], {"model": "ensemble", "gain": 0.1})

    plans = []

    def fake_run_trials(study, problem, plan, progress):
        plans.append(problem.final_plan)
        if resumed_value is not None:
            study.trials.append(frozen(3, "xgboost", resumed_value))
        return {"ran": 1, "stopped_by": "timeout", "search_deadline": 990.0}

    monkeypatch.setattr(final, "choose", fake_choose)
    # The table is not cross-validated here (tests/models/test_tune_select.py covers that choice).
    monkeypatch.setattr("mlsys_cli.models.tuning.select.choose", lambda study, problem: None)
    monkeypatch.setattr(final, "single", lambda study, problem, family, why, held=None: final.Choice(
        f"single:{study.best_trial.number}", [], {"model": "single", "reason": why}))
    monkeypatch.setattr(command, "run_trials", fake_run_trials)
    choice, mine = command.choose_and_hand_back(study, (problem, None), {"ran": 5, "stopped_by": "timeout"})
    # The resumed search planned only the chosen model's refit: the best trial, or the ensemble's members.
    assert plans == (["single"] if model == "single" else [(1, 2)])
    assert (choice.info["model"] if choice.info["model"] == "ensemble" else choice.bundle) == expected
    assert mine["ran"] == 6 and mine["resumed"]["trials"] == 1 and mine["search_deadline"] == 990.0
    # Nothing is handed back without a deadline (or with workers sharing the study).
    problem.job.deadline = None
    assert command.choose_and_hand_back(study, (problem, None), {"ran": 5}) == (None, {"ran": 5})


def test_the_first_refitted_members_measured_seconds_rescale_the_others_estimates(monkeypatch):
    """Three members estimated at 10 s each, 12 s of share: the first refit takes 4 s (the
    trials' seconds overestimated it), so the others are estimated at 4 s and fit too; planned
    on the raw estimates only the first would have been refitted."""
    from mlsys_cli.models.tuning import refit

    costs = {0: 10.0, 1: 10.0, 2: 10.0}
    problem = held_problem(costs, {0: "hgb", 1: "xgboost", 2: "mlp"}, {0: 5.0, 1: 4.8, 2: 4.9})
    clock = [1000.0]
    monkeypatch.setattr(refit, "time", SimpleNamespace(time=lambda: clock[0]))
    problem.job.deadline = clock[0] + 100.0
    problem.job.budget_s = 12.0 / refit.SHARE
    fitted = []

    def fake_fit(problem, trial, deadline):
        fitted.append(trial.number)
        clock[0] += 4.0
        return SimpleNamespace(predictor=f"refit{trial.number}", manifest={"recipe": {"data": {"train": ["train", "valid"]}}})

    monkeypatch.setattr(refit, "fit_all_rows", fake_fit)
    ens = SimpleNamespace(kind="ensemble", members=["p1", "p2", "p0"], input_schema=[{"name": "x"}])
    manifest = {"recipe": {"members": [{"model": "a"}, {"model": "b"}, {"model": "c"}], "data": {"train": ["train"]}}}
    monkeypatch.setattr("mlsys_cli.models.bundle.ModelBundle", lambda manifest, predictor: SimpleNamespace(manifest=manifest, predictor=predictor))
    study = study_of(frozen(n, "hgb", 1.0) for n in (0, 1, 2))
    out, done = refit.refit_final(study, problem, SimpleNamespace(predictor=ens, manifest=manifest), [(1, "p1"), (2, "p2"), (0, "p0")])
    assert fitted == [1, 2, 0] and done["refitted"] == 3
    assert done["rescaled"] == pytest.approx(0.4) and done["estimated_s"] == pytest.approx(10.0 + 4.0 + 4.0)
    # Underestimated instead: the first takes 4 s for an estimate of 2 s, so the others count 4 s each.
    fitted.clear()
    problem = held_problem({0: 2.0, 1: 2.0, 2: 2.0}, {0: "hgb", 1: "xgboost", 2: "mlp"}, {0: 5.0, 1: 4.8, 2: 4.9})
    problem.job.deadline, problem.job.budget_s = clock[0] + refit.SAVE_S + 9.0, 9.0 / refit.SHARE
    out, done = refit.refit_final(study, problem, SimpleNamespace(predictor=ens, manifest=manifest), [(1, "p1"), (2, "p2"), (0, "p0")])
    # 4 s used of 9: the second (4 s rescaled) fits, the third (4 s) no longer does (1 s left,
    # too little to try).
    assert fitted == [1, 2] and done["rescaled"] == pytest.approx(2.0)


def selection_problem(fit_s: dict[int, float], budget_s: float = 60.0):
    problem = held_problem({n: 1.0 for n in fit_s}, {n: "xgboost" for n in fit_s}, {n: 5.0 for n in fit_s}, budget_s)
    problem.job.workers, problem.job.engine, problem.job.time_col = 1, None, None
    return problem


def timed(number: int, family: str, value: float, fit_s: float, defaults: bool = False):
    t = frozen(number, family, value)
    t.user_attrs.update(fit_s=fit_s, **({"defaults": True} if defaults else {}), **({"best_epoch": 9} if family == "mlp" else {}))
    return t


def test_the_search_holds_back_the_folds_of_the_candidates_that_fit_in_their_share():
    """The candidates are the best of each family first, then every defaults trial (a family's
    first, however it scored on the validation rows); the search holds back their folds' cost
    while it fits in CV_SHARE of the budget, instead of the ensemble step's share."""
    from mlsys_cli.models.tuning.budget import (CV_FOLDS_MIN, CV_SHARE, REFIT_RATE, SAVE_S, ensemble_reserve, reserve, search_deadline,
                                                selection_candidates, selection_cost, selection_plan, selection_planned, selection_reserve)

    # Lower is better: trial 4 (xgboost) is the best, trial 0 (hgb defaults) scored worst on valid.
    trials = [timed(0, "hgb", 5.3, 0.2, True), timed(1, "xgboost", 5.0, 0.1, True), timed(2, "mlp", 5.1, 0.4, True),
              timed(3, "xgboost", 4.95, 0.1), timed(4, "xgboost", 4.8, 0.1), timed(5, "linear", 5.2, 0.05, True)]
    problem = selection_problem({t.number: 0.1 for t in trials})
    study = study_of(trials)
    order = [t.number for t in selection_candidates(study, problem)]
    # The best trials of the two best families (4, 2), each family's first defaults trial by value
    # (1, 5, 0), then the rest of the CV_TOP best distinct ones (best of each family first: 4, 2,
    # 5, 0, all in already): trial 3 is none.
    assert order == [4, 2, 1, 5, 0]
    # Library defaults (overrides) come after the best distinct configurations.
    extra = timed(6, "hgb", 4.9, 0.1, True)
    extra.user_attrs["overrides"] = {"early_stopping": False}
    assert [t.number for t in selection_candidates(study_of(trials + [extra]), problem)] == [4, 6, 1, 2, 5, 0]
    one = selection_cost(problem, [trials[2]])
    # 5 folds of (k-1)/k of train + valid (twice the training rows here) at REFIT_RATE of the trial's seconds.
    assert one == pytest.approx(5 * (200 * 4 / 5 / 100) * REFIT_RATE * 0.4)
    assert [t.number for t in selection_planned(study, problem)] == order
    problem.job.budget_s = selection_cost(problem, selection_candidates(study, problem)[:2]) / CV_SHARE + 1e-9
    assert [t.number for t in selection_planned(study, problem)] == [4, 2]
    # The folds replace the ensemble step's share; the refit of the candidates is still held back.
    folds = selection_reserve(study, problem)
    assert search_deadline(study, problem) == pytest.approx(1000.0 - folds - reserve(problem, study) - SAVE_S)
    assert folds != pytest.approx(ensemble_reserve(problem.job.budget_s))
    # An MLP trial whose early-stopped epochs are unknown (neither held nor recorded) is no candidate.
    del trials[2].user_attrs["best_epoch"]
    assert 2 not in [t.number for t in selection_candidates(study, problem)]
    # Two candidates' 5 folds do not fit, their 3 folds do (half the cost here: 3 x 4/3 vs 5 x 8/5 fits).
    three = selection_cost(problem, selection_candidates(study, problem)[:2], CV_FOLDS_MIN)
    assert three == pytest.approx(selection_cost(problem, selection_candidates(study, problem)[:2]) / 2)
    problem.job.budget_s = three / CV_SHARE + 1e-9
    assert selection_plan(study, problem) == (CV_FOLDS_MIN, selection_candidates(study, problem)[:2])
    assert selection_reserve(study, problem) == pytest.approx(three)
    # Not even two candidates fit: chosen on the validation rows as before (the ensemble step's share).
    problem.job.budget_s = 1.0
    assert selection_planned(study, problem) == []
    from mlsys_cli.models.tuning.select import choose

    # ... and the report says why (final.selection.skipped).
    assert choose(study, problem) is None and "do not fit in 25% of the budget (0.2s)" in problem.selection_skipped
    assert search_deadline(study, problem) == pytest.approx(1000.0 - ensemble_reserve(1.0) - reserve(problem, study) - SAVE_S)
    # A time-ordered table, or several workers, are not cross-validated.
    problem.job.budget_s, problem.job.time_col = 60.0, "when"
    assert selection_planned(study, problem) == []
