"""The final model refitted on the training and the validation rows (``--refit-valid``, the default).

The search chooses a configuration (and the ensemble step its members and weights) on the
validation rows. Once chosen, those rows are more training data: on a small table 25% more rows
is worth more than any further trial (a 1,030-row table trains on 618 rows, validates on 206).
Each chosen model is fitted again as ``train`` fits it, on train + valid, with the number of
rounds or epochs that early stopping on the validation rows chose (no validation rows are left
to stop on); an ensemble keeps the weights it learned from its members' held-out predictions.

Under ``--timeout`` the search holds back the measured cost of these fits (:func:`reserve`):
each member's trial training seconds and featurizing seconds, scaled by the rows. When they do
not fit in :data:`SHARE` of the budget, or a fit is cut by the deadline, the models fitted on
the training rows are saved instead, and the report's ``final.refit`` says why.
"""

from __future__ import annotations

import time
from typing import Any, Mapping, Sequence

# The refit's costs live beside the other budget estimates (search_deadline holds them back).
from mlsys_cli.models.tuning.budget import OVERHEAD_S, SAVE_S, SHARE, cost, enabled, kept_share, reserve  # noqa: F401
from mlsys_cli.models.tuning.problem import Problem


def refit_final(study: Any, problem: Problem, bundle: Any, members: Sequence[tuple[int, Any]]) -> tuple[Any, dict[str, Any]]:
    """``bundle`` with its models fitted again on train + valid, and what was done.

    ``members`` are (trial number, predictor) of the models in ``bundle``: the predictor itself
    for a single model, each member of an ensemble. Returns ``bundle`` unchanged (with the
    reason) when the refit is off, would not fit in the time left, or a fit was cut short.
    """
    if not enabled(problem):
        return bundle, {"rows": None, "reason": "off (--no-refit-valid)" if problem.holds_models else "no held models"}
    numbers = [n for n, _ in members]
    need = cost(problem, numbers)
    deadline = problem.job.deadline
    if deadline is not None and (need > SHARE * (problem.job.budget_s or 0.0) or deadline - SAVE_S - time.time() < need):
        return bundle, {"rows": None, "reason": f"no time for it (~{need:.1f}s needed)"}
    start = time.time()
    trials = {t.number: t for t in study.get_trials(deepcopy=False)}
    fitted = []
    for number in numbers:
        refitted = _fit_all_rows(problem, trials[number], deadline)
        if refitted is None:
            return bundle, {"rows": None, "reason": f"trial {number}'s refit was cut by the deadline"}
        fitted.append(refitted)
    rows = len(problem.train_df) + len(problem.valid_df)
    done = {"rows": rows, "seconds": round(time.time() - start, 3), "estimated_s": round(need, 3)}
    if len(fitted) == 1 and getattr(bundle.predictor, "kind", None) != "ensemble":
        return fitted[0], done
    return _swap_members(bundle, members, fitted), done


def _swap_members(bundle: Any, members: Sequence[tuple[int, Any]], fitted: Sequence[Any]) -> Any:
    """The ensemble ``bundle`` with each member predictor replaced by its refitted one (same
    combiner and weights); the recipe's members and training data, and the input schema, are
    the refitted members'."""
    from mlsys_cli.models.bundle import ModelBundle

    by_id = {id(predictor): refit for (_, predictor), refit in zip(members, fitted)}
    ens = bundle.predictor
    # The recipe lists the kept members in the predictor's order.
    refits = [by_id[id(m)] for m in ens.members]
    ens.members = [b.predictor for b in refits]
    manifest = dict(bundle.manifest)
    recipe = dict(manifest["recipe"])
    recipe["members"] = [{**m, "source": "refitted on train + valid", "recipe": b.manifest["recipe"]}
                         for m, b in zip(recipe["members"], refits)]
    train = [r for b in refits for r in b.manifest["recipe"]["data"]["train"]]
    recipe["data"] = {**recipe["data"], "train": [r for i, r in enumerate(train) if r not in train[:i]]}
    manifest.update(recipe=recipe, input_schema=ens.input_schema)
    return ModelBundle(manifest, ens)


def all_rows_params(family: str, params: Mapping[str, Any], est: Any) -> dict[str, Any]:
    """A trial's parameters for a fit without validation rows: the rounds or epochs early
    stopping chose are fixed (HistGradientBoosting's ``max_iter`` is already the trial's
    rounds; the MLP trains its best epoch count on every row, no holdout)."""
    out = dict(params)
    if family == "hgb":
        # "auto" would hold out 10% of a table above 10k rows and stop early again.
        out["early_stopping"] = False
    elif family == "mlp":
        best = int((getattr(est, "fit_info_", None) or {}).get("best_epoch") or out.get("max_epochs", 1))
        out.update(max_epochs=max(best, 1), valid_fraction=0.0)
    return out


def _fit_all_rows(problem: Problem, trial: Any, deadline: float | None) -> Any:
    """The trial's configuration fitted on train + valid as ``train`` would (None: cut by the deadline)."""
    from mlsys_cli.models.study import FAMILY_PARAM
    from mlsys_cli.models.train import FitRun, TrainSpec, train_model

    job = problem.job
    family = trial.params[FAMILY_PARAM]
    params = all_rows_params(family, trial.user_attrs["params"], problem.held_model(trial.number))
    run = FitRun(timeout=max(deadline - time.time() - SAVE_S, 0.5)) if deadline is not None else FitRun()
    bundle, _ = train_model([job.train, job.valid], TrainSpec(family=family, target=problem.target, params=params,
                            features=dict(job.features) or None, seed=int(job.seed)), run=run)
    stopped = (bundle.manifest.get("recipe") or {}).get("fit", {}) or {}
    return None if stopped.get("stopped_by") == "timeout" else bundle
