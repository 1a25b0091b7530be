"""The HTTP app: Open Inference Protocol (KServe v2 REST) routes, thin, over the data plane.

:func:`create_app` wires a :class:`~edgeaigc.inference.server.repository.ModelRepository` into a
FastAPI app: routes decode with :mod:`~edgeaigc.inference.protocol`, call the
:class:`~edgeaigc.inference.server.dataplane.DataPlane`, encode the result; errors are domain
exceptions mapped in :func:`~edgeaigc.inference.errors.register_error_handlers`; request
metrics are taken by an ASGI middleware so that every status code (413 included) is counted.

Endpoints (``/versions/{version}`` may follow ``/v2/models/{name}`` where the protocol has it):

- ``GET /v2/health/live``, ``GET /v2/health/ready``, ``GET /v2``
- ``GET /v2/models/{name}``, ``GET /v2/models/{name}/ready``, ``POST /v2/models/{name}/infer``
- ``POST /v2/repository/index``, ``POST /v2/repository/models/{name}/load`` and ``.../unload``
- ``GET /v2/models/{name}/artifact``: a ready model's ONNX file, for a site neighbour's
  ``fetch-model --peer`` (peer-to-peer model distribution; off unless ``artifacts.enabled``)
- ``GET /metrics`` (Prometheus)

**The artifact endpoint** hands a neighbour the file of a model this server has loaded, so a
replica newly placed on another node of the same site fetches it over the LAN instead of the
backhaul. It reads like the other model endpoints (no token: the file is what the InferenceModel's
artifact already names, and the fetching side verifies its sha256), but serves only a READY
model's own file (the path comes from the repository, never from the request), only when the
server was started with ``--serve-artifacts`` (else 403), and at most ``max_streams`` at once (503
past it: the fetching side falls back to the artifact's source).

**The repository API** (load and unload) changes what a server serves, so it is off unless
``repository_api`` (``edgeaigc serve --repository-api``): off, load and unload answer 403 — the
paths exist (the protocol defines them), this server refuses them, and the message says how to
turn them on. With an ``auth`` token file (``--auth-token-file``) every state-changing request
needs ``Authorization: Bearer <token>`` (401 with a ``WWW-Authenticate`` challenge otherwise).
The index (read-only) always answers, but only a client allowed to change the repository sees
each model's version and reason: a reason holds file paths and raw load errors.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from dataclasses import dataclass, replace
from typing import Any

from fastapi import APIRouter, FastAPI, Request, Response
from fastapi.responses import FileResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from edgeaigc.inference import protocol
from edgeaigc.inference.auth import Forbidden, TokenFile
from edgeaigc.inference.errors import (
    InferenceServerError,
    InvalidInput,
    PayloadTooLarge,
    ServerBusy,
    register_error_handlers,
)
from edgeaigc.inference.metrics_contract import UNKNOWN_MODEL
from edgeaigc.inference.request_body import (
    DEFAULT_BODY_MEMORY_BYTES,
    DEFAULT_BODY_TIMEOUT_S,
    BodyMemory,
    parse_length,
    request_body,
)
from edgeaigc.inference.server.admission import DEFAULT_MAX_IN_FLIGHT, InFlightLimit
from edgeaigc.inference.server.dataplane import DataPlane
from edgeaigc.inference.server.metrics import ModelFigures, RepositoryFigures, ServerMetrics
from edgeaigc.inference.server.repository import ModelRepository, ModelState

#: Default largest request body: a few uncompressed 1080p frames as FP32 would not fit, a JPEG does.
DEFAULT_MAX_REQUEST_BYTES = 16 * 2**20
#: Default largest JSON part (a whole JSON body, or the JSON header of a binary one): parsed JSON
#: numbers take about 8 times their text, so JSON is held to less than binary data.
DEFAULT_MAX_JSON_BYTES = 4 * 2**20
#: JSON bodies and outputs larger than this are decoded/encoded in a thread, off the event loop.
_OFFLOAD_JSON_BYTES = 1 << 20
_OFFLOAD_JSON_ELEMENTS = 100_000

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

_INFER_PATH = re.compile(r"^/v2/models/(?P<name>[^/]+)(?:/versions/[^/]+)?/infer$")


def repository_figures(repository: ModelRepository) -> RepositoryFigures:
    """What the metrics collector reads from the repository at scrape time."""
    return RepositoryFigures(
        models=[
            ModelFigures(
                name=record.name,
                ready=record.state is ModelState.READY,
                memory_bytes=record.memory_bytes,
                loads=record.loads,
                load_failures=record.load_failures,
                evictions=record.evictions,
            )
            for record in repository.records()
        ],
        memory_budget_bytes=repository.memory_budget_bytes,
    )


class PartsResponse(Response):
    """An encoded inference response sent piece by piece (JSON header, then each binary tensor).

    Sending the pieces as consecutive ASGI body messages saves joining them into one buffer
    (a copy of every output tensor per request).
    """

    def __init__(self, encoded: protocol.EncodedResponse) -> None:
        super().__init__(None, media_type=encoded.content_type, headers=encoded.headers)
        self.parts = encoded.parts
        self.headers["content-length"] = str(encoded.body_length)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers})
        last = len(self.parts) - 1
        for index, part in enumerate(self.parts):
            await send({"type": "http.response.body", "body": part, "more_body": index < last})


class RequestMetricsMiddleware:
    """Counts every ``POST .../infer`` with its status code, latency and bytes (pure ASGI)."""

    def __init__(self, app: ASGIApp, metrics: ServerMetrics, is_known_model: Callable[[str], bool]) -> None:
        self.app = app
        self.metrics = metrics
        self.is_known_model = is_known_model

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        match = _INFER_PATH.match(scope.get("path", "")) if scope["type"] == "http" else None
        if match is None or scope.get("method") != "POST":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500  # what the client gets if the app fails before answering
        received = sent = 0

        async def counting_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
            return message

        async def counting_send(message: Message) -> None:
            nonlocal status, sent
            if message["type"] == "http.response.start":
                status = message["status"]
            elif message["type"] == "http.response.body":
                sent += len(message.get("body", b""))
            await send(message)

        gauge = self.metrics.in_flight.labels(self.metrics.served_by)
        gauge.inc()
        try:
            await self.app(scope, counting_receive, counting_send)
        finally:
            gauge.dec()
            name = match.group("name")
            model = name if self.is_known_model(name) else UNKNOWN_MODEL
            self.metrics.observe_request(model, status, time.perf_counter() - started, received, sent)


@dataclass(frozen=True)
class RequestLimits:
    """What one server accepts at once, and from one request (the ``edgeaigc serve`` limits flags)."""

    max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES
    """Larger request bodies get 413."""
    max_json_bytes: int = DEFAULT_MAX_JSON_BYTES
    """Larger JSON bodies (or JSON headers of binary bodies) get 413."""
    body_timeout_s: float = DEFAULT_BODY_TIMEOUT_S
    """A body that has not arrived whole within this time gets 408."""
    body_memory_bytes: int = DEFAULT_BODY_MEMORY_BYTES
    """Request-body bytes held at once over all requests; past it 503 with Retry-After."""
    max_in_flight: int = DEFAULT_MAX_IN_FLIGHT
    """Inference requests admitted at once (running or waiting for a thread); past it 503 with Retry-After."""


@dataclass(frozen=True)
class RepositoryAccess:
    """Who may use the repository API (load, unload, the index's details)."""

    enabled: bool = False
    """Load and unload answer at all (else 403)."""
    token: TokenFile | None = None
    """The bearer token they need (None: none, for servers reachable only by their owner, as in tests)."""

    def check(self, request: Request, action: str) -> None:
        """Raise :class:`Forbidden` (API off) or :class:`~edgeaigc.inference.auth.Unauthorized` (no valid token)."""
        if not self.enabled:
            raise Forbidden(
                f"{action}: the model repository API is off on this server "
                "(edgeaigc serve --repository-api --auth-token-file FILE turns it on)"
            )
        if self.token is not None:
            self.token.check(request.headers.get("authorization"), action)

    def allows(self, request: Request) -> bool:
        try:
            self.check(request, "the repository index's details")
        except InferenceServerError:  # Forbidden or Unauthorized
            return False
        return True


@dataclass(frozen=True)
class ArtifactAccess:
    """Whether the server hands its loaded models' files to site neighbours (``--serve-artifacts``)."""

    enabled: bool = False
    """``GET /v2/models/{name}/artifact`` answers at all (else 403)."""
    max_streams: int = 2
    """Files sent at once: a Pi's CPU and uplink are for inference first (503 past it)."""


class _StreamCount:
    """Artifact files being sent now."""

    def __init__(self) -> None:
        self.count = 0


class ArtifactResponse(FileResponse):
    """A model file, counted as one of the artifact streams until its last byte is sent (or the client goes)."""

    def __init__(self, path: Any, streams: _StreamCount) -> None:
        super().__init__(path, media_type="application/octet-stream")
        self.streams = streams
        streams.count += 1

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self.streams.count -= 1


def build_router(
    dataplane: DataPlane,
    limits: RequestLimits,
    metrics: ServerMetrics,
    body_memory: BodyMemory,
    repository_access: RepositoryAccess | None = None,
    artifact_access: ArtifactAccess | None = None,
) -> APIRouter:
    """The protocol's routes; each decodes, calls the data plane once, encodes."""
    router = APIRouter()
    access = repository_access or RepositoryAccess()
    artifacts = artifact_access or ArtifactAccess()
    artifact_streams = _StreamCount()
    in_flight = InFlightLimit(limits.max_in_flight)
    # Parsed JSON numbers take about 16 times their text: one large body is parsed at a time (the
    # parser holds the GIL, so running several at once would gain no speed, only memory).
    large_json = asyncio.Semaphore(1)
    max_json_bytes = min(limits.max_json_bytes, limits.max_request_bytes)

    @router.get("/v2/health/live")
    async def live() -> dict[str, bool]:
        return dataplane.live()

    @router.get("/v2/health/ready")
    async def ready() -> dict[str, bool]:
        return dataplane.ready()

    @router.get("/v2")
    async def server_metadata() -> dict[str, Any]:
        return dataplane.server_metadata()

    async def model_metadata(name: str, version: str | None = None) -> dict[str, Any]:
        return dataplane.model_metadata(name, version)

    async def model_ready(name: str, version: str | None = None) -> dict[str, Any]:
        return dataplane.model_ready(name, version)

    async def infer(request: Request) -> Response:
        # A plain Starlette endpoint, not a FastAPI one: the hot path skips dependency
        # resolution and response-model handling it has no use for.
        name: str = request.path_params["name"]
        version: str | None = request.path_params.get("version")
        # 404 / 503 before reading the body: an unknown model, or no place in flight for the request
        dataplane.check_model(name, version)
        in_flight.check()
        header_length = request.headers.get(protocol.HEADER_CONTENT_LENGTH)
        json_length = parse_length(header_length)
        if json_length is not None and json_length > max_json_bytes:
            raise PayloadTooLarge(f"JSON header of {json_length} bytes exceeds the limit of {max_json_bytes} bytes")
        max_bytes = max_json_bytes if header_length is None else limits.max_request_bytes
        async with request_body(
            request, max_bytes, limits.body_timeout_s, body_memory, align_at=json_length or 0
        ) as body:
            with in_flight.admitted():
                if header_length is None and len(body) > _OFFLOAD_JSON_BYTES:
                    async with large_json:
                        infer_request = await asyncio.to_thread(protocol.parse_infer_request, body, header_length)
                else:
                    infer_request = protocol.parse_infer_request(body, header_length)
                result = await dataplane.infer(name, version, infer_request.inputs, infer_request.output_names)
        json_elements = sum(
            math.prod(array.shape) for output, array in result.outputs.items() if not infer_request.wants_binary(output)
        )
        encode_args = (result.model_name, result.model_version, result.outputs, infer_request)
        if json_elements > _OFFLOAD_JSON_ELEMENTS:
            encoded = await asyncio.to_thread(protocol.encode_infer_response, *encode_args)
        else:
            encoded = protocol.encode_infer_response(*encode_args)
        return PartsResponse(encoded)

    for prefix in ("/v2/models/{name}", "/v2/models/{name}/versions/{version}"):
        router.add_api_route(prefix, model_metadata, methods=["GET"])
        router.add_api_route(f"{prefix}/ready", model_ready, methods=["GET"])
        router.add_route(f"{prefix}/infer", infer, methods=["POST"], include_in_schema=False)

    @router.get("/v2/models/{name}/artifact")
    async def model_artifact(name: str) -> Response:
        if not artifacts.enabled:
            raise Forbidden(
                f"model '{name}': this server does not hand out model files "
                "(edgeaigc serve --serve-artifacts turns it on, for site neighbours' fetch-model --peer)"
            )
        path = dataplane.artifact_path(name)  # 404 / 503 unless the model is loaded
        if artifact_streams.count >= artifacts.max_streams:
            raise ServerBusy(f"{artifact_streams.count} model files are being sent, the server's limit; retry later")
        return ArtifactResponse(path, artifact_streams)

    @router.post("/v2/repository/index")
    async def repository_index(request: Request) -> list[dict[str, str]]:
        async with request_body(request, max_json_bytes, limits.body_timeout_s, body_memory) as body:
            raw = bytes(body)
        ready_only = False
        if raw.strip():
            try:
                document = json.loads(raw)
            except (json.JSONDecodeError, UnicodeDecodeError) as error:
                raise InvalidInput(f"malformed JSON: {error}") from None
            if not isinstance(document, dict) or not isinstance(document.get("ready", False), bool):
                raise InvalidInput("the index request must be a JSON object with an optional boolean 'ready'")
            ready_only = document.get("ready", False)
        index = dataplane.repository_index(ready_only)
        if access.allows(request):
            return index
        return [{"name": entry["name"], "state": entry["state"]} for entry in index]

    @router.post("/v2/repository/models/{name}/load")
    async def load(name: str, request: Request) -> dict[str, Any]:
        access.check(request, f"loading model '{name}'")
        return await dataplane.load(name)

    @router.post("/v2/repository/models/{name}/unload")
    async def unload(name: str, request: Request) -> dict[str, Any]:
        access.check(request, f"unloading model '{name}'")
        return await dataplane.unload(name)

    @router.get("/metrics")
    async def prometheus_metrics() -> Response:
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    return router


def create_app(
    repository: ModelRepository,
    *,
    max_request_bytes: int | None = None,
    limits: RequestLimits | None = None,
    served_by: str = "edge",
    preload: bool = True,
    metrics: ServerMetrics | None = None,
    repository_access: RepositoryAccess | None = None,
    artifact_access: ArtifactAccess | None = None,
) -> FastAPI:
    """The model server app for ``repository``.

    Start-up loading runs in the background once the app starts, so ``/v2/health/live``
    answers at once and ``/v2/health/ready`` turns 200 when loading is done.

    Args:
        repository: the models to serve; closed when the app shuts down.
        max_request_bytes: larger request bodies get 413 (overrides ``limits``).
        limits: body size, time and memory limits and the in-flight bound (default: :class:`RequestLimits`).
        served_by: ``edge`` or ``cloud``, the ``served_by`` label of request metrics.
        preload: load every model of the repository at start-up.
        metrics: metrics to export (default: fresh ones in their own registry).
        repository_access: whether load/unload answer and the token they need (default: off).
        artifact_access: whether loaded models' files are handed to site neighbours (default: off).
    """
    metrics = metrics or ServerMetrics(served_by, lambda: repository_figures(repository))
    repository.observer = metrics
    dataplane = DataPlane(repository)

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        startup = asyncio.create_task(repository.start(preload))
        try:
            yield
        finally:
            startup.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await startup
            repository.close()

    app = FastAPI(
        title="edgeaigc model server",
        description="ONNX Runtime behind the Open Inference Protocol (KServe v2 REST).",
        version=dataplane.server_version,
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
    )
    register_error_handlers(app)
    limits = limits or RequestLimits()
    if max_request_bytes is not None:
        limits = replace(limits, max_request_bytes=max_request_bytes)
    body_memory = BodyMemory(limits.body_memory_bytes)
    app.include_router(build_router(dataplane, limits, metrics, body_memory, repository_access, artifact_access))
    app.add_middleware(RequestMetricsMiddleware, metrics=metrics, is_known_model=repository.is_known)
    app.state.dataplane = dataplane
    app.state.metrics = metrics
    app.state.body_memory = body_memory
    return app
