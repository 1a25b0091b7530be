"""decide() on hand-made snapshots: no cluster, no Prometheus — the whole decision between the reads and the writes."""

from __future__ import annotations

import base64
import dataclasses
import datetime
import json
from typing import Any

import pytest

from edgeaigc.inference.gateway.routing_table import parse_routing_table
from edgeaigc.operator import constants as c
from edgeaigc.operator.decide import PolicyCache, decide
from edgeaigc.operator.observe import ClusterReader, ObservationError, PrometheusSamples, Snapshot
from edgeaigc.operator.reconcile import HASH_ANNOTATION
from edgeaigc.operator.status import policy_status
from edgeaigc.policy.crd_defaults import with_defaults
from edgeaigc.policy.fleet import scenario_from_resources
from edgeaigc.policy.registry import PolicyUnavailable, shipped_actor

NOW = datetime.datetime(2026, 11, 27, 7, 30, tzinfo=datetime.UTC)
NODES = ("pi-0", "pi-1")
#: One model per stage (a fleet needs all three).
MODELS = {"det": "detection", "cls": "classification", "flow": "flow"}
CAMERAS = {"cam-0": "pi-0", "cam-1": "pi-0", "cam-2": "pi-1", "cam-3": "pi-1"}


def _resource(kind: str, name: str, spec: dict[str, Any]) -> dict[str, Any]:
    return {"kind": kind, "metadata": {"name": name, "namespace": "city"}, "spec": spec}


def _sample(value: float, **labels: str) -> dict[str, Any]:
    return {"metric": labels, "value": [NOW.timestamp(), str(value)]}


def _samples(rate: float = 2.0) -> PrometheusSamples:
    """Every camera asks ``rate`` requests per second of each model, all served by the cloud so far."""
    window_s = 30
    cameras_per_node = {node: sum(1 for n in CAMERAS.values() if n == node) for node in NODES}
    requests = [
        _sample(rate * window_s * cameras_per_node[node], edge_node=node, model=model, served_by="cloud")
        for node in NODES
        for model in MODELS
    ]
    camera_bytes = [_sample(1000.0, edge_node=node, camera=camera) for camera, node in CAMERAS.items()]
    return PrometheusSamples(
        requests,
        requests,
        camera_bytes,
        camera_bytes,
        [],
        [_sample(50.0, part="sum"), _sample(rate * window_s * len(CAMERAS) * len(MODELS), part="count")],
        [_sample(1e6)],
        window_s=window_s,
    )


def snapshot(**changes: Any) -> Snapshot:
    """The fleet above under an LRU policy, with nothing placed yet; ``changes`` replace fields."""
    spec = {"algorithm": "lru", "intervalSeconds": 30}
    policy = {
        "metadata": {"name": "city", "namespace": "city", "uid": "u-1"},
        "spec": with_defaults("PlacementPolicy", spec),
    }
    base = Snapshot(
        policy=policy,
        edge_nodes=[_resource("EdgeNode", n, {"nodeName": n, "modelStorage": "24Mi", "cores": 4}) for n in NODES],
        models=[_resource("InferenceModel", m, {"stage": s, "size": "4Mi", "workMs": 20}) for m, s in MODELS.items()],
        cameras=[_resource("Camera", u, {"edgeNode": n, "fps": 2}) for u, n in CAMERAS.items()],
        owned=[],
        pods=[],
        allocatable={n: {"cpu": "4", "memory": "8Gi"} for n in NODES},
        actor=None,
        samples=_samples(),
        now=NOW,
    )
    return dataclasses.replace(base, **changes)


def _policy_with(**spec: Any) -> dict[str, Any]:
    """The snapshot's policy with ``spec`` fields changed."""
    policy = snapshot().policy
    return {**policy, "spec": with_defaults("PlacementPolicy", {**policy["spec"], **spec})}


def test_a_decision_places_models_and_writes_only_what_the_plan_needs() -> None:
    decision, changes = decide(snapshot(), PolicyCache())
    assert decision.degraded_reason is None and changes is not None
    placed = {(node, model) for node, models in decision.placement.items() for model in models}
    assert placed and set(decision.newly_cached) == placed and decision.evicted == []
    assert decision.previous_placement == {"pi-0": [], "pi-1": []}
    kinds = [m["kind"] for m in changes.apply]
    # A cloud Deployment and Service per model, an edge pair per placed model, one routing table.
    assert kinds.count("Deployment") == len(MODELS) + len(placed) and kinds.count("ConfigMap") == 1
    assert changes.delete == [] and all(HASH_ANNOTATION in m["metadata"]["annotations"] for m in changes.apply)
    (config_map,) = [m for m in changes.apply if m["kind"] == "ConfigMap"]
    table = parse_routing_table(config_map["data"][c.ROUTING_TABLE_KEY])
    assert table.generation == 1  # a first table: no placeholder generation left behind
    assert {(node, model) for node, routes in table.edge_nodes.items() for model in routes.models} == placed
    assert 0 < decision.predicted["hitRate"] <= 1 and decision.observed.hit_rate == 0.0
    # What the handlers will write once it is applied.
    assert decision.edge_node_status["pi-0"]["cachedModels"] == sorted(decision.placement["pi-0"])
    assert set(decision.model_status) == set(MODELS)


def test_a_steady_placement_writes_nothing() -> None:
    policies, policy = PolicyCache(), _policy_with(churnLimit=10)  # everything wanted is cached at once
    first, changes = decide(snapshot(policy=policy), policies)
    assert changes is not None
    second, again = decide(snapshot(policy=policy, owned=changes.apply), policies)
    assert second.placement == first.placement == second.previous_placement
    assert again is not None and again.writes == 0 and second.newly_cached == []


def test_a_steady_placement_writes_no_status_the_resources_already_have() -> None:
    policies, policy = PolicyCache(), _policy_with(churnLimit=10)
    first, changes = decide(snapshot(policy=policy), policies)
    assert changes is not None and first.edge_node_status and first.model_status
    # The cluster as the handler leaves it: the objects applied, each resource's status written.
    with_status = {**first.edge_node_status, **first.model_status}
    edge_nodes, models = (
        [{**r, "status": with_status.get(r["metadata"]["name"], {})} for r in resources]
        for resources in (snapshot().edge_nodes, snapshot().models)
    )
    second, _ = decide(snapshot(policy=policy, owned=changes.apply, edge_nodes=edge_nodes, models=models), policies)
    assert second.placement == first.placement
    assert second.edge_node_status == {} and second.model_status == {}


def test_dry_run_decides_and_writes_nothing() -> None:
    decision, changes = decide(snapshot(policy=_policy_with(mode="dry-run")), PolicyCache())
    assert changes is None and decision.dry_run and decision.degraded_reason is None
    assert decision.message == "dry-run: placement computed, nothing applied" and any(decision.placement.values())


def test_a_new_fleet_without_request_series_is_decided_on_zero_demand() -> None:
    # Its gateways count nothing until they have a routing table, which only a decision writes.
    decision, changes = decide(snapshot(samples=dataclasses.replace(_samples(), last_interval=[])), PolicyCache())
    assert decision.degraded_reason is None and changes is not None
    assert [m["kind"] for m in changes.apply].count("ConfigMap") == 1


def test_a_fleet_gone_quiet_is_decided_on_once_the_trend_window_is_quiet_too() -> None:
    placed, applied = decide(snapshot(), PolicyCache())
    assert applied is not None and any(placed.placement.values())
    quiet = _samples(rate=0.0)
    decision, changes = decide(snapshot(owned=applied.apply, samples=quiet), PolicyCache())
    assert decision.degraded_reason is None and changes is not None


def test_an_invalid_fleet_is_reported_before_missing_metrics() -> None:
    no_metrics = ObservationError("NoMetrics", "no series yet")
    decision, changes = decide(snapshot(cameras=[], samples=no_metrics), PolicyCache())
    assert changes is None and decision.degraded_reason == "InvalidFleet" and decision.placement == {}


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        ({"samples": ObservationError("PrometheusUnreachable", "refused")}, "PrometheusUnreachable"),
        ({"samples": dataclasses.replace(_samples(), last_interval=[])}, "NoMetrics"),
        (
            {"samples": dataclasses.replace(_samples(), last_interval=_samples(rate=0.0).last_interval)},
            "NoRequestsCounted",
        ),
        ({"actor": PolicyUnavailable("cannot load the td3 policy: 404 Not Found")}, "PolicyUnavailable"),
        ({"allocatable": {n: {"cpu": "100m", "memory": "8Gi"} for n in NODES}}, "PlanDoesNotFit"),
    ],
)
def test_a_degraded_decision_keeps_the_placement_and_writes_nothing(changes: dict[str, Any], reason: str) -> None:
    placed, applied = decide(snapshot(), PolicyCache())
    assert applied is not None
    decision, writes = decide(snapshot(owned=applied.apply, **changes), PolicyCache())
    assert writes is None and decision.degraded_reason == reason
    assert decision.placement == placed.placement  # what the cluster runs, not what was planned


def test_an_actor_needs_its_bytes_and_a_corrupt_one_is_reported() -> None:
    td3 = _policy_with(algorithm="td3", actor={"configMapName": "city-actor"})
    corrupt = decide(snapshot(policy=td3, actor=b"not onnx"), PolicyCache())[0]
    assert corrupt.degraded_reason == "PolicyUnavailable"
    assert corrupt.message.startswith("cannot load the td3 policy: ConfigMap city-actor: not a loadable ONNX model")
    actor, _ = shipped_actor("traffic-city", "td3")
    decision, changes = decide(snapshot(policy=td3, actor=actor.read_bytes()), PolicyCache())
    assert decision.degraded_reason is None and changes is not None


def test_the_actor_cache_follows_the_configmaps_content() -> None:
    base = snapshot()
    scenario = scenario_from_resources(base.policy, base.edge_nodes, base.models, base.cameras)
    spec = _policy_with(algorithm="td3", actor={"configMapName": "city-actor"})["spec"]
    first, second = (shipped_actor(name, "td3")[0].read_bytes() for name in ("traffic-city", "paper"))
    assert first != second
    policies = PolicyCache()
    loaded = policies.policy_for(spec, first, scenario)
    assert policies.policy_for(spec, first, scenario) is loaded  # same content: kept (no reload per decision)
    updated = policies.policy_for(spec, second, scenario)  # same ConfigMap, new content: the new actor
    assert updated is not loaded and updated.session is not loaded.session  # type: ignore[attr-defined]


def test_the_actor_is_read_from_its_configmap_with_the_crd_default_key() -> None:
    actor, _ = shipped_actor("traffic-city", "td3")
    data = actor.read_bytes()

    class ConfigMaps:
        def read_namespaced_config_map(self, name: str, namespace: str, _preload_content: bool = True) -> Any:
            assert (name, namespace, _preload_content) == ("city-actor", "city", False)
            body = {"kind": "ConfigMap", "binaryData": {"actor.onnx": base64.b64encode(data).decode()}}
            return type("Response", (), {"data": json.dumps(body).encode()})()

    reader = ClusterReader.__new__(ClusterReader)
    reader.core = ConfigMaps()  # type: ignore[assignment]
    spec = with_defaults("PlacementPolicy", {"algorithm": "td3", "actor": {"configMapName": "city-actor"}})
    assert reader.actor("city", spec) == data
    missing = reader.actor("city", {**spec, "actor": {"configMapName": "city-actor", "key": "other.onnx"}})
    assert isinstance(missing, PolicyUnavailable) and "has no binaryData key 'other.onnx'" in str(missing)


def test_the_guard_runs_beside_a_learned_policy_and_its_condition_survives_a_degraded_decision() -> None:
    actor = shipped_actor("traffic-city", "td3")[0].read_bytes()
    guard = {"windowIntervals": 1, "minDwellIntervals": 0}
    td3 = _policy_with(algorithm="td3", actor={"configMapName": "city-actor"}, guard=guard)
    policies = PolicyCache()
    decisions = [decide(snapshot(policy=td3, actor=actor), policies)[0] for _ in range(3)]
    steps = [d.guard for d in decisions]
    assert all(step is not None for step in steps)
    last = steps[-1]
    assert last is not None and last.scored_intervals == 2  # the first decision has nothing to score
    status = policy_status(decisions[-1], {}, NOW)
    fallback = next(c for c in status["conditions"] if c["type"] == "PolicyFallback")
    assert fallback["status"] == ("True" if last.fallback else "False")
    assert status["guard"]["inControl"] == last.in_control
    assert set(status["guard"]["objective"]) == {"td3", "lru", "lfu", "static_topk", "myopic"}
    # No metrics: nothing decided, and the condition is written again as it was.
    lost = ObservationError("PrometheusUnreachable", "down")
    degraded_decision = decide(snapshot(policy=td3, actor=actor, samples=lost), policies)[0]
    assert degraded_decision.degraded_reason and degraded_decision.guard is None
    kept = policy_status(degraded_decision, status, NOW + datetime.timedelta(minutes=1))
    assert next(c for c in kept["conditions"] if c["type"] == "PolicyFallback") == fallback
    # A heuristic has no guard; a guard turned off says so.
    heuristic = decide(snapshot(), PolicyCache())[0]
    assert heuristic.guard is None
    off = next(c for c in policy_status(heuristic, status, NOW)["conditions"] if c["type"] == "PolicyFallback")
    assert (off["status"], off["reason"]) == ("False", "GuardOff")
    disabled = _policy_with(algorithm="td3", actor={"configMapName": "city-actor"}, guard={"enabled": False})
    assert decide(snapshot(policy=disabled, actor=actor), PolicyCache())[0].guard is None
