"""Reading and writing tables, with lineage.

Verbs read like polars: :func:`read_table` is eager (a ``pyarrow.Table``), :func:`scan_table`
is lazy (a DuckDB relation that streams), :func:`write_table` writes Parquet atomically and
stamps the lineage of the table into its key-value metadata under the key ``mlsys``.

Accepted inputs: a Parquet file, a directory of Parquet files, a glob, or a CSV/TSV/JSON/NDJSON
file. Heavy libraries are imported inside the functions.
"""

from __future__ import annotations

import glob as _glob
import json
import os
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

from mlsys_cli import __version__, invocation  # noqa: F401 - invocation re-exported for lineage callers
from mlsys_cli.errors import InputError
from mlsys_cli.fsutil import atomic_path, sha256_file

LINEAGE_KEY = b"mlsys"
PARQUET_MAGIC = b"PAR1"
FORMATS = {
    ".parquet": "parquet", ".pq": "parquet", ".csv": "csv", ".tsv": "tsv", ".tab": "tsv",
    ".json": "json", ".ndjson": "ndjson", ".jsonl": "ndjson", ".txt": "csv",
}

# Columns that are never data: a pandas index written with the table, mlsys's own metadata
# (serve's prediction logs: CONTRACTS.md). Readers drop the first; features skip both.
_PANDAS_INDEX = re.compile(r"__index_level_\d+__")
METADATA_PREFIX = "_mlsys_"



def is_metadata_column(name: str) -> bool:
    """A pandas index column (``__index_level_0__``) or an mlsys metadata column (``_mlsys_*``)."""
    return bool(_PANDAS_INDEX.fullmatch(name)) or name.startswith(METADATA_PREFIX)


def refuse_repeated(names: Sequence[str], where: str = "the input") -> None:
    """Two columns with one name make every later step ambiguous: refuse them by name (exit 3)."""
    from collections import Counter

    # Counted once (a count per name was quadratic in the number of columns).
    repeated = sorted(n for n, k in Counter(names).items() if k > 1)
    if repeated:
        raise InputError(f"{where}: repeated column name{'s' if len(repeated) > 1 else ''} {', '.join(map(repr, repeated))}",
                         "make the names unique first: mlsys ingest FILE -o OUT.parquet numbers repeats")


def _without_index(table: Any) -> Any:
    """Drop the pandas index columns a table was written with (``df.to_parquet()`` keeps the index)."""
    index = [n for n in table.column_names if _PANDAS_INDEX.fullmatch(n)]
    return table.drop_columns(index) if index else table


@dataclass(frozen=True)
class Lineage:
    """How a table was made: stamped into its Parquet metadata under ``mlsys``."""

    command: str
    inputs: list[dict[str, Any]] = field(default_factory=list)
    rows: int | None = None
    seed: int | None = None
    role: str | None = None
    target: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    args: list[str] = field(default_factory=invocation)
    version: str = __version__

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if v not in (None, {}, [])}


def input_record(path: str | os.PathLike, with_parent: bool = True, sha256: str | None = None) -> dict[str, Any]:
    """Fingerprint one input file: its path, sha256, and its own lineage when mlsys wrote it.

    ``sha256``: a digest the caller computes itself (ingest hashes while DuckDB reads).
    """
    record: dict[str, Any] = {"path": str(path), "sha256": sha256 or sha256_file(path)}
    if with_parent and detect_format(Path(path)) == "parquet":
        parent = read_lineage(path)
        if parent:
            record["lineage"] = parent
    return record


def resolve_inputs(paths: Iterable[str | os.PathLike], allow_stdin: bool = False) -> list[Path]:
    """Expand globs and directories into a sorted list of files; fail clearly when none exist."""
    files: list[Path] = []
    for raw in paths:
        text = str(raw)
        if text == "-" and allow_stdin:
            files.append(Path("-"))
            continue
        if any(ch in text for ch in "*?["):
            matches = sorted(Path(p) for p in _glob.glob(text, recursive=True) if Path(p).is_file())
            if not matches:
                raise InputError(f"no files match {text!r}")
            files.extend(matches)
            continue
        path = Path(text)
        if path.is_dir():
            found = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in (".parquet", ".pq"))
            if not found:
                raise InputError(f"{text}: directory holds no Parquet files")
            files.extend(found)
        elif path.is_file():
            files.append(path)
        elif path.exists():
            # A FIFO (or <(process substitution)), socket or device: sniffing its format would
            # block until a writer comes, or eat the first bytes the reader then misses.
            raise InputError(f"{text}: not a regular file (a pipe, socket or device)",
                             "save it to a file first, or pipe it to standard input: ... | mlsys ingest - -o t.parquet")
        else:
            raise InputError(f"{text}: no such file or directory")
    if not files:
        raise InputError("no input files given")
    return files


def detect_format(path: Path, declared: str | None = None) -> str:
    """The format of a file: declared, from its suffix, or sniffed from its first bytes."""
    if declared:
        return declared
    fmt = FORMATS.get(path.suffix.lower())
    if fmt:
        return fmt
    if str(path) == "-":
        return "csv"
    try:
        with open(path, "rb") as fh:
            head = fh.read(4)
    except OSError as exc:
        raise InputError(f"{path}: cannot read ({exc.strerror})") from None
    if head == PARQUET_MAGIC:
        return "parquet"
    if head[:1] in (b"{", b"["):
        return "ndjson" if head[:1] == b"{" else "json"
    return "csv"


def check_parquet(path: Path) -> None:
    if path.stat().st_size == 0:
        raise InputError(f"{path}: empty file")
    with open(path, "rb") as fh:
        if fh.read(4) != PARQUET_MAGIC:
            raise InputError(f"{path}: not a Parquet file", "convert it with: mlsys ingest FILE -o FILE.parquet")


def disagreements(files: Sequence[Path], schemas: Sequence[Any], columns: Sequence[str]) -> list[str]:
    """One line per (file, column) that lacks a column or types it differently from the first file having it."""
    problems = []
    for column in columns:
        first = next(((f, s.field(column).type) for f, s in zip(files, schemas) if column in s.names), None)
        if first is None:
            problems.append(f"column {column!r} is in none of the {len(files)} files")
            continue
        for f, s in zip(files, schemas):
            if column not in s.names:
                problems.append(f"{f} has no column {column!r}")
            elif not s.field(column).type.equals(first[1]):
                problems.append(f"{f}: column {column!r} is {s.field(column).type}, {first[0]} has {first[1]}")
    return problems


def parquet_schema(files: Sequence[Path], missing_ok: bool = False) -> Any:
    """The one Arrow schema of a table stored in the Parquet ``files`` (their footers only).

    ``missing_ok``: a column some files lack is allowed (drift over serve logs written by
    models of different inputs; the reader then names a file lacking a column it compares).

    The files must hold the same columns, each of one type or of types that widen without loss
    (integers and floats to float64, an all-null file's column to the others' type, timestamp
    units): what pyarrow's permissive promotion gives. Anything else is refused rather than
    guessed: DuckDB would read every file as the first one's schema (0.5 cast to int64 became 0
    or 1, silently), pyarrow would fill a missing column with nulls for a whole file.

    Raises
    ------
    InputError
        A file is not Parquet, or the files disagree: the files and columns are named (exit 3).
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    schemas = []
    for f in files:
        check_parquet(f)
        try:
            schemas.append(pq.read_schema(f).remove_metadata())
        except (pa.ArrowException, OSError) as exc:
            raise InputError(f"{f}: cannot read Parquet: {str(exc).splitlines()[0]}") from None
        refuse_repeated(schemas[-1].names, str(f))
    if len(schemas) == 1:
        return schemas[0]
    names = list(dict.fromkeys(n for s in schemas for n in s.names if not is_metadata_column(n)))
    odd = [n for n in names if (not missing_ok and any(n not in s.names for s in schemas))
           or not _widens([s.field(n) for s in schemas if n in s.names])]
    if odd:
        problems = [p for p in disagreements(files, schemas, odd) if not (missing_ok and " has no column " in p)]
        more = f" (and {len(problems) - 3} more)" if len(problems) > 3 else ""
        raise InputError("the files do not share one schema: " + "; ".join(problems[:3]) + more,
                         "rewrite the odd files with the common types or leave them out of the glob; "
                         "mlsys ingest FILES -o t.parquet unifies them (a missing column becomes null)")
    try:
        return pa.unify_schemas(schemas, promote_options="permissive")
    except (pa.ArrowInvalid, pa.ArrowTypeError):  # categories in some files, plain strings in others
        return pa.unify_schemas([pa.schema([_plain(f) for f in s]) for s in schemas], promote_options="permissive")


def _plain(field: Any) -> Any:
    """A dictionary-encoded (categorical) field as its values' type: the same column to a reader."""
    import pyarrow as pa

    return field.with_type(field.type.value_type) if pa.types.is_dictionary(field.type) else field


def _widens(fields: Sequence[Any]) -> bool:
    import pyarrow as pa

    try:
        pa.unify_schemas([pa.schema([_plain(f)]) for f in fields], promote_options="permissive")
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        return False
    return True


def _as_unified(table: Any, schema: Any) -> Any:
    """``table`` with its categorical columns decoded where the files' common type is not categorical."""
    import pyarrow as pa

    for i, field in enumerate(table.schema):
        if pa.types.is_dictionary(field.type) and field.name in schema.names and not pa.types.is_dictionary(schema.field(field.name).type):
            table = table.set_column(i, field.name, table.column(i).cast(field.type.value_type))
    return table


def scan_table(paths: Iterable[str | os.PathLike] | str | os.PathLike, con: Any = None) -> Any:
    """A lazy DuckDB relation over one or more tables (nothing is loaded until consumed).

    Parameters
    ----------
    paths : path, glob, directory, or a list of them
        Parquet files (all with one schema) or a single CSV/TSV/JSON/NDJSON file.
    con : duckdb.DuckDBPyConnection, optional
        The connection to use; a new in-memory one by default.
    """
    import duckdb

    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    files = resolve_inputs(paths)
    con = con or duckdb.connect()
    formats = {detect_format(f) for f in files}
    if formats != {"parquet"}:
        if len(files) != 1:
            raise InputError("give one CSV/JSON file, or Parquet files", "ingest them first: mlsys ingest FILES -o t.parquet")
        fmt = formats.pop()
        f = str(files[0])
        if os.path.getsize(f) == 0:
            raise InputError(f"{f}: empty file")
        try:
            if fmt in ("csv", "tsv"):
                return _scan_csv(con, f, fmt)
            return con.read_json(f, format="newline_delimited" if fmt == "ndjson" else "auto")
        except duckdb.Error as exc:
            raise InputError(f"{f}: cannot read as {fmt}: {str(exc).splitlines()[0]}") from None
    if len(files) > 1:
        parquet_schema(files)  # by name, so a column's type is the files' common one, not the first file's
    else:
        check_parquet(files[0])
    try:
        return con.read_parquet([str(f) for f in files], union_by_name=len(files) > 1)
    except duckdb.Error as exc:
        raise InputError(f"cannot read Parquet: {str(exc).splitlines()[0]}") from None


def _scan_csv(con: Any, f: str, fmt: str) -> Any:
    """A CSV/TSV file through DuckDB's sniffer, with ingest's guards: a guessed day/month order
    is refused, and numbers written with a decimal comma are read as numbers."""
    sep = "\t" if fmt == "tsv" else None
    relation = con.read_csv(f, sep=sep)
    types = dict(zip(relation.columns, map(str, relation.types)))
    lit = "'" + f.replace("'", "''") + "'"

    def sample(text: Sequence[str]) -> str:
        spec = ", ".join("'" + c.replace("'", "''") + "': 'VARCHAR'" for c in text)
        opt = ", delim = '\t'" if sep else ""
        return f"(SELECT * FROM read_csv({lit}, types = {{{spec}}}{opt}) LIMIT {_CSV_SAMPLE_ROWS})"

    def stats(text: Sequence[str], select: str) -> tuple:
        # The text columns are already raw text in the relation: no second sniff of a wide file.
        if not text:
            return relation.limit(_CSV_SAMPLE_ROWS).aggregate(select).fetchall()[0]
        return con.execute(f"SELECT {select} FROM {sample(text)}").fetchall()[0]

    dated = dated_columns(types)
    if dated:
        refuse_ambiguous_dates(con, sample(dated), dated, f)
    delimiter = (lambda: sep) if sep else (lambda: con.execute(f"SELECT Delimiter FROM sniff_csv({lit})").fetchall()[0][0])
    decimal = decimal_comma_columns(DecimalCommaProbe(types, stats, delimiter, f))
    if not decimal:
        return relation
    relation = con.read_csv(f, sep=sep, dtype={c: "VARCHAR" for c in decimal})
    return relation.project(", ".join(f"{decimal_comma_number(c)} AS {quote_ident(c)}" if c in decimal else quote_ident(c)
                                      for c in relation.columns))


# A number written with a decimal comma, optionally with dots grouping thousands: 2,5  -3  1.234,56
_DECIMAL_COMMA = r"[+-]?([0-9]+|[0-9]{1,3}(\.[0-9]{3})+)(,[0-9]+)?"
_ONE_GROUP = r"[+-]?[0-9]{1,3},[0-9]{3}"  # 1,234: a decimal comma, or a thousands comma


@dataclass(frozen=True)
class DecimalCommaProbe:
    """How :func:`decimal_comma_columns` looks at one CSV file.

    Parameters
    ----------
    types : dict
        ``{column: DuckDB type}`` as the sniffer read them.
    stats : callable
        ``stats(columns, select)`` runs the SQL select list over the sampled rows, with
        ``columns`` (float columns) read as raw text, and returns the one row.
    delimiter : callable
        The file's delimiter (called only when a column could hold decimal commas).
    shown : str
        The file as messages name it.
    """

    types: dict[str, str]
    stats: Any
    delimiter: Any
    shown: str


def _comma_stats(probe: DecimalCommaProbe, columns: Sequence[str], retype: bool) -> dict[str, tuple]:
    """Per column: (values, decimal-comma numbers, with a comma, with a dot, like 1,234, an example)."""
    aggs = []
    for c in columns:
        v = f"NULLIF(trim({quote_ident(c)}), '')"
        aggs.append(f"count({v}), count(CASE WHEN regexp_full_match({v}, '{_DECIMAL_COMMA}') THEN 1 END), "
                    f"count(CASE WHEN contains({v}, ',') THEN 1 END), count(CASE WHEN contains({v}, '.') THEN 1 END), "
                    f"count(CASE WHEN regexp_full_match({v}, '{_ONE_GROUP}') THEN 1 END), "
                    f"min(CASE WHEN contains({v}, ',') THEN {v} END)")
    row = probe.stats(list(columns) if retype else [], ", ".join(aggs))
    return {c: row[6 * k: 6 * k + 6] for k, c in enumerate(columns)}


def decimal_comma_columns(probe: DecimalCommaProbe) -> list[str]:
    """The columns of a CSV whose numbers are written with a decimal comma (``2,5``, ``1.234,5``).

    DuckDB's sniffer reads ``2,5`` as text, so a European file's prices became a category, and a
    column of ``1.234`` (thousands) as the float 1.234. In a file whose delimiter is not a comma,
    a text column whose every sampled value is such a number, with at least one comma, settles
    the file's convention; float columns of the same file whose every value has dots grouping
    thousands are then read as those thousands. A file whose only comma values look like
    ``1,234`` (a decimal comma or a thousands comma) is refused: the reading is a guess.

    Returns
    -------
    list of str
        The columns to read as raw text through :func:`decimal_comma_number`.
    """
    text = [c for c, t in probe.types.items() if str(t).upper() == "VARCHAR"]
    stats = _comma_stats(probe, text, retype=False) if text else {}
    commas = [c for c, (n, good, comma, *_) in stats.items() if n and good == n and comma]
    if not commas or probe.delimiter() in (None, ","):  # a comma file's quoted "1,5" is not taken for a decimal
        return []
    if all(stats[c][3] == 0 and stats[c][4] == stats[c][2] for c in commas):
        col = commas[0]
        raise InputError(
            f"{probe.shown}: column {col!r}: numbers like {stats[col][5]!r} read as a decimal comma "
            "and as a thousands comma alike, so their value is a guess",
            f"say which: mlsys ingest FILE --schema {col}:varchar --sql \"SELECT * REPLACE "
            f"(replace({col}, ',', '.')::DOUBLE AS {col}) FROM input\" (or replace({col}, ',', '') for thousands)")
    floats = [c for c, t in probe.types.items() if str(t).upper() == "DOUBLE"]
    grouped = _comma_stats(probe, floats, retype=True).items() if floats else []
    return commas + [c for c, (n, good, comma, dot, *_) in grouped if n and good == n and dot and not comma]


def decimal_comma_number(col: str) -> str:
    """The SQL reading a :func:`decimal_comma_columns` column (raw text) as a DOUBLE."""
    return f"CAST(replace(replace(NULLIF(trim({quote_ident(col)}), ''), '.', ''), ',', '.') AS DOUBLE)"


_NUMERIC_DATE = r"^\s*([0-9]{1,2})[/.-]([0-9]{1,2})[/.-][0-9]{2,4}([ T].*)?$"
_CSV_SAMPLE_ROWS = 20_480  # as many rows as DuckDB's sniffer samples


def dated_columns(types: dict[str, str]) -> list[str]:
    """The columns DuckDB typed as dates or timestamps (``{name: DuckDB type}``)."""
    return [c for c, t in types.items() if str(t).upper().startswith(("DATE", "TIMESTAMP"))]


def refuse_ambiguous_dates(con: Any, sample: str, dated: Sequence[str], shown: str) -> None:
    """Refuse a date column whose sampled dates read as day/month and as month/day alike.

    DuckDB's CSV sniffer picks one order for ``02/03/2024`` (day first) when no sampled date has
    a part above 12 (monthly snapshots on the 1st, a small file): a US file's 3 February became
    2 March, silently. Only numeric dates with both orders open are refused; one value with a
    part above 12 settles the order, and ISO dates (year first) are never ambiguous.

    Parameters
    ----------
    con : duckdb connection
    sample : str
        A DuckDB ``FROM`` item giving the sampled rows with the ``dated`` columns as raw text.
    dated : list of str
    shown : str
        The file as messages name it.
    """
    parts = [f"TRY_CAST(regexp_extract({quote_ident(c)}, '{_NUMERIC_DATE}', {i}) AS INTEGER)" for c in dated for i in (1, 2)]
    aggs = [f"count(NULLIF(trim({quote_ident(c)}), ''))" for c in dated]
    aggs += [f"count({parts[2 * k]}), max({parts[2 * k]}), max({parts[2 * k + 1]}), "
             f"count(CASE WHEN {parts[2 * k]} <> {parts[2 * k + 1]} THEN 1 END)" for k in range(len(dated))]
    row = con.execute(f"SELECT {', '.join(aggs)} FROM {sample}").fetchall()[0]  # fetched whole: the connection stays usable
    for k, col in enumerate(dated):
        present, numeric, top1, top2, differ = row[k], *row[len(dated) + 4 * k: len(dated) + 4 * k + 4]
        if present and numeric == present and top1 <= 12 and top2 <= 12 and differ:
            example = con.execute(f"SELECT trim({quote_ident(col)}) FROM {sample} WHERE {parts[2 * k]} <> {parts[2 * k + 1]} "
                                  "LIMIT 1").fetchall()[0][0]
            raise InputError(
                f"{shown}: column {col!r}: dates like {example!r} read as day/month and as month/day alike "
                "(no sampled date has a part above 12), so their order is a guess",
                f"say the order: mlsys ingest FILE --schema {col}:varchar --sql \"SELECT * REPLACE "
                f"(strptime({col}, '%m/%d/%Y')::DATE AS {col}) FROM input\" (or '%d/%m/%Y')")


def read_table(paths: Iterable[str | os.PathLike] | str | os.PathLike, columns: Sequence[str] | None = None) -> Any:
    """Read a table eagerly into a ``pyarrow.Table``.

    Parquet is read by pyarrow directly (fast path, keeps types); other formats go through DuckDB.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    files = resolve_inputs(paths)
    if all(detect_format(f) == "parquet" for f in files):
        unified = parquet_schema(files)  # checks every file's footer (Parquet, no repeated names) once
        tables = []
        for f in files:
            try:
                table = _without_index(pq.read_table(f, columns=list(columns) if columns else None))
                tables.append(table if len(files) == 1 else _as_unified(table, unified))
            except (pa.ArrowException, OSError) as exc:
                raise InputError(f"{f}: cannot read Parquet: {exc}") from None
            except KeyError as exc:
                raise InputError(f"{f}: no column {exc}") from None
        table = pa.concat_tables(tables, promote_options="permissive") if len(tables) > 1 else tables[0]
        return table.replace_schema_metadata(None)
    import duckdb

    relation = scan_table(files)
    if columns:
        missing = [c for c in columns if c not in relation.columns]
        if missing:
            raise InputError(f"no column {missing[0]!r} in the input")
        relation = relation.select(*[quote_ident(c) for c in columns])
    try:
        table = relation.to_arrow_table()
    except duckdb.Error as exc:
        raise InputError(f"{files[0]}: cannot read: {str(exc).splitlines()[0]}") from None
    refuse_repeated(table.column_names, str(files[0]))
    return _without_index(table)


def quote_ident(name: str) -> str:
    """A column name as a SQL identifier (DuckDB, PostgreSQL); inner double quotes are doubled."""
    return '"' + str(name).replace('"', '""') + '"'


def relation_rows(relation: Any) -> int:
    """Rows of a DuckDB relation (DuckDB 2 relations have no ``fetchone``: one call, one result)."""
    return int(relation.aggregate("count(*)").fetchall()[0][0])


def count_rows(paths: Any) -> int:
    """Rows of a table: from the Parquet footers (no data read), else by a DuckDB count."""
    import pyarrow.parquet as pq

    files = resolve_inputs([paths] if isinstance(paths, (str, os.PathLike)) else paths)
    if all(detect_format(f) == "parquet" for f in files):
        total = 0
        for f in files:
            check_parquet(f)
            try:
                total += pq.ParquetFile(f).metadata.num_rows
            except Exception as exc:  # pyarrow raises several types for a damaged footer
                raise InputError(f"{f}: cannot read Parquet: {exc}") from None
        return total
    return relation_rows(scan_table(files))


def read_frame(paths: Any, columns: Sequence[str] | None = None) -> Any:
    """Read a table eagerly into a pandas DataFrame (the scikit-learn boundary)."""
    return read_table(paths, columns).to_pandas()


def write_table(table: Any, path: str | os.PathLike, lineage: Lineage | None = None) -> Path:
    """Write a table to Parquet (zstd) atomically, with lineage in its metadata.

    Parameters
    ----------
    table : pyarrow.Table or pandas.DataFrame or polars.DataFrame
    path : path of the Parquet file to write
    lineage : Lineage, optional
        Stamped under the ``mlsys`` key; its row count is filled in from the table.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    if not isinstance(table, pa.Table):
        if hasattr(table, "to_arrow"):
            table = table.to_arrow()
        else:
            table = pa.Table.from_pandas(table, preserve_index=False)
    metadata = {k: v for k, v in (table.schema.metadata or {}).items() if k != b"pandas"}
    if lineage is not None:
        record = lineage.to_dict()
        record["rows"] = table.num_rows
        metadata[LINEAGE_KEY] = json.dumps(record, sort_keys=True).encode()
    table = table.replace_schema_metadata(metadata or None)
    with atomic_path(path, suffix=".parquet") as tmp:
        pq.write_table(table, tmp, compression="zstd")
    return Path(path)


def lineage_metadata(lineage: Lineage, rows: int | None = None) -> str:
    """The JSON text stamped under ``mlsys`` (for writers that are not :func:`write_table`)."""
    record = lineage.to_dict()
    if rows is not None:
        record["rows"] = rows
    return json.dumps(record, sort_keys=True)


def read_lineage(path: str | os.PathLike) -> dict[str, Any] | None:
    """The lineage mlsys stamped into a Parquet file, or None for a plain table."""
    import pyarrow.parquet as pq

    try:
        meta = pq.read_schema(path).metadata or {}
    except Exception:
        return None
    raw = meta.get(LINEAGE_KEY)
    if not raw:
        return None
    try:
        return json.loads(raw)
    except ValueError:
        return None
