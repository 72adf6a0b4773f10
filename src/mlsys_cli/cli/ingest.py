"""mlsys ingest: raw files, stdin or PostgreSQL into one clean Parquet table."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from mlsys_cli import console
from mlsys_cli.cli._common import ByteSize, JsonOpt, OutputOpt, ReportOpt, integer, output_path


def _human(result: Any) -> None:
    d = result.to_dict()
    console.kv(f"{d['output']} ({d['format']}, {len(d['files'])} input{'s' if len(d['files']) != 1 else ''})", {
        "rows read": d["rows_read"], "rows written": d["rows_written"], "rows rejected": d["rows_rejected"],
        "duplicates dropped": d["duplicates_dropped"], "rejects": d["rejects"], "seconds": d["seconds"],
    })
    console.records("columns", d["columns"], ["name", "type"])
    if d["renames"]:
        console.records("renamed", d["renames"], ["from", "to"])


def command(
    inputs: Annotated[list[str], typer.Argument(help="Files, globs, directories, - (stdin), or a postgresql:// URL.", show_default=False)],
    output: OutputOpt,
    format_: Annotated[Optional[str], typer.Option("--format", help="Force the input format: csv, tsv, json, ndjson, parquet.")] = None,
    delimiter: Annotated[Optional[str], typer.Option("--delimiter", help="CSV field separator (default: detected).")] = None,
    no_header: Annotated[bool, typer.Option("--no-header", help="The CSV has no header line; columns become column0, column1...")] = False,
    encoding: Annotated[Optional[str], typer.Option("--encoding", help="Text encoding (default: UTF-8, or UTF-16 by its BOM).")] = None,
    quote: Annotated[Optional[str], typer.Option("--quote", help="CSV quote character (default: detected).")] = None,
    schema: Annotated[Optional[str], typer.Option("--schema", help="Type overrides: col:type,... (DuckDB types).")] = None,
    sql: Annotated[Optional[str], typer.Option("--sql", help="DuckDB SQL over the view `input`; for a database, the query to run.")] = None,
    table: Annotated[Optional[str], typer.Option("--table", help="The database table to read.")] = None,
    dedupe: Annotated[bool, typer.Option("--dedupe", help="Drop duplicate rows (all columns); the first one stays.")] = False,
    dedupe_on: Annotated[Optional[str], typer.Option("--dedupe-on", help="Drop rows whose COLS repeat (col1,col2); implies --dedupe.")] = None,
    keep_names: Annotated[bool, typer.Option("--keep-names", help="Keep raw column names (default: safe snake_case).")] = False,
    rejects: Annotated[Optional[Path], typer.Option("--rejects", parser=output_path, help="Write bad rows here (Parquet) with the reason.")] = None,
    strict: Annotated[bool, typer.Option("--strict", help="Any bad row is an error (exit 3), nothing is written.")] = False,
    memory_limit: Annotated[Optional[str], typer.Option("--memory-limit", envvar="MLSYS_MEMORY_LIMIT", click_type=ByteSize(), help="DuckDB memory limit, e.g. 500MB; more spills to disk.")] = None,
    threads: Annotated[Optional[int], typer.Option("--threads", envvar="MLSYS_THREADS", click_type=integer(1, 1024), help="DuckDB threads (default: all cores).")] = None,
    json_: JsonOpt = False,
    report: ReportOpt = None,
) -> None:
    """Load raw data into one clean Parquet table.

    CSV/TSV, JSON/NDJSON and Parquet files (globs, directories, - for stdin)
    or a PostgreSQL query, streamed by DuckDB: inputs larger than memory work.
    Columns get safe names; bad rows go to --rejects with the reason.

    Examples:

        mlsys ingest raw/*.csv -o data/all.parquet --rejects data/rejects.parquet

        cat events.ndjson | mlsys ingest - -o events.parquet --dedupe-on event_id

        mlsys ingest raw.csv -o t.parquet --schema id:bigint,price:decimal(10,2) --strict

        mlsys ingest postgresql://me@db:5432/shop --table orders -o orders.parquet
    """
    from mlsys_cli.data.ingest import CsvDialect, ingest

    with console.progress("ingest", total=100) as bar:
        result = ingest(
            inputs, output, format=format_, table=table, sql=sql, schema=schema,
            dialect=CsvDialect(delimiter=delimiter, header=False if no_header else None, encoding=encoding, quote=quote),
            dedupe=dedupe, dedupe_on=dedupe_on, keep_names=keep_names, rejects=rejects, strict=strict,
            memory_limit=memory_limit, threads=threads, progress=bar,
        )
    if not result.rows_read:
        console.warn("the input holds no rows (a header only?): wrote a table with its columns and no rows")
    if result.rows_rejected and not rejects:
        console.warn(f"{result.rows_rejected} bad rows skipped; keep them with --rejects FILE, or refuse them with --strict")
    console.emit(result, as_json=json_, report=str(report) if report else None, human=_human)
