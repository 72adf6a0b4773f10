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

    def to_dict(self) -> dict[str, Any]:
        return {
            "output": self.output, "method": self.method, "task": self.task, "target": self.target,
            "metric": self.metric, "higher_is_better": self.higher_is_better, "rows": self.rows,
            "evaluated_on": self.evaluated_on, "members": self.members, "ensemble": self.ensemble,
            "gain": self.gain, "worth_it": self.worth_it, "verdict": self.verdict, "combiner": self.combiner,
            "dropped": self.dropped, "skipped": self.skipped, "stopped_by": self.stopped_by, "seconds": self.seconds,
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


def _gain(task: str, metric: str, higher: bool, y: Any, ens: Any, best: Any, seed: int) -> dict[str, Any]:
    """The ensemble's gain over the best member on the same rows, with a paired bootstrap 95% interval."""
    import numpy as np

    from mlsys_cli.models.evaluate import bootstrap_weights, interval, weighted_metrics

    reps = []
    for W in bootstrap_weights(len(y), BOOTSTRAP, seed):
        diff = weighted_metrics(task, W, y, ens)[metric] - weighted_metrics(task, W, y, best)[metric]
        reps.append(diff if higher else -diff)
    lo, hi = interval(np.concatenate(reps), 0.95)
    point = score(task, metric, y, ens) - score(task, metric, y, best)
    return {"value": point if higher else -point, "ci95": [lo, hi]}


def build_ensemble(named: Sequence[tuple[str, Any]], data: Sequence[str], *, method: str = "average",
                   metric: str | None = None, folds: int = FOLDS, seed: int = 0,
                   member_records: Sequence[Mapping[str, Any]] | None = None,
                   deadline: float | None = None) -> tuple[Any, EnsembleResult]:
    """Fit an ensemble of loaded model bundles on held-out rows.

    Parameters
    ----------
    named : sequence of (name, ModelBundle)
        The members, with the names the report uses (their paths).
    data : paths
        Held-out rows with the target (never a member's training data).
    method : {"average", "weighted", "stack", "select"}
    metric : str, optional
        Metric for ``select`` and the report (the task's primary metric by default).
    folds : int
        Cross-fitting folds inside ``data`` for the honest estimate.
    seed : int
    member_records : list of dict, optional
        Provenance of each member for the recipe (path and sha256 of its file).
    deadline : float, optional
        Epoch seconds: members after the first two are left out once it has passed (reported in
        ``skipped``), and greedy selection stops its rounds there.

    Returns
    -------
    (ModelBundle, EnsembleResult)
    """
    import numpy as np

    from mlsys_cli.data.profile import profile_frame
    from mlsys_cli.models import train as tr
    from mlsys_cli.models.bundle import ModelBundle
    from mlsys_cli.models.manifest import Manifest, Recipe
    from mlsys_cli.models.metrics import baseline_metrics, compute_metrics, resolve_metric

    start = time.perf_counter()
    if method not in METHODS:
        raise UsageError(f"unknown ensemble method {method!r}", f"choose one of: {', '.join(METHODS)}")
    _check_members(named)
    first = named[0][1]
    task, target, classes = first.task, first.target, first.classes
    metric, higher = resolve_metric(task, metric)
    df, y, data_records = _held_out(named, data, folds)
    labels = df[target].to_numpy()

    scores, latency, skipped = _score_members(named, df, deadline)
    if skipped:
        named = named[:len(scores)]
        member_records = list(member_records)[:len(scores)] if member_records else None
    P = np.stack(scores)
    oof = cross_fit(method, task, P, y, folds, seed, metric, deadline=deadline)
    combiner = Combiner(method, task, metric=metric, seed=seed, deadline=deadline).fit(P, y)
    stopped_by = "timeout" if skipped or combiner.stopped_early_ or (deadline is not None and time.time() > deadline) else None

    # Members a weighted combiner gives no weight cost time at predict time for nothing: drop them.
    keep = list(range(len(named))) if method == "stack" else [i for i, w in enumerate(combiner.weights_) if w > 0]
    dropped = [named[i][0] for i in range(len(named)) if i not in keep]
    combiner.weights_ = combiner.weights_[keep]
    combiner.n_members_ = len(keep)
    predictor = EnsemblePredictor([named[i][1].predictor for i in keep], combiner, task)
    final, ens_secs = _timed(predictor.predict_scores, df)

    weights = [float(combiner.weights_[keep.index(i)]) if i in keep and method != "stack" else None for i in range(len(named))]
    member_rows = _member_rows(named, member_records, P, latency, weights, labels, metric)
    ens_metrics = compute_metrics(task, labels, oof, classes)
    values = [r[metric] for r in member_rows]
    best_i = int(np.nanargmax(values) if higher else np.nanargmin(values))
    gain = _gain(task, metric, higher, y, oof, P[best_i], seed)
    ratio = ens_secs / max(latency[best_i], 1e-9)
    gain.update(best_member=member_rows[best_i]["model"], latency_ratio=round(ratio, 2))
    worth, verdict = _verdict(metric, higher, gain, ratio)

    kept = [(named[i][0], named[i][1], dict(member_records[i]) if member_records else {}) for i in keep]
    recipe = _recipe(kept, combiner, Recipe(family="ensemble", task=task, target=target, seed=seed, method=method,
                                            metric=metric, folds=folds), data_records)
    manifest = Manifest(
        mlsys_version=first.manifest.get("mlsys_version"), task=task, target=target, classes=classes,
        input_schema=predictor.input_schema, recipe=recipe,
        metrics={"evaluated_on": "data (cross-fitted)", "primary": {"name": metric, "higher_is_better": higher},
                 "valid": ens_metrics, "members": {r["model"]: r["metrics"] for r in member_rows},
                 "baselines": baseline_metrics(task, labels, labels, classes, seed=seed)},
        reference={"features": profile_frame(df, predictor.input_schema),
                   "predictions": tr.prediction_reference(task, final, classes)},
        importance=_importance(named, keep, combiner),
        libraries={k: v for _, b, _ in kept for k, v in (b.manifest.get("libraries") or {}).items()},
    )
    result = EnsembleResult(
        output=None, method=method, task=task, target=target, metric=metric, higher_is_better=higher, rows=int(len(df)),
        evaluated_on=f"{', '.join(map(str, data))} (members: as given; ensemble: {folds}-fold cross-fitted)",
        members=[{k: v for k, v in r.items() if k != "metrics"} for r in member_rows],
        ensemble={metric: ens_metrics.get(metric), "metrics": ens_metrics, "members_kept": len(keep),
                  "ms_per_1k_rows": 1000 * ens_secs / len(df) * 1000},
        gain=gain, worth_it=bool(worth), verdict=verdict, combiner=combiner.to_dict(),
        seconds=round(time.perf_counter() - start, 3), dropped=dropped, skipped=skipped, stopped_by=stopped_by,
    )
    return ModelBundle(manifest, predictor), result


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
    if len(df) < 2 * folds:
        raise InputError(f"--data has {len(df)} rows; the ensemble needs at least {2 * folds}")
    return df, y, data_records


def _member_rows(named: Sequence[tuple[str, Any]], records: Sequence[Mapping[str, Any]] | None, P: Any,
                 latency: Sequence[float], weights: Sequence[float | None], labels: Any, metric: str) -> list[dict[str, Any]]:
    """The report's row per member: its family, source, weight, metrics and latency on the held-out rows."""
    from mlsys_cli.models.metrics import compute_metrics

    first = named[0][1]
    rows = []
    for i, (name, b) in enumerate(named):
        m = compute_metrics(first.task, labels, P[i], first.classes)
        rows.append({"model": name, "family": (b.manifest.get("recipe") or {}).get("family"),
                     "source": (records[i].get("source", "file") if records else "file"), "weight": weights[i],
                     metric: m.get(metric), "metrics": m, "ms_per_1k_rows": 1000 * latency[i] / len(labels) * 1000})
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


def study_members(storage: str, study: str, top: int, train: str | None, seed: int = 0,
                  features: Mapping[str, Any] | None = None, progress: Any = None,
                  deadline: float | None = None, reserve: float = 0.0) -> tuple[list[tuple[str, Any]], list[dict[str, Any]]]:
    """The models of the ``top`` best distinct configurations of a tuning study.

    The best of each family first (see :func:`pick_trials`), then the next best. A trial whose
    fitted model ``tune`` kept is loaded from the study's artifact store (verified); the others
    are trained by :func:`train.train_model` on ``train`` with the parameters the trial recorded
    (for early-stopped boosting, the number of rounds it chose).

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
    import optuna
    from optuna.trial import TrialState

    from mlsys_cli.models.train import FitRun, TrainSpec, train_model
    from mlsys_cli.models.study import FAMILY_PARAM, open_storage

    if top < 2:
        raise UsageError(f"--top {top}: an ensemble needs at least two members")
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    backend = open_storage(storage)
    try:
        loaded = optuna.load_study(study_name=study, storage=backend)
    except KeyError:
        raise InputError(f"no study {study!r} in {storage}") from None
    info = loaded.user_attrs.get("mlsys") or {}
    done = [t for t in loaded.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)) if "params" in t.user_attrs]
    if not done:
        raise InputError(f"study {study!r} has no completed trial")
    chosen = pick_trials(done, top, maximize=loaded.direction.name == "MAXIMIZE")
    # The trials were scored with the study's featurizer options (dropped columns...): keep them.
    recipe_features = dict(features) if features else dict(info.get("features") or {})
    members: list[tuple[str, Any]] = []
    skipped: list[dict[str, Any]] = []
    # Kept models first: loading costs little, and then the retrains know how much time is left.
    kept = {t.number: load_kept(t, storage) for t in chosen}
    built: dict[int, Any] = {n: b for n, b in kept.items() if b is not None}
    late: list[Any] = []

    def retrain(t: Any, left: float | None) -> None:
        if train is None:
            raise UsageError(f"trial {t.number} has no kept model: --from-study needs --train to retrain it")
        if progress is not None:
            progress.update(completed=len(built), total=len(chosen), description=f"retraining trial {t.number}")
        spec = TrainSpec(family=t.params[FAMILY_PARAM], target=info.get("target"), params=t.user_attrs["params"],
                         features=recipe_features or None, seed=seed)
        built[t.number], _ = train_model(train, spec, run=FitRun(timeout=None if left is None else max(left, 1.0)))

    for t in (t for t in chosen if t.number not in built):
        left = None if deadline is None else deadline - reserve - time.time()
        cost = t.duration.total_seconds() if t.duration else 0.0
        if left is not None and cost > left:
            late.append(t)  # a cheaper member further down may fit instead
            continue
        retrain(t, left)
    # Two members at least: the best of the trials that did not fit are retrained anyway.
    while len(built) < 2 and late:
        retrain(late.pop(0), None if deadline is None else deadline - reserve - time.time())
    for t in late:
        cost = t.duration.total_seconds() if t.duration else 0.0
        skipped.append({"model": f"{study}#trial{t.number}({t.params[FAMILY_PARAM]})",
                        "reason": f"--timeout: retraining it (~{cost:.1f}s) did not fit"})
    for t in (t for t in chosen if t.number in built):
        members.append((f"{study}#trial{t.number}({t.params[FAMILY_PARAM]})", built[t.number]))
    return members, skipped


def ensemble(models: Sequence[str], *, data: Sequence[str] | str, method: str = "average", metric: str | None = None,
             folds: int = FOLDS, seed: int = 0, output: str | None = None, storage: str | None = None,
             study: str | None = None, top: int = 5, train: str | None = None, timeout: float | None = None,
             progress: Any = None) -> EnsembleResult:
    """Build an ensemble from model bundles (or a tuning study's best trials) and write it.

    Parameters
    ----------
    models : paths of ``.mlsys`` model bundles
    data : path(s) of held-out rows with the target
    method : {"average", "weighted", "stack", "select"}
    metric : str, optional
    folds : int
        Cross-fitting folds for the honest estimate.
    seed : int
    output : path, optional
        Where to write the ensemble bundle.
    storage, study, top, train : optional
        ``--from-study``: add the ``top`` best trials of ``study``: the models ``tune`` kept,
        or retrained on ``train``.
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
    skipped: list[dict[str, Any]] = []
    if study is not None:
        if storage is None:
            raise UsageError("--from-study needs --storage and --study")
        reserve = 0.0 if timeout is None else COMBINE_SHARE * timeout
        from_study, skipped = study_members(storage, study, top, train, seed=seed, progress=progress,
                                            deadline=deadline, reserve=reserve)
        named += from_study
        records += [{"study": study, "trial": name, "source": "kept" if isinstance(b.predictor, KeptPredictor) else "retrained"}
                    for name, b in from_study]
    bundle, result = build_ensemble(named, data, method=method, metric=metric, folds=folds, seed=seed,
                                    member_records=records, deadline=deadline)
    if skipped:
        result = replace(result, skipped=skipped + result.skipped, stopped_by="timeout")
    if output:
        bundle.save(output)
    return replace(result, output=str(output) if output else None)
