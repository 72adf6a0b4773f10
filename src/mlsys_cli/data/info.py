"""What a table is: rows, columns and types, null counts, and its lineage chain."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mlsys_cli.data.io import detect_format, quote_ident, read_lineage, resolve_inputs, scan_table
from mlsys_cli.errors import InputError


@dataclass(frozen=True)
class TableInfo:
    """Description of a table, as ``mlsys info`` shows it."""

    path: str
    format: str
    rows: int
    columns: list[dict[str, Any]]
    lineage: list[dict[str, Any]] = field(default_factory=list)
    kind: str = "table"

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "path": self.path, "format": self.format, "rows": self.rows,
                "columns": self.columns, "lineage": self.lineage}


def lineage_chain(lineage: dict[str, Any] | None) -> list[dict[str, Any]]:
    """Flatten nested lineage (each input's own lineage) into steps, newest first."""
    chain: list[dict[str, Any]] = []
    frontier = [lineage] if lineage else []
    while frontier:
        step = frontier.pop(0)
        inputs = step.get("inputs", [])
        chain.append({
            "command": step.get("command"), "version": step.get("version"), "args": step.get("args", []),
            "rows": step.get("rows"), "seed": step.get("seed"), "role": step.get("role"), "target": step.get("target"),
            "inputs": [{"path": i.get("path"), "sha256": i.get("sha256")} for i in inputs],
        })
        frontier.extend(i["lineage"] for i in inputs if i.get("lineage"))
    return chain


def describe_table(path: str | Path) -> TableInfo:
    """Describe a table file (Parquet, CSV, JSON...) without loading it into memory."""
    files = resolve_inputs([path])
    fmt = detect_format(files[0])
    relation = scan_table(files)
    names = relation.columns
    types = [str(t) for t in relation.types]
    if not names:
        raise InputError(f"{path}: table has no columns")
    counts = relation.aggregate(", ".join(["count(*)"] + [f"count({quote_ident(n)})" for n in names])).fetchall()[0]
    rows = int(counts[0])
    columns = [{"name": n, "type": t, "nulls": rows - int(c)} for n, t, c in zip(names, types, counts[1:])]
    lineage = read_lineage(files[0]) if fmt == "parquet" and len(files) == 1 else None
    chain = lineage_chain(lineage)
    if chain and chain[0]["rows"] is None:  # streaming writers stamp lineage before the count is known
        chain[0]["rows"] = rows
    return TableInfo(path=str(path), format=fmt, rows=rows, columns=columns, lineage=chain)
