"""mlsys compress: prune, quantize, distill or factorize a model, measured."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from mlsys_cli import console
from mlsys_cli.cli._common import JsonOpt, ReportOpt, SeedOpt, integer, number, output_path

_COLUMNS = ["name", "technique", "format", "METRIC", "drop", "onnx_bytes", "size_ratio", "single_row_ms", "speedup",
            "batch_ms", "qualifies", "kept"]


def _human(result: Any) -> None:
    d = result.to_dict()
    metric, o = d["metric"], d["original"]
    rows = [{"name": "original", "technique": "-", "format": "mlsys" if d["model"].endswith(".mlsys") else "onnx",
             metric: o[metric], "drop": 0.0, "onnx_bytes": o["onnx_bytes"], "size_ratio": 1.0,
             "single_row_ms": o["single_row_ms"], "speedup": 1.0, "batch_ms": o["batch_ms"], "qualifies": None, "kept": None}]
    rows += d["candidates"]
    console.records(f"candidates measured on {d['rows']['measure']} held-out rows ({metric}, "
                    f"{'higher' if d['higher_is_better'] else 'lower'} is better; batch of {o['batch_rows']} rows)",
                    rows, [metric if c == "METRIC" else c for c in _COLUMNS])
    console.kv(None, {"verdict": d["verdict"], "output": d["output"]})


def _warnings(d: dict[str, Any]) -> list[str]:
    from mlsys_cli.features.unseen import input_warnings

    return [f"{s['technique']}: {s['reason']}" for s in d["skipped"]] + input_warnings(d)


def command(
    model: Annotated[Path, typer.Argument(help="The model: a .mlsys bundle (or an .onnx file from mlsys export).")],
    data: Annotated[Optional[list[Path]], typer.Option("--data", help="Held-out rows with the target (repeatable).")] = None,
    output: Annotated[Optional[Path], typer.Option("-o", "--output", parser=output_path, help="Where to write the kept model: .mlsys or .onnx.")] = None,
    max_metric_drop: Annotated[str, typer.Option("--max-metric-drop", help="Allowed worsening of the primary metric: 0.005, or 1% of it.")] = "0.005",
    technique: Annotated[Optional[list[str]], typer.Option("--technique", help="pruning, quantization, distillation or low-rank (repeatable; default all).")] = None,
    prefer: Annotated[str, typer.Option("--prefer", help="Keep the smallest (size) or the fastest (latency) qualifying candidate.")] = "size",
    require_gain: Annotated[bool, typer.Option("--require-gain", help="Exit 4 and write nothing when no candidate qualifies.")] = False,
    transfer: Annotated[Optional[list[Path]], typer.Option("--transfer", help="Extra unlabelled rows for distillation (repeatable).")] = None,
    measure_fraction: Annotated[float, typer.Option("--measure-fraction", click_type=number(0, 1, low_open=True), help="Share of --data rows kept for measuring; the rest teaches students.")] = 0.5,
    augment: Annotated[int, typer.Option("--augment", click_type=integer(0, 1000), help="Synthetic rows per transfer row for distillation.")] = 2,
    repeats: Annotated[int, typer.Option("--repeats", click_type=integer(10, 1_000_000), help="Timed single-row calls per candidate.")] = 200,
    batch_rows: Annotated[int, typer.Option("--batch-rows", click_type=integer(1), help="Rows in the batch-latency call.")] = 1000,
    html: Annotated[Optional[Path], typer.Option("--html", parser=output_path, help="Write the trade-off page with plots.")] = None,
    seed: SeedOpt = 0,
    json_: JsonOpt = False,
    report: ReportOpt = None,
) -> None:
    """Compress a model: prune, quantize, distill, factorize.

    Tries the techniques that apply, measures each candidate on held-out
    rows (metric, ONNX size, single-row and batch latency in onnxruntime)
    and keeps the smallest one within --max-metric-drop that is neither
    larger nor slower. When none qualifies the original is kept (copied
    to -o), or, with --require-gain, nothing is written and it exits 4.

    Examples:

        mlsys compress ens.mlsys --data valid.parquet --max-metric-drop 0.005 -o small.mlsys

        mlsys compress mlp.mlsys --data valid.parquet --technique quantization -o small.onnx --html compress.html

        mlsys compress model.mlsys --data valid.parquet --transfer train.parquet --prefer latency --require-gain -o fast.mlsys
    """
    from mlsys_cli.deploy.compress import TECHNIQUES, compress
    from mlsys_cli.errors import CheckFailed, UsageError

    if not data:
        raise UsageError("--data is required: held-out rows with the target")
    if output is None:
        raise UsageError("-o/--output is required: where to write the kept model (.mlsys or .onnx)")
    with console.progress("compressing") as bar:
        result = compress(
            model, [str(d) for d in data], output=output, max_metric_drop=max_metric_drop,
            techniques=technique or TECHNIQUES, prefer=prefer,
            require_gain=require_gain, transfer=[str(t) for t in transfer] if transfer else None,
            measure_fraction=measure_fraction, augment_factor=augment, repeats=repeats, batch_rows=batch_rows,
            seed=seed, html=html, progress=bar,
        )
    console.emit(result, as_json=json_, report=str(report) if report else None, human=_human, warnings=_warnings)
    if require_gain and result.kept is None:
        raise CheckFailed(result.verdict)
