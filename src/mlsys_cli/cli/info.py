"""mlsys info: describe a table, a bundle or an ONNX model."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from mlsys_cli import console
from mlsys_cli.cli._common import JsonOpt, ReportOpt


def _human(result: Any) -> None:
    d = result.to_dict()
    if d.get("kind") == "table":
        console.kv(f"{d['path']} ({d['format']})", {"rows": d["rows"], "columns": len(d["columns"])})
        console.records("columns", d["columns"], ["name", "type", "nulls"])
        for i, step in enumerate(d["lineage"]):
            inputs = ", ".join(x["path"] for x in step["inputs"]) or "-"
            console.kv(f"lineage[{i}]: mlsys {step['command']}", {
                "args": " ".join(step.get("args") or []), "inputs": inputs, "rows": step.get("rows"),
                "role": step.get("role"), "seed": step.get("seed"), "target": step.get("target"),
            })
        return
    render = getattr(result, "render", None)
    if render:
        render(console)
    else:
        console.kv(str(d.get("path")), d)


def command(
    path: Annotated[Path, typer.Argument(help="A table (Parquet, CSV, JSON), a .mlsys bundle or an .onnx model.")],
    json_: JsonOpt = False,
    report: ReportOpt = None,
) -> None:
    """Describe a table, a bundle or an ONNX model.

    Tables: rows, columns and types, null counts, and the lineage chain of
    every mlsys command that made them. Bundles and ONNX models: the manifest.

    Examples:

        mlsys info data/train.parquet

        mlsys info model.mlsys --json | jq .metrics
    """
    from mlsys_cli.describe import describe

    console.emit(describe(path), as_json=json_, report=str(report) if report else None, human=_human)
