"""The gateway's HTTP app: the Open Inference Protocol paths it forwards, health, metadata and ``/metrics``."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

from fastapi import FastAPI, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from edgeaigc.inference.errors import ServerNotReady, register_error_handlers
from edgeaigc.inference.gateway.camera_auth import CameraAuthMiddleware, CameraTokens
from edgeaigc.inference.gateway.gateway import CAMERA_HEADER, CAMERA_QUERY, Gateway, GatewaySettings
from edgeaigc.inference.gateway.security import GatewaySecurity, relay_client


def create_gateway_app(
    settings: GatewaySettings, gateway: Gateway | None = None, security: GatewaySecurity | None = None
) -> FastAPI:
    """The gateway's HTTP app; the routing table is read at start-up and polled while it runs.

    With ``security.camera_tokens`` every request to ``/v2/models/...`` needs a camera's token
    (:mod:`.camera_auth`; the tokens are polled with the routing table); the relay trusts the cloud
    as ``security`` says (:mod:`.security`).

    Endpoints: ``POST /v2/models/{model}[/versions/{v}]/infer``, ``GET /v2/models/{model}[/versions/{v}]``
    and ``.../ready`` (forwarded), ``GET /v2/health/live``, ``GET /v2/health/ready`` (200 once a valid
    routing table is in use), ``GET /v2`` and ``GET /metrics``.
    """
    gateway = gateway or Gateway(settings)
    security = security or GatewaySecurity()
    camera_tokens = CameraTokens(security.camera_tokens) if security.camera_tokens else None

    async def watch_camera_tokens(tokens: CameraTokens) -> None:
        while True:
            await asyncio.sleep(settings.poll_interval_s)
            tokens.poll()  # never raises: a bad set is logged and the last good one kept

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        own_client = gateway.client is None
        if own_client:
            gateway.client = relay_client(settings, security)
        gateway.poll_routing_table()
        watchers = [asyncio.create_task(gateway.watch_routing_table())]
        if camera_tokens is not None:
            camera_tokens.poll()
            watchers.append(asyncio.create_task(watch_camera_tokens(camera_tokens)))
        try:
            yield
        finally:
            for watcher in watchers:
                watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.gather(*watchers)
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

    if camera_tokens is not None:
        app.add_middleware(
            CameraAuthMiddleware, tokens=camera_tokens, camera_header=CAMERA_HEADER, camera_query=CAMERA_QUERY
        )
    app.state.gateway = gateway
    app.state.camera_tokens = camera_tokens
    return app
