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

from mlsys_cli.features import encoders
from mlsys_cli.features.schema import INT64_MIN

CROSS_SEP = "\x1f"
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
        self.scaling_ = None
        if self.bins:
            qs = np.quantile(v, np.linspace(0, 1, int(self.bins) + 1)[1:-1]) if v.size else np.array([])
            # float32-representable edges: the graph compares the same numbers (ARCHITECTURE.md).
            self.edges_ = np.unique(qs.astype(np.float32)).astype(np.float64)
        elif self.scaling != "none" and v.size:
            import sklearn.preprocessing as skp

            scaler = getattr(skp, _SCALERS[self.scaling].rsplit(".", 1)[1])().fit(v.reshape(-1, 1))
            # The fitted constants only: transform (and the graph) apply the scaler's own two operations.
            if hasattr(scaler, "min_"):
                self.scaling_ = {"op": "minmax", "scale": float(scaler.scale_[0]), "min": float(scaler.min_[0])}
            else:
                center = scaler.mean_[0] if hasattr(scaler, "mean_") else scaler.center_[0]
                self.scaling_ = {"op": "center", "center": float(center), "scale": float(scaler.scale_[0])}
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
        elif self.scaling_ is not None:
            cols = _scale(self.scaling_, v)[:, None]
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
        elif self.scaling_ is not None:
            out = _scale_onnx(g, self.scaling_, v)
        else:
            out = v
        if self.indicator_:
            out = g.concat([out, g.is_missing(x)])
        return out


def _scale(scaling: Mapping[str, Any], v: np.ndarray) -> np.ndarray:
    # The same two operations, in the same order, as the sklearn scaler's transform.
    if scaling["op"] == "minmax":  # MinMaxScaler: x * scale_ + min_
        return v * scaling["scale"] + scaling["min"]
    return (v - scaling["center"]) / scaling["scale"]  # StandardScaler / RobustScaler


def _scale_onnx(g: Any, scaling: Mapping[str, Any], v: str) -> str:
    if scaling["op"] == "minmax":
        return g.op("Add", [g.op("Mul", [v, g.const(np.float64(scaling["scale"]))]), g.const(np.float64(scaling["min"]))])
    return g.op("Div", [g.op("Sub", [v, g.const(np.float64(scaling["center"]))]), g.const(np.float64(scaling["scale"]))])


class CategoricalBlock:
    """Strings: one-hot (infrequent bucketed), ordinal, target encoding (cross-fitted) or hashing.

    Unseen categories never fail: one-hot puts them in the infrequent column (zeros when train had
    no infrequent category), ordinal gives -1, target encoding the train target mean, hashing its
    bucket. The missing value ``""`` is a category of its own. The encodings are scikit-learn's
    (``OneHotEncoder``, ``OrdinalEncoder``, ``TargetEncoder`` with ``smooth="auto"``), computed from
    integer codes in :mod:`mlsys_cli.features.encoders`.

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
        Seed of the cross-fitting folds when the target comes as plain values (a
        :class:`~mlsys_cli.features.encoders.Target` brings its own folds).
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

    def _fit(self, x: np.ndarray, y: Any, cross_fit: bool) -> np.ndarray | None:
        name = source_name(self.columns)
        if self.encoding == "hashing":
            self.names_out_ = [f"{name}__hash{i}" for i in range(self.n_hash)]
            return None
        if self.encoding not in ("onehot", "ordinal", "target"):
            raise ValueError(f"unknown encoding {self.encoding!r}")
        keys, codes = encoders.factorize(x)
        self.keys_ = keys
        if self.encoding == "target":
            if y is None:
                raise ValueError("target encoding needs the target")
            target = y if isinstance(y, encoders.Target) else as_target(y, self.target_type, self.seed)
            self.table_, self.default_ = encoders.target_table(codes, len(keys), target.columns())
            classes = target.classes if target.kind == "multiclass" else None
            self.names_out_ = [f"{name}__te_{c}" for c in classes] if classes else [f"{name}__te"]
            return encoders.target_cross_fit(codes, len(keys), target) if cross_fit else None
        infrequent = encoders.infrequent_mask(np.bincount(codes, minlength=len(keys)), self.min_frequency, self.max_categories)
        if self.encoding == "ordinal":
            self.table_, self.default_ = encoders.ordinal_table(infrequent)
            self.names_out_ = [name]
        else:
            self.table_, self.default_ = encoders.onehot_table(infrequent)
            self.names_out_ = ([f"{name}={c}" for c in keys[~infrequent]]
                               + ([f"{name}=__other__"] if infrequent.any() else []))
        return None

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
        # The fitted lookup table (what the ONNX graph uses), indexed by hashing each distinct value once.
        index = encoders.lookup(self.keys_, x)
        out = np.asarray(self.table_, dtype=np.float64)[index]
        out[index < 0] = np.asarray(self.default_, dtype=np.float64)
        return out

    def to_onnx(self, g: Any, inputs: Mapping[str, str]) -> str:
        x = _source_onnx(g, self.columns, inputs, strings=True)
        if self.encoding == "hashing":
            h = g.cast(g.op("MurmurHash3", [x], "hash", domain="com.microsoft", positive=1, seed=0), "int64")
            return g.one_hot(g.op("Mod", [h, g.const(np.array(self.n_hash, dtype=np.int64))]), self.n_hash)
        return g.lookup(x, self.keys_, self.table_, self.default_)


def as_target(y: Any, target_type: str | None = None, seed: int = 0) -> "encoders.Target":
    """A :class:`~mlsys_cli.features.encoders.Target` from plain labels (classes sorted as strings) or values."""
    y = np.asarray(y)
    if target_type == "continuous" or (target_type is None and y.dtype.kind == "f"):
        return encoders.Target(y.astype(np.float64), "continuous", seed=seed)
    target = encoders.Target.from_labels(y, target_type or "multiclass", seed)
    if target_type is None and len(target.classes or []) <= 2:
        target.kind = "binary"
    return target


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


def _calendar_onnx(g: Any, column: str) -> tuple[str, dict[tuple[str, str], int]]:
    """Every calendar part of every datetime input, as one tensor [N, len(PARTS) * d].

    Computed once per graph for all its datetime columns together (``g.datetimes``, set by
    ``features.onnx.build``; just ``column`` otherwise): onnxruntime's cost for a row or a few
    is per node, so one chain of integer arithmetic over [N, d] beats d chains of [N, 1] (this
    arithmetic is ~30 nodes). The layout is part-major: ``(column, part) -> index``. Rows whose
    value is missing hold the parts of epoch 0; the block masks them.
    """
    columns = tuple(g.datetimes) if column in getattr(g, "datetimes", ()) else (column,)
    key = ("calendar", columns)
    if key in g.shared:
        return g.shared[key]

    def c(v: Any) -> str:
        return g.const(np.asarray(v, dtype=np.int64))

    def op(kind: str, a: str, b: str) -> str:
        return g.op(kind, [a, b])

    def floordiv(a: str, b: int) -> str:
        return op("Div", op("Sub", a, op("Mod", a, c(b))), c(b))  # Mod(fmod=0) floors, like Python

    x = g.concat(list(columns))
    s = g.where(op("Equal", x, c(INT64_MIN)), c(0), x)
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
    ints = g.cast(g.concat([year, month, day, dow, hour]), "double")
    # Cyclical parts from one table of numpy's own sin/cos values: onnxruntime's Sin/Cos differ
    # in the last bits (sin(pi) is -0.0 there, 1.2e-16 in numpy), enough to flip a tree split at zero.
    bases = {"month": (month, 12, 1), "dow": (dow, 7, 0), "hour": (hour, 24, 0)}
    table, shifts, sources = [], [], []
    for part in PARTS:
        if part in CYCLICAL:
            name, fn = part.split("_")
            base, period, offset = bases[name]
            angles = np.arange(period).astype(np.float64) * (2.0 * np.pi / period)
            shifts += [len(table) - offset] * len(columns)
            table += list({"sin": np.sin, "cos": np.cos}[fn](angles))
            sources.append(base)
    index = op("Add", g.concat(sources), c(np.array(shifts).reshape(1, -1)))
    cyclical = g.op("Gather", [g.const(np.array(table, dtype=np.float64), "cyc"), index])
    seconds = op("Div", g.cast(s, "double"), g.const(np.float64(86400.0)))
    matrix = g.concat([ints, cyclical, seconds])  # PARTS order: the integer parts, the cyclical, days
    layout = {(col, part): p * len(columns) + j for p, part in enumerate(PARTS) for j, col in enumerate(columns)}
    g.shared[key] = (matrix, layout)
    return g.shared[key]


def _passes_through(block: "NumericBlock") -> bool:
    """A numeric block whose ONNX twin is its input unchanged (no node)."""
    return not (block.log_ or block.fill_ is not None or block.edges_ is not None or block.scaling_ is not None
                or block.indicator_)


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
        missing = g.op("Equal", [x, g.const(np.array(INT64_MIN, dtype=np.int64))])
        parts = []
        if self.parts_:
            matrix, layout = _calendar_onnx(g, x)
            index = np.array([layout[(x, p)] for p in self.parts_], dtype=np.int64)
            values = g.where(missing, g.const(np.float64(np.nan), "nan"), g.op("Gather", [matrix, g.const(index)], axis=1))
            if all(_passes_through(b) for b in self.blocks_):
                parts.append(values)
            else:
                columns = g.split(values, len(self.parts_))
                parts += [b.to_onnx(g, {f"{name}__{p}": v}) for p, b, v in zip(self.parts_, self.blocks_, columns)]
        if self.indicator_:
            parts.append(g.cast(missing, "double"))
        return g.concat(parts)


BLOCK_TYPES = (NumericBlock, CategoricalBlock, DatetimeBlock)


def state_of(value: Any) -> Any:
    """A fitted attribute as plain JSON (arrays as dtype, shape and values)."""
    if isinstance(value, np.ndarray):
        if value.dtype == object:
            return {"__array__": "str", "shape": list(value.shape), "values": [str(v) for v in value.ravel().tolist()]}
        return {"__array__": value.dtype.str, "shape": list(value.shape), "values": value.ravel().tolist()}
    if isinstance(value, tuple):
        return {"__tuple__": [state_of(v) for v in value]}
    if isinstance(value, dict):
        return {str(k): state_of(v) for k, v in value.items()}
    if isinstance(value, list):
        return [state_of(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    return value


def from_state(value: Any) -> Any:
    """Inverse of :func:`state_of`."""
    if isinstance(value, dict):
        if "__array__" in value:
            kind = value["__array__"]
            if kind == "str":
                return np.array(value["values"], dtype=object).reshape(value["shape"])
            dtype = np.dtype(kind)
            if dtype.kind not in "biuf":
                raise ValueError(f"unexpected array type {kind!r}")
            return np.array(value["values"], dtype=dtype).reshape(value["shape"])
        if "__tuple__" in value:
            return tuple(from_state(v) for v in value["__tuple__"])
        return {k: from_state(v) for k, v in value.items()}
    if isinstance(value, list):
        return [from_state(v) for v in value]
    return value


def block_state(block: Any) -> dict[str, Any]:
    """A fitted block as plain JSON: its type, parameters and fitted attributes."""
    import inspect

    params = {k: getattr(block, k) for k in inspect.signature(type(block).__init__).parameters if k != "self"}
    fitted = {k: ([block_state(b) for b in v] if k == "blocks_" else v)
              for k, v in vars(block).items() if k.endswith("_") and not k.startswith("_")}
    return {"type": type(block).__name__, "params": state_of(params), "fitted": state_of(fitted)}


def block_from_state(state: Mapping[str, Any]) -> Any:
    """The block :func:`block_state` describes; only this module's block types are built."""
    types = {cls.__name__: cls for cls in BLOCK_TYPES}
    if state.get("type") not in types:
        raise ValueError(f"unknown feature block type {state.get('type')!r}")
    block = types[state["type"]](**from_state(state["params"]))
    for key, value in state["fitted"].items():
        if not key.endswith("_") or key.startswith("_"):
            raise ValueError(f"unexpected fitted attribute {key!r}")
        setattr(block, key, [block_from_state(b) for b in value] if key == "blocks_" else from_state(value))
    return block
