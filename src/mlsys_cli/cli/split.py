"""mlsys split: train/valid/test parts with leakage checks."""

from __future__ import annotations

from typing import Annotated, Any, Optional

import typer

from mlsys_cli import console
from mlsys_cli.cli._common import JsonOpt, OutputDirOpt, ReportOpt, SeedOpt, TargetOpt

# The files -o DIR receives (the output guard refuses an input among them).
OUTPUT_FILES = ("train.parquet", "valid.parquet", "test.parquet")
ByOpt = Annotated[str, typer.Option("--by", help="random | stratified:COL | time:COL | group:COL.")]
RatiosOpt = Annotated[str, typer.Option("--ratios", help="Two (train,test) or three (train,valid,test) ratios summing to 1.")]
GroupOpt = Annotated[Optional[str], typer.Option("--group", help="Also check that no value of this column is in two parts.")]
TimeOpt = Annotated[Optional[str], typer.Option("--time", help="Also check that no holdout row is older than train.")]
IgnoreOpt = Annotated[Optional[list[str]], typer.Option("--ignore", help="Columns left out when comparing rows (ids, load times); repeat or comma-separate.")]
StrictOpt = Annotated[bool, typer.Option("--strict", help="Exit 3 and write nothing when a leakage check finds anything.")]
BalanceOpt = Annotated[Optional[str], typer.Option("--balance", help="Balance the classes of --target in train only: under | over.")]


def _human(result: Any) -> None:
    d = result.to_dict()
    console.kv(f"split {d['rows']} rows by {d['by']}" + (f":{d['column']}" if d["column"] else ""),
               {"output": d["output"], "seed": d["seed"], "ratios": d["ratios"]})
    columns = ["name", "rows", "ratio", "requested"]
    if any("time_min" in p for p in d["parts"]):
        columns += ["time_min", "time_max"]
    if any("classes" in p for p in d["parts"]):
        columns.append("classes")
    console.records("parts", d["parts"], columns)
    console.records("leakage checks", [{"check": k, **v} for k, v in d["checks"].items()],
                    ["check", "status", "rows", "keys", "groups", "column", "checked"])
    if d["balance"]:
        b = d["balance"]
        console.kv(f"train balanced ({b['method']}-sampling {b['target']})", {"before": b["before"], "after": b["after"]})


def _warnings(d: dict[str, Any]) -> list[str]:
    leak = ["leakage between parts (see the checks above); --strict refuses to write such a split"] if d["leakage"] else []
    return d["warnings"] + leak


def command(
    table: Annotated[list[str], typer.Argument(help="The table: Parquet file(s), a directory or a glob of them.")],
    output: OutputDirOpt,
    by: ByOpt = "random",
    ratios: RatiosOpt = "0.7,0.15,0.15",
    seed: SeedOpt = 0,
    target: TargetOpt = None,
    group: GroupOpt = None,
    time: TimeOpt = None,
    ignore: IgnoreOpt = None,
    strict: StrictOpt = False,
    balance: BalanceOpt = None,
    json_: JsonOpt = False,
    report: ReportOpt = None,
) -> None:
    """Split a table into train/valid/test with leakage checks.

    Writes DIR/train.parquet, DIR/valid.parquet (three ratios only) and
    DIR/test.parquet, in the input's row order, with lineage. Random and
    stratified splits hash each row with --seed (duplicates stay together);
    time splits put no row of the future into train; group splits put no
    group into two parts. The report checks for duplicate rows, group and
    time overlap across parts and shows the class balance of --target.

    Examples:

        mlsys split data/all.parquet --by time:snapshot_date -o data/

        mlsys split all.parquet --by group:customer_id --target churned --balance under -o data/

        mlsys split all.parquet --by stratified:churned --ratios 0.8,0.2 --group customer_id --strict -o data/
    """
    from mlsys_cli.data.split import split_table

    columns = [c.strip() for item in ignore or [] for c in item.split(",") if c.strip()]
    with console.progress("splitting") as progress:
        result = split_table(table, output, by=by, ratios=ratios, seed=seed, target=target, group=group, time=time,
                             ignore=columns, strict=strict, balance=balance, progress=progress)
    console.emit(result, as_json=json_, report=str(report) if report else None, human=_human, warnings=_warnings)
