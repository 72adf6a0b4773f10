"""The data a retrain sees: the window of new rows, checked, and cut by time into three parts.

Rows are read from ``--data``, ordered by ``--time-col`` (or kept in file order without one),
limited to the newest ``--data-window`` and to rows with a target value, then cut into
``train`` (oldest), ``valid`` (early stopping and calibration: the newest rows before the
held-out part) and ``holdout`` (the newest rows, on which champion and challenger are judged).
The holdout starts at a time boundary, so no row of its first timestamp is trained on.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, Sequence

from mlsys_cli.errors import InputError, UsageError

DEFAULT_RATIOS = (0.7, 0.1, 0.2)
# The fewest labelled rows of each part a retrain accepts (documented in commands/retrain.md).
MIN_ROWS = {"train": 50, "valid": 10, "holdout": 20}


@dataclass(frozen=True)
class Columns:
    """Which columns the window keeps and checks.

    Parameters
    ----------
    target : str
    time_col : str, optional
    schema : list of dict, optional
        The champion's input schema (``name``, ``type``): the new data must have these columns
        with these types; other columns are ignored, so the challenger takes the same inputs.
    extra : sequence of str
        Columns kept, when present, besides the schema and target (a sample-weight column, the
        featurizer's id and dropped columns).
    """

    target: str
    time_col: str | None = None
    schema: Sequence[dict[str, Any]] | None = None
    extra: Sequence[str] = ()


@dataclass(frozen=True)
class Window:
    """The labelled rows of the window and its three parts (pandas frames, oldest first), and
    the task: the recipe's or the champion's, else guessed from the target as ``train`` does."""

    frame: Any
    train: Any
    valid: Any
    holdout: Any
    files: list[dict[str, Any]]
    info: dict[str, Any] = field(default_factory=dict)
    task: str | None = None

    def newer(self, since: Any) -> Any:
        """The rows with a time after ``since`` (all rows without a time column or ``since``)."""
        import pandas as pd

        if since is None or self.info.get("time_col") is None:
            return self.frame
        return self.frame[(_times(self.frame, self.info["time_col"]) > pd.Timestamp(since)).to_numpy()]


def _shown(label: Any) -> str:
    """A label as the user wrote it (``True``, ``'yes'``), not numpy's repr (``np.True_``)."""
    return repr(label.item() if hasattr(label, "item") else label)


def parse_ratios(text: str | Sequence[float]) -> tuple[float, float, float]:
    """``0.7,0.1,0.2`` -> train, valid, holdout shares (summing to 1; valid may be 0)."""
    try:
        values = [float(v) for v in (text.split(",") if isinstance(text, str) else text)]
    except ValueError:
        values = []
    # NaN compares false both ways: without isfinite "nan,0.1,0.2" passed every test below.
    if len(values) != 3 or not all(map(math.isfinite, values)) or any(v < 0 for v in values) or values[0] <= 0 or values[2] <= 0 or abs(sum(values) - 1) > 1e-6:
        raise UsageError(f"invalid --ratios {text!r}", "three shares train,valid,holdout summing to 1, e.g. 0.7,0.1,0.2")
    return values[0], values[1], values[2]


def load_window(data: Sequence[str], columns: Columns, *, span: timedelta | None = None,
                ratios: tuple[float, float, float] = DEFAULT_RATIOS, task: str | None = None) -> Window:
    """Read, check and cut the window (see the module docstring).

    Raises
    ------
    InputError
        Unreadable data, a missing or retyped column, too few rows, or one class in a part.
    """
    from mlsys_cli.data.io import input_record, read_frame, resolve_inputs
    from mlsys_cli.features.schema import missing_target

    files = resolve_inputs(list(data))
    df = read_frame([str(f) for f in files])
    source = ", ".join(map(str, data))
    keep = _check_columns(df, columns, source)
    info: dict[str, Any] = {"source": list(map(str, data)), "time_col": columns.time_col, "rows_read": int(len(df)),
                            "ignored_columns": [c for c in read_columns(df) if c not in keep]}
    df = df[keep]
    if columns.time_col:
        df = _by_time(df, columns.time_col, span, source)
    labelled = ~missing_target(df[columns.target])
    info["unlabelled_rows"] = int((~labelled).sum())
    df = df.loc[labelled].reset_index(drop=True)
    train, valid, holdout = _cut(df, columns.time_col, ratios, source)
    parts = {"train": train, "valid": valid, "holdout": holdout}
    if len(df):  # a first champion from train's flags: train's own guess; else the champion's task, checked
        from mlsys_cli.models.train import infer_task

        values = df[columns.target].drop_duplicates()
        if task != "regression" and len(values) < 2:
            raise InputError(f"{source}: the window holds one class only ({_shown(values.iloc[0])})",
                             "a classifier needs both classes to learn and to be judged; give a longer window")
        try:
            task = infer_task(df[columns.target], task)[0]
        except InputError as exc:  # the target changed kind since the champion (the first champion's guess cannot fail here)
            raise InputError(f"{source}: {columns.target!r} no longer fits the champion's {task} task ({exc.message})",
                             "a changed target needs a new model: retrain --recipe FILE into a new registry") from None
    _check_parts(parts, columns.target, task, source)
    info.update(rows=int(len(df)), **_span(df, columns.time_col),
                parts={name: {"rows": int(len(p)), **_span(p, columns.time_col)} for name, p in parts.items()})
    return Window(df, train, valid, holdout, [input_record(f, with_parent=False) for f in files], info, task)


def read_columns(df: Any) -> list[str]:
    return [str(c) for c in df.columns]


def _check_columns(df: Any, columns: Columns, source: str) -> list[str]:
    """The columns to keep; refuse (exit 3) a missing target or time column, or a changed schema
    (a champion's input absent, without a single value, or of another type)."""
    from mlsys_cli.features.schema import infer_schema

    names = read_columns(df)
    for what, col in (("target", columns.target), ("time", columns.time_col)):
        if col and col not in names:
            raise InputError(f"{source}: no {what} column {col!r}", f"columns are: {', '.join(names[:12])}")
    if columns.schema is None:
        return names
    wanted = [c["name"] for c in columns.schema]
    missing = [c for c in wanted if c not in names]
    present = [c for c in columns.schema if c["name"] in names]
    found = {c["name"]: c["type"] for c in infer_schema(df[[c["name"] for c in present]])}
    # A column the champion reads that holds no value at all is a lost column in disguise (an extract
    # that writes the vanished field as nulls): trained on, the challenger would leave it out and be
    # promoted over a champion judged without its input, and every later window would ignore it.
    empty = [c["name"] for c in present if df[c["name"]].isna().all()]
    changed = [f"{c['name']} ({c['type']} -> {found[c['name']]})" for c in present
               if found[c["name"]] != c["type"] and c["name"] not in empty]
    if missing or empty or changed:
        parts = ([f"missing column(s) {', '.join(missing)}"] if missing else []) + \
                ([f"entirely missing column(s) {', '.join(empty)}"] if empty else []) + \
                ([f"changed type(s) {', '.join(changed)}"] if changed else [])
        raise InputError(f"{source}: the schema differs from the champion's: {'; '.join(parts)}",
                         "the challenger must take the champion's inputs; fix the extract, or start a new "
                         "registry for the new schema")
    extra = [c for c in (columns.target, columns.time_col, *columns.extra) if c and c not in wanted and c in names]
    return wanted + list(dict.fromkeys(extra))


def _by_time(df: Any, time_col: str, span: timedelta | None, source: str) -> Any:
    """Rows in time order (stable), limited to the newest ``span``."""
    import pandas as pd

    try:
        with warnings.catch_warnings():  # a column of text that is not times: refused just below
            warnings.simplefilter("ignore", UserWarning)
            times = pd.to_datetime(df[time_col], utc=True)
    except (TypeError, ValueError) as exc:
        raise InputError(f"{source}: time column {time_col!r} does not hold times ({exc})") from None
    if times.isna().any():
        raise InputError(f"{source}: time column {time_col!r} has {int(times.isna().sum())} missing value(s)",
                         "every row needs a time to be placed in the window")
    order = times.argsort(kind="stable").to_numpy()
    df = df.iloc[order].reset_index(drop=True)
    times = times.iloc[order].reset_index(drop=True)
    if span is not None and len(df) and span <= times.iloc[-1] - times.iloc[0]:
        # Only a span shorter than the data is subtracted: a long one would overflow the
        # nanosecond times of a datetime64[ns] column, and keeps every row anyway.
        keep = (times > times.iloc[-1] - span).to_numpy()
        df = df.loc[keep].reset_index(drop=True)
    return df


def _times(df: Any, time_col: str) -> Any:
    import pandas as pd

    return pd.to_datetime(df[time_col], utc=True).reset_index(drop=True)


def _cut(df: Any, time_col: str | None, ratios: tuple[float, float, float], source: str) -> tuple[Any, Any, Any]:
    """Train, valid, holdout; the holdout begins at a time boundary when there is a time column."""
    n = len(df)
    start = int(round(n * (1 - ratios[2])))
    if time_col and 0 < start < n:
        times = _times(df, time_col)
        first = times.iloc[start]
        start = int((times < first).sum())  # every row of the boundary's timestamp is held out
        if start == 0:
            raise InputError(f"{source}: every row of the window has the same time ({first}); "
                             "nothing is older than the held-out part", "give more history (a longer --data-window)")
    start = min(max(start, 0), n)
    rest = df.iloc[:start]
    cut = int(round(start * (1 - ratios[1] / (ratios[0] + ratios[1])))) if ratios[1] > 0 else start
    return rest.iloc[:cut].reset_index(drop=True), rest.iloc[cut:].reset_index(drop=True), \
        df.iloc[start:].reset_index(drop=True)


def _check_parts(parts: dict[str, Any], target: str, task: str | None, source: str) -> None:
    for name, part in parts.items():
        need = MIN_ROWS[name] if name != "valid" or len(part) else 0
        if len(part) < need:
            raise InputError(f"{source}: the window's {name} part has {len(part)} labelled row(s); retrain needs at "
                             f"least {need}", "give more data, a longer --data-window, or other --ratios")
        if task in ("binary", "multiclass") and name != "valid":
            classes = part[target].drop_duplicates().tolist()
            if len(classes) < 2:
                raise InputError(f"{source}: the window's {name} part holds one class only ({_shown(classes[0])})",
                                 "a classifier needs both classes to learn and to be judged; give a longer window")


def _span(df: Any, time_col: str | None) -> dict[str, Any]:
    if not time_col or len(df) == 0:
        return {}
    times = _times(df, time_col)
    return {"start": times.iloc[0].isoformat(), "end": times.iloc[-1].isoformat()}
