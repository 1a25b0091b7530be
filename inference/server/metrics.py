"""Prometheus metrics of the model server, as written down in ``docs/metrics-contract.md``
(names and shared labels: :mod:`edgeaigc.inference.metrics_contract`).

Two groups:

- **request metrics** (:class:`RequestMetrics`): what a client of the inference API sees —
  requests by status code, latency, bytes in and out — labelled with ``served_by`` (edge or
  cloud). The edge gateway exports the same names and labels, so one query covers both.
- **server metrics** (:class:`ServerMetrics` adds them): compute time inside onnxruntime,
  requests per run (dynamic batching), and the model repository (loaded models, memory,
  loads, evictions) read at scrape time.

Every metric lives in a registry of its own per app (not the global one), so several servers
can run in one process (tests) without clashing.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, ProcessCollector
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from edgeaigc.inference.metrics_contract import (
    REQUEST_BYTES_TOTAL,
    REQUEST_DURATION_SECONDS,
    REQUEST_LATENCY_BUCKETS,
    REQUESTS_IN_FLIGHT,
    REQUESTS_TOTAL,
    RESPONSE_BYTES_TOTAL,
    SERVED_BY_VALUES,
    Family,
)

INFERENCE_LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64)

#: The request metrics as the model server labels them (no edge node or camera: see the gateway's).
REQUESTS = Family(
    REQUESTS_TOTAL,
    "counter",
    ("model", "code", "served_by"),
    "Inference requests answered, by model, HTTP status code and where they were served.",
)
REQUEST_DURATION = Family(
    REQUEST_DURATION_SECONDS,
    "histogram",
    ("model", "served_by"),
    "Time from receiving an inference request to sending the last byte of its response.",
)
REQUEST_BYTES = Family(
    REQUEST_BYTES_TOTAL, "counter", ("model", "served_by"), "Bytes of inference request bodies received."
)
RESPONSE_BYTES = Family(
    RESPONSE_BYTES_TOTAL, "counter", ("model", "served_by"), "Bytes of inference response bodies sent."
)
IN_FLIGHT = Family(REQUESTS_IN_FLIGHT, "gauge", ("served_by",), "Inference requests being handled now.")
#: Names exported by the model server only.
SERVER_METRIC_NAMES = (
    "edgeaigc_inference_duration_seconds",
    "edgeaigc_inference_batch_requests",
    "edgeaigc_models_loaded",
    "edgeaigc_model_ready",
    "edgeaigc_model_memory_bytes",
    "edgeaigc_memory_budget_bytes",
    "edgeaigc_model_loads_total",
    "edgeaigc_model_evictions_total",
)


class RequestMetrics:
    """Requests, latency and bytes by model, status code and served_by.

    Args:
        registry: where the metrics are registered.
        served_by: default ``served_by`` label (``edge`` or ``cloud``).
    """

    def __init__(self, registry: CollectorRegistry, served_by: str) -> None:
        if served_by not in SERVED_BY_VALUES:
            raise ValueError(f"served_by must be one of {SERVED_BY_VALUES}, got {served_by!r}")
        self.registry = registry
        self.served_by = served_by
        self.requests = Counter(REQUESTS.client_name, REQUESTS.help, REQUESTS.labels, registry=registry)
        self.duration = Histogram(
            REQUEST_DURATION.client_name,
            REQUEST_DURATION.help,
            REQUEST_DURATION.labels,
            buckets=REQUEST_LATENCY_BUCKETS,
            registry=registry,
        )
        self.request_bytes = Counter(
            REQUEST_BYTES.client_name, REQUEST_BYTES.help, REQUEST_BYTES.labels, registry=registry
        )
        self.response_bytes = Counter(
            RESPONSE_BYTES.client_name, RESPONSE_BYTES.help, RESPONSE_BYTES.labels, registry=registry
        )
        self.in_flight = Gauge(IN_FLIGHT.client_name, IN_FLIGHT.help, IN_FLIGHT.labels, registry=registry)

    def observe_request(
        self,
        model: str,
        code: int,
        seconds: float,
        request_bytes: int,
        response_bytes: int,
        served_by: str | None = None,
    ) -> None:
        """Count one answered inference request."""
        where = served_by or self.served_by
        self.requests.labels(model, str(code), where).inc()
        self.duration.labels(model, where).observe(seconds)
        self.request_bytes.labels(model, where).inc(request_bytes)
        self.response_bytes.labels(model, where).inc(response_bytes)


@dataclass(frozen=True)
class ModelFigures:
    """What the repository collector reads about one model at scrape time."""

    name: str
    ready: bool
    memory_bytes: int
    loads: int
    load_failures: int
    evictions: int


@dataclass(frozen=True)
class RepositoryFigures:
    models: Sequence[ModelFigures]
    memory_budget_bytes: int | None


class RepositoryCollector(Collector):
    """Model repository gauges and counters, read from the repository at each scrape."""

    def __init__(self, read: Callable[[], RepositoryFigures]) -> None:
        self._read = read

    def describe(self) -> Iterable[Metric]:
        return []  # no samples at registration: the repository may not exist yet

    def collect(self) -> Iterator[Metric]:
        figures = self._read()
        loaded = GaugeMetricFamily("edgeaigc_models_loaded", "Models loaded and ready to serve.")
        loaded.add_metric([], sum(model.ready for model in figures.models))
        yield loaded
        ready = GaugeMetricFamily(
            "edgeaigc_model_ready", "1 if the model is loaded and ready, else 0.", labels=["model"]
        )
        memory = GaugeMetricFamily(
            "edgeaigc_model_memory_bytes",
            "Memory counted against the budget for the model (estimate; 0 when not loaded).",
            labels=["model"],
        )
        loads = CounterMetricFamily(
            "edgeaigc_model_loads", "Model loads, by outcome (success or failure).", labels=["model", "outcome"]
        )
        evictions = CounterMetricFamily(
            "edgeaigc_model_evictions", "Models unloaded to make room for another (memory budget).", labels=["model"]
        )
        for model in figures.models:
            ready.add_metric([model.name], 1.0 if model.ready else 0.0)
            memory.add_metric([model.name], model.memory_bytes)
            loads.add_metric([model.name, "success"], model.loads)
            loads.add_metric([model.name, "failure"], model.load_failures)
            evictions.add_metric([model.name], model.evictions)
        yield from (ready, memory, loads, evictions)
        if figures.memory_budget_bytes is not None:
            budget = GaugeMetricFamily("edgeaigc_memory_budget_bytes", "Memory budget shared by the loaded models.")
            budget.add_metric([], figures.memory_budget_bytes)
            yield budget


class ServerMetrics(RequestMetrics):
    """Request metrics plus onnxruntime compute time, batching and the model repository.

    Args:
        served_by: ``edge`` or ``cloud`` (the ``--served-by`` flag).
        repository: reads the repository figures at scrape time (None: no repository metrics).
        registry: a fresh registry by default.
        process_metrics: also export the standard ``process_*`` metrics.
    """

    def __init__(
        self,
        served_by: str,
        repository: Callable[[], RepositoryFigures] | None = None,
        registry: CollectorRegistry | None = None,
        process_metrics: bool = True,
    ) -> None:
        registry = registry or CollectorRegistry()
        super().__init__(registry, served_by)
        self.inference_duration = Histogram(
            "edgeaigc_inference_duration_seconds",
            "Compute time of one onnxruntime run (a dynamic batch counts once).",
            ["model"],
            buckets=INFERENCE_LATENCY_BUCKETS,
            registry=registry,
        )
        self.batch_requests = Histogram(
            "edgeaigc_inference_batch_requests",
            "Requests served by one onnxruntime run (1 without dynamic batching).",
            ["model"],
            buckets=BATCH_BUCKETS,
            registry=registry,
        )
        if repository is not None:
            registry.register(RepositoryCollector(repository))
        if process_metrics:
            ProcessCollector(registry=registry)

    def observe_inference(self, model: str, seconds: float, requests: int) -> None:
        """One onnxruntime run (thread-safe: called from worker threads)."""
        self.inference_duration.labels(model).observe(seconds)
        self.batch_requests.labels(model).observe(requests)
