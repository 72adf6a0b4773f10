"""``train --engine dask``: XGBoost's own Dask integration over partitioned Parquet.

The model is trained by ``xgboost.dask`` (``DaskXGBClassifier`` / ``DaskXGBRegressor``, the same
hyperparameters the local family sets) on a feature matrix built on the workers: each Parquet
file of the train table is a partition that a worker reads and featurizes. The booster is then
loaded into the local family's estimator wrapper and saved through the same predictor and
manifest as a local ``train``, so the bundle is the local format (``predict``, ``export``,
``serve``, ``retrain`` use it unchanged).

What this process holds: the target's distinct values and counts (to infer the task and the
classes), ``--valid`` (read here, as locally), a seeded sample of at most ``SCORE_ROWS`` train
rows (train metrics, baselines, reference statistics; all rows when the table is smaller,
exactly as local ``train`` samples them), and, only when no ``--features`` bundle is given, the
whole train table to fit the featurizer (as ``featurize --engine dask`` does). Give a features
bundle fitted with ``mlsys featurize`` (on the table or a sample of it) for a table larger than
this process's memory.

Differences from local training, by design: XGBoost merges per-worker quantile sketches and
sums gradient histograms across workers, so trees can differ from a single-process fit in the
last floating-point bits (and in split candidates when a feature has more distinct values than
``max_bin``); and target-encoded columns of the training matrix are cross-fitted within each
partition instead of across the whole table (still out of fold: no row sees its own target).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from mlsys_cli.errors import InputError, UsageError

DASK_FAMILIES = ("xgboost",)
LABEL = "__mlsys_label__"


@dataclass(frozen=True)
class Fitted:
    """The trained pieces a bundle is assembled from."""

    family: Any
    est: Any
    spec: dict[str, Any]
    featurizer: Any
    features_spec: Any
    target: str
    classes: list[Any] | None


@dataclass(frozen=True)
class MatrixJob:
    """What a worker needs to featurize one partition: the fitted featurizer as JSON, and the target."""

    featurizer: dict[str, Any]
    target: str
    task: str
    classes: tuple[Any, ...] | None
    columns: tuple[str, ...]
    dtype: str


def check_family(model: str) -> None:
    """Refuse a family without a distributed trainer (exit 2, naming the ones that have one)."""
    if model not in DASK_FAMILIES:
        raise UsageError(f"--model {model} has no distributed trainer for --engine dask",
                         f"--engine dask trains: {', '.join(DASK_FAMILIES)}; or use --engine local")


def partition_matrix(path: str, job: MatrixJob) -> Any:
    """One partition's feature matrix and encoded label as a pandas frame (runs on a worker)."""
    import numpy as np
    import pandas as pd

    from mlsys_cli.data.partitioned import read_partition
    from mlsys_cli.features.pipeline import Featurizer
    from mlsys_cli.models.train import encode_target

    fz = Featurizer.from_state(job.featurizer)
    df = read_partition(path, job.columns)
    y = encode_target(job.task, df[job.target], list(job.classes) if job.classes else None, path)
    X = fz.transform_train(df, dtype=np.dtype(job.dtype)) if len(df) else np.zeros((0, fz.n_features_out_), job.dtype)
    frame = pd.DataFrame(X, columns=fz.get_feature_names_out())
    frame[LABEL] = y
    return frame


def _target_summary(client: Any, parts: Any, target: str) -> tuple[Any, int]:
    """The target's distinct values (with the table's dtype) and its count of missing/infinite values."""
    import numpy as np
    import pandas as pd

    from mlsys_cli.data.partitioned import dask_frame
    from mlsys_cli.features.schema import missing_target

    column = dask_frame(parts, [target])[target]
    distinct = column.dropna().drop_duplicates()
    bad = column.map_partitions(lambda s: pd.Series(missing_target(s), index=s.index), meta=(target, bool))
    if pd.api.types.is_float_dtype(column.dtype):  # np.dtype() of a text column (StringDtype) was a TypeError
        bad = bad | column.abs().eq(np.inf)
    values, n_bad = client.compute([distinct, bad.sum()], sync=True)
    return pd.Series(values.to_numpy(), dtype=column.dtype), int(n_bad)


def _rows(client: Any, parts: Any, indices: Any) -> Any:
    """The rows at global ``indices`` (sorted) of the partitioned table, as one pandas frame."""
    import numpy as np
    import pandas as pd

    starts = np.concatenate([[0], np.cumsum(parts.rows)])
    futures = []
    for i, f in enumerate(parts.files):
        local = indices[(indices >= starts[i]) & (indices < starts[i + 1])] - starts[i]
        if local.size:
            futures.append(client.submit(_take, str(Path(f).resolve()), local, pure=False))
    tables = client.gather(futures)
    frames = [t.to_pandas() for t in tables]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def _take(path: str, rows: Any) -> Any:
    from mlsys_cli.data.partitioned import read_arrow

    return read_arrow(path).take(rows).replace_schema_metadata(None)


def _featurizer(client: Any, parts: Any, train_spec: Any, family: Any, problem: tuple[str, str]) -> tuple[Any, Any]:
    """The fitted featurizer and the settings the recipe records (a bundle, or fitted column by column)."""
    from mlsys_cli.data.io import input_record
    from mlsys_cli.features.dask_featurize import column_table
    from mlsys_cli.models.train import load_features, make_featurizer

    target, task = problem
    features = train_spec.features
    if isinstance(features, (str, bytes)) or hasattr(features, "__fspath__"):
        return load_features(features, target), {"bundle": input_record(features)}
    spec = {"preset": family.preset, "family": family.name, "task": task, **dict(features or {})}
    featurizer = make_featurizer(target, family.preset, spec, train_spec.seed)
    featurizer.fit(column_table(client, parts))  # column by column: the table is never here whole
    return featurizer, spec


class DeadlineStop:
    """An XGBoost callback that ends training at the first round after ``stop_at`` (``time.time()``).

    It runs on every worker of an ``xgboost.dask`` fit, and the workers must stop at the same
    round (a worker that stops while the others wait in the next round's allreduce hangs the
    job): the first worker's clock decides, broadcast to all of them every round.
    """

    def __init__(self, stop_at: float):
        self.stop_at = stop_at

    def callback(self) -> Any:
        import xgboost as xgb

        stop_at = self.stop_at

        class _Stop(xgb.callback.TrainingCallback):
            def after_iteration(self, model: Any, epoch: int, evals_log: Any) -> bool:
                from xgboost import collective

                return bool(collective.broadcast(time.time() >= stop_at, 0))

        return _Stop()


def _dask_estimator(est: Any, task: str, rounds: int | None, stop_at: float | None = None) -> Any:
    """The xgboost.dask twin of the local family's estimator: the same parameters, early stopping.

    ``n_jobs`` is left to xgboost.dask: each worker trains with its own thread count.
    """
    import xgboost as xgb
    from xgboost import dask as dxgb

    params = {k: v for k, v in est.estimator.get_params().items() if k not in ("n_jobs", "callbacks")}
    callbacks = []
    if rounds is not None:  # as the local fit: keep the trees up to the best validation round
        callbacks.append(xgb.callback.EarlyStopping(rounds=rounds, save_best=True))
    if stop_at is not None:
        callbacks.append(DeadlineStop(stop_at).callback())
    if callbacks:
        params["callbacks"] = callbacks
    return (dxgb.DaskXGBRegressor if task == "regression" else dxgb.DaskXGBClassifier)(**params)


def fit_on_cluster(client: Any, est: Any, train: tuple[Any, Any], eval_set: tuple[Any, Any] | None = None,
                   stop_at: float | None = None) -> tuple[Any, list[float]]:
    """Fit the local family's estimator ``est`` with xgboost.dask on dask collections; its booster loaded back.

    Parameters
    ----------
    client : distributed.Client
    est : XGBoostModel
        Made by the family (``family.make``): its parameters are the fit's, and it receives the
        trained booster, so it predicts, saves and exports as a locally trained one.
    train, eval_set : (X, y) dask arrays
        The training rows and, optionally, the early-stopping rows.
    stop_at : float, optional
        Wall-clock time (``time.time()``) after which no new round starts.

    Returns
    -------
    est, and the validation loss after each round (empty without ``eval_set``).
    """
    import tempfile

    from mlsys_cli.data.cluster import worker_failures

    task = est.task
    dask_est = _dask_estimator(est, task, (est.early_stopping_rounds or None) if eval_set is not None else None, stop_at)
    dask_est.client = client
    kwargs: dict[str, Any] = {"verbose": False}
    if eval_set is not None:
        kwargs["eval_set"] = [eval_set]
    with worker_failures(), client.as_current():  # xgboost.dask looks the client up as the current one, even when given
        dask_est.fit(*train, **kwargs)
    with tempfile.TemporaryDirectory() as tmp:
        dask_est.save_model(Path(tmp) / "model.ubj")
        est.estimator.load_model(Path(tmp) / "model.ubj")
    trees = est.estimator.get_booster().num_boosted_rounds()
    rounds = int(est.estimator.get_params()["n_estimators"])
    history = dask_est.evals_result() if eval_set is not None else {}
    losses = [float(v) for v in next(iter(next(iter(history.values())).values()))] if history else []
    # Rounds run (save_best keeps only up to the best one): stopped early only when fewer ran.
    ran = len(losses) or trees
    stopped = None
    if ran < rounds:
        stopped = "timeout" if stop_at is not None and time.time() >= stop_at else "early_stopping"
    est.n_features_ = int(train[0].shape[1])
    est.fit_info_ = {"n_estimators": trees, "best_iteration": trees - 1, "stopped_by": stopped,
                     "engine": "dask", "workers": len(client.scheduler_info(n_workers=-1)["workers"])}
    return est, losses


def _fit(client: Any, family: Any, spec: dict[str, Any], data: tuple[Any, Any, Any], stop_at: float | None = None) -> Any:
    """Fit with xgboost.dask on the partitioned matrix; the booster loaded into the local family's estimator.

    ``stop_at`` (``time.time()``, from ``--timeout``) ends training at the first round after it.
    """
    import dask.array as da

    train, X_valid, y_valid = data
    est = family.make(spec["task"], spec["n_classes"], spec["params"], spec["seed"])
    features = [c for c in train.columns if c != LABEL]
    X, y = train[features].to_dask_array(lengths=True), train[LABEL].to_dask_array(lengths=True)
    held_out = None
    if X_valid is not None:
        held_out = (da.from_array(X_valid, chunks=(max(1, len(X_valid)), X_valid.shape[1])),
                    da.from_array(y_valid, chunks=max(1, len(y_valid))))
    return fit_on_cluster(client, est, (X, y), held_out, stop_at)[0]


def train_dask(train: Sequence[Any], spec: Any, *, valid: str | None = None, run: Any = None,
               engine: Any) -> tuple[Any, Any]:
    """Train on a Dask cluster: :func:`~mlsys_cli.models.train.train_model`'s arguments and results.

    Parameters
    ----------
    train : list of paths
        The train table: Parquet files, directories or globs (one partition per file).
    spec : TrainSpec
        What to train (``class_weight``, ``sample_weight`` and ``calibrate`` are local only).
    valid : path, optional
        The validation table (read in this process): early stopping and reported metrics.
    run : FitRun, optional
        Its ``progress`` and ``timeout`` (training stops at the first round after it, on every
        worker at once) are used; ``callback`` and ``init`` are local only.
    engine : Engine

    Raises
    ------
    UsageError
        A family without a distributed trainer, an option Dask does not support, or the dask
        extra missing (exit 2).
    InputError
        As local train (target, classes, data); also partitions with inconsistent schemas, an
        unreachable scheduler or a worker lost beyond Dask's retries (exit 3).
    """
    import pandas as pd

    from mlsys_cli.data.cluster import connect
    from mlsys_cli.models.families import resolve_params
    from mlsys_cli.models.train import infer_task, score_sample

    start = time.perf_counter()
    family, parts, target = _prepare(train, spec, run)
    progress = getattr(run, "progress", None)
    with connect(engine) as client:
        if progress is not None:
            progress.update(description="reading the target")
        values, bad = _target_summary(client, parts, target)
        if bad:
            raise InputError(f"{', '.join(map(str, train))}: target {target!r} has {bad} missing or infinite value(s)",
                             "filter those rows out before training")
        task, classes = infer_task(pd.Series(values), spec.task)
        estimator = {"task": task, "n_classes": len(classes) if classes else 0, "seed": spec.seed,
                     "params": resolve_params(family, task, spec.params)}
        if progress is not None:
            progress.update(description="featurizing")
        featurizer, features_spec = _featurizer(client, parts, spec, family, (target, task))
        columns = [c["name"] for c in featurizer.input_schema_]
        job = MatrixJob(featurizer=featurizer.get_state(), target=target, task=task,
                        classes=tuple(classes) if classes else None,
                        columns=tuple(dict.fromkeys([*columns, target])), dtype=str(family.input_dtype))
        matrix = _matrix(parts, job, featurizer)
        held_out = _valid(valid, featurizer, family, (target, task, classes))
        if progress is not None:
            progress.update(description="training on the Dask cluster")
        est = _fit(client, family, estimator, (matrix, held_out[1], held_out[2]), _stop_at(run))
        sample = _rows(client, parts, score_sample(parts.total_rows, spec.seed))
    fitted = Fitted(family, est, estimator, featurizer, features_spec, target, classes)
    return _assemble(fitted, (parts, sample, held_out), (train, valid, spec.seed), start)


def _stop_at(run: Any) -> float | None:
    """The ``time.time()`` after which no round starts (``run.timeout`` from now), or None."""
    timeout = getattr(run, "timeout", None)
    return time.time() + timeout if timeout is not None else None


def _prepare(train: Sequence[Any], spec: Any, run: Any) -> tuple[Any, Any, str]:
    """What is checked before connecting: the family and options, the extra, the partitions'
    schemas and rows, the target column. Returns (family, partitions, target)."""
    from mlsys_cli.data.cluster import require_dask
    from mlsys_cli.data.partitioned import partitions
    from mlsys_cli.models.families import get_family
    from mlsys_cli.models.train import resolve_target

    check_family(spec.family)
    _refuse_local_only(spec, run)
    require_dask()
    family = get_family(spec.family)
    parts = partitions(train)
    parts.require()
    if parts.total_rows == 0:
        raise InputError(f"{', '.join(map(str, train))}: no rows")
    target = resolve_target(parts.schemas[0].empty_table().to_pandas(), spec.target, list(train))
    return family, parts, target


def _refuse_local_only(spec: Any, run: Any) -> None:
    """Options of local train that the Dask trainer does not have: a usage error naming the first."""
    chosen = (("--class-weight", spec.class_weight), ("--sample-weight", spec.sample_weight),
              ("--calibrate", spec.calibrate), ("a warm start", getattr(run, "init", None)))
    unsupported = [name for name, value in chosen if value]
    if unsupported:
        raise UsageError(f"{unsupported[0]} is not supported with --engine dask", "leave it out, or use --engine local")


def _matrix(parts: Any, job: MatrixJob, featurizer: Any) -> Any:
    """The train matrix as a dask DataFrame: one partition per file, featurized on the workers."""
    import dask.dataframe as dd
    import numpy as np
    import pandas as pd

    meta = pd.DataFrame({n: np.zeros(0, dtype=job.dtype) for n in featurizer.get_feature_names_out()})
    meta[LABEL] = np.zeros(0, dtype=np.float64 if job.task == "regression" else np.int64)
    return dd.from_map(partition_matrix, [str(Path(f).resolve()) for f in parts.files], job=job, meta=meta,
                       divisions=[None] * (len(parts.files) + 1), enforce_metadata=False)


def _valid(valid: str | None, featurizer: Any, family: Any, problem: tuple[str, str, Any]) -> tuple[Any, Any, Any]:
    """The validation frame, matrix and encoded target (read in this process, as locally), or Nones."""
    if valid is None:
        return None, None, None
    from mlsys_cli.data.io import read_frame
    from mlsys_cli.models.train import check_target, encode_target

    target, task, classes = problem
    df = read_frame(valid)
    if target not in df.columns:
        raise InputError(f"{valid}: no target column {target!r}")
    check_target(df[target], target, valid)
    y = encode_target(task, df[target], classes, valid)
    return df, featurizer.transform(df, dtype=family.input_dtype), y


def _assemble(fitted: Fitted, data: tuple[Any, Any, Any], sources: tuple[Sequence[Any], str | None, int],
              start: float) -> tuple[Any, Any]:
    """The bundle (local predictor and manifest writer) and the report, scored in this process."""
    import numpy as np

    from mlsys_cli.data.io import input_record, invocation
    from mlsys_cli.data.profile import profile_frame, profile_values
    from mlsys_cli.models.bundle import ModelBundle
    from mlsys_cli.models.manifest import Manifest, Recipe
    from mlsys_cli.models.metrics import baseline_metrics, compute_metrics, primary_metric
    from mlsys_cli.models.predictors import SinglePredictor
    from mlsys_cli.models.train import (TOP_FEATURES, TrainResult, baseline_inputs, encode_target, libraries,
                                        prediction_reference, ranked_importance, role_warnings)

    parts, sample, (valid_df, X_valid, y_valid) = data
    train, valid, seed = sources
    f, task, classes = fitted, fitted.spec["task"], fitted.classes
    spec = {**f.spec, "n_features": int(f.est.n_features_), "fit_info": f.est.fit_info_}
    predictor = SinglePredictor(f.featurizer, f.family, f.est, spec)
    labels = (lambda y_: y_ if task == "regression" else np.asarray(classes, dtype=object)[y_])
    y_sample = encode_target(task, sample[f.target], classes, train)
    train_scores = predictor.predict_scores(sample)
    train_metrics = compute_metrics(task, labels(y_sample), train_scores, classes)
    valid_metrics = (compute_metrics(task, labels(y_valid), predictor.scores_from_features(X_valid), classes)
                     if valid_df is not None else None)
    eval_labels = labels(y_valid if valid_df is not None else y_sample)
    train_labels, prior = baseline_inputs(task, y_sample, classes)
    baselines = baseline_metrics(task, train_labels, eval_labels, classes, seed=seed, sample_weight=prior)
    caught = [] if valid_df is not None else ["no --valid table: metrics are on the training rows and flatter the model"]
    if len(sample) < parts.total_rows:
        caught.append(f"train metrics, baselines and reference statistics are on a seeded sample of {len(sample):,} "
                      f"of the {parts.total_rows:,} training rows (manifest: metrics.train_scored)")
    metric_name, higher = primary_metric(task)
    schema = list(f.featurizer.input_schema_)
    ranked = ranked_importance(f.family, f.est, list(f.featurizer.get_feature_names_out()))
    recipe = Recipe(family=f.family.name, task=task, target=f.target, params=spec["params"], seed=seed,
                    features=f.features_spec, class_weight=None, sample_weight=None, calibrate=None, fit=spec["fit_info"],
                    command=invocation(),
                    data={"train": [input_record(p) for p in parts.files],
                          "valid": [input_record(valid)] if valid else None})
    metrics = {"evaluated_on": "valid" if valid_df is not None else "train",
               "primary": {"name": metric_name, "higher_is_better": higher}, "train": train_metrics,
               "train_scored": {"rows": int(len(sample)), "of": parts.total_rows, "seed": seed},
               "valid": valid_metrics, "baselines": baselines}
    manifest = Manifest(mlsys_version=libraries(f.family.name)["mlsys"], task=task, target=f.target, classes=classes,
                        input_schema=schema, recipe=recipe, metrics=metrics,
                        reference={"features": profile_frame(sample, schema),
                                   "predictions": prediction_reference(task, train_scores, classes),
                                   "target": profile_values(sample[f.target].to_numpy())},
                        importance=ranked, libraries=libraries(f.family.name))
    result = TrainResult(
        model=f.family.name, task=task, target=f.target, classes=classes,
        rows={"train": parts.total_rows, "valid": int(len(valid_df)) if valid_df is not None else 0},
        evaluated_on=metrics["evaluated_on"], primary_metric=metric_name,
        metrics={"train": train_metrics, "valid": valid_metrics}, baselines=baselines, params=spec["params"],
        fit=spec["fit_info"], n_features=spec["n_features"], top_features=ranked[:TOP_FEATURES],
        seconds=round(time.perf_counter() - start, 3), warnings=role_warnings(f.featurizer) + caught)
    return ModelBundle(manifest, predictor), result
