"""FLAML on one split, run inside FLAML's own venv by :mod:`benchmarks.bench_quality`.

``python flaml_runner.py JOB.json``: the job names the train/valid/test Parquet files, the target,
the task, FLAML's metric, the time budget and the seed. FLAML fits on the train rows with the
valid rows as its validation set (as mlsys does), then the test scores (class probabilities in
the order of ``classes``, or predictions) are written to ``out`` with ``numpy.save`` (plain
arrays, read back with ``allow_pickle=False``) and a JSON summary goes to stdout. Only the
standard library, numpy, pandas and flaml are used: this file runs under the peer's interpreter.
"""

from __future__ import annotations

import json
import sys
import time


def _xy(frame, target):
    X = frame.drop(columns=[target]).copy()
    for col in X.columns:
        if X[col].dtype == object or str(X[col].dtype) in ("string", "str"):
            X[col] = X[col].astype("category")
    return X, frame[target]


def main(path: str) -> int:
    import numpy as np
    import pandas as pd
    from flaml import AutoML

    job = json.load(open(path))
    train, valid, test = (pd.read_parquet(job[k]) for k in ("train", "valid", "test"))
    (X, y), (Xv, yv), (Xt, _) = (_xy(f, job["target"]) for f in (train, valid, test))
    automl = AutoML()
    start = time.perf_counter()
    automl.fit(X, y, X_val=Xv, y_val=yv, task="regression" if job["task"] == "regression" else "classification",
               metric=job["metric"], time_budget=job["budget"], seed=job["seed"], verbose=0,
               log_file_name=job["log"])
    seconds = time.perf_counter() - start
    if job["task"] == "regression":
        scores, classes = np.asarray(automl.predict(Xt), dtype=float), None
    else:
        scores, classes = np.asarray(automl.predict_proba(Xt), dtype=float), [str(c) for c in automl.classes_]
    np.save(job["out"], scores, allow_pickle=False)
    import flaml

    print(json.dumps({"seconds": seconds, "best_family": automl.best_estimator, "classes": classes,
                      "trials": len(automl.config_history), "version": flaml.__version__}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
