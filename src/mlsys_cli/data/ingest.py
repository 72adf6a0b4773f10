"""Raw data into one clean Parquet table: files, globs, stdin or PostgreSQL.

DuckDB does the work and streams (``COPY (query) TO 'file.parquet'``), so inputs larger than
the memory DuckDB may use are fine. The steps, all inside one DuckDB query:

1. read the input (CSV/TSV with bad rows quarantined, JSON/NDJSON, Parquet);
2. rename columns to safe names and apply ``schema`` overrides: the view ``input``;
3. the user's ``sql`` over ``input`` (DuckDB SQL);
4. ``dedupe`` keeping the first occurrence, in input order;
5. write Parquet (zstd) with the lineage in its key-value metadata, atomically.

PostgreSQL is read by psycopg in batches (DuckDB's postgres extension would need the network)
into a staged Parquet file, which then takes the same path.
"""

from __future__ import annotations

import codecs
import contextlib
import json
import os
import re
import secrets
import shutil
import sys
import threading
import time
import unicodedata
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

from mlsys_cli.data.io import (FORMATS, Lineage, DecimalCommaProbe, decimal_comma_columns, decimal_comma_number, input_record,
                              invocation, lineage_metadata, quote_ident, resolve_inputs)
from mlsys_cli.errors import InputError, UsageError
from mlsys_cli.fsutil import atomic_path, sha256_file, temp_dir
from mlsys_cli.interrupts import cancel_with

INPUT_FORMATS = ("csv", "tsv", "json", "ndjson", "parquet")
# Encodings DuckDB's CSV reader decodes itself; others are transcoded to UTF-8 first.
_NATIVE_ENCODINGS = {"utf-8": "utf-8", "utf-8-sig": "utf-8", "utf-16": "utf-16", "iso8859-1": "latin-1", "latin-1": "latin-1"}
_REJECTS, _SCANS = "mlsys_reject_errors", "mlsys_reject_scans"
_ROW = "__mlsys_row"
_TYPE_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_ ]*(\(\s*\d+\s*(,\s*\d+\s*)?\))?(\[\])?$")
_DELIMITERS = (",", ";", "\t", "|")
_SNIFF_BYTES = 1 << 16
_SAMPLE_ROWS = 20_480  # as many rows as DuckDB's sniffer samples
_TOLERANT = ("BIGINT", "DOUBLE", "DATE", "TIMESTAMP")


@dataclass(frozen=True)
class CsvDialect:
    """How to parse CSV/TSV; ``None`` means detect it (DuckDB's sniffer).

    Parameters
    ----------
    delimiter : str, optional
        Field separator, e.g. ``","``, ``";"``, ``"\\t"``.
    header : bool, optional
        Whether the first line names the columns.
    encoding : str, optional
        Any Python codec name; UTF-8 (a BOM is honoured), UTF-16 and Latin-1 are decoded by
        DuckDB directly, other encodings are transcoded to UTF-8 first.
    quote : str, optional
        Quote character.
    """

    delimiter: str | None = None
    header: bool | None = None
    encoding: str | None = None
    quote: str | None = None


@dataclass(frozen=True)
class IngestResult:
    """What ``mlsys ingest`` did: the ``--json`` report."""

    output: str
    format: str
    files: list[str]
    rows_read: int
    rows_written: int
    rows_rejected: int
    duplicates_dropped: int
    columns: list[dict[str, str]]
    renames: list[dict[str, str]]
    rejects: str | None
    seconds: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class _Source:
    """Files DuckDB reads, and how each is shown to the user (stdin, transcoded files, a database)."""

    format: str
    paths: list[Path]
    shown: dict[str, str] = field(default_factory=dict)
    records: list[dict[str, Any]] = field(default_factory=list)
    options: dict[str, Any] = field(default_factory=dict)
    hashing: _Fingerprints | None = None

    def show(self, path: Path | str) -> str:
        return self.shown.get(str(path), str(path))


class _Fingerprints:
    """The sha256 of the inputs, computed in a thread while DuckDB reads the same files.

    Hashing first and loading after would read a big input twice in a row; side by side, both
    readers share the page cache and hashlib releases the GIL. The lineage written by the COPY
    holds a random token of the digest's length per file, replaced in the Parquet footer once
    the digests are known (:meth:`stamp`): same length, so no offset in the file moves.
    """

    def __init__(self, paths: Sequence[Path]):
        self.tokens = [secrets.token_hex(32) for _ in paths]
        self._digests: list[str | None] = [None] * len(paths)
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, args=(list(paths),), daemon=True, name="mlsys-sha256")
        self._thread.start()

    def _run(self, paths: list[Path]) -> None:
        try:
            for i, path in enumerate(paths):
                self._digests[i] = sha256_file(path)
        except BaseException as exc:  # re-raised in the caller's thread by digests()
            self._error = exc

    def digests(self) -> list[str]:
        self._thread.join()
        if self._error is not None:
            raise InputError(f"cannot read an input again to fingerprint it: {self._error}")
        return [str(d) for d in self._digests]

    def stamp(self, parquet: Path) -> None:
        """Replace each token in the footer of ``parquet`` (written by DuckDB) by its digest."""
        with open(parquet, "r+b") as fh:
            fh.seek(-8, os.SEEK_END)
            tail = fh.read(8)
            if tail[4:] != b"PAR1":  # DuckDB wrote no Parquet file: a bug, not the user's input
                raise RuntimeError(f"{parquet}: not a Parquet file after writing it")
            start = fh.seek(-8 - int.from_bytes(tail[:4], "little"), os.SEEK_END)
            footer = bytearray(fh.read())
            for token, digest in zip(self.tokens, self.digests()):
                at = footer.find(token.encode())
                if at < 0 or footer.find(token.encode(), at + 1) >= 0:
                    raise RuntimeError(f"{parquet}: the lineage placeholder is not found once in the footer")
                footer[at:at + len(token)] = digest.encode()
            fh.seek(start)
            fh.write(footer)


def safe_names(names: Sequence[str]) -> list[str]:
    """Lowercase snake_case, unique, SQL- and Python-friendly column names.

    ``"Customer ID"`` -> ``customer_id``, ``"signupDate"`` -> ``signup_date``, ``"2nd"`` ->
    ``col_2nd``, a repeated name gets ``_2``, ``_3``... in order of appearance.

    Examples
    --------
    >>> safe_names(["Customer ID", "signupDate", "2nd", "a", "A", ""])
    ['customer_id', 'signup_date', 'col_2nd', 'a', 'a_2', 'col_6']
    """
    out: list[str] = []
    taken: set[str] = set()
    for i, name in enumerate(names, start=1):
        text = unicodedata.normalize("NFKD", str(name)).encode("ascii", "ignore").decode()
        text = re.sub(r"([a-z0-9])([A-Z])", r"\1_\2", text)
        text = re.sub(r"([A-Z]+)([A-Z][a-z])", r"\1_\2", text)
        text = re.sub(r"[^0-9a-zA-Z]+", "_", text).strip("_").lower() or f"col_{i}"
        if text[0].isdigit():
            text = f"col_{text}"
        candidate, n = text, 1
        while candidate in taken:
            n += 1
            candidate = f"{text}_{n}"
        taken.add(candidate)
        out.append(candidate)
    return out


def parse_schema(spec: str | Mapping[str, str] | None) -> dict[str, str]:
    """Parse ``col:type,col2:decimal(10,2)`` into ``{col: type}`` (types are checked later)."""
    if spec is None:
        return {}
    if isinstance(spec, Mapping):
        return {str(k): str(v) for k, v in spec.items()}
    result: dict[str, str] = {}
    for item in re.split(r",(?![^()]*\))", spec):
        name, sep, type_ = item.strip().rpartition(":")
        if not sep or not name.strip() or not type_.strip():
            raise UsageError(f"invalid --schema entry {item.strip()!r}", "use --schema col:type,col2:type (DuckDB types: bigint, double, varchar, date, timestamp, boolean, decimal(10,2)...)")
        result[name.strip()] = type_.strip()
    return result


def parse_columns(spec: str | Sequence[str] | None) -> list[str]:
    """``"a,b"`` or ``["a", "b"]`` -> ``["a", "b"]``."""
    if spec is None:
        return []
    items = spec.split(",") if isinstance(spec, str) else list(spec)
    return [c.strip() for c in items if c.strip()]


def ingest(
    sources: Sequence[str | os.PathLike],
    output: str | os.PathLike,
    *,
    format: str | None = None,
    dialect: CsvDialect | None = None,
    schema: str | Mapping[str, str] | None = None,
    sql: str | None = None,
    table: str | None = None,
    dedupe: bool = False,
    dedupe_on: str | Sequence[str] | None = None,
    keep_names: bool = False,
    rejects: str | os.PathLike | None = None,
    strict: bool = False,
    memory_limit: str | None = None,
    threads: int | None = None,
    progress: Any = None,
) -> IngestResult:
    """Read raw data into one Parquet table, streaming, with a report of what happened.

    Parameters
    ----------
    sources : list of str
        Files, globs, directories, ``-`` (stdin), or one ``postgresql://`` URL.
    output : path
        The Parquet file to write (atomically: the old file or the new one, never half).
    format : {"csv", "tsv", "json", "ndjson", "parquet"}, optional
        Force the input format (default: from the suffix, or sniffed from the content).
    dialect : CsvDialect, optional
        CSV parsing options; detected when not given.
    schema : str or mapping, optional
        Type overrides ``col:type,...`` in DuckDB types; a column may be named by its raw or
        its safe name.
    sql : str, optional
        DuckDB SQL over the view ``input`` (files), or the PostgreSQL query (database).
    table : str, optional
        The PostgreSQL table to read (``schema.table`` allowed).
    dedupe : bool
        Drop duplicate rows (all columns, or ``dedupe_on``), keeping the first in input order.
    dedupe_on : str or list of str, optional
        The columns that define a duplicate (implies ``dedupe``).
    keep_names : bool
        Keep the raw column names instead of renaming them to safe names.
    rejects : path, optional
        Write bad CSV rows here (Parquet: file, line, column_name, error, reason, raw_line),
        one row per bad line (its problems joined).
    strict : bool
        Any bad row is an error and nothing is written.
    memory_limit : str, optional
        DuckDB's memory limit, e.g. ``"500MB"``; bigger inputs spill to disk.
    threads : int, optional
        DuckDB threads (default: all cores).
    progress : object, optional
        ``update(completed=, total=, description=)`` receives the percentage done.

    Returns
    -------
    IngestResult
    """
    started = time.perf_counter()
    if not sources:
        raise UsageError("no input given", "mlsys ingest FILE... -o out.parquet")
    if format is not None and format not in INPUT_FORMATS:
        raise UsageError(f"unknown --format {format!r}", f"one of: {', '.join(INPUT_FORMATS)}")
    if threads is not None and threads < 1:
        raise UsageError("--threads must be at least 1")
    if str(output).endswith(("/", os.sep)) or Path(output).is_dir():
        raise InputError(f"{output}: is a directory; -o names the Parquet file to write", "e.g. -o data/all.parquet")
    if rejects is not None and Path(rejects).resolve() == Path(output).resolve():
        raise UsageError("--rejects and -o name the same file")
    output = Path(output)
    dedupe_cols = parse_columns(dedupe_on)
    overrides = parse_schema(schema)
    dialect = dialect or CsvDialect()
    if dialect.encoding:
        _codec(dialect.encoding)
    database = [s for s in map(str, sources) if s.startswith(("postgresql://", "postgres://"))]
    if sql is not None and not database:
        check_sql(sql)
    if database and len(sources) > 1:
        raise UsageError("a database URL must be the only input")
    if table and not database:
        raise UsageError("--table is for a database input (postgresql://...)")

    with contextlib.ExitStack() as stack:
        scratch = Path(stack.enter_context(temp_dir(output)))
        if database:
            source = _stage_postgres(database[0], scratch / "staged.parquet", table, sql, progress)
            sql = None
        else:
            source = _file_source(sources, format, dialect, scratch)
            source.options["buffer_size"] = _csv_buffer_size(memory_limit)
        con = _connect(memory_limit, threads, scratch, progress is not None)
        stack.callback(con.close)
        counts = _run(con, source, output, dialect, overrides, sql, dedupe or bool(dedupe_cols), dedupe_cols,
                      keep_names, rejects, strict, progress)
    return IngestResult(
        output=str(output), format=source.format, files=[source.show(p) for p in source.paths],
        seconds=round(time.perf_counter() - started, 3), rejects=str(rejects) if rejects else None, **counts,
    )


def _connect(memory_limit: str | None, threads: int | None, scratch: Path, track_progress: bool) -> Any:
    import duckdb

    con = duckdb.connect()
    # Spill next to the output (same disk, removed with the scratch directory), never in the cwd.
    con.execute(f"SET temp_directory = {_lit(str(scratch / 'spill'))}")
    # Progress is tracked only for someone who shows it (DuckDB's own bar never prints).
    con.execute(f"SET enable_progress_bar = {str(track_progress).lower()}; SET enable_progress_bar_print = false; "
                "SET progress_bar_time = 0")
    try:
        if memory_limit:
            con.execute(f"SET memory_limit = {_lit(memory_limit)}")
        if threads:
            con.execute(f"SET threads = {int(threads)}")
    except duckdb.Error as exc:
        raise UsageError(f"invalid --memory-limit {memory_limit!r}: {_first_line(exc)}", "e.g. --memory-limit 500MB") from None
    return con


# --------------------------------------------------------------------------- inputs


def _file_source(sources: Sequence[str | os.PathLike], declared: str | None, dialect: CsvDialect, scratch: Path) -> _Source:
    """Resolve files, spool stdin, transcode foreign encodings; check what can be checked cheaply."""
    raw = [str(s) for s in sources]
    files: list[Path] = []
    for text in raw:
        path = Path(text)
        if text != "-" and path.is_dir():
            files.extend(_tables_in(path))
        else:
            files.extend(resolve_inputs([text], allow_stdin=True))
    if sum(1 for f in files if str(f) == "-") > 1:
        raise UsageError("stdin (-) can be read only once")
    source = _Source(format="", paths=[])
    for f in files:
        if str(f) == "-":
            f = _spool_stdin(scratch)
            source.shown[str(f)] = "-"
        _check_file(f, source.show(f))
        source.paths.append(f)
    formats = {_format_of(f, declared, source.show(f), dialect.encoding) for f in source.paths}
    if len(formats) > 1:
        raise InputError(f"inputs mix formats ({', '.join(sorted(formats))})", "ingest one format at a time, or force one with --format")
    source.format = formats.pop()
    # Fingerprint what the user gave (stdin: the bytes received) before any transcoding, in a
    # thread while DuckDB works; the records hold placeholders until the output is stamped.
    source.hashing = _Fingerprints(source.paths)
    source.records = [_record(f, source.show(f), t) for f, t in zip(source.paths, source.hashing.tokens)]
    if source.format in ("csv", "tsv"):
        encoding = _encoding(source.paths[0], dialect.encoding)
        if encoding is None:
            source.paths = [_transcode(f, dialect.encoding, scratch, source) for f in source.paths]
            encoding = "utf-8"
        source.options["encoding"] = encoding
    return source


def _tables_in(directory: Path) -> list[Path]:
    found = sorted(p for p in directory.rglob("*") if p.is_file() and p.suffix.lower() in FORMATS and not p.name.startswith("."))
    if not found:
        raise InputError(f"{directory}: directory holds no tables", f"supported suffixes: {', '.join(sorted(FORMATS))}")
    return found


def _spool_stdin(scratch: Path) -> Path:
    """Copy stdin to a file so DuckDB can sniff it and read it in parallel, like any file."""
    path = scratch / "stdin"
    with open(path, "wb") as fh:
        shutil.copyfileobj(sys.stdin.buffer, fh, 1 << 20)
    return path


def _check_file(path: Path, shown: str) -> None:
    try:
        size = path.stat().st_size
        with open(path, "rb"):
            pass
    except OSError as exc:
        raise InputError(f"{shown}: cannot read ({exc.strerror})") from None
    if size == 0:
        raise InputError(f"{shown}: empty input")


def _format_of(path: Path, declared: str | None, shown: str, encoding: str | None = None) -> str:
    if declared:
        return declared
    fmt = FORMATS.get(path.suffix.lower())
    with open(path, "rb") as fh:
        head = fh.read(_SNIFF_BYTES)
    if head[:4] == b"PAR1":
        return "parquet"
    if fmt == "parquet":
        raise InputError(f"{shown}: not a Parquet file")
    if fmt is None:
        stripped = head.lstrip()
        fmt = "ndjson" if stripped[:1] == b"{" else "json" if stripped[:1] == b"[" else "csv"
    wide = bool(encoding) and _codec(encoding).name.startswith(("utf-16", "utf-32"))  # NUL bytes are text there
    if b"\x00" in head and not wide and not head.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        raise InputError(f"{shown}: binary data, not {fmt.upper()}", "give the right file, or force the format with --format")
    return fmt


def _record(path: Path, shown: str, sha256: str) -> dict[str, Any]:
    if shown == str(path):
        return input_record(path, sha256=sha256)
    return {"path": shown, "sha256": sha256}


def _encoding(path: Path, given: str | None) -> str | None:
    """The encoding name DuckDB understands, or None when the file must be transcoded."""
    if given:
        return _NATIVE_ENCODINGS.get(_codec(given).name)
    with open(path, "rb") as fh:
        head = fh.read(4)
    return "utf-16" if head.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)) else "utf-8"


def _codec(given: str) -> codecs.CodecInfo:
    """A text encoding Python can decode (checked before anything is read)."""
    try:
        info = codecs.lookup(given)
    except LookupError:
        raise UsageError(f"unknown --encoding {given!r}", "e.g. utf-8, utf-16-le, latin-1, cp1252, shift_jis") from None
    if not getattr(info, "_is_text_encoding", True):  # base64, zlib, rot13...: codecs, but not text encodings
        raise UsageError(f"--encoding {given!r} is not a text encoding", "e.g. utf-8, utf-16-le, latin-1, cp1252")
    return info


def _transcode(path: Path, encoding: str, scratch: Path, source: _Source) -> Path:
    """Re-encode a file to UTF-8 in chunks (bounded memory), keeping its name for the user."""
    target = scratch / f"utf8-{len(source.shown)}-{path.name}"
    try:
        with open(path, encoding=encoding, newline="") as src, open(target, "w", encoding="utf-8", newline="") as dst:
            shutil.copyfileobj(src, dst, 1 << 20)
    except UnicodeDecodeError as exc:
        raise InputError(f"{source.show(path)}: not {encoding} (byte {exc.start})", "give the right --encoding") from None
    source.shown[str(target)] = source.show(path)
    return target


def _csv_buffer_size(memory_limit: str | None) -> int | None:
    """A CSV read buffer that fits a small memory limit (DuckDB's default buffer is 32 MiB)."""
    match = re.fullmatch(r"\s*([\d.]+)\s*([kmgt]?i?b?)\s*", (memory_limit or "").lower())
    if not match:
        return None
    unit = match.group(2).rstrip("b").rstrip("i")
    limit = float(match.group(1)) * 1024 ** " kmgt".index(unit or " ")
    return int(max(4 << 20, limit // 8)) if limit < 256 << 20 else None


# --------------------------------------------------------------------------- PostgreSQL

_PG_BATCH = 20_000


def redact(url: str) -> str:
    """A database URL without its password (for messages, reports and lineage)."""
    url = re.sub(r"^(\w+://[^:/@]*):[^@]*@", r"\1:***@", url)
    return re.sub(r"(password=)[^&]*", r"\1***", url)


def _pg_arrow_type(column: Any) -> Any:
    """The Arrow type of a PostgreSQL result column, from its type OID alone.

    Decided before any row is read, so every batch of a column has one type: inferred from the
    rows, a column NULL in the first batch (or one NaN numeric, or a ragged array) gave a later
    batch another type and the load died. A type not listed here is kept as its text.
    """
    import pyarrow as pa

    oid = column.type_code
    if oid == 1700:  # numeric: exact decimal when its precision is declared and fits
        p, s = column.precision, column.scale
        return pa.decimal128(p, s or 0) if p and p <= 38 else pa.float64()
    return {
        16: pa.bool_(), 17: pa.binary(), 20: pa.int64(), 21: pa.int16(), 23: pa.int32(), 26: pa.int64(),
        700: pa.float32(), 701: pa.float64(), 1082: pa.date32(), 1083: pa.time64("us"),
        1114: pa.timestamp("us"), 1184: pa.timestamp("us", tz="UTC"),
        1000: pa.list_(pa.bool_()), 1005: pa.list_(pa.int16()), 1007: pa.list_(pa.int32()), 1016: pa.list_(pa.int64()),
        1021: pa.list_(pa.float32()), 1022: pa.list_(pa.float64()), 1009: pa.list_(pa.string()), 1015: pa.list_(pa.string()),
    }.get(oid, pa.string())


def _pg_array(values: Sequence[Any], type_: Any, name: str, shown: str) -> Any:
    import pyarrow as pa

    if pa.types.is_floating(type_):
        values = [None if v is None else float(v) for v in values]
    elif pa.types.is_decimal(type_):  # numeric(p,s) holds NaN, which no decimal type has: a missing value
        values = [None if v is None or v.is_nan() else v for v in values]
    elif pa.types.is_string(type_):  # ranges, geometry, json: their text; arrays of other types as JSON
        values = [None if v is None else v if isinstance(v, str) else json.dumps(v, default=str) if isinstance(v, list)
                  else str(v) for v in values]
    try:
        return pa.array(values, type=type_)
    except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:  # a multi-dimensional array, a numeric beyond its decimal
        raise InputError(f"{shown}: column {name!r}: cannot be read as {type_} ({_first_line(exc)})",
                         f"cast it in the query, e.g. --sql 'SELECT ..., {name}::text AS {name} FROM ...'") from None


def _stage_postgres(url: str, path: Path, table: str | None, sql: str | None, progress: Any) -> _Source:
    """Stream a query's rows in batches into a Parquet file (bounded memory)."""
    import psycopg
    import pyarrow as pa
    import pyarrow.parquet as pq
    from psycopg import sql as pgsql
    from psycopg.types.string import TextLoader

    if bool(table) == bool(sql):
        raise UsageError("a database input needs exactly one of --table NAME or --sql QUERY")
    shown = redact(url)
    query = pgsql.SQL("SELECT * FROM {}").format(pgsql.Identifier(*table.split("."))) if table else sql
    writer = None
    try:
        with psycopg.connect(url, connect_timeout=10, application_name="mlsys ingest") as conn:
            for name in ("json", "jsonb", "uuid", "interval"):  # keep their text (Parquet has no interval of months)
                conn.adapters.register_loader(name, TextLoader)
            conn.execute("SET TIME ZONE 'UTC'")
            with conn.cursor(name="mlsys_ingest") as cur:
                cur.execute(query)
                if not cur.description:
                    raise InputError(f"{shown}: the query returns no columns")
                types = [_pg_arrow_type(c) for c in cur.description]
                names = [c.name for c in cur.description]
                done = 0
                while rows := cur.fetchmany(_PG_BATCH):
                    arrays = [_pg_array(col, t, n, shown) for col, t, n in zip(zip(*rows), types, names)]
                    batch = pa.RecordBatch.from_arrays(arrays, names=names)
                    if writer is None:
                        writer = pq.ParquetWriter(path, batch.schema, compression="zstd")
                    writer.write_batch(batch)
                    done += len(rows)
                    if progress is not None:
                        progress.update(description=f"ingest: {done:,} rows from {shown}")
                if writer is None:  # no rows: keep the columns
                    schema = pa.schema(list(zip(names, types)))
                    writer = pq.ParquetWriter(path, schema, compression="zstd")
    except psycopg.OperationalError as exc:
        raise InputError(f"cannot connect to {shown}: {_pg_message(exc, url)}") from None
    except psycopg.errors.SyntaxError as exc:
        raise UsageError(f"--sql: {_pg_message(exc, url)}") from None
    except psycopg.DataError as exc:  # a value Python cannot hold: 'infinity'::date, a date BC
        raise InputError(f"{shown}: {_pg_message(exc, url)}",
                         "convert the column in --sql, e.g. NULLIF(d, 'infinity') or d::text") from None
    except psycopg.Error as exc:
        raise InputError(f"{shown}: {_pg_message(exc, url)}") from None
    finally:
        if writer is not None:
            writer.close()
    text = query.as_string(None) if table else query
    return _Source(format="parquet", paths=[path], shown={str(path): shown},
                   records=[{"path": shown, "query": text}])


def _pg_message(exc: BaseException, url: str) -> str:
    """psycopg's first line, with the password scrubbed should the server echo it."""
    from psycopg.conninfo import conninfo_to_dict

    message = _first_line(exc)
    with contextlib.suppress(Exception):
        password = conninfo_to_dict(url).get("password")
        if password:
            message = message.replace(str(password), "***")
    return message


# --------------------------------------------------------------------------- the query


def _run(con: Any, source: _Source, output: Path, dialect: CsvDialect, overrides: dict[str, str], sql: str | None,
         dedupe: bool, dedupe_cols: list[str], keep_names: bool, rejects: Any, strict: bool, progress: Any) -> dict[str, Any]:
    import duckdb

    csv = source.format in ("csv", "tsv")
    raw_cols = _describe(con, f"SELECT * FROM {_reader(source, dialect, {})}", source)
    if csv:
        _check_csv_columns(con, source, dialect, raw_cols)
    names = list(raw_cols) if keep_names else safe_names(list(raw_cols))
    renames = [{"from": a, "to": b} for a, b in zip(raw_cols, names) if a != b]
    types = _resolve_overrides(con, overrides, list(raw_cols), names)
    decimal: list[str] = []
    if csv:
        decimal = _decimal_comma(con, source, dialect, {c: t for c, t in raw_cols.items() if c not in types})
        types = {**_tolerant_types(con, source, dialect, {c: t for c, t in raw_cols.items() if c not in decimal}),
                 **types, **{c: "VARCHAR" for c in decimal}}
        _refuse_ambiguous_dates(con, source, dialect, {**raw_cols, **types})
    reader = _reader(source, dialect, types if csv else {})
    select = ", ".join(f"{_column(a, types, csv, decimal)} AS {quote_ident(b)}" for a, b in zip(raw_cols, names))
    # In a one-column CSV a blank line reads as a missing value: it is a blank line, not a row.
    blank = f" WHERE {quote_ident(next(iter(raw_cols)))} IS NOT NULL" if csv and len(raw_cols) == 1 else ""
    con.execute(f"CREATE TEMP VIEW input AS SELECT {select} FROM {reader}{blank}")

    query = sql or "SELECT * FROM input"
    try:
        out_cols = list(con.execute(f"DESCRIBE {query}").fetchall())
    except duckdb.Error as exc:
        raise UsageError(f"--sql: {_first_line(exc)}", "the input is the view `input`; columns: " + ", ".join(names[:30])) from None
    if sql and not keep_names:
        final = safe_names([c[0] for c in out_cols])
        renames += [{"from": c[0], "to": n} for c, n in zip(out_cols, final) if c[0] != n]
        query = f"SELECT {', '.join(f'{quote_ident(c[0])} AS {quote_ident(n)}' for c, n in zip(out_cols, final))} FROM ({query})"
        out_cols = [(n, *c[1:]) for c, n in zip(out_cols, final)]
    columns = [{"name": c[0], "type": str(c[1])} for c in out_cols]
    if not columns:
        raise InputError("the input has no columns")

    rows_before = None
    if dedupe:
        keys = dedupe_cols or [c["name"] for c in columns]
        missing = [k for k in keys if k not in {c["name"] for c in columns}]
        if missing:
            raise InputError(f"--dedupe-on: no column {missing[0]!r}", "columns: " + ", ".join(c["name"] for c in columns[:30]))
        # Counting costs one more pass over the input; only dedupe (and --sql) need it.
        rows_before = _scalar(con, _count_rows(query), source)
        query = _dedupe_query(query, keys)
    rows_input = _scalar(con, _count_rows("SELECT * FROM input"), source) if sql else rows_before

    lineage = Lineage(command="ingest", inputs=source.records, args=_args(source),
                      extra={k: v for k, v in (("format", source.format), ("sql", sql), ("schema", overrides or None),
                                               ("dedupe", (dedupe_cols or "all") if dedupe else None)) if v})
    meta = lineage_metadata(lineage)
    if csv:
        con.execute(f"DELETE FROM {_REJECTS}; DELETE FROM {_SCANS}") if _has_rejects_tables(con) else None
    with atomic_path(output, suffix=".parquet") as tmp:
        copy = f"COPY ({query}) TO {_lit(str(tmp))} (FORMAT PARQUET, COMPRESSION ZSTD, KV_METADATA {{mlsys: {_lit(meta)}}})"
        with _progress(con, progress):
            written = _scalar(con, copy, source)
        if source.hashing is not None:
            source.hashing.stamp(tmp)
        # One line can have several problems (a bad value and a missing field): count lines.
        rejected = _scalar(con, f"SELECT count(DISTINCT (scan_id, file_id, line)) FROM {_REJECTS}", source) if csv else 0
        if rejected:
            _refuse_rejects(con, source, rejected, strict, written)
        if rejects:
            _write_rejects(con, source, rejects, csv)
    rows_read = (written if rows_input is None else rows_input) + rejected
    return {
        "rows_read": rows_read, "rows_written": written, "rows_rejected": rejected,
        "duplicates_dropped": (rows_before - written) if rows_before is not None else 0,
        "columns": columns, "renames": renames,
    }


def _count_rows(query: str) -> str:
    """Count the rows of ``query`` reading every column: ``count(*)`` alone skips parsing them, so
    a line with a bad value would be counted here and rejected by the real read."""
    return f"SELECT count(*) FROM ({query}) AS _mlsys_row WHERE hash(_mlsys_row) IS NOT NULL"


def check_sql(sql: str) -> None:
    """``--sql`` is one read-only query (SELECT, WITH ... SELECT, FROM ...): a second statement
    (``...; COPY ... TO 'x'``) or any other kind would run with the user's file-system rights."""
    import duckdb

    try:
        statements = duckdb.extract_statements(sql)
    except duckdb.Error as exc:
        raise UsageError(f"--sql: {_first_line(exc)}") from None
    if len(statements) != 1:
        raise UsageError(f"--sql holds {len(statements)} statements; give one SELECT query",
                         "e.g. --sql \"SELECT * FROM input WHERE amount > 0\"")
    if statements[0].type != duckdb.StatementType.SELECT:
        raise UsageError(f"--sql must be a SELECT query, not {statements[0].type.name}",
                         "transform with SELECT ... FROM input; mlsys writes the output itself")


def _reader(source: _Source, dialect: CsvDialect, types: dict[str, str]) -> str:
    """The DuckDB table function that reads the files."""
    files = "[" + ", ".join(_lit(str(p)) for p in source.paths) + "]"
    if source.format == "parquet":
        return f"read_parquet({files}, union_by_name = true)"
    if source.format in ("json", "ndjson"):
        fmt = "newline_delimited" if source.format == "ndjson" else "auto"
        return f"read_json({files}, format = {_lit(fmt)}, union_by_name = true)"
    delimiter = dialect.delimiter or ("\t" if source.format == "tsv" else None)
    opts = [f"encoding = {_lit(source.options['encoding'])}"]
    if delimiter:
        opts.append(f"delim = {_lit(delimiter)}")
    if dialect.header is not None:
        opts.append(f"header = {str(dialect.header).lower()}")
    if dialect.quote is not None:
        opts.append(f"quote = {_lit(dialect.quote)}")
    if types:
        opts.append("types = {" + ", ".join(f"{_lit(k)}: {_lit(v)}" for k, v in types.items()) + "}")
    if source.options.get("buffer_size"):
        opts.append(f"buffer_size = {source.options['buffer_size']}")
    # Bad rows go to the rejects tables and the load goes on; union_by_name cannot be combined
    # with them, so all files must share the first file's columns (checked before).
    opts.append(f"store_rejects = true, rejects_table = {_lit(_REJECTS)}, rejects_scan = {_lit(_SCANS)}")
    return f"read_csv({files}, {', '.join(opts)})"


def _describe(con: Any, query: str, source: _Source) -> dict[str, str]:
    import duckdb

    try:
        rows = con.execute(f"DESCRIBE {query}").fetchall()
    except duckdb.Error as exc:
        raise InputError(f"{_shown_files(source)}: cannot read as {source.format}: {_first_line(exc)}") from None
    return {r[0]: str(r[1]) for r in rows}


def _check_csv_columns(con: Any, source: _Source, dialect: CsvDialect, cols: dict[str, str]) -> None:
    """Refuse a wrong delimiter and files whose columns differ from the first file's."""
    first = list(cols)
    if len(first) == 1:
        found = [d for d in _DELIMITERS if d in first[0] and d != dialect.delimiter]
        if found:
            given = f"with delimiter {dialect.delimiter!r}" if dialect.delimiter else "(delimiter not detected)"
            raise InputError(f"{source.show(source.paths[0])}: one column {given}, but the header holds {found[0]!r}",
                             f"use --delimiter {found[0]!r}" if found[0] != "\t" else "use --delimiter $'\\t' or --format tsv")
    for path in source.paths[1:]:
        single = _Source(format=source.format, paths=[path], shown=source.shown, options=source.options)
        cols_i = list(_describe(con, f"SELECT * FROM {_reader(single, dialect, {})}", single))
        if cols_i != first:
            raise InputError(f"{source.show(path)}: columns differ from {source.show(source.paths[0])} ({len(cols_i)} vs {len(first)} columns)",
                             "ingest files with different columns separately")


def _resolve_overrides(con: Any, overrides: dict[str, str], raw: list[str], names: list[str]) -> dict[str, str]:
    """Map ``--schema`` names (raw or safe) to raw names and check each type with DuckDB."""
    import duckdb

    by_name = {**dict(zip(names, raw)), **{r: r for r in raw}}
    types: dict[str, str] = {}
    for name, type_ in overrides.items():
        if not _TYPE_RE.match(type_):
            raise UsageError(f"--schema: invalid type {type_!r} for {name!r}", "DuckDB types: bigint, double, varchar, date, timestamp, boolean, decimal(10,2)...")
        try:
            con.execute(f"SELECT CAST(NULL AS {type_})")
        except duckdb.Error:
            raise UsageError(f"--schema: unknown type {type_!r} for {name!r}", "DuckDB types: bigint, double, varchar, date, timestamp, boolean, decimal(10,2)...") from None
        if name not in by_name:
            raise InputError(f"--schema: no column {name!r} in the input", "columns: " + ", ".join(names[:30]))
        types[by_name[name]] = type_
    return types


def _tolerant_types(con: Any, source: _Source, dialect: CsvDialect, cols: dict[str, str]) -> dict[str, str]:
    """Number/date columns with a few bad values: type them and quarantine the bad rows.

    DuckDB's sniffer turns a column into text when one sampled value does not parse
    (``"79.9O"`` among prices); here a text column whose non-empty sampled values parse as
    one type in at least 99.5% of cases gets that type, and the rows that do not parse go to
    the rejects (``--schema col:varchar`` keeps such a column as text).
    """
    text = [c for c, t in cols.items() if t == "VARCHAR"]
    if not text:
        return {}
    first = _Source(format=source.format, paths=source.paths[:1], shown=source.shown, options=source.options)
    sample = f"(SELECT * FROM {_reader(first, dialect, {})} LIMIT {_SAMPLE_ROWS})"
    aggs = [f"count(NULLIF(trim({quote_ident(c)}), ''))" for c in text]
    # DuckDB casts '29.65' to the integer 30: an integer column must hold integer literals.
    aggs += [f"count(TRY_CAST({quote_ident(c)} AS {t}))" if t != "BIGINT" else
             f"count(CASE WHEN regexp_full_match(trim({quote_ident(c)}), '[+-]?[0-9]+') THEN TRY_CAST({quote_ident(c)} AS BIGINT) END)"
             for c in text for t in _TOLERANT]
    counts = con.execute(f"SELECT {', '.join(aggs)} FROM {sample}").fetchone()
    types: dict[str, str] = {}
    for i, col in enumerate(text):
        total = counts[i]
        for j, type_ in enumerate(_TOLERANT):
            good = counts[len(text) + i * len(_TOLERANT) + j]
            if total >= 20 and good < total and good >= 0.995 * total:
                types[col] = type_
                break
    return types


def _column(name: str, types: dict[str, str], csv: bool, decimal: Sequence[str]) -> str:
    """A column of the ``input`` view: CSV types are given to the reader, other formats cast here."""
    if name in decimal:
        return decimal_comma_number(name)
    return f"CAST({quote_ident(name)} AS {types[name]})" if name in types and not csv else quote_ident(name)


def _decimal_comma(con: Any, source: _Source, dialect: CsvDialect, cols: dict[str, str]) -> list[str]:
    """:func:`mlsys_cli.data.io.decimal_comma_columns` on the first file's sampled rows."""
    first = _Source(format=source.format, paths=source.paths[:1], shown=source.shown, options=source.options)

    def stats(text: Sequence[str], select: str) -> tuple:
        sample = f"(SELECT * FROM {_reader(first, dialect, {c: 'VARCHAR' for c in text})} LIMIT {_SAMPLE_ROWS})"
        return con.execute(f"SELECT {select} FROM {sample}").fetchone()

    def delimiter() -> str | None:
        if dialect.delimiter or source.format == "tsv":
            return dialect.delimiter or "\t"
        found = con.execute(f"SELECT Delimiter FROM sniff_csv({_lit(str(source.paths[0]))}, "
                            f"encoding = {_lit(source.options['encoding'])})").fetchall()
        return found[0][0] if found else None

    return decimal_comma_columns(DecimalCommaProbe(cols, stats, delimiter, source.show(source.paths[0])))


def _refuse_ambiguous_dates(con: Any, source: _Source, dialect: CsvDialect, cols: dict[str, str]) -> None:
    """:func:`mlsys_cli.data.io.refuse_ambiguous_dates` on the first file's sampled rows, as text."""
    from mlsys_cli.data.io import dated_columns, refuse_ambiguous_dates

    dated = dated_columns(cols)
    if dated:
        first = _Source(format=source.format, paths=source.paths[:1], shown=source.shown, options=source.options)
        sample = f"(SELECT * FROM {_reader(first, dialect, {c: 'VARCHAR' for c in dated})} LIMIT {_SAMPLE_ROWS})"
        refuse_ambiguous_dates(con, sample, dated, source.show(source.paths[0]))


def _dedupe_query(query: str, keys: list[str]) -> str:
    """Keep the first row of each key in input order (row_number over the ordered stream)."""
    part = ", ".join(quote_ident(k) for k in keys)
    return (f"SELECT * EXCLUDE ({_ROW}) FROM (SELECT *, row_number() OVER () AS {_ROW} FROM ({query})) "
            f"QUALIFY row_number() OVER (PARTITION BY {part} ORDER BY {_ROW}) = 1 ORDER BY {_ROW}")


def _scalar(con: Any, query: str, source: _Source) -> int:
    import duckdb

    try:
        with cancel_with(con.interrupt):
            return int(con.execute(query).fetchone()[0])
    except duckdb.OutOfMemoryException as exc:
        raise InputError(f"out of memory: {_first_line(exc)}", "raise --memory-limit or lower --threads") from None
    except duckdb.Error as exc:
        raise InputError(f"{_shown_files(source)}: {_first_line(exc)}") from None


def _has_rejects_tables(con: Any) -> bool:
    return bool(con.execute("SELECT count(*) FROM duckdb_tables() WHERE table_name = ?", [_REJECTS]).fetchone()[0])


def _rejects_query(source: _Source) -> str:
    shown = " ".join(f"WHEN {_lit(k)} THEN {_lit(v)}" for k, v in source.shown.items())
    file = f"CASE s.file_path {shown} ELSE s.file_path END" if shown else "s.file_path"
    # One row per bad line (a line can hold several problems: a bad value and a missing field).
    return (f"SELECT {file} AS file, e.line::BIGINT AS line, "
            f"string_agg(DISTINCT e.column_name, ', ' ORDER BY e.column_name) AS column_name, "
            f"string_agg(DISTINCT e.error_type::VARCHAR, ', ' ORDER BY e.error_type::VARCHAR) AS error, "
            f"string_agg(e.error_message, '; ' ORDER BY e.column_idx) AS reason, first(e.csv_line) AS raw_line "
            f"FROM {_REJECTS} e JOIN {_SCANS} s USING (scan_id, file_id) "
            f"GROUP BY e.file_id, {file}, e.line ORDER BY e.file_id, e.line")


def _refuse_rejects(con: Any, source: _Source, rejected: int, strict: bool, written: int) -> None:
    if not strict and written:
        return
    file, line, _, error, reason, _ = con.execute(_rejects_query(source) + " LIMIT 1").fetchone()
    where = f"{file}:{line}: {reason or error}"
    if strict:
        raise InputError(f"{rejected} bad row{'s' if rejected > 1 else ''} (--strict); first at {where}",
                         "drop --strict and add --rejects FILE to quarantine them")
    raise InputError(f"no row could be read, all {rejected} rejected; first at {where}",
                     "check --delimiter, --encoding, --quote and --schema")


def _write_rejects(con: Any, source: _Source, path: Any, csv: bool) -> None:
    """The quarantined rows, one per bad line, in file and line order (empty when none)."""
    query = _rejects_query(source) if csv else (
        "SELECT NULL::VARCHAR AS file, NULL::BIGINT AS line, NULL::VARCHAR AS column_name, NULL::VARCHAR AS error, "
        "NULL::VARCHAR AS reason, NULL::VARCHAR AS raw_line LIMIT 0")
    with atomic_path(path, suffix=".parquet") as tmp:
        con.execute(f"COPY ({query}) TO {_lit(str(tmp))} (FORMAT PARQUET, COMPRESSION ZSTD)")


@contextlib.contextmanager
def _progress(con: Any, progress: Any) -> Iterator[None]:
    """Poll DuckDB's own progress estimate while the COPY runs."""
    if progress is None:
        yield
        return
    done = threading.Event()

    def poll() -> None:
        while not done.wait(0.2):
            pct = con.query_progress()
            if pct >= 0:
                progress.update(completed=pct, total=100)

    thread = threading.Thread(target=poll, daemon=True)
    thread.start()
    try:
        yield
    finally:
        done.set()
        thread.join()


def _args(source: _Source) -> list[str]:
    """The command line for the lineage, with any database password removed."""
    return [redact(a) if a.startswith(("postgresql://", "postgres://")) else a for a in invocation()]


def _shown_files(source: _Source) -> str:
    shown = [source.show(p) for p in source.paths]
    return shown[0] if len(shown) == 1 else f"{shown[0]} (+{len(shown) - 1} files)"



def _lit(text: str) -> str:
    return "'" + str(text).replace("'", "''") + "'"


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return re.sub(r"^[A-Za-z ]+ Error: ", "", text)


__all__ = ["CsvDialect", "IngestResult", "ingest", "parse_columns", "parse_schema", "redact", "safe_names"]
