"""Search spaces: each family's space scoped to the study, ``--param`` values, the grid, the plan.

A family declares its space with ``Family.search_space(trial, task)`` through Optuna's
``suggest_*`` calls. In a study the names are prefixed with the family (:class:`Scoped`), so
several families share one study; :func:`probe_space` reads a space without a study.
:func:`make_plan` checks a search against the data and says what the study runs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Sequence

from mlsys_cli.errors import UsageError
from mlsys_cli.models.study import FAMILY_PARAM
from mlsys_cli.models.tuning.job import TuneJob

# Cheapest first: the order in which ``auto`` gives each family its default trial.
AUTO_FAMILIES = ("linear", "hgb", "xgboost", "forest", "mlp")
# ``auto`` also starts from these configurations (after each family's own defaults): XGBoost's
# library defaults (0.3 learning rate, 100 rounds, no early stopping) and extremely randomized trees, which win on
# many small tables (FLAML's extra_tree) for the cost of a forest.
AUTO_EXTRA_DEFAULTS = (
    # scikit-learn's HistGradientBoosting exactly as a user fits it by default on up to 10,000
    # rows: 100 iterations, no early stopping (the family's defaults trial stops on --valid).
    ("hgb", {"early_stopping": False}),
    ("forest", {"kind": "extra"}),
    # XGBoost's library defaults as a user fits them: 100 rounds, no early stopping. Early stopping
    # on the validation log loss cut them to 7 rounds on attrition (validation AUC 0.811 vs 0.832
    # for all 100, test 0.735 vs 0.781) and to 1 on flights, where the loss rises while the AUC
    # still improves; the family's own defaults trial keeps early stopping.
    ("xgboost", {"learning_rate": 0.3, "n_estimators": 100, "early_stopping_rounds": 0}),
    # A slower, shallower, subsampled booster: what tuned XGBoost converges to on small noisy
    # tables (credit scoring), where the deep defaults overfit in a few dozen rounds.
    ("xgboost", {"learning_rate": 0.05, "max_depth": 4, "min_child_weight": 2.0, "subsample": 0.8,
                 "colsample_bytree": 0.8, "n_estimators": 2000}),
)
# Grid search over a continuous range uses this many points per parameter.
GRID_POINTS = 3


@dataclass(frozen=True)
class Plan:
    """What a study runs, checked against the data.

    Attributes
    ----------
    families : tuple of str
        The families with something left to search.
    fixed : dict
        Per family, the ``--param`` values that are not searched.
    grid : dict, optional
        The grid sampler's points (``--sampler grid``).
    enqueue : tuple
        ``(params, overrides)`` of the starting trials a new study is seeded with.
    """

    families: tuple[str, ...]
    fixed: Mapping[str, Mapping[str, Any]]
    grid: Mapping[str, Any] | None
    enqueue: tuple[tuple[Mapping[str, Any], Mapping[str, Any]], ...]



class Scoped:
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


def make_plan(job: TuneJob, problem: Any) -> Plan:
    """Check the search against the data: fixed parameters, empty spaces, the grid."""
    from mlsys_cli.models.families import get_family, resolve_params

    families = list(job.model_families)
    spaces = {f: probe_space(get_family(f), problem.task) for f in families}
    defaults = {f: get_family(f).default_params(problem.task) for f in families}
    fixed = split_fixed(families, job.params, spaces, defaults)
    for f in (f for f in families if fixed[f]):
        # Building the estimator validates the fixed values' names and types (usage errors); only
        # then, since it imports the family's library (torch takes seconds of the budget).
        get_family(f).make(problem.task, problem.n_classes, resolve_params(get_family(f), problem.task, fixed[f]), int(job.seed))
    searched = {f: {k: d for k, d in spaces[f].items() if k not in fixed[f]} for f in families}
    families = [f for f in families if searched[f]]
    if not families:
        what = job.model
        raise UsageError(f"nothing to search: --model {what} has no free parameter"
                         + (" left by --param" if job.params else ""),
                         "drop some --param, or train this configuration directly with mlsys train")
    grid = None
    if job.sampler == "grid":
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
    return Plan(families=tuple(families), fixed=fixed, grid=grid, enqueue=tuple(enqueue))
