"""Prometheus in the local cluster, and the traffic twin against the traffic-city CRs end to end.

The twin runs in this process (one slot per 1-s tick) so the test can compare what Prometheus
reads with the twin's own per-slot counts; Prometheus scrapes every second (conftest).
"""

from __future__ import annotations

import json
import threading
import time
import urllib.request
from collections import defaultdict
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import pytest
import yaml
from prometheus_client import CollectorRegistry, Gauge, start_http_server

from edgeaigc.cluster import prometheus as prom
from edgeaigc.cluster.local import ClusterState
from edgeaigc.cluster.twin.fleet_source import KubernetesSource, api_client
from edgeaigc.cluster.twin.metrics_server import serve_metrics
from edgeaigc.cluster.twin.registration import JOB
from edgeaigc.cluster.twin.slots import ServedSlot
from edgeaigc.cluster.twin.twin import Twin
from edgeaigc.operator import constants as c
from edgeaigc.operator.builders import build_edge_deployment
from edgeaigc.operator.observe import camera_bytes_query, requests_query
from tests.e2e.conftest import REPO, Kubectl

NAMESPACE = "traffic-city"
#: Window of the operator's rate query in the test, seconds (20 scrapes, 20 ticks).
WINDOW_S = 20
EDGE_NODE = "pi-0"


def _prometheus(cluster: ClusterState) -> str:
    if cluster.prometheus_url is None:
        pytest.skip("the local cluster runs without Prometheus (apt-get install prometheus)")
    return cluster.prometheus_url


def _wait_for(what: str, probe: Callable[[], Any], timeout_s: float) -> Any:
    deadline = time.monotonic() + timeout_s
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s:.0f} s waiting for {what}")
        time.sleep(0.25)


def _scalar(url: str, promql: str, at: float | None = None) -> float | None:
    result = prom.query(url, promql, at)
    assert len(result) <= 1, result
    return float(result[0]["value"][1]) if result else None


def test_prometheus_is_ready_and_scrapes_a_registered_target(cluster: ClusterState) -> None:
    url = _prometheus(cluster)
    with urllib.request.urlopen(f"{url}/-/ready", timeout=5) as response:
        assert response.status == 200
    registry = CollectorRegistry()
    Gauge("e2e_probe_value", "A value only this test exports.", registry=registry).set(42)
    server, _ = start_http_server(0, addr="127.0.0.1", registry=registry)
    address = f"127.0.0.1:{server.server_port}"
    try:
        prom.register_target(cluster.directory, "e2e-probe", address, {"probe": "yes"})
        _wait_for("the probe to be scraped", lambda: _scalar(url, 'up{job="e2e-probe"}') == 1, 20)
        assert _scalar(url, 'e2e_probe_value{job="e2e-probe", probe="yes"}') == 42
        assert prom.unregister_target(cluster.directory, "e2e-probe", address)

        def gone() -> bool:
            with urllib.request.urlopen(f"{url}/api/v1/targets?state=active", timeout=5) as response:
                targets = json.loads(response.read())["data"]["activeTargets"]
            return all(t["labels"].get("job") != "e2e-probe" for t in targets)

        _wait_for("the probe to be dropped", gone, 20)
    finally:
        prom.unregister_target(cluster.directory, "e2e-probe", address)
        server.shutdown()
        server.server_close()


@pytest.fixture(scope="module")
def traffic_city(kubectl: Kubectl) -> Iterator[Kubectl]:
    kubectl.run("apply", "--server-side", "-f", str(REPO / "crds"))
    kubectl.run("wait", "--for=condition=Established", "--timeout=60s", "crd", "-l", "!nonexistent", "--all")
    kubectl.run("apply", "--server-side", "-f", str(REPO / "examples"))
    selector = f"{c.LABEL_COMPONENT}={c.COMPONENT_EDGE_INFERENCE}"
    kubectl.run("delete", "deployment", "-n", NAMESPACE, "-l", selector, "--wait=true", "--timeout=60s")
    yield kubectl
    kubectl.run("delete", "deployment", "-n", NAMESPACE, "-l", selector, "--wait=true", "--timeout=60s")


@pytest.fixture
def running_twin(cluster: ClusterState, traffic_city: Kubectl) -> Iterator[tuple[Twin, str]]:
    """The twin in a thread, scraped by the cluster's Prometheus; yields it and its instance label."""
    _prometheus(cluster)
    twin = Twin(KubernetesSource(api_client(cluster.kubeconfig)), NAMESPACE, seed=7, tick_seconds=1.0, trace_slots=600)
    server, address = serve_metrics(twin.metrics)
    prom.register_target(cluster.directory, JOB, address, {"namespace": NAMESPACE})
    stop = threading.Event()
    thread = threading.Thread(target=twin.run, args=(stop,), daemon=True)
    thread.start()
    try:
        yield twin, address
    finally:
        stop.set()
        thread.join(timeout=10)
        prom.unregister_target(cluster.directory, JOB, address)
        server.shutdown()
        server.server_close()


def _cumulative_requests(history: list[ServedSlot], up_to_slot: int) -> dict[tuple[str, str, str], float]:
    """(model, served_by, edge_node) -> requests the twin counted up to a slot."""
    totals: dict[tuple[str, str, str], float] = defaultdict(float)
    for served in history:
        if served.slot > up_to_slot:
            continue
        scenario = served.scenario
        for u, m in zip(*np.nonzero(served.counts), strict=True):
            node = scenario.node_names[scenario.camera_node[u]]
            where = "edge" if served.hit[u, m] else "cloud"
            totals[(scenario.model_names[m], where, node)] += served.counts[u, m]
    return dict(totals)


def test_twin_follows_the_placement_and_prometheus_reads_its_rates(
    cluster: ClusterState, traffic_city: Kubectl, running_twin: tuple[Twin, str]
) -> None:
    url = _prometheus(cluster)
    twin, instance = running_twin
    mine = f'job="{JOB}", instance="{instance}"'

    # 1. No edge Deployment: every request goes to the cloud, the hit rate is 0.
    total_rate = f"sum(rate(edgeaigc_requests_total{{{mine}}}[5s]))"
    _wait_for("a request rate in Prometheus", lambda: (_scalar(url, total_rate) or 0) > 0, 30)
    at = time.time()
    # The twin's series exist from its first scrape on: a query window that starts earlier is only
    # partly covered, and increase() extrapolates at most half a scrape interval past the first
    # sample (it read 7-15 % low when the window began at the test's start).
    scraped_since = at
    assert _scalar(url, f'sum(edgeaigc_requests_total{{{mine}, served_by="edge"}})', at) == 0
    hit_rate = f'(sum(rate(edgeaigc_requests_total{{{mine}, served_by="edge"}}[5s])) or vector(0)) / {total_rate}'
    assert _scalar(url, hit_rate, at) == 0
    assert _scalar(url, f"edgeaigc_twin_hit_rate{{{mine}}}") == 0

    # 2. A replica of the model most requested on pi-0 in the coming slots, made Ready by kwok.
    assert twin.scenario is not None and twin.trace is not None
    scenario = twin.scenario
    cameras = np.flatnonzero(scenario.camera_node == scenario.node_names.index(EDGE_NODE))
    coming = twin.trace.rates[twin.trace_slot + 1 : twin.trace_slot + 61][:, cameras].sum(axis=(0, 1))
    m = int(np.argmax(coming))
    model = scenario.model_names[m]
    policy = json.loads(traffic_city.run("get", "placementpolicy", NAMESPACE, "-n", NAMESPACE, "-o", "json").stdout)
    deployment = build_edge_deployment(policy, model, EDGE_NODE, EDGE_NODE, 1000, 160, c.DEFAULT_INFERENCE_IMAGE)
    traffic_city.run("apply", "--server-side", "-f", "-", stdin=yaml.safe_dump(deployment))
    name = deployment["metadata"]["name"]
    traffic_city.run("rollout", "status", f"deployment/{name}", "-n", NAMESPACE, "--timeout=60s")
    _wait_for("the twin to serve it at the edge", lambda: bool(twin.history[-1].hit[cameras, m].all()), 15)
    first_edge = twin.history[-1]
    assert first_edge.hit.sum() == len(cameras)  # nothing else is cached
    edge_series = f'edgeaigc_requests_total{{{mine}, served_by="edge"}} > 0'
    _wait_for("edge requests in Prometheus", lambda: prom.query(url, edge_series), 15)
    assert {(s["metric"]["edge_node"], s["metric"]["model"]) for s in prom.query(url, edge_series)} == {
        (EDGE_NODE, model)
    }

    # Let the window of the rate query fill (it may span the change: the query sums over served_by),
    # and half a window to pass since the twin uses the replica.
    ready_at = max(scraped_since + WINDOW_S, first_edge.finished_at + WINDOW_S / 2) + 3
    _wait_for("a full window of twin slots", lambda: time.time() > ready_at, WINDOW_S + 15)
    at = time.time() - 1.5  # a moment Prometheus has certainly scraped past

    # 3. Counters: exactly the twin's own counts of the slots before the scrape's, plus one share of its
    # slot, the same for every series (the slot being played over its tick).
    slot_at = int(_scalar(url, f"edgeaigc_twin_slot{{{mine}}}", at) or 0)
    scraped = {
        (s["metric"]["model"], s["metric"]["served_by"], s["metric"]["edge_node"]): float(s["value"][1])
        for s in prom.query(url, f"edgeaigc_requests_total{{{mine}}}", at)
    }
    assert slot_at > first_edge.slot
    before = _cumulative_requests(twin.served_slots(), slot_at - 1)
    after = _cumulative_requests(twin.served_slots(), slot_at)
    assert {key for key, value in scraped.items() if value} <= set(after)
    busiest = max(after, key=lambda key: after[key] - before.get(key, 0.0))
    played = (scraped[busiest] - before.get(busiest, 0.0)) / (after[busiest] - before.get(busiest, 0.0))
    assert 0.0 <= played <= 1.0, played
    for key, total in after.items():
        expected = before.get(key, 0.0) + played * (total - before.get(key, 0.0))
        assert scraped[key] == pytest.approx(expected, rel=1e-9, abs=1e-6), (key, scraped[key], before.get(key), total)
    assert len(scraped) == scenario.num_nodes * scenario.num_models * 2  # the others at zero
    # Since the replica is ready, none of that model's requests on the node goes to the cloud.
    pair = f'model="{model}", edge_node="{EDGE_NODE}"'
    recent = f"sum(increase(edgeaigc_requests_total{{{mine}, {pair}, served_by=%r}}[{WINDOW_S // 2}s]))"
    assert (_scalar(url, recent % "cloud", at) or 0) == 0
    assert (_scalar(url, recent % "edge", at) or 0) > 0

    # 4. The operator's query, on the series of the chart's recording rule (loaded by the cluster's
    # Prometheus), against the twin's counts over the same window.
    by_place = prom.query(url, requests_query(WINDOW_S, mine, "edge_node, model, served_by"), at)
    assert by_place and {s["metric"]["served_by"] for s in by_place} == {"edge", "cloud"}
    measured: dict[tuple[str, str], float] = defaultdict(float)
    for s in by_place:
        measured[(s["metric"]["edge_node"], s["metric"]["model"])] += float(s["value"][1]) / WINDOW_S
    in_window = [s for s in twin.served_slots() if at - WINDOW_S < s.finished_at <= at]
    assert len(in_window) >= WINDOW_S - 2
    own: dict[tuple[str, str], float] = defaultdict(float)
    at_edges: dict[tuple[str, str], float] = defaultdict(float)  # requests in the edge ticks
    own_bytes: dict[str, float] = defaultdict(float)
    bytes_at_edges: dict[str, float] = defaultdict(float)
    input_bytes = scenario.model_input_mbit * 1e6 / 8
    expected_total = 0.0
    for i, s in enumerate(in_window):
        expected_total += float(s.expected_rates.sum()) / len(in_window)
        for u, mm in zip(*np.nonzero(s.counts), strict=True):
            key = (scenario.node_names[scenario.camera_node[u]], scenario.model_names[mm])
            own[key] += s.counts[u, mm] / WINDOW_S
            own_bytes[scenario.camera_names[u]] += s.counts[u, mm] * input_bytes[mm] / WINDOW_S
            # Scrapes (and the rule's evaluations) lag ticks on a loaded machine: the first and last
            # ticks may fall either side.
            if i < 3 or i >= len(in_window) - 3:
                at_edges[key] += float(s.counts[u, mm])
                bytes_at_edges[scenario.camera_names[u]] += float(s.counts[u, mm] * input_bytes[mm])
    # Tolerance: Prometheus counts what happened between the first and the last scrape in the
    # window and extrapolates the rest at the average rate, and on a loaded machine scrapes lag the
    # ticks, so a series may be off by the requests of the edge ticks (cameras switch models from
    # one slot to the next) plus 10 % (the extrapolation over N / (N - 1)).
    for key in set(own) | set(measured):
        got, want = measured.get(key, 0.0), own.get(key, 0.0)
        assert abs(got - want) <= 0.1 * want + (at_edges.get(key, 0.0) + 1) / WINDOW_S, (key, got, want)
    camera_bytes = {
        s["metric"]["camera"]: float(s["value"][1]) / WINDOW_S
        for s in prom.query(url, camera_bytes_query(WINDOW_S, mine), at)
    }
    assert len(camera_bytes) == scenario.num_cameras
    for camera, got in camera_bytes.items():
        want = own_bytes.get(camera, 0.0)
        assert abs(got - want) <= 0.1 * want + (bytes_at_edges.get(camera, 0.0) + 1e5) / WINDOW_S, (camera, got, want)
    total = sum(measured.values())
    worst = max(abs(measured.get(k, 0.0) - own.get(k, 0.0)) for k in set(own) | set(measured))
    print(
        f"rate query: {len(measured)} series, total {total:.1f} req/s; twin's own {sum(own.values()):.1f} req/s, "
        f"trace {expected_total:.1f} req/s; largest per-series difference {worst:.2f} req/s"
    )
    # 15 %: ticks and scrapes slip on a loaded machine, and increase() reads a few % low here; a
    # wrong unit or time mapping (per slot instead of per second, 5-60x) is what this must catch.
    assert total == pytest.approx(sum(own.values()), rel=0.15)
    # Rates are per second of the simulated demand (the trace's rates), not per slot. A loaded
    # machine runs fewer than one 1-s tick per second; only the ticks that ran produced requests.
    ticks_per_second = len(in_window) / WINDOW_S
    # 15 %: the first and last ticks slip against the scrapes on a loaded machine.
    assert total == pytest.approx(expected_total * ticks_per_second, rel=0.15)

    # 5. The hit rate as the edge share of requests, and link quality per camera.
    edge_share = _scalar(url, hit_rate.replace("[5s]", f"[{WINDOW_S}s]"), at)
    hits = sum(float((s.counts * s.hit).sum()) for s in in_window)
    requests = sum(float(s.counts.sum()) for s in in_window)
    print(f"edge share: Prometheus {edge_share:.4f}, twin {hits / requests:.4f}; replica of {model} on {EDGE_NODE}")
    assert edge_share is not None and edge_share == pytest.approx(hits / requests, abs=0.02) and edge_share > 0
    links = prom.query(url, f"edgeaigc_camera_link_spectral_efficiency{{{mine}}}", at)
    assert len(links) == scenario.num_cameras
    assert {float(s["value"][1]) for s in links} <= set(scenario.link_states.tolist())
