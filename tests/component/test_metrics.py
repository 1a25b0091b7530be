"""The metrics contract: names, types and labels as documented, exact counts, and promtool's approval."""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from edgeaigc.inference.metrics_contract import REQUEST_METRIC_NAMES, UNKNOWN_MODEL
from edgeaigc.inference.server.metrics import SERVER_METRIC_NAMES
from tests.component.conftest import RunningServer, running_server, sample_value

CONTRACT = Path(__file__).resolve().parents[2] / "docs" / "metrics-contract.md"
ROW = re.compile(r"^\| `(edgeaigc_\w+)` \| (\w+) \|([^|]*)\|")
GOOD = {"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP32", "data": [1, 2, 3, 4]}]}


def contract_rows() -> dict[str, tuple[str, set[str]]]:
    """name -> (type, labels) from the tables of docs/metrics-contract.md."""
    rows = {}
    for line in CONTRACT.read_text().splitlines():
        match = ROW.match(line)
        if match:
            name, kind, labels = match.groups()
            rows[name] = (kind, set(re.findall(r"`(\w+)`", labels)))
    return rows


@pytest.fixture(scope="module")
def cloud_server(standard_root: Path) -> Iterator[RunningServer]:
    """A fresh server (exact counts) labelled as served by the cloud, with a budget (budget gauge)."""
    with running_server(standard_root, served_by="cloud", max_request_bytes=4096, memory_budget_bytes=2**30) as server:
        yield server


@pytest.fixture(scope="module")
def traffic(cloud_server: RunningServer) -> dict[str, int]:
    """Requests with known outcomes and sizes; returns the bytes sent and received for 'affine'."""
    client = cloud_server.client
    sent = received = 0
    for body in (GOOD, GOOD, {"inputs": [{"name": "x", "shape": [1, 3], "datatype": "FP32", "data": [1, 2, 3]}]}):
        response = client.post("/v2/models/affine/infer", json=body)
        sent += len(response.request.content)
        received += len(response.content)
    too_large = client.post("/v2/models/affine/infer", content=b" " * 5000)
    assert too_large.status_code == 413
    received += len(too_large.content)  # refused from Content-Length: no body byte was read
    assert client.post("/v2/models/nobody/infer", json=GOOD).status_code == 404
    return {"sent": sent, "received": received}


def test_contract_document_lists_exactly_the_metrics_of_the_code() -> None:
    assert set(contract_rows()) == set(REQUEST_METRIC_NAMES) | set(SERVER_METRIC_NAMES)


def test_scrape_matches_the_contract_names_types_and_labels(
    cloud_server: RunningServer, traffic: dict[str, int]
) -> None:
    families = {family.name: family for family in text_string_to_metric_families(cloud_server.metrics_text())}
    for name, (kind, labels) in contract_rows().items():
        family_name = name.removesuffix("_total") if kind == "counter" else name
        assert family_name in families, f"{name} missing from the scrape"
        family = families[family_name]
        assert family.type == kind, name
        assert family.samples, f"{name} has no samples"
        for sample in family.samples:
            assert set(sample.labels) - {"le"} == labels, (name, sample)


def test_request_counts_and_bytes_are_exact(cloud_server: RunningServer, traffic: dict[str, int]) -> None:
    text = cloud_server.metrics_text()
    assert sample_value(text, "edgeaigc_requests_total", model="affine", code="200", served_by="cloud") == 2
    assert sample_value(text, "edgeaigc_requests_total", model="affine", code="400", served_by="cloud") == 1
    assert sample_value(text, "edgeaigc_requests_total", model="affine", code="413", served_by="cloud") == 1
    assert sample_value(text, "edgeaigc_requests_total", model=UNKNOWN_MODEL, code="404", served_by="cloud") == 1
    assert sample_value(text, "edgeaigc_requests_total", model="nobody", code="404", served_by="cloud") is None
    assert sample_value(text, "edgeaigc_request_duration_seconds_count", model="affine", served_by="cloud") == 4
    assert sample_value(text, "edgeaigc_request_bytes_total", model="affine", served_by="cloud") == traffic["sent"]
    assert sample_value(text, "edgeaigc_response_bytes_total", model="affine", served_by="cloud") == traffic["received"]
    assert sample_value(text, "edgeaigc_requests_in_flight", served_by="cloud") == 0
    assert sample_value(text, "edgeaigc_inference_duration_seconds_count", model="affine") == 2  # only valid ones run
    assert sample_value(text, "edgeaigc_inference_batch_requests_sum", model="affine") == 2
    assert sample_value(text, "edgeaigc_models_loaded") == 6
    assert sample_value(text, "edgeaigc_requests_total", model="affine", code="200", served_by="edge") is None


@pytest.mark.skipif(
    shutil.which("promtool") is None,
    reason="promtool not installed (Debian: apt-get install prometheus); the metrics lint is not checked",
)
def test_promtool_check_metrics_passes_on_a_real_scrape(cloud_server: RunningServer, traffic: dict[str, int]) -> None:
    scrape = cloud_server.metrics_text()
    assert "edgeaigc_requests_total" in scrape
    result = subprocess.run(
        ["promtool", "check", "metrics"], input=scrape, capture_output=True, text=True, timeout=30, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip() == "" and result.stderr.strip() == "", result.stdout + result.stderr


@pytest.mark.skipif(
    shutil.which("promtool") is None, reason="promtool not installed (Debian: apt-get install prometheus)"
)
def test_promtool_would_catch_a_broken_metric() -> None:
    # The check above can fail: promtool flags a counter without the _total suffix.
    bad = "# HELP edgeaigc_requests Requests.\n# TYPE edgeaigc_requests counter\nedgeaigc_requests 1\n"
    result = subprocess.run(
        ["promtool", "check", "metrics"], input=bad, capture_output=True, text=True, timeout=30, check=False
    )
    assert result.returncode != 0
    assert "_total" in result.stdout + result.stderr
