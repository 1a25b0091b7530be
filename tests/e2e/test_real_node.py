"""The data plane for real: a real node (kubelet, containerd, runc, CNI) running the project's images.

``edgeaigc cluster up --real-nodes 1`` starts a cluster of its own beside the session's kwok
cluster; the chart is installed with ``ci/real-node-values.yaml`` into a namespace that enforces
Pod Security "restricted", so the operator, the gateway and the cloud server run as real
containers on the real node; ``helm test`` runs its Job there; the fleet of
``examples/real-node/`` is applied; requests through the real gateway make the operator cache the
model on the real node, where its pod fetches the ONNX file from an HTTP server on this machine
(checksum verified) and answers; an in-place CPU resize is read back from the container's cgroup;
``cluster down`` leaves nothing behind.

The tests run in file order and share one cluster. Traffic goes only to the cluster's own
addresses on this machine (198.18.0.0/15, see :mod:`edgeaigc.cluster.network`).
"""

from __future__ import annotations

import functools
import hashlib
import http.server
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import yaml

from edgeaigc.cluster import network, realnode
from edgeaigc.cluster.components import binaries
from edgeaigc.cluster.local import ClusterError, ClusterState, down, up, using_cluster_directory
from edgeaigc.policy.resources import object_name
from tests.e2e.conftest import REPO, Helm, Kubectl, pinned_helm, wait_for

CHART = REPO / "charts" / "edgeaigc"
REAL_NODE_VALUES = CHART / "ci" / "real-node-values.yaml"
EXAMPLE = REPO / "examples" / "real-node"
SHARED_MODEL = REPO.parent / "shared" / "data" / "yolox_nano.onnx"
NAMESPACE = "edge-real"
RELEASE = "edgeaigc"
NODE = "pi-real-0"
MODEL = "det-yolox-nano"
#: Where the example's InferenceModel fetches its file (examples/real-node/).
MODEL_SERVER_PORT = 8088
INSTANCE = f"app.kubernetes.io/instance={RELEASE}"
CLUSTER = f"real-{os.getpid()}"
#: tls.secretName and auth.cameraTokensSecret of ci/real-node-values.yaml, and the example's camera.
TLS_SECRET = "edgeaigc-tls"
CAMERA_TOKENS = "edgeaigc-camera-tokens"
CAMERA = "camera-0"
CAMERA_TOKEN = "token-of-camera-0-5d1c0e7a9b"


def _why_no_containers() -> str | None:
    if os.geteuid() != 0:
        return "real nodes need root (kubelet, containerd, network namespaces)"
    missing = realnode.missing_packages()
    if missing:
        return f"real nodes need Debian packages: {', '.join(missing)} (make deps)"
    if shutil.which("buildah") is None or shutil.which("debootstrap") is None:
        return "the images are built with buildah on a debootstrap base (make deps)"
    return None


@pytest.fixture(scope="module")
def real_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ClusterState]:
    reason = _why_no_containers()
    if reason:
        pytest.skip(reason)
    if shutil.which("go") is None and binaries().missing():
        pytest.skip("the local control plane needs Go to build its pinned binaries (none cached)")
    name = CLUSTER
    directory = tmp_path_factory.mktemp("real-cluster")
    with using_cluster_directory(directory):
        started = time.monotonic()
        try:
            state = up(name, progress=lambda m: print(f"[cluster] {m}"), timeout_s=120, real_nodes=1)
        except ClusterError:
            down(name, progress=print)
            raise
        print(f"cluster up --real-nodes 1: {time.monotonic() - started:.1f} s")
    try:
        yield state
    finally:
        with using_cluster_directory(directory):
            down(name, progress=lambda m: print(f"[cluster] {m}"))


@pytest.fixture(scope="module")
def kube(real_cluster: ClusterState) -> Kubectl:
    return Kubectl(real_cluster)


@pytest.fixture(scope="module")
def helm(real_cluster: ClusterState, tmp_path_factory: pytest.TempPathFactory) -> Helm:
    return pinned_helm(real_cluster, tmp_path_factory.mktemp("helm-home-real"))


@pytest.fixture(scope="module")
def model_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The model the example names: YOLOX-Nano from ../shared when present, else one built here."""
    directory = tmp_path_factory.mktemp("model-source")
    if SHARED_MODEL.exists():
        shutil.copy(SHARED_MODEL, directory / "yolox_nano.onnx")
    else:
        from tests.component.builders import affine_model

        affine_model(directory / "yolox_nano.onnx")
    return directory / "yolox_nano.onnx"


@pytest.fixture(scope="module")
def model_server(real_cluster: ClusterState, model_file: Path) -> Iterator[str]:
    """A real HTTP server on the host's cluster address, where the pods fetch the model from."""
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(model_file.parent))
    server = http.server.ThreadingHTTPServer((network.HOST_ADDRESS, MODEL_SERVER_PORT), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://{network.HOST_ADDRESS}:{MODEL_SERVER_PORT}/{model_file.name}"
    finally:
        server.shutdown()
        server.server_close()


def _pods(kube: Kubectl, selector: str) -> list[dict[str, Any]]:
    return list(json.loads(kube.run("get", "pods", "-n", NAMESPACE, "-l", selector, "-o", "json").stdout)["items"])


def _ready(pod: dict[str, Any]) -> bool:
    statuses = pod.get("status", {}).get("containerStatuses") or []
    return bool(statuses) and all(status.get("ready") for status in statuses)


def _describe(kube: Kubectl, selector: str) -> str:
    """What a failed wait shows: the pods, their events and the last log lines."""
    pods = kube.run("get", "pods", "-n", NAMESPACE, "-l", selector, "-o", "wide", check=False).stdout
    events = kube.run("get", "events", "-n", NAMESPACE, "--sort-by=.lastTimestamp", check=False).stdout
    logs = kube.run("logs", "-n", NAMESPACE, "-l", selector, "--all-containers", "--tail=20", check=False)
    return f"{pods}\n{events[-3000:]}\n{logs.stdout[-3000:]}{logs.stderr[-1000:]}"


def test_the_real_node_is_ready_and_looks_like_a_pi(kube: Kubectl) -> None:
    node = json.loads(kube.run("get", "node", NODE, "-o", "json").stdout)
    labels = node["metadata"]["labels"]
    assert labels["edgeaigc.io/tier"] == "edge" and labels["edgeaigc.io/real"] == "true"
    assert labels["node.kubernetes.io/instance-type"] == "raspberry-pi-4"
    assert node["status"]["nodeInfo"]["containerRuntimeVersion"].startswith("containerd://")
    allocatable = node["status"]["allocatable"]
    assert allocatable["cpu"] == "1"
    memory_mib = int(allocatable["memory"].removesuffix("Ki")) / 1024
    assert 1900 <= memory_mib <= 2100, allocatable
    addresses = {a["type"]: a["address"] for a in node["status"]["addresses"]}
    assert addresses["InternalIP"] == network.node_address(0)


def test_helm_install_runs_every_component_as_a_real_container(
    helm: Helm, kube: Kubectl, real_cluster: ClusterState
) -> None:
    kube.run("create", "namespace", NAMESPACE)
    kube.run("label", "namespace", NAMESPACE, "pod-security.kubernetes.io/enforce=restricted")
    # TLS and camera authentication on: the Secrets the values name, the TLS one made by the CLI as a user would
    with using_cluster_directory(real_cluster.directory):
        made = subprocess.run(
            [sys.executable, "-m", "edgeaigc.cli", "cluster", "certificate", TLS_SECRET, "-n", NAMESPACE,
             "--dns", f"*.{NAMESPACE}.svc"],
            capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
    assert made.returncode == 0, made.stderr
    kube.run("create", "secret", "generic", CAMERA_TOKENS, "-n", NAMESPACE, f"--from-literal={CAMERA}={CAMERA_TOKEN}")
    started = time.monotonic()
    helm.run(
        "install", RELEASE, str(CHART), "-n", NAMESPACE, "-f", str(REAL_NODE_VALUES), "--wait", "--timeout=300s",
        timeout=330,
    )  # fmt: skip
    print(f"helm install --wait on the real node: {time.monotonic() - started:.1f} s")
    pods = _pods(kube, INSTANCE)
    components = {pod["metadata"]["labels"]["app.kubernetes.io/component"] for pod in pods}
    assert {"operator", "gateway", "cloud-server"} <= components, components
    for pod in pods:
        assert pod["spec"]["nodeName"] == NODE, pod["metadata"]["name"]
        assert _ready(pod), _describe(kube, INSTANCE)
        # A real container has an ID from containerd and an address of the node's pod range.
        assert all(s["containerID"].startswith("containerd://") for s in pod["status"]["containerStatuses"])
        assert pod["status"]["podIP"].startswith(network.pod_subnet(0).rsplit(".", 2)[0])
    # The cloud server is Ready on its HTTPS probe: it serves TLS from the Secret, in a real container.
    cloud = next(p for p in pods if p["metadata"]["labels"]["app.kubernetes.io/component"] == "cloud-server")
    assert "--tls-cert=/etc/edgeaigc/tls/tls.crt" in cloud["spec"]["containers"][0]["args"]
    assert cloud["spec"]["containers"][0]["readinessProbe"]["httpGet"]["scheme"] == "HTTPS"


def _example_documents(model_url: str, model_file: Path) -> list[dict[str, Any]]:
    """examples/real-node/ as shipped; without ../shared the model is the one built here (its URL and
    checksum replace YOLOX-Nano's)."""
    documents = []
    for path in sorted(EXAMPLE.glob("*.yaml")):
        documents += [document for document in yaml.safe_load_all(path.read_text()) if document]
    digest = hashlib.sha256(model_file.read_bytes()).hexdigest()
    for document in documents:
        if document["kind"] == "InferenceModel" and document["metadata"]["name"] == MODEL:
            assert document["spec"]["artifact"]["url"] == model_url
            if not SHARED_MODEL.exists():
                document["spec"]["artifact"]["sha256"] = digest
            assert document["spec"]["artifact"]["sha256"] == digest
    return documents


def _gateway_url(kube: Kubectl) -> str:
    pod = next(p for p in _pods(kube, f"{INSTANCE},app.kubernetes.io/component=gateway") if _ready(p))
    return f"http://{pod['status']['podIP']}:8000"


def _input_for(model_file: Path) -> dict[str, Any]:
    if SHARED_MODEL.exists():
        pattern = (np.arange(3 * 416 * 416) % 255).astype(np.float32)
        return {"inputs": [{"name": "images", "shape": [1, 3, 416, 416], "datatype": "FP32", "data": pattern.tolist()}]}
    return {"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP32", "data": [0, 0, 0, 0]}]}


def test_the_operator_places_the_model_on_the_real_node_and_it_answers(
    kube: Kubectl, model_server: str, model_file: Path
) -> None:
    documents = _example_documents(model_server, model_file)
    kube.run("apply", "--server-side", "-n", NAMESPACE, "-f", "-", stdin=yaml.safe_dump_all(documents))
    gateway = _gateway_url(kube)
    body = _input_for(model_file)
    deployment = object_name(MODEL, NODE)
    served: list[str] = []
    camera = {"Authorization": f"Bearer {CAMERA_TOKEN}", "X-Edgeaigc-Camera": CAMERA}
    # The real gateway authenticates cameras: no token 401, a token claiming another camera 403.
    with httpx.Client(timeout=30) as client:
        anonymous = client.post(f"{gateway}/v2/models/{MODEL}/infer", json=body, headers={"X-Edgeaigc-Camera": CAMERA})
        assert anonymous.status_code == 401 and anonymous.headers["www-authenticate"].startswith("Bearer")
        claiming = client.post(
            f"{gateway}/v2/models/{MODEL}/infer", json=body, headers={**camera, "X-Edgeaigc-Camera": "camera-1"}
        )
        assert claiming.status_code == 403, claiming.text

    def model_is_served_at_the_edge() -> bool:
        # The camera's requests are the demand the operator sees (gateway metrics → Prometheus): misses
        # at first (the cloud replica is a kwok pod: nothing answers), hits once the model is cached.
        with httpx.Client(timeout=30) as client:
            response = client.post(f"{gateway}/v2/models/{MODEL}/infer", json=body, headers=camera)
        served.append(f"{response.status_code} {response.headers.get('x-edgeaigc-served-by', '')}")
        return response.status_code == 200 and response.headers.get("x-edgeaigc-served-by") == "edge"

    started = time.monotonic()
    try:
        wait_for(model_is_served_at_the_edge, 360, f"{MODEL} answered by its replica on {NODE}")
    except AssertionError:
        print(_describe(kube, f"edgeaigc.io/model={MODEL}"))
        print(kube.run("get", "pp,im,deploy", "-n", NAMESPACE, "-o", "wide", check=False).stdout)
        print(served[-10:])
        raise
    print(f"first edge answer {time.monotonic() - started:.1f} s after the fleet was applied; answers: {served[-5:]}")
    pods = _pods(kube, f"edgeaigc.io/model={MODEL},edgeaigc.io/edge-node={NODE}")
    assert pods and all(p["spec"]["nodeName"] == NODE for p in pods)
    fetch = pods[0]["status"]["initContainerStatuses"][0]
    assert fetch["name"] == "fetch-model" and fetch["state"]["terminated"]["exitCode"] == 0
    model = json.loads(kube.run("get", "inferencemodel", MODEL, "-n", NAMESPACE, "-o", "json").stdout)
    artifact = next(c for c in model["status"]["conditions"] if c["type"] == "ArtifactReady")
    assert artifact["status"] == "True", artifact
    assert (
        kube.run("get", "deployment", deployment, "-n", NAMESPACE, "-o", "jsonpath={.status.readyReplicas}").stdout
        == "1"
    )


def test_helm_test_runs_its_job_on_the_real_node(helm: Helm, kube: Kubectl) -> None:
    # After the fleet: the gateway's /v2/health/ready (which the test asks) needs the operator's routing table.
    result = helm.run("test", RELEASE, "-n", NAMESPACE, "--timeout=180s", "--logs", check=False, timeout=200)
    assert result.returncode == 0, f"{result.stdout}\n{result.stderr}\n{_describe(kube, INSTANCE)}"
    assert "Phase:     Succeeded" in result.stdout or "Succeeded" in result.stdout


#: Tries a TCP connection to each HOST:PORT argument (3 s each) and prints a JSON object of which
#: opened; with ``--repeat N HOST:PORT`` it also times N connections there (the cost of the policy
#: check on a new connection). Run in a plain pod and inside a model pod.
CONNECT_SCRIPT = """
import json, socket, statistics, sys, time
arguments = sys.argv[1:]
repeat, timed = (int(arguments[1]), arguments[2]) if arguments[0] == "--repeat" else (0, None)
targets = arguments[3:] if timed else arguments
def connect(target):
    host, port = target.rsplit(":", 1)
    started = time.perf_counter()
    try:
        socket.create_connection((host, int(port)), timeout=3).close()
        return time.perf_counter() - started
    except OSError:
        return None
result = {"open": {target: connect(target) is not None for target in targets}}
if timed:
    times = [connect(timed) for _ in range(repeat)]
    result["connect_ms"] = statistics.median(1000 * t for t in times if t is not None)
print(json.dumps(result))
"""
PROBE_POD = "netpol-probe"


def _probe_pod(arguments: list[str]) -> dict[str, Any]:
    """A pod with none of the release's labels (Pod Security "restricted", like every pod of the namespace)."""
    restricted = {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}, "runAsNonRoot": True}
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": PROBE_POD, "namespace": NAMESPACE, "labels": {"app": "netpol-probe"}},
        "spec": {
            "restartPolicy": "Never",
            "automountServiceAccountToken": False,
            "nodeSelector": {"edgeaigc.io/real": "true"},
            "securityContext": {"runAsUser": 65532, "seccompProfile": {"type": "RuntimeDefault"}},
            "containers": [
                {
                    "name": "probe",
                    "image": "localhost/edgeaigc/operator:local",
                    "imagePullPolicy": "Never",
                    "command": ["python", "-c", CONNECT_SCRIPT, *arguments],
                    "securityContext": restricted,
                    "resources": {"limits": {"cpu": "200m", "memory": "64Mi"}},
                }
            ],
        },
    }


def test_network_policies_let_only_the_needed_flows_through(kube: Kubectl, real_cluster: ClusterState) -> None:
    """The chart's NetworkPolicies, enforced by kube-router on the real node: the flows above worked under
    them (operator -> API server, gateway -> model, fetch-model -> artifact server, helm test); here a pod
    without the release's labels cannot reach a model replica, and a model replica cannot reach Prometheus."""
    model_pod = _pods(kube, f"edgeaigc.io/model={MODEL},edgeaigc.io/edge-node={NODE}")[0]
    model = f"{model_pod['status']['podIP']}:8080"
    gateway = _gateway_url(kube).removeprefix("http://")
    kube.run("apply", "-f", "-", stdin=json.dumps(_probe_pod(["--repeat", "50", gateway, model, gateway])))

    def probe_finished() -> str | None:
        phase = kube.run("get", "pod", PROBE_POD, "-n", NAMESPACE, "-o", "jsonpath={.status.phase}").stdout
        return phase if phase in ("Succeeded", "Failed") else None

    try:
        assert wait_for(probe_finished, 90, f"pod {PROBE_POD} done") == "Succeeded", _describe(kube, "app=netpol-probe")
        probe = json.loads(kube.run("logs", PROBE_POD, "-n", NAMESPACE).stdout)
    finally:
        kube.run("delete", "pod", PROBE_POD, "-n", NAMESPACE, "--wait=false", check=False)
    print(f"from a plain pod: {probe}")
    # The gateway is open to the pod range (a camera source on the local cluster): the network works, the
    # model replica's port is closed by its policy alone.
    assert probe["open"] == {gateway: True, model: False}, probe
    print(f"median TCP connect to the gateway through the policies: {probe['connect_ms']:.3f} ms")

    artifact, prometheus = (
        f"{network.HOST_ADDRESS}:{MODEL_SERVER_PORT}",
        f"{network.HOST_ADDRESS}:{network.PROMETHEUS_PORT}",
    )
    command = ["python", "-c", CONNECT_SCRIPT, artifact, prometheus]
    inside = kube.run("exec", "-n", NAMESPACE, model_pod["metadata"]["name"], "-c", "inference", "--", *command)
    from_model = json.loads(inside.stdout)
    print(f"from the model pod: {from_model}")
    assert from_model["open"] == {artifact: True, prometheus: False}, from_model

    # Prometheus (a host process, as a user's would be a pod) scrapes the gateway.
    def gateway_scraped() -> bool:
        response = httpx.get(f"{real_cluster.prometheus_url}/api/v1/query", params={"query": "up"}, timeout=5)
        series = response.json()["data"]["result"]
        return any(s["metric"].get("instance") == gateway and s["value"][1] == "1" for s in series)

    wait_for(gateway_scraped, 60, f"Prometheus scraping the gateway at {gateway}")


def _cfs_quota(pod: dict[str, Any]) -> int:
    """The inference container's CFS quota, read from its cgroup (cgroup v1 cpu controller)."""
    container_id = pod["status"]["containerStatuses"][0]["containerID"].removeprefix("containerd://")
    uid = pod["metadata"]["uid"].replace("-", "_")
    found = realnode.container_cgroup_files(NODE, container_id, "cpu", "cpu.cfs_quota_us")
    matches = [p for p in found if pod["metadata"]["uid"] in str(p) or uid in str(p)]
    assert len(matches) == 1, f"no single cgroup of container {container_id} on {NODE}: {matches}"
    return int(matches[0].read_text())


def test_an_in_place_resize_changes_the_running_containers_cfs_quota(kube: Kubectl) -> None:
    pod = _pods(kube, f"edgeaigc.io/model={MODEL},edgeaigc.io/edge-node={NODE}")[0]
    name, uid = pod["metadata"]["name"], pod["metadata"]["uid"]
    limit = pod["spec"]["containers"][0]["resources"]["limits"]["cpu"]
    before = _cfs_quota(pod)
    target_m = 150 if limit != "150m" else 200
    print(f"{name}: limit {limit}, cpu.cfs_quota_us {before}")
    # The operator would resize the pod back to its plan's CPU at its next interval, possibly before the
    # kubelet applied this one (the test then never saw the new quota): it only reports from now on.
    kube.run("patch", "pp", "real-node", "-n", NAMESPACE, "--type=merge", "-p", '{"spec":{"mode":"dry-run"}}')
    resources = {"cpu": f"{target_m}m"}
    patch = {"spec": {"containers": [{"name": "inference", "resources": {"requests": resources, "limits": resources}}]}}
    kube.run("patch", "pod", name, "-n", NAMESPACE, "--subresource=resize", "--type=strategic", "-p", json.dumps(patch))

    def quota_followed() -> int | None:
        current = json.loads(kube.run("get", "pod", name, "-n", NAMESPACE, "-o", "json").stdout)
        quota = _cfs_quota(current)
        return quota if quota == target_m * 100 else None

    after = wait_for(quota_followed, 60, f"cpu.cfs_quota_us of {name} at {target_m * 100}")
    current = json.loads(kube.run("get", "pod", name, "-n", NAMESPACE, "-o", "json").stdout)
    assert current["metadata"]["uid"] == uid
    assert current["status"]["containerStatuses"][0]["restartCount"] == 0
    print(f"resized in place: cpu.cfs_quota_us {before} -> {after}, same pod, no restart")


def test_cluster_down_leaves_nothing_behind(real_cluster: ClusterState) -> None:
    directory = real_cluster.directory
    with using_cluster_directory(directory):
        assert down(CLUSTER, progress=print)
    assert realnode.mounts_under(directory) == []
    ip = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True, check=True).stdout
    assert network.HOST_INTERFACE not in ip and network.bridge_name(0) not in ip
    netns = Path("/var/run/netns")
    assert not any(netns.glob("cni-*")) if netns.exists() else True
    assert not realnode._pids_of(str(directory))
    assert not any(Path(c, f"edgeaigc-{NODE}").exists() for c in realnode._cgroup_controllers())
    for table in ("filter", "nat"):
        rules = subprocess.run(["iptables", "-t", table, "-S"], capture_output=True, text=True, check=True).stdout
        assert "KUBE-" not in rules, rules  # the kubelet's and kube-proxy's chains are gone too
