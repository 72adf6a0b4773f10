"""The OpenAPI document of a server, generated from the model's input schema, and ``/docs``.

``/docs`` is one self-contained HTML page (no JavaScript, nothing fetched from the network)
rendering the same document: the endpoints, the record's columns and types, an example.
"""

from __future__ import annotations

import html
import json
from typing import Any

_JSON_TYPES = {"float": {"type": ["number", "null"]}, "bool": {"type": ["boolean", "null"]},
               "string": {"type": ["string", "null"]},
               "datetime": {"type": ["string", "number", "null"], "description": "ISO 8601 date-time or epoch seconds"},
               "time": {"type": ["string", "number", "null"], "description": "time of day HH:MM[:SS] or seconds since midnight"}}
_EXAMPLE = {"float": 1.5, "bool": True, "string": "a", "datetime": "2025-01-31T12:00:00Z", "time": "08:30:00"}


def _example(model: Any) -> dict[str, Any]:
    out = {}
    for c in model.input_schema:
        cats = c.get("categories") or []
        out[c["name"]] = cats[0] if c["type"] == "string" and cats else _EXAMPLE[c["type"]]
    return out


def _error(description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}


def openapi(model: Any, version: str) -> dict[str, Any]:
    """OpenAPI 3.1 for ``/predict`` and the Open Inference Protocol routes of ``model``."""
    record = {"type": "object", "properties": {c["name"]: _JSON_TYPES[c["type"]] for c in model.input_schema},
              "required": [c["name"] for c in model.input_schema], "additionalProperties": True}
    if model.task == "regression":
        prediction = {"type": "object", "properties": {"prediction": {"type": "number"}}}
    else:
        prediction = {"type": "object", "properties": {
            "label": {"enum": list(model.classes)},
            "probabilities": {"type": "object", "properties": {str(c): {"type": "number"} for c in model.classes}}}}
    errors = {"401": _error("missing or wrong bearer token"), "413": _error("body or row count over the limit"),
              "415": _error("content type is not application/json"),
              "422": _error("invalid JSON, a missing column or a value of the wrong type (named)"),
              "408": _error("the request did not arrive or finish within the request timeout")}
    name = model.name
    return {
        "openapi": "3.1.0",
        "info": {"title": f"mlsys serve: {name}", "version": version,
                 "description": f"{model.task} model {name!r} version {model.version}"},
        "paths": {
            "/predict": {"post": {
                "summary": "Predict JSON records (one object or a list)",
                "requestBody": {"required": True, "content": {"application/json": {
                    "schema": {"oneOf": [{"$ref": "#/components/schemas/Record"},
                                         {"type": "array", "items": {"$ref": "#/components/schemas/Record"}}]},
                    "example": _example(model)}}},
                "parameters": [{"name": "X-Mlsys-Key", "in": "header", "required": False, "schema": {"type": "string"},
                                "description": "sticky canary assignment: one key, one model"}],
                "responses": {"200": {"description": "one prediction per record, with the model that answered",
                                      "content": {"application/json": {"schema": {
                                          "type": "object", "properties": {
                                              "model": {"type": "string"}, "version": {"type": "string"},
                                              "role": {"enum": ["primary", "canary"]}, "request_id": {"type": "string"},
                                              "predictions": {"type": "array", "items": prediction}}}}}},
                              **errors}}},
            "/v2/health/live": {"get": {"summary": "Liveness (Open Inference Protocol)", "responses": {"200": {"description": "live"}}}},
            "/v2/health/ready": {"get": {"summary": "Readiness", "responses": {"200": {"description": "ready"},
                                                                            "503": _error("not ready")}}},
            f"/v2/models/{name}": {"get": {"summary": "Model metadata: inputs, outputs, version",
                                           "responses": {"200": {"description": "metadata"}, "404": _error("unknown model")}}},
            f"/v2/models/{name}/ready": {"get": {"summary": "Model readiness", "responses": {"200": {"description": "ready"}}}},
            f"/v2/models/{name}/infer": {"post": {
                "summary": "Inference (Open Inference Protocol, JSON or binary tensors): one input per column, shape [N] or [N, 1]",
                "responses": {"200": {"description": "outputs label + probabilities, or prediction"}, **errors,
                              "404": _error("unknown model or version")}}},
            "/metrics": {"get": {"summary": "Prometheus metrics", "responses": {"200": {"description": "text format"}}}},
        },
        "components": {"schemas": {"Record": record,
                                   "Error": {"type": "object", "properties": {"error": {"type": "string"}}}},
                       "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}}},
    }


def docs_html(spec: dict[str, Any]) -> str:
    """A readable page of the OpenAPI document."""
    esc = html.escape
    rows = []
    for path, methods in spec["paths"].items():
        for method, op in methods.items():
            codes = ", ".join(sorted(op.get("responses", {})))
            rows.append(f"<tr><td><code>{esc(method.upper())}</code></td><td><code>{esc(path)}</code></td>"
                        f"<td>{esc(op.get('summary', ''))}</td><td>{esc(codes)}</td></tr>")
    record = spec["components"]["schemas"]["Record"]["properties"]
    cols = "".join(f"<tr><td><code>{esc(name)}</code></td><td>{esc(' | '.join(t['type']))}</td>"
                   f"<td>{esc(t.get('description', ''))}</td></tr>" for name, t in record.items())
    example = spec["paths"]["/predict"]["post"]["requestBody"]["content"]["application/json"]["example"]
    curl = ("curl -s -H 'Content-Type: application/json' -d '" + json.dumps(example) + "' URL/predict")
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{esc(spec['info']['title'])}</title>
<style>body{{font-family:system-ui,sans-serif;max-width:60rem;margin:2rem auto;padding:0 1rem}}
table{{border-collapse:collapse}}td,th{{border:1px solid #ccc;padding:.25rem .5rem;text-align:left}}
pre{{background:#f4f4f4;padding:.5rem;overflow-x:auto}}</style></head><body>
<h1>{esc(spec['info']['title'])}</h1><p>{esc(spec['info']['description'])}; OpenAPI document:
<a href="/openapi.json">/openapi.json</a></p>
<h2>Endpoints</h2><table><tr><th>method</th><th>path</th><th>what</th><th>status codes</th></tr>{''.join(rows)}</table>
<h2>Record</h2><p>Every column is required (null for a missing value); other keys are ignored.</p>
<table><tr><th>column</th><th>JSON type</th><th>note</th></tr>{cols}</table>
<h2>Example</h2><pre>{esc(curl)}</pre></body></html>
"""
