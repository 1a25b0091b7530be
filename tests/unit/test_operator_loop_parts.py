"""Pure parts of the decision loop: observation from Prometheus results, diff, status."""

from __future__ import annotations

import datetime

import numpy as np
import pytest

from edgeaigc.operator.decide import Decision
from edgeaigc.operator.observe import camera_rates_of, observation_from_samples, requests_query
from edgeaigc.operator.placement import plan_fits_nodes
from edgeaigc.operator.reconcile import HASH_ANNOTATION, changes, manifest_hash
from edgeaigc.operator.status import policy_status
from edgeaigc.policy.fleet import current_cache
from edgeaigc.policy.observation import TREND_WINDOW_SLOTS, Observation, encode
from edgeaigc.policy.scenario import load_scenario
from edgeaigc.policy.system_model import Plan, node_rates_of

TINY = load_scenario("tiny")  # nodes pi-0, pi-1; cameras camera-0..5; models det-day, ...
NOW = datetime.datetime(2026, 11, 27, 7, 30, tzinfo=datetime.UTC)


def _sample(value: float, **labels: str) -> dict:
    return {"metric": labels, "value": [1764229800.0, str(value)]}


def test_observation_from_query_results() -> None:
    # Requests over a 10-s interval; pi-0 holds camera-0, 2, 4 in TINY.
    last = [
        _sample(20.0, edge_node="pi-0", model="det-day", served_by="cloud"),
        _sample(80.0, edge_node="pi-0", model="cls-small", served_by="edge"),
        _sample(50.0, edge_node="pi-9", model="det-day", served_by="cloud"),  # unknown node: ignored
        _sample(float("nan"), edge_node="pi-1", model="det-day", served_by="cloud"),  # NaN: counted as 0
    ]
    recent = [_sample(50.0, edge_node="pi-0", model="det-day")]  # over 5 intervals: 1 req/s
    # camera-0 sent all of pi-0's bytes in both windows: it gets all of pi-0's requests.
    camera_bytes = [
        _sample(5e5, edge_node="pi-0", camera="camera-0"),
        _sample(0.0, edge_node="pi-0", camera="camera-2"),
    ]
    link = [_sample(4.0, edge_node="pi-0", camera="camera-0")]
    cache = np.zeros((2, 6))
    cache[0, 0] = 1
    observation = observation_from_samples(TINY, last, recent, camera_bytes, camera_bytes, link, cache, NOW, 10)
    assert observation.camera_rates[0, 0] == 2.0 and observation.camera_rates[0, 2] == 8.0
    assert observation.camera_rates.sum() == 10.0
    assert observation.camera_rate_trend[0, 0] == 1.0
    assert observation.link_quality[0] == 4.0
    # Cameras without a link sample get the median link state, not zero (no division by zero).
    assert observation.link_quality[1] == pytest.approx(float(np.median(TINY.link_states)))
    # Node use: 2 req/s x 28 ms on pi-0's 4 x 0.3 reference cores.
    assert observation.node_compute_utilisation[0] == pytest.approx(2 * 0.028 / 1.2)
    assert observation.hour_of_day == 7.5


def test_camera_rates_from_node_counts_and_camera_bytes_encode_like_the_per_pair_rates() -> None:
    """What the gateways export (per (node, model) requests, per camera bytes) gives the actor the same input.

    Each camera asks its own mix of models; the observation rebuilt from the aggregated series must
    encode to the same features as the exact per-(camera, model) rates, for any fleet.
    """
    rng = np.random.default_rng(7)
    exact = rng.uniform(0, 3, size=(TINY.num_cameras, TINY.num_models)) * (rng.random((TINY.num_cameras, 1)) < 0.8)
    exact[:, 1] *= 4  # the cameras' mixes differ: one model's share varies with the camera
    window_s = 30
    node_counts = node_rates_of(TINY, exact) * window_s
    requests = [
        _sample(float(node_counts[e, m]), edge_node=TINY.node_names[e], model=TINY.model_names[m], served_by="edge")
        for e in range(TINY.num_nodes)
        for m in range(TINY.num_models)
    ]
    input_bytes = TINY.model_input_mbit * 1e6 / 8
    camera_bytes = [
        _sample(float(exact[u] @ input_bytes * window_s), edge_node=TINY.node_names[TINY.camera_node[u]], camera=name)
        for u, name in enumerate(TINY.camera_names)
    ]
    cache = np.zeros((TINY.num_nodes, TINY.num_models))
    cache[0, :2] = 1
    link = rng.choice(TINY.link_states, size=TINY.num_cameras)
    link_samples = [_sample(float(q), camera=name) for q, name in zip(link, TINY.camera_names, strict=True)]
    rebuilt = observation_from_samples(
        TINY, requests, requests, camera_bytes, camera_bytes, link_samples, cache, NOW, window_s
    )
    recent = node_rates_of(TINY, exact) / TREND_WINDOW_SLOTS
    assert np.allclose(node_rates_of(TINY, rebuilt.camera_rates_recent_mean), recent)
    truth = Observation(exact, rebuilt.camera_rates_recent_mean, link, cache, rebuilt.node_compute_utilisation, 7.5)
    assert not np.allclose(rebuilt.camera_rates, exact)  # the per-pair split itself is not measured...
    for key, features in encode(TINY, truth).items():  # ...and the actor never needs it
        np.testing.assert_allclose(encode(TINY, rebuilt)[key], features, rtol=1e-5, atol=1e-6, err_msg=key)


def test_a_node_whose_cameras_sent_no_bytes_splits_its_requests_evenly() -> None:
    node_rates = np.zeros((TINY.num_nodes, TINY.num_models))
    node_rates[1, 0] = 3.0
    rates = camera_rates_of(TINY, node_rates, np.zeros(TINY.num_cameras))
    on_pi1 = TINY.camera_node == 1
    assert np.allclose(rates[on_pi1, 0], 3.0 / on_pi1.sum()) and rates[~on_pi1].sum() == 0


def test_requests_query_is_per_node_and_model_from_the_recording_rule() -> None:
    assert requests_query(30) == (
        "sum by (edge_node, model, served_by) (increase(edgeaigc:requests_total:sum_without_code[30s])) > 0"
    )
    assert requests_query(30, recorded=False) == (
        'sum by (edge_node, model, served_by) (increase(edgeaigc_requests_total{edge_node!=""}[30s])) > 0'
    )


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
        camera_bytes_query,
        duration_query,
        link_query,
        relayed_bytes_query,
        request_series_query,
        series,
    )

    assert series("m") == "m" and series("m", "", 'a="b"') == 'm{a="b"}'
    assert series("m", ' namespace="city", ', 'a="b"') == 'm{a="b", namespace="city"}'
    selector = 'namespace="city"'
    queries = [
        requests_query(30, selector),
        requests_query(30, selector, recorded=False),
        camera_bytes_query(30, selector),
        link_query(selector),
        duration_query(30, selector),
        request_series_query(selector),
        relayed_bytes_query(30, selector),
    ]
    for query in queries:
        metrics = query.count("edgeaigc_") + query.count("edgeaigc:")
        assert query.count(selector) == metrics, query
    assert 'edgeaigc_request_bytes_total{served_by="cloud", namespace="city"}' in queries[-1]
