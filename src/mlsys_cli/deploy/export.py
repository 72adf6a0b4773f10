"""``mlsys export``: a model bundle as one ONNX graph, refused unless it agrees with the bundle.

:func:`to_onnx` composes the whole predictor (featurizer, family model, calibrator, ensemble
combiner) into one graph from the raw input columns to ``label`` + ``probabilities`` (or
``prediction``), with the manifest stamped in ``metadata_props``. :func:`check_parity` runs the
graph (onnxruntime) and the bundle on the same rows. :func:`export_model` does both and writes
the file only when every probability agrees within :data:`TOLERANCE` and every label is equal.

Rows for the check come from ``--data``; bundles store no rows, so without it a seeded sample
is drawn from the reference statistics in the manifest (quantiles of numbers, frequencies of
categories, null rates), plus unseen categories so the unknown-category path is exercised.
"""

from __future__ import annotations

import os
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Mapping, Sequence

from mlsys_cli.errors import InputError

# Probabilities must agree to this (absolute). Regression values must agree to this relative to
# the scale of the predictions (max(1, max |y|) over the rows checked): the graph's output is
# float32, and a float32 network's error grows with the values it carries, not with each row's.
TOLERANCE = 1e-5
CALIBRATOR_TOLERANCE = 1e-6  # the calibrated output is float32: half an ulp near 1 is 6e-8
SAMPLE_ROWS = 2000
UNSEEN = "__mlsys_unseen__"
UNSEEN_SHARE = 0.02


# --------------------------------------------------------------------------- the graph


def _calibrate(model: Any, calibrator: Any) -> Any:
    """Append the calibrator to a ``probabilities`` graph (in double, as ``Calibrator.transform``)."""
    import numpy as np
    from onnx import TensorProto, helper

    from mlsys_cli.deploy import onnx_families as fam
    from mlsys_cli.features.onnx import Graph

    g = Graph()
    p = g.cast("_uncal", "double")
    n_models = len(calibrator.models_)
    cols = [1] if n_models == 1 else list(range(n_models))
    parts: dict[int, str] = {}
    for k, est in zip(cols, calibrator.models_):
        x = g.op("Slice", [p, g.const(np.array([k], np.int64)), g.const(np.array([k + 1], np.int64)),
                           g.const(np.array([1], np.int64))], "col")
        parts[k] = _isotonic(g, est, x) if calibrator.method == "isotonic" else _platt(g, est, x)
    if n_models == 1:
        one = g.const(np.float64(1.0), "one")
        out = g.concat([g.op("Sub", [one, parts[1]]), parts[1]])
    else:
        raw = g.concat([parts[k] for k in cols])
        total = g.op("ReduceSum", [raw, g.const(np.array([1], np.int64))], keepdims=1)
        positive = g.op("Greater", [total, g.const(np.float64(0.0))])
        safe = g.where(positive, total, g.const(np.float64(1.0)))
        uniform = g.op("Add", [g.op("Mul", [raw, g.const(np.float64(0.0))]), g.const(np.float64(1.0 / n_models))])
        out = g.where(positive, g.op("Div", [raw, safe]), uniform)
    g.nodes.append(helper.make_node("Cast", [out], [fam.PROBA], to=TensorProto.FLOAT))
    # The calibrator's names get their own prefix: the model graph may use the same builder.
    cal_nodes, cal_inits = fam.renamed(helper.make_graph(g.nodes, "calibrator", [], [], g.initializers), "cal/", {},
                                        ["_uncal", fam.PROBA])
    graph = model.graph
    nodes = [fam.rename_node(n, {fam.PROBA: "_uncal"}) for n in graph.node] + cal_nodes
    new = helper.make_graph(nodes, graph.name, list(graph.input), list(graph.output), [*graph.initializer, *cal_inits])
    return fam.make_model(new, model.opset_import)


def _isotonic(g: Any, est: Any, x: str) -> str:
    """``IsotonicRegression.predict`` (out_of_bounds="clip"): clip, then linear interpolation."""
    import numpy as np

    xs = np.asarray(est.X_thresholds_, dtype=np.float64)
    ys = np.asarray(est.y_thresholds_, dtype=np.float64)
    if len(xs) == 1:
        return g.op("Add", [g.op("Mul", [x, g.const(np.float64(0.0))]), g.const(ys[0])])
    clipped = g.op("Max", [g.op("Min", [x, g.const(xs[-1])]), g.const(xs[0])])
    # Segment index = how many interior knots lie at or below x (0 .. K-2).
    inner = g.const(xs[1:-1].reshape(1, -1)) if len(xs) > 2 else None
    if inner is None:
        idx = g.cast(g.op("Mul", [clipped, g.const(np.float64(0.0))]), "int64")
    else:
        idx = g.op("ReduceSum", [g.cast(g.op("GreaterOrEqual", [clipped, inner]), "int64"),
                                 g.const(np.array([1], np.int64))], keepdims=1)
    slope = np.diff(ys) / np.diff(xs)

    def at(table: Any) -> str:
        return g.op("Gather", [g.const(np.asarray(table, dtype=np.float64)), idx])

    return g.op("Add", [at(ys[:-1]), g.op("Mul", [at(slope), g.op("Sub", [clipped, at(xs[:-1])])])])


def _platt(g: Any, est: Any, x: str) -> str:
    """``LogisticRegression.predict_proba(logit(clip(p)))[:, 1]`` (Calibrator's sigmoid method)."""
    import numpy as np

    p = g.op("Clip", [x, g.const(np.float64(1e-7)), g.const(np.float64(1 - 1e-7))])
    logit = g.op("Log", [g.op("Div", [p, g.op("Sub", [g.const(np.float64(1.0)), p])])])
    z = g.op("Add", [g.op("Mul", [logit, g.const(np.float64(est.coef_.ravel()[0]))]),
                     g.const(np.float64(est.intercept_.ravel()[0]))])
    return g.op("Sigmoid", [z])


def _single_graph(predictor: Any, n_classes: int) -> Any:
    from mlsys_cli.deploy import onnx_families as fam

    featurizer = predictor.featurizer
    lacking = [type(b).__name__ for b in getattr(featurizer, "blocks_", []) if not hasattr(b, "to_onnx")]
    if lacking:
        raise InputError(f"the featurize transform {lacking[0]} has no ONNX form", "featurize without it, then retrain")
    n_features = len(featurizer.get_feature_names_out())
    model = fam.family_to_onnx(predictor.family.name, predictor.estimator, n_features, predictor.task, n_classes)
    if predictor.calibrator is not None:
        model = _calibrate(model, predictor.calibrator)
    return fam.compose(featurizer.to_onnx(), model)


def _ensemble_graph(predictor: Any, n_classes: int) -> Any:
    import numpy as np

    from mlsys_cli.deploy import onnx_families as fam

    combiner = predictor.combiner
    task = predictor.task
    if combiner.method == "stack":
        keep = list(range(len(predictor.members)))
        coef = np.asarray(combiner.coef_, dtype=np.float64).T
        combine = fam.linear_stack(coef, combiner.intercept_, task, drop_first=task == "binary")
    else:
        # Members with weight 0 (selection, pruned weights) are left out of the graph entirely.
        keep = [i for i, w in enumerate(combiner.weights_) if w > 0]
        combine = fam.weighted_average([combiner.weights_[i] for i in keep], task)
    members = [predictor_graph(predictor.members[i], n_classes) for i in keep]
    return fam.parallel(members, combine)


def predictor_graph(predictor: Any, n_classes: int) -> Any:
    """The graph of any predictor: raw inputs -> ``probabilities`` [N, C] or ``prediction`` [N, 1]."""
    kind = getattr(predictor, "kind", None)
    if kind == "single":
        return _single_graph(predictor, n_classes)
    if kind == "ensemble":
        return _ensemble_graph(predictor, n_classes)
    raise InputError(f"a {kind!r} predictor has no ONNX form")


def to_onnx(bundle: Any) -> Any:
    """The whole model bundle as one ONNX graph, manifest stamped in ``metadata_props``.

    Parameters
    ----------
    bundle : models.bundle.ModelBundle

    Returns
    -------
    onnx.ModelProto
        Inputs: one per raw column (canonical types, ARCHITECTURE.md). Outputs: ``label`` [N]
        and ``probabilities`` [N, C] (classification), or ``prediction`` [N] (regression).

    Raises
    ------
    InputError
        A piece of the model has no ONNX form (the message names it).
    """
    import onnx

    from mlsys_cli.deploy import onnx_families as fam
    from mlsys_cli.deploy.onnx_model import stamp

    classes = bundle.classes or []
    graph = predictor_graph(bundle.predictor, len(classes))
    model = fam.finish(graph, bundle.task, classes, threshold=bundle.threshold)
    model.graph.name = "mlsys"
    try:
        onnx.checker.check_model(model)
    except onnx.checker.ValidationError as exc:
        raise InputError(f"the composed ONNX graph is invalid: {str(exc).splitlines()[0]}") from None
    return stamp(model, bundle.manifest)


# --------------------------------------------------------------------------- parity


def check_parity(bundle: Any, onnx_model: Any, df: Any) -> dict[str, Any]:
    """Run the bundle and the ONNX model on the same rows and compare their outputs.

    Returns
    -------
    dict
        ``max_abs_diff`` (probabilities, or regression values), ``max_rel_diff`` (regression:
        relative to max(1, max |y|)), ``labels_equal``, ``label_mismatches``, ``rows``, ``ok``
        (within :data:`TOLERANCE`, labels equal, missing predictions in the same rows).
    """
    import numpy as np

    calibrated = _calibrated_parity(bundle, df)
    if calibrated is not None:
        return calibrated
    native = bundle.predict(df)
    graph = onnx_model.predict(df)
    rows = int(len(df))
    if bundle.task == "regression":
        a, b = np.asarray(native["prediction"], np.float64), np.asarray(graph["prediction"], np.float64)
        diff = np.abs(a - b)
        max_abs = float(np.nanmax(diff)) if rows and not np.isnan(diff).all() else 0.0
        max_rel = max_abs / max(1.0, float(np.nanmax(np.abs(a))) if rows and not np.isnan(a).all() else 1.0)
        same_nan = bool(np.array_equal(np.isnan(a), np.isnan(b)))
        return {"rows": rows, "max_abs_diff": max_abs, "max_rel_diff": max_rel, "labels_equal": True,
                "label_mismatches": 0, "ok": same_nan and max_rel <= TOLERANCE}
    pa, pb = np.asarray(native["probabilities"], np.float64), np.asarray(graph["probabilities"], np.float64)
    max_abs = float(np.abs(pa - pb).max()) if rows else 0.0
    mismatch = int((np.asarray(native["label"]).astype(str) != np.asarray(graph["label"]).astype(str)).sum())
    return {"rows": rows, "max_abs_diff": max_abs, "max_rel_diff": None, "labels_equal": mismatch == 0,
            "label_mismatches": mismatch, "ok": mismatch == 0 and max_abs <= TOLERANCE and pa.shape == pb.shape}


def _calibrated_parity(bundle: Any, df: Any) -> dict[str, Any] | None:
    """Parity of a model with calibrators (alone or inside an ensemble), piece by piece; None without.

    The graph and the bundle differ upstream by a few float32 ulps (~1e-7: two engines sum the
    trees in different orders), and an isotonic calibrator multiplies any input difference by
    the slope of its steepest segment (thousands, between two close thresholds): that product,
    not the conversion, is the 5e-5 a whole-graph comparison saw. So each piece is held to its
    own standard: the model with every calibrator taken out (members and combiner included)
    within :data:`TOLERANCE`, and each calibrator's graph, fed the bundle's own uncalibrated
    probabilities, equal to ``Calibrator.transform`` up to the float32 rounding of the output
    (:data:`CALIBRATOR_TOLERANCE`). Labels must still be identical; the end-to-end difference is reported.
    """
    import copy

    import numpy as np

    twin, calibrated = _without_calibrators(getattr(bundle, "predictor", None))
    if not calibrated or bundle.task == "regression":
        return None
    from mlsys_cli.deploy.onnx_model import OnnxModel

    bare = copy.copy(bundle)
    bare.predictor = twin
    model = check_parity(bare, OnnxModel.from_proto(to_onnx(bare)), df)
    cal_diff = 0.0
    for single, calibrator in calibrated:
        # The graph's probabilities are float32 (a family scoring in float64, such as HGB, is rounded
        # there), so the calibrator's two engines are fed the same float32 values.
        uncalibrated = np.asarray(single.predict_scores(df), np.float32).astype(np.float64)
        expected = np.asarray(calibrator.transform(uncalibrated), np.float64)
        if len(df):
            cal_diff = max(cal_diff, float(np.abs(expected - _run_calibrator(calibrator, uncalibrated)).max()))
    native, graph = bundle.predict(df), OnnxModel.from_proto(to_onnx(bundle)).predict(df)
    end = np.abs(np.asarray(native["probabilities"], np.float64) - np.asarray(graph["probabilities"], np.float64))
    mismatch = int((np.asarray(native["label"]).astype(str) != np.asarray(graph["label"]).astype(str)).sum())
    return {"rows": int(len(df)), "max_abs_diff": float(end.max()) if len(df) else 0.0, "max_rel_diff": None,
            "labels_equal": mismatch == 0, "label_mismatches": mismatch,
            "uncalibrated_max_abs_diff": model["max_abs_diff"], "calibrator_max_abs_diff": cal_diff,
            "ok": mismatch == 0 and model["ok"] and cal_diff <= CALIBRATOR_TOLERANCE}


def _without_calibrators(predictor: Any) -> tuple[Any, list[tuple[Any, Any]]]:
    """A copy of ``predictor`` with every calibrator taken out, and (uncalibrated single, calibrator) pairs."""
    import copy

    if hasattr(predictor, "members"):  # an ensemble: its members may be calibrated
        twin, pairs = copy.copy(predictor), []
        twin.members = []
        for member in predictor.members:
            bare, found = _without_calibrators(member)
            twin.members.append(bare)
            pairs += found
        return twin, pairs
    calibrator = getattr(predictor, "calibrator", None)
    if calibrator is None:
        return predictor, []
    twin = copy.copy(predictor)
    twin.calibrator = None
    return twin, [(twin, calibrator)]


def _run_calibrator(calibrator: Any, proba: Any) -> Any:
    """The calibrator's ONNX graph alone, run on given probabilities [N, C]."""
    import numpy as np
    import onnxruntime as ort
    from onnx import TensorProto, helper

    from mlsys_cli.deploy import onnx_families as fam
    from mlsys_cli.deploy.onnx_model import session_options

    n = proba.shape[1]
    graph = helper.make_graph([helper.make_node("Identity", ["p"], [fam.PROBA])], "identity",
                              [helper.make_tensor_value_info("p", TensorProto.FLOAT, [None, n])],
                              [helper.make_tensor_value_info(fam.PROBA, TensorProto.FLOAT, [None, n])])
    model = _calibrate(fam.make_model(graph, fam.OPSET), calibrator)
    session = ort.InferenceSession(model.SerializeToString(), sess_options=session_options(),
                                   providers=["CPUExecutionProvider"])
    # ``proba`` holds float32 values already (the caller rounds them), so this input loses nothing.
    return session.run([fam.PROBA], {"p": proba.astype(np.float32)})[0].astype(np.float64)


def synthesize_rows(manifest: Mapping[str, Any], rows: int = SAMPLE_ROWS, seed: int = 0) -> Any:
    """Raw rows drawn from the manifest's reference statistics (seeded).

    Numbers follow the stored quantiles (piecewise-linear inverse CDF, rounded like the
    canonical float32 form), categories their stored frequencies with a share of unseen
    values, and every column its null rate; datetimes are drawn as epoch seconds.
    """
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(seed)
    reference = (manifest.get("reference") or {}).get("features") or {}
    out: dict[str, Any] = {}
    for col in manifest["input_schema"]:
        name, kind = col["name"], col["type"]
        prof = reference.get(name) or {}
        null = rng.random(rows) < float(prof.get("null_rate") or 0.0)
        if kind == "string":
            top = prof.get("top") or {c: 1 for c in (col.get("categories") or [])} or {UNSEEN: 1}
            names = [*top, UNSEEN]
            known = np.array(list(top.values()), dtype=float)
            # Categories outside the stored top ones stand in as unseen, at least UNSEEN_SHARE of rows.
            unseen = max(float(prof.get("other") or 0) / max(known.sum() + float(prof.get("other") or 0), 1.0), UNSEEN_SHARE)
            weights = np.append(known / known.sum() * (1.0 - unseen), unseen)
            values = rng.choice(np.array(names, dtype=object), size=rows, p=weights / weights.sum())
            out[name] = pd.Series(np.where(null, None, values), dtype=object)
            continue
        q = (prof.get("quantiles") or {})
        levels = np.asarray(q.get("levels") or [0.0, 1.0], dtype=float)
        values = [v for v in (q.get("values") or []) if v is not None]
        if len(values) != len(levels):
            levels, values = np.array([0.0, 1.0]), [0.0, 1.0]
        x = np.interp(rng.random(rows), levels, np.asarray(values, dtype=float))
        if kind == "bool":
            series = pd.Series(np.where(null, None, x >= 0.5), dtype=object)
        elif kind == "datetime":
            secs = pd.Series(np.round(x).astype("int64"))
            # In the fitted zone when there was one: naive times would be refused for that column.
            times = pd.to_datetime(secs, unit="s", utc=bool(col.get("tz")))
            series = pd.Series(times.dt.tz_convert(col["tz"]) if col.get("tz") else times).where(~null)
        else:
            series = pd.Series(np.where(null, np.nan, x.astype(np.float32).astype(np.float64)))
        out[name] = series
    return pd.DataFrame(out)


# --------------------------------------------------------------------------- the command


@dataclass(frozen=True)
class ExportResult:
    """What ``mlsys export`` reports (``--json``)."""

    output: str
    model: str
    task: str
    predictor: str
    rows_checked: int
    data: str
    max_abs_diff: float
    max_rel_diff: float | None
    labels_equal: bool
    tolerance: float
    size_bytes: int
    load_seconds: float
    opset: dict[str, int]
    inputs: list[str]
    outputs: list[str]
    sha256: str
    warnings: list[str] = field(default_factory=list)
    # Calibrated models: the model's and the calibrator's conversions, checked apart (check_parity).
    uncalibrated_max_abs_diff: float | None = None
    calibrator_max_abs_diff: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _check_rows(bundle: Any, data: Sequence[Any] | None, rows: int, seed: int) -> tuple[Any, str, list[str]]:
    """The rows to check parity on, where they came from, and any warning to give."""
    if data:
        from mlsys_cli.data.io import read_frame
        from mlsys_cli.features.schema import canonicalize

        df = read_frame(list(data))
        canonicalize(df, bundle.input_schema)  # a mismatched schema is named here (exit 3)
        if len(df) > rows:
            df = df.sample(n=rows, random_state=seed).sort_index()
        if not len(df):
            raise InputError("--data has no rows to check parity on")
        return df.reset_index(drop=True), ", ".join(map(str, data)), []
    df = synthesize_rows(bundle.manifest, rows, seed)
    note = (f"no --data: parity checked on {rows} rows synthesised from the manifest's reference "
            "statistics (seeded); pass --data valid.parquet to check real rows")
    return df, "synthesized", [note]


def export_model(model: str | os.PathLike, output: str | os.PathLike, data: Sequence[Any] | None = None,
                 rows: int = SAMPLE_ROWS, seed: int = 0, threads: int | None = None, progress: Any = None) -> ExportResult:
    """Export a model bundle to ONNX, verify parity, and write the file (atomically).

    Parameters
    ----------
    model : path of a ``.mlsys`` model bundle
    output : path of the ``.onnx`` file to write
    data : paths of tables to check parity on (at most ``rows`` rows, sampled with ``seed``)
    rows : int
        Rows checked.
    seed : int
        Seeds the row sample (and the synthesised rows without ``data``).
    threads : int, optional
        onnxruntime intra-op threads of the checking session.
    progress : object, optional

    Raises
    ------
    InputError
        Tampered or unreadable bundle, a piece without an ONNX form, ``data`` that does not
        match the input schema, or any disagreement between the graph and the bundle (exit 3;
        nothing is written).
    """
    from mlsys_cli.deploy.onnx_model import HASH_KEY, OnnxModel
    from mlsys_cli.deploy.predict import load_model
    from mlsys_cli.fsutil import atomic_write_bytes
    from mlsys_cli.models.bundle import ModelBundle

    if rows < 1:
        from mlsys_cli.errors import UsageError

        raise UsageError("--rows must be at least 1")
    steps = 4
    _step(progress, 0, steps, "loading the bundle")
    bundle = load_model(model)
    if not isinstance(bundle, ModelBundle):
        raise InputError(f"{model}: export needs a .mlsys model bundle")
    _step(progress, 1, steps, "building the ONNX graph")
    proto = to_onnx(bundle)
    payload = proto.SerializeToString()
    _step(progress, 2, steps, "checking parity")
    start = time.perf_counter()
    onnx_model = OnnxModel.from_proto(proto, threads=threads, data=payload)
    load_seconds = time.perf_counter() - start
    df, source, warnings = _check_rows(bundle, data, rows, seed)
    parity = check_parity(bundle, onnx_model, df)
    if not parity["ok"] and "calibrator_max_abs_diff" in parity and parity["labels_equal"]:
        raise InputError(f"the ONNX graph disagrees with the bundle on {source}: uncalibrated probabilities "
                         f"{parity['uncalibrated_max_abs_diff']:.3g} apart, calibrator "
                         f"{parity['calibrator_max_abs_diff']:.3g} (limits {TOLERANCE:g}, {CALIBRATOR_TOLERANCE:g}); nothing written",
                         "please report this with the bundle; the export is refused rather than approximated")
    if not parity["ok"]:
        what = (f"{parity['label_mismatches']} of {parity['rows']} labels differ" if not parity["labels_equal"]
                else f"max difference {parity['max_rel_diff'] if bundle.task == 'regression' else parity['max_abs_diff']:.3g} > {TOLERANCE:g}")
        raise InputError(f"the ONNX graph disagrees with the bundle on {source}: {what}; nothing written",
                         "please report this with the bundle; the export is refused rather than approximated")
    _step(progress, 3, steps, "writing")
    atomic_write_bytes(output, payload)
    _step(progress, 4, steps, "done")
    return ExportResult(
        output=str(output), model=str(model), task=bundle.task, predictor=str(bundle.manifest["predictor"].get("kind")),
        rows_checked=parity["rows"], data=source, max_abs_diff=parity["max_abs_diff"], max_rel_diff=parity["max_rel_diff"],
        labels_equal=parity["labels_equal"], tolerance=TOLERANCE, size_bytes=len(payload),
        load_seconds=round(load_seconds, 4), opset=onnx_model.opset, inputs=[i.name for i in proto.graph.input],
        outputs=[o.name for o in proto.graph.output],
        sha256={p.key: p.value for p in proto.metadata_props}[HASH_KEY], warnings=warnings,
        uncalibrated_max_abs_diff=parity.get("uncalibrated_max_abs_diff"),
        calibrator_max_abs_diff=parity.get("calibrator_max_abs_diff"))


def _step(progress: Any, done: int, total: int, description: str) -> None:
    if progress is not None:
        progress.update(completed=done, total=total, description=description)
