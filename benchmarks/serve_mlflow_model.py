"""Log the peer's model for ``mlflow models serve`` (run inside the MLflow venv by bench_serve.py).

A scikit-learn Pipeline (one-hot categoricals, numbers passed through) ending in an XGBoost
classifier, trained on the same rows as the mlsys model, on the 14 non-date raw columns (the
shape of the issue's reference pipeline), logged with skops and the XGBoost classes trusted.

    python serve_mlflow_model.py TRAIN.parquet TARGET OUT_DIR   # prints the model URI
"""

from __future__ import annotations

import os
import sys

import pandas as pd


def main(train: str, target: str, out: str) -> None:
    os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
    import mlflow
    import mlflow.sklearn
    from sklearn.compose import ColumnTransformer
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder
    from xgboost import XGBClassifier

    df = pd.read_parquet(train)
    y = df.pop(target).astype(int)
    X = df.drop(columns=[c for c in df.columns if c in ("customer_id", "snapshot_date", "signup_date")])
    cats = [c for c in X.columns if X[c].dtype == object or str(X[c].dtype) in ("str", "string", "bool")]
    X[cats] = X[cats].astype(str)
    pipe = Pipeline([
        ("encode", ColumnTransformer([("cat", OneHotEncoder(handle_unknown="ignore"), cats)], remainder="passthrough")),
        ("model", XGBClassifier(n_estimators=200, max_depth=6, n_jobs=1)),
    ]).fit(X, y)
    mlflow.set_tracking_uri("file://" + os.path.abspath(out))
    with mlflow.start_run():
        info = mlflow.sklearn.log_model(pipe, name="model", serialization_format="skops",
                                        skops_trusted_types=["xgboost.sklearn.XGBClassifier", "xgboost.core.Booster"],
                                        input_example=X.head(2))
    print(info.model_uri)


if __name__ == "__main__":
    main(*sys.argv[1:4])
