"""The gateway's metrics: the contract's request metrics with an ``edge_node`` label, each camera's request bytes,
and its own (routing table, circuit breakers, upstream retries and failures); see ``docs/metrics-contract.md``."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from edgeaigc.inference.metrics_contract import (
    CAMERA_REQUEST_BYTES,
    GATEWAY_IN_FLIGHT_LABELS,
    GATEWAY_REQUEST_BYTES,
    GATEWAY_REQUEST_DURATION,
    GATEWAY_REQUEST_SECONDS,
    GATEWAY_REQUESTS,
    GATEWAY_RESPONSE_BYTES,
    REQUEST_LATENCY_BUCKETS,
    REQUESTS_IN_FLIGHT,
    SERVED_BY_VALUES,
)

if TYPE_CHECKING:
    from edgeaigc.inference.gateway.gateway import Gateway

#: The generation of the routing table in use, and the tables ignored (by ``reason``): what a check that the
#: gateway holds a valid table reads (``bench-chaos``, ``demo --real``).
ROUTING_TABLE_GENERATION = "edgeaigc_gateway_routing_table_generation"
ROUTING_TABLE_ERRORS_TOTAL = "edgeaigc_gateway_routing_table_errors_total"
#: Names of the gateway's own metrics (besides the request metrics of the contract).
GATEWAY_METRIC_NAMES = (
    ROUTING_TABLE_GENERATION,
    "edgeaigc_gateway_routing_table_loads_total",
    ROUTING_TABLE_ERRORS_TOTAL,
    "edgeaigc_gateway_circuit_breaker_state",
    "edgeaigc_gateway_circuit_breaker_opens_total",
    "edgeaigc_gateway_upstream_retries_total",
    "edgeaigc_gateway_upstream_failures_total",
    "edgeaigc_gateway_uplink_accepted_bytes_total",
    "edgeaigc_gateway_uplink_admissions_total",
    "edgeaigc_gateway_uplink_rate_bytes_per_second",
)


class GatewayMetrics:
    """The contract's request metrics with an ``edge_node`` label, each camera's request bytes, and the gateway's own.

    The routing-table and circuit-breaker figures are read from the gateway at scrape time.
    """

    def __init__(self, edge_node: str, registry: CollectorRegistry | None = None) -> None:
        self.edge_node = edge_node
        self.registry = registry or CollectorRegistry()
        self.requests = Counter(
            GATEWAY_REQUESTS.client_name, GATEWAY_REQUESTS.help, GATEWAY_REQUESTS.labels, registry=self.registry
        )
        self.duration = Histogram(
            GATEWAY_REQUEST_DURATION.client_name,
            GATEWAY_REQUEST_DURATION.help,
            GATEWAY_REQUEST_DURATION.labels,
            buckets=REQUEST_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.request_seconds = Counter(
            GATEWAY_REQUEST_SECONDS.client_name,
            GATEWAY_REQUEST_SECONDS.help,
            GATEWAY_REQUEST_SECONDS.labels,
            registry=self.registry,
        )
        self.request_bytes = Counter(
            GATEWAY_REQUEST_BYTES.client_name,
            GATEWAY_REQUEST_BYTES.help,
            GATEWAY_REQUEST_BYTES.labels,
            registry=self.registry,
        )
        self.response_bytes = Counter(
            GATEWAY_RESPONSE_BYTES.client_name,
            GATEWAY_RESPONSE_BYTES.help,
            GATEWAY_RESPONSE_BYTES.labels,
            registry=self.registry,
        )
        self.camera_request_bytes = Counter(
            CAMERA_REQUEST_BYTES.client_name,
            CAMERA_REQUEST_BYTES.help,
            CAMERA_REQUEST_BYTES.labels,
            registry=self.registry,
        )
        self.in_flight = Gauge(
            REQUESTS_IN_FLIGHT,
            "Requests at an upstream now: at a local replica (edge) or relayed to the cloud (cloud).",
            GATEWAY_IN_FLIGHT_LABELS,
            registry=self.registry,
        )
        self.retries = Counter(
            "edgeaigc_gateway_upstream_retries",
            "Upstream attempts made after a failed one (another local replica or the cloud).",
            ["model", "edge_node"],
            registry=self.registry,
        )
        self.failures = Counter(
            "edgeaigc_gateway_upstream_failures",
            "Failed upstream attempts, by where they went and why "
            "(connect, timeout, transport, http_5xx, busy, refused).",
            ["model", "served_by", "reason", "edge_node"],
            registry=self.registry,
        )
        self.uplink_bytes = Counter(
            "edgeaigc_gateway_uplink_accepted_bytes",
            "Request-body bytes accepted from each camera under its bandwidth share (what its achieved upload rate "
            "is measured from).",
            ["camera", "edge_node"],
            registry=self.registry,
        )
        self.uplink_admissions = Counter(
            "edgeaigc_gateway_uplink_admissions",
            "Requests held to a camera's bandwidth share: forwarded at once (immediate), after a wait (paced), or "
            "refused with 429 and Retry-After (refused).",
            ["camera", "edge_node", "outcome"],
            registry=self.registry,
        )
        self.uplink_rate = Gauge(
            "edgeaigc_gateway_uplink_rate_bytes_per_second",
            "The upload rate a camera was last allowed: its share of the node's uplink among the active cameras.",
            ["camera", "edge_node"],
            registry=self.registry,
        )
        self.set_edge_node(edge_node)

    def set_edge_node(self, edge_node: str) -> None:
        """Label what follows with ``edge_node`` (a gateway found by node name learns it from the table)."""
        self.edge_node = edge_node
        for served_by in SERVED_BY_VALUES:
            self.in_flight.labels(served_by, edge_node)

    def observe_request(
        self,
        model: str,
        code: int,
        served_by: str,
        camera: str,
        seconds: float,
        request_bytes: int,
        response_bytes: int,
    ) -> None:
        node = self.edge_node
        self.requests.labels(model, str(code), served_by, node).inc()
        self.duration.labels(served_by, node).observe(seconds)
        self.request_seconds.labels(model, served_by, node).inc(seconds)
        self.camera_request_bytes.labels(node, camera).inc(request_bytes)
        self.request_bytes.labels(served_by, node).inc(request_bytes)
        self.response_bytes.labels(served_by, node).inc(response_bytes)


class GatewayStateCollector(Collector):
    """Routing-table and circuit-breaker figures, read from the gateway at each scrape."""

    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway

    def describe(self) -> Iterable[Metric]:
        return []

    def collect(self) -> Iterator[Metric]:
        node = self.gateway.edge_node
        watcher = self.gateway.watcher
        generation = GaugeMetricFamily(
            ROUTING_TABLE_GENERATION,
            "Generation of the routing table in use (absent until a valid table has been read).",
            labels=["edge_node"],
        )
        if watcher.table is not None:
            generation.add_metric([node], watcher.table.generation)
        yield generation
        loads = CounterMetricFamily(
            "edgeaigc_gateway_routing_table_loads",
            "Valid routing tables read and put in use.",
            labels=["edge_node"],
        )
        loads.add_metric([node], watcher.loads)
        yield loads
        errors = CounterMetricFamily(
            ROUTING_TABLE_ERRORS_TOTAL.removesuffix("_total"),
            "Routing table reads ignored: invalid (does not parse or validate) or unreadable (missing, I/O error).",
            labels=["edge_node", "reason"],
        )
        for reason in ("invalid", "unreadable"):
            errors.add_metric([node, reason], watcher.errors[reason])
        yield errors
        state = GaugeMetricFamily(
            "edgeaigc_gateway_circuit_breaker_state",
            "Circuit breaker of each local endpoint: 0 closed, 1 open, 2 half-open.",
            labels=["edge_node", "endpoint"],
        )
        opens = CounterMetricFamily(
            "edgeaigc_gateway_circuit_breaker_opens",
            "Times the circuit breaker of a local endpoint opened.",
            labels=["edge_node", "endpoint"],
        )
        for url, breaker in sorted(self.gateway.breakers.items()):
            state.add_metric([node, url], int(breaker.state))
            opens.add_metric([node, url], breaker.opens)
        yield state
        yield opens
