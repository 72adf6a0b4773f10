"""Prometheus metrics of the server (prometheus-client), cheap on the request path.

Label children are looked up once and cached, so a request costs a dict lookup and a few
increments. With ``--workers N`` every worker writes prometheus-client's multiprocess files
(``PROMETHEUS_MULTIPROC_DIR``, set by the supervisor before the workers start) and ``/metrics``
on any worker answers for all of them.
"""

from __future__ import annotations

import os
from typing import Any

LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 4096)


def multiprocess() -> bool:
    return bool(os.environ.get("PROMETHEUS_MULTIPROC_DIR"))


class Metrics:
    """The server's metrics in their own registry."""

    def __init__(self) -> None:
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, disable_created_metrics

        disable_created_metrics()  # the *_created series only double the exposition
        self.registry = CollectorRegistry()
        reg = self.registry
        gauge_mode = {"multiprocess_mode": "liveall"} if multiprocess() else {}
        self.requests = Counter("mlsys_requests", "HTTP requests by route and status.", ["route", "status"], registry=reg)
        self.latency = Histogram("mlsys_request_duration_seconds", "Request latency by route (seconds).", ["route"],
                                 buckets=LATENCY_BUCKETS, registry=reg)
        self.batch = Histogram("mlsys_batch_rows", "Rows per model run (a micro-batch or one request).", ["role"],
                               buckets=BATCH_BUCKETS, registry=reg)
        self.rows = Counter("mlsys_predicted_rows", "Rows predicted, by model role.", ["role"], registry=reg)
        self.labels = Counter("mlsys_predictions", "Predicted labels by role (classification).", ["role", "label"], registry=reg)
        self.values = Histogram("mlsys_prediction_value", "Predicted values by role (regression).", ["role"], registry=reg)
        self.model = Gauge("mlsys_model_info", "The model answering in each role (1; 0 once swapped out with --workers).", ["role", "name", "version"],
                           registry=reg, **gauge_mode)
        self.reloads = Counter("mlsys_reloads", "Model reloads by role and result (ok, failed).", ["role", "result"], registry=reg)
        self.log_rows = Counter("mlsys_log_rows", "Prediction-log rows by result (written, dropped).", ["result"], registry=reg)
        self.errors = Counter("mlsys_challenger_errors", "Shadow or canary predictions that failed.", ["role"], registry=reg)
        self._req: dict[tuple[str, int], Any] = {}
        self._lat: dict[str, Any] = {}
        self._label: dict[tuple[str, str], Any] = {}
        self._rows: dict[str, Any] = {}

    def request(self, route: str, status: int, seconds: float) -> None:
        key = (route, status)
        child = self._req.get(key)
        if child is None:
            child = self._req[key] = self.requests.labels(route, str(status))
        child.inc()
        lat = self._lat.get(route)
        if lat is None:
            lat = self._lat[route] = self.latency.labels(route)
        lat.observe(seconds)

    def predicted(self, role: str, task: str, outputs: dict[str, Any], rows: int) -> None:
        child = self._rows.get(role)
        if child is None:
            child = self._rows[role] = self.rows.labels(role)
        child.inc(rows)
        if task == "regression":
            hist = self.values.labels(role)
            for v in outputs["prediction"].tolist():
                hist.observe(v)
            return
        for label in outputs["label"].tolist():
            key = (role, str(label))
            child = self._label.get(key)
            if child is None:
                child = self._label[key] = self.labels.labels(role, str(label))
            child.inc()

    def serving(self, role: str, old: Any, new: Any) -> None:
        """The model answering in ``role`` changed from ``old`` to ``new`` (either may be None)."""
        if old is not None and (old.name, old.version) != (getattr(new, "name", None), getattr(new, "version", None)):
            # 0 first: with --workers the value lives in prometheus-client's multiprocess files,
            # which remove() does not touch (the swapped-out version stayed at 1 for ever).
            self.model.labels(role, old.name, old.version).set(0)
            try:
                self.model.remove(role, old.name, old.version)
            except KeyError:
                pass
        if new is not None:
            self.model.labels(role, new.name, new.version).set(1)

    def exposition(self) -> tuple[bytes, str]:
        """The text format and its content type."""
        from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

        if multiprocess():
            from prometheus_client import multiprocess as mp

            reg = CollectorRegistry()
            mp.MultiProcessCollector(reg)
            return generate_latest(reg), CONTENT_TYPE_LATEST
        return generate_latest(self.registry), CONTENT_TYPE_LATEST
