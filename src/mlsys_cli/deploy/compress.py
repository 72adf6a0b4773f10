"""Model compression that measures its own trade-offs (DESIGN.md, chapter 7).

:class:`Compressor` builds the candidates that apply to a model and measures each one on
held-out rows the same way: the task's primary metric, the byte size of its exported ONNX
graph, and single-row and batch latency through onnxruntime. It keeps the smallest (or
fastest) candidate whose metric drop is within the allowed budget and that is neither larger
nor slower than the original; when none qualifies the original is kept.

The four techniques of the book, where they make sense for tabular models:

- **pruning**: truncating boosting rounds (XGBoost), dropping trees (forests), dropping
  ensemble members, and structured magnitude pruning of MLP hidden units (the units with the
  smallest weight norms go, so the dense layers really shrink; zeroing single weights would
  leave a dense ONNX graph as large and as slow as before);
- **quantization**: int8 dynamic and static, and fp16, of the neural layers through
  onnxruntime's quantizer. It does not cover tree-ensemble nodes, so a model without neural
  layers has no quantization candidate (the report says so);
- **knowledge distillation**: the model teaches a small student (a shallow XGBoost or a small
  MLP) on its soft predictions over transfer rows plus augmented rows. Soft labels are fit
  exactly with the usual weighting trick: every row appears once per class, weighted by the
  teacher's probability of that class (cross-entropy against soft targets);
- **low-rank factorization**: each large dense layer ``W`` of the exported graph becomes two
  thinner ones from its truncated SVD.

Pruned and distilled candidates are model bundles; quantized and factorized graphs exist only
as ONNX, so they can be kept only when the output is an ``.onnx`` file.

The ``--data`` rows are split once (seeded): the transfer share is what the students learn
from (never its targets) and what static quantization calibrates on; every candidate is
measured on the other share, which no candidate has seen.
"""

from __future__ import annotations

import copy
import logging
import os
import statistics
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

from mlsys_cli.errors import InputError, UsageError

TECHNIQUES = ("pruning", "quantization", "distillation", "low-rank")
PREFER = ("size", "latency")
PRUNE_FRACTIONS = (0.5, 0.25, 0.1)
RANK_FRACTIONS = (0.5, 0.25)
# Student models: (family, params). Shallow boosting of growing size, and a one-layer MLP.
STUDENTS = (
    ("xgboost", {"n_estimators": 60, "max_depth": 2, "learning_rate": 0.2}),
    ("xgboost", {"n_estimators": 120, "max_depth": 3, "learning_rate": 0.1}),
    ("xgboost", {"n_estimators": 200, "max_depth": 4, "learning_rate": 0.1}),
    ("mlp", {"hidden_layers": 1, "width": 32, "max_epochs": 60, "patience": 8}),
)
# Dense layers smaller than this are not worth quantizing or factorizing.
MIN_LAYER_WEIGHTS = 256
NEURAL_OPS = ("Gemm", "MatMul")
# A candidate within this factor of the original's single-row latency counts as not slower:
# repeated timings of the same graph on a busy machine differ by a few percent.
LATENCY_TOLERANCE = 1.10
SWAP_PROBABILITY = 0.3
MIN_MEASURE_ROWS = 20


# --------------------------------------------------------------------------- result


@dataclass(frozen=True)
class CompressResult:
    """What ``mlsys compress`` reports (``--json`` keys are documented in commands/compress.md)."""

    model: str
    data: list[str]
    output: str | None
    output_format: str
    task: str
    target: str
    metric: str
    higher_is_better: bool
    max_metric_drop: float
    max_metric_drop_relative: bool
    prefer: str
    rows: dict[str, int]
    original: dict[str, Any]
    candidates: list[dict[str, Any]]
    kept: str | None
    verdict: str
    skipped: list[dict[str, str]] = field(default_factory=list)
    seed: int = 0
    seconds: float = 0.0
    # What the model reads of --data as missing or as an unknown category (features.unseen.input_counts).
    out_of_range: dict[str, int] = field(default_factory=dict)
    unseen_categories: dict[str, dict[str, Any]] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def parse_drop(text: str | float) -> tuple[float, bool]:
    """``0.005`` (absolute, in metric units) or ``1%`` (relative to the original's metric)."""
    raw = str(text).strip()
    relative = raw.endswith("%")
    try:
        value = float(raw[:-1] if relative else raw)
    except ValueError:
        raise UsageError(f"invalid --max-metric-drop {text!r}", "use a number like 0.005 or a share like 1%") from None
    if not value >= 0:
        raise UsageError(f"invalid --max-metric-drop {text!r}: must be >= 0")
    return (value / 100.0 if relative else value), relative


# --------------------------------------------------------------------------- candidates


@dataclass
class Candidate:
    """One compressed model: a model bundle (pruned, distilled) and its stamped ONNX graph, or the graph alone."""

    name: str
    technique: str
    detail: str
    bundle: Any = None
    onnx: Any = None
    parent: str | None = None


def _xgb_truncated(pred: Any, rounds: int) -> Any:
    """The same model with only its first ``rounds`` boosting rounds."""
    from mlsys_cli.models.families import XGBoostModel

    inner = pred.estimator.estimator
    sliced = inner.get_booster()[0:rounds]
    spec = copy.deepcopy(pred.spec)
    spec["params"]["n_estimators"] = rounds
    spec["fit_info"] = {**spec.get("fit_info", {}), "n_estimators": rounds, "best_iteration": rounds - 1}
    new_inner = pred.family._estimator(spec["task"], spec["params"], spec.get("seed", 0))
    new_inner.load_model(bytearray(sliced.save_raw("ubj")))
    est = XGBoostModel(new_inner, spec["task"], spec["n_classes"])
    est.n_features_, est.fit_info_ = pred.estimator.n_features_, dict(spec["fit_info"])
    return type(pred)(pred.featurizer, pred.family, est, spec, pred.calibrator)


def _forest_truncated(pred: Any, trees: int) -> Any:
    """The same forest with its first ``trees`` trees (bagged trees are exchangeable)."""
    est = copy.copy(pred.estimator)
    inner = copy.copy(est.estimator)
    inner.estimators_ = list(inner.estimators_[:trees])
    inner.n_estimators = trees
    est.estimator = inner
    spec = copy.deepcopy(pred.spec)
    spec["params"]["n_estimators"] = trees
    spec["fit_info"] = {**spec.get("fit_info", {}), "n_estimators": trees}
    est.fit_info_ = dict(spec["fit_info"])
    return type(pred)(pred.featurizer, pred.family, est, spec, pred.calibrator)


def _mlp_pruned(pred: Any, width: int) -> Any:
    """Structured magnitude pruning: keep the ``width`` hidden units of largest weight norm per layer.

    A unit's score is the norm of its incoming weights times the norm of its outgoing ones (the
    network sees standardized inputs, so the norms are comparable).
    """
    import torch

    est = copy.deepcopy(pred.estimator)
    linears = [m for m in est.net_ if isinstance(m, torch.nn.Linear)]
    with torch.no_grad():
        for layer, nxt in zip(linears[:-1], linears[1:]):
            score = layer.weight.norm(dim=1) * nxt.weight.norm(dim=0)
            keep = torch.sort(torch.argsort(score, descending=True)[:width]).values
            layer.weight = torch.nn.Parameter(layer.weight[keep].clone())
            layer.bias = torch.nn.Parameter(layer.bias[keep].clone())
            layer.out_features = width
            nxt.weight = torch.nn.Parameter(nxt.weight[:, keep].clone())
            nxt.in_features = width
    est.width = width
    est._inference = None
    spec = copy.deepcopy(pred.spec)
    spec["params"]["width"] = width
    return type(pred)(pred.featurizer, pred.family, est, spec, pred.calibrator)


def _fractions(total: int, floor: int) -> list[tuple[float, int]]:
    """(share, kept count) for each pruning share that keeps fewer than ``total`` (at least ``floor``)."""
    sizes: dict[int, float] = {}
    for f in PRUNE_FRACTIONS:
        sizes.setdefault(max(floor, int(round(total * f))), f)
    return [(f, k) for k, f in sizes.items() if k < total]


def pruned_versions(pred: Any) -> Iterator[tuple[float, str, Any]]:
    """(share kept, detail, predictor) for each pruned version of a single model that applies."""
    family = pred.family.name
    if family == "xgboost":
        total = pred.estimator.estimator.get_booster().num_boosted_rounds()
        for f, k in _fractions(total, 1):
            yield f, f"first {k} of {total} boosting rounds", _xgb_truncated(pred, k)
    elif family == "forest":
        total = len(pred.estimator.estimator.estimators_)
        for f, k in _fractions(total, 5):
            yield f, f"{k} of {total} trees", _forest_truncated(pred, k)
    elif family == "mlp" and pred.estimator.hidden_layers > 0:
        total = pred.estimator.width
        for f, k in _fractions(total, 4):
            yield f, f"{k} of {total} hidden units per layer (magnitude)", _mlp_pruned(pred, k)


def prune_single(pred: Any) -> Iterator[tuple[str, Any]]:
    """(detail, predictor) for each pruned version of a single model that applies."""
    for _, detail, pruned in pruned_versions(pred):
        yield detail, pruned


def _family(pred: Any) -> str:
    return getattr(getattr(pred, "family", None), "name", "ensemble")


def prune(predictor: Any) -> Iterator[tuple[str, Any]]:
    """Pruned versions of a predictor: of the model itself or, for an ensemble, of its members.

    An ensemble yields each member alone (dropping the others), each member alone pruned, and
    the whole ensemble with every member pruned to the same share.
    """
    from mlsys_cli.models.combiner import EnsemblePredictor

    if not isinstance(predictor, EnsemblePredictor):
        yield from prune_single(predictor)
        return
    n = len(predictor.members)
    for i, member in enumerate(predictor.members):
        tag = f"member {i + 1} of {n} ({_family(member)})"
        yield f"{tag} alone", member
        for detail, pruned in prune_single(member):
            yield f"{tag} alone, {detail}", pruned
    versions = [{f: p for f, _, p in pruned_versions(member)} for member in predictor.members]
    for f in PRUNE_FRACTIONS:
        if any(f in v for v in versions):
            members = [v.get(f, member) for v, member in zip(versions, predictor.members)]
            yield f"every member pruned to {f:.0%}", EnsemblePredictor(members, predictor.combiner, predictor.task)


# --------------------------------------------------------------------------- distillation


def augment(df: Any, n: int, columns: Sequence[str], seed: int) -> Any:
    """``n`` synthetic rows: copies of random rows where each column is swapped, with probability
    ``SWAP_PROBABILITY``, for the value of another random row (keeps every column's marginal
    distribution and types, and probes the teacher between the observed rows)."""
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(seed)
    out = df.iloc[rng.integers(0, len(df), n)].reset_index(drop=True)
    for col in columns:
        values = out[col].to_numpy(copy=True)
        swap = rng.random(n) < SWAP_PROBABILITY
        values[swap] = df[col].to_numpy()[rng.integers(0, len(df), int(swap.sum()))]
        out[col] = pd.Series(values, dtype=df[col].dtype)
    return out


def _featurizer_for(preset: str, teacher: Any, labelled: Any, target: str, seed: int) -> Any:
    """A fitted featurizer for a student of ``preset``: the teacher's (or a member's) when its preset
    matches, else one fitted on the labelled transfer rows (None when there are too few)."""
    from mlsys_cli.models.train import make_featurizer

    for pred in [teacher, *getattr(teacher, "members", [])]:
        fz = getattr(pred, "featurizer", None)
        if fz is not None and getattr(fz, "preset_", None) == preset:
            return fz
    if len(labelled) < MIN_MEASURE_ROWS:
        return None  # no labelled rows to fit one on (--measure-fraction 1): this student is left out
    # On the teacher's inputs only: a student reads what the teacher reads (the rows it learns from are
    # built from the teacher's input schema; a column the teacher was trained without, e.g. a
    # --drop'ped time column, made every distillation an input error).
    columns = [c["name"] for c in teacher.input_schema] + [target]
    return make_featurizer(target, preset, None, seed).fit(labelled[columns])


def soft_targets(task: str, scores: Any) -> tuple[Any, Any, Any]:
    """(row index, label, weight) that fit a classifier to soft targets: one copy per class,
    weighted by its probability. Regression fits the teacher's values directly.

    Zero-probability copies are kept (weight 0): a class the teacher never predicts must still
    be a class of the student, or its outputs would have fewer columns.
    """
    import numpy as np

    if task == "regression":
        n = len(scores)
        return np.arange(n), np.asarray(scores, dtype=np.float64), None
    P = np.asarray(scores, dtype=np.float64)
    rows, labels = np.indices(P.shape)
    return rows.ravel(), labels.ravel(), P.ravel()


def distill(teacher: Any, task: str, n_classes: int, rows: Any, labelled: Any, target: str, seed: int,
            students: Sequence[tuple[str, Mapping[str, Any]]] = STUDENTS) -> Iterator[tuple[str, Any]]:
    """Students fit on the teacher's soft predictions over ``rows``: (detail, predictor)."""
    import numpy as np

    from mlsys_cli.models.predictors import SinglePredictor
    from mlsys_cli.models.families import get_family, resolve_params
    from mlsys_cli.models.train import EstimatorSpec, FitData, fit_estimator

    scores = np.asarray(teacher.predict_scores(rows), dtype=np.float64)
    index, labels, weights = soft_targets(task, scores)
    for name, params in students:
        try:
            family = get_family(name)
        except UsageError:
            continue  # the mlp student needs the optional torch extra
        fz = _featurizer_for(family.preset, teacher, labelled, target, seed)
        if fz is None:
            continue
        X = fz.transform(rows)
        resolved = resolve_params(family, task, params)
        est = fit_estimator(family, EstimatorSpec(task, n_classes, resolved, seed), FitData(X[index], labels, weights))
        spec = {"task": task, "n_classes": n_classes, "params": resolved, "seed": seed, "n_features": int(X.shape[1]),
                "fit_info": dict(getattr(est, "fit_info_", {}))}
        size = (f"{params['n_estimators']} trees of depth {params['max_depth']}" if name == "xgboost"
                else f"{params['hidden_layers']} x {params['width']} units")
        yield f"{name} student, {size}", SinglePredictor(fz, family, est, spec)


# --------------------------------------------------------------------------- graph transforms


def _neural_layers(model: Any) -> list[Any]:
    """Gemm/MatMul nodes with a constant weight of at least ``MIN_LAYER_WEIGHTS`` values."""
    import numpy as np

    sizes = {i.name: int(np.prod(i.dims)) for i in model.graph.initializer}
    return [n for n in model.graph.node if n.op_type in NEURAL_OPS and len(n.input) > 1
            and sizes.get(n.input[1], 0) >= MIN_LAYER_WEIGHTS]


def _drop_unused(model: Any) -> Any:
    used = {name for node in model.graph.node for name in node.input}
    keep = [i for i in model.graph.initializer if i.name in used]
    del model.graph.initializer[:]
    model.graph.initializer.extend(keep)
    return model


def low_rank(model: Any, fraction: float) -> Any | None:
    """Factorize each large dense layer ``x W + b`` into ``(x A) B + b`` with ``A B`` the rank-r
    truncated SVD of ``W`` (r = ``fraction`` of its full rank); None when no layer gets smaller."""
    import numpy as np
    import onnx
    from onnx import helper, numpy_helper

    out = onnx.ModelProto()
    out.CopyFrom(model)
    inits = {i.name: i for i in out.graph.initializer}
    # protobuf hands out a new wrapper per access, so layers are matched by their weight's name
    targets = {n.input[1] for n in _neural_layers(out)}
    nodes, changed = [], 0
    for node in out.graph.node:
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        plain_gemm = node.op_type == "Gemm" and not attrs.get("transA", 0) and attrs.get("alpha", 1.0) == 1.0
        if not plain_gemm or len(node.input) < 2 or node.input[1] not in targets:
            nodes.append(node)
            continue
        W = numpy_helper.to_array(inits[node.input[1]]).astype(np.float64)
        W = W.T if attrs.get("transB", 0) else W
        m, n = W.shape
        r = max(1, int(min(m, n) * fraction))
        bias = node.input[2] if len(node.input) > 2 and node.input[2] else None
        if r * (m + n) >= m * n or (bias and attrs.get("beta", 1.0) != 1.0):
            nodes.append(node)
            continue
        U, S, Vt = np.linalg.svd(W, full_matrices=False)
        tag = f"lowrank{changed}"
        out.graph.initializer.extend([numpy_helper.from_array((U[:, :r] * S[:r]).astype(np.float32), f"{tag}/A"),
                                      numpy_helper.from_array(Vt[:r].astype(np.float32), f"{tag}/B")])
        mid = node.output[0] if not bias else f"{tag}/xw"
        nodes += [helper.make_node("MatMul", [node.input[0], f"{tag}/A"], [f"{tag}/xa"], name=f"{tag}/mm1"),
                  helper.make_node("MatMul", [f"{tag}/xa", f"{tag}/B"], [mid], name=f"{tag}/mm2")]
        if bias:
            nodes.append(helper.make_node("Add", [mid, bias], [node.output[0]], name=f"{tag}/bias"))
        changed += 1
    if not changed:
        return None
    del out.graph.node[:]
    out.graph.node.extend(nodes)
    return _drop_unused(out)


def quantize(model: Any, mode: str, calibration: Sequence[Mapping[str, Any]] = ()) -> Any:
    """The graph with its neural layers in int8 (``dynamic``/``static``, onnxruntime's quantizer)
    or fp16 (``fp16``); tree ensembles and the featurization stay in float32."""
    import onnx

    if mode == "fp16":
        from onnxruntime.transformers.float16 import convert_float_to_float16

        others = sorted({n.op_type for n in model.graph.node} - {"Gemm", "MatMul", "Relu"})
        return convert_float_to_float16(copy.deepcopy(model), keep_io_types=True, op_block_list=others)
    from onnxruntime.quantization import (CalibrationDataReader, QuantFormat, QuantType, quantize_dynamic,
                                          quantize_static)

    nodes = [n.name for n in _neural_layers(model)]
    # The quantizer logs advice on the root logger; the command's stderr is for our own messages.
    logging.disable(logging.WARNING)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            src, dst = Path(tmp) / "in.onnx", Path(tmp) / "out.onnx"
            onnx.save(model, src)
            if mode == "dynamic":
                quantize_dynamic(src, dst, weight_type=QuantType.QInt8, nodes_to_quantize=nodes)
            else:
                class Reader(CalibrationDataReader):
                    def __init__(self) -> None:
                        self.feeds = iter(calibration)

                    def get_next(self) -> Any:
                        return next(self.feeds, None)

                quantize_static(src, dst, Reader(), quant_format=QuantFormat.QDQ, nodes_to_quantize=nodes,
                                activation_type=QuantType.QInt8, weight_type=QuantType.QInt8)
            return onnx.load(dst)
    finally:
        logging.disable(logging.NOTSET)


def graph_variants(model: Any, calibration: Sequence[Mapping[str, Any]]) -> Iterator[tuple[str, str, Any]]:
    """(technique, detail, graph) for each quantized or factorized version of a neural graph.

    The graph is None when the transform failed or onnxruntime cannot run its result; the
    detail then ends with the reason.
    """
    plans: list[tuple[str, str, Any]] = [("quantization", "int8 dynamic (neural layers)", lambda: quantize(model, "dynamic"))]
    if calibration:
        plans.append(("quantization", "int8 static, QDQ (neural layers)", lambda: quantize(model, "static", calibration)))
    plans.append(("quantization", "fp16 (neural layers)", lambda: quantize(model, "fp16")))
    plans += [("low-rank", f"truncated SVD, rank {f:.0%} of each dense layer", lambda f=f: low_rank(model, f))
              for f in RANK_FRACTIONS]
    for technique, detail, make in plans:
        try:
            graph = make()
            if graph is not None:
                _runnable(graph)
        except Exception as exc:  # the quantizer and onnxruntime raise many types; the candidate is reported, not fatal
            yield technique, f"{detail}: failed ({type(exc).__name__}: {str(exc).splitlines()[0][:160]})", None
            continue
        if graph is not None:
            yield technique, detail, graph


def _runnable(graph: Any) -> None:
    import onnxruntime as ort

    ort.InferenceSession(_serialize(graph), providers=["CPUExecutionProvider"])


# --------------------------------------------------------------------------- measuring


def export_graph(bundle: Any) -> Any:
    """The bundle's full ONNX graph (``mlsys export``), stamped with its manifest."""
    from mlsys_cli.deploy.export import to_onnx
    from mlsys_cli.deploy.onnx_model import MANIFEST_KEY

    model = to_onnx(bundle)
    if not any(p.key == MANIFEST_KEY for p in model.metadata_props):
        model = _stamp(model, bundle.manifest)
    return model


def _stamp(model: Any, manifest: Mapping[str, Any]) -> Any:
    import json

    from mlsys_cli.deploy.onnx_model import stamp

    return stamp(model, json.loads(json.dumps(dict(manifest), default=str)))


def _serialize(model: Any) -> bytes:
    return model.SerializeToString(deterministic=True)


def latency(model: Any, feeds: Mapping[str, Any], repeats: int, batch_rows: int) -> tuple[float, float]:
    """Median milliseconds of one single-row call and of one ``batch_rows``-row call."""
    n = len(next(iter(feeds.values())))
    singles = [{k: v[i:i + 1] for k, v in feeds.items()} for i in range(min(n, 64))]
    batch = {k: v[:batch_rows] for k, v in feeds.items()}

    def timed(f: Mapping[str, Any]) -> float:
        start = time.perf_counter()
        model.run(dict(f))
        return (time.perf_counter() - start) * 1000.0

    for f in singles[:10]:
        model.run(dict(f))
    single = statistics.median(timed(singles[i % len(singles)]) for i in range(repeats))
    model.run(dict(batch))
    many = statistics.median(timed(batch) for _ in range(max(3, repeats // 40)))
    return single, many


class Compressor:
    """Try compression techniques on a model and keep the best candidate within a metric budget.

    Parameters
    ----------
    max_metric_drop : float
        Largest allowed worsening of the primary metric (in its units, or a share of the
        original's value with ``relative=True``); "worse" respects the metric's direction.
    relative : bool
    techniques : sequence of str
        Any of ``pruning``, ``quantization``, ``distillation``, ``low-rank``.
    prefer : {"size", "latency"}
        Among qualifying candidates keep the smallest ONNX graph, or the fastest single row.
    measure_fraction : float
        Share of the ``--data`` rows kept for measuring (the rest is the transfer set).
    augment_factor : int
        Synthetic rows per transfer row for distillation.
    repeats : int
        Timed single-row calls per candidate.
    batch_rows : int
        Rows of the batch-latency call.
    seed : int

    Attributes
    ----------
    graph_ : onnx.ModelProto
        The original's ONNX graph.
    original_ : dict
        Measurements of the original model.
    candidates_ : list of dict
        Measurements of every candidate, in the order tried.
    kept_ : Candidate or None
        The kept candidate (None: the original is kept).
    skipped_ : list of dict
        Techniques that do not apply, with the reason.
    """

    def __init__(self, max_metric_drop: float = 0.005, *, relative: bool = False, techniques: Sequence[str] = TECHNIQUES,
                 prefer: str = "size", measure_fraction: float = 0.5, augment_factor: int = 2, repeats: int = 200,
                 batch_rows: int = 1000, seed: int = 0):
        self.max_metric_drop = max_metric_drop
        self.relative = relative
        self.techniques = techniques
        self.prefer = prefer
        self.measure_fraction = measure_fraction
        self.augment_factor = augment_factor
        self.repeats = repeats
        self.batch_rows = batch_rows
        self.seed = seed

    def _check(self) -> None:
        unknown = sorted(set(self.techniques) - set(TECHNIQUES))
        if unknown or not self.techniques:
            raise UsageError(f"unknown technique {unknown[0]!r}" if unknown else "no technique selected",
                             f"choose from: {', '.join(TECHNIQUES)}")
        if self.prefer not in PREFER:
            raise UsageError(f"invalid --prefer {self.prefer!r}", f"choose one of: {', '.join(PREFER)}")
        if not 0 < self.measure_fraction <= 1:
            raise UsageError(f"invalid --measure-fraction {self.measure_fraction}: must be in (0, 1]")

    # -- the steps ---------------------------------------------------------------------------

    def fit(self, teacher: Any, df: Any, *, transfer: Any = None, progress: Any = None) -> "Compressor":
        """Build and measure every candidate for ``teacher`` (a ModelBundle or an OnnxModel).

        Parameters
        ----------
        teacher : ModelBundle or OnnxModel
        df : pandas.DataFrame
            Held-out rows with the target.
        transfer : pandas.DataFrame, optional
            Extra unlabelled rows for the students to learn from.
        progress : object, optional
        """
        import numpy as np

        from mlsys_cli.models.metrics import primary_metric

        self._check()
        self.task_, self.classes_ = teacher.task, teacher.classes
        self.metric_, self.higher_ = primary_metric(self.task_)
        self.skipped_: list[dict[str, str]] = []
        is_bundle = hasattr(teacher, "predictor")
        wants_transfer = is_bundle and "distillation" in self.techniques
        order = np.random.default_rng(self.seed).permutation(len(df))
        n_measure = len(df) if self.measure_fraction >= 1 else int(round(len(df) * self.measure_fraction))
        if n_measure < MIN_MEASURE_ROWS:
            raise InputError(f"--data has {len(df)} rows; compress measures on at least {MIN_MEASURE_ROWS}")
        measure = df.iloc[np.sort(order[:n_measure])].reset_index(drop=True)
        labelled = df.iloc[np.sort(order[n_measure:])].reset_index(drop=True)
        if wants_transfer and len(labelled) < MIN_MEASURE_ROWS and transfer is None:
            raise UsageError("distillation needs transfer rows: lower --measure-fraction or give --transfer TABLE")
        pool = labelled if transfer is None else _concat([labelled, transfer], teacher.input_schema)
        self.rows_ = {"data": int(len(df)), "measure": int(len(measure)), "transfer": int(len(pool)), "augmented": 0}
        self._measure, self._y = measure, measure[teacher.target].to_numpy()

        self.graph_ = teacher_graph = export_graph(teacher) if is_bundle else teacher.graph_
        self.original_ = self._measure_one(Candidate("original", "none", "the model as given", teacher if is_bundle else None,
                                                     teacher_graph), teacher)
        self._teacher = teacher
        calibration = self._calibration(teacher_graph, pool if len(pool) else measure)
        self.candidates_, self._plan = [], []
        if progress is not None:
            progress.update(completed=0, description="compress: building and measuring candidates")
        # Candidates are measured as they are built, so only one graph per candidate is held at a time.
        for cand in self._candidates(teacher, teacher_graph, pool, labelled, calibration):
            try:
                self.candidates_.append(self._measure_one(cand, teacher))
                self._plan.append(cand)
            except InputError as exc:
                self.skipped_.append({"technique": cand.technique, "reason": exc.message})
            if progress is not None:
                progress.advance(1)
        return self

    def _calibration(self, graph: Any, rows: Any) -> list[dict[str, Any]]:
        from mlsys_cli.deploy.onnx_model import OnnxModel

        if "quantization" not in self.techniques or not _neural_layers(graph):
            return []
        model = OnnxModel("calibration", data=_serialize(graph))
        feeds = model.feeds(rows.iloc[:512])
        return [{k: v[i:i + 128] for k, v in feeds.items()} for i in range(0, len(rows.iloc[:512]), 128)]

    def _candidates(self, teacher: Any, graph: Any, pool: Any, labelled: Any, calibration: list) -> Iterator[Candidate]:
        predictor = getattr(teacher, "predictor", None)
        if predictor is not None and "pruning" in self.techniques:
            found = False
            for detail, pred in prune(predictor):
                found = True
                cand = self._bundle_candidate("pruning", detail, pred)
                if cand is not None:
                    yield cand
            if not found:
                self.skipped_.append({"technique": "pruning", "reason": f"nothing to prune in a {_family(predictor)} model"})
        students: list[Candidate] = []
        if predictor is not None and "distillation" in self.techniques:
            rows = pool
            if self.augment_factor > 0:
                columns = [c["name"] for c in teacher.input_schema if c["name"] in pool.columns]
                extra = augment(pool, len(pool) * self.augment_factor, columns, self.seed)
                self.rows_["augmented"] = int(len(extra))
                rows = _concat([pool, extra], teacher.input_schema)
            for detail, pred in distill(predictor, self.task_, len(self.classes_ or []), rows, labelled, teacher.target, self.seed):
                cand = self._bundle_candidate("distillation", detail, pred)
                if cand is not None:
                    students.append(cand)
                    yield cand
        elif predictor is None:
            for t in ("pruning", "distillation"):
                if t in self.techniques:
                    self.skipped_.append({"technique": t, "reason": "needs the model bundle (.mlsys), not an ONNX file"})
        graph_techniques = {"quantization", "low-rank"} & set(self.techniques)
        if not graph_techniques:
            return
        bases = [("original", graph)] + [(c.name, c.onnx) for c in students if _neural_layers(c.onnx)]
        if not _neural_layers(graph):
            reason = ("the original has no neural layers: onnxruntime's quantizer does not cover tree ensembles, "
                      "and only dense layers factorize")
            for t in sorted(graph_techniques):
                self.skipped_.append({"technique": t, "reason": reason + ("; applied to the MLP student only" if len(bases) > 1 else "")})
        for base_name, base in bases:
            if base_name == "original" and not _neural_layers(base):
                continue
            for technique, detail, variant in graph_variants(base, calibration if base_name == "original" else []):
                if variant is None and technique in graph_techniques:
                    self.skipped_.append({"technique": technique, "reason": f"{detail} of {base_name}"})
                elif technique in graph_techniques:
                    manifest = dict(self._manifest_of(base))
                    yield Candidate(f"{detail} of {base_name}", technique, detail, None, _stamp(variant, manifest),
                                    parent=base_name)

    def _manifest_of(self, graph: Any) -> dict[str, Any]:
        from mlsys_cli.deploy.onnx_model import read_metadata

        return read_metadata(graph, "candidate")

    def _bundle_candidate(self, technique: str, detail: str, predictor: Any) -> Candidate | None:
        """The candidate with its exported graph; None (reported under ``skipped``) when it has no ONNX form."""
        bundle = self._bundle(predictor, technique, detail)
        try:
            return Candidate(f"{technique}: {detail}", technique, detail, bundle, export_graph(bundle))
        except InputError as exc:
            self.skipped_.append({"technique": technique, "reason": f"{detail}: {exc.message}"})
            return None

    def _bundle(self, predictor: Any, technique: str, detail: str) -> Any:
        """A model bundle around a candidate predictor, with the original's manifest updated."""
        from mlsys_cli.data.io import invocation
        from mlsys_cli.models.bundle import ModelBundle
        from mlsys_cli.models.manifest import Recipe

        base = self._teacher.record
        schema = list(predictor.input_schema)
        names = {c["name"] for c in schema}
        reference = dict(base.reference)
        if isinstance(reference.get("features"), Mapping):
            reference["features"] = {k: v for k, v in reference["features"].items() if k in names}
        recipe = Recipe(family=_family(predictor), task=self.task_, target=base.target,
                        params=getattr(predictor, "spec", {}).get("params"), seed=self.seed,
                        compress={"technique": technique, "detail": detail, "command": invocation(),
                                  "from": base.recipe.to_dict()})
        # kind and format stay: the candidate's exported graph is stamped with this manifest.
        manifest = base.replace(input_schema=schema, recipe=recipe, reference=reference, predictor=None, members=None,
                                importance=None)
        return ModelBundle(manifest, predictor)

    def _measure_one(self, cand: Candidate, teacher: Any) -> dict[str, Any]:
        import numpy as np

        from mlsys_cli.deploy.onnx_model import OnnxModel
        from mlsys_cli.models.metrics import compute_metrics

        data = _serialize(cand.onnx)
        model = OnnxModel(cand.name, data=data)
        if cand.bundle is not None:
            scores = np.asarray(cand.bundle.predictor.predict_scores(self._measure), dtype=np.float64)
        else:
            out = model.predict(self._measure)
            scores = out["prediction"] if self.task_ == "regression" else out["probabilities"]
        threshold = getattr(teacher, "threshold", 0.5)
        metrics = compute_metrics(self.task_, self._y, scores, self.classes_, threshold=threshold)
        single, batch = latency(model, model.feeds(self._measure), self.repeats, self.batch_rows)
        row = {"name": cand.name, "technique": cand.technique, "detail": cand.detail,
               "format": "mlsys" if cand.bundle is not None else "onnx",
               self.metric_: metrics.get(self.metric_), "metrics": metrics, "onnx_bytes": len(data),
               "single_row_ms": round(single, 4), "batch_ms": round(batch, 3),
               "batch_rows": int(min(self.batch_rows, len(self._measure)))}
        return row

    # -- the decision -----------------------------------------------------------------------

    def _drop(self, value: float | None) -> float | None:
        base = self.original_[self.metric_]
        if value is None or base is None:
            return None
        return (base - value) if self.higher_ else (value - base)

    def _allowed(self) -> float:
        base = self.original_[self.metric_]
        return self.max_metric_drop * abs(base) if self.relative and base is not None else self.max_metric_drop

    def decide(self, output_format: str) -> "Compressor":
        """Mark each candidate (drop, ratios, qualifies) and choose the one to keep."""
        allowed = self._allowed()
        size0, lat0 = self.original_["onnx_bytes"], self.original_["single_row_ms"]
        for row in self.candidates_:
            drop = self._drop(row[self.metric_])
            row["drop"] = None if drop is None else round(drop, 6)
            row["size_ratio"] = round(size0 / row["onnx_bytes"], 3)
            row["speedup"] = round(lat0 / max(row["single_row_ms"], 1e-9), 3)
            reasons = []
            if drop is None or drop > allowed:
                reasons.append("metric drop too large" if drop is not None else "metric undefined")
            if row["onnx_bytes"] > size0:
                reasons.append("larger")
            if row["single_row_ms"] > lat0 * LATENCY_TOLERANCE:
                reasons.append("slower")
            if row["onnx_bytes"] >= size0 and row["single_row_ms"] >= lat0:
                reasons.append("no gain")
            if output_format == "mlsys" and row["format"] == "onnx":
                reasons.append("ONNX only (use -o FILE.onnx)")
            row["qualifies"] = not reasons
            row["why_not"] = ", ".join(dict.fromkeys(reasons)) or None
            row["kept"] = False
        ok = [i for i, r in enumerate(self.candidates_) if r["qualifies"]]
        key = ((lambda i: (self.candidates_[i]["onnx_bytes"], self.candidates_[i]["single_row_ms"])) if self.prefer == "size"
               else (lambda i: (self.candidates_[i]["single_row_ms"], self.candidates_[i]["onnx_bytes"])))
        self.kept_ = None
        if ok:
            best = min(ok, key=key)
            self.candidates_[best]["kept"] = True
            self.kept_ = self._plan[best]
        return self


def _concat(frames: Sequence[Any], schema: Sequence[Mapping[str, Any]]) -> Any:
    import pandas as pd

    cols = [c["name"] for c in schema]
    parts = [f[[c for c in cols if c in f.columns]] for f in frames if len(f)]
    return pd.concat(parts, ignore_index=True) if parts else frames[0].iloc[:0]


# --------------------------------------------------------------------------- the command


def _load_teacher(path: Path) -> Any:
    """A model bundle, or an ONNX file written by mlsys (its graph kept for the graph techniques)."""
    from mlsys_cli.deploy.onnx_model import OnnxModel
    from mlsys_cli.models.bundle import ModelBundle

    if path.suffix.lower() == ".onnx":
        if not path.is_file():
            raise InputError(f"{path}: no such file")
        import onnx

        data = path.read_bytes()
        model = OnnxModel(path, data=data)
        model.graph_ = onnx.load_from_string(data)
        return model
    return ModelBundle.load(path)


def check_data(df: Any, teacher: Any, source: str, target: bool = True) -> None:
    """Refuse rows that lack the target (when ``target``) or a column the model reads, or whose types differ (exit 3)."""
    from mlsys_cli.features.schema import canonicalize, missing_target

    if target and teacher.target not in df.columns:
        raise InputError(f"{source}: no target column {teacher.target!r}", "--data must hold the target to measure the metric")
    missing = [c["name"] for c in teacher.input_schema if c["name"] not in df.columns]
    if missing:
        raise InputError(f"{source}: does not match the model's input schema: missing column(s) {', '.join(missing[:5])}"
                         + (f" and {len(missing) - 5} more" if len(missing) > 5 else ""))
    try:
        canonicalize(df.iloc[:1000], teacher.input_schema)
    except InputError as exc:
        raise InputError(f"{source}: does not match the model's input schema: {exc.message}") from None
    if target and missing_target(df[teacher.target]).all():
        raise InputError(f"{source}: the target column {teacher.target!r} is empty")


def compress(model: str | os.PathLike, data: Sequence[str] | str, *, output: str | os.PathLike,
             max_metric_drop: str | float = 0.005, techniques: Sequence[str] = TECHNIQUES, prefer: str = "size",
             require_gain: bool = False, transfer: Sequence[str] | str | None = None, measure_fraction: float = 0.5,
             augment_factor: int = 2, repeats: int = 200, batch_rows: int = 1000, seed: int = 0,
             html: str | os.PathLike | None = None, progress: Any = None) -> CompressResult:
    """Compress a model and write the best candidate within the metric budget (or the original).

    Parameters
    ----------
    model : path
        A ``.mlsys`` model bundle, or an ``.onnx`` file written by ``mlsys export`` (graph
        techniques only).
    data : path(s)
        Held-out rows with the target.
    output : path
        ``.mlsys`` (a model bundle) or ``.onnx`` (the graph; quantized candidates need this).
    max_metric_drop : float or str
        ``0.005`` (metric units) or ``"1%"`` (of the original's metric).
    techniques, prefer, measure_fraction, augment_factor, repeats, batch_rows, seed :
        See :class:`Compressor`.
    require_gain : bool
        When no candidate qualifies, write nothing (``output`` is None in the result; the
        command then exits 4).
    transfer : path(s), optional
        Extra rows for distillation (their target is never used).
    html : path, optional
        Also write the trade-off page with size/latency-vs-metric plots.
    progress : object, optional

    Returns
    -------
    CompressResult
    """
    from mlsys_cli.data.io import read_frame
    from mlsys_cli.features.schema import missing_target
    from mlsys_cli.features.unseen import input_counts
    from mlsys_cli.models.train import check_classes

    start = time.perf_counter()
    model, output = Path(model), Path(output)
    out_format = "onnx" if output.suffix.lower() == ".onnx" else "mlsys"
    if output.suffix.lower() not in (".onnx", ".mlsys"):
        raise UsageError(f"-o {output}: the output must end in .mlsys (a model bundle) or .onnx")
    if output.exists() and model.exists() and output.resolve() == model.resolve():
        raise UsageError("-o must differ from the input model: inputs are never modified")
    drop, relative = parse_drop(max_metric_drop)
    comp = Compressor(drop, relative=relative, techniques=list(techniques), prefer=prefer, measure_fraction=measure_fraction,
                      augment_factor=augment_factor, repeats=repeats, batch_rows=batch_rows, seed=seed)
    comp._check()
    teacher = _load_teacher(model)
    if out_format == "mlsys" and not hasattr(teacher, "predictor"):
        raise UsageError("an ONNX model compresses only to an ONNX file", "use -o small.onnx")
    paths = [data] if isinstance(data, (str, os.PathLike)) else list(data)
    df = read_frame(paths)
    source = ", ".join(map(str, paths))
    check_data(df, teacher, source)
    df = df[~missing_target(df[teacher.target])].reset_index(drop=True)
    counts = input_counts(df, teacher.input_schema)
    # Every candidate's metric would be undefined, and the verdict "none within the budget" meaningless.
    check_classes(df[teacher.target], teacher.task, teacher.target, source, "measure on held-out rows with every class")
    extra = None
    if transfer:
        tpaths = [transfer] if isinstance(transfer, (str, os.PathLike)) else list(transfer)
        extra = read_frame(tpaths)
        check_data(extra, teacher, ", ".join(map(str, tpaths)), target=False)
    comp.fit(teacher, df, transfer=extra, progress=progress).decide(out_format)

    output, verdict = _write_outcome(comp, model, output, out_format, require_gain)
    kept, o = comp.kept_, comp.original_
    original = {k: v for k, v in o.items() if k not in ("name", "technique", "detail", "format")}
    result = CompressResult(
        model=str(model), data=[str(p) for p in paths], output=None if output is None else str(output),
        output_format=out_format, task=comp.task_,
        target=teacher.target, metric=comp.metric_, higher_is_better=comp.higher_, max_metric_drop=comp._allowed(),
        max_metric_drop_relative=relative, prefer=prefer, rows=comp.rows_, original=original,
        candidates=comp.candidates_, kept=None if kept is None else kept.name, verdict=verdict, skipped=comp.skipped_,
        seed=seed, seconds=round(time.perf_counter() - start, 3), **counts,
    )
    if html:
        write_html(result, html)
    return result



def _write_outcome(comp: Compressor, model: Path, output: Path, out_format: str,
                   require_gain: bool) -> tuple[Path | None, str]:
    """Write the kept candidate, or the original when none is kept; return the path written and the verdict."""
    from mlsys_cli.fsutil import atomic_write_bytes

    kept = comp.kept_
    if kept is not None:
        row = next(r for r in comp.candidates_ if r["kept"])
        if out_format == "onnx":
            atomic_write_bytes(output, _serialize(kept.onnx))
        else:
            kept.bundle.save(output)
        o = comp.original_
        return output, (f"kept {row['name']}: {row['size_ratio']:.1f}x smaller ONNX, {row['speedup']:.1f}x faster per "
                        f"row, {comp.metric_} {row[comp.metric_]:.4f} vs {o[comp.metric_]:.4f} (drop {row['drop']:+.4f}, "
                        f"allowed {_budget(comp)})")
    verdict = (f"no candidate is within {_budget(comp)} of the original's {comp.metric_} and smaller or faster "
               f"without being larger or slower")
    if require_gain:
        return None, verdict + "; nothing written (--require-gain)"
    if out_format == "mlsys" or model.suffix.lower() == ".onnx":
        atomic_write_bytes(output, model.read_bytes())
        return output, verdict + f"; the original is kept: {output} is an unchanged copy of {model}"
    atomic_write_bytes(output, _serialize(comp.graph_))
    return output, verdict + f"; the original is kept: {output} is its ONNX export, uncompressed"

def _budget(comp: Compressor) -> str:
    value = comp._allowed()
    return f"{value:.4g}" + (f" ({comp.max_metric_drop:.2%} of it)" if comp.relative else "")


def write_html(result: CompressResult, path: str | os.PathLike) -> None:
    """The trade-off page: the candidate table and size/latency-vs-metric scatter plots."""
    from mlsys_cli import __version__
    from mlsys_cli import htmlreport as hr

    metric = result.metric
    page = hr.Report(f"Compression of {result.model}",
                     subtitle=f"{result.task} model predicting {result.target!r}; measured on {result.rows['measure']} "
                              f"held-out rows of {', '.join(result.data)}",
                     footer=f"mlsys {__version__} compress; seed {result.seed}")
    page.heading("Decision")
    page.text(result.verdict)
    page.kv({"original " + metric: result.original[metric], "original ONNX bytes": result.original["onnx_bytes"],
             "original single-row ms": result.original["single_row_ms"], "allowed drop": result.max_metric_drop,
             "prefer": result.prefer, "output": result.output})
    groups: dict[str, list[dict[str, Any]]] = {}
    for r in result.candidates:
        groups.setdefault(r["technique"], []).append(r)
    orig = hr.Series("original", [result.original["onnx_bytes"]], [result.original[metric]], labels=["original"])
    lat = hr.Series("original", [result.original["single_row_ms"]], [result.original[metric]], labels=["original"])
    sizes = [orig] + [hr.Series(t, [r["onnx_bytes"] for r in rs], [r[metric] for r in rs], labels=[r["name"] for r in rs])
                      for t, rs in groups.items()]
    speeds = [lat] + [hr.Series(t, [r["single_row_ms"] for r in rs], [r[metric] for r in rs], labels=[r["name"] for r in rs])
                      for t, rs in groups.items()]
    budget = result.original[metric] + (-result.max_metric_drop if result.higher_is_better else result.max_metric_drop)
    page.figures(hr.scatter_plot(sizes, title=f"{metric} vs ONNX size", x_label="ONNX bytes (log)", y_label=metric,
                                 log_x=True, hline=budget),
                 hr.scatter_plot(speeds, title=f"{metric} vs single-row latency", x_label="ms per row (log)", y_label=metric,
                                 log_x=True, hline=budget),
                 captions=["The line is the metric budget; the original is the first series.", None])
    page.heading("Candidates")
    page.table(result.candidates, ["name", "technique", "format", metric, "drop", "onnx_bytes", "size_ratio",
                                   "single_row_ms", "speedup", "batch_ms", "qualifies", "why_not", "kept"], flag="kept")
    if result.skipped:
        page.heading("Not applicable")
        page.table(result.skipped, ["technique", "reason"])
    page.write(path)
