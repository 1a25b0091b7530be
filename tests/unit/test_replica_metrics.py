"""Reading a model replica's own histogram and CPU time over an interval (cluster/replica_metrics.py)."""

from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from edgeaigc.cluster.replica_metrics import ReplicaInterval, difference, merge, parse_duration_histogram
from edgeaigc.inference.metrics_contract import REQUEST_LATENCY_BUCKETS
from edgeaigc.inference.server.metrics import RequestMetrics


def _exposition(durations: dict[str, list[float]], served_by: str = "edge") -> str:
    """What a model server's /metrics says after answering these requests (its own exporter)."""
    registry = CollectorRegistry()
    metrics = RequestMetrics(registry, served_by)
    for model, seconds in durations.items():
        for value in seconds:
            metrics.observe_request(model, 200, value, 1000, 100)
    return generate_latest(registry).decode()


def test_the_model_servers_histogram_is_read_for_its_model_only() -> None:
    text = _exposition({"det": [0.03, 0.07, 0.2], "cls": [0.002] * 5})
    det = parse_duration_histogram(text, "det")
    assert det is not None
    assert det.requests == 3
    assert det.seconds == pytest.approx(0.3)
    bounds = [*REQUEST_LATENCY_BUCKETS, float("inf")]
    assert det.buckets[bounds.index(0.025)] == 0  # cumulative counts at each bound, not the other model's
    assert det.buckets[bounds.index(0.05)] == 1
    assert det.buckets[bounds.index(0.1)] == 2
    assert det.buckets[bounds.index(0.25)] == 3
    assert det.buckets[-1] == 3
    # a model the server has not answered yet: a reading of nothing (what it did next counts from here)
    assert parse_duration_histogram(text, "flow") == ReplicaInterval(0, 0.0, [0.0] * len(bounds))


def test_an_interval_is_the_difference_of_two_readings_and_a_restart_counts_from_zero() -> None:
    before = ReplicaInterval(10, 1.0, [0, 4, 10], cpu_seconds=2.0)
    after = ReplicaInterval(15, 1.8, [1, 6, 15], cpu_seconds=2.5)
    interval = difference(after, before)
    assert (interval.requests, interval.seconds, interval.buckets) == (5, pytest.approx(0.8), [1, 2, 5])
    assert interval.cpu_seconds == pytest.approx(0.5)
    # the container restarted: its counters began again, so all of the new reading's requests are this
    # interval's; its CPU is its start-up's too, not the requests' work
    restarted = ReplicaInterval(3, 0.2, [0, 2, 3], cpu_seconds=0.4)
    assert difference(restarted, before) == ReplicaInterval(3, 0.2, [0, 2, 3], cpu_seconds=None)
    assert difference(after, None) == ReplicaInterval(15, 1.8, [1, 6, 15], cpu_seconds=None)  # first seen


def test_replicas_of_one_model_and_place_add_up_and_cpu_only_when_all_had_it() -> None:
    one = ReplicaInterval(2, 0.1, [1, 2], cpu_seconds=0.3)
    two = ReplicaInterval(3, 0.2, [0, 3], cpu_seconds=0.2)
    both = merge([one, two])
    assert (both.requests, both.seconds, both.buckets) == (5, pytest.approx(0.3), [1, 5])
    assert both.cpu_seconds == pytest.approx(0.5)
    assert merge([one, ReplicaInterval(1, 0.1, [1, 1])]).cpu_seconds is None
