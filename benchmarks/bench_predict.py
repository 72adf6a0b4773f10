"""Overhead of ``mlsys predict`` against XGBoost's own predict (issue 3).

On the generated table of ``bench_train.py`` (1M rows by default: 8 numeric columns with
missing values, 4 categorical), a model trained by ``mlsys train --model xgboost`` predicts
every row, measured two ways side by side in one run:

- as processes: ``mlsys predict`` on the raw table (start-up, reading Parquet, canonicalizing,
  featurizing, predicting, writing labels and probabilities atomically) vs ``raw_xgboost.py
  predict``: XGBoost alone, with the same booster, on the matrix the model's featurizer makes from
  the table, already encoded and stored as Parquet (import, read, ``inplace_predict``, write the
  probabilities);
- in one process with the imports paid: ``deploy.predict.predict_file`` (the same work as the
  CLI) vs ``Booster.inplace_predict`` on that matrix in memory (XGBoost's predict kernel alone).

The two sides must agree on every probability (checked).

Run::

    .venv/bin/python benchmarks/bench_predict.py            # 1M rows
    .venv/bin/python benchmarks/bench_predict.py --rows 200000

It prints a markdown table and rewrites its section of ``benchmarks/results/predict.md``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.bench_train import (BIG_TARGET, SEED, TITLES, machine, make_big_table, mlsys, raw, table,  # noqa: E402
                                    write_matrix, write_section)

RESULTS = ROOT / "benchmarks" / "results" / "predict.md"
TITLES[RESULTS] = "# `predict`: overhead against XGBoost's own predict (issue 3)"


def main(argv: list[str] | None = None) -> int:
    import numpy as np
    import pandas as pd

    from mlsys_cli.deploy.predict import predict_file
    from mlsys_cli.models.bundle import ModelBundle

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--rounds", type=int, default=200, help="boosting rounds of the model")
    ap.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()) / "mlsys-bench")
    ap.add_argument("--repeat", type=int, default=5, help="interleaved runs (medians)")
    args = ap.parse_args(argv)

    big = make_big_table(args.workdir / f"big_{args.rows}.parquet", args.rows)
    model = args.workdir / f"big_{args.rows}_{args.rounds}.mlsys"
    if not model.exists() or "features/featurizer.json" not in zipfile.ZipFile(model).namelist():
        mlsys("train", big, "--target", BIG_TARGET, "--model", "xgboost", "--param", f"n_estimators={args.rounds}",
              "--seed", SEED, "-o", model)
    bundle = ModelBundle.load(model)
    X = bundle.predictor.featurizer.transform(pd.read_parquet(big), dtype=np.float32)
    matrix = write_matrix(X, None, args.workdir / f"encoded_predict_{args.rows}.parquet")
    booster = bundle.predictor.estimator.estimator.get_booster()
    booster.save_model(args.workdir / f"raw_{args.rows}_{args.rounds}.ubj")

    preds = args.workdir / f"preds_{args.rows}.parquet"
    raw_preds = args.workdir / f"raw_preds_{args.rows}.parquet"
    ubj = args.workdir / f"raw_{args.rows}_{args.rounds}.ubj"
    times: dict[str, list[float]] = {"cli": [], "raw": [], "fn": [], "lib": []}
    # Interleaved and repeated; compared by medians (the machine's speed drifts between runs).
    for _ in range(args.repeat):
        t_cli, _ = mlsys("predict", model, big, "-o", preds)
        t_raw, steps = raw("predict", ubj, matrix, BIG_TARGET, raw_preds)
        start = time.perf_counter()
        predict_file(model, [big], args.workdir / f"preds_inproc_{args.rows}.parquet")
        t_fn = time.perf_counter() - start
        start = time.perf_counter()
        inplace = booster.inplace_predict(X)
        t_lib = time.perf_counter() - start
        for key, value in (("cli", t_cli), ("raw", t_raw), ("fn", t_fn), ("lib", t_lib)):
            times[key].append(value)
        print(f"predict run: mlsys {t_cli:.2f}s vs XGBoost process {t_raw:.2f}s; in-process {t_fn:.2f}s vs "
              f"inplace_predict {t_lib:.2f}s", flush=True)
    med = {k: statistics.median(v) for k, v in times.items()}

    ours = pd.read_parquet(preds)
    positive = [c for c in ours.columns if c.startswith("proba_")][-1]
    diff = max(float(np.max(np.abs(ours[positive].to_numpy() - inplace))),
               float(np.max(np.abs(pd.read_parquet(raw_preds)["proba_1"].to_numpy() - inplace))))
    if diff > 1e-6:
        raise SystemExit(f"mlsys predict and XGBoost disagree (max |diff| {diff:.3g}); the timing would be meaningless")
    r_proc, r_fn = med["cli"] / med["raw"], med["fn"] / med["lib"]
    print(f"predict (medians of {args.repeat}): process {r_proc:.2f}, in-process {r_fn:.2f}", flush=True)

    def cell(key: str) -> str:
        return f"{med[key]:.2f} ({'/'.join(f'{v:.2f}' for v in times[key])})"

    text = table(
        ["rows", "encoded features", "rounds", "mlsys predict s (process, raw table)", "XGBoost s (process, encoded matrix)",
         "ratio", "<= 1.25", "mlsys predict_file s (in process)", "inplace_predict s (in memory)", "ratio", "<= 1.25",
         "max |diff|"],
        [[f"{args.rows:,}", X.shape[1], args.rounds, cell("cli"), cell("raw"), f"{r_proc:.2f}",
          "yes" if r_proc <= 1.25 else "**no**", cell("fn"), cell("lib"), f"{r_fn:.2f}",
          "yes" if r_fn <= 1.25 else "**no**", f"{diff:.1e}"]],
    )
    text += f"\n\nMedian of {args.repeat} interleaved runs (each run in brackets); ratios are of the medians."
    text += f" Last XGBoost process steps: `{json.dumps(steps)}`"
    print(text)
    cmd = f"`.venv/bin/python benchmarks/bench_predict.py --rows {args.rows} --rounds {args.rounds} --repeat {args.repeat}`"
    write_section("bench_predict", f"## Overhead: `mlsys predict` vs XGBoost's predict\n\n"
                                   f"Measured {time.strftime('%Y-%m-%d')} on {machine()}. Reproduce: {cmd}\n\n{text}",
                  RESULTS)
    return 0


if __name__ == "__main__":
    sys.exit(main())
