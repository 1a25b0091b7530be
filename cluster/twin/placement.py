"""The placement the cluster runs, rebuilt from what the API server lists (pure).

(edge node, model) is cached when the operator's edge Deployment for it has a ready replica; its
compute share is the CPU limit of its ready pods (as their kubelet reports it, so in-place
resizes count) over ``EdgeNode.spec.cores``; each camera's bandwidth share comes from the routing
table, or is an equal split of its node without one. :func:`plan_for` turns both into the
simulator's :class:`~edgeaigc.policy.system_model.Plan`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from edgeaigc.inference.gateway.routing_table import RoutingTable
from edgeaigc.policy.fleet import placed_models
from edgeaigc.policy.quantities import quantity
from edgeaigc.policy.scenario import Scenario
from edgeaigc.policy.system_model import (
    Plan,
)

#: (EdgeNode name, model name) -> compute share of the node.
ComputeShares = dict[tuple[str, str], float]
#: EdgeNode name -> camera name -> bandwidth share of the node.
BandwidthShares = dict[str, dict[str, float]]


def cpu_limit_cores(deployment: Mapping[str, Any]) -> float | None:
    """CPU limit of one replica (sum over its containers) in cores; None if a container has none."""
    total = 0.0
    for container in deployment["spec"]["template"]["spec"].get("containers", []):
        limit = ((container.get("resources") or {}).get("limits") or {}).get("cpu")
        if limit is None:
            return None
        total += quantity(limit)
    return total


def pod_cpu_limit_cores(pod: Mapping[str, Any]) -> float | None:
    """CPU limit of a running pod in cores: what its kubelet reports (``status.containerStatuses[].resources``,
    the CPU after an in-place resize), else its spec; None if a container has no limit."""
    reported = {
        status.get("name"): (status.get("resources") or {}).get("limits", {}).get("cpu")
        for status in (pod.get("status") or {}).get("containerStatuses") or []
    }
    total = 0.0
    for container in pod["spec"].get("containers", []):
        limit = reported.get(container.get("name")) or ((container.get("resources") or {}).get("limits") or {}).get(
            "cpu"
        )
        if limit is None:
            return None
        total += quantity(limit)
    return total


def _ready(pod: Mapping[str, Any]) -> bool:
    metadata, status = pod.get("metadata") or {}, pod.get("status") or {}
    conditions = status.get("conditions") or []
    return not metadata.get("deletionTimestamp") and any(
        k.get("type") == "Ready" and k.get("status") == "True" for k in conditions
    )


def _pods_of(deployment: Mapping[str, Any], pods: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    selector = (deployment.get("spec") or {}).get("selector", {}).get("matchLabels") or {}
    return [
        pod
        for pod in pods
        if _ready(pod)
        and all(((pod.get("metadata") or {}).get("labels") or {}).get(k) == v for k, v in selector.items())
    ]


def compute_shares(
    deployments: Sequence[Mapping[str, Any]],
    policy: str,
    node_cores: Mapping[str, float],
    pods: Sequence[Mapping[str, Any]] = (),
) -> ComputeShares:
    """Cached (edge node, model) pairs and their compute shares, from the policy's edge Deployments.

    A pair is cached when its Deployment has ``status.readyReplicas >= 1``; its share is the CPU
    limit of its ready pods (as their kubelet reports it, so in-place resizes count) over the node's
    cores — or ``readyReplicas x`` the template's CPU limit when none of its pods is listed — clipped
    to [0, 1] (1 without a limit: the container may use the whole node), and a node's shares are
    scaled down together if they add up to more than 1. Deployments of another policy or component,
    or on an unknown EdgeNode, are ignored.
    """
    shares: ComputeShares = {}
    # The operator's own reading of its placement (policy.fleet), then this twin's readiness and CPU rules.
    for node, model, deployment in placed_models(deployments, policy):
        ready = int((deployment.get("status") or {}).get("readyReplicas") or 0)
        if node not in node_cores or ready < 1:
            continue
        running = _pods_of(deployment, pods)
        if running:
            limits = [pod_cpu_limit_cores(pod) for pod in running]
            cores = None if any(limit is None for limit in limits) else sum(limit or 0.0 for limit in limits)
        else:
            limit = cpu_limit_cores(deployment)
            cores = None if limit is None else ready * limit
        share = 1.0 if cores is None else cores / float(node_cores[node])
        shares[(node, model)] = min(max(shares.get((node, model), 0.0) + share, 0.0), 1.0)
    for node in {node for node, _ in shares}:
        total = sum(share for (n, _), share in shares.items() if n == node)
        if total > 1.0:
            for key in [key for key in shares if key[0] == node]:
                shares[key] /= total
    return shares


def bandwidth_shares(table: RoutingTable | None) -> BandwidthShares:
    """Camera bandwidth shares per edge node from a routing table (empty without one)."""
    if table is None:
        return {}
    return {node: dict(routes.camera_bandwidth_share) for node, routes in table.edge_nodes.items()}


def plan_for(scenario: Scenario, compute: Mapping[tuple[str, str], float], bandwidth: BandwidthShares) -> Plan:
    """The :class:`Plan` of the observed placement, indexed like ``scenario``.

    Pairs naming a node or model the scenario does not know are left out. A node's cameras take
    their shares from ``bandwidth`` when it lists all of them (scaled down if over 1), else split
    the node's bandwidth equally.
    """
    node_index = {name: e for e, name in enumerate(scenario.node_names)}
    model_index = {name: m for m, name in enumerate(scenario.model_names)}
    cache = np.zeros((scenario.num_nodes, scenario.num_models))
    share = np.zeros_like(cache)
    for (node, model), value in compute.items():
        if node in node_index and model in model_index:
            cache[node_index[node], model_index[model]] = 1.0
            share[node_index[node], model_index[model]] = value
    camera_share = np.zeros(scenario.num_cameras)
    for e, node in enumerate(scenario.node_names):
        cameras = np.flatnonzero(scenario.camera_node == e)
        if cameras.size == 0:
            continue
        listed = bandwidth.get(node, {})
        if all(scenario.camera_names[u] in listed for u in cameras):
            values = np.array([listed[scenario.camera_names[u]] for u in cameras], dtype=float)
            camera_share[cameras] = values / max(values.sum(), 1.0)
        else:
            camera_share[cameras] = 1.0 / cameras.size
    return Plan(cache=cache, compute_share=share, bandwidth_share=camera_share)
