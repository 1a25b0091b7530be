"""The gateway's bad-input answers (exact codes and bodies) and its metrics (names, labels, promtool)."""

from __future__ import annotations

import re
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from edgeaigc.inference.gateway.gateway import GatewaySettings
from edgeaigc.inference.gateway.metrics import GATEWAY_METRIC_NAMES
from edgeaigc.inference.metrics_contract import GATEWAY_REQUEST_METRIC_LABELS, UNKNOWN_MODEL
from tests.component.builders import affine_model
from tests.component.conftest import RunningGateway, RunningServer, running_gateway, running_server, sample_value
from tests.component.tables import EDGE_NODE, ConfigMapMount, routing_table

CONTRACT = Path(__file__).resolve().parents[2] / "docs" / "metrics-contract.md"
#: Rows of the gateway's own table: ``| type | `name` | labels | ...``.
GATEWAY_ROW = re.compile(r"^\| (\w+) \| `(edgeaigc_gateway_\w+)` \|([^|]*)\|")
AFFINE = {"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP32", "data": [1, 0, 0, 0]}]}


@pytest.fixture(scope="module")
def cloud(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    root = tmp_path_factory.mktemp("contract-models")
    affine_model(root / "affine" / "model.onnx")
    with running_server(root, served_by="cloud") as server:
        yield server


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory, cloud: RunningServer) -> Iterator[RunningGateway]:
    mount = ConfigMapMount(tmp_path_factory.mktemp("contract-routing"))
    mount.write_table(routing_table(7, {}, {"affine": cloud.url}, cameras=["cam-listed"]))
    settings = GatewaySettings(EDGE_NODE, mount.path, max_request_bytes=1024, max_cameras=2)
    with running_gateway(settings) as running:
        yield running


def test_unrouted_model_is_404(gateway: RunningGateway) -> None:
    response = gateway.client.post("/v2/models/nobody/infer", json=AFFINE)
    assert response.status_code == 404
    assert response.json() == {
        "error": "model 'nobody' is not routed: not cached on edge node 'pi-0' and no cloud route in the routing table"
    }
    assert gateway.client.get("/v2/models/nobody").status_code == 404


@pytest.mark.parametrize("camera", ["", "-starts-with-dash", "has space", "x" * 64, "ünï", "cam9\n"])
def test_malformed_camera_name_is_400(gateway: RunningGateway, camera: str) -> None:
    response = gateway.client.post("/v2/models/affine/infer", json=AFFINE, params={"camera": camera or "/"})
    assert response.status_code == 400
    assert response.json()["error"].endswith(
        "(header X-Edgeaigc-Camera or query parameter 'camera') must be 1-63 letters, digits, '.', '_' or '-', "
        "starting with a letter or digit"
    )


def test_body_over_the_limit_is_413_declared_or_streamed(gateway: RunningGateway) -> None:
    response = gateway.client.post("/v2/models/affine/infer", content=b" " * 2000)
    assert response.status_code == 413
    assert response.json() == {"error": "request body of 2000 bytes exceeds the limit of 1024 bytes"}

    def chunks() -> Iterator[bytes]:
        for _ in range(5):
            yield b" " * 300

    streamed = gateway.client.post("/v2/models/affine/infer", content=chunks())
    assert streamed.status_code == 413
    assert streamed.json() == {"error": "request body exceeds the limit of 1024 bytes"}


def test_malformed_body_is_the_servers_400_passed_through(gateway: RunningGateway) -> None:
    response = gateway.client.post("/v2/models/affine/infer", content=b"{not json")
    assert response.status_code == 400
    assert response.json()["error"].startswith("malformed JSON: ")


def test_unknown_routes_and_methods(gateway: RunningGateway) -> None:
    assert gateway.client.get("/v2/nothing/here").json() == {"error": "Not Found"}
    response = gateway.client.get("/v2/models/affine/infer")
    assert response.status_code == 405
    assert response.json() == {"error": "Method Not Allowed"}


def test_cameras_past_the_limit_have_their_bytes_counted_as_other(gateway: RunningGateway) -> None:
    labels = {"edge_node": EDGE_NODE}
    served = {"model": "affine", "code": "200", "served_by": "cloud", **labels}
    before = gateway.sample("edgeaigc_requests_total", **served) or 0
    for camera in ("cam-a", "cam-b", "cam-c", "cam-listed"):
        assert gateway.client.post("/v2/models/affine/infer", json=AFFINE, params={"camera": camera}).status_code == 200
    text = gateway.scrape()
    sent = sample_value(text, "edgeaigc_camera_request_bytes_total", camera="cam-a", **labels)
    assert sent is not None and sent > 0
    assert sample_value(text, "edgeaigc_camera_request_bytes_total", camera="cam-a", **labels) == sent
    assert sample_value(text, "edgeaigc_camera_request_bytes_total", camera="cam-b", **labels) == sent
    assert sample_value(text, "edgeaigc_camera_request_bytes_total", camera="cam-c", **labels) is None
    assert sample_value(text, "edgeaigc_camera_request_bytes_total", camera="_other", **labels) == sent
    # Cameras named in the routing table always keep their name.
    assert sample_value(text, "edgeaigc_camera_request_bytes_total", camera="cam-listed", **labels) == sent
    # The request counter has no camera label: one series per (model, code, place) of the node.
    assert sample_value(text, "edgeaigc_requests_total", **served) == before + 4


def test_no_routing_table_yet_is_503_until_one_appears(tmp_path: Path, cloud: RunningServer) -> None:
    mount = ConfigMapMount(tmp_path / "routing")
    settings = GatewaySettings(EDGE_NODE, mount.path, poll_interval_s=0.05)
    with running_gateway(settings, wait_for_table=False) as gateway:
        ready = gateway.client.get("/v2/health/ready")
        assert ready.status_code == 503
        assert ready.json()["error"].startswith("no valid routing table has been read yet from ")
        response = gateway.client.post("/v2/models/affine/infer", json=AFFINE)
        assert response.status_code == 503
        assert f"from {mount.path}" in response.json()["error"]
        assert gateway.sample("edgeaigc_gateway_routing_table_errors_total", edge_node=EDGE_NODE, reason="unreadable")
        assert gateway.sample("edgeaigc_gateway_routing_table_generation", edge_node=EDGE_NODE) is None
        mount.write_table(routing_table(1, {}, {"affine": cloud.url}))
        deadline = time.monotonic() + 5
        while gateway.client.get("/v2/health/ready").status_code != 200:
            assert time.monotonic() < deadline, "the new routing table was not picked up within 5 s"
            time.sleep(0.05)
        assert gateway.client.post("/v2/models/affine/infer", json=AFFINE).status_code == 200


def test_scrape_has_the_contract_names_and_labels(gateway: RunningGateway) -> None:
    unknown = {"model": UNKNOWN_MODEL, "code": "404", "served_by": "edge", "edge_node": EDGE_NODE}
    before = gateway.sample("edgeaigc_requests_total", **unknown) or 0
    gateway.client.post("/v2/models/affine/infer", json=AFFINE)
    gateway.client.post("/v2/models/nobody/infer", json=AFFINE)
    families = {family.name: family for family in text_string_to_metric_families(gateway.scrape())}
    for name, labels in GATEWAY_REQUEST_METRIC_LABELS.items():
        family = families[name.removesuffix("_total")]
        assert family.samples, name
        for sample in family.samples:
            assert set(sample.labels) - {"le"} == set(labels), (name, sample)
    for name in GATEWAY_METRIC_NAMES:
        assert name.removesuffix("_total") in families, name
    text = gateway.scrape()
    assert sample_value(text, "edgeaigc_requests_total", **unknown) == before + 1
    assert sample_value(text, "edgeaigc_requests_total", model="nobody", code="404", served_by="edge") is None
    assert sample_value(text, "edgeaigc_gateway_routing_table_generation", edge_node=EDGE_NODE) == 7
    assert sample_value(text, "edgeaigc_requests_in_flight", served_by="cloud", edge_node=EDGE_NODE) == 0
    assert sample_value(text, "edgeaigc_requests_in_flight", served_by="edge", edge_node=EDGE_NODE) == 0


@pytest.mark.skipif(
    shutil.which("promtool") is None, reason="promtool not installed (Debian: apt-get install prometheus)"
)
def test_promtool_check_metrics_passes(gateway: RunningGateway) -> None:
    gateway.client.post("/v2/models/affine/infer", json=AFFINE, params={"camera": "cam-a"})
    scrape = gateway.scrape()
    result = subprocess.run(
        ["promtool", "check", "metrics"], input=scrape, capture_output=True, text=True, timeout=30, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip() == "" and result.stderr.strip() == "", result.stdout + result.stderr


def test_contract_document_lists_the_gateway_metrics_of_the_code(gateway: RunningGateway) -> None:
    rows = {}
    for line in CONTRACT.read_text().splitlines():
        match = GATEWAY_ROW.match(line)
        if match:
            kind, name, labels = match.groups()
            rows[name] = (kind, set(re.findall(r"`(\w+)`", labels)))
    assert set(rows) == set(GATEWAY_METRIC_NAMES)
    gateway.client.post("/v2/models/affine/infer", json=AFFINE)
    families = {family.name: family for family in text_string_to_metric_families(gateway.scrape())}
    for name, (kind, labels) in rows.items():
        family = families[name.removesuffix("_total") if kind == "counter" else name]
        assert family.type == kind, name
        for sample in family.samples:
            assert set(sample.labels) == labels, (name, sample)
