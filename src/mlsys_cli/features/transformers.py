"""The Featurizer's blocks: one per raw column (or crossed pair), each with its ONNX twin.

A block takes canonical columns (schema.py), fits on train only, and returns float64 features.
Where a step is standard, the fitting is scikit-learn's (scalers, ``OneHotEncoder``,
``OrdinalEncoder``, ``TargetEncoder``); the block keeps the fitted object and also derives the
plain constants its ONNX twin needs (``to_onnx``), so the graph computes, in double, the same
formula as ``transform``.

Sources: a block reads one column, or two for a cross -- two strings are joined into one
category (``a`` + U+001F + ``b``), two numbers are multiplied.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np

from mlsys_cli.features.schema import INT64_MIN

CROSS_SEP = "\x1f"
# A string no real category equals: transforming it shows what the encoder does with unseen values.
_UNSEEN = "\x00mlsys-unseen\x00"
# Largest fixed-width copy of a string column made to speed up the encoders' fit (see _compact).
COMPACT_BYTES = 256 * 2**20
_SCALERS = {
    "standard": "sklearn.preprocessing.StandardScaler",
    "robust": "sklearn.preprocessing.RobustScaler",
    "minmax": "sklearn.preprocessing.MinMaxScaler",
}


def _source(columns: Sequence[str], data: Mapping[str, np.ndarray]) -> np.ndarray:
    if len(columns) == 1:
        return data[columns[0]]
    a, b = (data[c] for c in columns)
    if a.dtype == object:
        return np.array([f"{p}{CROSS_SEP}{q}" for p, q in zip(a, b)], dtype=object)
    return a * b


def _source_onnx(g: Any, columns: Sequence[str], inputs: Mapping[str, str], strings: bool) -> str:
    if len(columns) == 1:
        return inputs[columns[0]]
    a, b = (inputs[c] for c in columns)
    if strings:
        return g.op("StringConcat", [g.op("StringConcat", [a, g.const(np.array([CROSS_SEP], dtype=object), "sep")]), b])
    return g.op("Mul", [a, b], "cross")


def source_name(columns: Sequence[str]) -> str:
    """The feature-name stem of a source: ``col`` or ``a*b`` for a cross."""
    return "*".join(columns)


class NumericBlock:
    """Numbers (and booleans): optional log, imputation, missing indicator, binning or scaling.

    Parameters
    ----------
    columns : tuple of str
        One column, or two whose product is the feature.
    impute : {"median", "mean", "most_frequent", "constant", "none"}
        "none" keeps NaN (tree models split on it).
    indicator : bool
        Add ``<col>__missing`` when the column has missing values in train.
    scaling : {"standard", "robust", "minmax", "none"}
    log : bool or "auto"
        ``log(1 + max(x, 0))``; "auto" applies it to non-negative columns with skew > 1.
    bins : int, optional
        Quantile bins instead of scaling: the bin index, or one-hot bins when ``onehot_bins``.
    onehot_bins : bool
    """

    def __init__(self, columns: Sequence[str], impute: str = "median", indicator: bool = True, scaling: str = "none",
                 log: Any = False, bins: int | None = None, onehot_bins: bool = False):
        self.columns = tuple(columns)
        self.impute = impute
        self.indicator = indicator
        self.scaling = scaling
        self.log = log
        self.bins = bins
        self.onehot_bins = onehot_bins

    def _log(self, x: np.ndarray) -> np.ndarray:
        return np.log(1.0 + np.where(x < 0, 0.0, x)) if self.log_ else x

    def fit(self, data: Mapping[str, np.ndarray], y: Any = None) -> "NumericBlock":
        x = _source(self.columns, data)
        missing = np.isnan(x)
        present = x[~missing]
        if self.log == "auto":
            import pandas as pd

            skew = float(pd.Series(present).skew()) if present.size > 2 else 0.0
            self.log_ = bool(present.size and present.min() >= 0 and skew > 1.0)
        else:
            self.log_ = bool(self.log)
        v = self._log(present)
        self.fill_ = self._fill_value(v)
        self.indicator_ = bool(self.indicator and missing.any())
        self.edges_ = None
        self.scaler_ = None
        if self.bins:
            qs = np.quantile(v, np.linspace(0, 1, int(self.bins) + 1)[1:-1]) if v.size else np.array([])
            # float32-representable edges: the graph compares the same numbers (ARCHITECTURE.md).
            self.edges_ = np.unique(qs.astype(np.float32)).astype(np.float64)
        elif self.scaling != "none" and v.size:
            import sklearn.preprocessing as skp

            self.scaler_ = getattr(skp, _SCALERS[self.scaling].rsplit(".", 1)[1])().fit(v.reshape(-1, 1))
        name = source_name(self.columns)
        if self.edges_ is not None and self.onehot_bins:
            names = [f"{name}__bin{i}" for i in range(len(self.edges_) + 1)]
        else:
            names = [f"{name}__bin" if self.edges_ is not None else name]
        self.names_out_ = names + ([f"{name}__missing"] if self.indicator_ else [])
        return self

    def _fill_value(self, v: np.ndarray) -> float | None:
        if self.impute == "none":
            return None
        if self.impute == "constant" or v.size == 0:
            return 0.0
        if self.impute == "mean":
            return float(np.mean(v))
        if self.impute == "most_frequent":
            values, counts = np.unique(v, return_counts=True)
            return float(values[np.argmax(counts)])
        return float(np.median(v))

    def fit_transform(self, data: Mapping[str, np.ndarray], y: Any = None) -> np.ndarray:
        return self.fit(data, y).transform(data)

    def transform(self, data: Mapping[str, np.ndarray]) -> np.ndarray:
        x = _source(self.columns, data)
        missing = np.isnan(x)
        v = self._log(x)
        if self.fill_ is not None:
            v = np.where(missing, self.fill_, v)
        if self.edges_ is not None:
            idx = (v[:, None] >= self.edges_[None, :]).sum(axis=1).astype(np.float64)
            if self.onehot_bins:
                cols = (idx[:, None] == np.arange(len(self.edges_) + 1)[None, :]).astype(np.float64)
            else:
                cols = np.where(np.isnan(v), np.nan, idx)[:, None]
        elif self.scaler_ is not None:
            cols = self.scaler_.transform(v.reshape(-1, 1))
        else:
            cols = v[:, None]
        if self.indicator_:
            cols = np.hstack([cols, missing[:, None].astype(np.float64)])
        return cols

    def to_onnx(self, g: Any, inputs: Mapping[str, str]) -> str:
        x = _source_onnx(g, self.columns, inputs, strings=False)
        v = x
        if self.log_:
            zero = g.const(np.float64(0.0))
            v = g.op("Log", [g.op("Add", [g.const(np.float64(1.0)), g.where(g.op("Less", [x, zero]), zero, x)])])
        if self.fill_ is not None:
            v = g.where(g.op("IsNaN", [x]), g.const(np.float64(self.fill_), "fill"), v)
        if self.edges_ is not None:
            hits = g.cast(g.op("GreaterOrEqual", [v, g.const(self.edges_.reshape(1, -1), "edges")]), "double")
            idx = g.op("ReduceSum", [hits, g.const(np.array([1], np.int64))], keepdims=1)
            if self.onehot_bins:
                out = g.cast(g.op("Equal", [idx, g.const(np.arange(len(self.edges_) + 1, dtype=np.float64).reshape(1, -1))]), "double")
            else:
                out = g.where(g.op("IsNaN", [v]), v, idx)
        elif self.scaler_ is not None:
            out = _scale_onnx(g, self.scaler_, v)
        else:
            out = v
        if self.indicator_:
            out = g.concat([out, g.is_missing(x)])
        return out


def _scale_onnx(g: Any, scaler: Any, v: str) -> str:
    # The same two operations, in the same order, as each scaler's transform.
    if hasattr(scaler, "min_"):  # MinMaxScaler: x * scale_ + min_
        return g.op("Add", [g.op("Mul", [v, g.const(np.float64(scaler.scale_[0]))]), g.const(np.float64(scaler.min_[0]))])
    center = scaler.mean_[0] if hasattr(scaler, "mean_") else scaler.center_[0]
    return g.op("Div", [g.op("Sub", [v, g.const(np.float64(center))]), g.const(np.float64(scaler.scale_[0]))])


class CategoricalBlock:
    """Strings: one-hot (infrequent bucketed), ordinal, target encoding (cross-fitted) or hashing.

    Unseen categories never fail: one-hot puts them in the infrequent column (zeros when train had
    no infrequent category), ordinal gives -1, target encoding the train target mean, hashing its
    bucket. The missing value ``""`` is a category of its own.

    Parameters
    ----------
    columns : tuple of str
        One column, or two joined into one category (a cross).
    encoding : {"onehot", "ordinal", "target", "hashing"}
    max_categories : int
        One-hot/ordinal keep at most this many categories (the rest are infrequent).
    min_frequency : int
        Categories seen fewer times in train are infrequent.
    n_hash : int
        Hashing buckets.
    target_type : {"binary", "multiclass", "continuous"}
        For target encoding.
    seed : int
        Target encoding's cross-fitting folds.
    """

    def __init__(self, columns: Sequence[str], encoding: str = "onehot", max_categories: int = 20, min_frequency: int = 5,
                 n_hash: int = 32, target_type: str | None = None, seed: int = 0):
        self.columns = tuple(columns)
        self.encoding = encoding
        self.max_categories = max_categories
        self.min_frequency = min_frequency
        self.n_hash = n_hash
        self.target_type = target_type
        self.seed = seed

    def _encoder(self) -> Any:
        import sklearn.preprocessing as skp

        if self.encoding == "onehot":
            return skp.OneHotEncoder(handle_unknown="infrequent_if_exist", min_frequency=self.min_frequency,
                                     max_categories=self.max_categories, sparse_output=False, dtype=np.float64)
        if self.encoding == "ordinal":
            return skp.OrdinalEncoder(handle_unknown="use_encoded_value", unknown_value=-1, min_frequency=self.min_frequency,
                                      max_categories=self.max_categories, dtype=np.float64)
        if self.encoding == "target":
            from sklearn.model_selection import KFold, StratifiedKFold

            folds = (KFold if self.target_type == "continuous" else StratifiedKFold)(5, shuffle=True, random_state=self.seed)
            return skp.TargetEncoder(target_type=self.target_type or "auto", cv=folds)
        raise ValueError(f"unknown encoding {self.encoding!r}")

    def _fit(self, x: np.ndarray, y: Any, cross_fit: bool) -> np.ndarray | None:
        name = source_name(self.columns)
        self.encoder_ = None
        if self.encoding == "hashing":
            self.names_out_ = [f"{name}__hash{i}" for i in range(self.n_hash)]
            return None
        if self.encoding == "target" and y is None:
            raise ValueError("target encoding needs the target")
        self.encoder_ = self._encoder()
        X = _compact(x).reshape(-1, 1)
        out = None
        if self.encoding == "target":
            out = self.encoder_.fit_transform(X, y) if cross_fit else None
            if not cross_fit:
                self.encoder_.fit(X, y)
        else:
            self.encoder_.fit(X)
        self.keys_ = np.asarray(self.encoder_.categories_[0], dtype=object)
        self.table_ = self.encoder_.transform(self.keys_.reshape(-1, 1))
        self.default_ = self.encoder_.transform(np.array([[_UNSEEN]], dtype=object))[0]
        self.names_out_ = self._names(name)
        return out

    def _names(self, name: str) -> list[str]:
        if self.encoding == "ordinal":
            return [name]
        if self.encoding == "target":
            classes = getattr(self.encoder_, "classes_", None)
            if self.table_.shape[1] == 1 or classes is None:
                return [f"{name}__te"]
            return [f"{name}__te_{c}" for c in classes]
        infrequent = self.encoder_.infrequent_categories_[0]
        kept = [c for c in self.keys_ if infrequent is None or c not in set(infrequent)]
        return [f"{name}={c}" for c in kept] + ([f"{name}=__other__"] if infrequent is not None and len(infrequent) else [])

    def fit(self, data: Mapping[str, np.ndarray], y: Any = None) -> "CategoricalBlock":
        self._fit(_source(self.columns, data), y, cross_fit=False)
        return self

    def fit_transform(self, data: Mapping[str, np.ndarray], y: Any = None) -> np.ndarray:
        """Fit, and return the train features; target encoding returns its cross-fitted values."""
        x = _source(self.columns, data)
        out = self._fit(x, y, cross_fit=True)
        return np.asarray(out, dtype=np.float64) if out is not None else self.transform(data)

    def _hash(self, x: np.ndarray) -> np.ndarray:
        from sklearn.utils import murmurhash3_32

        import pandas as pd

        inverse, uniques = pd.factorize(x.astype(str))
        codes = np.array([murmurhash3_32(u, seed=0, positive=True) % self.n_hash for u in uniques], dtype=np.int64)
        return codes[inverse]

    def transform(self, data: Mapping[str, np.ndarray]) -> np.ndarray:
        x = _source(self.columns, data)
        if self.encoding == "hashing":
            return (self._hash(x)[:, None] == np.arange(self.n_hash)[None, :]).astype(np.float64)
        import pandas as pd

        # The fitted lookup table (what the ONNX graph uses) with a hash index: the same values as
        # encoder_.transform, without its Python loop per row.
        index = pd.Index(self.keys_, dtype=object).get_indexer(x)
        out = np.asarray(self.table_, dtype=np.float64)[index]
        out[index < 0] = np.asarray(self.default_, dtype=np.float64)
        return out

    def to_onnx(self, g: Any, inputs: Mapping[str, str]) -> str:
        x = _source_onnx(g, self.columns, inputs, strings=True)
        if self.encoding == "hashing":
            h = g.cast(g.op("MurmurHash3", [x], "hash", domain="com.microsoft", positive=1, seed=0), "int64")
            return g.one_hot(g.op("Mod", [h, g.const(np.array(self.n_hash, dtype=np.int64))]), self.n_hash)
        return g.lookup(x, self.keys_, self.table_, self.default_)


def _compact(x: np.ndarray) -> np.ndarray:
    """Canonical strings as a fixed-width NumPy array, when that copy stays small.

    scikit-learn's encoders count and encode object arrays with a Python loop per row (a
    million rows took seconds per column); on a fixed-width array they sort and search in C.
    """
    import pandas as pd

    uniques = pd.unique(x)
    width = max((len(u) for u in uniques), default=1) or 1
    # NumPy drops trailing NULs from fixed-width strings: keep such values exact.
    if x.size * width * 4 > COMPACT_BYTES or any(u.endswith("\x00") for u in uniques):
        return x
    return x.astype(f"<U{width}")


# Calendar parts from int64 epoch seconds with integer arithmetic only (H. Hinnant's
# civil_from_days), so numpy and the ONNX graph compute identical values.
PARTS = ("year", "month", "day", "dayofweek", "hour", "month_sin", "month_cos", "dow_sin", "dow_cos",
         "hour_sin", "hour_cos", "days")
CYCLICAL = {"month_sin", "month_cos", "dow_sin", "dow_cos", "hour_sin", "hour_cos"}


def _calendar(s: np.ndarray) -> dict[str, np.ndarray]:
    missing = s == INT64_MIN
    s = np.where(missing, 0, s).astype(np.int64)
    days = np.floor_divide(s, 86400)
    sod = s - days * 86400
    z = days + 719468
    era = np.floor_divide(z, 146097)
    doe = z - era * 146097
    yoe = (doe - doe // 1460 + doe // 36524 - doe // 146096) // 365
    doy = doe - (365 * yoe + yoe // 4 - yoe // 100)
    mp = (5 * doy + 2) // 153
    day = doy - (153 * mp + 2) // 5 + 1
    month = mp + 3 - 12 * (mp >= 10).astype(np.int64)
    year = yoe + era * 400 + (month <= 2).astype(np.int64)
    dow = np.mod(days + 3, 7)
    hour = sod // 3600
    parts = {"year": year, "month": month, "day": day, "dayofweek": dow, "hour": hour}
    out = {k: v.astype(np.float64) for k, v in parts.items()}
    for key, value, period, offset in (("month", month, 12.0, 1), ("dow", dow, 7.0, 0), ("hour", hour, 24.0, 0)):
        angle = (value - offset).astype(np.float64) * (2.0 * np.pi / period)
        out[f"{key}_sin"], out[f"{key}_cos"] = np.sin(angle), np.cos(angle)
    out["days"] = s.astype(np.float64) / 86400.0
    return {k: np.where(missing, np.nan, v) for k, v in out.items()}


def _calendar_onnx(g: Any, x: str, parts: Sequence[str]) -> dict[str, str]:
    def c(v: int) -> str:
        return g.const(np.array(v, dtype=np.int64))

    def op(kind: str, a: str, b: str) -> str:
        return g.op(kind, [a, b])

    def floordiv(a: str, b: int) -> str:
        return op("Div", op("Sub", a, op("Mod", a, c(b))), c(b))  # Mod(fmod=0) floors, like Python

    missing = op("Equal", x, c(INT64_MIN))
    s = g.where(missing, c(0), x)
    days = floordiv(s, 86400)
    sod = op("Sub", s, op("Mul", days, c(86400)))
    z = op("Add", days, c(719468))
    era = floordiv(z, 146097)
    doe = op("Sub", z, op("Mul", era, c(146097)))
    yoe = op("Div", op("Sub", op("Add", op("Sub", doe, op("Div", doe, c(1460))), op("Div", doe, c(36524))),
                       op("Div", doe, c(146096))), c(365))
    doy = op("Sub", doe, op("Sub", op("Add", op("Mul", c(365), yoe), op("Div", yoe, c(4))), op("Div", yoe, c(100))))
    mp = op("Div", op("Add", op("Mul", c(5), doy), c(2)), c(153))
    day = op("Add", op("Sub", doy, op("Div", op("Add", op("Mul", c(153), mp), c(2)), c(5))), c(1))
    month = op("Sub", op("Add", mp, c(3)), op("Mul", c(12), g.cast(op("GreaterOrEqual", mp, c(10)), "int64")))
    year = op("Add", op("Add", yoe, op("Mul", era, c(400))), g.cast(op("LessOrEqual", month, c(2)), "int64"))
    dow = op("Mod", op("Add", days, c(3)), c(7))
    hour = op("Div", sod, c(3600))
    ints = {"year": year, "month": month, "day": day, "dayofweek": dow, "hour": hour}
    out = {}
    nan = g.const(np.float64(np.nan), "nan")
    for part in parts:
        if part in ints:
            value = g.cast(ints[part], "double")
        elif part == "days":
            value = op("Div", g.cast(s, "double"), g.const(np.float64(86400.0)))
        else:
            key, fn = part.split("_")
            base, period, offset = {"month": (month, 12.0, 1), "dow": (dow, 7.0, 0), "hour": (hour, 24.0, 0)}[key]
            # A table of numpy's own sin/cos values: onnxruntime's Sin/Cos differ in the last bits
            # (sin(pi) is -0.0 there, 1.2e-16 in numpy), enough to flip a tree split at zero.
            angles = np.arange(int(period)).astype(np.float64) * (2.0 * np.pi / period)
            value = g.op("Gather", [g.const({"sin": np.sin, "cos": np.cos}[fn](angles), "cyc"), op("Sub", base, c(offset))])
        out[part] = g.where(missing, nan, value)
    return out


class DatetimeBlock:
    """Timestamps: calendar parts (year, month, day, day of week, hour, cyclical sin/cos, days
    since epoch), each treated as a number (imputed and scaled per ``numeric``), plus one
    missing indicator. Parts constant in train (e.g. hour of plain dates) are left out.

    Parameters
    ----------
    columns : tuple of str
        One datetime column.
    numeric : dict
        Parameters of the :class:`NumericBlock` each part goes through (``log`` and
        ``indicator`` are off; cyclical parts are never scaled).
    indicator : bool
    """

    def __init__(self, columns: Sequence[str], numeric: Mapping[str, Any] | None = None, indicator: bool = True):
        self.columns = tuple(columns)
        self.numeric = dict(numeric or {})
        self.indicator = indicator

    def fit(self, data: Mapping[str, np.ndarray], y: Any = None) -> "DatetimeBlock":
        s = data[self.columns[0]]
        cal = _calendar(s)
        name = self.columns[0]
        self.parts_, self.blocks_ = [], []
        for part in PARTS:
            values = cal[part]
            present = values[~np.isnan(values)]
            if present.size == 0 or np.all(present == present[0]):
                continue
            params = {**self.numeric, "log": False, "indicator": False, "bins": None}
            if part in CYCLICAL:
                params["scaling"] = "none"
            key = f"{name}__{part}"
            self.parts_.append(part)
            self.blocks_.append(NumericBlock((key,), **params).fit({key: values}))
        self.indicator_ = bool(self.indicator and (s == INT64_MIN).any())
        self.names_out_ = [n for b in self.blocks_ for n in b.names_out_] + ([f"{name}__missing"] if self.indicator_ else [])
        return self

    def fit_transform(self, data: Mapping[str, np.ndarray], y: Any = None) -> np.ndarray:
        return self.fit(data, y).transform(data)

    def transform(self, data: Mapping[str, np.ndarray]) -> np.ndarray:
        s = data[self.columns[0]]
        cal = _calendar(s)
        name = self.columns[0]
        cols = [b.transform({f"{name}__{p}": cal[p]}) for p, b in zip(self.parts_, self.blocks_)]
        if self.indicator_:
            cols.append((s == INT64_MIN).astype(np.float64)[:, None])
        return np.hstack(cols) if cols else np.zeros((len(s), 0))

    def to_onnx(self, g: Any, inputs: Mapping[str, str]) -> str:
        x = inputs[self.columns[0]]
        name = self.columns[0]
        cal = _calendar_onnx(g, x, self.parts_)
        parts = [b.to_onnx(g, {f"{name}__{p}": cal[p]}) for p, b in zip(self.parts_, self.blocks_)]
        if self.indicator_:
            parts.append(g.cast(g.op("Equal", [x, g.const(np.array(INT64_MIN, dtype=np.int64))]), "double"))
        return g.concat(parts)


BLOCK_TYPES = (NumericBlock, CategoricalBlock, DatetimeBlock)
