"""``mlsys info model.onnx``: the manifest an exported graph carries, verified first."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class OnnxInfo:
    """An mlsys ONNX file as ``mlsys info`` shows it.

    ``to_dict()`` is the manifest (as in ``mlsys info model.mlsys``) plus the graph's own facts
    under ``onnx``: inputs and outputs with their types, opsets, node count, sha256.
    """

    path: str
    size_bytes: int
    manifest: dict[str, Any]
    graph: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        return {"kind": "onnx", "path": self.path, "size_bytes": self.size_bytes,
                **{k: v for k, v in self.manifest.items() if k != "kind"}, "onnx": self.graph}

    def render(self, ui: Any) -> None:
        """Human view: the bundle view of the manifest, then the graph."""
        from mlsys_cli.models.describe import BundleInfo

        BundleInfo(path=self.path, size_bytes=self.size_bytes, manifest=self.manifest).render(ui)
        g = self.graph
        ui.kv("onnx graph", {"sha256": g["sha256"][:16], "nodes": g["nodes"], "producer": g["producer"],
                             "opset": ", ".join(f"{d} {v}" for d, v in g["opset"].items()),
                             "outputs": ", ".join(f"{o['name']} {o['type']}" for o in g["outputs"])})


def _type(value_info: Any) -> str:
    import onnx

    t = value_info.type.tensor_type
    dims = ",".join(d.dim_param or (str(d.dim_value) if d.HasField("dim_value") else "N") for d in t.shape.dim)
    return f"{onnx.TensorProto.DataType.Name(t.elem_type).lower()}[{dims}]"


def describe_onnx(path: str | os.PathLike) -> OnnxInfo:
    """Open an ONNX file written by ``mlsys export``: hash checked, manifest read (exit 3 otherwise)."""
    from mlsys_cli.deploy.onnx_model import HASH_KEY, parse_onnx, read_metadata
    from mlsys_cli.errors import InputError

    try:
        data = open(path, "rb").read()
    except OSError as exc:
        raise InputError(f"{path}: cannot read ({exc.strerror})") from None
    model = parse_onnx(data, str(path))
    manifest = read_metadata(model, str(path))
    props = {p.key: p.value for p in model.metadata_props}
    graph = {
        "sha256": props[HASH_KEY], "producer": model.producer_name, "nodes": len(model.graph.node),
        "opset": {o.domain or "ai.onnx": o.version for o in model.opset_import},
        "inputs": [{"name": i.name, "type": _type(i)} for i in model.graph.input],
        "outputs": [{"name": o.name, "type": _type(o)} for o in model.graph.output],
    }
    return OnnxInfo(path=str(path), size_bytes=len(data), manifest=manifest, graph=graph)
