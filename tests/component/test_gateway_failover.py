"""Failures between the gateway and its upstreams: retries, cloud fallback, circuit breaker, 502/503/504.

Upstreams are real: ``edgeaigc serve`` processes (killed mid-run where the test says so),
ports where nothing listens (connection refused), and a socket that accepts connections but
never answers (timeouts).
"""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from edgeaigc.inference.gateway.gateway import SERVED_BY_HEADER, GatewaySettings
from tests.component.builders import affine_model
from tests.component.conftest import (
    RunningGateway,
    ServerProcess,
    free_port,
    running_gateway,
    sample_value,
    server_process,
)
from tests.component.tables import EDGE_NODE, ConfigMapMount, routing_table

AFFINE = {"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP32", "data": [1, 0, 0, 0]}]}


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("failover-models")
    affine_model(root / "affine" / "model.onnx")
    return root


@pytest.fixture(scope="module")
def cloud(models: Path) -> Iterator[ServerProcess]:
    with server_process(models, "cloud") as server:
        yield server


@pytest.fixture
def mount(tmp_path: Path) -> ConfigMapMount:
    return ConfigMapMount(tmp_path / "routing")


@pytest.fixture
def silent_upstream() -> Iterator[str]:
    """A listening socket that never accepts: connections complete (backlog), answers never come."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(16)
        yield f"http://127.0.0.1:{listener.getsockname()[1]}"


def dead_url() -> str:
    return f"http://127.0.0.1:{free_port()}"  # nothing listens: connection refused


def counts(gateway: RunningGateway, served_by: str, code: str = "200") -> float:
    labels = {"model": "affine", "edge_node": EDGE_NODE}
    return sample_value(gateway.scrape(), "edgeaigc_requests_total", code=code, served_by=served_by, **labels) or 0.0


def breaker(gateway: RunningGateway, url: str) -> tuple[float | None, float | None]:
    text = gateway.scrape()
    labels = {"edge_node": EDGE_NODE, "endpoint": url}
    return (
        sample_value(text, "edgeaigc_gateway_circuit_breaker_state", **labels),
        sample_value(text, "edgeaigc_gateway_circuit_breaker_opens_total", **labels),
    )


def test_edge_replica_killed_mid_run_fails_over_to_the_cloud(
    models: Path, cloud: ServerProcess, mount: ConfigMapMount
) -> None:
    with server_process(models, "edge") as edge:
        mount.write_table(routing_table(1, {"affine": [edge.url]}, {"affine": cloud.url}))
        settings = GatewaySettings(EDGE_NODE, mount.path, breaker_failures=3, breaker_open_s=60.0)
        with running_gateway(settings) as gateway:
            places = []
            for i in range(30):
                if i == 10:
                    edge.kill()
                response = gateway.client.post("/v2/models/affine/infer", json=AFFINE)
                assert response.status_code == 200, response.text
                places.append(response.headers[SERVED_BY_HEADER])
            assert places == ["edge"] * 10 + ["cloud"] * 20
            assert counts(gateway, "edge") == 10
            assert counts(gateway, "cloud") == 20
            text = gateway.scrape()
            # Three failed attempts opened the breaker; the 17 requests after it went straight to the cloud.
            failures = sum(
                sample_value(text, "edgeaigc_gateway_upstream_failures_total", **labels) or 0
                for labels in (
                    {"model": "affine", "served_by": "edge", "reason": reason, "edge_node": EDGE_NODE}
                    for reason in ("connect", "transport", "timeout", "http_5xx")
                )
            )
            assert failures == 3
            assert (
                sample_value(text, "edgeaigc_gateway_upstream_retries_total", model="affine", edge_node=EDGE_NODE) == 3
            )
            assert breaker(gateway, edge.url) == (1.0, 1.0)


def test_breaker_probes_after_the_open_period_and_closes_when_the_replica_is_back(
    models: Path, cloud: ServerProcess, mount: ConfigMapMount
) -> None:
    port = free_port()
    with server_process(models, "edge", port=port) as edge:
        mount.write_table(routing_table(1, {"affine": [edge.url]}, {"affine": cloud.url}))
        settings = GatewaySettings(EDGE_NODE, mount.path, breaker_failures=2, breaker_open_s=0.5)
        with running_gateway(settings) as gateway:
            edge.kill()
            for _ in range(3):
                assert gateway.client.post("/v2/models/affine/infer", json=AFFINE).headers[SERVED_BY_HEADER] == "cloud"
            assert breaker(gateway, edge.url) == (1.0, 1.0)
            time.sleep(0.6)
            # Half-open: one probe goes to the (still dead) replica, fails, and the breaker opens again.
            assert gateway.client.post("/v2/models/affine/infer", json=AFFINE).headers[SERVED_BY_HEADER] == "cloud"
            assert breaker(gateway, edge.url) == (1.0, 2.0)
            with server_process(models, "edge", port=port):
                time.sleep(0.6)
                response = gateway.client.post("/v2/models/affine/infer", json=AFFINE)
                assert (response.status_code, response.headers[SERVED_BY_HEADER]) == (200, "edge")
                assert breaker(gateway, edge.url) == (0.0, 2.0)


def test_a_failed_replica_is_retried_on_another_local_replica(
    models: Path, cloud: ServerProcess, mount: ConfigMapMount
) -> None:
    dead = dead_url()
    with server_process(models, "edge") as edge:
        # The dead replica has the larger weight, so it is picked first most of the time.
        mount.write_table(routing_table(1, {"affine": [(dead, 5.0), (edge.url, 1.0)]}, {"affine": cloud.url}))
        with running_gateway(GatewaySettings(EDGE_NODE, mount.path, breaker_failures=3)) as gateway:
            for _ in range(6):
                response = gateway.client.post("/v2/models/affine/infer", json=AFFINE)
                assert (response.status_code, response.headers[SERVED_BY_HEADER]) == (200, "edge")
            assert counts(gateway, "edge") == 6
            assert breaker(gateway, dead) == (1.0, 1.0)
            assert breaker(gateway, edge.url) == (0.0, 0.0)


def test_a_5xx_answer_is_a_failure_and_goes_to_the_cloud(
    models: Path, cloud: ServerProcess, mount: ConfigMapMount
) -> None:
    with server_process(models, "edge", "--no-preload") as edge:  # affine known but not loaded: 503
        mount.write_table(routing_table(1, {"affine": [edge.url]}, {"affine": cloud.url}))
        with running_gateway(GatewaySettings(EDGE_NODE, mount.path)) as gateway:
            response = gateway.client.post("/v2/models/affine/infer", json=AFFINE)
            assert (response.status_code, response.headers[SERVED_BY_HEADER]) == (200, "cloud")
            labels = {"model": "affine", "served_by": "edge", "reason": "http_5xx", "edge_node": EDGE_NODE}
            assert gateway.sample("edgeaigc_gateway_upstream_failures_total", **labels) == 1


def test_client_errors_of_the_replica_pass_through_and_do_not_trip_the_breaker(
    models: Path, cloud: ServerProcess, mount: ConfigMapMount
) -> None:
    with server_process(models, "edge") as edge:
        mount.write_table(routing_table(1, {"affine": [edge.url]}, {"affine": cloud.url}))
        with running_gateway(GatewaySettings(EDGE_NODE, mount.path, breaker_failures=1)) as gateway:
            bad = {"inputs": [{"name": "x", "shape": [1, 3], "datatype": "FP32", "data": [1, 2, 3]}]}
            for _ in range(3):
                response = gateway.client.post("/v2/models/affine/infer", json=bad)
                assert response.status_code == 400
                assert response.headers[SERVED_BY_HEADER] == "edge"
                assert response.json()["error"] == (
                    "input 'x' of model 'affine' expects datatype FP32 and shape [-1, 4]; "
                    "got datatype FP32 and shape [1, 3]"
                )
            assert counts(gateway, "edge", "400") == 3
            assert breaker(gateway, edge.url) == (0.0, 0.0)


def test_every_upstream_refusing_is_502_with_what_each_said(mount: ConfigMapMount) -> None:
    local, cloud = dead_url(), dead_url()
    mount.write_table(routing_table(1, {"affine": [local]}, {"affine": cloud}))
    with running_gateway(GatewaySettings(EDGE_NODE, mount.path)) as gateway:
        response = gateway.client.post("/v2/models/affine/infer", json=AFFINE)
        assert (response.status_code, response.headers[SERVED_BY_HEADER]) == (502, "cloud")
        message = response.json()["error"]
        assert message.startswith("every upstream for model 'affine' failed: ")
        assert f"edge {local}: cannot connect" in message and f"cloud {cloud}: cannot connect" in message
        assert counts(gateway, "cloud", "502") == 1


def test_every_upstream_timing_out_is_504(mount: ConfigMapMount, silent_upstream: str) -> None:
    mount.write_table(routing_table(1, {"affine": [silent_upstream]}, {"affine": silent_upstream + "/"}))
    with running_gateway(GatewaySettings(EDGE_NODE, mount.path, timeout_s=0.3)) as gateway:
        started = time.monotonic()
        response = gateway.client.post("/v2/models/affine/infer", json=AFFINE)
        assert time.monotonic() - started < 5
        assert response.status_code == 504
        assert response.json()["error"] == (
            f"every upstream for model 'affine' timed out: edge {silent_upstream}: no answer within 0.3 s; "
            f"cloud {silent_upstream}/: no answer within 0.3 s"
        )
        labels = {"model": "affine", "served_by": "cloud", "reason": "timeout", "edge_node": EDGE_NODE}
        assert gateway.sample("edgeaigc_gateway_upstream_failures_total", **labels) == 1


def test_a_hung_local_replica_costs_a_request_the_local_timeout_not_the_timeout(
    mount: ConfigMapMount, silent_upstream: str, cloud: ServerProcess
) -> None:
    """A hung replica accepts connections and never answers: each request waited the full 10 s before the
    breaker opened (issue 12, item 5); ``--local-timeout`` bounds that wait."""
    mount.write_table(routing_table(1, {"affine": [silent_upstream]}, {"affine": cloud.url}))
    settings = GatewaySettings(EDGE_NODE, mount.path, timeout_s=10.0, local_timeout_s=0.3)
    with running_gateway(settings) as gateway:
        started = time.monotonic()
        response = gateway.client.post("/v2/models/affine/infer", json=AFFINE)
        assert time.monotonic() - started < 3
        assert (response.status_code, response.headers[SERVED_BY_HEADER]) == (200, "cloud")
        labels = {"model": "affine", "served_by": "edge", "reason": "timeout", "edge_node": EDGE_NODE}
        assert gateway.sample("edgeaigc_gateway_upstream_failures_total", **labels) == 1


def test_open_breakers_and_no_cloud_route_is_503(mount: ConfigMapMount) -> None:
    local = dead_url()
    mount.write_table(routing_table(1, {"affine": [local]}, {}))
    with running_gateway(GatewaySettings(EDGE_NODE, mount.path, breaker_failures=2, breaker_open_s=60)) as gateway:
        for _ in range(2):
            assert gateway.client.post("/v2/models/affine/infer", json=AFFINE).status_code == 502
        response = gateway.client.post("/v2/models/affine/infer", json=AFFINE)
        assert response.status_code == 503
        assert response.json()["error"] == (
            "model 'affine' has no upstream to try: the circuit breakers of its local replicas on 'pi-0' are open "
            "(or their weights are 0) and it has no cloud route"
        )
