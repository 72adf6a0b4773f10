"""Local vs Dask (2 workers on this machine) on a table larger than the memory given to one process.

    flock -x /work/wt/bench.lock python benchmarks/bench_scale.py [--rows 1500000] [--limit-mb 700] [--steps ...]
        [--client-limit-mb MB]

A seeded table (``--rows`` x 20 float features, binary target) is written as 30 Parquet files.
The features are fitted with ``mlsys featurize`` on one file (a sample), then:

- local: ``mlsys train``, ``mlsys predict`` and ``mlsys drift`` (the table against its first file)
  in one process each (no limit; its peak RSS is measured);
- dask: ``dask scheduler`` and ``dask worker --nworkers 2 --nthreads 1 --memory-limit LIMIT``
  started from the command line on loopback, then the same commands with ``--engine dask``
  (``predict-dir``: ``predict -o DIR/``, one part per file); the nanny restarts a worker whose
  RSS passes 95 % of LIMIT, so a job that finishes stayed under it.

``featurize``: ``mlsys featurize`` of the whole table (local: the frame in one process; dask: the
fit reads one column at a time from the workers). ``--client-limit-mb`` puts every ``mlsys``
process (local, and the Dask client) under a memory limit, enforced as the nanny enforces a
worker's: a watchdog samples the process's RSS every 10 ms and SIGKILLs it past the limit
(RLIMIT_AS is no use here: the local run spun under it, and it counts the threads' reserved
address space, not memory).

Results: ``benchmarks/results/scale.md`` for every step, ``scale-<steps>.md`` for ``--steps``
(wall time, peak RSS of the mlsys process, exit code).
"""

from __future__ import annotations

import argparse
import json
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _results import MEASURE, write_results  # noqa: E402

MLSYS = [sys.executable, "-m", "mlsys_cli"]
DASK = str(Path(sys.executable).parent / "dask")
STEPS = ("featurize", "train", "predict", "predict-dir", "drift")
KILLED = -9


def make_table(directory: Path, rows: int, files: int, seed: int = 0) -> int:
    """The seeded table as ``files`` Parquet files; returns its in-memory size in bytes (float64)."""
    import numpy as np
    import pandas as pd

    directory.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    per = rows // files
    for i in range(files):
        X = rng.normal(size=(per, 20))
        logit = X[:, 0] - 0.7 * X[:, 1] + 0.5 * X[:, 2] * X[:, 3] + 0.3 * np.sin(X[:, 4] * 3)
        df = pd.DataFrame(X, columns=[f"x{j:02d}" for j in range(20)])
        df["y"] = rng.random(per) < 1 / (1 + np.exp(-logit))
        df.to_parquet(directory / f"part-{i:03d}.parquet", index=False)
    return per * files * (20 * 8 + 1)


def run(cmd: list[str], limit_mb: int | None = None) -> dict:
    """Wall seconds, peak RSS (MB) and exit code of ``cmd`` in a fresh process (killed past ``limit_mb``)."""
    if limit_mb is None:
        proc = subprocess.run([sys.executable, "-c", MEASURE, *cmd], capture_output=True, text=True, check=True)
        return json.loads(proc.stdout)
    import psutil

    start = time.perf_counter()
    child = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    watched, peak = psutil.Process(child.pid), 0
    while child.poll() is None:
        try:
            rss = watched.memory_info().rss
        except psutil.NoSuchProcess:
            break
        peak = max(peak, rss)
        if rss > limit_mb * 2**20:
            child.kill()
        time.sleep(0.01)
    code = child.wait()
    return {"code": code, "seconds": time.perf_counter() - start, "rss_mb": peak / 2**20}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cluster(limit_mb: int) -> tuple[str, list[subprocess.Popen]]:
    port = free_port()
    address = f"tcp://127.0.0.1:{port}"
    procs = [subprocess.Popen([DASK, "scheduler", "--host", "127.0.0.1", "--port", str(port), "--no-dashboard",
                               "--dashboard-address", ":0"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)]
    procs.append(subprocess.Popen([DASK, "worker", address, "--nworkers", "2", "--nthreads", "1", "--no-dashboard",
                                   "--host", "127.0.0.1", "--memory-limit", f"{limit_mb}MiB"],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
    from distributed import Client

    with Client(address, timeout=60) as client:
        client.wait_for_workers(2, timeout=120)
    return address, procs


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=1_500_000)
    parser.add_argument("--limit-mb", type=int, default=700)
    parser.add_argument("--work", default="/tmp/mlsys-bench-scale")
    parser.add_argument("--steps", default=",".join(STEPS), help="comma-separated subset of: " + ", ".join(STEPS))
    parser.add_argument("--client-limit-mb", type=int, default=None, help="memory limit of every mlsys process")
    args = parser.parse_args()
    steps = [s for s in STEPS if s in args.steps.split(",")]
    work = Path(args.work)
    shutil.rmtree(work, ignore_errors=True)
    data = work / "parts"
    size = make_table(data, args.rows, 30)
    load = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    train = ["train", str(data), "--target", "y", "--features", str(work / "f.mlsys"), "--param", "n_estimators=50"]
    if set(steps) - {"featurize"}:  # the features and the model the other steps use
        subprocess.run([*MLSYS, "featurize", data / "part-000.parquet", "--target", "y", "-o", work / "f.mlsys"],
                       check=True, capture_output=True)
        subprocess.run([*MLSYS, *train, "--param", "n_estimators=5", "-o", str(work / "small.mlsys")], check=True,
                       capture_output=True)
    commands = {
        "featurize": lambda side: ["featurize", str(data), "--target", "y", "-o", str(work / f"f{side}.mlsys")],
        "train": lambda side: [*train, "-o", str(work / f"{side}.mlsys")],
        "predict": lambda side: ["predict", str(work / "small.mlsys"), str(data), "-o", str(work / f"p{side}.parquet")],
        "predict-dir": lambda side: ["predict", str(work / "small.mlsys"), str(data), "-o", str(work / f"p{side}") + "/"],
        "drift": lambda side: ["drift", str(data), "--reference", str(data / "part-000.parquet"), "--no-domain"],
    }
    results = {"local": {}, "dask": {}}
    for step in steps:
        if step != "predict-dir":  # a partitioned output needs the Dask engine
            results["local"][step] = run([*MLSYS, *commands[step]("local")], args.client_limit_mb)
            if args.client_limit_mb and results["local"][step]["code"] == KILLED:  # what it needs without the limit
                results.setdefault("unlimited", {})[step] = run([*MLSYS, *commands[step]("local")])
    address, procs = cluster(args.limit_mb)
    try:
        on = ["--engine", "dask", "--scheduler", address]
        for step in steps:
            results["dask"][step] = run([*MLSYS, *commands[step]("dask"), *on], args.client_limit_mb)
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            p.wait(timeout=60)
    name = "scale" if steps == list(STEPS) else "scale-" + "-".join(steps)
    write_results(name, page(args, size, load, results, steps))
    print(json.dumps(results, indent=1))


def _outcome(result: dict, limit_mb: int | None) -> str:
    return f"killed past {limit_mb} MB" if result["code"] == KILLED and limit_mb else f"exit {result['code']}"


def page(args: argparse.Namespace, size: int, load: str, results: dict, steps: list[str]) -> str:
    rows = []
    limit = args.client_limit_mb
    for step in steps:
        dask = results["dask"][step]
        local = results["local"].get(step) or results["local"].get("predict")  # predict-dir: vs the one-file local predict
        here = (f"{local['seconds']:.1f} s | {local['rss_mb']:.0f} MB | {_outcome(local, limit)}" if local else " | | ")
        ratio = f"{dask['seconds'] / local['seconds']:.2f}" if local and local["code"] == 0 and dask["code"] == 0 else ""
        rows.append(f"| {step} | {here} | {dask['seconds']:.1f} s | {dask['rss_mb']:.0f} MB | {_outcome(dask, limit)} | {ratio} |")
    free = results.get("unlimited", {})
    unlimited = "".join(f"\nWithout the limit, local `{step}` took {r['seconds']:.1f} s at a peak RSS of {r['rss_mb']:.0f} MB "
                        f"(exit {r['code']})." for step, r in free.items())
    bound = (f"Every `mlsys` process (local, and the Dask client) ran under a {limit} MB limit: a watchdog sampling its RSS\n"
             "every 10 ms killed it past the limit (as a nanny kills a worker). " if limit else "")
    return f"""# Scale: local vs Dask (2 workers) on this machine

`flock -x /work/wt/bench.lock python benchmarks/bench_scale.py --rows {args.rows} --limit-mb {args.limit_mb} --steps {",".join(steps)}{f" --client-limit-mb {limit}" if limit else ""}`

Table: {args.rows:,} rows x 20 float features + a boolean target, seeded, in 30 Parquet files
({size / 2**20:.0f} MiB as float64 in memory). `featurize` fits on the whole table; the other steps use features fitted on one file;
`train` is xgboost with 50 rounds; `predict` uses a local 5-round model (`predict-dir`: `-o DIR/`, one
part per file, compared with the local one-file `predict`); `drift` compares the table with its first
file (`--no-domain`). Dask: `dask scheduler` and
`dask worker --nworkers 2 --nthreads 1 --memory-limit {args.limit_mb}MiB` on loopback.
`uptime` when it started (2 cores shared with other agents, under the exclusive bench lock): `{load}`.
{bound}{unlimited}

| step | local wall | local peak RSS | local | dask wall | client peak RSS | dask | dask / local time |
|---|---|---|---|---|---|---|---|
{chr(10).join(rows)}

"Client peak RSS" is the `mlsys` process only. Each worker ran under a {args.limit_mb} MiB limit: its
nanny terminates a worker past 95 % of it (Dask then retries the tasks elsewhere, and the job
fails once a task has killed workers `allowed-failures` times); worker restarts were not counted.
"""


if __name__ == "__main__":
    main()
