"""The final model refitted on the training and the validation rows (``--refit-valid``, the default).

The search chooses a configuration (and the ensemble step its members and weights) on the
validation rows. Once chosen, those rows are more training data: on a small table 25% more rows
is worth more than any further trial (a 1,030-row table trains on 618 rows, validates on 206).
Each chosen model is fitted again as ``train`` fits it, on train + valid, with the number of
rounds or epochs that early stopping on the validation rows chose (no validation rows are left
to stop on); an ensemble keeps the weights it learned from its members' held-out predictions.

Under ``--timeout`` the search holds back the measured cost of these fits (:func:`reserve`):
each planned member's trial training seconds and featurizing seconds, scaled by the rows. The
members are refitted best first, each whose cost fits the time left (and :data:`SHARE` of the
budget); a member that does not, or whose fit the deadline cuts, stays the model fitted on the
training rows (an ensemble's weights hold for either), and the report's ``final.refit`` says
how many were refitted and why not the others.
"""

from __future__ import annotations

import time
from typing import Any, Mapping, Sequence

# The refit's costs live beside the other budget estimates (search_deadline holds them back).
from mlsys_cli.models.tuning.budget import MIN_FIT_S, OVERHEAD_S, SAVE_S, SHARE, cost, enabled, kept_share, post_fit_seconds, reserve, write_seconds  # noqa: F401
from mlsys_cli.models.tuning.problem import Problem

# The first member's measured/estimated seconds rescale the others' estimates within these bounds.
RESCALE_MIN, RESCALE_MAX = 0.2, 5.0


def refit_final(study: Any, problem: Problem, bundle: Any, members: Sequence[tuple[int, Any]]) -> tuple[Any, dict[str, Any]]:
    """``bundle`` with its models fitted again on train + valid, and what was done.

    ``members`` are (trial number, predictor) of the models in ``bundle``: the predictor itself
    for a single model, each member of an ensemble. Returns ``bundle`` unchanged (with the
    reason) when the refit is off, would not fit in the time left, or a fit was cut short.
    """
    if not enabled(problem):
        return bundle, {"rows": None, "reason": "off (--no-refit-valid)" if problem.holds_models else "no held models"}
    numbers = [n for n, _ in members]
    deadline, budget_s = problem.job.deadline, problem.job.budget_s
    start = time.time()
    trials = {t.number: t for t in study.get_trials(deepcopy=False)}
    fitted: list[Any] = []
    left_share = SHARE * budget_s if deadline is not None and budget_s else float("inf")
    # Saving writes every member: a forest's nodes grow with the rows it is refitted on.
    scale = (len(problem.train_df) + len(problem.valid_df)) / max(len(problem.train_df), 1)
    save_s = SAVE_S + scale * sum(write_seconds(getattr(p, "estimator", None)) for _, p in members)
    need, ratio = 0.0, None
    for number in numbers:
        estimate = cost(problem, [number])
        # Estimates from the trials' seconds were off by up to 3x either way on big tables (a
        # member not refitted for an estimate of 13 s left 4.9 s of 60 unused on diamonds): the
        # first member's measured refit rescales the others'.
        one = estimate * (ratio or 1.0)
        need += one
        fits = deadline is None or (one <= left_share and deadline - save_s - time.time() >= one)
        fits = fits or worth_trying(problem, trials[number], one, deadline - save_s - time.time())
        # The fit stops early enough for its post-fit work and the saving.
        stop = None if deadline is None else deadline - save_s - post_fit_seconds(problem)
        began = time.time()
        fitted.append(fit_all_rows(problem, trials[number], stop) if fits else None)
        took = time.time() - began
        if fits and ratio is None and fitted[-1] is not None and estimate > 0:
            ratio = min(max(took / estimate, RESCALE_MIN), RESCALE_MAX)
        left_share -= took if fits else 0.0
    done = {"rows": None, "seconds": round(time.time() - start, 3), "estimated_s": round(need, 3),
            "refitted": sum(f is not None for f in fitted), "of": len(fitted),
            "rescaled": None if ratio is None else round(ratio, 3)}
    if not done["refitted"]:
        return bundle, {**done, "reason": f"no time for it (~{need:.1f}s needed)"}
    done["rows"] = len(problem.train_df) + len(problem.valid_df)
    if done["refitted"] < len(fitted):
        done["reason"] = "the others did not fit in the time left (or were cut by the deadline)"
    if len(fitted) == 1 and getattr(bundle.predictor, "kind", None) != "ensemble":
        return fitted[0], done
    return _swap_members(bundle, members, fitted), done


# Once the search is over, a member whose refit estimate passes the time left is still refitted
# when the time left is at least this share of the estimate and its fit stops at the deadline.
TRY_SHARE = 0.5


def worth_trying(problem: Problem, trial: Any, estimate: float, left: float) -> bool:
    """Whether to refit ``trial`` in the ``left`` seconds before the saving although its
    ``estimate`` does not fit: the search is over, so the time left is otherwise idle (60 s runs
    ended 4-5 s early on chem97 and hpc_data, a third ensemble member not refitted), estimates were
    off by up to 3x either way, and a fit that stops at its timeout (:attr:`Family.stops_on_timeout`)
    ends by the deadline; cut short, the member stays the model fitted on the training rows."""
    from mlsys_cli.models.families import get_family
    from mlsys_cli.models.study import FAMILY_PARAM

    if problem.job.deadline is None or left - post_fit_seconds(problem) < max(TRY_SHARE * estimate, MIN_FIT_S):
        return False
    return bool(get_family(trial.params[FAMILY_PARAM]).stops_on_timeout)


def _swap_members(bundle: Any, members: Sequence[tuple[int, Any]], fitted: Sequence[Any]) -> Any:
    """The ensemble ``bundle`` with each member predictor replaced by its refitted bundle's
    (``fitted``, None: kept as it was; same combiner and weights); the recipe's members and
    training data, and the input schema, follow the members."""
    from mlsys_cli.models.bundle import ModelBundle

    by_id = {id(predictor): refit for (_, predictor), refit in zip(members, fitted) if refit is not None}
    ens = bundle.predictor
    manifest = dict(bundle.manifest)
    recipe = dict(manifest["recipe"])
    kept_train = list((recipe.get("data") or {}).get("train") or [])
    entries, train = [], []
    # The recipe lists the kept members in the predictor's order.
    for member, entry in zip(ens.members, recipe["members"]):
        refit = by_id.get(id(member))
        if refit is None:
            entries.append(entry)
            train += kept_train
            continue
        entries.append({**entry, "source": "refitted on train + valid", "recipe": refit.manifest["recipe"]})
        train += refit.manifest["recipe"]["data"]["train"]
    ens.members = [by_id[id(m)].predictor if id(m) in by_id else m for m in ens.members]
    recipe["members"] = entries
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


def fitted_model(problem: Problem, trial: Any) -> Any:
    """Trial ``trial``'s fitted model where it is held, else what :func:`all_rows_params` reads
    of it (the epochs early stopping chose, recorded by the trial); None when neither."""
    held = problem.held_model(trial.number)
    if held is not None or "best_epoch" not in trial.user_attrs:
        return held
    from types import SimpleNamespace

    return SimpleNamespace(fit_info_={"best_epoch": int(trial.user_attrs["best_epoch"])})


def fit_all_rows(problem: Problem, trial: Any, stop: float | None) -> Any:
    """The trial's configuration fitted on train + valid as ``train`` would, its training stopped
    at ``stop`` (epoch seconds; None: cut there)."""
    from mlsys_cli.models.study import FAMILY_PARAM
    from mlsys_cli.models.train import FitRun, TrainSpec, train_model

    job = problem.job
    family = trial.params[FAMILY_PARAM]
    params = all_rows_params(family, trial.user_attrs["params"], fitted_model(problem, trial))
    run = FitRun(timeout=max(stop - time.time(), 0.5)) if stop is not None else FitRun()
    bundle, _ = train_model([job.train, job.valid], TrainSpec(family=family, target=problem.target, params=params,
                            features=dict(job.features) or None, seed=int(job.seed)), run=run)
    stopped = (bundle.manifest.get("recipe") or {}).get("fit", {}) or {}
    return None if stopped.get("stopped_by") == "timeout" else bundle
