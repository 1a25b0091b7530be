"""What the operator writes: in-place CPU resizes, hysteresis, unchanged objects left alone; observed figures."""

from __future__ import annotations

import copy
import datetime
import json
from types import SimpleNamespace
from typing import Any

import pytest
from kubernetes.client.exceptions import ApiException

from edgeaigc.inference.gateway.routing_table import EdgeNodeRoutes, Endpoint, LocalModel, RoutingTable
from edgeaigc.operator import constants as c
from edgeaigc.operator.builders import build_edge_deployment, build_service
from edgeaigc.operator.decide import Decision
from edgeaigc.operator.observe import (
    QUERIES_PER_READ,
    Observed,
    PrometheusObserver,
    observed_from_samples,
    request_series_query,
)
from edgeaigc.operator.reconcile import (
    HASH_ANNOTATION,
    Changes,
    PodIndex,
    Reconciler,
    Resize,
    RetryPolicy,
    container_cpu,
    cpu_changes,
    cpu_threshold,
    plan_writes,
    routing_table_to_write,
    status_message,
    with_hash,
    with_retries,
)
from edgeaigc.operator.status import policy_status
from edgeaigc.policy.scenario import load_scenario

POLICY = {"metadata": {"name": "city", "namespace": "ns", "uid": "u-1"}}
TINY = load_scenario("tiny")  # nodes pi-0, pi-1; models det-day, ...


def _deployment(model: str, node: str, cpu_m: int) -> dict[str, Any]:
    return build_edge_deployment(POLICY, model, node, node, cpu_m, 128, "image:1")


def _stored(manifest: dict[str, Any]) -> dict[str, Any]:
    """The object as the API returns it after the operator applied ``manifest``."""
    return with_hash(manifest)


def _pod(deployment: dict[str, Any], name: str, cpu_m: int, deleting: bool = False) -> dict[str, Any]:
    spec = copy.deepcopy(deployment["spec"]["template"]["spec"])
    for container in spec["containers"]:
        container["resources"]["limits"]["cpu"] = container["resources"]["requests"]["cpu"] = f"{cpu_m}m"
    metadata: dict[str, Any] = {"name": name, "labels": dict(deployment["spec"]["template"]["metadata"]["labels"])}
    if deleting:
        metadata["deletionTimestamp"] = "2026-11-27T07:00:00Z"
    return {"metadata": metadata, "spec": spec}


def test_the_pod_index_finds_each_deployments_live_pods_and_only_those() -> None:
    deployments = [_deployment(model, node, 200) for model in ("det-day", "cls-small") for node in ("pi-0", "pi-1")]
    pods = [_pod(d, f"{d['metadata']['name']}-{k}", 200) for d in deployments for k in range(2)]
    pods.append(_pod(deployments[0], "terminating", 200, deleting=True))
    index = PodIndex(pods)
    for deployment in deployments:
        found = [p["metadata"]["name"] for p in index.pods_of(deployment)]
        assert found == [f"{deployment['metadata']['name']}-{k}" for k in range(2)]


def test_deadband_is_50m_or_a_quarter() -> None:
    assert cpu_threshold(100) == 50 and cpu_threshold(200) == 50 and cpu_threshold(1000) == 250


def test_small_cpu_changes_are_kept_back_large_ones_written() -> None:
    desired = {"a": 1090, "b": 1400, "c": 300}
    current = {"a": 1000, "b": 1000}  # c is new
    assert cpu_changes(desired, current, {"a": "n", "b": "n", "c": "n"}, {"n": 4000}) == {"b": 1400, "c": 300}


def test_decreases_kept_back_are_written_when_the_node_would_overflow() -> None:
    # a: 2000 -> 1650 (below the step, kept back), b: 1800 -> 2300 (written): kept back the node holds 4300m > 4000m.
    desired, current, node_of = {"a": 1650, "b": 2300}, {"a": 2000, "b": 1800}, {"a": "n", "b": "n"}
    assert cpu_changes(desired, current, node_of, {"n": 4000}) == {"a": 1650, "b": 2300}
    # With room on the node the decrease stays kept back.
    assert cpu_changes(desired, current, node_of, {"n": 4300}) == {"b": 2300}


def test_a_new_model_on_the_node_counts_when_decreases_are_kept_back() -> None:
    # det-day 2000 -> 1950 is below the step; a new model arrives with 2050m: kept back, pi-0 would hold 4050m.
    old = _deployment("det-day", "pi-0", 2000)
    desired = [_deployment("det-day", "pi-0", 1950), _deployment("cls-small", "pi-0", 2050)]
    plan = plan_writes(desired, [_stored(old)], [_pod(old, "p", 2000)], {"pi-0": 4000})
    assert [m["metadata"]["name"] for m in plan.apply] == ["edgeaigc-cls-small-pi-0"]
    assert [(r.pod, r.cpu_m) for r in plan.resize] == [("p", 1950)]
    # With room for both the decrease stays kept back.
    plan = plan_writes(desired, [_stored(old)], [_pod(old, "p", 2000)], {"pi-0": 4100})
    assert plan.resize == []


def test_a_cpu_change_resizes_the_pods_and_leaves_the_template_alone() -> None:
    old, new = _deployment("det-day", "pi-0", 1000), _deployment("det-day", "pi-0", 1500)
    service = build_service(new)
    existing = [_stored(old), _stored(service)]
    pods = [_pod(old, "det-day-1", 1000), _pod(old, "det-day-2", 1000, deleting=True)]
    plan = plan_writes([new, service], existing, pods, {"pi-0": 4000})
    assert plan.apply == [] and plan.delete == [] and plan.unchanged == 1  # the Service
    assert [(r.pod, r.cpu_m) for r in plan.resize] == [("det-day-1", 1500)]  # the terminating pod is left alone
    assert plan.cpu == {old["metadata"]["name"]: 1500}
    # Where the cluster cannot resize in place, the fallback puts the CPU in the template.
    fallback = plan.fallback[old["metadata"]["name"]]
    assert container_cpu(fallback["spec"]["template"]["spec"]) == 1500
    assert plan.writes == 1  # the resize: nothing is written on the Deployment


def test_a_steady_plan_writes_nothing_and_a_small_change_is_not_written() -> None:
    old = _deployment("det-day", "pi-0", 1000)
    existing, pods = [_stored(old)], [_pod(old, "p", 1000)]
    for cpu in (1000, 1050, 950):
        plan = plan_writes([_deployment("det-day", "pi-0", cpu)], existing, pods, {"pi-0": 4000})
        assert plan.writes == 0 and plan.unchanged == 1, cpu


def test_a_pod_recreated_from_an_older_template_is_resized_to_its_siblings_cpu() -> None:
    old = _deployment("det-day", "pi-0", 1000)
    pods = [_pod(old, "resized-earlier", 1500), _pod(old, "fresh", 1000)]  # "fresh" came from the 1000m template
    # The plan now wants 1450m: within the hysteresis step of the 1500m the Deployment has, so not a change...
    plan = plan_writes([_deployment("det-day", "pi-0", 1450)], [_stored(old)], pods, {"pi-0": 4000})
    # ...but the recreated pod is brought to the CPU its sibling has.
    assert [(r.pod, r.cpu_m) for r in plan.resize] == [("fresh", 1500)] and plan.cpu == {} and plan.apply == []


def test_without_pods_the_template_is_the_current_cpu_and_carries_a_change() -> None:
    old = _deployment("det-day", "pi-0", 1000)
    plan = plan_writes([_deployment("det-day", "pi-0", 1050)], [_stored(old)], [], {"pi-0": 4000})
    assert plan.writes == 0 and plan.unchanged == 1
    # A change beyond the step with no pod to resize: the template carries it, so that the pod the
    # control plane makes later starts at it (not at 1000m, which its node may no longer hold for it).
    plan = plan_writes([_deployment("det-day", "pi-0", 1500)], [_stored(old)], [], {"pi-0": 4000})
    assert plan.resize == [] and plan.writes == 1
    (applied,) = plan.apply
    assert container_cpu(applied["spec"]["template"]["spec"]) == 1500
    # Stored so, it is steady: the hash leaves the CPU out, and the template is now the current CPU.
    again = plan_writes([_deployment("det-day", "pi-0", 1500)], [applied], [], {"pi-0": 4000})
    assert again.writes == 0 and again.unchanged == 1
    # Once its pod runs at the template's CPU, a change is a resize again.
    pod = _pod(applied, "det-day-pod", 1500)
    resized = plan_writes([_deployment("det-day", "pi-0", 800)], [applied], [pod], {"pi-0": 4000})
    assert [r.cpu_m for r in resized.resize] == [800] and resized.apply == []


def test_a_changed_shape_is_applied_whole_and_new_objects_get_their_hash() -> None:
    old = _deployment("det-day", "pi-0", 1000)
    changed = build_edge_deployment(POLICY, "det-day", "pi-0", "pi-0", 1000, 256, "image:1")  # more memory
    fresh = _deployment("cls-small", "pi-0", 700)
    plan = plan_writes([changed, fresh], [_stored(old), _stored(_deployment("gone", "pi-1", 100))], [])
    assert [m["metadata"]["name"] for m in plan.apply] == [changed["metadata"]["name"], fresh["metadata"]["name"]]
    assert plan.apply[1]["metadata"]["annotations"][HASH_ANNOTATION]
    assert [d[2] for d in plan.delete] == ["edgeaigc-gone-pi-1"] and plan.resize == []


def test_decreases_are_resized_before_increases() -> None:
    a_old, b_old = _deployment("det-day", "pi-0", 2000), _deployment("cls-small", "pi-0", 1000)
    a_new, b_new = _deployment("det-day", "pi-0", 1000), _deployment("cls-small", "pi-0", 2000)
    pods = [_pod(b_old, "b", 1000), _pod(a_old, "a", 2000)]
    plan = plan_writes([a_new, b_new], [_stored(a_old), _stored(b_old)], pods, {"pi-0": 4000})
    assert [r.pod for r in plan.resize] == ["a", "b"]


def _table(share: float, bandwidth: float, models: tuple[str, ...] = ("det-day",)) -> RoutingTable:
    local = {m: LocalModel((Endpoint(f"http://{m}:8080"),), share) for m in models}
    return RoutingTable(0, {"pi-0": EdgeNodeRoutes(local, {"cam-0": bandwidth})}, {"det-day": "http://cloud:8080"})


def test_the_routing_table_keeps_its_generation_until_routes_or_shares_move() -> None:
    old = routing_table_to_write(None, _table(0.5, 0.5))
    assert old.generation == 1
    assert routing_table_to_write(old, _table(0.52, 0.49)) is old  # within the step: not rewritten
    assert routing_table_to_write(old, _table(0.6, 0.5)).generation == 2
    assert routing_table_to_write(old, _table(0.5, 0.5, ("det-day", "cls-small"))).generation == 2


def _sample(value: float, **labels: str) -> dict:
    return {"metric": labels, "value": [1764229800.0, str(value)]}


def test_observed_figures_from_query_results() -> None:
    det = TINY.model_names.index("det-day")
    served = [
        _sample(30, edge_node="pi-0", model="det-day", served_by="edge"),
        _sample(10, edge_node="pi-0", model="det-day", served_by="cloud"),
        _sample(5, edge_node="pi-9", model="nope", served_by="cloud"),  # unknown: hit rate only
    ]
    observed = observed_from_samples(TINY, served, [_sample(9.0)], [_sample(45.0)], [_sample(2e9)], window_s=60)
    assert observed.hit_rate == pytest.approx(30 / 45)
    assert observed.mean_response_time_s == pytest.approx(0.2)
    work = TINY.model_work_s[det]
    per_minute = (
        10 * work / TINY.cloud_core_speed * TINY.cloud_price_per_core_second
        + 2 * TINY.price_per_gb_transfer
        + 30 * work / TINY.node_core_speed[0] * TINY.node_energy_price_per_core_second[0]
    )
    assert observed.cost_per_hour == pytest.approx(per_minute * 60)
    assert observed_from_samples(TINY, [], [], [], [], 60) == Observed(None, None, None)


def test_an_observation_sends_a_fixed_number_of_queries_none_per_camera_and_model() -> None:
    """The same queries whatever the fleet's size, each returning every series of its figure."""
    requests = [
        _sample(30, edge_node="pi-0", model="det-day", served_by="edge"),
        _sample(10, edge_node="pi-0", model="det-day", served_by="cloud"),
    ]
    sent: list[str] = []

    class Observer(PrometheusObserver):
        def _send(self, query: str) -> list[dict[str, Any]]:
            sent.append(query)
            if query == request_series_query():  # which request series exist
                return [_sample(2, source="raw")] + ([_sample(2, source="recorded")] if self.recorded_answers else [])
            if "edgeaigc:requests_total" in query:
                return requests if self.recorded_answers else []
            if "edgeaigc_request_duration_seconds" in query:
                return [_sample(8.0, part="sum"), _sample(40.0, part="count")]
            return [_sample(0.0)] if "edgeaigc_requests_total" not in query else requests

        recorded_answers = True

    observer = Observer("http://prometheus:9090")
    samples = observer.read(60)
    assert len(sent) == QUERIES_PER_READ == observer.queries_sent
    assert all(query.count("camera") == 0 or "model" not in query for query in sent), sent
    assert all("edgeaigc_requests_total" not in query for query in sent)  # the recording rule's series
    observed = samples.observed(TINY)
    assert observed.hit_rate == pytest.approx(30 / 40) and observed.mean_response_time_s == pytest.approx(8 / 40)
    # A Prometheus without the chart's rules: the gateways' counters, after asking which series exist.
    sent.clear()
    without_rules = Observer("http://prometheus:9090")
    without_rules.recorded_answers = False
    assert without_rules.read(60).observed(TINY).hit_rate == pytest.approx(30 / 40)
    assert not without_rules.recorded and sent.count(request_series_query()) >= 1
    assert QUERIES_PER_READ + 1 < len(sent) <= QUERIES_PER_READ + 4  # each request read: rule, series, counters
    sent.clear()
    without_rules.read(60)
    assert len(sent) == QUERIES_PER_READ and not any("edgeaigc:requests_total" in query for query in sent)


def test_status_shows_observed_next_to_predicted() -> None:
    decision = Decision(
        placement={"pi-0": ["det-day"]},
        predicted={"hitRate": 0.7, "meanResponseTimeSeconds": 0.12, "costPerHour": 0.5, "downloadCost": 0.01},
        observed=Observed(0.65, 0.1234, 0.61),
    )
    status = policy_status(decision, {}, datetime.datetime(2026, 11, 27, tzinfo=datetime.UTC))
    assert status["observed"] == {"hitRate": "65.0%", "meanResponseTimeSeconds": "0.123", "costPerHour": "0.6100"}
    assert status["predicted"]["costPerHour"] == "0.5000" and status["predicted"]["downloadCost"] == "0.0100"
    assert status["predicted"]["meanResponseTimeSeconds"] == "0.120"


def test_where_the_kubelet_cannot_resize_the_template_carries_the_cpu() -> None:
    old, new = _deployment("det-day", "pi-0", 1000), _deployment("det-day", "pi-0", 1500)
    pod = _pod(old, "p", 1000)
    pod["status"] = {"containerStatuses": [{"name": "inference", "state": {"running": {}}}]}  # no resources reported
    plan = plan_writes([new], [_stored(old)], [pod], {"pi-0": 4000})
    assert plan.resize == [] and plan.cpu == {} and len(plan.apply) == 1
    assert container_cpu(plan.apply[0]["spec"]["template"]["spec"]) == 1500
    pod["status"]["containerStatuses"][0]["resources"] = {"limits": {"cpu": "1"}}
    assert [r.pod for r in plan_writes([new], [_stored(old)], [pod], {"pi-0": 4000}).resize] == ["p"]


def _api_error(status: int, message: str = "", retry_after: str | None = None) -> ApiException:
    error = ApiException(status=status, reason="Error")
    error.body = json.dumps({"kind": "Status", "message": message, "code": status})
    error.headers = {"Retry-After": retry_after} if retry_after is not None else {}
    return error


def test_a_server_error_or_throttling_is_retried_with_backoff_or_retry_after() -> None:
    failures = [_api_error(500, "etcdserver: request timed out"), _api_error(429, retry_after="3"), _api_error(503)]
    sleeps: list[float] = []

    def call() -> str:
        if failures:
            raise failures.pop(0)
        return "done"

    assert with_retries(call, "apply", RetryPolicy(attempts=4), sleeps.append) == "done"
    assert sleeps == [0.5, 3.0, 2.0]  # backoff 0.5 s, the server's Retry-After, backoff 0.5 x 2^2


def test_a_lasting_server_error_is_raised_after_the_last_try_and_a_client_error_at_once() -> None:
    sleeps: list[float] = []
    attempts = []

    def failing(status: int) -> None:
        attempts.append(status)
        raise _api_error(status, "failed to allocate a serviceIP: range is full")

    with pytest.raises(ApiException) as raised:
        with_retries(lambda: failing(500), "apply", RetryPolicy(attempts=3, max_delay_s=0.7), sleeps.append)
    assert attempts == [500] * 3 and sleeps == [0.5, 0.7]
    assert status_message(raised.value) == "failed to allocate a serviceIP: range is full"
    attempts.clear()
    with pytest.raises(ApiException):
        with_retries(lambda: failing(422), "apply", RetryPolicy(), sleeps.append)
    assert attempts == [422]


class _FakeResource:
    """The dynamic client's resource: records applies and deletes, fails the applies it is told to."""

    def __init__(self, calls: list[tuple[str, str]], failing: set[str]) -> None:
        self.calls, self.failing = calls, failing
        self.subresources: dict[str, Any] = {"resize": SimpleNamespace(patch=self.resize)}

    def resize(self, name: str, body: dict[str, Any], **_: Any) -> None:
        cpu = body["spec"]["containers"][0]["resources"]["limits"]["cpu"]
        self.calls.append(("resize", f"{name}={cpu}"))

    def server_side_apply(self, body: dict[str, Any], name: str, **_: Any) -> None:
        self.calls.append(("apply", name))
        if name in self.failing:
            raise _api_error(500, f'failed to allocate a serviceIP for Service "{name}": range is full')

    def delete(self, name: str, **_: Any) -> None:
        self.calls.append(("delete", name))


def test_a_failed_apply_deletes_nothing_so_the_last_placement_keeps_serving() -> None:
    calls: list[tuple[str, str]] = []
    sleeps: list[float] = []
    resource = _FakeResource(calls, failing={"edgeaigc-det-day-pi-1"})
    reconciler = Reconciler.__new__(Reconciler)
    reconciler.client = SimpleNamespace(resources=SimpleNamespace(get=lambda **_: resource))
    reconciler.retry, reconciler._sleep = RetryPolicy(attempts=2), sleeps.append
    new = [build_service(_deployment("det-day", node, 500)) for node in ("pi-0", "pi-1")]
    changes = Changes(apply=new, delete=[("v1", "Service", "edgeaigc-det-night-pi-0")], unchanged=0)
    with pytest.raises(ApiException):
        reconciler.apply("ns", changes)
    names = [m["metadata"]["name"] for m in new]
    # The two applies go at once (either may come first); the delete never comes.
    assert sorted(calls) == sorted([("apply", names[0]), ("apply", names[1]), ("apply", names[1])])
    assert sleeps == [0.5]


def test_writes_go_in_parallel_within_a_step_and_the_steps_in_order() -> None:
    calls: list[tuple[str, str]] = []
    resource = _FakeResource(calls, failing=set())
    reconciler = Reconciler.__new__(Reconciler)
    reconciler.client = SimpleNamespace(resources=SimpleNamespace(get=lambda **_: resource))
    reconciler.retry, reconciler._sleep = RetryPolicy(), lambda _: None
    deployments = [_deployment(model, "pi-0", 500) for model in ("det-day", "cls-small", "flow-urban")]
    routing = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "routing"}, "data": {}}
    # The site peers go before the Deployments whose new pods read them when they start.
    peers_labels = {c.LABEL_COMPONENT: c.COMPONENT_PEERS}
    peers = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "peers", "labels": peers_labels}}
    changes = Changes(
        apply=[routing, *deployments, *(build_service(d) for d in deployments), peers],
        delete=[("v1", "Service", "old"), ("apps/v1", "Deployment", "old")],
        unchanged=0,
        resize=[Resize("up", "a", 900, 500), Resize("down-1", "b", 300, 600), Resize("down-2", "c", 100, 200)],
    )
    written = reconciler.apply("ns", changes)
    assert (written.resize, written.apply, written.delete) == (3, 8, 2)
    # Increases share a step with the new Deployments and Services (after the peers, which only new pods read).
    step = {"resize down": 0, "apply peers": 1, "resize up": 2, "apply": 2, "apply routing": 3, "delete": 4}
    steps = [
        step[f"{verb} {'up' if name.startswith('up') else 'down'}" if verb == "resize" else
             "apply routing" if name == "routing" else "apply peers" if name == "peers" else verb]
        for verb, name in calls
    ]  # fmt: skip
    assert steps == sorted(steps) and len(calls) == 13
    assert list(written.step_seconds) == ["lower", "peers", "raise+apply", "routing", "delete"]
