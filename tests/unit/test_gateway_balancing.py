"""Pure parts of the gateway: smooth weighted round-robin, circuit breaker states, routing table watcher."""

from __future__ import annotations

import os
from pathlib import Path

from edgeaigc.inference.gateway.balancing import SmoothWeightedRoundRobin
from edgeaigc.inference.gateway.breaker import BreakerState, CircuitBreaker
from edgeaigc.inference.gateway.routing_table import EdgeNodeRoutes, Endpoint, LocalModel, RoutingTable
from edgeaigc.inference.gateway.table_watcher import RoutingTableWatcher


def test_smooth_weighted_round_robin_interleaves_by_weight() -> None:
    a, b, c = Endpoint("http://a", 5), Endpoint("http://b", 1), Endpoint("http://c", 1)
    balancer = SmoothWeightedRoundRobin([a, b, c])
    picks = [balancer.order()[0].url[-1] for _ in range(14)]
    assert "".join(picks) == "aabacaa" * 2


def test_order_puts_the_others_after_the_pick_by_weight_and_drops_zero_weights() -> None:
    balancer = SmoothWeightedRoundRobin([Endpoint("http://a", 1), Endpoint("http://b", 3), Endpoint("http://z", 0)])
    assert [e.url for e in balancer.order()] == ["http://b", "http://a"]
    assert [e.url for e in balancer.order()] == ["http://a", "http://b"]
    assert [e.url for e in balancer.order()] == ["http://b", "http://a"]
    assert SmoothWeightedRoundRobin([Endpoint("http://z", 0)]).order() == []


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_breaker_opens_after_consecutive_failures_and_probes_once_when_half_open() -> None:
    clock = FakeClock()
    breaker = CircuitBreaker(failure_threshold=3, open_seconds=10, clock=clock)
    breaker.record_failure()
    breaker.record_failure()
    breaker.record_success()  # a success in between resets the count
    for _ in range(2):
        breaker.record_failure()
    assert breaker.state is BreakerState.CLOSED and breaker.allow()
    breaker.record_failure()
    assert breaker.state is BreakerState.OPEN and breaker.opens == 1
    assert not breaker.allow()
    clock.now += 9.9
    assert not breaker.allow()
    clock.now += 0.1
    assert breaker.allow()  # the probe
    assert breaker.state is BreakerState.HALF_OPEN
    assert not breaker.allow()  # one probe at a time
    breaker.record_failure()
    assert breaker.state is BreakerState.OPEN and breaker.opens == 2
    clock.now += 10
    assert breaker.allow()
    breaker.record_success()
    assert breaker.state is BreakerState.CLOSED and breaker.allow() and breaker.allow()


def test_watcher_keeps_the_last_valid_table(tmp_path: Path) -> None:
    path = tmp_path / "routing.json"
    watcher = RoutingTableWatcher(path)
    assert not watcher.poll() and watcher.table is None and watcher.errors["unreadable"] == 1
    assert not watcher.poll() and watcher.errors["unreadable"] == 1  # a missing file is counted once
    table = RoutingTable(3, {"pi-0": EdgeNodeRoutes({"m": LocalModel((Endpoint("http://e"),), 0.5)}, {})}, {})
    path.write_text(table.to_json())
    assert watcher.poll() and watcher.table == table
    assert not watcher.poll()  # unchanged: not re-read
    path.write_text('{"kind": "RoutingTable"}')
    os.utime(path, ns=(1, 1))
    assert not watcher.poll()
    assert watcher.table == table and watcher.errors["invalid"] == 1
    assert watcher.last_error is not None and "keeping generation 3" in watcher.last_error
