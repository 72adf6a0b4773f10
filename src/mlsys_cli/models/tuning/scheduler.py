"""Which trial runs next: the auto scheduler across families, the sampler and the pruner.

``model="auto"`` searches several families. Which family the next trial tries is decided by a
cost-aware scheduler in the spirit of FLAML's "estimated cost for improvement" (ECI): each
family's loss gap to the best family divided by its observed rate of improvement per second
of trials, floored by its mean trial time and by the time its last improvement took (gains
below :data:`IMPROVE_TOL` do not count); the next family is drawn with probability
proportional to ``1 / ECI`` (seeded; 10% of the budget is spread evenly in time), so cheap
improving families get most of the budget while the others are still revisited.
Intermediate scores (boosting rounds, MLP epochs, CV folds) go to the Optuna pruner, which
stops hopeless trials early.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

from mlsys_cli.models.study import FAMILY_PARAM

# Share of the auto scheduler's draws that ignore the cost estimates.
EXPLORE = 0.1
# A family's best must improve by this share of its value to count as an improvement.
IMPROVE_TOL = 1e-4
# Under a time budget, trials of a family whose completed trials take less than this share of
# the budget (median) are not pruned (see make_pruner).
CHEAP_SHARE = 0.01


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

    stats, started = family_stats(trials, candidates, minimize)
    for fam in candidates:
        if fam not in started:
            return fam
    alive = [f for f in candidates if f in stats]
    if not alive:
        return candidates[int(rng.integers(len(candidates)))]
    weights = 1.0 / np.asarray(estimated_costs(stats, alive))
    # Early estimates are noisy (one trial cut by the deadline looks hopeless): a share of the
    # budget is spread evenly over the families. Evenly in time, not in draws: a uniform draw of
    # a family whose trials take 5 s costs a hundred draws of one whose trials take 0.05 s.
    speed = 1.0 / np.asarray([stats[f]["time"] / stats[f]["n"] for f in alive])
    p = (1 - EXPLORE) * weights / weights.sum() + EXPLORE * speed / speed.sum()
    return alive[int(rng.choice(len(alive), p=p))]


def family_stats(trials: Sequence[Any], candidates: Sequence[str], minimize: bool) -> tuple[dict[str, dict[str, float]], set[str]]:
    """Per family with a completed trial: trials ``n``, seconds ``time``, ``first`` and ``best``
    loss, the time ``t_best`` when the best was reached and the ``step`` that improvement took;
    and the families that have started any trial."""
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
    return stats, started


def estimated_costs(stats: Mapping[str, Mapping[str, float]], alive: Sequence[str]) -> list[float]:
    """Each family's estimated cost (seconds) to improve on the best family (FLAML's ECI)."""
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
    return eci


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


def make_pruner(kind: str, by_family: bool, cheap_s: float | None = None) -> Any:
    """The pruner; with several families the median rule compares a trial with its own family only
    (an MLP epoch and a boosting round are not the same amount of work), and, given ``cheap_s``
    (seconds: :data:`CHEAP_SHARE` of a time budget), never prunes a trial of a family whose
    completed trials took less than that (median).

    The median rule compares learning curves at the same step, so it judges a low learning rate
    on an unfinished curve: on a 1k-row table 7 of 11 XGBoost trials were pruned at round 5
    (0.03 s each, every learning rate below 0.07 among them), so the sampler learned to avoid low
    rates and the scheduler saw a family that never improved. Pruning a trial that costs a
    fraction of a second saves nothing worth that; it still stops the expensive ones.
    """
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
            view = FamilyView(study, trial.params.get(FAMILY_PARAM))
            if cheap_s is not None and median_seconds(view.get_trials(deepcopy=False)) < cheap_s:
                return False
            return bool(median.prune(view, trial))

    return FamilyMedianPruner()


def median_seconds(trials: Sequence[Any]) -> float:
    """Median duration of the completed ``trials`` (infinite when none has completed); the median,
    since a family's first trial also pays for importing its library and featurizing the data."""
    import statistics

    from optuna.trial import TrialState

    done = [t.duration.total_seconds() for t in trials if t.state == TrialState.COMPLETE and t.duration is not None]
    return statistics.median(done) if done else float("inf")
