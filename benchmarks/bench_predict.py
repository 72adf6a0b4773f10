"""Overhead of ``mlsys predict`` against XGBoost's own predict (issue 3).

On the generated table of ``bench_train.py`` (1M rows by default: 8 numeric columns with
missing values, 4 categorical), a model trained by ``mlsys train --model xgboost`` predicts
every row through the real CLI process (start-up, reading Parquet, canonicalizing, featurizing,
predicting, writing the predictions atomically) against the same booster's own predict on the
matrix the model's featurizer makes from the table (pre-encoded, in memory). XGBoost's side is
timed both ways a user calls it: ``Booster.inplace_predict`` (what ``XGBClassifier.predict_proba``
does) and ``Booster.predict(DMatrix(...))``; the ratio uses the faster one. The two sides must
agree on every probability (checked).

Run::

    .venv/bin/python benchmarks/bench_predict.py            # 1M rows
    .venv/bin/python benchmarks/bench_predict.py --rows 200000

It prints a markdown table and rewrites its section of ``benchmarks/results/predict.md``.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.bench_train import BIG_TARGET, SEED, TITLES, machine, make_big_table, mlsys, table, write_section  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results" / "predict.md"
TITLES[RESULTS] = "# `predict`: overhead against XGBoost's own predict (issue 3)"


def main(argv: list[str] | None = None) -> int:
    import numpy as np
    import pandas as pd
    import xgboost as xgb

    from mlsys_cli.models.bundle import ModelBundle

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--rounds", type=int, default=200, help="boosting rounds of the model")
    ap.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()) / "mlsys-bench")
    args = ap.parse_args(argv)

    big = make_big_table(args.workdir / f"big_{args.rows}.parquet", args.rows)
    model = args.workdir / f"big_{args.rows}_{args.rounds}.mlsys"
    if not model.exists():
        mlsys("train", big, "--target", BIG_TARGET, "--model", "xgboost", "--param", f"n_estimators={args.rounds}",
              "--seed", SEED, "-o", model)
    preds = args.workdir / f"preds_{args.rows}.parquet"
    t_mlsys, _ = mlsys("predict", model, big, "-o", preds)

    bundle = ModelBundle.load(model)
    X = bundle.predictor.featurizer.transform(pd.read_parquet(big))
    booster = bundle.predictor.estimator.estimator.get_booster()
    nthread = int(bundle.predictor.estimator.estimator.get_params()["n_jobs"])
    start = time.perf_counter()
    inplace = booster.inplace_predict(X)
    t_inplace = time.perf_counter() - start
    start = time.perf_counter()
    via_dmatrix = booster.predict(xgb.DMatrix(X, nthread=nthread))
    t_dmatrix = time.perf_counter() - start

    ours = pd.read_parquet(preds)
    positive = [c for c in ours.columns if c.startswith("proba_")][-1]
    diff = float(np.max(np.abs(ours[positive].to_numpy() - inplace)))
    if diff > 1e-6 or float(np.max(np.abs(via_dmatrix - inplace))) > 1e-6:
        raise SystemExit(f"mlsys predict and XGBoost disagree (max |diff| {diff:.3g}); the timing would be meaningless")
    t_direct = min(t_inplace, t_dmatrix)
    ratio = t_mlsys / t_direct
    print(f"predict: mlsys {t_mlsys:.2f}s, inplace_predict {t_inplace:.2f}s, DMatrix+predict {t_dmatrix:.2f}s, "
          f"ratio {ratio:.2f}", flush=True)
    text = table(
        ["rows", "encoded features", "rounds", "mlsys predict s (CLI, Parquet in/out)", "inplace_predict s",
         "DMatrix + predict s", "ratio (vs faster)", "<= 1.25", "max |diff|"],
        [[f"{args.rows:,}", X.shape[1], args.rounds, f"{t_mlsys:.2f}", f"{t_inplace:.2f}", f"{t_dmatrix:.2f}",
          f"{ratio:.2f}", "yes" if ratio <= 1.25 else "**no**", f"{diff:.1e}"]],
    )
    print(text)
    cmd = f"`.venv/bin/python benchmarks/bench_predict.py --rows {args.rows} --rounds {args.rounds}`"
    write_section("bench_predict", f"## Overhead: `mlsys predict` vs XGBoost's predict\n\n"
                                   f"Measured {time.strftime('%Y-%m-%d')} on {machine()}. Reproduce: {cmd}\n\n{text}",
                  RESULTS)
    return 0


if __name__ == "__main__":
    sys.exit(main())
