"""The graph surgery that joins ONNX graphs: featurizer + model, ensembles, the label output.

Every model graph (``Family.to_onnx``, built with :mod:`mlsys_cli.models.onnx_graphs`) has one
input ``features`` (``tensor(float)`` [N, k], the featurizer's output) and one output:
``probabilities`` [N, C] for classification or ``prediction`` [N, 1] for regression.
:func:`compose` puts a featurizer graph in front, :func:`parallel` runs several such graphs on
the same raw inputs (ensembles), and :func:`finish` adds the ``label`` output, so every path
ends with the same outputs.
"""

from __future__ import annotations

from typing import Any, Callable, Iterable, Mapping, Sequence

from mlsys_cli.models.onnx_graphs import (FEATURES, LABEL, OPSET, PREDICTION, PROBA, is_classifier, make_model, prune,
                                          rename_node)
# The converters, under this module too: callers composing graphs find them beside compose().
from mlsys_cli.models.onnx_graphs import constant_to_onnx, sklearn_to_onnx  # noqa: F401


def family_to_onnx(family: str, est: Any, n_features: int, task: str, n_classes: int = 0) -> Any:
    """The graph of a fitted estimator of ``family``: ``Family.to_onnx`` (``features`` -> output).

    Raises
    ------
    InputError
        When the estimator has no ONNX form (the message names its type).
    """
    from mlsys_cli.models.families import get_family

    return get_family(family).to_onnx(est, n_features, task, n_classes)


def _unify(models: Sequence[Any]) -> dict[str, int]:
    """One opset per domain for graphs about to be joined (upgrading the default domain)."""
    from onnx import version_converter

    opsets: dict[str, int] = {}
    for m in models:
        for o in m.opset_import:
            opsets[o.domain] = max(opsets.get(o.domain, 0), o.version)
    for i, m in enumerate(models):
        version = {o.domain: o.version for o in m.opset_import}.get("", opsets.get("", 0))
        if "" in opsets and version < opsets[""]:
            converted = version_converter.convert_version(m, opsets[""])
            m.CopyFrom(converted)
    return opsets


def renamed(graph: Any, prefix: str, mapping: Mapping[str, str], keep: Iterable[str]) -> tuple[list, list]:
    """The nodes and initializers of ``graph`` with every name prefixed, except ``keep``."""
    import onnx

    kept = set(keep)

    def name(n: str) -> str:
        if not n:
            return n
        if n in mapping:
            return mapping[n]
        return n if n in kept else prefix + n

    nodes = []
    for i, node in enumerate(graph.node):
        new = rename_node(node, {n: name(n) for n in [*node.input, *node.output]})
        # Node names must be unique in a graph; unnamed nodes get their position.
        new.name = prefix + (node.name or f"{node.op_type}_{i}")
        nodes.append(new)
    inits = []
    for init in graph.initializer:
        t = onnx.TensorProto()
        t.CopyFrom(init)
        t.name = name(init.name)
        inits.append(t)
    return nodes, inits


def compose(featurizer: Any, model: Any) -> Any:
    """Featurizer graph (raw inputs -> ``features``) followed by a model graph."""
    from onnx import helper

    opsets = _unify([featurizer, model])
    f_nodes, f_inits = renamed(featurizer.graph, "fz/", {FEATURES: "fz/features"}, [i.name for i in featurizer.graph.input])
    out = model.graph.output[0]
    m_nodes, m_inits = renamed(model.graph, "m/", {FEATURES: "fz/features", out.name: out.name}, [])
    graph = helper.make_graph(f_nodes + m_nodes, "mlsys", list(featurizer.graph.input), [out], f_inits + m_inits)
    return prune(make_model(graph, opsets))


def parallel(models: Sequence[Any], combine: Callable[[list[str]], tuple[list, list, Any]]) -> Any:
    """Run models on the same raw inputs and join their outputs with ``combine``.

    ``combine(names)`` receives the member output names and returns (nodes, initializers,
    output value_info) of the combining subgraph.
    """
    from onnx import helper

    opsets = _unify(list(models))
    inputs: dict[str, Any] = {}
    nodes: list = []
    inits: list = []
    names = []
    for i, m in enumerate(models):
        for inp in m.graph.input:
            inputs.setdefault(inp.name, inp)
        out = m.graph.output[0].name
        n, t = renamed(m.graph, f"e{i}/", {}, [inp.name for inp in m.graph.input])
        nodes += n
        inits += t
        names.append(f"e{i}/{out}")
    c_nodes, c_inits, output = combine(names)
    graph = helper.make_graph(nodes + c_nodes, "mlsys_ensemble", list(inputs.values()), [output], inits + c_inits)
    return prune(make_model(graph, opsets))


def weighted_average(weights: Sequence[float], task: str) -> Callable[[list[str]], tuple[list, list, Any]]:
    """A combiner: the weighted mean of the members' outputs (weights are normalised).

    Classifier rows are divided by their sum, as ``Combiner.combine`` does: members' float32
    probabilities drift from 1 by a few ulps, which log-loss consumers refuse."""
    import numpy as np
    import onnx
    from onnx import helper, numpy_helper

    w = np.asarray(weights, dtype=np.float64)
    w = (w / w.sum()).astype(np.float32)
    target = PROBA if is_classifier(task) else PREDICTION

    def combine(names: list[str]) -> tuple[list, list, Any]:
        nodes, inits, terms = [], [], []
        for i, (name, wi) in enumerate(zip(names, w)):
            if wi == 0:
                continue
            inits.append(numpy_helper.from_array(np.array(wi, dtype=np.float32), f"_w{i}"))
            nodes.append(helper.make_node("Mul", [name, f"_w{i}"], [f"_t{i}"]))
            terms.append(f"_t{i}")
        if not is_classifier(task):
            nodes.append(helper.make_node("Sum", terms, [target]))
            return nodes, inits, helper.make_tensor_value_info(target, onnx.TensorProto.FLOAT, [None, None])
        inits.append(numpy_helper.from_array(np.array([1], dtype=np.int64), "_rowsum_axes"))
        nodes += [helper.make_node("Sum", terms, ["_wsum"]),
                  helper.make_node("ReduceSum", ["_wsum", "_rowsum_axes"], ["_rowsum"], keepdims=1),
                  helper.make_node("Div", ["_wsum", "_rowsum"], [target])]
        return nodes, inits, helper.make_tensor_value_info(target, onnx.TensorProto.FLOAT, [None, None])

    return combine


def linear_stack(coef: Any, intercept: Any, task: str, drop_first: bool = False) -> Callable[[list[str]], tuple[list, list, Any]]:
    """A combiner: a linear meta-learner over the members' concatenated outputs.

    ``coef`` is [n_inputs, n_out] (as in ``X @ coef + intercept``). Classification applies a
    sigmoid (one output column: binary) or a softmax. ``drop_first`` keeps only the last
    probability column of each binary member, as meta-learners on binary tasks are usually fit.
    """
    import numpy as np
    import onnx
    from onnx import helper, numpy_helper

    coef = np.asarray(coef, dtype=np.float32)
    intercept = np.asarray(intercept, dtype=np.float32).reshape(-1)
    target = PROBA if is_classifier(task) else PREDICTION

    def combine(names: list[str]) -> tuple[list, list, Any]:
        nodes, inits = [], []
        parts = names
        if drop_first:
            inits += [numpy_helper.from_array(np.array(v, dtype=np.int64), n) for n, v in
                      (("_c1", [1]), ("_c2", [2]), ("_ax1", [1]))]
            parts = []
            for i, name in enumerate(names):
                nodes.append(helper.make_node("Slice", [name, "_c1", "_c2", "_ax1"], [f"_pos{i}"]))
                parts.append(f"_pos{i}")
        nodes.append(helper.make_node("Concat", parts, ["_stack_in"], axis=1))
        inits += [numpy_helper.from_array(coef, "_meta_coef"), numpy_helper.from_array(intercept, "_meta_b")]
        nodes += [helper.make_node("MatMul", ["_stack_in", "_meta_coef"], ["_mm"]),
                  helper.make_node("Add", ["_mm", "_meta_b"], ["_z"])]
        if not is_classifier(task):
            nodes.append(helper.make_node("Identity", ["_z"], [target]))
        elif coef.shape[1] == 1:
            inits.append(numpy_helper.from_array(np.array(1.0, dtype=np.float32), "_one"))
            nodes += [helper.make_node("Sigmoid", ["_z"], ["_p1"]), helper.make_node("Sub", ["_one", "_p1"], ["_p0"]),
                      helper.make_node("Concat", ["_p0", "_p1"], [target], axis=1)]
        else:
            nodes.append(helper.make_node("Softmax", ["_z"], [target], axis=1))
        return nodes, inits, helper.make_tensor_value_info(target, onnx.TensorProto.FLOAT, [None, None])

    return combine


def finish(model: Any, task: str, classes: Sequence[Any] | None, threshold: float = 0.5) -> Any:
    """Add the final outputs: ``label`` [N] + ``probabilities`` [N, C], or ``prediction`` [N].

    Binary labels compare P(second class) with ``threshold`` (``ModelBundle.threshold``), as
    the bundle does; other tasks take the most probable class.
    """
    import numpy as np
    import onnx
    from onnx import helper, numpy_helper

    graph = model.graph
    src = graph.output[0].name
    nodes = [rename_node(n, {src: "_final"}) for n in graph.node]
    inits = list(graph.initializer)
    if not is_classifier(task):
        inits.append(numpy_helper.from_array(np.array([-1], dtype=np.int64), "_flat"))
        nodes.append(helper.make_node("Reshape", ["_final", "_flat"], [PREDICTION]))
        outputs = [helper.make_tensor_value_info(PREDICTION, onnx.TensorProto.FLOAT, [None])]
    else:
        values = list(classes or [])
        numeric = all(isinstance(c, (int, np.integer)) and not isinstance(c, bool) for c in values)
        table = np.array(values, dtype=np.int64) if numeric else np.array([str(c) for c in values], dtype=object)
        inits.append(numpy_helper.from_array(table, "_classes"))
        nodes.append(helper.make_node("Identity", ["_final"], [PROBA]))
        if task == "binary":
            inits += [numpy_helper.from_array(np.array([1], dtype=np.int64), "_one_i"),
                      numpy_helper.from_array(np.array([2], dtype=np.int64), "_two_i"),
                      numpy_helper.from_array(np.array(threshold, dtype=np.float32), "_threshold")]
            nodes += [
                helper.make_node("Slice", ["_final", "_one_i", "_two_i", "_one_i"], ["_p_pos"]),
                helper.make_node("GreaterOrEqual", ["_p_pos", "_threshold"], ["_is_pos"]),
                helper.make_node("Cast", ["_is_pos"], ["_idx2"], to=onnx.TensorProto.INT64),
                helper.make_node("Reshape", ["_idx2", "_flat_i"], ["_idx"]),
            ]
            inits.append(numpy_helper.from_array(np.array([-1], dtype=np.int64), "_flat_i"))
        else:
            nodes.append(helper.make_node("ArgMax", ["_final"], ["_idx"], axis=1, keepdims=0))
        nodes.append(helper.make_node("Gather", ["_classes", "_idx"], [LABEL], axis=0))
        elem = onnx.TensorProto.INT64 if numeric else onnx.TensorProto.STRING
        outputs = [helper.make_tensor_value_info(LABEL, elem, [None]),
                   helper.make_tensor_value_info(PROBA, onnx.TensorProto.FLOAT, [None, len(values)])]
    new = helper.make_graph(nodes, graph.name, list(graph.input), outputs, inits)
    return prune(make_model(new, model.opset_import))
