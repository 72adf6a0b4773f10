"""Ingest speed: ``mlsys ingest`` against DuckDB's own COPY and against pandas, on one ~1 GB CSV.

Generates a seeded CSV with mixed types (ints, floats, categories, dates, timestamps, booleans,
free text, missing values) into benchmarks/data/ (not committed), then times each tool in its
own process and reports wall time, the ratio to raw DuckDB and the peak RSS, plus the start-up
time of ``mlsys --help`` (median of 10). Prints a markdown table and writes
benchmarks/results/ingest.md.

    .venv/bin/python benchmarks/bench_ingest.py            # ~1 GB; a few minutes
    .venv/bin/python benchmarks/bench_ingest.py --mb 100   # a quick look
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import time
from pathlib import Path

from _results import measure, write_results  # benchmarks/ is on sys.path when a script runs

HERE = Path(__file__).resolve().parent
DATA = HERE / "data"
BYTES_PER_ROW = 100  # of the generated CSV, measured; sets the row count for a target size

def generate(path: Path, mb: int) -> None:
    """A deterministic CSV (values are hashes of the row number, so no RNG state is involved)."""
    import duckdb

    rows = mb * (1 << 20) // BYTES_PER_ROW
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    con = duckdb.connect()
    con.execute("SET enable_progress_bar = false")
    con.execute(f"""
        COPY (
          SELECT i AS "Customer ID",
                 (hash(i, 1) % 100000) / 100.0 AS "Monthly Charges",
                 CASE WHEN hash(i, 2) % 20 = 0 THEN NULL ELSE (hash(i, 3) % 90)::INT + 18 END AS "Age",
                 ['basic', 'standard', 'premium', 'enterprise'][(hash(i, 4) % 4)::INT + 1] AS "Plan",
                 'city_' || (hash(i, 5) % 5000) AS "City",
                 DATE '2020-01-01' + (hash(i, 6) % 1500)::INT AS "Signup Date",
                 TIMESTAMP '2024-01-01' + to_seconds((hash(i, 7) % 31536000)::BIGINT) AS "Last Seen",
                 hash(i, 8) % 3 = 0 AS "AutoPay",
                 'note ' || (hash(i, 9) % 1000000) || ' for customer ' || i AS "Notes"
          FROM range({rows}) t(i)
        ) TO '{tmp}' (HEADER, DELIMITER ',')""")
    tmp.replace(path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mb", type=int, default=1000, help="size of the generated CSV in MB")
    args = parser.parse_args()

    csv = DATA / f"ingest_{args.mb}mb.csv"
    if not csv.exists():
        print(f"generating {csv} ...", file=sys.stderr)
        generate(csv, args.mb)
    out = DATA / "out"
    out.mkdir(exist_ok=True)
    size_mb = csv.stat().st_size / (1 << 20)
    copy = (f"import duckdb; duckdb.connect().execute(\"COPY (SELECT * FROM read_csv('{csv}')) "
            f"TO '{out / 'duckdb.parquet'}' (FORMAT PARQUET, COMPRESSION ZSTD)\")")
    pandas = (f"import pandas as pd; pd.read_csv('{csv}').to_parquet('{out / 'pandas.parquet'}', "
              f"compression='zstd', index=False)")
    runs = {
        "duckdb COPY (raw)": [sys.executable, "-c", copy],
        "mlsys ingest": [sys.executable, "-m", "mlsys_cli", "-q", "ingest", str(csv), "-o", str(out / "mlsys.parquet")],
        "pandas read_csv + to_parquet": [sys.executable, "-c", pandas],
    }
    results = {}
    for name, cmd in runs.items():
        print(f"running {name} ...", file=sys.stderr)
        results[name] = measure(cmd)
    help_times = [measure([sys.executable, "-m", "mlsys_cli", "--help"])["seconds"] for _ in range(10)]

    base = results["duckdb COPY (raw)"]["seconds"]
    lines = [
        f"# Ingest benchmark\n",
        f"Input: {csv.name}, {size_mb:,.0f} MB CSV, 9 mixed-type columns; output Parquet (zstd). "
        f"Python {platform.python_version()}, {platform.machine()}, each tool in its own process, one run each.\n",
        "| tool | wall (s) | vs DuckDB | peak RSS (MB) |",
        "|---|---:|---:|---:|",
    ]
    lines += [f"| {name} | {r['seconds']:.2f} | {r['seconds'] / base:.2f}x | {r['rss_mb']:,.0f} |" for name, r in results.items()]
    lines += ["", f"`mlsys --help` start-up: median {statistics.median(help_times) * 1000:.0f} ms over 10 runs "
                  f"(min {min(help_times) * 1000:.0f} ms).", "",
              f"Reproduce: `.venv/bin/python benchmarks/bench_ingest.py --mb {args.mb}` ({time.strftime('%Y-%m-%d')})."]
    text = "\n".join(lines) + "\n"
    sys.stdout.write(text)
    write_results("ingest", text)


if __name__ == "__main__":
    main()
