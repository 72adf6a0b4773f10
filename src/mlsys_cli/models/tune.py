"""Hyperparameter search with Optuna: one family or several, budgets, resume, distributed workers.

How a study runs
----------------
- The data are featurized once per featurizer preset (and fold), never per trial; a trial only
  fits an estimator on the cached matrices and scores it with :func:`metrics.compute_metrics`.
- Trial 0 of every family is its default configuration, so a study is never worse than the
  defaults on the validation data.
- ``model="auto"`` searches several families. Which family the next trial tries is decided by
  a cost-aware scheduler in the spirit of FLAML's "estimated cost for improvement" (ECI): each
  family's loss gap to the best family divided by its observed rate of improvement per second
  of trials, floored by its mean trial time and by the time its last improvement took (gains
  below :data:`IMPROVE_TOL` do not count); the next family is drawn with probability
  proportional to ``1 / ECI`` (seeded; 10% of the budget is spread evenly in time), so cheap
  improving families get most of the budget while the others are still revisited. After each
  family's defaults it also starts from :data:`AUTO_EXTRA_DEFAULTS` (XGBoost's library
  defaults, a regularized XGBoost, extremely randomized trees).
- Intermediate scores (boosting rounds, MLP epochs, CV folds) go to the Optuna pruner, which
  stops hopeless trials early.
- Budgets: ``trials`` counts every trial of the study (also those run by other workers or by an
  earlier run that is resumed); ``timeout`` is a wall-clock deadline. A trial that is running
  when the deadline passes gets the remaining time as its own training timeout, so the budget
  holds to within a few seconds. Once one trial has finished, a trial trains for at most half
  the time left (then it is scored as it stands), so one slow configuration cannot eat the budget.
- Kept models: with ``--valid``, the fitted model of a trial that enters the ``keep_models``
  best of its family is written as a model bundle into the study's Optuna artifact store and
  the trial records its artifact id and sha256; one that drops out is deleted. ``ensemble
  --from-study`` loads them instead of retraining (:func:`keep_model`).
- Workers share the study through Optuna's storage: an RDB URL (PostgreSQL, SQLite) or a
  journal file (``journal:PATH``). ``n_jobs`` starts extra worker processes on this machine;
  each is a fresh interpreter given its job as JSON on stdin (no pickle crosses the boundary).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

from mlsys_cli.errors import InputError, MlsysError, UsageError

SAMPLERS = ("tpe", "random", "grid")
PRUNERS = ("median", "hyperband", "none")
# Cheapest first: the order in which ``auto`` gives each family its default trial.
AUTO_FAMILIES = ("linear", "xgboost", "forest", "mlp")
DEFAULT_TRIALS = 30
# ``auto`` also starts from these configurations (after each family's own defaults): XGBoost's
# library defaults (0.3 learning rate, 100 rounds) and extremely randomized trees, which win on
# many small tables (FLAML's extra_tree) for the cost of a forest.
AUTO_EXTRA_DEFAULTS = (
    ("forest", {"kind": "extra"}),
    ("xgboost", {"learning_rate": 0.3, "n_estimators": 100}),
    # A slower, shallower, subsampled booster: what tuned XGBoost converges to on small noisy
    # tables (credit scoring), where the deep defaults overfit in a few dozen rounds.
    ("xgboost", {"learning_rate": 0.05, "max_depth": 4, "min_child_weight": 2.0, "subsample": 0.8,
                 "colsample_bytree": 0.8, "n_estimators": 2000}),
)
FAMILY_PARAM = "family"
# Share of the auto scheduler's draws that ignore the cost estimates.
EXPLORE = 0.1
# A family's best must improve by this share of its value to count as an improvement.
IMPROVE_TOL = 1e-4
# Grid search over a continuous range uses this many points per parameter.
GRID_POINTS = 3
# Under a timeout, once a trial has finished no trial trains longer than this share of the time
# left (it is scored with the rounds/epochs it reached), so one slow configuration (an MLP on a
# loaded machine) cannot eat the budget the other families would have used.
TRIAL_SHARE = 0.5
MIN_FIT_S = 1.0
# With --valid, the fitted models of this many best trials per family are kept in the study's
# artifact store, so ``ensemble --from-study`` combines them without retraining.
KEEP_MODELS = 2
SMALL_ROWS = 10_000


# --------------------------------------------------------------------------- storage and study


def _safe_url(url: str) -> str:
    try:
        from sqlalchemy.engine import make_url

        return make_url(url).render_as_string(hide_password=True)
    except Exception:
        return url


def open_storage(url: str | None) -> Any:
    """Open an Optuna storage: None (in memory), ``journal:PATH`` or an RDB URL.

    Raises
    ------
    InputError
        When the storage cannot be reached or created, with the reason.
    """
    if url is None:
        return None
    import optuna

    if url.startswith("journal:"):
        from optuna.storages.journal import JournalFileBackend

        path = Path(url[len("journal:"):])
        if not str(path):
            raise UsageError("empty journal path", "use --storage journal:PATH")
        if not path.parent.is_dir():
            raise InputError(f"cannot open storage {url}: directory {path.parent} does not exist")
        try:
            return optuna.storages.JournalStorage(JournalFileBackend(str(path)))
        except OSError as exc:
            raise InputError(f"cannot open storage {url}: {exc.strerror or exc}") from None
    if "://" not in url:
        raise UsageError(f"unknown storage {url!r}", "use an RDB URL (postgresql+psycopg://..., sqlite:///study.db) or journal:PATH")
    engine_kwargs: dict[str, Any] = {}
    if url.startswith("postgresql"):
        # Fail fast on an unreachable server instead of waiting for the OS TCP timeout.
        engine_kwargs["connect_args"] = {"connect_timeout": 5}
    from sqlalchemy.exc import IntegrityError, ProgrammingError

    for attempt in range(3):
        try:
            # Heartbeats let a resumed or parallel run mark trials of a killed worker as failed.
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                return optuna.storages.RDBStorage(url, engine_kwargs=engine_kwargs, heartbeat_interval=30, grace_period=120)
        except (IntegrityError, ProgrammingError):
            # Workers started together race to create Optuna's tables in a new database; the
            # loser finds them made on the next attempt.
            if attempt == 2:
                raise
            time.sleep(0.5 + attempt)
        except Exception as exc:  # sqlalchemy raises many types (driver missing, refused, bad URL)
            reason = str(getattr(exc, "orig", None) or exc).strip().splitlines()[0]
            raise InputError(f"cannot open storage {_safe_url(url)}: {reason}", "check the URL, the server and its credentials") from None
    raise AssertionError("unreachable")


def storage_display(url: str | None) -> str | None:
    """The storage URL without its password, for reports."""
    return None if url is None else _safe_url(url)


# --------------------------------------------------------------------------- search spaces


class _Scoped:
    """A trial seen by one family's ``search_space``: names are prefixed with the family,
    and parameters fixed by the user are returned without being searched."""

    def __init__(self, trial: Any, family: str, fixed: Mapping[str, Any]):
        self._trial, self._family, self._fixed = trial, family, fixed
        self.used_fixed: set[str] = set()

    def _name(self, name: str) -> str:
        return f"{self._family}.{name}"

    def _get(self, name: str, suggest: Any) -> Any:
        if name in self._fixed:
            self.used_fixed.add(name)
            return self._fixed[name]
        return suggest(self._name(name))

    def suggest_float(self, name: str, low: float, high: float, *, step: float | None = None, log: bool = False) -> float:
        return self._get(name, lambda n: self._trial.suggest_float(n, low, high, step=step, log=log))

    def suggest_int(self, name: str, low: int, high: int, *, step: int = 1, log: bool = False) -> int:
        return self._get(name, lambda n: self._trial.suggest_int(n, low, high, step=step, log=log))

    def suggest_categorical(self, name: str, choices: Sequence[Any]) -> Any:
        return self._get(name, lambda n: self._trial.suggest_categorical(n, list(choices)))

    @property
    def number(self) -> int:
        return self._trial.number


class _Probe:
    """Records a family's search space without a study: each suggestion returns the default
    value (or the low end / first choice), so conditional spaces are probed along the defaults."""

    def __init__(self, defaults: Mapping[str, Any]):
        self.defaults = defaults
        self.space: dict[str, Any] = {}

    def _take(self, name: str, dist: Any, fallback: Any) -> Any:
        self.space[name] = dist
        return self.defaults.get(name, fallback)

    def suggest_float(self, name: str, low: float, high: float, *, step: float | None = None, log: bool = False) -> float:
        from optuna.distributions import FloatDistribution

        return self._take(name, FloatDistribution(low, high, step=step, log=log), low)

    def suggest_int(self, name: str, low: int, high: int, *, step: int = 1, log: bool = False) -> int:
        from optuna.distributions import IntDistribution

        return self._take(name, IntDistribution(low, high, step=step, log=log), low)

    def suggest_categorical(self, name: str, choices: Sequence[Any]) -> Any:
        from optuna.distributions import CategoricalDistribution

        return self._take(name, CategoricalDistribution(list(choices)), list(choices)[0])

    number = 0


def probe_space(family: Any, task: str) -> dict[str, Any]:
    """The parameter distributions of a family's search space (unprefixed names)."""
    probe = _Probe(family.default_params(task))
    family.search_space(probe, task)
    return probe.space


def _grid_values(dist: Any) -> list[Any]:
    import numpy as np
    from optuna.distributions import CategoricalDistribution, IntDistribution

    if isinstance(dist, CategoricalDistribution):
        return list(dist.choices)
    if dist.log:
        values = np.geomspace(dist.low, dist.high, GRID_POINTS)
    else:
        values = np.linspace(dist.low, dist.high, GRID_POINTS)
    if isinstance(dist, IntDistribution):
        return sorted({int(round(v)) for v in values})
    return [float(v) for v in values]


def split_fixed(families: Sequence[str], fixed: Mapping[str, Any], spaces: Mapping[str, Mapping[str, Any]],
                defaults: Mapping[str, Mapping[str, Any]]) -> dict[str, dict[str, Any]]:
    """Give each family the ``--param`` values meant for it.

    ``family.name=value`` applies to that family; a bare ``name=value`` to every searched family
    (with one family) or to every family that knows the parameter (with ``auto``).
    """
    per: dict[str, dict[str, Any]] = {f: {} for f in families}
    for key, value in fixed.items():
        fam, dot, name = key.partition(".")
        if dot and fam in per:
            per[fam][name] = value
            continue
        if dot and fam not in per and fam in AUTO_FAMILIES + ("baseline",):
            raise UsageError(f"--param {key}: family {fam!r} is not searched here")
        if len(families) == 1:
            per[families[0]][key] = value
            continue
        owners = [f for f in families if key in spaces[f] or key in defaults[f]]
        if not owners:
            raise UsageError(f"--param {key}: no searched family has this parameter", "qualify it: --param xgboost.max_depth=4")
        for f in owners:
            per[f][key] = value
    return per


# --------------------------------------------------------------------------- the auto scheduler


def choose_family(trials: Sequence[Any], candidates: Sequence[str], minimize: bool, rng: Any) -> str:
    """Pick the family of the next trial from the finished trials (FLAML-style ECI).

    Parameters
    ----------
    trials : sequence of optuna.trial.FrozenTrial
        Trials of the study so far (any state).
    candidates : family names, cheapest first
    minimize : whether lower values are better
    rng : numpy.random.Generator

    Returns
    -------
    str
        A family that has not run yet (cheapest first), otherwise one drawn with probability
        proportional to 1 / ECI, its estimated cost (seconds) to improve on the best family.
    """
    import numpy as np
    from optuna.trial import TrialState

    stats: dict[str, dict[str, float]] = {}
    started: set[str] = set()
    for t in trials:
        fam = t.params.get(FAMILY_PARAM)
        if fam not in candidates:
            continue
        started.add(fam)
        if t.state != TrialState.COMPLETE or t.value is None or t.duration is None:
            continue
        loss = t.value if minimize else -t.value
        s = stats.setdefault(fam, {"n": 0, "time": 0.0, "first": loss, "best": loss, "t_best": 0.0, "step": 0.0})
        s["n"] += 1
        s["time"] += max(t.duration.total_seconds(), 1e-3)
        # Gains in the noise (a 1-D space such as linear's C, re-sampled) are not improvements:
        # they would keep a cheap family looking productive forever.
        if loss < s["best"] - IMPROVE_TOL * max(abs(s["best"]), 1e-9):
            # FLAML's ECI: the time the last improvement took is what the next one is expected to cost.
            s["best"], s["step"], s["t_best"] = loss, s["time"] - s["t_best"], s["time"]
    for fam in candidates:
        if fam not in started:
            return fam
    alive = [f for f in candidates if f in stats]
    if not alive:
        return candidates[int(rng.integers(len(candidates)))]
    best = min(stats[f]["best"] for f in alive)
    eci = []
    for f in alive:
        s = stats[f]
        mean_time = s["time"] / s["n"]
        # Observed improvement per second; a family that has not improved yet gets a small prior
        # rate so that it keeps a chance proportional to how cheap it is.
        rate = max(s["first"] - s["best"], 1e-3 * (abs(best) + 1e-9)) / s["time"]
        gap = s["best"] - best
        # The leader's cost to improve again: the time since its last improvement, or twice what
        # that improvement took, whichever is longer (FLAML); the others must first close the gap.
        cost = max(mean_time, s["time"] - s["t_best"], 2 * s["step"])
        if gap > 0:
            cost = max(cost, gap / rate)
        eci.append(cost)
    weights = 1.0 / np.asarray(eci)
    # Early estimates are noisy (one trial cut by the deadline looks hopeless): a share of the
    # budget is spread evenly over the families. Evenly in time, not in draws: a uniform draw of
    # a family whose trials take 5 s costs a hundred draws of one whose trials take 0.05 s.
    speed = 1.0 / np.asarray([stats[f]["time"] / stats[f]["n"] for f in alive])
    p = (1 - EXPLORE) * weights / weights.sum() + EXPLORE * speed / speed.sum()
    return alive[int(rng.choice(len(alive), p=p))]


def make_sampler(kind: str, seed: int, candidates: Sequence[str], minimize: bool, grid: Mapping[str, Any] | None = None) -> Any:
    """The study's sampler: ``kind`` (tpe, random, grid) re-seeded from (seed, trial number).

    Seeding per trial number keeps one worker's run reproducible while workers sharing a study
    (whose trial numbers differ) never draw the same proposal. With several candidate families
    the ``family`` parameter comes from :func:`choose_family` instead of the sampler.
    """
    import numpy as np
    import optuna
    from optuna.samplers import BaseSampler

    def inner(number: int) -> Any:
        trial_seed = int(np.random.SeedSequence([seed, number]).generate_state(1)[0])
        if kind == "random":
            return optuna.samplers.RandomSampler(seed=trial_seed)
        if kind == "grid":
            return optuna.samplers.GridSampler(dict(grid or {}), seed=seed)
        # constant_liar: running trials count as bad, so parallel workers spread out.
        return optuna.samplers.TPESampler(seed=trial_seed, constant_liar=True, n_startup_trials=8)

    class TrialSeededSampler(BaseSampler):
        def __init__(self) -> None:
            self._base = inner(0)

        def before_trial(self, study, trial):
            self._base = inner(trial.number)
            self._base.before_trial(study, trial)

        def infer_relative_search_space(self, study, trial):
            return self._base.infer_relative_search_space(study, trial)

        def sample_relative(self, study, trial, search_space):
            return self._base.sample_relative(study, trial, search_space)

        def sample_independent(self, study, trial, param_name, param_distribution):
            if param_name == FAMILY_PARAM:
                if len(candidates) == 1:
                    return candidates[0]
                rng = np.random.default_rng([seed, trial.number])
                return choose_family(study.get_trials(deepcopy=False), candidates, minimize, rng)
            return self._base.sample_independent(study, trial, param_name, param_distribution)

        def after_trial(self, study, trial, state, values):
            self._base.after_trial(study, trial, state, values)

        def reseed_rng(self):
            self._base.reseed_rng()

    return TrialSeededSampler()


def make_pruner(kind: str, by_family: bool) -> Any:
    """The pruner; with several families the median rule compares a trial with its own family only
    (an MLP epoch and a boosting round are not the same amount of work)."""
    import optuna

    if kind == "none":
        return optuna.pruners.NopPruner()
    if kind == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=5, reduction_factor=3)
    median = optuna.pruners.MedianPruner(n_startup_trials=4, n_warmup_steps=5)
    if not by_family:
        return median

    class FamilyView:
        def __init__(self, study: Any, family: Any):
            self._study, self._family = study, family

        def get_trials(self, deepcopy: bool = True, states: Any = None) -> list:
            return [t for t in self._study.get_trials(deepcopy=deepcopy, states=states) if t.params.get(FAMILY_PARAM) == self._family]

        def __getattr__(self, name: str) -> Any:
            return getattr(self._study, name)

    class FamilyMedianPruner(optuna.pruners.BasePruner):
        def prune(self, study, trial):
            return bool(median.prune(FamilyView(study, trial.params.get(FAMILY_PARAM)), trial))

    return FamilyMedianPruner()


# --------------------------------------------------------------------------- results


@dataclass(frozen=True)
class TuneResult:
    """What ``mlsys tune`` reports."""

    study: str
    storage: str | None
    task: str
    target: str
    metric: str
    direction: str
    validation: str
    best_family: str
    best_value: float
    best_params: dict[str, Any]
    best_trial: int
    defaults_value: float | None
    trials: dict[str, int]
    families: list[dict[str, Any]]
    workers: int
    elapsed_s: float
    stopped_by: str
    outputs: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "study": self.study, "storage": self.storage, "task": self.task, "target": self.target,
            "metric": self.metric, "direction": self.direction, "validation": self.validation,
            "best": {"family": self.best_family, "value": self.best_value, "params": self.best_params,
                     "trial": self.best_trial, "defaults_value": self.defaults_value},
            "trials": self.trials, "families": self.families, "workers": self.workers,
            "elapsed_s": round(self.elapsed_s, 3), "stopped_by": self.stopped_by, "outputs": self.outputs,
        }


# --------------------------------------------------------------------------- the data of a study


class _Problem:
    """The data of one study, featurized lazily once per (featurizer recipe, fold) and cached."""

    def __init__(self, spec: Mapping[str, Any]):
        from mlsys_cli.data.io import read_frame
        from mlsys_cli.models import train as tr

        self.spec = spec
        self.train_df = read_frame(spec["train"])
        if len(self.train_df) == 0:
            raise InputError(f"{spec['train']}: no rows")
        self.valid_df = read_frame(spec["valid"]) if spec.get("valid") else None
        self.target = tr.resolve_target(self.train_df, spec.get("target"), spec["train"])
        tr.check_target(self.train_df[self.target], self.target, spec["train"])
        if self.valid_df is not None:
            if self.target not in self.valid_df.columns:
                raise InputError(f"{spec['valid']}: no target column {self.target!r}")
            tr.check_target(self.valid_df[self.target], self.target, spec["valid"])
        self.task, self.classes = tr.infer_task(self.train_df[self.target])
        self.metric, self.higher = resolve_metric(self.task, spec.get("metric"))
        self.folds = self._folds()
        self._cache: dict[tuple[str, int], tuple[Any, ...]] = {}
        self._featurizers: dict[tuple[str, int], Any] = {}
        self._profiles: dict[str, Any] = {}
        self._records: list[dict[str, Any]] | None = None
        # Families whose fitted models are cheaper to refit than to write and load (keep_model).
        self.refit_cheaper: set[str] = set()
        self.featurize_s: dict[tuple[str, int], float] = {}

    @property
    def n_classes(self) -> int:
        return len(self.classes) if self.classes else 0

    def _folds(self) -> list[tuple[Any, Any]]:
        import numpy as np

        n = len(self.train_df)
        if self.valid_df is not None:
            return [(np.arange(n), None)]
        k = int(self.spec["cv"])
        if n < 2 * k:
            raise InputError(f"{self.spec['train']}: {n} rows are too few for --cv {k}")
        time_col = self.spec.get("time_col")
        if time_col:
            from sklearn.model_selection import TimeSeriesSplit

            if time_col not in self.train_df.columns:
                raise InputError(f"{self.spec['train']}: no time column {time_col!r}")
            order = np.argsort(self.train_df[time_col].to_numpy(), kind="stable")
            return [(order[a], order[b]) for a, b in TimeSeriesSplit(n_splits=k).split(order)]
        y = self.train_df[self.target].astype(str).to_numpy()
        seed = int(self.spec["seed"])
        if self.task == "regression":
            from sklearn.model_selection import KFold

            return list(KFold(k, shuffle=True, random_state=seed).split(y))
        from sklearn.model_selection import StratifiedKFold

        return list(StratifiedKFold(k, shuffle=True, random_state=seed).split(np.zeros(n), y))

    def features_spec(self, family: Any) -> dict[str, Any]:
        """The featurizer settings ``train`` uses for this family (so the recipe carries over)."""
        return {"preset": family.preset, "family": family.name, "task": self.task, **dict(self.spec.get("features") or {})}

    def key(self, family: Any, fold: int) -> tuple[str, int]:
        return json.dumps(self.features_spec(family), sort_keys=True, default=str), fold

    def featurizer(self, family: Any, fold: int) -> Any:
        """The fitted featurizer behind :meth:`matrices` (fitted on the fold's training rows)."""
        self.matrices(family, fold)
        return self._featurizers[self.key(family, fold)]

    def reference(self, featurizer: Any) -> Any:
        """Reference statistics of the training rows for a featurizer's input schema (cached)."""
        from mlsys_cli.data.profile import profile_frame

        schema = list(featurizer.input_schema_)
        key = json.dumps(schema, sort_keys=True, default=str)
        if key not in self._profiles:
            self._profiles[key] = profile_frame(self.train_df, schema)
        return self._profiles[key]

    def data_records(self) -> dict[str, Any]:
        """Fingerprints of the train and valid tables, as ``train`` records them in a recipe."""
        if self._records is None:
            from mlsys_cli.data.io import input_record, resolve_inputs

            self._records = [[input_record(p) for p in resolve_inputs([self.spec[role]])] if self.spec.get(role) else None
                             for role in ("train", "valid")]
        return {"train": self._records[0], "valid": self._records[1]}

    def matrices(self, family: Any, fold: int) -> tuple[Any, Any, Any, Any, Any]:
        """(X_train, y_train, X_valid, y_valid codes, y_valid labels) of one fold for a family."""
        features = self.features_spec(family)
        key = self.key(family, fold)
        if key not in self._cache:
            from mlsys_cli.models import train as tr

            tr_idx, va_idx = self.folds[fold]
            train = self.train_df.iloc[tr_idx]
            valid = self.valid_df if va_idx is None else self.train_df.iloc[va_idx]
            start = time.perf_counter()
            fz = tr.make_featurizer(self.target, family.preset, features, int(self.spec["seed"]))
            # fit_transform cross-fits target encodings on the training rows, as train does.
            X = fz.fit_transform(train)
            tr.check_roles(fz, self.spec["train"])
            y_valid = valid[self.target]
            self._featurizers[key] = fz
            self.featurize_s[key] = time.perf_counter() - start
            self._cache[key] = (X, tr._encode(self.task, train[self.target], self.classes, self.spec["train"]),
                                fz.transform(valid), tr._encode(self.task, y_valid, self.classes, self.spec.get("valid") or self.spec["train"]),
                                y_valid.to_numpy())
        return self._cache[key]

    def score(self, y_true: Any, scores: Any) -> float:
        from mlsys_cli.models.metrics import compute_metrics

        value = compute_metrics(self.task, y_true, scores, self.classes).get(self.metric)
        if value is None:
            raise InputError(f"metric {self.metric} is undefined on the validation rows (one class only?)")
        return float(value)


def resolve_metric(task: str, metric: str | None) -> tuple[str, bool]:
    """The metric to optimise and whether higher is better (default: the task's primary metric)."""
    from mlsys_cli.models.metrics import HIGHER_IS_BETTER, compute_metrics, primary_metric

    if metric is None:
        return primary_metric(task)
    import numpy as np

    # The metrics a task has are exactly the keys compute_metrics returns for it (empty input).
    k = {"binary": 2, "multiclass": 3}.get(task, 1)
    probe = compute_metrics(task, [], np.zeros((0, k)), list(range(k)) if task != "regression" else None)
    if metric not in probe:
        raise UsageError(f"unknown metric {metric!r} for a {task} task", f"choose one of: {', '.join(probe)}")
    return metric, HIGHER_IS_BETTER[metric]


# --------------------------------------------------------------------------- one trial


def execution_params(family: str, workers: int, rows: int | None = None) -> dict[str, Any]:
    """Thread settings of a trial: this machine's cores shared by its worker processes
    (oversubscribed OpenMP threads make XGBoost many times slower, not faster).

    Boosting rounds and MLP batches on fewer than :data:`SMALL_ROWS` rows are too short to
    split across threads: one thread is as fast on an idle machine, and on a busy one the
    threads' synchronisation made a 2,600-row XGBoost fit 30 times slower (measured)."""
    threads = max(1, (os.cpu_count() or 1) // max(workers, 1))
    if rows is not None and rows < SMALL_ROWS and family in ("xgboost", "mlp"):
        threads = 1
    return {"xgboost": {"nthread": threads}, "forest": {"n_jobs": threads}, "mlp": {"n_threads": threads}}.get(family, {})


class _Deadline(Exception):
    """The time budget ran out before the trial could be scored."""


def _accepts(fn: Any, name: str) -> bool:
    import inspect

    try:
        return name in inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return False


def _check_deadline(trial: Any, deadline: float | None) -> None:
    if deadline is not None and time.time() >= deadline:
        trial.set_user_attr("stopped_by", "timeout")
        raise _Deadline()


def _objective(trial: Any, problem: _Problem, families: Sequence[str], fixed: Mapping[str, Mapping[str, Any]],
               deadline: float | None, fit_deadline: float | None = None) -> float:
    """Fit the trial's configuration on every fold and return its mean validation metric.

    ``deadline`` ends the study; ``fit_deadline`` (earlier) is when this trial's training stops
    and scores the model it has (fewer rounds or epochs)."""
    import optuna

    from mlsys_cli.models.families import get_family, resolve_params
    from mlsys_cli.models.train import fit_estimator

    name = trial.suggest_categorical(FAMILY_PARAM, list(families))
    family = get_family(name)
    if trial.user_attrs.get("defaults"):
        params = resolve_params(family, problem.task, {**(trial.user_attrs.get("overrides") or {}), **fixed[name]})
    else:
        scoped = _Scoped(trial, name, fixed[name])
        params = {**dict(family.search_space(scoped, problem.task)), **fixed[name]}
    # Thread counts are how a trial runs, not what it learns: they stay out of the recipe.
    threads = {k: v for k, v in execution_params(name, problem.spec.get("workers", 1), len(problem.train_df)).items()
               if k not in fixed[name]}
    trial.set_user_attr("params", _jsonable_params({k: v for k, v in params.items() if k not in threads}))
    params = {**params, **threads}
    trial.set_user_attr("worker", f"{socket.gethostname()}:{os.getpid()}")
    # Build it once before its training clock starts: the first build imports the family's
    # library (torch takes seconds on a loaded machine), which a training timeout cannot see.
    family.make(problem.task, problem.n_classes, resolve_params(family, problem.task, params), int(problem.spec["seed"]))
    minimize = not problem.higher
    single = len(problem.folds) == 1
    values: list[float] = []
    rounds: list[int] = []
    for fold in range(len(problem.folds)):
        _check_deadline(trial, deadline)
        X, y, Xv, yv, labels = problem.matrices(family, fold)
        # Featurizing (once per family and fold) may have used up the budget.
        _check_deadline(trial, deadline)
        remaining = None if deadline is None else max(min(fit_deadline or deadline, deadline) - time.time(),
                                                       min(MIN_FIT_S, deadline - time.time()))
        kwargs: dict[str, Any] = {}
        if single and _accepts(fit_estimator, "callback"):
            def report(step: int, loss: float) -> None:
                # The pruner reads values in the study's direction; in-training losses go down.
                trial.report(loss if minimize else -loss, step)
                if trial.should_prune():
                    raise optuna.TrialPruned()

            kwargs["callback"] = report
        fit_start = time.perf_counter()
        est = fit_estimator(family, problem.task, X, y, n_classes=problem.n_classes, params=params,
                            seed=int(problem.spec["seed"]), eval_set=(Xv, yv), timeout=remaining, **kwargs)
        fit_s = time.perf_counter() - fit_start
        scores = est.predict(Xv) if problem.task == "regression" else est.predict_proba(Xv)
        values.append(problem.score(labels, scores))
        info = getattr(est, "fit_info_", None) or {}
        if info.get("stopped_by") == "timeout":
            trial.set_user_attr("stopped_by", "timeout")
        if info.get("best_iteration") is not None:
            rounds.append(int(info["best_iteration"]) + 1)
        elif info.get("stopped_by") == "timeout" and info.get("n_estimators"):
            # A forest cut by the deadline was scored with the trees it had grown: the recipe
            # says so, and a retrain (--save-model, --from-study) is that model, not a bigger one.
            rounds.append(int(info["n_estimators"]))
        if not single:
            trial.report(sum(values) / len(values), fold)
            if fold < len(problem.folds) - 1 and trial.should_prune():
                raise optuna.TrialPruned()
    if rounds and "n_estimators" in params:
        # Early stopping (or the deadline) chose the number of rounds: record it, so the recipe
        # retrains without a validation table (train --params, ensemble --from-study) to the
        # same model size.
        trial.set_user_attr("params", {**trial.user_attrs["params"], "n_estimators": int(round(sum(rounds) / len(rounds)))})
    value = sum(values) / len(values)
    if single and problem.spec.get("artifacts"):
        keep_model(trial, problem, family, est, value, fit_s, deadline)
    return value


# --------------------------------------------------------------------------- kept models


def artifact_dir(storage: str | None) -> str | None:
    """Where a study keeps its best trials' fitted models by default: beside its journal file or
    SQLite database (``PATH.models``); None for other storages (give ``--artifacts DIR``)."""
    if storage is None:
        return None
    for scheme in ("journal:", "sqlite:///"):
        if storage.startswith(scheme) and storage[len(scheme):] not in ("", ":memory:"):
            return os.path.abspath(storage[len(scheme):]) + ".models"
    return None


def artifact_store(path: str) -> Any:
    """An Optuna file-system artifact store (shared disk serves distributed workers)."""
    from optuna.artifacts import FileSystemArtifactStore

    try:
        os.makedirs(path, exist_ok=True)
    except OSError as exc:
        raise InputError(f"cannot create the model store {path}: {exc.strerror or exc}") from None
    return FileSystemArtifactStore(path)


def _ranked(trials: Sequence[Any], minimize: bool) -> list[Any]:
    return sorted(trials, key=lambda t: (t.value if minimize else -t.value, t.number))


# Loading a kept model costs about this many times writing it (skops rebuilds every tree).
LOAD_FACTOR = 1.5


def keep_model(trial: Any, problem: _Problem, family: Any, est: Any, value: float, fit_s: float,
               deadline: float | None = None) -> None:
    """Keep this trial's fitted model when it is among the ``keep_models`` best of its family.

    The model is written as a normal model bundle (deterministic bytes) into the study's Optuna
    artifact store, and ``model`` in the trial's user attributes records the artifact id and the
    bundle's sha256 (``ensemble --from-study`` verifies it). A kept model that drops out of its
    family's best is deleted, so the store holds at most ``keep_models`` models per family.
    Under a time budget, a family whose models cost more to write and load than to refit
    (``fit_s``: this trial's training time; big forests) is not kept: the ensemble step refits it.
    Nor is a model when less than ``fit_s`` is left before the ``deadline``: writing can take as
    long as fitting (skops stores a forest tree by tree) and would overrun the budget. A trial
    that was not kept for either reason says why in its ``model_not_kept`` user attribute.
    """
    from optuna.artifacts import upload_artifact
    from optuna.artifacts.exceptions import ArtifactNotFound
    from optuna.trial import TrialState

    from mlsys_cli.bundle import skops_io
    from mlsys_cli.fsutil import sha256_bytes

    k = int(problem.spec.get("keep_models") or 0)
    minimize = not problem.higher
    peers = [t for t in trial.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
             if t.params.get(FAMILY_PARAM) == family.name and t.value is not None]
    better = sum((t.value < value) if minimize else (t.value > value) for t in peers)
    if k < 1 or better >= k:
        return
    if family.name in problem.refit_cheaper:
        trial.set_user_attr("model_not_kept", "cheaper to refit than to write and load")
        return
    if deadline is not None and time.time() + fit_s >= deadline:
        trial.set_user_attr("model_not_kept", "too close to the deadline to write it")
        return
    store = artifact_store(problem.spec["artifacts"])
    # One-time costs (the reference statistics of the training rows, importing skops) stay off
    # the clock: they would make whichever family is written first look expensive for good.
    bundle = trial_bundle(trial, problem, family, est, value)
    skops_io()
    start = time.perf_counter()
    data = bundle.to_writer().to_bytes()
    # Refitting also featurizes the training rows again. Only a time budget makes the cheaper of
    # the two matter; without one the choice stays independent of timings (reproducible).
    refit_s = fit_s + problem.featurize_s.get(problem.key(family, 0), 0.0)
    if problem.spec.get("deadline") is not None and LOAD_FACTOR * (time.perf_counter() - start) > refit_s:
        problem.refit_cheaper.add(family.name)
        trial.set_user_attr("model_not_kept", "cheaper to refit than to write and load")
        return
    with tempfile.TemporaryDirectory(prefix="mlsys-model-") as tmp:
        path = os.path.join(tmp, f"trial{trial.number}.mlsys")
        with open(path, "wb") as fh:
            fh.write(data)
        artifact = upload_artifact(artifact_store=store, file_path=path, study_or_trial=trial,
                                   mimetype="application/zip")
    trial.set_user_attr("model", {"artifact": artifact, "sha256": sha256_bytes(data), "bytes": len(data),
                                  "store": problem.spec["artifacts"]})
    # This trial takes a place among the family's best: the model that falls out is deleted.
    for t in (t for t in _ranked(peers, minimize)[k - 1:] if "model" in t.user_attrs):
        try:
            store.remove(t.user_attrs["model"]["artifact"])
        except (ArtifactNotFound, ValueError, OSError):
            pass  # already removed (by another worker)


def trial_bundle(trial: Any, problem: _Problem, family: Any, est: Any, value: float) -> Any:
    """The model bundle of a trial's fitted model: what ``train`` with the trial's parameters on
    the same tables writes (featurizer fitted on train, early stopping on valid), except that its
    metrics and prediction reference are on the validation rows (the trial scored those; train
    metrics are not computed)."""
    from mlsys_cli.data.io import invocation
    from mlsys_cli.models import train as tr
    from mlsys_cli.models.bundle import ModelBundle, SinglePredictor
    from mlsys_cli.models.families import resolve_params
    from mlsys_cli.models.metrics import baseline_metrics, compute_metrics, primary_metric

    task, classes, seed = problem.task, problem.classes, int(problem.spec["seed"])
    fz = problem.featurizer(family, 0)
    _, y, Xv, _, labels = problem.matrices(family, 0)
    resolved = resolve_params(family, task, trial.user_attrs["params"])
    fit_info = dict(getattr(est, "fit_info_", {}) or {})
    spec = {"task": task, "n_classes": problem.n_classes, "params": resolved, "seed": seed,
            "n_features": int(Xv.shape[1]), "fit_info": fit_info}
    predictor = SinglePredictor(fz, family, est, spec)
    scores = predictor.scores_from_features(Xv)
    name, higher = primary_metric(task)
    prior, weights = tr.baseline_inputs(task, y, classes)
    libraries = tr.libraries(family.name)
    manifest = {
        "mlsys_version": libraries["mlsys"], "task": task, "target": problem.target, "classes": classes,
        "input_schema": list(fz.input_schema_),
        "recipe": {"family": family.name, "params": resolved, "seed": seed, "task": task,
                   "features": problem.features_spec(family), "class_weight": None, "sample_weight": None,
                   "calibrate": None, "fit": fit_info, "command": invocation(), "data": problem.data_records(),
                   "study": {"name": problem.spec["study"], "trial": trial.number, problem.metric: value}},
        "metrics": {"evaluated_on": "valid", "primary": {"name": name, "higher_is_better": higher},
                    "train": None, "valid": compute_metrics(task, labels, scores, classes),
                    "baselines": baseline_metrics(task, prior, labels, classes, seed=seed, sample_weight=weights)},
        "reference": {"features": problem.reference(fz),
                      "predictions": tr.prediction_reference(task, scores, classes)},
        "importance": tr.ranked_importance(family, est, list(fz.get_feature_names_out())),
        "libraries": libraries,
    }
    return ModelBundle(manifest, predictor)


def _jsonable_params(params: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in params.items():
        out[k] = v.item() if hasattr(v, "item") else v
    return out


class _Failed(Exception):
    """A configuration the estimator rejected; the trial is recorded as failed and the search goes on."""


def _optimize(study: Any, problem: _Problem, spec: Mapping[str, Any], progress: Any = None) -> dict[str, Any]:
    """Run trials until the study has ``trials`` trials, the grid is done or the deadline passes.

    Returns what this worker did: ``{"ran": n, "stopped_by": "trials"|"timeout"|"grid"}``.
    """
    import optuna
    from optuna.trial import TrialState

    deadline, n_trials = spec.get("deadline"), spec.get("trials")
    families, fixed = spec["families"], spec["fixed"]
    grid = optuna.samplers.GridSampler(spec["grid"]) if spec.get("grid") else None
    ran, stopped_by = 0, "trials"
    counted = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL, TrialState.RUNNING)

    def run(trial: Any) -> float:
        try:
            fit_deadline = None
            if deadline is not None and _complete(study):
                fit_deadline = time.time() + TRIAL_SHARE * (deadline - time.time())
            return _objective(trial, problem, families, fixed, deadline, fit_deadline)
        except (optuna.TrialPruned, _Deadline, MlsysError):
            raise
        except Exception as exc:  # noqa: BLE001 - recorded on the trial, raised again below if nothing works
            trial.set_user_attr("error", f"{type(exc).__name__}: {exc}"[:500])
            raise _Failed() from exc

    failures = 0
    while True:
        if deadline is not None and time.time() >= deadline:
            stopped_by = "timeout"
            break
        if n_trials is not None and len(study.get_trials(deepcopy=False, states=counted)) >= n_trials:
            break
        if grid is not None and grid.is_exhausted(study):
            stopped_by = "grid"
            break
        try:
            # One trial per call: Optuna runs the ask/tell protocol (pruning, failed trials, the
            # grid sampler's stop) and this loop keeps the budgets.
            study.optimize(run, n_trials=1, catch=(_Failed,))
        except _Deadline:
            stopped_by = "timeout"
            break
        ran += 1
        last = study.get_trials(deepcopy=False)[-1]
        failures = failures + 1 if "error" in last.user_attrs and last.state == TrialState.FAIL else 0
        if failures >= 5 and not _complete(study):
            raise InputError(f"the first trials all failed; the last error: {last.user_attrs['error']}")
        if progress is not None:
            _show(progress, study, problem, n_trials)
    return {"ran": ran, "stopped_by": stopped_by}


def _complete(study: Any) -> list[Any]:
    from optuna.trial import TrialState

    return study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))


def _show(progress: Any, study: Any, problem: _Problem, n_trials: int | None) -> None:
    from optuna.trial import TrialState

    done = _complete(study)
    finished = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL))
    text = "tuning"
    if done:
        best = max(done, key=lambda t: t.value) if problem.higher else min(done, key=lambda t: t.value)
        text = f"tuning: best {problem.metric}={best.value:.4f} ({best.params.get(FAMILY_PARAM)})"
    progress.update(completed=len(finished), total=n_trials, description=text)


# --------------------------------------------------------------------------- the study


def resolve_families(model: str) -> list[str]:
    """The families a ``--model`` value searches (``auto``: every family this install has)."""
    from mlsys_cli.models.families import FAMILIES, get_family

    if model != "auto":
        get_family(model)  # unknown name: usage error
        return [model]
    names = []
    for name in AUTO_FAMILIES:
        try:
            get_family(name)
        except UsageError:  # mlp without torch
            continue
        names.append(name)
    assert set(names) <= set(FAMILIES)
    return names


def _fingerprint(paths: Sequence[str]) -> str:
    import hashlib

    from mlsys_cli.data.io import resolve_inputs
    from mlsys_cli.fsutil import sha256_file

    digest = hashlib.sha256()
    for path in paths:
        for f in resolve_inputs([path]):
            digest.update(sha256_file(f).encode())
    return digest.hexdigest()


def _plan(spec: dict[str, Any], problem: _Problem) -> dict[str, Any]:
    """Check the search against the data: fixed parameters, empty spaces, the grid."""
    from mlsys_cli.models.families import get_family, resolve_params

    families = list(spec["model_families"])
    spaces = {f: probe_space(get_family(f), problem.task) for f in families}
    defaults = {f: get_family(f).default_params(problem.task) for f in families}
    fixed = split_fixed(families, spec.get("params") or {}, spaces, defaults)
    for f in (f for f in families if fixed[f]):
        # Building the estimator validates the fixed values' names and types (usage errors); only
        # then, since it imports the family's library (torch takes seconds of the budget).
        get_family(f).make(problem.task, problem.n_classes, resolve_params(get_family(f), problem.task, fixed[f]), int(spec["seed"]))
    searched = {f: {k: d for k, d in spaces[f].items() if k not in fixed[f]} for f in families}
    families = [f for f in families if searched[f]]
    if not families:
        what = spec["model"]
        raise UsageError(f"nothing to search: --model {what} has no free parameter"
                         + (" left by --param" if spec.get("params") else ""),
                         "drop some --param, or train this configuration directly with mlsys train")
    grid = None
    if spec["sampler"] == "grid":
        if len(families) > 1:
            raise UsageError("--sampler grid needs a single --model family")
        f = families[0]
        grid = {FAMILY_PARAM: [f], **{f"{f}.{k}": _grid_values(d) for k, d in searched[f].items()}}
    # The defaults trial of each family runs the family's own defaults (not drawn from the space).
    enqueue = [] if grid else [({FAMILY_PARAM: f}, {}) for f in families]
    if not grid and len(families) > 1:
        # Across families (auto), a few more library-default-like starting points, each cheap and
        # often strong: the tuned result then cannot lose to them on the validation rows.
        for f, overrides in AUTO_EXTRA_DEFAULTS:
            free = {k: v for k, v in overrides.items() if k not in fixed.get(f, {})}
            if f in families and free:
                enqueue.append(({FAMILY_PARAM: f}, free))
    return {"families": families, "fixed": fixed, "grid": grid, "enqueue": enqueue}


def open_study(spec: Mapping[str, Any], problem: _Problem, plan: Mapping[str, Any]) -> Any:
    """Create or load the study, refusing one made for another problem."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    storage = open_storage(spec.get("storage"))
    minimize = not problem.higher
    identity = {"target": problem.target, "task": problem.task, "metric": problem.metric,
                "validation": spec["validation"], "model": spec["model"], "train_sha256": spec["train_sha256"],
                "features": dict(spec.get("features") or {})}
    sampler = make_sampler(spec["sampler"], int(spec["seed"]), plan["families"], minimize, plan["grid"])
    pruner = make_pruner(spec["pruner"], by_family=len(plan["families"]) > 1)
    direction = "minimize" if minimize else "maximize"
    try:
        try:
            study = optuna.create_study(storage=storage, sampler=sampler, pruner=pruner, study_name=spec["study"],
                                        direction=direction)
            created = True
        except optuna.exceptions.DuplicatedStudyError:
            study = optuna.load_study(study_name=spec["study"], storage=storage, sampler=sampler, pruner=pruner)
            created = False
        if created:
            # Only the worker that made the study seeds it, so parallel starts add no duplicates.
            study.set_user_attr("mlsys", identity)
            for params, overrides in plan["enqueue"]:
                attrs = {"defaults": True, **({"overrides": overrides} if overrides else {})}
                study.enqueue_trial(params, user_attrs=attrs)
        stored = study.user_attrs.get("mlsys") or identity
    except MlsysError:
        raise
    except Exception as exc:  # the storage failed after it opened (lost connection, locked file)
        reason = str(getattr(exc, "orig", None) or exc).strip().splitlines()[0]
        raise InputError(f"storage {storage_display(spec.get('storage'))}: {reason}") from None
    if study.direction.name.lower() != direction:
        raise InputError(f"study {spec['study']!r} was made to {study.direction.name.lower()}, not to {direction}",
                         "use another --study name for a different problem")
    if not created:
        diff = [k for k in identity if stored.get(k) != identity[k]]
        if diff:
            k = diff[0]
            raise InputError(f"study {spec['study']!r} was made for {k}={stored.get(k)!r}, not {identity[k]!r}",
                             "use another --study name for a different problem")
    return study


def _load(spec: Mapping[str, Any]) -> tuple[_Problem, dict[str, Any], Any]:
    problem = _Problem(spec)
    plan = _plan(dict(spec), problem)
    study = open_study(spec, problem, plan)
    return problem, plan, study


def worker_main(job_path: str) -> int:
    """Entry point of a worker process started by ``n_jobs``: the job is a JSON file, the
    outcome is written as JSON to the job's ``result`` path (exit status 0 or the error's)."""
    from mlsys_cli.fsutil import atomic_write_text

    with open(job_path, encoding="utf-8") as fh:
        spec = json.load(fh)
    try:
        problem, plan, study = _load(spec)
        _barrier(spec)
        outcome: dict[str, Any] = _optimize(study, problem, {**spec, **plan})
        code = 0
    except MlsysError as exc:
        outcome, code = {"error": exc.message, "hint": exc.hint, "exit_code": int(exc.exit_code)}, int(exc.exit_code)
    except KeyboardInterrupt:
        outcome, code = {"error": "interrupted", "exit_code": 130}, 130
    atomic_write_text(spec["result"], json.dumps(outcome))
    return code


# How long workers wait for each other to load the data before they start anyway.
BARRIER_S = 120.0


def _barrier(spec: Mapping[str, Any]) -> None:
    """Tell the parent this worker is loaded, then wait for its go: workers that start their
    trials together share the study, instead of the first one loaded running all of it."""
    from mlsys_cli.fsutil import atomic_write_text

    atomic_write_text(spec["ready"], "")
    give_up = time.time() + BARRIER_S
    while not os.path.exists(spec["go"]) and time.time() < give_up:
        if spec.get("deadline") is not None and time.time() >= spec["deadline"]:
            return
        time.sleep(0.02)


def _release_workers(workers: list[tuple[Any, str]], tmpdir: str, deadline: float | None) -> None:
    """Wait until every worker has loaded (or died), then let them all start."""
    from mlsys_cli.fsutil import atomic_write_text

    give_up = time.time() + BARRIER_S if deadline is None else min(deadline, time.time() + BARRIER_S)
    pending = list(workers)
    while pending and time.time() < give_up:
        pending = [(proc, base) for proc, base in pending if proc.poll() is None and not os.path.exists(f"{base}.ready")]
        if pending:
            time.sleep(0.02)
    atomic_write_text(os.path.join(tmpdir, "go"), "")


def _start_workers(spec: Mapping[str, Any], n: int, tmpdir: str) -> list[tuple[Any, str]]:
    """Start ``n`` worker processes; each is (process, base path of its job files)."""
    workers = []
    for i in range(1, n + 1):
        base = os.path.join(tmpdir, f"worker-{i}")
        job = {**spec, "result": f"{base}.result.json", "ready": f"{base}.ready", "go": os.path.join(tmpdir, "go")}
        with open(f"{base}.job.json", "w", encoding="utf-8") as fh:
            json.dump(job, fh)
        # stderr goes to a file: a pipe nobody reads while we work could fill up and block the worker.
        with open(f"{base}.stderr", "wb") as err:
            proc = subprocess.Popen(
                [sys.executable, "-c", "import sys; from mlsys_cli.models.tune import worker_main; "
                 "raise SystemExit(worker_main(sys.argv[1]))", f"{base}.job.json"],
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err,
            )
        workers.append((proc, base))
    return workers


def _join_workers(workers: list[tuple[Any, str]], deadline: float | None) -> list[dict[str, Any]]:
    outcomes = []
    for proc, base in workers:
        result, stderr = f"{base}.result.json", f"{base}.stderr"
        # A worker stops within a few seconds of the deadline; give it that much, then stop it.
        wait = None if deadline is None else max(deadline - time.time(), 0) + 30
        try:
            proc.wait(timeout=wait)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if os.path.exists(result):
            with open(result, encoding="utf-8") as fh:
                outcomes.append(json.load(fh))
            continue
        with open(stderr, "rb") as fh:
            last = fh.read().decode(errors="replace").strip().splitlines()
        outcomes.append({"error": f"worker exited with status {proc.returncode}" + (f": {last[-1]}" if last else ""),
                         "exit_code": 1})
    return outcomes


# --------------------------------------------------------------------------- the command


def tune(
    train: str,
    *,
    target: str | None = None,
    valid: str | None = None,
    cv: int | None = None,
    time_col: str | None = None,
    model: str = "auto",
    metric: str | None = None,
    sampler: str = "tpe",
    pruner: str = "median",
    trials: int | None = None,
    timeout: float | None = None,
    storage: str | None = None,
    study: str | None = None,
    n_jobs: int = 1,
    params: Mapping[str, Any] | None = None,
    features: Mapping[str, Any] | None = None,
    seed: int = 0,
    output: str | None = None,
    save_model: str | None = None,
    trials_out: str | None = None,
    html: str | None = None,
    keep_models: int = KEEP_MODELS,
    artifacts: str | None = None,
    progress: Any = None,
) -> TuneResult:
    """Search hyperparameters for one model family or several (``model="auto"``).

    Parameters
    ----------
    train : path
        Training table.
    target : str, optional
        Target column (inferred from the table's lineage when omitted).
    valid : path, optional
        Validation table; without it ``cv`` folds of ``train`` are used (5 by default).
    cv : int, optional
        Number of folds: stratified for classification, time-ordered with ``time_col``.
    model : str
        A family name or ``auto``.
    metric : str, optional
        Metric to optimise; the task's primary metric by default.
    sampler, pruner : str
        ``tpe|random|grid`` and ``median|hyperband|none``.
    trials : int, optional
        Total trials of the study (all workers, earlier runs included); 30 without a timeout.
    timeout : float, optional
        Seconds of wall time for this run, counted from the call.
    storage, study : str, optional
        Optuna storage (RDB URL or ``journal:PATH``) and study name, to resume or share a study.
    n_jobs : int
        Worker processes on this machine (a temporary journal is used without ``storage``).
    params : dict, optional
        Fixed parameters (``name`` or ``family.name``) that are not searched.
    features : dict, optional
        Featurizer options (the same recipe ``train`` uses).
    seed : int
    output, save_model, trials_out, html : path, optional
        Best parameters as JSON (for ``train --params``), the best model retrained as a bundle,
        the trials as Parquet, and an HTML report.
    keep_models : int
        With ``valid`` and a storage: keep the fitted models of this many best trials per family
        in the study's artifact store (0: none), for ``ensemble --from-study``.
    artifacts : path, optional
        The artifact store directory (default: beside a journal file or SQLite database).
    progress : object, optional
        ``update(completed=, total=, description=)`` after every trial.

    Returns
    -------
    TuneResult
    """
    started = time.time()
    _check_options(valid, cv, time_col, sampler, pruner, trials, n_jobs)
    if keep_models < 0:
        raise UsageError(f"--keep-models {keep_models}: must be 0 or more")
    if artifacts is not None and (valid is None or keep_models == 0):
        raise UsageError("--artifacts keeps fitted models, which needs --valid and --keep-models 1 or more")
    if cv is None and valid is None:
        cv = 5
    families = resolve_families(model)
    if trials is None and timeout is None:
        trials = DEFAULT_TRIALS
    spec: dict[str, Any] = {
        "train": str(train), "valid": str(valid) if valid else None, "cv": cv, "time_col": time_col,
        "target": target, "model": model, "model_families": families, "metric": metric, "sampler": sampler,
        "pruner": pruner, "trials": trials, "deadline": None if timeout is None else started + timeout,
        "storage": storage, "study": study or "mlsys-tune", "seed": seed, "params": dict(params or {}), "workers": n_jobs,
        "features": dict(features or {}),
        "validation": f"valid:{_fingerprint([valid])}" if valid else f"cv:{cv}" + (f":{time_col}" if time_col else ""),
        "train_sha256": _fingerprint([train]),
        "keep_models": keep_models,
        # Only a --valid study fits each trial on every training row: a CV trial has no one model to keep.
        "artifacts": (os.path.abspath(artifacts) if artifacts else artifact_dir(storage)) if valid and keep_models else None,
    }
    tmpdir = tempfile.mkdtemp(prefix="mlsys-tune-")
    try:
        if n_jobs > 1 and storage is None:
            # Processes share a study only through a storage; a private journal serves.
            spec["storage"] = f"journal:{os.path.join(tmpdir, 'study.journal')}"
            spec["private_storage"] = True
        problem, plan, opened = _load(spec)
        job = {**spec, **plan}
        workers = _start_workers(job, n_jobs - 1, tmpdir) if n_jobs > 1 else []
        try:
            if workers:
                _release_workers(workers, tmpdir, spec["deadline"])
            mine = _optimize(opened, problem, job, progress)
        finally:
            outcomes = _join_workers(workers, spec["deadline"]) if workers else []
        trials_list = opened.get_trials(deepcopy=False)
        failed = [o for o in outcomes if "error" in o]
        if not _complete(opened):
            if failed:
                o = failed[0]
                raise MlsysError(f"worker failed: {o['error']}", o.get("hint"), o.get("exit_code", 1))
            _raise_no_trial(trials_list, timeout)
        result = _summarize(opened, problem, plan, spec, mine, outcomes, started, n_jobs)
        outputs = write_outputs(result, opened, problem, spec, output=output, save_model=save_model,
                                trials_out=trials_out, html=html)
        if spec["artifacts"] and os.path.isdir(spec["artifacts"]):
            outputs["models"] = spec["artifacts"]
    finally:
        import shutil

        shutil.rmtree(tmpdir, ignore_errors=True)
    return TuneResult(**{**result, "outputs": outputs})


def _check_options(valid: Any, cv: Any, time_col: Any, sampler: str, pruner: str, trials: Any, n_jobs: int) -> None:
    if valid is not None and cv is not None:
        raise UsageError("give --valid or --cv, not both")
    if cv is not None and cv < 2:
        raise UsageError(f"--cv {cv}: needs at least 2 folds")
    if time_col and valid is not None:
        raise UsageError("--time-col orders the --cv folds; with --valid the split is already made")
    if sampler not in SAMPLERS:
        raise UsageError(f"unknown sampler {sampler!r}", f"choose one of: {', '.join(SAMPLERS)}")
    if pruner not in PRUNERS:
        raise UsageError(f"unknown pruner {pruner!r}", f"choose one of: {', '.join(PRUNERS)}")
    if trials is not None and trials < 1:
        raise UsageError(f"--trials {trials}: must be at least 1")
    if n_jobs < 1:
        raise UsageError(f"--n-jobs {n_jobs}: must be at least 1")


def _raise_no_trial(trials: Sequence[Any], timeout: float | None) -> None:
    errors = [t.user_attrs["error"] for t in trials if "error" in t.user_attrs]
    if errors:
        raise InputError(f"no trial finished; the last error: {errors[-1]}")
    if timeout is not None:
        raise InputError(f"the time budget ({timeout:g}s) was too small to finish one trial",
                         "raise --timeout; the data loading and featurizing count against it")
    raise InputError("no trial finished (all were pruned or failed)")


def _best(trials: Sequence[Any], higher: bool) -> Any:
    return (max if higher else min)(trials, key=lambda t: t.value)


def _summarize(study: Any, problem: _Problem, plan: Mapping[str, Any], spec: Mapping[str, Any], mine: Mapping[str, Any],
               outcomes: Sequence[Mapping[str, Any]], started: float, n_jobs: int) -> dict[str, Any]:
    from optuna.trial import TrialState

    trials = [t for t in study.get_trials(deepcopy=False) if t.state != TrialState.WAITING]
    done = [t for t in trials if t.state == TrialState.COMPLETE]
    best = _best(done, problem.higher)
    family = best.params[FAMILY_PARAM]
    defaults = [t for t in done if t.user_attrs.get("defaults") and not t.user_attrs.get("overrides")
                and t.params.get(FAMILY_PARAM) == family]
    counts = {state: sum(t.state == s for t in trials) for state, s in (
        ("complete", TrialState.COMPLETE), ("pruned", TrialState.PRUNED), ("failed", TrialState.FAIL),
        ("running", TrialState.RUNNING))}
    rows = []
    for f in plan["families"]:
        mine_f = [t for t in trials if t.params.get(FAMILY_PARAM) == f]
        ok = [t for t in mine_f if t.state == TrialState.COMPLETE]
        rows.append({
            "family": f, "trials": len(mine_f), "complete": len(ok),
            "pruned": sum(t.state == TrialState.PRUNED for t in mine_f),
            "best": _best(ok, problem.higher).value if ok else None,
            "seconds": round(sum(t.duration.total_seconds() for t in mine_f if t.duration), 3),
        })
    stopped = mine["stopped_by"]
    if any(o.get("stopped_by") == "timeout" for o in outcomes):
        stopped = "timeout"
    return {
        "study": spec["study"], "storage": None if spec.get("private_storage") else storage_display(spec.get("storage")),
        "task": problem.task, "target": problem.target, "metric": problem.metric,
        "direction": "maximize" if problem.higher else "minimize", "validation": spec["validation"].split(":")[0]
        if spec.get("valid") else f"cv{spec['cv']}" + (" by time" if spec.get("time_col") else ""),
        "best_family": family, "best_value": float(best.value), "best_params": dict(best.user_attrs["params"]),
        "best_trial": best.number, "defaults_value": float(defaults[0].value) if defaults else None,
        "trials": {"total": len(trials), **counts, "this_run": int(mine["ran"]) + sum(int(o.get("ran", 0)) for o in outcomes)},
        "families": rows, "workers": n_jobs, "elapsed_s": time.time() - started, "stopped_by": stopped,
    }


# --------------------------------------------------------------------------- outputs


def best_params_document(result: Mapping[str, Any], spec: Mapping[str, Any]) -> dict[str, Any]:
    """The ``-o params.json`` document: what ``mlsys train --params`` reads, plus provenance."""
    return {
        "family": result["best_family"],
        "params": result["best_params"],
        "recipe": {"family": result["best_family"], "params": result["best_params"], "seed": int(spec["seed"]),
                   "target": result["target"], "task": result["task"], "features": dict(spec.get("features") or {})},
        "metric": result["metric"], "value": result["best_value"], "direction": result["direction"],
        "validation": result["validation"], "study": result["study"], "trial": result["best_trial"],
    }


def trials_frame(study: Any, metric: str) -> Any:
    """One row per trial: number, state, family, the metric, duration, worker and parameters."""
    import pandas as pd
    from optuna.trial import TrialState

    rows = []
    names: list[str] = []
    for t in study.get_trials(deepcopy=False):
        if t.state == TrialState.WAITING:
            continue
        row = {
            "number": t.number, "state": t.state.name.lower(), "family": t.params.get(FAMILY_PARAM),
            metric: t.value, "duration_s": t.duration.total_seconds() if t.duration else None,
            "defaults": bool(t.user_attrs.get("defaults", False)), "worker": t.user_attrs.get("worker"),
            "stopped_by": t.user_attrs.get("stopped_by") or t.user_attrs.get("error"),
            "params": json.dumps(t.user_attrs.get("params", {}), sort_keys=True),
        }
        for k, v in t.params.items():
            if k != FAMILY_PARAM:
                row[f"param.{k}"] = v
                names.append(f"param.{k}") if f"param.{k}" not in names else None
        rows.append(row)
    frame = pd.DataFrame(rows)
    for col in names:  # a categorical parameter mixing None and numbers stays readable
        if frame[col].map(type).nunique() > 2:
            frame[col] = frame[col].map(lambda v: None if v is None else json.dumps(v))
    return frame


def write_outputs(result: Mapping[str, Any], study: Any, problem: _Problem, spec: Mapping[str, Any], *,
                  output: str | None, save_model: str | None, trials_out: str | None, html: str | None) -> dict[str, str]:
    """Write the requested files (each atomically) and return their paths by kind."""
    from mlsys_cli.fsutil import atomic_write_text

    written: dict[str, str] = {}
    doc = best_params_document(result, spec)
    # The retrain is the step most likely to fail: do it before writing anything else.
    if save_model:
        from mlsys_cli.models.train import train_model

        bundle, _ = train_model(spec["train"], valid=spec.get("valid"), target=problem.target, model=doc["family"],
                                params=doc["params"], features=spec.get("features") or None, seed=int(spec["seed"]))
        bundle.save(save_model)
        written["model"] = str(save_model)
    if output:
        atomic_write_text(output, json.dumps(doc, indent=2, sort_keys=True) + "\n")
        written["params"] = str(output)
    if trials_out:
        from mlsys_cli.data.io import Lineage, input_record, write_table

        inputs = [input_record(spec["train"])] + ([input_record(spec["valid"])] if spec.get("valid") else [])
        write_table(trials_frame(study, problem.metric), trials_out,
                    Lineage(command="tune", inputs=inputs, seed=int(spec["seed"]), target=problem.target,
                            extra={"study": spec["study"], "metric": problem.metric}))
        written["trials"] = str(trials_out)
    if html:
        html_report(study, result, problem.metric, problem.higher).write(html)
        written["html"] = str(html)
    return written


def param_importances(study: Any, family: str) -> dict[str, float]:
    """fANOVA-style importances (Optuna's default evaluator) of one family's parameters,
    from its completed trials; empty when there are too few to tell."""
    import optuna
    from optuna.trial import TrialState

    done = [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
            if t.params.get(FAMILY_PARAM) == family]
    names = sorted({k for t in done for k in t.params if k != FAMILY_PARAM})
    names = [n for n in names if all(n in t.params for t in done)]
    if len(done) < 3 or not names:
        return {}
    view = optuna.create_study(direction=study.direction)
    view.add_trials(done)
    try:
        found = optuna.importance.get_param_importances(view, params=names, evaluator=optuna.importance.FanovaImportanceEvaluator(seed=0))
    except (ValueError, RuntimeError):
        return {}
    return {k.split(".", 1)[1]: float(v) for k, v in found.items()}


def html_report(study: Any, result: Mapping[str, Any], metric: str, higher: bool) -> Any:
    """The ``--html`` page: optimisation history, time per family, parameter importances."""
    from optuna.trial import TrialState

    from mlsys_cli import __version__
    from mlsys_cli import htmlreport as hr

    done = sorted(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)), key=lambda t: t.number)
    page = hr.Report(f"Tuning study {result['study']}", subtitle=f"{result['task']} target {result['target']}: "
                     f"{result['direction']} {metric} ({result['validation']})", footer=f"mlsys {__version__}")
    page.heading("Best trial")
    page.kv({"family": result["best_family"], metric: result["best_value"], "trial": result["best_trial"],
             "defaults of that family": result["defaults_value"], **{f"param {k}": v for k, v in result["best_params"].items()}})
    page.heading("Optimisation history")
    series = []
    for f in sorted({t.params.get(FAMILY_PARAM) for t in done}):
        ts = [t for t in done if t.params.get(FAMILY_PARAM) == f]
        series.append(hr.Series(f, [t.number for t in ts], [t.value for t in ts], markers=True))
    running, best_so_far = [], None
    for t in done:
        best_so_far = t.value if best_so_far is None else (max if higher else min)(best_so_far, t.value)
        running.append(best_so_far)
    series.append(hr.Series("best so far", [t.number for t in done], running, step=True))
    page.figures(hr.line_plot(series, title="Optimisation history", x_label="trial", y_label=metric, kind="history"),
                 hr.bar_chart([r["family"] for r in result["families"]], [r["seconds"] for r in result["families"]],
                              title="Time spent per family", value_label="seconds"))
    page.table(result["families"], ["family", "trials", "complete", "pruned", "best", "seconds"], caption="Families")
    importances = param_importances(study, result["best_family"])
    page.heading(f"Parameter importances ({result['best_family']})")
    if importances:
        page.figures(hr.bar_chart(list(importances), list(importances.values()), title="Parameter importances",
                                  value_label="share of variance (fANOVA)", kind="importance"))
    else:
        page.text("Too few completed trials of this family to estimate parameter importances.")
    page.heading("Trials")
    page.table([{"trial": t.number, "state": t.state.name.lower(), "family": t.params.get(FAMILY_PARAM), metric: t.value,
                 "seconds": t.duration.total_seconds() if t.duration else None}
                for t in study.get_trials(deepcopy=False) if t.state != TrialState.WAITING])
    return page
