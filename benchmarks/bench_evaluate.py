"""Speed of ``evaluate``'s bootstrap: one matrix of resamples vs re-scoring every resample.

The obvious way to get bootstrap intervals is to call ``compute_metrics`` on each of the B
resampled row sets (scikit-learn sorts for the AUC every time). ``evaluate`` draws the
resamples once as a matrix of row multiplicities and computes every metric for every
replicate as weighted sums (``weighted_metrics``). Both are timed on the same seeded binary
problem; the intervals must agree to sampling noise (checked: same resamples, same numbers).

Run::

    .venv/bin/python benchmarks/bench_evaluate.py                 # 20k rows, 200 replicates
    .venv/bin/python benchmarks/bench_evaluate.py --rows 5000 --replicates 500

It prints a markdown table.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))


def main(argv: list[str] | None = None) -> int:
    import numpy as np

    from mlsys_cli.models import evaluate as ev
    from mlsys_cli.models.metrics import compute_metrics

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=20_000)
    parser.add_argument("--replicates", type=int, default=200)
    args = parser.parse_args(argv)

    rng = np.random.default_rng(0)
    n, B = args.rows, args.replicates
    score = rng.normal(size=n)
    y = (rng.random(n) < 1 / (1 + np.exp(-2 * score))).astype(np.int64)
    p1 = np.round(1 / (1 + np.exp(-1.5 * score)), 4)  # rounded: ties, as from tree models
    proba = np.column_stack([1 - p1, p1])

    t0 = time.perf_counter()
    weights = list(ev.bootstrap_weights(n, B, seed=0))
    fast = {k: np.concatenate(v) for k, v in _collect(ev.weighted_metrics("binary", W, y, proba) for W in weights).items()}
    t_fast = time.perf_counter() - t0

    t0 = time.perf_counter()
    slow: dict[str, list[float]] = {}
    for W in weights:
        for row in W:
            idx = np.repeat(np.arange(n), row.astype(np.int64))
            for k, v in compute_metrics("binary", y[idx], proba[idx], [0, 1]).items():
                slow.setdefault(k, []).append(np.nan if v is None else v)
    t_slow = time.perf_counter() - t0

    worst = max(float(np.nanmax(np.abs(fast[k] - np.asarray(slow[k])))) for k in slow)
    assert worst < 1e-9, worst
    print(f"| rows | replicates | per-resample compute_metrics | weighted matrix (evaluate) | speed-up | max abs difference |")
    print("|---|---|---|---|---|---|")
    print(f"| {n:,} | {B} | {t_slow:.2f} s | {t_fast:.2f} s | {t_slow / t_fast:.1f}x | {worst:.1e} |")
    return 0


def _collect(parts):
    out: dict = {}
    for part in parts:
        for k, v in part.items():
            out.setdefault(k, []).append(v)
    return out


if __name__ == "__main__":
    raise SystemExit(main())
