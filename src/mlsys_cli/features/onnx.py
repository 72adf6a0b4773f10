"""The Featurizer as one ONNX graph: raw columns in, the ``features`` tensor out.

The graph is written with ``onnx.helper`` rather than skl2onnx: the featurizer's pieces are
small lookups and arithmetic (our own blocks wrap the fitted scikit-learn encoders and scalers,
see transformers.py), skl2onnx's converters work in float32 while our pipeline works in float64,
and skl2onnx 1.20 has no converter for ``TargetEncoder`` or for infrequent-category one-hot.
Written by hand, each block computes in double exactly what its ``transform`` computes, and the
result is cast to float32 once at the end, where ``Featurizer.transform`` also rounds, so the
two agree to float32 rounding.

Inputs follow the canonical table (ARCHITECTURE.md): float and bool columns ``tensor(float)``
[N,1], strings ``tensor(string)`` [N,1], datetimes ``tensor(int64)`` [N,1] epoch seconds.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

OPSET = 20
ML_OPSET = 3
MS_OPSET = 1
INPUT_TYPES = {"float": "float", "bool": "float", "string": "string", "datetime": "int64", "time": "float"}


class Graph:
    """A tiny ONNX graph builder: unique names, constants as initializers, one node per call."""

    def __init__(self) -> None:
        self.nodes: list[Any] = []
        self.initializers: list[Any] = []
        self._count = 0
        self._consts: dict[tuple, str] = {}
        self.datetimes: list[str] = []  # datetime inputs, whose calendar parts are computed together
        self.shared: dict[str, Any] = {}  # what blocks compute once for several columns

    def name(self, hint: str) -> str:
        self._count += 1
        safe = "".join(ch if ch.isalnum() or ch in "_." else "_" for ch in hint)[:40]
        return f"{safe}_{self._count}"

    def const(self, value: Any, hint: str = "c") -> str:
        """A constant tensor (numpy dtype kept; Python floats become double)."""
        from onnx import numpy_helper

        arr = np.asarray(value)
        if arr.dtype == np.float32 or arr.dtype.kind == "f":
            arr = arr.astype(np.float64) if arr.dtype != np.float32 else arr
        key = (arr.dtype.str, arr.shape, arr.tobytes()) if arr.dtype != object else None
        if key is not None and key in self._consts:
            return self._consts[key]
        name = self.name(hint)
        self.initializers.append(numpy_helper.from_array(arr, name))
        if key is not None:
            self._consts[key] = name
        return name

    def op(self, op_type: str, inputs: Sequence[str], hint: str | None = None, domain: str = "", **attrs: Any) -> str:
        from onnx import helper

        out = self.name(hint or op_type.lower())
        self.nodes.append(helper.make_node(op_type, list(inputs), [out], domain=domain or None, **attrs))
        return out

    # Helpers shared by the blocks, so that each numpy formula has exactly one ONNX twin.
    def cast(self, x: str, to: str) -> str:
        from onnx import TensorProto

        return self.op("Cast", [x], "cast", to={"double": TensorProto.DOUBLE, "float": TensorProto.FLOAT,
                                                "int64": TensorProto.INT64}[to])

    def where(self, cond: str, a: str, b: str) -> str:
        return self.op("Where", [cond, a, b], "where")

    def fill_nan(self, x: str, value: float) -> str:
        return self.where(self.op("IsNaN", [x]), self.const(np.float64(value), "fill"), x)

    def is_missing(self, x: str) -> str:
        return self.cast(self.op("IsNaN", [x]), "double")

    def lookup(self, x: str, keys: Sequence[str], table: np.ndarray, default: np.ndarray) -> str:
        """Map strings to rows of ``table`` [len(keys), k]; unknown strings get ``default`` [k]."""
        idx = self.op("LabelEncoder", [x], "code", domain="ai.onnx.ml", keys_strings=[str(k) for k in keys],
                      values_int64s=list(range(len(keys))), default_int64=len(keys))
        full = np.vstack([np.asarray(table, dtype=np.float64).reshape(len(keys), -1), np.asarray(default, dtype=np.float64).reshape(1, -1)])
        gathered = self.op("Gather", [self.const(full, "table"), self.op("Squeeze", [idx, self.const(np.array([1], np.int64))])])
        return gathered

    def one_hot(self, idx: str, depth: int) -> str:
        """int64 indices [N,1] -> double [N,depth]; out-of-range indices give a row of zeros."""
        hit = self.op("Equal", [idx, self.const(np.arange(depth, dtype=np.int64).reshape(1, -1), "range")])
        return self.cast(hit, "double")

    def concat(self, parts: Sequence[str]) -> str:
        return parts[0] if len(parts) == 1 else self.op("Concat", list(parts), "concat", axis=1)

    def split(self, x: str, count: int) -> list[str]:
        """The ``count`` columns of ``x`` [N, count] as [N, 1] tensors (one node)."""
        from onnx import helper

        if count == 1:
            return [x]
        outs = [self.name("col") for _ in range(count)]
        self.nodes.append(helper.make_node("Split", [x, self.const(np.ones(count, dtype=np.int64), "sizes")], outs, axis=1))
        return outs


def build(featurizer: Any, name: str = "mlsys_features") -> Any:
    """The ONNX model of a fitted Featurizer (see the module docstring)."""
    import onnx
    from onnx import TensorProto, helper

    g = Graph()
    types = {"float": TensorProto.FLOAT, "string": TensorProto.STRING, "int64": TensorProto.INT64}
    inputs, canonical, floats = [], {}, []
    for col in featurizer.input_schema_:
        kind = INPUT_TYPES[col["type"]]
        inputs.append(helper.make_tensor_value_info(col["name"], types[kind], [None, 1]))
        if kind == "float":
            floats.append(col["name"])
        else:
            canonical[col["name"]] = col["name"]
    if floats:
        # All float columns at once: onnxruntime's cost for a row or a few is per node, not per
        # value, so three nodes for every column beat three nodes per column (serving latency).
        x = g.cast(g.concat(floats), "double")
        # inf is missing on every path (schema.py); a float32 input cannot hold |x| > 3.4e38.
        x = g.where(g.op("IsInf", [x]), g.const(np.float64(np.nan), "nan"), x)
        canonical.update(zip(floats, g.split(x, len(floats))))
    g.datetimes = [c["name"] for c in featurizer.input_schema_ if c["type"] == "datetime"]
    parts = [block.to_onnx(g, canonical) for block in featurizer.blocks_]
    if parts:
        out = g.cast(g.concat(parts), "float")
    else:
        first = featurizer.input_schema_[0]["name"]
        shape = g.op("Shape", [first], "shape", start=0, end=1)
        out = g.op("ConstantOfShape", [g.op("Concat", [shape, g.const(np.array([0], np.int64))], axis=0)],
                   value=helper.make_tensor("v", TensorProto.FLOAT, [1], [0.0]))
    g.nodes.append(helper.make_node("Identity", [out], ["features"]))
    n_out = len(featurizer.get_feature_names_out())
    graph = helper.make_graph(g.nodes, name, inputs, [helper.make_tensor_value_info("features", TensorProto.FLOAT, [None, n_out])],
                              initializer=g.initializers)
    model = helper.make_model(graph, producer_name="mlsys", opset_imports=[
        helper.make_opsetid("", OPSET), helper.make_opsetid("ai.onnx.ml", ML_OPSET), helper.make_opsetid("com.microsoft", MS_OPSET)])
    model.ir_version = min(model.ir_version, 9)
    onnx.checker.check_model(model)
    return model


def feeds(featurizer: Any, canon: Any) -> dict[str, np.ndarray]:
    """onnxruntime inputs for a canonical frame (the ONNX input types of the canonical table)."""
    out = {}
    for col in featurizer.input_schema_:
        values = canon[col["name"]].to_numpy()
        kind = INPUT_TYPES[col["type"]]
        dtype = {"float": np.float32, "string": object, "int64": np.int64}[kind]
        out[col["name"]] = values.astype(dtype).reshape(-1, 1)
    return out


def run(model: Any, featurizer: Any, canon: Any) -> np.ndarray:
    """Run the graph with onnxruntime on a canonical frame (parity checks, tests)."""
    import onnxruntime as ort

    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(["features"], feeds(featurizer, canon))[0]
