"""The Open Inference Protocol (KServe V2) on the wire: request decoding, response encoding.

Each raw input column of the model is one V2 input tensor of shape ``[N]`` or ``[N, 1]``
(``BYTES`` for strings and ISO dates, ``FP32``/``FP64``/``INT*`` for numbers and epoch
seconds, ``BOOL``). Both the JSON form and the binary tensor extension (the
``Inference-Header-Content-Length`` header, which ``tritonclient`` uses by default) are read;
outputs are JSON unless the request asks for binary (``binary_data`` on an output, or
``binary_data_output`` on the request).
"""

from __future__ import annotations

import struct
from typing import Any

import orjson

from mlsys_cli.errors import InputError

# logical type -> the V2 datatype the model metadata advertises
DATATYPE = {"float": "FP32", "bool": "BOOL", "string": "BYTES", "datetime": "INT64", "time": "FP32"}
_NUMPY = {"BOOL": "?", "INT8": "<i1", "INT16": "<i2", "INT32": "<i4", "INT64": "<i8", "UINT8": "<u1", "UINT16": "<u2",
          "UINT32": "<u4", "UINT64": "<u8", "FP16": "<f2", "FP32": "<f4", "FP64": "<f8"}
HEADER = "inference-header-content-length"
_FLOATS = ("FP16", "FP32", "FP64")


class Invalid(InputError):
    """A request the protocol cannot read (422 with this message)."""


def model_metadata(model: Any) -> dict[str, Any]:
    """``GET /v2/models/{name}``."""
    inputs = [{"name": c["name"], "datatype": DATATYPE[c["type"]], "shape": [-1, 1]} for c in model.input_schema]
    if model.task == "regression":
        outputs = [{"name": "prediction", "datatype": "FP64", "shape": [-1]}]
    else:
        outputs = [{"name": "label", "datatype": _label_datatype(model.classes), "shape": [-1]},
                   {"name": "probabilities", "datatype": "FP64", "shape": [-1, len(model.classes)]}]
    return {"name": model.name, "versions": [model.version], "platform": f"mlsys_{model.kind}", "inputs": inputs,
            "outputs": outputs, "parameters": {"task": model.task, "classes": [str(c) for c in model.classes]}}


def _label_datatype(classes: list[Any]) -> str:
    if classes and all(isinstance(c, bool) for c in classes):
        return "BOOL"
    if classes and all(isinstance(c, int) for c in classes):
        return "INT64"
    return "BYTES"


def _bytes_elements(raw: bytes, name: str) -> list[str]:
    out, i = [], 0
    while i < len(raw):
        if i + 4 > len(raw):
            raise Invalid(f"input {name!r}: truncated BYTES element")
        (size,) = struct.unpack_from("<I", raw, i)
        i += 4
        if i + size > len(raw):
            raise Invalid(f"input {name!r}: truncated BYTES element")
        try:
            out.append(raw[i:i + size].decode())
        except UnicodeDecodeError:
            raise Invalid(f"input {name!r}: BYTES element is not UTF-8") from None
        i += size
    return out


def _parameters(holder: dict[str, Any], what: str) -> dict[str, Any]:
    """``holder["parameters"]``: an object or absent (``"parameters": 5`` was an AttributeError, a 500)."""
    params = holder.get("parameters")
    if params is None:
        return {}
    if not isinstance(params, dict):
        raise Invalid(f"{what}'parameters' must be an object", 'e.g. "parameters": {"binary_data_output": true}')
    return params


def _flatten(data: Any) -> list[Any]:
    if isinstance(data, list) and data and isinstance(data[0], list):
        return [v for part in data for v in _flatten(part)]
    return data


def _input_values(spec: Any, binary: memoryview, offset: int) -> tuple[str, list[Any], int]:
    """One input tensor's (name, flat values, rows); ``offset`` into the binary part advances."""
    import numpy as np

    if not isinstance(spec, dict) or not isinstance(spec.get("name"), str):
        raise Invalid("each input needs a 'name'")
    name, dtype, shape = spec["name"], spec.get("datatype"), spec.get("shape")
    if not isinstance(shape, list) or not shape or not all(isinstance(d, int) and d >= 0 for d in shape):
        raise Invalid(f"input {name!r}: 'shape' must be a list of sizes, e.g. [N, 1]")
    if len(shape) > 2 or (len(shape) == 2 and shape[1] != 1):
        raise Invalid(f"input {name!r}: shape {shape} is not one column ([N] or [N, 1])")
    size = _parameters(spec, f"input {name!r}: ").get("binary_data_size")
    if size is not None:
        if not isinstance(size, int) or size < 0 or offset + size > len(binary):
            raise Invalid(f"input {name!r}: binary_data_size runs past the end of the body")
        raw = bytes(binary[offset:offset + size])
        offset += size
        if dtype == "BYTES":
            values = _bytes_elements(raw, name)
        elif dtype in _NUMPY:
            try:
                arr = np.frombuffer(raw, dtype=_NUMPY[dtype])
            except ValueError:
                raise Invalid(f"input {name!r}: {size} bytes is not a whole number of {dtype} values") from None
            values = arr.tolist()
            if dtype in _FLOATS:  # a binary tensor has no null: NaN is how a client marks a missing value
                for i in np.flatnonzero(np.isnan(arr)).tolist():
                    values[i] = None
        else:
            raise Invalid(f"input {name!r}: unknown datatype {dtype!r}")
    else:
        if dtype not in _NUMPY and dtype != "BYTES":
            raise Invalid(f"input {name!r}: unknown datatype {dtype!r}")
        data = spec.get("data")
        if not isinstance(data, list):
            raise Invalid(f"input {name!r}: 'data' must be a list")
        values = _flatten(data)
    if len(values) != shape[0]:
        raise Invalid(f"input {name!r}: shape {shape} says {shape[0]} values, found {len(values)}")
    return name, values, offset


def decode_request(body: bytes, header_length: int | None) -> tuple[dict[str, Any], dict[str, list[Any]], int]:
    """The request header (JSON), the values of each input, and the row count."""
    if header_length is not None:
        if header_length < 0:
            raise Invalid("Inference-Header-Content-Length is not a number of bytes")
        if header_length > len(body):
            raise Invalid("Inference-Header-Content-Length exceeds the body")
        head, binary = body[:header_length], memoryview(body)[header_length:]
    else:
        head, binary = body, memoryview(b"")
    try:
        request = orjson.loads(head)
    except orjson.JSONDecodeError as exc:
        raise Invalid(f"the body is not valid JSON ({exc})") from None
    if not isinstance(request, dict) or not isinstance(request.get("inputs"), list) or not request["inputs"]:
        raise Invalid("the body needs a non-empty 'inputs' list")
    if "id" in request and not isinstance(request["id"], str):  # echoed in the answer, which the protocol types as a string
        raise Invalid(f"'id' must be a string (found {type(request['id']).__name__})", 'e.g. "id": "42"')
    _parameters(request, "")  # checked before the model runs; read by encode_response
    _wants_binary(request)
    columns: dict[str, list[Any]] = {}
    offset, rows = 0, None
    for spec in request["inputs"]:
        name, values, offset = _input_values(spec, binary, offset)
        if name in columns:
            raise Invalid(f"input {name!r} is given twice")
        if rows is not None and len(values) != rows:
            raise Invalid(f"input {name!r} has {len(values)} rows, the others {rows}")
        rows = len(values)
        columns[name] = values
    return request, columns, rows or 0


def _wants_binary(request: dict[str, Any]) -> tuple[list[str] | None, set[str]]:
    """The requested output names (None: all) and those asked for in binary."""
    params = _parameters(request, "")
    requested = request.get("outputs")
    if requested is None:
        return None, set()
    if not isinstance(requested, list) or not all(isinstance(o, dict) and isinstance(o.get("name"), str) for o in requested):
        raise Invalid("'outputs' must be a list of objects with a 'name'", 'e.g. "outputs": [{"name": "label"}]')
    names, binary = [], set()
    for out in requested:
        names.append(out["name"])
        if _parameters(out, f"output {out['name']!r}: ").get("binary_data", params.get("binary_data_output", False)):
            binary.add(out["name"])
    return names, binary


def encode_response(request: dict[str, Any], model: Any, outputs: dict[str, Any],
                    warnings: list[str] | None = None) -> tuple[bytes, int | None]:
    """The response body and, for binary outputs, the JSON header length (``warnings``: the
    request's, under ``parameters``)."""
    import numpy as np

    names, binary = _wants_binary(request)
    if names is None and _parameters(request, "").get("binary_data_output"):
        binary = {"label", "probabilities", "prediction"}
    tensors = []
    if model.task == "regression":
        tensors.append(("prediction", "FP64", np.asarray(outputs["prediction"], dtype=np.float64)))
    else:
        dtype = _label_datatype(model.classes)
        labels = np.asarray(outputs["label"])
        tensors.append(("label", dtype, labels.astype(bool if dtype == "BOOL" else np.int64) if dtype != "BYTES"
                        else np.array([str(v) for v in labels.tolist()], dtype=object)))
        tensors.append(("probabilities", "FP64", np.asarray(outputs["probabilities"], dtype=np.float64)))
    unknown = [n for n in names or [] if n not in {t[0] for t in tensors}]
    if unknown:
        raise Invalid(f"unknown output {unknown[0]!r}", "outputs: " + ", ".join(t[0] for t in tensors))
    chunks, out = [], []
    for name, dtype, arr in tensors:
        if names is not None and name not in names:
            continue
        item = {"name": name, "datatype": dtype, "shape": list(arr.shape)}
        if name in binary:
            raw = (b"".join(struct.pack("<I", len(s.encode())) + s.encode() for s in arr.tolist()) if dtype == "BYTES"
                   else np.ascontiguousarray(arr, dtype=_NUMPY[dtype]).tobytes())
            item["parameters"] = {"binary_data_size": len(raw)}
            chunks.append(raw)
        else:
            item["data"] = arr.reshape(-1).tolist()
        out.append(item)
    head = {"model_name": model.name, "model_version": model.version, "outputs": out,
            "parameters": {"role": model.role, **({"warnings": warnings} if warnings else {})}}
    if "id" in request:
        head["id"] = request["id"]
    header = orjson.dumps(head)
    if not chunks:
        return header, None
    return header + b"".join(chunks), len(header)
