"""Ensembles of model bundles: averaging, weighted averaging, stacking, greedy selection.

The combiner (:class:`Combiner`) is fit on the predictions the members make on held-out rows
(``--data``), never on rows a member trained on: the data fingerprints in the members'
manifests are checked, and a table that is some member's training data is refused.

Honest report: the combiner is cross-fitted with K folds inside ``--data`` (fit on K-1 folds,
predict the remaining one), so every row gets an ensemble prediction from a combiner that did
not see it. That out-of-fold score is compared with each member's score on the same rows, with
a paired bootstrap interval of the gain over the best member. The bundle itself holds the
combiner refit on all of ``--data``.

The combiners (``average``, ``weighted``, ``stack``, ``select``) and the ensemble predictor
are in :mod:`.combiner`.

From a study (:func:`study_members`), the models ``tune`` kept are loaded from the study's
artifact store (sha256 verified) and only the others are retrained; ``timeout`` bounds the
whole step by leaving out members that do not fit (at least two are used).
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

from mlsys_cli.errors import InputError, UsageError
from mlsys_cli.models.combiner import METHODS, Combiner, EnsemblePredictor, cross_fit, score

FOLDS = 5
BOOTSTRAP = 500
# Below this gain in the primary metric an ensemble is not worth k times the latency.
MIN_GAIN = 0.002
# Under --timeout, this share of the budget is kept for scoring the members and fitting the
# combiner; retraining study members gets the rest.
COMBINE_SHARE = 0.3


# --------------------------------------------------------------------------- building one


@dataclass(frozen=True)
class EnsembleResult:
    """What ``mlsys ensemble`` reports."""

    output: str | None
    method: str
    task: str
    target: str
    metric: str
    higher_is_better: bool
    rows: int
    evaluated_on: str
    members: list[dict[str, Any]]
    ensemble: dict[str, Any]
    gain: dict[str, Any]
    worth_it: bool
    verdict: str
    combiner: dict[str, Any]
    seconds: float
    dropped: list[str] = field(default_factory=list)
    skipped: list[dict[str, Any]] = field(default_factory=list)
    stopped_by: str | None = None
    # What the members read of --data as missing or as an unknown category (features.unseen.input_counts).
    out_of_range: dict[str, int] = field(default_factory=dict)
    unseen_categories: dict[str, dict[str, Any]] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "output": self.output, "method": self.method, "task": self.task, "target": self.target,
            "metric": self.metric, "higher_is_better": self.higher_is_better, "rows": self.rows,
            "evaluated_on": self.evaluated_on, "members": self.members, "ensemble": self.ensemble,
            "gain": self.gain, "worth_it": self.worth_it, "verdict": self.verdict, "combiner": self.combiner,
            "dropped": self.dropped, "skipped": self.skipped, "stopped_by": self.stopped_by, "seconds": self.seconds,
            "out_of_range": self.out_of_range, "unseen_categories": self.unseen_categories,
        }


def _check_members(named: Sequence[tuple[str, Any]]) -> None:
    if len(named) < 2:
        raise UsageError("an ensemble needs at least two member models",
                         "give two or more .mlsys files, or --from-study with --top 2 or more")
    first_name, first = named[0]
    for name, b in named[1:]:
        for what, a_val, b_val in (("task", first.task, b.task), ("target", first.target, b.target),
                                   ("classes", first.classes, b.classes)):
            if a_val != b_val:
                raise InputError(f"members disagree on the {what}: {first_name} has {a_val!r}, {name} has {b_val!r}",
                                 "ensemble models trained for the same target on the same classes")


def _refuse_duplicates(records: Sequence[Mapping[str, Any]]) -> None:
    """The same model given twice (the same path, another path to it, or a byte-identical copy) is a
    usage error (exit 2): it would double its weight in an average and pass for a diverse member."""
    seen: dict[str, str] = {}
    for rec in records:
        first = seen.get(rec["sha256"])
        if first is not None:
            how = "given twice" if first == rec["path"] else f"the same model as {first} (same sha256)"
            raise UsageError(f"member {rec['path']} is {how}", "give each member model once")
        seen[rec["sha256"]] = rec["path"]


def training_fingerprints(manifest: Mapping[str, Any]) -> dict[str, str]:
    """sha256 -> path of every table a model (or, recursively, an ensemble's members) trained on."""
    recipe = manifest.get("recipe") or {}
    found = {r["sha256"]: r.get("path", "?") for r in ((recipe.get("data") or {}).get("train") or []) if r.get("sha256")}
    for member in recipe.get("members") or []:
        found.update(training_fingerprints({"recipe": member.get("recipe") or {}}))
    return found


def _check_held_out(named: Sequence[tuple[str, Any]], data: Sequence[str]) -> list[dict[str, Any]]:
    from mlsys_cli.data.io import input_record, resolve_inputs

    records = [input_record(f) for f in resolve_inputs(list(data))]
    for name, b in named:
        trained = training_fingerprints(b.manifest)
        for rec in records:
            if rec["sha256"] in trained:
                raise InputError(f"--data {rec['path']} is the training data of member {name}",
                                 "fit the ensemble on held-out rows (a validation table), never on rows a member trained on")
    return records


def _timed(fn: Any, *args: Any) -> tuple[Any, float]:
    start = time.perf_counter()
    out = fn(*args)
    return out, time.perf_counter() - start


def _gain(scoring: _Scoring, ens: Any, best: Any) -> dict[str, Any]:
    """The ensemble's gain over the best member on the same rows, with a paired bootstrap 95% interval."""
    import numpy as np

    from mlsys_cli.models.evaluate import bootstrap_weights, interval, weighted_metrics

    task, metric, higher, y = scoring.task, scoring.metric, scoring.higher, scoring.y
    reps = []
    for W in bootstrap_weights(len(y), BOOTSTRAP, scoring.seed):
        diff = weighted_metrics(task, W, y, ens)[metric] - weighted_metrics(task, W, y, best)[metric]
        reps.append(diff if higher else -diff)
    lo, hi = interval(np.concatenate(reps), 0.95)
    point = score(task, metric, y, ens) - score(task, metric, y, best)
    return {"value": point if higher else -point, "ci95": [lo, hi]}


@dataclass(frozen=True)
class EnsembleSpec:
    """How the members are combined.

    Parameters
    ----------
    method : {"average", "weighted", "stack", "select"}
    metric : str, optional
        Metric for ``select`` and the report (the task's primary metric by default).
    folds : int
        Cross-fitting folds inside the held-out rows for the honest estimate.
    seed : int
    """

    method: str = "average"
    metric: str | None = None
    folds: int = FOLDS
    seed: int = 0


@dataclass(frozen=True, eq=False)
class _Scoring:
    """What every score of one ensemble is measured against: the held-out rows' labels and the metric."""

    task: str
    classes: Sequence[Any] | None
    metric: str
    higher: bool
    labels: Any  # the target as the table holds it (for compute_metrics)
    y: Any  # the target encoded (class indices or values)
    seed: int


@dataclass(frozen=True, eq=False)
class _Combined:
    """The cross-fitted (out-of-fold) ensemble scores and the combiner refit on every row."""

    oof: Any
    combiner: Combiner
    keep: list[int]  # the members the combiner uses (weight > 0; all for stacking)
    late: bool  # selection stopped early, or the deadline passed while fitting

    def member_weights(self, n: int) -> list[float | None]:
        """The combiner's weight of each of ``n`` members (None: stacking, or a member left out)."""
        stack = self.combiner.method == "stack"
        return [float(self.combiner.weights_[self.keep.index(i)]) if i in self.keep and not stack else None
                for i in range(n)]


@dataclass(frozen=True, eq=False)
class _Made:
    """What :func:`build_ensemble` made, for its manifest."""

    named: Sequence[tuple[str, Any]]
    records: Sequence[Mapping[str, Any]] | None
    combined: _Combined
    predictor: Any
    final: Any  # the ensemble's scores on the held-out rows
    df: Any
    data_records: list[dict[str, Any]]
    member_rows: list[dict[str, Any]]
    ens_metrics: dict[str, Any]


def build_ensemble(named: Sequence[tuple[str, Any]], data: Sequence[str], spec: EnsembleSpec = EnsembleSpec(), *,
                   member_records: Sequence[Mapping[str, Any]] | None = None,
                   deadline: float | None = None) -> tuple[Any, EnsembleResult]:
    """Fit an ensemble of loaded model bundles on held-out rows.

    Parameters
    ----------
    named : sequence of (name, ModelBundle)
        The members, with the names the report uses (their paths).
    data : paths
        Held-out rows with the target (never a member's training data).
    spec : EnsembleSpec
        Method, metric, cross-fitting folds and seed.
    member_records : list of dict, optional
        Provenance of each member for the recipe (path and sha256 of its file).
    deadline : float, optional
        Epoch seconds: members after the first two are left out once it has passed (reported in
        ``skipped``), and greedy selection stops its rounds there.

    Returns
    -------
    (ModelBundle, EnsembleResult)
    """
    from dataclasses import replace

    import numpy as np

    from mlsys_cli.features.unseen import input_counts
    from mlsys_cli.models.metrics import resolve_metric

    start = time.perf_counter()
    if spec.method not in METHODS:
        raise UsageError(f"unknown ensemble method {spec.method!r}", f"choose one of: {', '.join(METHODS)}")
    _check_members(named)
    first = named[0][1]
    metric, higher = resolve_metric(first.task, spec.metric)
    df, y, data_records = _held_out(named, data, spec.folds)
    counts = input_counts(df, list({c["name"]: c for _, b in reversed(named) for c in b.input_schema}.values()))
    scoring = _Scoring(first.task, first.classes, metric, higher, df[first.target].to_numpy(), y, spec.seed)

    scores, latency, skipped = _score_members(named, df, deadline)
    if skipped:
        named = named[:len(scores)]
        member_records = list(member_records)[:len(scores)] if member_records else None
    held_out = _HeldOut(df, np.stack(scores), latency, data_records,
                        f"{', '.join(map(str, data))} (members: as given; ensemble: {spec.folds}-fold cross-fitted)")
    bundle, result = _assemble(named, member_records, held_out, (spec, scoring), (start, deadline, skipped))
    return bundle, replace(result, **counts)


@dataclass(frozen=True, eq=False)
class _HeldOut:
    """The rows an ensemble is fit on and its members' scores there ``P [M, N, ...]``, with each
    member's seconds to score them, the rows' fingerprints and how the report names them."""

    df: Any
    P: Any
    latency: Sequence[float]
    data_records: list
    evaluated_on: str


def ensemble_from_scores(named: Sequence[tuple[str, Any]], P: Any, df: Any, spec: EnsembleSpec = EnsembleSpec(), *,
                         member_records: Sequence[Mapping[str, Any]] | None = None, data_records: Sequence[Mapping[str, Any]] = (),
                         evaluated_on: str = "out-of-fold predictions") -> tuple[Any, EnsembleResult]:
    """An ensemble of model bundles fit on scores the caller made on rows the members did not
    see when making them: out-of-fold predictions of each member's configuration (``tune``'s
    cross-validated choice), where ``df`` (those rows, with the target) is the members'
    training data. Same combiner, cross-fitting and report as :func:`build_ensemble`.

    Parameters
    ----------
    named : sequence of (name, ModelBundle)
    P : ndarray [M, N] or [M, N, C]
        Each member's out-of-fold scores on the rows of ``df``.
    df : DataFrame
        The rows, with the target.
    spec : EnsembleSpec
    member_records : list of dict, optional
    data_records : list of dict
        Fingerprints of the tables ``df`` was read from.
    evaluated_on : str
        What the report says the scores are.

    Returns
    -------
    (ModelBundle, EnsembleResult)
    """
    import numpy as np

    from mlsys_cli.models import train as tr
    from mlsys_cli.models.metrics import resolve_metric

    start = time.perf_counter()
    _check_members(named)
    first = named[0][1]
    metric, higher = resolve_metric(first.task, spec.metric)
    y = tr.encode_target(first.task, df[first.target], first.classes, "rows")
    scoring = _Scoring(first.task, first.classes, metric, higher, df[first.target].to_numpy(), y, spec.seed)
    # Latency only: the members' own scores on rows they trained on would flatter them.
    latency = [_timed(b.predictor.predict_scores, df)[1] for _, b in named]
    held_out = _HeldOut(df, np.asarray(P, dtype=np.float64), latency, list(data_records), evaluated_on)
    return _assemble(named, member_records, held_out, (spec, scoring), (start, None, []))


def _assemble(named: Sequence[tuple[str, Any]], member_records: Sequence[Mapping[str, Any]] | None, held_out: _HeldOut,
              how: tuple[EnsembleSpec, _Scoring], run: tuple[float, float | None, list]) -> tuple[Any, EnsembleResult]:
    """Combine the members' held-out scores, build the predictor and its manifest, and report."""
    from mlsys_cli.models.bundle import ModelBundle

    spec, scoring = how
    start, deadline, skipped = run
    first, df, P, latency = named[0][1], held_out.df, held_out.P, held_out.latency
    combined = _combine(spec, scoring, P, deadline)
    predictor = EnsemblePredictor([named[i][1].predictor for i in combined.keep], combined.combiner, first.task)
    final, ens_secs = _timed(predictor.predict_scores, df)
    member_rows = _member_rows(named, member_records, P, latency, combined.member_weights(len(named)), scoring)
    ens_metrics, gain, verdict = _compare(scoring, member_rows, (combined.oof, P), (ens_secs, latency))
    manifest = _manifest(spec, scoring, _Made(named, member_records, combined, predictor, final, df, held_out.data_records,
                                              member_rows, ens_metrics))
    result = EnsembleResult(
        output=None, method=spec.method, task=first.task, target=first.target, metric=scoring.metric,
        higher_is_better=scoring.higher, rows=int(len(df)), evaluated_on=held_out.evaluated_on,
        members=[{k: v for k, v in r.items() if k != "metrics"} for r in member_rows],
        ensemble={scoring.metric: ens_metrics.get(scoring.metric), "metrics": ens_metrics, "members_kept": len(combined.keep),
                  "ms_per_1k_rows": 1000 * ens_secs / len(df) * 1000},
        gain=gain, worth_it=bool(verdict[0]), verdict=verdict[1], combiner=combined.combiner.to_dict(),
        seconds=round(time.perf_counter() - start, 3), dropped=[named[i][0] for i in range(len(named)) if i not in combined.keep],
        skipped=skipped, stopped_by="timeout" if skipped or combined.late else None,
    )
    return ModelBundle(manifest, predictor), result


def _combine(spec: EnsembleSpec, scoring: _Scoring, P: Any, deadline: float | None) -> _Combined:
    """Cross-fit the combiner for the honest estimate, then refit it on every row.

    Members a weighted combiner gives no weight would cost time at predict time for nothing:
    the refit combiner leaves them out.
    """
    oof = cross_fit(spec.method, scoring.task, P, scoring.y, spec.folds, spec.seed, scoring.metric, deadline=deadline)
    combiner = Combiner(spec.method, scoring.task, metric=scoring.metric, seed=spec.seed, deadline=deadline).fit(P, scoring.y)
    late = bool(combiner.stopped_early_ or (deadline is not None and time.time() > deadline))
    keep = list(range(len(P))) if spec.method == "stack" else [i for i, w in enumerate(combiner.weights_) if w > 0]
    combiner.weights_ = combiner.weights_[keep]
    combiner.n_members_ = len(keep)
    return _Combined(oof, combiner, keep, late)


def _compare(scoring: _Scoring, member_rows: Sequence[Mapping[str, Any]], scores: tuple[Any, Any],
             seconds: tuple[float, Sequence[float]]) -> tuple[dict[str, Any], dict[str, Any], tuple[bool, str]]:
    """The ensemble's cross-fitted metrics, its gain over the best member and the verdict.

    ``scores`` are the out-of-fold ensemble scores and the members' scores ``[M, N, ...]``;
    ``seconds`` the ensemble's and each member's time to score the rows.
    """
    import numpy as np

    from mlsys_cli.models.metrics import compute_metrics

    oof, P = scores
    ens_secs, latency = seconds
    ens_metrics = compute_metrics(scoring.task, scoring.labels, oof, scoring.classes)
    values = [r[scoring.metric] for r in member_rows]
    best_i = int(np.nanargmax(values) if scoring.higher else np.nanargmin(values))
    gain = _gain(scoring, oof, P[best_i])
    ratio = ens_secs / max(latency[best_i], 1e-9)
    gain.update(best_member=member_rows[best_i]["model"], latency_ratio=round(ratio, 2))
    return ens_metrics, gain, _verdict(scoring.metric, scoring.higher, gain, ratio)


def _manifest(spec: EnsembleSpec, scoring: _Scoring, made: _Made) -> Any:
    """The ensemble's manifest: its recipe (with each kept member's), metrics, reference statistics,
    importance and the libraries its members need."""
    from mlsys_cli.data.profile import profile_frame
    from mlsys_cli.models import train as tr
    from mlsys_cli.models.manifest import Manifest, Recipe
    from mlsys_cli.models.metrics import baseline_metrics

    s, first, keep, combiner = scoring, made.named[0][1], made.combined.keep, made.combined.combiner
    kept = [(made.named[i][0], made.named[i][1], dict(made.records[i]) if made.records else {}) for i in keep]
    recipe = _recipe(kept, combiner, Recipe(family="ensemble", task=s.task, target=first.target, seed=spec.seed,
                                            method=spec.method, metric=s.metric, folds=spec.folds), made.data_records)
    return Manifest(
        mlsys_version=first.manifest.get("mlsys_version"), task=s.task, target=first.target, classes=s.classes,
        input_schema=made.predictor.input_schema, recipe=recipe,
        metrics={"evaluated_on": "data (cross-fitted)", "primary": {"name": s.metric, "higher_is_better": s.higher},
                 "valid": made.ens_metrics, "members": {r["model"]: r["metrics"] for r in made.member_rows},
                 "baselines": baseline_metrics(s.task, s.labels, s.labels, s.classes, seed=s.seed)},
        reference={"features": profile_frame(made.df, made.predictor.input_schema),
                   "predictions": tr.prediction_reference(s.task, made.final, s.classes)},
        importance=_importance(made.named, keep, combiner),
        libraries={k: v for _, b, _ in kept for k, v in (b.manifest.get("libraries") or {}).items()},
    )


def _held_out(named: Sequence[tuple[str, Any]], data: Sequence[str], folds: int) -> tuple[Any, Any, list[dict[str, Any]]]:
    """The held-out rows (never a member's training data), their encoded target and fingerprints."""
    from mlsys_cli.data.io import read_frame
    from mlsys_cli.models import train as tr

    first = named[0][1]
    data_records = _check_held_out(named, data)
    df = read_frame(list(data))
    if first.target not in df.columns:
        raise InputError(f"{', '.join(map(str, data))}: no target column {first.target!r}",
                         "--data must hold the target to fit the ensemble")
    tr.check_target(df[first.target], first.target, data)
    y = tr.encode_target(first.task, df[first.target], first.classes, data)
    # No AUC nor log loss to rank the members by (it was a TypeError).
    tr.check_classes(df[first.target], first.task, first.target, data, "fit the ensemble on held-out rows with every class")
    if len(df) < 2 * folds:
        raise InputError(f"--data has {len(df)} rows; the ensemble needs at least {2 * folds}")
    return df, y, data_records


def _member_rows(named: Sequence[tuple[str, Any]], records: Sequence[Mapping[str, Any]] | None, P: Any,
                 latency: Sequence[float], weights: Sequence[float | None], scoring: _Scoring) -> list[dict[str, Any]]:
    """The report's row per member: its family, source, weight, metrics and latency on the held-out rows."""
    from mlsys_cli.models.metrics import compute_metrics

    rows = []
    for i, (name, b) in enumerate(named):
        m = compute_metrics(scoring.task, scoring.labels, P[i], scoring.classes)
        rows.append({"model": name, "family": (b.manifest.get("recipe") or {}).get("family"),
                     "source": (records[i].get("source", "file") if records else "file"), "weight": weights[i],
                     scoring.metric: m.get(scoring.metric), "metrics": m,
                     "ms_per_1k_rows": 1000 * latency[i] / len(scoring.labels) * 1000})
    return rows


def _score_members(named: Sequence[tuple[str, Any]], df: Any, deadline: float | None) -> tuple[list, list, list]:
    """Each member's scores on ``df`` and seconds; members after the first two are left out
    (``skipped``) once the deadline has passed."""
    import numpy as np

    scores, latency, skipped = [], [], []
    for i, (name, b) in enumerate(named):
        if deadline is not None and i >= 2 and time.time() >= deadline:
            skipped.append({"model": name, "reason": "--timeout: no time left to score it"})
            continue
        s, secs = _timed(b.predictor.predict_scores, df)
        scores.append(np.asarray(s, dtype=np.float64))
        latency.append(secs)
    return scores, latency, skipped


def _verdict(metric: str, higher: bool, gain: Mapping[str, Any], ratio: float) -> tuple[bool, str]:
    """Whether the ensemble is worth its latency (a gain of at least :data:`MIN_GAIN` whose 95%
    interval excludes 0), and the sentence that says so."""
    lo, hi = gain["ci95"]
    best = gain["best_member"]
    worth = gain["value"] >= MIN_GAIN and lo is not None and lo > 0
    if worth:
        return worth, (f"worth it: {metric} {'+' if higher else '-'}{abs(gain['value']):.4f} over the best member "
                       f"({best}), 95% CI of the gain [{lo:.4f}, {hi:.4f}], at {ratio:.1f}x its latency")
    why = (f"gain {gain['value']:+.4f} is below {MIN_GAIN}" if gain["value"] < MIN_GAIN else
           f"the 95% CI of the gain [{lo:.4f}, {hi:.4f}] includes 0" if lo is not None else
           "the gain cannot be estimated")
    return worth, (f"not worth it: {why} (in {metric}, improvement counted positive), at {ratio:.1f}x the latency of "
                   f"the best member; use {best} alone")


def _recipe(kept: Sequence[tuple[str, Any, Mapping[str, Any]]], combiner: Combiner, base: Any,
            data_records: Sequence[Mapping[str, Any]]) -> Any:
    """The ensemble's recipe: ``base`` (family, task, target, seed, method, metric, folds) with the
    combiner, each kept member's name, provenance and recipe, and the data fingerprints."""
    from mlsys_cli.data.io import invocation

    members = [{"name": name, **record, "family": (b.manifest.get("recipe") or {}).get("family"),
                "recipe": b.manifest.get("recipe")} for name, b, record in kept]
    train = [r for _, b, _ in kept for r in ((b.manifest.get("recipe") or {}).get("data") or {}).get("train") or []]
    return base.replace(params=combiner.to_dict(), members=members, command=invocation(),
                        data={"train": train, "ensemble": list(data_records)})


def _importance(named: Sequence[tuple[str, Any]], keep: Sequence[int], combiner: Combiner) -> list[dict[str, Any]]:
    """Members' feature importances averaged with the member weights (equal weights for stacking)."""
    weights = [1.0 / len(keep)] * len(keep) if combiner.method == "stack" else list(combiner.weights_)
    total: dict[str, float] = {}
    for w, i in zip(weights, keep):
        for row in named[i][1].manifest.get("importance") or []:
            total[row["feature"]] = total.get(row["feature"], 0.0) + w * float(row["importance"])
    return [{"feature": k, "importance": round(v, 6)} for k, v in sorted(total.items(), key=lambda kv: (-kv[1], kv[0]))]


def pick_trials(done: Sequence[Any], top: int, maximize: bool) -> list[Any]:
    """The ``top`` trials an ensemble of a study starts from, best first.

    The best trial of each family comes first (models of different families make different
    errors, which is what an ensemble gains from; near-copies of the best configuration add
    cost and little else), then the next best distinct configurations fill the places left.

    Parameters
    ----------
    done : completed optuna FrozenTrials with a ``params`` user attribute
    top : how many to pick
    maximize : whether higher values are better

    Returns
    -------
    list of FrozenTrial, ordered best first
    """
    from mlsys_cli.models.study import FAMILY_PARAM

    ranked = sorted(done, key=lambda t: (-t.value if maximize else t.value, t.number))
    keys = [(t.params.get(FAMILY_PARAM), repr(sorted(t.user_attrs["params"].items()))) for t in ranked]
    picked: list[int] = []
    families: set[Any] = set()
    for i, (family, _) in enumerate(keys):
        if family not in families and len(picked) < top:
            families.add(family)
            picked.append(i)
    seen = {keys[i] for i in picked}
    for i, key in enumerate(keys):
        if len(picked) >= top:
            break
        if key not in seen:
            seen.add(key)
            picked.append(i)
    return [ranked[i] for i in sorted(picked)]


def load_kept(trial: Any, storage: str) -> Any:
    """The model bundle ``tune`` kept for a trial, verified; None when it is no longer stored.

    Raises
    ------
    InputError
        The stored bytes do not match the sha256 the trial recorded (tampered), or the bundle
        itself fails its member hashes.
    """
    import tempfile

    from optuna.artifacts import download_artifact
    from optuna.artifacts.exceptions import ArtifactNotFound

    from mlsys_cli.bundle import BundleReader
    from mlsys_cli.fsutil import sha256_file
    from mlsys_cli.models.bundle import ModelBundle
    from mlsys_cli.models.study import artifact_store

    kept = trial.user_attrs.get("model") or {}
    if not kept.get("artifact") or not os.path.isdir(kept.get("store", "")):
        return None
    with tempfile.TemporaryDirectory(prefix="mlsys-member-") as tmp:
        path = os.path.join(tmp, "member.mlsys")
        try:
            download_artifact(artifact_store=artifact_store(kept["store"]), file_path=path, artifact_id=kept["artifact"])
        except (ArtifactNotFound, ValueError):
            return None
        if sha256_file(path) != kept.get("sha256"):
            raise InputError(f"the model kept for trial {trial.number} in {kept['store']} does not match its sha256 "
                             "(tampered or corrupted)", f"delete {os.path.join(kept['store'], kept['artifact'])} to retrain it")
        bundle = ModelBundle.load(path)
        reader = BundleReader(path, kind="model")
        bundle.predictor = KeptPredictor(bundle.predictor, {n: reader.bytes(n) for n in reader.names()},
                                         bundle.manifest["predictor"])
    bundle.path = None
    return bundle


class KeptPredictor:
    """A member loaded from a kept bundle: answers as its predictor does, and saves itself by
    copying the verified member bytes it was loaded from (same bytes as writing it again,
    without serializing every tree of a forest a second time)."""

    def __init__(self, predictor: Any, members: Mapping[str, bytes], layout: Mapping[str, Any]):
        self._predictor = predictor
        self._members = dict(members)
        self._layout = dict(layout)

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):  # not set yet (copy, unpickling): no recursion through _predictor
            raise AttributeError(name)
        return getattr(self._predictor, name)

    def save(self, writer: Any, prefix: str) -> dict[str, Any]:
        """Add the members under ``prefix``; returns the layout for the manifest."""
        for name, data in sorted(self._members.items()):
            writer.add_bytes(f"{prefix}{name}", data)
        return dict(self._layout)


@dataclass(frozen=True)
class StudySource:
    """``--from-study``: the ``top`` best trials of a tuning study as ensemble members.

    Parameters
    ----------
    storage : str
        The study storage (RDB URL or ``journal:PATH``).
    study : str
        The study name.
    top : int
        How many of its best distinct configurations to add (two or more).
    train : path, optional
        The training table to retrain the trials tune kept no model of.
    features : mapping, optional
        Featurizer settings of the retrains (default: the study's own).
    """

    storage: str
    study: str
    top: int = 5
    train: str | None = None
    features: Mapping[str, Any] | None = None


def study_members(source: StudySource, seed: int = 0, *, progress: Any = None, deadline: float | None = None,
                  reserve: float = 0.0) -> tuple[list[tuple[str, Any]], list[dict[str, Any]]]:
    """The models of the ``source.top`` best distinct configurations of a tuning study.

    The best of each family first (see :func:`pick_trials`), then the next best. A trial whose
    fitted model ``tune`` kept is loaded from the study's artifact store (verified); the others
    are trained by :func:`train.train_model` on ``source.train`` with the parameters the trial
    recorded (for early-stopped boosting, the number of rounds it chose).

    With a ``deadline`` (epoch seconds), ``reserve`` seconds before it are kept for combining: a
    trial that has to be retrained is skipped when its tuning time does not fit before that
    (cheaper trials further down still get their turn); when fewer than two members would be
    left, the best skipped ones are retrained anyway. A retrain stops (boosting rounds, epochs,
    forest growth) at the reserve.

    Returns
    -------
    (members, skipped)
        ``members``: (name, ModelBundle) best first; a kept model's predictor is a
        :class:`KeptPredictor`; ``skipped``: ``{model, reason}`` of trials left out for lack of time.
    """
    from mlsys_cli.models.study import FAMILY_PARAM

    if source.top < 2:
        raise UsageError(f"--top {source.top}: an ensemble needs at least two members")
    info, chosen = _study_trials(source)
    # The trials were scored with the study's featurizer options (dropped columns...): keep them.
    retrain = _Retrain(source, info.get("target"), dict(source.features or info.get("features") or {}), seed)
    # Kept models first: loading costs little, and then the retrains know how much time is left.
    kept = {t.number: load_kept(t, source.storage) for t in chosen}
    built: dict[int, Any] = {n: b for n, b in kept.items() if b is not None}
    late: list[Any] = []

    def left() -> float | None:
        return None if deadline is None else deadline - reserve - time.time()

    for t in (t for t in chosen if t.number not in built):
        remaining = left()
        if remaining is not None and _tuning_seconds(t) > remaining:
            late.append(t)  # a cheaper member further down may fit instead
            continue
        built[t.number] = retrain(t, remaining, (progress, len(built), len(chosen)))
    # Two members at least: the best of the trials that did not fit are retrained anyway.
    while len(built) < 2 and late:
        t = late.pop(0)
        built[t.number] = retrain(t, left(), (progress, len(built), len(chosen)))
    skipped = [{"model": f"{source.study}#trial{t.number}({t.params[FAMILY_PARAM]})",
                "reason": f"--timeout: retraining it (~{_tuning_seconds(t):.1f}s) did not fit"} for t in late]
    members = [(f"{source.study}#trial{t.number}({t.params[FAMILY_PARAM]})", built[t.number])
               for t in chosen if t.number in built]
    return members, skipped


def _study_trials(source: StudySource) -> tuple[dict[str, Any], list[Any]]:
    """The study's ``mlsys`` attributes and its trials an ensemble starts from (:func:`pick_trials`)."""
    import optuna
    from optuna.trial import TrialState

    from mlsys_cli.models.study import open_storage

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    backend = open_storage(source.storage)
    try:
        loaded = optuna.load_study(study_name=source.study, storage=backend)
    except KeyError:
        raise InputError(f"no study {source.study!r} in {source.storage}") from None
    done = [t for t in loaded.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)) if "params" in t.user_attrs]
    if not done:
        raise InputError(f"study {source.study!r} has no completed trial")
    return loaded.user_attrs.get("mlsys") or {}, pick_trials(done, source.top, maximize=loaded.direction.name == "MAXIMIZE")


def _tuning_seconds(trial: Any) -> float:
    return trial.duration.total_seconds() if trial.duration else 0.0


@dataclass(frozen=True)
class _Retrain:
    """Retrains a study's trial on the training table with the parameters it recorded."""

    source: StudySource
    target: str | None
    features: Mapping[str, Any]
    seed: int

    def __call__(self, trial: Any, left: float | None, progress: tuple[Any, int, int]) -> Any:
        """The trial's model; ``left``: seconds it may take (None: no limit); ``progress``: the bar,
        how many members are built and how many are wanted."""
        from mlsys_cli.models.study import FAMILY_PARAM
        from mlsys_cli.models.train import FitRun, TrainSpec, train_model

        if self.source.train is None:
            raise UsageError(f"trial {trial.number} has no kept model: --from-study needs --train to retrain it")
        bar, done, total = progress
        if bar is not None:
            bar.update(completed=done, total=total, description=f"retraining trial {trial.number}")
        spec = TrainSpec(family=trial.params[FAMILY_PARAM], target=self.target, params=trial.user_attrs["params"],
                         features=self.features or None, seed=self.seed)
        bundle, _ = train_model(self.source.train, spec, run=FitRun(timeout=None if left is None else max(left, 1.0)))
        return bundle


def ensemble(models: Sequence[str], data: Sequence[str] | str, spec: EnsembleSpec = EnsembleSpec(), *,
             study: StudySource | None = None, output: str | None = None, timeout: float | None = None,
             progress: Any = None) -> EnsembleResult:
    """Build an ensemble from model bundles (or a tuning study's best trials) and write it.

    Parameters
    ----------
    models : paths of ``.mlsys`` model bundles
    data : path(s) of held-out rows with the target
    spec : EnsembleSpec
        Method, metric, cross-fitting folds and seed.
    study : StudySource, optional
        ``--from-study``: add the best trials of a tuning study (the models ``tune`` kept, or
        retrained on its ``train`` table).
    output : path, optional
        Where to write the ensemble bundle.
    timeout : float, optional
        Seconds for the whole step: members that do not fit are left out (at least two are
        used), selection stops early, and the report says so (``stopped_by``, ``skipped``).
    progress : object, optional

    Returns
    -------
    EnsembleResult
    """
    from dataclasses import replace

    from mlsys_cli.data.io import input_record
    from mlsys_cli.models.bundle import ModelBundle

    if timeout is not None and timeout <= 0:
        raise UsageError(f"--timeout {timeout:g}: must be positive")
    deadline = None if timeout is None else time.time() + timeout
    data = [str(data)] if isinstance(data, (str, Path)) else [str(d) for d in data]
    named = [(str(p), ModelBundle.load(p)) for p in models]
    records: list[dict[str, Any]] = [{"path": str(p), "sha256": input_record(p, with_parent=False)["sha256"]} for p in models]
    _refuse_duplicates(records)
    skipped: list[dict[str, Any]] = []
    if study is not None:
        if not study.storage or not study.study:
            raise UsageError("--from-study needs --storage and --study")
        reserve = 0.0 if timeout is None else COMBINE_SHARE * timeout
        from_study, skipped = study_members(study, spec.seed, progress=progress, deadline=deadline, reserve=reserve)
        named += from_study
        records += [{"study": study.study, "trial": name, "source": "kept" if isinstance(b.predictor, KeptPredictor) else "retrained"}
                    for name, b in from_study]
    bundle, result = build_ensemble(named, data, spec, member_records=records, deadline=deadline)
    if skipped:
        result = replace(result, skipped=skipped + result.skipped, stopped_by="timeout")
    if output:
        bundle.save(output)
    return replace(result, output=str(output) if output else None)
