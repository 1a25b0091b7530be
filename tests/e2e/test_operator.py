"""The operator end to end: real API server, scheduler, garbage collector, Prometheus and twin.

One namespace holds the traffic-city fleet with a TD3 PlacementPolicy whose actor (the shipped
ONNX file) comes from a ConfigMap. The twin plays the gateways and Prometheus scrapes it; the
operator runs as a real process (``edgeaigc operator``), is killed and restarted, loses
Prometheus, gets a plan that cannot fit, and finally sees its policy deleted.
"""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from edgeaigc.cluster.local import ClusterState
from edgeaigc.cluster.processes import spawn_operator, spawn_twin, stop
from tests.e2e.conftest import REPO, Kubectl, example_fleet, wait_for

NAMESPACE = "op-e2e"
INTERVAL_S = 5
ACTOR = REPO / "policy" / "actors" / "traffic-city-td3.onnx"


class Operator:
    """The operator as a process that can be restarted."""

    def __init__(self, kubeconfig: Path, log: Path) -> None:
        self.kubeconfig, self.log = kubeconfig, log
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.process = spawn_operator(NAMESPACE, self.log, self.kubeconfig)

    def stop(self) -> None:
        if self.process is not None:
            stop(self.process)


@pytest.fixture(scope="module")
def fleet(cluster: ClusterState, kubectl: Kubectl, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Operator]:
    if cluster.prometheus_url is None:
        pytest.skip("Prometheus is not installed (apt-get install prometheus); the operator needs it")
    if not ACTOR.exists():
        pytest.skip(f"no shipped actor at {ACTOR}")
    logs = tmp_path_factory.mktemp("operator-e2e")
    kubectl.run("apply", "--server-side", "-f", str(REPO / "crds"))
    kubectl.run("wait", "--for=condition=Established", "--timeout=60s", "crd", "--all")
    actor = {"configMapName": "city-actor", "key": "actor.onnx"}
    documents = example_fleet(
        NAMESPACE, "city", intervalSeconds=INTERVAL_S, prometheusURL=cluster.prometheus_url, churnLimit=2, actor=actor
    )
    kubectl.run("create", "namespace", NAMESPACE)
    kubectl.run("create", "configmap", "city-actor", "-n", NAMESPACE, f"--from-file=actor.onnx={ACTOR}")
    kubectl.run("apply", "--server-side", "-f", "-", stdin=yaml.safe_dump_all(documents))
    # Seed 0 starts the simulated day at a busy hour: at night caching rarely pays a download.
    twin = spawn_twin(NAMESPACE, cluster.directory, logs / "twin.log", cluster.kubeconfig, seed=0)
    operator = Operator(cluster.kubeconfig, logs / "operator.log")
    operator.start()
    try:
        yield operator
    finally:
        operator.stop()
        stop(twin)
        print((logs / "operator.log").read_text()[-4000:])


def _policy(kubectl: Kubectl) -> dict[str, Any]:
    return json.loads(kubectl.run("get", "pp", "city", "-n", NAMESPACE, "-o", "json").stdout)


def _use_lru(kubectl: Kubectl) -> None:
    """The robustness tests exercise the operator, not the actor: LRU caches whatever is missed.

    (The TD3 actor was trained on 60 s slots; at the 5 s test interval a download weighs 12 times
    more per slot, so it often rightly caches nothing.)
    """
    patch = json.dumps({"spec": {"algorithm": "lru"}})
    kubectl.run("patch", "pp", "city", "-n", NAMESPACE, "--type=merge", "-p", patch)


def _condition(kubectl: Kubectl, kind: str) -> dict[str, Any]:
    conditions = _policy(kubectl).get("status", {}).get("conditions", [])
    return next((c for c in conditions if c["type"] == kind), {})


def _edge_deployments(kubectl: Kubectl) -> list[dict[str, Any]]:
    selector = "app.kubernetes.io/component=edge-inference,edgeaigc.io/policy=city"
    return json.loads(kubectl.run("get", "deploy", "-n", NAMESPACE, "-l", selector, "-o", "json").stdout)["items"]


def test_operator_places_models_and_the_scheduler_runs_them_on_the_intended_nodes(
    fleet: Operator, kubectl: Kubectl
) -> None:
    wait_for(lambda: _condition(kubectl, "Ready").get("status") == "True", 120, "the policy to become Ready")
    placement = wait_for(
        lambda: [p for p in _policy(kubectl)["status"].get("placement", []) if p["models"]], 60, "a non-empty placement"
    )
    deployments = wait_for(lambda: _edge_deployments(kubectl), 30, "edge Deployments")
    placed = {(p["edgeNode"], m) for p in placement for m in p["models"]}
    assert {
        (d["metadata"]["labels"]["edgeaigc.io/edge-node"], d["metadata"]["labels"]["edgeaigc.io/model"])
        for d in deployments
    } == placed

    def running_on_their_nodes() -> bool:
        pods = json.loads(
            kubectl.run(
                "get", "pods", "-n", NAMESPACE, "-l", "app.kubernetes.io/component=edge-inference", "-o", "json"
            ).stdout
        )["items"]
        return bool(pods) and all(
            p["status"].get("phase") == "Running"
            and p["spec"].get("nodeName") == p["metadata"]["labels"]["edgeaigc.io/edge-node"]
            for p in pods
        )

    wait_for(running_on_their_nodes, 60, "edge pods Running on their edge nodes (real scheduler, kwok kubelets)")
    # The routing table lists what is placed, and the EdgeNodes report it.
    table = json.loads(
        kubectl.run(
            "get", "cm", "edgeaigc-city-routing", "-n", NAMESPACE, "-o", "jsonpath={.data.routing\\.json}"
        ).stdout
    )
    assert {(node, m) for node, routes in table["edgeNodes"].items() for m in routes["models"]} == placed
    node = placement[0]["edgeNode"]
    edge_node = json.loads(kubectl.run("get", "en", node, "-n", NAMESPACE, "-o", "json").stdout)
    assert edge_node["status"]["cachedModels"] == sorted(placement[0]["models"])
    events = kubectl.run("get", "events", "-n", NAMESPACE, "--field-selector", "reason=ModelCached").stdout
    assert "cached on" in events


def test_restart_leaves_no_duplicates_or_orphans(fleet: Operator, kubectl: Kubectl) -> None:
    _use_lru(kubectl)
    wait_for(lambda: _edge_deployments(kubectl), 120, "edge Deployments")
    fleet.stop()
    fleet.start()
    time.sleep(3 * INTERVAL_S)
    deployments = _edge_deployments(kubectl)
    pairs = [
        (d["metadata"]["labels"]["edgeaigc.io/edge-node"], d["metadata"]["labels"]["edgeaigc.io/model"])
        for d in deployments
    ]
    assert len(pairs) == len(set(pairs)), f"duplicates: {pairs}"
    placed = {(p["edgeNode"], m) for p in _policy(kubectl)["status"]["placement"] for m in p["models"]}
    assert set(pairs) == placed, "every edge Deployment belongs to the reported placement"


def test_prometheus_loss_degrades_keeps_the_placement_and_recovers(
    fleet: Operator, kubectl: Kubectl, cluster: ClusterState
) -> None:
    _use_lru(kubectl)
    wait_for(lambda: _edge_deployments(kubectl), 120, "edge Deployments")
    dead = json.dumps({"spec": {"prometheusURL": "http://127.0.0.1:9"}})
    kubectl.run("patch", "pp", "city", "-n", NAMESPACE, "--type=merge", "-p", dead)
    degraded = wait_for(
        lambda: _condition(kubectl, "Degraded") if _condition(kubectl, "Degraded").get("status") == "True" else None,
        60,
        "Degraded",
    )
    assert degraded["reason"] == "PrometheusUnreachable"
    assert _condition(kubectl, "Ready")["status"] == "True"
    # A decision already under way when the URL changed may still land; from now on none may.
    time.sleep(INTERVAL_S)
    before = {d["metadata"]["uid"] for d in _edge_deployments(kubectl)}
    assert before
    time.sleep(2 * INTERVAL_S)
    assert {d["metadata"]["uid"] for d in _edge_deployments(kubectl)} == before, "nothing deleted while degraded"
    back = json.dumps({"spec": {"prometheusURL": cluster.prometheus_url}})
    kubectl.run("patch", "pp", "city", "-n", NAMESPACE, "--type=merge", "-p", back)
    wait_for(lambda: _condition(kubectl, "Degraded").get("status") == "False", 60, "recovery")


def _cpu_on(kubectl: Kubectl, edge_node: str) -> int:
    """Millicores of CPU the policy's edge Deployments hold on one edge node.

    With in-place resize the Deployment's template keeps the CPU it was created with (or was given while it
    had no pod) and its pods carry the CPU the plan gave them: a Deployment holds the largest CPU among its
    live pods (its template's while it has none).
    """
    selector = "app.kubernetes.io/component=edge-inference,edgeaigc.io/policy=city"
    pods = json.loads(kubectl.run("get", "pods", "-n", NAMESPACE, "-l", selector, "-o", "json").stdout)["items"]

    def cpu(pod_spec: dict[str, Any]) -> int:
        limit = next(c for c in pod_spec["containers"] if c["name"] == "inference")["resources"]["limits"]["cpu"]
        return int(str(limit).removesuffix("m")) if str(limit).endswith("m") else int(float(limit) * 1000)

    total = 0
    for deployment in _edge_deployments(kubectl):
        if deployment["metadata"]["labels"]["edgeaigc.io/edge-node"] == edge_node:
            wanted = deployment["spec"]["selector"]["matchLabels"].items()
            live = [
                cpu(p["spec"])
                for p in pods
                if not p["metadata"].get("deletionTimestamp") and wanted <= p["metadata"]["labels"].items()
            ]
            total += max(live, default=cpu(deployment["spec"]["template"]["spec"]))
    return total


def test_a_plan_that_does_not_fit_its_node_is_never_written(fleet: Operator, kubectl: Kubectl) -> None:
    _use_lru(kubectl)
    placement = wait_for(
        lambda: [p for p in _policy(kubectl).get("status", {}).get("placement", []) if p["models"]], 120, "a placement"
    )
    # The EdgeNode now claims 16 cores on a 4-CPU node: a plan using them would overcommit the node.
    # The operator must refuse such plans (PlanDoesNotFit) and only ever write plans that fit.
    node = placement[0]["edgeNode"]
    kubectl.run("patch", "en", node, "-n", NAMESPACE, "--type=merge", "-p", json.dumps({"spec": {"cores": 16}}))
    try:
        deadline = time.monotonic() + 6 * INTERVAL_S
        while time.monotonic() < deadline:
            assert _cpu_on(kubectl, node) <= 4000, "a plan exceeding the node's 4 CPUs was written"
            time.sleep(1)
        events = kubectl.run("get", "events", "-n", NAMESPACE, "--field-selector", "reason=PlanDoesNotFit").stdout
        assert "CPU planned" in events
    finally:
        kubectl.run("patch", "en", node, "-n", NAMESPACE, "--type=merge", "-p", json.dumps({"spec": {"cores": 4}}))
    wait_for(lambda: _condition(kubectl, "Degraded").get("status") == "False", 60, "recovery")


def test_deleting_the_policy_removes_what_it_created(fleet: Operator, kubectl: Kubectl) -> None:
    selector = "app.kubernetes.io/managed-by=edgeaigc,edgeaigc.io/policy=city"
    created = wait_for(
        lambda: kubectl.run("get", "deploy,svc,cm", "-n", NAMESPACE, "-l", selector, "-o", "name").stdout.split(),
        120,
        "the policy's objects",
    )
    # 12 cloud Deployments and Services and the routing ConfigMap at least, whatever is cached.
    assert len(created) >= 25
    kubectl.run("delete", "pp", "city", "-n", NAMESPACE, "--wait=true", "--timeout=60s")

    def gone() -> bool:
        left = kubectl.run("get", "deploy,svc,cm", "-n", NAMESPACE, "-l", selector, "-o", "name").stdout.strip()
        return left == ""

    wait_for(gone, 90, "the garbage collector to remove the policy's Deployments, Services and ConfigMap")
