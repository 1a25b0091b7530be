"""Bandwidth shares enforced by a real gateway in front of a real model server (inference/gateway/uplink.py).

A camera's request bodies are held to its share of the node's uplink: within the bucket they pass at
once, over it they are paced (the answer comes later), and a request that would wait longer than
``uplink_max_wait_s`` gets 429 with ``Retry-After``; the metrics say which, and how many bytes each
camera had accepted. The rates themselves (shares under contention, work conservation) are measured
by ``edgeaigc bench-uplink`` and checked exactly on a simulated clock in tests/unit/test_gateway_uplink.py.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from edgeaigc.inference.gateway.gateway import GatewaySettings
from edgeaigc.inference.gateway.routing_table import EdgeNodeRoutes, Endpoint, LocalModel, RoutingTable
from tests.component.builders import binary_request
from tests.component.conftest import RunningGateway, ServerProcess, running_gateway, server_process
from tests.component.tables import EDGE_NODE, ConfigMapMount

UPLINK = 100_000  # bytes/s of the node's uplink
CAMERA = "cam-a"


@pytest.fixture(scope="module")
def edge(standard_root: Path) -> Iterator[ServerProcess]:
    with server_process(standard_root, "edge") as server:
        yield server


def table(edge_url: str) -> RoutingTable:
    local = {"halves": LocalModel((Endpoint(edge_url),), 1.0)}
    routes = EdgeNodeRoutes(local, {CAMERA: 1.0}, uplink_bytes_per_second=UPLINK)
    return RoutingTable(1, {EDGE_NODE: routes}, {})


@pytest.fixture
def gateway(tmp_path: Path, edge: ServerProcess) -> Iterator[RunningGateway]:
    mount = ConfigMapMount(tmp_path / "routing")
    mount.write_table(table(edge.url))
    settings = GatewaySettings(
        edge_node=EDGE_NODE, routing_table=mount.path, poll_interval_s=0.1, uplink_max_wait_s=0.5
    )
    with running_gateway(settings) as running:
        yield running


def request_of(size_bytes: int) -> tuple[bytes, dict[str, str]]:
    """A binary request to the FP16 identity model ``halves`` of about ``size_bytes``."""
    rows = size_bytes // 4
    body, headers = binary_request({"input": ("FP16", np.zeros((rows, 2), dtype=np.float16))})
    return body, {**headers, "X-Edgeaigc-Camera": CAMERA}


def send(gateway: RunningGateway, size_bytes: int) -> tuple[int, float, dict[str, str], int]:
    body, headers = request_of(size_bytes)
    started = time.perf_counter()
    response = gateway.client.post("/v2/models/halves/infer", content=body, headers=headers)
    return response.status_code, time.perf_counter() - started, dict(response.headers), len(body)


def test_within_share_at_once_over_it_paced_far_over_it_429(gateway: RunningGateway) -> None:
    # Sizes chosen so that each outcome holds for up to ~0.4 s between requests: the bucket refills
    # 100 kB/s, and a loaded machine (CI at load 10+) takes tens of ms per request.
    status, _, _, first = send(gateway, 95_000)  # the full bucket holds one second: 100 kB; ~5 kB left
    assert status == 200
    status, _, headers, _ = send(gateway, 100_000)  # ~0.95 s of waiting less the refill, over the 0.5 s allowed
    assert status == 429
    assert headers["retry-after"] == "1" and 1 <= int(headers["x-edgeaigc-retry-after-ms"]) <= 460
    status, elapsed, _, second = send(gateway, 50_000)  # ~45 kB short, less the refill: paced
    assert status == 200 and elapsed >= 0.02
    scrape = gateway.scrape()
    labels = {"camera": CAMERA, "edge_node": EDGE_NODE}
    assert gateway.sample("edgeaigc_gateway_uplink_admissions_total", **labels, outcome="immediate") == 1
    assert gateway.sample("edgeaigc_gateway_uplink_admissions_total", **labels, outcome="refused") == 1
    assert gateway.sample("edgeaigc_gateway_uplink_admissions_total", **labels, outcome="paced") == 1
    assert gateway.sample("edgeaigc_gateway_uplink_accepted_bytes_total", **labels) == first + second
    assert gateway.sample("edgeaigc_gateway_uplink_rate_bytes_per_second", **labels) == UPLINK
    assert 'code="429"' in scrape  # the refusal is a request like any other in the request metrics


def test_shares_can_be_ignored(tmp_path: Path, edge: ServerProcess) -> None:
    mount = ConfigMapMount(tmp_path / "routing")
    mount.write_table(table(edge.url))
    settings = GatewaySettings(
        edge_node=EDGE_NODE, routing_table=mount.path, poll_interval_s=0.1, enforce_uplink_shares=False
    )
    with running_gateway(settings) as gateway:
        assert [send(gateway, 80_000)[0] for _ in range(4)] == [200] * 4
        assert (
            gateway.sample("edgeaigc_gateway_uplink_accepted_bytes_total", camera=CAMERA, edge_node=EDGE_NODE) is None
        )


def test_a_table_without_uplink_enforces_nothing(tmp_path: Path, edge: ServerProcess) -> None:
    mount = ConfigMapMount(tmp_path / "routing")
    plain = table(edge.url)
    node = dataclasses.replace(plain.edge_nodes[EDGE_NODE], uplink_bytes_per_second=None)
    mount.write_table(dataclasses.replace(plain, edge_nodes={EDGE_NODE: node}))
    settings = GatewaySettings(edge_node=EDGE_NODE, routing_table=mount.path, poll_interval_s=0.1)
    with running_gateway(settings) as gateway:
        assert [send(gateway, 80_000)[0] for _ in range(4)] == [200] * 4
