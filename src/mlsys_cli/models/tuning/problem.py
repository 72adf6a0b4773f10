"""The data of one study: read once, folded, featurized once per (featurizer recipe, fold).

A trial only fits an estimator on the cached matrices and scores it with
:func:`~mlsys_cli.models.metrics.compute_metrics`; the data are never featurized per trial.
"""

from __future__ import annotations

import json
import time
from typing import Any

from mlsys_cli.errors import InputError
from mlsys_cli.models.metrics import resolve_metric
from mlsys_cli.models.tuning.job import TuneJob, trial_rows


# Fitted models held in memory per family (the ensemble takes the best of each family first).
HELD = 2


class Problem:
    """The data of one study, featurized lazily once per (featurizer recipe, fold) and cached."""

    def __init__(self, job: TuneJob):
        from mlsys_cli.data.io import read_frame
        from mlsys_cli.models import train as tr

        self.job = job
        self.train_df = read_frame(job.train)
        if len(self.train_df) == 0:
            raise InputError(f"{job.train}: no rows")
        self.valid_df = read_frame(job.valid) if job.valid else None
        self.target = tr.resolve_target(self.train_df, job.target, job.train)
        tr.check_target(self.train_df[self.target], self.target, job.train)
        if self.valid_df is not None:
            if self.target not in self.valid_df.columns:
                raise InputError(f"{job.valid}: no target column {self.target!r}")
            tr.check_target(self.valid_df[self.target], self.target, job.valid)
        self.task, self.classes = tr.infer_task(self.train_df[self.target])
        self.metric, self.higher = resolve_metric(self.task, job.metric)
        # Rows each trial fits on when the table is big for the budget (None: every row).
        self.sample_rows = trial_rows(job, len(self.train_df))
        self.folds = self._folds()
        self._cache: dict[tuple[str, int], tuple[Any, ...]] = {}
        self._featurizers: dict[tuple[str, int], Any] = {}
        self._profiles: dict[str, Any] = {}
        self._records: list[dict[str, Any]] | None = None
        # Families whose fitted models are cheaper to refit than to write and load (keep_model).
        self.refit_cheaper: set[str] = set()
        self.featurize_s: dict[tuple[str, int], float] = {}
        # The fitted models of each family's best trials, in memory: {family: [(loss, number, est)]}
        # (:meth:`hold`); ``--save-model`` saves or combines them instead of refitting.
        self.held: dict[str, list[tuple[float, int, Any]]] = {}
        # Training seconds of each held trial's fit (what refitting it costs: :mod:`.refit`).
        self.fit_s: dict[int, float] = {}
        # Once the final model is chosen: "single" (the best trial) or the ensemble's member trial
        # numbers; a search resumed after that plans only their refit (budget.search_deadline).
        self.final_plan: str | tuple[int, ...] | None = None
        # Why the final model was not chosen by k-fold on train + valid where that applies (:mod:`.select`).
        self.selection_skipped: str | None = None

    @property
    def holds_models(self) -> bool:
        """Whether trials' fitted models are the final model's candidates (:meth:`hold`): with
        ``--save-model`` and ``--valid`` each trial fits on every training row exactly as
        ``train`` would (early stopping on the validation rows), so refitting the winner would
        only repeat that fit, and cost the budget it would need again."""
        return bool(self.job.refit and self.valid_df is not None and not self.sample_rows)

    def hold(self, number: int, family: str, est: Any, value: float, fit_s: float = 0.0) -> None:
        """Keep a trial's fitted model (and its training seconds ``fit_s``) when it is among the
        :data:`HELD` best of its family."""
        if not self.holds_models:
            return
        loss = -value if self.higher else value
        best = sorted(self.held.get(family, []) + [(loss, number, est)], key=lambda h: (h[0], h[1]))
        self.held[family] = best[:HELD]
        self.fit_s[number] = fit_s

    def held_family(self, number: int) -> str | None:
        """The family of held trial ``number`` (None if it is not held)."""
        return next((fam for fam, kept in self.held.items() for _, n, _ in kept if n == number), None)

    def held_model(self, number: int) -> Any:
        """The fitted model of trial ``number`` if it is held (None otherwise)."""
        return next((est for kept in self.held.values() for _, n, est in kept if n == number), None)

    @property
    def row_factor(self) -> float:
        """How much more the final refit costs than a trial's fit, by their rows: every training
        row over the trial's sample (1 unsampled), times train + valid over train when the
        refit also takes the validation rows (``job.refit_valid``: :func:`.final.refit_rows`)."""
        rows = len(self.train_df) + (len(self.valid_df) if self.job.refit_valid and self.valid_df is not None else 0)
        return rows / (self.sample_rows or len(self.train_df))

    @property
    def split_order(self) -> str | None:
        """Why the validation rows are not a random sample of the same rows as the training rows
        (None: nothing says so), read once: the split's lineage (``mlsys split --by time:`` or
        ``group:``), or a column whose values on most validation rows lie beyond the training rows'
        range (:data:`BEYOND_SHARE`; a time-ordered split's month or date). Random folds over train
        + valid would then train on the rows the validation stands for: the flights benchmark's
        5-fold AUC was 0.785 where its later validation months gave 0.66, and the model the folds
        chose scored 0.605 on the test months against 0.616 for the validation rows' choice."""
        if not hasattr(self, "_split_order"):
            self._split_order = None if self.valid_df is None else _split_order(self.job, self.train_df, self.valid_df, self.target)
        return self._split_order

    @property
    def n_classes(self) -> int:
        return len(self.classes) if self.classes else 0

    def _folds(self) -> list[tuple[Any, Any]]:
        import numpy as np

        n = len(self.train_df)
        if self.valid_df is not None and self.sample_rows:
            rng = np.random.default_rng([int(self.job.seed), n])
            return [(np.sort(rng.choice(n, self.sample_rows, replace=False)), None)]
        if self.valid_df is not None:
            return [(np.arange(n), None)]
        k = int(self.job.cv)
        if n < 2 * k:
            raise InputError(f"{self.job.train}: {n} rows are too few for --cv {k}")
        time_col = self.job.time_col
        if time_col:
            from sklearn.model_selection import TimeSeriesSplit

            if time_col not in self.train_df.columns:
                raise InputError(f"{self.job.train}: no time column {time_col!r}")
            missing = int(self.train_df[time_col].isna().sum())
            if missing:
                # A row with no time cannot be placed before or after the others (as split says).
                raise InputError(f"{self.job.train}: time column {time_col!r} is missing in {missing} rows; they cannot be placed in time",
                                 f"drop them first, e.g. mlsys ingest T --sql \"SELECT * FROM input WHERE {time_col} IS NOT NULL\"")
            order = np.argsort(self.train_df[time_col].to_numpy(), kind="stable")
            return [(order[a], order[b]) for a, b in TimeSeriesSplit(n_splits=k).split(order)]
        y = self.train_df[self.target].astype(str).to_numpy()
        seed = int(self.job.seed)
        if self.task == "regression":
            from sklearn.model_selection import KFold

            return list(KFold(k, shuffle=True, random_state=seed).split(y))
        from sklearn.model_selection import StratifiedKFold

        return list(StratifiedKFold(k, shuffle=True, random_state=seed).split(np.zeros(n), y))

    def features_spec(self, family: Any) -> dict[str, Any]:
        """The featurizer settings ``train`` uses for this family (so the recipe carries over)."""
        return {"preset": family.preset, "family": family.name, "task": self.task, **dict(self.job.features)}

    def key(self, family: Any, fold: int) -> tuple[str, int]:
        return json.dumps(self.features_spec(family), sort_keys=True, default=str), fold

    def featurizer(self, family: Any, fold: int) -> Any:
        """The fitted featurizer behind :meth:`matrices` (fitted on the fold's training rows)."""
        self.matrices(family, fold)
        return self._featurizers[self.key(family, fold)]

    def column_warnings(self) -> list[str]:
        """The columns left out (empty, constant, nested...), named as ``train`` names them: from
        a featurizer already fitted here (every preset sees the same columns), else none."""
        from mlsys_cli.models.train import role_warnings

        fitted = next(iter(self._featurizers.values()), None)
        return role_warnings(fitted) if fitted is not None else []

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

            self._records = [[input_record(p) for p in resolve_inputs([getattr(self.job, role)])] if getattr(self.job, role) else None
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
            fz = tr.make_featurizer(self.target, family.preset, features, int(self.job.seed))
            # fit_transform cross-fits target encodings on the training rows, as train does.
            X = fz.fit_transform(train)
            y_valid = valid[self.target]
            self._featurizers[key] = fz
            self.featurize_s[key] = time.perf_counter() - start
            self._cache[key] = (X, tr.encode_target(self.task, train[self.target], self.classes, self.job.train),
                                fz.transform(valid), tr.encode_target(self.task, y_valid, self.classes, self.job.valid or self.job.train),
                                y_valid.to_numpy())
        return self._cache[key]

    def score(self, y_true: Any, scores: Any) -> float:
        from mlsys_cli.models.metrics import compute_metrics

        value = compute_metrics(self.task, y_true, scores, self.classes).get(self.metric)
        if value is None:
            raise InputError(f"metric {self.metric} is undefined on the validation rows (one class only?)")
        return float(value)


# A validation table with this share of its rows beyond the training rows' range of some column
# was not drawn from the same rows (a random split leaves about 2 / (training rows + 1) there).
BEYOND_SHARE = 0.5


def _split_order(job: TuneJob, train_df: Any, valid_df: Any, target: str) -> str | None:
    """:attr:`Problem.split_order` for the tables of ``job``."""
    import pandas as pd

    from mlsys_cli.data.io import read_lineage

    for path in (job.valid, job.train):
        for one in (path if isinstance(path, (list, tuple)) else [path]):
            by = str(((read_lineage(one) or {}).get("extra") or {}).get("by") or "")
            if by.startswith(("time:", "group:")):
                return f"the split is by {by} (mlsys split lineage of {one})"

    def ordered(x: Any) -> str | None:
        # Which kind of comparable values a column holds (numbers or dates), if any.
        if pd.api.types.is_bool_dtype(x):
            return None
        return "number" if pd.api.types.is_numeric_dtype(x) else "date" if pd.api.types.is_datetime64_any_dtype(x) else None

    for col in valid_df.columns:
        if col == target or col not in train_df.columns:
            continue
        t, v = train_df[col], valid_df[col]
        if ordered(t) is None or ordered(t) != ordered(v) or (ordered(t) == "date" and t.dtype != v.dtype):
            continue
        t, v = t.dropna(), v.dropna()
        if len(t) == 0 or len(v) == 0:
            continue
        lo, hi = t.min(), t.max()
        share = float(((v > hi) | (v < lo)).mean())
        if share >= BEYOND_SHARE:
            return f"{share:.0%} of the validation rows' {col} lie beyond the training rows' range"
    return None
