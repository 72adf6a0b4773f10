"""Champion vs challenger: train the challenger on the window, judge both on the newest rows.

:func:`train_challenger` trains with ``train``'s own :func:`~mlsys_cli.models.train.train_model`
on the window's train and valid parts, so the bundle, its manifest, metrics, baselines and
reference statistics are exactly what ``mlsys train`` writes. :func:`judge` evaluates both
models on the held-out rows with ``evaluate``'s :func:`~mlsys_cli.models.evaluate.evaluate`
(intervals, the zero-rule baseline, slices, the ``--require`` gates) and decides.

Stateless (the default): the recipe's featurizer and family are fitted anew on the window.
Stateful (``--stateful``, DMLS ch. 9 "stateful training"): the challenger keeps the champion's
fitted featurizer (same inputs and feature space; the encodings learned on older rows) and
continues the champion's estimator where the family can (``Family.warm_start``):

- ``xgboost``: new boosting rounds on top of the champion's trees (``xgb_model``), early-stopped
  on the window's valid rows;
- ``mlp``: the champion's network fine-tuned (same scalings), early-stopped likewise;
- ``linear`` (logistic regression): the solver starts from the champion's coefficients;
- ``linear`` (ridge), ``forest``, ``hgb`` (it bins its inputs anew on every fit), ``baseline``:
  nothing to continue; refitted on the champion's features (the report says so).

Categories that appear only in the new rows are treated as the champion's featurizer treats any
unseen category, the price of keeping its feature space.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from mlsys_cli.errors import InputError

PROMOTED, REJECTED = "promoted", "rejected"


def train_challenger(recipe: Any, window: Any, incumbent: Any, opts: Any, progress: Any = None) -> tuple[Any, dict[str, Any]]:
    """A challenger bundle and what its training did (``stateful``, ``warm_start``, seconds, rows)."""
    stateful = bool(opts.stateful and incumbent is not None)
    if stateful:
        _check_classes(incumbent.bundle, window.train[recipe.target])
        features, task, init = recipe.features, incumbent.bundle.task, incumbent.bundle.predictor
    else:
        features, task, init = _scratch_features(recipe, window, incumbent), recipe.task, None
    bundle, result = train_on_window(recipe, window, features=features, task=task, init=init,
                                     timeout=opts.timeout, progress=progress)
    warm = result.fit.get("warm_start") if stateful else None
    if stateful and warm is None:
        warm = f"none: {recipe.family} cannot continue a fitted model; refitted on the champion's features"
    elif opts.stateful and not stateful:
        warm = "none: no champion yet, trained from scratch"
    return bundle, {"stateful": stateful, "warm_start": warm, "family": result.model, "seconds": result.seconds,
                    "rows": result.rows, "fit": result.fit, "valid_metrics": result.metrics.get("valid"),
                    "warnings": list(result.warnings)}


def _check_classes(champion: Any, labels: Any) -> None:
    if champion.classes is None:
        return
    unseen = sorted({str(v) for v in labels.drop_duplicates()} - {str(c) for c in champion.classes})
    if unseen:
        raise InputError(f"the window has classes the champion never saw ({', '.join(unseen)})",
                         "a warm start keeps the champion's classes; retrain without --stateful")


def _scratch_features(recipe: Any, window: Any, incumbent: Any) -> Any:
    """The featurizer settings to fit anew: the recipe's (a first champion's leaves out the time column)."""
    features = dict(recipe.features) if recipe.features else None
    if features is None and window.info.get("time_col") and incumbent is None:
        features = {"drop": [window.info["time_col"]]}  # time orders the rows; it is not a feature
    return features


def train_on_window(recipe: Any, window: Any, *, features: Any, task: str | None, init: Any = None,
                    timeout: float | None = None, progress: Any = None) -> tuple[Any, Any]:
    """``train_model`` on the window's train part (early stopping and calibration on its valid part)."""
    from mlsys_cli.models.train import FitRun, TrainSpec, train_model

    with tempfile.TemporaryDirectory(prefix="mlsys-retrain-") as tmp:
        paths = {}
        for name in ("train", "valid"):
            part = getattr(window, name)
            if len(part):
                paths[name] = str(Path(tmp) / f"window-{name}.parquet")
                part.to_parquet(paths[name], index=False)
        spec = TrainSpec.from_recipe(recipe, task=task, features=features,
                                     calibrate=recipe.calibrate if "valid" in paths else None)
        return train_model(paths["train"], spec, valid=paths.get("valid"), run=FitRun(timeout=timeout, progress=progress),
                           init=init)


@dataclass(frozen=True)
class Judgement:
    """The decision and the evidence for it."""

    decision: str
    reason: str
    primary: str
    higher_is_better: bool
    gain: float | None
    min_gain: float
    comparison: list[dict[str, Any]]
    slices: list[dict[str, Any]]
    gates: list[dict[str, Any]]
    values: dict[str, Any] = field(default_factory=dict)

    def metrics(self) -> dict[str, Any]:
        """The ``metrics`` of the version's ``meta.json``."""
        return {"primary": {"name": self.primary, "higher_is_better": self.higher_is_better}, **self.values,
                "gain": self.gain, "min_gain": self.min_gain, "comparison": self.comparison, "slices": self.slices,
                "gates": self.gates}

    def brief(self) -> dict[str, Any]:
        """What the history line keeps."""
        name = self.primary
        return {"primary": name, "challenger": (self.values.get("challenger") or {}).get(name),
                "champion": (self.values.get("champion") or {}).get(name), "gain": self.gain}


def judge(incumbent: Any, challenger: Any, window: Any, requirements: Sequence[Any], opts: Any) -> Judgement:
    """Evaluate both on the held-out rows and decide (gates, zero rule, then the gain)."""
    from mlsys_cli.models.evaluate import EvaluateOptions, evaluate
    from mlsys_cli.models.metrics import primary_metric

    common = EvaluateOptions(bootstrap=opts.bootstrap, slices=list(opts.slices), seed=opts.seed or 0)
    new = evaluate(challenger, window.holdout, common.replace(requirements=requirements), model_name="challenger",
                   data_name="held-out rows")
    old = evaluate(incumbent.bundle, window.holdout, common, model_name="champion",
                   data_name="held-out rows") if incumbent else None
    name, higher = primary_metric(new.task)
    zero = new.baseline["metrics"].get(name)
    value = new.metrics.get(name)
    gain = None if old is None else _gain(value, old.metrics.get(name), higher)
    decision, reason = _decide(new, old, name, higher, gain, zero, opts.min_gain)
    comparison = [_row("challenger", new, name)] + ([_row("champion", old, name)] if old else []) + \
        [{"model": "zero_rule", **new.baseline["metrics"]}]
    values = {"challenger": new.metrics, "champion": old.metrics if old else None, "zero_rule": new.baseline["metrics"],
              "holdout_rows": new.rows}
    return Judgement(decision, reason, name, higher, gain, opts.min_gain, comparison, _slices(new, old), new.gates, values)


def _gain(new: float | None, old: float | None, higher: bool) -> float | None:
    if new is None or old is None:
        return None
    return float(new - old) if higher else float(old - new)


def _decide(new: Any, old: Any, name: str, higher: bool, gain: float | None, zero: float | None,
            min_gain: float) -> tuple[str, str]:
    value = new.metrics.get(name)
    failed = [g for g in new.gates if not g["passed"]]
    if failed:
        listed = "; ".join(f"{g['requirement']} (observed {_fmt(g['observed'])})" for g in failed)
        return REJECTED, f"the challenger fails --require: {listed}"
    if value is None:
        return REJECTED, f"the challenger's {name} is undefined on the held-out rows"
    if zero is not None and not (value > zero if higher else value < zero):
        return REJECTED, f"the challenger's {name} {_fmt(value)} is no better than the zero-rule baseline's {_fmt(zero)}"
    if old is None:
        return PROMOTED, f"first champion: {name} {_fmt(value)} on the held-out rows (zero rule {_fmt(zero)})"
    versus = f"challenger {name} {_fmt(value)} vs champion {_fmt(old.metrics.get(name))}"
    # Only a better challenger: a tie (the same window retrained) is not a gain, whatever --min-gain.
    if gain is None or gain <= 0:
        return REJECTED, f"{versus}: gain {_fmt(gain, signed=True)}: not better than the champion"
    if gain < min_gain:
        return REJECTED, f"{versus}: gain {_fmt(gain, signed=True)} < --min-gain {min_gain:g}"
    return PROMOTED, f"{versus}: gain {_fmt(gain, signed=True)} >= --min-gain {min_gain:g}"


def _row(model: str, ev: Any, name: str) -> dict[str, Any]:
    low, high = ev.ci.get(name, [None, None])
    return {"model": model, **ev.metrics, f"{name}_ci_low": low, f"{name}_ci_high": high}


def _slices(new: Any, old: Any) -> list[dict[str, Any]]:
    """Each slice's primary metric for both models, side by side."""
    theirs = {(s["column"], s["slice"]): s["value"] for s in (old.slices if old else [])}
    return [{"column": s["column"], "slice": s["slice"], "rows": s["rows"], "challenger": s["value"],
             "champion": theirs.get((s["column"], s["slice"])), "flagged": s["flagged"]} for s in new.slices]


def _fmt(value: float | None, signed: bool = False) -> str:
    if value is None:
        return "undefined"
    return f"{value:+.4f}" if signed else f"{value:.4f}"
