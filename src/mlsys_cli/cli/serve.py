"""mlsys serve: an online prediction service over HTTP."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from mlsys_cli import console
from mlsys_cli.cli._common import Duration, JsonOpt, integer, number


def champion_ref(registry: Path) -> Any:
    """The registry's champion as a model reference (read on every poll; deploy/ cannot import continual/)."""
    from mlsys_cli.continual.registry import read_champion
    from mlsys_cli.deploy.serve import ModelRef

    champion = read_champion(registry)
    return ModelRef(champion.bundle, champion.version, champion.sha256)


def _specs(model: Optional[Path], registry: Optional[Path], name: Optional[str], shadow: Optional[Path],
           canary: Optional[str]) -> tuple[list[Any], float]:
    import functools

    from mlsys_cli.deploy.serve import ModelSpec, file_source
    from mlsys_cli.errors import UsageError

    if (model is None) == (registry is None):
        raise UsageError("give a MODEL file or --registry DIR (one of them)")
    if registry is not None:
        primary = ModelSpec("primary", name or registry.resolve().name, functools.partial(champion_ref, registry))
    else:
        primary = ModelSpec("primary", name or model.stem, file_source(model))
    specs, share = [primary], 0.0
    if shadow is not None:
        specs.append(ModelSpec("shadow", shadow.stem, file_source(shadow)))
    if canary is not None:
        path, sep, text = canary.rpartition(":")
        try:
            share = float(text) if sep else -1.0
        except ValueError:
            share = -1.0
        if not path or not 0.0 < share < 1.0:
            raise UsageError(f"--canary {canary!r}: expected FILE:SHARE with 0 < SHARE < 1", "e.g. --canary challenger.onnx:0.1")
        specs.append(ModelSpec("canary", Path(path).stem, file_source(path)))
    return specs, share


def _ready(info: dict, as_json: bool) -> None:
    import json

    if as_json:
        console.write(json.dumps(info) + "\n")
        return
    models = ", ".join(f"{m['role']} {m['name']} {m['version']} ({m['engine']})" for m in info["models"])
    console.write(f"serving {models} at {info['url']} (workers: {info['workers']}; docs: {info['url']}/docs)\n")


def command(
    model: Annotated[Optional[Path], typer.Argument(help="The model: .onnx (mlsys export) or .mlsys bundle.")] = None,
    registry: Annotated[Optional[Path], typer.Option("--registry", help="Serve this registry's champion; reload when it changes.")] = None,
    name: Annotated[Optional[str], typer.Option("--name", help="Model name in URLs and logs (default: file stem or registry name).")] = None,
    host: Annotated[str, typer.Option("--host", help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", click_type=integer(0, 65535), help="Port (0: any free port; see the startup line).")] = 8080,
    workers: Annotated[int, typer.Option("--workers", click_type=integer(1, 256), help="Worker processes sharing the port.")] = 1,
    log_dir: Annotated[Optional[Path], typer.Option("--log-dir", help="Write every prediction to Parquet files here.")] = None,
    log_rotate: Annotated[float, typer.Option("--log-rotate", click_type=Duration(), help="Start a new log file after this long, e.g. 60s, 5m.")] = 60.0,
    log_max_mb: Annotated[float, typer.Option("--log-max-mb", click_type=number(0, 1e6, low_open=True), help="Start a new log file past this size (MB).")] = 64.0,
    shadow: Annotated[Optional[Path], typer.Option("--shadow", help="A challenger that predicts every request; logged, never answers.")] = None,
    canary: Annotated[Optional[str], typer.Option("--canary", help="FILE:SHARE, a challenger answering that share of requests.")] = None,
    max_batch: Annotated[int, typer.Option("--max-batch", click_type=integer(0, 1_000_000), help="Rows per micro-batch when requests arrive together (0: never batch).")] = 64,
    max_wait_ms: Annotated[float, typer.Option("--max-wait-ms", click_type=number(0, 60_000), help="Extra wait to fill a micro-batch (ms).")] = 0.0,
    max_body_mb: Annotated[float, typer.Option("--max-body-mb", click_type=number(0, 1e5, low_open=True), help="Largest request body (MB).")] = 4.0,
    max_rows: Annotated[int, typer.Option("--max-rows", click_type=integer(1), help="Most rows in one request.")] = 10_000,
    max_connections: Annotated[int, typer.Option("--max-connections", click_type=integer(1, 1_000_000), help="Open connections per worker before new requests get 503.")] = 1000,
    request_timeout: Annotated[float, typer.Option("--request-timeout", click_type=Duration(), help="Longest a request may take, from headers to answer.")] = 10.0,
    drain: Annotated[float, typer.Option("--drain", click_type=Duration(), help="On SIGTERM, how long an idle keep-alive connection may still bring a request.")] = 2.0,
    api_key_env: Annotated[Optional[str], typer.Option("--api-key-env", help="Require 'Authorization: Bearer <token>', token from this variable.")] = None,
    access_log: Annotated[bool, typer.Option("--access-log/--no-access-log", help="One JSON line per request on stderr.")] = True,
    poll: Annotated[float, typer.Option("--poll", click_type=Duration(), help="How often to look for a new champion or model file.")] = 2.0,
    json_: JsonOpt = False,
) -> None:
    """Serve a model over HTTP (V2 inference protocol and JSON).

    POST /predict takes JSON records; the Open Inference Protocol (KServe V2)
    is under /v2; /metrics is Prometheus; /docs and /openapi.json describe
    the API. SIGTERM stops gracefully, SIGHUP reloads the model.

    Examples:

        mlsys serve model.onnx --port 8080 --log-dir logs/

        mlsys serve --registry models/ --canary challenger.onnx:0.1 --workers 2 --json
    """
    import os

    from mlsys_cli.deploy.serve import BatchOptions, Limits, LogOptions, ServeOptions, serve
    from mlsys_cli.errors import UsageError

    specs, share = _specs(model, registry, name, shadow, canary)
    token = None
    if api_key_env is not None:
        token = os.environ.get(api_key_env, "")
        if not token:
            raise UsageError(f"--api-key-env {api_key_env}: the variable is not set or empty")
    if max_body_mb <= 0 or max_rows < 1 or log_max_mb <= 0 or max_batch < 0 or max_wait_ms < 0:
        raise UsageError("--max-body-mb, --max-rows and --log-max-mb must be positive; --max-batch, --max-wait-ms not negative")
    log = LogOptions(log_dir, rotate_seconds=log_rotate, rotate_bytes=int(log_max_mb * (1 << 20))) if log_dir else None
    options = ServeOptions(host=host, port=port, workers=workers, api_key=token, access_log=access_log, canary_share=share,
                           limits=Limits(int(max_body_mb * (1 << 20)), max_rows, request_timeout),
                           batching=BatchOptions(max_batch, max_wait_ms), log=log, poll_seconds=poll,
                           max_connections=max_connections, drain_seconds=drain)
    result = serve(specs, options, lambda info: _ready(info, json_))
    written = f"; prediction log: {len(result.log_files)} file(s) in {log_dir}" if result.workers == 1 else f"; prediction log in {log_dir}"
    console.info(f"stopped after {result.seconds:g} s" + (written if log else ""))
