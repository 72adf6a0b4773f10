"""mlsys export: a model bundle as one ONNX graph, parity verified."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from mlsys_cli import console
from mlsys_cli.cli._common import JsonOpt, OutputOpt, ReportOpt, SeedOpt, integer


def _human(result: Any) -> None:
    d = result.to_dict()
    diff = f"{d['max_abs_diff']:.3g}" + (f" (relative {d['max_rel_diff']:.3g})" if d["max_rel_diff"] is not None else "")
    diff += f" <= {d['tolerance']:g}"
    if d["calibrator_max_abs_diff"] is not None:  # checked piece by piece (commands/export.md)
        diff = (f"model {d['uncalibrated_max_abs_diff']:.3g} <= {d['tolerance']:g}, calibrator "
                f"{d['calibrator_max_abs_diff']:.3g}, end to end {d['max_abs_diff']:.3g}")
    console.kv(f"{d['output']}: ONNX parity verified ({d['task']}, {d['predictor']})", {
        "model": d["model"], "rows checked": f"{d['rows_checked']} from {d['data']}",
        "max abs diff": diff, "labels equal": d["labels_equal"],
        "size_bytes": d["size_bytes"], "load_seconds": d["load_seconds"],
        "opset": ", ".join(f"{k} {v}" for k, v in d["opset"].items()),
        "inputs": len(d["inputs"]), "outputs": ", ".join(d["outputs"]),
    })


def _warnings(d: dict[str, Any]) -> list[str]:
    return d["warnings"]


def command(
    model: Annotated[Path, typer.Argument(help="A model bundle (.mlsys) from mlsys train, ensemble or compress.")],
    output: OutputOpt,
    data: Annotated[Optional[list[Path]], typer.Option("--data", help="Rows to check parity on (e.g. valid.parquet); default: rows synthesised from the bundle's reference statistics.")] = None,
    rows: Annotated[int, typer.Option("--rows", click_type=integer(1, 10_000_000), help="Rows checked (sampled from --data with --seed).")] = 2000,
    threads: Annotated[Optional[int], typer.Option("--threads", click_type=integer(1, 1024), help="onnxruntime intra-op threads of the check (default 1).")] = None,
    seed: SeedOpt = 0,
    json_: JsonOpt = False,
    report: ReportOpt = None,
) -> None:
    """Export a model bundle to ONNX, checking parity first.

    One graph from the raw input columns (strings, float numbers, int64
    epoch-second datetimes) through featurization to `label` and
    `probabilities` (or `prediction`), the manifest in its metadata. The
    graph and the bundle are run on the same rows; any probability more
    than 1e-5 apart or any label different refuses the export (exit 3,
    nothing written).

    Examples:

        mlsys export model.mlsys --data data/valid.parquet -o model.onnx

        mlsys export ens.mlsys -o ens.onnx --json | jq .max_abs_diff
    """
    from mlsys_cli.deploy.export import export_model

    with console.progress("exporting", total=4) as bar:
        result = export_model(model, output, data=[str(p) for p in data] if data else None, rows=rows, seed=seed,
                              threads=threads, progress=bar)
    console.emit(result, as_json=json_, report=str(report) if report else None, human=_human, warnings=_warnings)
