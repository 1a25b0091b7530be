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
- ``GET /metrics`` (Prometheus)
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from typing import Any

import numpy as np
from fastapi import APIRouter, FastAPI, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from edgeaigc.inference import protocol
from edgeaigc.inference.errors import InvalidInput, register_error_handlers
from edgeaigc.inference.metrics_contract import UNKNOWN_MODEL
from edgeaigc.inference.request_body import read_limited_body
from edgeaigc.inference.server.dataplane import DataPlane
from edgeaigc.inference.server.metrics import ModelFigures, RepositoryFigures, ServerMetrics
from edgeaigc.inference.server.repository import ModelRepository, ModelState

#: Default largest request body: a few uncompressed 1080p frames as FP32 would not fit, a JPEG does.
DEFAULT_MAX_REQUEST_BYTES = 16 * 2**20
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


async def read_body(request: Request, limit: int, align_at: int = 0) -> bytes | memoryview:
    """The request body, refused with 413 as soon as it is known to exceed ``limit`` bytes.

    With a Content-Length the body is read into one buffer of that size (no joining of chunks);
    ``align_at`` bytes into the body then start at a 64-byte boundary, so that the binary
    tensor data after a JSON header of that length reaches onnxruntime aligned, without a copy.
    """
    declared = request.headers.get("content-length")
    if declared is None or not declared.isdigit() or int(declared) > limit:
        return await read_limited_body(request, limit)  # chunks joined; 413 at once for a declared size over it
    size = int(declared)
    storage = bytearray(size + 64)
    start = -(np.frombuffer(storage, dtype=np.uint8).ctypes.data + align_at) % 64
    view = memoryview(storage)[start : start + size]
    received = 0
    async for chunk in request.stream():
        if received + len(chunk) > size:
            raise InvalidInput(f"the body is longer than its Content-Length of {size} bytes")
        view[received : received + len(chunk)] = chunk
        received += len(chunk)
    if received != size:
        raise InvalidInput(f"the body has {received} bytes but its Content-Length is {size}")
    return view


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


def build_router(dataplane: DataPlane, max_request_bytes: int, metrics: ServerMetrics) -> APIRouter:
    """The protocol's routes; each decodes, calls the data plane once, encodes."""
    router = APIRouter()

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
        dataplane.check_model(name, version)  # 404 / 503 before reading the body
        header_length = request.headers.get(protocol.HEADER_CONTENT_LENGTH)
        align_at = int(header_length) if header_length and header_length.isdigit() else 0
        body = await read_body(request, max_request_bytes, align_at)
        if header_length is None and len(body) > _OFFLOAD_JSON_BYTES:
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

    @router.post("/v2/repository/index")
    async def repository_index(request: Request) -> list[dict[str, str]]:
        body = bytes(await read_body(request, max_request_bytes))
        ready_only = False
        if body.strip():
            try:
                document = json.loads(body)
            except (json.JSONDecodeError, UnicodeDecodeError) as error:
                raise InvalidInput(f"malformed JSON: {error}") from None
            if not isinstance(document, dict) or not isinstance(document.get("ready", False), bool):
                raise InvalidInput("the index request must be a JSON object with an optional boolean 'ready'")
            ready_only = document.get("ready", False)
        return dataplane.repository_index(ready_only)

    @router.post("/v2/repository/models/{name}/load")
    async def load(name: str) -> dict[str, Any]:
        return await dataplane.load(name)

    @router.post("/v2/repository/models/{name}/unload")
    async def unload(name: str) -> dict[str, Any]:
        return await dataplane.unload(name)

    @router.get("/metrics")
    async def prometheus_metrics() -> Response:
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    return router


def create_app(
    repository: ModelRepository,
    *,
    max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES,
    served_by: str = "edge",
    preload: bool = True,
    metrics: ServerMetrics | None = None,
) -> FastAPI:
    """The model server app for ``repository``.

    Start-up loading runs in the background once the app starts, so ``/v2/health/live``
    answers at once and ``/v2/health/ready`` turns 200 when loading is done.

    Args:
        repository: the models to serve; closed when the app shuts down.
        max_request_bytes: larger request bodies get 413.
        served_by: ``edge`` or ``cloud``, the ``served_by`` label of request metrics.
        preload: load every model of the repository at start-up.
        metrics: metrics to export (default: fresh ones in their own registry).
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
    app.include_router(build_router(dataplane, max_request_bytes, metrics))
    app.add_middleware(RequestMetricsMiddleware, metrics=metrics, is_known_model=repository.is_known)
    app.state.dataplane = dataplane
    app.state.metrics = metrics
    return app
