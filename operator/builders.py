"""Pure manifest builders: a plan in, the Kubernetes objects that realise it out.

For a PlacementPolicy and its plan: one Deployment + Service per cached (model, edge node),
pinned to the node, with CPU requests/limits from the compute share and memory from the model
size; one cloud Deployment + Service per model (the relay target on a miss); and the routing
table ConfigMap the gateways read. When EdgeNodes share a site (``spec.site``), a peers ConfigMap
tells each newly placed replica which replicas of its model on its site's other nodes to fetch the
file from first (:func:`site_peers`). Every object carries the operator's labels and an owner
reference to the policy, so deleting the policy removes what it caused.
"""

from __future__ import annotations

import math
import posixpath
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from edgeaigc.inference.gateway.routing_table import EdgeNodeRoutes, Endpoint, LocalModel, RoutingTable
from edgeaigc.operator import constants as c
from edgeaigc.policy.resources import object_name
from edgeaigc.policy.scenario import Scenario
from edgeaigc.policy.shard import is_shard
from edgeaigc.policy.system_model import Plan

#: Smallest CPU a model pod is given, so a tiny share still leaves a schedulable, usable pod.
MIN_CPU_MILLICORES = 50
#: Memory of a model pod: the runtime plus a multiple of the model file (weights, arenas). Measured
#: on a real node: the server holding YOLOX-Nano (3.5 MiB) takes 106 MiB idle and 161 MiB after a JSON
#: request of one 416x416 frame; with 96 MiB it was OOM-killed on its first requests.
BASE_MEMORY_MIB = 192
MEMORY_PER_MODEL_MIB = 3.0
#: Memory for request bodies in a model pod (``serve --body-memory``): five JSON frames of 416x416.
MODEL_POD_BODY_MEMORY_MIB = 16
#: The model repository of the inference server (the models volume, when there is an artifact).
MODEL_REPOSITORY = "/models"
#: Where a persistentVolumeClaim or image artifact is mounted (read-only) for the fetch-model container.
ARTIFACT_MOUNT = "/artifact"
#: The file inside an artifact image when ``spec.artifact.imagePath`` is not given.
DEFAULT_IMAGE_MODEL_PATH = "model.onnx"
#: Room in the models volume beyond the model file: its config.yaml and file-system blocks.
MODELS_VOLUME_SLACK_MIB = 1
#: Ephemeral storage of a model's containers beyond the models volume: their logs (the root file
#: system is read-only).
LOG_STORAGE_MIB = 32
FETCH_CONTAINER = "fetch-model"
#: CPU of the fetch-model container (requests = limits, so the pod stays in the Guaranteed QoS class).
#: Fixed rather than the plan's share: a CPU change of the plan must not touch the init container (the
#: inference container's CPU is resized in place), and at the floor of :func:`cpu_millicores` it adds
#: nothing to the pod's CPU request (an init container counts as max, not sum). Its memory and
#: ephemeral storage are the server's, for the same reason.
FETCH_CPU_MILLICORES = MIN_CPU_MILLICORES
MODELS_VOLUME = "models"
ARTIFACT_VOLUME = "artifact"
#: The peers ConfigMap in the fetch-model container: one file per newly placed (model, EdgeNode).
#: Peers live in a ConfigMap, not in the pod template, so that a placement change on a neighbouring
#: node never changes (and rolls) a running replica's template; the file is read when the init
#: container starts.
PEERS_VOLUME = "peers"
PEERS_MOUNT = "/etc/edgeaigc/peers"
#: Peers a replica tries before its artifact's source; each failing one costs at most fetch-model's
#: short --peer-timeout.
MAX_PEERS = 3

#: Pod Security "restricted": what every container of a model pod runs with.
SECURITY_CONTEXT: dict[str, Any] = {
    "runAsNonRoot": True,
    "allowPrivilegeEscalation": False,
    "readOnlyRootFilesystem": True,
    "capabilities": {"drop": ["ALL"]},
    "seccompProfile": {"type": "RuntimeDefault"},
}


def owner_reference(policy: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": f"{c.GROUP}/{c.VERSION}",
        "kind": "PlacementPolicy",
        "name": policy["metadata"]["name"],
        "uid": policy["metadata"]["uid"],
        "controller": True,
        "blockOwnerDeletion": True,
    }


def _labels(policy_name: str, component: str, **extra: str) -> dict[str, str]:
    return {c.LABEL_MANAGED_BY: c.MANAGED_BY, c.LABEL_POLICY: policy_name, c.LABEL_COMPONENT: component, **extra}


def _metadata(policy: Mapping[str, Any], name: str, labels: dict[str, str]) -> dict[str, Any]:
    """Metadata of an object of the policy: in its namespace, labelled, deleted with it."""
    namespace = policy["metadata"]["namespace"]
    return {"name": name, "namespace": namespace, "labels": labels, "ownerReferences": [owner_reference(policy)]}


def cpu_millicores(compute_shares: np.ndarray, node_cores: float) -> np.ndarray:
    """CPU of each cached model's pod on a node: a floor for each, the rest split by share.

    The total never exceeds the node's inference cores, so a plan whose shares sum to at most 1
    always fits the CPU the EdgeNode declares.
    """
    shares = np.asarray(compute_shares, float)
    total = int(node_cores * 1000)
    floor = min(MIN_CPU_MILLICORES, total // max(shares.size, 1))
    rest = total - floor * shares.size
    return (floor + np.floor(shares * rest)).astype(np.int64)


def memory_mebibytes(model_size_mib: float) -> int:
    return int(np.ceil(BASE_MEMORY_MIB + MEMORY_PER_MODEL_MIB * model_size_mib))


def _inference_container(
    model: str, image: str, cpu_m: int, memory_mi: int, tls: bool = False, mutual_tls: bool = False
) -> dict[str, Any]:
    resources = {"cpu": f"{cpu_m}m", "memory": f"{memory_mi}Mi"}
    tls_args = ["--tls-cert", f"{c.TLS_MOUNT_PATH}/tls.crt", "--tls-key", f"{c.TLS_MOUNT_PATH}/tls.key"] if tls else []
    if tls and mutual_tls:
        tls_args += ["--tls-client-ca", f"{c.TLS_MOUNT_PATH}/ca.crt"]
    container: dict[str, Any] = {
        "name": "inference",
        "image": image,
        "args": [
            "serve",
            "--model-repository",
            "/models",
            "--port",
            str(c.INFERENCE_PORT),
            "--model",
            model,
            # Request bodies held at once, within the pod's memory limit (BASE_MEMORY_MIB leaves ~30 MiB
            # above the measured peak; the server's default of 64Mi would not fit).
            "--body-memory",
            f"{MODEL_POD_BODY_MEMORY_MIB}Mi",
            *tls_args,
        ],
        "ports": [{"name": "http", "containerPort": c.INFERENCE_PORT}],
        "resources": {"requests": resources, "limits": resources},
        # CPU can follow the plan without a restart where the cluster supports in-place resize.
        "resizePolicy": [
            {"resourceName": "cpu", "restartPolicy": "NotRequired"},
            {"resourceName": "memory", "restartPolicy": "RestartContainer"},
        ],
        "readinessProbe": {
            "httpGet": {"path": f"/v2/models/{model}/ready", "port": "http", "scheme": "HTTPS" if tls else "HTTP"},
            "periodSeconds": 5,
        },
        "securityContext": _security_context(),
    }
    if tls:
        container["volumeMounts"] = [{"name": "tls", "mountPath": c.TLS_MOUNT_PATH, "readOnly": True}]
    return container


def _with_tls_secret(pod_spec: dict[str, Any], secret_name: str, with_ca: bool = False) -> dict[str, Any]:
    """The pod with the TLS Secret's certificate and key as the ``tls`` volume, and its CA ``with_ca``
    (mutual TLS: the CA that signs the clients' certificates).

    Readable by all (0444): the pod has no ``fsGroup``, the server runs as the image's non-root user, and
    the volume is the pod's alone.
    """
    items = [{"key": "tls.crt", "path": "tls.crt"}, {"key": "tls.key", "path": "tls.key"}]
    if with_ca:
        items.append({"key": "ca.crt", "path": "ca.crt"})
    volume = {"name": "tls", "secret": {"secretName": secret_name, "items": items, "defaultMode": 0o444}}
    return {**pod_spec, "volumes": [*pod_spec.get("volumes", []), volume]}


def _security_context() -> dict[str, Any]:
    # A fresh copy per container (callers may change theirs), built directly: copy.deepcopy is
    # slow enough to matter for the hundreds of Deployments a large fleet builds every interval.
    return {
        **SECURITY_CONTEXT,
        "capabilities": {"drop": list(SECURITY_CONTEXT["capabilities"]["drop"])},
        "seccompProfile": dict(SECURITY_CONTEXT["seccompProfile"]),
    }


def artifact_max_bytes(model_size_mib: float) -> int:
    """The largest model file accepted: ``spec.size``, the storage the plan reserves for it on a node."""
    return math.ceil(model_size_mib * 2**20)


def model_artifacts(models: Sequence[Mapping[str, Any]]) -> dict[str, dict[str, Any]]:
    """InferenceModel name -> its ``spec.artifact``, for the models that have one."""
    return {
        model["metadata"]["name"]: dict(model["spec"]["artifact"])
        for model in models
        if model.get("spec", {}).get("artifact")
    }


def _fetch_arguments(artifact: Mapping[str, Any]) -> tuple[list[str], dict[str, Any] | None]:
    """The fetch-model source arguments for an artifact, and the volume it reads from (if any)."""
    checksum = ["--sha256", artifact["sha256"]] if artifact.get("sha256") else []
    if artifact.get("url"):
        return ["--url", artifact["url"], *checksum], None
    if artifact.get("persistentVolumeClaim"):
        claim = artifact["persistentVolumeClaim"]
        volume = {"name": ARTIFACT_VOLUME, "persistentVolumeClaim": {"claimName": claim["claimName"], "readOnly": True}}
        path = claim["path"]
    elif artifact.get("image"):
        volume = {"name": ARTIFACT_VOLUME, "image": {"reference": artifact["image"]}}
        path = artifact.get("imagePath") or DEFAULT_IMAGE_MODEL_PATH
    else:
        raise ValueError(f"spec.artifact names no source (url, persistentVolumeClaim or image): {dict(artifact)}")
    # The CRD refuses '..'; normpath keeps a path that slipped through inside the mount anyway.
    inside = posixpath.normpath("/" + path).lstrip("/")
    return ["--path", f"{ARTIFACT_MOUNT}/{inside}", *checksum], volume


def peers_key(model: str, edge_node: str) -> str:
    """The peers ConfigMap's key (and file) for ``model`` newly placed on ``edge_node``."""
    return f"{model}.{edge_node}"


def peers_configmap_name(policy_name: str) -> str:
    return object_name(policy_name, "peers")


def shared_site_nodes(scenario: Scenario) -> np.ndarray:
    """Which edge nodes share their site with another (where peer-to-peer distribution applies)."""
    _, inverse, counts = np.unique(scenario.node_site, return_inverse=True, return_counts=True)
    return np.asarray(counts[inverse] > 1)


def site_peers(scenario: Scenario, cache: np.ndarray, previous_cache: np.ndarray) -> dict[tuple[str, str], list[str]]:
    """(EdgeNode, model) newly cached in ``cache`` -> the other nodes of its site that hold the model
    in both ``previous_cache`` (their replica has the file) and ``cache`` (it stays), sorted by name,
    at most :data:`MAX_PEERS`; pairs without such a neighbour are left out.

    The same rule as the system model's (:func:`~edgeaigc.policy.system_model.peer_sourced`)."""
    peers: dict[tuple[str, str], list[str]] = {}
    new = (cache > 0) & ~(previous_cache > 0)
    holding = (cache > 0) & (previous_cache > 0)
    for e, m in zip(*np.nonzero(new), strict=True):
        neighbours = [
            scenario.node_names[f]
            for f in np.flatnonzero((scenario.node_site == scenario.node_site[e]) & holding[:, m])
            if f != e
        ]
        if neighbours:
            peers[(scenario.node_names[e], scenario.model_names[m])] = sorted(neighbours)[:MAX_PEERS]
    return peers


def peer_artifact_url(model: str, edge_node: str, namespace: str) -> str:
    """Where the replica of ``model`` on ``edge_node`` hands out its file (``serve --serve-artifacts``)."""
    return f"{service_url(object_name(model, edge_node), namespace)}/v2/models/{model}/artifact"


def build_peers_configmap(
    policy: Mapping[str, Any],
    scenario: Scenario,
    cache: np.ndarray,
    previous_cache: np.ndarray,
    artifacts: Mapping[str, Mapping[str, Any]],
) -> dict[str, Any]:
    """The peers of each newly placed replica whose artifact has a sha256 (peers are verified by it),
    one key per (model, EdgeNode) (:func:`peers_key`), one URL a line. Only new placements have an
    entry, so the ConfigMap is empty (and unchanged: no write) while the placement holds."""
    policy_name, namespace = policy["metadata"]["name"], policy["metadata"]["namespace"]
    data = {
        peers_key(model, node): "".join(f"{peer_artifact_url(model, peer, namespace)}\n" for peer in peers)
        for (node, model), peers in sorted(site_peers(scenario, cache, previous_cache).items())
        if (artifacts.get(model) or {}).get("sha256")
    }
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": _metadata(policy, peers_configmap_name(policy_name), _labels(policy_name, c.COMPONENT_PEERS)),
        "data": data,
    }


def _with_artifact(
    pod_spec: dict[str, Any],
    model: str,
    artifact: Mapping[str, Any],
    model_size_mib: float,
    peers_from: tuple[str, str] | None = None,
) -> dict[str, Any]:
    """``pod_spec`` with the models volume, the fetch-model init container and ephemeral storage.

    ``peers_from``: (peers ConfigMap, this replica's key in it) when the replica's node shares a site
    and the artifact has a sha256: fetch-model tries the peers it lists first, and the server hands
    its own file to the site's next replicas (``--serve-artifacts``). Both are fixed for the
    replica's life, so its template does not change when its neighbours' placements do.
    """
    if model_size_mib <= 0:
        raise ValueError(f"model {model}: an artifact needs the model's size (the largest file accepted)")
    max_bytes = artifact_max_bytes(model_size_mib)
    volume_mib = math.ceil(max_bytes / 2**20) + MODELS_VOLUME_SLACK_MIB
    storage = f"{volume_mib + LOG_STORAGE_MIB}Mi"
    source, artifact_volume = _fetch_arguments(artifact)
    inference = pod_spec["containers"][0]
    for bound in ("requests", "limits"):
        inference["resources"][bound]["ephemeral-storage"] = storage
    # Beside the mounts it has (a cloud replica's TLS Secret): replacing them left a server without its
    # certificate, which exited at start ("cannot read /etc/edgeaigc/tls/tls.crt") on the first real cloud node.
    models_mount = {"name": MODELS_VOLUME, "mountPath": MODEL_REPOSITORY, "readOnly": True}
    inference["volumeMounts"] = [*inference.get("volumeMounts", []), models_mount]
    mounts: list[dict[str, Any]] = [{"name": MODELS_VOLUME, "mountPath": MODEL_REPOSITORY}]
    volumes: list[dict[str, Any]] = [{"name": MODELS_VOLUME, "emptyDir": {"sizeLimit": f"{volume_mib}Mi"}}]
    if artifact_volume is not None:
        volumes.append(artifact_volume)
        mounts.append({"name": ARTIFACT_VOLUME, "mountPath": ARTIFACT_MOUNT, "readOnly": True})
    peers: list[str] = []
    if peers_from is not None and artifact.get("sha256"):
        configmap, key = peers_from
        # Optional: a replica placed before the ConfigMap existed (or after its entry went) fetches from the source.
        volumes.append({"name": PEERS_VOLUME, "configMap": {"name": configmap, "optional": True}})
        mounts.append({"name": PEERS_VOLUME, "mountPath": PEERS_MOUNT, "readOnly": True})
        peers = ["--peers-file", f"{PEERS_MOUNT}/{key}"]
        inference["args"] = [*inference["args"], "--serve-artifacts"]
    fetch = {
        "name": FETCH_CONTAINER,
        "image": inference["image"],
        "args": [
            "fetch-model",
            *source,
            "--dest",
            f"{MODEL_REPOSITORY}/{model}",
            "--max-bytes",
            str(max_bytes),
            *peers,
        ],
        "resources": {
            bound: {**values, "cpu": f"{FETCH_CPU_MILLICORES}m"} for bound, values in inference["resources"].items()
        },
        "volumeMounts": mounts,
        # fetch-model writes one line saying why it failed; a crash leaves the tail of its log.
        "terminationMessagePolicy": "FallbackToLogsOnError",
        "securityContext": _security_context(),
    }
    return {**pod_spec, "initContainers": [fetch], "volumes": volumes}


def _pod_spec(
    pod_spec: dict[str, Any],
    model: str,
    artifact: Mapping[str, Any] | None,
    model_size_mib: float,
    peers_from: tuple[str, str] | None = None,
) -> dict[str, Any]:
    return pod_spec if not artifact else _with_artifact(pod_spec, model, artifact, model_size_mib, peers_from)


def build_edge_deployment(
    policy: Mapping[str, Any],
    model: str,
    edge_node: str,
    node_name: str,
    cpu_m: int,
    memory_mi: int,
    image: str,
    artifact: Mapping[str, Any] | None = None,
    model_size_mib: float = 0.0,
    shares_site: bool = False,
) -> dict[str, Any]:
    """A model replica of ``model`` on EdgeNode ``edge_node``, pinned to Kubernetes node ``node_name``.

    Args:
        artifact: the InferenceModel's ``spec.artifact`` (None: the model is in the image).
        model_size_mib: its ``spec.size``; the largest file the pod accepts and stores.
        shares_site: ``edge_node`` shares its site with other EdgeNodes: the replica takes its peers
            from the policy's peers ConfigMap (:func:`build_peers_configmap`) and serves its file to them.
    """
    policy_name = policy["metadata"]["name"]
    labels = _labels(policy_name, c.COMPONENT_EDGE_INFERENCE, **{c.LABEL_MODEL: model, c.LABEL_EDGE_NODE: edge_node})
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": _metadata(policy, object_name(model, edge_node), labels),
        "spec": {
            "replicas": 1,
            # A Pi holds one copy of a model, not two: a rolling update's surge pod found no CPU on the
            # real node and stayed Pending beside the old one. No surge: the old pod goes first (the gateway
            # relays to the cloud meanwhile). Still a RollingUpdate, because a server-side apply cannot turn
            # an existing Deployment into Recreate (the defaulted rollingUpdate field then makes it invalid).
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 0, "maxUnavailable": 1}},
            "selector": {
                "matchLabels": {c.LABEL_POLICY: policy_name, c.LABEL_MODEL: model, c.LABEL_EDGE_NODE: edge_node}
            },
            "template": {
                "metadata": {"labels": labels},
                "spec": _pod_spec(
                    {
                        "nodeSelector": {"kubernetes.io/hostname": node_name},
                        "automountServiceAccountToken": False,
                        "containers": [_inference_container(model, image, cpu_m, memory_mi)],
                    },
                    model,
                    artifact,
                    model_size_mib,
                    (peers_configmap_name(policy_name), peers_key(model, edge_node)) if shares_site else None,
                ),
            },
        },
    }


def cloud_replica_resources(cpu: str = c.CLOUD_REPLICA_CPU, memory: str = c.CLOUD_REPLICA_MEMORY) -> tuple[int, int]:
    """(millicores, MiB) of a cloud replica from Kubernetes quantities.

    Raises:
        ValueError: a quantity that does not parse, or one too small to serve a model.
    """
    from kubernetes.utils import parse_quantity

    try:
        millicores, mebibytes = int(parse_quantity(cpu) * 1000), int(parse_quantity(memory) / 2**20)
    except ValueError as error:
        raise ValueError(f"cloud replica resources cpu={cpu!r} memory={memory!r}: {error}") from error
    if millicores < MIN_CPU_MILLICORES or mebibytes < BASE_MEMORY_MIB:
        raise ValueError(
            f"cloud replica resources cpu={cpu!r} memory={memory!r}: at least {MIN_CPU_MILLICORES}m and "
            f"{BASE_MEMORY_MIB:g}Mi are needed to serve a model"
        )
    return millicores, mebibytes


def cloud_replica_name(policy: Mapping[str, Any], model: str) -> str:
    """The name of a model's cloud replica (Deployment and Service).

    A shard (a policy with ``spec.edgeNodeSelector``) has its own, prefixed with its name: shards of one
    namespace place the same models, and each object must be written by one policy only. A policy
    without a selector keeps the unprefixed name it always had.
    """
    return object_name(policy["metadata"]["name"], "cloud", model) if is_shard(policy) else object_name("cloud", model)


def build_cloud_deployment(
    policy: Mapping[str, Any],
    model: str,
    image: str,
    artifact: Mapping[str, Any] | None = None,
    model_size_mib: float = 0.0,
    tls_secret: str = c.CLOUD_TLS_SECRET,
    mutual_tls: bool = c.CLOUD_MUTUAL_TLS,
) -> dict[str, Any]:
    """The cloud replica of a model: where misses are relayed (scheduled on cloud-tier nodes).

    ``artifact`` and ``model_size_mib`` as for :func:`build_edge_deployment`. With ``tls_secret`` (a
    kubernetes.io/tls Secret of the policy's namespace) the replica serves HTTPS with it: the relay
    crosses a WAN. Its certificate must name ``<cloud_replica_name>.<namespace>.svc`` (e.g. ``*.<namespace>.svc``).
    ``mutual_tls`` (with ``tls_secret``): inference only for clients with a certificate of the Secret's CA.
    """
    policy_name = policy["metadata"]["name"]
    labels = _labels(policy_name, c.COMPONENT_CLOUD_INFERENCE, **{c.LABEL_MODEL: model})
    pod_spec = _pod_spec(
        {
            "nodeSelector": {c.LABEL_TIER: "cloud"},
            "automountServiceAccountToken": False,
            "containers": [
                _inference_container(
                    model, image, *cloud_replica_resources(), tls=bool(tls_secret), mutual_tls=mutual_tls
                )
            ],
        },
        model,
        artifact,
        model_size_mib,
    )
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": _metadata(policy, cloud_replica_name(policy, model), labels),
        "spec": {
            "replicas": 1,
            "selector": {
                "matchLabels": {
                    c.LABEL_POLICY: policy_name,
                    c.LABEL_COMPONENT: c.COMPONENT_CLOUD_INFERENCE,
                    c.LABEL_MODEL: model,
                }
            },
            "template": {
                "metadata": {"labels": labels},
                "spec": _with_tls_secret(pod_spec, tls_secret, with_ca=mutual_tls) if tls_secret else pod_spec,
            },
        },
    }


def build_service(deployment: Mapping[str, Any]) -> dict[str, Any]:
    """A ClusterIP Service in front of a Deployment built above (same name and owner)."""
    metadata = deployment["metadata"]
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {
            "name": metadata["name"],
            "namespace": metadata["namespace"],
            "labels": metadata["labels"],
            "ownerReferences": metadata["ownerReferences"],
        },
        "spec": {
            "selector": deployment["spec"]["selector"]["matchLabels"],
            "ports": [{"name": "http", "port": c.INFERENCE_PORT, "targetPort": "http"}],
        },
    }


def service_url(name: str, namespace: str, tls: bool = False) -> str:
    return f"{'https' if tls else 'http'}://{name}.{namespace}.svc:{c.INFERENCE_PORT}"


def uplink_bytes_per_second(scenario: Scenario, node: int) -> float:
    """Node ``node``'s access link in bytes/s as the system model sees it: bandwidth (MHz) times the
    link's median spectral efficiency (bit/s/Hz), what the plan's bandwidth shares divide."""
    mbit_per_s = float(scenario.node_bandwidth_mhz[node]) * float(np.median(scenario.link_states))
    return float(round(mbit_per_s * 1e6 / 8))  # a float, as the table parses it: no rewrite for 7500000 vs 7500000.0


def build_routing_table(
    policy: Mapping[str, Any],
    scenario: Scenario,
    plan: Plan,
    generation: int,
    node_names: Mapping[str, str] | None = None,
    cloud_tls: bool = bool(c.CLOUD_TLS_SECRET),
) -> RoutingTable:
    """The gateways' routing table; ``node_names`` (EdgeNode -> Kubernetes node) lets a gateway
    that only knows its node's name (a DaemonSet pod) find its EdgeNode's entry. ``cloud_tls``: the
    cloud replicas serve HTTPS (:func:`build_cloud_deployment` with a TLS Secret)."""
    namespace = policy["metadata"]["namespace"]
    node_names = node_names or {}
    edge_nodes = {}
    for e, node in enumerate(scenario.node_names):
        models = {
            scenario.model_names[m]: LocalModel(
                endpoints=(Endpoint(service_url(object_name(scenario.model_names[m], node), namespace)),),
                compute_share=round(float(plan.compute_share[e, m]), 4),
            )
            for m in np.flatnonzero(plan.cache[e] > 0)
        }
        cameras = {
            scenario.camera_names[u]: round(float(plan.bandwidth_share[u]), 4)
            for u in np.flatnonzero(scenario.camera_node == e)
        }
        edge_nodes[node] = EdgeNodeRoutes(models, cameras, node_names.get(node), uplink_bytes_per_second(scenario, e))
    cloud = {
        model: service_url(cloud_replica_name(policy, model), namespace, cloud_tls) for model in scenario.model_names
    }
    return RoutingTable(generation, edge_nodes, cloud)


#: What the routing table's text may take of a ConfigMap (the API server refuses more than 1 MiB of data
#: in all; the rest is left for nothing else, the table being the ConfigMap's only key).
ROUTING_TABLE_MAX_BYTES = 1_000_000


class RoutingTableTooLarge(ValueError):
    """The routing table does not fit in one ConfigMap."""


def build_routing_configmap(policy: Mapping[str, Any], table: RoutingTable) -> dict[str, Any]:
    """The gateways' routing table as a ConfigMap.

    Raises:
        RoutingTableTooLarge: its text is over :data:`ROUTING_TABLE_MAX_BYTES` (the API server would refuse
            it with a 422 in the middle of a reconcile, after the replicas it routes to were written).
    """
    policy_name = policy["metadata"]["name"]
    text = table.to_json()
    if len(text.encode()) > ROUTING_TABLE_MAX_BYTES:
        routes = sum(len(routes.models) for routes in table.edge_nodes.values())
        cameras = sum(len(routes.camera_bandwidth_share) for routes in table.edge_nodes.values())
        raise RoutingTableTooLarge(
            f"the routing table of {len(table.edge_nodes)} edge nodes, {routes} edge replicas and {cameras} cameras "
            f"takes {len(text.encode())} bytes, more than a ConfigMap holds ({ROUTING_TABLE_MAX_BYTES}): split the "
            "fleet into PlacementPolicies over disjoint node sets (spec.edgeNodeSelector)"
        )
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": _metadata(policy, object_name(policy_name, "routing"), _labels(policy_name, c.COMPONENT_ROUTING)),
        "data": {c.ROUTING_TABLE_KEY: text},
    }


def desired_objects(
    policy: Mapping[str, Any],
    scenario: Scenario,
    plan: Plan,
    node_names: Mapping[str, str],
    routing_table: RoutingTable,
    image: str = c.DEFAULT_INFERENCE_IMAGE,
    artifacts: Mapping[str, Mapping[str, Any]] | None = None,
    cloud_tls_secret: str = c.CLOUD_TLS_SECRET,
    cloud_mutual_tls: bool = c.CLOUD_MUTUAL_TLS,
    previous_cache: np.ndarray | None = None,
) -> list[dict[str, Any]]:
    """Every object the plan needs, in apply order (cloud first, then the peers of new edge replicas
    when nodes share sites, then edge, then routing).

    Args:
        node_names: EdgeNode name -> Kubernetes Node name (``spec.nodeName``).
        routing_table: the table for the gateways (:func:`build_routing_table`, or the one kept).
        artifacts: InferenceModel name -> ``spec.artifact`` (:func:`model_artifacts`); a model
            not in it is expected in the inference image.
        cloud_tls_secret: the TLS Secret the cloud replicas serve HTTPS with (:func:`build_cloud_deployment`).
        cloud_mutual_tls: they require client certificates of its CA (mutual TLS).
        previous_cache: x[e, m] the cluster runs now (None: the plan's own, no new replica has peers).
    """
    artifacts = artifacts or {}
    objects: list[dict[str, Any]] = []
    for model, size_mib in zip(scenario.model_names, scenario.model_size_mb, strict=True):
        deployment = build_cloud_deployment(
            policy,
            model,
            image,
            artifacts.get(model),
            float(size_mib),
            tls_secret=cloud_tls_secret,
            mutual_tls=cloud_mutual_tls,
        )
        objects += [deployment, build_service(deployment)]
    shared = shared_site_nodes(scenario)
    if shared.any():
        previous = plan.cache if previous_cache is None else previous_cache
        objects.append(build_peers_configmap(policy, scenario, plan.cache, previous, artifacts))
    for e, edge_node in enumerate(scenario.node_names):
        cached = np.flatnonzero(plan.cache[e] > 0)
        cpu = cpu_millicores(plan.compute_share[e, cached], float(scenario.node_cores[e]))
        for m, cpu_m in zip(cached, cpu, strict=True):
            deployment = build_edge_deployment(
                policy,
                scenario.model_names[m],
                edge_node,
                node_names[edge_node],
                int(cpu_m),
                memory_mebibytes(float(scenario.model_size_mb[m])),
                image,
                artifacts.get(scenario.model_names[m]),
                float(scenario.model_size_mb[m]),
                shares_site=bool(shared[e]),
            )
            objects += [deployment, build_service(deployment)]
    objects.append(build_routing_configmap(policy, routing_table))
    return objects
