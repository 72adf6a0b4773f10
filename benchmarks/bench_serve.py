"""``mlsys serve`` under load, side by side with its floor and its peer (issue 15).

One run, loopback only, every measurement bounded in time, on the sample churn data
(an XGBoost model of 16 raw columns trained by ``mlsys train``):

- the floor: onnxruntime ``session.run`` on the exported graph in this process (no HTTP), and
  a bare JSON echo served by the same stack as ``mlsys serve`` (plain ASGI, uvicorn, httptools,
  uvloop: ``serve_load.py echo``);
- ``mlsys serve model.onnx`` with validation, metrics, the access log and the prediction log
  on (``--log-dir``), with adaptive micro-batching (the default) and without (``--max-batch 0``);
- the peer: ``mlflow models serve`` (MLflow 3.17 in its own virtual environment, created here)
  on a scikit-learn Pipeline + XGBoost of the same rows (``serve_mlflow_model.py``).

Closed loop with ``wrk`` (Debian's package; installed here when missing and root): single-row
and 100-row bodies at several concurrencies, p50/p99 and requests/s. Open loop at a fixed
500 requests/s with ``fixed_rate.c`` (wrk cannot hold a rate, and Debian has no wrk2; compiled
here with the system's C compiler): latency counts from when a request was due, and the
generator's own send lag is reported beside it. The load average is recorded beside each
measurement: the machine is shared.

Run::

    .venv/bin/python benchmarks/bench_serve.py                 # ~6 minutes
    .venv/bin/python benchmarks/bench_serve.py --duration 3 --skip-mlflow

It prints the tables and rewrites ``benchmarks/results/serve.md`` (notes below the marker kept).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks._results import write_results  # noqa: E402

WORK = ROOT / "benchmarks" / "data" / "serve"
MLFLOW_VENV = ROOT / "benchmarks" / "data" / "mlflow-venv"
PY = sys.executable
LOAD = ROOT / "benchmarks" / "serve_load.py"


def load() -> str:
    return "/".join(f"{x:.2f}" for x in os.getloadavg())


def sh(*args, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([str(a) for a in args], check=True, capture_output=True, text=True, **kw)


def ensure_wrk() -> None:
    if shutil.which("wrk"):
        return
    if os.geteuid() != 0:
        sys.exit("wrk is missing: apt-get install -y wrk")
    subprocess.run(["apt-get", "install", "-y", "wrk"], check=True, capture_output=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def models() -> dict:
    """Train the mlsys model on the sample churn data (once) and write the request bodies."""
    import pandas as pd

    WORK.mkdir(parents=True, exist_ok=True)
    mlsys = [PY, "-m", "mlsys_cli"]
    if not (WORK / "model.onnx").exists():
        sh(*mlsys, "split", ROOT / "sample_data" / "churn.parquet", "--by", "time:snapshot_date", "--target", "churned",
           "-o", WORK / "data", "-q")
        sh(*mlsys, "train", WORK / "data" / "train.parquet", "--valid", WORK / "data" / "valid.parquet",
           "--target", "churned", "--model", "xgboost", "-o", WORK / "model.mlsys", "-q")
        sh(*mlsys, "export", WORK / "model.mlsys", "-o", WORK / "model.onnx", "-q")
    test = pd.read_parquet(WORK / "data" / "test.parquet").drop(columns=["churned"])
    records = json.loads(test.head(100).to_json(orient="records", date_format="iso", date_unit="s"))
    bodies = {"one": records[0], "hundred": records}
    for name, body in bodies.items():
        (WORK / f"{name}.json").write_text(json.dumps(body))
        peer = [{k: v for k, v in r.items() if k not in ("customer_id", "snapshot_date", "signup_date")}
                for r in (body if isinstance(body, list) else [body])]
        for r in peer:
            for k, v in r.items():
                if isinstance(v, bool):
                    r[k] = str(v)
        (WORK / f"{name}_mlflow.json").write_text(json.dumps({"dataframe_records": peer}))
    return {"onnx": WORK / "model.onnx", "test": test}


def ensure_mlflow() -> str:
    """MLflow 3.17 in its own venv, and the peer's model logged in a file store; returns the model URI."""
    py = MLFLOW_VENV / "bin" / "python"
    if not py.exists():
        sh("python3", "-m", "venv", MLFLOW_VENV)
        sh(MLFLOW_VENV / "bin" / "pip", "install", "-q", "mlflow==3.17.*", "xgboost", "scikit-learn", "skops", "pandas",
           "pyarrow")
    uri_file = WORK / "mlflow_uri.txt"
    if not uri_file.exists():
        out = sh(py, ROOT / "benchmarks" / "serve_mlflow_model.py", WORK / "data" / "train.parquet", "churned",
                 WORK / "mlruns", env={**os.environ, "MLFLOW_ALLOW_FILE_STORE": "true"}, cwd=WORK)
        uri_file.write_text(out.stdout.strip().splitlines()[-1])
    return uri_file.read_text().strip()


class Process:
    """A server process; ready when ``probe`` answers."""

    def __init__(self, args: list, probe: str, env: dict | None = None, timeout: float = 180):
        self.err = open(WORK / f"server-{time.monotonic_ns()}.err", "wb")
        self.proc = subprocess.Popen([str(a) for a in args], stdout=subprocess.DEVNULL, stderr=self.err, cwd=WORK,
                                     env={**os.environ, **(env or {})}, start_new_session=True)
        deadline = time.monotonic() + timeout
        import urllib.request

        while True:
            try:
                urllib.request.urlopen(probe, timeout=2).read()
                return
            except OSError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError(f"{args[:4]} did not start: {Path(self.err.name).read_text()[-2000:]}")
                time.sleep(0.2)

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self.err.close()


@contextlib.contextmanager
def mlsys_serve(onnx: Path, extra: list[str]):
    """``mlsys serve`` with validation, metrics, the access log and the prediction log on; yields /predict's URL."""
    port = free_port()
    shutil.rmtree(WORK / "logs", ignore_errors=True)
    server = Process([PY, "-m", "mlsys_cli", "serve", onnx, "--port", port, "--log-dir", WORK / "logs", *extra],
                     f"http://127.0.0.1:{port}/v2/health/ready")
    try:
        yield f"http://127.0.0.1:{port}/predict"
    finally:
        server.stop()


def _ms(text: str) -> float:
    match = re.match(r"([\d.]+)(us|ms|s|m|h)$", text)
    if match is None:
        return float("nan")
    value, unit = match.groups()
    return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0, "h": 3_600_000.0}[unit]


def wrk(url: str, body: Path, connections: int, seconds: float) -> dict:
    script = WORK / f"{body.stem}.lua"
    script.write_text('wrk.method = "POST"\nwrk.headers["Content-Type"] = "application/json"\n'
                      f'local f = io.open("{body}", "rb")\nwrk.body = f:read("*a")\nf:close()\n')
    before = load()
    out = sh("wrk", "-t1", f"-c{connections}", f"-d{int(round(seconds))}s", "--latency", "-s", script, url).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    # The distribution's lines only ("  50%  1.15ms"): a Stdev column such as "72.50%" above them
    # also ends in "50%", and an unanchored search read the next word ("Req/Sec") as the p50.
    p50 = _ms(re.search(r"^\s+50%\s+(\S+)", out, re.M).group(1))
    p99 = _ms(re.search(r"^\s+99%\s+(\S+)", out, re.M).group(1))
    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    errors = re.search(r"Socket errors: (.*)", out)
    return {"rps": rps, "p50": p50, "p99": p99, "non2xx": int(bad.group(1)) if bad else 0,
            "socket_errors": errors.group(1) if errors else "", "load": before}


def ensure_generator() -> Path:
    """``fixed_rate.c`` compiled into the work directory (again when the source is newer)."""
    source, binary = ROOT / "benchmarks" / "fixed_rate.c", WORK / "fixed_rate"
    if not binary.exists() or binary.stat().st_mtime < source.stat().st_mtime:
        WORK.mkdir(parents=True, exist_ok=True)
        sh(os.environ.get("CC", "cc"), "-O2", "-o", binary, source)
    return binary


def fixed_rate(url: str, body: Path, rate: float, seconds: float) -> dict:
    parts = urlsplit(url)
    before = load()
    out = sh(ensure_generator(), parts.hostname, parts.port, parts.path, body, rate, seconds, 32).stdout
    return {**json.loads(out), "load": before}


def in_process(onnx: Path, test, repeat: int = 3000) -> dict:
    """session.run alone, mlsys serve's whole in-process path (validate + run + outputs), and the
    bundle's own predict on a one-row frame (what serving the bundle without its graph would cost), per call."""
    import pandas as pd

    from mlsys_cli.deploy.onnx_model import OnnxModel
    from mlsys_cli.deploy.serve.models import ModelRef, load_served
    from mlsys_cli.models.bundle import ModelBundle

    model = OnnxModel.load(onnx)
    bundle = ModelBundle.load(onnx.with_suffix(".mlsys"))
    served = load_served(ModelRef(onnx), "model", "primary")
    records = json.loads(test.head(100).to_json(orient="records", date_format="iso", date_unit="s"))
    out = {}
    for name, rows in (("one", records[:1]), ("hundred", records)):
        feeds = model.feeds(rows)
        times, path = [], []
        for _ in range(repeat if name == "one" else repeat // 10):
            t = time.perf_counter()
            model.run(feeds)
            times.append(time.perf_counter() - t)
            t = time.perf_counter()
            served.predict(served.read("records", rows))
            path.append(time.perf_counter() - t)
        frame, direct = pd.DataFrame(rows), []
        for _ in range(100):
            t = time.perf_counter()
            bundle.predict(frame)
            direct.append(time.perf_counter() - t)
        out[name] = {"session_run_us": round(statistics.median(times) * 1e6, 1),
                     "serve_path_us": round(statistics.median(path) * 1e6, 1),
                     "bundle_us": round(statistics.median(direct) * 1e6, 1)}
    return out


def measure(label: str, url: str, bodies: dict, args, rows: list) -> None:
    for body_name, conns in [("one", c) for c in args.single] + [("hundred", c) for c in args.batch]:
        r = wrk(url, bodies[body_name], conns, args.duration)
        rows.append({"server": label, "body": body_name, "connections": conns, **r})
        print(f"  {label:28s} {body_name:8s} c={conns:<3d} {r['rps']:9.1f}/s p50 {r['p50']:8.2f} ms "
              f"p99 {r['p99']:8.2f} ms non-2xx {r['non2xx']} load {r['load']}", flush=True)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--duration", type=int, default=5, help="seconds per wrk run")
    ap.add_argument("--single", type=int, nargs="+", default=[1, 8, 32], help="connections, single-row bodies")
    ap.add_argument("--batch", type=int, nargs="+", default=[1, 8], help="connections, 100-row bodies")
    ap.add_argument("--rate", type=float, default=500.0, help="fixed rate of the open-loop run (requests/s)")
    ap.add_argument("--rate-seconds", type=float, default=10.0)
    ap.add_argument("--workers", type=int, default=2, help="also compare N workers of each (echo and mlsys serve); 1: skip")
    ap.add_argument("--skip-mlflow", action="store_true")
    args = ap.parse_args(argv)

    ensure_wrk()
    ensure_generator()
    m = models()
    mlflow_uri = None if args.skip_mlflow else ensure_mlflow()
    args.uptime = [sh("uptime").stdout.strip()]
    print(f"load before: {load()}", flush=True)
    inproc = in_process(m["onnx"], m["test"])
    print(f"  in process: {inproc}", flush=True)
    rows, fixed = [], []
    bodies = {"one": WORK / "one.json", "hundred": WORK / "hundred.json"}
    peer_bodies = {"one": WORK / "one_mlflow.json", "hundred": WORK / "hundred_mlflow.json"}

    port = free_port()
    echo = Process([PY, LOAD, "echo", port], f"http://127.0.0.1:{port}/", timeout=60)
    try:
        measure("bare echo (same stack)", f"http://127.0.0.1:{port}/predict", bodies, args, rows)
        fixed.append({"server": "bare echo (same stack)", **fixed_rate(f"http://127.0.0.1:{port}/predict", bodies["one"],
                                                                       args.rate, args.rate_seconds)})
    finally:
        echo.stop()
    for label, extra in (("mlsys serve", []), ("mlsys serve --max-batch 0", ["--max-batch", "0"])):
        with mlsys_serve(m["onnx"], extra) as url:
            measure(label, url, bodies, args, rows)
            fixed.append({"server": label, **fixed_rate(url, bodies["one"], args.rate, args.rate_seconds)})
    if args.workers > 1:
        # The same comparison with N worker processes on each side (single-row bodies, several connections).
        several = argparse.Namespace(**{**vars(args), "single": [c for c in args.single if c > 1] or args.single, "batch": []})
        port = free_port()
        echo = Process([PY, LOAD, "echo", port, args.workers], f"http://127.0.0.1:{port}/", timeout=60)
        try:
            measure(f"bare echo, {args.workers} workers", f"http://127.0.0.1:{port}/predict", bodies, several, rows)
        finally:
            echo.stop()
        with mlsys_serve(m["onnx"], ["--workers", str(args.workers)]) as url:
            measure(f"mlsys serve --workers {args.workers}", url, bodies, several, rows)
    if mlflow_uri:
        port = free_port()
        env = {"MLFLOW_ALLOW_FILE_STORE": "true", "MLFLOW_TRACKING_URI": f"file://{WORK / 'mlruns'}",
               "PATH": f"{MLFLOW_VENV / 'bin'}:{os.environ['PATH']}"}
        server = Process([MLFLOW_VENV / "bin" / "mlflow", "models", "serve", "-m", mlflow_uri, "--env-manager", "local",
                          "-h", "127.0.0.1", "-p", port], f"http://127.0.0.1:{port}/ping", env=env)
        try:
            url = f"http://127.0.0.1:{port}/invocations"
            measure("mlflow models serve", url, peer_bodies, args, rows)
            fixed.append({"server": "mlflow models serve", **fixed_rate(url, peer_bodies["one"], args.rate, args.rate_seconds)})
        finally:
            server.stop()
    for f in fixed:
        print(f"  fixed {f['server']:28s} {f}", flush=True)
    args.uptime.append(sh("uptime").stdout.strip())
    path = write_results("serve", report(rows, fixed, inproc, args))
    print(f"wrote {path}")
    return 0


def report(rows: list, fixed: list, inproc: dict, args) -> str:
    def best(server: str, body: str) -> float:
        return max((r["rps"] for r in rows if r["server"] == server and r["body"] == body), default=0.0)

    lines = ["# `serve`: latency and throughput against the floor and MLflow (issue 15)", "",
             "Reproduce: `.venv/bin/python benchmarks/bench_serve.py` "
             f"(this run: `--duration {args.duration:g} --single {' '.join(map(str, args.single))} "
             f"--batch {' '.join(map(str, args.batch))} --rate {args.rate:g} --rate-seconds {args.rate_seconds:g} "
             f"--workers {args.workers}`).",
             "Loopback, one machine (2 cores, shared with other work: `load` is the 1/5/15-minute load average "
             "just before each measurement). mlsys serve ran with validation, Prometheus metrics, the access log "
             "(stderr to a file) and the prediction log (`--log-dir`) on.", "",
             f"`uptime` at the start: `{args.uptime[0]}`; at the end: `{args.uptime[-1]}`.", "",
             "## In process (no HTTP)", "",
             "| body | onnxruntime `session.run` | mlsys serve's path: validate + run + outputs | the bundle's `predict` on a frame |",
             "|---|---:|---:|---:|"]
    for name in ("one", "hundred"):
        lines.append(f"| {'1 row' if name == 'one' else '100 rows'} | {inproc[name]['session_run_us']} µs | "
                     f"{inproc[name]['serve_path_us']} µs | {inproc[name]['bundle_us']} µs |")
    lines += ["", "## Closed loop (wrk, fixed connections)", "",
              "| server | body | connections | requests/s | p50 ms | p99 ms | non-2xx | load |", "|---|---|---:|---:|---:|---:|---:|---|"]
    for r in rows:
        lines.append(f"| {r['server']} | {'1 row' if r['body'] == 'one' else '100 rows'} | {r['connections']} | {r['rps']:,.0f} | "
                     f"{r['p50']:.2f} | {r['p99']:.2f} | {r['non2xx']} | {r['load']} |")
    lines += ["", f"## Open loop at a fixed {args.rate:g} requests/s, single row ({args.rate_seconds:g} s)", "",
              "`benchmarks/fixed_rate.c` (like wrk2): latency counts from when each request was due (no coordinated "
              "omission); a server that falls behind gets as long again to catch up, and what it has not answered by "
              "then is `unfinished`. `send lag p99` is the generator's own: how late it sent (included in the latencies).", "",
              "| server | achieved/s | p50 ms | p90 ms | p99 ms | p99.9 ms | max ms | send lag p99 ms | unfinished | errors | load |",
              "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
    for f in fixed:
        lines.append(f"| {f['server']} | {f['achieved_rate']} | {f['p50_ms']} | {f['p90_ms']} | {f['p99_ms']} | {f['p999_ms']} | "
                     f"{f['max_ms']} | {f['send_lag_p99_ms']} | {f['unfinished']} | {f['errors']} | {f['load']} |")
    serve, echo, peer = best("mlsys serve", "one"), best("bare echo (same stack)", "one"), best("mlflow models serve", "one")
    p99 = next((f["p99_ms"] for f in fixed if f["server"] == "mlsys serve"), None)
    lines += ["", "## Goals (single row)", "",
              "| goal | measured | |", "|---|---:|---|",
              f"| p99 < 3 ms at a fixed {args.rate:g} requests/s | {p99} ms | {'met' if p99 is not None and p99 < 3 else 'missed'} |",
              f"| ≥ 35% of the bare echo's throughput | {100 * serve / echo:.0f}% ({serve:,.0f} vs {echo:,.0f}/s) | "
              f"{'met' if serve >= 0.35 * echo else 'missed'} |"]
    several = [r["server"] for r in rows if r["server"].startswith("mlsys serve --workers")]
    if several:
        n = several[0].rsplit(" ", 1)[1]
        mine, floor = best(several[0], "one"), best(f"bare echo, {n} workers", "one")
        if floor:
            lines.append(f"| ≥ 35% of the bare echo's throughput, {n} workers each | {100 * mine / floor:.0f}% "
                         f"({mine:,.0f} vs {floor:,.0f}/s) | {'met' if mine >= 0.35 * floor else 'missed'} |")
    if peer:
        lines.append(f"| ≥ 30× MLflow's throughput | {serve / peer:.0f}× ({serve:,.0f} vs {peer:,.0f}/s) | "
                     f"{'met' if serve >= 30 * peer else 'missed'} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
