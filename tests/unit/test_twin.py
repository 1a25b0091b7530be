"""The traffic twin's pure parts: placement from Deployments, shares, per-request times, metrics."""

from __future__ import annotations

import copy
import re
import shutil
import subprocess
import sys
from typing import Any

import numpy as np
import pytest
import yaml
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from edgeaigc.cluster.twin.fleet_source import Fleet, FleetUnavailable
from edgeaigc.cluster.twin.placement import bandwidth_shares, compute_shares, cpu_limit_cores, plan_for
from edgeaigc.cluster.twin.slots import response_seconds, serve_slot
from edgeaigc.cluster.twin.twin import Twin, trace_slots_within
from edgeaigc.inference.gateway.routing_table import EdgeNodeRoutes, RoutingTable
from edgeaigc.inference.metrics_contract import REQUEST_LATENCY_BUCKETS
from edgeaigc.operator import builders
from edgeaigc.policy.fleet import scenario_from_resources
from edgeaigc.policy.system_model import Plan, evaluate_slot
from tests.e2e.conftest import REPO

EXAMPLES = [d for path in sorted((REPO / "examples").glob("*.yaml")) for d in yaml.safe_load_all(path.read_text())]
POLICY = {
    **next(d for d in EXAMPLES if d["kind"] == "PlacementPolicy"),
    "metadata": {"name": "traffic-city", "namespace": "traffic-city", "uid": "u-1"},
}
CORES = {f"pi-{i}": 4.0 for i in range(5)}


def _kind(kind: str) -> list[dict[str, Any]]:
    return [d for d in EXAMPLES if d["kind"] == kind]


def _fleet() -> Fleet:
    return Fleet(POLICY, _kind("EdgeNode"), _kind("InferenceModel"), _kind("Camera"))


def edge_deployment(model: str, node: str, cpu_m: int, ready: int | None = 1, policy: dict | None = None) -> dict:
    deployment = builders.build_edge_deployment(policy or POLICY, model, node, node, cpu_m, 128, "x/y:1")
    if ready is not None:
        deployment["status"] = {"replicas": 1, "readyReplicas": ready}
    return deployment


def test_cpu_limit_is_read_from_the_containers() -> None:
    assert cpu_limit_cores(edge_deployment("cls-small", "pi-0", 500)) == pytest.approx(0.5)
    unlimited = edge_deployment("cls-small", "pi-0", 500)
    del unlimited["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"]
    assert cpu_limit_cores(unlimited) is None


def test_only_ready_deployments_of_the_policy_are_cached_with_their_cpu_share() -> None:
    other = {**POLICY, "metadata": {**POLICY["metadata"], "name": "other"}}
    deployments = [
        edge_deployment("cls-small", "pi-0", 1000),
        edge_deployment("det-yolox-tiny", "pi-0", 2000),
        edge_deployment("cls-large", "pi-1", 1000, ready=0),  # scheduled, not ready yet
        edge_deployment("cls-large", "pi-2", 1000, ready=None),  # no status at all
        edge_deployment("cls-small", "pi-3", 1000, policy=other),
        edge_deployment("cls-small", "pi-9", 1000),  # not an EdgeNode of the fleet
    ]
    shares = compute_shares(deployments, "traffic-city", CORES)
    assert shares == {("pi-0", "cls-small"): pytest.approx(0.25), ("pi-0", "det-yolox-tiny"): pytest.approx(0.5)}


def test_shares_are_clipped_and_renormalised_per_node() -> None:
    deployments = [
        edge_deployment("cls-small", "pi-0", 6000),  # more than the node: clipped to 1
        edge_deployment("det-yolox-tiny", "pi-0", 2000),
        edge_deployment("cls-large", "pi-1", 1000, ready=2),  # two ready replicas: twice the CPU
    ]
    unlimited = edge_deployment("cls-small", "pi-2", 1000)
    del unlimited["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"]
    shares = compute_shares([*deployments, unlimited], "traffic-city", CORES)
    assert shares[("pi-0", "cls-small")] == pytest.approx(1 / 1.5)
    assert shares[("pi-0", "det-yolox-tiny")] == pytest.approx(0.5 / 1.5)
    assert shares[("pi-1", "cls-large")] == pytest.approx(0.5)
    assert shares[("pi-2", "cls-small")] == 1.0


def test_a_pod_resized_in_place_counts_with_the_cpu_its_kubelet_reports() -> None:
    deployment = edge_deployment("cls-small", "pi-0", 1000)
    pod = {
        "metadata": {"name": "p", "labels": dict(deployment["spec"]["template"]["metadata"]["labels"])},
        "spec": copy.deepcopy(deployment["spec"]["template"]["spec"]),
        "status": {"conditions": [{"type": "Ready", "status": "True"}]},
    }
    pod["spec"]["containers"][0]["resources"]["limits"]["cpu"] = "2"  # resized; the template still says 1000m
    assert compute_shares([deployment], "traffic-city", CORES, [pod]) == {("pi-0", "cls-small"): pytest.approx(0.5)}
    # The kubelet has not actuated the resize yet: its reported CPU counts.
    pod["status"]["containerStatuses"] = [{"name": "inference", "resources": {"limits": {"cpu": "1500m"}}}]
    assert compute_shares([deployment], "traffic-city", CORES, [pod]) == {("pi-0", "cls-small"): pytest.approx(0.375)}
    not_ready = {**pod, "status": {"conditions": [{"type": "Ready", "status": "False"}]}}
    assert compute_shares([deployment], "traffic-city", CORES, [not_ready]) == {("pi-0", "cls-small"): 0.25}


def test_plan_takes_bandwidth_from_the_routing_table_else_splits_equally() -> None:
    scenario = scenario_from_resources(POLICY, _kind("EdgeNode"), _kind("InferenceModel"), _kind("Camera"))
    pi0 = [scenario.camera_names[u] for u in np.flatnonzero(scenario.camera_node == 0)]
    pi1 = [scenario.camera_names[u] for u in np.flatnonzero(scenario.camera_node == 1)]
    weights = {name: float(i + 1) for i, name in enumerate(pi0)}
    table = RoutingTable(
        1,
        {
            "pi-0": EdgeNodeRoutes({}, {name: w / sum(weights.values()) for name, w in weights.items()}),
            "pi-1": EdgeNodeRoutes({}, {pi1[0]: 0.5}),  # incomplete: equal split instead
        },
        {},
    )
    plan = plan_for(scenario, {("pi-0", "cls-small"): 0.3, ("pi-0", "unknown-model"): 0.2}, bandwidth_shares(table))
    m = scenario.model_names.index("cls-small")
    assert plan.cache.sum() == 1 and plan.cache[0, m] == 1 and plan.compute_share[0, m] == pytest.approx(0.3)
    cameras0 = np.flatnonzero(scenario.camera_node == 0)
    np.testing.assert_allclose(plan.bandwidth_share[cameras0], np.array(list(weights.values())) / sum(weights.values()))
    cameras1 = np.flatnonzero(scenario.camera_node == 1)
    np.testing.assert_allclose(plan.bandwidth_share[cameras1], 1 / len(cameras1))
    assert plan_for(scenario, {}, {}).cache.sum() == 0


def test_per_request_times_add_up_to_the_system_models_slot() -> None:
    scenario = scenario_from_resources(POLICY, _kind("EdgeNode"), _kind("InferenceModel"), _kind("Camera"))
    rng = np.random.default_rng(3)
    rates = rng.uniform(0, 2, size=(scenario.num_cameras, scenario.num_models))
    link = rng.choice(scenario.link_states, size=scenario.num_cameras)
    cache = (rng.random((scenario.num_nodes, scenario.num_models)) < 0.3).astype(float)
    share = cache / np.maximum(cache.sum(axis=1, keepdims=True), 1)
    bandwidth = np.full(scenario.num_cameras, 1 / 8)
    plan = Plan(cache, share, bandwidth)
    outcome = evaluate_slot(scenario, plan, rates, link, np.zeros_like(cache))
    seconds, hit = response_seconds(scenario, plan, rates, link)
    counts = rates * scenario.slot_seconds
    assert (counts * seconds).sum() == pytest.approx(outcome.response_time_sum_s, rel=1e-9)
    assert (counts * hit).sum() == pytest.approx(outcome.hits, rel=1e-9)
    # A tick's outcome counts exactly the tick's requests.
    tick_outcome, tick_seconds, _ = serve_slot(scenario, plan, np.round(rates * 5), link, np.zeros_like(cache), 5.0)
    assert tick_outcome.requests == pytest.approx(np.round(rates * 5).sum())
    assert tick_seconds.shape == (scenario.num_cameras, scenario.num_models)


class FakeSource:
    """The API server as the twin sees it, with switchable failures."""

    def __init__(self) -> None:
        self.fleet_value = _fleet()
        self.deployments: list[dict] = []
        self.pods: list[dict] = []
        self.table: str | None = None
        self.failing = False

    def fleet(self, namespace: str, policy: str | None) -> Fleet:
        if self.failing:
            raise OSError("connection refused")
        if policy not in (None, "traffic-city"):
            raise FleetUnavailable("no such policy")
        return self.fleet_value

    def edge_deployments(self, namespace: str, policy: str) -> list[dict]:
        if self.failing:
            raise OSError("connection refused")
        return copy.deepcopy(self.deployments)

    def edge_pods(self, namespace: str, policy: str) -> list[dict]:
        if self.failing:
            raise OSError("connection refused")
        return copy.deepcopy(self.pods)

    def routing_table(self, namespace: str, policy: str) -> str | None:
        if self.failing:
            raise OSError("connection refused")
        return self.table


def _scrape(twin: Twin) -> str:
    """What Prometheus reads from the twin once its last slot has played (its own exposition, checked against
    the client library's below)."""
    metrics, clock = twin.metrics, twin.metrics.clock
    metrics.clock = lambda: clock() + 1e6
    try:
        return metrics.exposition().decode()
    finally:
        metrics.clock = clock


class FakeClock:
    """A monotonic clock the test moves."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _samples(text: str, name: str) -> list[tuple[dict[str, str], float]]:
    return [
        (sample.labels, sample.value)
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == name
    ]


def test_twin_serves_everything_from_the_cloud_until_a_replica_is_ready() -> None:
    source = FakeSource()
    twin = Twin(source, "traffic-city", seed=1, tick_seconds=5.0, trace_slots=50)
    first = twin.step()
    assert first is not None and first.outcome.requests > 0 and first.outcome.hit_rate == 0
    text = _scrape(twin)
    requests = _samples(text, "edgeaigc_requests_total")
    scenario = first.scenario
    # Every (node, model, place) series exists from the start, at zero until used; none per camera and model.
    assert len(requests) == scenario.num_nodes * scenario.num_models * 2
    assert all("camera" not in labels for labels, _ in requests)
    assert {labels["served_by"] for labels, value in requests if value > 0} == {"cloud"}
    assert sum(value for _, value in requests) == first.counts.sum()
    # The busiest model on pi-0 gets a replica.
    on_pi0 = first.counts[scenario.camera_node == 0].sum(axis=0)
    model = scenario.model_names[int(np.argmax(on_pi0))]
    source.deployments = [edge_deployment(model, "pi-0", 2000)]
    second = twin.step()
    assert second is not None
    m = scenario.model_names.index(model)
    cameras = np.flatnonzero(scenario.camera_node == 0)
    assert second.hit[cameras, m].all() and second.hit.sum() == len(cameras)
    text = _scrape(twin)
    requests = _samples(text, "edgeaigc_requests_total")
    edge = [(labels, value) for labels, value in requests if labels["served_by"] == "edge" and value > 0]
    assert edge and {(labels["edge_node"], labels["model"]) for labels, _ in edge} == {("pi-0", model)}
    assert sum(value for _, value in edge) == second.counts[cameras, m].sum()
    (hit_rate,) = _samples(text, "edgeaigc_twin_hit_rate")
    assert hit_rate[1] == pytest.approx(second.outcome.hit_rate) and hit_rate[1] > 0
    # The model was downloaded once: the next slot pays no download.
    third = twin.step()
    assert second.outcome.downloads == 1 and third is not None and third.outcome.downloads == 0


def test_histogram_counts_and_bytes_match_the_requests() -> None:
    source = FakeSource()
    twin = Twin(source, "traffic-city", seed=2, tick_seconds=2.0, trace_slots=50)
    served = [twin.step() for _ in range(3)]
    text = _scrape(twin)
    total = sum(s.counts.sum() for s in served if s is not None)
    counts = _samples(text, "edgeaigc_request_duration_seconds_count")
    assert sum(value for _, value in counts) == pytest.approx(total)
    inf = _samples(text, "edgeaigc_request_duration_seconds_bucket")
    assert sum(value for labels, value in inf if labels["le"] == "+Inf") == pytest.approx(total)
    assert {labels["le"] for labels, _ in inf} >= {"0.001", "0.1", "10.0", "+Inf"}
    scenario = served[0].scenario if served[0] else None
    assert scenario is not None
    expected_bytes = sum(
        (s.counts.sum(axis=0) * scenario.model_input_mbit * 1e6 / 8).sum() for s in served if s is not None
    )
    assert sum(v for _, v in _samples(text, "edgeaigc_request_bytes_total")) == pytest.approx(expected_bytes)
    # Each camera's bytes: its own requests times their models' input sizes, at the node it is attached to.
    camera_bytes = {
        labels["camera"]: (labels["edge_node"], v)
        for labels, v in _samples(text, "edgeaigc_camera_request_bytes_total")
    }
    assert len(camera_bytes) == scenario.num_cameras
    for u, camera in enumerate(scenario.camera_names):
        sent = sum(s.counts[u] @ (scenario.model_input_mbit * 1e6 / 8) for s in served if s is not None)
        assert camera_bytes[camera] == (scenario.node_names[scenario.camera_node[u]], pytest.approx(sent))
    # Each model's response times summed, per place: with the request counts, its mean.
    seconds = sum(v for _, v in _samples(text, "edgeaigc_request_seconds_total"))
    assert seconds == pytest.approx(sum(float((s.counts * s.seconds).sum()) for s in served if s is not None))
    # The response-time histogram is per node and place: 2 x nodes series of each bucket.
    assert len(inf) == 2 * scenario.num_nodes * (len(REQUEST_LATENCY_BUCKETS) + 1)
    links = _samples(text, "edgeaigc_camera_link_spectral_efficiency")
    assert len(links) == scenario.num_cameras and all(v in scenario.link_states for _, v in links)
    assert _samples(text, "edgeaigc_twin_slot")[0][1] == 3


def test_request_rates_are_per_real_second_whatever_the_slot_length() -> None:
    """Counts per tick follow rate x tick_seconds, not rate x slot_seconds (the time mapping)."""
    twin = Twin(FakeSource(), "traffic-city", seed=4, tick_seconds=2.0, trace_slots=200)
    served = [s for s in (twin.step() for _ in range(100)) if s is not None]
    counted = sum(s.counts.sum() for s in served)
    expected = sum(s.expected_rates.sum() * 2.0 for s in served)
    assert served[0].scenario.slot_seconds == 60  # the policy's planning slot, not the tick
    assert counted == pytest.approx(expected, rel=0.02)


def test_api_errors_keep_the_last_placement_and_a_missing_fleet_serves_nothing() -> None:
    source = FakeSource()
    source.deployments = [edge_deployment("cls-small", "pi-0", 1000)]
    twin = Twin(source, "traffic-city", seed=5, tick_seconds=1.0, trace_slots=20)
    before = twin.step()
    source.failing = True
    during = twin.step()
    assert before is not None and during is not None
    np.testing.assert_array_equal(before.hit, during.hit)
    assert during.hit.any()
    assert Twin(source, "traffic-city").step() is None  # never read a fleet: nothing to serve
    assert Twin(FakeSource(), "traffic-city", policy="absent").step() is None


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool not installed (apt-get install prometheus)")
def test_the_twins_scrape_passes_promtool() -> None:
    source = FakeSource()
    source.deployments = [edge_deployment("cls-small", "pi-0", 1000)]
    twin = Twin(source, "traffic-city", seed=6, tick_seconds=1.0, trace_slots=20)
    twin.step()
    result = subprocess.run(
        ["promtool", "check", "metrics"], input=_scrape(twin), capture_output=True, text=True, timeout=30, check=False
    )
    assert result.returncode == 0 and not (result.stdout + result.stderr).strip(), result.stdout + result.stderr


def _twin_contract() -> dict[str, tuple[str, set[str]]]:
    """name -> (type, labels) from the "Gateway and traffic-twin metrics" table of the contract."""
    text = (REPO / "docs" / "metrics-contract.md").read_text()
    section = text[text.index("## Gateway and traffic-twin metrics") :].splitlines()[1:]
    end = next((i for i, line in enumerate(section) if line.startswith("#")), len(section))
    rows = {}
    for line in section[:end]:  # up to the next heading (the gateway's own metrics follow)
        match = re.match(r"^\| (counter|gauge|histogram) \| `(edgeaigc_\w+)` \|([^|]*)\|", line)
        if match:
            kind, name, labels = match.groups()
            rows[name] = (kind, set(re.findall(r"`(\w+)`", labels)))
    return rows


def test_the_twin_exports_exactly_the_metrics_of_its_contract_section() -> None:
    source = FakeSource()
    source.deployments = [edge_deployment("cls-small", "pi-0", 1000)]
    twin = Twin(source, "traffic-city", seed=8, tick_seconds=1.0, trace_slots=20)
    twin.step()
    families = {family.name: family for family in text_string_to_metric_families(_scrape(twin))}
    contract = _twin_contract()
    assert len(contract) == 12
    assert {name.removesuffix("_total") if kind == "counter" else name for name, (kind, _) in contract.items()} == set(
        families
    )
    for name, (kind, labels) in contract.items():
        family = families[name.removesuffix("_total") if kind == "counter" else name]
        assert family.type == kind, name
        assert family.samples, name
        for sample in family.samples:
            assert set(sample.labels) - {"le"} == labels, (name, sample)


def test_the_twin_does_not_import_the_operator() -> None:
    """DESIGN: nothing imports the operator; the twin reads what it writes through ``edgeaigc.policy``."""
    probe = (
        "import sys, edgeaigc.cluster.twin.cli; "
        "print(sorted(m for m in sys.modules if m.startswith('edgeaigc.operator')))"
    )
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"


def test_the_twins_fast_exposition_is_the_client_librarys_text_format() -> None:
    source = FakeSource()
    source.deployments = [edge_deployment("cls-small", "pi-0", 1000)]
    twin = Twin(source, "traffic-city", seed=7, tick_seconds=1.0, trace_slots=20)
    for _ in range(3):
        twin.step()
    registry = CollectorRegistry(auto_describe=False)
    registry.register(twin.metrics)
    now = twin.metrics.clock() + 0.4  # both in the middle of the last slot's tick
    twin.metrics.clock = lambda: now
    assert twin.metrics.exposition() == generate_latest(registry)


def _total(text: str, name: str) -> float:
    return sum(value for _, value in _samples(text, name))


def test_a_slot_is_counted_while_its_tick_plays_not_all_at_once() -> None:
    """A scrape in the middle of a tick sees that share of the slot; the next slot adds the rest.

    Counters that stepped once per tick made increase() over one tick's window read zero or 1.5 slots,
    by the phase of the scrapes alone (every decision of the 1000-node benchmark read zero).
    """
    clock = FakeClock()
    twin = Twin(FakeSource(), "traffic-city", seed=9, tick_seconds=60.0, trace_slots=20)
    twin.metrics.clock = clock
    first = twin.step()
    assert first is not None and first.counts.sum() > 0
    names = (
        "edgeaigc_requests_total",
        "edgeaigc_camera_request_bytes_total",
        "edgeaigc_request_duration_seconds_count",
    )
    at_start = {name: _total(twin.metrics.exposition().decode(), name) for name in names}
    assert at_start == {name: 0.0 for name in names}
    clock.now += 15.0
    quarter = twin.metrics.exposition().decode()
    assert _total(quarter, "edgeaigc_requests_total") == pytest.approx(first.counts.sum() / 4)
    assert _total(quarter, "edgeaigc_request_duration_seconds_count") == pytest.approx(first.counts.sum() / 4)
    clock.now += 45.0
    assert _total(twin.metrics.exposition().decode(), "edgeaigc_requests_total") == pytest.approx(first.counts.sum())
    # Late: the step comes 90 s after the first. The first slot is counted whole, the second is played over 90 s.
    clock.now += 30.0
    second = twin.step()
    assert second is not None
    clock.now += 45.0
    half = _total(twin.metrics.exposition().decode(), "edgeaigc_requests_total")
    assert half == pytest.approx(first.counts.sum() + second.counts.sum() / 2)
    # Gauges are the last slot's at once.
    (hit_rate,) = _samples(twin.metrics.exposition().decode(), "edgeaigc_twin_hit_rate")
    assert hit_rate[1] == pytest.approx(second.outcome.hit_rate)


def test_a_large_fleets_trace_is_cut_to_the_memory_budget() -> None:
    # 4000 cameras x 50 models: a day of 60-s slots would take ~12 GiB to draw; 512 MiB holds 41 slots.
    assert trace_slots_within(4000, 50, 60.0) == 41
    assert trace_slots_within(40, 12, 60.0) == 1440  # a small fleet still gets its day
    assert trace_slots_within(10**6, 10**3, 60.0) == 1  # never none


def test_traces_follow_one_another_on_the_same_simulated_clock() -> None:
    twin = Twin(FakeSource(), "traffic-city", seed=4, tick_seconds=1.0, trace_slots=5)
    hours = [s.hour_of_day for s in (twin.step() for _ in range(12)) if s is not None]
    steps = np.diff(hours) % 24
    assert len(hours) == 12
    assert np.allclose(steps, 60 / 3600), hours  # one 60-s slot a step, across the traces' joins
