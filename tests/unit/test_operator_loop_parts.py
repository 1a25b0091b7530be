"""Pure parts of the decision loop: observation from Prometheus results, diff, status."""

from __future__ import annotations

import datetime

import numpy as np
import pytest

from edgeaigc.operator.decide import Decision
from edgeaigc.operator.observe import observation_from_samples, rate_query
from edgeaigc.operator.placement import plan_fits_nodes
from edgeaigc.operator.reconcile import HASH_ANNOTATION, changes, manifest_hash
from edgeaigc.operator.status import policy_status
from edgeaigc.policy.fleet import current_cache
from edgeaigc.policy.scenario import load_scenario
from edgeaigc.policy.system_model import Plan

TINY = load_scenario("tiny")  # nodes pi-0, pi-1; cameras camera-0..5; models det-day, ...
NOW = datetime.datetime(2026, 11, 27, 7, 30, tzinfo=datetime.UTC)


def _sample(value: float, **labels: str) -> dict:
    return {"metric": labels, "value": [1764229800.0, str(value)]}


def test_observation_from_query_results() -> None:
    last = [
        _sample(2.0, edge_node="pi-0", camera="camera-0", model="det-day"),
        _sample(8.0, edge_node="pi-0", camera="camera-0", model="cls-small"),
        _sample(5.0, edge_node="pi-9", camera="camera-99", model="det-day"),  # unknown camera: ignored
        _sample(float("nan"), edge_node="pi-1", camera="camera-1", model="det-day"),  # NaN: counted as 0
    ]
    recent = [_sample(1.0, edge_node="pi-0", camera="camera-0", model="det-day")]
    link = [_sample(4.0, edge_node="pi-0", camera="camera-0")]
    cache = np.zeros((2, 6))
    cache[0, 0] = 1
    observation = observation_from_samples(TINY, last, recent, link, cache, NOW)
    assert observation.camera_rates[0, 0] == 2.0 and observation.camera_rates[0, 2] == 8.0
    assert observation.camera_rates.sum() == 10.0
    assert observation.camera_rate_trend[0, 0] == 1.0
    assert observation.link_quality[0] == 4.0
    # Cameras without a link sample get the median link state, not zero (no division by zero).
    assert observation.link_quality[1] == pytest.approx(float(np.median(TINY.link_states)))
    # Node use: 2 req/s x 28 ms on pi-0's 4 x 0.3 reference cores.
    assert observation.node_compute_utilisation[0] == pytest.approx(2 * 0.028 / 1.2)
    assert observation.hour_of_day == 7.5


def test_rate_query_is_per_camera_and_model() -> None:
    assert rate_query(30) == "sum by (edge_node, camera, model) (increase(edgeaigc_requests_total[30s])) / 30"


def _deployment(name: str, **labels: str) -> dict:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "labels": labels},
        "spec": {"x": 1},
    }


def test_current_cache_from_labelled_deployments() -> None:
    deployments = [
        _deployment(
            "a",
            **{
                "app.kubernetes.io/component": "edge-inference",
                "edgeaigc.io/edge-node": "pi-1",
                "edgeaigc.io/model": "flow-urban",
            },
        ),
        _deployment("b", **{"app.kubernetes.io/component": "cloud-inference", "edgeaigc.io/model": "det-day"}),
        _deployment(
            "c",
            **{
                "app.kubernetes.io/component": "edge-inference",
                "edgeaigc.io/edge-node": "gone",
                "edgeaigc.io/model": "det-day",
            },
        ),
    ]
    cache = current_cache(TINY, deployments)
    assert cache.sum() == 1 and cache[1, TINY.model_names.index("flow-urban")] == 1


def test_diff_applies_only_what_changed_and_deletes_the_rest() -> None:
    keep, change, new = _deployment("keep"), _deployment("change"), _deployment("new")
    existing = [
        {**keep, "metadata": {**keep["metadata"], "annotations": {HASH_ANNOTATION: manifest_hash(keep)}}},
        {**change, "metadata": {**change["metadata"], "annotations": {HASH_ANNOTATION: "stale"}}},
        _deployment("old"),
    ]
    diff = changes([keep, change, new], existing)
    assert [m["metadata"]["name"] for m in diff.apply] == ["change", "new"]
    assert diff.apply[0]["metadata"]["annotations"][HASH_ANNOTATION] == manifest_hash(change)
    assert diff.delete == [("apps/v1", "Deployment", "old")] and diff.unchanged == 1


def test_a_plan_that_does_not_fit_its_node_is_refused() -> None:
    cache = np.zeros((2, 6))
    cache[0, :4] = 1
    plan = Plan(cache, cache / 4, np.full(6, 1 / 3))
    allocatable = {"pi-0": {"cpu": "4", "memory": "4Gi"}, "pi-1": {"cpu": "4", "memory": "4Gi"}}
    assert plan_fits_nodes(TINY, plan, {"pi-0": "pi-0", "pi-1": "pi-1"}, allocatable) == []
    small = {**allocatable, "pi-0": {"cpu": "2", "memory": "256Mi"}}
    problems = plan_fits_nodes(TINY, plan, {"pi-0": "pi-0", "pi-1": "pi-1"}, small)
    assert len(problems) == 2 and "4000m CPU planned" in problems[0] and "Mi memory planned" in problems[1]
    assert "does not exist" in plan_fits_nodes(TINY, plan, {"pi-0": "pi-7", "pi-1": "pi-1"}, allocatable)[0]


def test_degraded_keeps_ready_and_says_why() -> None:
    good = Decision(placement={"pi-0": ["det-day"]}, message="2 objects applied", predicted={"hitRate": 0.5})
    first = policy_status(good, {}, NOW)
    ready = next(c for c in first["conditions"] if c["type"] == "Ready")
    assert ready["status"] == "True" and first["predicted"]["hitRate"] == "50.0%"
    later = NOW + datetime.timedelta(minutes=1)
    bad = Decision(
        placement={"pi-0": ["det-day"]}, degraded_reason="PrometheusUnreachable", message="connection refused"
    )
    second = policy_status(bad, first, later)
    conditions = {c["type"]: c for c in second["conditions"]}
    assert (
        conditions["Ready"]["status"] == "True"
        and conditions["Ready"]["lastTransitionTime"] == ready["lastTransitionTime"]
    )
    assert conditions["Degraded"]["status"] == "True" and conditions["Degraded"]["reason"] == "PrometheusUnreachable"
    assert second["placement"] == [{"edgeNode": "pi-0", "models": ["det-day"]}]
    assert "lastDecisionTime" not in second


def test_routing_table_generation_grows_only_when_the_table_changes() -> None:
    from edgeaigc.operator.builders import build_routing_configmap, build_routing_table
    from edgeaigc.operator.decide import routing_table

    def generation(existing: list[dict], plan: Plan) -> int:
        return routing_table(existing, policy, TINY, plan, {}).generation

    policy = {"metadata": {"name": "p", "namespace": "ns", "uid": "u"}}
    cache = np.zeros((2, 6))
    cache[0, 0] = 1
    plan = Plan(cache, cache, np.full(6, 1 / 3))
    assert generation([], plan) == 1
    existing = [build_routing_configmap(policy, build_routing_table(policy, TINY, plan, 4))]
    assert generation(existing, plan) == 4
    moved = Plan(cache[::-1].copy(), cache[::-1].copy(), plan.bandwidth_share)
    assert generation(existing, moved) == 5


def test_model_status_reports_the_artifact_and_keeps_other_conditions() -> None:
    from edgeaigc.operator.artifacts import ArtifactCondition
    from edgeaigc.operator.status import model_status

    t0 = datetime.datetime(2026, 11, 27, 12, 0, tzinfo=datetime.UTC)
    t1 = t0 + datetime.timedelta(minutes=1)
    assert model_status(["pi-1", "pi-0"]) == {"cachedOn": ["pi-0", "pi-1"], "cachedOnCount": 2}
    failed = ArtifactCondition("False", "ChecksumMismatch", "sha256 differs on pi-0")
    previous = {"conditions": [{"type": "Other", "status": "True", "reason": "X", "message": ""}]}
    first = model_status(["pi-0"], failed, previous, t0)
    conditions = {c["type"]: c for c in first["conditions"]}
    assert conditions["Other"]["reason"] == "X"
    assert conditions["ArtifactReady"]["reason"] == "ChecksumMismatch"
    assert conditions["ArtifactReady"]["lastTransitionTime"] == "2026-11-27T12:00:00Z"
    # Same status a minute later: the transition time stays; a new status moves it.
    again = model_status(["pi-0"], failed, first, t1)
    assert again["conditions"][-1]["lastTransitionTime"] == "2026-11-27T12:00:00Z"
    fixed = model_status(["pi-0"], ArtifactCondition("True", "Fetched", ""), again, t1)
    assert fixed["conditions"][-1]["lastTransitionTime"] == "2026-11-27T12:01:00Z"


def test_every_query_carries_the_policys_prometheus_selector() -> None:
    from edgeaigc.operator.observe import (
        duration_query,
        link_query,
        relayed_bytes_query,
        series,
        served_query,
    )

    assert series("m") == "m" and series("m", "", 'a="b"') == 'm{a="b"}'
    assert series("m", ' namespace="city", ', 'a="b"') == 'm{a="b", namespace="city"}'
    selector = 'namespace="city"'
    queries = [
        rate_query(30, selector),
        link_query(selector),
        served_query(30, selector),
        duration_query("sum", 30, selector),
        relayed_bytes_query(30, selector),
    ]
    for query in queries:
        metrics = query.count("edgeaigc_")
        assert query.count(selector) == metrics, query
    assert 'edgeaigc_request_bytes_total{served_by="cloud", namespace="city"}' in queries[-1]
    assert rate_query(30) == "sum by (edge_node, camera, model) (increase(edgeaigc_requests_total[30s])) / 30"
