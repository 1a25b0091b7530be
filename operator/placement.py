"""Whether a plan fits the Kubernetes nodes it would run on (pure)."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from edgeaigc.operator.builders import cpu_millicores, memory_mebibytes
from edgeaigc.policy.quantities import mebibytes, millicores
from edgeaigc.policy.scenario import Scenario
from edgeaigc.policy.system_model import Plan


def allocatable_millicores(allocatable: Mapping[str, Mapping[str, str]], node: str) -> int:
    """CPU a Kubernetes node can allocate, in millicores (0 for a node that is gone)."""
    return millicores((allocatable.get(node) or {}).get("cpu", "0"))


def plan_fits_nodes(
    scenario: Scenario,
    plan: Plan,
    node_names: Mapping[str, str],
    allocatable: Mapping[str, Mapping[str, str]],
) -> list[str]:
    """Why the plan's pods would not fit their Kubernetes nodes (empty list: it fits).

    Args:
        node_names: EdgeNode name -> Kubernetes Node name.
        allocatable: Kubernetes Node name -> ``status.allocatable`` (missing node: it is gone).
    """
    problems = []
    for e, edge_node in enumerate(scenario.node_names):
        node = node_names[edge_node]
        cached = np.flatnonzero(plan.cache[e] > 0)
        if node not in allocatable:
            if cached.size:
                problems.append(f"EdgeNode {edge_node}: Kubernetes node {node!r} does not exist")
            continue
        cpu_m = int(cpu_millicores(plan.compute_share[e, cached], float(scenario.node_cores[e])).sum())
        memory_mi = sum(memory_mebibytes(float(scenario.model_size_mb[m])) for m in cached)
        cpu_available = allocatable_millicores(allocatable, node)
        memory_available = mebibytes(allocatable[node].get("memory", "0"))
        if cpu_m > cpu_available:
            problems.append(f"EdgeNode {edge_node}: {cpu_m}m CPU planned, node {node} has {cpu_available:.0f}m")
        if memory_mi > memory_available:
            problems.append(
                f"EdgeNode {edge_node}: {memory_mi}Mi memory planned, node {node} has {memory_available:.0f}Mi"
            )
    return problems
