"""The Featurizer: raw table in, float feature matrix out, fitted on train only.

A scikit-learn transformer. ``fit`` infers the schema and column roles, checks for leakage, and
fits one block per feature column (transformers.py); ``transform`` canonicalizes any table with
the fitted schema (schema.py) and applies the blocks; ``to_onnx`` writes the same computation
as one ONNX graph (onnx.py). Outputs are float32-representable (stored as float64), so the
matrix a model is trained on is exactly what the ONNX graph feeds it.

Use ``fit_transform`` for the training matrix: target-encoded columns then hold cross-fitted
(out-of-fold) values, while ``transform`` of any other table uses the full-train encoding.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Any, Sequence

import numpy as np

from mlsys_cli.errors import InputError, UsageError
from mlsys_cli.features import leakage as _leakage
from mlsys_cli.features.roles import FEATURE_ROLES, category_counts, infer_roles, raw_numbers
from mlsys_cli.features.schema import (canonical_arrays, datetime_zone, infer_schema, missing_target, nested_columns,
                                      regression_values, to_pandas)
from mlsys_cli.features.encoders import Target
from mlsys_cli.features.presets import FAMILY_PRESETS
from mlsys_cli.features.transformers import (CategoricalBlock, DatetimeBlock, NumericBlock, block_from_state, block_state,
                                             from_state, state_of)

PRESETS: dict[str, dict[str, Any]] = {
    # Trees split on raw values and route NaN themselves: no scaling, no imputation.
    "trees": {"impute": "none", "indicators": False, "scaling": "none", "log": False, "onehot_bins": False, "onehot_max": 10},
    # No automatic log for linear models: it bends a column the target may depend on linearly
    # (diamonds: price vs carat, RMSE 1255 with it vs 1118 without; benchmarks/results/quality_models.md).
    "linear": {"impute": "median", "indicators": True, "scaling": "standard", "log": False, "onehot_bins": True, "onehot_max": None},
    "mlp": {"impute": "median", "indicators": True, "scaling": "standard", "log": "auto", "onehot_bins": True, "onehot_max": None},
}
IMPUTE = ("auto", "median", "mean", "most_frequent", "constant", "none")
SCALING = ("auto", "standard", "robust", "minmax", "none")
HIGH_CARDINALITY = ("auto", "target", "hashing", "ordinal")
TASKS = ("binary", "multiclass", "regression")
FILE = "featurizer.json"
# Featurizers of mlsys before 0.2 were stored with skops; their fitted state is not readable now.
LEGACY_FILE = "featurizer.skops"


def resolve_preset(preset: str, family: str | None = None) -> str:
    """The preset name for ``preset`` (``auto`` follows the model family; trees by default)."""
    if preset == "auto":
        return FAMILY_PRESETS.get(family or "xgboost", "trees")
    if preset in PRESETS:
        return preset
    if preset in FAMILY_PRESETS:
        return FAMILY_PRESETS[preset]
    raise UsageError(f"unknown preset {preset!r}", "use auto, trees, linear or mlp")


def guess_task(y: Any) -> str:
    """binary | multiclass | regression from the target values (missing values ignored)."""
    import pandas as pd
    from pandas.api import types as pdt

    y = pd.Series(y).dropna()
    n_unique = y.nunique()
    if pdt.is_bool_dtype(y.dtype) or n_unique <= 2:
        return "binary"
    if pdt.is_numeric_dtype(y.dtype):
        integral = bool(np.all(np.floor(y.to_numpy(dtype=np.float64)) == y.to_numpy(dtype=np.float64)))
        return "multiclass" if integral and n_unique <= 10 else "regression"
    return "multiclass"


def _names(values: Any) -> list[str]:
    """Column lists from options: ``["a,b", "c"]`` -> ``["a", "b", "c"]``."""
    out: list[str] = []
    for v in values or ():
        out.extend(p.strip() for p in str(v).split(",") if p.strip())
    return out


_UNUSABLE = {"constant": "is constant (one value in train)", "empty": "is entirely missing in train",
             "unrepresentable": "holds numbers float32 cannot hold", "nested": "holds lists or structs",
             "unnamed": "has an empty or blank name"}


def unusable_columns(roles: dict[str, dict[str, Any]]) -> list[str]:
    """One warning per column left out because train holds nothing to learn from it (never a refusal)."""
    return [f"column {name!r} {_UNUSABLE[r['role']]}"
            + (f" ({r['reason']})" if r["role"] == "unrepresentable" else "") + ": left out of the features"
            for name, r in roles.items() if r["role"] in _UNUSABLE]


def _unusable_roles(features: Any, roles: dict[str, dict[str, Any]], drop: Sequence[str]) -> dict[str, dict[str, Any]]:
    """``roles`` with the columns of ``features`` that cannot be features, in their column order.

    List and struct columns, and a column whose name is empty (no ONNX graph input can carry
    it), are left out with a warning (``unusable_columns``) like constant or empty ones, never a
    refusal, so a new nested field in an extract does not stop a nightly retrain. ``--drop``
    names them as dropped instead.
    """
    nested = set(nested_columns(features))
    unnamed = {str(c) for c in features.columns if not str(c).strip()}
    if not nested and not unnamed:
        return roles
    out = {}
    for name in map(str, features.columns):
        if name in nested or name in unnamed:
            miss = float(features[name].isna().mean()) if len(features) else 0.0
            role, reason = (("nested", "lists or structs (not features)") if name in nested
                            else ("unnamed", "an empty or blank column name (not features)"))
            if name in drop:
                role, reason = "dropped", "--drop"
            out[name] = {"type": "nested" if name in nested else "unnamed", "role": role, "reason": reason,
                         "missing": round(miss, 6)}
        elif name in roles:
            out[name] = roles[name]
    return out


def _logical_type(df: Any, name: str) -> str:
    """A raw column's logical type, from a pandas frame or a ColumnTable."""
    from mlsys_cli.features.columns import ColumnTable
    from mlsys_cli.features.schema import logical_type

    return df.logical_type(name) if isinstance(df, ColumnTable) else logical_type(df[name])


class Featurizer:
    """Turn a raw table into model features; fitted on train only.

    Parameters
    ----------
    target : str, optional
        The target column; dropped from the features and used by target encoding and leakage checks.
    preset : {"auto", "trees", "linear", "mlp"}
        Defaults per model family: ``trees`` keeps NaN and raw scales (one-hot for few
        categories, ordinal otherwise); ``linear``/``mlp`` impute with missing indicators,
        scale, log skewed non-negative columns and one-hot. ``auto`` follows ``family``.
    family : str, optional
        The model family ``auto`` follows (xgboost, forest, baseline -> trees; linear; mlp).
    task : {"binary", "multiclass", "regression"}, optional
        Inferred from the target when omitted.
    numeric, categorical, datetime, drop, ids : list of str, optional
        Role overrides (comma-separated entries allowed).
    cross : list of str, optional
        Feature crosses ``"a,b"``: two categorical columns make a combined category, two
        numeric columns their product.
    impute : {"auto", "median", "mean", "most_frequent", "constant", "none"}
    scaling : {"auto", "standard", "robust", "minmax", "none"}
    log : {"auto", "skewed", True, False}
        ``log(1 + x)`` of numbers: "auto" the preset's choice (mlp: skewed columns), "skewed" the
        non-negative columns with skew > 1, True every column, False none.
    bins : int, optional
        Replace each numeric column by its quantile bin (one-hot for linear/mlp).
    max_categories : int
        Strings with more distinct train values are high cardinality; one-hot keeps at most this many.
    min_frequency : int
        Rarer categories go to the infrequent bucket.
    high_cardinality : {"auto", "target", "hashing", "ordinal"}
        Encoding of high-cardinality strings; ``auto`` is target encoding when there is a target.
    hash_features : int
        Buckets for hashing.
    leakage : {"drop", "warn"}
        What to do with a feature that alone predicts the target (>= ``leakage_threshold``).
    leakage_threshold : float
    seed : int

    Attributes
    ----------
    input_schema_ : list of dict
        ``{"name", "type", "role", "categories"}`` of each raw column the features need.
    roles_ : dict
        Every train column -> ``{"type", "role", "reason", "missing"}``.
    report_ : dict
        Leakage findings and dropped columns.
    task_, classes_, preset_, blocks_, n_features_out_
    """

    def __init__(self, target: str | None = None, preset: str = "auto", family: str | None = None, task: str | None = None,
                 numeric: Sequence[str] | None = None, categorical: Sequence[str] | None = None,
                 datetime: Sequence[str] | None = None, drop: Sequence[str] | None = None, ids: Sequence[str] | None = None,
                 cross: Sequence[str] = (), impute: str = "auto", scaling: str = "auto", log: Any = "auto",
                 bins: int | None = None, max_categories: int = 20, min_frequency: int = 5, high_cardinality: str = "auto",
                 hash_features: int = 32, leakage: str = "drop", leakage_threshold: float = 0.98, seed: int = 0):
        self.target = target
        self.preset = preset
        self.family = family
        self.task = task
        self.numeric = numeric
        self.categorical = categorical
        self.datetime = datetime
        self.drop = drop
        self.ids = ids
        self.cross = cross
        self.impute = impute
        self.scaling = scaling
        self.log = log
        self.bins = bins
        self.max_categories = max_categories
        self.min_frequency = min_frequency
        self.high_cardinality = high_cardinality
        self.hash_features = hash_features
        self.leakage = leakage
        self.leakage_threshold = leakage_threshold
        self.seed = seed

    # -- scikit-learn API -------------------------------------------------------------------
    def get_params(self, deep: bool = True) -> dict[str, Any]:
        import inspect

        return {k: getattr(self, k) for k in inspect.signature(Featurizer.__init__).parameters if k != "self"}

    def set_params(self, **params: Any) -> "Featurizer":
        for key, value in params.items():
            setattr(self, key, value)
        return self

    def fit(self, df: Any, y: Any = None) -> "Featurizer":
        """Fit on a raw train table (which may include the target column)."""
        self._fit(df, y, cross_fit=False)
        return self

    def fit_transform(self, df: Any, y: Any = None, dtype: Any = np.float64) -> np.ndarray:
        """Fit, and return the train matrix (target encoding cross-fitted, out-of-fold).

        ``dtype`` float32 gives the same values without the float64 copy (for models that compute
        in float32 anyway, like XGBoost).
        """
        return self._fit(df, y, cross_fit=True, dtype=dtype)

    def transform(self, df: Any, dtype: Any = np.float64) -> np.ndarray:
        """Features of any table with the fitted columns (extra columns ignored).

        Raises ``InputError`` naming the column when one is missing or holds a wrong value.
        """
        self._check_fitted()
        df = to_pandas(df)
        data = canonical_arrays(df, self.input_schema_)
        return self._assemble([b.transform(data) for b in self.blocks_], len(df), dtype)

    def transform_train(self, df: Any, y: Any = None, dtype: Any = np.float64) -> np.ndarray:
        """The training matrix of a model fitted on top of this already-fitted featurizer.

        Like :meth:`transform`, except that target-encoded columns are cross-fitted on these rows
        (out of fold, with the block's own folds and seed), so the model never learns from an
        encoding of its own rows' targets. The fitted state used at predict time is unchanged.
        """
        import copy

        self._check_fitted()
        df = to_pandas(df)
        data = canonical_arrays(df, self.input_schema_)
        parts = []
        target = None
        for block in self.blocks_:
            if getattr(block, "encoding", None) != "target":
                parts.append(block.transform(data))
                continue
            if target is None:
                values = self._target_values(df, y)
                if values is None or values.isna().any():
                    raise InputError("target encoding needs the target on every training row")
                target = (Target(values.astype("float64").to_numpy(), "continuous", seed=self.seed)
                          if self.task_ == "regression" else self._target_codes(values))
            parts.append(copy.deepcopy(block).fit_transform(data, target))
        return self._assemble(parts, len(df), dtype)

    def get_feature_names_out(self, input_features: Any = None) -> list[str]:
        self._check_fitted()
        return [n for b in self.blocks_ for n in b.names_out_]

    def to_onnx(self) -> Any:
        """One ONNX graph: a graph input per raw column -> ``features`` tensor(float) [N, k]."""
        from mlsys_cli.features.onnx import build

        self._check_fitted()
        return build(self)

    # -- persistence ------------------------------------------------------------------------
    def save(self, writer: Any, prefix: str = "features/") -> None:
        """Add the fitted featurizer to a bundle: plain JSON (parameters, schema, lookup tables).

        Loading it needs neither pickle nor skops (whose import of scikit-learn and SciPy cost
        seconds on every ``predict``), and the bytes depend only on the fitted state.
        """
        self._check_fitted()
        writer.add_json(prefix + FILE, self.get_state())

    @classmethod
    def load(cls, reader: Any, prefix: str = "features/") -> "Featurizer":
        """The fitted featurizer stored in a bundle by :meth:`save`."""
        if prefix + FILE not in reader.names() and prefix + LEGACY_FILE in reader.names():
            raise InputError(f"{reader.path}: built by an older mlsys (featurizer stored with skops)",
                             "rebuild it with this version (featurize or train again)")
        try:
            return cls.from_state(reader.json(prefix + FILE))
        except (KeyError, TypeError, ValueError) as exc:
            raise InputError(f"{reader.path}: member {prefix + FILE!r} is not a fitted featurizer ({exc})") from None

    def get_state(self) -> dict[str, Any]:
        """The fitted featurizer as plain JSON (see :meth:`from_state`)."""
        self._check_fitted()
        fitted = {k: ([block_state(b) for b in v] if k == "blocks_" else state_of(v))
                  for k, v in vars(self).items() if k.endswith("_") and not k.startswith("_")}
        return {"format": 1, "params": state_of(self.get_params()), "fitted": fitted}

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> "Featurizer":
        """Rebuild a fitted featurizer from :meth:`get_state` (only known block types are built)."""
        if not isinstance(state, dict) or state.get("format") != 1:
            raise ValueError("unknown featurizer state format")
        obj = cls(**from_state(state["params"]))
        for key, value in state["fitted"].items():
            if not key.endswith("_") or key.startswith("_"):
                raise ValueError(f"unexpected fitted attribute {key!r}")
            setattr(obj, key, [block_from_state(b) for b in value] if key == "blocks_" else from_state(value))
        obj._check_fitted()
        return obj

    # -- internals ---------------------------------------------------------------------------
    def _check_fitted(self) -> None:
        if not hasattr(self, "blocks_"):
            raise ValueError("this Featurizer is not fitted yet; call fit() first")

    @staticmethod
    def _assemble(parts: list[np.ndarray], n: int, dtype: Any = np.float64) -> np.ndarray:
        if not parts:
            return np.zeros((n, 0), dtype=dtype)
        # Rounded to float32 in the same pass that joins the blocks: float32-representable, like the
        # ONNX output, so models train on what the graph feeds them.
        X = np.concatenate(parts, axis=1, dtype=np.float32)
        return X if np.dtype(dtype) == np.float32 else X.astype(dtype)

    def _target_values(self, df: Any, y: Any) -> Any:
        import pandas as pd

        if y is not None:
            return pd.Series(np.asarray(y) if not isinstance(y, pd.Series) else y.to_numpy(), index=df.index)
        if self.target is None:
            return None
        if self.target not in df.columns:
            raise InputError(f"target column {self.target!r} is not in the table",
                             "columns: " + ", ".join(map(str, list(df.columns)[:20])))
        return df[self.target]

    def _settings(self) -> dict[str, Any]:
        preset = dict(PRESETS[self.preset_])
        for key, allowed in (("impute", IMPUTE), ("scaling", SCALING), ("high_cardinality", HIGH_CARDINALITY)):
            if getattr(self, key) not in allowed:
                raise UsageError(f"invalid {key} {getattr(self, key)!r}", "use one of: " + ", ".join(allowed))
        if self.leakage not in ("drop", "warn"):
            raise UsageError(f"invalid leakage {self.leakage!r}", "use drop or warn")
        if self.impute != "auto":
            preset["impute"] = self.impute
            preset["indicators"] = self.impute != "none"
        if self.scaling != "auto":
            preset["scaling"] = self.scaling
        if self.log != "auto":
            preset["log"] = "auto" if self.log == "skewed" else bool(self.log)
        return preset

    def _fit(self, df: Any, y: Any, cross_fit: bool, dtype: Any = np.float64) -> np.ndarray | None:
        import pandas as pd

        df = to_pandas(df)
        self.preset_ = resolve_preset(self.preset, self.family)
        settings = self._settings()
        target = self._target_values(df, y)
        overrides = {k: _names(getattr(self, k)) for k in ("numeric", "categorical", "datetime", "drop", "ids")}
        crosses = [tuple(_names([c])) for c in self.cross or ()]
        known = {str(c) for c in df.columns}
        for option, names in [*overrides.items(), *(("cross", list(c)) for c in crosses)]:
            for name in names:
                if name not in known:
                    raise InputError(f"--{option.rstrip('s') if option == 'ids' else option}: no column {name!r} in the table")
        for pair in crosses:
            if len(pair) != 2 or pair[0] == pair[1]:
                raise UsageError(f"invalid --cross {','.join(pair)!r}", "give two different columns: --cross a,b")
        self.n_missing_target_ = 0
        if target is not None:
            present = ~missing_target(target)
            self.n_missing_target_ = int((~present).sum())
            df, target = df[present], target[present]
            if len(df) == 0:
                raise InputError(f"target column {self.target!r} has no values")
        features = df.drop(columns=[self.target]) if self.target in df.columns else df
        if len(features) == 0:
            raise InputError("the table has no rows")
        types = {n: t for key, t in (("numeric", "float"), ("categorical", "string"), ("datetime", "datetime"))
                 for n in overrides[key]}
        for name in overrides["numeric"]:  # a time of day is already a number (seconds since midnight)
            if _logical_type(features, name) == "time":
                del types[name]
        schema = infer_schema(features, types)  # leaves the nested columns out
        data = canonical_arrays(features, schema)
        roles = infer_roles(data, schema, max_categories=self.max_categories, numeric=overrides["numeric"],
                            categorical=overrides["categorical"], datetime=overrides["datetime"],
                            drop=overrides["drop"], ids=overrides["ids"], raw=raw_numbers(features, schema))
        self.roles_ = _unusable_roles(features, roles, overrides["drop"])
        if not any(r["role"] in FEATURE_ROLES for r in self.roles_.values()):
            shown = ", ".join(f"{n} ({r['role']})" for n, r in self.roles_.items()) or "none"
            raise InputError(f"no column to learn from besides the target {self.target!r}; columns: {shown}",
                             "add feature columns, or override a role (--numeric, --categorical)")
        self.n_categories_ = {c["name"]: int(len(pd.unique(data[c["name"]]))) for c in schema if c["type"] == "string"}
        y_values = self._fit_target(target)
        types_of = {c["name"]: c["type"] for c in schema}
        # The leakage check (a tree per feature) runs on a second thread while the blocks of every
        # candidate feature are fitted here: a block depends only on its own column and the target,
        # so the blocks of columns found leaky are simply dropped afterwards. Same result as in turn.
        candidates = self._blocks(schema, settings, crosses, types_of)
        findings: list[dict[str, Any]] = []
        if y_values is not None:
            _leakage.import_dependencies()
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="mlsys-leakage") as pool:
            check = (pool.submit(_leakage.single_feature_findings, data, schema, self.roles_, y_values, self.task_,
                                 self.leakage_threshold, self.seed) if y_values is not None else None)
            fitted = [b.fit_transform(data, y_values) if cross_fit else b.fit(data, y_values) for b in candidates]
            findings = check.result() if check is not None else []
        if self.leakage == "drop":
            for f in findings:
                self.roles_[f["column"]].update(role="leaky", reason=f["message"])
        kept = {(type(b).__name__, b.columns) for b in self._blocks(schema, settings, crosses, types_of)}
        chosen = [i for i, b in enumerate(candidates) if (type(b).__name__, b.columns) in kept]
        self.blocks_ = [candidates[i] for i in chosen]
        outputs = [fitted[i] for i in chosen]
        position = {c["name"]: i for i, c in enumerate(schema)}  # not list.index: quadratic in the columns
        used = sorted({c for b in self.blocks_ for c in b.columns}, key=position.__getitem__)
        self.input_schema_ = [self._schema_entry(name, types_of[name], data[name]) for name in used]
        for entry in self.input_schema_:  # the fitted zone: naive times are refused later, not shifted
            zone = datetime_zone(features[entry["name"]]) if entry["type"] == "datetime" else None
            if zone:
                entry["tz"] = zone
        self.report_ = {
            "leakage": findings,
            "dropped": {n: r["reason"] for n, r in self.roles_.items() if r["role"] not in FEATURE_ROLES},
            "rows": int(len(features)),
            "rows_missing_target": self.n_missing_target_,
            "warnings": unusable_columns(self.roles_),
        }
        self.n_features_out_ = len(self.get_feature_names_out())
        return self._assemble(outputs, len(features), dtype) if cross_fit else None

    def _fit_target(self, target: Any) -> Target | None:
        self.task_, self.classes_ = None, None
        if target is None:
            return None
        self.task_ = self.task or guess_task(target)
        if self.task_ not in TASKS:
            raise UsageError(f"invalid task {self.task_!r}", "use binary, multiclass or regression")
        name = self.target or "target"
        if self.task_ == "regression":
            return Target(regression_values(target, f"target {name!r}"), "continuous", seed=self.seed)
        import pandas as pd

        distinct = pd.unique(target.to_numpy(dtype=object)).tolist()
        uniques = sorted(set(distinct), key=str)
        if len(uniques) < 2:
            raise InputError(f"target {name!r} has one class ({uniques[0]!r}); nothing to learn",
                             "check the split or the target column")
        if self.task_ == "binary" and len(uniques) > 2:
            raise InputError(f"target {name!r} has {len(uniques)} classes; binary needs 2")
        self.classes_ = uniques
        return self._target_codes(target)

    def _target_codes(self, target: Any) -> Target:
        """The target of fitted classes as codes in the order of the classes' names (as sklearn sorts them)."""
        names = sorted({str(c) for c in self.classes_})
        try:
            return Target.from_labels(np.asarray(target, dtype=object), self.task_, self.seed, classes=names)
        except KeyError as exc:
            raise InputError(f"target value {exc.args[0]!r} is not one of the fitted classes") from None

    def _blocks(self, schema: list[dict], settings: dict, crosses: list[tuple], types_of: dict) -> list[Any]:
        numeric = {"impute": settings["impute"], "indicator": settings["indicators"], "scaling": settings["scaling"],
                   "log": settings["log"], "bins": self.bins, "onehot_bins": settings["onehot_bins"]}
        blocks: list[Any] = []
        for col in schema:
            role = self.roles_[col["name"]]["role"]
            if role in FEATURE_ROLES:
                blocks.append(self._block(role, (col["name"],), numeric, settings))
        for a, b in crosses:
            for name in (a, b):
                if self.roles_[name]["role"] not in FEATURE_ROLES:
                    raise InputError(f"--cross {a},{b}: {name!r} is not a feature ({self.roles_[name]['role']})")
            kinds = {"string" if types_of[n] == "string" else ("datetime" if types_of[n] == "datetime" else "number") for n in (a, b)}
            if kinds == {"string"}:
                blocks.append(self._block("categorical_high" if self.hash_features and self._cross_high(a, b) else "categorical",
                                          (a, b), numeric, settings))
            elif kinds == {"number"}:
                blocks.append(self._block("numeric", (a, b), numeric, settings))
            else:
                raise UsageError(f"--cross {a},{b}: cross two categorical or two numeric columns")
        return blocks

    def _cross_high(self, a: str, b: str) -> bool:
        return self.n_categories_.get(a, 1) * self.n_categories_.get(b, 1) > self.max_categories

    def _block(self, role: str, columns: tuple, numeric: dict, settings: dict) -> Any:
        if role == "numeric":
            return NumericBlock(columns, **numeric)
        if role == "boolean":
            impute = "none" if numeric["impute"] == "none" else "most_frequent"
            return NumericBlock(columns, impute=impute, indicator=numeric["indicator"], scaling="none")
        if role == "datetime":
            return DatetimeBlock(columns, numeric={k: v for k, v in numeric.items() if k not in ("log", "indicator", "bins", "onehot_bins")},
                                 indicator=numeric["indicator"] or numeric["impute"] != "none")
        target_type = {"regression": "continuous"}.get(self.task_ or "", self.task_)
        common = {"max_categories": self.max_categories, "min_frequency": self.min_frequency, "n_hash": self.hash_features,
                  "target_type": target_type, "seed": self.seed}
        if role == "categorical":
            n = self.n_categories_.get(columns[0], 0) if len(columns) == 1 else 0
            light = settings["onehot_max"]
            encoding = "ordinal" if light is not None and n > light else "onehot"
            return CategoricalBlock(columns, encoding=encoding, **common)
        encoding = self.high_cardinality
        if encoding == "auto":
            encoding = "target" if self.task_ else ("ordinal" if self.preset_ == "trees" else "hashing")
        if encoding == "target" and not self.task_:
            raise UsageError("target encoding needs a target", "give --target, or --high-cardinality hashing|ordinal")
        return CategoricalBlock(columns, encoding=encoding, **common)

    def _schema_entry(self, name: str, kind: str, values: np.ndarray) -> dict[str, Any]:
        entry = {"name": name, "type": kind, "role": self.roles_[name]["role"]}
        if kind == "string":
            cats, _ = category_counts(values)
            entry["categories"] = [str(c) for c in cats[:1000]]
        return entry
