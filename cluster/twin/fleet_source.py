"""Where the twin reads the fleet and its placement: the API server (or a fake in unit tests)."""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Any, Protocol

import urllib3
from kubernetes.client.exceptions import ApiException
from kubernetes.config.config_exception import ConfigException

from edgeaigc.cluster.local import DEFAULT_NAME, ClusterState, _alive, cluster_dir
from edgeaigc.policy import resources, shard

#: An object as the API server returns it.
Resource = dict[str, Any]


class FleetUnavailable(RuntimeError):
    """The namespace has no usable PlacementPolicy (none, several without ``--policy``, or not the named one)."""


@dataclasses.dataclass(frozen=True)
class Fleet:
    """The custom resources of one PlacementPolicy's namespace (as the API returns them)."""

    policy: Resource
    edge_nodes: list[Resource]
    models: list[Resource]
    cameras: list[Resource]

    def signature(self) -> str:
        """Changes when a spec changes (not on status updates): the scenario is rebuilt then."""
        specs = [
            [kind, item["metadata"]["name"], item.get("spec", {})]
            for kind, items in (
                ("policy", [self.policy]),
                ("node", self.edge_nodes),
                ("model", self.models),
                ("camera", self.cameras),
            )
            for item in items
        ]
        return json.dumps(sorted(specs, key=lambda entry: (entry[0], entry[1])), sort_keys=True)


class FleetSource(Protocol):
    """Where the twin reads the fleet and its placement (the API server; a fake in unit tests)."""

    def fleet(self, namespace: str, policy: str | None) -> Fleet: ...

    def edge_deployments(self, namespace: str, policy: str) -> list[Resource]: ...

    def routing_table(self, namespace: str, policy: str) -> str | None: ...

    def edge_pods(self, namespace: str, policy: str) -> list[Resource]: ...


class KubernetesSource:
    """Reads the fleet, the edge Deployments and the routing table from the API server."""

    def __init__(self, api_client: Any, request_timeout_s: float = 5.0) -> None:
        from kubernetes import client

        self.api_client = api_client
        self.timeout = request_timeout_s
        self.objects = client.CustomObjectsApi(api_client)
        self.apps = client.AppsV1Api(api_client)
        self.core = client.CoreV1Api(api_client)

    def _items(self, namespace: str, plural: str) -> list[Resource]:
        result = self.objects.list_namespaced_custom_object(
            resources.GROUP, resources.VERSION, namespace, plural, _request_timeout=self.timeout
        )
        return list(result["items"])  # type: ignore[index]

    def fleet(self, namespace: str, policy: str | None) -> Fleet:
        policies = self._items(namespace, resources.PLURAL_POLICIES)
        chosen = [p for p in policies if policy is None or p["metadata"]["name"] == policy]
        if len(chosen) != 1:
            names = sorted(p["metadata"]["name"] for p in policies)
            wanted = f"PlacementPolicy {policy!r}" if policy else "exactly one PlacementPolicy (or --policy)"
            raise FleetUnavailable(f"namespace {namespace!r} needs {wanted}; it has {names or 'none'}")
        # The policy's shard only (spec.edgeNodeSelector), as the operator sees it: one twin per shard
        # plays each gateway once.
        edge_nodes = self._items(namespace, resources.PLURAL_EDGE_NODES)
        selected = shard.selected_nodes(chosen[0], edge_nodes)
        return Fleet(
            chosen[0],
            [n for n in edge_nodes if n["metadata"]["name"] in selected],
            self._items(namespace, resources.PLURAL_MODELS),
            shard.shard_cameras(edge_nodes, selected, self._items(namespace, resources.PLURAL_CAMERAS)),
        )

    def edge_deployments(self, namespace: str, policy: str) -> list[Resource]:
        selector = f"{resources.LABEL_COMPONENT}={resources.COMPONENT_EDGE_INFERENCE},{resources.LABEL_POLICY}={policy}"
        result = self.apps.list_namespaced_deployment(namespace, label_selector=selector, _request_timeout=self.timeout)
        return [self.api_client.sanitize_for_serialization(item) for item in result.items]

    def edge_pods(self, namespace: str, policy: str) -> list[Resource]:
        selector = f"{resources.LABEL_COMPONENT}={resources.COMPONENT_EDGE_INFERENCE},{resources.LABEL_POLICY}={policy}"
        result = self.core.list_namespaced_pod(namespace, label_selector=selector, _request_timeout=self.timeout)
        return [self.api_client.sanitize_for_serialization(item) for item in result.items]

    def routing_table(self, namespace: str, policy: str) -> str | None:
        try:
            config_map = self.core.read_namespaced_config_map(
                resources.object_name(policy, "routing"), namespace, _request_timeout=self.timeout
            )
        except ApiException as error:
            if error.status == 404:
                return None
            raise
        return (config_map.data or {}).get(resources.ROUTING_TABLE_KEY)


#: What a read of the cluster may fail with; the twin then keeps what it last saw.
READ_ERRORS: tuple[type[BaseException], ...] = (
    ApiException,
    urllib3.exceptions.HTTPError,
    OSError,
    ValueError,  # InvalidFleet, InvalidRoutingTable, bad quantities
    KeyError,
    FleetUnavailable,
)


def running_cluster(name: str = DEFAULT_NAME) -> ClusterState | None:
    """The local cluster's state if its API server is running."""
    state = ClusterState.load(cluster_dir(name))
    if state is None or not _alive(state.pids.get("apiserver", 0) or 0):
        return None
    return state


def api_client(kubeconfig: Path | None, cluster_name: str = DEFAULT_NAME) -> Any:
    """A Kubernetes API client: ``--kubeconfig``, else ``$KUBECONFIG``, else the running local
    cluster, else ``~/.kube/config``, else the in-cluster service account."""
    from kubernetes import client, config

    if kubeconfig is not None and not Path(kubeconfig).exists():
        raise ConfigException(f"kubeconfig {kubeconfig} does not exist")
    if kubeconfig is None and not os.environ.get("KUBECONFIG"):
        local = running_cluster(cluster_name)
        if local is not None:
            kubeconfig = local.kubeconfig
    try:
        return config.new_client_from_config(config_file=str(kubeconfig) if kubeconfig else None)
    except config.ConfigException:
        if kubeconfig is not None or not os.environ.get("KUBERNETES_SERVICE_HOST"):
            raise
        config.load_incluster_config()
        return client.ApiClient()
