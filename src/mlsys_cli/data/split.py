"""Split a table into train/valid/test parts, check the parts for leakage, balance train.

Everything runs in DuckDB over the input files, streaming: the table is never loaded into
pandas. Every split kind is the same algorithm over a different *key*: rows are ordered by the
key, and the parts are cut where the cumulative row count is closest to the requested ratios,
always between two distinct key values, so rows sharing a key never straddle two parts:

- ``random``: a seeded hash of the row's content (minus ``ignore`` columns), so rows that are
  duplicates of each other always land in the same part;
- ``stratified:COL``: the same hash, cut separately within each class of ``COL``;
- ``time:COL``: the time itself, so no row of the future is in train;
- ``group:COL``: a seeded hash of the group, so no group is in two parts.

Each part is written with ``COPY`` in the input's row order, so reruns give identical bytes.

Examples
--------
>>> from mlsys_cli.data.split import split_table
>>> result = split_table("data/all.parquet", "data/", by="time:snapshot_date")  # doctest: +SKIP
>>> [p["rows"] for p in result.to_dict()["parts"]]  # doctest: +SKIP
[16010, 3992, 3965]
"""

from __future__ import annotations

import contextlib
import math
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Sequence

from mlsys_cli.data import io
from mlsys_cli.errors import InputError, UsageError
from mlsys_cli.fsutil import atomic_path
from mlsys_cli.interrupts import cancel_with

KINDS = ("random", "stratified", "time", "group")
BALANCE = ("under", "over")
LEAK_HINTS = {
    "duplicates": "duplicates differ only in the columns to --ignore, or dedupe first (mlsys ingest --dedupe)",
    "group_overlap": "split by group:COL to keep each group in one part",
    "time_overlap": "split by time:COL to keep the future out of train",
}
PART_NAMES = {2: ("train", "test"), 3: ("train", "valid", "test")}
MAX_CLASSES = 100  # stratifying or balancing more values than this means the column is not a class
BINNED_CUT_ROWS = 100_000  # from here on cuts come from a histogram of the key (Splitter.binned_cuts)
BIN_BITS = 12  # 4096 bins: a few thousand keys to rank per cut on millions of rows
TIME_TYPES = ("DATE", "TIMESTAMP")
NUMERIC_TYPES = ("TINYINT", "SMALLINT", "INTEGER", "BIGINT", "HUGEINT", "UTINYINT", "USMALLINT", "UINTEGER",
                 "UBIGINT", "UHUGEINT", "FLOAT", "DOUBLE", "DECIMAL")


@dataclass(frozen=True)
class SplitResult:
    """What ``split_table`` did: the parts written, the leakage checks, the balancing of train.

    ``parts`` holds one record per part: ``name``, ``path``, ``rows``, ``ratio`` (achieved),
    ``requested`` (ratio), and when known ``time_min``/``time_max`` and ``classes``.
    """

    inputs: list[dict[str, Any]]
    output: str
    by: str
    column: str | None
    ratios: list[float]
    seed: int
    target: str | None
    rows: int
    parts: list[dict[str, Any]]
    checks: dict[str, dict[str, Any]]
    leakage: bool
    balance: dict[str, Any] | None = None
    warnings: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def parse_by(text: str) -> tuple[str, str | None]:
    """Parse ``random``, ``stratified:COL``, ``time:COL`` or ``group:COL``."""
    kind, sep, column = text.partition(":")
    kind = kind.strip().lower()
    if kind not in KINDS:
        raise UsageError(f"invalid --by {text!r}", "use random, stratified:COL, time:COL or group:COL")
    if kind == "random":
        if sep:
            raise UsageError(f"invalid --by {text!r}: random takes no column", "use --by random")
        return kind, None
    if not column.strip():
        raise UsageError(f"invalid --by {text!r}: {kind} needs a column", f"use --by {kind}:COL")
    return kind, column.strip()


def parse_ratios(text: str | Sequence[float]) -> list[float]:
    """Parse ``0.7,0.15,0.15`` (three parts) or ``0.8,0.2`` (two parts); they must sum to 1."""
    if isinstance(text, str):
        try:
            ratios = [float(x) for x in text.split(",")]
        except ValueError:
            raise UsageError(f"invalid --ratios {text!r}: not a list of numbers", "use e.g. --ratios 0.7,0.15,0.15") from None
    else:
        ratios = [float(x) for x in text]
    shown = ",".join(f"{r:g}" for r in ratios)
    if len(ratios) not in PART_NAMES:
        raise UsageError(f"invalid --ratios {shown}: give two (train,test) or three (train,valid,test) ratios")
    if any(not math.isfinite(r) or r <= 0 for r in ratios):
        raise UsageError(f"invalid --ratios {shown}: every ratio must be positive")
    if abs(sum(ratios) - 1.0) > 1e-6:
        raise UsageError(f"invalid --ratios {shown}: they sum to {sum(ratios):g}, not 1", "use e.g. --ratios 0.7,0.15,0.15")
    return ratios



def _literal(value: Any) -> str:
    if value is None:
        return "NULL"
    return "'" + str(value).replace("'", "''") + "'"


class _Splitter:
    """One split run over one DuckDB connection (kept private: ``split_table`` is the API)."""

    def __init__(self, paths: Any, ignore: Sequence[str]):
        import duckdb

        self.con = duckdb.connect()
        self.con.execute("SET TimeZone = 'UTC'")  # timestamps with time zones order the same everywhere
        self.con.execute("SET enable_progress_bar = false")  # progress is ours, on stderr, only on a TTY
        self.files = io.resolve_inputs([paths] if isinstance(paths, (str, os.PathLike)) else paths)
        relation = io.scan_table(self.files, con=self.con)
        _refuse_repeated_names(self.files)
        relation.create_view("src")
        self.types = dict(zip(relation.columns, (str(t) for t in relation.types)))
        self.ignore = list(ignore)
        for name in self.ignore:
            self.require(name, "--ignore")
        kept = [c for c in self.types if c not in self.ignore]
        if not kept:
            raise UsageError("--ignore leaves no column to compare rows by")
        self.content = ", ".join(io.quote_ident(c) for c in kept)

    def require(self, column: str, what: str) -> None:
        if column not in self.types:
            shown = ", ".join(list(self.types)[:12]) + (", ..." if len(self.types) > 12 else "")
            raise InputError(f"{what}: no column {column!r} in the input", f"columns: {shown}")

    def scalar(self, sql: str) -> Any:
        return self.rows(sql)[0][0]

    def rows(self, sql: str) -> list[tuple]:
        with cancel_with(self.con.interrupt):  # Ctrl-C reaches the query (interrupts.py)
            return self.con.execute(sql).fetchall()

    def row_hash(self, seed: int | None) -> str:
        """A hash of the row's content (seeded for assignment, unseeded for the duplicate check)."""
        return f"hash({seed}, {self.content})" if seed is not None else f"hash({self.content})"

    def time_key(self, column: str) -> tuple[str, str]:
        """An orderable numeric key for a time column, and the expression of the time itself."""
        kind = self.types[column].split("(")[0].upper()
        col = io.quote_ident(column)
        if kind.startswith(TIME_TYPES):
            return f"epoch_us(CAST({col} AS TIMESTAMP))", col
        if kind.startswith(NUMERIC_TYPES):
            return f"CAST({col} AS DOUBLE)", col
        if kind == "VARCHAR":
            bad = self.rows(f"SELECT {col} FROM src WHERE {col} IS NOT NULL AND TRY_CAST({col} AS TIMESTAMP) IS NULL LIMIT 1")
            if bad:
                raise InputError(f"time column {column!r} is not a time: {bad[0][0]!r} is not a date or timestamp",
                                 "give a DATE/TIMESTAMP column, or ISO dates such as 2025-01-31")
            parsed = f"TRY_CAST({col} AS TIMESTAMP)"
            return f"epoch_us({parsed})", parsed
        raise InputError(f"time column {column!r} is not a time (its type is {self.types[column]})",
                         "give a DATE/TIMESTAMP column, ISO date strings or numbers")

    def classes(self, column: str, refuse: bool = True) -> list[tuple[Any, int]] | None:
        """The classes of ``column`` with their row counts; too many values is not a class column."""
        col = io.quote_ident(column)
        found = self.rows(f"SELECT CAST({col} AS VARCHAR) AS c, count(*) FROM src GROUP BY c ORDER BY c NULLS LAST "
                          f"LIMIT {MAX_CLASSES + 1}")
        if len(found) > MAX_CLASSES:
            if not refuse:
                return None
            raise InputError(f"{column!r} has more than {MAX_CLASSES} distinct values; it is not a class column",
                             "stratify or balance on a categorical target")
        return found

    def cuts(self, key: str, fractions: Sequence[float], within: str | None = None,
             hashed: bool = False) -> dict[Any, tuple[list[Any], int | None]]:
        """Cut points of ``key`` (the last key of each part but the last) and the number of distinct keys.

        Rows are ordered by ``key``; each cut is the distinct key value whose cumulative row count
        is closest to the requested cumulative fraction, so rows with equal keys stay in one part.
        Cuts that would leave a part empty are avoided while there are enough distinct keys.
        Computed per class of ``within`` when given. On a big table :meth:`binned_cuts` finds
        the same cuts without sorting every key (``hashed``: the key is a uniform UBIGINT hash).
        """
        if self.scalar("SELECT count(*) FROM src") >= BINNED_CUT_ROWS:
            bins = self.bin_expr(key, hashed)
            found = self.binned_cuts(key, fractions, within, bins) if bins else None
            if found is not None:
                return {c: (k, None) for c, k in found.items()}
        cls = f"CAST({io.quote_ident(within)} AS VARCHAR)" if within else "NULL"
        self.con.execute(f"""
            CREATE OR REPLACE TEMP TABLE ranked AS
            SELECT c, k, sum(n) OVER w AS cum, sum(n) OVER (PARTITION BY c) AS total,
                   row_number() OVER w AS rk, count(*) OVER (PARTITION BY c) AS d
            FROM (SELECT {cls} AS c, {key} AS k, count(*) AS n FROM src GROUP BY ALL)
            WINDOW w AS (PARTITION BY c ORDER BY k ROWS UNBOUNDED PRECEDING)""")
        self.con.execute("CREATE OR REPLACE TEMP TABLE prev AS SELECT DISTINCT c, 0 AS rk, d FROM ranked")
        found: dict[Any, list[Any]] = {}
        for i, frac in enumerate(fractions):
            later = len(fractions) - i  # parts still to fill after this cut
            # arg_min is one streaming aggregate (no sort): the first choice that leaves no part empty.
            self.con.execute(f"""
                CREATE OR REPLACE TEMP TABLE prev AS
                SELECT c, best.k AS k, best.rk AS rk, d FROM (
                    SELECT r.c, any_value(r.d) AS d, arg_min({{'k': r.k, 'rk': r.rk}}, {{
                        'empties': r.rk <= p.rk OR r.rk > r.d - {later},
                        'distance': abs(r.cum - {frac!r} * r.total), 'k': r.k}}) AS best
                    FROM ranked r JOIN prev p ON r.c IS NOT DISTINCT FROM p.c GROUP BY r.c)""")
            for c, k in self.rows("SELECT c, k FROM prev"):
                found.setdefault(c, []).append(k)
        distinct = dict(self.rows("SELECT c, d FROM prev"))
        self.con.execute("DROP TABLE ranked; DROP TABLE prev")
        return {c: (found[c], int(distinct[c])) for c in found}

    def bin_expr(self, key: str, hashed: bool) -> str | None:
        """A SQL template (``{k}``: the key) mapping keys to bins, non-decreasing in the key.

        A hash is binned by its top bits; a time or number by equal-width bins between its
        minimum and maximum (one pass over that column). None when there is nothing to bin.
        """
        if hashed:
            return f"(({{k}}) >> {64 - BIN_BITS})"
        lo, hi = self.rows(f"SELECT min({key}), max({key}) FROM src")[0]
        if lo is None or hi == lo or not math.isfinite(float(hi) - float(lo)):
            return None
        width = (float(hi) - float(lo)) / (1 << BIN_BITS)
        return f"CAST(floor((({{k}}) - {lo!r}) / {width!r}) AS BIGINT)"

    def binned_cuts(self, key: str, fractions: Sequence[float], within: str | None, bins: str) -> dict[Any, list[Any]] | None:
        """The cuts of :meth:`cuts` from a histogram of the key instead of a full sort.

        Ordering every distinct key (millions for a random split, or for a time split on
        timestamps to the second) is what made big splits slow. Keys are counted per bin
        (``bins``, from :meth:`bin_expr`: non-decreasing in the key, so bins are ordered like
        keys); the key closest to a cumulative fraction lies in the bin where that fraction is
        reached or is the last key of the bin before, so only those bins are ranked. Returns
        None when the cuts found would leave a part empty; :meth:`cuts` then takes the exact
        path, which avoids empty parts.
        """
        cls = f"CAST({io.quote_ident(within)} AS VARCHAR)" if within else "NULL"
        fracs = ", ".join(f"({i}, {f!r})" for i, f in enumerate(fractions))
        self.con.execute(f"""
            CREATE OR REPLACE TEMP TABLE bins AS
            SELECT c, b, n, sum(n) OVER (PARTITION BY c ORDER BY b ROWS UNBOUNDED PRECEDING) AS upto,
                   sum(n) OVER (PARTITION BY c) AS total, max(kmax) OVER (PARTITION BY c) AS kmax
            FROM (SELECT {cls} AS c, {bins.format(k=key)} AS b, count(*) AS n, max({key}) AS kmax FROM src GROUP BY ALL)""")
        # For each class and fraction: the bin where the fraction is reached and the bin before it.
        self.con.execute(f"""
            CREATE OR REPLACE TEMP TABLE wanted AS
            SELECT h.c, h.i, h.frac, h.j, max(p.b) AS jp FROM (
                SELECT b.c, f.i, f.frac, min(b.b) AS j FROM bins b, (VALUES {fracs}) f(i, frac)
                WHERE b.upto >= f.frac * b.total GROUP BY ALL) h
            LEFT JOIN bins p ON p.c IS NOT DISTINCT FROM h.c AND p.b < h.j GROUP BY ALL""")
        self.con.execute("""
            CREATE OR REPLACE TEMP TABLE near_bins AS
            SELECT DISTINCT w.c, x.b, x.upto - x.n AS before, x.total FROM wanted w
            JOIN bins x ON x.c IS NOT DISTINCT FROM w.c AND (x.b = w.j OR x.b = w.jp)""")
        rows = self.rows(f"""
            WITH near AS (
                SELECT s.c, s.k, count(*) AS n FROM (SELECT {cls} AS c, {key} AS k FROM src) s
                JOIN near_bins nb ON nb.c IS NOT DISTINCT FROM s.c AND {bins.format(k="s.k")} = nb.b GROUP BY ALL),
            ranked AS (
                SELECT n.c, n.k, nb.b, nb.total,
                       nb.before + sum(n.n) OVER (PARTITION BY n.c, nb.b ORDER BY n.k ROWS UNBOUNDED PRECEDING) AS cum
                FROM near n JOIN near_bins nb ON nb.c IS NOT DISTINCT FROM n.c AND {bins.format(k="n.k")} = nb.b)
            SELECT w.c, w.i, arg_min(r.k, {{'distance': abs(r.cum - w.frac * r.total), 'k': r.k}}),
                   any_value(x.kmax)
            FROM wanted w JOIN ranked r ON r.c IS NOT DISTINCT FROM w.c AND (r.b = w.j OR r.b = w.jp)
            JOIN (SELECT DISTINCT c, kmax FROM bins) x ON x.c IS NOT DISTINCT FROM w.c
            GROUP BY w.c, w.i ORDER BY w.c, w.i""")
        self.con.execute("DROP TABLE bins; DROP TABLE wanted; DROP TABLE near_bins")
        found: dict[Any, list[Any]] = {}
        kmax: dict[Any, Any] = {}
        for c, _, k, top in rows:
            found.setdefault(c, []).append(k)
            kmax[c] = top
        # Strictly increasing cuts below the largest key leave every part at least one key.
        for c, ks in found.items():
            if len(ks) != len(fractions) or any(a >= b for a, b in zip(ks, ks[1:])) or ks[-1] >= kmax[c]:
                return None
        return found


def _refuse_repeated_names(files: Sequence[Path]) -> None:
    """A Parquet file may repeat a column name; DuckDB would silently rename the copy (``a_1``)."""
    import pyarrow.parquet as pq

    for path in files:
        if io.detect_format(Path(path)) != "parquet":
            continue
        io.refuse_repeated(pq.read_schema(path).names, str(path))


def _part_expr(key: str, cuts: list[Any], names: Sequence[str]) -> str:
    whens = " ".join(f"WHEN {key} <= {cut!r} THEN '{name}'" for cut, name in zip(cuts, names))
    return f"CASE {whens} ELSE '{names[-1]}' END"


def _assignment(sp: _Splitter, kind: str, column: str | None, ratios: Sequence[float], seed: int) -> tuple[str, str | None]:
    """The SQL expression giving each row its part, and the time expression when splitting by time."""
    names = PART_NAMES[len(ratios)]
    fractions = [sum(ratios[: i + 1]) for i in range(len(ratios) - 1)]
    time_expr = None
    if kind == "time":
        key, time_expr = sp.time_key(column)
        nulls = sp.scalar(f"SELECT count(*) FROM src WHERE {key} IS NULL")
        if nulls:
            raise InputError(f"time column {column!r} is missing in {nulls} rows; they cannot be placed in time",
                             f"drop them first, e.g. mlsys ingest T --sql \"SELECT * FROM input WHERE {column} IS NOT NULL\"")
    elif kind == "group":
        key = f"hash({seed}, {io.quote_ident(column)})"
    else:
        key = sp.row_hash(seed)
    if kind == "stratified":
        found = sp.classes(column)
        if len(found) < 2:
            raise InputError(f"cannot stratify on {column!r}: it has only one class ({found[0][0]!r})" if found
                             else f"cannot stratify on {column!r}: no rows")
        per_class = sp.cuts(key, fractions, within=column, hashed=True)
        col = f"CAST({io.quote_ident(column)} AS VARCHAR)"
        whens = " ".join(
            f"WHEN {col} IS NULL THEN {_part_expr(key, c, names)}" if cls is None
            else f"WHEN {col} = {_literal(cls)} THEN {_part_expr(key, c, names)}"
            for cls, (c, _) in sorted(per_class.items(), key=lambda kv: (kv[0] is None, kv[0] or "")))
        return f"CASE {whens} END", time_expr
    cuts, distinct = sp.cuts(key, fractions, hashed=kind != "time")[None]
    if distinct is not None and distinct < len(ratios):
        what = {"time": "distinct times", "group": "groups"}.get(kind, "distinct rows")
        raise InputError(f"cannot make {len(ratios)} non-empty parts: too few {what} in {column or 'the table'!r}",
                         "use fewer parts (two ratios) or more data")
    return _part_expr(key, cuts, names), time_expr


def _leakage(sp: _Splitter, part: str, names: Sequence[str], group: str | None, time_expr: str | None,
             time_col: str | None, dups_proven: bool = False, group_proven: bool = False) -> dict[str, dict[str, Any]]:
    """Duplicate rows across parts, group overlap and time overlap of the assignment.

    ``dups_proven``: the split key is a function of the compared columns, so duplicates share
    a key and a part; counting them (a group-by over every distinct row) is skipped.
    ``group_proven``: the split key is the group's hash, so no group can be in two parts.
    """
    checks: dict[str, dict[str, Any]] = {}
    if dups_proven:
        dup_groups = dup_rows = 0
    else:
        # min <> max of the part: cheaper per group than count(DISTINCT part).
        dup_groups, dup_rows = sp.rows(
            f"SELECT count(*), coalesce(sum(n), 0) FROM (SELECT {sp.row_hash(None)} AS h, min({part}) AS lo, "
            f"max({part}) AS hi, count(*) AS n FROM src GROUP BY h HAVING count(*) > 1) WHERE lo <> hi")[0]
    checks["duplicates"] = {"status": "found" if dup_rows else "ok", "rows": int(dup_rows), "keys": int(dup_groups),
                            "ignore": sp.ignore, "checked": "by construction" if dups_proven else "counted"}
    if group and group_proven:
        checks["group_overlap"] = {"status": "ok", "column": group, "groups": 0, "checked": "by construction"}
    elif group:
        overlap = sp.scalar(f"SELECT count(*) FROM (SELECT {io.quote_ident(group)} AS g FROM src GROUP BY g "
                            f"HAVING min({part}) <> max({part}))")
        checks["group_overlap"] = {"status": "found" if overlap else "ok", "column": group, "groups": int(overlap),
                                   "checked": "counted"}
    if time_expr:
        train_max = f"(SELECT max({time_expr}) FROM src WHERE {part} = '{names[0]}')"
        t_max, h_min, overlap = sp.rows(
            f"SELECT CAST({train_max} AS VARCHAR), CAST(min({time_expr}) AS VARCHAR), "
            f"count(*) FILTER (WHERE {time_expr} < {train_max}) FROM src WHERE {part} <> '{names[0]}'")[0]
        checks["time_overlap"] = {"status": "found" if overlap else "ok", "column": time_col, "rows": int(overlap),
                                  "train_max": t_max, "holdout_min": h_min}
    return checks


def _labelled(counts: dict[Any, int]) -> dict[str, int]:
    return {("null" if k is None else k): v for k, v in counts.items()}


def _part_stats(sp: _Splitter, part: str, time_expr: str | None, target: str | None) -> tuple[dict, dict, dict]:
    """Rows and time span per part, and rows per part and class of ``target``, in one pass."""
    span = f"CAST(min({time_expr}) AS VARCHAR), CAST(max({time_expr}) AS VARCHAR)" if time_expr else "NULL, NULL"
    cls = f"CAST({io.quote_ident(target)} AS VARCHAR)" if target else "NULL"
    sets = "GROUPING SETS ((p), (p, c))" if target else "p, c"
    counts: dict[str, int] = {}
    spans: dict[str, tuple[Any, Any]] = {}
    classes: dict[str, dict[Any, int]] = {}
    for p, c, per_class, n, lo, hi in sp.rows(
            f"SELECT {part} AS p, {cls} AS c, grouping(c) = 0 AND {str(bool(target)).lower()}, count(*), {span} "
            f"FROM src GROUP BY {sets} ORDER BY p, c NULLS LAST"):
        if per_class:
            classes.setdefault(p, {})[c] = int(n)
        else:
            counts[p], spans[p] = int(n), (lo, hi)
    return counts, (spans if time_expr else {}), {p: _labelled(c) for p, c in classes.items()}


def _balanced_train(sp: _Splitter, train_sql: str, target: str, method: str, seed: int) -> tuple[str, dict[str, Any]]:
    """Under-sample the majority classes or over-sample the minority ones of train (seeded)."""
    sp.con.execute(f"CREATE OR REPLACE TEMP VIEW train_rows AS {train_sql}")
    col = f"CAST({io.quote_ident(target)} AS VARCHAR)"
    before = {c: int(n) for c, n in sp.rows(f"SELECT {col} AS c, count(*) FROM train_rows GROUP BY c ORDER BY c NULLS LAST")}
    if len(before) < 2:
        raise InputError(f"cannot balance on {target!r}: train holds only one class")
    if len(before) > MAX_CLASSES:
        raise InputError(f"{target!r} has more than {MAX_CLASSES} distinct values; it is not a class column")
    aim = min(before.values()) if method == "under" else max(before.values())
    key = f"hash({seed + 1}, {sp.content})"  # a different stream from the split's, so it is independent of it
    # The first `aim mod n` rows of a class by key get one extra copy; under-sampling keeps only those.
    ranked = (f"SELECT c, k, sum(n) OVER (PARTITION BY c ORDER BY k ROWS UNBOUNDED PRECEDING) AS cum "
              f"FROM (SELECT {col} AS c, {key} AS k, count(*) AS n FROM train_rows GROUP BY ALL)")
    whens = []
    for cls, n in before.items():
        copies, extra = divmod(aim, n)
        cond = f"{col} IS NULL" if cls is None else f"{col} = {_literal(cls)}"
        cut = sp.scalar(f"SELECT max(k) FROM ({ranked}) WHERE c IS NOT DISTINCT FROM {_literal(cls)} AND cum <= {extra}")
        plus = f" + CASE WHEN {key} <= {cut!r} THEN 1 ELSE 0 END" if cut is not None else ""
        whens.append(f"WHEN {cond} THEN {copies}{plus}")
    copies_expr = f"CASE {' '.join(whens)} END"
    sql = (f"SELECT * EXCLUDE (__copy) FROM (SELECT *, unnest(range(CAST({copies_expr} AS BIGINT))) AS __copy "
           f"FROM train_rows)")
    after = {c: int(n) for c, n in sp.rows(f"SELECT {col} AS c, count(*) FROM ({sql}) GROUP BY c ORDER BY c NULLS LAST")}
    return sql, {"method": method, "target": target, "before": _labelled(before), "after": _labelled(after),
                 "rows": sum(after.values())}


def split_table(
    paths: Any,
    output: str | os.PathLike,
    *,
    by: str = "random",
    ratios: str | Sequence[float] = (0.7, 0.15, 0.15),
    seed: int = 0,
    target: str | None = None,
    group: str | None = None,
    time: str | None = None,
    ignore: Sequence[str] = (),
    strict: bool = False,
    balance: str | None = None,
    progress: Any = None,
) -> SplitResult:
    """Split a table into ``train``/``valid``/``test`` Parquet files in ``output``.

    Parameters
    ----------
    paths : path, glob, directory, or a list of them
        The table to split (read with :func:`mlsys_cli.data.io.scan_table`).
    output : path
        The directory to write ``train.parquet``, ``valid.parquet`` (three ratios) and ``test.parquet``.
    by : str
        ``random``, ``stratified:COL``, ``time:COL`` or ``group:COL``.
    ratios : str or sequence of float
        Two or three positive ratios summing to 1 (train, [valid,] test).
    seed : int
        Seeds the hashes that assign rows and groups; the same seed gives identical files.
    target : str, optional
        Reported per part (class balance) and recorded in the lineage; needed by ``balance``.
    group, time : str, optional
        Also check group overlap / time overlap on these columns, whatever the split kind.
    ignore : sequence of str
        Columns left out when comparing rows (ids, load timestamps) for duplicates and the row hash.
    strict : bool
        Refuse (:class:`InputError`, nothing written) when a leakage check finds anything.
    balance : {"under", "over"}, optional
        After the split, under-sample the majority or over-sample the minority classes of
        ``target`` in train only (seeded); valid and test keep the real distribution.
    progress : console.Progress-like, optional
        Receives ``update``/``advance`` calls.

    Returns
    -------
    SplitResult
    """
    kind, column = parse_by(by)
    ratio_list = parse_ratios(ratios)
    if balance is not None and balance not in BALANCE:
        raise UsageError(f"invalid --balance {balance!r}", "use under or over")
    if balance and not (target or kind == "stratified"):
        raise UsageError("--balance needs --target", "e.g. --target churned --balance under")
    names = PART_NAMES[len(ratio_list)]
    steps = 4 + len(names)
    _step(progress, 0, steps, "reading")
    sp = _Splitter(paths, ignore)
    for name, what in ((column, "--by"), (target, "--target"), (group, "--group"), (time, "--time")):
        if name:
            sp.require(name, what)
    total = int(sp.scalar("SELECT count(*) FROM src"))
    if total == 0:
        raise InputError(f"{', '.join(map(str, sp.files))}: the table has no rows")
    _step(progress, 1, steps, "assigning")
    part, time_expr = _assignment(sp, kind, column, ratio_list, seed)
    if kind != "time" and time:
        time_expr = sp.time_key(time)[1]
    group_col = group or (column if kind == "group" else None)
    _step(progress, 2, steps, "checking")
    # Equal rows get equal keys (random: their hash; otherwise the split column) unless that column is ignored.
    checks = _leakage(sp, part, names, group_col, time_expr, column if kind == "time" else time,
                      kind == "random" or column not in sp.ignore, group_proven=kind == "group" and group_col == column)
    leakage = any(c["status"] == "found" for c in checks.values())
    if strict and leakage:
        _refuse_leakage(checks)
    class_col = target or (column if kind == "stratified" else None)
    counts, spans, classes = _part_stats(sp, part, time_expr,
                                         class_col if class_col and sp.classes(class_col, refuse=False) else None)
    empty = [n for n in names if not counts.get(n)]
    if empty:
        raise InputError(f"the {empty[0]} part would be empty ({total} rows)", "use more rows or other ratios")
    _step(progress, 3, steps, "balancing")
    queries = {n: f"SELECT * FROM src WHERE {part} = '{n}'" for n in names}
    balanced = None
    if balance:
        queries["train"], balanced = _balanced_train(sp, queries["train"], class_col, balance, seed)
    out_dir = Path(output)
    if out_dir.exists() and not out_dir.is_dir():
        raise InputError(f"{out_dir}: exists and is not a directory", "-o names the directory for train/valid/test.parquet")
    inputs = [io.input_record(f) for f in sp.files]
    lineage = {"inputs": inputs, "seed": seed, "target": target,
               "extra": {"by": by, "ratios": ratio_list, **({"ignore": list(ignore)} if ignore else {}),
                         **({"balance": balance} if balance else {})}}
    stats = {"total": total, "counts": counts, "spans": spans if time_expr else None, "classes": classes,
             "balanced": balanced}
    parts = _write_parts(sp, out_dir, names, ratio_list, queries, stats, lineage,
                         lambda i, name: _step(progress, 4 + i, steps, f"writing {name}"))
    _step(progress, steps, steps, "done")
    return SplitResult(inputs=[{"path": r["path"], "sha256": r["sha256"]} for r in inputs], output=str(out_dir),
                       by=kind, column=column, ratios=ratio_list, seed=seed, target=target, rows=total, parts=parts,
                       checks=checks, leakage=leakage, balance=balanced,
                       warnings=_split_warnings(out_dir, names, classes))


def _refuse_leakage(checks: dict[str, dict[str, Any]]) -> None:
    """``--strict``: name every leakage check that found something; nothing is written."""
    found = {name: c for name, c in checks.items() if c["status"] == "found"}
    shown = ", ".join(f"{name.replace('_', ' ')} ({c.get('groups', c.get('rows'))})" for name, c in found.items())
    raise InputError(f"leakage between parts: {shown}; nothing written",
                     "; ".join(LEAK_HINTS[name] for name in found) + "; or drop --strict to write anyway")


def _write_parts(sp: _Splitter, out_dir: Path, names: Sequence[str], ratio_list: list[float],
                 queries: dict[str, str], stats: dict[str, Any], lineage: dict[str, Any],
                 written: Any) -> list[dict[str, Any]]:
    """Write every part to a temporary file; all replace their targets together at the end.

    ``stats`` holds ``total``, ``counts``, ``spans`` (None without a time key), ``classes`` and
    ``balanced`` (the train part's resampling, or None); ``lineage`` the inputs, seed, target and
    options recorded in each file. Returns one record per part, in order.
    """
    counts, classes, balanced = stats["counts"], stats["classes"], stats["balanced"]
    parts = []
    with contextlib.ExitStack() as stack:
        for i, name in enumerate(names):
            rows = balanced["rows"] if name == "train" and balanced else int(counts[name])
            record = {"name": name, "path": str(out_dir / f"{name}.parquet"), "rows": rows,
                      "ratio": round(int(counts[name]) / stats["total"], 6), "requested": ratio_list[i]}
            meta = io.lineage_metadata(io.Lineage(command="split", role=name, **lineage), rows=rows)
            tmp = stack.enter_context(atomic_path(out_dir / f"{name}.parquet", suffix=".parquet"))
            sp.rows(f"COPY ({queries[name]}) TO {_literal(str(tmp))} "
                    f"(FORMAT parquet, COMPRESSION zstd, KV_METADATA {{mlsys: {_literal(meta)}}})")
            if stats["spans"] is not None:
                record.update(time_min=stats["spans"][name][0], time_max=stats["spans"][name][1])
            if classes:
                record["classes"] = balanced["after"] if name == "train" and balanced else classes.get(name, {})
            if name == "train" and balanced:
                record["rows_before_balance"] = int(counts[name])
            parts.append(record)
            written(i, name)
    return parts


def _split_warnings(out_dir: Path, names: Sequence[str], classes: dict[str, dict[str, int]]) -> list[str]:
    """A stale valid part from an earlier three-way split, and classes some part lacks."""
    warnings = []
    if len(names) == 2 and (out_dir / "valid.parquet").exists():
        warnings.append(f"{out_dir / 'valid.parquet'} is left from an earlier split; this split has no valid part")
    for name, counts_ in classes.items():
        missing = sorted(set().union(*classes.values()) - set(counts_))
        if missing:
            warnings.append(f"the {name} part has no rows of class {', '.join(missing)}")
    return warnings


def _step(progress: Any, completed: int, total: int, description: str) -> None:
    if progress is not None:
        progress.update(completed=completed, total=total, description=description)
