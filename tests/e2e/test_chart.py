"""The Helm chart on the local control plane: validated, installed, tested, upgraded, uninstalled.

The release goes into a namespace whose pod-security labels make the API server enforce the
"restricted" profile. kwok's kubelets make pods Ready without running containers, so what is
proven here is the API side: schemas, admission, RBAC, scheduling, Ready, hooks and cleanup.
The operator itself then runs as a local process with nothing but a token of the chart's
ServiceAccount, does its whole job on the traffic-city fleet (its actor delivered by the chart),
and is refused what it does not need.

The tests run in file order and share one release.
"""

from __future__ import annotations

import base64
import json
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from edgeaigc.cluster.kubectl import run_kubectl
from edgeaigc.cluster.local import ClusterState
from edgeaigc.cluster.processes import spawn_operator, spawn_twin, stop
from tests.e2e.conftest import REPO, Helm, Kubectl, example_fleet, pinned_helm, wait_for

CHART = REPO / "charts" / "edgeaigc"
CI_VALUES = CHART / "ci" / "e2e-values.yaml"
NAMESPACE = "chart-city"
RELEASE = "edgeaigc"  # object names: edgeaigc-operator, edgeaigc-gateway, edgeaigc-actors, ...
SERVICE_ACCOUNT = f"{RELEASE}-operator"
POLICY = "city"  # gateway.placementPolicy of ci/e2e-values.yaml
TLS_SECRET = "city-tls"  # tls.secretName of ci/e2e-values.yaml
CAMERA_TOKENS = "city-camera-tokens"  # auth.cameraTokensSecret of ci/e2e-values.yaml
INTERVAL_S = 5
INSTANCE = f"app.kubernetes.io/instance={RELEASE}"
# A refused request, as kopf and the kubernetes client log it. The timestamp is cut off first, and a
# duration ("decided in 403 ms") is not a status: both made a clean run fail in CI (",403]" millis).
REFUSAL = re.compile(r"orbidden|Not enough permissions|(?<![\d.,])403(?![\d.]| ?ms)")
LOG_TIMESTAMP = re.compile(r"^\[[^\]]*\]")
#: kopf probes namespaces and CRDs (to notice new ones) and goes on without them when refused;
#: the chart does not grant them. These are the only refusals the operator's log may show.
KOPF_SCANNING = re.compile(
    r"Not enough permissions to (list|watch for) (namespaces|resources)"
    r"|GET \S+/(api/v1/namespaces|apis/apiextensions\.k8s\.io/v1/customresourcedefinitions)(\?\S*)?"
    r" -> APIForbiddenError"
)


@pytest.fixture(scope="module")
def helm(cluster: ClusterState, tmp_path_factory: pytest.TempPathFactory) -> Helm:
    return pinned_helm(cluster, tmp_path_factory.mktemp("helm-home"))


@pytest.fixture(scope="module")
def restricted_namespace(kubectl: Kubectl) -> Iterator[str]:
    namespace = {
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {
            "name": NAMESPACE,
            "labels": {f"pod-security.kubernetes.io/{mode}": "restricted" for mode in ("enforce", "warn", "audit")},
        },
    }
    kubectl.run("apply", "--server-side", "-f", "-", stdin=json.dumps(namespace))
    yield NAMESPACE
    kubectl.run("delete", "namespace", NAMESPACE, "--wait=false", check=False)


def _objects(text: str) -> list[dict[str, Any]]:
    return [document for document in yaml.safe_load_all(text) if document]


def _ready_pods(kubectl: Kubectl, component: str) -> list[dict[str, Any]]:
    pods = json.loads(
        kubectl.run(
            "get", "pods", "-n", NAMESPACE, "-l", f"{INSTANCE},app.kubernetes.io/component={component}", "-o", "json"
        ).stdout
    )["items"]
    return [
        pod
        for pod in pods
        if any(c["type"] == "Ready" and c["status"] == "True" for c in pod.get("status", {}).get("conditions", []))
    ]


def test_rendered_manifests_pass_the_api_servers_validation(helm: Helm, kubectl: Kubectl) -> None:
    # The documented CRD upgrade path (Helm never upgrades crds/): apply the chart's CRDs.
    kubectl.run("apply", "--server-side", "-f", str(CHART / "crds"))
    kubectl.run("wait", "--for=condition=Established", "--timeout=60s", "crd", "--all")
    for namespace in ("chart-render-a", "chart-render-b"):
        kubectl.run("create", "namespace", namespace, check=False)
    variants = {
        "defaults": [],
        "ci": ["-f", str(CI_VALUES)],
        "cluster-wide": ["--set", "operator.clusterWide=true"],
        "watch-list": ["--set", "operator.watchNamespaces={chart-render-a,chart-render-b}"],
        "minimal": ["--set", "gateway.enabled=false,cloudInference.enabled=false", "--set-json", "policy.actors=[]"],
    }
    for name, values in variants.items():
        rendered = helm.run("template", "dry", str(CHART), "-n", "chart-render-a", *values).stdout
        kinds = {o["kind"] for o in _objects(rendered)}
        assert {"Deployment", "ServiceAccount", "ClusterRole", "Service"} <= kinds, name
        result = kubectl.run("apply", "--server-side", "--dry-run=server", "-f", "-", stdin=rendered, check=False)
        assert result.returncode == 0, f"{name}: {result.stderr}"
        assert "Warning" not in result.stderr, f"{name}: {result.stderr}"
    # The API server really validates: a misspelt field is rejected, not dropped.
    broken = rendered.replace("containerPort:", "containerPortt:", 1)
    server_dry_run = ("apply", "--server-side", "--dry-run=server", "--validate=strict", "-f", "-")
    result = kubectl.run(*server_dry_run, stdin=broken, check=False)
    assert result.returncode != 0 and "containerPortt" in result.stderr
    for namespace in ("chart-render-a", "chart-render-b"):
        kubectl.run("delete", "namespace", namespace, "--wait=false")


def test_install_into_a_restricted_namespace_becomes_ready(
    helm: Helm, kubectl: Kubectl, restricted_namespace: str
) -> None:
    # The namespace really enforces "restricted": a root pod is refused.
    root_pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "root", "namespace": restricted_namespace},
        "spec": {"containers": [{"name": "c", "image": "busybox", "securityContext": {"runAsUser": 0}}]},
    }
    refused = kubectl.run("apply", "-f", "-", stdin=json.dumps(root_pod), check=False)
    assert refused.returncode != 0 and "violates PodSecurity" in refused.stderr

    # The Secrets the values name: TLS as cert-manager would write it, made without it by the CLI.
    made = subprocess.run(
        [sys.executable, "-m", "edgeaigc.cli", "cluster", "certificate", TLS_SECRET, "-n", restricted_namespace,
         "--dns", f"*.{restricted_namespace}.svc"],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert made.returncode == 0, made.stderr
    secret = json.loads(kubectl.run("get", "secret", TLS_SECRET, "-n", restricted_namespace, "-o", "json").stdout)
    assert secret["type"] == "kubernetes.io/tls" and set(secret["data"]) == {"tls.crt", "tls.key", "ca.crt"}
    kubectl.run(
        "create", "secret", "generic", CAMERA_TOKENS, "-n", restricted_namespace,
        "--from-literal=camera-0=token-of-camera-0-0123456789",
    )  # fmt: skip

    started = time.monotonic()
    installed = helm.run(
        "install", RELEASE, str(CHART), "-n", restricted_namespace, "-f", str(CI_VALUES), "--wait", "--timeout=180s"
    )
    print(f"helm install --wait: {time.monotonic() - started:.1f} s")
    assert "PodSecurity" not in installed.stderr, installed.stderr
    assert "edgeaigc-actors" in installed.stdout  # NOTES name the actor ConfigMap
    edge_nodes = json.loads(kubectl.run("get", "nodes", "-l", "edgeaigc.io/tier=edge", "-o", "json").stdout)["items"]
    assert len(edge_nodes) == 5

    operator = wait_for(lambda: _ready_pods(kubectl, "operator"), 60, "the operator pod Ready")
    gateways = wait_for(
        lambda: (pods := _ready_pods(kubectl, "gateway")) and len(pods) == len(edge_nodes) and pods,
        60,
        "a Ready gateway on every edge node",
    )
    cloud = wait_for(lambda: _ready_pods(kubectl, "cloud-server"), 60, "the cloud server Ready")
    assert len(operator) == 2 and len(cloud) == 1  # two operator replicas: a leader and a standby
    assert {p["spec"]["nodeName"] for p in gateways} == {n["metadata"]["name"] for n in edge_nodes}
    assert cloud[0]["spec"]["nodeName"].startswith("cloud-")
    assert all(p["spec"]["nodeName"].startswith("cloud-") for p in operator)
    # TLS and camera authentication on: the gateways hold the cameras' tokens and only the CA of the TLS Secret
    gateway_args = gateways[0]["spec"]["containers"][0]["args"]
    assert {"--camera-tokens=/etc/edgeaigc/cameras", "--cloud-ca=/etc/edgeaigc/tls/ca.crt"} <= set(gateway_args)
    assert "--tls-cert=/etc/edgeaigc/tls/tls.crt" in cloud[0]["spec"]["containers"][0]["args"]
    container = operator[0]["spec"]["containers"][0]
    assert {"name": "EDGEAIGC_INFERENCE_IMAGE", "value": "ghcr.io/edgeaigc/inference:0.1.0"} in container["env"]
    assert container["args"][:3] == ["operator", f"--namespace={NAMESPACE}", "--leader-elect"]
    assert f"--leader-election-id={RELEASE}" in container["args"]
    # The shipped actors, byte for byte.
    actors = json.loads(kubectl.run("get", "cm", f"{RELEASE}-actors", "-n", NAMESPACE, "-o", "json").stdout)
    for actor in ("traffic-city-td3", "traffic-city-ddpg"):
        shipped = (REPO / "policy" / "actors" / f"{actor}.onnx").read_bytes()
        assert base64.b64decode(actors["binaryData"][f"{actor}.onnx"]) == shipped
    role = json.loads(kubectl.run("get", "role", f"{RELEASE}-leader-election", "-n", NAMESPACE, "-o", "json").stdout)
    assert role["metadata"]["labels"]["app.kubernetes.io/instance"] == RELEASE


def test_helm_test_passes(helm: Helm, kubectl: Kubectl) -> None:
    result = helm.run("test", RELEASE, "-n", NAMESPACE, "--timeout=120s")
    assert "Phase:          Succeeded" in result.stdout or "Succeeded" in result.stdout, result.stdout
    # The hook Job was deleted on success (hook-delete-policy), so it leaves nothing behind.
    assert kubectl.run("get", "jobs", "-n", NAMESPACE, "-l", INSTANCE, "-o", "name").stdout.strip() == ""


def test_upgrade_scales_the_operator_to_zero(helm: Helm, kubectl: Kubectl) -> None:
    helm.run(
        "upgrade", RELEASE, str(CHART), "-n", NAMESPACE, "--reuse-values", "--set", "operator.replicas=0",
        "--wait", "--timeout=120s",
    )  # fmt: skip
    history = json.loads(helm.run("history", RELEASE, "-n", NAMESPACE, "-o", "json").stdout)
    assert [entry["revision"] for entry in history] == [1, 2] and history[-1]["status"] == "deployed"
    deployment = json.loads(kubectl.run("get", "deploy", f"{RELEASE}-operator", "-n", NAMESPACE, "-o", "json").stdout)
    assert deployment["spec"]["replicas"] == 0
    wait_for(lambda: not _ready_pods(kubectl, "operator"), 60, "the operator pod to go")
    # --reuse-values kept the rest: gateways still on every edge node.
    assert len(_ready_pods(kubectl, "gateway")) == 5


def _service_account_kubeconfig(kubectl: Kubectl, cluster: ClusterState, path: Path) -> Path:
    """A kubeconfig holding only a TokenRequest token of the chart's ServiceAccount."""
    token = kubectl.run("create", "token", SERVICE_ACCOUNT, "-n", NAMESPACE, "--duration=1h").stdout.strip()
    admin = yaml.safe_load(cluster.kubeconfig.read_text())
    server = admin["clusters"][0]["cluster"]
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "local", "cluster": server}],
        "users": [{"name": SERVICE_ACCOUNT, "user": {"token": token}}],
        "contexts": [{"name": "sa", "context": {"cluster": "local", "user": SERVICE_ACCOUNT, "namespace": NAMESPACE}}],
        "current-context": "sa",
    }
    path.write_text(yaml.safe_dump(config))
    return path


def _fleet(cluster: ClusterState) -> list[dict[str, Any]]:
    """The traffic-city samples in the test namespace; the policy's actor is the chart's."""
    actor = {"configMapName": f"{RELEASE}-actors", "key": "traffic-city-td3.onnx"}
    return example_fleet(
        NAMESPACE, POLICY, intervalSeconds=INTERVAL_S, prometheusURL=cluster.prometheus_url, churnLimit=2, actor=actor
    )


def _policy(kubectl: Kubectl) -> dict[str, Any]:
    return json.loads(kubectl.run("get", "pp", POLICY, "-n", NAMESPACE, "-o", "json").stdout)


def _condition(kubectl: Kubectl, kind: str) -> dict[str, Any]:
    conditions = _policy(kubectl).get("status", {}).get("conditions", [])
    return next((c for c in conditions if c["type"] == kind), {})


def test_the_operator_with_the_charts_service_account_does_its_whole_job(
    kubectl: Kubectl, cluster: ClusterState, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    if cluster.prometheus_url is None:
        pytest.skip("Prometheus is not installed (apt-get install prometheus); the operator needs it")
    monkeypatch.setenv("EDGEAIGC_CLOUD_TLS_SECRET", TLS_SECRET)  # what the chart's operator Deployment sets
    sa_kubeconfig = _service_account_kubeconfig(kubectl, cluster, tmp_path / "sa.kubeconfig")
    kubectl.run("apply", "--server-side", "-f", "-", stdin=yaml.safe_dump_all(_fleet(cluster)))
    twin = spawn_twin(NAMESPACE, cluster.directory, tmp_path / "twin.log", cluster.kubeconfig, seed=0)
    log = tmp_path / "operator.log"
    # As the chart runs it: leader election over the chart's Lease, allowed by the chart's Role.
    election = ["--leader-elect", "--leader-election-namespace", NAMESPACE, "--leader-election-id", RELEASE]
    operator = spawn_operator(NAMESPACE, log, sa_kubeconfig, [*election, "--leader-election-identity", "first"])
    try:
        # The TD3 actor comes from the chart's ConfigMap: the policy loads it and decides.
        wait_for(lambda: _condition(kubectl, "Ready").get("status") == "True", 120, "the policy to become Ready")
        assert _condition(kubectl, "Degraded").get("status") == "False", _condition(kubectl, "Degraded")
        # LRU caches whatever is missed, so edge Deployments appear within a few intervals.
        kubectl.run("patch", "pp", POLICY, "-n", NAMESPACE, "--type=merge", "-p", '{"spec":{"algorithm":"lru"}}')
        edge = "app.kubernetes.io/component=edge-inference,edgeaigc.io/policy=" + POLICY
        wait_for(
            lambda: kubectl.run("get", "deploy", "-n", NAMESPACE, "-l", edge, "-o", "name").stdout.strip(),
            120,
            "edge Deployments (server-side apply with the ServiceAccount's token)",
        )
        # Pods of the operator's Deployments pass the namespace's "restricted" enforcement.
        wait_for(
            lambda: kubectl.run("get", "pods", "-n", NAMESPACE, "-l", edge, "-o", "name").stdout.strip(),
            60,
            "edge inference pods admitted",
        )
        placement = wait_for(
            lambda: [p for p in _policy(kubectl)["status"].get("placement", []) if p["models"]], 60, "a placement"
        )
        edge_node = json.loads(kubectl.run("get", "en", placement[0]["edgeNode"], "-n", NAMESPACE, "-o", "json").stdout)
        assert edge_node["status"]["cachedModels"] == sorted(placement[0]["models"])
        model = json.loads(kubectl.run("get", "im", placement[0]["models"][0], "-n", NAMESPACE, "-o", "json").stdout)
        assert "status" in model, "InferenceModel status written"
        routing = json.loads(
            kubectl.run("get", "cm", f"edgeaigc-{POLICY}-routing", "-n", NAMESPACE, "-o", "json").stdout
        )  # the routing table the gateways mount: misses go to the cloud over HTTPS
        cloud_urls = [route["url"] for route in json.loads(routing["data"]["routing.json"])["cloud"].values()]
        assert cloud_urls and all(url.startswith("https://") for url in cloud_urls), cloud_urls
        # and the cloud replicas serve it from the TLS Secret (admitted under "restricted" like the rest)
        cloud_deployments = json.loads(
            kubectl.run("get", "deploy", "-n", NAMESPACE, "-l", "app.kubernetes.io/component=cloud-inference",
                        "-o", "json").stdout
        )["items"]  # fmt: skip
        assert cloud_deployments
        for deployment in cloud_deployments:
            volumes = deployment["spec"]["template"]["spec"]["volumes"]
            assert {"name": "tls", "secret": {"secretName": TLS_SECRET, "defaultMode": 0o444, "items": [
                {"key": "tls.crt", "path": "tls.crt"}, {"key": "tls.key", "path": "tls.key"}]}} in volumes  # fmt: skip
        events = kubectl.run("get", "events", "-n", NAMESPACE, "--field-selector", "reason=ModelCached").stdout
        assert "cached on" in events
        # Deletes: an object labelled as the policy's but not in its plan is removed.
        stray = {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {
                "name": "edgeaigc-stray",
                "namespace": NAMESPACE,
                "labels": {"app.kubernetes.io/managed-by": "edgeaigc", "edgeaigc.io/policy": POLICY},
            },
        }
        kubectl.run("apply", "--server-side", "-f", "-", stdin=json.dumps(stray))
        wait_for(
            lambda: kubectl.run("get", "cm", "edgeaigc-stray", "-n", NAMESPACE, check=False).returncode != 0,
            60,
            "the operator to delete an object its plan does not have",
        )
        # Leader election: the operator holds the chart's Lease and said so in an event.
        lease = json.loads(kubectl.run("get", "lease", RELEASE, "-n", NAMESPACE, "-o", "json").stdout)
        assert lease["spec"]["holderIdentity"] == "first"
        events = kubectl.run("get", "events", "-n", NAMESPACE, "--field-selector", "reason=LeaderElection").stdout
        assert "first became leader" in events

        # Refused what it does not need.
        def as_operator(*arguments: str) -> subprocess.CompletedProcess[str]:
            return run_kubectl(sa_kubeconfig, *arguments, timeout_s=60)

        def can_i(*arguments: str) -> str:
            return as_operator("auth", "can-i", *arguments).stdout.strip()

        assert can_i("get", "secrets", "-n", NAMESPACE) == "no"
        assert can_i("create", "pods", "-n", NAMESPACE) == "no"
        assert can_i("patch", "pods", "-n", NAMESPACE) == "no"
        assert can_i("list", "deployments", "-n", "default") == "no"
        assert can_i("delete", "nodes") == "no"
        assert can_i("patch", "placementpolicies.edgeaigc.io/status", "-n", NAMESPACE) == "yes"
        assert can_i("update", f"leases.coordination.k8s.io/{RELEASE}", "-n", NAMESPACE) == "yes"
        assert can_i("update", "leases.coordination.k8s.io/kube-scheduler", "-n", NAMESPACE) == "no"
        secrets = as_operator("get", "secrets", "-n", NAMESPACE)
        assert secrets.returncode != 0 and "Forbidden" in secrets.stderr, secrets.stderr

        # It needed nothing more: no request was refused apart from kopf's optional scanning.
        refused = [
            line
            for line in log.read_text().splitlines()
            if REFUSAL.search(LOG_TIMESTAMP.sub("", line)) and not KOPF_SCANNING.search(line)
        ]
        assert not refused, "\n".join(refused)
        # A second replica stands by: it runs no handler while the first holds the Lease.
        second_log = tmp_path / "second-operator.log"
        second = spawn_operator(
            NAMESPACE, second_log, sa_kubeconfig, [*election, "--leader-election-identity", "second"]
        )
        try:
            wait_for(lambda: "is held by 'first'" in second_log.read_text(), 60, "the second replica to stand by")
            deciding_at = len(log.read_text())
            time.sleep(3 * INTERVAL_S)
            assert "decided in" in log.read_text()[deciding_at:], "the leader kept deciding"
            assert "decided in" not in second_log.read_text(), "the standby acted"
        finally:
            stop(second)
        # Deleting the policy while the operator runs releases kopf's finalizer.
        kubectl.run("delete", "pp", POLICY, "-n", NAMESPACE, "--wait=true", "--timeout=60s")
    finally:
        stop(operator)
        stop(twin)
        print(log.read_text()[-6000:])
    kubectl.run("delete", "-n", NAMESPACE, "cameras,edgenodes,inferencemodels", "--all", "--wait=true")


def test_uninstall_leaves_nothing_behind(helm: Helm, kubectl: Kubectl) -> None:
    helm.run("uninstall", RELEASE, "-n", NAMESPACE, "--wait", "--timeout=120s")
    namespaced = kubectl.run("api-resources", "--verbs=list", "--namespaced=true", "-o", "name").stdout.split()
    # Events are records of what happened, not objects of the release.
    kinds = ",".join(kind for kind in namespaced if kind not in ("events", "events.events.k8s.io"))
    left = kubectl.run("get", kinds, "-A", "-l", INSTANCE, "-o", "name", "--ignore-not-found").stdout.split()
    assert left == [], left
    cluster_scoped = ",".join(["clusterroles", "clusterrolebindings"])
    left = kubectl.run("get", cluster_scoped, "-l", INSTANCE, "-o", "name").stdout.split()
    assert left == [], left
    # Not even unlabelled: no RBAC object names the release any more.
    names = kubectl.run("get", "clusterroles,clusterrolebindings", "-o", "name").stdout.split()
    assert not [name for name in names if f"{NAMESPACE}-{RELEASE}" in name]
    assert helm.run("list", "-n", NAMESPACE, "-q").stdout.strip() == ""
    # CRDs stay (Helm never deletes crds/; they hold users' resources) - as the chart's README says.
    crds = kubectl.run("get", "crd", "-o", "name").stdout
    assert "placementpolicies.edgeaigc.io" in crds
