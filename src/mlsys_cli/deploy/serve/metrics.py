"""Prometheus metrics of the server (prometheus-client), cheap on the request path.

The series every request touches (requests by route and status, the latency histogram, rows
and labels predicted) are counted in plain dicts by :class:`_Counts` and handed to
prometheus-client when ``/metrics`` is scraped (a custom collector in the server's registry):
a request costs a few dict updates and a ``bisect`` (~1 µs) instead of six locked increments
and a Python loop over the histogram's buckets (~3 µs; benchmarks/results/serve.md). The names,
labels and buckets are the same.

With ``--workers N`` every worker writes prometheus-client's multiprocess files
(``PROMETHEUS_MULTIPROC_DIR``, set by the supervisor before the workers start) and ``/metrics``
on any worker answers for all of them: a scrape cannot read another worker's dicts, so there
every series goes through prometheus-client's own objects (label children cached).
"""

from __future__ import annotations

import os
from bisect import bisect_left
from typing import Any

LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 4096)


def multiprocess() -> bool:
    return bool(os.environ.get("PROMETHEUS_MULTIPROC_DIR"))


class _Counts:
    """The per-request series as plain counts, read by prometheus-client at scrape time (one event loop)."""

    def __init__(self) -> None:
        self.requests: dict[tuple[str, int], int] = {}
        self.latency: dict[str, list[float]] = {}  # route -> a count per bucket (+Inf last), then the sum
        self.rows: dict[str, int] = {}
        self.labels: dict[tuple[str, str], int] = {}

    def request(self, route: str, status: int, seconds: float) -> None:
        key = (route, status)
        self.requests[key] = self.requests.get(key, 0) + 1
        counts = self.latency.get(route)
        if counts is None:
            counts = self.latency[route] = [0] * (len(LATENCY_BUCKETS) + 2)
        counts[bisect_left(LATENCY_BUCKETS, seconds)] += 1  # the first bound >= seconds: Prometheus' le
        counts[-1] += seconds

    def predicted(self, role: str, labels: list[Any], rows: int) -> None:
        self.rows[role] = self.rows.get(role, 0) + rows
        for label in labels:
            key = (role, str(label))
            self.labels[key] = self.labels.get(key, 0) + 1

    def collect(self) -> Any:
        """The series as prometheus-client's metric families (the names its Counter/Histogram would give)."""
        from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily
        from prometheus_client.utils import floatToGoString

        requests = CounterMetricFamily("mlsys_requests", REQUESTS_HELP, labels=["route", "status"])
        for (route, status), n in list(self.requests.items()):
            requests.add_metric([route, str(status)], n)
        latency = HistogramMetricFamily("mlsys_request_duration_seconds", LATENCY_HELP, labels=["route"])
        bounds = [floatToGoString(b) for b in LATENCY_BUCKETS] + ["+Inf"]
        for route, counts in list(self.latency.items()):
            total, buckets = 0, []
            for bound, n in zip(bounds, counts):
                total += n
                buckets.append((bound, total))
            latency.add_metric([route], buckets, counts[-1])
        rows = CounterMetricFamily("mlsys_predicted_rows", ROWS_HELP, labels=["role"])
        for role, n in list(self.rows.items()):
            rows.add_metric([role], n)
        labels = CounterMetricFamily("mlsys_predictions", LABELS_HELP, labels=["role", "label"])
        for (role, label), n in list(self.labels.items()):
            labels.add_metric([role, label], n)
        return [requests, latency, rows, labels]


REQUESTS_HELP = "HTTP requests by route and status."
LATENCY_HELP = "Request latency by route (seconds)."
ROWS_HELP = "Rows predicted, by model role."
LABELS_HELP = "Predicted labels by role (classification)."


class Metrics:
    """The server's metrics in their own registry.

    Parameters
    ----------
    local : bool, optional
        Count the per-request series in :class:`_Counts` (default: unless in multiprocess mode).
    """

    def __init__(self, local: bool | None = None) -> None:
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, disable_created_metrics

        disable_created_metrics()  # the *_created series only double the exposition
        self.registry = CollectorRegistry()
        reg = self.registry
        gauge_mode = {"multiprocess_mode": "liveall"} if multiprocess() else {}
        self.counts = _Counts() if (not multiprocess() if local is None else local) else None
        if self.counts is not None:
            reg.register(self.counts)
        else:
            self.requests = Counter("mlsys_requests", REQUESTS_HELP, ["route", "status"], registry=reg)
            self.latency = Histogram("mlsys_request_duration_seconds", LATENCY_HELP, ["route"], buckets=LATENCY_BUCKETS,
                                     registry=reg)
            self.rows = Counter("mlsys_predicted_rows", ROWS_HELP, ["role"], registry=reg)
            self.labels = Counter("mlsys_predictions", LABELS_HELP, ["role", "label"], registry=reg)
        self.batch = Histogram("mlsys_batch_rows", "Rows per model run (a micro-batch or one request).", ["role"],
                               buckets=BATCH_BUCKETS, registry=reg)
        self.values = Histogram("mlsys_prediction_value", "Predicted values by role (regression).", ["role"], registry=reg)
        self.model = Gauge("mlsys_model_info", "The model answering in each role (1; 0 once swapped out with --workers).", ["role", "name", "version"],
                           registry=reg, **gauge_mode)
        self.reloads = Counter("mlsys_reloads", "Model reloads by role and result (ok, failed).", ["role", "result"], registry=reg)
        self.log_rows = Counter("mlsys_log_rows", "Prediction-log rows by result (written, dropped).", ["result"], registry=reg)
        self.errors = Counter("mlsys_challenger_errors", "Shadow or canary predictions that failed.", ["role"], registry=reg)
        self.unseen = Counter("mlsys_unseen_categories", "Values of a categorical input that are categories unseen in "
                              "training, by the answering model's role and the column.", ["role", "column"], registry=reg)
        self._req: dict[tuple[str, int], Any] = {}
        self._lat: dict[str, Any] = {}
        self._label: dict[tuple[str, str], Any] = {}
        self._rows: dict[str, Any] = {}

    def request(self, route: str, status: int, seconds: float) -> None:
        if self.counts is not None:
            self.counts.request(route, status, seconds)
            return
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
        labels = outputs["label"].tolist() if task != "regression" else []
        if self.counts is not None:
            self.counts.predicted(role, labels, rows)
        else:
            self._predicted(role, labels, rows)
        if task == "regression":
            hist = self.values.labels(role)
            for v in outputs["prediction"].tolist():
                hist.observe(v)

    def _predicted(self, role: str, labels: list[Any], rows: int) -> None:
        """Rows and labels through prometheus-client's objects (multiprocess mode)."""
        child = self._rows.get(role)
        if child is None:
            child = self._rows[role] = self.rows.labels(role)
        child.inc(rows)
        for label in labels:
            key = (role, str(label))
            child = self._label.get(key)
            if child is None:
                child = self._label[key] = self.labels.labels(role, str(label))
            child.inc()

    def unseen_categories(self, role: str, counts: dict[str, dict[str, Any]]) -> None:
        """Add a request's :class:`~mlsys_cli.features.unseen.UnseenCategories` counts (rare: no cached children)."""
        for column, c in counts.items():
            self.unseen.labels(role, column).inc(c["unseen"])

    def serving(self, role: str, old: Any, new: Any) -> None:
        """The model answering in ``role`` changed from ``old`` to ``new`` (either may be None)."""
        if old is not None and (old.name, old.version) != (getattr(new, "name", None), getattr(new, "version", None)):
            # 0 first: with --workers the value lives in prometheus-client's multiprocess files,
            # which remove() does not touch (the swapped-out version stayed at 1 for ever).
            self.model.labels(role, old.name, old.version).set(0)
            if not multiprocess():  # there remove() is not implemented (a UserWarning on stderr); the 0 stays
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
