"""Backpressure: a bounded number of requests in flight, 503 with Retry-After past it, JSON limits while reading.

Issue 12, item 2. A burst used to queue without limit (300 requests: 168 in flight, 8.5 s at
worst, +318 MiB) and a 16 MiB JSON body was parsed before it was refused (+264 MiB, six at once
+717 MiB). Real servers on 127.0.0.1: in-process uvicorn, ``edgeaigc serve`` processes where the
test measures memory or where the gateway relays to them.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import httpx
import numpy as np
import pytest

from edgeaigc.inference.gateway.gateway import SERVED_BY_HEADER, GatewaySettings
from edgeaigc.inference.server.routes import RequestLimits
from tests.component.builders import affine_model, binary_request, write_config
from tests.component.conftest import running_gateway, running_server, sample_value, server_process
from tests.component.tables import EDGE_NODE, ConfigMapMount, routing_table
from tests.component.test_slow_clients import MIB, connect, infer_head, rss_mib

AFFINE = {"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP32", "data": [1, 0, 0, 0]}]}


@pytest.fixture(scope="module")
def slow_models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``affine``, where every request waits 1 s for others to join its batch: requests stay in flight."""
    root = tmp_path_factory.mktemp("slow-models")
    affine_model(root / "affine" / "model.onnx")
    write_config(root / "affine", max_batch_size=64, dynamic_batching={"max_delay_ms": 1000})
    return root


async def burst(url: str, count: int, **request: object) -> list[httpx.Response]:
    limits = httpx.Limits(max_connections=count)
    async with httpx.AsyncClient(base_url=url, timeout=20, limits=limits) as client:
        return await asyncio.gather(*[client.post("/v2/models/affine/infer", **request) for _ in range(count)])  # type: ignore[arg-type]


def test_a_burst_past_the_in_flight_bound_gets_503_with_retry_after(slow_models: Path) -> None:
    with running_server(slow_models, limits=RequestLimits(max_in_flight=4)) as server:
        responses = asyncio.run(burst(server.url, 12, json=AFFINE))
        statuses = sorted(response.status_code for response in responses)
        assert statuses == [200] * 4 + [503] * 8
        for refused in (response for response in responses if response.status_code == 503):
            assert refused.headers["retry-after"] == "1"
            assert refused.json() == {"error": "4 inference requests are in flight, the server's limit; retry later"}
        assert server.sample("edgeaigc_requests_total", model="affine", code="503", served_by="edge") == 8
        assert server.client.post("/v2/models/affine/infer", json=AFFINE).status_code == 200  # places given back


def test_json_bodies_are_held_to_their_own_limit_while_reading(standard_root: Path) -> None:
    limits = RequestLimits(max_json_bytes=64 * 1024)
    with running_server(standard_root, max_request_bytes=1 * MIB, limits=limits) as server:
        big_json = json.dumps({"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP32", "data": [0] * 40_000}]})
        refused = server.client.post("/v2/models/affine/infer", content=big_json)
        assert refused.status_code == 413
        assert refused.json() == {"error": f"request body of {len(big_json)} bytes exceeds the limit of 65536 bytes"}

        def chunks() -> list[bytes]:  # no Content-Length: counted as it arrives
            return [big_json.encode()[i : i + 8192] for i in range(0, len(big_json), 8192)]

        streamed = server.client.post("/v2/models/affine/infer", content=iter(chunks()))
        assert streamed.status_code == 413
        assert streamed.json() == {"error": "request body exceeds the limit of 65536 bytes"}

        header, headers = binary_request({"x": ("FP32", np.zeros((1, 4), dtype=np.float32))})
        too_long = server.client.post(
            "/v2/models/affine/infer", content=header, headers={"Inference-Header-Content-Length": str(70_000)}
        )
        assert too_long.status_code == 413
        assert too_long.json() == {"error": "JSON header of 70000 bytes exceeds the limit of 65536 bytes"}

        # binary data past the JSON limit is fine: only the JSON part is held to it
        rows = np.zeros((8192, 4), dtype=np.float32)  # 128 KiB
        body, headers = binary_request({"x": ("FP32", rows)})
        assert server.client.post("/v2/models/affine/infer", content=body, headers=headers).status_code == 200


def test_six_16_mib_json_bodies_at_once_cost_no_memory(standard_root: Path) -> None:
    """Refused on their Content-Length, before a byte is read (it was +717 MiB, parsed, then refused)."""
    with server_process(standard_root, "edge", "--head-timeout", "2") as server:
        assert httpx.post(f"{server.url}/v2/models/affine/infer", json=AFFINE).status_code == 200
        before = rss_mib(server.process.pid)
        statuses = asyncio.run(burst(server.url, 6, content=b" " * (16 * MIB)))
        grown = rss_mib(server.process.pid) - before
    assert [response.status_code for response in statuses] == [413] * 6
    assert grown < 50


def test_the_gateway_relays_to_the_cloud_what_a_busy_local_replica_refuses(
    slow_models: Path, standard_root: Path, tmp_path: Path
) -> None:
    """A replica's 503 with Retry-After is its backpressure: the request goes to the cloud, the breaker stays
    closed (the replica is alive), and the attempt is counted as ``busy``."""
    mount = ConfigMapMount(tmp_path / "routing")
    with (
        server_process(slow_models, "edge", "--max-in-flight", "1") as edge,
        server_process(standard_root, "cloud") as cloud,
    ):
        mount.write_table(routing_table(1, {"affine": [edge.url]}, {"affine": cloud.url}))
        settings = GatewaySettings(EDGE_NODE, mount.path, breaker_failures=1)
        with running_gateway(settings) as gateway:
            responses = asyncio.run(burst(gateway.url, 4, json=AFFINE))
            assert [response.status_code for response in responses] == [200] * 4
            places = sorted(response.headers[SERVED_BY_HEADER] for response in responses)
            assert places == ["cloud"] * 3 + ["edge"]
            text = gateway.scrape()
            labels = {"model": "affine", "served_by": "edge", "edge_node": EDGE_NODE}
            assert sample_value(text, "edgeaigc_gateway_upstream_failures_total", reason="busy", **labels) == 3
            state = {"edge_node": EDGE_NODE, "endpoint": edge.url}
            assert sample_value(text, "edgeaigc_gateway_circuit_breaker_state", **state) == 0


def test_the_gateway_passes_the_clouds_busy_answer_back_with_retry_after(slow_models: Path, tmp_path: Path) -> None:
    """With no place left anywhere, the client is told when to retry (the cloud's 503 and Retry-After)."""
    mount = ConfigMapMount(tmp_path / "routing")
    with server_process(slow_models, "cloud", "--max-in-flight", "1") as cloud:
        mount.write_table(routing_table(1, {}, {"affine": cloud.url}))
        with running_gateway(GatewaySettings(EDGE_NODE, mount.path)) as gateway:
            responses = asyncio.run(burst(gateway.url, 3, json=AFFINE))
    refused = [response for response in responses if response.status_code == 503]
    assert sorted(response.status_code for response in responses) == [200, 503, 503]
    assert all(response.headers["retry-after"] == "1" for response in refused)
    assert all(response.headers[SERVED_BY_HEADER] == "cloud" for response in refused)


def test_a_refused_upload_is_answered_not_reset(standard_root: Path) -> None:
    """A body refused before it is read is read on and dropped, so that the client sees the 413."""
    with running_server(standard_root, max_request_bytes=64 * 1024) as server:
        response = server.client.post("/v2/models/affine/infer", content=b" " * (2 * MIB))
        assert response.status_code == 413
        with connect(server.url) as sock:
            sock.sendall(infer_head(2 * MIB) + b" " * (2 * MIB))
            assert sock.recv(64).startswith(b"HTTP/1.1 413")
