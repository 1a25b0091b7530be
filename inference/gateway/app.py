"""The gateway's HTTP app: the Open Inference Protocol paths it forwards, health, metadata and ``/metrics``."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import httpx
from fastapi import FastAPI, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from edgeaigc.inference.errors import ServerNotReady, register_error_handlers
from edgeaigc.inference.gateway.gateway import Gateway, GatewaySettings


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
