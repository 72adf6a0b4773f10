"""Retrain from a registry (DMLS ch. 9): decide, train a challenger, judge it, promote or keep it.

:func:`retrain` holds the registry's writer lock for the whole run:

1. the champion (its bundle verified against ``meta.json``'s sha256 and every member hash) and
   the recipe: ``--recipe FILE`` when given, else the champion's manifest, else (an empty
   registry) train's flags;
2. the window of new data (:mod:`mlsys_cli.continual.window`): the champion's input columns with
   their types (a changed schema is refused, naming the columns), cut by time into train,
   valid and the newest held-out rows;
3. the triggers (:mod:`mlsys_cli.continual.triggers`): when none fires, the decision
   ``not_needed`` is logged and nothing is trained;
4. the challenger, trained from scratch on the window (stateless) or warm-started from the
   champion (``stateful``: see :mod:`mlsys_cli.continual.judge`);
5. champion and challenger evaluated on the held-out rows (``evaluate``: metrics with
   intervals, the zero-rule baseline, slices, the ``--require`` gates). The challenger is
   promoted when it passes the gates, beats the zero rule and is better than the champion on
   the primary metric, by at least ``min_gain`` (a tie is not better); otherwise it is kept as a ``rejected`` version with
   the reason;
6. the version written (complete or absent), ``champion.json`` replaced when promoted, and the
   decision appended to ``history.jsonl`` (see :mod:`mlsys_cli.continual.registry`).
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path
from typing import Any, Mapping

from mlsys_cli.continual.judge import PROMOTED, REJECTED
from mlsys_cli.continual.registry import CHAMPION, Registry, Version, now_utc, parse_stamp, who
from mlsys_cli.continual.triggers import Evidence, Verdict, decide, parse_period, parse_trigger
from mlsys_cli.continual.window import DEFAULT_RATIOS, Columns, Window, load_window
from mlsys_cli.errors import ExitCode, InputError, UsageError

NOT_NEEDED = "not_needed"
EXIT = {PROMOTED: ExitCode.OK, NOT_NEEDED: ExitCode.RETRAIN_NOT_NEEDED, REJECTED: ExitCode.RETRAIN_REJECTED}


@dataclass(frozen=True)
class FirstModel:
    """train's flags, for the first champion of an empty registry without ``--recipe``."""

    target: str | None = None
    model: str | None = None
    params: Mapping[str, Any] = field(default_factory=dict)
    task: str | None = None


@dataclass(frozen=True)
class RetrainOptions:
    """Everything ``mlsys retrain`` is told (see commands/retrain.md)."""

    data: tuple[str, ...]
    triggers: tuple[str, ...] = ("always",)
    drift_exclude: tuple[str, ...] = ()
    time_col: str | None = None
    window: str | None = None
    ratios: tuple[float, float, float] = DEFAULT_RATIOS
    stateful: bool = False
    min_gain: float = 0.0
    require: tuple[str, ...] = ()
    slices: tuple[str, ...] = ()
    recipe: str | None = None
    first: FirstModel = FirstModel()
    seed: int | None = None
    bootstrap: int = 200
    timeout: float | None = None
    wait: float | None = None


@dataclass(frozen=True)
class RetrainResult:
    """What ``mlsys retrain`` reports (``--json``) and logs."""

    registry: str
    decision: str
    reason: str
    triggers: list[dict[str, Any]]
    champion: str | None
    previous: str | None
    version: str | None = None
    data: dict[str, Any] = field(default_factory=dict)
    primary_metric: str | None = None
    gain: float | None = None
    min_gain: float = 0.0
    comparison: list[dict[str, Any]] = field(default_factory=list)
    slices: list[dict[str, Any]] = field(default_factory=list)
    gates: list[dict[str, Any]] = field(default_factory=list)
    training: dict[str, Any] = field(default_factory=dict)
    recovered: list[dict[str, Any]] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def exit_code(self) -> int:
        return int(EXIT[self.decision])

    def to_dict(self) -> dict[str, Any]:
        return {"registry": self.registry, "decision": self.decision, "exit_code": self.exit_code,
                "reason": self.reason, "version": self.version, "champion": self.champion, "previous": self.previous,
                "triggers": self.triggers, "primary_metric": self.primary_metric, "gain": self.gain,
                "min_gain": self.min_gain, "comparison": self.comparison, "slices": self.slices, "gates": self.gates,
                "data": self.data, "training": self.training, "recovered": self.recovered, "seconds": self.seconds}


# --------------------------------------------------------------------------- the recipe


def recipe_from(doc: Mapping[str, Any], target: str | None = None) -> Any:
    """The one adapter from a recipe document to the typed :class:`~mlsys_cli.models.manifest.Recipe`."""
    from mlsys_cli.models.manifest import Recipe

    return Recipe.from_dict(doc, target)


def read_recipe(path: str | Path) -> tuple[Any, list[dict[str, Any]] | None]:
    """The recipe in a model bundle's manifest, or in tune's params.json; and the bundle's input schema."""
    import json

    from mlsys_cli.bundle import BundleReader

    path = Path(path)
    if not path.is_file():
        raise InputError(f"--recipe {path}: no such file", "give a model bundle (train) or a params.json (tune)")
    if path.suffix == ".json":
        try:
            doc = json.loads(path.read_text())
            recipe = doc["recipe"]
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise InputError(f"--recipe {path}: not a recipe ({type(exc).__name__}: {exc})",
                             "give a model bundle (train -o) or tune's params.json (tune -o)") from None
        return recipe_from(recipe, doc.get("target")), None
    BundleReader(path, kind="model")  # verified before anything is deserialised
    from mlsys_cli.models.bundle import ModelBundle

    bundle = ModelBundle.load(path)
    return bundle_recipe(bundle), bundle.input_schema


def bundle_recipe(bundle: Any) -> Any:
    """A model bundle's recipe, its featurizer settings spelled out when it used a features bundle.

    A features bundle (``train --features``) is recorded by its fingerprint; a retrain fits a
    featurizer with the same settings on the window instead.
    """
    recipe = recipe_from(bundle.manifest.get("recipe") or {}, bundle.target)
    if recipe.features and "bundle" in recipe.features and getattr(bundle.predictor, "kind", "") == "single":
        params = bundle.predictor.featurizer.get_params()
        recipe = replace(recipe, features={k: v for k, v in params.items() if k not in ("target", "seed")})
    return recipe


def _first_recipe(opts: RetrainOptions) -> tuple[Any, list[dict[str, Any]] | None]:
    if opts.recipe:
        return read_recipe(opts.recipe)
    first = opts.first
    if not first.target:
        raise UsageError("the registry has no champion yet, and no recipe was given",
                         "give --recipe FILE (a model bundle or tune's params.json), or --target COL [--model FAMILY]")
    from mlsys_cli.models.manifest import Recipe

    # The task is inferred from the target when train's flags do not give one.
    return Recipe(family=first.model or "xgboost", task=first.task, target=first.target, params=dict(first.params)), None


# --------------------------------------------------------------------------- the champion


@dataclass(frozen=True)
class Incumbent:
    """The champion: its record and its loaded bundle."""

    version: Version
    bundle: Any


def load_champion(reg: Registry) -> Incumbent | None:
    """The verified champion, or None for an empty registry (tampered or missing bundle: exit 3)."""
    from mlsys_cli.models.bundle import ModelBundle

    pointer = reg.champion()
    if pointer is None:
        return None
    record = reg.get(pointer.version)
    if pointer.sha256 and pointer.sha256 != record.sha256:
        raise InputError(f"{reg.root}: champion.json and {record.version}/meta.json disagree on the bundle's sha256",
                         "the registry was changed by hand; mlsys registry rollback DIR --to VERSION")
    reg.verify(record)
    bundle = ModelBundle.load(record.bundle)
    if getattr(bundle.predictor, "kind", "") != "single":
        raise InputError(f"{record.bundle}: the champion is an {bundle.predictor.kind} model; retrain trains one model family",
                         "register a single model as champion (retrain --recipe model.mlsys)")
    return Incumbent(record, bundle)


# --------------------------------------------------------------------------- the run


def retrain(registry: str | Path, opts: RetrainOptions, *, now: datetime | None = None, progress: Any = None) -> RetrainResult:
    """Run one retrain decision on ``registry`` (created when missing). See the module docstring."""
    start = time.perf_counter()
    triggers = [parse_trigger(t) for t in opts.triggers]
    span = parse_period(opts.window, "--data-window") if opts.window else None
    if span is not None and not opts.time_col:
        raise UsageError("--data-window needs --time-col", "the window is the newest rows by that column")
    if opts.min_gain < 0:
        raise UsageError("--min-gain must be 0 or more")
    requirements = _requirements(opts.require)
    reg = Registry(registry)
    reg.refuse_file()  # before the first-champion checks, which would call a file an empty registry
    if not (reg.root / CHAMPION).exists():
        _first_recipe(opts)  # refuse a run that could not train a first champion before creating anything
    with reg.writer(opts.wait, create=True) as writer:
        incumbent = load_champion(reg)
        recipe, schema = _first_recipe(opts) if incumbent is None or opts.recipe else (bundle_recipe(incumbent.bundle), None)
        if incumbent is not None:
            schema = incumbent.bundle.input_schema
            if recipe.target != incumbent.bundle.target:
                raise UsageError(f"--recipe predicts {recipe.target!r}, the champion {incumbent.bundle.target!r}")
            if not opts.recipe:
                _check_first_flags(opts.first, incumbent, recipe)
        if opts.seed is not None:
            recipe = replace(recipe, seed=opts.seed)
        window = load_window(opts.data, Columns(recipe.target, opts.time_col, schema, _named_columns(recipe)),
                             span=span, ratios=opts.ratios, task=recipe.task or _task_of(incumbent))
        if incumbent is not None:
            _check_labels(incumbent.bundle, window, recipe.target)
        _check_gates(window, requirements, triggers, opts.slices)
        verdicts = _verdicts(triggers, reg, incumbent, window, opts, now)
        base = {"registry": str(reg.root), "triggers": [v.to_dict() for v in verdicts], "data": _data(window),
                "recovered": writer.recovered, "min_gain": opts.min_gain}
        current = incumbent.version.version if incumbent else None
        if not any(v.fired for v in verdicts):
            reason = "no trigger fired: " + "; ".join(v.reason for v in verdicts)
            writer.append({"event": "retrain", "decision": NOT_NEEDED, "reason": reason, "champion": current,
                           "triggers": base["triggers"], "data": _data_brief(window)})
            return RetrainResult(**base, decision=NOT_NEEDED, reason=reason, champion=current, previous=current,
                                 seconds=round(time.perf_counter() - start, 3))
        from mlsys_cli.continual.judge import judge, train_challenger

        challenger, training = train_challenger(recipe, window, incumbent, opts, progress)
        verdict = judge(incumbent, challenger, window, requirements, opts)
        record = {"status": verdict.decision, "reason": verdict.reason, "parent": current, "metrics": verdict.metrics(),
                  "data": _data(window), "trigger": {"verdicts": base["triggers"]}, "who": who(),
                  "recipe": {"family": recipe.family, "task": challenger.task, "target": recipe.target,
                             "stateful": training["stateful"], "warm_start": training.get("warm_start"),
                             "seed": recipe.seed, "params": recipe.to_dict()["params"]}}
        version = writer.add_version(challenger.save, record)
        if verdict.decision == PROMOTED:
            writer.promote(version)
        champion = version.version if verdict.decision == PROMOTED else current
        writer.append({"event": "retrain", "decision": verdict.decision, "reason": verdict.reason,
                       "version": version.version, "parent": current, "previous": current, "champion": champion,
                       "triggers": base["triggers"], "metrics": verdict.brief(), "data": _data_brief(window)})
    return RetrainResult(**base, decision=verdict.decision, reason=verdict.reason, champion=champion, previous=current,
                         version=version.version, primary_metric=verdict.primary, gain=verdict.gain,
                         comparison=verdict.comparison, slices=verdict.slices, gates=verdict.gates, training=training,
                         seconds=round(time.perf_counter() - start, 3))


def _requirements(texts: tuple[str, ...]) -> list[Any]:
    from mlsys_cli.models.evaluate import parse_requirement

    return [parse_requirement(t) for t in texts]


def _check_first_flags(first: FirstModel, incumbent: Incumbent, recipe: Any) -> None:
    """Refuse train's flags that disagree with the champion's recipe instead of ignoring them."""
    differ = ([f"--target {first.target} (the champion predicts {recipe.target})"]
              if first.target and first.target != recipe.target else []) + \
        ([f"--model {first.model} (the champion is {recipe.family})"] if first.model and first.model != recipe.family
         else []) + (["--param"] if first.params else [])
    if differ:
        raise UsageError(f"{', '.join(differ)}: train's flags only set the recipe of an empty registry's first "
                         f"champion; this registry's champion {incumbent.version.version} brings its own",
                         "drop them, or give the new recipe as --recipe FILE (a model bundle or tune's params.json)")


def _check_gates(window: Window, requirements: list[Any], triggers: list[Any], slices: tuple[str, ...]) -> None:
    """Refuse a gate or a trigger's condition on a metric the task lacks, or a --slice column the
    window lacks, before anything is trained (and on nights when no trigger fires)."""
    from mlsys_cli.models.evaluate import check_requirements

    requested = {"slices": bool(slices)}
    check_requirements(window.task, requirements, requested)
    for trigger in triggers:
        if trigger.condition is not None:
            try:
                check_requirements(window.task, [trigger.condition], requested)
            except UsageError as exc:
                raise UsageError(exc.message.replace(f"--require {trigger.condition.text}", f"--trigger {trigger.text}"),
                                 exc.hint) from None
    for column in slices:
        if column in window.info.get("ignored_columns", []):
            # Kept out of the window so that the challenger takes exactly the champion's inputs.
            raise UsageError(f"--slice {column}: not one of the champion's inputs, so not in the window",
                             "slice by an input column (mlsys info on the champion's bundle lists them)")
        if column not in window.frame.columns:
            raise InputError(f"--slice {column}: no such column in the data",
                             f"columns: {', '.join(map(str, window.frame.columns[:20]))}")


def _named_columns(recipe: Any) -> tuple[str, ...]:
    """Columns the recipe names besides the inputs: the sample weight, the featurizer's ids and drops."""
    features = recipe.features or {}
    named = [recipe.sample_weight, *(features.get("ids") or []), *(features.get("drop") or [])]
    return tuple(dict.fromkeys(c for c in named if c))


def _check_labels(champion: Any, window: Window, target: str) -> None:
    """Labels sharing no class with the champion's: the target changed meaning (0/1 became
    no/yes), so the champion cannot be judged. Refused before a challenger trains."""
    if champion.classes is None:
        return
    seen = sorted({str(v) for v in window.frame[target].drop_duplicates()})
    known = sorted(str(c) for c in champion.classes)
    if set(seen).isdisjoint(known):
        raise InputError(f"{target!r} shares no class with the champion's (champion: {', '.join(known[:5])}; "
                         f"window: {', '.join(seen[:5])})",
                         "a changed target needs a new model: retrain --recipe FILE into a new registry")


def _task_of(incumbent: Incumbent | None) -> str | None:
    return incumbent.bundle.task if incumbent else None


def _data(window: Window) -> dict[str, Any]:
    return {**window.info, "files": window.files}


def _data_brief(window: Window) -> dict[str, Any]:
    return {k: window.info.get(k) for k in ("rows", "start", "end", "parts") if k in window.info}


# --------------------------------------------------------------------------- triggers' evidence


def _verdicts(triggers: list[Any], reg: Registry, incumbent: Incumbent | None, window: Window, opts: RetrainOptions,
              now: datetime | None) -> list[Verdict]:
    if incumbent is None:
        return [Verdict("(empty registry)", True, "the registry has no champion yet: training the first one")]
    versions = reg.versions()
    evidence = Evidence(
        now=now or now_utc(),
        last_trained=parse_stamp(versions[-1].created) if versions else None,
        new_rows=lambda: _new_rows(incumbent.version, window),
        champion_metric=lambda condition: _champion_gate(incumbent, window, condition, opts),
        drift=lambda: drift_evidence(incumbent, window, opts.drift_exclude),
    )
    return decide(triggers, evidence)


def _new_rows(champion: Version, window: Window) -> tuple[int, str]:
    """Rows newer than the champion's window, or rows of files the champion never saw."""
    end = (champion.data or {}).get("end")
    if window.info.get("time_col") and end:
        return len(window.newer(end)), f"newer than the champion's data ({end})"
    seen = {f.get("sha256") for f in (champion.data or {}).get("files", [])}
    if not seen:
        return len(window.frame), "the champion records no data: every row counts"
    from mlsys_cli.data.io import read_table

    unseen = [f["path"] for f in window.files if f["sha256"] not in seen]
    rows = sum(read_table(p, columns=[str(window.frame.columns[0])]).num_rows for p in unseen)
    return rows, f"in {len(unseen)} file(s) the champion never saw"


def _champion_gate(incumbent: Incumbent, window: Window, condition: Any, opts: RetrainOptions) -> dict[str, Any]:
    from mlsys_cli.models.evaluate import EvaluateOptions, evaluate

    result = evaluate(incumbent.bundle, window.holdout, EvaluateOptions(
        bootstrap=opts.bootstrap if condition.scope.startswith("ci") else 0,
        slices=list(opts.slices) if condition.scope.startswith("slice") else [], requirements=[condition], seed=opts.seed or 0))
    return {**result.gates[0], "rows": result.rows}


def drift_evidence(incumbent: Incumbent, window: Window, exclude: tuple[str, ...] = ()) -> dict[str, Any]:
    """``mlsys drift`` on the window's newest rows against the champion's reference statistics.

    The newest rows are those newer than the champion's data when it records its window's end
    (and there are at least as many as held out), else the held-out part. The one call into
    :func:`mlsys_cli.monitor.drift.detect`, the drift command's library entry point, with its
    default options (a feature drifts only when its test is significant after the
    Benjamini-Hochberg correction and its effect size is large too), leaving out ``exclude``
    (columns that move with time by construction: tenure, cumulative sums, dates).
    """
    from mlsys_cli.monitor.drift import DriftOptions, detect

    newer = window.newer((incumbent.version.data or {}).get("end"))
    rows = newer if len(newer) >= len(window.holdout) else window.holdout
    with tempfile.TemporaryDirectory(prefix="mlsys-retrain-") as tmp:
        path = Path(tmp) / "newest.parquet"
        rows.drop(columns=[window.info["time_col"]] if window.info.get("time_col") else []).to_parquet(path, index=False)
        report = detect(str(path), model=str(incumbent.version.bundle), options=DriftOptions(exclude=tuple(exclude)))
    drifted = list(report.drifted)
    summary = (f"drift in {len(drifted)} feature(s) or output(s): {', '.join(drifted[:5])}" if drifted else
               "drift detected" if report.drift_detected else "no drift")
    share = report.importance_share()
    if share is None:  # a model without importances: every compared feature weighs the same
        inputs = [f for f in report.features if not f.name.startswith(("prediction:", "label:"))]
        # No input compared: output-only drift does not count as drift in the inputs.
        share = sum(f.drifted for f in inputs) / len(inputs) if inputs else 0.0
    return {"drift_detected": bool(report.drift_detected), "drifted": drifted, "rows": int(len(rows)),
            "importance_share": share, "estimate": _estimate(report.model),
            "summary": f"{summary} ({len(rows):,} newest rows vs the champion's training reference)"}


def _estimate(model: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """The champion's confidence-based estimate of its primary metric, beside its validation value."""
    est = (model or {}).get("estimate") or {}
    values = est.get("estimated") or {}
    metric = "auc" if "auc" in values else "accuracy" if "accuracy" in values else None
    if metric is None:
        return None
    return {"metric": metric, "estimated": values[metric], "validation": (est.get("validation") or {}).get(metric),
            "reliable": bool(est.get("reliable")), "calibration": est.get("calibration")}
