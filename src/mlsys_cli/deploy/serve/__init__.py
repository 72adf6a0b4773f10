"""``mlsys serve``: an online prediction service (Open Inference Protocol V2 and JSON records).

Modules: ``models`` (loading, sources, atomic swap), ``app`` (the ASGI application), ``v2``
(the KServe V2 wire format), ``batching`` (adaptive micro-batching), ``predlog`` (the
Parquet prediction log), ``metrics`` (Prometheus), ``openapi`` (``/openapi.json``, ``/docs``),
``runner`` (uvicorn, signals, options) and ``supervisor`` (``--workers``).
"""

from mlsys_cli.deploy.serve.batching import BatchOptions
from mlsys_cli.deploy.serve.models import ModelRef, file_source, read_model_manifest
from mlsys_cli.deploy.serve.predlog import LogOptions
from mlsys_cli.deploy.serve.runner import Limits, ModelSpec, ServeOptions, ServeResult, serve

__all__ = ["BatchOptions", "Limits", "LogOptions", "ModelRef", "ModelSpec", "ServeOptions", "ServeResult",
           "file_source", "read_model_manifest", "serve"]
