"""The edge gateway: each inference request to a local replica on a hit, relayed to the cloud on a miss.

One gateway runs per edge node. It speaks the same Open Inference Protocol paths as the model
server (``POST /v2/models/{model}[/versions/{v}]/infer``, JSON or binary bodies passed through
unchanged; ``GET /v2/models/{model}[/ready]`` is forwarded the same way) and routes every
request by the routing table the operator writes (``docs/routing-table.md``, parsed by
:mod:`edgeaigc.inference.gateway.routing_table`):

1. ``table.route(edge_node, model)`` gives the model's local replicas on this node (a hit) and
   its cloud URL. Neither: 404.
2. Local replicas are tried first, the first one chosen by smooth weighted round-robin (nginx's
   algorithm: over any window each replica gets its share of the weights, evenly interleaved),
   then the others by weight (:mod:`.balancing`). A replica whose circuit breaker is open is skipped.
3. A connect error, a timeout, any other transport error, a 5xx answer or a 401/403 (the
   upstream refuses the gateway's credentials, e.g. its client certificate) is a failure: the
   next local replica is tried (up to ``max_local_attempts``), then the cloud. A local replica
   that is busy (429, or 503 with ``Retry-After``: its backpressure) is passed over the same way,
   but is no failure for its breaker. Any other answer (2xx, and 4xx, which is the client's
   fault; the cloud's 429 or busy 503, with its ``Retry-After``) goes back to the client as it came.
4. All failed: 504 if every attempt timed out, else 502, with what each upstream said.

**Request bodies** are read within the limits of :mod:`edgeaigc.inference.request_body`: a size
(413), a time (408) and the body bytes the gateway holds at once while forwarding (503 with
``Retry-After``).

**Circuit breaker** (per local endpoint, :mod:`.breaker`): after ``breaker_failures`` consecutive failures it
opens and the endpoint gets no traffic (requests go straight to the cloud) for
``breaker_open_s`` seconds; then one request probes it (half-open): success closes the breaker,
failure opens it again.

**Routing table** (:mod:`.table_watcher`): the file is polled every second (stat of the
path, which follows the ``..data`` symlink a ConfigMap mount swaps on update); a changed file is
parsed and validated, and used from the next request on. A file that does not parse or validate
is ignored — the last valid table stays in use — and counted in
``edgeaigc_gateway_routing_table_errors_total``. Until a first valid table is read, inference
requests get 503 and ``/v2/health/ready`` is 503.

**Bandwidth shares** (:mod:`.uplink`): when the table gives the node's ``uplinkBytesPerSecond``, each
camera's accepted request bodies are held to its ``bandwidthShare`` of it (an idle camera's share goes to
the active ones): paced up to ``uplink_max_wait_s``, past it 429 with ``Retry-After``.

**Cameras** name themselves in the ``X-Edgeaigc-Camera`` header (or the ``camera`` query
parameter; ``unknown`` when absent); the name labels its request bytes and uplink metrics. A malformed name is a
400; past ``max_cameras`` distinct names (cameras of the routing table not counted) further ones
are counted as ``_other`` so that clients cannot create series at will. With camera
authentication (:mod:`.camera_auth`, in front of this class) the header holds the camera of the
request's token, never a name the client chose.

The HTTP app around :class:`Gateway` is :mod:`.app`; its metrics are :mod:`.metrics`.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlencode

import httpx
from fastapi import Request, Response
from fastapi.responses import JSONResponse

from edgeaigc.inference import protocol
from edgeaigc.inference.errors import (
    InferenceServerError,
    InvalidInput,
    ModelNotFound,
    OverBandwidthShare,
    ServerNotReady,
    error_body,
    upstream_error_message,
)
from edgeaigc.inference.gateway.balancing import SmoothWeightedRoundRobin
from edgeaigc.inference.gateway.breaker import CircuitBreaker
from edgeaigc.inference.gateway.metrics import GatewayMetrics, GatewayStateCollector
from edgeaigc.inference.gateway.routing_table import Endpoint, RoutingTable
from edgeaigc.inference.gateway.table_watcher import RoutingTableWatcher
from edgeaigc.inference.gateway.uplink import UplinkBudget
from edgeaigc.inference.metrics_contract import SERVED_BY_VALUES, UNKNOWN_MODEL
from edgeaigc.inference.request_body import (
    DEFAULT_BODY_MEMORY_BYTES,
    DEFAULT_BODY_TIMEOUT_S,
    BodyMemory,
    request_body,
)

logger = logging.getLogger(__name__)

CAMERA_HEADER = "X-Edgeaigc-Camera"
CAMERA_QUERY = "camera"
SERVED_BY_HEADER = "X-Edgeaigc-Served-By"
DEFAULT_CAMERA = "unknown"
#: Label of cameras past the ``max_cameras`` distinct names.
OTHER_CAMERA = "_other"
CAMERA_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,62}")  # fullmatch: no trailing newline
#: Request headers passed on to the upstream, and response headers passed back.
FORWARDED_REQUEST_HEADERS = ("content-type", protocol.HEADER_CONTENT_LENGTH.lower(), "accept", CAMERA_HEADER.lower())
FORWARDED_RESPONSE_HEADERS = ("content-type", protocol.HEADER_CONTENT_LENGTH.lower(), "retry-after")


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
    local_timeout_s: float | None = None
    """A local replica answering later than this is a failure (default: ``timeout_s``). A hung replica
    accepts connections and never answers: a shorter wait sends its requests to the cloud sooner."""
    max_local_attempts: int = 2
    """Local replicas tried for one request before the cloud."""
    breaker_failures: int = 3
    breaker_open_s: float = 10.0
    max_request_bytes: int = 16 * 2**20
    body_timeout_s: float = DEFAULT_BODY_TIMEOUT_S
    """A request body that has not arrived whole within this time gets 408."""
    body_memory_bytes: int = DEFAULT_BODY_MEMORY_BYTES
    """Request-body bytes held at once (read, or being forwarded); past it 503 with Retry-After."""
    max_cameras: int = 256
    node_name: str = ""
    """The Kubernetes node the gateway runs on: its EdgeNode is the table's entry with this ``nodeName``
    (a DaemonSet pod knows its node, not the EdgeNode's name). Used when ``edge_node`` is empty."""
    enforce_uplink_shares: bool = True
    """Hold each camera to its bandwidth share of the node's uplink (:mod:`.uplink`) when the table gives one."""
    uplink_max_wait_s: float = 1.0
    """Longest a request is paced to its camera's share; past it, 429 with Retry-After."""


@dataclass
class Attempt:
    """One upstream call of a request."""

    url: str
    served_by: str
    outcome: str
    """ok, or the failure reason: connect, timeout, transport, http_5xx, busy, refused (401/403)."""
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
        self.body_memory = BodyMemory(settings.body_memory_bytes)
        self.uplink = UplinkBudget(max_wait_s=settings.uplink_max_wait_s, clock=clock)
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
            self._configure_uplink()
        return changed

    def _configure_uplink(self) -> None:
        table = self.watcher.table
        node = table.edge_nodes.get(self.edge_node) if table else None
        if node is None or not self.settings.enforce_uplink_shares:
            self.uplink.configure(None, {})
        else:
            self.uplink.configure(node.uplink_bytes_per_second, node.camera_bandwidth_share)
        self.uplink.forget_idle()

    async def hold_to_share(self, camera: str, size_bytes: int) -> None:
        """Pace a request to its camera's uplink share, or refuse it (429) when the wait would be too long."""
        if not self.uplink.enforced:
            return
        admission = self.uplink.admit(camera, size_bytes)
        node = self.edge_node
        self.metrics.uplink_rate.labels(camera, node).set(admission.rate_bytes_per_s)
        if admission.retry_after_s is not None:
            self.metrics.uplink_admissions.labels(camera, node, "refused").inc()
            raise OverBandwidthShare(
                f"camera '{camera}' is over its share of the uplink of edge node '{node}' "
                f"({admission.rate_bytes_per_s / 1e6:.3g} MB/s now); retry in {admission.retry_after_s:.2f} s "
                "or send less",
                admission.retry_after_s,
            )
        self.metrics.uplink_admissions.labels(camera, node, "paced" if admission.wait_s > 0 else "immediate").inc()
        self.metrics.uplink_bytes.labels(camera, node).inc(size_bytes)
        if admission.wait_s > 0:
            await asyncio.sleep(admission.wait_s)

    def _create_series(self) -> None:
        """Series of the table's cameras and models at 0, so that ``increase()`` sees their first requests."""
        table = self.watcher.table
        if table is None:
            return
        node = table.edge_nodes.get(self.edge_node)
        models = set(table.cloud) | set(node.models if node else ())
        cameras = set(node.camera_bandwidth_share if node else ()) | {DEFAULT_CAMERA}
        for served_by in SERVED_BY_VALUES:
            for metric in (self.metrics.duration, self.metrics.request_bytes, self.metrics.response_bytes):
                metric.labels(served_by, self.edge_node)
            for model in models:
                self.metrics.requests.labels(model, "200", served_by, self.edge_node)
                self.metrics.request_seconds.labels(model, served_by, self.edge_node)
        for camera in cameras:
            self.metrics.camera_request_bytes.labels(self.edge_node, camera)

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
        if not CAMERA_NAME.fullmatch(camera):
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
            if response is not None or attempt.outcome == "busy":  # a busy replica is alive
                breaker.record_success()
            else:
                breaker.record_failure()
            if response is not None:
                return Forwarded(response, "edge", attempts)
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
        answer_timeout = self.settings.timeout_s
        if served_by == "edge" and self.settings.local_timeout_s is not None:
            answer_timeout = min(answer_timeout, self.settings.local_timeout_s)
        timeout = httpx.Timeout(answer_timeout, connect=self.settings.connect_timeout_s)
        in_flight = self.metrics.in_flight.labels(served_by, self.edge_node)
        in_flight.inc()
        try:
            upstream = await self.client.request(method, url, content=body or None, headers=headers, timeout=timeout)
        except httpx.ConnectTimeout:
            reason, detail = "connect", f"no connection within {self.settings.connect_timeout_s:g} s"
        except httpx.TimeoutException:
            reason, detail = "timeout", f"no answer within {answer_timeout:g} s"
        except httpx.ConnectError as error:
            reason, detail = "connect", f"cannot connect: {error}"
        except httpx.TransportError as error:
            reason, detail = "transport", f"{type(error).__name__}: {error}"
        else:
            busy = upstream.status_code == 429 or (upstream.status_code == 503 and "retry-after" in upstream.headers)
            # 401/403 judge the gateway's own credentials (its client certificate: the camera's token is
            # never forwarded), not the camera's: a failure of this upstream, not the client's fault.
            refused = upstream.status_code in (401, 403)
            if (upstream.status_code < 500 or busy) and not refused and not (busy and served_by == "edge"):
                passed = {k: v for k, v in upstream.headers.items() if k.lower() in FORWARDED_RESPONSE_HEADERS}
                passed[SERVED_BY_HEADER] = served_by
                response = Response(upstream.content, status_code=upstream.status_code, headers=passed)
                return response, Attempt(base_url, served_by, "ok")
            reason = "busy" if busy else "refused" if refused else "http_5xx"
            detail = f"HTTP {upstream.status_code} {upstream_error_message(upstream)}"
        finally:
            in_flight.dec()
        # a busy replica is its backpressure at work, not a fault: not worth a warning per request
        level = logging.DEBUG if reason == "busy" else logging.WARNING
        logger.log(level, "upstream %s (%s) failed for model %s: %s", base_url, served_by, model, detail)
        self.metrics.failures.labels(self.model_label(model), served_by, reason, self.edge_node).inc()
        return None, Attempt(base_url, served_by, reason, detail)

    async def infer(self, request: Request, model: str) -> Response:
        """``POST .../infer``: route, forward, count (every outcome is counted, none raises)."""
        started = time.perf_counter()
        received = 0
        served_by = "edge"
        camera = DEFAULT_CAMERA
        settings = self.settings
        try:
            camera = self.camera_label(request)
            async with request_body(
                request, settings.max_request_bytes, settings.body_timeout_s, self.body_memory
            ) as body:
                received = len(body)
                await self.hold_to_share(camera, received)
                forwarded = await self.forward(
                    "POST",
                    model,
                    request.url.path,
                    _query_without_camera(request),
                    _forwarded_headers(request),
                    bytes(body),
                )
            served_by, response = forwarded.served_by, forwarded.response
        except InferenceServerError as error:
            served_by = getattr(error, "served_by", "edge")
            response = error_response(error, served_by)
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
        status_code=error.status_code,
        content=error_body(error.message),
        headers={**error.headers, SERVED_BY_HEADER: served_by},
    )


def _forwarded_headers(request: Request) -> dict[str, str]:
    return {k: v for k, v in request.headers.items() if k.lower() in FORWARDED_REQUEST_HEADERS}


def _query_without_camera(request: Request) -> str:
    return urlencode([(k, v) for k, v in request.query_params.multi_items() if k != CAMERA_QUERY])
