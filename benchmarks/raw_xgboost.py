"""XGBoost alone, as a user would script it: the peer side of the train and predict overheads.

Given the feature matrix already encoded (a Parquet file of float32 columns ``f0..fk`` and the
label), this does only what XGBoost itself needs, in its own process like ``mlsys`` runs in
its own: import XGBoost, read the matrix, then

- ``train``: ``QuantileDMatrix`` + ``xgboost.train`` with the booster parameters mlsys uses (the
  same objective, depth, rate, threads and seed; ``QuantileDMatrix`` is what ``XGBClassifier.fit``
  builds for histogram trees, and the faster of XGBoost's two matrices), then save the booster;
- ``predict``: load the booster, ``inplace_predict``, write the probabilities as Parquet.

It prints one JSON line: the seconds of each step, so the caller can report the process wall time
beside the work inside it.

Usage::

    python benchmarks/raw_xgboost.py train MATRIX.parquet LABEL PARAMS.json ROUNDS MODEL.ubj
    python benchmarks/raw_xgboost.py predict MODEL.ubj MATRIX.parquet LABEL PREDS.parquet
"""

from __future__ import annotations

import json
import sys
import time

START = time.perf_counter()


def read_matrix(path: str, label: str):  # noqa: ANN201 - a script
    import numpy as np
    import pyarrow.parquet as pq

    table = pq.read_table(path)
    names = [n for n in table.column_names if n != label]
    X = np.empty((table.num_rows, len(names)), dtype=np.float32)
    for j, name in enumerate(names):
        X[:, j] = table.column(name).to_numpy()
    y = table.column(label).to_numpy() if label in table.column_names else None
    return X, y


def main(argv: list[str]) -> int:
    import xgboost as xgb

    steps = {"import_s": time.perf_counter() - START}
    mark = time.perf_counter()
    if argv[0] == "train":
        matrix, label, params_path, rounds, out = argv[1:6]
        X, y = read_matrix(matrix, label)
        steps["read_s"] = time.perf_counter() - mark
        params = json.loads(open(params_path).read())
        mark = time.perf_counter()
        dtrain = xgb.QuantileDMatrix(X, label=y, nthread=params.get("nthread"), max_bin=params.get("max_bin", 256))
        booster = xgb.train(params, dtrain, num_boost_round=int(rounds))
        steps["train_s"] = time.perf_counter() - mark
        booster.save_model(out)
    elif argv[0] == "predict":
        import pyarrow as pa
        import pyarrow.parquet as pq

        model, matrix, label, out = argv[1:5]
        booster = xgb.Booster(model_file=model)
        X, _ = read_matrix(matrix, label)
        steps["read_s"] = time.perf_counter() - mark
        mark = time.perf_counter()
        proba = booster.inplace_predict(X)
        steps["predict_s"] = time.perf_counter() - mark
        pq.write_table(pa.table({"proba_1": proba}), out)
    else:
        raise SystemExit(f"unknown step {argv[0]!r}: use train or predict")
    steps["total_s"] = time.perf_counter() - START
    print(json.dumps({k: round(v, 3) for k, v in steps.items()}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
