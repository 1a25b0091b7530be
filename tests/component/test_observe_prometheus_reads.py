"""How the observer's queries reach Prometheus: all at once, bounded by a timeout, failures named.

A small HTTP server on loopback answers Prometheus's query API (``/api/v1/query``) after a delay the
test chooses, so the timing is the observer's, not a loaded Prometheus's: seven queries of 0.6 s
each take 4.2 s one after the other and about 0.6 s sent together.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from edgeaigc.operator.observe import QUERIES_PER_READ, ObservationError, PrometheusObserver, read_timeout_s
from tests.component.conftest import free_port

EMPTY = json.dumps({"status": "success", "data": {"resultType": "vector", "result": []}}).encode()


class SlowPrometheus(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False

    def __init__(self, delay_s: float) -> None:
        self.delay_s = delay_s
        self.in_flight = 0
        self.most_in_flight = 0
        self.lock = threading.Lock()
        super().__init__(("127.0.0.1", 0), _Handler)

    def handle_error(self, request: object, client_address: object) -> None:
        pass  # a client that gave up (the timeout test) leaves a broken pipe: expected


class _Handler(BaseHTTPRequestHandler):
    server: SlowPrometheus

    def do_GET(self) -> None:
        with self.server.lock:
            self.server.in_flight += 1
            self.server.most_in_flight = max(self.server.most_in_flight, self.server.in_flight)
        time.sleep(self.server.delay_s)
        with self.server.lock:
            self.server.in_flight -= 1
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(EMPTY)))
        self.end_headers()
        self.wfile.write(EMPTY)

    def log_message(self, *_: object) -> None:
        pass


@pytest.fixture
def slow_prometheus(request: pytest.FixtureRequest) -> Iterator[SlowPrometheus]:
    server = SlowPrometheus(request.param)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


def _url(server: SlowPrometheus) -> str:
    return f"http://127.0.0.1:{server.server_address[1]}"


@pytest.mark.parametrize("slow_prometheus", [0.6], indirect=True)
def test_the_queries_of_a_read_are_sent_at_once(slow_prometheus: SlowPrometheus) -> None:
    observer = PrometheusObserver(_url(slow_prometheus))
    started = time.perf_counter()
    samples = observer.read(30)
    elapsed = time.perf_counter() - started
    # No gateway series: the two request reads each try the recording rule, then the raw counters.
    assert observer.queries_sent == QUERIES_PER_READ + 2
    assert slow_prometheus.most_in_flight >= QUERIES_PER_READ - 1
    assert elapsed < 3 * slow_prometheus.delay_s, f"{elapsed:.2f} s: one after the other?"
    assert observer.query_seconds == pytest.approx(elapsed, rel=0.2)
    assert list(samples.link) == [] and samples.window_s == 30


@pytest.mark.parametrize("slow_prometheus", [3.0], indirect=True)
def test_a_prometheus_that_does_not_answer_fails_the_read_within_its_timeout(
    slow_prometheus: SlowPrometheus,
) -> None:
    observer = PrometheusObserver(_url(slow_prometheus), timeout_s=1.0)
    started = time.perf_counter()
    with pytest.raises(ObservationError) as failure:
        observer.read(30)
    assert time.perf_counter() - started < 5
    assert failure.value.reason == "PrometheusUnreachable"


def test_an_unreachable_prometheus_is_named_as_today() -> None:
    url = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    with pytest.raises(ObservationError) as failure:
        PrometheusObserver(url).read(30)
    assert failure.value.reason == "PrometheusUnreachable"
    assert str(failure.value).startswith(f"Prometheus at {url} is unreachable:")


def test_a_reads_bound_is_a_quarter_of_the_interval_but_at_least_five_seconds() -> None:
    assert read_timeout_s(10) == 5.0
    assert read_timeout_s(60) == 15.0


@pytest.mark.parametrize("slow_prometheus", [6.0], indirect=True)
def test_without_a_timeout_a_slow_prometheus_is_waited_for_within_the_intervals_share(
    slow_prometheus: SlowPrometheus,
) -> None:
    # Answers after 6 s: within a 60-s interval's 15 s (a fixed 5-s bound failed 1000-node reads that took 5 s).
    samples = PrometheusObserver(_url(slow_prometheus)).read(60)
    assert samples.window_s == 60
