"""mlsys drift: false alarms, detection, and speed against Evidently, alibi-detect and plain SciPy.

    .venv/bin/python benchmarks/bench_drift.py                       # everything (~30 min idle)
    .venv/bin/python benchmarks/bench_drift.py --sections speed --rows 100000
    .venv/bin/python benchmarks/bench_drift.py --sections calibration --trials 20

Sections:

- ``calibration``: dataset-level false-alarm rate with no shift (two disjoint random halves of one
  seeded 50-column table: 40 numeric, 10 categorical) at 1k, 10k, 100k and 1M rows per side,
  defaults (domain classifier included), repeated trials.
- ``detection``: how often each injected shift (mean, scale, category mix, new category, missing
  rate, at stated magnitudes) is found at 10k rows per side, and how often another column is
  flagged with it; and the sample data's documented drift (``sample_data/drift.json``).
- ``speed``: 1M x 50 reference vs current from Parquet, end to end, each tool in its own process
  and environment (Evidently 0.7.23 and alibi-detect 0.13 in virtualenvs this script creates
  under ``benchmarks/data/``; plain SciPy ``ks_2samp``/``chi2_contingency`` + Benjamini-Hochberg
  in ours), wall time and peak RSS, and the per-feature decisions of each side by side.
- ``kernels``: the counting kernel (1M values of 40 columns into reference bins) in NumPy (what
  mlsys uses), polars and DuckDB.

Results: ``benchmarks/results/drift.md`` (rewritten; notes after ``<!-- notes -->`` are kept).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _results import write_results  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "benchmarks" / "data" / "drift"
N_NUM, N_CAT = 40, 10
PEERS = {
    "evidently": ["evidently==0.7.23", "pandas<3", "pyarrow"],  # 0.7.23 imports a helper pandas 3 removed
    "alibi": ["alibi-detect==0.13.0", "numpy<2", "pandas<3", "pyarrow<25"],
}


def uptime() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()


def make_table(n: int, seed: int, shift: dict | None = None):
    """A seeded table of 40 numeric and 10 categorical columns (a few with missing values)."""
    import pyarrow as pa

    rng = np.random.default_rng(seed)
    shift = shift or {}
    cols = {}
    for j in range(N_NUM):
        kind = j % 4
        x = (rng.normal(size=n) if kind == 0 else rng.lognormal(size=n) if kind == 1 else
             rng.poisson(3, n).astype(float) if kind == 2 else rng.uniform(size=n))
        if j == 0 and "mean" in shift:
            x = x + shift["mean"]
        if j == 1 and "scale" in shift:
            x = x * shift["scale"]
        missing = rng.uniform(size=n) < (0.05 + (shift.get("missing", 0.0) if j == 3 else 0.0)) if j % 10 == 3 else None
        cols[f"num{j:02d}"] = pa.array(x, mask=missing)
    for j in range(N_CAT):
        k = 3 + 5 * j
        p = np.arange(k, 0, -1, dtype=float)
        p /= p.sum()
        values = np.array([f"v{i}" for i in range(k)], dtype=object)
        if j == 0 and "mix" in shift:  # move this share of rows from the top category to the others
            p = p.copy()
            moved = shift["mix"] * p[0]
            p[0] -= moved
            p[1:] += moved / (k - 1)
        x = values[rng.choice(k, n, p=p)]
        if j == 1 and "new" in shift:
            x = np.where(rng.uniform(size=n) < shift["new"], "brand-new", x)
        cols[f"cat{j}"] = pa.array(x.tolist(), pa.string())
    return pa.table(cols)


def write(table, path: Path) -> Path:
    import pyarrow.parquet as pq

    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, path, compression="zstd")
    return path


def split_halves(table, seed: int, n: int):
    import pyarrow as pa

    idx = np.random.default_rng(seed).permutation(table.num_rows)
    return table.take(pa.array(np.sort(idx[:n]))), table.take(pa.array(np.sort(idx[n:2 * n])))


def calibration(trials: dict[int, int]) -> str:
    from mlsys_cli.monitor.drift import DriftOptions, detect

    lines = ["| rows per side | trials | dataset-level false alarms | rate | features flagged (of 50 per trial) | domain classifier alarms | seconds per trial | load (uptime) |",
             "|---:|---:|---:|---:|---:|---:|---:|---|"]
    for n, count in trials.items():
        population = make_table(2 * n, seed=n)
        alarms = flagged = domain = 0
        start = time.perf_counter()
        for t in range(count):
            ref, cur = split_halves(population, t, n)
            report = detect(write(cur, DATA / "cal_cur.parquet"), reference=write(ref, DATA / "cal_ref.parquet"),
                            options=DriftOptions(seed=t))
            alarms += report.drift_detected
            flagged += len(report.drifted)
            domain += bool(report.multivariate and report.multivariate.get("drifted"))
        per = (time.perf_counter() - start) / count
        lines.append(f"| {n:,} | {count} | {alarms} | {alarms / count:.1%} | {flagged} | {domain} | {per:.2f} | {uptime().split('load average: ')[1]} |")
        print(lines[-1], flush=True)
    return "\n".join(lines)


SHIFTS = [
    ("mean shift, 0.1 std", {"mean": 0.1}, "num00"), ("mean shift, 0.25 std", {"mean": 0.25}, "num00"),
    ("scale x1.1", {"scale": 1.1}, "num01"), ("scale x1.25", {"scale": 1.25}, "num01"),
    ("category mix: 10% of the top category moves", {"mix": 0.10}, "cat0"),
    ("category mix: 25% of the top category moves", {"mix": 0.25}, "cat0"),
    ("new category, 2% of rows", {"new": 0.02}, "cat1"), ("new category, 5% of rows", {"new": 0.05}, "cat1"),
    ("missing rate +3 points (5% -> 8%)", {"missing": 0.03}, "num03"), ("missing rate +10 points", {"missing": 0.10}, "num03"),
]


def detection(trials: int, n: int) -> str:
    from mlsys_cli.monitor.drift import DriftOptions, detect

    lines = [f"| injected shift ({n:,} rows per side, {trials} trials) | column | detected | another column flagged |",
             "|---|---|---:|---:|"]
    for label, shift, column in SHIFTS:
        hit = other = 0
        for t in range(trials):
            ref = write(make_table(n, 1000 + t), DATA / "det_ref.parquet")
            cur = write(make_table(n, 2000 + t, shift), DATA / "det_cur.parquet")
            report = detect(cur, reference=ref, options=DriftOptions(domain_classifier=False))
            hit += column in report.drifted
            other += bool(set(report.drifted) - {column})
        lines.append(f"| {label} | {column} | {hit / trials:.0%} | {other / trials:.0%} |")
        print(lines[-1], flush=True)
    return "\n".join(lines)


def sample_drift() -> str:
    import pandas as pd

    from mlsys_cli.monitor.drift import DriftOptions, detect

    spec = json.loads((ROOT / "sample_data" / "drift.json").read_text())
    df = pd.read_parquet(ROOT / "sample_data" / "churn.parquet")
    day = pd.to_datetime(df["snapshot_date"])
    ref = df[(day >= spec["reference_window"][0]) & (day <= spec["reference_window"][1])]
    DATA.mkdir(parents=True, exist_ok=True)
    ref.to_parquet(DATA / "churn_ref.parquet", index=False)
    df[day >= spec["start"]].to_parquet(DATA / "churn_cur.parquet", index=False)
    report = detect(DATA / "churn_cur.parquet", reference=DATA / "churn_ref.parquet",
                    options=DriftOptions(time_col="snapshot_date", window="1d"))
    documented = {c["feature"]: c["kind"] for c in spec["covariate"]}
    lines = ["| column | documented | drifted | test q | effect sizes |", "|---|---|---|---:|---|"]
    for f in report.features:
        effects = ", ".join(f"{k} {v:.3g}" for k, v in f.effect.items() if v is not None)
        doc = documented.get(f.name, "stable" if f.name in spec["stable"] else "-")
        lines.append(f"| {f.name} | {doc} | {'**yes**' if f.drifted else 'no'} | {f.q_value:.2g} | {effects} |")
    mv = report.multivariate
    lines.append(f"\nDomain classifier: AUC {mv['auc']:.3f}, permutation p {mv['p_value']:.3g}, separating: "
                 + ", ".join(s["feature"] for s in mv["separating_features"]) + ".")
    months = [w for w in report.windows if w.rows]
    lines.append("Per month (`--window 1d` on monthly snapshots): " + "; ".join(
        f"{w.start}: {', '.join(w.drifted)}" for w in months) + ".")
    return "\n".join(lines)


# --------------------------------------------------------------------------- speed against peers

SCIPY_PEER = r'''
import json, sys
import numpy as np, pyarrow.parquet as pq
from scipy import stats
ref, cur = pq.read_table(sys.argv[1]), pq.read_table(sys.argv[2])
ps = {}
for name in ref.column_names:
    a, b = ref.column(name).to_numpy(zero_copy_only=False), cur.column(name).to_numpy(zero_copy_only=False)
    if a.dtype.kind == "f":
        ps[name] = stats.ks_2samp(a[~np.isnan(a)], b[~np.isnan(b)]).pvalue
    else:
        cats = sorted(set(a.tolist()) | set(b.tolist()))
        index = {c: i for i, c in enumerate(cats)}
        table = np.vstack([np.bincount([index[v] for v in x], minlength=len(cats)) for x in (a, b)])
        ps[name] = stats.chi2_contingency(table[:, table.sum(0) > 0]).pvalue
q = stats.false_discovery_control(list(ps.values()))
print(json.dumps({n: bool(v <= 0.05) for n, v in zip(ps, q)}))
'''

EVIDENTLY_PEER = r'''
import json, sys
import pandas as pd
from evidently import Dataset, DataDefinition, Report
from evidently.presets import DataDriftPreset
ref, cur = pd.read_parquet(sys.argv[1]), pd.read_parquet(sys.argv[2])
cats = [c for c in ref.columns if ref[c].dtype == object or str(ref[c].dtype).startswith("str")]
nums = [c for c in ref.columns if c not in cats]
definition = DataDefinition(numerical_columns=nums, categorical_columns=cats)
snapshot = Report([DataDriftPreset()]).run(Dataset.from_pandas(cur, data_definition=definition),
                                           Dataset.from_pandas(ref, data_definition=definition))
out = {}
for m in snapshot.dict()["metrics"]:
    name = m.get("metric_name") or ""
    if name.startswith("ValueDrift(column="):
        column = name.split("column=")[1].split(",")[0].rstrip(")")
        cfg = m.get("config", {})
        threshold = cfg.get("threshold")
        value = m["value"]
        method = (cfg.get("method") or "")
        # Distance methods drift above the threshold, p-value methods below it.
        out[column] = bool(value >= threshold) if "distance" in method.lower() or "psi" in method.lower() or "wasserstein" in method.lower() or "jensen" in method.lower() else bool(value <= threshold)
print(json.dumps(out))
'''

ALIBI_PEER = r'''
import json, sys, time
import numpy as np, pyarrow.parquet as pq
from alibi_detect.cd import TabularDrift
ref, cur = pq.read_table(sys.argv[1]), pq.read_table(sys.argv[2])
names = ref.column_names
def encode(t, cats):
    cols = []
    for n in names:
        x = t.column(n).to_numpy(zero_copy_only=False)
        if n in cats:
            index = cats[n]
            x = np.array([index.get(v, len(index)) for v in x], dtype=np.float64)
        cols.append(x.astype(np.float64))
    return np.column_stack(cols)
cats = {n: {v: i for i, v in enumerate(sorted(set(ref.column(n).to_pylist())))} for n in names if ref.schema.field(n).type == "string"}
x_ref, x_cur = encode(ref, cats), encode(cur, cats)
# alibi's KS cannot take NaN: missing values become the column mean of the reference.
means = np.nanmean(x_ref, axis=0)
x_ref, x_cur = np.where(np.isnan(x_ref), means, x_ref), np.where(np.isnan(x_cur), means, x_cur)
# None: alibi takes each categorical column's categories from the data it sees.
cpf = {names.index(n): None for n in cats}
t = time.perf_counter()
cd = TabularDrift(x_ref, p_val=0.05, categories_per_feature=cpf, correction="fdr")
pred = cd.predict(x_cur, drift_type="feature")
sys.stderr.write(f"alibi predict {time.perf_counter() - t:.2f} s\n")
print(json.dumps({n: bool(v) for n, v in zip(names, pred["data"]["is_drift"])}))
'''


def peer_python(name: str) -> str:
    """The python of a peer's own virtualenv, created on first use."""
    venv = DATA / f"venv-{name}"
    if not (venv / "bin" / "python").exists():
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        subprocess.run([str(venv / "bin" / "pip"), "install", "-q", *PEERS[name]], check=True)
    return str(venv / "bin" / "python")


MEASURE = r"""
import json, os, resource, subprocess, sys, time
timeout = float(sys.argv[1])
t = time.perf_counter()
try:
    proc = subprocess.run(sys.argv[2:], capture_output=True, text=True, timeout=timeout)
    code, out, err = proc.returncode, proc.stdout, proc.stderr[-2000:]
except subprocess.TimeoutExpired:
    code, out, err = "timeout", "", ""
wall = time.perf_counter() - t
use = resource.getrusage(resource.RUSAGE_CHILDREN)
print(json.dumps({"code": code, "seconds": wall, "cpu": use.ru_utime + use.ru_stime, "stdout": out, "stderr": err,
                  "rss_mb": use.ru_maxrss / 1024}))
"""
RUNS = DATA / "speed_runs.json"  # every measured run of this machine, rendered together
SHIFTED = {"num00", "num01", "cat0", "cat1", "num03"}
LABELS = {"mlsys": "mlsys drift (defaults)", "mlsys-nodomain": "mlsys drift --no-domain",
          "scipy": "SciPy ks_2samp / chi2_contingency + BH", "evidently": "Evidently 0.7.23 DataDriftPreset",
          "alibi": "alibi-detect 0.13 TabularDrift (FDR)"}


def run_measured(cmd: list[str], timeout: float) -> dict:
    """Wall and CPU seconds and peak RSS of ``cmd`` in a child process (killed after ``timeout`` s)."""
    proc = subprocess.run([sys.executable, "-c", MEASURE, str(timeout), *cmd], capture_output=True, text=True, check=True)
    return json.loads(proc.stdout)


def speed_files(rows: int) -> tuple[Path, Path]:
    ref, cur = DATA / f"speed_ref_{rows}.parquet", DATA / f"speed_cur_{rows}.parquet"
    if not ref.exists():
        write(make_table(rows, 1), ref)
        write(make_table(rows, 2, {"mean": 0.25, "scale": 1.25, "mix": 0.25, "new": 0.05, "missing": 0.10}), cur)
    return ref, cur


def contender(name: str, ref: Path, cur: Path) -> list[str]:
    if name.startswith("mlsys"):
        extra = ["--no-domain"] if name == "mlsys-nodomain" else []
        return [sys.executable, "-m", "mlsys_cli", "drift", str(cur), "--reference", str(ref), "--json", *extra]
    script = DATA / f"peer_{name}.py"
    script.write_text({"scipy": SCIPY_PEER, "evidently": EVIDENTLY_PEER, "alibi": ALIBI_PEER}[name])
    python = sys.executable if name == "scipy" else peer_python(name)
    return [python, str(script), str(ref), str(cur)]


def measure_speed(rows: int, tools: list[str], timeout: float) -> None:
    """Run each tool on the ``rows`` files (mlsys first, beside the peers), and keep the runs in RUNS."""
    ref, cur = speed_files(rows)
    runs = json.loads(RUNS.read_text()) if RUNS.exists() else []
    for name in tools:
        load = uptime().split("load average: ")[1]
        r = run_measured(contender(name, ref, cur), timeout)
        entry = {"tool": name, "rows": rows, "seconds": r["seconds"], "cpu": r["cpu"], "rss_mb": r["rss_mb"],
                 "load": load, "finished": r["code"] in (0, 4), "timeout": timeout,
                 "at": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}
        if entry["finished"]:
            doc = json.loads(r["stdout"])
            flagged = set(doc["drifted"]) if "drifted" in doc else {k for k, v in doc.items() if v}
            entry["drifted"] = sorted(f for f in flagged if not f.startswith("prediction:"))
            if name == "mlsys":
                entry["domain"] = {k: doc["multivariate"].get(k) for k in ("auc", "p_value", "drifted")}
        elif r["code"] != "timeout":
            entry["error"] = r["stderr"][-500:]
        runs.append(entry)
        RUNS.write_text(json.dumps(runs, indent=1))
        print(f"{LABELS[name]} at {rows:,}: {'%.1f s wall, %.1f s CPU' % (r['seconds'], r['cpu']) if entry['finished'] else r['code']} "
              f"(load {load})", flush=True)


def speed_report() -> str:
    """The speed table and the per-feature decisions of every tool, from the kept runs (latest per tool and size).

    Each ratio is against the latest mlsys run (defaults) at the same size. Runs whose loads differ
    compare better on CPU seconds than on wall time: the load column says how busy the machine was.
    """
    runs = json.loads(RUNS.read_text()) if RUNS.exists() else []
    latest: dict[tuple[str, int], dict] = {}
    last_mlsys: dict[int, dict] = {}
    for r in runs:
        if r["tool"] == "mlsys" and r["finished"]:
            last_mlsys[r["rows"]] = r
        latest[(r["tool"], r["rows"])] = r
    paired = {key: last_mlsys.get(key[1]) for key in latest}
    lines = ["| rows per side | tool | wall s | CPU s | wall / mlsys wall | CPU / mlsys CPU | peak RSS MB | load (1/5/15 min) | run at |",
             "|---:|---|---:|---:|---:|---:|---:|---|---|"]
    for (tool, rows), r in sorted(latest.items(), key=lambda kv: (kv[0][1], list(LABELS).index(kv[0][0]))):
        base = paired[(tool, rows)] if tool != "mlsys" else r
        wall = f"{r['seconds']:.1f}" if r["finished"] else (f"stopped at {r['timeout']:.0f}" if "error" not in r else "failed")
        more = "" if r["finished"] else "> "
        ratio = (f"{more}{r['seconds'] / base['seconds']:.1f}x", f"{more}{r['cpu'] / base['cpu']:.1f}x") if base else ("-", "-")
        lines.append(f"| {rows:,} | {LABELS[tool]} | {wall} | {r['cpu']:.1f} | {ratio[0]} | {ratio[1]} | {r['rss_mb']:.0f} | {r['load']} | {r['at']} |")
    columns = sorted({f"num{j:02d}" for j in range(N_NUM)} | {f"cat{j}" for j in range(N_CAT)})
    decided = [(k, r) for k, r in sorted(latest.items(), key=lambda kv: (kv[0][1], list(LABELS).index(kv[0][0]))) if r["finished"]]
    flagged = sorted(SHIFTED | {f for _, r in decided for f in r["drifted"]}, key=lambda c: (c not in SHIFTED, c))
    lines += ["", "Per-feature decisions (the 5 shifted columns, then every column any tool flagged; the other "
              f"{len(columns) - len(flagged)} columns were flagged by none): **yes** = drift reported.", "",
              "| rows | tool | " + " | ".join(flagged) + " | shifted found | false alarms |",
              "|---:|---|" + "---|" * len(flagged) + "---:|---:|"]
    for (tool, rows), r in decided:
        got = set(r["drifted"])
        cells = " | ".join("**yes**" if c in got else "no" for c in flagged)
        lines.append(f"| {rows:,} | {LABELS[tool]} | {cells} | {len(got & SHIFTED)}/5 | {len(got - SHIFTED)} |")
    return "\n".join(lines)


def kernels(rows: int) -> str:
    """Counting 40 numeric columns of ``rows`` values into 101 reference bins: NumPy vs polars vs DuckDB."""
    import duckdb
    import polars as pl
    import pyarrow.parquet as pq

    ref = DATA / f"speed_ref_{rows}.parquet"
    if not ref.exists():
        write(make_table(rows, 1), ref)
    table = pq.read_table(ref, columns=[f"num{j:02d}" for j in range(N_NUM)])
    edges = {c: np.unique(np.nanquantile(table.column(c).to_numpy(zero_copy_only=False), np.linspace(0, 1, 101)[1:-1]))
             for c in table.column_names}

    def numpy_kernel():
        from concurrent.futures import ThreadPoolExecutor

        def one(c):
            x = table.column(c).to_numpy(zero_copy_only=False)
            return np.bincount(np.searchsorted(edges[c], x, side="right"), minlength=len(edges[c]) + 2)
        with ThreadPoolExecutor(2) as pool:
            return list(pool.map(one, table.column_names))

    frame = pl.from_arrow(table)

    def polars_kernel():
        return [frame.select(pl.col(c).cut(list(edges[c]), left_closed=True).value_counts()) for c in frame.columns]

    con = duckdb.connect()
    con.register("t", table)

    def duckdb_kernel():
        return [con.execute(f"SELECT histogram({c}, {list(map(float, edges[c]))}) FROM t").fetchone() for c in table.column_names]

    lines = ["| kernel | seconds (median of 3) |", "|---|---:|"]
    for label, fn in (("NumPy searchsorted + bincount, 2 threads (mlsys)", numpy_kernel),
                      ("polars cut + value_counts", polars_kernel), ("DuckDB histogram(col, edges)", duckdb_kernel)):
        times = []
        for _ in range(3):
            t = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t)
        lines.append(f"| {label} | {sorted(times)[1]:.3f} |")
        print(lines[-1], flush=True)
    return "\n".join(lines)


def keep(name: str, command: str, lines: list[str]) -> None:
    """Keep one section's text (benchmarks/data/drift/section_NAME.md): the page joins the latest of each."""
    text = "\n".join([lines[0], "", f"Measured by `.venv/bin/python benchmarks/bench_drift.py {command}` "
                      f"({time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}).", *lines[1:]])
    (DATA / f"section_{name}.md").write_text(text + "\n")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sections", default="calibration,detection,speed,kernels")
    ap.add_argument("--rows", type=int, default=1_000_000, help="rows per side for speed and kernels")
    ap.add_argument("--trials", type=int, default=0, help="trials per size (0: 100/100/30/10 for 1k/10k/100k/1M)")
    ap.add_argument("--sizes", default="1000,10000,100000,1000000")
    ap.add_argument("--tools", default="mlsys,mlsys-nodomain,scipy,evidently,alibi",
                    help="speed: tools to run now (their runs are kept in benchmarks/data/drift/speed_runs.json)")
    ap.add_argument("--timeout", type=float, default=600, help="speed: seconds before a tool's run is stopped")
    ap.add_argument("--speed-sizes", default="", help="speed: rows per side, comma-separated (default: --rows)")
    args = ap.parse_args()
    DATA.mkdir(parents=True, exist_ok=True)
    sections = args.sections.split(",")
    default_trials = {1000: 100, 10_000: 100, 100_000: 30, 1_000_000: 10}
    command = " ".join(sys.argv[1:])
    if "calibration" in sections:
        sizes = [int(s) for s in args.sizes.split(",")]
        keep("calibration", command, ["## False alarms with no shift", "",
              "Two disjoint random halves of one seeded table (40 numeric, 10 categorical columns), defaults "
              "(FDR 0.05, effect thresholds, domain classifier on 2,000 rows per side). A trial is a false alarm "
              "when `drift_detected` is true.", "",
              calibration({n: args.trials or default_trials.get(n, 20) for n in sizes})])
    if "detection" in sections:
        keep("detection", command, ["## Detection of injected shifts", "",
              "One column shifted per row of the table; per-feature verdicts with defaults, domain classifier off.", "",
              detection(args.trials or 20, 10_000), "", "## The sample data's documented drift", "",
              "`sample_data/churn.parquet`, reference January-September vs current October-December (`drift.json`).", "",
              sample_drift()])
    if "speed" in sections:
        for rows in [int(v) for v in (args.speed_sizes or str(args.rows)).split(",")]:
            measure_speed(rows, [t for t in args.tools.split(",") if t], args.timeout)
        keep("speed", command, ["## Speed: 1M x 50 from Parquet, each tool in its own process", "",
              "40 numeric and 10 categorical columns per side, Parquet (zstd, one row group); the current side has 5 "
              f"shifted columns ({', '.join(sorted(SHIFTED))}). Wall and CPU (user + system) seconds and peak RSS of "
              "the whole process, end to end from the files; a run is stopped at its timeout. Runs are kept in "
              "`benchmarks/data/drift/speed_runs.json`; each row is the latest run of that tool and size.", "",
              speed_report()])
    if "kernels" in sections:
        keep("kernels", command, ["## Counting kernel", "", kernels(args.rows)])
    parts = ["# drift", "", "Each section says the command that measured it (2-core shared VM; load per row).", ""]
    for name in ("calibration", "detection", "speed", "kernels"):
        kept = DATA / f"section_{name}.md"
        if kept.exists():
            parts += [kept.read_text(), ""]
    path = write_results("drift", "\n".join(parts))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
