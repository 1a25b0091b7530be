"""The gateway between two real server processes: hits land on the edge replica, misses on the cloud.

The edge and cloud servers are ``edgeaigc serve`` processes (``--served-by edge`` / ``cloud``)
over the same repository; the gateway runs in this process on a real socket. Which server
answered is visible three ways: the gateway's ``X-Edgeaigc-Served-By`` header, the gateway's
``served_by`` label, and each server's own request counter.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from edgeaigc.inference.gateway.gateway import SERVED_BY_HEADER, GatewaySettings
from tests.component.builders import AFFINE_W, binary_request, split_binary_response
from tests.component.conftest import RunningGateway, ServerProcess, running_gateway, sample_value, server_process
from tests.component.tables import EDGE_NODE, ConfigMapMount, routing_table

AFFINE = {"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP32", "data": [1, 0, 0, 0]}]}
PAIR = {
    "inputs": [
        {"name": "x", "shape": [1, 3], "datatype": "INT64", "data": [1, 2, 3]},
        {"name": "y", "shape": [1, 3], "datatype": "INT64", "data": [10, 20, 30]},
    ]
}


@pytest.fixture(scope="module")
def edge(standard_root: Path) -> Iterator[ServerProcess]:
    with server_process(standard_root, "edge") as server:
        yield server


@pytest.fixture(scope="module")
def cloud(standard_root: Path) -> Iterator[ServerProcess]:
    with server_process(standard_root, "cloud") as server:
        yield server


@pytest.fixture
def mount(tmp_path: Path) -> ConfigMapMount:
    return ConfigMapMount(tmp_path / "routing")


@pytest.fixture
def gateway(mount: ConfigMapMount, edge: ServerProcess, cloud: ServerProcess) -> Iterator[RunningGateway]:
    """affine cached on pi-0 (edge replica); affine and pair in the cloud."""
    mount.write_table(routing_table(1, {"affine": [edge.url]}, {"affine": cloud.url, "pair": cloud.url}))
    settings = GatewaySettings(edge_node=EDGE_NODE, routing_table=mount.path, poll_interval_s=0.1)
    with running_gateway(settings) as running:
        yield running


def served(text: str, model: str, served_by: str) -> float:
    return sample_value(text, "edgeaigc_requests_total", model=model, code="200", served_by=served_by) or 0.0


def test_hit_is_served_by_the_edge_replica(gateway: RunningGateway, edge: ServerProcess, cloud: ServerProcess) -> None:
    edge_before, cloud_before = served(edge.scrape(), "affine", "edge"), served(cloud.scrape(), "affine", "cloud")
    for _ in range(5):
        response = gateway.client.post("/v2/models/affine/infer", json=AFFINE, headers={"X-Edgeaigc-Camera": "cam-1"})
        assert response.status_code == 200, response.text
        assert response.headers[SERVED_BY_HEADER] == "edge"
        np.testing.assert_allclose(response.json()["outputs"][0]["data"], AFFINE_W[0] + [0.5, -1.0, 2.0], rtol=1e-6)
    assert served(edge.scrape(), "affine", "edge") == edge_before + 5
    assert served(cloud.scrape(), "affine", "cloud") == cloud_before
    text = gateway.scrape()
    labels = {"model": "affine", "code": "200", "served_by": "edge", "edge_node": EDGE_NODE}
    assert sample_value(text, "edgeaigc_requests_total", **labels) == 5
    body = len(gateway.client.build_request("POST", "/", json=AFFINE).content)
    assert sample_value(text, "edgeaigc_camera_request_bytes_total", camera="cam-1", edge_node=EDGE_NODE) == 5 * body


def test_miss_is_relayed_to_the_cloud(gateway: RunningGateway, edge: ServerProcess, cloud: ServerProcess) -> None:
    edge_before, cloud_before = served(edge.scrape(), "pair", "edge"), served(cloud.scrape(), "pair", "cloud")
    for _ in range(3):
        response = gateway.client.post("/v2/models/pair/infer", json=PAIR, params={"camera": "cam-2"})
        assert response.status_code == 200, response.text
        assert response.headers[SERVED_BY_HEADER] == "cloud"
        assert response.json()["outputs"][0]["data"] == [11, 22, 33]
    assert served(edge.scrape(), "pair", "edge") == edge_before
    assert served(cloud.scrape(), "pair", "cloud") == cloud_before + 3
    text = gateway.scrape()
    labels = {"model": "pair", "served_by": "cloud", "edge_node": EDGE_NODE}
    body = len(gateway.client.build_request("POST", "/", json=PAIR).content)
    assert sample_value(text, "edgeaigc_requests_total", code="200", **labels) == 3
    assert sample_value(text, "edgeaigc_request_duration_seconds_count", served_by="cloud", edge_node=EDGE_NODE) == 3
    assert sample_value(text, "edgeaigc_request_bytes_total", served_by="cloud", edge_node=EDGE_NODE) == 3 * body
    assert sample_value(text, "edgeaigc_camera_request_bytes_total", camera="cam-2", edge_node=EDGE_NODE) == 3 * body


def test_binary_bodies_pass_through_unchanged(gateway: RunningGateway, edge: ServerProcess) -> None:
    x = np.arange(8, dtype=np.float32).reshape(2, 4)
    body, headers = binary_request({"x": ("FP32", x)}, {"parameters": {"binary_data_output": True}})
    direct = gateway.client.post(f"{edge.url}/v2/models/affine/infer", content=body, headers=headers)
    relayed = gateway.client.post("/v2/models/affine/infer", content=body, headers=headers)
    assert relayed.status_code == 200, relayed.text
    assert relayed.content == direct.content
    length = relayed.headers["inference-header-content-length"]
    document, [blob] = split_binary_response(relayed.content, int(length))
    assert document["outputs"][0]["shape"] == [2, 3]
    np.testing.assert_allclose(np.frombuffer(blob, "<f4").reshape(2, 3), x @ AFFINE_W + [0.5, -1.0, 2.0], rtol=1e-6)
    text = gateway.scrape()
    labels = {"model": "affine", "served_by": "edge", "edge_node": EDGE_NODE}
    assert sample_value(text, "edgeaigc_request_bytes_total", served_by="edge", edge_node=EDGE_NODE) == len(body)
    sent_back = len(relayed.content)
    assert sample_value(text, "edgeaigc_response_bytes_total", served_by="edge", edge_node=EDGE_NODE) == sent_back
    assert sample_value(text, "edgeaigc_requests_total", code="200", **labels) == 1
    assert sample_value(text, "edgeaigc_camera_request_bytes_total", camera="unknown", edge_node=EDGE_NODE) == len(body)


def test_metadata_and_readiness_are_forwarded(gateway: RunningGateway) -> None:
    metadata = gateway.client.get("/v2/models/affine")
    assert metadata.status_code == 200
    assert metadata.headers[SERVED_BY_HEADER] == "edge"
    assert metadata.json()["inputs"] == [{"name": "x", "datatype": "FP32", "shape": [-1, 4]}]
    ready = gateway.client.get("/v2/models/pair/ready")
    assert (ready.status_code, ready.headers[SERVED_BY_HEADER]) == (200, "cloud")
    assert gateway.client.get("/v2/health/ready").json() == {"ready": True, "generation": 1}


def wait_for_generation(gateway: RunningGateway, generation: int, timeout_s: float = 5.0) -> None:
    deadline = time.monotonic() + timeout_s
    while gateway.sample("edgeaigc_gateway_routing_table_generation", edge_node=EDGE_NODE) != generation:
        assert time.monotonic() < deadline, f"generation {generation} not picked up within {timeout_s} s"
        time.sleep(0.05)


def test_a_changed_table_is_picked_up_without_restart(
    gateway: RunningGateway, mount: ConfigMapMount, edge: ServerProcess, cloud: ServerProcess
) -> None:
    assert gateway.client.post("/v2/models/affine/infer", json=AFFINE).headers[SERVED_BY_HEADER] == "edge"
    # The operator evicts affine from pi-0 and caches pair there instead.
    mount.write_table(routing_table(2, {"pair": [edge.url]}, {"affine": cloud.url, "pair": cloud.url}))
    wait_for_generation(gateway, 2)
    assert gateway.client.post("/v2/models/affine/infer", json=AFFINE).headers[SERVED_BY_HEADER] == "cloud"
    assert gateway.client.post("/v2/models/pair/infer", json=PAIR).headers[SERVED_BY_HEADER] == "edge"
    assert gateway.sample("edgeaigc_gateway_routing_table_loads_total", edge_node=EDGE_NODE) == 2
    # The model leaves the table altogether: 404 from the gateway, not from a server.
    mount.write_table(routing_table(3, {}, {"pair": cloud.url}))
    wait_for_generation(gateway, 3)
    response = gateway.client.post("/v2/models/affine/infer", json=AFFINE)
    assert response.status_code == 404
    assert response.json() == {
        "error": "model 'affine' is not routed: not cached on edge node 'pi-0' and no cloud route in the routing table"
    }


def test_an_invalid_table_is_ignored_and_counted(
    gateway: RunningGateway, mount: ConfigMapMount, edge: ServerProcess, cloud: ServerProcess
) -> None:
    def errors(reason: str) -> float | None:
        return gateway.sample("edgeaigc_gateway_routing_table_errors_total", edge_node=EDGE_NODE, reason=reason)

    assert errors("invalid") == 0
    mount.write('{"apiVersion": "edgeaigc.io/v1alpha1", "kind": "RoutingTable", "generation": -4}')
    deadline = time.monotonic() + 5
    while errors("invalid") != 1:
        assert time.monotonic() < deadline, "the invalid table was not noticed within 5 s"
        time.sleep(0.05)
    mount.write("{ not json")
    while errors("invalid") != 2:
        assert time.monotonic() < deadline, "the second invalid table was not noticed"
        time.sleep(0.05)
    # Hostile JSON was only logged, not counted (issue 12, item 5): nested 100,000 deep, a 5,000-digit number.
    for count, hostile in enumerate(("[" * 100_000 + "]" * 100_000, '{"generation": ' + "9" * 5000 + "}"), 3):
        mount.write(hostile)
        while errors("invalid") != count:
            assert time.monotonic() < deadline, f"hostile table {count} was not counted"
            time.sleep(0.05)
    # The last valid table (generation 1) is still routing.
    assert gateway.sample("edgeaigc_gateway_routing_table_generation", edge_node=EDGE_NODE) == 1
    response = gateway.client.post("/v2/models/affine/infer", json=AFFINE)
    assert (response.status_code, response.headers[SERVED_BY_HEADER]) == (200, "edge")
    # A valid table afterwards is taken as usual.
    mount.write_table(routing_table(5, {}, {"affine": cloud.url}))
    wait_for_generation(gateway, 5)
    assert gateway.client.post("/v2/models/affine/infer", json=AFFINE).headers[SERVED_BY_HEADER] == "cloud"
    assert errors("invalid") == 4
    assert errors("unreadable") == 0


@pytest.mark.parametrize(
    "hostile", ["[" * 100_000 + "]" * 100_000, '{"generation": ' + "9" * 5000 + "}"], ids=["nested", "digits"]
)
def test_a_hostile_table_at_start_up_is_not_fatal(tmp_path: Path, hostile: str) -> None:
    """The gateway exited at start-up on these; now it waits, not ready, for a valid table."""
    table = tmp_path / "routing.json"
    table.write_text(hostile)
    settings = GatewaySettings(edge_node=EDGE_NODE, routing_table=table)
    with running_gateway(settings, wait_for_table=False) as gateway:
        assert gateway.client.get("/v2/health/ready").status_code == 503
        assert gateway.sample("edgeaigc_gateway_routing_table_errors_total", edge_node=EDGE_NODE, reason="invalid") == 1


def test_requests_spread_over_weighted_replicas(
    mount: ConfigMapMount, edge: ServerProcess, cloud: ServerProcess
) -> None:
    # Two names of the same edge server are two endpoints to the gateway; the order of picks
    # itself (3:1 interleaved) is a unit test of SmoothWeightedRoundRobin.
    localhost = edge.url.replace("127.0.0.1", "localhost")
    mount.write_table(routing_table(1, {"affine": [(edge.url, 3.0), (localhost, 1.0)]}, {"affine": cloud.url}))
    settings = GatewaySettings(edge_node=EDGE_NODE, routing_table=mount.path)
    with running_gateway(settings) as gateway:
        for _ in range(8):
            response = gateway.client.post("/v2/models/affine/infer", json=AFFINE)
            assert (response.status_code, response.headers[SERVED_BY_HEADER]) == (200, "edge")
        text = gateway.scrape()
    assert sample_value(text, "edgeaigc_gateway_upstream_retries_total", model="affine", edge_node=EDGE_NODE) is None


def test_a_gateway_known_by_its_node_finds_its_edge_node(
    mount: ConfigMapMount, edge: ServerProcess, cloud: ServerProcess
) -> None:
    """A DaemonSet pod knows its Kubernetes node, not the EdgeNode's name (kind: pi-0 on edgeaigc-worker)."""
    table = routing_table(1, {"affine": [edge.url]}, {"affine": cloud.url})
    table.edge_nodes[EDGE_NODE] = dataclasses.replace(table.edge_nodes[EDGE_NODE], node_name="edgeaigc-worker")
    mount.write_table(table)
    settings = GatewaySettings(edge_node="", node_name="edgeaigc-worker", routing_table=mount.path, poll_interval_s=0.1)
    with running_gateway(settings) as running:
        response = running.client.post("/v2/models/affine/infer", json=AFFINE, headers={"X-Edgeaigc-Camera": "cam-1"})
        assert response.status_code == 200, response.text
        assert response.headers[SERVED_BY_HEADER] == "edge"
        labels = {"model": "affine", "code": "200", "served_by": "edge"}
        assert running.sample("edgeaigc_requests_total", edge_node=EDGE_NODE, **labels) == 1
        assert running.sample("edgeaigc_camera_request_bytes_total", edge_node=EDGE_NODE, camera="cam-1")
        assert running.client.get("/v2").json()["edge_node"] == EDGE_NODE


def test_a_node_without_an_edge_node_relays_everything(
    mount: ConfigMapMount, edge: ServerProcess, cloud: ServerProcess
) -> None:
    mount.write_table(routing_table(1, {"affine": [edge.url]}, {"affine": cloud.url}))
    settings = GatewaySettings(edge_node="", node_name="cloud-0", routing_table=mount.path, poll_interval_s=0.1)
    with running_gateway(settings) as running:
        response = running.client.post("/v2/models/affine/infer", json=AFFINE)
        assert response.status_code == 200, response.text
        assert response.headers[SERVED_BY_HEADER] == "cloud"
