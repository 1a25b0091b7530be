"""The chaos soak's invariants (cluster/chaos_invariants.py): the routing table always valid, the error rate
back to the baseline within two decision intervals of each recovery."""

from __future__ import annotations

import types
from pathlib import Path

from prometheus_client import CollectorRegistry, generate_latest

from edgeaigc.cluster.chaos import Fault, judge_error_rate
from edgeaigc.cluster.chaos_invariants import (
    Baseline,
    TableWatch,
    baseline_error_share,
    decision_interval_s,
    judge_gateway_metrics,
    judge_recoveries,
    judge_routing_configmap,
    recoveries_within_baseline,
    tolerance_frames,
)
from edgeaigc.inference.gateway.metrics import GatewayStateCollector
from edgeaigc.inference.gateway.routing_table import EdgeNodeRoutes, Endpoint, LocalModel, RoutingTable
from edgeaigc.inference.gateway.table_watcher import RoutingTableWatcher
from edgeaigc.operator.builders import build_routing_configmap

POLICY = {"metadata": {"name": "real-node", "namespace": "edgeaigc", "uid": "u-1"}, "apiVersion": "v", "kind": "k"}
TABLE = RoutingTable(
    7,
    {"edge-0": EdgeNodeRoutes({"det": LocalModel((Endpoint("http://det.edgeaigc.svc:8080"),), 0.5)}, {"cam": 1.0})},
    {"det": "http://det-cloud.edgeaigc.svc:8080"},
)


def frames(pattern: str, start: float = 100.0) -> list[dict]:
    """One frame a second: '.' answered, 'x' failed."""
    return [{"time": start + i, "ok": mark == "."} for i, mark in enumerate(pattern)]


def test_the_operators_configmap_is_judged_with_the_gateways_parser() -> None:
    config_map = build_routing_configmap(POLICY, TABLE)
    assert judge_routing_configmap(config_map) == (7, None)
    key = next(iter(config_map["data"]))
    broken = {"data": {key: config_map["data"][key].replace('"generation":7', '"generation":-1')}}
    generation, error = judge_routing_configmap(broken)
    assert generation is None and error is not None and "generation" in error  # the parser's reason is kept
    assert judge_routing_configmap({"data": {key: "{"}})[1] is not None
    assert judge_routing_configmap({"data": {}})[1] == f"the routing-table ConfigMap has no {key!r} key"
    assert judge_routing_configmap(None) == (None, "the routing-table ConfigMap does not exist")


def gateway_metrics(watcher: RoutingTableWatcher) -> str:
    """What the gateway's /metrics says of ``watcher``'s table, from the gateway's own collector."""
    registry = CollectorRegistry()
    gateway = types.SimpleNamespace(edge_node="edge-0", watcher=watcher, breakers={})
    registry.register(GatewayStateCollector(gateway))  # type: ignore[arg-type]
    return generate_latest(registry).decode()


def reading(path: Path, *texts: str) -> RoutingTableWatcher:
    """A gateway's table watcher that read ``texts`` into ``path`` one after another."""
    watcher = RoutingTableWatcher(path)
    for text in texts:
        path.write_text(text)
        watcher.poll()
    return watcher


def test_the_gateway_must_hold_a_valid_table_and_never_reject_one(tmp_path: Path) -> None:
    assert judge_gateway_metrics(gateway_metrics(reading(tmp_path / "a.json", TABLE.to_json()))) == (7, None)
    generation, error = judge_gateway_metrics(gateway_metrics(reading(tmp_path / "b.json", "{not json")))
    assert generation is None and error is not None and "no valid routing table" in error
    # A valid table in use, then an invalid one rejected: the rejection is reported though a table is held.
    watcher = reading(tmp_path / "c.json", TABLE.to_json(), '{"apiVersion": "nope"}')
    generation, error = judge_gateway_metrics(gateway_metrics(watcher))
    assert generation == 7 and error == "the gateway rejected 1 invalid routing table(s) since it started"
    assert judge_gateway_metrics("garbage{")[1] is not None


def test_the_table_watch_fails_on_any_invalid_sample_and_on_never_seeing_a_source() -> None:
    watch = TableWatch()
    watch.record(1.0, "configmap", 3, None)
    assert not watch.valid_throughout()  # the gateway was never reached: nothing proven about it
    watch.record(1.0, "gateway", 2, None)
    watch.record(4.0, "configmap", 4, None)
    assert watch.valid_throughout() and watch.generations == {"configmap": [3, 4], "gateway": [2, 2]}
    for at in (7.0, 10.0):
        watch.record(at, "gateway", None, "the gateway holds no valid routing table")
    assert not watch.valid_throughout()
    assert watch.invalid == 2 and watch.errors == [
        {"time": 7.0, "source": "gateway", "error": "the gateway holds no valid routing table"}
    ]  # the same error is kept once, with its first time


def test_the_decision_interval_is_read_from_the_policy(tmp_path: Path) -> None:
    policy = tmp_path / "policy.yaml"
    policy.write_text("kind: PlacementPolicy\nspec:\n  intervalSeconds: 12\n")
    assert decision_interval_s(policy) == 12.0
    assert decision_interval_s() > 0  # examples/real-node's


def test_tolerance_is_one_second_of_frames() -> None:
    assert [tolerance_frames(fps) for fps in (0.5, 1.0, 2.0, 2.5)] == [1, 1, 2, 3]


def test_the_baseline_is_the_failed_share_before_the_first_fault() -> None:
    seen = frames("xx..x.......")  # 100..111
    assert baseline_error_share(seen, 102.0, 110.0) == Baseline(8, 1)
    assert baseline_error_share(seen, 102.0, 110.0).share == 1 / 8
    assert Baseline(0, 0).share == 0.0


def test_failures_within_two_intervals_of_a_recovery_are_forgiven_and_after_them_counted() -> None:
    # Interval 5 s. Fault A at 100 recovers at 102: frames from 112 on are judged, up to fault B at 125.
    # Its pod was Ready at 102 but its frames failed until 111 (forgiven), then one stray failure at 118.
    # Fault B at 125 recovers at 126: judged from 136; frames 137 and 139 fail, over one frame's tolerance.
    seen = frames("x" * 12 + "......x......" + "x" * 10 + "...x.x.....")  # 100..145
    faults = [Fault("model-pod", "p", at=100.0, recovered_s=2.0), Fault("gateway", "g", at=125.0, recovered_s=1.0)]
    judged = judge_recoveries(faults, seen, Baseline(30, 0), interval_s=5.0, tolerance=1, end=146.0)
    assert [(j.window_start, j.window_end, j.frames, j.failed, j.ok) for j in judged] == [
        (112.0, 125.0, 13, 1, True),
        (136.0, 146.0, 10, 2, False),
    ]
    assert judged[0].error_rate == 1 / 13
    assert not recoveries_within_baseline(judged)
    # A baseline that failed a tenth of its frames allows a tenth more: 10 x 0.1 + 1 = 2 failed frames.
    assert judge_recoveries(faults, seen, Baseline(30, 3), 5.0, 1, 146.0)[1].ok is True


def test_a_fault_not_recovered_or_without_frames_after_it_is_not_judged_and_fails_the_check() -> None:
    seen = frames("." * 40)
    faults = [Fault("operator", "o", at=100.0, recovered_s=None), Fault("gateway", "g", at=110.0, recovered_s=3.0)]
    judged = judge_recoveries(faults, seen, Baseline(10, 0), interval_s=15.0, tolerance=1, end=140.0)
    assert [j.ok for j in judged] == [None, None]  # the second's window starts at 143, after the last frame
    assert not recoveries_within_baseline(judged)
    assert recoveries_within_baseline([])


def test_a_soak_is_judged_from_its_start_and_its_faults() -> None:
    # Soak from 100: 10 frames of baseline (one failed), a fault at 110 recovered in 2 s, judged from 142.
    seen = frames("x........." + "x" * 20 + "." * 30)
    fault = Fault("apiserver", "apiserver", at=110.0, recovered_s=2.0)
    baseline, tolerance, judged = judge_error_rate([fault], seen, 100.0, interval_s=15.0, fps=1.0)
    assert (baseline, tolerance) == (Baseline(10, 1), 1)
    assert [(j.window_start, j.window_end, j.frames, j.failed, j.ok) for j in judged] == [(142.0, 160.0, 18, 0, True)]
