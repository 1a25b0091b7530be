"""Real gateway metrics, scraped by the local cluster's Prometheus with the chart's rules, read by the observer.

Two :class:`GatewayMetrics` (what ``edgeaigc gateway`` exports for its node) serve ``/metrics`` on
loopback; Prometheus (Debian's binary, configured by :mod:`edgeaigc.cluster.prometheus`) scrapes
them every second and evaluates the rules; :class:`PrometheusObserver` reads them with its fixed
set of queries, from the recorded series. The observation must carry the gateways' counts: each
node's rates, each camera's share of them by its bytes, the hit rate.
"""

from __future__ import annotations

import datetime
import subprocess
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from prometheus_client import start_http_server

from edgeaigc.cluster import prometheus
from edgeaigc.inference.gateway.metrics import GatewayMetrics
from edgeaigc.inference.metrics_contract import RECORDED_REQUESTS_TOTAL
from edgeaigc.operator.demand_history import DemandHistory
from edgeaigc.operator.observe import QUERIES_PER_READ, QUERIES_PER_STEADY_READ, PrometheusObserver
from edgeaigc.policy.observation import TREND_WINDOW_SLOTS
from edgeaigc.policy.scenario import load_scenario
from tests.component.conftest import free_port

TINY = load_scenario("tiny")  # pi-0: camera-0, 2, 4; pi-1: camera-1, 3, 5
NOW = datetime.datetime(2026, 11, 27, 7, 30, tzinfo=datetime.UTC)
JOB = "edgeaigc-gateway"


def _wait_for(what: str, probe: object, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while not probe():  # type: ignore[operator]
        assert time.monotonic() < deadline, f"timed out after {timeout_s:.0f} s waiting for {what}"
        time.sleep(0.2)


@pytest.fixture(scope="module")
def scraped_gateways(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, dict[str, GatewayMetrics]]]:
    if prometheus.binary() is None:
        pytest.skip(f"no prometheus binary ({prometheus.INSTALL_HINT})")
    cluster_dir: Path = tmp_path_factory.mktemp("prometheus")
    port = free_port()
    command = prometheus.prepare(cluster_dir, port, 1.0)
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    gateways = {node: GatewayMetrics(node) for node in TINY.node_names}
    servers = []
    try:
        for metrics in gateways.values():
            server, _ = start_http_server(0, addr="127.0.0.1", registry=metrics.registry)
            servers.append(server)
            prometheus.register_target(cluster_dir, JOB, f"127.0.0.1:{server.server_port}", {"namespace": "city"})

        def ready() -> bool:
            try:
                with urllib.request.urlopen(f"{url}/-/ready", timeout=2) as response:
                    return response.status == 200
            except OSError:
                return False

        _wait_for("Prometheus", ready, 30)
        yield url, gateways
    finally:
        process.terminate()
        process.wait(timeout=20)
        for server in servers:
            server.shutdown()
            server.server_close()


def test_the_observer_reads_real_gateway_series_through_the_recording_rule(
    scraped_gateways: tuple[str, dict[str, GatewayMetrics]],
) -> None:
    url, gateways = scraped_gateways
    input_bytes = {
        name: int(mbit * 1e6 / 8) for name, mbit in zip(TINY.model_names, TINY.model_input_mbit, strict=True)
    }
    # Series at zero first (a gateway creates them from its routing table), scraped and recorded.
    for node, metrics in gateways.items():
        for model in TINY.model_names:
            for served_by in ("edge", "cloud"):
                metrics.requests.labels(model, "200", served_by, node)
                metrics.request_seconds.labels(model, served_by, node)
        for served_by in ("edge", "cloud"):
            for family in (metrics.duration, metrics.request_bytes, metrics.response_bytes):
                family.labels(served_by, node)
        for camera in (
            c for c, e in zip(TINY.camera_names, TINY.camera_node, strict=True) if TINY.node_names[e] == node
        ):
            metrics.camera_request_bytes.labels(node, camera)
    recorded = f'{RECORDED_REQUESTS_TOTAL}{{namespace="city"}}'
    _wait_for("the recording rule", lambda: len(prometheus.query(url, recorded)) == 2 * 2 * TINY.num_models, 30)
    time.sleep(2)

    # pi-0: camera-0 asks det-day 30 times (edge), camera-2 cls-small 60 times (cloud); pi-1: camera-1 det-night 20.
    asked = [("pi-0", "camera-0", "det-day", "edge", 30), ("pi-0", "camera-2", "cls-small", "cloud", 60),
             ("pi-1", "camera-1", "det-night", "cloud", 20)]  # fmt: skip
    for node, camera, model, served_by, count in asked:
        for _ in range(count):
            gateways[node].observe_request(model, 200, served_by, camera, 0.05, input_bytes[model], 100)
    # Another code of the same (node, model, place): the rule folds it into the same series.
    gateways["pi-1"].observe_request("det-night", 503, "cloud", "camera-1", 0.01, 0, 10)
    total = f"sum(increase({recorded}[30s]))"
    _wait_for(
        "the requests in the recorded series", lambda: float(prometheus.query(url, total)[0]["value"][1]) > 100, 30
    )
    time.sleep(2)

    observer = PrometheusObserver(url, 'namespace="city"')
    samples = observer.read(30)
    assert observer.queries_sent == QUERIES_PER_READ and observer.recorded
    observation = samples.observation(TINY, np.zeros((TINY.num_nodes, TINY.num_models)), NOW)
    rates = observation.camera_rates
    m = {name: i for i, name in enumerate(TINY.model_names)}
    u = {name: i for i, name in enumerate(TINY.camera_names)}
    # Counts over the window (increase() extrapolates a little): the proportions are the gateways'.
    by_node = np.array([rates[TINY.camera_node == e].sum() for e in range(TINY.num_nodes)])
    assert by_node[0] / by_node[1] == pytest.approx(90 / 21, rel=0.1)
    assert rates[:, m["cls-small"]].sum() / rates[:, m["det-day"]].sum() == pytest.approx(2.0, rel=0.1)
    # Each camera gets its node's rates in proportion to its bytes: camera-0 sent 30 x 60 000,
    # camera-2 60 x 8 000 bytes, so camera-0 carries 1.8 / 2.28 of pi-0's requests of each model.
    share = 30 * input_bytes["det-day"] / (30 * input_bytes["det-day"] + 60 * input_bytes["cls-small"])
    pi0 = rates[u["camera-0"]] + rates[u["camera-2"]] + rates[u["camera-4"]]
    np.testing.assert_allclose(rates[u["camera-0"]], share * pi0, rtol=1e-6)
    assert rates[u["camera-4"]].sum() == 0 and rates[u["camera-3"]].sum() == 0
    assert rates[u["camera-1"]].sum() == pytest.approx(by_node[1])
    observed = samples.observed(TINY)
    assert observed.hit_rate == pytest.approx(30 / 111, rel=0.1)
    assert observed.mean_response_time_s == pytest.approx((110 * 0.05 + 0.01) / 111, rel=0.1)


def test_the_real_demos_per_model_figures_come_from_the_seconds_counter(
    scraped_gateways: tuple[str, dict[str, GatewayMetrics]],
) -> None:
    """``edgeaigc demo --real`` compares each model's mean response time with the system model's."""
    from edgeaigc.cluster.real_demo import gateway_figures, served_figures

    url, gateways = scraped_gateways
    for served_by in ("edge", "cloud"):
        gateways["pi-1"].requests.labels("flow-urban", "200", served_by, "pi-1")
        gateways["pi-1"].request_seconds.labels("flow-urban", served_by, "pi-1")
    time.sleep(3)
    for served_by, seconds, count in (("edge", 0.2, 10), ("cloud", 0.6, 30)):
        for _ in range(count):
            gateways["pi-1"].observe_request("flow-urban", 200, served_by, "camera-3", seconds, 1000, 10)
    time.sleep(3)
    figures = gateway_figures(url, 20, time.time())["flow-urban"]
    assert figures["edge_hit_rate"] == pytest.approx(10 / 40, rel=0.05)
    assert figures["mean_latency_ms"] == pytest.approx(1000 * (10 * 0.2 + 30 * 0.6) / 40, rel=0.05)
    served = served_figures(url, 20, time.time())["flow-urban"]
    assert served["edge"][1] == pytest.approx(0.2) and served["cloud"][1] == pytest.approx(0.6)


def test_the_trend_window_from_the_operators_record_reads_what_prometheus_reads(
    scraped_gateways: tuple[str, dict[str, GatewayMetrics]],
) -> None:
    """A steady stream at real gateways, read every interval as the decision loop reads it: once the record holds
    the last intervals the trend window comes from it (five queries), and it agrees with Prometheus's own."""
    url, gateways = scraped_gateways
    gateway, model, camera, rate = gateways["pi-1"], "det-day", "camera-3", 20.0
    for served_by in ("edge", "cloud"):
        gateway.requests.labels(model, "200", served_by, "pi-1")
    stop = threading.Event()

    def stream() -> None:  # bounded: it stops with the test, and after 120 s at the latest
        deadline = time.monotonic() + 120
        while not stop.is_set() and time.monotonic() < deadline:
            gateway.observe_request(model, 200, "cloud", camera, 0.01, 1000, 10)
            time.sleep(1 / rate)

    thread = threading.Thread(target=stream, daemon=True)
    thread.start()
    interval_s, source = 4, (url, 'namespace="city"')
    history = DemandHistory()
    try:
        time.sleep(2 * interval_s)  # the stream is in the scrapes before the first window
        for _ in range(TREND_WINDOW_SLOTS):
            time.sleep(interval_s)
            observer = PrometheusObserver(*source)
            now = datetime.datetime.now(datetime.UTC)
            samples = observer.read(interval_s, history.earlier(source, now, interval_s))
            history.record(source, now, interval_s, samples.last_interval, samples.camera_bytes_last)
        fresh = PrometheusObserver(*source)
        from_prometheus = fresh.read(interval_s)
    finally:
        stop.set()
        thread.join(timeout=5)
    assert observer.queries_sent == QUERIES_PER_STEADY_READ and samples.recent_s == interval_s * TREND_WINDOW_SLOTS
    assert fresh.queries_sent == QUERIES_PER_READ
    cached = np.zeros((TINY.num_nodes, TINY.num_models))
    m, pi1 = TINY.model_names.index(model), TINY.camera_node == TINY.node_names.index("pi-1")
    trend = samples.observation(TINY, cached, NOW).camera_rates_recent_mean[pi1, m].sum()
    trend_read = from_prometheus.observation(TINY, cached, NOW).camera_rates_recent_mean[pi1, m].sum()
    # Both about the stream's rate (the sleeps make it a little less); increase() extrapolates each window's edges.
    assert trend == pytest.approx(trend_read, rel=0.2), (trend, trend_read)
    assert 0.6 * rate < trend <= 1.2 * rate, trend
