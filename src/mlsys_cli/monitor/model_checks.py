"""Drift seen through a model: its outputs, its metric, and an estimate of it without labels.

- Prediction drift: each output (``proba_<class>``, ``label``, ``prediction``) against the
  distribution the bundle stored for its training rows (``manifest.reference.predictions``). The
  outputs come from the current data when it holds them (``serve`` logs: ``_mlsys_proba_<class>``,
  ``_mlsys_label``, ``_mlsys_prediction``); otherwise the model predicts the current rows, batch by batch.
- With labels in the current data: the metrics on it beside the bundle's own (``metrics.valid``,
  or ``metrics.train`` when the bundle was trained without ``--valid``), and the change.
- Without labels (classification): confidence-based performance estimation. If the probabilities
  are calibrated, the expected accuracy is the mean probability of the predicted class, and the
  expected AUC counts each row as positive with its probability. That holds only for a calibrated
  model, so the estimate is flagged unless the bundle's own numbers agree: its expected accuracy on
  the reference (from the stored probability sketch) within ``CALIBRATION_GAP`` of its measured
  accuracy on held-out rows.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Mapping

import numpy as np

from mlsys_cli.errors import InputError

CALIBRATION_GAP = 0.03


@dataclass(frozen=True)
class OutputPlan:
    """Which outputs the checks need and where they come from: the serve log's columns, or the
    model predicting its input columns (shared by the local scan and the Dask workers)."""

    task: str
    classes: tuple[Any, ...]
    names: tuple[str, ...]
    inputs: tuple[str, ...]
    columns: tuple[str, ...]
    label: str | None
    logged: bool


def plan_outputs(manifest: Mapping[str, Any], source: Any, label: str | None) -> OutputPlan:
    """The :class:`OutputPlan` for ``source`` (a missing input column: exit 3)."""
    task, classes = manifest["task"], tuple(manifest.get("classes") or [])
    names = ("prediction",) if task == "regression" else ("label", *(f"proba_{c}" for c in classes))
    logged = all(f"_mlsys_{n}" in source.columns for n in names)
    inputs = tuple(c["name"] for c in manifest.get("input_schema") or [])
    columns = tuple(f"_mlsys_{n}" for n in names) if logged else inputs
    missing = [c for c in columns if c not in source.columns]
    if missing:
        raise InputError(f"{source.name}: no column {missing[0]!r}, which the model needs to predict",
                         "give data with the model's input columns, or serve logs")
    return OutputPlan(task, classes, names, inputs, columns, label, logged)


def batch_outputs(plan: OutputPlan, source: Any, predictor: Any) -> tuple[dict[str, Any], Any]:
    """The outputs (and labels) of every batch of ``source``, joined (runs here or on a worker)."""
    parts: dict[str, list[Any]] = {n: [] for n in plan.names}
    ys: list[Any] = []
    for batch in source.batches(list(dict.fromkeys(plan.columns + ((plan.label,) if plan.label else ())))):
        if plan.logged:
            for n in plan.names:
                parts[n].append(batch.column(f"_mlsys_{n}").to_numpy(zero_copy_only=False))
        else:
            out = predictor.predict(batch.select(list(plan.inputs)).to_pandas())
            if plan.task == "regression":
                parts["prediction"].append(out["prediction"])
            else:
                parts["label"].append(np.asarray(out["label"]))
                for i, c in enumerate(plan.classes):
                    parts[f"proba_{c}"].append(out["probabilities"][:, i])
        if plan.label:
            ys.append(batch.column(plan.label).to_numpy(zero_copy_only=False))
    joined = {n: np.concatenate(v) if v else np.array([]) for n, v in parts.items()}
    return joined, (np.concatenate(ys) if ys else None)


def _outputs(model_path: Any, manifest: Mapping[str, Any], source: Any, label: str | None,
             engine: Any = None, include_shadow: bool = False) -> tuple[dict[str, Any], Any, str]:
    """Model outputs over the current rows (logged, or predicted in batches), and the labels if any."""
    plan = plan_outputs(manifest, source, label)
    origin = "logged outputs" if plan.logged else "predicted by the model"
    if engine is not None and engine.is_dask:
        return (*outputs_dask(plan, model_path, source, engine, include_shadow), origin + " (on the Dask workers)")
    predictor = None
    if not plan.logged:
        from mlsys_cli.deploy.predict import load_model

        predictor = load_model(model_path)
    return (*batch_outputs(plan, source, predictor), origin)


def model_checks(model_path: Any, manifest: Mapping[str, Any], source: Any, label: str | None, options: Any,
                 judge: Callable[..., Any], engine: Any = None) -> tuple[dict[str, Any], list[Any]]:
    """Prediction drift tests (judged like features) and the model section of the report."""
    import pyarrow as pa

    from mlsys_cli.monitor.reference import reference_cells
    from mlsys_cli.monitor.scan import Counts

    task, classes = manifest["task"], manifest.get("classes") or []
    outputs, y, origin = _outputs(model_path, manifest, source, label, engine, getattr(options, "include_shadow", False))
    refs = (manifest.get("reference") or {}).get("predictions") or {}
    tests = []
    for name, values in outputs.items():
        prof = refs.get(name)
        if not prof or not len(values):
            continue
        cells, counts, complete = reference_cells(f"prediction:{name}", prof)
        arr = pa.array(values.astype(str) if prof.get("kind") == "categorical" else values.astype(np.float64))
        counted = Counts(cells)
        counted.add(arr, None)
        tests.append(judge(f"prediction:{name}", cells, counts, counted.total, complete, prof, counted.tail_means(), options))
    proba = np.column_stack([outputs[f"proba_{c}"] for c in classes]).astype(np.float64) if task != "regression" else None
    part: dict[str, Any] = {"task": task, "target": manifest.get("target"), "outputs": origin,
                            "rows": int(len(next(iter(outputs.values()))))}
    threshold = float(manifest.get("threshold", 0.5))
    if y is not None:
        part["metrics"] = _metric_change(manifest, y, proba if proba is not None else outputs["prediction"], threshold)
    if proba is not None:
        part["estimate"] = estimate_performance(proba, manifest, threshold)
        if y is not None and part["metrics"].get("current"):
            part["estimate"]["actual_accuracy"] = part["metrics"]["current"].get("accuracy")
    return part, tests


def _metric_change(manifest: Mapping[str, Any], y: Any, scores: Any, threshold: float) -> dict[str, Any]:
    from mlsys_cli.models.metrics import compute_metrics

    task, classes = manifest["task"], manifest.get("classes")
    keep = np.array([v is not None and not (isinstance(v, float) and np.isnan(v)) for v in y])
    if not keep.any():
        return {"note": "the label column holds no values"}
    if task != "regression":
        from mlsys_cli.models.metrics import encode_labels

        unknown = sorted({str(v) for v, i in zip(y[keep], encode_labels(list(y[keep]), classes)) if i < 0})
        if unknown:  # labels the model cannot have predicted: no metric to compare, said instead of a crash
            return {"note": f"labels not among the model's classes {list(classes)}: {', '.join(unknown[:5])}"}
    current = compute_metrics(task, y[keep], scores[keep], classes, threshold=threshold)
    stored = manifest.get("metrics") or {}
    on = stored.get("evaluated_on") or "train"
    ref = stored.get(on) or {}
    change = {k: (v - ref[k]) if isinstance(v, (int, float)) and isinstance(ref.get(k), (int, float)) else None
              for k, v in current.items()}
    return {"rows": int(keep.sum()), "current": current, "reference": ref, "reference_on": on, "change": change,
            "primary": (stored.get("primary") or {}).get("name")}


def expected_auc(p: Any) -> float:
    """The AUC expected if each row is positive with probability ``p`` and scored by ``p``."""
    from mlsys_cli.monitor.stats import rankdata

    p = np.asarray(p, dtype=np.float64)
    order = np.argsort(p, kind="stable")
    ps = p[order]
    neg = 1 - ps
    # Mass of negatives strictly below each score, plus half of the tied ones (ties via dense ranks).
    dense = rankdata(ps, method="dense").astype(np.int64)
    tied_neg = np.bincount(dense, weights=neg)
    below = np.cumsum(tied_neg) - tied_neg
    pairs = np.sum(ps * (below[dense] + (tied_neg[dense] - neg) / 2))
    total = ps.sum() * neg.sum() - np.sum(ps * neg)
    return float(pairs / total) if total > 0 else 0.5


def estimate_performance(proba: Any, manifest: Mapping[str, Any], threshold: float) -> dict[str, Any]:
    """Confidence-based performance estimate of a classifier, with the calibration check."""
    task = manifest["task"]
    if task == "binary":
        p1 = proba[:, 1]
        est = {"accuracy": float(np.mean(np.where(p1 >= threshold, p1, 1 - p1))), "auc": expected_auc(p1)}
    else:
        est = {"accuracy": float(np.mean(proba.max(axis=1)))}
    ok, why = _calibration(manifest, threshold)
    # Beside the estimate, the same metrics measured on the bundle's validation rows (when it had
    # some): the drop between the two is what ``retrain --trigger drift`` weighs.
    metrics = manifest.get("metrics") or {}
    valid = metrics.get("valid") if metrics.get("evaluated_on") == "valid" else None
    validation = {k: float(valid[k]) for k in est if isinstance((valid or {}).get(k), (int, float))} if valid else {}
    return {"method": "confidence-based (CBPE)", "estimated": est, "validation": validation, "reliable": ok,
            "calibration": why}


def _calibration(manifest: Mapping[str, Any], threshold: float) -> tuple[bool, str]:
    """Whether the bundle's probabilities look calibrated enough for the estimate to hold."""
    metrics = manifest.get("metrics") or {}
    on = metrics.get("evaluated_on")
    measured = (metrics.get(on) or {}).get("accuracy") if on else None
    classes = manifest.get("classes") or []
    if manifest["task"] != "binary":
        calibrated = bool((manifest.get("recipe") or {}).get("calibrate"))
        return calibrated and on == "valid", ("calibrated on held-out rows" if calibrated and on == "valid"
                                              else "not checked: a multiclass model without --calibrate and --valid")
    prof = ((manifest.get("reference") or {}).get("predictions") or {}).get(f"proba_{classes[1]}") or {}
    sketch = prof.get("sketch") or prof.get("histogram")
    if measured is None or not sketch or len(sketch.get("edges") or []) < 2:
        return False, "not checked: the bundle stores no measured accuracy or probability sketch"
    edges = np.asarray(sketch["edges"], dtype=np.float64)
    lo = prof["min"] if prof.get("min") is not None else edges[0]
    hi = prof["max"] if prof.get("max") is not None else edges[-1]
    mids = np.concatenate([[(lo + edges[0]) / 2], (edges[:-1] + edges[1:]) / 2, [(edges[-1] + hi) / 2]])
    counts = np.asarray(sketch["counts"], dtype=np.float64)
    expected = float(np.sum(counts * np.where(mids >= threshold, mids, 1 - mids)) / counts.sum())
    gap = abs(expected - measured)
    where = "held-out" if on == "valid" else "training"
    if on != "valid":
        return False, f"not reliable: the bundle's accuracy is measured on its {where} rows (train with --valid)"
    if gap > CALIBRATION_GAP:
        return False, f"poorly calibrated: expected accuracy {expected:.3f} vs measured {measured:.3f} on {where} rows"
    return True, f"expected accuracy {expected:.3f} vs measured {measured:.3f} on {where} rows"


@dataclass(frozen=True)
class OutputJob:
    """What every prediction task of ``drift --model`` needs besides its file (sent to the workers)."""

    plan: Any
    model: str
    sha256: str
    schema: Any
    include_shadow: bool


def outputs_dask(plan: Any, model_path: Any, source: Any, engine: Any,
                 include_shadow: bool) -> tuple[dict[str, Any], Any]:
    """The model checks' outputs and labels, each file predicted on a worker (see the module docstring)."""
    import numpy as np

    from mlsys_cli.data.cluster import connect, require_dask
    from mlsys_cli.data.partitioned import run_partitions
    from mlsys_cli.fsutil import sha256_file

    require_dask()
    if not source.parquet:
        raise InputError(f"{source.name}: --engine dask reads Parquet files (a directory or glob of them)",
                         "convert it first: mlsys ingest FILE -o table.parquet")
    model = str(model_path) if model_path is not None else ""
    job = OutputJob(plan, model, sha256_file(model) if model and not plan.logged else "", source.schema, include_shadow)
    with connect(engine) as client:
        results = run_partitions(client, output_partition, job, source.files)
    outputs = {n: np.concatenate([r["outputs"][n] for r in results]) for n in plan.names}
    ys = [r["y"] for r in results if r["y"] is not None]
    return outputs, (np.concatenate(ys) if ys else None)


def output_partition(job: OutputJob, index: int, path: str) -> dict[str, Any]:
    """One file's model outputs (runs on a worker): the local batches, the model loaded once per worker."""
    from mlsys_cli.data.cluster import cached_artifact

    from mlsys_cli.monitor.scan import Source

    src = Source([path], job.include_shadow)
    src.schema = job.schema
    predictor = None
    if not job.plan.logged:
        from mlsys_cli.deploy.predict import load_model

        predictor = cached_artifact(job.model, job.sha256, load_model)
    outputs, y = batch_outputs(job.plan, src, predictor)
    return {"rows": len(next(iter(outputs.values()))) if outputs else 0, "outputs": outputs, "y": y}
