"""Split speed: ``mlsys split`` against the raw DuckDB SQL a user would write, on ~5M rows.

Generates a seeded Parquet table (5M rows by default: an id, a customer id for groups, a
snapshot date over two years, numeric and categorical features, a binary target) into
benchmarks/data/ (not committed), then times, each in its own process and side by side in one
run:

- ``mlsys split --by random``, ``--by time:snapshot_date``, ``--by group:customer_id``
  (the real CLI, with its leakage checks and lineage);
- the equivalent raw DuckDB SQL: three ``COPY (SELECT ... WHERE <part>) TO 'x.parquet'``
  statements, with a seeded hash modulo 100 for random and group, and the 70%/85% time
  quantiles for time (no leakage checks, no exact cuts, no lineage).

Reports wall time, the ratio to raw DuckDB and the peak RSS; prints a markdown table and
writes benchmarks/results/split.md.

    .venv/bin/python benchmarks/bench_split.py               # 5M rows; a few minutes
    .venv/bin/python benchmarks/bench_split.py --rows 500000 # a quick look
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
from pathlib import Path

from _results import measure, write_results  # benchmarks/ is on sys.path when a script runs

HERE = Path(__file__).resolve().parent
DATA = HERE / "data"
KINDS = {"random": "random", "time": "time:snapshot_date", "group": "group:customer_id"}

# The raw DuckDB split: what a user would type without mlsys (approximate ratios, no checks).
RAW = """
import sys, duckdb
src, kind, out = sys.argv[1:4]
con = duckdb.connect()
con.execute("SET enable_progress_bar = false")
con.execute(f"CREATE VIEW src AS SELECT * FROM read_parquet('{src}')")
if kind == "time":
    lo, hi = con.execute("SELECT quantile_disc(snapshot_date, 0.70), quantile_disc(snapshot_date, 0.85) FROM src").fetchone()
    parts = {"train": f"snapshot_date <= '{lo}'", "valid": f"snapshot_date > '{lo}' AND snapshot_date <= '{hi}'",
             "test": f"snapshot_date > '{hi}'"}
else:
    key = "hash(0, customer_id) % 100" if kind == "group" else "hash(0, " + ", ".join(
        con.sql("SELECT * FROM src").columns) + ") % 100"
    parts = {"train": f"{key} < 70", "valid": f"{key} >= 70 AND {key} < 85", "test": f"{key} >= 85"}
for name, where in parts.items():
    con.execute(f"COPY (SELECT * FROM src WHERE {where}) TO '{out}/{name}.parquet' (FORMAT parquet, COMPRESSION zstd)")
"""


def generate(path: Path, rows: int) -> None:
    """A deterministic table (values are hashes of the row number, so no RNG state is involved)."""
    import duckdb

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    con = duckdb.connect()
    con.execute("SET enable_progress_bar = false")
    con.execute(f"""
        COPY (
          SELECT i AS row_id,
                 'C' || lpad(CAST(hash(i, 1) % {max(rows // 12, 1)} AS VARCHAR), 8, '0') AS customer_id,
                 DATE '2023-01-01' + CAST(hash(i, 2) % 730 AS INT) AS snapshot_date,
                 (hash(i, 3) % 100000) / 100.0 AS monthly_charges,
                 CAST(hash(i, 4) % 72 AS INT) AS tenure_months,
                 ['basic', 'standard', 'premium', 'enterprise'][CAST(hash(i, 5) % 4 AS INT) + 1] AS plan,
                 'city_' || (hash(i, 6) % 5000) AS city,
                 CASE WHEN hash(i, 7) % 10 = 0 THEN NULL ELSE (hash(i, 8) % 1000) / 10.0 END AS support_score,
                 hash(i, 9) % 3 = 0 AS autopay,
                 hash(i, 10) % 100 < 15 AS churned
          FROM range({rows}) t(i)
        ) TO '{tmp}' (FORMAT parquet, COMPRESSION zstd)""")
    tmp.replace(path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=5_000_000, help="rows of the generated table")
    parser.add_argument("--kinds", default=",".join(KINDS), help="which splits to time (random,time,group)")
    args = parser.parse_args()

    table = DATA / f"split_{args.rows}.parquet"
    if not table.exists():
        print(f"generating {table} ...", file=sys.stderr)
        generate(table, args.rows)
    out = DATA / "out" / "split"
    size_mb = table.stat().st_size / (1 << 20)
    kinds = [k.strip() for k in args.kinds.split(",") if k.strip()]
    rows = []
    for kind in kinds:
        raw_dir, mlsys_dir = out / f"raw-{kind}", out / f"mlsys-{kind}"
        raw_dir.mkdir(parents=True, exist_ok=True)
        print(f"running raw duckdb {kind} ...", file=sys.stderr)
        raw = measure([sys.executable, "-c", RAW, str(table), kind, str(raw_dir)])
        print(f"running mlsys split --by {KINDS[kind]} ...", file=sys.stderr)
        ours = measure([sys.executable, "-m", "mlsys_cli", "-q", "split", str(table), "--by", KINDS[kind],
                        "--target", "churned", "-o", str(mlsys_dir)])
        rows.append((kind, raw, ours))

    lines = [
        "# Split benchmark\n",
        f"Input: {table.name}, {args.rows:,} rows, 10 columns, {size_mb:,.0f} MB Parquet (zstd); three parts "
        f"0.7/0.15/0.15. Python {platform.python_version()}, {platform.machine()}, each run in its own process, "
        "one run each, raw DuckDB and mlsys side by side.\n",
        "Raw DuckDB = three `COPY (SELECT * FROM src WHERE <part>) TO ...` with a seeded hash modulo 100 "
        "(random: all columns, group: customer_id) or the 70%/85% time quantiles: approximate ratios, "
        "no leakage checks, no lineage. mlsys also cuts at exact ratios, checks duplicates, group/time "
        "overlap and reports the class balance of `--target churned`.\n",
        "| split | raw DuckDB (s) | mlsys split (s) | ratio | raw peak RSS (MB) | mlsys peak RSS (MB) |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    lines += [f"| {kind} | {raw['seconds']:.2f} | {ours['seconds']:.2f} | {ours['seconds'] / raw['seconds']:.2f}x | "
              f"{raw['rss_mb']:,.0f} | {ours['rss_mb']:,.0f} |" for kind, raw, ours in rows]
    lines += ["", f"Reproduce: `.venv/bin/python benchmarks/bench_split.py --rows {args.rows}` "
                  f"({time.strftime('%Y-%m-%d')})."]
    text = "\n".join(lines) + "\n"
    sys.stdout.write(text)
    write_results("split", text)


if __name__ == "__main__":
    main()
