"""ONNX graphs of fitted estimators: the converters each ``Family.to_onnx`` uses.

Every model graph built here has one input ``features`` (``tensor(float)`` [N, k], the
featurizer's output) and one output: ``probabilities`` [N, C] for classification or
``prediction`` [N, 1] for regression. The graph surgery that joins graphs (featurizer in
front, ensembles, the ``label`` output) is ``deploy.onnx_families``.

Precision: scikit-learn trees compare ``float32(x)`` (as a double) with float64 thresholds.
Rounding a threshold to the nearest float32 can move a split by one ulp and change a leaf;
skl2onnx instead stores the float32 threshold that splits every float32 input the same way
(exact, since the canonical form makes every raw number float32-representable). XGBoost
stores float32 thresholds and compares float32 values, which ONNX reproduces as is.
"""

from __future__ import annotations

from typing import Any, Iterable, Mapping, Sequence

from mlsys_cli.errors import InputError

OPSET = {"": 17, "ai.onnx.ml": 3}
# onnxmltools' XGBoost converter supports default-domain opsets up to 15; _unify upgrades it.
XGBOOST_OPSET = 15
IR_VERSION = 8
FEATURES = "features"
PROBA = "probabilities"
PREDICTION = "prediction"
LABEL = "label"


def _target_opset() -> dict[str, int]:
    return dict(OPSET)


def _skl_convert(est: Any, n_features: int, *, options: dict | None = None) -> Any:
    from skl2onnx import convert_sklearn
    from skl2onnx.common.data_types import FloatTensorType

    return convert_sklearn(
        est, initial_types=[(FEATURES, FloatTensorType([None, n_features]))],
        options={id(est): options} if options else None, target_opset=_target_opset(),
    )


def is_classifier(task: str) -> bool:
    return task in ("binary", "multiclass")


def _single_output(model: Any, task: str) -> Any:
    """Keep the probabilities (or the regression value) of a converted model, renamed."""
    import onnx
    from onnx import helper

    graph = model.graph
    outputs = [o.name for o in graph.output]
    if is_classifier(task):
        source = next(o for o in outputs if o != "label") if "probabilities" not in outputs else "probabilities"
    else:
        source = outputs[0]
    target = PROBA if is_classifier(task) else PREDICTION
    renamed = {source: "_raw_out"} if source == target else {}
    nodes = [rename_node(n, renamed) for n in graph.node]
    new_inputs = list(graph.input)
    src = renamed.get(source, source)
    nodes.append(helper.make_node("Cast", [src], [target], to=onnx.TensorProto.FLOAT, name=f"cast_{target}"))
    width = 1 if not is_classifier(task) else None
    out = helper.make_tensor_value_info(target, onnx.TensorProto.FLOAT, [None, width] if width else [None, None])
    new_graph = helper.make_graph(nodes, graph.name or "model", new_inputs, [out], list(graph.initializer))
    result = make_model(new_graph, model.opset_import)
    return prune(result)


def width(value_info: Any) -> int | None:
    dims = value_info.type.tensor_type.shape.dim
    return dims[1].dim_value if len(dims) > 1 and dims[1].HasField("dim_value") else None


def float_input(name: str, width: int | None, elem: int | None = None) -> Any:
    import onnx
    from onnx import helper

    return helper.make_tensor_value_info(name, elem or onnx.TensorProto.FLOAT, [None, width])


def rename_node(node: Any, mapping: Mapping[str, str]) -> Any:
    import onnx

    new = onnx.NodeProto()
    new.CopyFrom(node)
    new.ClearField("input")
    new.ClearField("output")
    new.input.extend(mapping.get(i, i) for i in node.input)
    new.output.extend(mapping.get(o, o) for o in node.output)
    return new


def make_model(graph: Any, opsets: Iterable[Any] | Mapping[str, int]) -> Any:
    from onnx import helper

    if isinstance(opsets, Mapping):
        versions = dict(opsets)
    else:
        versions = {o.domain: o.version for o in opsets}
    # Nodes we add (Cast, Identity, ...) are in the default domain, present in every graph.
    versions.setdefault("", OPSET[""])
    imports = [helper.make_opsetid(d, v) for d, v in sorted(versions.items())]
    model = helper.make_model(graph, opset_imports=imports, producer_name="mlsys")
    model.ir_version = IR_VERSION
    return model


def prune(model: Any) -> Any:
    """Drop nodes and initializers that no output depends on."""
    graph = model.graph
    needed = {o.name for o in graph.output}
    keep = []
    for node in reversed(graph.node):
        if any(o in needed for o in node.output):
            keep.append(node)
            needed.update(node.input)
    keep.reverse()
    del graph.node[:]
    graph.node.extend(keep)
    inits = [i for i in graph.initializer if i.name in needed]
    del graph.initializer[:]
    graph.initializer.extend(inits)
    del graph.value_info[:]
    return model


# --- converters, one per kind of fitted estimator -------------------------------------------

def sklearn_to_onnx(est: Any, n_features: int, task: str) -> Any:
    """A scikit-learn estimator (linear models, trees, forests).

    Tree thresholds are stored as float32 values chosen by skl2onnx so that
    ``x <= t32`` holds exactly when scikit-learn's ``double(float32(x)) <= t64`` does, and
    missing values follow each split's learned side (``missing_go_to_left``).
    """
    options = {"zipmap": False} if is_classifier(task) else None
    model = _skl_convert(est, n_features, options=options)
    _route_missing(model, est)
    n_trees = _vote_counts(model, est)
    model = _single_output(model, task)
    if n_trees:
        model = _divide(model, n_trees)
    return model


def _vote_counts(model: Any, est: Any) -> int:
    """Make a forest classifier's graph sum leaf fractions, not fractions pre-divided by n_trees.

    scikit-learn sums each tree's leaf fractions in float64 and divides by the number of trees
    once; skl2onnx stores fraction / n_trees and sums in float32. With pure leaves (a fully
    grown forest) scikit-learn's class votes tie exactly, while the pre-divided float32 sums
    tie only by luck, so the two argmaxes disagree on tied rows. Summing the fractions themselves
    keeps integer vote counts exact in float32, hence the same ties; :func:`_divide` divides
    once at the end, as scikit-learn does. Returns the number of trees (0: not a forest classifier).
    """
    import numpy as np
    from onnx import helper

    trees = [t.tree_ for t in getattr(est, "estimators_", [])]
    if not trees or not hasattr(est, "classes_"):
        return 0
    for node in model.graph.node:
        if node.op_type != "TreeEnsembleClassifier":
            continue
        attrs = {a.name: a for a in node.attribute}
        tree_ids, node_ids, class_ids = (list(attrs[k].ints) for k in ("class_treeids", "class_nodeids", "class_ids"))
        values = [np.asarray(t.value[:, 0, :], dtype=np.float64) for t in trees]
        fractions = [v / np.where(v.sum(axis=1, keepdims=True) > 0, v.sum(axis=1, keepdims=True), 1.0) for v in values]
        # Binary graphs hold one weight per leaf, P(second class), under class id 0.
        binary = fractions[0].shape[1] == 2 and set(class_ids) == {0}
        weights = [float(fractions[t][n, 1 if binary else c]) for t, n, c in zip(tree_ids, node_ids, class_ids)]
        kept = [a for a in node.attribute if a.name != "class_weights"]
        del node.attribute[:]
        node.attribute.extend([*kept, helper.make_attribute("class_weights", weights)])
        return len(trees)
    return 0


def _divide(model: Any, n: int) -> Any:
    """Divide the summed fractions by ``n`` (once, after the sum).

    A binary graph outputs ``[1 - S, S]`` for the sum S of P(second class); its probabilities
    are rebuilt as ``[1 - S/n, S/n]``.
    """
    import numpy as np
    from onnx import helper, numpy_helper

    graph = model.graph
    nodes = [rename_node(node, {PROBA: "_votes"}) for node in graph.node]
    inits = [*graph.initializer, numpy_helper.from_array(np.array(n, dtype=np.float32), "_n_trees")]
    binary = next((len(a.ints) == 2 for node in graph.node if node.op_type == "TreeEnsembleClassifier"
                   for a in node.attribute if a.name in ("classlabels_int64s", "classlabels_strings")), False)
    if binary:
        inits += [numpy_helper.from_array(np.array(v, dtype=np.int64), name) for name, v in
                  (("_d1", [1]), ("_d2", [2]), ("_dax", [1]))]
        inits.append(numpy_helper.from_array(np.array(1.0, dtype=np.float32), "_d_one"))
        nodes += [helper.make_node("Slice", ["_votes", "_d1", "_d2", "_dax"], ["_s_pos"]),
                  helper.make_node("Div", ["_s_pos", "_n_trees"], ["_p_pos"]),
                  helper.make_node("Sub", ["_d_one", "_p_pos"], ["_p_neg"]),
                  helper.make_node("Concat", ["_p_neg", "_p_pos"], [PROBA], axis=1)]
    else:
        nodes.append(helper.make_node("Div", ["_votes", "_n_trees"], [PROBA]))
    new = helper.make_graph(nodes, graph.name, list(graph.input), list(graph.output), inits)
    return make_model(new, model.opset_import)


def linear_to_onnx(est: Any, n_features: int, task: str) -> Any:
    """A fitted ``LogisticRegression`` or ``Ridge``/``LinearRegression``, computed in double.

    skl2onnx computes ``X @ coef`` in float32; with unscaled features and large targets the
    cancellation costs more than 1e-5 (measured on ltv.parquet), so the product, the softmax
    or sigmoid run in double like scikit-learn's, and only the result is rounded to float32.
    """
    import numpy as np
    import onnx
    from onnx import helper

    from mlsys_cli.features.onnx import Graph

    g = Graph()
    coef = np.atleast_2d(np.asarray(est.coef_, dtype=np.float64)).T  # [k, outputs]
    z = g.op("Add", [g.op("MatMul", [g.cast(FEATURES, "double"), g.const(coef, "coef")]),
                     g.const(np.atleast_1d(np.asarray(est.intercept_, dtype=np.float64)), "intercept")])
    target = PROBA if is_classifier(task) else PREDICTION
    if not is_classifier(task):
        out = z
    elif coef.shape[1] == 1:
        p1 = g.op("Sigmoid", [z])
        out = g.concat([g.op("Sub", [g.const(np.float64(1.0), "one"), p1]), p1])
    else:
        out = g.op("Softmax", [z], axis=1)
    g.nodes.append(helper.make_node("Cast", [out], [target], to=onnx.TensorProto.FLOAT))
    width = coef.shape[1] if not is_classifier(task) else max(coef.shape[1], 2)
    graph = helper.make_graph(g.nodes, "linear", [float_input(FEATURES, n_features)],
                              [float_input(target, width)], g.initializers)
    return make_model(graph, OPSET)


def _route_missing(model: Any, est: Any) -> None:
    """Send NaN down the side each scikit-learn split learned (skl2onnx sends it right).

    The converter writes one ONNX tree node per scikit-learn node, tree after tree, in
    node-id order; ONNX's "true" branch of BRANCH_LEQ is scikit-learn's left child.
    """
    import numpy as np
    from onnx import helper

    trees = [t.tree_ for t in getattr(est, "estimators_", [])] or ([est.tree_] if hasattr(est, "tree_") else [])
    if not trees or not all(hasattr(t, "missing_go_to_left") for t in trees):
        return
    flags = np.concatenate([np.asarray(t.missing_go_to_left, dtype=np.int64) for t in trees]).tolist()
    for node in model.graph.node:
        if node.op_type not in ("TreeEnsembleClassifier", "TreeEnsembleRegressor"):
            continue
        kept = [a for a in node.attribute if a.name != "nodes_missing_value_tracks_true"]
        n_nodes = next(len(a.ints) for a in node.attribute if a.name == "nodes_nodeids")
        if n_nodes != len(flags):
            raise InputError(f"cannot map missing-value routing of {type(est).__name__} to ONNX ({n_nodes} != {len(flags)} nodes)")
        del node.attribute[:]
        node.attribute.extend([*kept, helper.make_attribute("nodes_missing_value_tracks_true", flags)])


def booster_to_onnx(booster: Any, n_features: int, task: str) -> Any:
    """An XGBoost ``Booster`` through onnxmltools' converter (float32 thresholds, as XGBoost's)."""
    from onnxmltools import convert_xgboost
    from onnxmltools.convert.common.data_types import FloatTensorType

    model = convert_xgboost(booster, initial_types=[(FEATURES, FloatTensorType([None, n_features]))],
                            target_opset=XGBOOST_OPSET)
    return _single_output(model, task)


def constant_to_onnx(values: Sequence[float], n_features: int, task: str) -> Any:
    """A constant model (the baseline): the same row of outputs for every input row."""
    import numpy as np
    import onnx
    from onnx import helper, numpy_helper

    row = np.asarray(values, dtype=np.float32).reshape(1, -1)
    target = PROBA if is_classifier(task) else PREDICTION
    nodes = [
        # Multiplying the first feature by zero gives an [N, 1] zero column for any N.
        helper.make_node("Slice", [FEATURES, "_s0", "_s1", "_ax"], ["_col"]),
        helper.make_node("Mul", ["_col", "_zero"], ["_zeros"]),
        helper.make_node("Add", ["_zeros", "_row"], [target]),
    ]
    inits = [
        numpy_helper.from_array(np.array([0], dtype=np.int64), "_s0"),
        numpy_helper.from_array(np.array([1], dtype=np.int64), "_s1"),
        numpy_helper.from_array(np.array([1], dtype=np.int64), "_ax"),
        numpy_helper.from_array(np.array(0.0, dtype=np.float32), "_zero"),
        numpy_helper.from_array(row, "_row"),
    ]
    out = helper.make_tensor_value_info(target, onnx.TensorProto.FLOAT, [None, row.shape[1]])
    graph = helper.make_graph(nodes, "constant", [float_input(FEATURES, max(n_features, 1))], [out], inits)
    return make_model(graph, OPSET)


def scatter_classes(model: Any, inner: Any, n_classes: int) -> Any:
    """Widen [N, c] probabilities to [N, C] when some classes were absent from training."""
    import numpy as np
    from onnx import helper, numpy_helper

    present = getattr(inner, "classes_", None)
    if present is None or not n_classes or len(present) == n_classes:
        return model
    scatter = np.zeros((len(present), n_classes), dtype=np.float32)
    scatter[np.arange(len(present)), np.asarray(present).astype(int)] = 1.0
    graph = model.graph
    nodes = [rename_node(n, {PROBA: "_narrow"}) for n in graph.node]
    nodes.append(helper.make_node("MatMul", ["_narrow", "_scatter"], [PROBA]))
    inits = [*graph.initializer, numpy_helper.from_array(scatter, "_scatter")]
    new = helper.make_graph(nodes, graph.name, list(graph.input), list(graph.output), inits)
    return make_model(new, model.opset_import)


# --- graph surgery --------------------------------------------------------------------------


def estimator_to_onnx(family: str, est: Any, n_features: int, task: str, n_classes: int = 0) -> Any:
    """The graph of a fitted scikit-learn or XGBoost estimator (or a family wrapper around one,
    ``est.estimator``): ``features`` -> output. ``family`` names it in error messages.

    Raises
    ------
    InputError
        When the estimator has no ONNX form (the message names its type).
    """
    import xgboost as xgb
    from sklearn.dummy import DummyClassifier, DummyRegressor

    inner = getattr(est, "estimator", est)
    if isinstance(inner, xgb.XGBModel):
        return scatter_classes(booster_to_onnx(inner.get_booster(), n_features, task), inner, n_classes)

    if isinstance(inner, DummyRegressor):
        return constant_to_onnx(inner.constant_.reshape(-1), n_features, task)
    if isinstance(inner, DummyClassifier):
        import numpy as np

        # These strategies give the same probabilities for every row; "stratified" draws at random.
        prior = np.asarray(inner.class_prior_, dtype=np.float64)
        constant = {"prior": prior, "uniform": np.full_like(prior, 1.0 / len(prior)),
                    "most_frequent": np.eye(len(prior))[prior.argmax()]}.get(inner.strategy)
        if constant is None:
            raise InputError(f"the baseline strategy {inner.strategy!r} has no ONNX form (its probabilities are random)",
                             "retrain with --param strategy=prior")
        return scatter_classes(constant_to_onnx(constant, n_features, task), inner, n_classes)
    from sklearn.linear_model import LinearRegression, LogisticRegression, Ridge

    if isinstance(inner, (LogisticRegression, Ridge, LinearRegression)):
        return scatter_classes(linear_to_onnx(inner, n_features, task), inner, n_classes)
    try:
        model = sklearn_to_onnx(inner, n_features, task)
    except (RuntimeError, NotImplementedError, TypeError, ValueError) as exc:
        raise InputError(f"the {family} model ({type(inner).__name__}) has no ONNX form: {str(exc).splitlines()[0]}") from None
    return scatter_classes(model, inner, n_classes)
