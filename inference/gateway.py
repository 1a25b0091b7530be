"""The edge gateway: each inference request to a local replica on a hit, relayed to the cloud on a miss.

One gateway runs per edge node. It speaks the same Open Inference Protocol paths as the model
server (``POST /v2/models/{model}[/versions/{v}]/infer``, JSON or binary bodies passed through
unchanged; ``GET /v2/models/{model}[/ready]`` is forwarded the same way) and routes every
request by the routing table the operator writes (``docs/routing-table.md``, parsed by
:mod:`edgeaigc.inference.routing_table`):

1. ``table.route(edge_node, model)`` gives the model's local replicas on this node (a hit) and
   its cloud URL. Neither: 404.
2. Local replicas are tried first, the first one chosen by smooth weighted round-robin (nginx's
   algorithm: over any window each replica gets its share of the weights, evenly interleaved),
   then the others by weight. A replica whose circuit breaker is open is skipped.
3. A connect error, a timeout, any other transport error or a 5xx answer is a failure: the
   next local replica is tried (up to ``max_local_attempts``), then the cloud. Any other answer
   (2xx, and 4xx, which is the client's fault) goes back to the client as it came.
4. All failed: 504 if every attempt timed out, else 502, with what each upstream said.

**Circuit breaker** (per local endpoint): after ``breaker_failures`` consecutive failures it
opens and the endpoint gets no traffic (requests go straight to the cloud) for
``breaker_open_s`` seconds; then one request probes it (half-open): success closes the breaker,
failure opens it again.

**Routing table** (:class:`RoutingTableWatcher`): the file is polled every second (stat of the
path, which follows the ``..data`` symlink a ConfigMap mount swaps on update); a changed file is
parsed and validated, and used from the next request on. A file that does not parse or validate
is ignored — the last valid table stays in use — and counted in
``edgeaigc_gateway_routing_table_errors_total``. Until a first valid table is read, inference
requests get 503 and ``/v2/health/ready`` is 503.

**Cameras** name themselves in the ``X-Edgeaigc-Camera`` header (or the ``camera`` query
parameter; ``unknown`` when absent); the name labels the request metrics. A malformed name is a
400; past ``max_cameras`` distinct names (cameras of the routing table not counted) further ones
are counted as ``_other`` so that clients cannot create series at will.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import os
import re
import time
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import httpx
from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from starlette.requests import ClientDisconnect

from edgeaigc.inference import protocol
from edgeaigc.inference.errors import (
    InferenceServerError,
    InvalidInput,
    ModelNotFound,
    PayloadTooLarge,
    ServerNotReady,
    error_body,
    register_error_handlers,
    upstream_error_message,
)
from edgeaigc.inference.metrics import REQUEST_LATENCY_BUCKETS, SERVED_BY_VALUES, UNKNOWN_MODEL
from edgeaigc.inference.routing_table import Endpoint, InvalidRoutingTable, RoutingTable, parse_routing_table

logger = logging.getLogger(__name__)

CAMERA_HEADER = "X-Edgeaigc-Camera"
CAMERA_QUERY = "camera"
SERVED_BY_HEADER = "X-Edgeaigc-Served-By"
DEFAULT_CAMERA = "unknown"
#: Label of cameras past the ``max_cameras`` distinct names.
OTHER_CAMERA = "_other"
CAMERA_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")
#: Request headers passed on to the upstream, and response headers passed back.
FORWARDED_REQUEST_HEADERS = ("content-type", protocol.HEADER_CONTENT_LENGTH.lower(), "accept", CAMERA_HEADER.lower())
FORWARDED_RESPONSE_HEADERS = ("content-type", protocol.HEADER_CONTENT_LENGTH.lower())

#: Names of the gateway's own metrics (besides the request metrics of the contract).
GATEWAY_METRIC_NAMES = (
    "edgeaigc_gateway_routing_table_generation",
    "edgeaigc_gateway_routing_table_loads_total",
    "edgeaigc_gateway_routing_table_errors_total",
    "edgeaigc_gateway_circuit_breaker_state",
    "edgeaigc_gateway_circuit_breaker_opens_total",
    "edgeaigc_gateway_upstream_retries_total",
    "edgeaigc_gateway_upstream_failures_total",
)
#: The request metrics of the contract as the gateway (and the traffic twin) label them.
GATEWAY_REQUEST_METRIC_LABELS = {
    "edgeaigc_requests_total": ("model", "code", "served_by", "edge_node", "camera"),
    "edgeaigc_request_duration_seconds": ("model", "served_by", "edge_node"),
    "edgeaigc_request_bytes_total": ("model", "served_by", "edge_node"),
    "edgeaigc_response_bytes_total": ("model", "served_by", "edge_node"),
    "edgeaigc_requests_in_flight": ("served_by", "edge_node"),
}


# --------------------------------------------------------------------------------------------
# Circuit breaker and balancing


class BreakerState(enum.IntEnum):
    """Exported as the value of ``edgeaigc_gateway_circuit_breaker_state``."""

    CLOSED = 0
    OPEN = 1
    HALF_OPEN = 2


class CircuitBreaker:
    """Consecutive-failure circuit breaker with a single half-open probe.

    Args:
        failure_threshold: consecutive failures that open the breaker.
        open_seconds: how long it stays open before letting one probe through.
        clock: monotonic seconds (injectable for tests).
    """

    def __init__(
        self, failure_threshold: int, open_seconds: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        if failure_threshold < 1 or open_seconds < 0:
            raise ValueError("failure_threshold must be >= 1 and open_seconds >= 0")
        self.failure_threshold = failure_threshold
        self.open_seconds = open_seconds
        self.clock = clock
        self.state = BreakerState.CLOSED
        self.consecutive_failures = 0
        self.opened_at = 0.0
        self.opens = 0
        self._probe_in_flight = False

    def allow(self) -> bool:
        """Whether a request may go to the endpoint now; a half-open breaker lets one probe through."""
        if self.state is BreakerState.CLOSED:
            return True
        if self.state is BreakerState.OPEN:
            if self.clock() - self.opened_at < self.open_seconds:
                return False
            self.state = BreakerState.HALF_OPEN
            self._probe_in_flight = False
        if self._probe_in_flight:
            return False
        self._probe_in_flight = True
        return True

    def record_success(self) -> None:
        self.state = BreakerState.CLOSED
        self.consecutive_failures = 0
        self._probe_in_flight = False

    def record_failure(self) -> None:
        self.consecutive_failures += 1
        if self.state is BreakerState.HALF_OPEN or (
            self.state is BreakerState.CLOSED and self.consecutive_failures >= self.failure_threshold
        ):
            self.state = BreakerState.OPEN
            self.opened_at = self.clock()
            self.opens += 1
        self._probe_in_flight = False


class SmoothWeightedRoundRobin:
    """nginx's smooth weighted round-robin over endpoints with weight > 0.

    Each pick adds every weight to its endpoint's running score, takes the highest score and
    subtracts the total weight from it: weights 5, 1, 1 give a a b a c a a, not a a a a a b c.
    """

    def __init__(self, endpoints: Sequence[Endpoint]) -> None:
        self.endpoints = tuple(e for e in endpoints if e.weight > 0)
        self._scores = [0.0] * len(self.endpoints)
        self._total = sum(e.weight for e in self.endpoints)

    def order(self) -> list[Endpoint]:
        """The endpoints to try, in order: this request's pick, then the others by weight."""
        if not self.endpoints:
            return []
        for i, endpoint in enumerate(self.endpoints):
            self._scores[i] += endpoint.weight
        best = max(range(len(self.endpoints)), key=lambda i: self._scores[i])
        self._scores[best] -= self._total
        rest = sorted((e for i, e in enumerate(self.endpoints) if i != best), key=lambda e: -e.weight)
        return [self.endpoints[best], *rest]


# --------------------------------------------------------------------------------------------
# Metrics


class GatewayMetrics:
    """The contract's request metrics with ``edge_node`` and ``camera`` labels, and the gateway's own.

    The routing-table and circuit-breaker figures are read from the gateway at scrape time.
    """

    def __init__(self, edge_node: str, registry: CollectorRegistry | None = None) -> None:
        self.edge_node = edge_node
        self.registry = registry or CollectorRegistry()
        self.requests = Counter(
            "edgeaigc_requests",
            "Inference requests answered, by model, HTTP status code, where they were served, edge node and camera.",
            ["model", "code", "served_by", "edge_node", "camera"],
            registry=self.registry,
        )
        self.duration = Histogram(
            "edgeaigc_request_duration_seconds",
            "Time from receiving an inference request to sending the last byte of its response.",
            ["model", "served_by", "edge_node"],
            buckets=REQUEST_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.request_bytes = Counter(
            "edgeaigc_request_bytes",
            "Bytes of inference request bodies received.",
            ["model", "served_by", "edge_node"],
            registry=self.registry,
        )
        self.response_bytes = Counter(
            "edgeaigc_response_bytes",
            "Bytes of inference response bodies sent.",
            ["model", "served_by", "edge_node"],
            registry=self.registry,
        )
        self.in_flight = Gauge(
            "edgeaigc_requests_in_flight",
            "Requests at an upstream now: at a local replica (edge) or relayed to the cloud (cloud).",
            ["served_by", "edge_node"],
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
            "Failed upstream attempts, by where they went and why (connect, timeout, transport, http_5xx).",
            ["model", "served_by", "reason", "edge_node"],
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
        self.requests.labels(model, str(code), served_by, node, camera).inc()
        self.duration.labels(model, served_by, node).observe(seconds)
        self.request_bytes.labels(model, served_by, node).inc(request_bytes)
        self.response_bytes.labels(model, served_by, node).inc(response_bytes)


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
            "edgeaigc_gateway_routing_table_generation",
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
            "edgeaigc_gateway_routing_table_errors",
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


# --------------------------------------------------------------------------------------------
# Routing table


class RoutingTableWatcher:
    """Keeps the last valid routing table read from ``path``; :meth:`poll` re-reads it when it changed."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.table: RoutingTable | None = None
        self.loads = 0
        self.errors = {"invalid": 0, "unreadable": 0}
        self.last_error: str | None = None
        self._seen: tuple[int, int, int, int] | None = None
        self._unreadable_logged = False

    def poll(self) -> bool:
        """Read the file if it changed since the last poll; True when a new valid table is in use."""
        try:
            stat = os.stat(self.path)  # follows symlinks: a ConfigMap update swaps the ..data link
        except OSError as error:
            if not self._unreadable_logged:
                self._error("unreadable", f"cannot stat {self.path}: {error.strerror or error}")
                self._unreadable_logged = True
            self._seen = None
            return False
        self._unreadable_logged = False
        key = (stat.st_dev, stat.st_ino, stat.st_mtime_ns, stat.st_size)
        if key == self._seen:
            return False
        self._seen = key
        try:
            text = self.path.read_text()
        except (OSError, UnicodeDecodeError) as error:
            self._error("unreadable", f"cannot read {self.path}: {error}")
            return False
        try:
            table = parse_routing_table(text)
        except InvalidRoutingTable as error:
            kept = "none" if self.table is None else f"generation {self.table.generation}"
            self._error("invalid", f"{self.path} is not a valid routing table ({error}); keeping {kept}")
            return False
        self.table = table
        self.loads += 1
        self.last_error = None
        logger.info("routing table generation %d in use (%s)", table.generation, self.path)
        return True

    def _error(self, reason: str, message: str) -> None:
        self.errors[reason] += 1
        self.last_error = message
        logger.warning("%s", message)


# --------------------------------------------------------------------------------------------
# The gateway


@dataclass(frozen=True)
class GatewaySettings:
    """How one gateway routes; the ``edgeaigc gateway`` flags."""

    edge_node: str
    """The EdgeNode this gateway serves (its entry in the routing table); empty: found by ``node_name``."""
    routing_table: Path
    """The routing table file (``routing.json`` of the mounted ConfigMap)."""
    poll_interval_s: float = 1.0
    connect_timeout_s: float = 1.0
    """Connecting to an upstream longer than this is a failure (a dead replica refuses at once)."""
    timeout_s: float = 10.0
    """An upstream answering later than this is a failure (a timeout)."""
    max_local_attempts: int = 2
    """Local replicas tried for one request before the cloud."""
    breaker_failures: int = 3
    breaker_open_s: float = 10.0
    max_request_bytes: int = 16 * 2**20
    max_cameras: int = 256
    node_name: str = ""
    """The Kubernetes node the gateway runs on: its EdgeNode is the table's entry with this ``nodeName``
    (a DaemonSet pod knows its node, not the EdgeNode's name). Used when ``edge_node`` is empty."""


@dataclass
class Attempt:
    """One upstream call of a request."""

    url: str
    served_by: str
    outcome: str
    """ok, or the failure reason: connect, timeout, transport, http_5xx."""
    detail: str = ""


@dataclass
class Forwarded:
    """What the gateway answers: a response and where it was served."""

    response: Response
    served_by: str
    attempts: list[Attempt] = field(default_factory=list)


class UpstreamsFailed(InferenceServerError):
    """Every upstream of the request failed (502) or timed out (504)."""

    def __init__(self, model: str, attempts: Sequence[Attempt]) -> None:
        timed_out = all(a.outcome == "timeout" for a in attempts)
        said = "; ".join(f"{a.served_by} {a.url}: {a.detail}" for a in attempts)
        verb = "timed out" if timed_out else "failed"
        super().__init__(f"every upstream for model '{model}' {verb}: {said}")
        self.status_code = 504 if timed_out else 502
        self.served_by = attempts[-1].served_by if attempts else "edge"


class NoUpstream(InferenceServerError):
    """The model has local replicas but every breaker is open (or no weight) and no cloud route."""

    status_code = 503


class ModelNotRouted(ModelNotFound):
    def __init__(self, model: str, edge_node: str) -> None:
        super().__init__(model)
        self.message = (
            f"model '{model}' is not routed: not cached on edge node '{edge_node}' and no cloud route "
            "in the routing table"
        )
        self.args = (self.message,)


class Gateway:
    """Routing, balancing, failover and metrics; :func:`create_gateway_app` puts HTTP around it."""

    def __init__(
        self,
        settings: GatewaySettings,
        metrics: GatewayMetrics | None = None,
        client: httpx.AsyncClient | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.settings = settings
        self.metrics = metrics or GatewayMetrics(settings.edge_node or settings.node_name)
        self.metrics.registry.register(GatewayStateCollector(self))
        self.watcher = RoutingTableWatcher(settings.routing_table)
        self.client = client
        self.clock = clock
        self.breakers: dict[str, CircuitBreaker] = {}
        self._balancers: dict[str, tuple[tuple[Endpoint, ...], SmoothWeightedRoundRobin]] = {}
        self._cameras: set[str] = set()
        self._table_generation_seen: int | None = None
        self._resolved_for: RoutingTable | None = None
        self._resolved = settings.node_name

    # -- routing table ----------------------------------------------------------------------

    @property
    def edge_node(self) -> str:
        """The EdgeNode served: given, or the table's entry on this Kubernetes node (else the node's name,
        which routes every model to the cloud)."""
        if self.settings.edge_node:
            return self.settings.edge_node
        table = self.watcher.table
        if table is not self._resolved_for:  # once per table, not per request
            found = table.edge_node_on(self.settings.node_name) if table else None
            self._resolved_for, self._resolved = table, found or self.settings.node_name
        return self._resolved

    def poll_routing_table(self) -> bool:
        changed = self.watcher.poll()
        if changed:
            self.metrics.set_edge_node(self.edge_node)
            self._prune()
            self._create_series()
        return changed

    def _create_series(self) -> None:
        """Series of the table's cameras and models at 0, so that ``increase()`` sees their first requests."""
        table = self.watcher.table
        if table is None:
            return
        node = table.edge_nodes.get(self.edge_node)
        models = set(table.cloud) | set(node.models if node else ())
        cameras = set(node.camera_bandwidth_share if node else ()) | {DEFAULT_CAMERA}
        for model in models:
            for served_by in SERVED_BY_VALUES:
                for camera in cameras:
                    self.metrics.requests.labels(model, "200", served_by, self.edge_node, camera)
                for metric in (self.metrics.duration, self.metrics.request_bytes, self.metrics.response_bytes):
                    metric.labels(model, served_by, self.edge_node)

    def _prune(self) -> None:
        """Forget breakers and balancers of endpoints and models the new table no longer routes here."""
        table = self.watcher.table
        node = table.edge_nodes.get(self.edge_node) if table else None
        models = node.models if node else {}
        urls = {e.url for local in models.values() for e in local.endpoints}
        self.breakers = {url: breaker for url, breaker in self.breakers.items() if url in urls}
        self._balancers = {m: b for m, b in self._balancers.items() if m in models and models[m].endpoints == b[0]}

    async def watch_routing_table(self) -> None:
        while True:
            try:
                self.poll_routing_table()
            except Exception:  # a watcher that dies would freeze routing silently
                logger.exception("routing table poll failed")
            await asyncio.sleep(self.settings.poll_interval_s)

    def route(self, model: str) -> tuple[tuple[Endpoint, ...], str | None]:
        table = self.watcher.table
        if table is None:
            detail = f" ({self.watcher.last_error})" if self.watcher.last_error else ""
            raise ServerNotReady(f"no valid routing table has been read yet from {self.settings.routing_table}{detail}")
        local, cloud = table.route(self.edge_node, model)
        if not local and cloud is None:
            raise ModelNotRouted(model, self.edge_node)
        return local, cloud

    def model_label(self, model: str) -> str:
        table = self.watcher.table
        if table is None:
            return UNKNOWN_MODEL
        local, cloud = table.route(self.edge_node, model)
        return model if local or cloud is not None else UNKNOWN_MODEL

    def camera_label(self, request: Request) -> str:
        camera = request.headers.get(CAMERA_HEADER) or request.query_params.get(CAMERA_QUERY) or DEFAULT_CAMERA
        if not CAMERA_NAME.match(camera):
            raise InvalidInput(
                f"camera name {camera[:80]!r} (header {CAMERA_HEADER} or query parameter '{CAMERA_QUERY}') must be "
                "1-63 letters, digits, '.', '_' or '-', starting with a letter or digit"
            )
        if camera == DEFAULT_CAMERA or camera in self._cameras:
            return camera
        table = self.watcher.table
        node = table.edge_nodes.get(self.edge_node) if table else None
        if (node and camera in node.camera_bandwidth_share) or len(self._cameras) < self.settings.max_cameras:
            self._cameras.add(camera)
            return camera
        return OTHER_CAMERA

    def _balancer(self, model: str, endpoints: tuple[Endpoint, ...]) -> SmoothWeightedRoundRobin:
        known = self._balancers.get(model)
        if known is None or known[0] != endpoints:
            known = (endpoints, SmoothWeightedRoundRobin(endpoints))
            self._balancers[model] = known
        return known[1]

    def _breaker(self, url: str) -> CircuitBreaker:
        breaker = self.breakers.get(url)
        if breaker is None:
            breaker = CircuitBreaker(self.settings.breaker_failures, self.settings.breaker_open_s, self.clock)
            self.breakers[url] = breaker
        return breaker

    # -- forwarding -------------------------------------------------------------------------

    async def forward(
        self, method: str, model: str, path: str, query: str, headers: dict[str, str], body: bytes
    ) -> Forwarded:
        """Send the request to a local replica or the cloud as the routing table says (see module doc)."""
        assert self.client is not None, "the gateway's HTTP client starts with the app"
        local, cloud = self.route(model)
        attempts: list[Attempt] = []
        local_tries = 0
        for endpoint in self._balancer(model, local).order():
            if local_tries >= self.settings.max_local_attempts:
                break
            breaker = self._breaker(endpoint.url)
            if not breaker.allow():
                continue
            local_tries += 1
            if attempts:
                self.metrics.retries.labels(model, self.edge_node).inc()
            response, attempt = await self._call(method, endpoint.url, "edge", path, query, headers, body, model)
            attempts.append(attempt)
            if response is not None:
                breaker.record_success()
                return Forwarded(response, "edge", attempts)
            breaker.record_failure()
        if cloud is not None:
            if attempts:
                self.metrics.retries.labels(model, self.edge_node).inc()
            response, attempt = await self._call(method, cloud, "cloud", path, query, headers, body, model)
            attempts.append(attempt)
            if response is not None:
                return Forwarded(response, "cloud", attempts)
        if not attempts:
            raise NoUpstream(
                f"model '{model}' has no upstream to try: the circuit breakers of its local replicas on "
                f"'{self.edge_node}' are open (or their weights are 0) and it has no cloud route"
            )
        raise UpstreamsFailed(model, attempts)

    async def _call(
        self,
        method: str,
        base_url: str,
        served_by: str,
        path: str,
        query: str,
        headers: dict[str, str],
        body: bytes,
        model: str,
    ) -> tuple[Response | None, Attempt]:
        """One upstream call: the response to pass back, or None and why it failed."""
        assert self.client is not None
        url = base_url.rstrip("/") + path + (f"?{query}" if query else "")
        in_flight = self.metrics.in_flight.labels(served_by, self.edge_node)
        in_flight.inc()
        try:
            upstream = await self.client.request(method, url, content=body or None, headers=headers)
        except httpx.ConnectTimeout:
            reason, detail = "connect", f"no connection within {self.settings.connect_timeout_s:g} s"
        except httpx.TimeoutException:
            reason, detail = "timeout", f"no answer within {self.settings.timeout_s:g} s"
        except httpx.ConnectError as error:
            reason, detail = "connect", f"cannot connect: {error}"
        except httpx.TransportError as error:
            reason, detail = "transport", f"{type(error).__name__}: {error}"
        else:
            if upstream.status_code < 500:
                passed = {k: v for k, v in upstream.headers.items() if k.lower() in FORWARDED_RESPONSE_HEADERS}
                passed[SERVED_BY_HEADER] = served_by
                response = Response(upstream.content, status_code=upstream.status_code, headers=passed)
                return response, Attempt(base_url, served_by, "ok")
            reason, detail = "http_5xx", f"HTTP {upstream.status_code} {upstream_error_message(upstream)}"
        finally:
            in_flight.dec()
        logger.warning("upstream %s (%s) failed for model %s: %s", base_url, served_by, model, detail)
        self.metrics.failures.labels(self.model_label(model), served_by, reason, self.edge_node).inc()
        return None, Attempt(base_url, served_by, reason, detail)

    async def infer(self, request: Request, model: str) -> Response:
        """``POST .../infer``: route, forward, count (every outcome is counted, none raises)."""
        started = time.perf_counter()
        received = 0
        served_by = "edge"
        camera = DEFAULT_CAMERA
        try:
            camera = self.camera_label(request)
            body = await read_limited_body(request, self.settings.max_request_bytes)
            received = len(body)
            forwarded = await self.forward(
                "POST",
                model,
                request.url.path,
                _query_without_camera(request),
                _forwarded_headers(request),
                body,
            )
            served_by, response = forwarded.served_by, forwarded.response
        except InferenceServerError as error:
            served_by = getattr(error, "served_by", "edge")
            response = error_response(error, served_by)
        except ClientDisconnect:
            response = error_response(InvalidInput("the client disconnected before sending the whole body"), "edge")
        except Exception as error:  # never let one request take the gateway down
            logger.exception("gateway failed on a request for model %s", model)
            response = error_response(InferenceServerError(f"gateway error: {type(error).__name__}"), "edge")
        self.metrics.observe_request(
            self.model_label(model),
            response.status_code,
            served_by,
            camera,
            time.perf_counter() - started,
            received,
            len(response.body),
        )
        return response

    async def get(self, request: Request, model: str) -> Response:
        """``GET /v2/models/{model}[...]`` (metadata, readiness): forwarded like inference, not counted."""
        try:
            self.camera_label(request)
            forwarded = await self.forward(
                "GET", model, request.url.path, _query_without_camera(request), _forwarded_headers(request), b""
            )
            return forwarded.response
        except InferenceServerError as error:
            return error_response(error, getattr(error, "served_by", "edge"))


def error_response(error: InferenceServerError, served_by: str) -> JSONResponse:
    return JSONResponse(
        status_code=error.status_code, content=error_body(error.message), headers={SERVED_BY_HEADER: served_by}
    )


async def read_limited_body(request: Request, limit: int) -> bytes:
    """The request body, 413 as soon as it is known to be larger than ``limit``."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise PayloadTooLarge(f"request body of {int(declared)} bytes exceeds the limit of {limit} bytes")
    chunks: list[bytes] = []
    received = 0
    async for chunk in request.stream():
        received += len(chunk)
        if received > limit:
            raise PayloadTooLarge(f"request body exceeds the limit of {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def _forwarded_headers(request: Request) -> dict[str, str]:
    return {k: v for k, v in request.headers.items() if k.lower() in FORWARDED_REQUEST_HEADERS}


def _query_without_camera(request: Request) -> str:
    return urlencode([(k, v) for k, v in request.query_params.multi_items() if k != CAMERA_QUERY])


def create_gateway_app(settings: GatewaySettings, gateway: Gateway | None = None) -> FastAPI:
    """The gateway's HTTP app; the routing table is read at start-up and polled while it runs.

    Endpoints: ``POST /v2/models/{model}[/versions/{v}]/infer``, ``GET /v2/models/{model}[/versions/{v}]``
    and ``.../ready`` (forwarded), ``GET /v2/health/live``, ``GET /v2/health/ready`` (200 once a valid
    routing table is in use), ``GET /v2`` and ``GET /metrics``.
    """
    gateway = gateway or Gateway(settings)

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        own_client = gateway.client is None
        if own_client:
            gateway.client = httpx.AsyncClient(
                timeout=httpx.Timeout(settings.timeout_s, connect=settings.connect_timeout_s),
                limits=httpx.Limits(max_connections=512, max_keepalive_connections=128),
            )
        gateway.poll_routing_table()
        watcher = asyncio.create_task(gateway.watch_routing_table())
        try:
            yield
        finally:
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher
            if own_client and gateway.client is not None:
                await gateway.client.aclose()
                gateway.client = None

    app = FastAPI(
        title="edgeaigc gateway",
        description="Routes Open Inference Protocol requests to local replicas or the cloud.",
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
    )
    register_error_handlers(app)

    async def infer(request: Request, model: str, version: str | None = None) -> Response:
        return await gateway.infer(request, model)

    async def model_get(request: Request, model: str, version: str | None = None) -> Response:
        return await gateway.get(request, model)

    for prefix in ("/v2/models/{model}", "/v2/models/{model}/versions/{version}"):
        app.add_api_route(f"{prefix}/infer", infer, methods=["POST"])
        app.add_api_route(prefix, model_get, methods=["GET"])
        app.add_api_route(f"{prefix}/ready", model_get, methods=["GET"])

    @app.get("/v2/health/live")
    async def live() -> dict[str, bool]:
        return {"live": True}

    @app.get("/v2/health/ready")
    async def ready() -> dict[str, Any]:
        if gateway.watcher.table is None:
            raise ServerNotReady(f"no valid routing table has been read yet from {settings.routing_table}")
        return {"ready": True, "generation": gateway.watcher.table.generation}

    @app.get("/v2")
    async def metadata() -> dict[str, Any]:
        return {"name": "edgeaigc-gateway", "edge_node": gateway.edge_node, "extensions": ["binary_tensor_data"]}

    @app.get("/metrics")
    async def prometheus_metrics() -> Response:
        return Response(generate_latest(gateway.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    app.state.gateway = gateway
    return app
